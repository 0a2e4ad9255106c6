#include "limits/limit.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- RateLimit ----

TEST(RateLimitTest, KeepsItsParameters) {
  const RateLimit limit("tokens", 100, absl::Minutes(1), RateLimitAlgorithm::kGcra);
  EXPECT_EQ(limit.kind(), LimitKind::kRate);
  EXPECT_EQ(limit.key(), "tokens");
  EXPECT_EQ(limit.capacity(), 100);
  EXPECT_EQ(limit.window(), absl::Minutes(1));
  EXPECT_EQ(limit.algorithm(), RateLimitAlgorithm::kGcra);
}

TEST(RateLimitTest, DefaultsToSlidingWindow) {
  EXPECT_EQ(RateLimit("k", 1, absl::Seconds(1)).algorithm(), RateLimitAlgorithm::kSlidingWindow);
  EXPECT_EQ(CallLimit(1, absl::Seconds(1)).algorithm(), RateLimitAlgorithm::kSlidingWindow);
}

TEST(RateLimitTest, RejectsCapacityThatIsNotPositive) {
  for (const double capacity : {0.0, -1.0, -0.5, kNaN, -kInf}) {
    SCOPED_TRACE(capacity);
    EXPECT_THAT([&] { RateLimit("k", capacity, absl::Seconds(1)); },
                ThrowsMessage<InvalidOptionError>(
                    AllOf(HasSubstr("RateLimit 'k'"), HasSubstr("capacity must be > 0"))));
  }
}

TEST(RateLimitTest, CapacityErrorNamesTheValue) {
  EXPECT_THAT([] { RateLimit("k", 0, absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got 0")));
  EXPECT_THAT([] { RateLimit("k", -2.5, absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got -2.5")));
  EXPECT_THAT([] { RateLimit("k", -kInf, absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got -inf")));
  EXPECT_THAT([] { RateLimit("k", kNaN, absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got nan")));
}

TEST(RateLimitTest, AcceptsInfiniteAndFractionalCapacity) {
  EXPECT_EQ(RateLimit("k", kInf, absl::Seconds(1)).capacity(), kInf);
  EXPECT_EQ(RateLimit("k", 0.0001, "day", RateLimitAlgorithm::kTokenBucket).capacity(), 0.0001);
  EXPECT_EQ(RateLimit("k", 1e-300, "day", RateLimitAlgorithm::kGcra).capacity(), 1e-300);
  EXPECT_EQ(CallLimit(kInf, "second").capacity(), kInf);
}

TEST(RateLimitTest, RejectsEmptyKey) {
  EXPECT_THAT([] { RateLimit("", 1, absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("key must not be empty")));
  EXPECT_THAT([] { RateLimit("", 1, "minute"); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("key must not be empty")));
}

TEST(RateLimitTest, RejectsTheCallLimitKey) {
  EXPECT_THAT([] { RateLimit("call_count", 1, absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(
                  AllOf(HasSubstr("'call_count' is reserved"), HasSubstr("CallLimit"))));
}

TEST(RateLimitTest, ParsesConcurryWindowNames) {
  EXPECT_EQ(RateLimit("k", 1, "minute").window(), absl::Minutes(1));
  EXPECT_EQ(RateLimit("k", 1, "per_hour").window(), absl::Hours(1));
  EXPECT_EQ(RateLimit("k", 1, "Weekly").window(), absl::Hours(7 * 24));
  EXPECT_EQ(RateLimit("k", 1, "0.5").window(), absl::Milliseconds(500));
  EXPECT_EQ(RateLimit("k", 1, "60").window(), absl::Seconds(60));
  EXPECT_EQ(RateLimit("k", 1, "day", RateLimitAlgorithm::kLeakyBucket).algorithm(),
            RateLimitAlgorithm::kLeakyBucket);
}

TEST(RateLimitTest, RejectsBadWindowStrings) {
  EXPECT_THAT([] { RateLimit("k", 1, "fortnight"); },
              ThrowsMessage<InvalidOptionError>(
                  AllOf(HasSubstr("RateLimit 'k'"), HasSubstr("unknown rate-limit window"),
                        HasSubstr("'fortnight'"), HasSubstr("minute(s)"))));
  EXPECT_THAT([] { RateLimit("k", 1, "month"); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("unknown rate-limit window")));
  for (const char* window : {"0", "-1", "inf", "nan"}) {
    SCOPED_TRACE(window);
    EXPECT_THAT([&] { RateLimit("k", 1, window); },
                ThrowsMessage<InvalidOptionError>(
                    AllOf(HasSubstr("RateLimit 'k'"), HasSubstr("positive"))));
  }
}

TEST(RateLimitTest, RejectsBadWindowDurations) {
  for (const absl::Duration window : {absl::ZeroDuration(), absl::Seconds(-1),
                                      absl::InfiniteDuration(), -absl::InfiniteDuration()}) {
    SCOPED_TRACE(absl::FormatDuration(window));
    EXPECT_THAT([&] { RateLimit("k", 1, window); },
                ThrowsMessage<InvalidOptionError>(AllOf(
                    HasSubstr("RateLimit 'k'"), HasSubstr("window must be positive and finite"))));
  }
  EXPECT_EQ(RateLimit("k", 1, absl::Nanoseconds(1)).window(), absl::Nanoseconds(1));
}

// ---- CallLimit ----

TEST(CallLimitTest, HasTheCallCountKey) {
  const CallLimit limit(100, absl::Seconds(1), RateLimitAlgorithm::kTokenBucket);
  EXPECT_EQ(limit.kind(), LimitKind::kCall);
  EXPECT_EQ(limit.key(), "call_count");
  EXPECT_EQ(limit.key(), kCallLimitKey);
  EXPECT_EQ(limit.capacity(), 100);
  EXPECT_EQ(limit.window(), absl::Seconds(1));
  EXPECT_EQ(limit.algorithm(), RateLimitAlgorithm::kTokenBucket);
  EXPECT_EQ(CallLimit(5, "per_min").window(), absl::Minutes(1));
}

TEST(CallLimitTest, ValidatesLikeRateLimit) {
  for (const double capacity : {0.0, -3.0, kNaN, -kInf}) {
    SCOPED_TRACE(capacity);
    EXPECT_THAT([&] { CallLimit(capacity, absl::Seconds(1)); },
                ThrowsMessage<InvalidOptionError>(
                    AllOf(HasSubstr("CallLimit 'call_count'"), HasSubstr("capacity must be > 0"))));
  }
  EXPECT_THAT([] { CallLimit(1, absl::ZeroDuration()); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("window must be positive")));
  EXPECT_THAT([] { CallLimit(1, "yearly"); },
              ThrowsMessage<InvalidOptionError>(
                  AllOf(HasSubstr("CallLimit"), HasSubstr("unknown rate-limit window"))));
}

// ---- ResourceLimit ----

TEST(ResourceLimitTest, KeepsItsParameters) {
  const ResourceLimit limit("connections", 4);
  EXPECT_EQ(limit.kind(), LimitKind::kResource);
  EXPECT_EQ(limit.key(), "connections");
  EXPECT_EQ(limit.capacity(), 4);
  EXPECT_EQ(limit.window(), absl::ZeroDuration());
  EXPECT_EQ(ResourceLimit("k", int64_t{1} << 40).capacity(), 1099511627776.0);
  EXPECT_EQ(ResourceLimit("k", static_cast<unsigned short>(7)).capacity(), 7);
}

TEST(ResourceLimitTest, RejectsCapacityBelowOne) {
  EXPECT_THAT([] { ResourceLimit("k", 0); },
              ThrowsMessage<InvalidOptionError>("ResourceLimit capacity must be >= 1, got: 0"));
  EXPECT_THAT([] { ResourceLimit("k", -5); },
              ThrowsMessage<InvalidOptionError>("ResourceLimit capacity must be >= 1, got: -5"));
  EXPECT_EQ(ResourceLimit("k", 1).capacity(), 1);
}

TEST(ResourceLimitTest, RejectsEmptyKey) {
  EXPECT_THAT([] { ResourceLimit("", 1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("ResourceLimit key must not be empty")));
}

// ---- Limit: mixing, signatures, strings ----

TEST(LimitTest, AVectorHoldsAnyMix) {
  const std::vector<Limit> limits = {
      RateLimit("tokens", 10'000, "minute", RateLimitAlgorithm::kGcra),
      CallLimit(100, absl::Seconds(1)),
      ResourceLimit("connections", 4),
  };
  ASSERT_EQ(limits.size(), 3u);
  EXPECT_EQ(limits[0].kind(), LimitKind::kRate);
  EXPECT_EQ(limits[1].kind(), LimitKind::kCall);
  EXPECT_EQ(limits[2].kind(), LimitKind::kResource);
  EXPECT_EQ(limits[0].ParamsSignature(), "c10000w60gcr");
}

TEST(LimitTest, KindNames) {
  EXPECT_EQ(LimitKindName(LimitKind::kRate), "rate");
  EXPECT_EQ(LimitKindName(LimitKind::kCall), "call");
  EXPECT_EQ(LimitKindName(LimitKind::kResource), "resource");
}

TEST(LimitTest, ParamsSignatureOfWholeCapacity) {
  EXPECT_EQ(RateLimit("a", 300, absl::Seconds(60), RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c300w60gcr");
  EXPECT_EQ(RateLimit("b", 300.0, "minute", RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c300w60gcr");
}

TEST(LimitTest, ParamsSignatureNamesEachAlgorithm) {
  EXPECT_EQ(RateLimit("k", 5, "second", RateLimitAlgorithm::kTokenBucket).ParamsSignature(),
            "c5w1tok");
  EXPECT_EQ(RateLimit("k", 5, "second", RateLimitAlgorithm::kLeakyBucket).ParamsSignature(),
            "c5w1lea");
  EXPECT_EQ(RateLimit("k", 5, "second", RateLimitAlgorithm::kSlidingWindow).ParamsSignature(),
            "c5w1sli");
  EXPECT_EQ(RateLimit("k", 5, "second", RateLimitAlgorithm::kFixedWindow).ParamsSignature(),
            "c5w1fix");
  EXPECT_EQ(RateLimit("k", 5, "0.5", RateLimitAlgorithm::kGcra).ParamsSignature(), "c5w0.5gcr");
}

TEST(LimitTest, ParamsSignatureKeepsFractionalDigits) {
  EXPECT_EQ(RateLimit("k", 0.0001, "day", RateLimitAlgorithm::kTokenBucket).ParamsSignature(),
            "c0.0001w86400tok");
  EXPECT_EQ(RateLimit("k", 0.0001, absl::Hours(24), RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c0.0001w86400gcr");
}

TEST(LimitTest, ParamsSignatureOfInfiniteCapacityIsStable) {
  const std::string a = RateLimit("a", kInf, "second").ParamsSignature();
  const std::string b = RateLimit("b", kInf, absl::Seconds(1)).ParamsSignature();
  EXPECT_EQ(a, "cinfw1sli");
  EXPECT_EQ(a, b);
  EXPECT_EQ(CallLimit(kInf, "second").ParamsSignature(), "cinfw1sli");
}

TEST(LimitTest, ParamsSignatureIgnoresTheKey) {
  EXPECT_EQ(RateLimit("x", 7, "hour").ParamsSignature(),
            RateLimit("y", 7, "hour").ParamsSignature());
  EXPECT_EQ(CallLimit(7, "hour").ParamsSignature(), RateLimit("y", 7, "hour").ParamsSignature());
  EXPECT_NE(RateLimit("x", 7, "hour").ParamsSignature(),
            RateLimit("x", 8, "hour").ParamsSignature());
}

TEST(LimitTest, ParamsSignatureOfResourceLimit) {
  EXPECT_EQ(ResourceLimit("connections", 4).ParamsSignature(), "c4r");
  EXPECT_EQ(ResourceLimit("other", 4).ParamsSignature(), "c4r");
  EXPECT_EQ(ResourceLimit("k", 1000000).ParamsSignature(), "c1000000r");
}

TEST(LimitTest, ParamsSignatureWritesNumbersAsPythonReprDoes) {
  EXPECT_EQ(RateLimit("k", 1000000, "second").ParamsSignature(), "c1000000w1sli");
  EXPECT_EQ(RateLimit("k", 2.5, "0.001", RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c2.5w0.001gcr");
  EXPECT_EQ(RateLimit("k", 0.00001, "day", RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c1e-05w86400gcr");
  EXPECT_EQ(RateLimit("k", 1e-300, "day", RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c1e-300w86400gcr");
  EXPECT_EQ(RateLimit("k", 1e16, "day", RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c1e+16w86400gcr");
  EXPECT_EQ(RateLimit("k", 0.1 + 0.2, "second", RateLimitAlgorithm::kGcra).ParamsSignature(),
            "c0.30000000000000004w1gcr");
}

TEST(LimitTest, DebugString) {
  EXPECT_EQ(RateLimit("tokens", 100, "minute", RateLimitAlgorithm::kGcra).DebugString(),
            "RateLimit(key=tokens, capacity=100, window=1m, algorithm=gcra)");
  EXPECT_EQ(RateLimit("t", 0.5, "0.5").DebugString(),
            "RateLimit(key=t, capacity=0.5, window=500ms, algorithm=sliding_window)");
  EXPECT_EQ(CallLimit(10, "second", RateLimitAlgorithm::kTokenBucket).DebugString(),
            "CallLimit(capacity=10, window=1s, algorithm=token_bucket)");
  EXPECT_EQ(ResourceLimit("connections", 4).DebugString(),
            "ResourceLimit(key=connections, capacity=4)");
  EXPECT_EQ(RateLimit("u", kInf, "hour").DebugString(),
            "RateLimit(key=u, capacity=inf, window=1h, algorithm=sliding_window)");
}

TEST(LimitTest, IsCopyableValue) {
  const Limit original = RateLimit("tokens", 3, "second", RateLimitAlgorithm::kGcra);
  Limit copy = original;
  EXPECT_EQ(copy.key(), "tokens");
  EXPECT_EQ(copy.ParamsSignature(), original.ParamsSignature());
  copy = ResourceLimit("r", 2);
  EXPECT_EQ(copy.kind(), LimitKind::kResource);
  EXPECT_EQ(original.kind(), LimitKind::kRate);
}

}  // namespace
}  // namespace concurry

#include "limits/limit.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

using ::concurry::limits_internal::FormatNumber;
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
    EXPECT_THAT([&] { RateLimit("k", capacity, absl::Seconds(1), RateLimitAlgorithm::kGcra); },
                ThrowsMessage<InvalidOptionError>(
                    AllOf(HasSubstr("RateLimit 'k': capacity must be > 0 (fractions allowed), or "
                                    "+infinity for unlimited, got "),
                          HasSubstr(FormatNumber(capacity)))));
  }
}

TEST(RateLimitTest, WholeUnitAlgorithmsTakeCapacitiesFromOneTo2To53Minus1) {
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kLeakyBucket, RateLimitAlgorithm::kSlidingWindow,
        RateLimitAlgorithm::kFixedWindow}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    const std::string name(RateLimitAlgorithmName(algorithm));
    // Below 1 nothing could ever be admitted (amounts are whole and at most the capacity).
    EXPECT_THAT([&] { RateLimit("k", 0.5, "second", algorithm); },
                ThrowsMessage<InvalidOptionError>(
                    "RateLimit 'k': capacity must be from 1 to 9007199254740991 (2^53 - 1), or "
                    "+infinity for unlimited, got 0.5; " +
                    name +
                    " counts whole units, so it could never admit anything (TokenBucket and GCRA "
                    "accept fractional capacities)"));
    // Beyond 2^53 - 1, a double cannot count units exactly: INT64_MAX units would admit
    // 2^62 + 2^62 + 1.
    EXPECT_THAT(
        [&] { RateLimit("k", 9007199254740992.0, "second", algorithm); },
        ThrowsMessage<InvalidOptionError>(
            "RateLimit 'k': capacity must be from 1 to 9007199254740991 (2^53 - 1), or "
            "+infinity for unlimited, got 9007199254740992; " +
            name + " counts whole units, which a double cannot count exactly beyond 2^53 - 1"));
    EXPECT_THAT([&] { RateLimit("k", static_cast<double>(INT64_MAX), "second", algorithm); },
                ThrowsMessage<InvalidOptionError>(HasSubstr("got 9.223372036854776e+18")));
    EXPECT_THAT([&] { CallLimit(1e300, "second", algorithm); },
                ThrowsMessage<InvalidOptionError>(
                    HasSubstr("CallLimit 'call_count': capacity must be from 1 to "
                              "9007199254740991 (2^53 - 1), or +infinity for unlimited, got "
                              "1e+300")));
    EXPECT_EQ(RateLimit("k", 1, "second", algorithm).capacity(), 1);
    EXPECT_EQ(RateLimit("k", 9007199254740991.0, "second", algorithm).capacity(),
              9007199254740991.0);
    EXPECT_EQ(RateLimit("k", 2.5, "second", algorithm).capacity(), 2.5);
    EXPECT_EQ(RateLimit("k", kInf, "second", algorithm).capacity(), kInf);
  }
  // TokenBucket and GCRA take any positive capacity.
  EXPECT_EQ(RateLimit("k", 1e300, "second", RateLimitAlgorithm::kGcra).capacity(), 1e300);
  EXPECT_EQ(RateLimit("k", 5e-324, "second", RateLimitAlgorithm::kTokenBucket).capacity(), 5e-324);
}

TEST(RateLimitTest, RejectsAnUnknownAlgorithm) {
  EXPECT_THAT([] { RateLimit("k", 1, "second", static_cast<RateLimitAlgorithm>(7)); },
              ThrowsMessage<InvalidOptionError>(
                  "RateLimit 'k': algorithm: unknown value 7; allowed: kTokenBucket, "
                  "kLeakyBucket, kSlidingWindow, kFixedWindow, kGcra"));
  EXPECT_THAT([] { CallLimit(1, absl::Seconds(1), static_cast<RateLimitAlgorithm>(-1)); },
              ThrowsMessage<InvalidOptionError>(
                  HasSubstr("CallLimit 'call_count': algorithm: unknown value -1; allowed: ")));
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

TEST(RateLimitTest, RejectsWindowsBeyondTheLongest) {
  // Windows past ~235 years used to overflow the nanosecond arithmetic, after which a capacity-1
  // limit admitted everything. The longest window is 100 years, for every algorithm.
  EXPECT_THAT([] { RateLimit("k", 1, absl::Hours(1e7), RateLimitAlgorithm::kGcra); },
              ThrowsMessage<InvalidOptionError>(
                  "RateLimit 'k': window must be positive and finite, from 1ns to 876000h "
                  "(100 years), got 10000000h"));
  EXPECT_THAT([] { CallLimit(1, kMaxRateWindow + absl::Nanoseconds(1)); },
              ThrowsMessage<InvalidOptionError>(
                  "CallLimit 'call_count': window must be positive and finite, from 1ns to "
                  "876000h (100 years), got 876000h0.000000001s"));
  EXPECT_THAT([] { RateLimit("k", 1, "1e10", RateLimitAlgorithm::kTokenBucket); },
              ThrowsMessage<InvalidOptionError>(
                  "RateLimit 'k': rate-limit window must be a positive, finite number of seconds, "
                  "from 1e-09 (1ns) to 3153600000 (100 years), got '1e10'"));
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
        RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
        RateLimitAlgorithm::kGcra}) {
    EXPECT_EQ(RateLimit("k", 1, kMaxRateWindow, algorithm).window(), absl::Hours(876'000));
    EXPECT_EQ(RateLimit("k", 1, "3153600000", algorithm).window(), kMaxRateWindow);
  }
}

TEST(RateLimitTest, RejectsNaNWindowsClearly) {
  for (const char* window : {"nan", "NaN", "-nan"}) {
    SCOPED_TRACE(window);
    EXPECT_THAT([&] { RateLimit("k", 1, window); },
                ThrowsMessage<InvalidOptionError>(absl::StrCat(
                    "RateLimit 'k': rate-limit window must be a positive, finite number of "
                    "seconds, from 1e-09 (1ns) to 3153600000 (100 years), got '",
                    window, "' (not a number)")));
  }
  EXPECT_THAT([] { CallLimit(1, "NaN seconds"); },
              ThrowsMessage<InvalidOptionError>(
                  HasSubstr("CallLimit 'call_count': unknown rate-limit window 'NaN seconds'; "
                            "expected a number of seconds or one of second(s)")));
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
    EXPECT_THAT([&] { CallLimit(capacity, absl::Seconds(1), RateLimitAlgorithm::kGcra); },
                ThrowsMessage<InvalidOptionError>(
                    AllOf(HasSubstr("CallLimit 'call_count': capacity must be > 0"),
                          HasSubstr(FormatNumber(capacity)))));
  }
  EXPECT_THAT([] { CallLimit(1, absl::ZeroDuration()); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("window must be positive")));
  EXPECT_THAT([] { CallLimit(1, "yearly"); },
              ThrowsMessage<InvalidOptionError>(
                  AllOf(HasSubstr("CallLimit"), HasSubstr("unknown rate-limit window"))));
}

TEST(CallLimitTest, RejectsLessThanOneCallPerWindowAndSaysHowToWriteIt) {
  // Every call takes 1: below one call per window the window algorithms could never admit a call
  // (Acquire() hung) and TokenBucket and GCRA admitted one per window, twice the rate asked for.
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
        RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
        RateLimitAlgorithm::kGcra}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    EXPECT_THAT([&] { CallLimit(0.5, "second", algorithm); },
                ThrowsMessage<InvalidOptionError>(
                    "CallLimit 'call_count': capacity must be >= 1 (each call takes 1), or "
                    "+infinity for unlimited, got 0.5; for one call per 2s, write "
                    "CallLimit(1, absl::Seconds(2)) or CallLimit(1, \"2\")"));
  }
  EXPECT_THAT([] { CallLimit(0.4, absl::Minutes(1)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr(
                  "got 0.4; for one call per 2m30s, write CallLimit(1, absl::Seconds(150)) or "
                  "CallLimit(1, \"150\")")));
  EXPECT_THAT([] { CallLimit(1e-300, "second", RateLimitAlgorithm::kGcra); },
              ThrowsMessage<InvalidOptionError>(HasSubstr(
                  "got 1e-300; one call per window / capacity would need a window of inf, beyond "
                  "the allowed 1ns to 876000h")));
  // What the message suggests works, and the string form too.
  EXPECT_EQ(CallLimit(1, absl::Seconds(2)).window(), absl::Seconds(2));
  EXPECT_EQ(CallLimit(1, "2").window(), absl::Seconds(2));
  EXPECT_EQ(CallLimit(1.5, "second").capacity(), 1.5);
  EXPECT_EQ(CallLimit(kInf, "second").capacity(), kInf);
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
              ThrowsMessage<InvalidOptionError>("ResourceLimit 'k': capacity must be a whole "
                                                "number from 1 to 9007199254740991 (2^53 - 1), "
                                                "got 0"));
  EXPECT_THAT([] { ResourceLimit("k", -5); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("(2^53 - 1), got -5")));
  EXPECT_THAT([] { ResourceLimit("k", std::numeric_limits<int64_t>::min()); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got -9223372036854775808")));
  EXPECT_THAT([] { ResourceLimit("k", int8_t{-128}); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got -128")));
  EXPECT_EQ(ResourceLimit("k", 1).capacity(), 1);
}

TEST(ResourceLimitTest, RejectsCapacitiesADoubleCannotCountExactly) {
  // INT64_MAX units used to be stored as 2^63 and admit 2^62 + 2^62 + 1; UINT64_MAX was reported
  // as "got: -1". Every integer type is now judged and printed exactly.
  EXPECT_THAT([] { ResourceLimit("k", std::numeric_limits<int64_t>::max()); },
              ThrowsMessage<InvalidOptionError>(
                  "ResourceLimit 'k': capacity must be a whole number from 1 to "
                  "9007199254740991 (2^53 - 1), got 9223372036854775807"));
  EXPECT_THAT([] { ResourceLimit("k", std::numeric_limits<uint64_t>::max()); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got 18446744073709551615")));
  EXPECT_THAT([] { ResourceLimit("k", uint64_t{1} << 53); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got 9007199254740992")));
  EXPECT_THAT([] { ResourceLimit("k", (int64_t{1} << 53) + 1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got 9007199254740993")));
  EXPECT_EQ(ResourceLimit("k", kMaxWholeUnits).capacity(), 9007199254740991.0);
  EXPECT_EQ(ResourceLimit("k", uint32_t{4'000'000'000}).capacity(), 4e9);
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
  EXPECT_EQ(RateLimit("t", 0.5, "0.5", RateLimitAlgorithm::kGcra).DebugString(),
            "RateLimit(key=t, capacity=0.5, window=500ms, algorithm=gcra)");
  EXPECT_EQ(ResourceLimit("big", kMaxWholeUnits).DebugString(),
            "ResourceLimit(key=big, capacity=9007199254740991)");
  EXPECT_EQ(CallLimit(10, "second", RateLimitAlgorithm::kTokenBucket).DebugString(),
            "CallLimit(capacity=10, window=1s, algorithm=token_bucket)");
  EXPECT_EQ(ResourceLimit("connections", 4).DebugString(),
            "ResourceLimit(key=connections, capacity=4)");
  EXPECT_EQ(RateLimit("u", kInf, "hour").DebugString(),
            "RateLimit(key=u, capacity=inf, window=1h, algorithm=sliding_window)");
}

// A Limit subclass passing what the public constructors never do.
class RawLimit : public Limit {
 public:
  RawLimit(LimitKind kind, double capacity)
      : Limit(kind, "raw", capacity, absl::Seconds(1), RateLimitAlgorithm::kGcra) {}
};

TEST(LimitTest, RejectsAnUnknownKind) {
  EXPECT_THAT([] { RawLimit(static_cast<LimitKind>(7), 1); },
              ThrowsMessage<InvalidOptionError>(
                  "Limit 'raw': kind: unknown value 7; allowed: kRate, kCall, kResource"));
  EXPECT_EQ(LimitKindName(static_cast<LimitKind>(7)), "unknown");
  // The base class checks a resource capacity given as a double too.
  EXPECT_THAT([] { RawLimit(LimitKind::kResource, 2.5); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("capacity must be a whole number from 1 "
                                                          "to 9007199254740991 (2^53 - 1), got "
                                                          "2.5")));
  EXPECT_EQ(RawLimit(LimitKind::kResource, 3).capacity(), 3);
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

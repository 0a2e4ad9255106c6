// Explicit bursts (RateLimitOptions::burst, RateLimiterOptions::burst): exact admission sequences
// on a FakeClock for GCRA, TokenBucket and LeakyBucket, the checks, and a replay against a server
// that limits 50/s with a burst of 5 (nginx `limit_req rate=50r/s burst=5 nodelay`).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/rate_limiter.h"
#include "limits/rate_window.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::concurry::testkit::FakeClock;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// floor(1 s / 45): the emission interval of 45 per second, rounded down to whole ns.
constexpr int64_t kInterval45 = 22'222'222;

class GcraBurstTest : public ::testing::TestWithParam<RateLimitAlgorithm> {};

INSTANTIATE_TEST_SUITE_P(BucketAlgorithms, GcraBurstTest,
                         ::testing::Values(RateLimitAlgorithm::kGcra,
                                           RateLimitAlgorithm::kTokenBucket),
                         [](const auto& info) {
                           return std::string(RateLimitAlgorithmName(info.param));
                         });

TEST_P(GcraBurstTest, AdmitsTheBurstAtOnceThenOneEveryInterval) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  RateLimiter limiter({.algorithm = GetParam(), .capacity = 45, .burst = 5}, clock);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.TimeUntilAvailable(), absl::Nanoseconds(kInterval45));
  clock.Advance(absl::Nanoseconds(kInterval45 - 1));
  EXPECT_FALSE(limiter.TryAcquire());
  clock.Advance(absl::Nanoseconds(1));  // t = 1/45 s, rounded down to the ns.
  EXPECT_TRUE(limiter.TryAcquire());
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.TimeUntilAvailable(), absl::Nanoseconds(kInterval45));
  clock.Advance(absl::Nanoseconds(kInterval45));
  EXPECT_TRUE(limiter.TryAcquire());

  const RateLimiterStats stats = limiter.Stats();
  EXPECT_EQ(stats.burst, 5);
  EXPECT_EQ(stats.state.burst, 5);
  EXPECT_EQ(stats.state.max_rate, 45);
  EXPECT_EQ(stats.state.tolerance, absl::Nanoseconds(5 * kInterval45));
  EXPECT_EQ(absl::ToInt64Nanoseconds(stats.state.emission_interval), kInterval45);
  // Seven admitted, the last at 2 intervals: TAT = start + 7 intervals.
  EXPECT_EQ(stats.state.theoretical_arrival, start + absl::Nanoseconds(7 * kInterval45));
  EXPECT_DOUBLE_EQ(stats.in_use, 5);
  EXPECT_DOUBLE_EQ(stats.available, 0);
  EXPECT_DOUBLE_EQ(stats.state.tokens, 0);
  EXPECT_DOUBLE_EQ(stats.utilization, 1);

  // Idle for a second: the bucket refills to the burst, never beyond.
  clock.Advance(absl::Seconds(1));
  EXPECT_DOUBLE_EQ(limiter.Stats().available, 5);
  EXPECT_TRUE(limiter.TryAcquire(5));  // One request of the whole burst.
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_THAT([&] { limiter.TryAcquire(6); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("exceeds the burst (5)")));
}

TEST_P(GcraBurstTest, BurstAboveTheCapacityBanksMoreThanOneWindow) {
  FakeClock clock;
  RateLimiter limiter({.algorithm = GetParam(), .capacity = 1, .burst = 3}, clock);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.TimeUntilAvailable(), absl::Seconds(1));
  clock.Advance(absl::Seconds(3));
  EXPECT_TRUE(limiter.TryAcquire(3));
}

TEST_P(GcraBurstTest, RefundNeverFillsBeyondTheBurst) {
  FakeClock clock;
  RateLimiter limiter({.algorithm = GetParam(), .capacity = 45, .burst = 5}, clock);
  ASSERT_TRUE(limiter.TryAcquire(2));
  limiter.Refund(100);
  EXPECT_DOUBLE_EQ(limiter.Stats().available, 5);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
}

TEST(LeakyBurstTest, BucketDepthIsTheBurstAndLeaksAtTheRate) {
  FakeClock clock;
  RateLimiter limiter({.algorithm = RateLimitAlgorithm::kLeakyBucket, .capacity = 45, .burst = 5},
                      clock);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
  // The k-th token leaks ceil(k / 45 s) after the bucket became non-empty.
  EXPECT_EQ(limiter.TimeUntilAvailable(), absl::Nanoseconds(22'222'223));
  clock.Advance(absl::Nanoseconds(22'222'222));
  EXPECT_FALSE(limiter.TryAcquire());
  clock.Advance(absl::Nanoseconds(1));
  EXPECT_TRUE(limiter.TryAcquire());
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.TimeUntilAvailable(), absl::Nanoseconds(44'444'445 - 22'222'223));

  const RateLimiterStats stats = limiter.Stats();
  EXPECT_EQ(stats.burst, 5);
  EXPECT_DOUBLE_EQ(stats.state.level, 5);
  EXPECT_EQ(absl::ToInt64Nanoseconds(stats.state.emission_interval), kInterval45);
  EXPECT_EQ(stats.state.tolerance, absl::ZeroDuration());
  EXPECT_DOUBLE_EQ(stats.utilization, 1);
  EXPECT_THAT([&] { limiter.TryAcquire(6); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("exceeds the burst (5)")));
}

TEST(LeakyBurstTest, DepthAboveTheCapacity) {
  FakeClock clock;
  RateLimiter limiter({.algorithm = RateLimitAlgorithm::kLeakyBucket, .capacity = 1, .burst = 3},
                      clock);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.TryAcquire()) << i;
  EXPECT_FALSE(limiter.TryAcquire());
  EXPECT_EQ(limiter.TimeUntilAvailable(), absl::Seconds(1));
}

TEST(BurstTest, DefaultBurstIsTheCapacity) {
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
        RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
        RateLimitAlgorithm::kGcra}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    FakeClock clock;
    RateLimiter limiter({.algorithm = algorithm, .capacity = 45}, clock);
    EXPECT_EQ(limiter.Stats().burst, 45);
    EXPECT_TRUE(limiter.TryAcquire(45));
    EXPECT_FALSE(limiter.TryAcquire());
    const RateLimit limit("k", 45, "second", algorithm);
    EXPECT_EQ(limit.burst(), 45);
    EXPECT_FALSE(limit.explicit_burst());
    // A burst equal to the capacity is the default, accepted by every algorithm.
    const RateLimit same("k", 45, "second", algorithm, {.burst = 45});
    EXPECT_FALSE(same.explicit_burst());
    EXPECT_EQ(same.ParamsSignature(), limit.ParamsSignature());
  }
  // A fractional capacity keeps its fractional default burst.
  EXPECT_EQ(RateLimit("k", 0.5, "second", RateLimitAlgorithm::kGcra).burst(), 0.5);
}

TEST(BurstTest, SignatureAndDebugStringNameAnExplicitBurst) {
  const RateLimit limit("calls", 45, "second", RateLimitAlgorithm::kGcra, {.burst = 5});
  EXPECT_EQ(limit.burst(), 5);
  EXPECT_TRUE(limit.explicit_burst());
  EXPECT_EQ(limit.ParamsSignature(), "c45w1gcrb5");
  EXPECT_EQ(limit.DebugString(),
            "RateLimit(key=calls, capacity=45, window=1s, algorithm=gcra, burst=5)");
  const CallLimit calls(45, absl::Seconds(1), RateLimitAlgorithm::kLeakyBucket, {.burst = 5});
  EXPECT_EQ(calls.ParamsSignature(), "c45w1leab5");
  EXPECT_EQ(calls.DebugString(),
            "CallLimit(capacity=45, window=1s, algorithm=leaky_bucket, burst=5)");
  // The options may follow the window directly (default algorithm, here with its only burst).
  EXPECT_EQ(CallLimit(45, "second", {.burst = 45}).burst(), 45);
  EXPECT_EQ(RateLimit("k", 45, absl::Seconds(1), {.burst = 45}).burst(), 45);
}

TEST(BurstTest, WindowAlgorithmsRejectABurstNamingTheAlternatives) {
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    EXPECT_THAT(
        [&] { RateLimit("calls", 45, "second", algorithm, {.burst = 5}); },
        ThrowsMessage<InvalidOptionError>(
            AllOf(HasSubstr("RateLimit 'calls': burst must be unset or equal to the capacity (45)"),
                  HasSubstr("got 5"), HasSubstr("use kGcra, kTokenBucket or kLeakyBucket"),
                  HasSubstr("or capacity 5 per 111.111111ms"))));
  }
  // Without an algorithm, a burst selects GCRA (the window algorithms have none).
  EXPECT_EQ(CallLimit(45, "second", {.burst = 5}).algorithm(), RateLimitAlgorithm::kGcra);
  EXPECT_EQ(CallLimit(45, "second", {.burst = 5}).burst(), 5);
  EXPECT_EQ(RateLimit("k", 45, absl::Seconds(1), {.burst = 5}).algorithm(),
            RateLimitAlgorithm::kGcra);
  EXPECT_EQ(CallLimit(45, "second", {.burst = 45}).algorithm(), kDefaultRateLimitAlgorithm);
  EXPECT_THAT([] { CallLimit(45, "second", RateLimitAlgorithm::kSlidingWindow, {.burst = 5}); },
              ThrowsMessage<InvalidOptionError>(
                  HasSubstr("CallLimit 'call_count': burst must be unset or equal")));
  EXPECT_THAT(
      [] {
        RateLimiter limiter(
            {.algorithm = RateLimitAlgorithm::kFixedWindow, .capacity = 45, .burst = 5});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("RateLimiterOptions::burst must be unset")));
}

TEST(BurstTest, RejectsBadBurstsWithTheValueAndTheRange) {
  const auto gcra = [](double burst) {
    RateLimit("k", 45, "second", RateLimitAlgorithm::kGcra, {.burst = burst});
  };
  for (const double bad : {0.0, -1.0, 0.5, std::nan(""), HUGE_VAL}) {
    EXPECT_THAT([&] { gcra(bad); },
                ThrowsMessage<InvalidOptionError>(
                    HasSubstr("RateLimit 'k': burst must be >= 1 and finite (or equal to the "
                              "capacity, the default) for gcra, got ")));
  }
  gcra(1.5);  // Fractions above 1 are fine for GCRA and TokenBucket.
  EXPECT_THAT(
      [] { RateLimit("k", 1, "day", RateLimitAlgorithm::kTokenBucket, {.burst = 1e6}); },
      ThrowsMessage<InvalidOptionError>(AllOf(HasSubstr("burst 1000000 is too large for 1 per 24h"),
                                              HasSubstr("beyond the allowed 876000h"))));
  EXPECT_THAT(
      [] { RateLimit("k", 1, "day", RateLimitAlgorithm::kLeakyBucket, {.burst = 1e6}); },
      ThrowsMessage<InvalidOptionError>(HasSubstr("burst 1000000 is too large for 1 per 24h")));
  const auto leaky = [](double burst) {
    RateLimit("k", 45, "second", RateLimitAlgorithm::kLeakyBucket, {.burst = burst});
  };
  for (const double bad : {0.0, 2.5, 9007199254740992.0}) {
    EXPECT_THAT([&] { leaky(bad); },
                ThrowsMessage<InvalidOptionError>(
                    HasSubstr("burst must be a whole number from 1 to 9007199254740991 "
                              "(2^53 - 1) for leaky_bucket (the bucket's depth), got ")));
  }
  EXPECT_THAT(
      [] {
        RateLimit("k", std::numeric_limits<double>::infinity(), "second", RateLimitAlgorithm::kGcra,
                  {.burst = 5});
      },
      ThrowsMessage<InvalidOptionError>(
          HasSubstr("burst must be left unset for an unlimited (+infinity) capacity, got 5")));
  EXPECT_THAT(
      [] {
        RateLimiter limiter({.algorithm = RateLimitAlgorithm::kGcra, .capacity = 45, .burst = 0});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("RateLimiterOptions::burst must be >= 1")));
}

TEST(BurstTest, LimitSetRunsTheBurstAndReportsTheAlgorithmState) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  const LimitSet set = LimitSet::Create(
      {CallLimit(45, "second", RateLimitAlgorithm::kGcra, {.burst = 5}),
       RateLimit("tokens", 1000, "minute", RateLimitAlgorithm::kLeakyBucket, {.burst = 100})},
      {.clock = &clock});
  for (int i = 0; i < 5; ++i) {
    std::optional<LimitAcquisition> acquired = set.TryAcquire({{"tokens", 10}});
    ASSERT_TRUE(acquired.has_value()) << i;
    acquired->Update({{"tokens", 10}});
  }
  EXPECT_FALSE(set.TryAcquire({{"tokens", 10}}).has_value());  // The sixth call.
  EXPECT_THAT(
      [&] {
        set.TryAcquire({{"tokens", 101}});
      },
      ThrowsMessage<InvalidOptionError>(
          HasSubstr("Requested amount (101) exceeds the burst (100, capacity 1000) for "
                    "limit 'tokens'")));

  const LimitSetStats stats = set.Stats();
  const LimitStats& calls = stats.at("call_count");
  EXPECT_EQ(calls.burst, 5);
  EXPECT_DOUBLE_EQ(calls.in_use, 5);
  EXPECT_DOUBLE_EQ(calls.available, 0);
  EXPECT_DOUBLE_EQ(calls.utilization, 1);
  EXPECT_EQ(calls.rate.tolerance, absl::Nanoseconds(5 * kInterval45));
  EXPECT_EQ(calls.rate.theoretical_arrival, start + absl::Nanoseconds(5 * kInterval45));
  const LimitStats& tokens = stats.at("tokens");
  EXPECT_EQ(tokens.burst, 100);
  EXPECT_DOUBLE_EQ(tokens.rate.level, 50);
  EXPECT_DOUBLE_EQ(tokens.available, 50);
  EXPECT_DOUBLE_EQ(tokens.utilization, 0.5);
  EXPECT_EQ(tokens.rate.emission_interval, absl::Milliseconds(60));

  clock.Advance(absl::Nanoseconds(kInterval45));
  EXPECT_TRUE(set.TryAcquire({{"tokens", 0}}).has_value());
}

// ---- A client against a server's limiter ----

// A server limiting `rate` requests per second with a burst of `burst`, rejecting (never
// delaying) what exceeds it, like nginx's `limit_req zone=z rate=<rate>r/s burst=<burst>
// nodelay`: each admitted request adds one emission interval (1 s / rate) of debt to what is
// left of the debt, which drains in real time, and a request that would take the debt beyond
// `burst` intervals is rejected. Like nginx, it reads the clock in whole milliseconds. (nginx
// admits burst + 1 requests to a fresh key; this model admits `burst`, the stricter reading.)
class NoDelayServer {
 public:
  NoDelayServer(int64_t rate, int64_t burst) : interval_ms_(1000.0 / rate), burst_(burst) {}

  bool Admit(absl::Time now) {
    const int64_t ms = absl::ToUnixMillis(now);
    const double left = std::max(0.0, debt_ms_ - static_cast<double>(ms - last_ms_));
    if (left + interval_ms_ > burst_ * interval_ms_ + 1e-9) return false;
    debt_ms_ = left + interval_ms_;
    last_ms_ = ms;
    return true;
  }

 private:
  double interval_ms_;
  double burst_;
  double debt_ms_ = 0;
  int64_t last_ms_ = 0;
};

// Sends `count` requests as fast as `limiter` allows (advancing the fake clock to each retry
// time) and returns how many the server rejected.
int Replay(RateLimiter& limiter, FakeClock& clock, NoDelayServer& server, int count) {
  int rejected = 0;
  for (int i = 0; i < count; ++i) {
    while (!limiter.TryAcquire()) clock.Advance(limiter.TimeUntilAvailable());
    if (!server.Admit(clock.Now())) ++rejected;
  }
  return rejected;
}

struct ClientCase {
  std::string name;
  RateLimiterOptions options;
  int rejected;  // Of 1000 requests, by a 50/s burst 5 server (exact: the clock is fake).
};

TEST(ServerReplayTest, ClientUnderTheServerWithTheServersBurstIsNeverRejected) {
  const ClientCase cases[] = {
      // Recommended: a bit under the server's rate (45 < 50) with at most its burst.
      {"gcra 45/s burst 5",
       {.algorithm = RateLimitAlgorithm::kGcra, .capacity = 45, .burst = 5},
       0},
      {"token_bucket 45/s burst 5",
       {.algorithm = RateLimitAlgorithm::kTokenBucket, .capacity = 45, .burst = 5},
       0},
      {"leaky_bucket 45/s depth 5",
       {.algorithm = RateLimitAlgorithm::kLeakyBucket, .capacity = 45, .burst = 5},
       0},
      // A window algorithm only matches with the burst as its capacity: 5 per 5/45 s.
      {"sliding_window 5 per 1/9 s",
       {.algorithm = RateLimitAlgorithm::kSlidingWindow,
        .capacity = 5,
        .window = absl::Seconds(1) / 9},
       0},
      // Not recommended: a window's (or a default bucket's) whole capacity at once.
      {"sliding_window 45/s",
       {.algorithm = RateLimitAlgorithm::kSlidingWindow, .capacity = 45},
       885},
      {"gcra 45/s (burst 45)", {.algorithm = RateLimitAlgorithm::kGcra, .capacity = 45}, 40},
  };
  for (const ClientCase& client : cases) {
    SCOPED_TRACE(client.name);
    FakeClock clock;
    RateLimiter limiter(client.options, clock);
    NoDelayServer server(/*rate=*/50, /*burst=*/5);
    const int rejected = Replay(limiter, clock, server, 1000);
    std::printf("%s: %d of 1000 rejected\n", client.name.c_str(), rejected);
    EXPECT_EQ(rejected, client.rejected);
  }
}

}  // namespace
}  // namespace concurry

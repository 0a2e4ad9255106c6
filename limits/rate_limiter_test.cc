#include "limits/rate_limiter.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/rate_window.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::concurry::testkit::FakeClock;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

constexpr RateLimitAlgorithm kAll[] = {RateLimitAlgorithm::kTokenBucket,
                                       RateLimitAlgorithm::kLeakyBucket,
                                       RateLimitAlgorithm::kSlidingWindow,
                                       RateLimitAlgorithm::kFixedWindow, RateLimitAlgorithm::kGcra};

RateLimiterOptions TenPerSecond(RateLimitAlgorithm algorithm) {
  return {.algorithm = algorithm, .capacity = 10, .window = absl::Seconds(1)};
}

// After a burst of 10 at the (window-aligned) start time, the wait for one more unit: one
// emission interval for the buckets, a whole window for the window algorithms.
absl::Duration WaitForOneAfterBurst(RateLimitAlgorithm algorithm) {
  switch (algorithm) {
    case RateLimitAlgorithm::kSlidingWindow:
    case RateLimitAlgorithm::kFixedWindow:
      return absl::Seconds(1);
    default:
      return absl::Milliseconds(100);
  }
}

class RateLimiterAlgorithmTest : public ::testing::TestWithParam<RateLimitAlgorithm> {
 protected:
  FakeClock clock_;
};

INSTANTIATE_TEST_SUITE_P(All, RateLimiterAlgorithmTest, ::testing::ValuesIn(kAll),
                         [](const ::testing::TestParamInfo<RateLimitAlgorithm>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST_P(RateLimiterAlgorithmTest, AdmitsABurstOfCapacityThenRejects) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  EXPECT_TRUE(limiter.CanAcquire(10));
  EXPECT_TRUE(limiter.TryAcquire(4));
  EXPECT_TRUE(limiter.TryAcquire(6));
  EXPECT_FALSE(limiter.CanAcquire(1));
  EXPECT_FALSE(limiter.TryAcquire(1));
  EXPECT_EQ(limiter.TimeUntilAvailable(1), WaitForOneAfterBurst(GetParam()));
  const RateLimiterStats stats = limiter.Stats();
  EXPECT_EQ(stats.algorithm, GetParam());
  EXPECT_DOUBLE_EQ(stats.in_use, 10);
  EXPECT_DOUBLE_EQ(stats.available, 0);
  EXPECT_DOUBLE_EQ(stats.utilization, 1);
  EXPECT_DOUBLE_EQ(stats.max_rate, 10);
}

TEST_P(RateLimiterAlgorithmTest, AdmitsAgainExactlyWhenTimeUntilAvailableHasPassed) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  ASSERT_TRUE(limiter.TryAcquire(10));
  const absl::Duration wait = limiter.TimeUntilAvailable(1);
  clock_.Advance(wait - absl::Nanoseconds(1));
  EXPECT_FALSE(limiter.TryAcquire(1));
  EXPECT_EQ(limiter.TimeUntilAvailable(1), absl::Nanoseconds(1));
  clock_.Advance(absl::Nanoseconds(1));
  EXPECT_EQ(limiter.TimeUntilAvailable(1), absl::ZeroDuration());
  EXPECT_TRUE(limiter.TryAcquire(1));
}

TEST_P(RateLimiterAlgorithmTest, FullCapacityAgainAfterOneWindow) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  ASSERT_TRUE(limiter.TryAcquire(10));
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(limiter.TryAcquire(10));
  EXPECT_FALSE(limiter.TryAcquire(1));
}

TEST_P(RateLimiterAlgorithmTest, AcquireWaitsExactlyUntilAvailable) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  ASSERT_TRUE(limiter.TryAcquire(10));
  std::atomic<bool> done{false};
  std::thread acquirer([&] {
    EXPECT_TRUE(limiter.Acquire(1, absl::Seconds(5)));
    done = true;
  });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(WaitForOneAfterBurst(GetParam()) - absl::Nanoseconds(1));
  EXPECT_EQ(clock_.NumWaiters(), 1);  // Still blocked at deadline - 1 ns.
  EXPECT_FALSE(done);
  clock_.Advance(absl::Nanoseconds(1));
  acquirer.join();
  EXPECT_TRUE(done);
  // The acquirer took the unit: the buckets are full again, the new window holds one unit.
  const bool window = GetParam() == RateLimitAlgorithm::kSlidingWindow ||
                      GetParam() == RateLimitAlgorithm::kFixedWindow;
  EXPECT_DOUBLE_EQ(limiter.Stats().in_use, window ? 1 : 10);
}

TEST_P(RateLimiterAlgorithmTest, AcquireTimesOutExactly) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  ASSERT_TRUE(limiter.TryAcquire(10));
  std::atomic<bool> done{false};
  std::thread acquirer([&] {
    EXPECT_FALSE(limiter.Acquire(1, absl::Milliseconds(50)));
    done = true;
  });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(50) - absl::Nanoseconds(1));
  EXPECT_EQ(clock_.NumWaiters(), 1);
  EXPECT_FALSE(done);
  clock_.Advance(absl::Nanoseconds(1));
  acquirer.join();
  EXPECT_TRUE(done);
}

TEST_P(RateLimiterAlgorithmTest, AcquireWithZeroTimeoutDoesNotBlock) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  EXPECT_TRUE(limiter.Acquire(10, absl::ZeroDuration()));
  EXPECT_FALSE(limiter.Acquire(1, absl::ZeroDuration()));
  EXPECT_EQ(clock_.NumWaiters(), 0);
}

TEST_P(RateLimiterAlgorithmTest, InfiniteCapacityAlwaysAdmits) {
  RateLimiter limiter({.algorithm = GetParam(),
                       .capacity = std::numeric_limits<double>::infinity(),
                       .window = absl::Seconds(1)},
                      clock_);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(limiter.TryAcquire(1e9));
  EXPECT_EQ(limiter.TimeUntilAvailable(1), absl::ZeroDuration());
  EXPECT_TRUE(limiter.Acquire(1, absl::ZeroDuration()));
}

TEST_P(RateLimiterAlgorithmTest, RejectsAnAmountAboveCapacityAtOnce) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  EXPECT_THAT([&] { limiter.TryAcquire(11); },
              ThrowsMessage<InvalidOptionError>(HasSubstr(
                  "RateLimiter::TryAcquire: requested amount (11) exceeds capacity (10)")));
  EXPECT_THAT([&] { limiter.Acquire(11); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("can never be fulfilled")));
  EXPECT_EQ(clock_.NumWaiters(), 0);
}

TEST_P(RateLimiterAlgorithmTest, RejectsNonPositiveAndNonFiniteAmounts) {
  RateLimiter limiter(TenPerSecond(GetParam()), clock_);
  for (double amount : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    EXPECT_THAT([&] { limiter.CanAcquire(amount); },
                ThrowsMessage<InvalidOptionError>(
                    HasSubstr("RateLimiter::CanAcquire: amount must be positive and finite")))
        << amount;
  }
}

TEST(RateLimiterTest, WindowAlgorithmsAndLeakyBucketRejectFractionalAmounts) {
  FakeClock clock;
  for (RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kLeakyBucket, RateLimitAlgorithm::kSlidingWindow,
        RateLimitAlgorithm::kFixedWindow}) {
    RateLimiter limiter(TenPerSecond(algorithm), clock);
    EXPECT_THAT(
        [&] { limiter.TryAcquire(0.5); },
        ThrowsMessage<InvalidOptionError>(HasSubstr(
            "accepts only whole amounts, got 0.5; use TokenBucket or GCRA for fractional")));
    EXPECT_TRUE(limiter.TryAcquire(1.0));
  }
}

TEST(RateLimiterTest, TokenBucketAndGcraAcceptFractionalAmountsAndCapacities) {
  FakeClock clock;
  for (RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kGcra}) {
    RateLimiter tiny({.algorithm = algorithm, .capacity = 0.0001, .window = absl::Hours(24)},
                     clock);
    EXPECT_THAT([&] { tiny.TryAcquire(0.001); },
                ThrowsMessage<InvalidOptionError>(HasSubstr("exceeds capacity")));
    EXPECT_TRUE(tiny.TryAcquire(0.0001));
    EXPECT_FALSE(tiny.TryAcquire(0.00005));
    RateLimiter sum({.algorithm = algorithm, .capacity = 0.1 + 0.2}, clock);
    EXPECT_TRUE(sum.TryAcquire(0.3));
    RateLimiter subnormal({.algorithm = algorithm, .capacity = 1e-300}, clock);
    EXPECT_TRUE(subnormal.TryAcquire(1e-300));
    EXPECT_FALSE(subnormal.TryAcquire(1e-300));
  }
}

TEST(RateLimiterTest, TokenBucketRefundRestoresTokensUpToCapacity) {
  FakeClock clock;
  for (RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kGcra}) {
    RateLimiter limiter(TenPerSecond(algorithm), clock);
    EXPECT_TRUE(limiter.SupportsRefund());
    ASSERT_TRUE(limiter.TryAcquire(10));
    limiter.Refund(2.5);
    EXPECT_DOUBLE_EQ(limiter.Stats().available, 2.5);
    EXPECT_TRUE(limiter.TryAcquire(2.5));
    EXPECT_FALSE(limiter.TryAcquire(0.5));
    limiter.Refund(100);  // Never above the capacity.
    EXPECT_DOUBLE_EQ(limiter.Stats().available, 10);
    EXPECT_TRUE(limiter.TryAcquire(10));
    EXPECT_FALSE(limiter.TryAcquire(1));
  }
}

TEST(RateLimiterTest, OtherAlgorithmsReportRefundUnsupported) {
  FakeClock clock;
  RateLimiter limiter(TenPerSecond(RateLimitAlgorithm::kSlidingWindow), clock);
  EXPECT_FALSE(limiter.SupportsRefund());
  EXPECT_THAT([&] { limiter.Refund(1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr(
                  "sliding_window does not support refunds; only TokenBucket and GCRA do")));
}

TEST(RateLimiterTest, RefundWakesABlockedAcquirer) {
  FakeClock clock;
  RateLimiter limiter(TenPerSecond(RateLimitAlgorithm::kGcra), clock);
  ASSERT_TRUE(limiter.TryAcquire(10));
  std::thread acquirer([&] { EXPECT_TRUE(limiter.Acquire(3)); });
  clock.BlockUntilWaiters(1);
  limiter.Refund(3);  // No time passes: only the refund can admit it.
  acquirer.join();
  EXPECT_FALSE(limiter.CanAcquire(0.1));
}

TEST(RateLimiterTest, FixedWindowResetsOnClockAlignedBoundaries) {
  // Start 300 ms into a second: the window still ends at the next whole second.
  FakeClock clock(FakeClock::DefaultStartTime() + absl::Milliseconds(300));
  RateLimiter limiter(TenPerSecond(RateLimitAlgorithm::kFixedWindow), clock);
  ASSERT_TRUE(limiter.TryAcquire(10));
  EXPECT_EQ(limiter.TimeUntilAvailable(1), absl::Milliseconds(700));
  clock.Advance(absl::Milliseconds(700));
  EXPECT_TRUE(limiter.TryAcquire(10));  // 20 within 700 ms: up to 2K around a boundary.
  EXPECT_FALSE(limiter.TryAcquire(1));
}

TEST(RateLimiterTest, LeakyBucketLeaksUnderFrequentChecks) {
  FakeClock clock;
  RateLimiter limiter(TenPerSecond(RateLimitAlgorithm::kLeakyBucket), clock);
  ASSERT_TRUE(limiter.TryAcquire(10));
  int admitted = 0;
  for (int i = 0; i < 100; ++i) {  // A check every 10 ms for 1 s.
    clock.Advance(absl::Milliseconds(10));
    if (limiter.CanAcquire(1) && limiter.TryAcquire(1)) ++admitted;
  }
  EXPECT_EQ(admitted, 10);
}

TEST(RateLimiterTest, RejectsBadOptionsWithClearMessages) {
  FakeClock clock;
  for (double capacity : {0.0, -1.0, std::nan(""), -std::numeric_limits<double>::infinity()}) {
    EXPECT_THAT(
        [&] {
          RateLimiter limiter({.algorithm = RateLimitAlgorithm::kGcra, .capacity = capacity},
                              clock);
        },
        ThrowsMessage<InvalidOptionError>(HasSubstr(
            "RateLimiterOptions::capacity must be > 0 (fractions allowed), or +infinity for "
            "unlimited, got ")));
  }
  for (absl::Duration window :
       {absl::ZeroDuration(), -absl::Seconds(1), absl::InfiniteDuration()}) {
    EXPECT_THAT([&] { RateLimiter limiter({.capacity = 1, .window = window}, clock); },
                ThrowsMessage<InvalidOptionError>(
                    HasSubstr("RateLimiterOptions::window must be positive and finite")));
  }
  EXPECT_THAT(
      [&] { RateLimiter limiter({.capacity = 1, .window = absl::Hours(1e7)}, clock); },
      ThrowsMessage<InvalidOptionError>(
          "RateLimiterOptions::window must be positive and finite, from 1ns to 876000h (100 "
          "years), got 10000000h"));
  EXPECT_THAT(
      [&] {
        RateLimiter limiter({.capacity = 0.5}, clock);  // SlidingWindow: whole units.
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr(
          "RateLimiterOptions::capacity must be from 1 to 9007199254740991 (2^53 - 1), or "
          "+infinity for unlimited, got 0.5; sliding_window counts whole units")));
  EXPECT_THAT(
      [&] {
        RateLimiter limiter({.algorithm = RateLimitAlgorithm::kFixedWindow, .capacity = 1e16},
                            clock);
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("got 1e+16; fixed_window counts whole units")));
  EXPECT_THAT(
      [&] {
        RateLimiter limiter({.algorithm = static_cast<RateLimitAlgorithm>(7), .capacity = 1},
                            clock);
      },
      ThrowsMessage<InvalidOptionError>(
          "RateLimiterOptions::algorithm: unknown value 7; allowed: kTokenBucket, kLeakyBucket, "
          "kSlidingWindow, kFixedWindow, kGcra"));
}

TEST(RateLimiterTest, RejectsANegativeTimeout) {
  FakeClock clock;
  RateLimiter limiter(TenPerSecond(RateLimitAlgorithm::kGcra), clock);
  EXPECT_THAT([&] { limiter.Acquire(1, -absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(
                  "RateLimiter::Acquire: timeout must be >= 0 (or infinite), got -1s"));
  EXPECT_THAT([&] { limiter.Acquire(1, -absl::InfiniteDuration()); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got -inf")));
  EXPECT_DOUBLE_EQ(limiter.Stats().in_use, 0);  // Nothing taken.
  EXPECT_TRUE(limiter.Acquire(1, absl::ZeroDuration()));
}

TEST_P(RateLimiterAlgorithmTest, TheLongestWindowWaitsExactly) {
  RateLimiter limiter({.algorithm = GetParam(), .capacity = 1, .window = kMaxRateWindow}, clock_);
  ASSERT_TRUE(limiter.TryAcquire(1));
  EXPECT_FALSE(limiter.TryAcquire(1));
  // The fake clock starts one hour after the epoch: a fixed window ends 100 years after the
  // epoch.
  const absl::Duration wait = GetParam() == RateLimitAlgorithm::kFixedWindow
                                  ? kMaxRateWindow - absl::Hours(1)
                                  : kMaxRateWindow;
  EXPECT_EQ(limiter.TimeUntilAvailable(1), wait);
  std::atomic<bool> done{false};
  std::thread acquirer([&] {
    EXPECT_TRUE(limiter.Acquire(1));
    done = true;
  });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(wait - absl::Nanoseconds(1));
  EXPECT_EQ(clock_.NumWaiters(), 1);
  EXPECT_FALSE(done);
  clock_.Advance(absl::Nanoseconds(1));
  acquirer.join();
  EXPECT_TRUE(done);
}

TEST_P(RateLimiterAlgorithmTest, AdmitsExactlyTheCapacityAtTheEndsOfTheClock) {
  // absl::ToUnixNanos() saturates at years 1677 and 2262; a fake clock can go there.
  for (const absl::Time start :
       {absl::InfinitePast(), absl::UnixEpoch() - absl::Hours(24 * 365 * 300),
        absl::FromUnixNanos(std::numeric_limits<int64_t>::max()) - absl::Seconds(1),
        absl::UnixEpoch() + absl::Hours(24 * 365 * 300), absl::InfiniteFuture()}) {
    SCOPED_TRACE(absl::FormatTime(start));
    FakeClock clock(start);
    RateLimiter limiter({.algorithm = GetParam(), .capacity = 1, .window = absl::Seconds(1)},
                        clock);
    EXPECT_TRUE(limiter.TryAcquire(1));
    EXPECT_FALSE(limiter.TryAcquire(1));
    EXPECT_FALSE(limiter.Acquire(1, absl::ZeroDuration()));
    const absl::Duration wait = limiter.TimeUntilAvailable(1);
    EXPECT_GT(wait, absl::ZeroDuration());
    EXPECT_LE(wait, absl::Seconds(1));
    EXPECT_DOUBLE_EQ(limiter.Stats().in_use, 1);
  }
}

// A clock that may be set back (the clock contract allows any reading), for one thread that
// never waits on it.
class SettableClock final : public Clock {
 public:
  absl::Time Now() const override { return now_; }
  void Set(absl::Time now) { now_ = now; }
  void Advance(absl::Duration duration) { now_ += duration; }

 protected:
  bool DoAwaitWithDeadline(absl::Mutex*, const absl::Condition& cond, absl::Time) override {
    return cond.Eval();
  }

 private:
  absl::Time now_ = absl::UnixEpoch() + absl::Hours(1);
};

TEST(RateLimiterTest, FixedWindowFirstUsedWithTheClockSetBackAdmitsPerWindow) {
  // The lock-free word places its windows around the clock at construction: with capacity 2^39
  // it reaches 4.2 s of 1 us windows back. A clock then set back 10 s must still get the
  // capacity in each window, as the locked FixedWindow gives it.
  SettableClock clock;
  const double capacity = static_cast<double>(uint64_t{1} << 39);
  RateLimiter limiter({.algorithm = RateLimitAlgorithm::kFixedWindow,
                       .capacity = capacity,
                       .window = absl::Microseconds(1)},
                      clock);
  clock.Set(clock.Now() - absl::Seconds(10));
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(limiter.TimeUntilAvailable(capacity), absl::ZeroDuration());
    EXPECT_TRUE(limiter.TryAcquire(capacity));
    EXPECT_FALSE(limiter.TryAcquire(1));
    EXPECT_DOUBLE_EQ(limiter.Stats().in_use, capacity);
    EXPECT_EQ(limiter.TimeUntilAvailable(1), absl::Microseconds(1));  // Aligned start.
    clock.Advance(absl::Microseconds(1));
  }
}

TEST(RateLimiterTest, DefaultsToSlidingWindowOnTheRealClock) {
  RateLimiter limiter({.capacity = 2});
  EXPECT_EQ(limiter.options().algorithm, RateLimitAlgorithm::kSlidingWindow);
  EXPECT_TRUE(limiter.TryAcquire(2));
  EXPECT_FALSE(limiter.TryAcquire(1));
}

// Many threads hammer a lock-free limiter while time moves: it never admits more than
// capacity + rate * elapsed, and with time stopped it admits exactly the capacity.
class RateLimiterContentionTest : public ::testing::TestWithParam<RateLimitAlgorithm> {};

INSTANTIATE_TEST_SUITE_P(All, RateLimiterContentionTest, ::testing::ValuesIn(kAll),
                         [](const ::testing::TestParamInfo<RateLimitAlgorithm>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST_P(RateLimiterContentionTest, NeverAdmitsMoreThanCapacityPlusRefill) {
  constexpr int kThreads = 4;
  FakeClock clock;
  const absl::Time start = clock.Now();
  RateLimiter limiter({.algorithm = GetParam(), .capacity = 100, .window = absl::Seconds(1)},
                      clock);
  std::atomic<int64_t> admitted{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        if (limiter.TryAcquire(1)) admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // The threads take the initial burst before time moves.
  while (admitted.load() < 100) std::this_thread::yield();
  for (int step = 0; step < 200; ++step) {
    clock.Advance(absl::Milliseconds(5));
    const double elapsed = absl::ToDoubleSeconds(clock.Now() - start);
    ASSERT_LE(admitted.load(), 100 + 100 * elapsed + 1e-9);
  }
  stop = true;
  for (std::thread& thread : threads) thread.join();
  EXPECT_LE(admitted.load(), 100 + 100 * 1.0);
  EXPECT_GE(admitted.load(), 100);
}

TEST_P(RateLimiterContentionTest, AdmitsExactlyCapacityWhileTimeStands) {
  constexpr int kThreads = 4;
  FakeClock clock;
  RateLimiter limiter({.algorithm = GetParam(), .capacity = 1000, .window = absl::Seconds(1)},
                      clock);
  std::atomic<int64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (limiter.TryAcquire(1)) admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 1000);
}

}  // namespace
}  // namespace concurry

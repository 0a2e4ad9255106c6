#include "limits/internal/rate_algorithms.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {
namespace {

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kMaxNs = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinNs = std::numeric_limits<int64_t>::min();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One step of a table: at `now`, TryAcquire(`amount`) must return `admitted`, and afterwards
// WaitNs(now, `amount`) (the same amount again) must be `wait`.
struct Step {
  int64_t now;
  double amount;
  bool admitted;
  int64_t wait;
};

TEST(GcraCostTest, RoundsDownAndClamps) {
  EXPECT_EQ(GcraCost(1, 10, kSecond), 100 * kMs);
  EXPECT_EQ(GcraCost(10, 10, kSecond), kSecond);
  EXPECT_EQ(GcraCost(1, 3, kSecond), 333'333'333);  // 3 of them fit in the 1 s tolerance.
  EXPECT_EQ(GcraCost(0.0001, 0.0001, 86400 * kSecond), 86400 * kSecond);
  EXPECT_EQ(GcraCost(1e-300, 1e-300, kSecond), kSecond);
  EXPECT_EQ(GcraCost(1, 1e12, kSecond), 1);         // Below 1 ns: at least 1.
  EXPECT_EQ(GcraCost(1e300, 1, kSecond), kSecond);  // Refund of more than the capacity.
  EXPECT_LE(GcraCost(0.3, 0.1 + 0.2, kSecond), kSecond);
}

void RunGcraTable(double capacity, int64_t window_ns, const std::vector<Step>& steps) {
  AtomicGcra gcra(window_ns);
  for (const Step& step : steps) {
    const int64_t cost = GcraCost(step.amount, capacity, window_ns);
    EXPECT_EQ(gcra.TryAcquire(step.now, cost), step.admitted) << "now=" << step.now;
    EXPECT_EQ(GcraWaitNs(gcra.tat(), step.now, cost, window_ns), step.wait) << "now=" << step.now;
  }
}

TEST(AtomicGcraTest, BurstOfCapacityThenOnePerEmissionInterval) {
  // 10 per second: T = 100 ms, starts full.
  RunGcraTable(10, kSecond,
               {
                   {0, 5, true, 0},
                   {0, 5, true, 500 * kMs},  // Empty now: 5 more in 5 T.
                   {0, 1, false, 100 * kMs},
                   {100 * kMs - 1, 1, false, 1},
                   {100 * kMs, 1, true, 100 * kMs},
                   {250 * kMs, 1, true, 50 * kMs},  // 0.5 unit refilled, then taken.
                   {300 * kMs, 1, true, 100 * kMs},
                   {5 * kSecond, 10, true, kSecond},  // Refilled to capacity, not beyond.
                   {5 * kSecond, 1, false, 100 * kMs},
               });
}

TEST(AtomicGcraTest, FractionalAmountsAndCapacity) {
  RunGcraTable(0.0001, 86400 * kSecond,
               {
                   {0, 0.0001, true, 86400 * kSecond},
                   {0, 0.00005, false, 43200 * kSecond},
                   {43200 * kSecond, 0.00005, true, 43200 * kSecond},
               });
  RunGcraTable(2.5, kSecond,
               {
                   {0, 1.5, true, 200 * kMs},
                   {0, 1.0, true, 400 * kMs},
                   {200 * kMs, 0.5, true, 200 * kMs},
               });
  RunGcraTable(0.1 + 0.2, kSecond, {{0, 0.3, true, 999'999'998}});
}

TEST(AtomicGcraTest, RefundGivesTokensBackUpToCapacity) {
  AtomicGcra gcra(kSecond);
  const int64_t unit = GcraCost(1, 10, kSecond);
  ASSERT_TRUE(gcra.TryAcquire(0, 10 * unit));
  EXPECT_FALSE(gcra.CanAcquire(0, unit));
  gcra.Refund(0, 3 * unit);
  EXPECT_DOUBLE_EQ(GcraAvailable(gcra.tat(), 0, 10, kSecond), 3);
  EXPECT_TRUE(gcra.TryAcquire(0, 3 * unit));
  EXPECT_FALSE(gcra.CanAcquire(0, unit));
  gcra.Refund(0, kSecond);  // More than was taken: full, not more.
  gcra.Refund(0, kSecond);
  EXPECT_DOUBLE_EQ(GcraAvailable(gcra.tat(), 0, 10, kSecond), 10);
  EXPECT_TRUE(gcra.TryAcquire(0, 10 * unit));
  EXPECT_FALSE(gcra.CanAcquire(0, unit));
}

TEST(AtomicGcraTest, AvailableTracksRefill) {
  AtomicGcra gcra(kSecond);
  EXPECT_DOUBLE_EQ(GcraAvailable(gcra.tat(), 0, 10, kSecond), 10);
  ASSERT_TRUE(gcra.TryAcquire(0, kSecond));
  EXPECT_DOUBLE_EQ(GcraAvailable(gcra.tat(), 0, 10, kSecond), 0);
  EXPECT_DOUBLE_EQ(GcraAvailable(gcra.tat(), 250 * kMs, 10, kSecond), 2.5);
  EXPECT_DOUBLE_EQ(GcraAvailable(gcra.tat(), 2 * kSecond, 10, kSecond), 10);
}

template <typename Algorithm>
void RunLockedTable(Algorithm& algorithm, const std::vector<Step>& steps) {
  for (const Step& step : steps) {
    EXPECT_EQ(algorithm.TryAcquire(step.now, step.amount), step.admitted) << "now=" << step.now;
    EXPECT_EQ(algorithm.WaitNs(step.now, step.amount), step.wait) << "now=" << step.now;
  }
}

TEST(LeakyBucketTest, FillsToCapacityAndLeaksOnePerInterval) {
  // 5 per second: one token leaks every 200 ms.
  LeakyBucket bucket(5, kSecond);
  RunLockedTable(bucket, {
                             {0, 3, true, 200 * kMs},
                             {0, 2, true, 400 * kMs},
                             {0, 1, false, 200 * kMs},
                             {200 * kMs - 1, 1, false, 1},
                             {200 * kMs, 1, true, 200 * kMs},
                             {1000 * kMs, 4, true, 800 * kMs},  // 4 leaked by then.
                             {10 * kSecond, 5, true, kSecond},  // Emptied, then filled.
                         });
}

TEST(LeakyBucketTest, FrequentChecksDoNotStarveTheLeak) {
  // 10 per second (T = 100 ms), checked every 10 ms: concurry truncates 10 ms * 10/s = 0.1 to 0
  // and restarts its leak clock each time, so it never leaks (reference §11.14). Here the fraction
  // is kept and one token leaks every 100 ms.
  LeakyBucket bucket(10, kSecond);
  ASSERT_TRUE(bucket.TryAcquire(0, 10));
  int admitted = 0;
  for (int64_t now = 10 * kMs; now <= kSecond; now += 10 * kMs) {
    EXPECT_EQ(bucket.InUse(now), 10 - now / (100 * kMs) + admitted) << now;
    if (bucket.TryAcquire(now, 1)) ++admitted;
  }
  EXPECT_EQ(admitted, 10);
}

TEST(LeakyBucketTest, FractionalRateKeepsExactSchedule) {
  // 3 per second: leaks at ceil(k / 3 s).
  LeakyBucket bucket(3, kSecond);
  ASSERT_TRUE(bucket.TryAcquire(0, 3));
  EXPECT_EQ(bucket.WaitNs(0, 1), 333'333'334);
  EXPECT_FALSE(bucket.TryAcquire(333'333'333, 1));
  EXPECT_TRUE(bucket.TryAcquire(333'333'334, 1));
  EXPECT_EQ(bucket.WaitNs(333'333'334, 1), 666'666'667 - 333'333'334);
  EXPECT_TRUE(bucket.TryAcquire(666'666'667, 1));
}

TEST(SlidingWindowTest, EntriesExpireOneWindowAfterTheirTime) {
  // 3 per second.
  OwnedRateState window(RateLimitAlgorithm::kSlidingWindow, 3, kSecond);
  RunLockedTable(*window, {
                              {0, 1, true, 0},
                              {400 * kMs, 2, true, kSecond},  // Both entries must expire.
                              {400 * kMs, 1, false, 600 * kMs},
                              {kSecond - 1, 1, false, 1},
                              {kSecond, 1, true, 400 * kMs},  // Entry at 0 expired at exactly W.
                              {kSecond, 2, false, 400 * kMs},
                              {1400 * kMs, 2, true, kSecond},
                          });
  EXPECT_EQ(window->InUse(1400 * kMs), 3);
  EXPECT_EQ(window->InUse(2400 * kMs), 0);
}

TEST(SlidingWindowTest, NeverMoreThanCapacityInAnyWindow) {
  OwnedRateState window(RateLimitAlgorithm::kSlidingWindow, 4, kSecond);
  int admitted_in_window[3] = {0, 0, 0};
  for (int64_t now = 0; now < 3 * kSecond; now += 50 * kMs) {
    if (window->TryAcquire(now, 1)) ++admitted_in_window[now / kSecond];
    EXPECT_LE(window->InUse(now), 4);
  }
  EXPECT_EQ(admitted_in_window[0], 4);
  EXPECT_EQ(admitted_in_window[1], 4);
  EXPECT_EQ(admitted_in_window[2], 4);
}

TEST(FixedWindowTest, WindowsAreAlignedToTheClock) {
  FixedWindow window(2, kSecond);
  EXPECT_EQ(window.WindowIndex(0), 0);
  EXPECT_EQ(window.WindowIndex(kSecond - 1), 0);
  EXPECT_EQ(window.WindowIndex(kSecond), 1);
  EXPECT_EQ(window.WindowIndex(-1), -1);
  RunLockedTable(window, {
                             {300 * kMs, 2, true, 700 * kMs},  // Resets at 1 s, not at 1.3 s.
                             {999 * kMs, 1, false, kMs},
                             {kSecond, 1, true, 0},
                             {1500 * kMs, 1, true, 500 * kMs},
                             {1500 * kMs, 1, false, 500 * kMs},
                             {5 * kSecond + 1, 2, true, kSecond - 1},
                         });
}

TEST(FixedWindowTest, AdmitsTwiceTheCapacityAroundABoundary) {
  FixedWindow window(5, kSecond);
  EXPECT_TRUE(window.TryAcquire(kSecond - 1, 5));
  EXPECT_FALSE(window.TryAcquire(kSecond - 1, 1));
  EXPECT_TRUE(window.TryAcquire(kSecond, 5));  // 10 in 1 ns: the documented fixed-window trade-off.
  EXPECT_FALSE(window.TryAcquire(kSecond, 1));
  EXPECT_EQ(window.InUse(kSecond), 5);
}

TEST(SlidingWindowTest, LargeCapacitiesShareEntriesAndNeverExpireEarly) {
  // 10 000 per second in a ring of kMaxSlots = 4096 entries: requests less than
  // ceil(1 s / 4096) = 244 141 ns after the newest entry join it.
  constexpr int64_t kMerge = (kSecond + SlidingWindow::kMaxSlots - 1) / SlidingWindow::kMaxSlots;
  ASSERT_EQ(SlidingWindow::SlotsFor(10'000), SlidingWindow::kMaxSlots);
  ASSERT_EQ(SlidingWindow::SlotsFor(3.5), 4);
  OwnedRateState window(RateLimitAlgorithm::kSlidingWindow, 10'000, kSecond);
  // One request every 1 us for 10 ms: all 10 000 fit, in about 41 entries.
  for (int64_t i = 0; i < 10'000; ++i) ASSERT_TRUE(window->TryAcquire(i * 1000, 1)) << i;
  EXPECT_FALSE(window->TryAcquire(10 * kMs, 1));
  // The first entry (times 0 .. kMerge - 1 us) is stamped with its last request's time, so it
  // expires one window after that, not after time 0.
  const int64_t first_stamp = (kMerge - 1) / 1000 * 1000;
  EXPECT_FALSE(window->TryAcquire(kSecond + first_stamp - 1, 1));
  EXPECT_TRUE(window->TryAcquire(kSecond + first_stamp, 1));
  // Spread over the whole window, the ring fills but never overflows: still exactly 10 000.
  OwnedRateState spread(RateLimitAlgorithm::kSlidingWindow, 10'000, kSecond);
  int admitted = 0;
  for (int64_t now = 0; now < kSecond; now += 50'000) admitted += spread->TryAcquire(now, 1);
  for (int64_t now = 0; now < kSecond; now += 1000) admitted += spread->TryAcquire(now, 1);
  EXPECT_EQ(admitted, 10'000);
}

TEST(RateStateTest, ChargeRecordsUsageBeyondTheCapacity) {
  OwnedRateState fixed(RateLimitAlgorithm::kFixedWindow, 5, kSecond);
  ASSERT_TRUE(fixed->TryAcquire(0, 5));
  fixed->Charge(0, 3);
  EXPECT_EQ(fixed->InUse(0), 8);
  EXPECT_EQ(fixed->WaitNs(0, 1), kSecond);
  EXPECT_EQ(fixed->InUse(kSecond), 0);

  OwnedRateState sliding(RateLimitAlgorithm::kSlidingWindow, 5, kSecond);
  ASSERT_TRUE(sliding->TryAcquire(0, 5));
  sliding->Charge(100 * kMs, 2);
  EXPECT_EQ(sliding->InUse(100 * kMs), 7);
  EXPECT_EQ(sliding->WaitNs(100 * kMs, 1), 900 * kMs);  // The entry at 0 (5) must expire.
  EXPECT_EQ(sliding->WaitNs(kSecond, 4), 100 * kMs);    // Then 2 in use: 4 more need the 2 gone.

  OwnedRateState gcra(RateLimitAlgorithm::kGcra, 10, kSecond);
  ASSERT_TRUE(gcra->TryAcquire(0, 10));
  gcra->Charge(0, 5);                        // 5 tokens of debt beyond the empty bucket.
  EXPECT_EQ(gcra->WaitNs(0, 1), 600 * kMs);  // 6 tokens missing, 100 ms each.

  OwnedRateState leaky(RateLimitAlgorithm::kLeakyBucket, 5, kSecond);
  ASSERT_TRUE(leaky->TryAcquire(0, 5));
  leaky->Charge(0, 1);
  EXPECT_EQ(leaky->InUse(0), 6);
  EXPECT_EQ(leaky->WaitNs(0, 1), 400 * kMs);  // Two tokens must leak, 200 ms each.
}

TEST(RateStateTest, ValidatesAmountsPerAlgorithm) {
  OwnedRateState gcra(RateLimitAlgorithm::kGcra, 0.5, kSecond);
  EXPECT_TRUE(gcra->ValidAmount(0.25));
  EXPECT_FALSE(gcra->ValidAmount(0.75));
  EXPECT_NE(gcra->AmountError(0.75).find("exceeds capacity (0.5)"), std::string::npos);
  OwnedRateState sliding(RateLimitAlgorithm::kSlidingWindow, 10, kSecond);
  EXPECT_TRUE(sliding->ValidAmount(3));
  EXPECT_FALSE(sliding->ValidAmount(2.5));
  EXPECT_NE(sliding->AmountError(2.5).find("sliding_window accepts only whole amounts"),
            std::string::npos);
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    EXPECT_FALSE(gcra->ValidAmount(bad)) << bad;
    EXPECT_NE(gcra->AmountError(bad).find("positive and finite"), std::string::npos) << bad;
  }
  OwnedRateState unlimited(RateLimitAlgorithm::kSlidingWindow,
                           std::numeric_limits<double>::infinity(), kSecond);
  EXPECT_TRUE(unlimited->TryAcquire(0, 1e15));
  EXPECT_EQ(unlimited->WaitNs(0, 1e15), 0);
}

// ---- Parameters ----

TEST(ValidateRateParamsTest, NamesTheArgumentTheValueAndTheRange) {
  const absl::Duration second = absl::Seconds(1);
  EXPECT_TRUE(ValidateRateParams(RateLimitAlgorithm::kGcra, 1e-300, second).ok());
  EXPECT_TRUE(ValidateRateParams(RateLimitAlgorithm::kGcra, 1e300, kMaxRateWindow).ok());
  EXPECT_TRUE(ValidateRateParams(RateLimitAlgorithm::kSlidingWindow, kInf, second).ok());
  EXPECT_TRUE(
      ValidateRateParams(RateLimitAlgorithm::kFixedWindow, 9007199254740991.0, absl::Nanoseconds(1))
          .ok());
  EXPECT_EQ(ValidateRateParams(static_cast<RateLimitAlgorithm>(9), 1, second).message(),
            "algorithm: unknown value 9; allowed: kTokenBucket, kLeakyBucket, kSlidingWindow, "
            "kFixedWindow, kGcra");
  EXPECT_EQ(ValidateRateParams(RateLimitAlgorithm::kTokenBucket, -0.0, second).message(),
            "capacity must be > 0 (fractions allowed), or +infinity for unlimited, got -0");
  EXPECT_EQ(ValidateRateParams(RateLimitAlgorithm::kLeakyBucket, kNaN, second).message(),
            "capacity must be from 1 to 9007199254740991 (2^53 - 1), or +infinity for "
            "unlimited, got nan");
  EXPECT_EQ(ValidateRateParams(RateLimitAlgorithm::kGcra, 1, absl::Hours(1e7)).message(),
            "window must be positive and finite, from 1ns to 876000h (100 years), got 10000000h");
  EXPECT_EQ(ValidateRateParams(RateLimitAlgorithm::kGcra, 1, absl::Hours(1e7)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FormatNumberTest, WritesTheShortestExactForm) {
  EXPECT_EQ(FormatNumber(9007199254740991.0), "9007199254740991");
  EXPECT_EQ(FormatNumber(0.0001), "0.0001");
  EXPECT_EQ(FormatNumber(1e16), "1e+16");
  EXPECT_EQ(FormatNumber(1e-300), "1e-300");
  EXPECT_EQ(FormatNumber(kNaN), "nan");
  EXPECT_EQ(FormatNumber(-kInf), "-inf");
}

TEST(SaturatingTest, AddsSubtractsAndConvertsWithoutOverflow) {
  EXPECT_EQ(SaturatingAdd(kMaxNs, 1), kMaxNs);
  EXPECT_EQ(SaturatingAdd(kMinNs, -1), kMinNs);
  EXPECT_EQ(SaturatingAdd(5, -7), -2);
  EXPECT_EQ(SaturatingSub(kMaxNs, -1), kMaxNs);
  EXPECT_EQ(SaturatingSub(kMinNs, 1), kMinNs);
  EXPECT_EQ(SaturatingSub(kMaxNs, kMinNs), kMaxNs);
  EXPECT_EQ(SaturatingSub(-3, 4), -7);
  EXPECT_EQ(SaturatingNanos(1e300), kMaxNs);
  EXPECT_EQ(SaturatingNanos(9223372036854775808.0), kMaxNs);  // 2^63: a plain cast is UB.
  EXPECT_EQ(SaturatingNanos(-1e300), kMinNs);
  EXPECT_EQ(SaturatingNanos(kNaN), kMaxNs);
  EXPECT_EQ(SaturatingNanos(-2.9), -2);
}

// ---- Extremes: the longest window, the ends of the int64 clock, huge over-use ----

constexpr RateLimitAlgorithm kAllAlgorithms[] = {
    RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
    RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
    RateLimitAlgorithm::kGcra};

TEST(RateStateTest, CapacityOneAtTheLongestWindowAdmitsOncePerWindowAtAnyTime) {
  const int64_t window = absl::ToInt64Nanoseconds(kMaxRateWindow);
  for (const RateLimitAlgorithm algorithm : kAllAlgorithms) {
    for (const int64_t start : {kMinNs, kMinNs + 1, int64_t{-1}, int64_t{0},
                                int64_t{1'700'000'000'000'000'000}, kMaxNs - 2 * window}) {
      SCOPED_TRACE(absl::StrCat(RateLimitAlgorithmName(algorithm), " from ", start));
      OwnedRateState state(algorithm, 1, window);
      ASSERT_TRUE(state->TryAcquire(start, 1));
      EXPECT_FALSE(state->TryAcquire(start, 1));
      // Fixed windows end on multiples of the window since the epoch; the others a window after
      // the admission.
      const FixedWindow aligned(1, window);
      const int64_t wait = algorithm == RateLimitAlgorithm::kFixedWindow
                               ? (aligned.WindowIndex(start) + 1) * window - start
                               : window;
      EXPECT_EQ(state->WaitNs(start, 1), wait);
      EXPECT_FALSE(state->TryAcquire(start + wait - 1, 1));
      EXPECT_TRUE(state->TryAcquire(start + wait, 1));
      EXPECT_FALSE(state->TryAcquire(start + wait, 1));
    }
  }
}

TEST(RateStateTest, TimeStandsStillAWindowBeforeTheEndOfTheClock) {
  // Clock readings past INT64_MAX - window (absl saturates at year 2262) count as that instant,
  // so "now + window" always exists: the limit keeps admitting exactly its capacity there.
  const int64_t window = kSecond;
  for (const RateLimitAlgorithm algorithm : kAllAlgorithms) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    OwnedRateState state(algorithm, 2, window);
    EXPECT_TRUE(state->TryAcquire(kMaxNs, 1));
    EXPECT_TRUE(state->TryAcquire(kMaxNs - 5, 1));  // Also past the last instant: the same one.
    EXPECT_FALSE(state->TryAcquire(kMaxNs, 1));
    EXPECT_FALSE(state->TryAcquire(kMaxNs - window + 1, 1));
    EXPECT_GT(state->WaitNs(kMaxNs, 1), 0);
    EXPECT_EQ(state->InUse(kMaxNs), 2);
  }
  OwnedRateState gcra(RateLimitAlgorithm::kGcra, 2, window);
  ASSERT_TRUE(gcra->TryAcquire(kMaxNs, 2));
  EXPECT_EQ(gcra->WaitNs(kMaxNs, 1), window / 2);
  EXPECT_EQ(gcra->WaitNs(kMaxNs - window - window / 4, 1), window / 2 + window / 4);
}

TEST(RateStateTest, HugeOverUseSaturatesInsteadOfOverflowing) {
  OwnedRateState gcra(RateLimitAlgorithm::kGcra, 1, kSecond);
  gcra->Charge(0, 1e300);  // Centuries of debt, twice: the TAT saturates at INT64_MAX.
  gcra->Charge(0, 1e300);
  EXPECT_FALSE(gcra->TryAcquire(0, 1));
  EXPECT_EQ(gcra->WaitNs(0, 1), kMaxNs);
  EXPECT_EQ(gcra->InUse(0), 1);
  gcra->Refund(0, 1);
  EXPECT_EQ(gcra->WaitNs(0, 1), kMaxNs - kSecond);

  OwnedRateState tiny(RateLimitAlgorithm::kTokenBucket, 1e-300, kSecond);
  tiny->Charge(0, 1e10);  // amount / capacity overflows a double: saturated too.
  EXPECT_EQ(tiny->WaitNs(0, 1e-300), kMaxNs);

  // The locked algorithms count at most kMaxWholeUnits in use, which keeps counts exact.
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kLeakyBucket, RateLimitAlgorithm::kSlidingWindow,
        RateLimitAlgorithm::kFixedWindow}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    OwnedRateState state(algorithm, 5, kSecond);
    state->Charge(0, 9007199254740991.0);
    state->Charge(0, 9007199254740991.0);
    EXPECT_EQ(state->InUse(0), 9007199254740991.0);
    EXPECT_FALSE(state->TryAcquire(0, 1));
    EXPECT_GE(state->WaitNs(0, 1), 1);
  }
  // A LeakyBucket drains 2^53 units at 5 per second in 57 million years: saturated.
  OwnedRateState leaky(RateLimitAlgorithm::kLeakyBucket, 5, kSecond);
  leaky->Charge(0, 9007199254740991.0);
  EXPECT_EQ(leaky->WaitNs(0, 1), kMaxNs);
  // A SlidingWindow or FixedWindow forgets it a window later.
  OwnedRateState sliding(RateLimitAlgorithm::kSlidingWindow, 5, kSecond);
  sliding->Charge(0, 9007199254740991.0);
  EXPECT_EQ(sliding->WaitNs(0, 5), kSecond);
  EXPECT_TRUE(sliding->TryAcquire(kSecond, 5));
}

TEST(RateStateTest, WholeAmountsAboveTwoTo53AreInvalidEvenWithInfiniteCapacity) {
  OwnedRateState unlimited(RateLimitAlgorithm::kSlidingWindow, kInf, kSecond);
  EXPECT_TRUE(unlimited->ValidAmount(9007199254740991.0));
  EXPECT_FALSE(unlimited->ValidAmount(9007199254740992.0));
  EXPECT_FALSE(unlimited->ValidAmount(1e300));  // Used to be cast to int64: undefined.
  EXPECT_EQ(unlimited->AmountError(1e300),
            "sliding_window counts whole units, from 1 to 9007199254740991 (2^53 - 1) at a "
            "time, got 1e+300");
  OwnedRateState gcra(RateLimitAlgorithm::kGcra, kInf, kSecond);
  EXPECT_TRUE(gcra->ValidAmount(1e300));
}

TEST(LeakyBucketTest, ManyTokensPerNanosecondLeakOnceHoweverOftenChecked) {
  // 2.5 tokens per ns. Each check used to round the leak clock down and leak the same
  // nanosecond's tokens again: 50 checks at t = 1 admitted 50 units instead of 2.
  LeakyBucket bucket(2'500'000'000, kSecond);
  ASSERT_TRUE(bucket.TryAcquire(0, 2'500'000'000));
  int admitted = 0;
  for (int i = 0; i < 50; ++i) admitted += bucket.TryAcquire(1, 1);
  EXPECT_EQ(admitted, 2);  // floor(1 ns * 2.5 / ns).
  for (int i = 0; i < 50; ++i) admitted += bucket.TryAcquire(2, 1);
  EXPECT_EQ(admitted, 5);  // floor(2 * 2.5): the half token of the first nanosecond is kept.
  EXPECT_EQ(bucket.WaitNs(2, 1), 1);
  EXPECT_EQ(bucket.WaitNs(2, 3), 2);  // Token 8 leaks at ceil(8 / 2.5) = 4.
}

TEST(LeakyBucketTest, ScheduleIsExactAtTheLongestWindow) {
  // W / 7 is not an integer and W is beyond 2^53 ns, where doubles round: the k-th token leaks
  // at exactly ceil(k * W / 7).
  const int64_t window = absl::ToInt64Nanoseconds(kMaxRateWindow);
  ASSERT_EQ(window, 3'153'600'000'000'000'000);
  LeakyBucket bucket(7, window);
  ASSERT_TRUE(bucket.TryAcquire(0, 7));
  EXPECT_EQ(bucket.WaitNs(0, 1), 450'514'285'714'285'715);
  EXPECT_EQ(bucket.WaitNs(0, 3), 1'351'542'857'142'857'143);
  EXPECT_FALSE(bucket.TryAcquire(450'514'285'714'285'714, 1));
  EXPECT_TRUE(bucket.TryAcquire(450'514'285'714'285'715, 1));
  // Capacity 1 at the longest window: once per window, to the nanosecond.
  LeakyBucket one(1, window - 1);
  ASSERT_TRUE(one.TryAcquire(kMinNs, 1));
  EXPECT_FALSE(one.TryAcquire(kMinNs + window - 2, 1));
  EXPECT_TRUE(one.TryAcquire(kMinNs + window - 1, 1));
  // A fractional capacity is exact too: 2.5 per W - 1 ns, the first token at ceil((W - 1) / 2.5).
  LeakyBucket fractional(2.5, window - 1);
  ASSERT_TRUE(fractional.TryAcquire(0, 2));
  EXPECT_EQ(fractional.WaitNs(0, 1), 1'261'440'000'000'000'000);
  EXPECT_FALSE(fractional.TryAcquire(1'261'439'999'999'999'999, 1));
  EXPECT_TRUE(fractional.TryAcquire(1'261'440'000'000'000'000, 1));
}

TEST(FixedWindowTest, WindowsAtTheEarliestClockReadingsEndExactly) {
  // floor(INT64_MIN / 3) * 3 is below INT64_MIN; the window's end, (index + 1) * 3, is not.
  FixedWindow window(1, 3);
  EXPECT_EQ(window.WindowIndex(kMinNs), -3'074'457'345'618'258'603);
  ASSERT_TRUE(window.TryAcquire(kMinNs, 1));
  EXPECT_EQ(window.WaitNs(kMinNs, 1), 2);  // Ends at -9223372036854775806.
  EXPECT_TRUE(window.TryAcquire(kMinNs + 2, 1));
}

TEST(SlidingWindowTest, EntriesExpireExactlyAtTheEarliestClockReadings) {
  OwnedRateState window(RateLimitAlgorithm::kSlidingWindow, 1, kSecond);
  ASSERT_TRUE(window->TryAcquire(kMinNs, 1));
  EXPECT_EQ(window->WaitNs(kMinNs, 1), kSecond);
  EXPECT_FALSE(window->TryAcquire(kMinNs + kSecond - 1, 1));
  EXPECT_TRUE(window->TryAcquire(kMinNs + kSecond, 1));
  // A clock set back by centuries delays expiry instead of wrapping around.
  EXPECT_FALSE(window->TryAcquire(kMinNs, 1));
  EXPECT_EQ(window->WaitNs(kMinNs, 1), 2 * kSecond);
}

// The sliding log as first written (one division per slice comparison, `%` for ring slots), as
// a reference for SlidingWindow's remembered slice bounds and its ring arithmetic.
class ReferenceSlidingLog {
 public:
  ReferenceSlidingLog(double capacity, int64_t window_ns)
      : capacity_(capacity),
        window_ns_(window_ns),
        slots_(SlidingWindow::SlotsFor(capacity)),
        merge_ns_(capacity > SlidingWindow::kMaxSlots
                      ? (window_ns + SlidingWindow::kMaxSlots - 1) / SlidingWindow::kMaxSlots
                      : 0) {}

  bool TryAcquire(int64_t now, double amount) {
    Expire(now);
    if ((count_ - capacity_) + amount > 0) return false;
    if (!log_.empty()) {
      SlidingWindow::Entry& newest = log_.back();
      const bool same_slice = merge_ns_ > 0 && newest.time / merge_ns_ == now / merge_ns_;
      if (newest.time >= now || same_slice || static_cast<int64_t>(log_.size()) == slots_) {
        newest.amount += amount;
        newest.time = std::max(newest.time, now);
        count_ += amount;
        return true;
      }
    }
    log_.push_back({now, amount});
    count_ += amount;
    return true;
  }
  double InUse(int64_t now) {
    Expire(now);
    return count_;
  }

 private:
  void Expire(int64_t now) {
    while (!log_.empty() && SaturatingSub(now, log_.front().time) >= window_ns_) {
      count_ -= log_.front().amount;
      log_.pop_front();
    }
    if (log_.empty()) count_ = 0;
  }

  double capacity_;
  int64_t window_ns_;
  int64_t slots_;
  int64_t merge_ns_;
  std::deque<SlidingWindow::Entry> log_;
  double count_ = 0;
};

TEST(SlidingWindowTest, MatchesTheReferenceLogAcrossSlicesAndNegativeTimes) {
  std::mt19937_64 random(29);
  for (const double capacity : {3.0, 5000.0, 100000.0}) {
    for (const int64_t window_ns : {int64_t{4097}, 10 * kSecond}) {
      for (const int64_t start : {-window_ns, int64_t{0}, kSecond * 1000}) {
        ReferenceSlidingLog reference(capacity, window_ns);
        OwnedRateState packed(RateLimitAlgorithm::kSlidingWindow, capacity, window_ns);
        OwnedRateState slotted(RateLimitAlgorithm::kSlidingWindow, capacity, window_ns,
                               kDefaultBurst, RateLayout::kLockSlot);
        int64_t now = start;
        for (int i = 0; i < 20000; ++i) {
          // Steps around the slice length (ceil(W / 4096)), now and then a step back.
          const int64_t slice = window_ns / SlidingWindow::kMaxSlots + 1;
          now += random() % 10 == 0 ? -static_cast<int64_t>(random() % (2 * slice))
                                    : static_cast<int64_t>(random() % (2 * slice));
          const double amount = static_cast<double>(1 + random() % 3);
          const bool admitted = reference.TryAcquire(now, amount);
          ASSERT_EQ(packed->TryAcquire(now, amount), admitted) << "step " << i;
          ASSERT_EQ(slotted->TryAcquire(now, amount), admitted) << "step " << i;
          ASSERT_EQ(packed->InUse(now), reference.InUse(now)) << "step " << i;
          ASSERT_EQ(slotted->InUse(now), packed->InUse(now)) << "step " << i;
          ASSERT_EQ(slotted->WaitNs(now, amount), packed->WaitNs(now, amount)) << "step " << i;
        }
      }
    }
  }
}

// LimitSet picks its hot words with HasExclusiveGcra() and drives them as exclusive_gcra()
// words: the two must agree for every algorithm and capacity.
TEST(RateStateTest, ExclusiveGcraExactlyWhenHasExclusiveGcra) {
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
        RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
        RateLimitAlgorithm::kGcra}) {
    for (const double capacity : {1.0, 10.0, std::numeric_limits<double>::infinity()}) {
      SCOPED_TRACE(absl::StrCat(RateLimitAlgorithmName(algorithm), " capacity ", capacity));
      OwnedRateState state(algorithm, capacity, kSecond);
      EXPECT_EQ(state->exclusive_gcra() != nullptr, HasExclusiveGcra(algorithm, capacity));
    }
  }
  EXPECT_TRUE(HasExclusiveGcra(RateLimitAlgorithm::kGcra, 10));
  EXPECT_TRUE(HasExclusiveGcra(RateLimitAlgorithm::kTokenBucket, 10));
}

// The shared GCRA take and refund, as AtomicGcra and LimitSet's hot words apply them.
TEST(GcraTest, TakenAndRefundedTats) {
  EXPECT_EQ(GcraTaken(/*tat=*/100, /*now=*/50, /*cost=*/10), 110);
  EXPECT_EQ(GcraTaken(100, 200, 10), 210);  // An idle word starts from now.
  EXPECT_EQ(GcraRefunded(100, 50, 10), 90);
  EXPECT_EQ(GcraRefunded(100, 95, 10), 95);    // Never below now.
  EXPECT_EQ(GcraRefunded(100, 100, 10), 100);  // Already full: unchanged.
  EXPECT_EQ(GcraRefunded(40, 100, 10), 40);    // Full and idle: unchanged.
  EXPECT_EQ(GcraRefunded(std::numeric_limits<int64_t>::min() + 5,
                         std::numeric_limits<int64_t>::min(), 10),
            std::numeric_limits<int64_t>::min());  // Saturates.
}

TEST(RateStateTest, LockSlotLayoutPutsTheLockOnTheStatesCacheLine) {
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kLeakyBucket, RateLimitAlgorithm::kSlidingWindow,
        RateLimitAlgorithm::kFixedWindow}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    const size_t packed = RateState::BytesFor(algorithm, 10);
    const size_t slotted = RateState::BytesFor(algorithm, 10, RateLayout::kLockSlot);
    // The header alone on the first line, then the 8-byte slot, then the same algorithm state.
    EXPECT_EQ(slotted - packed,
              kRateCacheLine + RateState::kLockSlotBytes - (sizeof(RateState) + 7) / 8 * 8);
    OwnedRateState state(algorithm, 10, kSecond, kDefaultBurst, RateLayout::kLockSlot);
    const auto base = reinterpret_cast<uintptr_t>(&*state);
    EXPECT_EQ(base % kRateCacheLine, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(state->lock_slot()), base + kRateCacheLine);
    // Same decisions as the packed layout.
    OwnedRateState reference(algorithm, 10, kSecond);
    // Each state tells its layout (an attaching process checks it).
    EXPECT_TRUE(state->HasLayout(RateLayout::kLockSlot));
    EXPECT_FALSE(state->HasLayout(RateLayout::kPacked));
    EXPECT_TRUE(reference->HasLayout(RateLayout::kPacked));
    EXPECT_FALSE(reference->HasLayout(RateLayout::kLockSlot));
    std::mt19937_64 random(7);
    int64_t now = 0;
    for (int i = 0; i < 5000; ++i) {
      now += static_cast<int64_t>(random() % (kSecond / 20));
      const double amount = static_cast<double>(1 + random() % 4);
      ASSERT_EQ(state->TryAcquire(now, amount), reference->TryAcquire(now, amount));
      ASSERT_EQ(state->WaitNs(now, 10), reference->WaitNs(now, 10));
      ASSERT_EQ(state->InUse(now), reference->InUse(now));
    }
  }
  // Unlimited: no state, the slot still there.
  OwnedRateState unlimited(RateLimitAlgorithm::kFixedWindow, kInf, kSecond, kDefaultBurst,
                           RateLayout::kLockSlot);
  EXPECT_EQ(RateState::BytesFor(RateLimitAlgorithm::kFixedWindow, kInf, RateLayout::kLockSlot),
            kRateCacheLine + RateState::kLockSlotBytes);
  EXPECT_TRUE(unlimited->TryAcquire(0, 1e15));
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

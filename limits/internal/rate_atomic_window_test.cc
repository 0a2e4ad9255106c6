#include "limits/internal/rate_atomic_window.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/rate_atomic_window_testing.h"

namespace concurry {
namespace limits_internal {
namespace {

using Outcome = AtomicFixedWindow::Outcome;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kMaxNs = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinNs = std::numeric_limits<int64_t>::min();

int64_t Wait(const AtomicFixedWindow& window, int64_t now, uint64_t amount) {
  int64_t wait = -1;
  EXPECT_TRUE(window.WaitNs(now, amount, &wait));
  return wait;
}

double InUse(const AtomicFixedWindow& window, int64_t now) {
  double in_use = -1;
  EXPECT_TRUE(window.InUse(now, &in_use));
  return in_use;
}

TEST(AtomicFixedWindowTest, FitsCapacitiesBelowTwoToTheForty) {
  EXPECT_TRUE(AtomicFixedWindow::Fits(1));
  EXPECT_TRUE(AtomicFixedWindow::Fits(2.5));
  EXPECT_TRUE(AtomicFixedWindow::Fits(1e9));
  EXPECT_TRUE(AtomicFixedWindow::Fits(static_cast<double>((uint64_t{1} << 40) - 1)));
  EXPECT_FALSE(AtomicFixedWindow::Fits(static_cast<double>(uint64_t{1} << 40)));
  EXPECT_FALSE(AtomicFixedWindow::Fits(static_cast<double>(kMaxWholeUnits)));
  EXPECT_FALSE(AtomicFixedWindow::Fits(std::numeric_limits<double>::infinity()));
}

TEST(AtomicFixedWindowTest, AdmitsTheCapacityPerClockAlignedWindow) {
  AtomicFixedWindow window(2, kSecond, /*now=*/0);
  EXPECT_EQ(window.TryAcquire(5 * kSecond + 100, 1), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(5 * kSecond + 200, 1), Outcome::kAdmitted);
  EXPECT_EQ(InUse(window, 5 * kSecond + 300), 2);
  EXPECT_EQ(window.TryAcquire(5 * kSecond + 300, 1), Outcome::kRejected);
  // Until the window ends at 6 s, aligned to the clock.
  EXPECT_EQ(Wait(window, 5 * kSecond + 300, 1), kSecond - 300);
  EXPECT_EQ(window.TryAcquire(6 * kSecond - 1, 1), Outcome::kRejected);
  EXPECT_EQ(Wait(window, 6 * kSecond, 1), 0);
  EXPECT_EQ(InUse(window, 6 * kSecond), 0);
  EXPECT_EQ(window.TryAcquire(6 * kSecond, 2), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(6 * kSecond, 1), Outcome::kRejected);
}

TEST(AtomicFixedWindowTest, FractionalCapacityCountsWholeUnits) {
  AtomicFixedWindow window(2.5, kSecond, 0);
  EXPECT_EQ(window.TryAcquire(0, 2), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(0, 1), Outcome::kRejected);
}

TEST(AtomicFixedWindowTest, AnEarlierReadingCountsInTheLaterWindow) {
  // A thread that read the clock before another thread moved the window on, or a clock set back,
  // counts in the stored (later) window, as FixedWindow keeps it: never more than the capacity.
  AtomicFixedWindow window(3, kSecond, 0);
  EXPECT_EQ(window.TryAcquire(2 * kSecond, 2), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(kSecond + 5, 1), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(kSecond + 5, 1), Outcome::kRejected);
  EXPECT_EQ(InUse(window, kSecond + 5), 3);
  EXPECT_EQ(Wait(window, kSecond + 5, 1), 2 * kSecond - 5);  // Until the later window ends.
  EXPECT_EQ(Wait(window, 3 * kSecond, 3), 0);
}

TEST(AtomicFixedWindowTest, NegativeTimesUseFloorWindows) {
  AtomicFixedWindow window(1, kSecond, -kSecond / 2);
  EXPECT_EQ(window.TryAcquire(-1, 1), Outcome::kAdmitted);  // Window [-1 s, 0).
  EXPECT_EQ(window.TryAcquire(-kSecond, 1), Outcome::kRejected);
  EXPECT_EQ(Wait(window, -kSecond, 1), kSecond);
  EXPECT_EQ(window.TryAcquire(0, 1), Outcome::kAdmitted);
}

TEST(AtomicFixedWindowTest, AFirstUseBeforeTheBaseWindowHandsOver) {
  // Capacity 2^39 + 1: 24 bits of offset, 2^22 windows of 1 us (4.2 s) before the window of
  // construction. A first reading 10 s earlier has no window in the word: it hands over, and
  // the locked FixedWindow opens the reading's own window (not the base window, which would
  // hold all of the next 5.8 s to one capacity).
  const double capacity = static_cast<double>((uint64_t{1} << 39) + 1);
  const int64_t built = int64_t{1} << 50;
  const int64_t early = built - 10 * kSecond;
  AtomicFixedWindow window(capacity, 1000, built);
  EXPECT_EQ(Wait(window, early, uint64_t{1} << 39), 0);
  EXPECT_EQ(InUse(window, early), 0);
  EXPECT_EQ(window.TryAcquire(early, uint64_t{1} << 39), Outcome::kOutOfRange);
  int64_t window_start = -1;
  uint64_t count = 1;
  ASSERT_TRUE(window.Retire(&window_start, &count));
  EXPECT_EQ(count, 0u);  // Untouched: nothing to carry.
}

TEST(AtomicFixedWindowTest, AnAdmissionBeforeAnEarlyReadingRetiresTheWordIsCarried) {
  // A first reading before the base window finds the word untouched (kOutOfRange); another
  // thread admits in range before the first one retires the word. Ordered after that admission,
  // the early reading counts in the stored window, as with one locked FixedWindow: the carry
  // brings the window and its count over.
  const double capacity = static_cast<double>((uint64_t{1} << 39) + 1);
  const int64_t built = int64_t{1} << 50;
  const int64_t early = built - 10 * kSecond;
  AtomicFixedWindow window(capacity, 1000, built);
  ASSERT_EQ(window.TryAcquire(early, 1), Outcome::kOutOfRange);
  ASSERT_EQ(window.TryAcquire(built, uint64_t{1} << 39), Outcome::kAdmitted);
  int64_t window_start;
  uint64_t count;
  ASSERT_TRUE(window.Retire(&window_start, &count));
  EXPECT_EQ(window_start, built - built % 1000);
  EXPECT_EQ(count, uint64_t{1} << 39);
  OwnedRateState locked(RateLimitAlgorithm::kFixedWindow, capacity, 1000);
  locked->Charge(window_start, static_cast<double>(count));
  EXPECT_TRUE(locked->TryAcquire(early, 1));  // The one unit left in the stored window.
  EXPECT_FALSE(locked->TryAcquire(early, 1));
  EXPECT_EQ(locked->InUse(built), capacity);
}

TEST(AtomicFixedWindowTest, AReadingBeforeTheBaseWindowCountsOnceTheWordIsInUse) {
  // Once a window is stored, an earlier reading counts in it, as FixedWindow counts it.
  const double capacity = static_cast<double>((uint64_t{1} << 39) + 1);
  const int64_t built = int64_t{1} << 50;
  AtomicFixedWindow window(capacity, 1000, built);
  ASSERT_EQ(window.TryAcquire(built, uint64_t{1} << 39), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(built - 10 * kSecond, 1), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(built - 10 * kSecond, 1), Outcome::kRejected);
  EXPECT_EQ(InUse(window, built - 10 * kSecond), static_cast<double>((uint64_t{1} << 39) + 1));
}

TEST(AtomicFixedWindowTest, MatchesFixedWindowOnRandomReadings) {
  // The same decisions, waits and counts as the locked algorithm, clock set back now and then.
  std::mt19937_64 random(17);
  for (const double capacity : {1.0, 3.0, 7.5, 1000.0}) {
    for (const int64_t window_ns : {int64_t{1}, int64_t{3}, int64_t{1000}, kSecond}) {
      const int64_t start =
          static_cast<int64_t>(random() % (uint64_t{1} << 50)) - (int64_t{1} << 49);
      AtomicFixedWindow atomic(capacity, window_ns, start);
      OwnedRateState locked(RateLimitAlgorithm::kFixedWindow, capacity, window_ns);
      int64_t now = start;
      for (int i = 0; i < 2000; ++i) {
        const uint64_t step = random() % 8;
        if (step == 0) {
          now -= static_cast<int64_t>(random() % (2 * static_cast<uint64_t>(window_ns) + 1));
        } else {
          now += static_cast<int64_t>(random() % (static_cast<uint64_t>(window_ns) / 2 + 2));
        }
        const uint64_t amount = 1 + random() % static_cast<uint64_t>(capacity);
        const double whole = static_cast<double>(amount);
        ASSERT_EQ(Wait(atomic, now, amount), locked->WaitNs(now, whole))
            << "capacity " << capacity << " window " << window_ns << " step " << i;
        ASSERT_EQ(atomic.TryAcquire(now, amount) == Outcome::kAdmitted,
                  locked->TryAcquire(now, whole))
            << "capacity " << capacity << " window " << window_ns << " step " << i;
        ASSERT_EQ(InUse(atomic, now), locked->InUse(now));
      }
    }
  }
}

int64_t SaturatingStep(int64_t now, int64_t step) {
  int64_t sum;
  if (!__builtin_add_overflow(now, step, &sum)) return sum;
  return step > 0 ? kMaxNs : kMinNs;
}

TEST(AtomicFixedWindowTest, WithTheHandOverMatchesFixedWindowOnAnyReading) {
  // Capacities of 1 to 40 bits, windows from 1 ns to 2^40 ns, readings anywhere in int64:
  // before the base window, past the last offset, at both ends, stepping back. After the
  // hand-over the pair must keep answering as the locked algorithm alone.
  std::mt19937_64 random(1717);
  int retired = 0;
  for (int round = 0; round < 400; ++round) {
    const int bits = 1 + static_cast<int>(random() % AtomicFixedWindow::kMaxCountBits);
    const uint64_t whole = (uint64_t{1} << (bits - 1)) + random() % (uint64_t{1} << (bits - 1));
    const double capacity = static_cast<double>(whole) + (random() % 4 == 0 ? 0.5 : 0.0);
    const int64_t window_ns = std::max<int64_t>(
        1, static_cast<int64_t>(random() % ((uint64_t{1} << (random() % 41)) + 1)));
    const int64_t built = static_cast<int64_t>(random());
    // The base window lies 2^(62 - bits) windows before the window of construction.
    const int64_t reach = static_cast<int64_t>(
        std::min<uint64_t>(uint64_t{1} << (62 - bits), static_cast<uint64_t>(kMaxNs) / 4));
    const int64_t far = reach > kMaxNs / window_ns ? kMaxNs : reach * window_ns;  // In ns.
    HandingOverWindow pair(capacity, window_ns, built);
    OwnedRateState locked(RateLimitAlgorithm::kFixedWindow, capacity, window_ns);
    int64_t now = built;
    for (int i = 0; i < 250; ++i) {
      const uint64_t kind = random() % 10;
      if (kind < 4) {
        now = SaturatingStep(now, static_cast<int64_t>(random() % (window_ns / 2 + 2)));
      } else if (kind == 4) {
        now = SaturatingStep(now, -static_cast<int64_t>(random() % (2 * window_ns + 1)));
      } else if (kind == 5) {
        now = static_cast<int64_t>(random());  // Anywhere.
      } else if (kind == 6) {                  // Around the start of the base window.
        now = SaturatingStep(SaturatingStep(built, -far),
                             static_cast<int64_t>(random() % (4 * window_ns + 1)) - 2 * window_ns);
      } else if (kind == 7) {  // Around the last offset, 3 reaches after construction.
        now = SaturatingStep(SaturatingStep(SaturatingStep(built, far), far), far);
        now = SaturatingStep(now,
                             static_cast<int64_t>(random() % (4 * window_ns + 1)) - 2 * window_ns);
      } else if (kind == 8) {
        now = random() % 2 == 0 ? kMinNs : kMaxNs;
      } else {
        now = SaturatingStep(now, static_cast<int64_t>(random() % 8) * window_ns);
      }
      const uint64_t amount = random() % 2 == 0 ? 1 : 1 + random() % whole;
      const double as_double = static_cast<double>(amount);
      ASSERT_EQ(pair.WaitNs(now, amount), locked->WaitNs(now, as_double))
          << "capacity " << capacity << " window " << window_ns << " built " << built << " step "
          << i << " now " << now;
      ASSERT_EQ(pair.TryAcquire(now, amount), locked->TryAcquire(now, as_double))
          << "capacity " << capacity << " window " << window_ns << " built " << built << " step "
          << i << " now " << now;
      ASSERT_EQ(pair.InUse(now), locked->InUse(now))
          << "capacity " << capacity << " window " << window_ns << " built " << built << " step "
          << i << " now " << now;
    }
    retired += pair.retired() ? 1 : 0;
  }
  // Both ways through: most pairs hand over, some never do.
  EXPECT_GT(retired, 100);
  EXPECT_LT(retired, 400);
}

TEST(AtomicFixedWindowTest, OutOfRangeAfterThreeQuartersOfTheOffsetsThenRetires) {
  // Capacity 2^39 + 1 takes 40 bits: 24 bits of offset, 2^22 windows before the window of
  // construction and up to 3 * 2^22 - 2 after it.
  const double capacity = static_cast<double>((uint64_t{1} << 39) + 1);
  const int64_t before = int64_t{1} << 22;
  AtomicFixedWindow window(capacity, kSecond, /*now=*/0);
  const int64_t last = (3 * before - 2) * kSecond;  // Offset 2^24 - 2: the last one.
  EXPECT_EQ(window.TryAcquire(last, 5), Outcome::kAdmitted);
  EXPECT_EQ(window.TryAcquire(last + kSecond, 1), Outcome::kOutOfRange);
  EXPECT_EQ(Wait(window, last + kSecond, 1), 0);  // Reads still answer: a new window.
  EXPECT_EQ(InUse(window, last), 5);
  // The first window before the base counts in the stored window.
  EXPECT_EQ(window.TryAcquire(-before * kSecond - 1, 1), Outcome::kAdmitted);
  int64_t window_start = 0;
  uint64_t count = 0;
  ASSERT_TRUE(window.Retire(&window_start, &count));
  EXPECT_EQ(window_start, last);
  EXPECT_EQ(count, 6u);
  EXPECT_FALSE(window.Retire(&window_start, &count));
  EXPECT_EQ(window.TryAcquire(last, 1), Outcome::kRetired);
  int64_t wait;
  EXPECT_FALSE(window.WaitNs(last, 1, &wait));
  double in_use;
  EXPECT_FALSE(window.InUse(last, &in_use));
}

TEST(AtomicFixedWindowTest, ClockExtremesNeverOverflow) {
  // Near INT64_MIN the base is the first window whose start exists; near INT64_MAX the clock is
  // clamped to INT64_MAX - W, as RateState clamps it.
  for (const int64_t window_ns : {int64_t{1}, int64_t{3}, kSecond, kMaxNs / 1000}) {
    AtomicFixedWindow low(2, window_ns, kMinNs);
    EXPECT_EQ(low.TryAcquire(kMinNs, 2), Outcome::kAdmitted);
    EXPECT_EQ(low.TryAcquire(kMinNs, 1), Outcome::kRejected);
    EXPECT_GE(Wait(low, kMinNs, 1), 1);
    AtomicFixedWindow high(2, window_ns, kMaxNs);
    EXPECT_EQ(high.TryAcquire(kMaxNs, 2), Outcome::kAdmitted);
    EXPECT_EQ(high.TryAcquire(kMaxNs - window_ns, 1), Outcome::kRejected);
    EXPECT_GE(Wait(high, kMaxNs, 1), 1);
    // The whole range from INT64_MIN fits in 62 bits of offset for these windows but 1 ns.
    AtomicFixedWindow jump(1, window_ns, kMinNs);
    // With W = 1 that is 2^64 - 2 windows, past the 2^63 - 2 offsets: out of range; for every
    // other W the window of INT64_MAX - W is an offset the word holds.
    EXPECT_EQ(jump.TryAcquire(kMaxNs, 1),
              window_ns == 1 ? Outcome::kOutOfRange : Outcome::kAdmitted)
        << "window " << window_ns;
  }
}

TEST(AtomicFixedWindowTest, RetiredCarriesTheWindowIntoTheLockedState) {
  AtomicFixedWindow window(4, 10 * kMs, 0);
  ASSERT_EQ(window.TryAcquire(25 * kMs, 3), Outcome::kAdmitted);
  int64_t window_start;
  uint64_t count;
  ASSERT_TRUE(window.Retire(&window_start, &count));
  OwnedRateState locked(RateLimitAlgorithm::kFixedWindow, 4, 10 * kMs);
  locked->Charge(window_start, static_cast<double>(count));
  EXPECT_EQ(locked->InUse(25 * kMs), 3);
  EXPECT_FALSE(locked->TryAcquire(21 * kMs, 2));  // Earlier reading: the same window.
  EXPECT_TRUE(locked->TryAcquire(29 * kMs, 1));
  EXPECT_TRUE(locked->TryAcquire(30 * kMs, 4));
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

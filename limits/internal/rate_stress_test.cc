// Stress tests for RateLimiter's concurrency pieces: the lock-free FixedWindow (AtomicFixedWindow),
// where threads admitting at once never exceed the capacity of a window; its hand-over to the
// locked path, raced by every thread, and raced by in-range admissions against a reading past the
// word's range. (The locked algorithms' BackoffLock has its own stress test.) Exact figures: the
// clock readings are chosen by the test. Run under --config=tsan in CI (tag "stress").

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_atomic_window.h"
#include "limits/rate_limiter.h"
#include "limits/rate_window.h"
#include "testing/fake_clock.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace limits_internal {
namespace {

using Outcome = AtomicFixedWindow::Outcome;
using testkit::FakeClock;
using testkit::TestConcurrent;

constexpr int kThreads = 4;
constexpr int kIterations = 300;
constexpr int64_t kWindow = 1000;
constexpr int kWindows = 8;
constexpr uint64_t kCapacity = 25;

// Each thread walks through kWindows windows at its own pace, every seventh reading one window
// late. A request counts in its reading's window or a later one (the stored window, when another
// thread moved on), so the requests read in windows w and later were counted in windows w and
// later: at most (kWindows - w) * capacity of them, for every w.
TEST(AtomicFixedWindowStressTest, ThreadsNeverExceedTheCapacityOfTheWindows) {
  std::unique_ptr<AtomicFixedWindow> window;
  std::vector<std::atomic<uint64_t>> admitted(kWindows);  // By the reading's window.
  TestConcurrent(
      kThreads, kIterations,
      [&] {
        window = std::make_unique<AtomicFixedWindow>(static_cast<double>(kCapacity), kWindow, 0);
        for (auto& count : admitted) count.store(0);
      },
      [&](int thread) {
        for (int i = 0; i < kWindows * 40; ++i) {
          int64_t now = static_cast<int64_t>(i / 40) * kWindow + (i * 37 + thread * 11) % kWindow;
          if (i % 7 == 6 && now >= kWindow) now -= kWindow;
          const uint64_t amount = 1 + static_cast<uint64_t>(i + thread) % 2;
          if (window->TryAcquire(now, amount) == Outcome::kAdmitted) {
            admitted[static_cast<size_t>(now / kWindow)].fetch_add(amount);
          }
        }
      },
      [&] {
        uint64_t from_here = 0;
        for (int w = kWindows - 1; w >= 0; --w) {
          from_here += admitted[static_cast<size_t>(w)].load();
          EXPECT_LE(from_here, static_cast<uint64_t>(kWindows - w) * kCapacity) << "window " << w;
        }
        // 4 threads ask for 4 * 40 * 1.5 = 240 units per window: the last one is full.
        double last = 0;
        ASSERT_TRUE(window->InUse(kWindows * kWindow - 1, &last));
        EXPECT_EQ(last, static_cast<double>(kCapacity));
      });
}

// All threads in one window: exactly the capacity is admitted whatever the interleaving.
TEST(AtomicFixedWindowStressTest, OneWindowAdmitsExactlyTheCapacity) {
  std::unique_ptr<AtomicFixedWindow> window;
  std::atomic<uint64_t> admitted{0};
  TestConcurrent(
      kThreads, kIterations,
      [&] {
        window = std::make_unique<AtomicFixedWindow>(static_cast<double>(kCapacity), kWindow, 0);
        admitted.store(0);
      },
      [&](int thread) {
        for (int i = 0; i < 20; ++i) {
          if (window->TryAcquire(5 * kWindow + thread + i, 1) == Outcome::kAdmitted) {
            admitted.fetch_add(1);
          }
        }
      },
      [&] {
        EXPECT_EQ(admitted.load(), kCapacity);
        double in_use = 0;
        ASSERT_TRUE(window->InUse(5 * kWindow, &in_use));
        EXPECT_EQ(in_use, static_cast<double>(kCapacity));
      });
}

// RateLimiter: the clock jumps past the word's range after some admissions in the first window;
// every thread then finds the word out of range at once and races to retire it. Exactly one
// retirement wins, and the locked FixedWindow then admits exactly the capacity in the far window
// (the stats agree). The count carried over from the first window cannot show here: the far
// reading's roll drops it (AtomicFixedWindow's Retire() test checks the carry itself).
TEST(AtomicFixedWindowStressTest, RetirementRacedByEveryThreadLeavesOneExactFarWindow) {
  // Capacity 2^39 + 1: 24 bits of offset, 3 * 2^22 windows of 1 ms ahead (3.5 hours).
  std::unique_ptr<FakeClock> clock;
  const double capacity = static_cast<double>((uint64_t{1} << 39) + 1);
  std::unique_ptr<RateLimiter> limiter;
  std::atomic<uint64_t> admitted{0};
  TestConcurrent(
      kThreads, 60,
      [&] {
        limiter.reset();
        clock = std::make_unique<FakeClock>();
        limiter = std::make_unique<RateLimiter>(
            RateLimiterOptions{.algorithm = RateLimitAlgorithm::kFixedWindow,
                               .capacity = capacity,
                               .window = absl::Milliseconds(1)},
            *clock);
        ASSERT_TRUE(limiter->TryAcquire(3));
        clock->Advance(absl::Hours(24));
        admitted.store(0);
      },
      [&](int) {
        // Amounts of 2^37: the far window admits exactly 4 of them (capacity 2^39 + 1).
        for (int i = 0; i < 3; ++i) {
          if (limiter->TryAcquire(static_cast<double>(uint64_t{1} << 37))) admitted.fetch_add(1);
        }
      },
      [&] {
        EXPECT_EQ(admitted.load(), 4u);
        EXPECT_EQ(limiter->Stats().in_use, static_cast<double>(uint64_t{1} << 39));
        EXPECT_FALSE(limiter->TryAcquire(2));
        EXPECT_TRUE(limiter->TryAcquire(1));
      });
}

// A clock whose reading is the calling thread's own: threads of one RateLimiter read different
// times at once. Read only, never waited on.
class PerThreadClock final : public Clock {
 public:
  absl::Time Now() const override { return reading_; }
  static void Set(absl::Time reading) { reading_ = reading; }

 protected:
  bool DoAwaitWithDeadline(absl::Mutex*, const absl::Condition& cond, absl::Time) override {
    return cond.Eval();
  }

 private:
  static thread_local absl::Time reading_;
};

thread_local absl::Time PerThreadClock::reading_ = absl::UnixEpoch();

// The hand-over race itself: threads admitting in the word's range (window T) while one of them
// moves past the range (window F, 24 h later) and retires the word; an in-range admission may
// land between its kOutOfRange and its Retire(). As with one locked FixedWindow, T admits t <= 64
// requests of 2^33 (those ordered before F's roll; later in-range readings count in F) and F
// exactly 64 (the far readings alone ask 100 times): 64 + t in all, at least 64 - (admitted far
// readings) of them in-range, and the far window ends exactly full.
TEST(AtomicFixedWindowStressTest, InRangeAdmissionsRaceAReadingPastTheRange) {
  const absl::Time start = absl::UnixEpoch() + absl::Hours(1);
  const absl::Time far = start + absl::Hours(24);  // Past the 3.5 hours of 1 ms windows.
  const double capacity = static_cast<double>((uint64_t{1} << 39) + 1);
  const double amount = static_cast<double>(uint64_t{1} << 33);  // 64 per window.
  PerThreadClock clock;
  std::unique_ptr<RateLimiter> limiter;
  std::atomic<uint64_t> in_range{0};
  std::atomic<uint64_t> past{0};
  TestConcurrent(
      kThreads, 200,
      [&] {
        PerThreadClock::Set(start);
        limiter = std::make_unique<RateLimiter>(
            RateLimiterOptions{.algorithm = RateLimitAlgorithm::kFixedWindow,
                               .capacity = capacity,
                               .window = absl::Milliseconds(1)},
            clock);
        in_range.store(0);
        past.store(0);
      },
      [&](int thread) {
        // The last thread starts in range too, then jumps after a few requests.
        const bool far_thread = thread == kThreads - 1;
        PerThreadClock::Set(start + absl::Microseconds(100 * thread));
        for (int i = 0; i < 100 + (far_thread ? 6 : 0); ++i) {
          if (far_thread && i == 6) PerThreadClock::Set(far);
          if (limiter->TryAcquire(amount)) (far_thread && i >= 6 ? past : in_range).fetch_add(1);
        }
      },
      [&] {
        EXPECT_GE(in_range.load() + past.load(), 64u);
        EXPECT_LE(in_range.load() + past.load(), 128u);
        EXPECT_LE(64 - past.load(), in_range.load());  // F's other admissions: in-range readings.
        PerThreadClock::Set(far);
        EXPECT_EQ(limiter->Stats().in_use, 64 * amount);
        EXPECT_FALSE(limiter->TryAcquire(2));
        EXPECT_TRUE(limiter->TryAcquire(1));
        PerThreadClock::Set(start);  // An earlier reading counts in the far window.
        EXPECT_FALSE(limiter->TryAcquire(1));
        limiter.reset();
      });
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

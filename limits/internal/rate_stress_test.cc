// Stress tests for RateLimiter's concurrency pieces: the lock-free FixedWindow (AtomicFixedWindow),
// where threads admitting at once never exceed the capacity of a window; its hand-over to the
// locked path, where a retirement raced by every thread carries the count over exactly once; and
// RateLock, the backing-off spin lock of the locked algorithms. Exact figures: the
// clock readings are chosen by the test. Run under --config=tsan in CI (tag "stress").

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_atomic_window.h"
#include "limits/internal/rate_lock.h"
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
// every thread then finds the word out of range at once and races to retire it. The locked
// FixedWindow takes over with the right count: exactly the capacity is admitted in the far
// window, and the stats agree.
TEST(AtomicFixedWindowStressTest, RetirementRacedByEveryThreadHandsOverOnce) {
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

// Mutual exclusion: increments of a plain counter under the lock are never lost (and under
// ThreadSanitizer, the lock orders them: no data race is reported).
TEST(RateLockStressTest, SerializesItsHolders) {
  RateLock lock;
  int64_t counter = 0;
  constexpr int kIncrements = 2000;
  TestConcurrent(
      kThreads, 50, [&] { counter = 0; },
      [&](int) {
        for (int i = 0; i < kIncrements; ++i) {
          RateLockHolder hold(&lock);
          ++counter;
        }
      },
      [&] { EXPECT_EQ(counter, kThreads * kIncrements); });
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

// Stress test for BackoffLock (limits/internal/backoff_lock.h), the spin lock of RateLimiter and
// of an in-process LimitSet: threads change plain counters under the lock at once, contended
// enough that waiters back off and yield; a section that overlapped another would lose an
// increment or see a pair torn (and ThreadSanitizer would report the race). Run under
// --config=tsan (tag "stress").

#include "limits/internal/backoff_lock.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <thread>
#include <type_traits>

#include "gtest/gtest.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace limits_internal {
namespace {

// What RateState's lock slot and a LimitSet's shared header rely on.
static_assert(sizeof(BackoffLock) == 4 && alignof(BackoffLock) == 4);
static_assert(std::is_trivially_destructible_v<BackoffLock>);
static_assert(std::is_standard_layout_v<BackoffLock>);

constexpr int kThreads = 4;

// The lock word as another process (or a zeroed block) sees it.
uint32_t WordOf(const unsigned char* bytes) {
  uint32_t word;
  std::memcpy(&word, bytes, sizeof(word));
  return word;
}

// A lock built in a zeroed byte slot, as RateLimiter builds it in RateState's lock slot: the word
// is 0 when free and not 0 when held, on every one of many uncontended rounds.
TEST(BackoffLockTest, UncontendedLockAndUnlockAlternateInASlot) {
  alignas(8) unsigned char slot[8] = {};
  BackoffLock* lock = new (slot) BackoffLock();
  EXPECT_EQ(WordOf(slot), 0u);
  int64_t sections = 0;
  for (int i = 0; i < 1000; ++i) {
    lock->Lock();
    ASSERT_NE(WordOf(slot), 0u) << "round " << i;
    ++sections;
    lock->Unlock();
    ASSERT_EQ(WordOf(slot), 0u) << "round " << i;
  }
  {
    BackoffLockHolder hold(lock);
    EXPECT_NE(WordOf(slot), 0u);
  }
  EXPECT_EQ(WordOf(slot), 0u);
  EXPECT_EQ(sections, 1000);
}

// Mutual exclusion under contention: increments of two plain counters under the lock are never
// lost and never seen apart.
TEST(BackoffLockTest, SectionsNeverOverlap) {
  constexpr int kSections = 2000;
  BackoffLock lock;
  int64_t first = 0;   // Guarded by `lock`.
  int64_t second = 0;  // Guarded by `lock`; equal to `first` outside a section.
  int64_t torn = 0;    // Guarded by `lock`.
  testkit::TestConcurrent(
      kThreads, /*iterations=*/50, [&] { first = second = torn = 0; },
      [&](int) {
        for (int i = 0; i < kSections; ++i) {
          BackoffLockHolder hold(&lock);
          if (first != second) ++torn;
          ++first;
          ++second;
        }
      },
      [&] {
        EXPECT_EQ(first, int64_t{kThreads} * kSections);
        EXPECT_EQ(second, first);
        EXPECT_EQ(torn, 0);
      });
}

// A long-held lock (as when its holder is preempted): the waiters run through their backoff into
// yielding, and each still gets the lock once the holder lets go.
TEST(BackoffLockTest, WaitersOfALongHoldAllGetIn) {
  BackoffLock lock;
  std::atomic<int> arrived{0};
  int64_t entered = 0;  // Guarded by `lock`.
  testkit::TestConcurrent(
      kThreads, /*iterations=*/20,
      [&] {
        arrived.store(0, std::memory_order_relaxed);
        entered = 0;
      },
      [&](int index) {
        if (index == 0) {
          BackoffLockHolder hold(&lock);
          // Hold until every waiter is about to lock, then long enough (thousands of yields) for
          // them to reach the yielding stage.
          while (arrived.load(std::memory_order_relaxed) < kThreads - 1) std::this_thread::yield();
          for (int i = 0; i < 2000; ++i) std::this_thread::yield();
          ++entered;
        } else {
          arrived.fetch_add(1, std::memory_order_relaxed);
          BackoffLockHolder hold(&lock);
          ++entered;
        }
      },
      [&] { EXPECT_EQ(entered, kThreads); });
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

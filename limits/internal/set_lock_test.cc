// Stress test for SetLock (limits/internal/set_lock.h): threads increment plain counters under the
// lock at once, contended enough that waiters back off and yield; a section that overlapped
// another would lose an increment or see the pair torn. Run under --config=tsan (tag "stress").

#include "limits/internal/set_lock.h"

#include <cstdint>

#include "gtest/gtest.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace limits_internal {
namespace {

TEST(SetLockTest, SectionsNeverOverlap) {
  constexpr int kThreads = 4;
  constexpr int kSections = 2000;
  SetLock lock;
  int64_t first = 0;   // Guarded by `lock`.
  int64_t second = 0;  // Guarded by `lock`; always equal to `first` outside a section.
  int64_t torn = 0;    // Guarded by `lock`.
  testkit::TestConcurrent(
      kThreads, /*iterations=*/20, [&] { first = second = torn = 0; },
      [&](int) {
        for (int i = 0; i < kSections; ++i) {
          lock.Lock();
          if (first != second) ++torn;
          ++first;
          ++second;
          lock.Unlock();
        }
      },
      [&] {
        EXPECT_EQ(first, int64_t{kThreads} * kSections);
        EXPECT_EQ(second, first);
        EXPECT_EQ(torn, 0);
      });
}

TEST(SetLockTest, UncontendedLockAndUnlockAlternate) {
  SetLock lock;
  for (int i = 0; i < 1000; ++i) {
    lock.Lock();
    lock.Unlock();
  }
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

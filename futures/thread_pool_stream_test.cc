// Stream over a ThreadPoolExecutor: blocking tasks run max_in_flight at a time (the reason the
// executor exists: a TbbExecutor on a small machine runs only as many as it has cores).

#include <algorithm>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/thread_pool_executor.h"
#include "gtest/gtest.h"
#include "sync/stream.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

TEST(ThreadPoolStreamTest, BlockingTasksRunMaxInFlightAtATime) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stream over a ThreadPoolExecutor");
  constexpr int kTasks = 16;
  constexpr absl::Duration kTaskTime = absl::Milliseconds(50);
  ThreadPoolExecutor pool(8);
  absl::Mutex mu;
  int running = 0;  // Guarded by mu.
  int peak = 0;     // Guarded by mu.
  std::vector<int> inputs(kTasks);
  for (int i = 0; i < kTasks; ++i) inputs[i] = i;

  const absl::Time start = absl::Now();
  int sum = 0;
  int count = 0;
  for (auto& item : Stream(pool, inputs,
                           [&](int x) {
                             {
                               absl::MutexLock lock(&mu);
                               peak = std::max(peak, ++running);
                             }
                             absl::SleepFor(kTaskTime);  // Blocking I/O.
                             absl::MutexLock lock(&mu);
                             --running;
                             return x;
                           },
                           {.max_in_flight = 8})) {
    sum += item.value();
    ++count;
  }
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(count, kTasks);
  EXPECT_EQ(sum, kTasks * (kTasks - 1) / 2);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(peak, 8);  // The real assertion: 8 blocking tasks at once, not one per core.
  // Generous: ideally 2 x 50 ms = 1/8 of the 800 ms serial time.
  EXPECT_LT(elapsed, kTaskTime * kTasks * 0.5);
  EXPECT_EQ(pool.Stats().peak_threads, 8);
}

}  // namespace
}  // namespace concurry

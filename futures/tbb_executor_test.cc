#include "futures/tbb_executor.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "oneapi/tbb/global_control.h"
#include "oneapi/tbb/info.h"
#include "testing/fake_clock.h"
#include "testing/test_concurrent.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

// Tracks how many tasks run at once and the highest number seen.
class ConcurrencyMeter {
 public:
  void Enter() {
    const int now = running_.fetch_add(1, std::memory_order_acq_rel) + 1;
    int peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  void Exit() { running_.fetch_sub(1, std::memory_order_acq_rel); }
  int peak() const { return peak_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int> running_{0};
  std::atomic<int> peak_{0};
};

TEST(TbbExecutorTest, RunsEverySubmittedTask) {
  TbbExecutor executor(2);
  constexpr int kTasks = 1000;
  std::atomic<int> ran{0};
  absl::BlockingCounter all_ran(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    executor.Submit([&] {
      ran.fetch_add(1, std::memory_order_relaxed);
      all_ran.DecrementCount();
    });
  }
  all_ran.Wait();
  EXPECT_EQ(ran.load(), kTasks);
}

TEST(TbbExecutorTest, RunsTasksOffTheSubmittingThread) {
  TbbExecutor executor(2);
  absl::Notification release;
  absl::Notification finished;
  std::thread::id ran_on;
  // Submit returns while the task is still blocked: tasks run asynchronously.
  executor.Submit([&] {
    release.WaitForNotification();
    ran_on = std::this_thread::get_id();
    finished.Notify();
  });
  release.Notify();
  finished.WaitForNotification();
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(TbbExecutorTest, MaxConcurrencyIsWhatWasAskedWhateverOneTbbsProcessWideLimit) {
  // A process-wide limit of one thread (oneTBB's default on a 1-core machine) changes nothing:
  // the executor brings its own threads.
  tbb::global_control one_thread(tbb::global_control::max_allowed_parallelism, 1);
  for (const int n : {1, 2, 3, 8}) EXPECT_EQ(TbbExecutor(n).max_concurrency(), n);
  EXPECT_EQ(TbbExecutor().max_concurrency(), HardwareConcurrency());
  EXPECT_EQ(TbbExecutor(TbbExecutorOptions{}).max_concurrency(), HardwareConcurrency());
}

TEST(TbbExecutorTest, CreatingAnExecutorLeavesOneTbbsProcessWideLimitAlone) {
  const size_t before =
      tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
  { TbbExecutor executor(TbbExecutor::kMaxConcurrency); }
  EXPECT_EQ(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism),
            before);
}

TEST(TbbExecutorTest, RejectsMaxConcurrencyOutOfRangeNamingTheValueAndTheRange) {
  for (const int bad : {-5, 0, TbbExecutor::kMaxConcurrency + 1}) {
    try {
      TbbExecutor executor(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const InvalidOptionError& e) {
      const std::string message = e.what();
      EXPECT_NE(
          message.find("max_concurrency must be between 1 and 1024, got " + std::to_string(bad)),
          std::string::npos)
          << message;
      EXPECT_NE(message.find("TbbExecutor() runs one thread per hardware thread"),
                std::string::npos)
          << message;
    }
  }
}

TEST(TbbExecutorTest, RejectsBadSpareOptions) {
  EXPECT_THROW(TbbExecutor(TbbExecutorOptions{.max_spare_threads = -1}), InvalidOptionError);
  EXPECT_THROW(
      TbbExecutor(TbbExecutorOptions{.max_spare_threads = TbbExecutor::kMaxSpareThreads + 1}),
      InvalidOptionError);
  EXPECT_THROW(TbbExecutor(TbbExecutorOptions{.spare_keep_alive = absl::ZeroDuration()}),
               InvalidOptionError);
  EXPECT_THROW(TbbExecutor(TbbExecutorOptions{.spare_keep_alive = -absl::Seconds(1)}),
               InvalidOptionError);
  EXPECT_EQ(TbbExecutor(TbbExecutorOptions{.max_concurrency = 1,
                                           .max_spare_threads = 0,
                                           .spare_keep_alive = absl::InfiniteDuration()})
                .max_concurrency(),
            1);
}

TEST(TbbExecutorTest, NeverRunsMoreThanMaxConcurrencyTasksAtOnce) {
  for (const int max_concurrency : {1, 2}) {
    ConcurrencyMeter meter;
    {
      TbbExecutor executor(max_concurrency);
      for (int i = 0; i < 200; ++i) {
        executor.Submit([&meter] {
          meter.Enter();
          std::this_thread::yield();  // Widens the window for overlap; not for correctness.
          meter.Exit();
        });
      }
    }  // The destructor waits for every task.
    EXPECT_GE(meter.peak(), 1);
    EXPECT_LE(meter.peak(), max_concurrency) << "max_concurrency " << max_concurrency;
  }
}

TEST(TbbExecutorTest, AsyncRoundTrip) {
  TbbExecutor executor(2);
  Future<int> f = Async(
      executor, [](int x) { return x * 2; }, 21);
  EXPECT_EQ(f.Result(), 42);
}

TEST(TbbExecutorTest, ShutdownWaitsForQueuedAndRunningTasks) {
  TbbExecutor executor(2);
  constexpr int kTasks = 200;
  std::atomic<int> finished{0};
  for (int i = 0; i < kTasks; ++i) {
    executor.Submit([&finished] {
      volatile int sink = 0;
      for (int j = 0; j < 1000; ++j) sink = sink + j;
      finished.fetch_add(1, std::memory_order_relaxed);
    });
  }
  executor.Shutdown();
  EXPECT_EQ(finished.load(), kTasks);
}

TEST(TbbExecutorTest, ShutdownWaitsForABlockedTask) {
  TbbExecutor executor(2);
  absl::Notification started;
  absl::Notification release;
  std::atomic<bool> finished{false};
  executor.Submit([&] {
    started.Notify();
    release.WaitForNotification();
    finished = true;
  });
  started.WaitForNotification();
  std::thread releaser([&] { release.Notify(); });
  executor.Shutdown();  // Returns only after the task saw `release`.
  EXPECT_TRUE(finished.load());
  releaser.join();
}

TEST(TbbExecutorTest, ShutdownWaitsForTasksSubmittedByTasks) {
  TbbExecutor executor(2);
  std::atomic<int> finished{0};
  absl::Notification submitted;
  executor.Submit([&] {
    executor.Submit([&] { finished.fetch_add(1, std::memory_order_relaxed); });
    finished.fetch_add(1, std::memory_order_relaxed);
    submitted.Notify();
  });
  submitted.WaitForNotification();
  executor.Shutdown();
  EXPECT_EQ(finished.load(), 2);
}

TEST(TbbExecutorTest, RunsMaxConcurrencyTasksAtOnce) {
  testkit::Watchdog watchdog(absl::Seconds(30), "max_concurrency tasks meeting at once");
  for (const int n : {1, 2, 4}) {
    TbbExecutor executor(n);
    std::atomic<int> started{0};
    absl::Notification all_started;
    // Each task waits until all have started: only possible if n run at the same time. The wait
    // is no BlockingRegion, so no thread is added for it.
    for (int i = 0; i < n; ++i) {
      executor.Submit([&] {
        if (started.fetch_add(1, std::memory_order_acq_rel) + 1 == n) all_started.Notify();
        all_started.WaitForNotification();
      });
    }
    all_started.WaitForNotification();
    executor.Shutdown();
    EXPECT_EQ(started.load(), n);
    EXPECT_EQ(executor.Stats().spare_threads, 0);
  }
}

TEST(TbbExecutorTest, SubmitAfterShutdownThrowsStoppedError) {
  TbbExecutor executor(2);
  executor.Shutdown();
  bool ran = false;
  try {
    executor.Submit([&ran] { ran = true; });
    ADD_FAILURE() << "no error";
  } catch (const StoppedError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_FALSE(ran);
  Future<int> f = Async(executor, [] { return 1; });
  EXPECT_THROW(f.Result(), StoppedError);
}

TEST(TbbExecutorTest, ShutdownIsIdempotent) {
  TbbExecutor executor(2);
  executor.Submit([] {});
  executor.Shutdown();
  executor.Shutdown();
  EXPECT_THROW(executor.Submit([] {}), StoppedError);
}  // The destructor shuts down once more.

TEST(TbbExecutorTest, ShutdownFromOwnTaskIsRejectedInsteadOfDeadlocking) {
  TbbExecutor executor(2);
  Future<bool> rejected = Async(executor, [&] {
    try {
      executor.Shutdown();
    } catch (const InvalidOptionError& e) {
      return std::string(e.what()).find("own tasks") != std::string::npos;
    }
    return false;
  });
  EXPECT_TRUE(rejected.Result());
  executor.Submit([] {});  // Still running: the refused Shutdown changed nothing.
}

TEST(TbbExecutorTest, AThrowingTaskDoesNotDropTheTasksAfterIt) {
  TbbExecutor executor(1);
  std::atomic<int> ran{0};
  executor.Submit([] { throw std::runtime_error("task error"); });
  for (int i = 0; i < 10; ++i) executor.Submit([&] { ran.fetch_add(1); });
  executor.Shutdown();
  EXPECT_EQ(ran.load(), 10);
}

TEST(TbbExecutorTest, DestructorWaitsForTasks) {
  constexpr int kTasks = 100;
  std::atomic<int> finished{0};
  absl::Notification release;
  {
    TbbExecutor executor(2);
    executor.Submit([&] {
      release.WaitForNotification();
      finished.fetch_add(1, std::memory_order_relaxed);
    });
    for (int i = 1; i < kTasks; ++i) {
      executor.Submit([&] { finished.fetch_add(1, std::memory_order_relaxed); });
    }
    release.Notify();
  }
  EXPECT_EQ(finished.load(), kTasks);
}

TEST(TbbExecutorTest, AcceptsSubmissionsFromManyThreads) {
  TbbExecutor executor(2);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::atomic<int> ran{0};
  testkit::TestConcurrent(kThreads, /*iterations=*/4, [&](int) {
    for (int i = 0; i < kPerThread; ++i) {
      executor.Submit([&ran] { ran.fetch_add(1, std::memory_order_relaxed); });
    }
  });
  executor.Shutdown();
  EXPECT_EQ(ran.load(), kThreads * kPerThread * 4);
}

// --- Blocked tasks and added threads --------------------------------------------------------

// Polls `executor`'s stats until `holds` is true. For conditions the executor reaches on its own
// threads without an event a test can wait on (a spare thread exiting); the watchdog of the
// calling test bounds it.
template <typename Pred>
void AwaitStats(const TbbExecutor& executor, Pred holds) {
  while (!holds(executor.Stats())) std::this_thread::yield();
}

TEST(TbbExecutorTest, TasksBlockedInARegionGetThreadsAddedSoOthersStillRun) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a task running beside 8 blocked ones");
  TbbExecutor executor(2);
  constexpr int kBlocked = 8;
  absl::Notification release;
  absl::BlockingCounter blocked(kBlocked);
  std::atomic<int> finished{0};
  for (int i = 0; i < kBlocked; ++i) {
    executor.Submit([&] {
      BlockingRegion region;
      blocked.DecrementCount();
      release.WaitForNotification();
      finished.fetch_add(1, std::memory_order_relaxed);
    });
  }
  blocked.Wait();  // All 8 block at once: only possible with threads added for them.
  EXPECT_EQ(Async(executor, [] { return 7; }).Result(), 7);  // And others still run.
  const TbbExecutorStats stats = executor.Stats();
  EXPECT_EQ(stats.max_concurrency, 2);
  EXPECT_EQ(stats.blocked, kBlocked);
  EXPECT_EQ(stats.active_spare_threads, kBlocked);
  EXPECT_EQ(stats.spare_threads, kBlocked);
  EXPECT_EQ(stats.uncompensated, 0);
  release.Notify();
  executor.Shutdown();
  EXPECT_EQ(finished.load(), kBlocked);
  EXPECT_EQ(executor.Stats().blocked, 0);
  EXPECT_EQ(executor.Stats().active_spare_threads, 0);
}

TEST(TbbExecutorTest, LibraryWaitsInsideTasksAreBlockingRegions) {
  testkit::Watchdog watchdog(absl::Seconds(30), "one-thread executor whose task waits on another");
  // One thread: a task waiting for a task of the same executor needs a thread added.
  TbbExecutor executor(1);
  Future<int> outer = Async(executor, [&executor] {
    return Async(executor, [] { return 20; }).Result() + 1;  // Future::Result blocks.
  });
  EXPECT_EQ(outer.Result(), 21);
  // Nested three deep.
  Future<int> deep = Async(executor, [&executor] {
    return Async(executor, [&executor] { return Async(executor, [] { return 1; }).Result() + 1; })
               .Result() +
           1;
  });
  EXPECT_EQ(deep.Result(), 3);
}

TEST(TbbExecutorTest, RegionsOutsideTasksAndNestedRegionsCountOnce) {
  EXPECT_FALSE(BlockingRegion::WouldCompensate());
  { BlockingRegion outside; }  // No executor: nothing to tell.
  TbbExecutor executor(1);
  absl::Notification inside;
  absl::Notification release;
  Future<bool> would = Async(executor, [&] {
    const bool before = BlockingRegion::WouldCompensate();
    BlockingRegion outer;
    const bool nested_would = BlockingRegion::WouldCompensate();
    BlockingRegion nested;
    inside.Notify();
    release.WaitForNotification();
    return before && !nested_would;
  });
  inside.WaitForNotification();
  EXPECT_EQ(executor.Stats().blocked, 1);  // Not 2: the nested region does not count.
  EXPECT_EQ(executor.Stats().active_spare_threads, 1);
  release.Notify();
  EXPECT_TRUE(would.Result());
}

TEST(TbbExecutorTest, BlockedTasksBeyondMaxSpareThreadsAreCountedAndStillFinish) {
  testkit::Watchdog watchdog(absl::Seconds(30), "tasks blocked beyond max_spare_threads");
  TbbExecutor executor(TbbExecutorOptions{.max_concurrency = 1, .max_spare_threads = 1});
  absl::Notification release;
  absl::BlockingCounter blocked(2);
  for (int i = 0; i < 2; ++i) {
    executor.Submit([&] {
      BlockingRegion region;
      blocked.DecrementCount();
      release.WaitForNotification();
    });
  }
  blocked.Wait();  // The first blocked task got a spare, which ran the second one.
  TbbExecutorStats stats = executor.Stats();
  EXPECT_EQ(stats.blocked, 2);
  EXPECT_EQ(stats.active_spare_threads, 1);
  EXPECT_EQ(stats.uncompensated, 1);
  release.Notify();
  executor.Shutdown();
  EXPECT_EQ(executor.Stats().uncompensated, 1);
}

TEST(TbbExecutorTest, IdleSpareThreadsAreReusedAndExitAfterTheKeepAlive) {
  testkit::Watchdog watchdog(absl::Seconds(30), "spare threads exiting after the keep-alive");
  testkit::FakeClock clock;
  TbbExecutor executor(TbbExecutorOptions{
      .max_concurrency = 1, .spare_keep_alive = absl::Seconds(10), .clock = &clock});
  const auto block_three = [&] {
    absl::Notification release;
    absl::BlockingCounter blocked(3);
    std::vector<Future<void>> tasks;
    for (int i = 0; i < 3; ++i) {
      tasks.push_back(Async(executor, [&] {
        BlockingRegion region;
        blocked.DecrementCount();
        release.WaitForNotification();
      }));
    }
    blocked.Wait();
    release.Notify();
    for (Future<void>& task : tasks) task.Result();  // Before `release` goes out of scope.
  };
  block_three();
  // Released, the three spares wait on the clock to be needed again.
  clock.BlockUntilWaiters(3);
  EXPECT_EQ(executor.Stats().spare_threads, 3);
  EXPECT_EQ(executor.Stats().active_spare_threads, 0);
  block_three();  // Served by the same three: none is added.
  clock.BlockUntilWaiters(3);
  EXPECT_EQ(executor.Stats().spare_threads, 3);
  clock.Advance(absl::Seconds(9));  // Not yet.
  EXPECT_EQ(executor.Stats().spare_threads, 3);
  EXPECT_EQ(clock.NumWaiters(), 3);
  clock.Advance(absl::Seconds(1));  // 10 s idle: they exit.
  AwaitStats(executor, [](const TbbExecutorStats& s) { return s.spare_threads == 0; });
  // Still compensates afterwards, with new threads.
  block_three();
  clock.BlockUntilWaiters(3);
  EXPECT_EQ(executor.Stats().spare_threads, 3);
}

TEST(TbbExecutorTest, NoSpareThreadsMeansABlockedTaskKeepsItsThread) {
  TbbExecutor executor(TbbExecutorOptions{.max_concurrency = 2, .max_spare_threads = 0});
  absl::Notification release;
  absl::Notification blocked;
  executor.Submit([&] {
    BlockingRegion region;
    blocked.Notify();
    release.WaitForNotification();
  });
  blocked.WaitForNotification();
  EXPECT_EQ(Async(executor, [] { return 1; }).Result(), 1);  // The other thread.
  EXPECT_EQ(executor.Stats().spare_threads, 0);
  EXPECT_EQ(executor.Stats().uncompensated, 1);
  release.Notify();
  executor.Shutdown();  // Before `release` goes out of scope.
}

TEST(TbbExecutorTest, ABlockedTaskStaysOnItsThread) {
  TbbExecutor executor(1);
  Future<bool> same = Async(executor, [&executor] {
    const std::thread::id before = std::this_thread::get_id();
    Async(executor, [] {}).Wait();  // Blocks; a spare runs the inner task.
    return std::this_thread::get_id() == before;
  });
  EXPECT_TRUE(same.Result());
}

// --- Destruction from inside -----------------------------------------------------------------

TEST(TbbExecutorTest, DestroyingTheExecutorFromItsOwnTaskFinishesInTheBackground) {
  testkit::Watchdog watchdog(absl::Seconds(30), "an executor destroyed from its own task");
  // One thread: the tasks submitted after the destroying one are still queued when it runs.
  auto* executor = new TbbExecutor(1);
  absl::Notification go;
  Future<int> destroyer = Async(*executor, [&go, executor] {
    go.WaitForNotification();
    delete executor;  // Does not wait for this task, which it could not.
    return 1;
  });
  constexpr int kQueued = 50;
  std::atomic<int> ran{0};
  absl::BlockingCounter all_ran(kQueued);
  for (int i = 0; i < kQueued; ++i) {
    executor->Submit([&] {
      ran.fetch_add(1);
      all_ran.DecrementCount();
    });
  }
  go.Notify();  // `executor` must not be used from here on.
  EXPECT_EQ(destroyer.Result(), 1);
  all_ran.Wait();  // Accepted before the destruction: they all run.
  EXPECT_EQ(ran.load(), kQueued);
}

TEST(TbbExecutorTest, ATaskOfADestroyedExecutorCanStillUseOtherExecutors) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a task outliving its executor");
  TbbExecutor other(1);
  auto* executor = new TbbExecutor(1);
  Future<int> after = Async(*executor, [&other, executor] {
    delete executor;
    return Async(other, [] { return 5; }).Result();  // Waits; nothing of `executor` is needed.
  });
  EXPECT_EQ(after.Result(), 5);
}

TEST(TbbExecutorTest, ShutdownInsideAnotherExecutorsTaskGetsThatExecutorAThread) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a shutdown waiting inside another executor");
  TbbExecutor outer(1);
  auto inner = std::make_unique<TbbExecutor>(1);
  absl::Notification release;
  inner->Submit([&] { release.WaitForNotification(); });
  Future<void> shutdown = Async(outer, [&] { inner->Shutdown(); });
  // `outer`'s only thread waits in Shutdown; a thread is added, so this runs and releases it.
  Async(outer, [&] { release.Notify(); }).Result();
  shutdown.Result();
}

}  // namespace
}  // namespace concurry

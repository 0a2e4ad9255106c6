#include "futures/tbb_executor.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "oneapi/tbb/global_control.h"
#include "oneapi/tbb/info.h"
#include "testing/test_concurrent.h"

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

TEST(TbbExecutorTest, MaxConcurrencyIsTheRequestedValueWithinOneTbbsWorkers) {
  tbb::global_control workers(tbb::global_control::max_allowed_parallelism, 4);  // 3 workers.
  EXPECT_EQ(TbbExecutor(1).max_concurrency(), 1);
  EXPECT_EQ(TbbExecutor(2).max_concurrency(), 2);
  EXPECT_EQ(TbbExecutor(3).max_concurrency(), 3);
  EXPECT_EQ(TbbExecutor(5).max_concurrency(), 3);
}

TEST(TbbExecutorTest, NonPositiveMaxConcurrencyMeansAllOfOneTbbsWorkers) {
  const int expected = std::max(1, static_cast<int>(tbb::global_control::active_value(
                                       tbb::global_control::max_allowed_parallelism)) -
                                       1);
  EXPECT_EQ(TbbExecutor(0).max_concurrency(), expected);
  EXPECT_EQ(TbbExecutor(-1).max_concurrency(), expected);
  EXPECT_EQ(TbbExecutor().max_concurrency(), expected);
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
  // oneTBB's worker pool defaults to one thread fewer than the machine has cores (it expects the
  // application thread to help); make room for two workers whatever the machine.
  tbb::global_control workers(tbb::global_control::max_allowed_parallelism, 3);
  TbbExecutor executor(2);
  std::atomic<int> started{0};
  absl::Notification both_started;
  // Each task waits until the other has started: only possible if both run at the same time.
  for (int i = 0; i < 2; ++i) {
    executor.Submit([&] {
      if (started.fetch_add(1, std::memory_order_acq_rel) + 1 == 2) both_started.Notify();
      both_started.WaitForNotification();
    });
  }
  both_started.WaitForNotification();  // Before Shutdown: no application thread helps.
  executor.Shutdown();
  EXPECT_EQ(started.load(), 2);
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
  testing::TestConcurrent(kThreads, /*iterations=*/4, [&](int) {
    for (int i = 0; i < kPerThread; ++i) {
      executor.Submit([&ran] { ran.fetch_add(1, std::memory_order_relaxed); });
    }
  });
  executor.Shutdown();
  EXPECT_EQ(ran.load(), kThreads * kPerThread * 4);
}

}  // namespace
}  // namespace concurry

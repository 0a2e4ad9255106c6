#include "testing/manual_executor.h"

#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace testkit {
namespace {

TEST(ManualExecutorTest, RunOneReturnsFalseWhenNothingIsQueued) {
  ManualExecutor executor;
  EXPECT_FALSE(executor.RunOne());
  EXPECT_EQ(executor.RunAll(), 0);
  EXPECT_EQ(executor.pending(), 0u);
}

TEST(ManualExecutorTest, SubmitOnlyQueuesUntilRunOne) {
  ManualExecutor executor;
  Executor& as_executor = executor;  // Through the interface that production code sees.
  int runs = 0;
  as_executor.Submit([&] { ++runs; });
  EXPECT_EQ(runs, 0);
  EXPECT_EQ(executor.pending(), 1u);
  EXPECT_TRUE(executor.RunOne());
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(executor.pending(), 0u);
  EXPECT_FALSE(executor.RunOne());
}

TEST(ManualExecutorTest, RunOneRunsOldestTaskFirst) {
  ManualExecutor executor;
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) executor.Submit([&order, i] { order.push_back(i); });
  EXPECT_TRUE(executor.RunOne());
  EXPECT_EQ(order, std::vector<int>({0}));
  EXPECT_EQ(executor.pending(), 2u);
  EXPECT_EQ(executor.RunAll(), 2);
  EXPECT_EQ(order, std::vector<int>({0, 1, 2}));
}

TEST(ManualExecutorTest, RunAllRunsTasksSubmittedByTasks) {
  ManualExecutor executor;
  std::vector<int> order;
  executor.Submit([&] {
    order.push_back(1);
    executor.Submit([&] {
      order.push_back(3);
      executor.Submit([&] { order.push_back(4); });
    });
  });
  executor.Submit([&] { order.push_back(2); });
  EXPECT_EQ(executor.RunAll(), 4);
  EXPECT_EQ(order, std::vector<int>({1, 2, 3, 4}));
  EXPECT_EQ(executor.pending(), 0u);
}

TEST(ManualExecutorTest, RunsTasksOnTheCallingThread) {
  ManualExecutor executor;
  std::thread::id ran_on;
  executor.Submit([&] { ran_on = std::this_thread::get_id(); });
  std::thread runner([&] { EXPECT_TRUE(executor.RunOne()); });
  const std::thread::id runner_id = runner.get_id();
  runner.join();
  EXPECT_EQ(ran_on, runner_id);
}

TEST(ManualExecutorTest, MoveOnlyTasksAreAccepted) {
  ManualExecutor executor;
  auto value = std::make_unique<int>(42);
  int seen = 0;
  executor.Submit([&seen, value = std::move(value)] { seen = *value; });
  EXPECT_TRUE(executor.RunOne());
  EXPECT_EQ(seen, 42);
}

TEST(ManualExecutorTest, SubmitRejectsEmptyTask) {
  ManualExecutor executor;
  EXPECT_THROW(executor.Submit(Executor::Task()), InvalidOptionError);
  EXPECT_EQ(executor.pending(), 0u);
}

TEST(ManualExecutorTest, TaskExceptionReachesRunOneAndTaskIsDequeued) {
  ManualExecutor executor;
  executor.Submit([] { throw std::runtime_error("boom"); });
  bool second_ran = false;
  executor.Submit([&] { second_ran = true; });
  EXPECT_THROW(executor.RunOne(), std::runtime_error);
  EXPECT_EQ(executor.pending(), 1u);
  EXPECT_EQ(executor.RunAll(), 1);
  EXPECT_TRUE(second_ran);
}

// Calls `on_destroy` when destroyed.
class DestructionHook {
 public:
  explicit DestructionHook(std::function<void()> on_destroy) : on_destroy_(std::move(on_destroy)) {}
  DestructionHook(DestructionHook&& other) noexcept : on_destroy_(std::move(other.on_destroy_)) {
    other.on_destroy_ = nullptr;
  }
  DestructionHook& operator=(DestructionHook&&) = delete;
  ~DestructionHook() {
    if (on_destroy_) on_destroy_();
  }

 private:
  std::function<void()> on_destroy_;
};

TEST(ManualExecutorTest, DestructorDestroysQueuedTasksWithoutRunningThem) {
  bool ran = false;
  int destroyed = 0;
  {
    ManualExecutor executor;
    executor.Submit([&ran, hook = DestructionHook([&] { ++destroyed; })] { ran = true; });
    // A task whose destructor submits must not deadlock the destructor.
    executor.Submit([hook = DestructionHook([&] {
                       ++destroyed;
                       executor.Submit([&ran] { ran = true; });
                     })] {});
  }
  EXPECT_FALSE(ran);
  EXPECT_EQ(destroyed, 2);
}

TEST(ManualExecutorTest, TaskIsDestroyedOutsideTheLock) {
  ManualExecutor executor;
  bool resubmitted = false;
  executor.Submit([hook = DestructionHook([&] {
                     executor.Submit([] {});  // Would deadlock if the lock were held.
                     resubmitted = true;
                   })] {});
  EXPECT_TRUE(executor.RunOne());
  EXPECT_TRUE(resubmitted);
  EXPECT_EQ(executor.RunAll(), 1);
}

TEST(ManualExecutorTest, BlockUntilPendingWaitsForTasksFromOtherThreads) {
  ManualExecutor executor;
  std::thread submitter([&] {
    for (int i = 0; i < 3; ++i) executor.Submit([] {});
  });
  executor.BlockUntilPending(3);
  EXPECT_EQ(executor.pending(), 3u);
  submitter.join();
  EXPECT_EQ(executor.RunAll(), 3);
}

TEST(ManualExecutorTest, ConcurrentSubmitsAreAllQueued) {
  constexpr int kThreads = 4;
  constexpr int kTasksPerThread = 25;
  ManualExecutor executor;
  std::atomic<int> runs{0};
  TestConcurrent(
      kThreads, /*iterations=*/50, [] {},
      [&](int) {
        for (int i = 0; i < kTasksPerThread; ++i) {
          executor.Submit([&] { runs.fetch_add(1, std::memory_order_relaxed); });
        }
      },
      [&] {
        EXPECT_EQ(executor.pending(), static_cast<size_t>(kThreads * kTasksPerThread));
        EXPECT_EQ(executor.RunAll(), kThreads * kTasksPerThread);
      });
  EXPECT_EQ(runs.load(), 50 * kThreads * kTasksPerThread);
}

TEST(ManualExecutorTest, ConcurrentRunnersRunEachTaskExactlyOnce) {
  constexpr int kTasks = 100;
  ManualExecutor executor;
  std::vector<std::atomic<int>> runs(2 * kTasks);
  std::atomic<int> run_by_runners{0};
  auto runner = [&] {
    while (executor.RunOne()) run_by_runners.fetch_add(1, std::memory_order_relaxed);
  };
  auto submitter = [&](int first) {
    for (int i = first; i < first + kTasks; ++i) {
      executor.Submit([&runs, i] { runs[i].fetch_add(1, std::memory_order_relaxed); });
    }
  };
  TestConcurrent(
      /*iterations=*/50,
      [&] {
        for (auto& r : runs) r.store(0);
        run_by_runners.store(0);
      },
      [&] {
        EXPECT_EQ(run_by_runners.load() + executor.RunAll(), 2 * kTasks);
        for (auto& r : runs) EXPECT_EQ(r.load(), 1);
      },
      {[&] { submitter(0); }, [&] { submitter(kTasks); }, runner, runner});
}

}  // namespace
}  // namespace testkit
}  // namespace concurry

// Where a TaskWorker's concurrency comes from: one worker runs its calls one at a time; a worker
// on an executor that runs several tasks at once becomes an on-demand pool up to the executor's
// max_concurrency(), so Submit and Map run that many calls at once (and max_workers = 1 keeps one
// serial worker); max_concurrency() reports it.

#include <numeric>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/thread_pool_executor.h"
#include "gtest/gtest.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/task_worker.h"
#include "workers/test_thread_executor.h"

namespace concurry {
namespace {

using ::concurry::testkit::Watchdog;
using ::concurry::workers_test::ConcurrencyProbe;
using ::concurry::workers_test::ThreadsExecutor;

std::vector<int> Range(int n) {
  std::vector<int> values(static_cast<size_t>(n));
  std::iota(values.begin(), values.end(), 0);
  return values;
}

TEST(TaskWorkerConcurrencyTest, AnExecutorWorkerMapsUpToTheExecutorsConcurrency) {
  Watchdog watchdog(absl::Seconds(60), "map on an executor-backed TaskWorker");
  ThreadsExecutor io(8);
  TaskWorker worker = TaskWorker::Create({.mode = Mode::kTbb, .executor = &io});
  EXPECT_TRUE(worker.is_pool());
  EXPECT_EQ(worker.max_concurrency(), 8);
  EXPECT_TRUE(worker.options().on_demand);
  EXPECT_EQ(worker.options().max_workers, 8);

  ConcurrencyProbe probe;
  // The 16 items block until 8 run at once: a serial worker would never get there.
  std::thread release([&probe] {
    probe.WaitRunning(8);
    probe.Release();
  });
  int sum = 0;
  int count = 0;
  auto results = worker.Map(
      {.max_in_flight = 8},
      [&probe](int x) {
        probe.Run();
        return x;
      },
      Range(16));
  EXPECT_EQ(results.max_in_flight(), 8);
  EXPECT_EQ(results.max_concurrency(), 8);
  EXPECT_EQ(results.effective_concurrency(), 8);
  for (auto& item : results) {
    sum += item.value();
    ++count;
  }
  release.join();
  EXPECT_EQ(count, 16);
  EXPECT_EQ(sum, 120);
  EXPECT_EQ(probe.peak(), 8) << "max_in_flight = 8 on a pool of 8";
}

TEST(TaskWorkerConcurrencyTest, AnExecutorWorkerRunsSubmittedCallsConcurrently) {
  Watchdog watchdog(absl::Seconds(60), "submit on an executor-backed TaskWorker");
  ThreadsExecutor io(4);
  TaskWorker worker = TaskWorker::Create({.mode = Mode::kTbb, .executor = &io});
  ConcurrencyProbe probe;
  std::vector<Future<int>> calls;
  for (int i = 0; i < 4; ++i) {
    calls.push_back(worker.Submit(
        [&probe](int x) {
          probe.Run();
          return x;
        },
        i));
  }
  probe.WaitRunning(4);
  probe.Release();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(calls[static_cast<size_t>(i)].Result(), i);
  EXPECT_EQ(probe.peak(), 4);
}

TEST(TaskWorkerConcurrencyTest, MaxWorkersOneKeepsOneSerialWorkerOnTheExecutor) {
  Watchdog watchdog(absl::Seconds(60), "serial worker on an executor");
  ThreadsExecutor io(8);
  TaskWorker worker = TaskWorker::Create({.mode = Mode::kTbb, .max_workers = 1, .executor = &io});
  EXPECT_FALSE(worker.is_pool());
  EXPECT_EQ(worker.max_concurrency(), 1);
  ConcurrencyProbe probe;
  probe.Release();  // Calls pass straight through; the probe still records how many overlap.
  int count = 0;
  auto results = worker.Map(
      {.max_in_flight = 8},
      [&probe](int x) {
        probe.Run();
        return x;
      },
      Range(16));
  // The map reports what it really gets of max_in_flight (and does not warn: queueing ahead of
  // a worker is normal).
  EXPECT_EQ(results.max_in_flight(), 8);
  EXPECT_EQ(results.max_concurrency(), 1);
  EXPECT_EQ(results.effective_concurrency(), 1);
  for (auto& item : results) {
    EXPECT_EQ(item.value(), count);
    ++count;
  }
  EXPECT_EQ(count, 16);
  EXPECT_EQ(probe.peak(), 1);
}

TEST(TaskWorkerConcurrencyTest, ExplicitPoolSizesAreCappedByTheExecutor) {
  ThreadsExecutor io(4);
  TaskWorker small = TaskWorker::Create({.mode = Mode::kTbb, .max_workers = 2, .executor = &io});
  EXPECT_EQ(small.max_concurrency(), 2);
  EXPECT_EQ(small.GetPoolStats().effective_concurrency, 2);
  EXPECT_FALSE(small.options().on_demand);
  TaskWorker large = TaskWorker::Create({.mode = Mode::kTbb, .max_workers = 16, .executor = &io});
  EXPECT_EQ(large.max_concurrency(), 4);
  EXPECT_EQ(large.GetPoolStats().max_workers, 16);
  EXPECT_EQ(large.GetPoolStats().effective_concurrency, 4);
  TaskWorker on_demand = TaskWorker::Create(
      {.mode = Mode::kTbb, .max_workers = 3, .on_demand = true, .executor = &io});
  EXPECT_EQ(on_demand.max_concurrency(), 3);
}

TEST(TaskWorkerConcurrencyTest, AnExecutorOfOneOrUnknownConcurrencyKeepsOneWorker) {
  ThreadsExecutor one(1);
  TaskWorker on_one = TaskWorker::Create({.mode = Mode::kTbb, .executor = &one});
  EXPECT_FALSE(on_one.is_pool());
  EXPECT_EQ(on_one.max_concurrency(), 1);
  EXPECT_EQ(on_one.Submit([] { return 7; }).Result(), 7);
  // InlineExecutor cannot say (max_concurrency() == 0).
  TaskWorker inline_worker =
      TaskWorker::Create({.mode = Mode::kTbb, .executor = &InlineExecutor()});
  EXPECT_FALSE(inline_worker.is_pool());
  EXPECT_EQ(inline_worker.Submit([] { return 8; }).Result(), 8);
}

TEST(TaskWorkerConcurrencyTest, MaxConcurrencyOfWorkersAndPoolsWithoutAnExecutor) {
  EXPECT_EQ(TaskWorker().max_concurrency(), 0);
  EXPECT_EQ(TaskWorker::Create({.mode = Mode::kThread}).max_concurrency(), 1);
  EXPECT_EQ(TaskWorker::Create({.mode = Mode::kSync}).max_concurrency(), 1);
  TaskWorker pool = TaskWorker::Create({.mode = Mode::kThread, .max_workers = 3});
  EXPECT_EQ(pool.max_concurrency(), 3);
  EXPECT_EQ(pool.GetPoolStats().effective_concurrency, 3);
  // Through the Executor interface too.
  const Executor& as_executor = pool;
  EXPECT_EQ(as_executor.max_concurrency(), 3);
}

TEST(TaskWorkerConcurrencyTest, ATaskOnAnExecutorPoolRunsItsFunctionConcurrently) {
  Watchdog watchdog(absl::Seconds(60), "task on an executor-backed pool");
  ThreadsExecutor io(3);
  ConcurrencyProbe probe;
  auto task = MakeTask(
      [&probe](int x) {
        probe.Run();
        return x;
      },
      {.mode = Mode::kTbb, .executor = &io});
  EXPECT_EQ(task.worker().max_concurrency(), 3);
  std::vector<Future<int>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(task(i));
  probe.WaitRunning(3);
  probe.Release();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(calls[static_cast<size_t>(i)].Result(), i);
}

// An executor may destroy a worker's drain task without running it (here a ThreadPoolExecutor
// shut down with cancel_pending while the drain waits behind a blocked task): the worker's queued
// calls then fail at once instead of waiting for a drain that never comes.
TEST(TaskWorkerConcurrencyTest, CallsFailWhenTheExecutorDropsTheWorkersDrain) {
  Watchdog watchdog(absl::Seconds(60), "a worker whose drain the executor dropped");
  ThreadPoolExecutor io(1);
  // Created first: the worker's object is constructed on io.
  TaskWorker worker = TaskWorker::Create({.mode = Mode::kTbb, .executor = &io});
  EXPECT_EQ(worker.max_concurrency(), 1);
  absl::Notification running;
  absl::Notification release;
  Future<void> blocker = Async(io, [&] {
    running.Notify();
    release.WaitForNotification();
  });
  running.WaitForNotification();
  Future<int> call = worker.Submit([] { return 1; });  // Its drain queues behind the blocker.
  io.Shutdown(/*wait=*/false, /*cancel_pending=*/true);
  EXPECT_THROW(call.Result(), CancelledError);
  EXPECT_THROW(worker.Submit([] { return 2; }).Result(), StoppedError);
  release.Notify();
  blocker.Result();
  EXPECT_TRUE(worker.Stop(absl::Seconds(10)));
}

}  // namespace
}  // namespace concurry

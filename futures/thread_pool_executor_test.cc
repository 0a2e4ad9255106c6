#include "futures/thread_pool_executor.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

using testkit::FakeClock;
using testkit::Watchdog;

// Counts tasks that have started, and lets a test wait (without polling) until n have.
class StartCounter {
 public:
  void Started() {
    absl::MutexLock lock(&mu_);
    ++started_;
  }
  void AwaitStarted(int n) {
    absl::MutexLock lock(&mu_);
    const auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return started_ >= n; };
    mu_.Await(absl::Condition(&reached));
  }
  int started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }

 private:
  absl::Mutex mu_;
  int started_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(ThreadPoolExecutorTest, OneTaskAtATimeUsesOneThread) {
  Watchdog watchdog(absl::Seconds(30));
  FakeClock clock;
  ThreadPoolExecutor pool({.max_workers = 4, .clock = &clock});
  EXPECT_EQ(pool.Stats().threads, 0);  // Lazy: no thread before the first task.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Async(pool, [i] { return i * 2; }).Result(), i * 2);
    clock.BlockUntilWaiters(1);  // The thread is idle again (waiting out keep_alive).
  }
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.threads_started, 1);
  EXPECT_EQ(stats.threads, 1);
  EXPECT_EQ(stats.peak_threads, 1);
  EXPECT_EQ(stats.idle, 1);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.completed, 5);
}

TEST(ThreadPoolExecutorTest, BlockedTasksGetAThreadEachUpToMaxWorkers) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(4);
  EXPECT_EQ(pool.max_concurrency(), 4);
  absl::Notification gate;
  StartCounter counter;
  std::vector<Future<void>> futures;
  for (int i = 0; i < 3; ++i) {
    futures.push_back(Async(pool, [&] {
      counter.Started();
      gate.WaitForNotification();
    }));
  }
  counter.AwaitStarted(3);
  EXPECT_EQ(pool.Stats().threads, 3);  // 3 blocked tasks: 3 threads.
  for (int i = 0; i < 3; ++i) {
    futures.push_back(Async(pool, [&] {
      counter.Started();
      gate.WaitForNotification();
    }));
  }
  counter.AwaitStarted(4);
  ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.threads, 4);  // Capped at max_workers: 2 tasks wait.
  EXPECT_EQ(stats.running, 4);
  EXPECT_EQ(stats.idle, 0);
  EXPECT_EQ(stats.queued, 2);
  EXPECT_EQ(counter.started(), 4);
  gate.Notify();
  for (auto& f : futures) f.Result();
  pool.Shutdown();
  stats = pool.Stats();
  EXPECT_EQ(stats.threads_started, 4);
  EXPECT_EQ(stats.peak_threads, 4);
  EXPECT_EQ(stats.completed, 6);
  EXPECT_EQ(stats.threads, 0);
}

TEST(ThreadPoolExecutorTest, RunsTasksInSubmissionOrder) {
  ThreadPoolExecutor pool(1);
  std::vector<int> order;  // Only the pool's one thread writes it.
  absl::Notification gate;
  pool.Submit([&] { gate.WaitForNotification(); });
  for (int i = 0; i < 100; ++i) pool.Submit([&order, i] { order.push_back(i); });
  gate.Notify();
  pool.Shutdown();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(ThreadPoolExecutorTest, IdleThreadRetiresAfterExactlyKeepAlive) {
  Watchdog watchdog(absl::Seconds(30));
  FakeClock clock;
  ThreadPoolExecutor pool({.max_workers = 2, .keep_alive = absl::Seconds(10), .clock = &clock});
  Async(pool, [] {}).Result();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(5));
  // A task restarts the idle time.
  Async(pool, [] {}).Result();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(10) - absl::Nanoseconds(1));
  EXPECT_EQ(clock.NumWaiters(), 1);  // Not yet.
  EXPECT_EQ(pool.Stats().threads, 1);
  EXPECT_EQ(pool.Stats().threads_retired, 0);
  clock.Advance(absl::Nanoseconds(1));
  EXPECT_EQ(clock.NumWaiters(), 0);  // Woken by its deadline: it exits.
  pool.Shutdown();
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.threads_retired, 1);
  EXPECT_EQ(stats.threads_started, 1);
  EXPECT_EQ(stats.completed, 2);
}

TEST(ThreadPoolExecutorTest, RetiredThreadIsReplacedByANewOne) {
  Watchdog watchdog(absl::Seconds(30));
  FakeClock clock;
  ThreadPoolExecutor pool({.max_workers = 2, .keep_alive = absl::Seconds(1), .clock = &clock});
  Async(pool, [] {}).Result();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(1));
  // Whether the old thread has finished exiting or not, the next task runs.
  EXPECT_EQ(Async(pool, [] { return 3; }).Result(), 3);
  pool.Shutdown();
  const ThreadPoolExecutorStats stats = pool.Stats();
  // Either it exited and a new thread ran the task, or it took the task just before exiting.
  EXPECT_EQ(stats.threads_started, 1 + stats.threads_retired);
}

TEST(ThreadPoolExecutorTest, InfiniteKeepAliveKeepsThreads) {
  FakeClock clock;
  ThreadPoolExecutor pool(
      {.max_workers = 1, .keep_alive = absl::InfiniteDuration(), .clock = &clock});
  Async(pool, [] {}).Result();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Hours(24 * 365));
  EXPECT_EQ(clock.NumWaiters(), 1);
  EXPECT_EQ(pool.Stats().threads, 1);
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().threads_retired, 0);
}

thread_local bool initialized = false;

TEST(ThreadPoolExecutorTest, InitializerRunsOncePerThreadBeforeItsFirstTask) {
  Watchdog watchdog(absl::Seconds(30));
  absl::Mutex mu;
  absl::flat_hash_set<std::thread::id> initialized_threads;
  absl::flat_hash_set<std::thread::id> task_threads;
  int initializer_calls = 0;
  int uninitialized_tasks = 0;
  {
    ThreadPoolExecutor pool({.max_workers = 4, .initializer = [&] {
                               initialized = true;
                               absl::MutexLock lock(&mu);
                               ++initializer_calls;
                               initialized_threads.insert(std::this_thread::get_id());
                             }});
    absl::Notification gate;
    StartCounter counter;
    const auto task = [&] {
      absl::MutexLock lock(&mu);
      if (!initialized) ++uninitialized_tasks;
      task_threads.insert(std::this_thread::get_id());
    };
    for (int i = 0; i < 4; ++i) {
      pool.Submit([&] {
        task();
        counter.Started();
        gate.WaitForNotification();
      });
    }
    counter.AwaitStarted(4);
    gate.Notify();
    for (int i = 0; i < 200; ++i) pool.Submit(task);
    pool.Shutdown();
    EXPECT_EQ(pool.Stats().threads_started, 4);
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(initializer_calls, 4);
  EXPECT_EQ(initialized_threads.size(), 4u);
  EXPECT_EQ(task_threads, initialized_threads);
  EXPECT_EQ(uninitialized_tasks, 0);
}

TEST(ThreadPoolExecutorTest, InitializerFailureBreaksTheExecutor) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(
      {.max_workers = 2, .initializer = [] { throw std::runtime_error("no connection to db"); }});
  Future<int> f = Async(pool, [] { return 1; });
  // The task was dropped with the queue: its future fails instead of hanging.
  EXPECT_THROW(f.Result(), BrokenPromiseError);
  try {
    pool.Submit([] {});
    ADD_FAILURE() << "Submit on a broken executor did not throw";
  } catch (const StoppedError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "broken")) << e.what();
    EXPECT_TRUE(absl::StrContains(e.what(), "std::runtime_error: no connection to db")) << e.what();
  }
  // Async turns the rejection into a failed future.
  EXPECT_THROW(Async(pool, [] {}).Result(), StoppedError);
  pool.Shutdown();
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_TRUE(stats.broken);
  EXPECT_EQ(stats.initializer_failures, 1);
  EXPECT_EQ(stats.dropped, 1);
  EXPECT_EQ(stats.completed, 0);
  EXPECT_EQ(stats.threads, 0);
}

TEST(ThreadPoolExecutorTest, InitializerFailureLetsRunningTasksFinish) {
  Watchdog watchdog(absl::Seconds(30));
  std::atomic<int> calls{0};
  ThreadPoolExecutor pool({.max_workers = 2, .initializer = [&] {
                             // relaxed: only counts.
                             if (calls.fetch_add(1, std::memory_order_relaxed) == 1) {
                               throw std::runtime_error("second thread fails");
                             }
                           }});
  absl::Notification gate;
  StartCounter counter;
  Future<int> running = Async(pool, [&] {
    counter.Started();
    gate.WaitForNotification();
    return 5;
  });
  counter.AwaitStarted(1);
  Future<int> dropped = Async(pool, [] { return 6; });  // Starts the second thread, which fails.
  EXPECT_THROW(dropped.Result(), BrokenPromiseError);
  EXPECT_THROW(pool.Submit([] {}), StoppedError);
  gate.Notify();
  EXPECT_EQ(running.Result(), 5);
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().completed, 1);
  EXPECT_EQ(pool.Stats().initializer_failures, 1);
}

TEST(ThreadPoolExecutorTest, ShutdownWithWaitRunsPendingTasks) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(1);
  absl::Notification gate;
  StartCounter counter;
  std::atomic<int> ran{0};
  pool.Submit([&] {
    counter.Started();
    gate.WaitForNotification();
  });
  counter.AwaitStarted(1);
  std::vector<Future<void>> futures;
  for (int i = 0; i < 5; ++i) {
    futures.push_back(Async(pool, [&] { ran.fetch_add(1, std::memory_order_relaxed); }));
  }
  pool.Shutdown(/*wait=*/false);  // Stops accepting, returns at once.
  EXPECT_THROW(pool.Submit([] {}), StoppedError);
  EXPECT_TRUE(pool.Stats().shut_down);
  EXPECT_EQ(pool.Stats().queued, 5);
  gate.Notify();
  pool.Shutdown(/*wait=*/true);  // Idempotent; waits for the queue to drain.
  EXPECT_EQ(ran.load(), 5);
  for (auto& f : futures) EXPECT_TRUE(f.Status().ok());
  EXPECT_EQ(pool.Stats().completed, 6);
  EXPECT_EQ(pool.Stats().threads, 0);
}

TEST(ThreadPoolExecutorTest, ShutdownWithCancelPendingDropsQueuedTasks) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(1);
  absl::Notification gate;
  StartCounter counter;
  Future<int> running = Async(pool, [&] {
    counter.Started();
    gate.WaitForNotification();
    return 1;
  });
  counter.AwaitStarted(1);
  std::atomic<int> ran{0};
  std::vector<Future<int>> pending;
  for (int i = 0; i < 5; ++i) {
    pending.push_back(Async(pool, [&] { return ran.fetch_add(1, std::memory_order_relaxed); }));
  }
  pool.Shutdown(/*wait=*/false, /*cancel_pending=*/true);
  // Each dropped Async task fails its future (its promise is destroyed unfulfilled).
  for (auto& f : pending) EXPECT_THROW(f.Result(), BrokenPromiseError);
  gate.Notify();
  EXPECT_EQ(running.Result(), 1);  // The running task finishes.
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 0);
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.dropped, 5);
  EXPECT_EQ(stats.completed, 1);
  EXPECT_EQ(stats.queued, 0);
}

TEST(ThreadPoolExecutorTest, SubmitAfterShutdownThrowsStoppedError) {
  ThreadPoolExecutor pool(2);
  pool.Shutdown();
  pool.Shutdown();  // Idempotent.
  try {
    pool.Submit([] {});
    ADD_FAILURE() << "no error";
  } catch (const StoppedError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "shut down")) << e.what();
  }
  EXPECT_THROW(Async(pool, [] { return 1; }).Result(), StoppedError);
}

TEST(ThreadPoolExecutorTest, RejectsAnEmptyTask) {
  ThreadPoolExecutor pool(1);
  EXPECT_THROW(pool.Submit(Executor::Task()), InvalidOptionError);
  EXPECT_EQ(pool.Stats().threads, 0);
}

TEST(ThreadPoolExecutorTest, ConcurrentShutdownsAreSafe) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(4);
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i) pool.Submit([&] { ran.fetch_add(1, std::memory_order_relaxed); });
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { pool.Shutdown(true, i == 3); });
  for (auto& t : threads) t.join();
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.threads, 0);
  EXPECT_EQ(stats.completed + stats.dropped, 100);
  EXPECT_EQ(ran.load(), stats.completed);
}

TEST(ThreadPoolExecutorTest, ShutdownFromOwnTaskDoesNotDeadlock) {
  Watchdog watchdog(absl::Seconds(30), "Shutdown from a pool task");
  ThreadPoolExecutor pool(2);
  absl::Notification gate;
  Future<int> later = Async(pool, [&] {
    gate.WaitForNotification();
    return 2;
  });
  Future<void> stopper = Async(pool, [&] {
    pool.Shutdown(/*wait=*/true);  // Does not wait for itself, nor for `later`.
    gate.Notify();
  });
  EXPECT_TRUE(stopper.Status().ok());
  EXPECT_EQ(later.Result(), 2);
  EXPECT_THROW(pool.Submit([] {}), StoppedError);
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().threads, 0);
}

TEST(ThreadPoolExecutorTest, DestroyedFromOwnTaskFinishesQueuedTasksInTheBackground) {
  Watchdog watchdog(absl::Seconds(30), "destroying the pool from its task");
  auto pool = std::make_unique<ThreadPoolExecutor>(1);
  absl::Notification go;
  absl::Notification destroyed;
  Future<void> destroyer = Async(*pool, [&] {
    go.WaitForNotification();  // Until `queued` is submitted: `pool` is read until then.
    pool.reset();              // The destructor does not wait for this thread.
    destroyed.Notify();
  });
  Future<int> queued = Async(*pool, [&] {
    destroyed.WaitForNotification();
    return 9;
  });
  go.Notify();
  EXPECT_TRUE(destroyer.Status().ok());
  EXPECT_EQ(queued.Result(), 9);  // Ran after the executor object was gone.
  EXPECT_EQ(pool, nullptr);
}

// Makes every thread start of every ThreadPoolExecutor fail with `hook`'s exception while alive.
class FailThreadStarts {
 public:
  explicit FailThreadStarts(void (*hook)()) {
    futures_internal::SetThreadPoolStartHookForTesting(hook);
  }
  ~FailThreadStarts() { futures_internal::SetThreadPoolStartHookForTesting(nullptr); }
  FailThreadStarts(const FailThreadStarts&) = delete;
  FailThreadStarts& operator=(const FailThreadStarts&) = delete;
};

[[noreturn]] void ThrowNoThread() {
  throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                          "test: no thread");
}
[[noreturn]] void ThrowBadAlloc() { throw std::bad_alloc(); }

TEST(ThreadPoolExecutorTest, ThreadStartFailureWithNoThreadFailsTheSubmit) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(2);
  {
    FailThreadStarts fail(&ThrowNoThread);
    EXPECT_THROW(pool.Submit([] {}), std::system_error);
    Future<int> f = Async(pool, [] { return 1; });
    EXPECT_THROW(f.Result(), std::system_error);
    const ThreadPoolExecutorStats stats = pool.Stats();
    EXPECT_EQ(stats.queued, 0);  // Taken back, not left for a thread that will never come.
    EXPECT_EQ(stats.threads, 0);
    EXPECT_EQ(stats.threads_started, 0);
  }
  EXPECT_EQ(Async(pool, [] { return 2; }).Result(), 2);  // Recovers once threads start again.
  EXPECT_EQ(pool.Stats().threads_started, 1);
}

TEST(ThreadPoolExecutorTest, BadAllocWhileStartingAThreadFailsTheSubmit) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(2);
  {
    FailThreadStarts fail(&ThrowBadAlloc);
    EXPECT_THROW(pool.Submit([] {}), std::bad_alloc);
    EXPECT_THROW(Async(pool, [] {}).Result(), std::bad_alloc);
    EXPECT_EQ(pool.Stats().queued, 0);
  }
  EXPECT_EQ(Async(pool, [] { return 3; }).Result(), 3);
}

TEST(ThreadPoolExecutorTest, ThreadStartFailureWhileThreadsAreBusyNeverHangs) {
  Watchdog watchdog(absl::Seconds(30), "a pool task waiting for a child whose thread failed");
  ThreadPoolExecutor pool(4);
  absl::Notification starts_fail;
  StartCounter counter;
  // A pool task fans out to the pool and waits: its child needs a second thread, which fails. Left
  // queued, the child would wait for the only (busy) thread forever.
  Future<void> parent = Async(pool, [&] {
    counter.Started();
    starts_fail.WaitForNotification();
    Future<int> child = Async(pool, [] { return 1; });
    EXPECT_THROW(child.Result(), std::system_error);
  });
  counter.AwaitStarted(1);
  {
    FailThreadStarts fail(&ThrowNoThread);
    starts_fail.Notify();
    EXPECT_TRUE(parent.Status().ok());
  }
  pool.Shutdown();
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.threads_started, 1);
  EXPECT_EQ(stats.completed, 1);
  EXPECT_EQ(stats.queued, 0);
}

TEST(ThreadPoolExecutorTest, ThreadStartFailureWithAnIdleThreadStillRunsTheTask) {
  Watchdog watchdog(absl::Seconds(30));
  FakeClock clock;
  ThreadPoolExecutor pool({.max_workers = 4, .clock = &clock});
  Async(pool, [] {}).Result();
  clock.BlockUntilWaiters(1);  // The thread is idle: the next task needs no new thread.
  FailThreadStarts fail(&ThrowNoThread);
  EXPECT_EQ(Async(pool, [] { return 4; }).Result(), 4);
  EXPECT_EQ(pool.Stats().threads_started, 1);
}

// A thread_local whose destructor (run as a pool thread exits) submits to the pool that ran it.
struct SubmitsOnThreadExit {
  ThreadPoolExecutor* pool = nullptr;
  absl::Notification* submitted_task_ran = nullptr;
  std::atomic<int>* submitted = nullptr;
  std::atomic<int>* stopped = nullptr;
  ~SubmitsOnThreadExit() {
    if (pool == nullptr) return;
    try {
      pool->Submit([ran = submitted_task_ran] {
        if (ran != nullptr) ran->Notify();
      });
      submitted->fetch_add(1);
    } catch (const StoppedError&) {
      stopped->fetch_add(1);
    }
  }
};
thread_local SubmitsOnThreadExit submits_on_thread_exit;

TEST(ThreadPoolExecutorTest, ThreadLocalDestructorSubmittingAfterShutdownGetsStoppedError) {
  Watchdog watchdog(absl::Seconds(30), "a thread_local destructor submitting to its pool");
  std::atomic<int> submitted{0};
  std::atomic<int> stopped{0};
  ThreadPoolExecutor pool(1);
  Async(pool, [&] {
    submits_on_thread_exit.pool = &pool;
    submits_on_thread_exit.submitted = &submitted;
    submits_on_thread_exit.stopped = &stopped;
  }).Result();
  // Two concurrent waiting Shutdowns: each returns only once the thread was joined, i.e. after
  // its thread_local destructors ran.
  std::atomic<int> seen_done{0};
  std::thread other([&] {
    pool.Shutdown();
    seen_done.fetch_add(stopped.load());
  });
  pool.Shutdown();
  seen_done.fetch_add(stopped.load());
  other.join();
  EXPECT_EQ(stopped.load(), 1);
  EXPECT_EQ(submitted.load(), 0);
  EXPECT_EQ(seen_done.load(), 2);
  EXPECT_EQ(pool.Stats().threads, 0);
}

TEST(ThreadPoolExecutorTest, ThreadLocalDestructorOfARetiredThreadCanSubmit) {
  Watchdog watchdog(absl::Seconds(30), "a retired thread's thread_local destructor submitting");
  FakeClock clock;
  std::atomic<int> submitted{0};
  std::atomic<int> stopped{0};
  absl::Notification ran;
  ThreadPoolExecutor pool({.max_workers = 1, .keep_alive = absl::Seconds(1), .clock = &clock});
  Async(pool, [&] {
    submits_on_thread_exit.pool = &pool;
    submits_on_thread_exit.submitted_task_ran = &ran;
    submits_on_thread_exit.submitted = &submitted;
    submits_on_thread_exit.stopped = &stopped;
  }).Result();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(1));  // The thread retires; its destructor submits (never joins).
  ran.WaitForNotification();        // On a new thread.
  pool.Shutdown();
  EXPECT_EQ(submitted.load(), 1);
  EXPECT_EQ(stopped.load(), 0);
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.threads_started, 2);
  EXPECT_EQ(stats.threads_retired, 1);
  EXPECT_EQ(stats.completed, 2);
}

TEST(ThreadPoolExecutorTest, BoundedQueueRejectsWhenFullUnderReject) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool(
      {.max_workers = 1, .max_queued = 2, .queue_full = ThreadPoolQueueFull::kReject});
  absl::Notification gate;
  StartCounter counter;
  pool.Submit([&] {
    counter.Started();
    gate.WaitForNotification();
  });
  counter.AwaitStarted(1);
  pool.Submit([] {});
  pool.Submit([] {});
  try {
    pool.Submit([] {});
    ADD_FAILURE() << "no error";
  } catch (const CapacityError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "max_queued = 2")) << e.what();
  }
  EXPECT_THROW(Async(pool, [] {}).Result(), CapacityError);
  EXPECT_EQ(pool.Stats().rejected, 2);
  EXPECT_EQ(pool.Stats().queued, 2);
  gate.Notify();
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().completed, 3);
}

TEST(ThreadPoolExecutorTest, BoundedQueueDoesNotCountTasksThatAThreadWillTake) {
  Watchdog watchdog(absl::Seconds(30));
  // 3 threads may start and 1 task may wait: 4 submits fit without blocking or rejecting.
  ThreadPoolExecutor pool(
      {.max_workers = 3, .max_queued = 1, .queue_full = ThreadPoolQueueFull::kReject});
  absl::Notification gate;
  for (int i = 0; i < 4; ++i) pool.Submit([&] { gate.WaitForNotification(); });
  EXPECT_THROW(pool.Submit([] {}), CapacityError);
  gate.Notify();
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().completed, 4);
  EXPECT_EQ(pool.Stats().rejected, 1);
}

TEST(ThreadPoolExecutorTest, BoundedQueueBlocksTheSubmitterUntilThereIsRoom) {
  Watchdog watchdog(absl::Seconds(30));
  FakeClock clock;  // Shows the blocked submitter as a waiter; time never moves.
  ThreadPoolExecutor pool(
      {.max_workers = 1, .keep_alive = absl::InfiniteDuration(), .max_queued = 1, .clock = &clock});
  absl::Notification gate;
  StartCounter counter;
  pool.Submit([&] {
    counter.Started();
    gate.WaitForNotification();
  });
  counter.AwaitStarted(1);
  std::atomic<bool> last_ran{false};
  pool.Submit([] {});  // Waits: 1 of 1.
  std::thread submitter([&] { pool.Submit([&] { last_ran.store(true); }); });
  clock.BlockUntilWaiters(1);  // The submitter waits for room.
  EXPECT_EQ(pool.Stats().blocked_submits, 1);
  EXPECT_EQ(pool.Stats().queued, 1);
  gate.Notify();
  submitter.join();
  pool.Shutdown();
  EXPECT_TRUE(last_ran.load());
  EXPECT_EQ(pool.Stats().completed, 3);
}

TEST(ThreadPoolExecutorTest, ShutdownWakesABlockedSubmitter) {
  Watchdog watchdog(absl::Seconds(30));
  FakeClock clock;
  ThreadPoolExecutor pool(
      {.max_workers = 1, .keep_alive = absl::InfiniteDuration(), .max_queued = 1, .clock = &clock});
  absl::Notification gate;
  StartCounter counter;
  pool.Submit([&] {
    counter.Started();
    gate.WaitForNotification();
  });
  counter.AwaitStarted(1);
  pool.Submit([] {});
  Future<void> blocked;
  std::thread submitter([&] { blocked = Async(pool, [] {}); });
  clock.BlockUntilWaiters(1);
  pool.Shutdown(/*wait=*/false);
  submitter.join();
  EXPECT_THROW(blocked.Result(), StoppedError);
  gate.Notify();
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().completed, 2);
}

TEST(ThreadPoolExecutorTest, BreakingWakesABlockedSubmitter) {
  Watchdog watchdog(absl::Seconds(30), "a kBlock submitter while the initializer fails");
  FakeClock clock;
  absl::Notification fail;
  ThreadPoolExecutor pool({.max_workers = 1,
                           .initializer =
                               [&] {
                                 fail.WaitForNotification();
                                 throw std::runtime_error("late failure");
                               },
                           .max_queued = 1,
                           .clock = &clock});
  Future<void> first = Async(pool, [] {});   // Starts the thread (in its initializer).
  Future<void> second = Async(pool, [] {});  // Waits beyond it: the queue is full.
  Future<void> blocked;
  std::thread submitter([&] { blocked = Async(pool, [] {}); });
  clock.BlockUntilWaiters(1);  // The submitter (the thread is in its initializer, not the clock).
  fail.Notify();
  submitter.join();
  try {
    blocked.Result();
    ADD_FAILURE() << "the blocked submit succeeded on a broken executor";
  } catch (const StoppedError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "late failure")) << e.what();
  }
  EXPECT_THROW(first.Result(), BrokenPromiseError);
  EXPECT_THROW(second.Result(), BrokenPromiseError);
  pool.Shutdown();
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_TRUE(stats.broken);
  EXPECT_EQ(stats.blocked_submits, 1);
  EXPECT_EQ(stats.dropped, 2);
}

TEST(ThreadPoolExecutorTest, PoolTaskSubmittingToAFullQueueOverflowsInsteadOfDeadlocking) {
  Watchdog watchdog(absl::Seconds(30), "a pool task submitting to its full pool");
  ThreadPoolExecutor pool({.max_workers = 1, .max_queued = 1});
  std::atomic<int> ran{0};
  Future<void> parent = Async(pool, [&] {
    for (int i = 0; i < 3; ++i) {
      pool.Submit([&] { ran.fetch_add(1, std::memory_order_relaxed); });
    }
  });
  EXPECT_TRUE(parent.Status().ok());
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_EQ(pool.Stats().overflowed, 2);
  EXPECT_EQ(pool.Stats().blocked_submits, 0);
}

TEST(ThreadPoolExecutorTest, NonBlockingScopeSubmittingToAFullQueueOverflows) {
  Watchdog watchdog(absl::Seconds(30));
  ThreadPoolExecutor pool({.max_workers = 1, .max_queued = 1});
  absl::Notification gate;
  StartCounter counter;
  pool.Submit([&] {
    counter.Started();
    gate.WaitForNotification();
  });
  counter.AwaitStarted(1);
  {
    NonBlockingScope scope;
    for (int i = 0; i < 3; ++i) pool.Submit([] {});
  }
  EXPECT_EQ(pool.Stats().overflowed, 2);
  EXPECT_EQ(pool.Stats().queued, 3);
  gate.Notify();
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().completed, 4);
}

TEST(ThreadPoolExecutorTest, BlockingRegionInATaskAddsNoThread) {
  ThreadPoolExecutor pool(1);
  Future<bool> would = Async(pool, [] {
    BlockingRegion region;
    return BlockingRegion::WouldCompensate();
  });
  EXPECT_FALSE(would.Result());
  EXPECT_FALSE(Async(pool, [] { return BlockingRegion::WouldCompensate(); }).Result());
  pool.Shutdown();
  EXPECT_EQ(pool.Stats().threads_started, 1);
}

std::string ThreadName() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof(name));
  return name;
}

TEST(ThreadPoolExecutorTest, NamesItsThreads) {
  ThreadPoolExecutor pool(1);
  EXPECT_EQ(Async(pool, ThreadName).Result(), "concurry-io-1");
  ThreadPoolExecutor long_name({.max_workers = 1, .thread_name = "averyveryverylongname"});
  EXPECT_EQ(Async(long_name, ThreadName).Result(), "averyveryvery-1");
}

TEST(ThreadPoolExecutorTest, StatsDescribeAnIdleExecutor) {
  ThreadPoolExecutor pool(7);
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.max_workers, 7);
  EXPECT_EQ(stats.threads, 0);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ(stats.completed, 0);
  EXPECT_FALSE(stats.shut_down);
  EXPECT_FALSE(stats.broken);
}

TEST(ThreadPoolExecutorTest, DefaultsFollowPython) {
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  EXPECT_EQ(ThreadPoolExecutor::DefaultMaxWorkers(), std::min(32, cores + 4));
  ThreadPoolExecutor pool;
  EXPECT_EQ(pool.max_concurrency(), ThreadPoolExecutor::DefaultMaxWorkers());
  const ThreadPoolExecutorOptions options;
  EXPECT_EQ(options.keep_alive, absl::Seconds(60));
  EXPECT_EQ(options.max_queued, 0);
  EXPECT_EQ(options.thread_name, "concurry-io");
}

void ExpectInvalid(const ThreadPoolExecutorOptions& options, const std::string& needle) {
  try {
    ThreadPoolExecutor pool(options);
    ADD_FAILURE() << "accepted; expected an error with " << needle;
  } catch (const InvalidOptionError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), needle)) << e.what();
  }
}

TEST(ThreadPoolExecutorTest, RejectsBadOptionsNamingTheFieldAndValue) {
  ExpectInvalid({.max_workers = 0}, "max_workers must be between 1 and 4096, got 0");
  ExpectInvalid({.max_workers = 4097}, "max_workers must be between 1 and 4096, got 4097");
  EXPECT_THROW(ThreadPoolExecutor(-1), InvalidOptionError);
  ExpectInvalid({.keep_alive = absl::ZeroDuration()}, "keep_alive must be > 0");
  ExpectInvalid({.keep_alive = absl::Seconds(-1)}, "got -1s");
  ExpectInvalid({.max_queued = -3}, "max_queued must be >= 0 (0: unbounded), got -3");
  ExpectInvalid({.queue_full = static_cast<ThreadPoolQueueFull>(9)}, "queue_full");
}

TEST(ThreadPoolQueueFullTest, ParsesAndUnparses) {
  ThreadPoolQueueFull policy;
  std::string error;
  EXPECT_TRUE(AbslParseFlag("reject", &policy, &error));
  EXPECT_EQ(policy, ThreadPoolQueueFull::kReject);
  EXPECT_TRUE(AbslParseFlag("Block", &policy, &error));
  EXPECT_EQ(policy, ThreadPoolQueueFull::kBlock);
  EXPECT_FALSE(AbslParseFlag("drop", &policy, &error));
  EXPECT_TRUE(absl::StrContains(error, "'drop'")) << error;
  EXPECT_EQ(AbslUnparseFlag(ThreadPoolQueueFull::kReject), "reject");
  EXPECT_EQ(AbslUnparseFlag(ThreadPoolQueueFull::kBlock), "block");
}

TEST(ThreadPoolExecutorTest, TaskExceptionsReachTheFutureWithTheirType) {
  ThreadPoolExecutor pool(2);
  EXPECT_THROW(Async(pool, [] { throw std::out_of_range("x"); }).Result(), std::out_of_range);
  EXPECT_EQ(Async(pool, [] { return 1; }).Result(), 1);
}

TEST(ThreadPoolExecutorStressTest, HundredThousandTasksFromFourSubmitters) {
  Watchdog watchdog(absl::Seconds(50), "10^5 tasks");
  constexpr int kSubmitters = 4;
  constexpr int kPerSubmitter = 25000;
  std::atomic<int64_t> sum{0};
  ThreadPoolExecutor pool(8);
  std::vector<std::thread> submitters;
  for (int s = 0; s < kSubmitters; ++s) {
    submitters.emplace_back([&] {
      for (int i = 0; i < kPerSubmitter; ++i) {
        // relaxed: read after Shutdown joined the threads.
        pool.Submit([&sum, i] { sum.fetch_add(i, std::memory_order_relaxed); });
      }
    });
  }
  for (auto& t : submitters) t.join();
  pool.Shutdown();
  const int64_t expected = int64_t{kSubmitters} * kPerSubmitter * (kPerSubmitter - 1) / 2;
  EXPECT_EQ(sum.load(), expected);
  const ThreadPoolExecutorStats stats = pool.Stats();
  EXPECT_EQ(stats.completed, kSubmitters * kPerSubmitter);
  EXPECT_LE(stats.peak_threads, 8);
  EXPECT_EQ(stats.threads, 0);
}

}  // namespace
}  // namespace concurry

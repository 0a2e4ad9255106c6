// ThreadPoolExecutor: THE executor for blocking I/O (sockets, files, HTTP, database clients): a
// pool of plain OS threads, up to max_workers of them, created as work arrives and retired when
// idle, like Python's concurrent.futures.ThreadPoolExecutor (max_workers, initializer).
//
//   concurry::ThreadPoolExecutor pool({.max_workers = 16,
//                                      .initializer = [] { Connection::ThreadLocal().Open(); }});
//   concurry::Future<std::string> page = concurry::Async(pool, Fetch, url);
//   for (auto& item : concurry::Stream(pool, urls, Fetch, {.max_in_flight = 16})) { ... }
//
// Size it for the I/O (how many calls may wait at once), not for the cores. For CPU work use
// TbbExecutor (tbb_executor.h): one thread per core, nested tbb::parallel_for, and a thread added
// while a task blocks. This target does not link oneTBB.

#ifndef CONCURRY_FUTURES_THREAD_POOL_EXECUTOR_H_
#define CONCURRY_FUTURES_THREAD_POOL_EXECUTOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"

namespace concurry {

struct ThreadPoolExecutorOptions;
struct ThreadPoolExecutorStats;

// Runs submitted tasks in submission order (FIFO) on up to max_workers OS threads of its own.
//
// Threads are created lazily: a Submit starts a thread only when no thread is idle and fewer than
// max_workers are alive, so one task at a time needs one thread, and N tasks blocked at once get N
// threads (up to max_workers). A thread idle for keep_alive exits. Each new thread runs the
// options' initializer once before its first task (per-thread resources, in thread_locals).
//
// Blocking in a task is what this executor is for: a BlockingRegion (executor.h) in one of its
// tasks does nothing (no thread is added; the threads are sized for the I/O).
//
// Initializer failure: when the initializer throws, the executor becomes broken (like Python's
// BrokenThreadPool): the queued tasks are dropped, no task starts any more (running ones finish),
// its threads exit, and Submit throws StoppedError whose message includes the initializer's
// exception type and message. Stats().initializer_failures counts it. It never crashes or hangs.
//
// Dropped tasks (Shutdown with cancel_pending, a broken executor) are destroyed without running:
// the future of an `Async(pool, fn)` task then fails with BrokenPromiseError, so nobody waits
// forever for it.
//
// Bounded queue (max_queued > 0): a task that would leave more than max_queued tasks waiting for a
// thread (every thread busy and max_workers alive) makes Submit wait for room (kBlock) or throw
// CapacityError (kReject). A submitter that must not wait never does under kBlock: a task of this
// executor (whose wait could deadlock the pool on itself) and a thread inside a NonBlockingScope
// queue past the bound instead (Stats().overflowed counts them).
//
// Thread start failure: when a task needs a new thread and the system refuses one (std::thread
// throws std::system_error, or an allocation std::bad_alloc), Submit takes the task back and
// rethrows (an Async future holds the error): the task is never left queued for busy threads that
// might be waiting for it.
//
// Joining: an exiting thread joins the threads that exited before it, and Shutdown(wait) joins
// the rest; Submit never joins (it never waits for another thread's thread_local destructors).
//
// Shutdown(wait) stops accepting tasks (Submit throws StoppedError) and, with `wait`, returns once
// every thread has exited and been joined (its thread_local destructors have run), after running
// the queued tasks (or dropping them with cancel_pending).
// Called from one of the executor's own tasks (or threads: a thread_local destructor), it never
// waits (for itself or for the tasks, which might wait for the caller): the executor stops
// accepting and its threads finish in the background. The destructor is Shutdown(/*wait=*/true);
// destroying the executor from one of its own tasks is allowed and does not wait either (the
// threads keep what they need alive, except the clock: see ThreadPoolExecutorOptions::clock).
//
// Thread-safe.
class ThreadPoolExecutor final : public Executor {
 public:
  // The largest max_workers.
  static constexpr int kMaxWorkers = 4096;

  // DefaultMaxWorkers() threads, 60 s keep-alive, unbounded queue.
  ThreadPoolExecutor();
  // Up to `max_workers` threads (1 to kMaxWorkers), other options at their defaults.
  explicit ThreadPoolExecutor(int max_workers);
  // Throws InvalidOptionError naming the field, the value and the allowed range.
  explicit ThreadPoolExecutor(ThreadPoolExecutorOptions options);
  // Shutdown(/*wait=*/true); from one of its own tasks, without waiting.
  ~ThreadPoolExecutor() override;

  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

  // Queues `task`, starting a thread if none is idle and fewer than max_workers are alive. Throws
  // StoppedError after Shutdown or once broken (see above), CapacityError when the queue is full
  // under kReject, std::system_error (or std::bad_alloc) when the task needs a new thread and
  // none can be started (the task is then not queued), and InvalidOptionError for an empty task.
  // Under kBlock with the queue full, waits for room (woken by shutdown and by breaking).
  void Submit(Task task) override;

  // Returns max_workers.
  int max_concurrency() const override;

  // Stops accepting tasks. With `cancel_pending`, drops the queued tasks (their Async futures fail
  // with BrokenPromiseError); otherwise the threads run them first. With `wait`, returns once
  // every thread has exited and been joined, except when called from one of this executor's
  // tasks or threads, including a thread_local destructor on one (never waits).
  // Idempotent; concurrent calls are safe (a later call may still cancel pending tasks or wait).
  void Shutdown(bool wait = true, bool cancel_pending = false);

  // Returns a snapshot of the executor's threads and counters.
  ThreadPoolExecutorStats Stats() const;

  // Returns Python's default: min(32, hardware threads + 4).
  static int DefaultMaxWorkers();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // Shared with the threads (they may outlive this object).
};

// What a bounded ThreadPoolExecutor does with a task that does not fit (max_queued > 0).
enum class ThreadPoolQueueFull {
  // The submitter waits for room (except a pool task or a NonBlockingScope: see the class).
  kBlock,
  // Submit throws CapacityError at once.
  kReject,
};

// Options of a ThreadPoolExecutor. Plain struct: `{.max_workers = 16, .max_queued = 64}`.
struct ThreadPoolExecutorOptions {
  // Threads alive at most: 1 to ThreadPoolExecutor::kMaxWorkers.
  int max_workers = ThreadPoolExecutor::DefaultMaxWorkers();
  // How long an idle thread waits for a task before it exits: > 0; absl::InfiniteDuration() keeps
  // threads until shutdown.
  absl::Duration keep_alive = absl::Seconds(60);
  // Runs once on each new thread, before its first task (open a connection into a thread_local).
  // If it throws, the executor becomes broken (see ThreadPoolExecutor). Empty: nothing.
  std::function<void()> initializer;
  // Tasks allowed to wait for a thread beyond the busy ones: 0 means unbounded, else >= 1.
  int max_queued = 0;
  // What Submit does when max_queued tasks are waiting already.
  ThreadPoolQueueFull queue_full = ThreadPoolQueueFull::kBlock;
  // The threads' names (pthread, as top and gdb show them): this prefix, then "-<n>", cut to 15
  // characters. Empty: threads keep the process's name.
  std::string thread_name = "concurry-io";
  // The clock for keep_alive; null: Clock::Real(). Must outlive the executor's threads: the
  // executor itself, and when it is destroyed (or shut down) from one of its own tasks, which
  // does not wait, the threads that keep running after it (until its queued tasks are done).
  Clock* clock = nullptr;
};

// A snapshot of a ThreadPoolExecutor, for monitoring. The numbers may change as soon as they are
// read.
struct ThreadPoolExecutorStats {
  int max_workers = 0;
  // Threads alive now (running a task, idle, or starting); and the most ever alive at once.
  int threads = 0;
  int peak_threads = 0;
  // Threads alive and not running a task (idle or starting), and threads running one.
  int idle = 0;
  int running = 0;
  // Tasks submitted that have not started.
  int64_t queued = 0;
  // Tasks that ran to the end.
  int64_t completed = 0;
  // Threads started, and those that exited after keep_alive idle.
  int64_t threads_started = 0;
  int64_t threads_retired = 0;
  // Submits refused with CapacityError (kReject); submits that waited for room (kBlock); tasks
  // queued past max_queued (a pool task or a NonBlockingScope under kBlock).
  int64_t rejected = 0;
  int64_t blocked_submits = 0;
  int64_t overflowed = 0;
  // Tasks dropped without running (cancel_pending, broken executor).
  int64_t dropped = 0;
  // Initializer calls that threw (the first one breaks the executor).
  int64_t initializer_failures = 0;
  // Whether Shutdown was called, and whether an initializer failure broke the executor.
  bool shut_down = false;
  bool broken = false;
};

bool AbslParseFlag(absl::string_view text, ThreadPoolQueueFull* policy, std::string* error);
std::string AbslUnparseFlag(ThreadPoolQueueFull policy);

namespace futures_internal {
// FOR TESTS ONLY. Every ThreadPoolExecutor calls `hook` (when not null) just before starting a
// thread; if it throws, that start fails with its exception, as if std::thread had thrown.
// Process-wide; set it back to nullptr when done.
void SetThreadPoolStartHookForTesting(void (*hook)());
}  // namespace futures_internal

}  // namespace concurry

#endif  // CONCURRY_FUTURES_THREAD_POOL_EXECUTOR_H_

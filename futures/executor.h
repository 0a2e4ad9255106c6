// Executors: where tasks run. `Async(executor, fn, args...)` (future.h) submits to one and returns
// a Future.
//
//   concurry::Future<int> f = concurry::Async(concurry::InlineExecutor(), [] { return 6 * 7; });
//   concurry::TbbExecutor pool(/*max_concurrency=*/2);  // tbb_executor.h: CPU work
//   concurry::Future<int> g = concurry::Async(pool, [] { return 1; });
//   concurry::ThreadPoolExecutor io(16);  // thread_pool_executor.h: blocking I/O
//
// Which one for what: docs/executors.md.
// The interface is deliberately one method so test doubles (testkit::ManualExecutor) and the worker
// backends can implement it.

#ifndef CONCURRY_FUTURES_EXECUTOR_H_
#define CONCURRY_FUTURES_EXECUTOR_H_

#include "absl/functional/any_invocable.h"

namespace concurry {
namespace futures_internal {
class BlockingObserver;
}  // namespace futures_internal

// Runs submitted tasks. Implementations are thread-safe.
class Executor {
 public:
  using Task = absl::AnyInvocable<void()>;

  virtual ~Executor() = default;

  // Schedules `task` to run once. Implementations that have shut down throw StoppedError.
  // A task must not throw; Async() wraps user code so that it never does.
  virtual void Submit(Task task) = 0;

  // How many submitted tasks can run at the same time: the executor's threads (or workers). 0
  // means the executor cannot say (InlineExecutor runs each task on its submitter's thread; a
  // test executor runs them when the test says). Bounded loops (Stream, Map) compare it with
  // their max_in_flight to report the concurrency they really get.
  virtual int max_concurrency() const { return 0; }

  // Whether any of its tasks may equally run on any thread, the caller's included: the threads
  // hold no per-thread state the tasks rely on (no initializer, no actor), and tasks have no
  // order or exclusion among them. Then a bounded loop (Stream) may run several inputs in one
  // task and let its waiting consumer run an input itself. False (the default) for executors that
  // serialise tasks, give them a thread of their own or set up their threads; TbbExecutor (CPU
  // work) says true. Override only when every one of these holds.
  virtual bool tasks_may_run_on_any_thread() const { return false; }
};

// Returns an executor that runs each task immediately on the submitting thread. Thread-safe.
Executor& InlineExecutor();

// Marks the calling thread, while alive, as one that must not block when it submits work: a
// timer or event thread whose stall would delay everything else it serves. Bounded executors
// honour it by queueing (or failing) instead of waiting for room: concurry's workers defer such
// calls under QueueFullPolicy::kBlock. Timer callbacks run inside one. Scopes nest. Not copyable.
class NonBlockingScope {
 public:
  NonBlockingScope();
  ~NonBlockingScope();
  NonBlockingScope(const NonBlockingScope&) = delete;
  NonBlockingScope& operator=(const NonBlockingScope&) = delete;

  // Whether a scope is alive on the calling thread.
  static bool Active();

 private:
  bool outer_;
};

// Marks the calling thread, while alive, as blocked on something other than the CPU: a socket, a
// sleep, a lock held by another task. When the thread runs a task of an executor with a fixed
// number of threads that compensates (TbbExecutor, and so tbb-mode workers), the executor adds a
// thread for the region's lifetime, so its other tasks keep running; N tasks blocked at once
// never starve the rest. Elsewhere it does nothing and costs a thread-local read.
//
//   std::string Fetcher::Get(const std::string& url) {
//     concurry::BlockingRegion blocking;  // a tbb-mode worker's oneTBB thread is not lost
//     return http_.Get(url);
//   }
//
// Every wait the library performs becomes such a region once it has lasted Clock::kBlockingGrace
// (50 us; shorter waits, such as a call to another worker, add no thread): Future::Result / Wait,
// Wait, Gather, AsCompleted, LimitSet and RateLimiter acquisition, retry back-off, synchronous
// worker creation and Stop. A region declared in user code counts at once. Regions nest (only the
// outermost counts). Not copyable; confine to one scope.
class BlockingRegion {
 public:
  BlockingRegion() noexcept;
  ~BlockingRegion();
  BlockingRegion(const BlockingRegion&) = delete;
  BlockingRegion& operator=(const BlockingRegion&) = delete;

  // Whether a region begun now on the calling thread would make an executor add a thread (the
  // thread runs a task of a compensating executor and is not in a region yet).
  static bool WouldCompensate() noexcept;

 private:
  futures_internal::BlockingObserver* observer_;
};

// Runs `task` for an executor (named `executor` in the report). A task must not throw; one that
// does is contained: its exception is printed to stderr instead of escaping into the executor
// (where it could cancel other tasks or terminate the process).
void RunExecutorTask(Executor::Task& task, const char* executor) noexcept;

}  // namespace concurry

#endif  // CONCURRY_FUTURES_EXECUTOR_H_

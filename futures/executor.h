// Executors: where tasks run. `Async(executor, fn, args...)` (future.h) submits to one and returns
// a Future.
//
//   concurry::Future<int> f = concurry::Async(concurry::InlineExecutor(), [] { return 6 * 7; });
//   concurry::TbbExecutor pool(/*max_concurrency=*/2);  // tbb_executor.h
//   concurry::Future<int> g = concurry::Async(pool, [] { return 1; });
//
// The interface is deliberately one method so test doubles (testing::ManualExecutor) and the worker
// backends can implement it.

#ifndef CONCURRY_FUTURES_EXECUTOR_H_
#define CONCURRY_FUTURES_EXECUTOR_H_

#include "absl/functional/any_invocable.h"

namespace concurry {

// Runs submitted tasks. Implementations are thread-safe.
class Executor {
 public:
  using Task = absl::AnyInvocable<void()>;

  virtual ~Executor() = default;

  // Schedules `task` to run once. Implementations that have shut down throw StoppedError.
  // A task must not throw; Async() wraps user code so that it never does.
  virtual void Submit(Task task) = 0;
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

// Runs `task` for an executor (named `executor` in the report). A task must not throw; one that
// does is contained: its exception is printed to stderr instead of escaping into the executor
// (where it could cancel other tasks or terminate the process).
void RunExecutorTask(Executor::Task& task, const char* executor) noexcept;

}  // namespace concurry

#endif  // CONCURRY_FUTURES_EXECUTOR_H_

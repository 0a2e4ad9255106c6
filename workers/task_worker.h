// TaskWorker: a worker for arbitrary callables (concurry's TaskWorker and Executor), also usable as
// a concurry::Executor; Task: a function bound to its own worker (concurry's @task). Calls return
// futures at once and take the same arguments as Worker<T> calls (futures among them are replaced
// by their values). One worker runs its calls one at a time in FIFO order; concurrency comes from
// a pool (max_workers, on_demand) or from an executor that runs several tasks at once.
//
//   concurry::TaskWorker w = concurry::TaskWorker::Create({.mode = concurry::Mode::kThread});
//   concurry::Future<int> f = w.Submit([](int a, int b) { return a + b; }, 1, 2);
//   // 8 fetches at once: a pool of 8 workers (one worker would run them one by one).
//   auto io = concurry::TaskWorker::Create({.mode = concurry::Mode::kThread, .max_workers = 8});
//   for (auto& item : io.Map({.max_in_flight = 8}, Fetch, urls)) Save(item.value());
//   auto square = concurry::MakeTask([](int x) { return x * x; });
//   int nine = square(3).Result();
//   concurry::Async(w, [] { return 42; });  // TaskWorker is an Executor

#ifndef CONCURRY_WORKERS_TASK_WORKER_H_
#define CONCURRY_WORKERS_TASK_WORKER_H_

#include <exception>
#include <memory>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "sync/progress.h"
#include "sync/stream.h"
#include "workers/internal/task_worker_impl.h"
#include "workers/internal/worker_impl.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace concurry {

namespace workers_internal {
struct TaskWorkerAccess;
}  // namespace workers_internal

// Options of TaskWorker::Map and Task::Map. Plain struct: `{.max_in_flight = 8}`.
struct MapOptions {
  // Items dispatched to the worker and not finished at any time, in [1, 1048576]. Inputs are
  // pulled only as items finish and are yielded, so an infinite input works. It bounds the items
  // in flight, not the calls running: those are at most the worker's max_concurrency() (1 for
  // one worker, which queues the others; a pool's size; see TaskWorker). The returned stream's
  // effective_concurrency() is the smaller of the two.
  int max_in_flight = 64;
  // Per item, >= 0: an item not finished before `dispatch + timeout` on `clock` fails with
  // TimeoutError, which the loop sees at once; the call is first dropped from the worker's queue
  // if it has not started (a running call runs on, its result ignored, unless it returns early
  // on this_call::CancelRequested(), workers/this_call.h). Dispatch is when the map
  // submits the item to the worker. In kSync mode the item runs in the dispatching thread, so
  // its TimeoutError is seen when it returns.
  absl::Duration timeout = absl::InfiniteDuration();
  // kStopOnError: the first failed item ends the map (the loop rethrows its exception, with its
  // original type, when it reaches it) and the queued items are dropped. kCollect: failed items
  // are yielded (item.ok() == false) and the map goes on.
  ErrorPolicy on_error = ErrorPolicy::kStopOnError;
  // Progress over the yielded items; the default description is "Mapping".
  ProgressOptions progress = {};
  // Times the per-item timeout and the progress report; null means Clock::Real(). Must outlive
  // the map.
  Clock* clock = nullptr;
};

template <typename F>
class Task;

// A handle to one worker that runs arbitrary callables, one at a time in FIFO order, in the mode
// of its WorkerOptions (kSync, kThread or kTbb; see below for kLoopback and kProcess). With
// max_workers > 1 or on_demand it is a pool of such workers (docs/pools.md):
// tasks then run up to max_workers at a time, each handed to the next free worker from one FIFO
// queue (or bound to a worker at submission when load_balancing is set); Map spreads its items
// over the workers.
//
// Where concurrency comes from. One worker runs one call at a time, so a Map over one worker runs
// its items one by one whatever max_in_flight says. To run N at once, make a pool
// (.max_workers = N, or .on_demand = true), or give a kTbb worker an executor that runs several
// tasks at once: `Create({.mode = Mode::kTbb, .executor = &io})`, where io.max_concurrency() > 1,
// and neither max_workers nor on_demand is set in the options (nor a pool by ScopedWorkerDefaults:
// a scoped max_workers above 1), makes an on-demand pool of up to io.max_concurrency() workers
// (capped at kMaxPoolWorkers) on io: Submit and Map then run up to that many calls at once, taken
// from one FIFO queue. `.max_workers = 1` in the options keeps one serial worker on io (a scoped
// default of 1 cannot be told from the built-in one, so it does not). (Worker<T> keeps its one
// stateful worker with an executor.) max_concurrency() says how many calls can run at once.
//
// Submit(fn, args...) returns Future<R>, R being fn's result with Future<U>, absl::Status and
// absl::StatusOr<U> flattened (U, void, U). Arguments are decay-copied; Future arguments (also
// inside vectors, maps, tuples, pairs and optionals) are replaced by their values before fn runs,
// without blocking the caller, exactly as for Worker<T>::Call. fn's exception reaches the future
// with its original type. A non-callable fn, or arguments fn does not accept, do not compile: an
// overload made for them fails with one static_assert saying which (in a requires-expression or
// decltype such a call has type workers_internal::CallRejected; Map and Task do the same).
// Calls honour the worker's max_queued_tasks (concurry's TaskWorker bypassed it).
//
// As an Executor. `Submit(Executor::Task)` (the virtual, reached through an `Executor&`, e.g. by
// Async(executor, fn) or Future::Then(executor, fn)) posts the task to the same queue and throws
// StoppedError once the worker is stopped. Overloads: on a TaskWorker, `w.Submit(lambda)` is the
// template and returns a future (`w.Submit([] {})` is a Future<void>); only an argument that is
// already an Executor::Task selects the virtual (which returns void) on a non-const TaskWorker.
//
// Map(fn, inputs...) applies fn to the elements of one or more input ranges (several inputs are
// zipped, the shortest wins) on the worker and returns a ResultStream (sync/stream.h) whose
// range-for yields StreamItem<R> in input order: item.index, item.value(). See MapOptions. Inputs
// are pulled lazily, at most max_in_flight items are in flight, an lvalue input must outlive the
// stream (an rvalue one is moved into it). Leaving the loop early (or destroying the stream) drops
// the queued items and waits for the one running fn, so fn may capture locals by reference. Do
// not iterate a Map from inside one of the same worker's calls: the items queue behind it.
//
// Modes that send calls as bytes (kLoopback, kProcess). A closure cannot leave the process, so
// there the worker runs only free functions registered with CONCURRY_REGISTER_FUNCTION
// (workers/registration.h): Submit(&app::Fn, args...), Map(&app::Fn, inputs...), a Task of
// &app::Fn and Stream(worker, inputs, &app::Fn) send each call by the function's registered name,
// arguments encoded as its parameter types. A lambda, function object, std::function or
// unregistered function fails with InvalidOptionError saying so (Submit and Task calls return a
// failed future, as Worker<T>::Call does for an unregistered method; Map and Stream throw at
// once), and so does the Executor side (Submit(Executor::Task) throws; Async returns a failed
// future).
//
// Lifecycle as Worker<T>: Stop(timeout) rejects later calls (StoppedError), cancels queued calls,
// lets the running call finish and waits up to `timeout` for it; copies share the worker and the
// last copy stops it.
//
// Thread-safe: any number of threads may submit, map, copy and stop one worker.
class TaskWorker : public Executor {
 public:
  // An empty handle; every operation on it throws InvalidOptionError.
  TaskWorker() = default;

  // Starts a worker. Throws InvalidOptionError for blocking = true, and the options
  // ResolveWorkerOptions rejects.
  static TaskWorker Create(WorkerOptions options = {});

  // Runs `fn(args...)` on the worker. See the class comment.
  template <typename F, typename... A>
  requires workers_internal::TaskCallable<F, A...>
  auto Submit(F&& fn, A&&... args) const {
    const auto& core = Core("TaskWorker::Submit");
    using Local = decltype(workers_internal::SubmitCall<workers_internal::TaskHost>(
        core, workers_internal::FnInvoker<std::decay_t<F>>{std::forward<F>(fn)},
        std::forward<A>(args)...));
    if (core->encodes_calls()) {
      return workers_internal::SubmitEncoded<Local, std::decay_t<F>>(core, fn, "TaskWorker::Submit",
                                                                     std::forward<A>(args)...);
    }
    return workers_internal::SubmitCall<workers_internal::TaskHost>(
        core, workers_internal::FnInvoker<std::decay_t<F>>{std::forward<F>(fn)},
        std::forward<A>(args)...);
  }
  // The same on a non-const handle (so that a lambda does not convert to Executor::Task).
  template <typename F, typename... A>
  requires workers_internal::TaskCallable<F, A...>
  auto Submit(F&& fn, A&&... args) {
    return std::as_const(*this).Submit(std::forward<F>(fn), std::forward<A>(args)...);
  }
  // Misuse (fn not callable with args): fails to compile with a message.
  template <typename F, typename... A>
  requires(!workers_internal::TaskCallable<F, A...>) workers_internal::CallRejected
      Submit(F&& /*fn*/, A&&... /*args*/)
  const { return workers_internal::RejectSubmit<F, A...>(); }
  // Executor: runs `task` on the worker. Throws StoppedError once the worker is stopped (a task
  // still queued when it stops is destroyed without running), InvalidOptionError for an empty
  // task or a worker whose calls cross a byte boundary (kLoopback, kProcess). A task that throws
  // has its exception printed to stderr (tasks must not throw). Like any call it counts against
  // max_queued_tasks, so under QueueFullPolicy::kBlock it may block.
  void Submit(Task task) override;

  // Applies `fn` to the inputs on the worker; see the class comment and MapOptions. Throws
  // InvalidOptionError for bad options.
  template <typename F, typename... Inputs>
  requires std::is_constructible_v<std::decay_t<F>, F> &&
      workers_internal::MapCallable<std::decay_t<F>, Inputs...>
  auto Map(F&& fn, Inputs&&... inputs) const {
    return Map(MapOptions{}, std::forward<F>(fn), std::forward<Inputs>(inputs)...);
  }
  template <typename F, typename... Inputs>
  requires std::is_constructible_v<std::decay_t<F>, F> &&
      workers_internal::MapCallable<std::decay_t<F>, Inputs...>
  auto Map(MapOptions options, F&& fn, Inputs&&... inputs) const {
    return MapShared(std::make_shared<std::decay_t<F>>(std::forward<F>(fn)), std::move(options),
                     "TaskWorker::Map", std::forward<Inputs>(inputs)...);
  }
  // Misuse (a non-callable fn, no input, a non-range input, elements fn does not take): fails to
  // compile with a message.
  template <typename F, typename... Inputs>
  requires(!std::is_same_v<std::remove_cvref_t<F>, MapOptions> &&
           !(std::is_constructible_v<std::decay_t<F>, F> &&
             workers_internal::MapCallable<std::decay_t<F>, Inputs...>))
      workers_internal::CallRejected Map(F&& /*fn*/, Inputs&&... /*inputs*/)
  const { return workers_internal::RejectMap<F, Inputs...>(); }
  template <typename F, typename... Inputs>
  requires(!(std::is_constructible_v<std::decay_t<F>, F> &&
             workers_internal::MapCallable<std::decay_t<F>, Inputs...>))
      workers_internal::CallRejected Map(MapOptions /*options*/, F&& /*fn*/, Inputs&&... /*inputs*/)
  const { return workers_internal::RejectMap<F, Inputs...>(); }

  // Stops the worker (see the class comment); waits up to `timeout`, by default the worker's
  // stop_timeout, and returns whether it finished. Throws InvalidOptionError for a negative
  // timeout.
  bool Stop(absl::Duration timeout) const;
  bool Stop() const;
  // Returns whether Stop was called.
  bool stopped() const;
  // Returns a snapshot of the worker's queues.
  WorkerStats Stats() const;
  // Completes when the worker has fully stopped.
  Future<void> StoppedFuture() const;
  // Returns the options after defaults were applied.
  const ResolvedWorkerOptions& options() const;
  // Executor: how many calls can run at once. 1 for one worker; for a pool its max_workers (or
  // on-demand cap), min'd with the executor's max_concurrency() when the workers run on a
  // WorkerOptions::executor that knows it. 0 for an empty handle.
  int max_concurrency() const override;
  bool valid() const noexcept { return worker_.valid(); }
  // Pools (max_workers > 1 or on_demand): see Worker<T>.
  bool is_pool() const { return worker_.is_pool(); }
  PoolStats GetPoolStats() const { return worker_.GetPoolStats(); }
  PoolWorkerStats GetWorkerStats(int index) const { return worker_.GetWorkerStats(index); }

 private:
  template <typename>
  friend class ::concurry::Task;
  friend struct workers_internal::TaskWorkerAccess;

  const std::shared_ptr<workers_internal::ActorCore>& Core(const char* api) const;
  // Validates `options` (InvalidOptionError naming `api`) and converts them.
  static StreamOptions ToStreamOptions(MapOptions options, const char* api);

  template <typename F, typename... Inputs>
  auto MapShared(std::shared_ptr<F> fn, MapOptions options, const char* api,
                 Inputs&&... inputs) const {
    const auto& core = Core(api);
    // In the modes that encode calls, the items go by the function's registered name.
    absl::string_view encoded_name;
    if (core->encodes_calls())
      encoded_name = workers_internal::SendableNameOrThrow(*fn, *core, api);
    const absl::Duration timeout = options.timeout;
    StreamOptions stream_options = ToStreamOptions(std::move(options), api);
    return workers_internal::MapOn(core, std::move(fn), encoded_name, std::move(stream_options),
                                   timeout, std::forward<Inputs>(inputs)...);
  }

  Worker<workers_internal::TaskHost> worker_;
};

namespace workers_internal {
// What Stream over a TaskWorker needs of it.
struct TaskWorkerAccess {
  static const std::shared_ptr<ActorCore>& Core(const TaskWorker& worker, const char* api) {
    return worker.Core(api);
  }
};
}  // namespace workers_internal

// Stream (sync/stream.h) over a TaskWorker, as over any Executor. In the modes that send calls as
// bytes (kLoopback, kProcess), where a closure cannot be sent, each input goes to the worker as a
// call of `fn` by its registered name instead, so `fn` must be a function registered with
// CONCURRY_REGISTER_FUNCTION (passed as a pointer or by name): anything else throws
// InvalidOptionError at once, as Map does. A function taking a StreamContext cannot be sent.
template <sync_internal::StreamInputRange Range, typename F>
ResultStream<std::ranges::range_value_t<Range>, StreamResultT<F, std::ranges::range_value_t<Range>>>
Stream(TaskWorker& worker, Range&& inputs, F&& fn, StreamOptions options = {}) {
  using In = std::ranges::range_value_t<Range>;
  using Fn = std::decay_t<F>;
  Executor& executor = worker;
  const auto& core = workers_internal::TaskWorkerAccess::Core(worker, "concurry::Stream");
  if (!core->encodes_calls()) {
    return Stream(executor, std::forward<Range>(inputs), std::forward<F>(fn), std::move(options));
  }
  if constexpr (!workers_internal::kSendableFunction<Fn>) {
    std::rethrow_exception(workers_internal::UnsendableCallableError(
        "concurry::Stream", core->options(), workers_internal::FunctionTraits<Fn>::kIsFunction));
  } else {
    const absl::string_view name =
        workers_internal::SendableNameOrThrow(Fn(fn), *core, "concurry::Stream");
    // Each task submits its input to the worker and returns the call's future, which the stream
    // waits for; the stream itself runs inline.
    auto submit = [core, invoker = workers_internal::EncodedFnInvoker<Fn>{fn, name}](In input) {
      return workers_internal::SubmitCall<workers_internal::TaskHost>(core, invoker,
                                                                      std::move(input));
    };
    static_assert(std::is_same_v<StreamResultT<decltype(submit), In>, StreamResultT<F, In>>,
                  "concurry::Stream: an encoded call's result type differs from a local call's");
    return sync_internal::StreamOn(InlineExecutor(), std::forward<Range>(inputs), std::move(submit),
                                   std::move(options), sync_internal::ExecutorRunner(worker));
  }
}

// A function bound to a TaskWorker (concurry's @task): `task(args...)` and `task.Submit(args...)`
// submit the bound function, `task.Map(inputs...)` maps it. The bound function is always the
// function: a callable argument is passed to it as data. Made by MakeTask, or from an existing
// worker (several tasks may share one). Copies share the function and the worker. One worker
// calls the function one call at a time (so a mutable function object needs no lock of its own);
// a pool's workers, or a worker on an executor that runs several tasks at once (see TaskWorker),
// call it concurrently, up to worker().max_concurrency() calls at once: its state then needs a
// lock of its own. Arguments the function does not take do not compile (one static_assert).
//
// Thread-safe: any number of threads may call, map, copy and stop one task.
template <typename F>
class Task {
  static_assert(std::is_same_v<F, std::decay_t<F>>, "Task<F>: F must be a decayed type");
  static_assert(workers_internal::kLooksCallable<F>,
                "Task / MakeTask: the function must be callable (a function, a lambda or a "
                "function object)");

 public:
  // Binds `fn` to `worker`. Throws InvalidOptionError for an empty worker.
  Task(F fn, TaskWorker worker)
      : fn_(std::make_shared<F>(std::move(fn))), worker_(std::move(worker)) {
    worker_.Core("Task");
  }

  // Submits the bound function with `args` (see TaskWorker::Submit).
  template <typename... A>
  requires workers_internal::kCallable<workers_internal::TaskHost,
                                       workers_internal::SharedFnInvoker<F>, A...>
  auto operator()(A&&... args) const { return Submit(std::forward<A>(args)...); }
  template <typename... A>
  requires workers_internal::kCallable<workers_internal::TaskHost,
                                       workers_internal::SharedFnInvoker<F>, A...>
  auto Submit(A&&... args) const {
    const auto& core = worker_.Core("Task::Submit");
    using Local = decltype(workers_internal::SubmitCall<workers_internal::TaskHost>(
        core, workers_internal::SharedFnInvoker<F>{fn_}, std::forward<A>(args)...));
    if (core->encodes_calls()) {
      return workers_internal::SubmitEncoded<Local, F>(core, *fn_, "Task::Submit",
                                                       std::forward<A>(args)...);
    }
    return workers_internal::SubmitCall<workers_internal::TaskHost>(
        core, workers_internal::SharedFnInvoker<F>{fn_}, std::forward<A>(args)...);
  }
  // Misuse (arguments the function does not take): fails to compile with a message.
  template <typename... A>
  requires(!workers_internal::kCallable<workers_internal::TaskHost,
                                        workers_internal::SharedFnInvoker<F>, A...>)
      workers_internal::CallRejected
      operator()(A&&... /*args*/) const {
    return workers_internal::RejectTaskCall<F, A...>();
  }
  template <typename... A>
  requires(!workers_internal::kCallable<workers_internal::TaskHost,
                                        workers_internal::SharedFnInvoker<F>, A...>)
      workers_internal::CallRejected Submit(A&&... /*args*/)
  const { return workers_internal::RejectTaskCall<F, A...>(); }

  // Maps the bound function over the inputs (see TaskWorker::Map).
  template <typename... Inputs>
  requires workers_internal::MapCallable<F, Inputs...>
  auto Map(Inputs&&... inputs) const {
    return worker_.MapShared(fn_, MapOptions{}, "Task::Map", std::forward<Inputs>(inputs)...);
  }
  template <typename... Inputs>
  requires workers_internal::MapCallable<F, Inputs...>
  auto Map(MapOptions options, Inputs&&... inputs) const {
    return worker_.MapShared(fn_, std::move(options), "Task::Map", std::forward<Inputs>(inputs)...);
  }
  // Misuse (no input, a non-range input, elements the function does not take): fails to compile
  // with a message.
  template <typename... Inputs>
  requires(
      !workers_internal::MapCallable<F, Inputs...> &&
      (sizeof...(Inputs) == 0 ||
       !std::is_same_v<std::remove_cvref_t<std::tuple_element_t<0, std::tuple<Inputs..., int>>>,
                       MapOptions>)) workers_internal::CallRejected Map(Inputs&&... /*inputs*/)
  const { return workers_internal::RejectTaskMap<F, Inputs...>(); }
  template <typename... Inputs>
  requires(!workers_internal::MapCallable<F, Inputs...>) workers_internal::CallRejected
      Map(MapOptions /*options*/, Inputs&&... /*inputs*/)
  const { return workers_internal::RejectTaskMap<F, Inputs...>(); }

  // Stops the worker (see TaskWorker::Stop).
  bool Stop(absl::Duration timeout) const { return worker_.Stop(timeout); }
  bool Stop() const { return worker_.Stop(); }
  bool stopped() const { return worker_.stopped(); }

  // Returns the worker the function runs on.
  const TaskWorker& worker() const { return worker_; }

 private:
  std::shared_ptr<F> fn_;
  TaskWorker worker_;
};

// Returns `fn` bound to a new TaskWorker created with `options` (concurry's @task).
template <typename F>
requires std::is_constructible_v<std::decay_t<F>, F> Task<std::decay_t<F>> MakeTask(
    F&& fn, WorkerOptions options = {}) {
  return Task<std::decay_t<F>>(std::forward<F>(fn), TaskWorker::Create(std::move(options)));
}

// Returns a new TaskWorker (concurry's Executor(mode=...)): submit, map and stop, and a
// concurry::Executor for Async and Then. Same as TaskWorker::Create.
TaskWorker MakeExecutor(WorkerOptions options = {});

}  // namespace concurry

#endif  // CONCURRY_WORKERS_TASK_WORKER_H_

// Worker<T>: any C++ class as a stateful worker (an actor). Its constructor and methods run in the
// worker's own context, one call at a time in FIFO order; calls return futures at once. The mode
// (WorkerOptions::mode) picks the context and is the only thing to change to move a worker.
//
//   class Counter {
//    public:
//     explicit Counter(int start) : n_(start) {}
//     int Add(int k) { return n_ += k; }
//    private:
//     int n_;
//   };
//   auto w = concurry::Worker<Counter>::Create({.mode = concurry::Mode::kThread}, 10);
//   concurry::Future<int> f = w.Call(&Counter::Add, 5);
//   int n = f.Result();                                   // 15
//   w.Call(&Counter::Add, w.Call(&Counter::Add, 1));      // dataflow: runs when the input is ready
//   w.Stop();                                             // or let the last handle go
//
// BlockingWorker<T> is the same worker with calls that return values (concurry's blocking=True).

#ifndef CONCURRY_WORKERS_WORKER_H_
#define CONCURRY_WORKERS_WORKER_H_

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "pools/internal/pool_core.h"
#include "pools/pool_stats.h"
#include "workers/backend.h"
#include "workers/internal/worker_impl.h"
#include "workers/options.h"
#include "workers/registration.h"

namespace concurry {

namespace workers_internal {
// The pool behind a handle's core, or null for a single worker.
inline PoolCore* AsPool(const std::shared_ptr<ActorCore>& core) {
  return dynamic_cast<PoolCore*>(core.get());
}
// The pool behind `core`; throws InvalidOptionError naming `operation` for a single worker.
PoolCore& PoolOf(const std::shared_ptr<ActorCore>& core, const char* operation);
}  // namespace workers_internal

template <typename T>
class BlockingWorker;
class TaskWorker;

// Inside a worker's constructor, methods and TaskWorker tasks: the worker's limits
// (WorkerOptions::limits) as a LimitPool, a no-op one for a worker without limits. No base class
// or extra parameter is needed:
//
//   int Client::Ask(std::string prompt) {
//     concurry::LimitAcquisition acquired =
//         concurry::CurrentWorkerLimits().Acquire({{"tokens", 500}});
//     int used = model_.Ask(prompt);
//     acquired.Update({{"tokens", used}});
//     return used;
//   }  // Released at scope exit, also when the method throws.
//
// Throws InvalidOptionError when called outside a worker's call. The pool is a cheap handle that
// stays valid after the call (for a coroutine that keeps it across a suspension).
LimitPool CurrentWorkerLimits();

template <typename T>
class Worker;

// Inside a Worker<T>'s constructor and methods: a handle to that worker that does not keep it
// running. Use it for a worker that calls itself later or hands itself to others (a callback, a
// registry): a worker that stored a handle from Create (an owning one) inside its own T would keep
// itself alive, and never stop once every outside handle is gone. Calls through this handle work
// like any other; once the worker stops they fail with StoppedError. Do not wait for the result of
// such a call inside the worker: it is queued behind the running call (Result() throws
// DeadlockError).
//
//   void Crawler::Visit(std::string url) {
//     for (std::string& link : Fetch(url)) {
//       concurry::CurrentWorker<Crawler>().Call(&Crawler::Visit, std::move(link));
//     }
//   }
//
// Throws InvalidOptionError outside a worker's call, or when the worker does not run a T.
template <typename T>
Worker<T> CurrentWorker();

// A handle to one worker running a T.
//
// Creation: Create(options, args...) builds the T from `args` (decayed copies) inside the worker
// and returns once it exists; if the constructor throws, Create throws that exception (original
// type) and nothing keeps running. A single tbb-mode worker on the shared arena (not a pool, not
// one with `.executor`) has no thread of its own, so Create builds its T on the calling thread, in
// the worker's context: CurrentWorker and the worker's limits work there, calls the constructor
// makes to its own worker run after it, and the rest of the thread's state (its thread_locals,
// this_call of a worker call that creates it) is the caller's. CreateAsync returns a future of the
// handle instead; it completes in the worker's context, so a continuation attached to it with Then
// runs there and must not wait for the worker's own calls.
//
// Calls: Call(&T::Method, args...) returns Future<R>, where R is the method's result with
// Future<U>, absl::Status and absl::StatusOr<U> flattened (U, void, U). Const and non-const
// methods, methods of T's bases, overloads (select one with static_cast), void results,
// move-only arguments and results all work; argument types are checked at compile time.
// Arguments are copied or moved into the call. A Future argument, also inside std::vector,
// std::map / absl::flat_hash_map values, std::tuple, std::pair and std::optional, is replaced by
// its value before the method runs: the call is dispatched when the inputs are done, without
// blocking the caller; if one failed, the call fails with that input's exception and the method
// does not run; if one was cancelled, the call is cancelled (unwrap_futures = false passes futures
// through). A method's exception reaches the
// future with its original type.
//
// Lifecycle: Stop(timeout) stops accepting calls (later calls fail with StoppedError), cancels the
// calls still queued or deferred (their futures report cancelled), lets the running call finish,
// then destroys the T in the worker's context. It waits up to `timeout` for that and returns
// whether it finished; a call still running past the timeout finishes in the background. Stop is
// idempotent; from inside one of the worker's own calls, or from a callback of a call its Stop is
// cancelling, it does not wait. Once StoppedFuture() is done, every accepted call is done.
//
// Bounded submission (max_queued_tasks, queue_full): see WorkerOptions. Calls made from inside a
// worker's context, and calls dispatched when their input futures complete, are deferred rather
// than blocked, so the kBlock bound is strict for calls from other threads only.
//
// Copies of a handle share the worker; the last copy's destructor calls Stop(stop_timeout), or
// Stop(0) when it runs inside a worker's call (the worker still stops, in the background).
// Thread-safe: any number of threads may call, copy and stop one worker.
template <typename T>
class Worker {
 public:
  // An empty handle; every operation on it throws InvalidOptionError.
  Worker() = default;

  template <typename... Args>
  static Worker Create(WorkerOptions options, Args&&... args) {
    return CreateResolvedAndWait(CheckNotBlocking(ResolveWorkerOptions(options)),
                                 std::forward<Args>(args)...);
  }

  template <typename... Args>
  static Future<Worker> CreateAsync(WorkerOptions options, Args&&... args) {
    return CreateResolved(CheckNotBlocking(ResolveWorkerOptions(options)),
                          std::forward<Args>(args)...);
  }

  // Calls `method` on the worker's T with `args`. See the class comment.
  // A method of another class, or arguments the method does not accept, do not compile: the
  // overload below fails with one static_assert saying which. (In a requires-expression or
  // decltype such a call has type workers_internal::CallRejected.)
  template <typename M, typename... Args>
  requires std::is_member_function_pointer_v<M> &&
      workers_internal::kCallable<T, workers_internal::MethodInvoker<M>, Args...>
  auto Call(M method, Args&&... args) const {
    const auto& core = Checked("Call");
    if constexpr (kIsRegisteredWorker<T>) {
      if (core->encodes_calls()) {
        const std::optional<absl::string_view> name = workers_internal::MethodName<T>(method);
        if (!name.has_value()) {
          using R = decltype(workers_internal::SubmitCall<T>(
              core, workers_internal::MethodInvoker<M>{method}, std::forward<Args>(args)...));
          return R(MakeFailedFuture<typename R::value_type>(
              InvalidOptionError(std::string("Worker::Call: the method is not registered for ") +
                                 std::string(workers_internal::WorkerName<T>()) +
                                 ", so a worker whose calls cross a byte boundary (mode " +
                                 AbslUnparseFlag(core->options().mode) +
                                 ") cannot call it; add it to CONCURRY_REGISTER_WORKER")));
        }
        return workers_internal::SubmitCall<T>(
            core, workers_internal::EncodedInvoker<T, M>{method, *name},
            std::forward<Args>(args)...);
      }
    }
    return workers_internal::SubmitCall<T>(core, workers_internal::MethodInvoker<M>{method},
                                           std::forward<Args>(args)...);
  }
  // Misuse: fails to compile with a message (see above).
  template <typename M, typename... Args>
  requires(!(std::is_member_function_pointer_v<M> &&
             workers_internal::kCallable<T, workers_internal::MethodInvoker<M>, Args...>))
      workers_internal::CallRejected Call(M /*method*/, Args&&... /*args*/)
  const { return workers_internal::RejectMethodCall<T, M, Args...>(); }

  // Stops the worker (see the class comment); waits up to `timeout`, by default the worker's
  // stop_timeout. Throws InvalidOptionError for a negative timeout.
  bool Stop(absl::Duration timeout) const {
    if (timeout < absl::ZeroDuration()) {
      throw InvalidOptionError("Worker::Stop: the timeout is negative; allowed: >= 0");
    }
    return Checked("Stop")->Stop(timeout);
  }
  bool Stop() const {
    const auto& core = Checked("Stop");
    return core->Stop(core->options().stop_timeout);
  }

  // Whether Stop was called (the worker may still be finishing a call).
  bool stopped() const { return Checked("stopped")->stop_requested(); }
  // Returns a snapshot of the worker's queues.
  WorkerStats Stats() const { return Checked("Stats")->Stats(); }
  // Completes when the worker has fully stopped and its T is destroyed (for a pool: every
  // worker's).
  Future<void> StoppedFuture() const { return Checked("StoppedFuture")->stopped_future(); }
  // Whether this handle is a pool (max_workers > 1 or on_demand).
  bool is_pool() const { return workers_internal::AsPool(Checked("is_pool")) != nullptr; }
  // A pool's statistics (pools/pool_stats.h); InvalidOptionError for a single worker.
  PoolStats GetPoolStats() const {
    return workers_internal::PoolOf(Checked("GetPoolStats"), "Worker::GetPoolStats").GetPoolStats();
  }
  // Worker `index` of a pool, in [0, max_workers); InvalidOptionError outside, or for a single
  // worker.
  PoolWorkerStats GetWorkerStats(int index) const {
    return workers_internal::PoolOf(Checked("GetWorkerStats"), "Worker::GetWorkerStats")
        .GetWorkerStats(index);
  }
  // The options after defaults were applied.
  const ResolvedWorkerOptions& options() const { return Checked("options")->options(); }
  bool valid() const noexcept { return static_cast<bool>(state_); }

  // The same worker, with calls that return values.
  BlockingWorker<T> Blocking() const;

 private:
  friend class BlockingWorker<T>;
  friend class TaskWorker;

  explicit Worker(std::shared_ptr<workers_internal::HandleState> state)
      : state_(std::move(state)) {}

  template <typename U>
  friend Worker<U> CurrentWorker();

  static const ResolvedWorkerOptions& CheckNotBlocking(const ResolvedWorkerOptions& resolved) {
    if (resolved.blocking) {
      throw InvalidOptionError(
          "Worker<T>::Create: blocking is true, but Worker<T>::Call returns futures; create a "
          "BlockingWorker<T> (or call .Blocking() on the handle) for calls that return values");
    }
    return resolved;
  }

  // Returns the backend for `resolved` after checking what Create needs of T and of it.
  static const WorkerBackend& CheckCreate(const ResolvedWorkerOptions& resolved) {
    if (resolved.retry.worker_class() != nullptr && *resolved.retry.worker_class() != typeid(T)) {
      throw InvalidOptionError(
          "Worker<T>::Create: the per-method retry entries (WorkerRetry::For) are for class " +
          TypeName(*resolved.retry.worker_class()) + ", not " + TypeName(typeid(T)));
    }
    // Throws, naming the Bazel target to add, when the mode's backend is not linked.
    const WorkerBackend& backend = WorkerBackendFor(resolved.mode);
    backend.Validate(resolved);
    if (backend.encodes_calls() && !workers_internal::kHasEncodedClass<T>) {
      throw InvalidOptionError(
          "Worker<T>::Create: mode " + AbslUnparseFlag(resolved.mode) +
          " sends calls as bytes by name, which needs the class registered with "
          "CONCURRY_REGISTER_WORKER (in-process modes need no registration)");
    }
    return backend;
  }

  // Create: waits for the object. Where the backend allows it, the object is built on this
  // thread rather than on the worker's, which spares the wake-ups of a round trip.
  template <typename... Args>
  static Worker CreateResolvedAndWait(const ResolvedWorkerOptions& resolved, Args&&... args) {
    static_assert(std::is_constructible_v<T, std::decay_t<Args>&&...>,
                  "Worker<T>::Create: T cannot be constructed from these argument types");
    // A pool's workers are built on their own contexts; CreateResolved checks the options.
    if (resolved.pooled()) return CreateResolved(resolved, std::forward<Args>(args)...).Result();
    const WorkerBackend& backend = CheckCreate(resolved);
    workers_internal::StartedWorker worker =
        StartOne(resolved, backend, nullptr, 0, backend.constructs_on_caller(resolved),
                 std::forward<Args>(args)...);
    // Made first, so that a constructor that threw leaves a handle that stops the worker (and
    // waits for that) as the last handle of any worker does.
    auto state = std::make_shared<workers_internal::HandleState>(std::move(worker.actor));
    std::move(worker.constructed).Result();  // Throws what the constructor threw.
    return Worker(std::move(state));
  }

  template <typename... Args>
  static Future<Worker> CreateResolved(const ResolvedWorkerOptions& resolved, Args&&... args) {
    static_assert(std::is_constructible_v<T, std::decay_t<Args>&&...>,
                  "Worker<T>::Create: T cannot be constructed from these argument types");
    const WorkerBackend& backend = CheckCreate(resolved);
    if (!resolved.pooled()) {
      workers_internal::StartedWorker worker = StartOne(
          resolved, backend, nullptr, 0, /*construct_here=*/false, std::forward<Args>(args)...);
      auto state = std::make_shared<workers_internal::HandleState>(std::move(worker.actor));
      return std::move(worker.constructed).Then([state = std::move(state)]() mutable {
        return Worker(std::move(state));
      });
    }
    if constexpr (!(std::is_copy_constructible_v<std::decay_t<Args>> && ...)) {
      throw InvalidOptionError(
          "Worker<T>::Create: a pool builds one T per worker from copies of the constructor "
          "arguments, and one of them cannot be copied (a std::unique_ptr?); pass something "
          "copyable, such as a std::shared_ptr or a factory");
    } else {
      const WorkerBackend* backend_ptr = &backend;
      auto factory = [backend_ptr,
                      args = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)](
                         int index, const ResolvedWorkerOptions& options,
                         workers_internal::PoolHook* pool) {
        return std::apply(
            [&](const auto&... a) {
              return StartOne(options, *backend_ptr, pool, index, /*construct_here=*/false, a...);
            },
            args);
      };
      std::shared_ptr<workers_internal::PoolCore> pool =
          workers_internal::MakePool(resolved, backend, std::move(factory),
                                     /*stateless=*/std::is_same_v<T, workers_internal::TaskHost>);
      Future<void> ready = pool->StartWorkers();
      auto state = std::make_shared<workers_internal::HandleState>(std::move(pool));
      return std::move(ready).Then(
          [state = std::move(state)]() mutable { return Worker(std::move(state)); });
    }
  }

  // Makes one worker's actor for `options` (joined to `pool` as worker `index` when in a pool)
  // and starts building its T from `args`; `construct_here`: builds it now, on this thread
  // (WorkerBackend::constructs_on_caller), for a caller that waits for it anyway.
  template <typename... Args>
  static workers_internal::StartedWorker StartOne(const ResolvedWorkerOptions& options,
                                                  const WorkerBackend& backend,
                                                  workers_internal::PoolHook* pool, int index,
                                                  bool construct_here, Args&&... args) {
    std::shared_ptr<workers_internal::ActorCore> core = backend.MakeActor(options);
    core->set_object_type(typeid(T));
    if (pool != nullptr) core->JoinPool(pool, index);
    Promise<void> constructed;
    Future<void> done = constructed.GetFuture();
    if constexpr (kIsRegisteredWorker<T>) {
      if (backend.encodes_calls()) {
        if constexpr (!std::is_invocable_v<
                          std::add_pointer_t<typename WorkerRegistration<T>::Constructor>,
                          Args...>) {
          throw InvalidOptionError(
              "Worker<T>::Create: in mode " + AbslUnparseFlag(options.mode) +
              " the constructor arguments must match the constructor signature registered with "
              "CONCURRY_REGISTER_WORKER");
        } else {
          // Encoded here, on the calling side; decoded and built where the backend keeps the
          // object (this process, a child process), in the worker's context.
          auto make = [&backend, actor = core.get(),
                       bytes = workers_internal::EncodeConstructor<T>(
                           std::forward<Args>(args)...)]() mutable {
            return backend
                .MakeEncodedObject(workers_internal::EncodedClassOf<T>(), std::move(bytes), *actor)
                .release();
          };
          core->Start(
              new workers_internal::ConstructNode<workers_internal::EncodedObject, decltype(make)>(
                  core.get(), std::move(constructed), std::move(make)));
          return {std::move(core), std::move(done)};
        }
      }
    }
    if constexpr (std::is_same_v<T, workers_internal::TaskHost>) {
      if (backend.encodes_calls()) {
        // A TaskWorker: the library's task host, which runs registered functions by name.
        auto make = [&backend, actor = core.get()]() {
          return backend.MakeEncodedObject(workers_internal::TaskHostClass(), std::string(), *actor)
              .release();
        };
        core->Start(
            new workers_internal::ConstructNode<workers_internal::EncodedObject, decltype(make)>(
                core.get(), std::move(constructed), std::move(make)));
        return {std::move(core), std::move(done)};
      }
    }
    auto make = [args = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)]() mutable {
      return std::apply([](auto&... a) { return new T(std::move(a)...); }, args);
    };
    core->Start(new workers_internal::ConstructNode<T, decltype(make)>(
                    core.get(), std::move(constructed), std::move(make)),
                construct_here);
    return {std::move(core), std::move(done)};
  }

  const std::shared_ptr<workers_internal::ActorCore>& Checked(const char* operation) const {
    if (!state_) {
      throw InvalidOptionError(std::string("Worker::") + operation +
                               ": the handle is empty (default-constructed or moved from)");
    }
    return state_->core;
  }

  std::shared_ptr<workers_internal::HandleState> state_;
};

// A worker whose calls block and return the method's result (or throw its exception):
// concurry's blocking=True, kept type-safe by being its own handle type. Shares the worker with
// the Worker<T> it came from. Thread-safe.
template <typename T>
class BlockingWorker {
 public:
  BlockingWorker() = default;

  // Like Worker<T>::Create; `options.blocking` must be unset or true.
  template <typename... Args>
  static BlockingWorker Create(WorkerOptions options, Args&&... args) {
    if (options.blocking.has_value() && !*options.blocking) {
      throw InvalidOptionError(
          "BlockingWorker<T>::Create: blocking is false; use Worker<T> for calls that return "
          "futures");
    }
    options.blocking = true;
    const ResolvedWorkerOptions resolved = ResolveWorkerOptions(options);
    return BlockingWorker(Worker<T>::CreateResolvedAndWait(resolved, std::forward<Args>(args)...));
  }

  // Calls `method` and waits for its result.
  template <typename M, typename... Args>
  requires std::is_member_function_pointer_v<M> &&
      workers_internal::kCallable<T, workers_internal::MethodInvoker<M>, Args...>
  auto Call(M method, Args&&... args) const {
    return worker_.Call(method, std::forward<Args>(args)...).Result();
  }
  // Misuse: fails to compile with a message (see Worker<T>::Call).
  template <typename M, typename... Args>
  requires(!(std::is_member_function_pointer_v<M> &&
             workers_internal::kCallable<T, workers_internal::MethodInvoker<M>, Args...>))
      workers_internal::CallRejected Call(M /*method*/, Args&&... /*args*/)
  const { return workers_internal::RejectMethodCall<T, M, Args...>(); }

  bool Stop(absl::Duration timeout) const { return worker_.Stop(timeout); }
  bool Stop() const { return worker_.Stop(); }
  bool stopped() const { return worker_.stopped(); }
  const ResolvedWorkerOptions& options() const { return worker_.options(); }
  bool valid() const noexcept { return worker_.valid(); }
  bool is_pool() const { return worker_.is_pool(); }
  PoolStats GetPoolStats() const { return worker_.GetPoolStats(); }
  PoolWorkerStats GetWorkerStats(int index) const { return worker_.GetWorkerStats(index); }

  // The same worker, with calls that return futures.
  const Worker<T>& Async() const { return worker_; }

 private:
  friend class Worker<T>;
  explicit BlockingWorker(Worker<T> worker) : worker_(std::move(worker)) {}

  Worker<T> worker_;
};

template <typename T>
BlockingWorker<T> Worker<T>::Blocking() const {
  Checked("Blocking");
  return BlockingWorker<T>(*this);
}

namespace workers_internal {
// The actor whose call the calling thread runs; throws InvalidOptionError naming `operation`
// outside one.
ActorCore& CurrentActorOrThrow(const char* operation);
[[noreturn]] void ThrowWrongWorkerType(const char* operation, const std::type_info* actual,
                                       const std::type_info& requested);
}  // namespace workers_internal

template <typename T>
Worker<T> CurrentWorker() {
  workers_internal::ActorCore& core = workers_internal::CurrentActorOrThrow("CurrentWorker<T>()");
  if (core.object_type() == nullptr || *core.object_type() != typeid(T)) {
    workers_internal::ThrowWrongWorkerType("CurrentWorker<T>()", core.object_type(), typeid(T));
  }
  return Worker<T>(
      std::make_shared<workers_internal::HandleState>(core.shared_from_this(), /*owns=*/false));
}

}  // namespace concurry

#endif  // CONCURRY_WORKERS_WORKER_H_

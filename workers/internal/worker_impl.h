// Template machinery behind Worker<T>: call nodes, creation, dispatch with future unwrapping.

#ifndef CONCURRY_WORKERS_INTERNAL_WORKER_IMPL_H_
#define CONCURRY_WORKERS_INTERNAL_WORKER_IMPL_H_

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "retry/policy.h"
#include "retry/retry.h"
#include "workers/internal/actor.h"
#include "workers/internal/cancel_signal.h"
#include "workers/internal/encoded_object.h"
#include "workers/internal/unwrap.h"
#include "workers/options.h"
#include "workers/registration.h"

namespace concurry::workers_internal {

// The class a member-function pointer belongs to.
template <typename M>
struct MemberOf {};
template <typename F, typename C>
struct MemberOf<F C::*> {
  using Class = C;
};

// The object of a TaskWorker's actor. Tasks ignore it. In the modes that encode calls the actor
// holds the library's task host class instead (TaskHostClass(), registration.h), which runs
// registered free functions by name.
struct TaskHost {};

// Whether workers of T can run in the modes that encode calls: T is registered, or is TaskHost.
template <typename T>
inline constexpr bool kHasEncodedClass = kIsRegisteredWorker<T> || std::is_same_v<T, TaskHost>;

// What an invoker runs on: the actor's T, unless the invoker says otherwise with a member type
// `Target` (EncodedInvoker: the EncodedObject of a worker whose calls cross a byte boundary).
template <typename T, typename Invoker, typename = void>
struct TargetOfImpl {
  using type = T;
};
template <typename T, typename Invoker>
struct TargetOfImpl<T, Invoker, std::void_t<typename Invoker::Target>> {
  using type = typename Invoker::Target;
};
template <typename T, typename Invoker>
using TargetOf = typename TargetOfImpl<T, Invoker>::type;

// The demangled name of T, for retry contexts ("TaskWorker" for tasks).
template <typename T>
absl::string_view WorkerTypeName() {
  if constexpr (std::is_same_v<T, TaskHost>) {
    return "TaskWorker";
  } else {
    static const std::string* const name = new std::string(TypeName(typeid(T)));
    return *name;
  }
}

// Whether a copy of X really compiles, also for containers whose copy constructor is declared
// but not usable (std::vector<std::unique_ptr<int>>): such calls are not retried.
template <typename X, typename = void>
struct DeepCopyable : std::is_copy_constructible<X> {};
template <typename X>
struct DeepCopyable<X, std::void_t<typename X::value_type, typename X::iterator>>
    : std::bool_constant<std::is_copy_constructible_v<X> &&
                         DeepCopyable<std::remove_const_t<typename X::value_type>>::value> {};
template <typename A, typename B>
struct DeepCopyable<std::pair<A, B>>
    : std::bool_constant<DeepCopyable<std::remove_const_t<A>>::value && DeepCopyable<B>::value> {};

// A call: `invoke(object)` runs it; its result completes `promise` (Future, Status and StatusOr
// results are flattened). With a retry policy, attempts run `invoke.Again(object)` (copies of the
// arguments) until the policy stops them. While it runs, the method sees its caller's Cancel()
// through this_call::CancelRequested().
//
// A method returning Coro<U> (kCoroCall) runs as a top-level coroutine: on a coroutine backend's
// loop (RunOutsideMailbox) it starts there and the call stays running until the coroutine ends
// (DeferFinish), keeping the node, and so its arguments and a task's closure, alive; in every
// other mode it runs to its end on the call's thread (SyncWait semantics), serial as any call.
template <typename T, typename R, typename Invoke>
class InvokeNode final : public CallNode, private CancelSignal {
  using Target = typename Invoke::Target;
  using Raw = std::decay_t<std::invoke_result_t<Invoke&, Target&>>;
  static constexpr bool kCoroCall = futures_internal::kIsCoro<Raw>;

 public:
  InvokeNode(Promise<R> promise, Invoke invoke)
      : promise_(std::move(promise)), invoke_(std::move(invoke)) {}
  ~InvokeNode() override {
    // In a CallBlock, the block drops the promise's reference with its own (one atomic operation
    // instead of two on the line the caller reads). Over-aligned nodes are never in one, and have
    // no header to look at.
    if constexpr (alignof(InvokeNode) <= alignof(std::max_align_t)) {
      if (promise_.valid() &&
          BlockTakesPromiseRef(this, futures_internal::PromiseState(promise_))) {
        futures_internal::DetachState(promise_);
      }
    }
  }

  // Retries the call under `policy` (null: no retry; it must outlive the node, as the worker's
  // options do). `method_name` names the method in retry contexts ("" if unknown).
  void SetRetry(const RetryPolicy* policy, absl::string_view method_name) {
    retry_ = policy;
    method_name_ = method_name;
  }

  void Run(void* object) noexcept override {
    if (promise_.IsCancelled()) return;  // The caller cancelled it while it was queued.
    // Running now: a later call of this worker that waits for the result waits for whatever the
    // method's returned Future depends on, not for this worker's queue.
    futures_internal::SetProducer(promise_, nullptr);
    Target& target = *static_cast<Target*>(object);
    // Also around a call sent as bytes: in Mode::kLoopback the method runs inside invoke_.
    const ScopedCancelSignal running(this);
    if constexpr (kCoroCall) {
      RunCoroutine(target);
      return;
    }
    if constexpr (Invoke::kRepeatable) {
      if (retry_ != nullptr) {
        RunWithRetry(target);
        return;
      }
    }
    if constexpr (std::is_same_v<Target, EncodedObject>) {
      RunElsewhere(target);
    } else {
      futures_internal::CompleteWithInvoke(promise_, invoke_, target);
    }
  }
  void Cancel() noexcept override { promise_.Cancel(); }
  void Fail(std::exception_ptr error) noexcept override { promise_.SetError(std::move(error)); }
  void SetProducer(const void* worker) noexcept override {
    futures_internal::SetProducer(promise_, worker);
  }
  // A call sent elsewhere (RunElsewhere) only hands its bytes on; a retried one waits for each
  // attempt.
  bool RunsWithoutWaiting() const noexcept override {
    return std::is_same_v<Target, EncodedObject> && retry_ == nullptr;
  }
  bool IsCoroutine() const noexcept override { return kCoroCall; }

 private:
  // Thrown (not a std::exception, so never retried) when an attempt returned a Future that is
  // not done yet: the call then completes with that future, unretried.
  struct PendingResult {};

  // Asked only by the thread in Run. The phase is an atomic (acquire) load, so a Cancel() from
  // any thread is seen without a race. Completing moves promise_ out in some paths (into the
  // continuation of a returned Future): then the call is over and nothing is cancelled here.
  bool CancelRequested() const noexcept override {
    return promise_.valid() && promise_.IsCancelled();
  }

  // A call sent to where the object lives (a worker process): it runs there after Run returns,
  // so it counts as running (its max_queued_tasks slot, a pool's active calls) until its reply
  // completes it.
  void RunElsewhere(EncodedObject& target) noexcept {
    using Reply = std::decay_t<decltype(invoke_(target))>;
    std::optional<Reply> reply;
    try {
      reply.emplace(invoke_(target));
    } catch (...) {
      promise_.SetError(std::current_exception());
      return;
    }
    DeferFinish();
    // A caller's thread that sent the call itself may fetch the reply itself when it waits.
    if (std::shared_ptr<futures_internal::WaitDriver> driver = target.TakeWaitDriver()) {
      futures_internal::OfferWaitDriver(promise_, std::move(driver));
    }
    // The caller's Cancel() reaches the call where it waits (see DecodeLater).
    promise_.OnCancel([pending = *reply] { pending.Cancel(); });
    // May run at once, on this thread, when the reply is there already.
    reply->AddDoneCallback([this, &target](const Reply& done) {
      futures_internal::CompleteWithInvoke(
          promise_, [&done](EncodedObject&) { return done; }, target);
      FinishDeferred();
    });
  }

  // A call of a method returning Coro<U> (see the class comment). With a retry policy the root
  // coroutine is RetryAsync over the attempts (retry/retry.h): its back-off waits suspend on the
  // scheduler's clock (the worker's clock), so no thread sleeps; attempts get copies of the
  // arguments, and a call whose arguments cannot be copied runs once, unretried, as in every
  // mode. Cancelling the call ends the retry at its next suspension.
  void RunCoroutine(Target& target) noexcept {
    Raw coro;
    try {
      if constexpr (Invoke::kRepeatable) {
        if (retry_ != nullptr) {
          RetryOptions options;
          options.call.worker_type_name = WorkerTypeName<T>();
          options.call.method_name = method_name_;
          // The node outlives the coroutine (DeferFinish, or Run waits for it), and so does the
          // object.
          coro = RetryAsync([this, &target] { return invoke_.Again(target); }, *retry_,
                            std::move(options));
        }
      }
      if (!coro.valid()) coro = invoke_(target);
    } catch (...) {
      promise_.SetError(std::current_exception());
      return;
    }
    futures_internal::CoroScheduler* loop = futures_internal::CurrentCoroScheduler();
    if (runs_outside_mailbox() && loop != nullptr) {
      // Every step, the first one too, is posted to the loop, which runs it with the call's
      // cancel signal (this_call::CancelRequested) and its context.
      DeferFinish();
      // The root started here is the call's (the loop counts it against max_in_flight).
      const ScopedCoroCallStart starting;
      futures_internal::StartCoroRoot(
          promise_, std::move(coro), [this] { FinishDeferred(); }, *loop,
          futures_internal::CurrentCoroSchedulerShared(), /*start_inline=*/false);
      return;
    }
    // As SyncWait, with the call's promise: the caller's Cancel() cancels the coroutine.
    const ActorCore* actor = ActorCore::Current();
    Clock& clock = actor != nullptr && actor->options().clock != nullptr ? *actor->options().clock
                                                                         : Clock::Real();
    auto steps = std::make_shared<futures_internal::LocalLoop>(clock);
    futures_internal::LocalLoop* raw = steps.get();
    // Posted, not started inline: Run() detaches from a trampoline of an outer coroutine step on
    // this thread (a kSync worker's Coro method called inside a step), whose queue would otherwise
    // get this coroutine's inline steps while Run() waits for them.
    futures_internal::StartCoroRoot(
        promise_, std::move(coro), [raw] { raw->Finish(); }, *raw, steps, /*start_inline=*/false);
    raw->Run();
  }

  void RunWithRetry(Target& target) noexcept {
    RetryOptions options;
    options.call.worker_type_name = WorkerTypeName<T>();
    options.call.method_name = method_name_;
    using Attempt = decltype(invoke_.Again(target));
    if constexpr (!futures_internal::kIsFuture<std::decay_t<Attempt>>) {
      // No further attempt once the caller cancelled (a Map item timed out, a Map was destroyed).
      options.stop = [this] { return promise_.IsCancelled(); };
      futures_internal::CompleteWithInvoke(
          promise_,
          [&](Target& o) {
            return Retry([this, &o] { return invoke_.Again(o); }, *retry_, options);
          },
          target);
    } else {
      // A Future result (a method returning one): a done one is retried on its value or error;
      // a pending one ends the retries. The reply of a call that crossed a byte boundary is
      // waited for instead (the worker is busy during retries anyway), so such calls retry on
      // the method's outcome wherever it ran.
      std::optional<std::decay_t<Attempt>> pending;
      // A pending result ends the retries before any filter sees the internal PendingResult.
      options.stop = [this, &pending] { return pending.has_value() || promise_.IsCancelled(); };
      const auto attempt = [&] {
        std::decay_t<Attempt> future = invoke_.Again(target);
        if (!future.Done()) {
          if constexpr (std::is_same_v<Target, EncodedObject>) {
            target.Flush();
            future.Wait();
          } else {
            pending.emplace(std::move(future));
            throw PendingResult{};
          }
        }
        return std::move(future).Result();
      };
      // Retry() runs outside CompleteWithInvoke(), which would turn PendingResult into an error.
      using Value = decltype(attempt());
      try {
        if constexpr (std::is_void_v<Value>) {
          Retry(attempt, *retry_, options);
          promise_.SetValue();
        } else {
          Value value = Retry(attempt, *retry_, options);
          futures_internal::CompleteWithInvoke(
              promise_, [&](Target&) { return std::move(value); }, target);
        }
      } catch (const PendingResult&) {
        futures_internal::CompleteWithInvoke(
            promise_, [&](Target&) { return std::move(*pending); }, target);
      } catch (...) {
        promise_.SetError(std::current_exception());
      }
    }
  }

  Promise<R> promise_;
  Invoke invoke_;
  const RetryPolicy* retry_ = nullptr;
  absl::string_view method_name_;
};

// The first message of every actor: builds the object in the actor's context.
template <typename T, typename Make>
class ConstructNode final : public CallNode {
 public:
  ConstructNode(ActorCore* core, Promise<void> done, Make make)
      : core_(core), done_(std::move(done)), make_(std::move(make)) {}

  void Run(void*) noexcept override {
    try {
      T* object = make_();
      core_->SetObject(object, [](void* p) { delete static_cast<T*>(p); });
    } catch (...) {
      // Nothing may keep running: close the actor before the creator sees the error. Calls
      // already queued behind the construction (a pool's first call) fail with it too.
      core_->StopWithError(std::current_exception());
      done_.SetError(std::current_exception());
      return;
    }
    done_.SetValue();
  }
  void Cancel() noexcept override {
    done_.SetError(std::make_exception_ptr(
        StoppedError("Worker: the worker stopped before its object was constructed")));
  }

 private:
  ActorCore* core_;
  Promise<void> done_;
  Make make_;
};

// What every copy of one handle shares; the last copy of an owning handle stops the worker.
struct HandleState {
  explicit HandleState(std::shared_ptr<ActorCore> c, bool owns = true)
      : core(std::move(c)), owning(owns) {}
  ~HandleState();
  HandleState(const HandleState&) = delete;
  HandleState& operator=(const HandleState&) = delete;

  std::shared_ptr<ActorCore> core;
  // False for a worker's handle to itself (CurrentWorker): it does not keep the worker running.
  const bool owning;
};

// Posts `node`, failing its future with core.RejectionError() (StoppedError, saying why a
// crashed worker ended) if the worker was stopped.
template <typename Node>
void PostOrFail(ActorCore& core, Node* node, bool may_block = true) {
  if (!core.Post(node, may_block)) {
    node->Fail(core.RejectionError());
    delete node;
  }
}

// An invoker with its arguments: `(T&) -> result`.
template <typename T, typename Inv, typename... B>
struct BoundCall {
  using Target = TargetOf<T, Inv>;
  // Whether the call can run more than once (for retries): its arguments can be copied.
  static constexpr bool kRepeatable = (DeepCopyable<B>::value && ...);

  Inv invoker;
  std::tuple<B...> args;
  decltype(auto) operator()(Target& object) {
    return std::apply(
        [&](B&... b) -> decltype(auto) { return std::invoke(invoker, object, std::move(b)...); },
        args);
  }
  // One attempt of a call that may run again: with copies of the arguments.
  decltype(auto) Again(Target& object) requires kRepeatable {
    return std::apply(
        [&](const B&... b) -> decltype(auto) { return std::invoke(invoker, object, B(b)...); },
        args);
  }
};

// The retry policy and method name for calls through `invoker` (see the overloads for methods
// below): tasks use the worker's policy for every call.
template <typename T, typename Invoker>
std::pair<const RetryPolicy*, absl::string_view> RetryFor(const WorkerRetry& retry,
                                                          const Invoker&) {
  return {retry.default_policy(), ""};
}

// Calls waiting for futures among their arguments: dispatched when the last one is done.
template <typename T, typename R, typename Invoker, typename... A>
class PendingCall {
 public:
  PendingCall(std::shared_ptr<ActorCore> core, Promise<R> promise, Invoker invoker,
              std::tuple<A...> args)
      : core_(std::move(core)),
        promise_(std::move(promise)),
        invoker_(std::move(invoker)),
        args_(std::move(args)) {}

  static void Start(const std::shared_ptr<PendingCall>& self, std::vector<AnyFuture> inputs) {
    self->inputs_ = std::move(inputs);
    self->remaining_.store(static_cast<int>(self->inputs_.size()) + 1, std::memory_order_relaxed);
    self->stop_hook_ = self->core_->AddStopHook(self->promise_.GetFuture());
    self->handles_.reserve(self->inputs_.size());
    for (const AnyFuture& input : self->inputs_) {
      AnyFuture::CallbackHandle handle = input.AddCallbackIfPending([self] { self->InputDone(); });
      self->handles_.push_back(handle);
      if (handle == nullptr) self->InputDone();  // Already done: count it here.
    }
    // A cancelled call (by its caller, or by Stop) lets go of its inputs' callbacks and its
    // arguments at once, instead of when the inputs complete, which may be never.
    self->promise_.OnCancel([weak = std::weak_ptr<PendingCall>(self)] {
      if (auto pending = weak.lock()) pending->Abandon();
    });
    self->InputDone();  // The +1 above: no dispatch before every callback is registered.
  }

 private:
  void InputDone() {
    // acq_rel: the last decrement sees every input's completion.
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (finished_.exchange(true, std::memory_order_acq_rel)) return;  // Abandoned.
    core_->RemoveStopHook(stop_hook_);
    if (promise_.IsCancelled()) return;
    if (core_->stop_requested()) {
      promise_.Cancel();  // Stop cancels calls still waiting for inputs (a race with the hook).
      return;
    }
    for (const AnyFuture& input : inputs_) {
      if (input.Cancelled()) {
        promise_.Cancel();  // As Then does: a cancelled input cancels what depends on it.
        return;
      }
      if (std::exception_ptr error = input.Error()) {
        promise_.SetError(std::move(error));  // The input's own error, original type.
        return;
      }
    }
    inputs_.clear();
    try {
      auto unwrapped = std::apply(
          [](auto&&... a) { return std::tuple<UnwrappedT<A>...>(TakeUnwrapped(std::move(a))...); },
          std::move(args_));
      using Bound = BoundCall<T, Invoker, UnwrappedT<A>...>;
      const auto [policy, name] = RetryFor<T>(core_->options().retry, invoker_);
      auto* node = new InvokeNode<T, R, Bound>(std::move(promise_),
                                               Bound{std::move(invoker_), std::move(unwrapped)});
      node->SetRetry(policy, name);
      // Never blocks: this runs in whichever thread completed the last input.
      PostOrFail(*core_, node, /*may_block=*/false);
    } catch (...) {
      promise_.SetError(std::current_exception());
    }
  }

  // The call was cancelled before its inputs were all done.
  void Abandon() {
    // acq_rel: whoever wins owns inputs_, handles_ and args_ from here on.
    if (finished_.exchange(true, std::memory_order_acq_rel)) return;
    for (size_t i = 0; i < handles_.size(); ++i) {
      if (handles_[i] != nullptr) inputs_[i].RemoveCallback(handles_[i]);
    }
    core_->RemoveStopHook(stop_hook_);
    inputs_.clear();
    args_ = {};
  }

  std::shared_ptr<ActorCore> core_;
  Promise<R> promise_;
  Invoker invoker_;
  std::tuple<A...> args_;
  std::vector<AnyFuture> inputs_;
  std::vector<AnyFuture::CallbackHandle> handles_;
  std::atomic<int> remaining_{0};
  // Claimed once, by the last input's InputDone or by Abandon.
  std::atomic<bool> finished_{false};
  uint64_t stop_hook_ = 0;
};

// The future state of a call made by DispatchInOneBlock, inside the call's CallBlock.
template <typename R>
class CallState final : public futures_internal::State<R> {
 public:
  // Owned by the promise, the future and the node's memory (see CallBlock).
  CallState()
      : futures_internal::State<R>(futures_internal::PresetRefs{.refs = 3, .consumers = 1}) {}
  // Built with ::new in a CallBlock only.
  static void* operator new(size_t) = delete;
  static void operator delete(void* p) noexcept { FreeCallBlock(p); }
};

// Runs `invoker(object, args...)` on the worker and returns the call's future; the result type
// is R. The node and the future's state share one allocation (CallBlock).
template <typename T, typename R, typename Invoker, typename... A>
Future<R> DispatchInOneBlock(const std::shared_ptr<ActorCore>& core, Invoker invoker,
                             std::tuple<A...> args) {
  using Bound = BoundCall<T, Invoker, A...>;
  using Node = InvokeNode<T, R, Bound>;
  const auto [policy, name] = RetryFor<T>(core->options().retry, invoker);
  const CallBlock block = AllocateCallBlock(sizeof(CallState<R>), sizeof(Node));
  auto* state = ::new (block.state) CallState<R>();
  // Waiting for it inside this worker's own calls would never end: such waits throw.
  state->set_producer(core.get());
  Future<R> result = futures_internal::FutureFromState(futures_internal::FutureRef<R>(state));
  Promise<R> promise = futures_internal::PromiseFromState(
      futures_internal::StateRef<futures_internal::State<R>>(state));
  Node* node;
  try {
    node = ::new (block.node) Node(std::move(promise), Bound{std::move(invoker), std::move(args)});
  } catch (...) {
    state->Unref();  // The node's reference: the block goes with the last handle.
    throw;
  }
  BindNodeToState(block, state);
  node->SetRetry(policy, name);
  PostOrFail(*core, node);
  return result;
}

// Runs `invoker(object, args...)` on the worker; the result type is R.
template <typename T, typename R, typename Invoker, typename... A>
void Dispatch(const std::shared_ptr<ActorCore>& core, Promise<R> promise, Invoker invoker,
              std::tuple<A...> args) {
  using Bound = BoundCall<T, Invoker, A...>;
  const auto [policy, name] = RetryFor<T>(core->options().retry, invoker);
  auto* node =
      new InvokeNode<T, R, Bound>(std::move(promise), Bound{std::move(invoker), std::move(args)});
  node->SetRetry(policy, name);
  PostOrFail(*core, node);
}

// The result type of `invoker(T&, A...)` with futures unwrapped or not.
template <typename T, typename Invoker, bool kUnwrap, typename... A>
struct CallResult {
  using type = void;
};
template <typename T, typename Invoker, typename... A>
struct CallResult<T, Invoker, true, A...> {
  using type = UnwrapT<std::invoke_result_t<Invoker&, TargetOf<T, Invoker>&, UnwrappedT<A>&&...>>;
};
template <typename T, typename Invoker, typename... A>
struct CallResult<T, Invoker, false, A...> {
  using type = UnwrapT<std::invoke_result_t<Invoker&, TargetOf<T, Invoker>&, A&&...>>;
};

// Whether `invoker(T&, args...)` compiles with the arguments as given or with futures unwrapped.
template <typename T, typename Invoker, typename... A>
inline constexpr bool kCallable =
    std::is_invocable_v<Invoker&, T&, std::decay_t<A>&&...> ||
    (kHasFutures<std::decay_t<A>...> &&
     std::is_invocable_v<Invoker&, T&, UnwrappedT<std::decay_t<A>>&&...>);

// Misuse diagnostics. A call the constraints reject does not fall through to the compiler's
// list of candidates: a second overload, constrained to exactly the rejected cases, takes it and
// fails with one static_assert that says what is wrong. That overload returns CallRejected
// (declared, never defined as a value anyone gets): its body is instantiated only when the call
// is really made, so a requires-expression or decltype sees a well-formed call of type
// CallRejected and generic code can test for that.
struct CallRejected {};

// Whether F can be a function at all: a function (pointer or reference), a member pointer, or a
// class (which may have an operator()). Excludes numbers, enums, object pointers.
template <typename F>
inline constexpr bool kLooksCallable =
    std::is_function_v<std::remove_pointer_t<std::remove_reference_t<F>>> ||
    std::is_member_pointer_v<std::decay_t<F>> || std::is_class_v<std::remove_cvref_t<F>> ||
    std::is_union_v<std::remove_cvref_t<F>>;

// Whether M is a pointer to a method of T or of a base of T.
template <typename M, typename T>
constexpr bool IsMethodOf() {
  if constexpr (std::is_member_function_pointer_v<M>) {
    return std::is_base_of_v<typename MemberOf<M>::Class, T>;
  } else {
    return false;
  }
}

// The misuse behind a rejected Worker<T>::Call (or BlockingWorker<T>::Call), as one error.
template <typename T, typename M, typename... Args>
CallRejected RejectMethodCall() {
  static_assert(std::is_member_function_pointer_v<M>,
                "Worker<T>::Call: the first argument must be a pointer to a method of T, such as "
                "&T::Method (a free function or lambda goes to a TaskWorker)");
  static_assert(!std::is_member_function_pointer_v<M> || IsMethodOf<M, T>(),
                "Worker<T>::Call: the method belongs to a class that is not T or a base of T");
  static_assert(!IsMethodOf<M, T>(),
                "Worker<T>::Call: the method cannot be called with these arguments (check their "
                "number and types; Future arguments are replaced by their values)");
  return {};
}

// Invokes a member function on the object.
template <typename M>
struct MethodInvoker {
  M method;
  template <typename T, typename... A>
  requires std::is_invocable_v<M, T&, A&&...>
  decltype(auto) operator()(T& object, A&&... a) const {
    return std::invoke(method, object, std::forward<A>(a)...);
  }
};

// Whether some method registered for T has type M (then its parameters and result are
// serializable, so a loopback call with an M can be encoded).
template <typename T, typename M>
constexpr bool HasEntryOfType() {
  if constexpr (!kIsRegisteredWorker<T>) {
    return false;
  } else {
    return std::apply(
        [](const auto&... entry) {
          return (std::is_same_v<std::decay_t<decltype(entry.method)>, M> || ...);
        },
        WorkerRegistration<T>::kMethods);
  }
}

// The decoded reply of a call sent as bytes: a future of R that completes when `reply` does.
// Cancelling it cancels `reply`, which withdraws the call from a worker process that has not
// started it.
template <typename R>
Future<R> DecodeLater(Future<std::string> reply) {
  Promise<R> decoded;
  Future<R> result = decoded.GetFuture();
  decoded.OnCancel([reply] { reply.Cancel(); });
  reply.AddDoneCallback([decoded = std::move(decoded)](const Future<std::string>& done) mutable {
    if (done.Cancelled()) {
      decoded.Cancel();
    } else if (std::exception_ptr error = done.Error()) {
      decoded.SetError(std::move(error));
    } else {
      futures_internal::CompleteWithInvoke(decoded,
                                           [&done] { return DecodeReply<R>(done.Result()); });
    }
  });
  return result;
}

// A call that crosses a byte boundary (WorkerBackend::encodes_calls()): encodes the arguments,
// sends them under the method's registered name to the actor's EncodedObject, and decodes the
// reply bytes when they come.
template <typename T, typename M>
struct EncodedInvoker {
  using Target = EncodedObject;
  M method;
  absl::string_view name;
  template <typename... A>
  requires std::is_invocable_v<M, T&, A&&...> Future<MethodReplyT<M>>
  operator()(EncodedObject& object, A&&... a) const {
    if constexpr (HasEntryOfType<T, M>()) {
      return DecodeLater<MethodReplyT<M>>(
          object.Invoke(name, EncodeCall<T>(method, std::forward<A>(a)...)));
    } else {
      // MethodName found the method, so this cannot happen; kept for the compiler.
      throw InvalidOptionError("worker: the method is not registered");
    }
  }
};

// The policy of a method call: its own entry, else the worker's policy for every method.
template <typename T, typename M>
std::pair<const RetryPolicy*, absl::string_view> RetryFor(const WorkerRetry& retry,
                                                          const MethodInvoker<M>& invoker) {
  absl::string_view name;
  if constexpr (kIsRegisteredWorker<T>) {
    if (retry.default_policy() != nullptr || retry.worker_class() != nullptr) {
      name = MethodName<T>(invoker.method).value_or("");
    }
  }
  return {retry.Find(invoker.method), name};
}
template <typename T, typename M>
std::pair<const RetryPolicy*, absl::string_view> RetryFor(const WorkerRetry& retry,
                                                          const EncodedInvoker<T, M>& invoker) {
  return {retry.Find(invoker.method), invoker.name};
}

// Submits a call of `invoker` with `args` (decayed copies) to the worker behind `core`.
template <typename T, typename Invoker, typename... A>
auto SubmitCall(const std::shared_ptr<ActorCore>& core, Invoker invoker, A&&... args) {
  constexpr bool kHas = kHasFutures<std::decay_t<A>...>;
  using Target = TargetOf<T, Invoker>;
  constexpr bool kRawOk = std::is_invocable_v<Invoker&, Target&, std::decay_t<A>&&...>;
  constexpr bool kUnwrappedOk =
      kHas && std::is_invocable_v<Invoker&, Target&, UnwrappedT<std::decay_t<A>>&&...>;
  static_assert(kRawOk || kUnwrappedOk,
                "Worker call: the method (or function) cannot be called with these argument "
                "types (Future arguments are replaced by their values unless unwrap_futures is "
                "false)");
  using R = typename CallResult<T, Invoker, kUnwrappedOk, std::decay_t<A>...>::type;
  if constexpr (kRawOk && kUnwrappedOk) {
    static_assert(
        std::is_same_v<R, typename CallResult<T, Invoker, false, std::decay_t<A>...>::type>,
        "Worker call: the result type depends on whether futures are unwrapped");
  }
  std::tuple<std::decay_t<A>...> tuple(std::forward<A>(args)...);
  if constexpr (!kHas) {
    using Node = InvokeNode<T, R, BoundCall<T, Invoker, std::decay_t<A>...>>;
    // The block lives as long as the future, so a node with large by-value arguments keeps the
    // two-allocation path: its memory goes back when the call returns, not when the future goes.
    constexpr std::size_t kMaxNodeInBlock = 256;
    if constexpr (alignof(Node) <= alignof(std::max_align_t) &&
                  alignof(CallState<R>) <= alignof(std::max_align_t) &&
                  sizeof(Node) <= kMaxNodeInBlock) {
      return DispatchInOneBlock<T, R>(core, std::move(invoker), std::move(tuple));
    }
  }
  Promise<R> promise;
  // Waiting for it inside this worker's own calls would never end: such waits throw.
  futures_internal::SetProducer(promise, core.get());
  Future<R> result = promise.GetFuture();
  if constexpr (!kHas) {
    Dispatch<T, R>(core, std::move(promise), std::move(invoker), std::move(tuple));
  } else {
    if (core->options().unwrap_futures) {
      if constexpr (kUnwrappedOk) {
        std::vector<AnyFuture> inputs;
        std::apply([&](const auto&... a) { (CollectFutures(a, inputs), ...); }, tuple);
        auto pending = std::make_shared<PendingCall<T, R, Invoker, std::decay_t<A>...>>(
            core, std::move(promise), std::move(invoker), std::move(tuple));
        PendingCall<T, R, Invoker, std::decay_t<A>...>::Start(pending, std::move(inputs));
      } else {
        promise.SetError(std::make_exception_ptr(InvalidOptionError(
            "Worker call: unwrap_futures is true, but the method takes the Future arguments "
            "themselves; create the worker with unwrap_futures = false")));
      }
    } else {
      if constexpr (kRawOk) {
        Dispatch<T, R>(core, std::move(promise), std::move(invoker), std::move(tuple));
      } else {
        promise.SetError(std::make_exception_ptr(InvalidOptionError(
            "Worker call: unwrap_futures is false, so Future arguments are passed as they are, "
            "but the method takes their values; leave unwrap_futures on")));
      }
    }
  }
  return result;
}

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_INTERNAL_WORKER_IMPL_H_

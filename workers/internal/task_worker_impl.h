// Template machinery behind TaskWorker and Task (workers/task_worker.h). Internal: include
// workers/task_worker.h instead.
//
// Calls. A TaskWorker is a Worker<TaskHost> (an empty object) whose calls are invokers that
// ignore the object: SubmitCall does the rest (future unwrapping, flattening, the submission
// gate), exactly as for Worker<T>::Call.
//
// Map is a Stream (sync/stream.h, Order::kInput) on InlineExecutor() over the input (several
// inputs are zipped by ZipRange) whose function, MapFn, submits the input to the worker and
// returns the call's future. The stream's own window is the bound: an item is in flight from its
// dispatch (the stream pulled it and MapFn submitted it) until its future completes, and the
// stream pulls the next input only when a slot frees. Stopping the stream (an error under
// kStopOnError, a `break`, Cancel()) cancels the pending futures, which drops the calls still
// queued on the worker (a queued call whose future is cancelled does not run).
//
// Per-item timeout. With a finite timeout MapFn returns its own future instead (TimedCall): it
// registers the item with a Timer at dispatch time (before submitting, so a sync worker that
// runs the call inline is covered too), forwards the call's outcome when it completes, and the
// timer, at `dispatch + timeout`, cancels the call (dropped if still queued; a running call runs
// on, its result ignored) and then fails the item with TimeoutError. The outcome depends on the
// clock alone: a call that completes when Now() >= the deadline fails too, whether or not the
// timer's thread got there first (exact on a FakeClock). One Timer thread per Map waits on the
// Map's Clock for the earliest deadline: it sleeps on the mutex while no item is pending, is woken
// by a new earlier deadline or by Shutdown(), never polls.
//
// Lifetime. MapFn lives in the stream (the stream's function), so it is destroyed after the
// stream has stopped and no item is in flight. Its destructor closes the MapGuard — no call of
// the Map starts the user function after that — and waits for the calls that are running it
// (a timed-out or cancelled call may still run), so that a function capturing locals by
// reference is safe once the Map is gone. Then it stops the timer thread.

#ifndef CONCURRY_WORKERS_INTERNAL_TASK_WORKER_IMPL_H_
#define CONCURRY_WORKERS_INTERNAL_TASK_WORKER_IMPL_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/timer.h"
#include "sync/stream.h"
#include "workers/internal/actor.h"
#include "workers/internal/worker_impl.h"
#include "workers/options.h"
#include "workers/registration.h"

namespace concurry::workers_internal {

// Calls a function it owns (one TaskWorker::Submit).
template <typename F>
struct FnInvoker {
  F fn;
  template <typename... A>
  requires std::is_invocable_v<F&, A&&...>
  decltype(auto) operator()(TaskHost&, A&&... a) { return std::invoke(fn, std::forward<A>(a)...); }
};

// Calls a function shared by many calls (a Task's bound function). One worker runs its calls one
// at a time, so it never calls the function concurrently; a pool's workers do (see Task).
template <typename F>
struct SharedFnInvoker {
  std::shared_ptr<F> fn;
  template <typename... A>
  requires std::is_invocable_v<F&, A&&...>
  decltype(auto) operator()(TaskHost&, A&&... a) const {
    return std::invoke(*fn, std::forward<A>(a)...);
  }
};

// A call of a registered free function through a worker whose calls cross a byte boundary
// (kLoopback, kProcess): encodes the arguments as F's parameter types, sends them under the
// function's registered name to the actor's EncodedObject (the task host) and decodes the reply.
template <typename F>
struct EncodedFnInvoker {
  using Target = EncodedObject;
  F fn;
  absl::string_view name;  // Registered: lives for the program.
  template <typename... A>
  requires std::is_invocable_v<F&, A&&...> Future<FunctionReplyT<F>>
  operator()(EncodedObject& object, A&&... a) const {
    return DecodeLater<FunctionReplyT<F>>(
        object.Invoke(name, EncodeFunctionCall<F>(std::forward<A>(a)...)));
  }
};

// Whether a TaskWorker in an encoding mode could send `F` by name: a function pointer whose
// types cross a byte boundary (it may still turn out not to be registered).
template <typename F>
inline constexpr bool kSendableFunction = IsEncodableFunction<F>();

// The InvalidOptionError of a callable that a worker in an encoding mode cannot send, for `api`
// (the caller's name) on a worker with `options`: an unregistered function pointer when
// `is_function_pointer`, else a lambda, function object or std::function.
std::exception_ptr UnsendableCallableError(const char* api, const ResolvedWorkerOptions& options,
                                           bool is_function_pointer);

// Submits `fn(args...)` to a TaskWorker whose calls cross a byte boundary; returns the same
// future type as an in-process submission (`Result`), failed with UnsendableCallableError when
// `fn` is not a registered function.
template <typename Result, typename F, typename... A>
Result SubmitEncoded(const std::shared_ptr<ActorCore>& core, const F& fn, const char* api,
                     A&&... args) {
  if constexpr (kSendableFunction<F>) {
    if (const std::optional<absl::string_view> name =
            FunctionNameOf(reinterpret_cast<void (*)()>(fn))) {
      auto future =
          SubmitCall<TaskHost>(core, EncodedFnInvoker<F>{fn, *name}, std::forward<A>(args)...);
      static_assert(std::is_same_v<decltype(future), Result>,
                    "TaskWorker: an encoded call's result type differs from a local call's");
      return future;
    }
  }
  return Result(MakeFailedFuture<typename Result::value_type>(
      UnsendableCallableError(api, core->options(), FunctionTraits<F>::kIsFunction)));
}

// The registered name of `fn` for a Map over a worker in an encoding mode (`core`); throws
// UnsendableCallableError when `fn` is not a registered function.
template <typename F>
absl::string_view SendableNameOrThrow(const F& fn, const ActorCore& core, const char* api) {
  if constexpr (kSendableFunction<F>) {
    if (const std::optional<absl::string_view> name =
            FunctionNameOf(reinterpret_cast<void (*)()>(fn))) {
      return *name;
    }
  }
  std::rethrow_exception(
      UnsendableCallableError(api, core.options(), FunctionTraits<F>::kIsFunction));
}

// `fn` can be stored (decay-copied) and called with `args`, as they are or with futures
// unwrapped.
template <typename F, typename... A>
concept TaskCallable = std::is_constructible_v<std::decay_t<F>, F> &&
    kCallable<TaskHost, FnInvoker<std::decay_t<F>>, A...>;

// The calls of one Map that run the user function: the Map's destruction closes it and waits for
// them. Thread-safe.
class MapGuard {
 public:
  // Counts a call in; returns false once closed (the call must not run the function then).
  bool Enter() ABSL_LOCKS_EXCLUDED(mu_);
  void Exit() ABSL_LOCKS_EXCLUDED(mu_);
  // Lets no further call in and waits until no call is inside.
  void CloseAndWait() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// Throws the CancelledError of a Map call that would start after the Map was destroyed.
[[noreturn]] void ThrowMapClosed();

// Calls a Map's function inside the Map's guard.
template <typename F>
struct MapInvoker {
  std::shared_ptr<F> fn;
  std::shared_ptr<MapGuard> guard;

  template <typename... A>
  requires std::is_invocable_v<F&, A&&...>
  decltype(auto) operator()(TaskHost&, A&&... a) const {
    if (!guard->Enter()) ThrowMapClosed();
    struct Exit {
      MapGuard* guard;
      ~Exit() { guard->Exit(); }
    } exit{guard.get()};
    return std::invoke(*fn, std::forward<A>(a)...);
  }
};

// `F` (decayed) can be called with one element of each input, as they are or with futures
// unwrapped.
template <typename F, typename... Inputs>
concept MapCallable = (sizeof...(Inputs) >= 1) && (std::ranges::input_range<Inputs> && ...) &&
                      kCallable<TaskHost, MapInvoker<F>, std::ranges::range_value_t<Inputs>...>;

// The misuses behind a rejected TaskWorker::Submit, Task call, TaskWorker::Map and Task::Map, each
// as one error (see CallRejected in worker_impl.h). Each static_assert fires only when the ones
// before it hold, so exactly one does.
template <typename F, typename... A>
CallRejected RejectSubmit() {
  constexpr bool kFunction = kLooksCallable<F>;
  constexpr bool kStorable = std::is_constructible_v<std::decay_t<F>, F>;
  static_assert(kFunction,
                "TaskWorker::Submit: the first argument must be callable (a function, a lambda or "
                "a function object); the remaining arguments are passed to it");
  static_assert(!kFunction || kStorable,
                "TaskWorker::Submit: the function is copied or moved into the worker, and this one "
                "can be neither (pass a move-only function as an rvalue: std::move(fn))");
  static_assert(!kFunction || !kStorable,
                "TaskWorker::Submit: the function cannot be called with the remaining arguments "
                "(check their number and types; Future arguments are replaced by their values)");
  return {};
}

template <typename F, typename... A>
CallRejected RejectTaskCall() {
  static_assert(sizeof(F) == 0,
                "Task: the bound function cannot be called with these arguments (check their "
                "number and types; Future arguments are replaced by their values)");
  return {};
}

template <typename F, typename... Inputs>
CallRejected RejectMap() {
  constexpr bool kFunction = kLooksCallable<F>;
  constexpr bool kStorable = std::is_constructible_v<std::decay_t<F>, F>;
  constexpr bool kHasInputs = sizeof...(Inputs) >= 1;
  constexpr bool kRanges = (std::ranges::input_range<Inputs> && ...);
  static_assert(kFunction,
                "TaskWorker::Map: the first argument (after the MapOptions, if any) must be "
                "callable (a function, a lambda or a function object), then come the input ranges");
  static_assert(!kFunction || kStorable,
                "TaskWorker::Map: the function is copied or moved into the map, and this one can "
                "be neither (pass a move-only function as an rvalue: std::move(fn))");
  static_assert(!kFunction || !kStorable || kHasInputs,
                "TaskWorker::Map: give one or more input ranges after the function");
  static_assert(!kFunction || !kStorable || !kHasInputs || kRanges,
                "TaskWorker::Map: every argument after the function must be an input range (a "
                "container or a view), one per parameter of the function");
  static_assert(!kFunction || !kStorable || !kHasInputs || !kRanges,
                "TaskWorker::Map: the function cannot be called with one element of each input "
                "(check the element types; Future elements are replaced by their values)");
  return {};
}

template <typename F, typename... Inputs>
CallRejected RejectTaskMap() {
  constexpr bool kHasInputs = sizeof...(Inputs) >= 1;
  constexpr bool kRanges = (std::ranges::input_range<Inputs> && ...);
  static_assert(kHasInputs, "Task::Map: give one or more input ranges");
  static_assert(!kHasInputs || kRanges,
                "Task::Map: every argument (after the MapOptions, if any) must be an input range "
                "(a container or a view), one per parameter of the bound function");
  static_assert(!kHasInputs || !kRanges,
                "Task::Map: the bound function cannot be called with one element of each input "
                "(check the element types; Future elements are replaced by their values)");
  return {};
}

// The TimeoutError of Map item `index` after `timeout`.
std::exception_ptr MapItemTimeoutError(int64_t index, absl::Duration timeout);

inline void CancelQuietly(const AnyFuture& future) noexcept {
  if (!future.valid()) return;
  try {
    future.Cancel();
  } catch (...) {
  }
}

// One Map item with a timeout: the future the stream sees. Completed by the call's outcome
// (Forward), by the timer (Expire) or cancelled by the stream, whichever comes first. A call that
// completes at or after the deadline on the clock counts as timed out even if the timer's thread
// has not expired the item yet, so the outcome depends on the clock alone. Thread-safe.
template <typename R>
class TimedCall final {
 public:
  TimedCall(int64_t index, absl::Duration timeout, absl::Time deadline, Clock& clock)
      : index_(index), timeout_(timeout), deadline_(deadline), clock_(clock) {}

  Promise<R>& promise() { return promise_; }

  // The deadline passed: cancels the call (dropped if still queued), then fails the item. In that
  // order, so that once the TimeoutError can be seen the call can no longer start.
  void Expire() noexcept {
    CancelQuietly(Close(/*expired=*/true));  // Its Forward, if it runs now, fails the item too.
    FailWithTimeout();
  }
  // The stream cancelled the item: cancel the call too.
  void OnCancelled() noexcept { CancelQuietly(Close(/*expired=*/false)); }
  // Records the worker call; cancels it at once when the item is already over.
  void Attach(AnyFuture call) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (!closed_) {
        call_ = std::move(call);
        return;
      }
    }
    CancelQuietly(call);
  }
  // Completes the item with the finished call's outcome, or with TimeoutError once the deadline
  // passed (no-op if the item is over).
  void Forward(Future<R> call) noexcept {
    if (Expired() || clock_.Now() >= deadline_) {
      FailWithTimeout();
      return;
    }
    try {
      if (call.Cancelled()) {
        promise_.Cancel();
      } else if (std::exception_ptr error = call.Error()) {
        promise_.SetError(std::move(error));
      } else if constexpr (std::is_void_v<R>) {
        promise_.SetValue();
      } else {
        promise_.SetValue(std::move(call).Result());
      }
    } catch (...) {
      promise_.SetError(std::current_exception());
    }
  }
  // Fails the item with `error` (submitting the call failed).
  void Fail(std::exception_ptr error) noexcept {
    Close(/*expired=*/false);
    promise_.SetError(std::move(error));
  }

 private:
  AnyFuture Close(bool expired) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    expired_ = expired_ || expired;
    return std::move(call_);
  }
  bool Expired() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return expired_;
  }
  void FailWithTimeout() noexcept {
    try {
      promise_.SetError(MapItemTimeoutError(index_, timeout_));
    } catch (...) {
      // Out of memory building the error: complete the item all the same.
      try {
        promise_.Cancel();
      } catch (...) {
      }
    }
  }

  const int64_t index_;
  const absl::Duration timeout_;
  const absl::Time deadline_;
  Clock& clock_;
  // Never reassigned: its methods are thread-safe.
  Promise<R> promise_;
  absl::Mutex mu_;
  AnyFuture call_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool expired_ ABSL_GUARDED_BY(mu_) = false;
};

// The future type of submitting `In` (a tuple of the zipped elements when kZipped) to `F`.
template <typename F, typename In, bool kZipped>
struct MapCallFuture {
  using type = decltype(SubmitCall<TaskHost>(std::declval<const std::shared_ptr<ActorCore>&>(),
                                             std::declval<MapInvoker<F>>(), std::declval<In>()));
};
template <typename F, typename... E>
struct MapCallFuture<F, std::tuple<E...>, true> {
  using type = decltype(SubmitCall<TaskHost>(std::declval<const std::shared_ptr<ActorCore>&>(),
                                             std::declval<MapInvoker<F>>(), std::declval<E>()...));
};

// The stream function of a Map: submits one input to the worker. See the file comment.
// Move-only; a moved-from MapFn does nothing when destroyed. Thread-safe to call (the stream
// calls it from the consumer's and the completing threads).
template <typename F, typename In, bool kZipped>
class MapFn {
 public:
  using CallFuture = typename MapCallFuture<F, In, kZipped>::type;
  using R = typename CallFuture::value_type;

  MapFn(std::shared_ptr<ActorCore> core, std::shared_ptr<F> fn, absl::string_view encoded_name,
        absl::Duration timeout, Clock* clock)
      : core_(std::move(core)),
        invoker_{std::move(fn), std::make_shared<MapGuard>()},
        encoded_name_(encoded_name),
        timeout_(timeout),
        clock_(clock != nullptr ? clock : &Clock::Real()) {
    if (timeout != absl::InfiniteDuration()) timer_ = std::make_shared<Timer>(*clock_);
  }
  MapFn(MapFn&&) noexcept = default;
  MapFn& operator=(MapFn&&) = delete;
  ~MapFn() {
    if (invoker_.guard != nullptr) invoker_.guard->CloseAndWait();
    if (timer_ != nullptr) timer_->Shutdown();
  }

  CallFuture operator()(In&& input, StreamContext<In>& context) const {
    if (timer_ == nullptr) return Call(std::move(input));
    const absl::Time deadline = clock_->Now() + timeout_;
    auto item = std::make_shared<TimedCall<R>>(context.index(), timeout_, deadline, *clock_);
    CallFuture out = item->promise().GetFuture();
    // Expiring an item can refill the map's window, which submits to the worker; Timer callbacks
    // run in a NonBlockingScope, so that never blocks the timer's thread under kBlock.
    const Timer::Id key = timer_->Schedule(deadline, [item] { item->Expire(); });
    // The promise holds this callback, which holds the item, until the promise completes (it
    // always does: the call's future always completes, and Forward completes the item).
    item->promise().OnCancel([item, timer = timer_, key] {
      item->OnCancelled();
      timer->Cancel(key);
    });
    CallFuture call;
    try {
      call = Call(std::move(input));
    } catch (...) {
      timer_->Cancel(key);
      item->Fail(std::current_exception());
      return out;
    }
    item->Attach(call);
    AnyFuture any = call;
    // `call` moves into the callback: its only consumer handle, so the value moves through.
    any.AddDoneCallback([item, timer = timer_, key, call = std::move(call)]() mutable {
      timer->Cancel(key);
      item->Forward(std::move(call));
    });
    return out;
  }

 private:
  CallFuture Call(In&& input) const {
    if constexpr (kSendableFunction<F>) {
      if (!encoded_name_.empty()) {
        // A worker that encodes calls: by the function's registered name (no guard needed: a
        // function pointer refers to nothing of the caller's).
        const EncodedFnInvoker<F> invoker{*invoker_.fn, encoded_name_};
        if constexpr (kZipped) {
          return std::apply(
              [&](auto&&... e) {
                return SubmitCall<TaskHost>(core_, invoker, std::forward<decltype(e)>(e)...);
              },
              std::move(input));
        } else {
          return SubmitCall<TaskHost>(core_, invoker, std::move(input));
        }
      }
    }
    if constexpr (kZipped) {
      return std::apply(
          [this](auto&&... e) {
            return SubmitCall<TaskHost>(core_, invoker_, std::forward<decltype(e)>(e)...);
          },
          std::move(input));
    } else {
      return SubmitCall<TaskHost>(core_, invoker_, std::move(input));
    }
  }

  std::shared_ptr<ActorCore> core_;
  MapInvoker<F> invoker_;
  // The function's registered name when the worker encodes calls, else empty.
  absl::string_view encoded_name_;
  absl::Duration timeout_;
  Clock* clock_;
  std::shared_ptr<Timer> timer_;
};

// Several input ranges walked in lock step, ending with the shortest. Its elements are tuples of
// the inputs' elements: copied from lvalue inputs and views, moved out of containers passed as
// rvalues (which it owns). Single pass; sized when every input is. Not thread-safe; the stream
// pulls it under its lock.
template <typename... R>
class ZipRange {
  template <size_t I>
  using Arg = std::tuple_element_t<I, std::tuple<R...>>;
  template <size_t I>
  using View = std::views::all_t<Arg<I>>;
  // Owned containers give up their elements.
  template <size_t I>
  static constexpr bool kMoveOut =
      !std::is_lvalue_reference_v<Arg<I>> && !std::ranges::view<std::remove_cvref_t<Arg<I>>>;
  using Views = std::tuple<std::views::all_t<R>...>;

 public:
  using value_type = std::tuple<std::ranges::range_value_t<std::views::all_t<R>>...>;

  class iterator {
   public:
    using iterator_concept = std::input_iterator_tag;
    using value_type = ZipRange::value_type;
    using difference_type = std::ptrdiff_t;

    iterator() = default;

    value_type operator*() const { return Get(std::index_sequence_for<R...>()); }
    iterator& operator++() {
      std::apply([](auto&... it) { (++it, ...); }, its_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.AtEnd(std::index_sequence_for<R...>());
    }

   private:
    friend class ZipRange;
    iterator(std::tuple<std::ranges::iterator_t<std::views::all_t<R>>...> its,
             std::tuple<std::ranges::sentinel_t<std::views::all_t<R>>...> ends)
        : its_(std::move(its)), ends_(std::move(ends)) {}

    template <size_t... I>
    value_type Get(std::index_sequence<I...>) const {
      return value_type(Element<I>()...);
    }
    template <size_t I>
    std::ranges::range_value_t<View<I>> Element() const {
      if constexpr (kMoveOut<I>) {
        return std::ranges::range_value_t<View<I>>(std::ranges::iter_move(std::get<I>(its_)));
      } else {
        return std::ranges::range_value_t<View<I>>(*std::get<I>(its_));
      }
    }
    template <size_t... I>
    bool AtEnd(std::index_sequence<I...>) const {
      return ((std::get<I>(its_) == std::get<I>(ends_)) || ...);
    }

    std::tuple<std::ranges::iterator_t<std::views::all_t<R>>...> its_;
    std::tuple<std::ranges::sentinel_t<std::views::all_t<R>>...> ends_;
  };

  explicit ZipRange(R&&... inputs) : views_(std::views::all(std::forward<R>(inputs))...) {}

  iterator begin() {
    return std::apply(
        [](auto&... v) { return iterator({std::ranges::begin(v)...}, {std::ranges::end(v)...}); },
        views_);
  }
  std::default_sentinel_t end() const { return std::default_sentinel; }
  size_t size() requires(std::ranges::sized_range<std::views::all_t<R>>&&...) {
    return std::apply(
        [](auto&... v) { return std::min({static_cast<size_t>(std::ranges::size(v))...}); },
        views_);
  }

 private:
  Views views_;
};

// Runs a Map of `fn` over `inputs` on the worker behind `core`; `options` are validated stream
// options (Order::kInput) and `timeout` the per-item timeout.
template <typename F, typename... Inputs>
auto MapOn(std::shared_ptr<ActorCore> core, std::shared_ptr<F> fn, absl::string_view encoded_name,
           StreamOptions options, absl::Duration timeout, Inputs&&... inputs) {
  Clock* clock = options.clock;
  // How many of the worker's calls can run at once (1 for one worker, a pool's size, min'd with
  // its executor's concurrency): what the map really gets of max_in_flight, reported by the
  // stream's effective_concurrency(). No warning: queueing items ahead of a worker is a normal
  // way to keep it busy.
  const sync_internal::StreamRunner runner = {.max_concurrency = core->max_concurrency(),
                                              .description = "the worker",
                                              .api = "concurry::Map",
                                              .warn = false};
  if constexpr (sizeof...(Inputs) == 1) {
    using In = std::ranges::range_value_t<std::tuple_element_t<0, std::tuple<Inputs...>>>;
    return sync_internal::StreamOn(
        InlineExecutor(), std::forward<Inputs>(inputs)...,
        MapFn<F, In, false>(std::move(core), std::move(fn), encoded_name, timeout, clock),
        std::move(options), runner);
  } else {
    using Zip = ZipRange<Inputs...>;
    static_assert(std::ranges::input_range<Zip>);
    using In = typename Zip::value_type;
    return sync_internal::StreamOn(
        InlineExecutor(), Zip(std::forward<Inputs>(inputs)...),
        MapFn<F, In, true>(std::move(core), std::move(fn), encoded_name, timeout, clock),
        std::move(options), runner);
  }
}

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_INTERNAL_TASK_WORKER_IMPL_H_

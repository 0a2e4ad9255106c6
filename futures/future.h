// Future<T> and Promise<T>: one future type for every backend (inline, oneTBB, workers, remote).
//
//   concurry::Promise<int> promise;
//   concurry::Future<int> future = promise.GetFuture();
//   promise.SetValue(42);                        // from any thread
//   int v = future.Result(absl::Seconds(1));     // 42; rethrows the producer's exception as is
//   absl::StatusOr<int> s = future.StatusOr();   // no-throw view
//   concurry::Future<std::string> g = future.Then([](int x) { return absl::StrCat(x); });
//
// Futures are cheap shared handles (copying shares the result), thread-safe, awaitable with
// `co_await`, and usable as the return type of a C++20 coroutine. AnyFuture erases the value type
// so futures of different types can be waited on together.

#ifndef CONCURRY_FUTURES_FUTURE_H_
#define CONCURRY_FUTURES_FUTURE_H_

#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/internal/future_state.h"
#include "futures/internal/wait_driver.h"

namespace concurry {

template <typename T>
class Future;
template <typename T>
class Promise;
template <typename T>
class Coro;  // futures/coro.h

namespace futures_internal {

template <typename R>
struct Unwrap {
  using type = R;
};
template <typename U>
struct Unwrap<Future<U>> {
  using type = U;
};
template <>
struct Unwrap<absl::Status> {
  using type = void;
};
template <typename U>
struct Unwrap<absl::StatusOr<U>> {
  using type = U;
};
template <typename U>
struct Unwrap<Coro<U>> {
  using type = U;
};

template <typename R>
inline constexpr bool kIsFuture = false;
template <typename U>
inline constexpr bool kIsFuture<Future<U>> = true;
template <typename R>
inline constexpr bool kIsStatusOr = false;
template <typename U>
inline constexpr bool kIsStatusOr<absl::StatusOr<U>> = true;
template <typename R>
inline constexpr bool kIsCoro = false;
template <typename U>
inline constexpr bool kIsCoro<Coro<U>> = true;

template <typename T>
Future<T> FutureFromState(FutureRef<T> state);
template <typename T>
FutureRef<T> ReleaseState(Future<T>&& future);
// The promise owning `state` (one producer reference, adopted).
template <typename T>
Promise<T> PromiseFromState(StateRef<State<T>> state);
// The state of a valid `promise`.
template <typename T>
State<T>* PromiseState(const Promise<T>& promise);
// Ends `promise` as its destructor would (a pending state fails with BrokenPromiseError) but
// hands its reference to the caller, who drops it later (StateBase::Unref); `promise` is left
// invalid.
template <typename T>
State<T>* DetachState(Promise<T>& promise);
// Records the serial context (a worker) that completes `promise` (StateBase::set_producer). Call
// before the future is handed out.
template <typename T>
void SetProducer(Promise<T>& promise, const void* producer);
// Offers `driver` (wait_driver.h) for `promise`'s future on the calling thread.
template <typename T>
void OfferWaitDriver(Promise<T>& promise, std::shared_ptr<WaitDriver> driver);

// Invokes `fn(args...)` and completes `promise` with the outcome: a returned Future<U> is
// flattened, a returned absl::Status / absl::StatusOr<U> becomes a value or a StatusError, and a
// thrown exception becomes the error with its original type.
template <typename U, typename F, typename... Args>
void CompleteWithInvoke(Promise<U>& promise, F&& fn, Args&&... args) noexcept;

// Runs `coro` as a top-level coroutine and completes `promise` with its outcome (futures/coro.h):
// on the calling thread's coroutine scheduler when there is one, else with its first step on this
// thread and each later step on the thread that wakes it (never blocking). Cancelling the promise's
// future cancels the coroutine. `on_finished` (may be empty) runs after the frame is destroyed and
// the promise completed: it keeps alive what the frame refers to (a capturing lambda's closure).
// Defined in futures/internal/coro_impl.h.
template <typename U>
void CompleteWithCoro(Promise<U>& promise, Coro<U> coro,
                      absl::AnyInvocable<void()> on_finished) noexcept;
// Runs `body` with a scheduler over `executor` current (futures/coro.h): a coroutine that `body`
// starts as a root runs its steps on `executor`, as Async's do. Defined in futures/coro.cc.
void RunWithCoroExecutor(Executor& executor, absl::FunctionRef<void()> body);
// Async's branch for a callable returning Coro<U>: its steps run on `executor`; the callable and
// its arguments live until the coroutine ends. Defined in futures/internal/coro_impl.h.
template <typename U, typename Fn, typename Tuple>
Future<U> AsyncCoro(Executor& executor, Fn fn, Tuple bound);

}  // namespace futures_internal

// The result type of Async / Then for a function returning R: U for R = Future<U>, Coro<U> or
// absl::StatusOr<U>; void for absl::Status; R otherwise.
template <typename R>
using UnwrapT = typename futures_internal::Unwrap<std::decay_t<R>>::type;

// A handle to a result that is, or will be, a value of type T, an error, or cancelled.
//
// Copies share one result. `Result()` on an lvalue returns a reference valid while any copy lives;
// on an rvalue it moves the value out when no other handle or pending Then/AddDoneCallback could
// still read it, and copies it otherwise. A move-only value is always moved out: other copies
// then throw InvalidOptionError instead of reading it (reading it concurrently with the move is a
// data race, as with any object).
// A default-constructed or moved-from Future is invalid: every operation on it except valid()
// throws InvalidOptionError.
//
// Thread-safe: any number of threads may wait on, query, cancel and attach callbacks to copies of
// one future concurrently.
template <typename T>
class Future {
  static_assert(!std::is_reference_v<T>, "Future<T&> is not supported; use Future<T*>");

 public:
  using value_type = T;
  class promise_type;  // Makes `Future<T> f() { co_return v; }` a coroutine (future.h bottom).

  Future() = default;

  // Returns whether this handle refers to a shared state.
  bool valid() const noexcept { return static_cast<bool>(state_); }
  // Returns whether the future holds a value, an error or was cancelled.
  bool Done() const { return Checked("Done")->done(); }
  // Returns whether the future was cancelled.
  bool Cancelled() const {
    return Checked("Cancelled")->phase() == futures_internal::Phase::kCancelled;
  }
  // Cancels a pending future: waiters see CancelledError and the producer's cancellation token
  // fires. Returns false, changing nothing, when the future is already done or its producer is
  // completing it at this moment.
  bool Cancel() const { return Checked("Cancel")->Cancel(); }

  // Blocks until done or `timeout` passes on `clock`. Returns Done(). Negative timeouts throw
  // InvalidOptionError. The wait is a BlockingRegion (executor.h). Inside a worker's call, waiting
  // for a pending call queued behind it in the same worker throws DeadlockError at once.
  bool Wait(absl::Duration timeout = absl::InfiniteDuration(), Clock& clock = Clock::Real()) const {
    auto* state = Checked("Wait");
    futures_internal::CheckTimeout(timeout, "Future::Wait");
    if (state->done()) return true;
    return state->WaitUntil(clock, futures_internal::DeadlineAfter(clock, timeout, "Future::Wait"),
                            "Future::Wait");
  }

  // Waits (see Wait) and returns the value; rethrows the producer's exception with its original
  // type, CancelledError when cancelled, TimeoutError when `timeout` passes first.
  decltype(auto) Result(absl::Duration timeout = absl::InfiniteDuration(),
                        Clock& clock = Clock::Real()) const& {
    [[maybe_unused]] auto* state = WaitOrThrow("Result", timeout, clock);
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      if (state->value_taken()) futures_internal::ThrowValueTaken("Future::Result");
      return static_cast<const T&>(state->value());
    }
  }
  T Result(absl::Duration timeout = absl::InfiniteDuration(), Clock& clock = Clock::Real()) && {
    [[maybe_unused]] auto* state = WaitOrThrow("Result", timeout, clock);
    if constexpr (std::is_void_v<T>) {
      state_ = {};
      return;
    } else {
      const futures_internal::FutureRef<T> held = std::move(state_);
      return futures_internal::TakeOrCopy(*held, "Future::Result");
    }
  }

  // Waits (see Wait) and returns the error: null after a value, CancelledError when cancelled.
  // Throws only TimeoutError (the wait ran out) or InvalidOptionError (bad timeout or handle).
  std::exception_ptr Error(absl::Duration timeout = absl::InfiniteDuration(),
                           Clock& clock = Clock::Real()) const {
    auto* state = Checked("Error");
    if (!Wait(timeout, clock)) futures_internal::ThrowTimeout("Future::Error", timeout);
    return state->error();
  }

  // No-throw view: OK, the error's status (StatusFromException), or kDeadlineExceeded when
  // `timeout` passes first. An invalid handle or a negative timeout gives kInvalidArgument.
  absl::Status Status(absl::Duration timeout = absl::InfiniteDuration(),
                      Clock& clock = Clock::Real()) const noexcept {
    try {
      return futures_internal::WaitStatus(Checked("Status"), "Future::Status", timeout, clock);
    } catch (...) {
      return StatusFromException(std::current_exception());
    }
  }
  // View of the value as absl::StatusOr; see Status(). Copies the value (moves it out on an
  // rvalue); no-throw unless copying (moving) T may throw.
  template <typename U = T, typename = std::enable_if_t<!std::is_void_v<U>>>
  absl::StatusOr<U> StatusOr(
      absl::Duration timeout = absl::InfiniteDuration(),
      Clock& clock = Clock::Real()) const& noexcept(std::is_nothrow_copy_constructible_v<U>) {
    absl::Status status = Status(timeout, clock);
    if (!status.ok()) return status;
    return state_->value();
  }
  template <typename U = T, typename = std::enable_if_t<!std::is_void_v<U>>>
  absl::StatusOr<U> StatusOr(
      absl::Duration timeout = absl::InfiniteDuration(),
      Clock& clock = Clock::Real()) && noexcept(std::is_nothrow_move_constructible_v<U> &&
                                                (!std::is_copy_constructible_v<U> ||
                                                 std::is_nothrow_copy_constructible_v<U>)) {
    absl::Status status = Status(timeout, clock);
    if (!status.ok()) return status;
    return std::move(*this).Result();
  }

  // Runs `callback(const Future<T>&)` (or `callback()`) exactly once when the future is done:
  // immediately on this thread when it already is, else on the thread that completes it.
  // A callback that throws has its error printed to stderr and ignored.
  template <typename F>
  void AddDoneCallback(F&& callback) const;

  // Returns a future for `fn(value)`, run on the completing thread (or `executor`) after a value;
  // errors and cancellation pass through without calling `fn`. `fn` may return U, void,
  // Future<U>, Coro<U> (futures/coro.h), absl::Status or absl::StatusOr<U> (flattened). On an
  // rvalue future the value is passed as T&& when this is the only handle.
  //
  // A returned Coro<U> runs as a top-level coroutine, never blocking a thread: with `executor`,
  // every step runs there (as with Async); without, on the coroutine scheduler whose step
  // completes the future (so, inside a coroutine, on that coroutine's scheduler), else its first
  // step runs on the completing thread and each later one on the thread that wakes it (a timer's,
  // a completer's), as a Future-coroutine's do. That thread may be Timer::Default()'s (after a
  // SleepFor) or any other library thread, where slow work delays everyone else's: for steps that
  // do real work, prefer Then(executor, fn). `fn` and a copy of a const value live until the
  // coroutine ends, so a capturing coroutine lambda and reference parameters are safe.
  template <typename F>
  auto Then(F&& fn) const& {
    return ThenImpl<false>(state_, nullptr, std::forward<F>(fn));
  }
  template <typename F>
  auto Then(F&& fn) && {
    return ThenImpl<true>(std::move(state_), nullptr, std::forward<F>(fn));
  }
  template <typename F>
  auto Then(Executor& executor, F&& fn) const& {
    return ThenImpl<false>(state_, &executor, std::forward<F>(fn));
  }
  template <typename F>
  auto Then(Executor& executor, F&& fn) && {
    return ThenImpl<true>(std::move(state_), &executor, std::forward<F>(fn));
  }

  // Returns a process-unique id of the shared state (equal for copies).
  uint64_t id() const { return Checked("id")->id(); }

  friend bool operator==(const Future& a, const Future& b) {
    return a.state_.get() == b.state_.get();
  }

 private:
  template <typename>
  friend class Promise;
  friend class AnyFuture;
  template <typename U>
  friend Future<U> futures_internal::FutureFromState(futures_internal::FutureRef<U>);
  template <typename U>
  friend futures_internal::FutureRef<U> futures_internal::ReleaseState(Future<U>&&);

  explicit Future(futures_internal::FutureRef<T> state) : state_(std::move(state)) {}

  futures_internal::State<T>* Checked(const char* operation) const {
    if (!state_) futures_internal::ThrowInvalid("Future", operation);
    return state_.get();
  }

  futures_internal::State<T>* WaitOrThrow(const char* operation, absl::Duration timeout,
                                          Clock& clock) const {
    auto* state = Checked(operation);
    futures_internal::CheckTimeout(timeout, "Future::Result");
    if (!state->done() &&
        !state->WaitUntil(clock, futures_internal::DeadlineAfter(clock, timeout, "Future::Result"),
                          "Future::Result")) {
      futures_internal::ThrowTimeout("Future::Result", timeout);
    }
    if (state->phase() != futures_internal::Phase::kValue) std::rethrow_exception(state->error());
    return state;
  }

  template <bool kMove, typename F>
  static auto ThenImpl(futures_internal::FutureRef<T> source, Executor* executor, F&& fn);

  futures_internal::FutureRef<T> state_;
};

// The producer side of a Future. Move-only. Completing it twice, or after the future was
// cancelled, is a no-op that returns false. Destroying it while still pending fails the future
// with BrokenPromiseError, so waiters never hang on a lost producer.
//
// Thread-safe: Set* may race with Cancel() and with each other; exactly one outcome wins.
template <typename T>
class Promise {
 public:
  Promise() : state_(new futures_internal::State<T>()) {}
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& other) noexcept {
    if (this != &other) {
      Abandon();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~Promise() { Abandon(); }

  // Returns a future sharing this promise's result. May be called any number of times.
  Future<T> GetFuture() const { return Future<T>(Checked("GetFuture")); }

  // Completes with a value (built from `args`). Returns whether this call completed the future.
  template <typename... Args>
  bool SetValue(Args&&... args) {
    return CheckedRaw("SetValue")->SetValue(std::forward<Args>(args)...);
  }
  // Completes with `error` (keeps its type for the consumer). A null `error` is rejected with
  // InvalidOptionError.
  bool SetError(std::exception_ptr error) {
    if (!error) throw InvalidOptionError("Promise::SetError: the exception_ptr is null");
    return CheckedRaw("SetError")->SetError(std::move(error));
  }
  // Completes with a non-OK status (as StatusError); an OK status completes a Promise<void>.
  bool SetError(absl::Status status) {
    if (status.ok()) {
      if constexpr (std::is_void_v<T>) return SetValue();
      throw InvalidOptionError("Promise::SetError: the status is OK; use SetValue for values");
    }
    return SetError(ExceptionFromStatus(std::move(status)));
  }

  // Completes the future as cancelled (CancelledError for its consumers), as when work is dropped
  // before it ran. Returns whether this call completed the future.
  bool Cancel() { return CheckedRaw("Cancel")->Cancel(); }

  // Returns whether the future was cancelled (the cancellation token the producer polls).
  bool IsCancelled() const {
    return CheckedRaw("IsCancelled")->phase() == futures_internal::Phase::kCancelled;
  }
  // Runs `fn` once if the future is cancelled (now, if it already is); never after a value or
  // error.
  void OnCancel(absl::AnyInvocable<void()> fn) { CheckedRaw("OnCancel")->OnCancel(std::move(fn)); }

  bool valid() const noexcept { return static_cast<bool>(state_); }

 private:
  template <typename U>
  friend void futures_internal::SetProducer(Promise<U>&, const void*);
  template <typename U>
  friend Promise<U> futures_internal::PromiseFromState(
      futures_internal::StateRef<futures_internal::State<U>>);
  template <typename U>
  friend futures_internal::State<U>* futures_internal::PromiseState(const Promise<U>&);
  template <typename U>
  friend futures_internal::State<U>* futures_internal::DetachState(Promise<U>&);
  template <typename U>
  friend void futures_internal::OfferWaitDriver(Promise<U>&,
                                                std::shared_ptr<futures_internal::WaitDriver>);

  explicit Promise(futures_internal::StateRef<futures_internal::State<T>> state)
      : state_(std::move(state)) {}

  futures_internal::FutureRef<T> Checked(const char* op) const {
    return futures_internal::FutureRef<T>::Share(CheckedRaw(op));
  }
  futures_internal::State<T>* CheckedRaw(const char* op) const {
    if (!state_) futures_internal::ThrowInvalid("Promise", op);
    return state_.get();
  }
  void Abandon() noexcept {
    if (state_ && !state_->done()) {
      state_->SetError(std::make_exception_ptr(BrokenPromiseError()));
    }
  }

  futures_internal::StateRef<futures_internal::State<T>> state_;
};

// A future of any value type: done/cancel/wait/status/callbacks without the value. Every
// Future<T> converts to it implicitly. Thread-safe like Future<T>.
class AnyFuture {
 public:
  AnyFuture() = default;
  template <typename T>
  AnyFuture(const Future<T>& future)  // NOLINT(google-explicit-constructor): like a base class.
      : state_(future.state_ ? futures_internal::StateRef<futures_internal::StateBase>::Share(
                                   future.state_.get())
                             : futures_internal::StateRef<futures_internal::StateBase>()) {}

  bool valid() const noexcept { return static_cast<bool>(state_); }
  bool Done() const { return Checked("Done")->done(); }
  bool Cancelled() const {
    return Checked("Cancelled")->phase() == futures_internal::Phase::kCancelled;
  }
  bool Cancel() const { return Checked("Cancel")->Cancel(); }
  bool Wait(absl::Duration timeout = absl::InfiniteDuration(), Clock& clock = Clock::Real()) const;
  // See Future<T>::Error.
  std::exception_ptr Error(absl::Duration timeout = absl::InfiniteDuration(),
                           Clock& clock = Clock::Real()) const;
  // See Future<T>::Status.
  absl::Status Status(absl::Duration timeout = absl::InfiniteDuration(),
                      Clock& clock = Clock::Real()) const noexcept;
  // Runs `callback()` once when done (now if already done).
  void AddDoneCallback(absl::AnyInvocable<void()> callback) const;
  uint64_t id() const { return Checked("id")->id(); }

  // Low-level, for waiting on many futures (sync/): registers `callback` unless already done
  // (returns null then, without calling it). A non-null handle may be passed once to
  // RemoveCallback, which returns false when the callback already ran or is running.
  using CallbackHandle = futures_internal::CallbackNode*;
  CallbackHandle AddCallbackIfPending(absl::AnyInvocable<void()> callback) const;
  bool RemoveCallback(CallbackHandle handle) const;
  // Low-level (sync/): whether the future is pending and is the result of a call queued in the
  // worker whose call the calling thread runs, so that waiting for it here could never end.
  bool WaitWouldSelfDeadlock() const;

  friend bool operator==(const AnyFuture& a, const AnyFuture& b) {
    return a.state_.get() == b.state_.get();
  }

 private:
  futures_internal::StateBase* Checked(const char* operation) const {
    if (!state_) futures_internal::ThrowInvalid("AnyFuture", operation);
    return state_.get();
  }

  futures_internal::StateRef<futures_internal::StateBase> state_;
};

// Returns a future that already holds `value`. A Future argument is held as a value too
// (MakeReadyFuture(f) is a Future<Future<U>>); WrapFuture(f) returns f itself.
template <typename T>
Future<std::decay_t<T>> MakeReadyFuture(T&& value) {
  using V = std::decay_t<T>;
  return futures_internal::FutureFromState(futures_internal::FutureRef<V>(
      new futures_internal::State<V>(std::in_place, std::forward<T>(value))));
}
// Returns a Future<void> that is already done.
inline Future<void> MakeReadyFuture() {
  return futures_internal::FutureFromState(
      futures_internal::FutureRef<void>(new futures_internal::State<void>(std::in_place)));
}
// Returns `value` as a future, like concurry's wrap_future (idempotent): a Future<U> (lvalue or
// rvalue) is returned as itself, sharing its state (an invalid handle stays invalid); any other
// value becomes a ready Future<std::decay_t<T>> (MakeReadyFuture).
//
//   concurry::Future<int> a = concurry::WrapFuture(42);  // ready
//   concurry::Future<int> b = concurry::WrapFuture(a);   // b == a
template <typename T>
auto WrapFuture(T&& value) {
  if constexpr (futures_internal::kIsFuture<std::decay_t<T>>) {
    return std::decay_t<T>(std::forward<T>(value));
  } else {
    return MakeReadyFuture(std::forward<T>(value));
  }
}
// Returns a future that already failed with `error` (null is rejected with InvalidOptionError).
template <typename T>
Future<T> MakeFailedFuture(std::exception_ptr error) {
  if (!error) throw InvalidOptionError("MakeFailedFuture: the exception_ptr is null");
  return futures_internal::FutureFromState(
      futures_internal::FutureRef<T>(new futures_internal::State<T>(std::move(error))));
}
// Returns a future that already failed with the non-OK `status` (as StatusError).
template <typename T>
Future<T> MakeFailedFuture(absl::Status status) {
  if (status.ok()) throw InvalidOptionError("MakeFailedFuture: the status is OK");
  return MakeFailedFuture<T>(ExceptionFromStatus(std::move(status)));
}
// Returns a future that already failed with the exception object `error`.
template <typename T, typename E,
          typename = std::enable_if_t<std::is_base_of_v<std::exception, std::decay_t<E>>>>
Future<T> MakeFailedFuture(E&& error) {
  return MakeFailedFuture<T>(std::make_exception_ptr(std::forward<E>(error)));
}

// Runs `fn(args...)` on `executor` and returns a future for its result (flattened as in Then).
// The function and arguments are decay-copied (moved when rvalues). If the future is cancelled
// before the task starts, `fn` is not called. If the executor rejects the task (for instance it
// has stopped), the returned future holds that error. A `fn` returning Coro<U> (include
// futures/coro.h) gives a Future<U>: the coroutine's steps run as tasks of `executor`, `fn` and
// the arguments stay alive until it ends, and cancelling the future cancels it.
template <typename F, typename... Args>
auto Async(Executor& executor, F&& fn, Args&&... args)
    -> Future<UnwrapT<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>>>;

}  // namespace concurry

namespace concurry::futures_internal {
template <typename T>
Promise<T> PromiseFromState(StateRef<State<T>> state) {
  return Promise<T>(std::move(state));
}
template <typename T>
State<T>* PromiseState(const Promise<T>& promise) {
  return promise.CheckedRaw("PromiseState");
}
template <typename T>
State<T>* DetachState(Promise<T>& promise) {
  promise.Abandon();
  return promise.state_.Release();
}
template <typename T>
void SetProducer(Promise<T>& promise, const void* producer) {
  promise.CheckedRaw("SetProducer")->set_producer(producer);
}
template <typename T>
void OfferWaitDriver(Promise<T>& promise, std::shared_ptr<WaitDriver> driver) {
  OfferWaitDriver(promise.CheckedRaw("OfferWaitDriver"), std::move(driver));
}
}  // namespace concurry::futures_internal

#include "futures/internal/future_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_FUTURES_FUTURE_H_

// Template bodies for futures/future.h. Internal: include future.h instead.

#ifndef CONCURRY_FUTURES_INTERNAL_FUTURE_IMPL_H_
#define CONCURRY_FUTURES_INTERNAL_FUTURE_IMPL_H_

#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "futures/future.h"
#include "futures/internal/coro_scheduler.h"

namespace concurry {
namespace futures_internal {

template <typename T>
Future<T> FutureFromState(FutureRef<T> state) {
  return Future<T>(std::move(state));
}

template <typename T>
FutureRef<T> ReleaseState(Future<T>&& future) {
  return std::move(future.state_);
}

// Completes `promise` from a final state that is not a value (error or cancellation), or else
// calls `on_value` with the value (nothing for T = void): taken when kMove and no other consumer
// exists (else copied), a const reference otherwise. The caller holds one consumer reference.
// Failing to take or copy the value fails `promise`.
template <bool kMove, typename T, typename U, typename OnValue>
void WithValue(State<T>& state, Promise<U>& promise, OnValue&& on_value) noexcept {
  try {
    if (state.phase() == Phase::kCancelled) {
      promise.Cancel();
    } else if (state.phase() != Phase::kValue) {
      promise.SetError(state.error());
    } else if constexpr (std::is_void_v<T>) {
      on_value();
    } else if constexpr (kMove) {
      on_value(TakeOrCopy(state, "Future::Then"));
    } else {
      if (state.value_taken()) ThrowValueTaken("Future::Then");
      on_value(static_cast<const T&>(state.value()));
    }
  } catch (...) {
    promise.SetError(std::current_exception());
  }
}

// How CompleteWithInvoke keeps an argument of a coroutine function alive: a non-const lvalue
// (an object the caller owns, such as a worker's target) by reference, anything else by value.
template <typename A>
using KeptArg = std::conditional_t<std::is_lvalue_reference_v<A> &&
                                       !std::is_const_v<std::remove_reference_t<A>>,
                                   A, std::decay_t<A>>;

template <typename U, typename F, typename... Args>
void CompleteWithInvoke(Promise<U>& promise, F&& fn, Args&&... args) noexcept {
  using R = std::invoke_result_t<F, Args...>;
  try {
    if constexpr (std::is_void_v<R>) {
      std::invoke(std::forward<F>(fn), std::forward<Args>(args)...);
      promise.SetValue();
    } else if constexpr (kIsFuture<std::decay_t<R>>) {
      std::decay_t<R> inner = std::invoke(std::forward<F>(fn), std::forward<Args>(args)...);
      if (!inner.valid()) {
        throw InvalidOptionError("a continuation returned an invalid (default-constructed) Future");
      }
      // The callback owns the inner future's only handle, so a value can be moved through.
      FutureRef<U> held = ReleaseState(std::move(inner));
      State<U>* state = held.get();
      state->AddOrRunCallback(
          new CallbackNode{[p = std::move(promise), held = std::move(held)](StateBase&) mutable {
            WithValue</*kMove=*/true>(*held, p, [&p](auto&&... value) {
              p.SetValue(std::forward<decltype(value)>(value)...);
            });
          }});
    } else if constexpr (kIsCoro<std::decay_t<R>>) {
      // A coroutine's frame may refer to its callable (a capturing lambda's closure) and to its
      // reference parameters: both move to the heap first and live until the coroutine ends.
      static_assert(std::is_constructible_v<std::decay_t<F>, F&&> &&
                        (std::is_constructible_v<KeptArg<Args>, Args&&> && ...),
                    "a function returning Coro is kept alive with a copy of itself and of its "
                    "const arguments: make them copyable, or use std::move(future).Then(...)");
      using Kept = std::tuple<std::decay_t<F>, KeptArg<Args>...>;
      auto kept = std::make_shared<Kept>(std::forward<F>(fn), std::forward<Args>(args)...);
      std::decay_t<R> coro = std::apply(
          [](auto& f, auto&... kept_args) {
            return std::invoke(f, static_cast<Args&&>(kept_args)...);
          },
          *kept);
      CompleteWithCoro(promise, std::move(coro), [kept = std::move(kept)] {});
    } else if constexpr (std::is_same_v<std::decay_t<R>, absl::Status>) {
      absl::Status status = std::invoke(std::forward<F>(fn), std::forward<Args>(args)...);
      promise.SetError(std::move(status));  // OK completes a Promise<void>.
    } else if constexpr (kIsStatusOr<std::decay_t<R>>) {
      std::decay_t<R> result = std::invoke(std::forward<F>(fn), std::forward<Args>(args)...);
      if (result.ok()) {
        promise.SetValue(*std::move(result));
      } else {
        promise.SetError(std::move(result).status());
      }
    } else {
      promise.SetValue(std::invoke(std::forward<F>(fn), std::forward<Args>(args)...));
    }
  } catch (...) {
    // The promise may have been moved into a callback already (which then reports for it).
    if (promise.valid()) promise.SetError(std::current_exception());
  }
}

template <typename T>
struct CoroutinePromiseBase {
  Promise<T> promise;
  Future<T> get_return_object() { return promise.GetFuture(); }
  std::suspend_never initial_suspend() noexcept { return {}; }
  std::suspend_never final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { promise.SetError(std::current_exception()); }
};

// Awaits a future from a coroutine. In a Coro (futures/coro.h), or in any coroutine whose thread
// runs a coroutine scheduler's step, the completion posts the resumption to that scheduler: the
// completing thread never runs the frame. Elsewhere (a Future<T>-coroutine on a plain thread) it
// resumes on the thread that completes the future.
//
// A cancelled Coro wakes up here with CancelledError; the awaited future is cancelled too when
// this awaiter held its only consumer handle (a temporary such as `co_await worker.Call(...)`),
// and left alone when someone else shares it.
template <typename T>
class FutureAwaiter {
 public:
  explicit FutureAwaiter(Future<T> future) : future_(std::move(future)) {}
  bool await_ready() const { return future_.Done(); }
  template <typename P>
  bool await_suspend(std::coroutine_handle<P> handle) {
    AnyFuture any = future_;
    CoroControl* control = nullptr;
    if constexpr (std::is_base_of_v<CoroFrameBase, P>) control = handle.promise().control;
    if (control == nullptr) {
      own_ = MakeStandInControl();
      if (own_ == nullptr) {
        // Null means the future completed after await_ready: do not suspend.
        return any.AddCallbackIfPending([handle] { handle.resume(); }) != nullptr;
      }
      control = own_.get();
    }
    control_ = control;
    const uint64_t generation = control->Arm(handle);
    std::coroutine_handle<> erased = handle;
    callback_ = any.AddCallbackIfPending(
        [ref = control->shared_from_this(), generation, erased] { ref->Wake(generation, erased); });
    if (callback_ == nullptr && control->Disarm(generation)) return false;
    return control->Suspend(generation);
  }
  T await_resume() {
    // A stopped coroutine throws even when the future is done: its resumption was dropped.
    if (control_ != nullptr && control_->cancelled() && (control_->stopped() || !future_.Done())) {
      if (!future_.Done()) {
        AnyFuture any = future_;
        any.RemoveCallback(callback_);  // False: it ran, and only touched the control.
        const FutureRef<T> held = ReleaseState(std::move(future_));
        if (held->sole_consumer()) held->Cancel();
      }
      if (control_->stopped()) control_->ThrowEnded();
      throw CancelledError("the coroutine was cancelled while awaiting a future");
    }
    return std::move(future_).Result();
  }

 private:
  Future<T> future_;
  CoroControl* control_ = nullptr;    // Set when resumption goes through a scheduler.
  std::shared_ptr<CoroControl> own_;  // Stand-in control of a non-Coro coroutine.
  AnyFuture::CallbackHandle callback_ = nullptr;
};

}  // namespace futures_internal

template <typename T>
template <typename F>
void Future<T>::AddDoneCallback(F&& callback) const {
  auto* state = Checked("AddDoneCallback");
  using Callback = std::decay_t<F>;
  futures_internal::CallbackNode* node;
  if constexpr (std::is_invocable_v<Callback&, const Future<T>&>) {
    // The callback may read the value: it is a consumer from now on (see StateBase).
    node = new futures_internal::CallbackNode{
        [cb = Callback(std::forward<F>(callback)),
         self = Future<T>(state_)](futures_internal::StateBase&) mutable { cb(self); }};
  } else {
    static_assert(std::is_invocable_v<Callback&>,
                  "AddDoneCallback takes a callable with signature void(const Future<T>&) or "
                  "void()");
    node = new futures_internal::CallbackNode{
        [cb = Callback(std::forward<F>(callback))](futures_internal::StateBase&) mutable { cb(); }};
  }
  state->AddOrRunCallback(node);
}

namespace futures_internal {

// Calls `fn` with the value of the final state `state` (see WithValue) and completes `promise`
// with its outcome.
template <bool kMove, typename T, typename U, typename F>
void InvokeWithValue(State<T>& state, Promise<U>& promise, F& fn) noexcept {
  WithValue<kMove>(state, promise, [&](auto&&... value) {
    using R = std::invoke_result_t<F&, decltype(value)...>;
    if constexpr (kIsCoro<std::decay_t<R>>) {
      // A continuation runs once: its coroutine function moves into the coroutine's keep-alive.
      CompleteWithInvoke(promise, std::move(fn), std::forward<decltype(value)>(value)...);
    } else {
      CompleteWithInvoke(promise, fn, std::forward<decltype(value)>(value)...);
    }
  });
}

template <typename T, typename Fn, bool kMove>
struct ThenResult {
  using Arg = std::conditional_t<kMove, T&&, const T&>;
  using raw = std::invoke_result_t<Fn&, Arg>;
  using type = UnwrapT<raw>;
};
template <typename Fn, bool kMove>
struct ThenResult<void, Fn, kMove> {
  using raw = std::invoke_result_t<Fn&>;
  using type = UnwrapT<raw>;
};

}  // namespace futures_internal

template <typename T>
template <bool kMove, typename F>
auto Future<T>::ThenImpl(futures_internal::FutureRef<T> source, Executor* executor, F&& fn) {
  using Fn = std::decay_t<F>;
  using U = typename futures_internal::ThenResult<T, Fn, kMove>::type;
  if (!source) futures_internal::ThrowInvalid("Future", "Then");
  Promise<U> promise;
  Future<U> result = promise.GetFuture();
  futures_internal::State<T>* state = source.get();
  // The continuation owns `source`, a consumer reference: for an rvalue Then the caller's only
  // handle, so the value can be moved into `fn`.
  auto continuation = [fn = Fn(std::forward<F>(fn)), p = std::move(promise), executor,
                       held = std::move(source)](futures_internal::StateBase&) mutable {
    if (executor == nullptr) {
      futures_internal::InvokeWithValue<kMove>(*held, p, fn);
      return;
    }
    auto shared = std::make_shared<Promise<U>>(std::move(p));
    try {
      executor->Submit([fn = std::move(fn), shared, held = std::move(held), executor]() mutable {
        using Raw = typename futures_internal::ThenResult<T, Fn, kMove>::raw;
        if constexpr (futures_internal::kIsCoro<std::decay_t<Raw>>) {
          // A coroutine's steps all run on `executor`, as Async's do.
          futures_internal::RunWithCoroExecutor(
              *executor, [&] { futures_internal::InvokeWithValue<kMove>(*held, *shared, fn); });
        } else {
          futures_internal::InvokeWithValue<kMove>(*held, *shared, fn);
        }
      });
    } catch (...) {
      shared->SetError(std::current_exception());
    }
  };
  state->AddOrRunCallback(new futures_internal::CallbackNode{std::move(continuation)});
  return result;
}

template <typename F, typename... Args>
auto Async(Executor& executor, F&& fn, Args&&... args)
    -> Future<UnwrapT<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>>> {
  using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>;
  using U = UnwrapT<R>;
  if constexpr (futures_internal::kIsCoro<std::decay_t<R>>) {
    return futures_internal::AsyncCoro<U>(
        executor, std::decay_t<F>(std::forward<F>(fn)),
        std::make_tuple(std::decay_t<Args>(std::forward<Args>(args))...));
  } else {
    Promise<U> promise;
    Future<U> future = promise.GetFuture();
    try {
      executor.Submit(
          [p = std::move(promise), fn = std::decay_t<F>(std::forward<F>(fn)),
           bound = std::make_tuple(std::decay_t<Args>(std::forward<Args>(args))...)]() mutable {
            if (p.IsCancelled()) return;
            std::apply(
                [&](auto&&... a) {
                  futures_internal::CompleteWithInvoke(p, fn, std::forward<decltype(a)>(a)...);
                },
                std::move(bound));
          });
    } catch (...) {
      return MakeFailedFuture<U>(std::current_exception());
    }
    return future;
  }
}

// Coroutine support: `co_await future` and `Future<T>` as a coroutine's return type.
template <typename T>
futures_internal::FutureAwaiter<T> operator co_await(Future<T> future) {
  if (!future.valid()) futures_internal::ThrowInvalid("Future", "operator co_await");
  return futures_internal::FutureAwaiter<T>(std::move(future));
}

template <typename T>
class Future<T>::promise_type : public futures_internal::CoroutinePromiseBase<T> {
 public:
  template <typename V>
  void return_value(V&& value) {
    this->promise.SetValue(std::forward<V>(value));
  }
};

template <>
class Future<void>::promise_type : public futures_internal::CoroutinePromiseBase<void> {
 public:
  void return_void() { this->promise.SetValue(); }
};

}  // namespace concurry

#endif  // CONCURRY_FUTURES_INTERNAL_FUTURE_IMPL_H_

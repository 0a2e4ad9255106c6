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

namespace concurry {
namespace futures_internal {

template <typename T>
Future<T> FutureFromState(FutureRef<T> state) {
  return Future<T>(std::move(state));
}

// Completes `promise` from the outcome of `source` (value, error or cancellation).
template <typename U>
void Forward(Future<U>& source, Promise<U>& promise) noexcept {
  if (source.Cancelled()) {
    promise.Cancel();
    return;
  }
  try {
    if constexpr (std::is_void_v<U>) {
      std::move(source).Result();
      promise.SetValue();
    } else {
      promise.SetValue(std::move(source).Result());
    }
  } catch (...) {
    promise.SetError(std::current_exception());
  }
}

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
      inner.AddDoneCallback([p = std::move(promise)](const std::decay_t<R>& done) mutable {
        std::decay_t<R> copy = done;
        Forward(copy, p);
      });
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
    promise.SetError(std::current_exception());
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

// Awaits a future from a coroutine; resumes on the thread that completes it.
template <typename T>
class FutureAwaiter {
 public:
  explicit FutureAwaiter(Future<T> future) : future_(std::move(future)) {}
  bool await_ready() const { return future_.Done(); }
  bool await_suspend(std::coroutine_handle<> handle) {
    AnyFuture any = future_;
    // Null means the future completed after await_ready: do not suspend.
    return any.AddCallbackIfPending([handle] { handle.resume(); }) != nullptr;
  }
  T await_resume() { return std::move(future_).Result(); }

 private:
  Future<T> future_;
};

}  // namespace futures_internal

template <typename T>
template <typename F>
void Future<T>::AddDoneCallback(F&& callback) const {
  auto* state = Checked("AddDoneCallback");
  auto call = [cb = std::forward<F>(callback)](futures_internal::StateBase& base) mutable {
    if constexpr (std::is_invocable_v<decltype(cb)&, const Future<T>&>) {
      const Future<T> self(
          futures_internal::FutureRef<T>::Share(static_cast<futures_internal::State<T>*>(&base)));
      cb(self);
    } else {
      static_assert(std::is_invocable_v<decltype(cb)&>,
                    "AddDoneCallback takes a callable with signature void(const Future<T>&) or "
                    "void()");
      cb();
    }
  };
  auto* node = new futures_internal::CallbackNode{std::move(call)};
  // Already done: run it now, with the same error handling as on completion.
  if (!state->AddCallback(node)) state->RunCallbackNow(node);
}

namespace futures_internal {

// Calls `fn` with the value of the final state `state` (or with nothing for T = void) and completes
// `promise`. With kMove the value is moved out when no consumer handle remains (or T is move-only).
template <bool kMove, typename T, typename U, typename F>
void InvokeWithValue(State<T>& state, Promise<U>& promise, F& fn) noexcept {
  if (state.phase() == Phase::kCancelled) {
    promise.Cancel();
  } else if (state.phase() != Phase::kValue) {
    promise.SetError(state.error());
  } else if constexpr (std::is_void_v<T>) {
    CompleteWithInvoke(promise, fn);
  } else if constexpr (!kMove) {
    CompleteWithInvoke(promise, fn, static_cast<const T&>(state.value()));
  } else if (!std::is_copy_constructible_v<T> || state.consumers() == 0) {
    CompleteWithInvoke(promise, fn, std::move(state.value()));
  } else if constexpr (std::is_copy_constructible_v<T>) {
    T copy = state.value();
    CompleteWithInvoke(promise, fn, std::move(copy));
  }
}

template <typename T, typename Fn, bool kMove>
struct ThenResult {
  using Arg = std::conditional_t<kMove, T&&, const T&>;
  using type = UnwrapT<std::invoke_result_t<Fn&, Arg>>;
};
template <typename Fn, bool kMove>
struct ThenResult<void, Fn, kMove> {
  using type = UnwrapT<std::invoke_result_t<Fn&>>;
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
  auto continuation = [fn = Fn(std::forward<F>(fn)), p = std::move(promise),
                       executor](futures_internal::StateBase& base) mutable {
    auto& done = static_cast<futures_internal::State<T>&>(base);
    if (executor == nullptr) {
      futures_internal::InvokeWithValue<kMove>(done, p, fn);
      return;
    }
    // Keeps the state alive for the task without counting as a consumer.
    auto held = futures_internal::StateRef<futures_internal::State<T>>::Share(&done);
    auto shared = std::make_shared<Promise<U>>(std::move(p));
    try {
      executor->Submit([fn = std::move(fn), shared, held = std::move(held)]() mutable {
        futures_internal::InvokeWithValue<kMove>(*held, *shared, fn);
      });
    } catch (...) {
      shared->SetError(std::current_exception());
    }
  };
  auto* node = new futures_internal::CallbackNode{std::move(continuation)};
  if (!state->AddCallback(node)) {
    auto keep = futures_internal::StateRef<futures_internal::State<T>>::Share(state);
    if constexpr (kMove) source = {};  // Lets the continuation move the value out.
    state->RunCallbackNow(node);
  }
  return result;
}

template <typename F, typename... Args>
auto Async(Executor& executor, F&& fn, Args&&... args)
    -> Future<UnwrapT<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>>> {
  using U = UnwrapT<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>>;
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

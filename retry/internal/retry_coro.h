// Body of the coroutine RetryAsync(fn, policy, options) (retry/retry.h): the attempt loop of
// Retry() driven by retry_internal::Driver, written as one Coro whose back-off waits suspend on the
// coroutine's scheduler. Internal: include retry/retry.h instead.

#ifndef CONCURRY_RETRY_INTERNAL_RETRY_CORO_H_
#define CONCURRY_RETRY_INTERNAL_RETRY_CORO_H_

#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/internal/coro_scheduler.h"
#include "retry/internal/retry_impl.h"
#include "retry/policy.h"
#include "retry/retry.h"

namespace concurry {
namespace retry_internal {

// co_await of a Coro<V> or a Future<V> gives V; a plain result is taken by value.
template <typename R>
struct AwaitedValue {
  using type = R;
};
template <typename V>
struct AwaitedValue<Coro<V>> {
  using type = V;
};
template <typename V>
struct AwaitedValue<Future<V>> {
  using type = V;
};
template <typename R>
struct Awaited : AwaitedValue<std::remove_cvref_t<R>> {};

template <typename R>
inline constexpr bool kAwaitsAttempt = futures_internal::kIsCoro<std::remove_cvref_t<R>> ||
                                       futures_internal::kIsFuture<std::remove_cvref_t<R>>;

// The clock of the scheduler running the calling step; Clock::Real() outside one.
inline Clock& SchedulerClock() {
  futures_internal::CoroScheduler* scheduler = futures_internal::CurrentCoroScheduler();
  return scheduler != nullptr ? scheduler->clock() : Clock::Real();
}

// Awaitable for the wait between two attempts: resumes the coroutine through its scheduler once
// `clock` has moved `wait` on (a wake the scheduler schedules on that clock). A zero wait does not
// suspend. Cancellation ends the wait early (the wake is withdrawn) without throwing: the
// coroutine's next co_await throws what the Coro promise says (see RetryCoro). Await it at once.
// Not thread-safe.
class [[nodiscard]] BackoffSleep {
 public:
  BackoffSleep(Clock& clock, absl::Duration wait) : clock_(clock), wait_(wait) {}
  BackoffSleep(BackoffSleep&&) = default;

  bool await_ready() const noexcept { return wait_ <= absl::ZeroDuration(); }

  template <typename P>
  bool await_suspend(std::coroutine_handle<P> handle) {
    futures_internal::CoroControl* control = futures_internal::ControlFor(handle, stand_in_);
    if (control == nullptr) {
      throw InvalidOptionError(
          "RetryAsync(fn, policy): its back-off wait needs a coroutine scheduler; await it in a "
          "Coro run by Spawn, SyncWait, Async or a coroutine worker");
    }
    const absl::Time wake_at = clock_.Now() + wait_;
    const uint64_t generation = control->Arm(handle);
    control_ = control;
    std::coroutine_handle<> erased = handle;
    try {
      token_ = control->scheduler().WakeAt(clock_, wake_at,
                                           [ref = control->shared_from_this(), generation, erased] {
                                             ref->Wake(generation, erased);
                                           });
    } catch (...) {
      // The wake could not be scheduled: fail the retry with that error, unless a cancellation
      // came first (it resumes the coroutine, and await_resume reports it).
      if (control->Disarm(generation)) throw;
    }
    return control->Suspend(generation);
  }

  void await_resume() {
    if (control_ != nullptr && control_->cancelled()) control_->scheduler().CancelWake(token_);
  }

 private:
  Clock& clock_;
  const absl::Duration wait_;
  futures_internal::CoroControl* control_ = nullptr;
  std::shared_ptr<futures_internal::CoroControl> stand_in_;  // For a Future-coroutine awaiting.
  futures_internal::WakeToken token_;
};

// Awaitable giving the awaiting Coro's own control (null when no scheduler runs it, as under a
// Future-coroutine on a plain thread). Never suspends; like every co_await in a Coro, it throws
// once the coroutine was cancelled or stopped. Not thread-safe.
struct OwnControl {
  bool await_ready() const noexcept { return false; }
  template <typename P>
  bool await_suspend(std::coroutine_handle<P> handle) noexcept {
    control = handle.promise().control;
    return false;
  }
  futures_internal::CoroControl* await_resume() const noexcept { return control; }
  futures_internal::CoroControl* control = nullptr;
};

// The retry itself. `method_name` and `worker_type_name` are the frame's own copies of the views
// in options.call (the caller's strings may be gone when the lazy coroutine first runs).
// GCC 12 warns -Wsubobject-linkage on the coroutine frame whenever Fn is a type without linkage
// (a lambda of a .cc file's anonymous namespace, as in every worker call): the frame is a class of
// this header. The frame is never shared between translation units, so the warning is noise here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
template <typename Fn, typename R>
Coro<R> RetryCoro(Fn fn, RetryPolicy policy, RetryOptions options, std::string method_name,
                  std::string worker_type_name) {
  using V = ValueOfT<R>;
  options.call.method_name = method_name;
  options.call.worker_type_name = worker_type_name;
  if (options.clock == nullptr) options.clock = &SchedulerClock();
  Clock& clock = *options.clock;
  // Set before the body first runs and fixed for its life; a cancelled coroutine throws here.
  futures_internal::CoroControl* const own_control = co_await OwnControl{};
  Driver driver(policy, options);
  Rejected<V> rejected;
  for (;;) {
    driver.BeginAttempt();
    std::optional<absl::Duration> wait;
    AttemptVerdict verdict = AttemptVerdict::kRetry;
    std::exception_ptr error;
    std::optional<std::conditional_t<std::is_void_v<R>, char, R>> result;  // Unused for void.
    try {
      if constexpr (std::is_void_v<R>) {
        if constexpr (kAwaitsAttempt<std::invoke_result_t<Fn&>>) {
          auto attempt = fn();
          co_await std::move(attempt);
        } else {
          fn();
        }
        verdict = JudgeVoid(driver, wait);
      } else {
        if constexpr (kAwaitsAttempt<std::invoke_result_t<Fn&>>) {
          auto attempt = fn();
          R value = co_await std::move(attempt);
          result.emplace(std::move(value));
        } else {
          result.emplace(fn());
        }
        verdict = JudgeResult(driver, rejected, *result, wait);
      }
    } catch (...) {
      error = std::current_exception();
    }
    if (error) {
      // The coroutine itself was cancelled or stopped (the attempt's await threw for it, or the
      // attempt failed meanwhile): the retry ends with that error at once, unseen by the filters,
      // the delay hook and the report.
      if (own_control != nullptr && own_control->cancelled()) std::rethrow_exception(error);
      wait = driver.OnError(error);
      if (!wait) std::rethrow_exception(error);  // The original object.
    } else if (verdict == AttemptVerdict::kDeliver) {
      if constexpr (std::is_void_v<R>) {
        co_return;
      } else {
        co_return std::move(*result);
      }
    } else if (verdict == AttemptVerdict::kInvalid) {
      if constexpr (kIsStatusLike<R>) {
        co_return driver.ValidationStatus();
      } else {
        std::rethrow_exception(driver.ValidationError(std::move(rejected)));
      }
    }
    result.reset();
    co_await BackoffSleep(clock, *wait);
    // Before the next attempt: a cancelled coroutine throws here (every co_await of a Coro checks),
    // also after a zero wait, so fn() is not called again.
    co_await std::suspend_never{};
  }
}
#pragma GCC diagnostic pop

// Rejects what the coroutine form cannot honour.
void CheckCoroOptions(const RetryOptions& options);

}  // namespace retry_internal

template <typename F>
requires(!std::derived_from<std::remove_cvref_t<F>, Executor> && std::invocable<F&>)
    Coro<typename retry_internal::Awaited<std::invoke_result_t<F&>>::type> RetryAsync(
        F fn, RetryPolicy policy, RetryOptions options) {
  using R = typename retry_internal::Awaited<std::invoke_result_t<F&>>::type;
  ValidateRetryPolicy(policy);
  retry_internal::CheckCoroOptions(options);
  std::string method_name(options.call.method_name);
  std::string worker_type_name(options.call.worker_type_name);
  return retry_internal::RetryCoro<F, R>(std::move(fn), std::move(policy), std::move(options),
                                         std::move(method_name), std::move(worker_type_name));
}

template <typename F>
requires(!std::derived_from<std::remove_cvref_t<F>, Executor> && std::invocable<F&>)
    Coro<typename retry_internal::Awaited<std::invoke_result_t<F&>>::type> RetryAsync(
        F fn, RetryPolicy policy) {
  return RetryAsync(std::move(fn), std::move(policy), RetryOptions());
}

}  // namespace concurry

#endif  // CONCURRY_RETRY_INTERNAL_RETRY_CORO_H_

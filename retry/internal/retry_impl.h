// Template bodies of retry/retry.h and the non-template Driver they share: attempt counting,
// filters, validators, waits, the deadline and reporting (retry.cc). Only the failure path leaves
// the inline code.

#ifndef CONCURRY_RETRY_INTERNAL_RETRY_IMPL_H_
#define CONCURRY_RETRY_INTERNAL_RETRY_IMPL_H_

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/timer.h"
#include "retry/policy.h"
#include "retry/retry.h"

namespace concurry {
namespace retry_internal {

// The value a validator sees for a callable returning R: T for absl::StatusOr<T>, void for
// absl::Status, R (without reference and const) otherwise.
template <typename R>
struct ValueOf {
  using type = std::remove_cvref_t<R>;
};
template <>
struct ValueOf<absl::Status> {
  using type = void;
};
template <typename T>
struct ValueOf<absl::StatusOr<T>> {
  using type = T;
};
template <typename R>
using ValueOfT = typename ValueOf<std::remove_cvref_t<R>>::type;

template <typename R>
inline constexpr bool kIsStatusLike = std::is_same_v<std::remove_cvref_t<R>, absl::Status> ||
                                      futures_internal::kIsStatusOr<std::remove_cvref_t<R>>;

template <typename R>
const absl::Status& StatusOf(const R& result) {
  if constexpr (std::is_same_v<std::remove_cvref_t<R>, absl::Status>) {
    return result;
  } else {
    return result.status();
  }
}

// The validators' view of an OK result.
template <typename R>
RetryResult ViewOf(const R& result) {
  if constexpr (std::is_same_v<std::remove_cvref_t<R>, absl::Status>) {
    return RetryResult();
  } else if constexpr (futures_internal::kIsStatusOr<std::remove_cvref_t<R>>) {
    return RetryResult::Of(*result);
  } else {
    return RetryResult::Of(result);
  }
}

// Rejected results kept for TypedRetryValidationError<V> (nothing for void).
template <typename V>
struct Rejected {
  std::vector<V> values;

  template <typename R>
  void Add(R&& result) {
    if constexpr (std::is_lvalue_reference_v<R>) {
      values.push_back(result);  // A reference result is copied, never moved from.
    } else if constexpr (futures_internal::kIsStatusOr<std::remove_cvref_t<R>>) {
      values.push_back(*std::move(result));
    } else {
      values.push_back(std::move(result));
    }
  }
};
template <>
struct Rejected<void> {
  template <typename R>
  void Add(R&&) {}
};

// The state of one retry across its attempts. Used by one attempt at a time. Not thread-safe.
class Driver {
 public:
  Driver(const RetryPolicy& policy, const RetryOptions& options)
      : policy_(policy), options_(options) {}

  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // Counts a new attempt; before the first, reads the clock if anything will ask for the elapsed
  // time or the deadline.
  void BeginAttempt() {
    if (attempt_ == 0 && NeedsStartTime()) StartClock();
    ++attempt_;
  }
  bool validating() const { return !policy_.retry_until.empty(); }
  int attempt() const { return attempt_; }

  // The attempt threw `error`. Returns the wait before the next attempt, or nullopt when the
  // error is not retried (a CancelledError never is), RetryOptions::stop says so, or attempts ran
  // out (the caller then delivers `error`).
  std::optional<absl::Duration> OnError(const std::exception_ptr& error);
  // The attempt returned the non-OK `status`; as OnError.
  std::optional<absl::Duration> OnStatus(const absl::Status& status);
  // Runs every validator on `result`; returns whether all passed (failures are recorded).
  bool Validate(const RetryResult& result);
  // After Validate() failed: returns the wait before the next attempt, or nullopt when attempts
  // ran out (the caller then delivers ValidationError()).
  std::optional<absl::Duration> OnInvalid(const RetryResult& result);

  // Returns the error for a retry whose validation failed on every attempt.
  template <typename V>
  std::exception_ptr ValidationError(Rejected<V>&& rejected) {
    if constexpr (std::is_void_v<V>) {
      return std::make_exception_ptr(RetryValidationError(
          attempt_, std::move(results_), std::move(messages_), std::string(method_name())));
    } else {
      return std::make_exception_ptr(
          TypedRetryValidationError<V>(attempt_, std::move(results_), std::move(messages_),
                                       std::string(method_name()), std::move(rejected.values)));
    }
  }
  // The message of ValidationError(), for callables returning absl::Status(Or).
  absl::Status ValidationStatus() const;

  // Blocks for `wait` on the clock (no clock read for a zero wait).
  void Sleep(absl::Duration wait) {
    if (wait > absl::ZeroDuration()) clock().SleepFor(wait);
  }

  Clock& clock() const { return options_.clock != nullptr ? *options_.clock : Clock::Real(); }

 private:
  // RetryOptions::stop says to end the retry now.
  bool Stopped() const;
  bool NeedsStartTime() const;
  void StartClock();
  absl::string_view method_name() const { return options_.call.method_name; }
  RetryContext Context();
  // The wait before attempt_ + 1 after `failure`, or nullopt (out of attempts, past the deadline,
  // or an infinite wait).
  std::optional<absl::Duration> NextWait(const RetryFailure& failure, const RetryContext& context);
  void Report(const std::string& message) const;

  const RetryPolicy& policy_;
  const RetryOptions& options_;
  int attempt_ = 0;
  // The last BackoffWait() result, for BackoffAlgorithm::kDecorrelated.
  absl::Duration previous_backoff_ = absl::ZeroDuration();
  bool started_ = false;
  absl::Time start_;
  // Only while validating: each attempt's outcome rendered, and the validation messages.
  std::vector<std::string> results_;
  std::vector<std::string> messages_;
};

// What to do with an attempt that returned (did not throw).
enum class AttemptVerdict {
  kDeliver,  // Hand the result to the caller: accepted, or a status that is not retried.
  kRetry,    // Wait and try again (a rejected value went to `rejected`).
  kInvalid,  // Validation failed on the last attempt.
};

// Judges an attempt of a void callable; sets `wait` for kRetry.
inline AttemptVerdict JudgeVoid(Driver& driver, std::optional<absl::Duration>& wait) {
  if (!driver.validating() || driver.Validate(RetryResult())) return AttemptVerdict::kDeliver;
  wait = driver.OnInvalid(RetryResult());
  return wait ? AttemptVerdict::kRetry : AttemptVerdict::kInvalid;
}

// Judges an attempt that returned `result` (R may be a reference); sets `wait` for kRetry and
// moves a value rejected by the validators into `rejected` (a reference result is copied).
template <typename R, typename V>
AttemptVerdict JudgeResult(Driver& driver, Rejected<V>& rejected, R& result,
                           std::optional<absl::Duration>& wait) {
  if constexpr (kIsStatusLike<R>) {
    if (!result.ok()) {
      wait = driver.OnStatus(StatusOf(result));
      return wait ? AttemptVerdict::kRetry : AttemptVerdict::kDeliver;
    }
  }
  if (!driver.validating()) return AttemptVerdict::kDeliver;
  const RetryResult view = ViewOf(result);
  if (driver.Validate(view)) return AttemptVerdict::kDeliver;
  wait = driver.OnInvalid(view);
  rejected.Add(static_cast<R&&>(result));
  return wait ? AttemptVerdict::kRetry : AttemptVerdict::kInvalid;
}

// One RetryAsync: owns the callable, the policy and options, and completes the promise.
// Thread-safe: attempts run one at a time (each is submitted after the previous one ended);
// cancellation may come from any thread.
template <typename Fn, typename R>
class AsyncRetry : public std::enable_shared_from_this<AsyncRetry<Fn, R>> {
 public:
  using V = ValueOfT<R>;

  AsyncRetry(Executor& executor, Fn fn, RetryPolicy policy, RetryOptions options)
      : executor_(executor),
        fn_(std::move(fn)),
        policy_(std::move(policy)),
        options_(std::move(options)),
        method_name_(options_.call.method_name),
        worker_type_name_(options_.call.worker_type_name),
        driver_(policy_, options_) {
    options_.call.method_name = method_name_;
    options_.call.worker_type_name = worker_type_name_;
  }

  Future<V> Start() {
    Future<V> future = promise_.GetFuture();
    std::weak_ptr<AsyncRetry> weak = this->weak_from_this();
    promise_.OnCancel([weak] {
      if (auto self = weak.lock()) self->OnCancelled();
    });
    SubmitAttempt();
    return future;
  }

 private:
  void SubmitAttempt() noexcept {
    try {
      executor_.Submit([self = this->shared_from_this()] { self->RunAttempt(); });
    } catch (...) {
      promise_.SetError(std::current_exception());
    }
  }

  void RunAttempt() noexcept {
    if (promise_.IsCancelled()) return;
    driver_.BeginAttempt();
    std::optional<absl::Duration> wait;
    AttemptVerdict verdict = AttemptVerdict::kRetry;
    try {
      if constexpr (std::is_void_v<R>) {
        fn_();
        verdict = JudgeVoid(driver_, wait);
        if (verdict == AttemptVerdict::kDeliver) {
          promise_.SetValue();
          return;
        }
      } else {
        R result = fn_();
        verdict = JudgeResult(driver_, rejected_, result, wait);
        if (verdict == AttemptVerdict::kDeliver) {
          Deliver(std::move(result));
          return;
        }
      }
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      wait = driver_.OnError(error);
      if (!wait) {
        promise_.SetError(error);
        return;
      }
    }
    if (verdict == AttemptVerdict::kInvalid) {
      promise_.SetError(driver_.ValidationError(std::move(rejected_)));
      return;
    }
    ScheduleNext(*wait);
  }

  void Deliver(R&& result) noexcept {
    try {
      if constexpr (std::is_same_v<std::remove_cvref_t<R>, absl::Status>) {
        promise_.SetError(std::move(result));  // An OK status completes a Promise<void>.
      } else if constexpr (futures_internal::kIsStatusOr<std::remove_cvref_t<R>>) {
        if (result.ok()) {
          promise_.SetValue(*std::move(result));
        } else {
          promise_.SetError(std::move(result).status());
        }
      } else {
        promise_.SetValue(std::move(result));
      }
    } catch (...) {
      promise_.SetError(std::current_exception());
    }
  }

  void ScheduleNext(absl::Duration wait) noexcept {
    if (wait <= absl::ZeroDuration()) {
      SubmitAttempt();
      return;
    }
    std::exception_ptr error;
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) return;
      try {
        timer_id_ = options_.timer->Schedule(
            driver_.clock().Now() + wait,
            [self = this->shared_from_this()]() mutable { self->SubmitAttempt(); });
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error) promise_.SetError(error);
  }

  void OnCancelled() {
    Timer::Id id;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = timer_id_;
    }
    if (id.sequence != 0) options_.timer->Cancel(id);
  }

  Executor& executor_;
  Fn fn_;
  const RetryPolicy policy_;
  RetryOptions options_;  // call.* view the strings below; timer and clock are set.
  const std::string method_name_;
  const std::string worker_type_name_;
  Driver driver_;
  Rejected<V> rejected_;
  Promise<V> promise_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  Timer::Id timer_id_ ABSL_GUARDED_BY(mu_);
};

// Checks RetryAsync's options and fills in the timer and clock.
void PrepareAsyncOptions(RetryOptions& options);

}  // namespace retry_internal

template <typename F>
std::invoke_result_t<F&> Retry(F&& fn, const RetryPolicy& policy, const RetryOptions& options) {
  using R = std::invoke_result_t<F&>;
  using V = retry_internal::ValueOfT<R>;
  ValidateRetryPolicy(policy);
  retry_internal::Driver driver(policy, options);
  retry_internal::Rejected<V> rejected;
  for (;;) {
    driver.BeginAttempt();
    std::optional<absl::Duration> wait;
    try {
      if constexpr (std::is_void_v<R>) {
        fn();
        if (retry_internal::JudgeVoid(driver, wait) == retry_internal::AttemptVerdict::kDeliver)
          return;
      } else {
        R result = fn();
        if (retry_internal::JudgeResult(driver, rejected, result, wait) ==
            retry_internal::AttemptVerdict::kDeliver) {
          return result;
        }
      }
    } catch (...) {
      wait = driver.OnError(std::current_exception());
      if (!wait) throw;  // The original exception object.
    }
    if (!wait) {  // Validation failed on the last attempt.
      if constexpr (retry_internal::kIsStatusLike<R>) {
        return driver.ValidationStatus();
      } else {
        std::rethrow_exception(driver.ValidationError(std::move(rejected)));
      }
    }
    driver.Sleep(*wait);
  }
}

template <typename F>
Future<UnwrapT<std::invoke_result_t<std::decay_t<F>&>>> RetryAsync(Executor& executor, F&& fn,
                                                                   RetryPolicy policy,
                                                                   RetryOptions options) {
  using Fn = std::decay_t<F>;
  using R = std::invoke_result_t<Fn&>;
  static_assert(!futures_internal::kIsFuture<std::remove_cvref_t<R>>,
                "RetryAsync: a callable returning a Future is not supported; return the value");
  static_assert(!std::is_reference_v<R>, "RetryAsync: the callable must return by value");
  ValidateRetryPolicy(policy);
  retry_internal::PrepareAsyncOptions(options);
  auto retry = std::make_shared<retry_internal::AsyncRetry<Fn, R>>(
      executor, std::forward<F>(fn), std::move(policy), std::move(options));
  return retry->Start();
}

}  // namespace concurry

#endif  // CONCURRY_RETRY_INTERNAL_RETRY_IMPL_H_

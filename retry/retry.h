// Retry(fn, policy): calls `fn` until it succeeds, as a RetryPolicy (retry/policy.h) says — the
// synchronous form sleeps on the clock between attempts; RetryAsync(executor, fn, policy) returns
// a Future and waits between attempts on a Timer, so no thread sleeps during back-off; and
// RetryAsync(fn, policy) is a coroutine (futures/coro.h) that suspends between attempts.
//
//   concurry::RetryPolicy policy{.num_retries = 3, .wait = absl::Milliseconds(100)};
//   std::string body = concurry::Retry([&] { return Fetch(url); }, policy);  // rethrows as is
//   concurry::Future<std::string> later =
//       concurry::RetryAsync(executor, [url] { return Fetch(url); }, policy);
//   later.Cancel();  // no further attempt starts
//   // Inside a Coro; FetchAsync returns a Coro<std::string> or a Future<std::string>:
//   auto fetch = [url] { return FetchAsync(url); };
//   std::string page = co_await concurry::RetryAsync(fetch, policy);
//
// The original error reaches the caller unwrapped; results rejected by every attempt end in a
// RetryValidationError (futures/errors.h) with the attempts' results and messages. A server's
// delay hint (a thrown RetryAfterError, or a status carrying a Retry-After payload:
// retry/retry_after.h) is honoured, jittered upward and capped as RetryPolicy says.

#ifndef CONCURRY_RETRY_RETRY_H_
#define CONCURRY_RETRY_RETRY_H_

#include <concepts>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/timer.h"
#include "retry/policy.h"

namespace concurry {

// What is known about the retried call, passed to filters, validators and the delay hook in
// RetryContext (workers fill it in; standalone callers may).
struct RetryCallInfo {
  // Viewed by Retry(); copied by RetryAsync().
  absl::string_view method_name{};
  absl::string_view worker_type_name{};
  // Renders the call's arguments when asked (RetryContext::Arguments()); empty: not available.
  std::function<std::string()> arguments{};
};

// How Retry() and RetryAsync() run, beside the policy. Plain options; every field has a default.
struct RetryOptions {
  // The clock for waits, elapsed time and the deadline; null: Clock::Real(). RetryAsync(executor,
  // ...) uses the timer's clock (a different non-null `clock` is rejected there); the coroutine
  // RetryAsync(fn, ...) uses its scheduler's clock when null.
  Clock* clock = nullptr;
  // The random source of the back-off's jitter (BackoffWait(), also kDecorrelated) and of a server
  // delay's (ServerDelayWait()); seed one for reproducible waits. Unset: a generator private to
  // the calling thread. Used by one attempt at a time, never concurrently by one retry.
  std::optional<absl::BitGenRef> bitgen{};
  RetryCallInfo call{};
  // Receives a line for each problem that is not the call's own error: a retry_on predicate that
  // threw (the error is then not retried) or a delay hook that threw (the policy's back-off is
  // used). Null: printed to stderr.
  std::function<void(absl::string_view)> report{};
  // RetryAsync(executor, ...): the timer for back-off waits; null: Timer::Default() (real clock).
  // The coroutine RetryAsync(fn, ...) rejects a non-null timer (its coroutine's scheduler waits).
  Timer* timer = nullptr;
  // Asked after each failed attempt, before any filter: true ends the retry at once with that
  // attempt's outcome (the error rethrown as is), e.g. when the caller cancelled. Null: never.
  // (A wait already started is not interrupted.)
  std::function<bool()> stop{};
};

// The RetryValidationError of a retry whose callable returns values of type T: also keeps every
// rejected result as a value (attempts that threw have none), oldest first. Catch it as a
// RetryValidationError to get the results rendered as strings. Thread-safe (immutable).
template <typename T>
class TypedRetryValidationError : public RetryValidationError {
 public:
  TypedRetryValidationError(int attempts, std::vector<std::string> results,
                            std::vector<std::string> validation_errors, std::string method_name,
                            std::vector<T> values)
      : RetryValidationError(attempts, std::move(results), std::move(validation_errors),
                             std::move(method_name)),
        values_(std::make_shared<const std::vector<T>>(std::move(values))) {}

  // Returns the rejected results, oldest first.
  const std::vector<T>& values() const noexcept { return *values_; }

 private:
  std::shared_ptr<const std::vector<T>> values_;
};

// Calls `fn()` until an attempt succeeds or the policy says stop, sleeping on the clock between
// attempts, and returns its result (void, a value, absl::Status or absl::StatusOr<T>).
//   - An exception that no `retry_on` filter matches, or the last attempt's exception, is
//     rethrown as the original object (not wrapped).
//   - For absl::Status / absl::StatusOr<T> callables a non-OK status is retried when its code is
//     in `retry_on_codes`; the last (or a non-retried) status is returned as is.
//   - A result rejected by a `retry_until` validator is retried; when attempts run out (also with
//     num_retries == 0: validation only) a TypedRetryValidationError<U> is thrown (U: the value
//     type; a plain RetryValidationError for void) — or, for absl::Status(Or) callables, returned
//     as absl::AbortedError with the same message, so they never throw for it.
// Throws InvalidOptionError (before calling `fn`) if ValidateRetryPolicy() rejects `policy`.
// Success path: no allocation; the clock is read only when needed (a deadline, predicates,
// validators or a delay hook ask for elapsed time, or a wait is due).
template <typename F>
std::invoke_result_t<F&> Retry(F&& fn, const RetryPolicy& policy, const RetryOptions& options = {});

// Runs the attempts of Retry() as tasks on `executor` and returns a future for the outcome (a
// returned absl::Status(Or) is flattened as by Async(); validation failures and non-OK statuses
// become the future's error). Between attempts it waits on `options.timer` (default:
// Timer::Default()): no thread sleeps. Cancelling the future cancels the pending wait and no
// further attempt starts (a running attempt finishes; its outcome is ignored). `fn` is moved into
// the retry and called from the executor's threads, one attempt at a time; the policy and the
// call info are copied. Throws InvalidOptionError for an invalid policy or a clock that is not
// the timer's.
template <typename F>
Future<UnwrapT<std::invoke_result_t<std::decay_t<F>&>>> RetryAsync(Executor& executor, F&& fn,
                                                                   RetryPolicy policy,
                                                                   RetryOptions options = {});

namespace retry_internal {
// The value type of co_await on what a callable returns (retry/internal/retry_coro.h).
template <typename R>
struct Awaited;
}  // namespace retry_internal

// The coroutine form of RetryAsync: a Coro that runs the attempts of Retry() and suspends, without
// holding a thread, between them. `fn()` returns a Coro<V>, a Future<V> or a plain V; each attempt
// calls it again and awaits the result. co_await gives V, as Retry() gives its result:
//   - a non-retried or last error is rethrown as the original object (the awaited Future's or
//     Coro's error too); a CancelledError is never retried;
//   - for V = absl::Status / absl::StatusOr<T> the last (or a non-retried) status is the value,
//     and a validation failure is an absl::AbortedError; for other V it throws
//     TypedRetryValidationError<V> (RetryValidationError for void).
// Waits are on `options.clock`, or when null on the clock of the scheduler running the coroutine
// (Spawn's or SyncWait's clock, a coroutine worker's clock), which is also the clock of the
// deadline and of the elapsed time filters see. Filters, validators, the deadline, num_retries,
// jitter (options.bitgen), server delay hints and `options.stop` behave as in Retry().
// Cancelling the coroutine (its Spawn future, its worker call) ends the retry at its next
// suspension: a back-off wait, an awaited attempt (a sole-consumer awaited future is cancelled
// too) or the check between attempts; it ends with CancelledError (StoppedError when the
// coroutine was stopped because its executor refused a step). Neither goes through the filters,
// `options.stop`, the delay hook or the report: the retry ends at once.
// Lazy: nothing runs until it is awaited or spawned. `fn`, the policy and the options (including
// the call's method and type names) are copied into the coroutine. Throws InvalidOptionError at
// the call for an invalid policy or a non-null `options.timer`; co_await throws
// InvalidOptionError when a wait is due and no scheduler runs the coroutine (a Future-coroutine
// on a plain thread awaiting it).
// GCC 12 mishandles temporaries with members such as std::string inside a co_await expression
// (braced policies and options, a capturing lambda written in place): name the callable, the
// policy and the options (`co_await RetryAsync(fetch, policy)`), or make the Coro first and await
// it; hence the overload without options instead of a default argument.
template <typename F>
requires(!std::derived_from<std::remove_cvref_t<F>, Executor> && std::invocable<F&>)
    Coro<typename retry_internal::Awaited<std::invoke_result_t<F&>>::type> RetryAsync(
        F fn, RetryPolicy policy, RetryOptions options);
template <typename F>
requires(!std::derived_from<std::remove_cvref_t<F>, Executor> && std::invocable<F&>)
    Coro<typename retry_internal::Awaited<std::invoke_result_t<F&>>::type> RetryAsync(
        F fn, RetryPolicy policy);

}  // namespace concurry

#include "retry/internal/retry_coro.h"  // IWYU pragma: export
#include "retry/internal/retry_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_RETRY_RETRY_H_

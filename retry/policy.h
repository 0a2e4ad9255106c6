// RetryPolicy: how a call is retried (concurry's RetryConfig) — how many times, how long to wait
// between attempts (BackoffWait: exponential / linear / fibonacci / decorrelated, jitter, cap),
// how a server's delay hint (Retry-After, retry/retry_after.h) is honoured, the overall deadline,
// which errors are retried (exception types, predicates, absl::Status codes) and which results
// must be retried (validators). A plain struct; Retry() (retry/retry.h) runs it.
//
//   concurry::RetryPolicy policy{.num_retries = 3,
//                                .wait = absl::Milliseconds(100),
//                                .max_wait = absl::Seconds(2),
//                                .retry_on = {concurry::RetryOn<std::runtime_error>()}};
//   absl::Duration w = concurry::BackoffWait(policy, /*failed_attempt=*/2, bitgen);  // <= 200 ms

#ifndef CONCURRY_RETRY_POLICY_H_
#define CONCURRY_RETRY_POLICY_H_

#include <cstddef>
#include <exception>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "retry/retry_after.h"  // IWYU pragma: export

namespace concurry {

// concurry's RetryAlgorithm: the growth of the wait with the number of the failed attempt.
enum class BackoffAlgorithm {
  kExponential,  // base · 2^(n−1): 1, 2, 4, 8 …  (default)
  kLinear,       // base · n:       1, 2, 3, 4 …
  kFibonacci,    // base · fib(n):  1, 1, 2, 3, 5 …
  // AWS's "decorrelated jitter": uniform in [base, 3 · previous wait) (the first previous wait is
  // base), then the cap; RetryPolicy::jitter is not used. Spreads retries more than full jitter
  // while keeping the waits of one caller growing, so fewer calls need many attempts.
  kDecorrelated,
};

// Returns the canonical name: "exponential", "linear", "fibonacci" or "decorrelated" ("unknown"
// for a value that is none of the enumerators).
absl::string_view BackoffAlgorithmName(BackoffAlgorithm algorithm);

// Parses concurry's names, case-insensitive: "exponential" (also "exp", "expo"), "linear"
// ("lin"), "fibonacci" ("fib"), and "decorrelated" ("decorr"). On failure sets `*error` to a
// message listing the accepted names and returns false.
bool AbslParseFlag(absl::string_view text, BackoffAlgorithm* algorithm, std::string* error);
// Returns the canonical name (BackoffAlgorithmName()), which AbslParseFlag() accepts; the number
// for a value that is none of the enumerators.
std::string AbslUnparseFlag(BackoffAlgorithm algorithm);

// What a filter, validator or delay hook knows about the call being retried (concurry's `ctx`).
// A view: valid only during the call that receives it.
struct RetryContext {
  // The retried method's name, or "" when unknown (standalone Retry without a name).
  absl::string_view method_name{};
  // The worker class's name, or "" outside workers.
  absl::string_view worker_type_name{};
  // The 1-based number of the attempt that has just ended.
  int attempt = 0;
  // Time since the first attempt started, on the retry's clock.
  absl::Duration elapsed{};
  // Renders the call's arguments; null when they are not available.
  const std::function<std::string()>* arguments_renderer = nullptr;

  // Returns the call's arguments rendered as a string, or "" when not available.
  std::string Arguments() const {
    return arguments_renderer != nullptr && *arguments_renderer ? (*arguments_renderer)() : "";
  }
};

// Decides whether an exception is retried: either an exception type (the error is an E or
// derives from it; see RetryOn<E>()) or a predicate `bool(const std::exception_ptr&, const
// RetryContext&)` (implicitly converted). A predicate that throws counts as "do not retry" and is
// reported (RetryOptions::report). Thread-safe to call if the predicate is.
class RetryFilter {
 public:
  using Predicate = std::function<bool(const std::exception_ptr&, const RetryContext&)>;

  // Accepts any argument so that a callable of the wrong signature fails with one message naming
  // the accepted forms, not a list of failed conversions.
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RetryFilter>>>
  RetryFilter(F predicate) {  // NOLINT(google-explicit-constructor): `.retry_on = {lambda}`.
    constexpr bool kIsPredicate =
        std::is_invocable_r_v<bool, F&, const std::exception_ptr&, const RetryContext&>;
    static_assert(kIsPredicate,
                  "concurry::RetryFilter: a retry_on entry must be concurry::RetryOn<E>() or a "
                  "predicate callable as bool(const std::exception_ptr&, const "
                  "concurry::RetryContext&)");
    if constexpr (kIsPredicate) predicate_ = std::move(predicate);
  }

  // Returns a filter matching exceptions of type E or derived from it.
  template <typename E>
  static RetryFilter ForType() {
    RetryFilter filter;
    filter.type_ = &typeid(E);
    filter.matches_type_ = [](const std::exception_ptr& error) {
      try {
        std::rethrow_exception(error);
      } catch (const E&) {
        return true;
      } catch (...) {
        return false;
      }
    };
    return filter;
  }

  // Returns whether `error` is to be retried. Throws what the predicate throws.
  bool Matches(const std::exception_ptr& error, const RetryContext& context) const {
    if (matches_type_ != nullptr) return matches_type_(error);
    return predicate_(error, context);
  }
  // Returns whether this is a predicate (it may read the context) rather than a type filter.
  bool is_predicate() const { return matches_type_ == nullptr; }
  // Returns false for a filter built from an empty std::function.
  bool valid() const { return matches_type_ != nullptr || static_cast<bool>(predicate_); }
  // Returns "type std::runtime_error" or "predicate", for messages.
  std::string Describe() const;

 private:
  RetryFilter() = default;

  const std::type_info* type_ = nullptr;
  bool (*matches_type_)(const std::exception_ptr&) = nullptr;
  Predicate predicate_;
};

// Returns a filter retrying exceptions of type E and of types derived from it.
template <typename E>
RetryFilter RetryOn() {
  return RetryFilter::ForType<E>();
}

// A read-only, type-erased view of one attempt's result, for validators and the delay hook:
// `get<T>()` returns the value if it is a T, else null. For callables returning absl::StatusOr<T>
// it views the T; for void and absl::Status callables it is empty (type() == typeid(void)).
class RetryResult {
 public:
  RetryResult() = default;
  template <typename T>
  static RetryResult Of(const T& value) {
    RetryResult result;
    result.value_ = &value;
    result.type_ = &typeid(T);
    result.render_ = &RenderAs<T>;
    return result;
  }

  template <typename T>
  const T* get() const {
    return *type_ == typeid(T) ? static_cast<const T*>(value_) : nullptr;
  }
  const std::type_info& type() const { return *type_; }
  // Returns the value rendered for messages: strings as they are, numbers and types with
  // operator<< printed, other types as "<TypeName>".
  std::string ToString() const { return render_ == nullptr ? "(void)" : render_(value_); }

  // Renders `value` as ToString() does.
  template <typename T>
  static std::string Render(const T& value);

 private:
  template <typename T>
  static std::string RenderAs(const void* value) {
    return Render(*static_cast<const T*>(value));
  }

  const void* value_ = nullptr;
  const std::type_info* type_ = &typeid(void);
  std::string (*render_)(const void*) = nullptr;
};

// A retry_until check: `check` returns nullopt when the result is acceptable, else what was
// wrong ("returned false", "failed: not JSON"). Build one with Validate<T>(). Messages name it
// "validator '<name>'", or "validator #<i>" (1-based position) when `name` is empty.
struct RetryValidator {
  std::string name{};
  std::function<std::optional<std::string>(const RetryResult&, const RetryContext&)> check{};
};

// Returns a validator for results of type T. `fn` takes `(const T&)` or `(const T&, const
// RetryContext&)` and returns bool (true = acceptable), absl::Status (OK = acceptable; else its
// message is the failure) or std::optional<std::string> (nullopt = acceptable; else the message).
// A result of another type fails with a message saying so.
template <typename T, typename F>
RetryValidator Validate(std::string name, F fn);
template <typename T, typename F>
RetryValidator Validate(F fn) {
  return Validate<T>("", std::move(fn));
}

// What went wrong on an attempt, for the delay hook: exactly one of `error` (it threw), a non-OK
// `status` (it returned one) or `invalid` (its result, viewed by `result`, failed validation).
struct RetryFailure {
  std::exception_ptr error{};
  absl::Status status{};
  bool invalid = false;
  RetryResult result{};
};

// Asks for a specific delay before the next attempt (a server's Retry-After), or nullopt for the
// policy's back-off alone. The delay is then combined with the back-off as ServerDelayWait() says
// (jittered upward, RetryPolicy::delay_hook_mode, the max_wait cap); a negative delay counts as 0;
// an InfiniteDuration() that no max_wait caps ends the retry.
//
// Built from a callable `std::optional<absl::Duration>(const RetryFailure&, const RetryContext&)`
// or `std::optional<absl::Duration>(const RetryFailure&)` (implicitly, for `.delay_hook =
// lambda`); another signature fails to compile with a message naming these. Empty (default, or
// from nullptr or an empty std::function): no hook. Thread-safe to call if the callable is.
class RetryDelayHook {
 public:
  using Function =
      std::function<std::optional<absl::Duration>(const RetryFailure&, const RetryContext&)>;

  RetryDelayHook() = default;
  RetryDelayHook(std::nullptr_t) {}  // NOLINT(google-explicit-constructor)
  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RetryDelayHook> &&
                                        !std::is_same_v<std::decay_t<F>, std::nullptr_t>>>
  RetryDelayHook(F hook) {  // NOLINT(google-explicit-constructor): `.delay_hook = lambda`.
    constexpr bool kWithContext = std::is_invocable_r_v<std::optional<absl::Duration>, F&,
                                                        const RetryFailure&, const RetryContext&>;
    constexpr bool kFailureOnly =
        std::is_invocable_r_v<std::optional<absl::Duration>, F&, const RetryFailure&>;
    static_assert(kWithContext || kFailureOnly,
                  "concurry::RetryDelayHook: a delay_hook must be callable as "
                  "std::optional<absl::Duration>(const concurry::RetryFailure&, const "
                  "concurry::RetryContext&) or std::optional<absl::Duration>(const "
                  "concurry::RetryFailure&)");
    if constexpr (kWithContext) {
      function_ = std::move(hook);
    } else if constexpr (kFailureOnly) {
      function_ = [hook = std::move(hook)](const RetryFailure& failure, const RetryContext&) mutable
          -> std::optional<absl::Duration> { return hook(failure); };
    }
  }

  // Calls the hook. Precondition: not empty.
  std::optional<absl::Duration> operator()(const RetryFailure& failure,
                                           const RetryContext& context) const {
    return function_(failure, context);
  }
  // Returns whether a hook is set.
  explicit operator bool() const { return static_cast<bool>(function_); }

 private:
  Function function_;
};

// The server delay the retry reads when RetryPolicy::delay_hook is unset: RetryAfterOf(error) for
// an attempt that threw (a RetryAfterError, or a concurry::Error / absl::Status carrying the
// kRetryAfterPayloadUrl payload), GetRetryAfter(status) for one that returned a non-OK status,
// nullopt for a rejected result. A hook of your own replaces it; call this from it to keep
// honouring the standard hints.
std::optional<absl::Duration> ServerRetryAfter(const RetryFailure& failure);

// How a server's delay (the delay hook's answer) combines with the policy's back-off.
enum class HookDelayMode {
  kMax,       // max(server delay, back-off): never earlier than either (default).
  kHookOnly,  // The server delay alone; the back-off is not computed.
  kSum,       // Server delay + back-off: the back-off's growth on top of what the server asked.
};

// Returns the canonical name: "max", "hook_only" or "sum" ("unknown" for a value that is none of
// the enumerators).
absl::string_view HookDelayModeName(HookDelayMode mode);
// Parses the names, case-insensitive: "max", "hook_only" (also "hook"), "sum". On failure sets
// `*error` to a message listing the accepted names and returns false.
bool AbslParseFlag(absl::string_view text, HookDelayMode* mode, std::string* error);
// Returns the canonical name, which AbslParseFlag() accepts; the number for a value that is none
// of the enumerators.
std::string AbslUnparseFlag(HookDelayMode mode);

// The largest RetryPolicy::num_retries: attempts are numbered with an int (RetryContext::attempt),
// and the last one is num_retries + 1.
inline constexpr int kMaxNumRetries = std::numeric_limits<int>::max() - 1;

// How a call is retried. Plain options; check with ValidateRetryPolicy() (Retry() does).
//
// Waiting: after failed attempt n (1-based), when n <= num_retries, the next attempt starts after
// BackoffWait(policy, n) — or, when the server asked for a delay (the delay hook's answer; by
// default a RetryAfterError or a Retry-After status payload, see ServerRetryAfter()),
// ServerDelayWait() of that delay and the back-off — unless `deadline` forbids it. A wait that
// is infinite (a back-off that saturated, or a hook's InfiniteDuration(), with no max_wait) is
// never slept: the retry ends at once with that attempt's outcome, as when the deadline forbids
// the wait.
//
// Deadline: `deadline` is a budget measured on the retry's clock from the start of the first
// attempt (t0). After a failed attempt ending at t with a wait w, attempt n+1 is started only if
// t + w <= t0 + deadline; otherwise the retry ends at once (no pointless wait) with that
// attempt's outcome. So no wait extends past the deadline and no attempt starts after it. A
// running attempt is never interrupted.
//
// What is retried: an exception is retried if any `retry_on` filter matches (default: any
// std::exception, as concurry's [Exception]; an empty list retries no exception). A non-OK
// absl::Status (or absl::StatusOr) returned by the callable is retried if its code is in
// `retry_on_codes` (default: only kUnavailable). A result is retried if any `retry_until`
// validator rejects it (all must pass). Anything not retried ends the retry at once with the
// original outcome.
struct RetryPolicy {
  // Retries after the first attempt: total attempts = num_retries + 1. In [0, kMaxNumRetries].
  int num_retries = 0;
  // One of the enumerators (another value, such as static_cast<BackoffAlgorithm>(9), is rejected).
  BackoffAlgorithm algorithm = BackoffAlgorithm::kExponential;
  // The base wait (the first wait before jitter). >= 0 and finite.
  absl::Duration wait = absl::Seconds(1);
  // In [0, 1] (NaN is rejected): each wait w becomes uniform in [w·(1−jitter), w]. 1 is
  // concurry's "full jitter" (uniform in [0, w]); 0 waits exactly w.
  double jitter = 0.3;
  // Cap on a single wait (applied after jitter, and to server delays: a server asking for 1 h
  // with max_wait 30 s gets its next attempt after 30 s, earlier than it asked; leave max_wait
  // infinite and set `deadline` to give up instead). >= 0; infinite = no cap.
  absl::Duration max_wait = absl::InfiniteDuration();
  // Budget across all attempts and waits (see above). > 0; infinite = none.
  absl::Duration deadline = absl::InfiniteDuration();
  // Exceptions to retry (any filter matches).
  std::vector<RetryFilter> retry_on = {RetryOn<std::exception>()};
  // absl::Status codes to retry, for callables returning absl::Status or absl::StatusOr: error
  // codes 1 (kCancelled) to 16 (kUnauthenticated). kOk (not an error) and values that are not
  // absl::StatusCode enumerators are rejected.
  std::vector<absl::StatusCode> retry_on_codes = {absl::StatusCode::kUnavailable};
  // Validators of the result (concurry's retry_until); all must pass. Applied even when
  // num_retries == 0 (validation only).
  std::vector<RetryValidator> retry_until{};
  // A specific delay requested by an error or result (Retry-After). Unset: ServerRetryAfter().
  RetryDelayHook delay_hook{};
  // How a server delay combines with the back-off. One of the enumerators.
  HookDelayMode delay_hook_mode = HookDelayMode::kMax;
  // Upward jitter of a server delay d: uniform in [d, d·(1 + delay_hook_jitter)), never less than
  // the server asked, so callers told the same delay do not all come back at once. >= 0 and
  // finite (NaN is rejected); 0 waits exactly d.
  double delay_hook_jitter = 0.2;
};

// Throws InvalidOptionError naming the first invalid field, its value and what is allowed
// ("RetryPolicy.jitter must be in [0, 1], got NaN"; "RetryPolicy.algorithm: unknown value 9;
// allowed: kExponential, kLinear, kFibonacci, kDecorrelated").
void ValidateRetryPolicy(const RetryPolicy& policy);

// Returns the wait after failed attempt `failed_attempt` (1-based, >= 1): the algorithm's
// multiple of `policy.wait` (exponential 1,2,4,8…; linear 1,2,3,4…; fibonacci 1,1,2,3,5…;
// saturating at InfiniteDuration()), then jitter (uniform in [w·(1−jitter), w], drawn from
// `bitgen` only when jitter > 0), then the `max_wait` cap; so the result is in [0, max_wait].
// kDecorrelated instead draws u from `bitgen` (u = (bitgen() >> 11) · 2^-53, in [0, 1)) and
// returns min(max_wait, base + (3·p − base)·u), where p is `previous_wait` (this function's result
// for the previous failed attempt of the same retry) or base when smaller (the default 0: the
// first wait); the other algorithms ignore `previous_wait`.
// Pure: no clock. Checks what it reads: throws InvalidOptionError, with ValidateRetryPolicy()'s
// message, for an invalid algorithm, wait, jitter or max_wait, and for failed_attempt < 1.
absl::Duration BackoffWait(const RetryPolicy& policy, int failed_attempt, absl::BitGenRef bitgen,
                           absl::Duration previous_wait = absl::ZeroDuration());

// Returns the wait before the next attempt when the server asked for `server_delay` and the
// policy's back-off is `backoff` (BackoffWait(); not read for kHookOnly):
//   1. d = max(server_delay, 0), jittered upward: d·(1 + delay_hook_jitter·u), u drawn from
//      `bitgen` as for kDecorrelated, only when delay_hook_jitter > 0 and d is finite and > 0;
//   2. combined by delay_hook_mode: d (kHookOnly), max(d, backoff) (kMax), d + backoff (kSum);
//   3. capped at max_wait.
// So the result is never below min(server_delay, max_wait). An infinite result (an infinite
// server delay, no cap) makes the retry end at once. Pure: no clock. Throws InvalidOptionError,
// with ValidateRetryPolicy()'s message, for an invalid delay_hook_mode, delay_hook_jitter or
// max_wait.
absl::Duration ServerDelayWait(const RetryPolicy& policy, absl::Duration server_delay,
                               absl::Duration backoff, absl::BitGenRef bitgen);

}  // namespace concurry

#include "retry/internal/policy_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_RETRY_POLICY_H_

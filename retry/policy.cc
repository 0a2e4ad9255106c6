#include "retry/policy.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "absl/random/distributions.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/errors.h"

namespace concurry {
namespace {

struct NamedAlgorithm {
  absl::string_view name;
  BackoffAlgorithm algorithm;
};

constexpr NamedAlgorithm kAlgorithms[] = {
    {"exponential", BackoffAlgorithm::kExponential},
    {"exp", BackoffAlgorithm::kExponential},
    {"expo", BackoffAlgorithm::kExponential},
    {"linear", BackoffAlgorithm::kLinear},
    {"lin", BackoffAlgorithm::kLinear},
    {"fibonacci", BackoffAlgorithm::kFibonacci},
    {"fib", BackoffAlgorithm::kFibonacci},
    {"decorrelated", BackoffAlgorithm::kDecorrelated},
    {"decorr", BackoffAlgorithm::kDecorrelated},
};

std::string Field(absl::string_view field) { return absl::StrCat("RetryPolicy.", field); }

// Returns `base` (> 0) times the algorithm's multiple for failed attempt n >= 1, exactly when
// absl::Duration can hold it, else InfiniteDuration(). absl::Duration arithmetic saturates (no
// overflow), and the loops stop once the wait is infinite: from the smallest positive duration
// that takes fewer than 100 doublings or 150 Fibonacci steps, whatever n is.
absl::Duration Scaled(BackoffAlgorithm algorithm, absl::Duration base, int n) {
  switch (algorithm) {
    case BackoffAlgorithm::kLinear:
      return base * n;
    case BackoffAlgorithm::kExponential: {
      absl::Duration wait = base;
      for (int i = 1; i < n && wait != absl::InfiniteDuration(); ++i) wait *= 2;
      return wait;
    }
    case BackoffAlgorithm::kFibonacci: {
      absl::Duration a = base, b = base;  // fib(1), fib(2) times base.
      for (int i = 3; i <= n && b != absl::InfiniteDuration(); ++i) {
        const absl::Duration next = a + b;
        a = b;
        b = next;
      }
      return n == 1 ? a : b;
    }
    case BackoffAlgorithm::kDecorrelated:
      break;  // Drawn by BackoffWait() from the previous wait.
  }
  return base;  // Not reached: the algorithm is validated.
}

}  // namespace

absl::string_view BackoffAlgorithmName(BackoffAlgorithm algorithm) {
  switch (algorithm) {
    case BackoffAlgorithm::kExponential:
      return "exponential";
    case BackoffAlgorithm::kLinear:
      return "linear";
    case BackoffAlgorithm::kFibonacci:
      return "fibonacci";
    case BackoffAlgorithm::kDecorrelated:
      return "decorrelated";
  }
  return "unknown";
}

bool AbslParseFlag(absl::string_view text, BackoffAlgorithm* algorithm, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  for (const NamedAlgorithm& named : kAlgorithms) {
    if (lower == named.name) {
      *algorithm = named.algorithm;
      return true;
    }
  }
  *error =
      absl::StrCat("unknown retry algorithm '", text,
                   "'; expected one of exponential (exp, expo), linear (lin), fibonacci (fib), "
                   "decorrelated (decorr) (case-insensitive)");
  return false;
}

std::string AbslUnparseFlag(BackoffAlgorithm algorithm) {
  const absl::string_view name = BackoffAlgorithmName(algorithm);
  // An out-of-range value is shown as its number, as for the other enums (which AbslParseFlag
  // then rejects), never as a name.
  return name == "unknown" ? absl::StrCat(static_cast<int>(algorithm)) : std::string(name);
}

absl::string_view HookDelayModeName(HookDelayMode mode) {
  switch (mode) {
    case HookDelayMode::kMax:
      return "max";
    case HookDelayMode::kHookOnly:
      return "hook_only";
    case HookDelayMode::kSum:
      return "sum";
  }
  return "unknown";
}

bool AbslParseFlag(absl::string_view text, HookDelayMode* mode, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "max") {
    *mode = HookDelayMode::kMax;
  } else if (lower == "hook_only" || lower == "hook") {
    *mode = HookDelayMode::kHookOnly;
  } else if (lower == "sum") {
    *mode = HookDelayMode::kSum;
  } else {
    *error = absl::StrCat("unknown delay hook mode '", text,
                          "'; expected one of max, hook_only (hook), sum (case-insensitive)");
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(HookDelayMode mode) {
  const absl::string_view name = HookDelayModeName(mode);
  return name == "unknown" ? absl::StrCat(static_cast<int>(mode)) : std::string(name);
}

std::string RetryFilter::Describe() const {
  if (type_ != nullptr) return absl::StrCat("type ", TypeName(*type_));
  return "predicate";
}

namespace {

// Renders a double for messages, exactly (the shortest text that reads back as `value`, so
// 1.0000000000000002 is not shown as 1); NaN is named as such.
std::string DoubleText(double value) {
  if (std::isnan(value)) return "NaN";
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

constexpr absl::string_view kAllowedCodes =
    "allowed: the error codes 1 (kCancelled) to 16 (kUnauthenticated)";

// The fields BackoffWait() reads.
void ValidateBackoff(const RetryPolicy& policy) {
  switch (policy.algorithm) {
    case BackoffAlgorithm::kExponential:
    case BackoffAlgorithm::kLinear:
    case BackoffAlgorithm::kFibonacci:
    case BackoffAlgorithm::kDecorrelated:
      break;
    default:
      throw InvalidOptionError(
          absl::StrCat(Field("algorithm"), ": unknown value ", static_cast<int>(policy.algorithm),
                       "; allowed: kExponential, kLinear, kFibonacci, kDecorrelated"));
  }
  if (policy.wait < absl::ZeroDuration() || policy.wait == absl::InfiniteDuration()) {
    throw InvalidOptionError(absl::StrCat(Field("wait"), " must be >= 0 and finite, got ",
                                          absl::FormatDuration(policy.wait)));
  }
  if (!(policy.jitter >= 0.0 && policy.jitter <= 1.0)) {  // Also rejects NaN.
    throw InvalidOptionError(
        absl::StrCat(Field("jitter"), " must be in [0, 1], got ", DoubleText(policy.jitter)));
  }
  if (policy.max_wait < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat(Field("max_wait"), " must be >= 0 (or infinite), got ",
                                          absl::FormatDuration(policy.max_wait)));
  }
}

// The fields ServerDelayWait() reads, but max_wait.
void ValidateServerDelay(const RetryPolicy& policy) {
  switch (policy.delay_hook_mode) {
    case HookDelayMode::kMax:
    case HookDelayMode::kHookOnly:
    case HookDelayMode::kSum:
      break;
    default:
      throw InvalidOptionError(absl::StrCat(Field("delay_hook_mode"), ": unknown value ",
                                            static_cast<int>(policy.delay_hook_mode),
                                            "; allowed: kMax, kHookOnly, kSum"));
  }
  if (!(policy.delay_hook_jitter >= 0.0 && std::isfinite(policy.delay_hook_jitter))) {
    throw InvalidOptionError(absl::StrCat(Field("delay_hook_jitter"),
                                          " must be >= 0 and finite, got ",
                                          DoubleText(policy.delay_hook_jitter)));
  }
}

// A draw in [0, 1) from the top 53 bits of one output of `bitgen`: the same for a given generator
// state on every platform and Abseil version (the documented formula).
double UnitDraw(absl::BitGenRef bitgen) { return static_cast<double>(bitgen() >> 11) * 0x1.0p-53; }

}  // namespace

void ValidateRetryPolicy(const RetryPolicy& policy) {
  if (policy.num_retries < 0 || policy.num_retries > kMaxNumRetries) {
    throw InvalidOptionError(absl::StrCat(Field("num_retries"), " must be in [0, ", kMaxNumRetries,
                                          "], got ", policy.num_retries));
  }
  ValidateBackoff(policy);
  ValidateServerDelay(policy);
  if (policy.deadline <= absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat(Field("deadline"), " must be > 0 (or infinite), got ",
                                          absl::FormatDuration(policy.deadline)));
  }
  for (size_t i = 0; i < policy.retry_on.size(); ++i) {
    if (!policy.retry_on[i].valid()) {
      throw InvalidOptionError(absl::StrCat(Field("retry_on"), "[", i,
                                            "] is an empty function; pass a type filter "
                                            "(RetryOn<E>()) or a predicate"));
    }
  }
  for (size_t i = 0; i < policy.retry_on_codes.size(); ++i) {
    const int code = static_cast<int>(policy.retry_on_codes[i]);
    if (code == 0) {
      throw InvalidOptionError(absl::StrCat(Field("retry_on_codes"), "[", i,
                                            "]: kOk (0) is not an error and cannot be retried; ",
                                            kAllowedCodes));
    }
    if (code < 1 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
      throw InvalidOptionError(absl::StrCat(Field("retry_on_codes"), "[", i, "]: unknown value ",
                                            code, "; ", kAllowedCodes));
    }
  }
  for (size_t i = 0; i < policy.retry_until.size(); ++i) {
    if (!policy.retry_until[i].check) {
      throw InvalidOptionError(absl::StrCat(Field("retry_until"), "[", i, "] ('",
                                            policy.retry_until[i].name,
                                            "') has an empty check; build it with Validate<T>()"));
    }
  }
}

absl::Duration BackoffWait(const RetryPolicy& policy, int failed_attempt, absl::BitGenRef bitgen,
                           absl::Duration previous_wait) {
  if (failed_attempt < 1) {
    throw InvalidOptionError(
        absl::StrCat("BackoffWait: failed_attempt must be >= 1, got ", failed_attempt));
  }
  ValidateBackoff(policy);
  if (policy.algorithm == BackoffAlgorithm::kDecorrelated) {
    if (policy.wait == absl::ZeroDuration()) return absl::ZeroDuration();
    const absl::Duration low = policy.wait;
    // 3 · previous saturates at InfiniteDuration(), and so does the draw then (the retry ends,
    // as when another algorithm saturates) unless max_wait caps it.
    const absl::Duration high = 3 * std::max(previous_wait, low);
    const double u = UnitDraw(bitgen);
    const absl::Duration wait = high == absl::InfiniteDuration() ? high : low + (high - low) * u;
    return std::min(wait, policy.max_wait);
  }
  absl::Duration wait = absl::ZeroDuration();
  if (policy.wait > absl::ZeroDuration())
    wait = Scaled(policy.algorithm, policy.wait, failed_attempt);
  if (policy.jitter > 0 && wait > absl::ZeroDuration() && wait != absl::InfiniteDuration()) {
    // In [0, 1] since jitter is: the jittered wait stays in [0, wait].
    const double factor =
        absl::Uniform<double>(absl::IntervalClosedClosed, bitgen, 1.0 - policy.jitter, 1.0);
    wait = wait * factor;
  }
  return std::min(wait, policy.max_wait);
}

}  // namespace concurry

namespace concurry {

absl::Duration ServerDelayWait(const RetryPolicy& policy, absl::Duration server_delay,
                               absl::Duration backoff, absl::BitGenRef bitgen) {
  ValidateServerDelay(policy);
  if (policy.max_wait < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat(Field("max_wait"), " must be >= 0 (or infinite), got ",
                                          absl::FormatDuration(policy.max_wait)));
  }
  absl::Duration wait = std::max(server_delay, absl::ZeroDuration());
  if (policy.delay_hook_jitter > 0 && wait > absl::ZeroDuration() &&
      wait != absl::InfiniteDuration()) {
    // Upward only: never earlier than the server asked.
    wait += wait * (policy.delay_hook_jitter * UnitDraw(bitgen));
  }
  switch (policy.delay_hook_mode) {
    case HookDelayMode::kMax:
      wait = std::max(wait, backoff);
      break;
    case HookDelayMode::kSum:
      wait += std::max(backoff, absl::ZeroDuration());
      break;
    case HookDelayMode::kHookOnly:
      break;
  }
  return std::min(wait, policy.max_wait);
}

std::optional<absl::Duration> ServerRetryAfter(const RetryFailure& failure) {
  if (failure.error) return RetryAfterOf(failure.error);
  if (!failure.status.ok()) return GetRetryAfter(failure.status);
  return std::nullopt;
}

}  // namespace concurry

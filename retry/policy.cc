#include "retry/policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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
};

std::string Field(absl::string_view field) { return absl::StrCat("RetryPolicy.", field); }

// The algorithm's multiple of the base wait for failed attempt n >= 1, or -1 when it does not
// fit in int64 (the wait is then infinite).
int64_t Multiple(BackoffAlgorithm algorithm, int n) {
  switch (algorithm) {
    case BackoffAlgorithm::kLinear:
      return n;
    case BackoffAlgorithm::kExponential:
      return n - 1 >= 62 ? -1 : int64_t{1} << (n - 1);
    case BackoffAlgorithm::kFibonacci: {
      if (n > 92) return -1;  // fib(93) > INT64_MAX.
      int64_t a = 1, b = 1;   // fib(1), fib(2)
      for (int i = 3; i <= n; ++i) {
        const int64_t next = a + b;
        a = b;
        b = next;
      }
      return n == 1 ? a : b;
    }
  }
  return 1;
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
  *error = absl::StrCat("unknown retry algorithm '", text,
                        "'; expected one of exponential (exp, expo), linear (lin), fibonacci (fib) "
                        "(case-insensitive)");
  return false;
}

std::string AbslUnparseFlag(BackoffAlgorithm algorithm) {
  return std::string(BackoffAlgorithmName(algorithm));
}

std::string RetryFilter::Describe() const {
  if (type_ != nullptr) return absl::StrCat("type ", TypeName(*type_));
  return "predicate";
}

void ValidateRetryPolicy(const RetryPolicy& policy) {
  if (policy.num_retries < 0) {
    throw InvalidOptionError(
        absl::StrCat(Field("num_retries"), " must be >= 0, got ", policy.num_retries));
  }
  if (policy.wait < absl::ZeroDuration() || policy.wait == absl::InfiniteDuration()) {
    throw InvalidOptionError(absl::StrCat(Field("wait"), " must be >= 0 and finite, got ",
                                          absl::FormatDuration(policy.wait)));
  }
  if (!(policy.jitter >= 0.0 && policy.jitter <= 1.0)) {  // Also rejects NaN.
    throw InvalidOptionError(
        absl::StrCat(Field("jitter"), " must be in [0, 1], got ", policy.jitter));
  }
  if (policy.max_wait < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat(Field("max_wait"), " must be >= 0 (or infinite), got ",
                                          absl::FormatDuration(policy.max_wait)));
  }
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
    if (policy.retry_on_codes[i] == absl::StatusCode::kOk) {
      throw InvalidOptionError(absl::StrCat(Field("retry_on_codes"), "[", i,
                                            "] is kOk; only error codes can be retried"));
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

absl::Duration BackoffWait(const RetryPolicy& policy, int failed_attempt, absl::BitGenRef bitgen) {
  if (failed_attempt < 1) {
    throw InvalidOptionError(
        absl::StrCat("BackoffWait: failed_attempt must be >= 1, got ", failed_attempt));
  }
  absl::Duration wait = absl::ZeroDuration();
  if (policy.wait > absl::ZeroDuration()) {
    const int64_t multiple = Multiple(policy.algorithm, failed_attempt);
    wait = multiple < 0 ? absl::InfiniteDuration() : policy.wait * multiple;  // Saturates.
  }
  if (policy.jitter > 0 && wait > absl::ZeroDuration() && wait != absl::InfiniteDuration()) {
    const double factor =
        absl::Uniform<double>(absl::IntervalClosedClosed, bitgen, 1.0 - policy.jitter, 1.0);
    wait = wait * factor;
  }
  return std::min(wait, policy.max_wait);
}

}  // namespace concurry

#include "retry/retry.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>

#include "absl/random/bit_gen_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/timer.h"
#include "retry/policy.h"

namespace concurry {
namespace retry_internal {
namespace {

absl::BitGenRef ThreadBitGen() {
  thread_local absl::InsecureBitGen bitgen;
  return absl::BitGenRef(bitgen);
}

std::string Describe(const std::exception_ptr& error) {
  return absl::StrCat(ExceptionTypeName(error), ": ", ExceptionMessage(error));
}

std::string ValidatorLabel(const RetryValidator& validator, size_t index) {
  if (validator.name.empty()) return absl::StrCat("#", index + 1);
  return absl::StrCat("'", validator.name, "'");
}

}  // namespace

bool Driver::NeedsStartTime() const {
  if (policy_.deadline != absl::InfiniteDuration() || validating() || policy_.delay_hook) {
    return true;
  }
  return std::any_of(policy_.retry_on.begin(), policy_.retry_on.end(),
                     [](const RetryFilter& filter) { return filter.is_predicate(); });
}

void Driver::StartClock() {
  start_ = clock().Now();
  started_ = true;
}

RetryContext Driver::Context() {
  return RetryContext{
      .method_name = options_.call.method_name,
      .worker_type_name = options_.call.worker_type_name,
      .attempt = attempt_,
      .elapsed = started_ ? clock().Now() - start_ : absl::ZeroDuration(),
      .arguments_renderer = options_.call.arguments ? &options_.call.arguments : nullptr,
  };
}

void Driver::Report(const std::string& message) const {
  if (options_.report) {
    try {
      options_.report(message);
      return;
    } catch (...) {
      // Falls through to stderr: a report must not change the retry's outcome.
    }
  }
  std::fprintf(stderr, "concurry retry: %s\n", message.c_str());
}

bool Driver::Stopped() const { return options_.stop && options_.stop(); }

namespace {
bool IsCancellation(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const CancelledError&) {
    return true;
  } catch (...) {
    return false;
  }
}
}  // namespace

std::optional<absl::Duration> Driver::OnError(const std::exception_ptr& error) {
  // Never retried: a stop request, or a cancellation (retrying cannot undo it).
  if (Stopped() || IsCancellation(error)) return std::nullopt;
  const RetryContext context = Context();
  if (validating()) results_.push_back(absl::StrCat("threw ", Describe(error)));
  bool retry = false;
  for (size_t i = 0; i < policy_.retry_on.size() && !retry; ++i) {
    try {
      retry = policy_.retry_on[i].Matches(error, context);
    } catch (...) {
      // A filter that throws does not match (as in concurry); other filters still may.
      Report(absl::StrCat("retry_on[", i, "] (", policy_.retry_on[i].Describe(), ") threw ",
                          Describe(std::current_exception()), " on attempt ", attempt_,
                          " while checking ", Describe(error),
                          "; counted as not matching (no retry unless another filter matches)"));
    }
  }
  if (!retry) return std::nullopt;
  return NextWait(RetryFailure{.error = error}, context);
}

std::optional<absl::Duration> Driver::OnStatus(const absl::Status& status) {
  if (Stopped()) return std::nullopt;
  const RetryContext context = Context();
  if (validating()) results_.push_back(absl::StrCat("returned ", status.ToString()));
  if (std::find(policy_.retry_on_codes.begin(), policy_.retry_on_codes.end(), status.code()) ==
      policy_.retry_on_codes.end()) {
    return std::nullopt;
  }
  return NextWait(RetryFailure{.status = status}, context);
}

bool Driver::Validate(const RetryResult& result) {
  const RetryContext context = Context();
  bool ok = true;
  for (size_t i = 0; i < policy_.retry_until.size(); ++i) {
    const RetryValidator& validator = policy_.retry_until[i];
    try {
      if (std::optional<std::string> failure = validator.check(result, context)) {
        ok = false;
        messages_.push_back(absl::StrCat("attempt ", attempt_, ": validator ",
                                         ValidatorLabel(validator, i), " ", *failure));
      }
    } catch (...) {
      ok = false;
      messages_.push_back(absl::StrCat("attempt ", attempt_, ": validator ",
                                       ValidatorLabel(validator, i), " raised ",
                                       Describe(std::current_exception())));
    }
  }
  return ok;
}

std::optional<absl::Duration> Driver::OnInvalid(const RetryResult& result) {
  results_.push_back(result.ToString());
  if (Stopped()) return std::nullopt;
  return NextWait(RetryFailure{.invalid = true, .result = result}, Context());
}

absl::Status Driver::ValidationStatus() const {
  return absl::AbortedError(
      RetryValidationError(attempt_, results_, messages_, std::string(method_name())).what());
}

std::optional<absl::Duration> Driver::NextWait(const RetryFailure& failure,
                                               const RetryContext& context) {
  if (attempt_ > policy_.num_retries) return std::nullopt;
  std::optional<absl::Duration> server_delay;
  if (policy_.delay_hook) {
    try {
      server_delay = policy_.delay_hook(failure, context);
    } catch (...) {
      Report(absl::StrCat("delay_hook threw ", Describe(std::current_exception()), " on attempt ",
                          attempt_, "; using the policy's back-off"));
      server_delay.reset();
    }
  } else {
    server_delay = ServerRetryAfter(failure);
  }
  // Draws, in this order: the back-off's (unless kHookOnly with a server delay), then the server
  // delay's jitter.
  const absl::BitGenRef bitgen = options_.bitgen ? *options_.bitgen : ThreadBitGen();
  std::optional<absl::Duration> wait;
  absl::Duration backoff = absl::ZeroDuration();
  if (!server_delay || policy_.delay_hook_mode != HookDelayMode::kHookOnly) {
    backoff = BackoffWait(policy_, attempt_, bitgen, previous_backoff_);
    previous_backoff_ = backoff;
  }
  if (server_delay) {
    wait = ServerDelayWait(policy_, *server_delay, backoff, bitgen);
  } else {
    wait = backoff;
  }
  // A wait that never ends is not slept (nor scheduled on a timer, where the retry's future would
  // stay pending for ever): the retry ends now, as when the deadline forbids the wait. That
  // includes a finite wait whose end is past what absl::Time represents (absl::Time +
  // absl::Duration saturates at InfiniteFuture()).
  if (*wait == absl::InfiniteDuration()) return std::nullopt;
  const bool has_deadline = policy_.deadline != absl::InfiniteDuration();
  if (*wait > absl::ZeroDuration() || has_deadline) {
    const absl::Time wake = clock().Now() + *wait;
    if (wake == absl::InfiniteFuture()) return std::nullopt;
    // start_ + deadline saturates too: a deadline beyond InfiniteFuture() never ends a retry.
    if (has_deadline && wake > start_ + policy_.deadline) return std::nullopt;
  }
  return wait;
}

void PrepareAsyncOptions(RetryOptions& options) {
  if (options.timer == nullptr) options.timer = &Timer::Default();
  Clock& timer_clock = options.timer->clock();
  if (options.clock != nullptr && options.clock != &timer_clock) {
    throw InvalidOptionError(
        "RetryAsync: options.clock differs from the timer's clock; set options.timer to a Timer "
        "built on that clock (the timer's clock is used for waits and the deadline)");
  }
  options.clock = &timer_clock;
}

void CheckCoroOptions(const RetryOptions& options) {
  if (options.timer != nullptr) {
    throw InvalidOptionError(
        "RetryAsync(fn, policy, options): options.timer must be null; the coroutine form waits "
        "through its coroutine's scheduler, on options.clock (or the scheduler's clock when null)");
  }
}

}  // namespace retry_internal
}  // namespace concurry

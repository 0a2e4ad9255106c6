#include "sync/stream.h"

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <typeinfo>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"

namespace concurry {

bool AbslParseFlag(absl::string_view text, Order* order, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "completion" || lower == "completed") {
    *order = Order::kCompletion;
    return true;
  }
  if (lower == "input" || lower == "ordered") {
    *order = Order::kInput;
    return true;
  }
  *error = absl::StrCat("unknown stream order '", text,
                        "'; allowed: completion (completed), input (ordered)");
  return false;
}

std::string AbslUnparseFlag(Order order) {
  switch (order) {
    case Order::kCompletion:
      return "completion";
    case Order::kInput:
      return "input";
  }
  return absl::StrCat(static_cast<int>(order));  // Not a value: shown as it is, never renamed.
}

bool AbslParseFlag(absl::string_view text, ErrorPolicy* policy, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "stop_on_error" || lower == "stop") {
    *policy = ErrorPolicy::kStopOnError;
    return true;
  }
  if (lower == "collect") {
    *policy = ErrorPolicy::kCollect;
    return true;
  }
  *error = absl::StrCat("unknown stream error policy '", text,
                        "'; allowed: stop_on_error (stop), collect");
  return false;
}

std::string AbslUnparseFlag(ErrorPolicy policy) {
  switch (policy) {
    case ErrorPolicy::kStopOnError:
      return "stop_on_error";
    case ErrorPolicy::kCollect:
      return "collect";
  }
  return absl::StrCat(static_cast<int>(policy));  // Not a value: shown as it is, never renamed.
}

namespace sync_internal {

// kMaxStreamInFlight: the slot table's index (chunk pointers for 2 * max_in_flight slots) is
// allocated up front, and 1 << 20 keeps it at 256 KiB at most.
void ValidateStreamOptions(const StreamOptions& options) {
  if (options.max_in_flight < 1 || options.max_in_flight > kMaxStreamInFlight) {
    throw InvalidOptionError(absl::StrCat("StreamOptions::max_in_flight must be in [1, ",
                                          kMaxStreamInFlight, "], got ", options.max_in_flight));
  }
  if (options.order != Order::kCompletion && options.order != Order::kInput) {
    throw InvalidOptionError(absl::StrCat("StreamOptions::order: unknown value ",
                                          static_cast<int>(options.order),
                                          "; allowed: kCompletion, kInput"));
  }
  if (options.on_error != ErrorPolicy::kStopOnError && options.on_error != ErrorPolicy::kCollect) {
    throw InvalidOptionError(absl::StrCat("StreamOptions::on_error: unknown value ",
                                          static_cast<int>(options.on_error),
                                          "; allowed: kStopOnError, kCollect"));
  }
  if (options.timeout < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat("StreamOptions::timeout must be >= 0, got ",
                                          absl::FormatDuration(options.timeout)));
  }
  if (options.progress.miniters < 0) {
    throw InvalidOptionError(
        absl::StrCat("StreamOptions::progress.miniters must be >= 0 (0 = automatic), got ",
                     options.progress.miniters));
  }
  // Checked here too, so that a bad style fails Stream() itself, not the first Next().
  if (options.progress.style != ProgressOptions::Style::kAuto &&
      options.progress.style != ProgressOptions::Style::kInPlace &&
      options.progress.style != ProgressOptions::Style::kLines) {
    throw InvalidOptionError(absl::StrCat("StreamOptions::progress.style: unknown value ",
                                          static_cast<int>(options.progress.style),
                                          "; allowed: kAuto, kInPlace, kLines"));
  }
}

StreamRunner ExecutorRunner(const Executor& executor) {
  StreamRunner runner;
  runner.max_concurrency = executor.max_concurrency();
  runner.executor_type = &typeid(executor);
  return runner;
}

namespace {

// StreamRunner::description, or the executor named after its type.
std::string RunnerDescription(const StreamRunner& runner) {
  if (!runner.description.empty() || runner.executor_type == nullptr) return runner.description;
  const std::string type = TypeName(*runner.executor_type);
  // TbbExecutor's threads are meant to stay busy with CPU work (oneTBB adds spare threads only
  // for declared BlockingRegions), which is what a stream of blocking calls usually is not.
  return absl::StrCat("the executor (", type,
                      absl::StrContains(type, "TbbExecutor") ? ", sized for CPU work" : "", ")");
}

}  // namespace

std::string OverConcurrencyMessage(int max_in_flight, const StreamRunner& runner) {
  if (runner.max_concurrency <= 0 || max_in_flight <= runner.max_concurrency) return "";
  const std::string advice =
      runner.advice.empty()
          ? absl::StrCat(
                "for blocking I/O use a ThreadPoolExecutor (futures/thread_pool_executor.h) "
                "with max_workers >= ",
                max_in_flight)
          : runner.advice;
  return absl::StrCat(runner.api, ": max_in_flight = ", max_in_flight, " but ",
                      RunnerDescription(runner), " runs at most ", runner.max_concurrency, " task",
                      runner.max_concurrency == 1 ? "" : "s", " at once; ", advice);
}

namespace {

// The distinct warnings already written to stderr. Bounded: past kMaxRemembered distinct ones,
// further warnings are written without being remembered (so they may repeat).
class WarnedMessages {
 public:
  static constexpr size_t kMaxRemembered = 1024;

  // Returns true the first time `message` is seen.
  bool FirstTime(const std::string& message) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (seen_.contains(message)) return false;
    if (seen_.size() < kMaxRemembered) seen_.insert(message);
    return true;
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

void WarnIfOverConcurrency(const StreamOptions& options, const StreamRunner& runner) {
  // The default max_in_flight asks for no particular concurrency: only a chosen one is checked.
  if (!runner.warn || options.max_in_flight == StreamOptions{}.max_in_flight) return;
  const std::string message = OverConcurrencyMessage(options.max_in_flight, runner);
  if (message.empty()) return;
  if (options.on_warning) {
    options.on_warning(message);
    return;
  }
  static WarnedMessages* const warned = new WarnedMessages();  // Never destroyed: no exit race.
  if (!warned->FirstTime(message)) return;
  std::fprintf(stderr, "concurry: warning: %s\n", message.c_str());
}

std::exception_ptr StreamDroppedTaskError() {
  return std::make_exception_ptr(StoppedError(
      "Stream: the executor dropped the task without running it (it was shut down or destroyed)"));
}

std::exception_ptr StreamCancelledError() {
  return std::make_exception_ptr(CancelledError("Stream: the stream was cancelled"));
}

std::exception_ptr StreamTimeoutError(absl::Duration timeout, int64_t yielded) {
  return std::make_exception_ptr(
      TimeoutError(absl::StrCat("Stream timed out after ", absl::FormatDuration(timeout),
                                "; yielded ", yielded, " results")));
}

}  // namespace sync_internal
}  // namespace concurry

#include "sync/wait.h"

#include <algorithm>
#include <span>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "futures/errors.h"
#include "sync/internal/wait_steps.h"
#include "sync/internal/watch.h"

namespace concurry {
namespace {

using sync_internal::Snapshot;

constexpr char kOperation[] = "Wait";

}  // namespace

bool AbslParseFlag(absl::string_view text, ReturnWhen* return_when, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "all_completed" || lower == "all") {
    *return_when = ReturnWhen::kAllCompleted;
  } else if (lower == "first_completed" || lower == "first") {
    *return_when = ReturnWhen::kFirstCompleted;
  } else if (lower == "first_exception" || lower == "exception") {
    *return_when = ReturnWhen::kFirstException;
  } else {
    *error = absl::StrCat("unknown return_when \"", text,
                          "\"; expected all_completed (all), first_completed (first) or "
                          "first_exception (exception)");
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(ReturnWhen return_when) {
  switch (return_when) {
    case ReturnWhen::kAllCompleted:
      return "all_completed";
    case ReturnWhen::kFirstCompleted:
      return "first_completed";
    case ReturnWhen::kFirstException:
      return "first_exception";
  }
  return absl::StrCat(static_cast<int>(return_when));
}

namespace sync_internal {

void CheckWaitInput(const char* operation, std::span<const AnyFuture> futures,
                    const WaitOptions& options) {
  CheckTimeout(operation, options.timeout);
  const ReturnWhen when = options.return_when;
  if (when != ReturnWhen::kAllCompleted && when != ReturnWhen::kFirstCompleted &&
      when != ReturnWhen::kFirstException) {
    throw InvalidOptionError(absl::StrCat(operation, ": return_when: unknown value ",
                                          static_cast<int>(when),
                                          "; allowed: kAllCompleted, kFirstCompleted, "
                                          "kFirstException"));
  }
  for (size_t i = 0; i < futures.size(); ++i) {
    if (!futures[i].valid()) ThrowInvalidFuture(operation, NameIndex(i));
  }
}

Snapshot ScanDone(std::span<const AnyFuture> futures) {
  Snapshot snapshot;
  for (size_t i = 0; i < futures.size(); ++i) {
    if (!futures[i].Done()) continue;
    snapshot.completed.push_back(i);
    if (futures[i].Error() != nullptr) ++snapshot.failures;
  }
  return snapshot;
}

WaitCondition::WaitCondition(ReturnWhen return_when, size_t count)
    : needed(return_when == ReturnWhen::kFirstCompleted ? std::min<size_t>(1, count) : count),
      or_failure(return_when == ReturnWhen::kFirstException) {}

WaitResult EndWait(std::span<const AnyFuture> futures, const Snapshot& snapshot, bool met,
                   ProgressReporter& progress, bool cancel_pending_on_timeout) {
  if (met) {
    progress.Success();
  } else {
    progress.Stop("Timeout");
  }
  WaitResult result;
  result.timed_out = !met;
  std::vector<bool> done(futures.size(), false);
  for (size_t i : snapshot.completed) done[i] = true;
  for (size_t i = 0; i < futures.size(); ++i) {
    (done[i] ? result.done : result.not_done).push_back(i);
  }
  if (result.timed_out && cancel_pending_on_timeout) {
    for (size_t i : result.not_done) futures[i].Cancel();
  }
  return result;
}

}  // namespace sync_internal

WaitResult Wait(std::span<const AnyFuture> futures, const WaitOptions& options) {
  sync_internal::CheckWaitInput(kOperation, futures, options);
  Clock& clock = sync_internal::ClockOrReal(options.clock);
  const absl::Time deadline = sync_internal::DeadlineAfter(clock, options.timeout);
  ProgressReporter progress(options.progress, static_cast<int64_t>(futures.size()), "Waiting",
                            clock);

  const sync_internal::WaitCondition condition(options.return_when, futures.size());

  // Fast path: no callbacks when the condition already holds.
  Snapshot snapshot = sync_internal::ScanDone(futures);
  bool met = condition.Holds(snapshot);
  if (met) {
    progress.Advance(static_cast<int64_t>(snapshot.completed.size()));
  } else {
    sync_internal::Watch watch(futures, kOperation);
    snapshot = {};  // The watch records every completion, including the ones scanned above.
    for (bool reached = true; reached && !met;) {
      const size_t before = snapshot.completed.size();
      // A progress report needs a wake-up at each completion; otherwise only the last one wakes.
      const size_t count = progress.active() ? before + 1 : condition.needed;
      reached = watch.Await(count, condition.or_failure, clock, deadline, &snapshot);
      progress.Advance(static_cast<int64_t>(snapshot.completed.size() - before));
      met = condition.Holds(snapshot);
    }
  }
  return sync_internal::EndWait(futures, snapshot, met, progress,
                                options.cancel_pending_on_timeout);
}

}  // namespace concurry

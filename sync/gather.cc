#include "sync/gather.h"

#include "absl/strings/str_cat.h"
#include "futures/errors.h"
#include "sync/wait.h"

namespace concurry {
namespace sync_internal {

void AwaitAllSlow(const char* operation, std::span<const AnyFuture> futures,
                  const GatherOptions& options) {
  WaitOptions wait_options{.timeout = options.timeout,
                           .return_when = ReturnWhen::kAllCompleted,
                           .clock = options.clock,
                           .progress = options.progress,
                           .cancel_pending_on_timeout = options.cancel_pending_on_timeout};
  if (wait_options.progress.description.empty()) wait_options.progress.description = "Gathering";
  const WaitResult result = Wait(futures, wait_options);
  if (result.timed_out) {
    throw TimeoutError(absl::StrCat(operation, ": timed out after ",
                                    absl::FormatDuration(options.timeout), "; ", result.done.size(),
                                    " of ", futures.size(), " futures completed"));
  }
}

}  // namespace sync_internal
}  // namespace concurry

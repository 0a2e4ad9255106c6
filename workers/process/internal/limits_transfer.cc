#include "workers/process/internal/limits_transfer.h"

#include "futures/errors.h"

namespace concurry::process_internal {

// Interim: only pools without limits cross until limits/ can transfer process-shared sets.
WorkerLimitsBlueprint ExportWorkerLimits(const LimitPool& limits) {
  for (const LimitSet& set : limits.sets()) {
    if (!set.no_op()) {
      throw InvalidOptionError("process workers with limits are not supported yet");
    }
  }
  return {};
}

LimitPool ImportWorkerLimits(absl::string_view blueprint, absl::Span<const int> /*fds*/) {
  if (!blueprint.empty()) throw InvalidOptionError("limits blueprint not supported yet");
  return LimitPool();
}

}  // namespace concurry::process_internal

// A worker's limits on their way to its process: what the parent sends with the construction
// frame, and the LimitPool the worker process rebuilds from it (on the same shared memory).

#ifndef CONCURRY_WORKERS_PROCESS_INTERNAL_LIMITS_TRANSFER_H_
#define CONCURRY_WORKERS_PROCESS_INTERNAL_LIMITS_TRANSFER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "limits/limit_pool.h"

namespace concurry::process_internal {

struct WorkerLimitsBlueprint {
  // Empty for no limits.
  std::string blueprint;
  // Owned by the pool's sets; sent along the frame.
  std::vector<int> fds;
};

// limits_internal::ExportLimitPool for a worker. Throws InvalidOptionError for a set that cannot
// be shared with another process (LimitSharing::kThreads).
WorkerLimitsBlueprint ExportWorkerLimits(const LimitPool& limits);
// The worker process's pool, on the same shared state; `fds` stay the caller's. Throws
// StatusError (DataLoss) for an undecodable blueprint.
LimitPool ImportWorkerLimits(absl::string_view blueprint, absl::Span<const int> fds);

}  // namespace concurry::process_internal

#endif  // CONCURRY_WORKERS_PROCESS_INTERNAL_LIMITS_TRANSFER_H_

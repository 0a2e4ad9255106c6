#include "workers/process/internal/limits_transfer.h"

#include "limits/internal/process_transfer.h"

namespace concurry::process_internal {

WorkerLimitsBlueprint ExportWorkerLimits(const LimitPool& limits) {
  limits_internal::ExportedLimits exported = limits_internal::ExportLimitPool(limits);
  return {std::move(exported.blueprint), std::move(exported.fds)};
}

LimitPool ImportWorkerLimits(absl::string_view blueprint, absl::Span<const int> fds) {
  return limits_internal::ImportLimitPool(blueprint, fds);
}

}  // namespace concurry::process_internal

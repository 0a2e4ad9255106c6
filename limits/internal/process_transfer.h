// Handing process-shared limits to another process of the same program. A LimitSet with
// LimitSharing::kProcesses keeps its state in a memfd; a process fork()ed after the set was
// created shares it through the inherited mapping, but a process started earlier (a process
// worker forked by the forkserver) needs the fd and a description of the sets. ExportLimitPool()
// gives both; the other process passes them to ImportLimitPool() and gets a pool whose sets run
// on the very same state.
//
//   // Parent:
//   limits_internal::ExportedLimits exported = limits_internal::ExportLimitPool(pool);
//   SendOverSocket(socket, exported.blueprint, exported.fds);  // fds with SCM_RIGHTS.
//   // Child (same binary):
//   LimitPool pool = limits_internal::ImportLimitPool(blueprint, received_fds);
//   // ... close(received_fds): the pool keeps duplicates.
//
// Internal (for //workers); not part of the public API.

#ifndef CONCURRY_LIMITS_INTERNAL_PROCESS_TRANSFER_H_
#define CONCURRY_LIMITS_INTERNAL_PROCESS_TRANSFER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "limits/limit_pool.h"

namespace concurry {
namespace limits_internal {

// What another process needs to attach to a pool's sets.
struct ExportedLimits {
  // Bytes describing the pool: each set's limits (key, kind, capacity, window, algorithm, burst),
  // its options (fairness, sharing, max_holders, lease_check_interval, config) and the pool's
  // balancing and worker_index. Meaningful only to the same program (build) that wrote it.
  std::string blueprint;
  // The memfd of each process-shared set with limits, in set order (no-op sets have none). Owned
  // by the sets: valid while the exported pool (or a copy of it) lives. Send them with
  // SCM_RIGHTS or dup() them; do not close them.
  std::vector<int> fds;
};

// Describes `pool` for another process. Throws InvalidOptionError naming the set (its index,
// limit keys and config) when a set with limits is LimitSharing::kThreads: its state lives in
// this process's private memory and cannot be shared. A pool of no-op sets exports with no fd.
ExportedLimits ExportLimitPool(const LimitPool& pool);

// In another process of the same program: a LimitPool over sets that run on the exporter's
// shared state (the same algorithms, counters and holders: a unit held here is held for the
// exporter and every other importer), with the same set order, balancing and worker_index. The
// round-robin position starts afresh. `fds` are duplicated; the caller keeps and closes its own.
// Nothing in the shared state is re-initialized.
//
// LimitSetOptions::on_warning (a function of the exporting process) cannot cross: the imported
// sets write their warnings to stderr. They use the real clock, as every kProcesses set does.
// Dead-holder recovery works across exporter and importers alike (holders are identified by
// process id and start time).
//
// Throws StatusError (kDataLoss) for a blueprint that cannot be decoded (truncated, garbled,
// trailing bytes, values no limit can have), InvalidOptionError when `fds` do not match it (their
// number, the size or contents of the memory behind them) or when the blueprint was written by a
// program whose shared layout differs.
LimitPool ImportLimitPool(absl::string_view blueprint, absl::Span<const int> fds);

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_PROCESS_TRANSFER_H_

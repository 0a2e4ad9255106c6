// Internal access to a LimitSet's process-shared state, for handing the set to another process
// (limits/internal/process_transfer.h). Not for users.

#ifndef CONCURRY_LIMITS_INTERNAL_SET_ACCESS_H_
#define CONCURRY_LIMITS_INTERNAL_SET_ACCESS_H_

#include <cstddef>
#include <vector>

#include "limits/limit.h"
#include "limits/limit_set.h"

namespace concurry {
namespace limits_internal {

struct SetAccess {
  // The memfd behind a LimitSharing::kProcesses set's state, owned by the set (valid while it
  // lives); -1 for a kThreads or kHosts set.
  static int SharedFd(const LimitSet& set);
  // The size of that state in bytes (0 for a kThreads or kHosts set).
  static size_t SharedBytes(const LimitSet& set);
  // The bytes the shared state of a set of `limits` with `max_holders` takes: what SharedBytes()
  // of such a set is, in any process of the same program.
  static size_t SharedBytesFor(const std::vector<Limit>& limits, int max_holders);
  // The options the set was created with.
  static const LimitSetOptions& Options(const LimitSet& set);
  // A set of `limits` that runs on the state behind `fd`, created by a kProcesses set of the same
  // limits and options in this or another process: the same algorithms, counters and holders. It
  // initializes nothing and keeps a duplicate of `fd` (the caller keeps its own). `options` must
  // say kProcesses and the real clock. Throws InvalidOptionError when the memory behind `fd` does
  // not fit (its size, the rate states' parameters).
  static LimitSet Attach(std::vector<Limit> limits, LimitSetOptions options, int fd);
  // Whether limit `index` of `set` keeps its GCRA word or resource count on the cache line of the
  // set's lock (a kThreads set's hot words; see SetImpl::ComputeLayout()); false for a kHosts
  // set. For tests.
  static bool HasHotWord(const LimitSet& set, size_t index);
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_SET_ACCESS_H_

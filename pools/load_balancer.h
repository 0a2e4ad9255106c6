// Load balancers: which worker of a pool takes the next call. concurry's four algorithms, with its
// selection and tie-breaking rules (reference §4.4), behind an interface a user can implement.
//
//   std::unique_ptr<concurry::LoadBalancer> balancer =
//       concurry::MakeLoadBalancer(concurry::LoadBalancing::kLeastActiveLoad, 3);
//   int worker = balancer->Pick();   // 0: every worker is idle, ties go to the lowest index
//   ...                              // run the call on worker 0
//   balancer->RecordComplete(worker);
//
// Every balancer is thread-safe and lock-free: a pick is a few atomic operations (see
// benchmarks/pools_benchmark). Counts are exact under concurrency; the choice among workers is
// made on a snapshot, so two threads picking at the same instant may both see the same worker as
// the least loaded, as with any load-based balancer that does not serialize its callers.

#ifndef CONCURRY_POOLS_LOAD_BALANCER_H_
#define CONCURRY_POOLS_LOAD_BALANCER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace concurry {

// The built-in algorithms. Parse from concurry's names and aliases, case-insensitively:
// "round_robin" / "rr", "least_active" / "active", "least_total" / "total", "random" / "rand"
// (and the class names "RoundRobin", "LeastActiveLoad", "LeastTotalLoad", "Random").
enum class LoadBalancing {
  // Worker (offset + k) % n for the k-th pick. Default for persistent pools.
  kRoundRobin,
  // The worker with the fewest calls in flight (started and not completed); ties go to the lowest
  // index. Sees real load only when the pool records every completion.
  kLeastActiveLoad,
  // The worker with the fewest calls ever started; ties go to the lowest index.
  kLeastTotalLoad,
  // A uniformly random worker. (concurry's default for on-demand pools; here on-demand pools
  // hand calls to the next free worker instead, see docs/pools.md.)
  kRandom,
};

bool AbslParseFlag(absl::string_view text, LoadBalancing* balancing, std::string* error);
// "round_robin", "least_active", "least_total" or "random".
std::string AbslUnparseFlag(LoadBalancing balancing);

// A snapshot of a balancer's counters (concurry's get_stats()). Fields an algorithm does not keep
// are empty or zero.
struct LoadBalancerStats {
  // "RoundRobin", "LeastActiveLoad", "LeastTotalLoad", "Random", or a user balancer's name.
  std::string algorithm;
  // Picks so far.
  int64_t total_dispatched = 0;
  // kRoundRobin: the index of the first pick.
  int64_t offset = 0;
  // kLeastActiveLoad: calls in flight per worker, and their sum.
  std::vector<int64_t> active_calls;
  int64_t total_active = 0;
  // kLeastTotalLoad: calls started per worker, and their sum.
  std::vector<int64_t> total_calls;
  int64_t sum_total_calls = 0;
};

// Picks workers by index in [0, num_workers). Implementations must be thread-safe.
class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;

  // The index of the worker for the next call, counted as started on it.
  virtual int Pick() = 0;
  // The call started on `index` by Pick finished (value, error or cancellation). Throws
  // InvalidOptionError for an index outside [0, num_workers). A completion with no matching start
  // leaves the count at 0 (as concurry does).
  virtual void RecordComplete(int index) = 0;
  virtual LoadBalancerStats Stats() const = 0;
  virtual int num_workers() const = 0;
};

struct LoadBalancerOptions {
  // kRoundRobin: the first pick, >= 0, taken modulo num_workers (a pool's worker index offset).
  int64_t offset = 0;
  // kRandom: the seed of the random sequence; 0 seeds from std::random_device.
  uint64_t seed = 0;
};

// A built-in balancer over `num_workers` workers. Throws InvalidOptionError for num_workers < 1
// ("num_workers must be positive" in concurry), a negative offset or an unknown algorithm.
std::unique_ptr<LoadBalancer> MakeLoadBalancer(LoadBalancing balancing, int num_workers,
                                               LoadBalancerOptions options = {});

}  // namespace concurry

#endif  // CONCURRY_POOLS_LOAD_BALANCER_H_

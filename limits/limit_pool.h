// LimitPool: several LimitSets of the same shape (one per API account, key or region) used as
// one. Each acquisition picks a set, round-robin or at random, and carries that set's config so
// the caller knows which account it is spending.
//
//   concurry::LimitPool pool = concurry::LimitPool::Create(
//       {MakeAccountLimits("a-1"), MakeAccountLimits("a-2")},
//       {.balancing = concurry::LimitPoolBalancing::kRoundRobin, .worker_index = 3});
//   concurry::LimitAcquisition acquired = pool.Acquire({{"tokens", 100}});
//   std::string account = acquired.config().at("account");

#ifndef CONCURRY_LIMITS_LIMIT_POOL_H_
#define CONCURRY_LIMITS_LIMIT_POOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/future.h"
#include "limits/limit_set.h"

namespace concurry {

// How a LimitPool picks a set (concurry supports these two for LimitPool).
enum class LimitPoolBalancing {
  // Default. Set (worker_index + n) % size for the n-th acquisition: workers given different
  // indexes start on different sets, so a pool of workers spreads over the accounts at once.
  kRoundRobin,
  kRandom,
};

// Returns "round_robin" or "random".
absl::string_view LimitPoolBalancingName(LimitPoolBalancing balancing);

struct LimitPoolOptions {
  LimitPoolBalancing balancing = LimitPoolBalancing::kRoundRobin;
  // Round-robin starting offset, >= 0 (taken modulo the number of sets).
  int64_t worker_index = 0;
};

struct LimitPoolStats {
  LimitPoolBalancing balancing = LimitPoolBalancing::kRoundRobin;
  int64_t worker_index = 0;
  // Acquisitions attempted on each set (picks), in set order.
  std::vector<int64_t> picks;
  // Each set's statistics, in set order.
  std::vector<LimitSetStats> sets;
};

// A copyable handle. Copies share the sets and the round-robin position; WithWorkerIndex() makes
// a pool over the same sets with a position of its own. Thread-safe.
class LimitPool {
 public:
  // Throws InvalidOptionError for no sets ("LimitPool requires at least one LimitSet"), sets whose
  // keys differ (or whose limits of one key differ in kind: the message names them; capacities
  // and algorithms may differ), an unknown balancing value or a negative worker_index. The no-op
  // set has no keys, so it pools only with no-op sets.
  static LimitPool Create(std::vector<LimitSet> sets, LimitPoolOptions options = {});
  // A pool of one no-op set: what a worker without limits sees.
  LimitPool();

  // Picks a set and acquires from it (see LimitSet::Acquire); the acquisition's config() is that
  // set's. A request the picked set cannot satisfy in time throws TimeoutError; the pool does not
  // try another set. A negative timeout throws InvalidOptionError before any pick.
  LimitAcquisition Acquire(absl::Span<const LimitAmount> request = {},
                           absl::Duration timeout = absl::InfiniteDuration()) const;
  std::optional<LimitAcquisition> TryAcquire(absl::Span<const LimitAmount> request = {}) const;
  Future<LimitAcquisition> AcquireAsync(std::vector<LimitAmount> request = {},
                                        absl::Duration timeout = absl::InfiniteDuration()) const;

  // Returns the set the next acquisition would use and advances the position.
  const LimitSet& Pick() const;

  size_t size() const { return state_->sets.size(); }
  // The set at `index`; throws InvalidOptionError if `index` >= size().
  const LimitSet& operator[](size_t index) const;
  const std::vector<LimitSet>& sets() const { return state_->sets; }
  const LimitPoolOptions& options() const { return options_; }
  // Whether every set is the no-op set.
  bool no_op() const;

  // A pool over the same sets whose round-robin starts at `worker_index` (for worker i of a pool
  // of workers). Throws InvalidOptionError if `worker_index` < 0.
  LimitPool WithWorkerIndex(int64_t worker_index) const;

  LimitPoolStats Stats() const;

 private:
  struct State {
    std::vector<LimitSet> sets;
    std::unique_ptr<std::atomic<int64_t>[]> picks;
  };
  LimitPool(std::shared_ptr<const State> state, LimitPoolOptions options);

  std::shared_ptr<const State> state_;
  LimitPoolOptions options_;
  std::shared_ptr<std::atomic<uint64_t>> position_;
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_LIMIT_POOL_H_

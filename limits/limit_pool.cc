#include "limits/limit_pool.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "futures/errors.h"

namespace concurry {
namespace {

// A per-thread generator for kRandom: no lock, no shared state.
uint64_t NextRandom() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return generator();
}

}  // namespace

absl::string_view LimitPoolBalancingName(LimitPoolBalancing balancing) {
  switch (balancing) {
    case LimitPoolBalancing::kRoundRobin:
      return "round_robin";
    case LimitPoolBalancing::kRandom:
      return "random";
  }
  return "unknown";
}

LimitPool LimitPool::Create(std::vector<LimitSet> sets, LimitPoolOptions options) {
  if (sets.empty()) throw InvalidOptionError("LimitPool requires at least one LimitSet");
  if (options.balancing != LimitPoolBalancing::kRoundRobin &&
      options.balancing != LimitPoolBalancing::kRandom) {
    throw InvalidOptionError(absl::StrCat(
        "Unsupported load balancing algorithm for LimitPool: ", static_cast<int>(options.balancing),
        "; use kRoundRobin or kRandom"));
  }
  auto state = std::make_shared<State>();
  state->picks = std::make_unique<std::atomic<int64_t>[]>(sets.size());
  state->sets = std::move(sets);
  return LimitPool(std::move(state), options);
}

LimitPool::LimitPool() {
  // One shared state for every default pool: workers without limits allocate nothing.
  static const LimitPool* const kNoOp = new LimitPool(Create({LimitSet::NoOp()}));
  *this = *kNoOp;
}

LimitPool::LimitPool(std::shared_ptr<const State> state, LimitPoolOptions options)
    : state_(std::move(state)),
      options_(options),
      position_(std::make_shared<std::atomic<uint64_t>>(0)) {
  if (options_.worker_index < 0) {
    throw InvalidOptionError(
        absl::StrCat("LimitPool worker_index must be >= 0, got ", options_.worker_index));
  }
}

LimitPool LimitPool::WithWorkerIndex(int64_t worker_index) const {
  LimitPoolOptions options = options_;
  options.worker_index = worker_index;
  return LimitPool(state_, options);
}

const LimitSet& LimitPool::Pick() const {
  const size_t count = state_->sets.size();
  size_t index = 0;
  if (count > 1) {
    if (options_.balancing == LimitPoolBalancing::kRandom) {
      index = static_cast<size_t>(NextRandom() % count);
    } else {
      const uint64_t n = position_->fetch_add(1, std::memory_order_relaxed);
      index = static_cast<size_t>((static_cast<uint64_t>(options_.worker_index) + n) % count);
    }
  }
  state_->picks[index].fetch_add(1, std::memory_order_relaxed);
  return state_->sets[index];
}

LimitAcquisition LimitPool::Acquire(absl::Span<const LimitAmount> request,
                                    absl::Duration timeout) const {
  return Pick().Acquire(request, timeout);
}

std::optional<LimitAcquisition> LimitPool::TryAcquire(absl::Span<const LimitAmount> request) const {
  return Pick().TryAcquire(request);
}

Future<LimitAcquisition> LimitPool::AcquireAsync(std::vector<LimitAmount> request,
                                                 absl::Duration timeout) const {
  return Pick().AcquireAsync(std::move(request), timeout);
}

const LimitSet& LimitPool::operator[](size_t index) const {
  if (index >= state_->sets.size()) {
    throw InvalidOptionError(absl::StrCat("LimitPool index ", index, " out of range; the pool has ",
                                          state_->sets.size(), " sets"));
  }
  return state_->sets[index];
}

bool LimitPool::no_op() const {
  for (const LimitSet& set : state_->sets) {
    if (!set.no_op()) return false;
  }
  return true;
}

LimitPoolStats LimitPool::Stats() const {
  LimitPoolStats stats;
  stats.balancing = options_.balancing;
  stats.worker_index = options_.worker_index;
  for (size_t i = 0; i < state_->sets.size(); ++i) {
    stats.picks.push_back(state_->picks[i].load(std::memory_order_relaxed));
    stats.sets.push_back(state_->sets[i].Stats());
  }
  return stats;
}

}  // namespace concurry

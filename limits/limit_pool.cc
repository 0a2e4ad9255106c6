#include "limits/limit_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "futures/errors.h"
#include "futures/internal/future_state.h"
#include "limits/limit.h"

namespace concurry {
namespace {

// "[a, b]" of `keys`, sorted.
std::string KeyList(std::vector<absl::string_view> keys) {
  std::sort(keys.begin(), keys.end());
  return absl::StrCat("[", absl::StrJoin(keys, ", "), "]");
}

// Throws InvalidOptionError unless every set has the same keys, each of the same kind as in the
// first set: a request that suits one set must suit every set the pool may pick.
void CheckSameShape(const std::vector<LimitSet>& sets) {
  const LimitSet& first = sets.front();
  for (size_t i = 1; i < sets.size(); ++i) {
    std::vector<absl::string_view> missing;  // In the first set, not in this one.
    std::vector<absl::string_view> extra;    // In this one, not in the first.
    std::vector<std::string> kinds;          // In both, of different kinds.
    for (const Limit& limit : first.limits()) {
      const Limit* other = sets[i].Find(limit.key());
      if (other == nullptr) {
        missing.push_back(limit.key());
      } else if (other->kind() != limit.kind()) {
        kinds.push_back(absl::StrCat("'", limit.key(), "' is a ", LimitKindName(limit.kind()),
                                     " limit in set 0 but a ", LimitKindName(other->kind()),
                                     " limit in set ", i));
      }
    }
    for (const Limit& limit : sets[i].limits()) {
      if (first.Find(limit.key()) == nullptr) extra.push_back(limit.key());
    }
    if (missing.empty() && extra.empty() && kinds.empty()) continue;
    std::vector<absl::string_view> first_keys;
    for (const Limit& limit : first.limits()) first_keys.push_back(limit.key());
    std::vector<absl::string_view> keys;
    for (const Limit& limit : sets[i].limits()) keys.push_back(limit.key());
    std::string differences;
    if (!missing.empty()) {
      absl::StrAppend(&differences, "; set ", i, " lacks ", KeyList(missing));
    }
    if (!extra.empty()) {
      absl::StrAppend(&differences, "; set ", i, " has ", KeyList(extra), " which set 0 lacks");
    }
    if (!kinds.empty()) absl::StrAppend(&differences, "; ", absl::StrJoin(kinds, "; "));
    throw InvalidOptionError(absl::StrCat(
        "LimitPool: every LimitSet must have the same limit keys, of the same kinds (a request "
        "must suit whichever set is picked); set 0 has ",
        KeyList(first_keys), ", set ", i, " has ", KeyList(keys), differences));
  }
}

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
    throw InvalidOptionError(absl::StrCat("LimitPoolOptions::balancing: unknown value ",
                                          static_cast<int>(options.balancing),
                                          "; allowed: kRoundRobin, kRandom"));
  }
  CheckSameShape(sets);
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
  futures_internal::CheckTimeout(timeout, "LimitPool::Acquire");  // Before a pick is counted.
  return Pick().Acquire(request, timeout);
}

std::optional<LimitAcquisition> LimitPool::TryAcquire(absl::Span<const LimitAmount> request) const {
  return Pick().TryAcquire(request);
}

Future<LimitAcquisition> LimitPool::AcquireAsync(std::vector<LimitAmount> request,
                                                 absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitPool::AcquireAsync");
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

#include "pools/load_balancer.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "futures/errors.h"

namespace concurry {
namespace {

void CheckIndex(const char* algorithm, int index, int n) {
  if (index < 0 || index >= n) {
    throw InvalidOptionError(absl::StrCat(algorithm, "::RecordComplete: worker index ", index,
                                          " is out of range; allowed: 0 to ", n - 1));
  }
}

class RoundRobin final : public LoadBalancer {
 public:
  RoundRobin(int n, int64_t offset) : n_(n), offset_(offset % n) {}

  int Pick() override {
    const uint64_t k = next_.fetch_add(1, std::memory_order_relaxed);
    return static_cast<int>((static_cast<uint64_t>(offset_) + k % n_) % n_);
  }
  void RecordComplete(int index) override { CheckIndex("RoundRobin", index, n_); }
  LoadBalancerStats Stats() const override {
    return {.algorithm = "RoundRobin",
            .total_dispatched = static_cast<int64_t>(next_.load(std::memory_order_relaxed)),
            .offset = offset_};
  }
  int num_workers() const override { return n_; }

 private:
  const int n_;
  const int64_t offset_;
  std::atomic<uint64_t> next_{0};
};

// The k-th pick is a hash of (seed, k): one atomic increment per pick, no shared generator state,
// and a sequence fixed by the seed.
class Random final : public LoadBalancer {
 public:
  Random(int n, uint64_t seed) : n_(n), seed_(seed != 0 ? seed : std::random_device{}()) {}

  int Pick() override {
    const uint64_t k = next_.fetch_add(1, std::memory_order_relaxed);
    // splitmix64 of the k-th point of the seed's sequence, mapped to [0, n) by multiplication
    // (Lemire): uniform up to a bias below n / 2^64.
    uint64_t z = seed_ + (k + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<int>(absl::Uint128High64(absl::uint128(z) * static_cast<uint64_t>(n_)));
  }
  void RecordComplete(int index) override { CheckIndex("Random", index, n_); }
  LoadBalancerStats Stats() const override {
    return {.algorithm = "Random",
            .total_dispatched = static_cast<int64_t>(next_.load(std::memory_order_relaxed))};
  }
  int num_workers() const override { return n_; }

 private:
  const int n_;
  const uint64_t seed_;
  std::atomic<uint64_t> next_{0};
};

// The worker with the smallest count (ties: the lowest index), then that count + 1.
int PickLeast(std::vector<std::atomic<int64_t>>& counts) {
  int best = 0;
  int64_t least = counts[0].load(std::memory_order_relaxed);
  for (int i = 1; i < static_cast<int>(counts.size()) && least > 0; ++i) {
    const int64_t c = counts[i].load(std::memory_order_relaxed);
    if (c < least) {
      least = c;
      best = i;
    }
  }
  counts[best].fetch_add(1, std::memory_order_relaxed);
  return best;
}

std::vector<int64_t> Snapshot(const std::vector<std::atomic<int64_t>>& counts, int64_t* sum) {
  std::vector<int64_t> values;
  values.reserve(counts.size());
  *sum = 0;
  for (const auto& c : counts) {
    values.push_back(c.load(std::memory_order_relaxed));
    *sum += values.back();
  }
  return values;
}

class LeastActiveLoad final : public LoadBalancer {
 public:
  explicit LeastActiveLoad(int n) : active_(n) {}

  int Pick() override {
    dispatched_.fetch_add(1, std::memory_order_relaxed);
    return PickLeast(active_);
  }
  void RecordComplete(int index) override {
    CheckIndex("LeastActiveLoad", index, num_workers());
    std::atomic<int64_t>& count = active_[index];
    int64_t c = count.load(std::memory_order_relaxed);
    while (c > 0 && !count.compare_exchange_weak(c, c - 1, std::memory_order_relaxed)) {
    }
  }
  LoadBalancerStats Stats() const override {
    LoadBalancerStats stats{.algorithm = "LeastActiveLoad",
                            .total_dispatched = dispatched_.load(std::memory_order_relaxed)};
    stats.active_calls = Snapshot(active_, &stats.total_active);
    return stats;
  }
  int num_workers() const override { return static_cast<int>(active_.size()); }

 private:
  std::vector<std::atomic<int64_t>> active_;
  std::atomic<int64_t> dispatched_{0};
};

class LeastTotalLoad final : public LoadBalancer {
 public:
  explicit LeastTotalLoad(int n) : total_(n) {}

  int Pick() override {
    dispatched_.fetch_add(1, std::memory_order_relaxed);
    return PickLeast(total_);
  }
  void RecordComplete(int index) override { CheckIndex("LeastTotalLoad", index, num_workers()); }
  LoadBalancerStats Stats() const override {
    LoadBalancerStats stats{.algorithm = "LeastTotalLoad",
                            .total_dispatched = dispatched_.load(std::memory_order_relaxed)};
    stats.total_calls = Snapshot(total_, &stats.sum_total_calls);
    return stats;
  }
  int num_workers() const override { return static_cast<int>(total_.size()); }

 private:
  std::vector<std::atomic<int64_t>> total_;
  std::atomic<int64_t> dispatched_{0};
};

}  // namespace

bool AbslParseFlag(absl::string_view text, LoadBalancing* balancing, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "round_robin" || lower == "rr" || lower == "roundrobin") {
    *balancing = LoadBalancing::kRoundRobin;
  } else if (lower == "least_active" || lower == "active" || lower == "leastactiveload") {
    *balancing = LoadBalancing::kLeastActiveLoad;
  } else if (lower == "least_total" || lower == "total" || lower == "leasttotalload") {
    *balancing = LoadBalancing::kLeastTotalLoad;
  } else if (lower == "random" || lower == "rand") {
    *balancing = LoadBalancing::kRandom;
  } else {
    *error = absl::StrCat("unknown load balancing \"", text,
                          "\"; expected round_robin (rr), least_active (active), least_total "
                          "(total) or random (rand)");
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(LoadBalancing balancing) {
  switch (balancing) {
    case LoadBalancing::kRoundRobin:
      return "round_robin";
    case LoadBalancing::kLeastActiveLoad:
      return "least_active";
    case LoadBalancing::kLeastTotalLoad:
      return "least_total";
    case LoadBalancing::kRandom:
      return "random";
  }
  return absl::StrCat(static_cast<int>(balancing));
}

std::unique_ptr<LoadBalancer> MakeLoadBalancer(LoadBalancing balancing, int num_workers,
                                               LoadBalancerOptions options) {
  if (num_workers < 1) {
    throw InvalidOptionError(absl::StrCat("MakeLoadBalancer: num_workers is ", num_workers,
                                          "; num_workers must be positive (>= 1)"));
  }
  if (options.offset < 0) {
    throw InvalidOptionError(
        absl::StrCat("MakeLoadBalancer: offset is ", options.offset, "; allowed: >= 0"));
  }
  switch (balancing) {
    case LoadBalancing::kRoundRobin:
      return std::make_unique<RoundRobin>(num_workers, options.offset);
    case LoadBalancing::kLeastActiveLoad:
      return std::make_unique<LeastActiveLoad>(num_workers);
    case LoadBalancing::kLeastTotalLoad:
      return std::make_unique<LeastTotalLoad>(num_workers);
    case LoadBalancing::kRandom:
      return std::make_unique<Random>(num_workers, options.seed);
  }
  throw InvalidOptionError(absl::StrCat("MakeLoadBalancer: balancing: unknown value ",
                                        static_cast<int>(balancing),
                                        "; allowed: kRoundRobin, kLeastActiveLoad, "
                                        "kLeastTotalLoad, kRandom"));
}

}  // namespace concurry

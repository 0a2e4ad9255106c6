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
  // Written by every pick: on a cache line of its own, away from what RecordComplete reads.
  alignas(64) std::atomic<uint64_t> next_{0};
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
  // Written by every pick: on a cache line of its own, away from what RecordComplete reads.
  alignas(64) std::atomic<uint64_t> next_{0};
};

// LeastActiveLoad and LeastTotalLoad: the worker with the smallest count, ties to the lowest
// index. The count is calls in flight (a completion takes one off, never below 0) or calls ever
// started (completions change nothing).
class LeastLoad final : public LoadBalancer {
 public:
  LeastLoad(int n, bool in_flight) : counts_(n), in_flight_(in_flight) {}

  int Pick() override {
    dispatched_.fetch_add(1, std::memory_order_relaxed);
    int best = 0;
    int64_t least = counts_[0].load(std::memory_order_relaxed);
    for (int i = 1; i < num_workers() && least > 0; ++i) {
      const int64_t c = counts_[i].load(std::memory_order_relaxed);
      if (c < least) {
        least = c;
        best = i;
      }
    }
    counts_[best].fetch_add(1, std::memory_order_relaxed);
    return best;
  }
  void RecordComplete(int index) override {
    CheckIndex(name(), index, num_workers());
    if (!in_flight_) return;
    std::atomic<int64_t>& count = counts_[index];
    int64_t c = count.load(std::memory_order_relaxed);
    while (c > 0 && !count.compare_exchange_weak(c, c - 1, std::memory_order_relaxed)) {
    }
  }
  LoadBalancerStats Stats() const override {
    LoadBalancerStats stats{.algorithm = name(),
                            .total_dispatched = dispatched_.load(std::memory_order_relaxed)};
    std::vector<int64_t>& values = in_flight_ ? stats.active_calls : stats.total_calls;
    int64_t& sum = in_flight_ ? stats.total_active : stats.sum_total_calls;
    for (const auto& c : counts_) {
      values.push_back(c.load(std::memory_order_relaxed));
      sum += values.back();
    }
    return stats;
  }
  int num_workers() const override { return static_cast<int>(counts_.size()); }

 private:
  const char* name() const { return in_flight_ ? "LeastActiveLoad" : "LeastTotalLoad"; }

  // Relaxed: each count is exact on its own; a pick reads a snapshot (see the header).
  std::vector<std::atomic<int64_t>> counts_;
  const bool in_flight_;
  alignas(64) std::atomic<int64_t> dispatched_{0};
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
      return std::make_unique<LeastLoad>(num_workers, /*in_flight=*/true);
    case LoadBalancing::kLeastTotalLoad:
      return std::make_unique<LeastLoad>(num_workers, /*in_flight=*/false);
    case LoadBalancing::kRandom:
      return std::make_unique<Random>(num_workers, options.seed);
  }
  throw InvalidOptionError(absl::StrCat("MakeLoadBalancer: balancing: unknown value ",
                                        static_cast<int>(balancing),
                                        "; allowed: kRoundRobin, kLeastActiveLoad, "
                                        "kLeastTotalLoad, kRandom"));
}

}  // namespace concurry

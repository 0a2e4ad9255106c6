// Pools: the cost of picking a worker, per load-balancing algorithm, from 1 and 2 threads (a pick
// plus the matching RecordComplete, as a pool does per call). Peer: the same selection under a
// std::mutex, the way concurry's balancers (and most hand-rolled pools) do it.
//
//   bazel run --config=opt //benchmarks:pools_benchmark

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "benchmark/benchmark.h"
#include "pools/load_balancer.h"

namespace {

constexpr int kWorkers = 4;

// One balancer per algorithm, shared by the benchmark's threads; never destroyed.
concurry::LoadBalancer* Shared(concurry::LoadBalancing balancing) {
  static auto* const balancers = [] {
    auto* all = new std::vector<std::unique_ptr<concurry::LoadBalancer>>();
    for (int i = 0; i < 4; ++i) {
      all->push_back(concurry::MakeLoadBalancer(static_cast<concurry::LoadBalancing>(i), kWorkers,
                                                {.seed = 7}));
    }
    return all;
  }();
  return (*balancers)[static_cast<int>(balancing)].get();
}

void BM_Pick(benchmark::State& state, concurry::LoadBalancing balancing) {
  concurry::LoadBalancer* balancer = Shared(balancing);
  for (auto _ : state) {
    const int worker = balancer->Pick();
    balancer->RecordComplete(worker);
    benchmark::DoNotOptimize(worker);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_Pick, RoundRobin, concurry::LoadBalancing::kRoundRobin)
    ->Threads(1)
    ->Threads(2);
BENCHMARK_CAPTURE(BM_Pick, LeastActiveLoad, concurry::LoadBalancing::kLeastActiveLoad)
    ->Threads(1)
    ->Threads(2);
BENCHMARK_CAPTURE(BM_Pick, LeastTotalLoad, concurry::LoadBalancing::kLeastTotalLoad)
    ->Threads(1)
    ->Threads(2);
BENCHMARK_CAPTURE(BM_Pick, Random, concurry::LoadBalancing::kRandom)->Threads(1)->Threads(2);

// The peer: least-active selection and completion under one mutex.
struct MutexLeastActive {
  std::mutex mu;
  std::vector<int64_t> active = std::vector<int64_t>(kWorkers);
  int64_t dispatched = 0;

  int Pick() {
    std::lock_guard<std::mutex> lock(mu);
    int best = 0;
    for (int i = 1; i < kWorkers; ++i) {
      if (active[i] < active[best]) best = i;
    }
    ++active[best];
    ++dispatched;
    return best;
  }
  void RecordComplete(int i) {
    std::lock_guard<std::mutex> lock(mu);
    if (active[i] > 0) --active[i];
  }
};

void BM_Pick_MutexLeastActivePeer(benchmark::State& state) {
  static MutexLeastActive* peer = new MutexLeastActive();
  for (auto _ : state) {
    const int worker = peer->Pick();
    peer->RecordComplete(worker);
    benchmark::DoNotOptimize(worker);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Pick_MutexLeastActivePeer)->Threads(1)->Threads(2);

}  // namespace

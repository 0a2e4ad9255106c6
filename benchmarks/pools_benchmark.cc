// Pools: the cost of picking a worker, and calls through worker pools, each with its peers in the
// same binary so that ratios come from one run.
//   pick:       a balancer's pick plus the matching RecordComplete, as a pool does per call, per
//               load-balancing algorithm, from 1 and 2 threads, vs the same selection under a
//               std::mutex (the way most hand-rolled pools do it)
//   tiny:       n pipelined tiny calls (add an int to a member) through a 2-worker kTbb pool and a
//               4-worker kThread pool (Worker<T>, round robin; TaskWorker, shared queue), futures
//               kept, then a wait for all (items/s) vs one worker of the same mode, a raw
//               tbb::task_group (without and with a concurry Promise per call) and a std::async
//               thread per call
//   skewed:     10 % of the calls 100x slower (1 ms vs 10 us busy spin) through a 4-worker kThread
//               pool per balancer and a TaskWorker shared-queue pool; p50/p99 latency (submit to
//               completion, in us) of the fast calls as counters
//   on demand:  tiny calls through an on-demand TaskWorker pool (kThread and kTbb, max_workers 4),
//               keepalive 0 vs 1 s, in batches of 1000 and one at a time (items/s; counter
//               workers_started per call)
//
//   bazel run --config=opt //benchmarks:pools_benchmark -- --benchmark_min_time=0.5

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "futures/future.h"
#include "oneapi/tbb/task_group.h"
#include "pools/load_balancer.h"
#include "pools/pool_stats.h"
#include "workers/options.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace {

// ============================== 1. Pick: the balancers alone ===================================

constexpr int kWorkers = 4;

// One balancer per algorithm, shared by the benchmark's threads; never destroyed.
LoadBalancer* Shared(LoadBalancing balancing) {
  static auto* const balancers = [] {
    auto* all = new std::vector<std::unique_ptr<LoadBalancer>>();
    for (int i = 0; i < 4; ++i) {
      all->push_back(MakeLoadBalancer(static_cast<LoadBalancing>(i), kWorkers, {.seed = 7}));
    }
    return all;
  }();
  return (*balancers)[static_cast<int>(balancing)].get();
}

void BM_Pick(benchmark::State& state, LoadBalancing balancing) {
  LoadBalancer* balancer = Shared(balancing);
  for (auto _ : state) {
    const int worker = balancer->Pick();
    balancer->RecordComplete(worker);
    benchmark::DoNotOptimize(worker);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(BM_Pick, RoundRobin, LoadBalancing::kRoundRobin)->Threads(1)->Threads(2);
BENCHMARK_CAPTURE(BM_Pick, LeastActiveLoad, LoadBalancing::kLeastActiveLoad)
    ->Threads(1)
    ->Threads(2);
BENCHMARK_CAPTURE(BM_Pick, LeastTotalLoad, LoadBalancing::kLeastTotalLoad)->Threads(1)->Threads(2);
BENCHMARK_CAPTURE(BM_Pick, Random, LoadBalancing::kRandom)->Threads(1)->Threads(2);

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

// ============================== 2. Tiny calls: n pipelined calls, wait for all =================

constexpr int kTbbPoolWorkers = 2;
constexpr int kThreadPoolWorkers = 4;

// The tiny call of every row: adds an int to a member. Worker<Counter> pools run it on each
// worker's own Counter; TaskWorker pools and the peers on a Counter per thread.
class Counter {
 public:
  int64_t Add(int x) {
    sum_ += x;
    return sum_;
  }

 private:
  int64_t sum_ = 0;
};

int64_t TinyCall(int x) {
  thread_local Counter counter;
  return counter.Add(x);
}

void WaitFor(const Future<int64_t>& future) { future.Wait(); }
void WaitFor(const std::future<int64_t>& future) { future.wait(); }

// Per iteration: state.range(0) calls `submit(i)`, keeping the futures, then waits for all of them.
template <typename Submit>
void RunBatches(benchmark::State& state, Submit&& submit) {
  const int64_t n = state.range(0);
  using FutureT = decltype(submit(0));
  std::vector<FutureT> futures;
  futures.reserve(n);
  for (auto _ : state) {
    for (int64_t i = 0; i < n; ++i) futures.push_back(submit(static_cast<int>(i)));
    for (const FutureT& future : futures) WaitFor(future);
    futures.clear();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

// Worker<Counter> pools: the default balancer, round robin.
void BM_Tiny_WorkerPool(benchmark::State& state, Mode mode, int workers) {
  auto pool = Worker<Counter>::Create({.mode = mode, .max_workers = workers});
  RunBatches(state, [&](int i) { return pool.Call(&Counter::Add, i); });
}
BENCHMARK_CAPTURE(BM_Tiny_WorkerPool, Tbb2, Mode::kTbb, kTbbPoolWorkers)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Tiny_WorkerPool, Thread4, Mode::kThread, kThreadPoolWorkers)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Peer: one worker (no pool) of the same mode, every call to it: what the pool layer adds.
void BM_Tiny_SingleWorker(benchmark::State& state, Mode mode) {
  auto worker = Worker<Counter>::Create({.mode = mode});
  RunBatches(state, [&](int i) { return worker.Call(&Counter::Add, i); });
}
BENCHMARK_CAPTURE(BM_Tiny_SingleWorker, Tbb, Mode::kTbb)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Tiny_SingleWorker, Thread, Mode::kThread)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// TaskWorker pools without load_balancing: one shared FIFO, each task to the next free worker.
void BM_Tiny_TaskWorkerPool(benchmark::State& state, Mode mode, int workers) {
  TaskWorker pool = TaskWorker::Create({.mode = mode, .max_workers = workers});
  RunBatches(state, [&](int i) { return pool.Submit([i] { return TinyCall(i); }); });
}
BENCHMARK_CAPTURE(BM_Tiny_TaskWorkerPool, Tbb2, Mode::kTbb, kTbbPoolWorkers)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Tiny_TaskWorkerPool, Thread4, Mode::kThread, kThreadPoolWorkers)
    ->Arg(1000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Peer: a raw tbb::task_group on oneTBB's default arena, one task per call, then group.wait()
// (no futures: the floor of the tbb pool).
void BM_Tiny_TbbTaskGroupPeer(benchmark::State& state) {
  const int64_t n = state.range(0);
  tbb::task_group group;
  for (int i = 0; i < 100; ++i) group.run([i] { TinyCall(i); });  // Starts TBB's threads.
  group.wait();
  for (auto _ : state) {
    for (int64_t i = 0; i < n; ++i) group.run([i] { TinyCall(static_cast<int>(i)); });
    group.wait();
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Tiny_TbbTaskGroupPeer)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Peer: the same, each task completing a concurry Promise whose future the caller keeps and waits
// for (a pool call's future without the pool).
struct SetPromise {
  void operator()() const { promise.SetValue(TinyCall(x)); }
  int x;
  mutable Promise<int64_t> promise;  // task_group runs a const task.
};

void BM_Tiny_TbbTaskGroupPromisePeer(benchmark::State& state) {
  tbb::task_group group;
  for (int i = 0; i < 100; ++i) group.run([i] { TinyCall(i); });
  group.wait();
  RunBatches(state, [&](int i) {
    SetPromise task{i, Promise<int64_t>()};
    Future<int64_t> future = task.promise.GetFuture();
    group.run(std::move(task));
    return future;
  });
  group.wait();
}
BENCHMARK(BM_Tiny_TbbTaskGroupPromisePeer)->Arg(1000)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Baseline: a new thread per call (std::async(std::launch::async)); smaller batches.
void BM_Tiny_StdAsyncPeer(benchmark::State& state) {
  RunBatches(state, [](int i) { return std::async(std::launch::async, TinyCall, i); });
}
BENCHMARK(BM_Tiny_StdAsyncPeer)->Arg(100)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ============================== 3. Skewed durations: latency of the fast calls ================

constexpr int64_t kFastNs = 10'000;     // 10 us
constexpr int64_t kSlowNs = 1'000'000;  // 1 ms: 100x
constexpr int kSkewedCalls = 400;       // per iteration, 10 % slow
constexpr int kSkewedBurst = 10;        // calls submitted together, every kSkewedBurstInterval
constexpr auto kSkewedBurstInterval = std::chrono::milliseconds(1);

// Busy for `ns` on the calling thread.
void SpinFor(int64_t ns) {
  const int64_t end = bench::SteadyNowNs() + ns;
  while (bench::SteadyNowNs() < end) {
  }
}

class Spinner {
 public:
  void Spin(int64_t ns) { SpinFor(ns); }
};

// Which of the kSkewedCalls calls are slow: exactly 10 %, at fixed pseudo-random positions (the
// same for every row).
const std::vector<bool>& SlowCalls() {
  static const auto* const slow = [] {
    auto* calls = new std::vector<bool>(kSkewedCalls, false);
    std::fill(calls->begin(), calls->begin() + kSkewedCalls / 10, true);
    std::shuffle(calls->begin(), calls->end(), std::mt19937(42));
    return calls;
  }();
  return *slow;
}

// Per iteration: kSkewedCalls calls of `submit(ns)` (a Future<void>), in bursts of kSkewedBurst
// every kSkewedBurstInterval (about 55 % of 2 cores), then a wait for all. A call's latency runs
// from just before its submission to a continuation on its future (run by the completing thread).
// Counters: p50_us / p99_us of the fast calls, slow_p50_us of the slow ones.
template <typename Submit>
void RunSkewed(benchmark::State& state, Submit&& submit) {
  const std::vector<bool>& slow = SlowCalls();
  std::vector<int64_t> submitted(kSkewedCalls);
  std::vector<int64_t> finished(kSkewedCalls);
  std::vector<Future<void>> done;
  done.reserve(kSkewedCalls);
  std::vector<int64_t> fast_ns;
  std::vector<int64_t> slow_ns;
  for (auto _ : state) {
    auto next = std::chrono::steady_clock::now();
    for (int i = 0; i < kSkewedCalls; ++i) {
      if (i % kSkewedBurst == 0) {
        std::this_thread::sleep_until(next);
        next += kSkewedBurstInterval;
      }
      submitted[i] = bench::SteadyNowNs();
      done.push_back(submit(slow[i] ? kSlowNs : kFastNs).Then([at = &finished[i]] {
        *at = bench::SteadyNowNs();
      }));
    }
    for (const Future<void>& future : done) future.Wait();
    done.clear();
    for (int i = 0; i < kSkewedCalls; ++i) {
      (slow[i] ? slow_ns : fast_ns).push_back(finished[i] - submitted[i]);
    }
  }
  state.SetItemsProcessed(state.iterations() * kSkewedCalls);
  state.counters["p50_us"] = bench::PercentileMicros(fast_ns, 0.50);
  state.counters["p99_us"] = bench::PercentileMicros(fast_ns, 0.99);
  state.counters["slow_p50_us"] = bench::PercentileMicros(slow_ns, 0.50);
}

// A 4-worker kThread pool of Worker<Spinner> with each balancer.
void BM_Skewed_ThreadPool(benchmark::State& state, LoadBalancing balancing) {
  auto pool = Worker<Spinner>::Create(
      {.mode = Mode::kThread, .max_workers = kThreadPoolWorkers, .load_balancing = balancing});
  RunSkewed(state, [&](int64_t ns) { return pool.Call(&Spinner::Spin, ns); });
}
BENCHMARK_CAPTURE(BM_Skewed_ThreadPool, RoundRobin, LoadBalancing::kRoundRobin)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Skewed_ThreadPool, LeastActiveLoad, LoadBalancing::kLeastActiveLoad)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Skewed_ThreadPool, LeastTotalLoad, LoadBalancing::kLeastTotalLoad)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Skewed_ThreadPool, Random, LoadBalancing::kRandom)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// A 4-worker kThread TaskWorker pool with its shared queue (the next free worker takes a task).
void BM_Skewed_ThreadTaskWorkerPool_SharedQueue(benchmark::State& state) {
  TaskWorker pool = TaskWorker::Create({.mode = Mode::kThread, .max_workers = kThreadPoolWorkers});
  RunSkewed(state, [&](int64_t ns) { return pool.Submit([ns] { SpinFor(ns); }); });
}
BENCHMARK(BM_Skewed_ThreadTaskWorkerPool_SharedQueue)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 4. On demand: a worker per call ===============================

constexpr int kOnDemandWorkers = 4;

// Tiny tasks through an on-demand TaskWorker pool, state.range(0) at a time (1: submit, wait,
// repeat). Counter workers_started: workers the pool started per call.
void BM_OnDemand_TaskWorkerPool(benchmark::State& state, Mode mode, absl::Duration keepalive) {
  TaskWorker pool = TaskWorker::Create({.mode = mode,
                                        .max_workers = kOnDemandWorkers,
                                        .on_demand = true,
                                        .on_demand_keepalive = keepalive});
  RunBatches(state, [&](int i) { return pool.Submit([i] { return TinyCall(i); }); });
  int64_t started = 0;
  for (int i = 0; i < kOnDemandWorkers; ++i) started += pool.GetWorkerStats(i).restarts;
  state.counters["workers_started"] = benchmark::Counter(
      static_cast<double>(started) / static_cast<double>(state.iterations() * state.range(0)));
}
BENCHMARK_CAPTURE(BM_OnDemand_TaskWorkerPool, ThreadKeepalive0, Mode::kThread, absl::ZeroDuration())
    ->Arg(1000)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_OnDemand_TaskWorkerPool, ThreadKeepalive1s, Mode::kThread, absl::Seconds(1))
    ->Arg(1000)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_OnDemand_TaskWorkerPool, TbbKeepalive0, Mode::kTbb, absl::ZeroDuration())
    ->Arg(1000)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_OnDemand_TaskWorkerPool, TbbKeepalive1s, Mode::kTbb, absl::Seconds(1))
    ->Arg(1000)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace concurry

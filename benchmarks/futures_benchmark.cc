// Benchmarks for //futures with their peers in the same binary, so ratios come from one run:
//   ready / create-set-get:  ours vs std::promise + std::future
//   set-to-waiter wake-up:   ours vs std::future, std::atomic::wait and absl::Notification
//                            (p50/p90/p99 counters, manual time = mean)
//   Async round trip:        TbbExecutor vs raw tbb::task_group and std::async
//   CPU of a blocked waiter: Future::Wait vs std::future::wait_for (counter cpu_us)
//
//   bazel run --config=opt //benchmarks:futures_benchmark -- --benchmark_min_time=0.5

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <optional>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/tbb_executor.h"
#include "oneapi/tbb/task_group.h"

namespace concurry {
namespace {

// ---- Create, complete and read ----------------------------------------------------------------

void BM_ReadyFutureCreateGet(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(MakeReadyFuture(i++).Result());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ReadyFutureCreateGet);

void BM_PromiseCreateSetGet(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    Promise<int> promise;
    Future<int> future = promise.GetFuture();
    promise.SetValue(i++);
    benchmark::DoNotOptimize(std::move(future).Result());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PromiseCreateSetGet);

void BM_StdPromiseFutureCreateSetGet(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    std::promise<int> promise;
    std::future<int> future = promise.get_future();
    promise.set_value(i++);
    benchmark::DoNotOptimize(future.get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_StdPromiseFutureCreateSetGet);

// ---- Wake-up latency: SetValue on one thread to Result() returning on another ------------------

// Busy-waits for `ns` nanoseconds (lets the waiter fall asleep in the kernel before the set).
void SpinForNs(int64_t ns) {
  const int64_t end = bench::SteadyNowNs() + ns;
  while (bench::SteadyNowNs() < end) {
  }
}

// One fresh promise/future pair per iteration: Reset() and Set() on the benchmark thread,
// Wait() on the waiter thread.
struct OurPair {
  Promise<int> promise;
  Future<int> future;
  void Reset() {
    promise = Promise<int>();
    future = promise.GetFuture();
  }
  void Wait() { benchmark::DoNotOptimize(future.Result()); }
  void Set() { promise.SetValue(1); }
};

struct StdPair {
  std::promise<int> promise;
  std::future<int> future;
  void Reset() {
    promise = std::promise<int>();
    future = promise.get_future();
  }
  void Wait() { benchmark::DoNotOptimize(future.get()); }
  void Set() { promise.set_value(1); }
};

// The bare hand-off a skeptical reader writes first: one atomic word, C++20 wait/notify (a futex
// on Linux). The floor of any one-shot wake-up on this kernel.
struct AtomicWaitPair {
  std::atomic<int> flag{0};
  void Reset() { flag.store(0, std::memory_order_relaxed); }
  void Wait() {
    while (flag.load(std::memory_order_acquire) == 0) flag.wait(0, std::memory_order_acquire);
  }
  void Set() {
    flag.store(1, std::memory_order_release);
    flag.notify_one();
  }
};

// Abseil's one-shot event (a mutex and a condition under the hood).
struct AbslNotificationPair {
  std::optional<absl::Notification> notification;
  void Reset() { notification.emplace(); }
  void Wait() { notification->WaitForNotification(); }
  void Set() { notification->Notify(); }
};

// Measures, per iteration, the time from just before Set() to the waiter's return from a
// blocking Wait() on a fresh future. Reports the mean as the (manual) time and the p50/p90/p99
// as counters in microseconds.
//
// Memory ordering: `step` hands the pair back and forth (release on store, acquire on load), so
// the pair is only touched by one thread at a time except for Wait()/Set() themselves.
template <typename Pair>
void RunWakeLatency(benchmark::State& state) {
  constexpr int64_t kLetWaiterSleepNs = 30'000;
  enum Step : int { kIdle, kReady, kWaiting, kWoke, kStop };
  Pair pair;
  std::atomic<int> step{kIdle};
  std::atomic<int64_t> woke_at_ns{0};
  std::thread waiter([&] {
    while (true) {
      int s;
      while ((s = step.load(std::memory_order_acquire)) != kReady && s != kStop) {
        std::this_thread::yield();
      }
      if (s == kStop) return;
      step.store(kWaiting, std::memory_order_release);
      pair.Wait();
      woke_at_ns.store(bench::SteadyNowNs(), std::memory_order_relaxed);
      step.store(kWoke, std::memory_order_release);
    }
  });

  std::vector<int64_t> samples;
  for (auto _ : state) {
    pair.Reset();
    step.store(kReady, std::memory_order_release);
    while (step.load(std::memory_order_acquire) != kWaiting) std::this_thread::yield();
    SpinForNs(kLetWaiterSleepNs);
    const int64_t set_at_ns = bench::SteadyNowNs();
    pair.Set();
    while (step.load(std::memory_order_acquire) != kWoke) {
    }
    const int64_t latency_ns = woke_at_ns.load(std::memory_order_relaxed) - set_at_ns;
    samples.push_back(latency_ns);
    state.SetIterationTime(static_cast<double>(latency_ns) * 1e-9);
  }
  step.store(kStop, std::memory_order_release);
  waiter.join();

  if (samples.empty()) return;
  state.counters["p50_us"] = bench::PercentileMicros(samples, 0.50);
  state.counters["p90_us"] = bench::PercentileMicros(samples, 0.90);
  state.counters["p99_us"] = bench::PercentileMicros(samples, 0.99);
  state.SetItemsProcessed(state.iterations());
}

void BM_PromiseSetToWaiterWake(benchmark::State& state) { RunWakeLatency<OurPair>(state); }
BENCHMARK(BM_PromiseSetToWaiterWake)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_StdPromiseSetToWaiterWake(benchmark::State& state) { RunWakeLatency<StdPair>(state); }
BENCHMARK(BM_StdPromiseSetToWaiterWake)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_AtomicWaitSetToWaiterWake(benchmark::State& state) {
  RunWakeLatency<AtomicWaitPair>(state);
}
BENCHMARK(BM_AtomicWaitSetToWaiterWake)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_AbslNotificationSetToWaiterWake(benchmark::State& state) {
  RunWakeLatency<AbslNotificationPair>(state);
}
BENCHMARK(BM_AbslNotificationSetToWaiterWake)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- Continuations ----------------------------------------------------------------------------

// A chain of state.range(0) inline continuations, registered on a pending future, then run by
// SetValue.
void BM_ThenChain(benchmark::State& state) {
  const int64_t length = state.range(0);
  for (auto _ : state) {
    Promise<int> promise;
    Future<int> future = promise.GetFuture();
    for (int64_t i = 0; i < length; ++i) {
      future = std::move(future).Then([](int x) { return x + 1; });
    }
    promise.SetValue(0);
    benchmark::DoNotOptimize(std::move(future).Result());
  }
  state.SetItemsProcessed(state.iterations() * length);
}
BENCHMARK(BM_ThenChain)->Arg(1)->Arg(10);

// ---- Async round trip: submit, run on a pool thread, read the result --------------------------

void BM_AsyncTbb(benchmark::State& state) {
  TbbExecutor executor(2);
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(Async(executor, [x = i++] { return x + 1; }).Result());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AsyncTbb)->UseRealTime();

void BM_AsyncInline(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(Async(InlineExecutor(), [x = i++] { return x + 1; }).Result());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AsyncInline);

// Peer: raw tbb::task_group run + wait (the waiting thread may run the task itself).
void BM_TbbTaskGroupRunWait(benchmark::State& state) {
  tbb::task_group group;
  int i = 0;
  for (auto _ : state) {
    int result = 0;
    group.run([&result, x = i++] { result = x + 1; });
    group.wait();
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TbbTaskGroupRunWait)->UseRealTime();

// Peer: std::async with a new thread per call.
void BM_StdAsyncGet(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(std::async(std::launch::async, [x = i++] { return x + 1; }).get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_StdAsyncGet)->UseRealTime();

// ---- CPU used by a thread blocked on a future -------------------------------------------------

// Blocks this thread in Future::Wait for state.range(0) ms of real time on a future that never
// completes; reports the CPU time this thread used meanwhile as `cpu_us` (per iteration).
void BM_WaitCpuWhileBlocked(benchmark::State& state) {
  const absl::Duration blocked = absl::Milliseconds(state.range(0));
  Promise<int> never;
  Future<int> future = never.GetFuture();
  int64_t cpu_us = 0;
  for (auto _ : state) {
    const int64_t before = bench::CpuMicros(RUSAGE_THREAD);
    benchmark::DoNotOptimize(future.Wait(blocked));
    cpu_us += bench::CpuMicros(RUSAGE_THREAD) - before;
  }
  state.counters["cpu_us"] =
      benchmark::Counter(static_cast<double>(cpu_us), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_WaitCpuWhileBlocked)
    ->Arg(1000)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Peer: std::future::wait_for.
void BM_StdWaitCpuWhileBlocked(benchmark::State& state) {
  const std::chrono::milliseconds blocked(state.range(0));
  std::promise<int> never;
  std::future<int> future = never.get_future();
  int64_t cpu_us = 0;
  for (auto _ : state) {
    const int64_t before = bench::CpuMicros(RUSAGE_THREAD);
    benchmark::DoNotOptimize(future.wait_for(blocked));
    cpu_us += bench::CpuMicros(RUSAGE_THREAD) - before;
  }
  state.counters["cpu_us"] =
      benchmark::Counter(static_cast<double>(cpu_us), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_StdWaitCpuWhileBlocked)
    ->Arg(1000)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace concurry

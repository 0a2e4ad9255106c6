// Benchmarks of //sync: bounded streaming (Stream) against windowed peers (a raw tbb::task_group
// and an asio::thread_pool, each throttled by a counting semaphore), Gather over ready futures,
// and the CPU used by a thread blocked in Wait.
//
//   bazel run --config=opt //benchmarks:sync_benchmark -- --benchmark_min_time=0.5
//
// Peak-memory counter (rss_growth_kb): the peak extra resident memory of one run (see
// benchmarks/measure.h). Compare the 10^5 and 10^6 rows: a stream's memory must not depend on the
// input length.

#include <sys/resource.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <ranges>
#include <semaphore>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "asio.hpp"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/tbb_executor.h"
#include "oneapi/tbb/task_arena.h"
#include "oneapi/tbb/task_group.h"
#include "sync/gather.h"
#include "sync/stream.h"
#include "sync/wait.h"

namespace concurry {
namespace {

constexpr int kMaxInFlight = 64;
constexpr int kThreads = 2;

using bench::PeakRssGrowth;

// Stream over n lazily generated inputs, trivial task (x + 1), max_in_flight = 64, TbbExecutor(2),
// consumed by the benchmark thread.
void BM_StreamTrivialTasks(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Order order = state.range(1) == 0 ? Order::kCompletion : Order::kInput;
  TbbExecutor executor(kThreads);
  PeakRssGrowth rss;
  int64_t sum = 0;
  for (auto _ : state) {
    for (auto& item : Stream(executor, std::views::iota(0, n), [](int x) { return x + 1; },
                             {.max_in_flight = kMaxInFlight, .order = order})) {
      sum += item.value();
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["rss_growth_kb"] = rss.GrowthKb();
  state.SetLabel(order == Order::kCompletion ? "completion order" : "input order");
}
BENCHMARK(BM_StreamTrivialTasks)
    ->ArgNames({"n", "ordered"})
    ->Args({100000, 0})
    ->Args({1000000, 0})
    ->Args({100000, 1})
    ->Args({1000000, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The stream machinery alone: every task runs inline on the consumer's thread.
void BM_StreamTrivialTasksInline(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  int64_t sum = 0;
  for (auto _ : state) {
    for (auto& item : Stream(InlineExecutor(), std::views::iota(0, n), [](int x) { return x + 1; },
                             {.max_in_flight = kMaxInFlight})) {
      sum += item.value();
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_StreamTrivialTasksInline)->Arg(1000000)->UseRealTime()->Unit(benchmark::kMillisecond);

// Peer: a raw oneTBB task_group on a 2-thread arena; the submitting thread takes a semaphore
// permit per task (at most 64 in flight) and each task adds its result to an atomic and returns
// the permit. No per-item hand-off back to the submitter (a lower bound for any windowed design).
void BM_TbbTaskGroupWindow(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  tbb::task_arena arena(kThreads);
  tbb::task_group group;
  std::counting_semaphore<> window(kMaxInFlight);
  std::atomic<int64_t> sum{0};
  PeakRssGrowth rss;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      window.acquire();
      arena.enqueue(group.defer([&sum, &window, i] {
        sum.fetch_add(i + 1, std::memory_order_relaxed);
        window.release();
      }));
    }
    arena.execute([&group] { group.wait(); });
  }
  benchmark::DoNotOptimize(sum.load());
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["rss_growth_kb"] = rss.GrowthKb();
}
BENCHMARK(BM_TbbTaskGroupWindow)
    ->Arg(100000)
    ->Arg(1000000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Peer with the hand-off a stream makes: every result goes back to the submitting thread, which
// sums it (a std::mutex + std::condition_variable queue, waking the submitter only when it
// waits), and the submitter keeps at most 64 tasks in flight. ordered:0 style (completion order).
// executor:0 runs the tasks in a raw tbb::task_arena(2) (one worker thread: the other slot is
// reserved for the submitter, which never enters it), executor:1 on TbbExecutor(2) (two threads
// besides the submitter, as BM_StreamTrivialTasks has). The floor for a stream on 2 cores.
void BM_TbbWindowWithHandOff(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const bool on_executor = state.range(1) != 0;
  std::optional<TbbExecutor> executor;
  std::optional<tbb::task_arena> arena;
  tbb::task_group group;
  if (on_executor) {
    executor.emplace(kThreads);
  } else {
    arena.emplace(kThreads);
  }
  std::mutex mu;
  std::condition_variable ready_cv;
  std::vector<int> ready;  // Guarded by mu.
  bool waiting = false;    // Guarded by mu: the submitter sleeps on ready_cv.
  std::vector<int> taken;
  int64_t sum = 0;
  const auto task = [&](int i) {
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu);
      ready.push_back(i + 1);
      wake = std::exchange(waiting, false);
    }
    if (wake) ready_cv.notify_one();
  };
  for (auto _ : state) {
    int in_flight = 0;
    int next = 0;
    while (next < n || in_flight > 0) {
      while (next < n && in_flight < kMaxInFlight) {
        const int i = next++;
        ++in_flight;
        if (on_executor) {
          executor->Submit([&task, i] { task(i); });
        } else {
          arena->enqueue(group.defer([&task, i] { task(i); }));
        }
      }
      {
        std::unique_lock<std::mutex> lock(mu);
        while (ready.empty()) {
          waiting = true;
          ready_cv.wait(lock);
        }
        taken.swap(ready);
      }
      for (int value : taken) sum += value;
      in_flight -= static_cast<int>(taken.size());
      taken.clear();
    }
  }
  // A task may still be returning from notify_one: wait for all before `mu` goes away.
  if (on_executor) {
    executor->Shutdown();
  } else {
    arena->execute([&group] { group.wait(); });
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * n);
  state.SetLabel(on_executor ? "TbbExecutor(2)" : "task_arena(2)");
}
BENCHMARK(BM_TbbWindowWithHandOff)
    ->ArgNames({"n", "executor"})
    ->Args({1000000, 0})
    ->Args({1000000, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Peer: asio::thread_pool(2) with the same semaphore window.
void BM_AsioThreadPoolWindow(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::counting_semaphore<> window(kMaxInFlight);
  std::atomic<int64_t> sum{0};
  asio::thread_pool pool(kThreads);
  PeakRssGrowth rss;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      window.acquire();
      asio::post(pool, [&sum, &window, i] {
        sum.fetch_add(i + 1, std::memory_order_relaxed);
        window.release();
      });
    }
    // Drain: every permit back means every task finished; then restore them.
    for (int k = 0; k < kMaxInFlight; ++k) window.acquire();
    window.release(kMaxInFlight);
  }
  pool.join();  // Before `window` goes away: a task may still be returning from release().
  benchmark::DoNotOptimize(sum.load());
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["rss_growth_kb"] = rss.GrowthKb();
}
BENCHMARK(BM_AsioThreadPoolWindow)
    ->Arg(100000)
    ->Arg(1000000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Gather over 10^6 ready futures; per_future is the time per future (target <= 100 ns).
void BM_GatherReadyFutures(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  int64_t sum = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<Future<int>> futures;
    futures.reserve(n);
    for (int i = 0; i < n; ++i) futures.push_back(MakeReadyFuture(i));
    state.ResumeTiming();
    std::vector<int> values = Gather(std::move(futures));
    sum += values.back();
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["per_future"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate |
                                                     benchmark::Counter::kInvert);
}
BENCHMARK(BM_GatherReadyFutures)->Arg(1000000)->Unit(benchmark::kMillisecond);

// A thread blocked for 1 s in Wait on a future that never completes: CPU of the waiting thread
// (thread_cpu_ms, target <= 1 ms) and of the whole process (process_cpu_ms), per wait.
void BM_WaitBlockedCpu(benchmark::State& state) {
  Promise<int> promise;
  const Future<int> future = promise.GetFuture();
  WaitOptions options;
  options.timeout = absl::Seconds(1);
  double thread_ms = 0;
  double process_ms = 0;
  for (auto _ : state) {
    const int64_t thread_before = bench::CpuMicros(RUSAGE_THREAD);
    const int64_t process_before = bench::CpuMicros(RUSAGE_SELF);
    const WaitResult result = Wait({future}, options);
    benchmark::DoNotOptimize(result.timed_out);
    thread_ms += (bench::CpuMicros(RUSAGE_THREAD) - thread_before) / 1e3;
    process_ms += (bench::CpuMicros(RUSAGE_SELF) - process_before) / 1e3;
  }
  state.counters["thread_cpu_ms"] = thread_ms / static_cast<double>(state.iterations());
  state.counters["process_cpu_ms"] = process_ms / static_cast<double>(state.iterations());
}
BENCHMARK(BM_WaitBlockedCpu)->Iterations(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace concurry

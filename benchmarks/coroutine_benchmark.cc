// Benchmarks for coroutines (futures/coro.h: Coro<T>, SyncWait, co_await of futures) with their
// peers in the same binary, so ratios come from one run:
//   ready await:        `co_await` of a ready Future<int> inside a Coro run by SyncWait (ns per
//                       await) vs Result() of the same future on a thread
//   completed elsewhere: a ping-pong between the benchmark thread and a coroutine run by SyncWait
//                       on its own thread: the bench thread sets the promise the coroutine awaits,
//                       the coroutine resumes on SyncWait's loop and answers (p50/p99 in us) vs a
//                       thread blocked in Result() doing the same
//   interleaved timers: one Mode::kCoroutine worker (max_in_flight_coroutines = n) given n calls
//                       at once, each `co_await SleepFor(10 ms)`; wait for all (items/s, and
//                       bytes_per_call: the peak RSS growth of the run, worker included, / n;
//                       kernel_stack_bytes_per_call: the kernel stacks of its threads / n;
//                       total_bytes_per_call: the two together, the goal's field) vs n
//                       kThread workers each given one call that sleeps 10 ms (the same counters;
//                       creating them is not timed but its memory counts) and vs Python asyncio:
//                       n tasks each `await asyncio.sleep(0.01)` on one loop, gathered
//   round trip:         one empty Coro<void> method call to a kCoroutine worker, result back on
//                       the caller (p50/p99 in us) vs an empty method of a kThread worker and vs
//                       Python's run_coroutine_threadsafe(...).result() on a loop thread
//
//   bazel run --config=opt //benchmarks:coroutine_benchmark -- --benchmark_min_time=0.5
//
// The Python peer runs benchmarks/python/asyncio_interleaved.py (a data dependency, found in the
// binary's runfiles) with `python3` from PATH, once per process.

#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "futures/coro.h"
#include "futures/future.h"
#include "workers/options.h"
#include "workers/worker.h"

namespace concurry {
namespace {

constexpr absl::Duration kTimerSleep = absl::Milliseconds(10);

// The worker class of the worker rows.
class Napper {
 public:
  // kCoroutine: suspends on the worker's loop timer.
  Coro<void> Nap(absl::Duration duration) { co_await SleepFor(duration); }
  // kThread peer: the worker's thread sleeps.
  void NapBlocking(absl::Duration duration) { absl::SleepFor(duration); }
  Coro<void> EmptyCoro() { co_return; }
  void Empty() { benchmark::ClobberMemory(); }
};

// ---- Peer: Python's asyncio (benchmarks/python/) ----------------------------------------------

constexpr char kPythonScript[] = "benchmarks/python/asyncio_interleaved.py";
constexpr int kPythonCalls = 10'000;
constexpr int kPythonRoundTrips = 10'000;

struct PythonFigures {
  std::string error;  // non-empty: why there are no figures
  double interleaved_calls_per_s = 0;
  double interleaved_rss_growth_kb = -1;
  double p50_us = 0;
  double p99_us = 0;
  std::string version;
};

// Runs the script once per process and returns its figures (or why it could not).
const PythonFigures& RunPythonPeer() {
  static const PythonFigures* const figures = [] {
    auto* result = new PythonFigures;
    const bench::ScriptOutput run = bench::RunPythonScript(
        kPythonScript, {"--calls", std::to_string(kPythonCalls), "--sleep-ms",
                        std::to_string(absl::ToInt64Milliseconds(kTimerSleep)), "--roundtrips",
                        std::to_string(kPythonRoundTrips)});
    if (!run.error.empty()) {
      result->error = run.error;
      return result;
    }
    const std::string& output = run.output;
    const std::optional<double> rate = bench::JsonNumber(output, "interleaved_calls_per_s");
    const std::optional<double> rss = bench::JsonNumber(output, "interleaved_rss_growth_kb");
    const std::optional<double> p50 = bench::JsonNumber(output, "roundtrip_p50_us");
    const std::optional<double> p99 = bench::JsonNumber(output, "roundtrip_p99_us");
    if (!rate || *rate <= 0 || !rss || !p50 || !p99) {
      result->error = "unexpected output of " + std::string(kPythonScript) + ": " + output;
      return result;
    }
    result->interleaved_calls_per_s = *rate;
    result->interleaved_rss_growth_kb = *rss;
    result->p50_us = *p50;
    result->p99_us = *p99;
    if (const std::optional<std::string> version = bench::JsonString(output, "python")) {
      result->version = "Python " + *version;
    }
    return result;
  }();
  return *figures;
}

// ============================== 1. co_await of a ready future ===================================

// Each iteration awaits a fresh handle to one ready future (a copy, as the peer's), so the
// difference to the peer is the await itself: the cancellation check, await_ready, await_resume.
Coro<int64_t> AwaitReadyLoop(benchmark::State& state, Future<int> ready) {
  int64_t sum = 0;
  for (auto _ : state) {
    Future<int> handle = ready;
    const int v = co_await std::move(handle);
    sum += v;
  }
  co_return sum;
}

void BM_CoAwaitReadyFuture(benchmark::State& state) {
  const int64_t sum = SyncWait(AwaitReadyLoop(state, MakeReadyFuture(1)));
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CoAwaitReadyFuture);

void BM_PeerResultReadyFuture(benchmark::State& state) {
  const Future<int> ready = MakeReadyFuture(1);
  int64_t sum = 0;
  for (auto _ : state) {
    Future<int> handle = ready;
    sum += std::move(handle).Result();
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerResultReadyFuture);

// ============================== 2. A future completed on another thread ========================

// The shared state of a ping-pong. The answering side makes the next round's ping promise and pong
// future before it sets this round's pong, so the benchmark thread reads them only after Result()
// on the pong (which orders the writes before the reads). `stop` is written by the benchmark
// thread before it sets the last ping.
struct Rally {
  Future<void> ping;        // Awaited by the answering side.
  Promise<void> next_ping;  // Set by the benchmark thread for the next round.
  Future<void> next_pong;   // Waited for by the benchmark thread.
  bool stop = false;
};

// Makes the first round.
Promise<void> FirstRound(Rally& rally) {
  Promise<void> ping;
  rally.ping = ping.GetFuture();
  return ping;
}

// The answering side's step after a ping: the next round's objects, then the pong.
void Answer(Rally& rally, Promise<void>& pong) {
  Promise<void> ping;
  rally.ping = ping.GetFuture();
  rally.next_ping = std::move(ping);
  Promise<void> next_pong;
  rally.next_pong = next_pong.GetFuture();
  std::exchange(pong, std::move(next_pong)).SetValue();
}

// The benchmark thread's side: `ping` is this round's ping promise, `pong` its pong future.
template <typename Start>
void PlayRally(benchmark::State& state, Rally& rally, Promise<void> first_ping,
               Future<void> first_pong, Start start_answerer) {
  std::thread answerer = start_answerer();
  Promise<void> ping = std::move(first_ping);
  Future<void> pong = std::move(first_pong);
  bench::RunRoundTrips(state, [&] {
    ping.SetValue();
    pong.Result();
    ping = std::move(rally.next_ping);
    pong = std::move(rally.next_pong);
  });
  rally.stop = true;
  ping.SetValue();
  answerer.join();
}

Coro<void> AnswerLoop(Rally& rally, Promise<void> pong) {
  for (;;) {
    Future<void> ping = std::move(rally.ping);
    co_await std::move(ping);  // Resumes on SyncWait's thread, posted by the setter.
    if (rally.stop) co_return;
    Answer(rally, pong);
  }
}

void BM_CoAwaitCompletedElsewhere(benchmark::State& state) {
  Rally rally;
  Promise<void> first_ping = FirstRound(rally);
  Promise<void> pong;
  Future<void> first_pong = pong.GetFuture();
  PlayRally(state, rally, std::move(first_ping), std::move(first_pong), [&] {
    return std::thread(
        [&rally, p = std::move(pong)]() mutable { SyncWait(AnswerLoop(rally, std::move(p))); });
  });
}
BENCHMARK(BM_CoAwaitCompletedElsewhere)->UseRealTime();

void BM_PeerResultCompletedElsewhere(benchmark::State& state) {
  Rally rally;
  Promise<void> first_ping = FirstRound(rally);
  Promise<void> pong;
  Future<void> first_pong = pong.GetFuture();
  PlayRally(state, rally, std::move(first_ping), std::move(first_pong), [&] {
    return std::thread([&rally, p = std::move(pong)]() mutable {
      for (;;) {
        std::move(rally.ping).Result();  // This thread blocks until the setter wakes it.
        if (rally.stop) return;
        Answer(rally, p);
      }
    });
  });
}
BENCHMARK(BM_PeerResultCompletedElsewhere)->UseRealTime();

// ============================== 3. Interleaved timer calls ======================================

// Returns the kernel stacks of every thread of the machine (KernelStack in /proc/meminfo) in kB,
// or -1 when it cannot be read.
double KernelStackKb() {
  std::FILE* meminfo = std::fopen("/proc/meminfo", "r");
  if (meminfo == nullptr) return -1;
  char line[256];
  double kb = -1;
  while (std::fgets(line, sizeof(line), meminfo) != nullptr) {
    if (std::sscanf(line, "KernelStack: %lf kB", &kb) == 1) break;
  }
  std::fclose(meminfo);
  return kb;
}

// The memory counters of an interleaved run over n calls:
//   bytes_per_call:               the peak RSS growth of the run / n (worker creation included:
//                                 for the thread peer, the touched part of the workers' stacks)
//   kernel_stack_bytes_per_call:  the growth of the machine's kernel stacks while the workers
//                                 exist / n: the per-thread kernel memory RSS does not show
//                                 (system-wide, so other processes' threads add noise)
//   total_bytes_per_call:         the sum of the two measured growths / n: the memory a call
//                                 really costs (a thread's kernel stack is 16 KiB the RSS misses)
// malloc_trim first gives freed memory back to the kernel, so that memory an earlier benchmark
// left in malloc's free lists does not hide growth.
class InterleavedMemory {
 public:
  InterleavedMemory() {
    malloc_trim(0);
    kernel_stack_at_start_kb_ = KernelStackKb();
    rss_.emplace();
  }
  // Samples the kernel stacks (call while the workers exist).
  void SampleKernel() {
    const double now_kb = KernelStackKb();
    if (now_kb >= 0 && kernel_stack_at_start_kb_ >= 0) {
      kernel_growth_kb_ = std::max(kernel_growth_kb_, now_kb - kernel_stack_at_start_kb_);
    }
  }
  void Report(benchmark::State& state, int64_t n) const {
    state.SetItemsProcessed(state.iterations() * n);
    const double growth_kb = rss_->GrowthKb();
    const double per_call = 1024.0 / static_cast<double>(n);
    if (growth_kb >= 0) {
      state.counters["bytes_per_call"] = growth_kb * per_call;
      state.counters["total_bytes_per_call"] = (growth_kb + kernel_growth_kb_) * per_call;
    }
    state.counters["kernel_stack_bytes_per_call"] = kernel_growth_kb_ * per_call;
  }

 private:
  double kernel_stack_at_start_kb_ = -1;
  double kernel_growth_kb_ = 0;
  std::optional<bench::PeakRssGrowth> rss_;
};

// Waits for every call; rethrows the first error.
void WaitAll(std::vector<Future<void>>& calls) {
  for (Future<void>& call : calls) std::move(call).Result();
  calls.clear();
}

void BM_InterleavedTimers_ConcurryCoroutineWorker(benchmark::State& state) {
  const int64_t n = state.range(0);
  InterleavedMemory memory;
  auto worker = Worker<Napper>::Create({.mode = Mode::kCoroutine, .max_in_flight_coroutines = n});
  std::vector<Future<void>> calls;
  calls.reserve(n);
  for (auto _ : state) {
    for (int64_t i = 0; i < n; ++i) calls.push_back(worker.Call(&Napper::Nap, kTimerSleep));
    memory.SampleKernel();
    WaitAll(calls);
  }
  memory.Report(state, n);
  worker.Stop();
}
BENCHMARK(BM_InterleavedTimers_ConcurryCoroutineWorker)
    ->Arg(10'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_InterleavedTimers_PeerThreadWorkers(benchmark::State& state) {
  const int64_t n = state.range(0);
  InterleavedMemory memory;
  std::vector<Worker<Napper>> workers;
  workers.reserve(n);
  try {
    for (int64_t i = 0; i < n; ++i)
      workers.push_back(Worker<Napper>::Create({.mode = Mode::kThread}));
  } catch (const std::exception& e) {
    // Thread limits (threads-max, vm.max_map_count, ulimit -u) are a machine's, not a failure.
    const std::string message = "could not create " + std::to_string(n) + " thread workers after " +
                                std::to_string(workers.size()) + ": " + e.what();
    for (auto& worker : workers) worker.Stop();
    state.SkipWithError(message.c_str());
    return;
  }
  std::vector<Future<void>> calls;
  calls.reserve(n);
  for (auto _ : state) {
    for (auto& worker : workers) calls.push_back(worker.Call(&Napper::NapBlocking, kTimerSleep));
    memory.SampleKernel();
    WaitAll(calls);
  }
  memory.Report(state, n);
  for (auto& worker : workers) worker.Stop();
}
BENCHMARK(BM_InterleavedTimers_PeerThreadWorkers)
    ->Arg(10'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One run of the script: the time column is the gather's duration (manual time).
void BM_InterleavedTimers_PythonAsyncio(benchmark::State& state) {
  const PythonFigures& python = RunPythonPeer();
  if (!python.error.empty()) {
    state.SkipWithError(python.error.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(kPythonCalls / python.interleaved_calls_per_s);
  state.SetItemsProcessed(kPythonCalls);
  if (python.interleaved_rss_growth_kb >= 0) {
    state.counters["bytes_per_call"] = python.interleaved_rss_growth_kb * 1024.0 / kPythonCalls;
  }
  state.SetLabel(python.version + ", " + std::to_string(kPythonCalls) + " tasks");
}
BENCHMARK(BM_InterleavedTimers_PythonAsyncio)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 4. Round trip: one empty call ===================================

void BM_RoundTrip_ConcurryCoroutineWorker(benchmark::State& state) {
  auto worker = Worker<Napper>::Create({.mode = Mode::kCoroutine});
  bench::RunRoundTrips(state, [&] { worker.Call(&Napper::EmptyCoro).Result(); });
  worker.Stop();
}
BENCHMARK(BM_RoundTrip_ConcurryCoroutineWorker)->UseRealTime();

void BM_RoundTrip_PeerThreadWorker(benchmark::State& state) {
  auto worker = Worker<Napper>::Create({.mode = Mode::kThread});
  bench::RunRoundTrips(state, [&] { worker.Call(&Napper::Empty).Result(); });
  worker.Stop();
}
BENCHMARK(BM_RoundTrip_PeerThreadWorker)->UseRealTime();

// One run of the script: the time column is the p50 (manual time).
void BM_RoundTrip_PythonAsyncio(benchmark::State& state) {
  const PythonFigures& python = RunPythonPeer();
  if (!python.error.empty()) {
    state.SkipWithError(python.error.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(python.p50_us * 1e-6);
  state.counters["p50_us"] = python.p50_us;
  state.counters["p99_us"] = python.p99_us;
  state.SetLabel(python.version + ", " + std::to_string(kPythonRoundTrips) + " round trips");
}
BENCHMARK(BM_RoundTrip_PythonAsyncio)->Iterations(1)->UseManualTime();

}  // namespace
}  // namespace concurry

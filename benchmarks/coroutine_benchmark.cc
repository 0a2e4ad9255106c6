// Benchmarks for coroutines (futures/coro.h: Coro<T>, SyncWait, co_await of futures) with their
// peers in the same binary, so ratios come from one run:
//   ready await:        `co_await` of a ready Future<int> inside a Coro run by SyncWait (ns per
//                       await) vs Result() of the same future on a thread
//   completed elsewhere: a ping-pong between the benchmark thread and a coroutine run by SyncWait
//                       on its own thread: the bench thread sets the promise the coroutine awaits,
//                       the coroutine resumes on its loop and answers (p50/p99 in us) vs a thread
//                       blocked in Result() doing the same
//
//   bazel run --config=opt //benchmarks:coroutine_benchmark -- --benchmark_min_time=0.5
//
// The Python peer runs benchmarks/python/asyncio_interleaved.py (a data dependency, found in the
// binary's runfiles) with `python3` from PATH, once per process.

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "futures/coro.h"
#include "futures/future.h"

namespace concurry {
namespace {

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

}  // namespace
}  // namespace concurry

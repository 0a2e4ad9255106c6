// Benchmarks for //retry, with the plain call as the peer in the same binary, so the overhead is
// a difference within one run:
//   success path:     Retry(fn, policy) vs fn() (int, absl::StatusOr<int>, with a validator)
//   one retry cycle:  an attempt that fails and a second that succeeds, wait 0 (no sleep): by
//                     exception (vs the bare throw/catch of a plain loop) and by absl::Status
//
//   bazel run --config=opt //benchmarks:retry_benchmark -- --benchmark_min_time=0.5

#include <stdexcept>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "retry/policy.h"
#include "retry/retry.h"

namespace concurry {
namespace {

// An opaque function, so the call is not folded away.
__attribute__((noinline)) int Work(int x) {
  benchmark::DoNotOptimize(x);
  return x + 1;
}

__attribute__((noinline)) absl::StatusOr<int> WorkOr(int x) {
  benchmark::DoNotOptimize(x);
  return x + 1;
}

// ---- Success path: overhead over a plain call --------------------------------------------------

void BM_PlainCall(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(Work(i++));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainCall);

void BM_RetrySuccess(benchmark::State& state) {
  const RetryPolicy policy{.num_retries = 3, .wait = absl::Milliseconds(100)};
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(Retry([&] { return Work(i++); }, policy));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RetrySuccess);

void BM_PlainCallStatusOr(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(WorkOr(i++));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainCallStatusOr);

void BM_RetrySuccessStatusOr(benchmark::State& state) {
  const RetryPolicy policy{.num_retries = 3, .wait = absl::Milliseconds(100)};
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(Retry([&] { return WorkOr(i++); }, policy));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RetrySuccessStatusOr);

// A validator reads the clock (its context has the elapsed time) and runs on every result.
void BM_RetrySuccessWithValidator(benchmark::State& state) {
  const RetryPolicy policy{.num_retries = 3,
                           .wait = absl::Milliseconds(100),
                           .retry_until = {Validate<int>([](int v) { return v > 0; })}};
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(Retry([&] { return Work(i++); }, policy));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RetrySuccessWithValidator);

// ---- One retry cycle, excluding the wait (wait 0) ----------------------------------------------

// The peer: a hand-written loop paying the same throw/catch and the second call.
void BM_PlainThrowCatchThenCall(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    int result = 0;
    for (int attempt = 1;; ++attempt) {
      try {
        if (attempt == 1) throw std::runtime_error("transient");
        result = Work(i++);
        break;
      } catch (const std::exception&) {
      }
    }
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainThrowCatchThenCall);

void BM_RetryOneCycleException(benchmark::State& state) {
  const RetryPolicy policy{.num_retries = 1, .wait = absl::ZeroDuration()};
  int i = 0;
  for (auto _ : state) {
    int attempt = 0;
    benchmark::DoNotOptimize(Retry(
        [&] {
          if (++attempt == 1) throw std::runtime_error("transient");
          return Work(i++);
        },
        policy));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RetryOneCycleException);

void BM_RetryOneCycleStatus(benchmark::State& state) {
  const RetryPolicy policy{.num_retries = 1, .wait = absl::ZeroDuration()};
  int i = 0;
  for (auto _ : state) {
    int attempt = 0;
    benchmark::DoNotOptimize(Retry(
        [&]() -> absl::StatusOr<int> {
          if (++attempt == 1) return absl::UnavailableError("transient");
          return WorkOr(i++);
        },
        policy));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RetryOneCycleStatus);

// With the default jitter (0.3) and a non-zero wait capped to 0: the back-off maths and the
// random draw run, nothing sleeps.
void BM_RetryOneCycleJitterDraw(benchmark::State& state) {
  const RetryPolicy policy{
      .num_retries = 1, .wait = absl::Milliseconds(100), .max_wait = absl::ZeroDuration()};
  int i = 0;
  for (auto _ : state) {
    int attempt = 0;
    benchmark::DoNotOptimize(Retry(
        [&]() -> absl::StatusOr<int> {
          if (++attempt == 1) return absl::UnavailableError("transient");
          return WorkOr(i++);
        },
        policy));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RetryOneCycleJitterDraw);

}  // namespace
}  // namespace concurry

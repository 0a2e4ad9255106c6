// Benchmarks for //limits with a peer in the same binary, so ratios come from one run:
//   uncontended TryAcquire:  each RateLimiter algorithm, admitted and rejected paths
//   2 threads contended:     the same limiter shared by two threads
//   peer:                    a classic std::mutex-protected token bucket (double tokens + refill)
//   floor:                   absl::Now() alone (every TryAcquire reads the clock once)
//   (BM_WarmUp runs first only to absorb CPU frequency ramp-up; ignore it)
//
//   bazel run --config=opt //benchmarks:limits_benchmark -- --benchmark_min_time=0.3

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "limits/rate_limiter.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

constexpr RateLimitAlgorithm kAlgorithms[] = {
    RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
    RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
    RateLimitAlgorithm::kGcra};

// Runs first and absorbs the CPU's frequency ramp-up, which otherwise inflates the first figure.
// Ignore its numbers.
void BM_WarmUp(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(absl::Now());
  }
}
BENCHMARK(BM_WarmUp);

// A limiter that admits every request of the benchmark loop (1e9 per 1 ms window: far above what
// one or two threads can ask for, and a short window keeps the sliding log small).
std::unique_ptr<RateLimiter> MakeAdmitting(RateLimitAlgorithm algorithm) {
  return std::make_unique<RateLimiter>(
      RateLimiterOptions{.algorithm = algorithm, .capacity = 1e9, .window = absl::Milliseconds(1)});
}

// A limiter that is exhausted for the whole benchmark.
std::unique_ptr<RateLimiter> MakeExhausted(RateLimitAlgorithm algorithm) {
  auto limiter = std::make_unique<RateLimiter>(
      RateLimiterOptions{.algorithm = algorithm, .capacity = 1, .window = absl::Hours(24)});
  limiter->TryAcquire(1);
  return limiter;
}

void SetLabel(benchmark::State& state, RateLimitAlgorithm algorithm) {
  state.SetLabel(std::string(RateLimitAlgorithmName(algorithm)));
}

void BM_TryAcquireAdmitted(benchmark::State& state) {
  const RateLimitAlgorithm algorithm = kAlgorithms[state.range(0)];
  std::unique_ptr<RateLimiter> limiter = MakeAdmitting(algorithm);
  int64_t rejected = 0;
  for (auto _ : state) {
    if (!limiter->TryAcquire(1)) ++rejected;
  }
  if (rejected > 0) state.SkipWithError("the admitting limiter rejected a request");
  state.SetItemsProcessed(state.iterations());
  SetLabel(state, algorithm);
}
BENCHMARK(BM_TryAcquireAdmitted)->DenseRange(0, 4);

void BM_TryAcquireRejected(benchmark::State& state) {
  const RateLimitAlgorithm algorithm = kAlgorithms[state.range(0)];
  std::unique_ptr<RateLimiter> limiter = MakeExhausted(algorithm);
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter->TryAcquire(1));
  }
  state.SetItemsProcessed(state.iterations());
  SetLabel(state, algorithm);
}
BENCHMARK(BM_TryAcquireRejected)->DenseRange(0, 4);

// Two threads on one limiter. Thread 0 builds it before the loop; the benchmark's start barrier
// publishes it to the other thread.
std::unique_ptr<RateLimiter> shared_limiter;

void BM_TryAcquireContended(benchmark::State& state) {
  const RateLimitAlgorithm algorithm = kAlgorithms[state.range(0)];
  if (state.thread_index() == 0) shared_limiter = MakeAdmitting(algorithm);
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared_limiter->TryAcquire(1));
  }
  state.SetItemsProcessed(state.iterations());
  SetLabel(state, algorithm);
}
BENCHMARK(BM_TryAcquireContended)->DenseRange(0, 4)->Threads(2)->UseRealTime();

// ---- Peer: the textbook token bucket behind a std::mutex ----------------------------------------

class MutexTokenBucket {
 public:
  MutexTokenBucket(double capacity, absl::Duration window)
      : capacity_(capacity),
        rate_per_second_(capacity / absl::ToDoubleSeconds(window)),
        tokens_(capacity),
        last_(absl::Now()) {}

  bool TryAcquire(double amount) {
    const absl::Time now = absl::Now();
    std::lock_guard<std::mutex> lock(mu_);
    tokens_ = std::min(capacity_, tokens_ + absl::ToDoubleSeconds(now - last_) * rate_per_second_);
    last_ = std::max(last_, now);
    if (tokens_ < amount) return false;
    tokens_ -= amount;
    return true;
  }

 private:
  const double capacity_;
  const double rate_per_second_;
  std::mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_ ABSL_GUARDED_BY(mu_);
};

void BM_PeerMutexTokenBucket(benchmark::State& state) {
  MutexTokenBucket bucket(1e9, absl::Milliseconds(1));
  for (auto _ : state) {
    benchmark::DoNotOptimize(bucket.TryAcquire(1));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerMutexTokenBucket);

std::unique_ptr<MutexTokenBucket> shared_bucket;

void BM_PeerMutexTokenBucketContended(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_bucket = std::make_unique<MutexTokenBucket>(1e9, absl::Milliseconds(1));
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared_bucket->TryAcquire(1));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerMutexTokenBucketContended)->Threads(2)->UseRealTime();

// The floor: one clock read, which every TryAcquire pays.
void BM_AbslNow(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(absl::Now());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AbslNow);

}  // namespace
}  // namespace concurry

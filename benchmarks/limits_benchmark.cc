// Benchmarks for //limits with a peer in the same binary, so ratios come from one run:
//   uncontended TryAcquire:  each RateLimiter algorithm, admitted and rejected paths
//   2 threads contended:     the same limiter shared by two threads
//   peer:                    a classic std::mutex-protected token bucket (double tokens + refill)
//   floor:                   absl::Now() alone (every TryAcquire reads the clock once)
//   LimitSet of 3 limits:    GCRA RateLimit + GCRA CallLimit + ResourceLimit, Acquire + Update +
//                            release, uncontended and 2 threads contended, vs the same three
//                            checks hand-rolled under one std::mutex (peer); also with the
//                            request prepared once (LimitSet::Prepare(), Handle()) and with
//                            LimitFairness::kBarging
//   LimitSet kProcesses:     the same set in shared memory, one process, and with a fork()ed
//                            child hammering it while the parent measures (child_items_per_second)
//   accuracy:                4 threads TryAcquire() a 1000/s limit for 5 s; counters admitted,
//                            ideal (what the algorithm allows, below) and error_percent
//   LimitSet on Redis:       the binary starts its own redis-server. Acquire + Update + release
//                            p50/p99 for sets of 1, 2, 3 limits (kHosts) vs the PING round trip
//                            of redis-benchmark (-c 1, a child process; peer) and of a raw hiredis
//                            loop (floor), and concurry's client PING; grants/s with 1, 2, 4
//                            fork()ed client processes on one rate limit that never binds
//   (BM_WarmUp runs first only to absorb the process's warm-up; ignore it)
//
//   bazel run --config=opt //benchmarks:limits_benchmark -- --benchmark_min_time=0.3

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "hiredis/hiredis.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/rate_limiter.h"
#include "limits/rate_window.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_limit_store.h"
#include "testing/redis_server.h"

namespace concurry {
namespace {

constexpr RateLimitAlgorithm kAlgorithms[] = {
    RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
    RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
    RateLimitAlgorithm::kGcra};

// Runs first and absorbs the process's warm-up, which otherwise inflates the first figures: the
// CPU's frequency ramp-up, and absl::Now()'s calibration, during which every call takes the slow
// path (50-100 ns instead of 10 ns here: for the first 0.4 s of an idle process, up to 1.5 s
// under load). Ignore its numbers. The report (//benchmarks:report) runs it in every pass, goal
// or not; a filtered run should include it (or pass --benchmark_min_warmup_time).
void BM_WarmUp(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(absl::Now());
  }
}
BENCHMARK(BM_WarmUp)->MinTime(2.0);

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

// ---- LimitSet: three limits acquired together ---------------------------------------------------

// A GCRA RateLimit and a GCRA CallLimit far above what the loop asks for (1e9 per second: one
// token per ns) and a ResourceLimit with room for every thread.
LimitSet MakeThreeLimits(LimitSharing sharing, LimitFairness fairness = LimitFairness::kFifo) {
  LimitSetOptions options;
  options.sharing = sharing;
  options.fairness = fairness;
  return LimitSet::Create({RateLimit("tokens", 1e9, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                           CallLimit(1e9, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                           ResourceLimit("connections", 1'000'000)},
                          options);
}

// One acquisition of 10 tokens, 1 call and 1 connection; 5 tokens reported used (5 refunded at
// release).
void AcquireUpdateRelease(const LimitSet& set) {
  LimitAcquisition acquired = set.Acquire({{"tokens", 10}});
  acquired.Update({{"tokens", 5}});
  acquired.Release();
}

void BM_LimitSetThreeLimits(benchmark::State& state) {
  LimitSet set = MakeThreeLimits(LimitSharing::kThreads);
  for (auto _ : state) {
    AcquireUpdateRelease(set);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LimitSetThreeLimits);

// Built by thread 0 before the loop; the benchmark's start barrier publishes it.
std::optional<LimitSet> shared_set;

void BM_LimitSetThreeLimitsContended(benchmark::State& state) {
  if (state.thread_index() == 0) shared_set = MakeThreeLimits(LimitSharing::kThreads);
  for (auto _ : state) {
    AcquireUpdateRelease(*shared_set);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LimitSetThreeLimitsContended)->Threads(2)->UseRealTime();

// The same with LimitFairness::kBarging: no FIFO queue to check (nobody ever waits here, so this
// shows what the FIFO default costs when it has nothing to do).
void BM_LimitSetThreeLimitsBarging(benchmark::State& state) {
  LimitSet set = MakeThreeLimits(LimitSharing::kThreads, LimitFairness::kBarging);
  for (auto _ : state) {
    AcquireUpdateRelease(set);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LimitSetThreeLimitsBarging);

// The same acquisition with the request and the updated limit resolved once (LimitSet::Prepare(),
// LimitSet::Handle()): no key lookup and no validation per acquisition.
struct PreparedThreeLimits {
  explicit PreparedThreeLimits(const LimitSet& set)
      : set(set), ten_tokens(set.Prepare({{"tokens", 10}})), tokens(set.Handle("tokens")) {}

  void AcquireUpdateRelease() const {
    LimitAcquisition acquired = set.Acquire(ten_tokens);
    acquired.Update(tokens, 5);
    acquired.Release();
  }

  LimitSet set;
  PreparedLimitRequest ten_tokens;
  LimitHandle tokens;
};

void BM_LimitSetThreeLimitsPrepared(benchmark::State& state) {
  const PreparedThreeLimits prepared(MakeThreeLimits(LimitSharing::kThreads));
  for (auto _ : state) {
    prepared.AcquireUpdateRelease();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LimitSetThreeLimitsPrepared);

std::optional<PreparedThreeLimits> shared_prepared;

void BM_LimitSetThreeLimitsPreparedContended(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_prepared.emplace(MakeThreeLimits(LimitSharing::kThreads));
  }
  for (auto _ : state) {
    shared_prepared->AcquireUpdateRelease();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LimitSetThreeLimitsPreparedContended)->Threads(2)->UseRealTime();

// Peer: the same three checks (two GCRA TATs and a counter) hand-rolled under one std::mutex.
// Acquire checks and takes all three, Release refunds the unused tokens and returns the
// connection: two lock round trips per acquisition, as for LimitSet.
class MutexThreeLimits {
 public:
  MutexThreeLimits() : start_(absl::Now()) {}

  bool Acquire(int64_t tokens) {
    const int64_t now = NowNs();
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t token_tat = std::max(token_tat_, now) + tokens * kCostNs;
    const int64_t call_tat = std::max(call_tat_, now) + kCostNs;
    if (token_tat - now > kWindowNs || call_tat - now > kWindowNs ||
        connections_ + 1 > kConnections) {
      return false;
    }
    token_tat_ = token_tat;
    call_tat_ = call_tat;
    ++connections_;
    return true;
  }

  void Release(int64_t unused_tokens) {
    const int64_t now = NowNs();
    std::lock_guard<std::mutex> lock(mu_);
    token_tat_ = std::max(now, token_tat_ - unused_tokens * kCostNs);
    --connections_;
  }

 private:
  static constexpr int64_t kWindowNs = 1'000'000'000;
  static constexpr int64_t kCostNs = 1;  // 1e9 per second.
  static constexpr int64_t kConnections = 1'000'000;

  int64_t NowNs() const { return absl::ToInt64Nanoseconds(absl::Now() - start_); }

  const absl::Time start_;
  std::mutex mu_;
  int64_t token_tat_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t call_tat_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t connections_ ABSL_GUARDED_BY(mu_) = 0;
};

void BM_PeerMutexThreeLimits(benchmark::State& state) {
  MutexThreeLimits limits;
  int64_t rejected = 0;
  for (auto _ : state) {
    if (limits.Acquire(10)) {
      limits.Release(5);
    } else {
      ++rejected;
    }
  }
  if (rejected > 0) state.SkipWithError("the peer rejected a request");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerMutexThreeLimits);

std::unique_ptr<MutexThreeLimits> shared_mutex_limits;

void BM_PeerMutexThreeLimitsContended(benchmark::State& state) {
  if (state.thread_index() == 0) shared_mutex_limits = std::make_unique<MutexThreeLimits>();
  for (auto _ : state) {
    if (shared_mutex_limits->Acquire(10)) shared_mutex_limits->Release(5);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PeerMutexThreeLimitsContended)->Threads(2)->UseRealTime();

// ---- LimitSet shared by processes (LimitSharing::kProcesses) ------------------------------------

void BM_LimitSetProcessesThreeLimits(benchmark::State& state) {
  LimitSet set = MakeThreeLimits(LimitSharing::kProcesses);
  for (auto _ : state) {
    AcquireUpdateRelease(set);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LimitSetProcessesThreeLimits);

// The parent measures while a fork()ed child runs the same loop on the same set; the child is
// killed and reaped after the loop. child_items_per_second: the child's acquisitions meanwhile.
void BM_LimitSetProcessesThreeLimitsTwoProcesses(benchmark::State& state) {
  LimitSet set = MakeThreeLimits(LimitSharing::kProcesses);
  void* page = mmap(nullptr, sizeof(std::atomic<int64_t>), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int ready[2];
  if (page == MAP_FAILED || pipe(ready) != 0) {
    state.SkipWithError("mmap or pipe failed");
    return;
  }
  auto* child_count = new (page) std::atomic<int64_t>(0);
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child == 0) {
    // Only the set, a pipe and _exit(): no threads, no benchmark state.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    close(ready[0]);
    AcquireUpdateRelease(set);
    const char byte = 1;
    if (write(ready[1], &byte, 1) != 1) _exit(1);
    for (;;) {
      AcquireUpdateRelease(set);
      child_count->fetch_add(1, std::memory_order_relaxed);
    }
  }
  close(ready[1]);
  char byte = 0;
  const bool started = child > 0 && read(ready[0], &byte, 1) == 1;
  close(ready[0]);
  int64_t counted = 0;
  if (started) {
    const int64_t before = child_count->load(std::memory_order_relaxed);
    for (auto _ : state) {
      AcquireUpdateRelease(set);
    }
    counted = child_count->load(std::memory_order_relaxed) - before;
  }
  if (child > 0) {
    kill(child, SIGKILL);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }
  munmap(page, sizeof(std::atomic<int64_t>));
  if (!started) {
    state.SkipWithError("the child did not start");
    return;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["child_items_per_second"] =
      benchmark::Counter(static_cast<double>(counted), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LimitSetProcessesThreeLimitsTwoProcesses)->UseRealTime();

// ---- Accuracy: admitted vs ideal under a hammering ----------------------------------------------
//
// 4 threads TryAcquire() 1 unit of a 1000-per-second limit (C = 1000, W = 1 s) through a LimitSet
// (Update() with 1 each time) for 5 s of real time. L is the time from the first admission to the
// end of the run (the last TryAcquire starts before it). The ideal is the most the algorithm
// allows over L:
//   GCRA, TokenBucket: they start full, so C at once plus the refill: C + C / W * L.
//   SlidingWindow:     C per window, and a unit comes back exactly W after it was taken: a burst
//                      of C at the first admission and again every W, i.e. C * ceil(L / W).
// error_percent = (admitted - ideal) / ideal * 100; negative means under-admission. `late` counts
// admissions whose TryAcquire() returned after the end (a thread descheduled between its end
// check and the call): they may fall just past the span the ideal covers, e.g. the first units of
// the next sliding-window burst, so admitted may exceed the ideal by up to `late`.

constexpr RateLimitAlgorithm kAccuracyAlgorithms[] = {RateLimitAlgorithm::kGcra,
                                                      RateLimitAlgorithm::kSlidingWindow,
                                                      RateLimitAlgorithm::kTokenBucket};

void BM_LimitSetAccuracy(benchmark::State& state) {
  constexpr double kCapacity = 1000;
  constexpr absl::Duration kWindow = absl::Seconds(1);
  constexpr absl::Duration kRun = absl::Seconds(5);
  constexpr int kThreads = 4;
  const RateLimitAlgorithm algorithm = kAccuracyAlgorithms[state.range(0)];
  int64_t admitted_total = 0;
  int64_t late_total = 0;
  double ideal = 0;
  for (auto _ : state) {
    LimitSet set = LimitSet::Create({RateLimit("requests", kCapacity, kWindow, algorithm)});
    std::atomic<int64_t> admitted{0};
    std::atomic<int64_t> late{0};
    std::atomic<int64_t> first_ns{INT64_MAX};
    const absl::Time end = absl::Now() + kRun;
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&] {
        int64_t mine = 0;
        int64_t mine_late = 0;
        for (absl::Time before; (before = absl::Now()) < end;) {
          if (std::optional<LimitAcquisition> taken = set.TryAcquire({{"requests", 1}})) {
            taken->Update({{"requests", 1}});
            if (mine++ == 0) {
              // The clock read before the call: at or before the limiter's own.
              const int64_t now = absl::ToUnixNanos(before);
              int64_t first = first_ns.load(std::memory_order_relaxed);
              while (now < first &&
                     !first_ns.compare_exchange_weak(first, now, std::memory_order_relaxed)) {
              }
            }
            if (absl::Now() >= end) ++mine_late;
          }
        }
        late.fetch_add(mine_late, std::memory_order_relaxed);
        admitted.fetch_add(mine, std::memory_order_relaxed);
      });
    }
    for (std::thread& thread : threads) thread.join();
    admitted_total = admitted.load(std::memory_order_relaxed);
    late_total = late.load(std::memory_order_relaxed);
    const int64_t first = first_ns.load(std::memory_order_relaxed);
    if (first == INT64_MAX) {
      state.SkipWithError("nothing was admitted");
      return;
    }
    const double span = absl::ToDoubleSeconds(end - absl::FromUnixNanos(first));
    const double windows = span / absl::ToDoubleSeconds(kWindow);
    ideal = algorithm == RateLimitAlgorithm::kSlidingWindow ? kCapacity * std::ceil(windows)
                                                            : kCapacity + kCapacity * windows;
  }
  state.counters["admitted"] = static_cast<double>(admitted_total);
  state.counters["ideal"] = ideal;
  state.counters["late"] = static_cast<double>(late_total);
  state.counters["error_percent"] = (static_cast<double>(admitted_total) - ideal) / ideal * 100;
  SetLabel(state, algorithm);
}
BENCHMARK(BM_LimitSetAccuracy)
    ->DenseRange(0, 2)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

// ---- LimitSet on Redis (LimitSharing::kHosts) ---------------------------------------------------
//
// The binary starts its own redis-server (//testing:redis_server, on a free loopback port, no
// persistence) on first use and stops it at exit. The peers measure Redis's PING round trip in
// the same run: redis-benchmark (-c 1: one client, one request in flight, as a LimitSet caller)
// run as a child process, and a raw hiredis PING loop in this process (the floor a client can
// reach). Every latency row reports p50_us and p99_us; the goal (goals.json) is a LimitSet
// acquire+release within 2 PING round trips.

// The binary's Redis, started on first use (from the main thread: PR_SET_PDEATHSIG ties it to
// the starting thread); null with `*error` set when it cannot start.
testkit::RedisServer* SharedRedis(std::string* error) {
  static std::string start_error;
  static std::unique_ptr<testkit::RedisServer> server =
      []() -> std::unique_ptr<testkit::RedisServer> {
    try {
      return testkit::RedisServer::Start();
    } catch (const std::exception& e) {
      start_error = e.what();
      return nullptr;
    }
  }();
  if (server == nullptr) *error = start_error;
  return server.get();
}

// The row's Redis or a SkipWithError naming why there is none.
testkit::RedisServer* RedisOrSkip(benchmark::State& state) {
  std::string error;
  testkit::RedisServer* redis = SharedRedis(&error);
  if (redis == nullptr) state.SkipWithError(("no redis-server: " + error).c_str());
  return redis;
}

// Peer: redis-benchmark's PING round trip, one client (-c 1), 20000 requests per iteration. The
// time column is its mean latency (manual time); p50_us and p99_us are its own percentiles (it
// reports them in ms with 3 decimals: a 1 us resolution).
void BM_PeerRedisBenchmarkPing(benchmark::State& state) {
  testkit::RedisServer* redis = RedisOrSkip(state);
  if (redis == nullptr) return;
  constexpr int kRequests = 20000;
  const std::string command =
      absl::StrCat("/usr/bin/redis-benchmark -h 127.0.0.1 -p ", redis->port(),
                   " -t ping_mbulk -c 1 -n ", kRequests, " --csv 2>&1");
  double p50_us = 0;
  double p99_us = 0;
  for (auto _ : state) {
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
      state.SkipWithError("popen(redis-benchmark) failed");
      return;
    }
    std::string output;
    char buffer[512];
    while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
    const int status = pclose(pipe);
    // "PING_MBULK","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms"
    const size_t row = output.find("\"PING_MBULK\"");
    std::vector<std::string> fields;
    if (row != std::string::npos) {
      fields = absl::StrSplit(output.substr(row, output.find('\n', row) - row), ',');
    }
    double avg_ms = 0;
    double p50_ms = 0;
    double p99_ms = 0;
    // A quoted number: "0.023".
    const auto parse = [&](size_t i, double* value) {
      return i < fields.size() &&
             absl::SimpleAtod(
                 absl::StripAsciiWhitespace(absl::StrReplaceAll(fields[i], {{"\"", ""}})), value);
    };
    if (status != 0 || !parse(2, &avg_ms) || !parse(4, &p50_ms) || !parse(6, &p99_ms)) {
      state.SkipWithError(("unexpected redis-benchmark output: " + output).c_str());
      return;
    }
    state.SetIterationTime(avg_ms * 1e-3);
    p50_us = p50_ms * 1e3;
    p99_us = p99_ms * 1e3;
  }
  state.counters["p50_us"] = p50_us;
  state.counters["p99_us"] = p99_us;
}
BENCHMARK(BM_PeerRedisBenchmarkPing)->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Floor: PING through a bare blocking hiredis connection in this process.
void BM_PeerHiredisPing(benchmark::State& state) {
  testkit::RedisServer* redis = RedisOrSkip(state);
  if (redis == nullptr) return;
  redisContext* context = redisConnect("127.0.0.1", redis->port());
  if (context == nullptr || context->err != 0) {
    state.SkipWithError("hiredis could not connect");
    if (context != nullptr) redisFree(context);
    return;
  }
  bool failed = false;
  bench::RunRoundTrips(state, [&] {
    void* reply = redisCommand(context, "PING");
    if (reply == nullptr) {
      failed = true;
    } else {
      freeReplyObject(reply);
    }
  });
  redisFree(context);
  if (failed) state.SkipWithError("a hiredis PING failed");
}
BENCHMARK(BM_PeerHiredisPing)->Unit(benchmark::kMicrosecond);

// concurry's Redis client (the pool under the LimitSet engine): the same PING.
void BM_RedisClientPing(benchmark::State& state) {
  testkit::RedisServer* redis = RedisOrSkip(state);
  if (redis == nullptr) return;
  redis_internal::RedisClient client({.port = redis->port()});
  bench::RunRoundTrips(state, [&] { benchmark::DoNotOptimize(client.Command({"PING"})); });
}
BENCHMARK(BM_RedisClientPing)->Unit(benchmark::kMicrosecond);

// A LimitSet on the binary's Redis with 1, 2 or 3 of the in-process rows' limits: the GCRA
// RateLimit "tokens", + the GCRA CallLimit, + the ResourceLimit "connections" (none binds).
LimitSet MakeRedisSet(const std::shared_ptr<RedisLimitStore>& store, int64_t limits,
                      const std::string& name) {
  std::vector<Limit> definitions = {
      RateLimit("tokens", 1e9, absl::Seconds(1), RateLimitAlgorithm::kGcra)};
  if (limits >= 2) {
    definitions.push_back(CallLimit(1e9, absl::Seconds(1), RateLimitAlgorithm::kGcra));
  }
  if (limits >= 3) definitions.push_back(ResourceLimit("connections", 1'000'000));
  LimitSetOptions options;
  options.sharing = LimitSharing::kHosts;
  options.store = store;
  options.name = name;
  return LimitSet::Create(std::move(definitions), std::move(options));
}

// The server's script calls (EVALSHA) since CONFIG RESETSTAT and their time in us, from INFO
// commandstats ("cmdstat_evalsha:calls=N,usec=T,...").
struct ScriptStats {
  double calls = 0;
  double usec = 0;
};

ScriptStats ScriptsSinceReset(redis_internal::RedisClient& client) {
  const std::string info = client.Command({"INFO", "commandstats"}).str();
  ScriptStats stats;
  const size_t line = info.find("cmdstat_evalsha:");
  if (line == std::string::npos) return stats;
  const auto field = [&](const std::string& name, double* value) {
    const size_t at = info.find(name, line);
    const size_t end = at == std::string::npos ? at : info.find(',', at);
    if (end == std::string::npos ||
        !absl::SimpleAtod(info.substr(at + name.size(), end - at - name.size()), value)) {
      *value = 0;
    }
  };
  field("calls=", &stats.calls);
  field("usec=", &stats.usec);
  return stats;
}

// Acquire 10 tokens, Update 5 (5 refunded at release), Release: the in-process rows' loop, on a
// set of state.range(0) limits in Redis. Goal: p50 and p99 within 2 PING round trips. The time
// column and p50_us/p99_us are the acquisitions alone (manual time). Each acquisition is followed
// by one raw hiredis PING, untimed for the row: ping_p50_us/ping_p99_us, and rtts_p50/rtts_p99
// (the acquisition's percentile over the PING's), compare the two under the same load, which the
// goal's peer (run seconds apart) cannot on a busy machine. scripts and server_us: the scripts
// run per acquisition and the server's time in them (INFO commandstats).
void RunRedisLimitSet(benchmark::State& state, void (*acquire_update_release)(const LimitSet&)) {
  testkit::RedisServer* redis = RedisOrSkip(state);
  if (redis == nullptr) return;
  const int64_t limits = state.range(0);
  redisContext* ping = redisConnect("127.0.0.1", redis->port());
  if (ping == nullptr || ping->err != 0) {
    state.SkipWithError("hiredis could not connect");
    if (ping != nullptr) redisFree(ping);
    return;
  }
  std::vector<int64_t> samples;
  std::vector<int64_t> ping_samples;
  samples.reserve(1 << 16);
  ping_samples.reserve(1 << 16);
  std::string error;
  redis_internal::RedisClient admin({.port = redis->port()});
  ScriptStats scripts;
  try {
    LimitSet set = MakeRedisSet(RedisLimitStore::Connect({.port = redis->port()}), limits,
                                absl::StrCat("bench-", limits));
    acquire_update_release(set);  // Scripts loaded: the statistics below count the loop alone.
    admin.Command({"CONFIG", "RESETSTAT"});
    for (auto _ : state) {
      const int64_t start_ns = bench::SteadyNowNs();
      acquire_update_release(set);
      const int64_t acquired_ns = bench::SteadyNowNs();
      void* reply = redisCommand(ping, "PING");
      const int64_t pinged_ns = bench::SteadyNowNs();
      if (reply == nullptr) {
        error = "a hiredis PING failed";
        break;
      }
      freeReplyObject(reply);
      samples.push_back(acquired_ns - start_ns);
      ping_samples.push_back(pinged_ns - acquired_ns);
      state.SetIterationTime(static_cast<double>(acquired_ns - start_ns) * 1e-9);
    }
    scripts = ScriptsSinceReset(admin);
  } catch (const std::exception& e) {
    error = e.what();
  }
  redisFree(ping);
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(limits == 1 ? "rate" : limits == 2 ? "rate+call" : "rate+call+resource");
  if (samples.empty()) return;
  const double p50 = bench::PercentileMicros(samples, 0.50);
  const double p99 = bench::PercentileMicros(samples, 0.99);
  const double ping_p50 = bench::PercentileMicros(ping_samples, 0.50);
  const double ping_p99 = bench::PercentileMicros(ping_samples, 0.99);
  state.counters["p50_us"] = p50;
  state.counters["p99_us"] = p99;
  state.counters["ping_p50_us"] = ping_p50;
  state.counters["ping_p99_us"] = ping_p99;
  state.counters["rtts_p50"] = ping_p50 > 0 ? p50 / ping_p50 : 0;
  state.counters["rtts_p99"] = ping_p99 > 0 ? p99 / ping_p99 : 0;
  state.counters["server_us"] = scripts.usec / static_cast<double>(state.iterations());
  state.counters["scripts"] = scripts.calls / static_cast<double>(state.iterations());
}

void BM_RedisLimitSet(benchmark::State& state) { RunRedisLimitSet(state, &AcquireUpdateRelease); }
BENCHMARK(BM_RedisLimitSet)->DenseRange(1, 3)->UseManualTime()->Unit(benchmark::kMicrosecond);

// The same with all 10 tokens used (Update 10): nothing to refund at release, so a set without a
// ResourceLimit has nothing to give back to Redis either.
void AcquireUseAllRelease(const LimitSet& set) {
  LimitAcquisition acquired = set.Acquire({{"tokens", 10}});
  acquired.Update({{"tokens", 10}});
  acquired.Release();
}

void BM_RedisLimitSetNoRefund(benchmark::State& state) {
  RunRedisLimitSet(state, &AcquireUseAllRelease);
}
BENCHMARK(BM_RedisLimitSetNoRefund)
    ->DenseRange(1, 3)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Where the time of BM_RedisLimitSet goes: Acquire (+ Update) and Release timed apart
// (acquire_p50_us, release_p50_us), with the same untimed PING after each loop.
void BM_RedisLimitSetSplit(benchmark::State& state) {
  testkit::RedisServer* redis = RedisOrSkip(state);
  if (redis == nullptr) return;
  redisContext* ping = redisConnect("127.0.0.1", redis->port());
  if (ping == nullptr || ping->err != 0) {
    state.SkipWithError("hiredis could not connect");
    if (ping != nullptr) redisFree(ping);
    return;
  }
  std::vector<int64_t> acquires;
  std::vector<int64_t> releases;
  std::vector<int64_t> pings;
  {
    LimitSet set = MakeRedisSet(RedisLimitStore::Connect({.port = redis->port()}), state.range(0),
                                absl::StrCat("bench-split-", state.range(0)));
    AcquireUpdateRelease(set);
    for (auto _ : state) {
      const int64_t start_ns = bench::SteadyNowNs();
      LimitAcquisition acquired = set.Acquire({{"tokens", 10}});
      acquired.Update({{"tokens", 5}});
      const int64_t acquired_ns = bench::SteadyNowNs();
      acquired.Release();
      const int64_t released_ns = bench::SteadyNowNs();
      freeReplyObject(redisCommand(ping, "PING"));
      const int64_t pinged_ns = bench::SteadyNowNs();
      acquires.push_back(acquired_ns - start_ns);
      releases.push_back(released_ns - acquired_ns);
      pings.push_back(pinged_ns - released_ns);
      state.SetIterationTime(static_cast<double>(released_ns - start_ns) * 1e-9);
    }
  }
  redisFree(ping);
  state.counters["acquire_p50_us"] = bench::PercentileMicros(acquires, 0.50);
  state.counters["release_p50_us"] = bench::PercentileMicros(releases, 0.50);
  state.counters["ping_p50_us"] = bench::PercentileMicros(pings, 0.50);
}
BENCHMARK(BM_RedisLimitSetSplit)
    ->DenseRange(1, 3, 2)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Grants per second with state.range(0) client processes, each fork()ed with a store connection
// of its own, on one rate limit far above what they ask for (1e9 per second). Each runs Acquire
// 1, Update 1, Release for kRun; grants_per_second is their sum over the run (the time column is
// the run, manual time), per_process_per_second the mean per process.
void BM_RedisLimitSetProcesses(benchmark::State& state) {
  testkit::RedisServer* redis = RedisOrSkip(state);
  if (redis == nullptr) return;
  constexpr absl::Duration kRun = absl::Milliseconds(300);
  const int processes = static_cast<int>(state.range(0));
  struct Shared {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> grants{0};
    std::atomic<int> failures{0};
  };
  void* page =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) {
    state.SkipWithError("mmap failed");
    return;
  }
  int64_t grants = 0;
  absl::Duration ran;
  std::string error;
  for (auto _ : state) {
    Shared* shared = new (page) Shared();
    int ready[2];
    int go[2];
    if (pipe(ready) != 0 || pipe(go) != 0) {
      error = "pipe failed";
      break;
    }
    const pid_t parent = getpid();
    std::vector<pid_t> children;
    for (int i = 0; i < processes; ++i) {
      const pid_t child = fork();
      if (child != 0) {
        if (child > 0) children.push_back(child);
        continue;
      }
      // The child: its own store and set, then the loop. _exit() only: the parent's statics
      // (its redis-server among them) are not the child's to destroy.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      close(ready[0]);
      close(go[1]);
      try {
        LimitSet set =
            MakeRedisSet(RedisLimitStore::Connect({.port = redis->port()}), 1, "bench-processes");
        AcquireUpdateRelease(set);  // Connected, scripts loaded.
        const char byte = 1;
        if (write(ready[1], &byte, 1) != 1) _exit(1);
        char go_byte;
        while (read(go[0], &go_byte, 1) < 0 && errno == EINTR) {  // EOF: the parent said go.
        }
        int64_t mine = 0;
        while (!shared->stop.load(std::memory_order_relaxed)) {
          LimitAcquisition acquired = set.Acquire({{"tokens", 1}});
          acquired.Update({{"tokens", 1}});
          acquired.Release();
          ++mine;
        }
        shared->grants.fetch_add(mine, std::memory_order_relaxed);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "BM_RedisLimitSetProcesses child: %s\n", e.what());
        shared->failures.fetch_add(1, std::memory_order_relaxed);
      }
      _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    int started = 0;
    char byte;
    while (started < static_cast<int>(children.size()) && read(ready[0], &byte, 1) == 1) ++started;
    close(ready[0]);
    const absl::Time start = absl::Now();
    close(go[1]);  // Every child's read() returns: they start together.
    if (started == processes) absl::SleepFor(kRun);
    shared->stop.store(true, std::memory_order_relaxed);
    const absl::Duration elapsed = absl::Now() - start;
    for (const pid_t child : children) {
      int status;
      while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
      }
    }
    if (started != processes || shared->failures.load() != 0) {
      error = absl::StrCat(started, " of ", processes, " children started, ",
                           shared->failures.load(), " failed (their errors are on stderr)");
      break;
    }
    state.SetIterationTime(absl::ToDoubleSeconds(elapsed));
    grants += shared->grants.load(std::memory_order_relaxed);
    ran += elapsed;
  }
  munmap(page, sizeof(Shared));
  if (!error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  const double per_second = static_cast<double>(grants) / absl::ToDoubleSeconds(ran);
  state.counters["grants_per_second"] = per_second;
  state.counters["per_process_per_second"] = per_second / processes;
}
BENCHMARK(BM_RedisLimitSetProcesses)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

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

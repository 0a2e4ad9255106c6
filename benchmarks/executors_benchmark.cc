// Executors side by side, so ratios come from one run: ThreadPoolExecutor (ours, for blocking
// I/O), asio::thread_pool (asio::post), a plain mutex + condition-variable pool (the naive peer,
// below) and TbbExecutor (ours, for CPU work; for reference).
//   RoundTrip:  submit one no-op task and wait for it (latency of an idle pool's wake-up).
//   Throughput: submit 10000 no-op tasks, then wait for all (queue and hand-off cost).
//   Blocking:   tasks that each sleep 1 ms (blocking I/O) on 8, 32 and 128 threads, threads x 20
//               per iteration; counters tasks_per_s and ideal_ratio = tasks/s / (threads x 1000/s).
//
//   bazel run --config=opt //benchmarks:executors_benchmark -- --benchmark_repetitions=3

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "asio.hpp"
#include "benchmark/benchmark.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/tbb_executor.h"
#include "futures/thread_pool_executor.h"

namespace concurry {
namespace {

// The naive peer: a fixed number of threads taking std::function tasks from one deque under a
// mutex, woken by a condition variable.
class NaivePool {
 public:
  explicit NaivePool(int threads) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] {
        for (;;) {
          std::function<void()> task;
          {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return;
            task = std::move(queue_.front());
            queue_.pop_front();
          }
          task();
        }
      });
    }
  }
  ~NaivePool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }
  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Counts finished tasks down to zero; Wait() returns then. The same for every executor.
class Countdown {
 public:
  explicit Countdown(int64_t n) : left_(n) {}
  void Done() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--left_ == 0) cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return left_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t left_;
};

// Uniform access to the four executors: Post(task), and a factory for `threads` threads.
struct OursPool {
  explicit OursPool(int threads) : pool(threads) {}
  template <typename F>
  void Post(F&& f) {
    pool.Submit(std::forward<F>(f));
  }
  ThreadPoolExecutor pool;
};
struct AsioPool {
  explicit AsioPool(int threads) : pool(threads) {}
  ~AsioPool() { pool.join(); }
  template <typename F>
  void Post(F&& f) {
    asio::post(pool, std::forward<F>(f));
  }
  asio::thread_pool pool;
};
struct NaivePeer {
  explicit NaivePeer(int threads) : pool(threads) {}
  template <typename F>
  void Post(F&& f) {
    pool.Post(std::forward<F>(f));
  }
  NaivePool pool;
};
struct TbbPool {
  explicit TbbPool(int threads) : pool(threads) {}
  template <typename F>
  void Post(F&& f) {
    pool.Submit(std::forward<F>(f));
  }
  TbbExecutor pool;
};

constexpr int kSmallPool = 4;

// ---- Round trip ------------------------------------------------------------------------------

// Ours through Async and its Future, as users call it.
void BM_RoundTrip_ThreadPoolExecutor(benchmark::State& state) {
  ThreadPoolExecutor pool(kSmallPool);
  int i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(Async(pool, [i] { return i + 1; }).Result());
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTrip_ThreadPoolExecutor)->UseRealTime();

template <typename Pool>
void BM_RoundTrip(benchmark::State& state) {
  Pool pool(kSmallPool);
  int i = 0;
  for (auto _ : state) {
    std::promise<int> promise;
    std::future<int> future = promise.get_future();
    pool.Post([&promise, i] { promise.set_value(i + 1); });
    benchmark::DoNotOptimize(future.get());
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_TEMPLATE(BM_RoundTrip, OursPool)
    ->Name("BM_RoundTrip_ThreadPoolExecutorStdPromise")
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_RoundTrip, AsioPool)->Name("BM_RoundTrip_AsioThreadPool")->UseRealTime();
BENCHMARK_TEMPLATE(BM_RoundTrip, NaivePeer)->Name("BM_RoundTrip_NaivePool")->UseRealTime();
BENCHMARK_TEMPLATE(BM_RoundTrip, TbbPool)->Name("BM_RoundTrip_TbbExecutor")->UseRealTime();

// ---- Throughput ------------------------------------------------------------------------------

constexpr int kThroughputTasks = 10000;

template <typename Pool>
void BM_Throughput(benchmark::State& state) {
  Pool pool(kSmallPool);
  for (auto _ : state) {
    Countdown countdown(kThroughputTasks);
    for (int i = 0; i < kThroughputTasks; ++i) pool.Post([&countdown] { countdown.Done(); });
    countdown.Wait();
  }
  state.SetItemsProcessed(state.iterations() * kThroughputTasks);
}
BENCHMARK_TEMPLATE(BM_Throughput, OursPool)
    ->Name("BM_Throughput_ThreadPoolExecutor")
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_Throughput, AsioPool)->Name("BM_Throughput_AsioThreadPool")->UseRealTime();
BENCHMARK_TEMPLATE(BM_Throughput, NaivePeer)->Name("BM_Throughput_NaivePool")->UseRealTime();
BENCHMARK_TEMPLATE(BM_Throughput, TbbPool)->Name("BM_Throughput_TbbExecutor")->UseRealTime();

// ---- Blocking tasks --------------------------------------------------------------------------

constexpr int kTasksPerThread = 20;

template <typename Pool>
void BM_Blocking(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const int64_t tasks = int64_t{threads} * kTasksPerThread;
  Pool pool(threads);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Countdown countdown(tasks);
    for (int64_t i = 0; i < tasks; ++i) {
      pool.Post([&countdown] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        countdown.Done();
      });
    }
    countdown.Wait();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double tasks_per_s = static_cast<double>(state.iterations() * tasks) / seconds;
  state.SetItemsProcessed(state.iterations() * tasks);
  state.counters["tasks_per_s"] = tasks_per_s;
  // Ideal: every thread always sleeping in a task, threads x 1000 tasks/s.
  state.counters["ideal_ratio"] = tasks_per_s / (threads * 1000.0);
}
#define CONCURRY_BLOCKING(pool, name)   \
  BENCHMARK_TEMPLATE(BM_Blocking, pool) \
      ->Name(name)                      \
      ->Arg(8)                          \
      ->Arg(32)                         \
      ->Arg(128)                        \
      ->UseRealTime()                   \
      ->MinTime(0.2)
CONCURRY_BLOCKING(OursPool, "BM_Blocking_ThreadPoolExecutor");
CONCURRY_BLOCKING(AsioPool, "BM_Blocking_AsioThreadPool");
CONCURRY_BLOCKING(NaivePeer, "BM_Blocking_NaivePool");
CONCURRY_BLOCKING(TbbPool, "BM_Blocking_TbbExecutor");
#undef CONCURRY_BLOCKING

}  // namespace
}  // namespace concurry

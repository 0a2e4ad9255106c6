// TbbExecutor: an Executor for CPU work that runs tasks on a oneTBB task arena with threads of its
// own, and adds a thread while a task blocks, so blocked tasks never starve the others.
//
//   concurry::TbbExecutor pool;  // one thread per core; TbbExecutor(4) for four
//   concurry::Future<int> f = concurry::Async(pool, [] { return 6 * 7; });
//   int v = f.Result();  // 42
//
// It is THE executor for CPU work (one thread per core, nested tbb::parallel_for). For blocking
// I/O (sockets, HTTP, database clients), use ThreadPoolExecutor (thread_pool_executor.h), whose
// OS threads are sized for the I/O: here max_concurrency tasks run at once, so on a 2-core machine
// a Stream with max_in_flight = 16 over blocking calls runs about 2 of them at a time. A task here
// that blocks on something the library does not know about says so with a BlockingRegion
// (executor.h). Separate from //futures:future so code that does not need oneTBB does not link it.

#ifndef CONCURRY_FUTURES_TBB_EXECUTOR_H_
#define CONCURRY_FUTURES_TBB_EXECUTOR_H_

#include <cstdint>
#include <memory>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"

namespace concurry {

// Returns the number of hardware threads (std::thread::hardware_concurrency()), at least 1.
int HardwareConcurrency();

// Options of a TbbExecutor; the TbbExecutor(options) constructor validates them and throws
// InvalidOptionError naming the field, the value and the allowed range.
struct TbbExecutorOptions {
  // Tasks that run at once, each on a thread of the executor: 1 to TbbExecutor::kMaxConcurrency.
  int max_concurrency = HardwareConcurrency();
  // Threads the executor may add while tasks are blocked (one per task in a BlockingRegion), so
  // that max_concurrency tasks keep running: 0 (never add one) to TbbExecutor::kMaxSpareThreads.
  // Tasks that block beyond it wait without a replacement (counted in Stats().uncompensated).
  // Each possible thread is an arena slot, and oneTBB's idle threads spin longer before sleeping
  // in an arena with more slots: 256 cost ~15% in a bursty benchmark on 2 cores, 64 nothing
  // measurable (workers_benchmark, Spread64).
  int max_spare_threads = 64;
  // How long an added thread that is no longer needed waits to be needed again before it exits:
  // > 0 (absl::InfiniteDuration() keeps them until the executor shuts down).
  absl::Duration spare_keep_alive = absl::Seconds(60);
  // The clock for spare_keep_alive; null: Clock::Real(). Must outlive the executor.
  Clock* clock = nullptr;
};

// A snapshot of a TbbExecutor's threads, for monitoring. The numbers may change as soon as they
// are read.
struct TbbExecutorStats {
  int max_concurrency = 0;
  // Tasks inside a BlockingRegion now (every library wait is one).
  int blocked = 0;
  // Added threads running tasks in place of blocked ones now.
  int active_spare_threads = 0;
  // Added threads alive: active ones plus idle ones waiting to be needed (spare_keep_alive).
  int spare_threads = 0;
  // How often a task blocked and no thread could be added for it (max_spare_threads reached, or
  // the system refused a new thread).
  int64_t uncompensated = 0;
};

// Runs submitted tasks (from oneTBB's starvation-free FIFO queues, so roughly in submission order)
// on `max_concurrency` threads of its own that join a oneTBB task arena: oneTBB schedules the tasks
// (and the nested parallelism of tbb::parallel_for and friends inside them), and the executor never
// depends on or changes oneTBB's process-wide thread limit. A task that blocks inside a
// BlockingRegion (any library wait) gets a thread added in its place until it unblocks, up to
// max_spare_threads; the blocked task stays on its own thread (no migration: thread-locals and held
// locks stay valid).
//
// The destructor stops accepting tasks and waits for every submitted task to finish; Submit
// after that throws StoppedError. Destroying the executor from one of its own tasks does not wait
// for that task: the executor stops accepting tasks, and the remaining ones (that task included)
// finish in the background. Thread-safe.
class TbbExecutor final : public Executor {
 public:
  static constexpr int kMaxConcurrency = 1024;
  static constexpr int kMaxSpareThreads = 4096;

  // One thread per hardware thread.
  TbbExecutor();
  // `max_concurrency` threads (1 to kMaxConcurrency).
  explicit TbbExecutor(int max_concurrency);
  explicit TbbExecutor(const TbbExecutorOptions& options);
  ~TbbExecutor() override;

  TbbExecutor(const TbbExecutor&) = delete;
  TbbExecutor& operator=(const TbbExecutor&) = delete;

  void Submit(Task task) override;

  // Stops accepting tasks and waits for every submitted task to finish. Idempotent. Called from
  // one of this executor's own tasks it throws InvalidOptionError instead of waiting for itself.
  void Shutdown();

  // Returns the number of tasks that run at once.
  int max_concurrency() const override;
  // True: its tasks are CPU work with no thread affinity (see Executor).
  bool tasks_may_run_on_any_thread() const override { return true; }

  // Returns a snapshot of the executor's threads.
  TbbExecutorStats Stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace concurry

#endif  // CONCURRY_FUTURES_TBB_EXECUTOR_H_

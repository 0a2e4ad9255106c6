// TbbExecutor: an Executor that runs tasks on a oneTBB task arena with work stealing.
//
//   concurry::TbbExecutor pool(/*max_concurrency=*/2);
//   concurry::Future<int> f = concurry::Async(pool, [] { return 6 * 7; });
//   int v = f.Result();  // 42
//
// Separate from //futures:future so code that does not need oneTBB does not link it.

#ifndef CONCURRY_FUTURES_TBB_EXECUTOR_H_
#define CONCURRY_FUTURES_TBB_EXECUTOR_H_

#include <memory>

#include "futures/executor.h"

namespace concurry {

// Runs submitted tasks on the threads of a oneTBB task arena. The destructor stops accepting
// tasks and waits for every submitted task to finish; Submit after that throws StoppedError.
// Thread-safe.
class TbbExecutor final : public Executor {
 public:
  // Runs at most `max_concurrency` tasks at once, and at most as many as oneTBB has worker
  // threads: max_allowed_parallelism - 1, which is one fewer than the machine's cores unless the
  // application raises it with a tbb::global_control created before the executor. <= 0 means all
  // of oneTBB's workers. max_concurrency() reports the effective value.
  explicit TbbExecutor(int max_concurrency = 0);
  ~TbbExecutor() override;

  TbbExecutor(const TbbExecutor&) = delete;
  TbbExecutor& operator=(const TbbExecutor&) = delete;

  void Submit(Task task) override;

  // Stops accepting tasks and waits for every submitted task to finish. Idempotent. Called from
  // one of this executor's own tasks it throws InvalidOptionError instead of waiting for itself.
  void Shutdown();

  // Returns the number of threads the arena runs tasks on.
  int max_concurrency() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace concurry

#endif  // CONCURRY_FUTURES_TBB_EXECUTOR_H_

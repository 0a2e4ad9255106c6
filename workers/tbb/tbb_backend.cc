// Mode::kTbb: lightweight actors drained as tasks on an executor, by default one TbbExecutor (a
// oneTBB arena) shared by every tbb-mode worker of the process.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "futures/executor.h"
#include "futures/tbb_executor.h"
#include "oneapi/tbb/scalable_allocator.h"
#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/options.h"

namespace concurry::workers_internal {
namespace {

// Calls run per drain before the actor yields its thread to other actors.
constexpr int64_t kExecutorBudget = 256;

// The process-wide executor: one thread per hardware thread, plus one added for each call that
// blocks (BlockingRegion). Never destroyed: tbb-mode workers may outlive static destruction.
Executor& SharedTbbExecutor() {
  static auto* const executor = new TbbExecutor();
  return *executor;
}

// Drains as tasks on `options.executor`, or on the shared oneTBB arena.
class ExecutorActor final : public ActorCore {
 public:
  ExecutorActor(const ResolvedWorkerOptions& options, const WorkerBackend& backend)
      : ActorCore(options, backend),
        executor_(options.executor != nullptr ? options.executor : &SharedTbbExecutor()) {}

 protected:
  void Schedule() override {
    try {
      executor_->Submit(DrainTask(std::static_pointer_cast<ExecutorActor>(shared_from_this())));
    } catch (...) {
      // The executor refused the drain (shut down): the DrainTask it was given has ended the
      // actor when the executor destroyed it.
    }
  }

 private:
  // One drain of the actor, as an executor task. An executor may destroy a task without running
  // it (ThreadPoolExecutor::Shutdown with cancel_pending, a broken pool, or a Submit that throws):
  // then no drain will ever run, so the task ends the actor instead (its queued calls are
  // cancelled), and no call waits for a drain that never comes.
  class DrainTask {
   public:
    explicit DrainTask(std::shared_ptr<ExecutorActor> actor) : actor_(std::move(actor)) {}
    DrainTask(DrainTask&& other) noexcept = default;  // Leaves other.actor_ null.
    DrainTask& operator=(DrainTask&&) = delete;
    ~DrainTask() {
      if (actor_ != nullptr) actor_->Abandon();
    }
    void operator()() {
      const std::shared_ptr<ExecutorActor> actor = std::move(actor_);
      actor->Drain(kExecutorBudget);
    }

   private:
    std::shared_ptr<ExecutorActor> actor_;
  };

  Executor* const executor_;
};

// Call nodes are made by callers and freed on the actor's thread, or, when the node shares its
// block with the call's future state (CallBlock), by whichever of the two lets go last. oneTBB's
// scalable allocator takes such cross-thread frees without contending with the allocating thread;
// pipelined calls to one tbb worker run ~20 % faster with it than with glibc's malloc, and with
// blocks from glibc, 10^6 calls over 64 tbb workers ran slower than with separate node and state
// (workers_benchmark: the workers' frees land in their own caches, and the caller's malloc takes
// the slow path on every call). Sanitized builds keep the C++ allocator, so that the sanitizers
// see every allocation.
constexpr CallNodeAllocator kScalableAllocator = {
    .allocate = [](size_t size) { return scalable_malloc(size); },
    .free = [](void* p) { scalable_free(p); },
};
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kUseScalableAllocator = false;
#else
constexpr bool kUseScalableAllocator = true;
#endif

class TbbBackend final : public WorkerBackend {
 public:
  TbbBackend() {
    if constexpr (kUseScalableAllocator) SetCallNodeAllocator(&kScalableAllocator);
  }

  Mode mode() const override { return Mode::kTbb; }
  // Rescheduling is a oneTBB task and often a wake-up: a 2-worker tbb pool fed by one caller
  // makes 1.5x the calls per second with a 2 us linger (pools_benchmark).
  // Only on the shared arena: a drain on an executor of the user's (an inline or manual one)
  // may run on the very thread that would push the next call.
  absl::Duration drain_linger(const ResolvedWorkerOptions& options) const override {
    return options.executor == nullptr ? absl::Microseconds(2) : absl::ZeroDuration();
  }
  // Any thread of the shared arena may run a call, so the creator's thread, which would sleep
  // until an arena thread had built the object, may as well build it: Create then costs no
  // wake-up (100 k synchronous Creates took 2 s with the round trip). A user's executor may
  // promise where its tasks run (a thread with its own set-up), so there the arena path stays.
  bool constructs_on_caller(const ResolvedWorkerOptions& options) const override {
    return options.executor == nullptr;
  }
  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<ExecutorActor>(options, *this);
  }
};

}  // namespace
}  // namespace concurry::workers_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::workers_internal::TbbBackend)

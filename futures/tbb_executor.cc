#include "futures/tbb_executor.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "oneapi/tbb/task_arena.h"
#include "oneapi/tbb/task_group.h"

namespace concurry {
namespace {

// oneTBB stores task functors as const; the task runs exactly once, so calling the mutable
// AnyInvocable through a const wrapper is sound.
struct ConstCallable {
  mutable Executor::Task task;
  void operator()() const { task(); }
};

}  // namespace

struct TbbExecutor::Impl {
  // No slot is reserved for application threads: all `max_concurrency` slots go to workers, and
  // Shutdown() waits from outside the arena, so no extra thread ever runs tasks in it. (With a
  // reserved slot, only max_concurrency - 1 workers would run tasks until Shutdown, and
  // TbbExecutor(1) would run two tasks at once during Shutdown.)
  explicit Impl(int max_concurrency)
      : arena(max_concurrency > 0 ? max_concurrency : tbb::task_arena::automatic,
              /*reserved_for_masters=*/0) {}

  tbb::task_arena arena;
  tbb::task_group group;
  // Readers: Submit calls in progress. Writer: Shutdown flipping `stopped`.
  absl::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
};

TbbExecutor::TbbExecutor(int max_concurrency) : impl_(std::make_unique<Impl>(max_concurrency)) {
  impl_->arena.initialize();
}

TbbExecutor::~TbbExecutor() { Shutdown(); }

void TbbExecutor::Submit(Task task) {
  absl::ReaderMutexLock lock(&impl_->mu);
  if (impl_->stopped) throw StoppedError("TbbExecutor::Submit: the executor was shut down");
  impl_->arena.enqueue(impl_->group.defer(ConstCallable{std::move(task)}));
}

void TbbExecutor::Shutdown() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->stopped = true;
  }
  // No Submit can add tasks now; wait for those already enqueued (and what they spawn). The
  // wait happens outside the arena so this thread never takes a slot (see Impl).
  impl_->group.wait();
}

int TbbExecutor::max_concurrency() const { return impl_->arena.max_concurrency(); }

}  // namespace concurry

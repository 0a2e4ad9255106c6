#include "futures/tbb_executor.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>
#include <utility>

#include "futures/errors.h"
#include "oneapi/tbb/global_control.h"
#include "oneapi/tbb/task_arena.h"
#include "oneapi/tbb/task_group.h"

namespace concurry {
namespace {

// The executor whose task the calling thread is running, if any (lets Shutdown refuse to wait for
// itself).
thread_local const void* running_executor = nullptr;

// oneTBB stores task functors as const; the task runs exactly once, so calling the mutable
// AnyInvocable through a const wrapper is sound. A task must not throw (Async never lets user
// code's exceptions out); one that does would cancel the task group and with it every task
// queued behind it, so the error is printed and contained instead.
struct ConstCallable {
  const void* owner;
  mutable Executor::Task task;
  void operator()() const {
    struct Restore {
      const void* outer;
      ~Restore() { running_executor = outer; }
    } restore{std::exchange(running_executor, owner)};
    RunExecutorTask(task, "TbbExecutor");
  }
};

}  // namespace

struct TbbExecutor::Impl {
  // No slot is reserved for application threads: all `max_concurrency` slots go to workers, and
  // Shutdown() waits from outside the arena, so no extra thread ever runs tasks in it. (With a
  // reserved slot, only max_concurrency - 1 workers would run tasks until Shutdown, and
  // TbbExecutor(1) would run two tasks at once during Shutdown.)
  explicit Impl(int max_concurrency)
      : arena(ArenaConcurrency(max_concurrency), /*reserved_for_masters=*/0) {}

  // oneTBB runs arena tasks on its worker threads only, and has max_allowed_parallelism - 1 of
  // them (by default one fewer than the machine's cores). Asking for more makes oneTBB print a
  // warning and ignore the excess, so the arena asks for what can run.
  static int ArenaConcurrency(int requested) {
    const int workers = std::max<int>(1, static_cast<int>(tbb::global_control::active_value(
                                             tbb::global_control::max_allowed_parallelism)) -
                                             1);
    return requested > 0 ? std::min(requested, workers) : workers;
  }

  tbb::task_arena arena;
  tbb::task_group group;
  // Submit calls in progress, and whether Shutdown began. A mutex would do, but Debian's
  // absl::Mutex (deadlock detection on) costs more than the enqueue itself on this hot path.
  // Memory ordering: both are seq_cst, so a Submit either sees `stopped` and backs out, or its
  // increment is seen by Shutdown, which then waits for the matching decrement. A Submit's
  // decrement is its last access to Impl, so Shutdown (and the destructor) may proceed after it.
  std::atomic<int> submitting{0};
  std::atomic<bool> stopped{false};
};

TbbExecutor::TbbExecutor(int max_concurrency) : impl_(std::make_unique<Impl>(max_concurrency)) {
  impl_->arena.initialize();
}

TbbExecutor::~TbbExecutor() {
  if (running_executor == impl_.get()) {
    // Destroying the executor from one of its own tasks cannot wait for that task.
    std::fprintf(stderr, "concurry: TbbExecutor destroyed from one of its own tasks\n");
    std::abort();
  }
  Shutdown();
}

void TbbExecutor::Submit(Task task) {
  Impl& impl = *impl_;
  struct Leave {
    std::atomic<int>& submitting;
    ~Leave() { submitting.fetch_sub(1); }  // The last access to Impl (see Impl).
  };
  impl.submitting.fetch_add(1);
  Leave leave{impl.submitting};
  if (impl.stopped.load()) throw StoppedError("TbbExecutor::Submit: the executor was shut down");
  impl.arena.enqueue(impl.group.defer(ConstCallable{&impl, std::move(task)}));
}

void TbbExecutor::Shutdown() {
  if (running_executor == impl_.get()) {
    throw InvalidOptionError(
        "TbbExecutor::Shutdown called from one of the executor's own tasks: it would wait for "
        "itself forever; shut down from outside the executor");
  }
  impl_->stopped.store(true);
  // Wait for Submit calls that got in before `stopped` was set; no later one can add a task. They
  // are between an increment and a decrement around one non-blocking enqueue, so this wait is a
  // few hundred nanoseconds; a wake-up would have to touch Impl after the decrement.
  while (impl_->submitting.load() != 0) std::this_thread::yield();
  // Wait for the tasks already enqueued (and what they spawn). The wait happens outside the
  // arena so this thread never takes a slot (see Impl).
  impl_->group.wait();
}

int TbbExecutor::max_concurrency() const { return impl_->arena.max_concurrency(); }

}  // namespace concurry

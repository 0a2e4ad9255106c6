// ManualExecutor: a concurry::Executor that only queues tasks; the test decides when, and on which
// thread, they run. Code that schedules continuations can then be stepped deterministically.
//
//   concurry::testkit::ManualExecutor executor;
//   executor.Submit([&] { ran = true; });
//   EXPECT_EQ(executor.pending(), 1);
//   EXPECT_TRUE(executor.RunOne());  // runs the task here, now
//   EXPECT_EQ(executor.RunAll(), 0);  // nothing left

#ifndef CONCURRY_TESTING_MANUAL_EXECUTOR_H_
#define CONCURRY_TESTING_MANUAL_EXECUTOR_H_

#include <cstddef>
#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "futures/executor.h"

namespace concurry {
namespace testkit {

// An executor whose Submit() appends to a FIFO queue; RunOne() and RunAll() run queued tasks on
// the calling thread, outside the executor's lock, so tasks may submit more tasks. Tasks still
// queued when the executor is destroyed are destroyed without running. Thread-safe: any thread
// may submit, and several threads may run tasks at once.
class ManualExecutor final : public Executor {
 public:
  ManualExecutor() = default;
  ~ManualExecutor() override;

  ManualExecutor(const ManualExecutor&) = delete;
  ManualExecutor& operator=(const ManualExecutor&) = delete;

  // Queues `task`. Throws InvalidOptionError if `task` is empty.
  void Submit(Task task) override ABSL_LOCKS_EXCLUDED(mu_);

  // Runs the oldest queued task on the calling thread and returns true, or returns false if the
  // queue is empty. An exception thrown by the task propagates to the caller; the task is
  // dequeued either way.
  bool RunOne() ABSL_LOCKS_EXCLUDED(mu_);

  // Runs queued tasks, oldest first, until the queue is empty, including tasks submitted while
  // running. Returns how many ran.
  int RunAll() ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the number of queued tasks.
  size_t pending() const ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until at least `n` tasks are queued (for tasks submitted by other threads).
  void BlockUntilPending(size_t n) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_MANUAL_EXECUTOR_H_

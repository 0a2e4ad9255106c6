#include "testing/manual_executor.h"

#include <utility>

#include "futures/errors.h"

namespace concurry {
namespace testkit {

ManualExecutor::~ManualExecutor() {
  // Destroy the queued tasks outside the lock: a task's destructor may call Submit(), so repeat
  // until nothing more was queued.
  while (true) {
    std::deque<Task> discarded;
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) return;
      discarded.swap(queue_);
    }
  }
}

void ManualExecutor::Submit(Task task) {
  if (!task) throw InvalidOptionError("ManualExecutor::Submit: task must not be empty");
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
}

bool ManualExecutor::RunOne() {
  Task task;
  {
    absl::MutexLock lock(&mu_);
    if (queue_.empty()) return false;
    task = std::move(queue_.front());
    queue_.pop_front();
  }
  task();
  return true;
}

int ManualExecutor::RunAll() {
  int ran = 0;
  while (RunOne()) ++ran;
  return ran;
}

size_t ManualExecutor::pending() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void ManualExecutor::BlockUntilPending(size_t n) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.size() >= n; };
  mu_.Await(absl::Condition(&enough));
}

}  // namespace testkit
}  // namespace concurry

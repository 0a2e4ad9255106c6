#include "sync/internal/watch.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "futures/internal/task_context.h"

namespace concurry {
namespace sync_internal {

std::string NameIndex(size_t index) { return absl::StrCat("index ", index); }

void ThrowInvalidFuture(const char* operation, const std::string& name) {
  throw InvalidOptionError(absl::StrCat(operation, ": future at ", name,
                                        " is invalid (default-constructed or moved-from); pass "
                                        "futures obtained from a Promise, Async or a worker"));
}

absl::Time DeadlineAfter(Clock& clock, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return absl::InfiniteFuture();
  return clock.Now() + timeout;
}

struct Watch::Shared {
  void Record(size_t index, bool failed) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    completed.push_back(index);
    if (failed) ++failures;
  }

  absl::Mutex mu;
  std::vector<size_t> completed ABSL_GUARDED_BY(mu);
  size_t failures ABSL_GUARDED_BY(mu) = 0;
};

Watch::Watch(std::span<const AnyFuture> futures, const char* operation)
    : futures_(futures),
      operation_(operation),
      shared_(std::make_shared<Shared>()),
      handles_(futures.size(), nullptr) {
  try {
    for (size_t i = 0; i < futures_.size(); ++i) {
      const AnyFuture& future = futures_[i];
      // The callback holds a handle to its own future so it can tell an error from a value; the
      // cycle ends when the callback runs or is removed.
      handles_[i] = future.AddCallbackIfPending(
          [shared = shared_, future, i] { shared->Record(i, future.Error() != nullptr); });
      if (handles_[i] == nullptr) shared_->Record(i, future.Error() != nullptr);
    }
  } catch (...) {
    RemoveCallbacks();
    throw;
  }
}

Watch::~Watch() { RemoveCallbacks(); }

void Watch::RemoveCallbacks() noexcept {
  {
    // Callbacks that recorded their index have run (or are returning): skip them.
    absl::MutexLock lock(&shared_->mu);
    for (size_t index : shared_->completed) handles_[index] = nullptr;
  }
  for (size_t i = 0; i < handles_.size(); ++i) {
    if (handles_[i] != nullptr) futures_[i].RemoveCallback(std::exchange(handles_[i], nullptr));
  }
}

bool Watch::Await(size_t count, bool or_failure, Clock& clock, absl::Time deadline,
                  Snapshot* snapshot) {
  Shared& shared = *shared_;
  absl::MutexLock lock(&shared.mu);
  const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared.mu) {
    return shared.completed.size() >= count || (or_failure && shared.failures > 0);
  };
  // A poll (a deadline already passed) never blocks, so it cannot deadlock either.
  if (!ready() && deadline > clock.Now()) {
    CheckReachable(count, or_failure, shared.completed.size());
  }
  const bool met = clock.AwaitWithDeadline(&shared.mu, absl::Condition(&ready), deadline);
  snapshot->completed.insert(snapshot->completed.end(),
                             shared.completed.begin() + snapshot->completed.size(),
                             shared.completed.end());
  snapshot->failures = shared.failures;
  return met;
}

void Watch::CheckReachable(size_t count, bool or_failure, size_t completed) {
  const void* context = futures_internal::CurrentSerialContext();
  if (context == nullptr) return;
  if (context != own_context_) {
    own_context_ = context;
    own_.clear();
    for (size_t i = 0; i < futures_.size(); ++i) {
      if (futures_[i].WaitWouldSelfDeadlock()) own_.push_back(i);
    }
  }
  if (own_.empty()) return;
  // Read after `completed`: an own future done since then is counted in neither, which can only
  // make the wait look reachable.
  size_t own_pending = 0;
  for (size_t i : own_) own_pending += futures_[i].WaitWouldSelfDeadlock() ? 1 : 0;
  const size_t others_pending = futures_.size() - completed - own_pending;
  if (completed + others_pending >= count || (or_failure && others_pending > 0)) return;
  futures_internal::ThrowSelfDeadlock(operation_);
}

}  // namespace sync_internal
}  // namespace concurry

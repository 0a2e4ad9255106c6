// The steps Wait and WaitAsync share around their different ways of waiting (a blocked thread, a
// suspended coroutine): which futures are done already, when `return_when` is met, and the result
// at the end. Internal to sync/.

#ifndef CONCURRY_SYNC_INTERNAL_WAIT_STEPS_H_
#define CONCURRY_SYNC_INTERNAL_WAIT_STEPS_H_

#include <cstddef>
#include <span>

#include "futures/future.h"
#include "sync/internal/watch.h"
#include "sync/progress.h"
#include "sync/wait.h"

namespace concurry::sync_internal {

// Returns the futures of `futures` that are done now, in index order, and how many failed.
Snapshot ScanDone(std::span<const AnyFuture> futures);

// When a wait for `return_when` over `count` futures is over: all are done (FIRST_EXCEPTION
// included), or one is (FIRST_COMPLETED), or one failed (FIRST_EXCEPTION).
struct WaitCondition {
  WaitCondition(ReturnWhen return_when, size_t count);
  bool Holds(const Snapshot& snapshot) const {
    return snapshot.completed.size() >= needed || (or_failure && snapshot.failures > 0);
  }

  size_t needed;    // Completions that end the wait.
  bool or_failure;  // Whether one failure ends it too.
};

// Ends a wait whose condition is `met` (or timed out): tells `progress`, splits the indices into
// done and not done, and cancels the not-done ones after a timeout when
// `cancel_pending_on_timeout`.
WaitResult EndWait(std::span<const AnyFuture> futures, const Snapshot& snapshot, bool met,
                   ProgressReporter& progress, bool cancel_pending_on_timeout);

}  // namespace concurry::sync_internal

#endif  // CONCURRY_SYNC_INTERNAL_WAIT_STEPS_H_

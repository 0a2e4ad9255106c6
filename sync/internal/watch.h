// Event-driven waiting on many futures, shared by Wait, Gather and AsCompleted. Internal: use
// sync/wait.h, sync/gather.h or sync/as_completed.h.

#ifndef CONCURRY_SYNC_INTERNAL_WATCH_H_
#define CONCURRY_SYNC_INTERNAL_WATCH_H_

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/future.h"

namespace concurry {
namespace sync_internal {

// Returns how an error message names the future at `index` of a sequence: "index 3".
std::string NameIndex(size_t index);

// Throws InvalidOptionError "<operation>: future at <name> is invalid ...".
[[noreturn]] void ThrowInvalidFuture(const char* operation, const std::string& name);

// Throws InvalidOptionError naming `operation` unless `timeout` >= 0 (infinite is allowed).
inline void CheckTimeout(const char* operation, absl::Duration timeout) {
  futures_internal::CheckTimeout(timeout, operation);
}

// Returns `*clock`, or Clock::Real() for null.
inline Clock& ClockOrReal(Clock* clock) { return clock != nullptr ? *clock : Clock::Real(); }

// Returns the deadline `timeout` after now on `clock` (InfiniteFuture() for an infinite timeout).
absl::Time DeadlineAfter(Clock& clock, absl::Duration timeout);

// What a Watch has seen so far, copied out by Watch::Await.
struct Snapshot {
  std::vector<size_t> completed;  // Indices of done futures, in completion order.
  size_t failures = 0;            // How many of them failed (error or cancellation).
};

// Watches a fixed set of futures: on construction it records the ones already done (in index
// order) and registers a done-callback on each pending one; each callback records its index. The
// callbacks share a reference-counted state with the Watch, so one that runs while the Watch is
// destroyed is harmless. The destructor removes the callbacks that have not run, so nothing
// outlives the Watch on a future that stays pending.
//
// Not thread-safe; confine to one thread (the callbacks may run on any thread).
class Watch {
 public:
  // `futures` must all be valid and must outlive the Watch. `operation` names the caller in
  // errors.
  Watch(std::span<const AnyFuture> futures, const char* operation);
  ~Watch();

  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // Blocks until at least `count` futures are done, or one failed when `or_failure` is set, or
  // `clock` reaches `deadline`. Returns whether the condition holds. Appends to
  // `snapshot->completed` the completions it does not hold yet and updates its failure count
  // (pass the same snapshot to every call). Throws DeadlockError instead of blocking when only
  // futures that the calling thread's own worker must produce could meet the condition.
  bool Await(size_t count, bool or_failure, Clock& clock, absl::Time deadline, Snapshot* snapshot);

 private:
  struct Shared;

  // Throws DeadlockError when `count` completions (or, with `or_failure`, a failure) can only come
  // from futures that the worker whose call the calling thread runs must produce. `completed` is
  // how many are done.
  void CheckReachable(size_t count, bool or_failure, size_t completed);

  // Removes every callback that has not run.
  void RemoveCallbacks() noexcept;

  const std::span<const AnyFuture> futures_;
  const char* const operation_;
  const std::shared_ptr<Shared> shared_;
  // The futures that were pending results of calls to the worker `own_context_` (the serial
  // context of the last Await that ran inside one), found once per context.
  const void* own_context_ = nullptr;
  std::vector<size_t> own_;
  // Per future: its callback's handle, or null when it was done before registration.
  std::vector<AnyFuture::CallbackHandle> handles_;
};

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_WATCH_H_

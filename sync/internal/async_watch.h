// Event-driven waiting on many futures from inside a coroutine, shared by WaitAsync, GatherAsync
// and AsCompletedAsync. Internal: use sync/wait_async.h, sync/gather_async.h or
// sync/as_completed_async.h.
//
//   sync_internal::AsyncWatch watch(futures);  // registers one callback per pending future
//   sync_internal::Snapshot seen;
//   bool met = co_await watch.Await(/*count=*/2, /*or_failure=*/false, clock, deadline, &seen);

#ifndef CONCURRY_SYNC_INTERNAL_ASYNC_WATCH_H_
#define CONCURRY_SYNC_INTERNAL_ASYNC_WATCH_H_

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/future.h"
#include "futures/internal/coro_scheduler.h"
#include "sync/gather.h"
#include "sync/internal/watch.h"
#include "sync/wait.h"

namespace concurry {
namespace sync_internal {

// Returns the clock of the coroutine scheduler whose step the calling thread runs, or
// Clock::Real() outside one: where async waits time out when their options name no clock.
Clock& SchedulerClockOrReal();

// Watches a fixed set of futures for a coroutine: on construction it records the ones already
// done (in index order) and registers a done-callback on each pending one, which records its
// index. Await() suspends the coroutine until enough completions were recorded, the deadline
// passes on the given clock (a wake-up scheduled on the coroutine's scheduler), or the coroutine
// is cancelled; whichever comes first wins the coroutine's wake generation (CoroControl), so the
// coroutine resumes once, through its scheduler, never on the completing thread. The callbacks
// share a reference-counted state; the destructor removes those that have not run.
//
// Not thread-safe; confine to one coroutine (the callbacks may run on any thread).
class AsyncWatch {
 public:
  class Awaiter;

  // `futures` must all be valid and must outlive the AsyncWatch.
  explicit AsyncWatch(std::span<const AnyFuture> futures);
  ~AsyncWatch();

  AsyncWatch(const AsyncWatch&) = delete;
  AsyncWatch& operator=(const AsyncWatch&) = delete;

  // Returns an awaitable that ends when at least `count` futures are done, or one failed when
  // `or_failure` is set, or `clock` reaches `deadline`; `co_await` gives whether the condition
  // holds. Appends to `snapshot->completed` the completions it does not hold yet and updates its
  // failure count (pass the same snapshot to every call). A coroutine cancelled while it waits
  // gets CancelledError, a stopped one StoppedError (unless the condition holds by then). Await at
  // once, one at a time.
  Awaiter Await(size_t count, bool or_failure, Clock& clock, absl::Time deadline,
                Snapshot* snapshot);

 private:
  struct Shared;

  void RemoveCallbacks() noexcept;

  const std::span<const AnyFuture> futures_;
  const std::shared_ptr<Shared> shared_;
  // Per future: its callback's handle, or null when it was done before registration.
  std::vector<AnyFuture::CallbackHandle> handles_;
};

// What AsyncWatch::Await returns; `co_await` it at once. Not thread-safe.
class [[nodiscard]] AsyncWatch::Awaiter {
 public:
  // Movable before it is awaited (the coroutine machinery may move it into the frame).
  Awaiter(Awaiter&& other) noexcept
      : shared_(other.shared_),
        count_(other.count_),
        or_failure_(other.or_failure_),
        clock_(other.clock_),
        deadline_(other.deadline_),
        snapshot_(other.snapshot_),
        control_(std::exchange(other.control_, nullptr)),
        own_(std::move(other.own_)),
        timer_owner_(std::exchange(other.timer_owner_, nullptr)),
        timer_(other.timer_) {}
  Awaiter& operator=(Awaiter&&) = delete;
  ~Awaiter();

  // True (no suspension) when the condition holds or the deadline has passed.
  bool await_ready();
  template <typename P>
  bool await_suspend(std::coroutine_handle<P> handle) {
    futures_internal::CoroControl* control = futures_internal::ControlFor(handle, own_);
    if (control == nullptr) {
      throw InvalidOptionError(
          "WaitAsync/GatherAsync/AsCompletedAsync: co_await them in a coroutine run by Spawn, "
          "SyncWait, Async or a coroutine worker");
    }
    return Suspend(*control, handle);
  }
  // Copies what was recorded into the snapshot; returns whether the condition holds. Throws
  // CancelledError when the coroutine was cancelled and the condition does not hold (StoppedError
  // when it was stopped: its executor dropped a step).
  bool await_resume();

 private:
  friend class AsyncWatch;
  Awaiter(std::shared_ptr<Shared> shared, size_t count, bool or_failure, Clock& clock,
          absl::Time deadline, Snapshot* snapshot)
      : shared_(std::move(shared)),
        count_(count),
        or_failure_(or_failure),
        clock_(clock),
        deadline_(deadline),
        snapshot_(snapshot) {}

  bool Suspend(futures_internal::CoroControl& control, std::coroutine_handle<> handle);
  // Drops the deadline's wake-up if one is scheduled.
  void CancelTimer() noexcept;

  const std::shared_ptr<Shared> shared_;
  const size_t count_;
  const bool or_failure_;
  Clock& clock_;
  const absl::Time deadline_;
  Snapshot* const snapshot_;
  futures_internal::CoroControl* control_ = nullptr;        // Set when it suspended.
  std::shared_ptr<futures_internal::CoroControl> own_;      // Stand-in of a non-Coro coroutine.
  futures_internal::CoroScheduler* timer_owner_ = nullptr;  // Set while a wake-up is scheduled.
  futures_internal::WakeToken timer_;
};

// Runs Wait's algorithm in a coroutine: checks nothing (the caller did), returns the WaitResult,
// cancelling the pending futures on a timeout when asked. `futures` stay in the frame.
Coro<WaitResult> WaitAsyncUnchecked(std::vector<AnyFuture> futures, WaitOptions options);

// Waits in a coroutine until every future is done; throws TimeoutError "<operation>: timed out
// after <timeout>; <d> of <n> futures completed" as Gather does. Checks nothing (the caller did).
// Without a progress report, ready futures cost no suspension.
Coro<void> AwaitAllAsync(const char* operation, std::vector<AnyFuture> futures,
                         GatherOptions options);

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_ASYNC_WATCH_H_

#include "sync/internal/async_watch.h"

#include <algorithm>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "sync/internal/wait_steps.h"
#include "sync/progress.h"

namespace concurry {
namespace sync_internal {
namespace {

using futures_internal::CoroControl;
using futures_internal::CoroScheduler;

}  // namespace

Clock& SchedulerClockOrReal() {
  CoroScheduler* scheduler = futures_internal::CurrentCoroScheduler();
  return scheduler != nullptr ? scheduler->clock() : Clock::Real();
}

// The completions seen so far and the await (at most one) that waits for more. Callbacks and
// the awaiting coroutine share it.
struct AsyncWatch::Shared {
  bool MetLocked(size_t needed, bool failure_ends) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return completed.size() >= needed || (failure_ends && failures > 0);
  }

  // Records a completion; wakes the waiting coroutine when that meets its condition. The wake
  // only posts the coroutine's next step (CoroControl::Wake), after `mu` is released.
  void Record(size_t index, bool failed) ABSL_LOCKS_EXCLUDED(mu) {
    std::shared_ptr<CoroControl> wake;
    uint64_t wake_generation = 0;
    std::coroutine_handle<> wake_handle;
    {
      absl::MutexLock lock(&mu);
      completed.push_back(index);
      if (failed) ++failures;
      if (waiter != nullptr && MetLocked(count, or_failure)) {
        wake = std::move(waiter);
        wake_generation = generation;
        wake_handle = handle;
      }
    }
    if (wake != nullptr) wake->Wake(wake_generation, wake_handle);
  }

  absl::Mutex mu;
  std::vector<size_t> completed ABSL_GUARDED_BY(mu);  // Indices, in completion order.
  size_t failures ABSL_GUARDED_BY(mu) = 0;
  // The suspended await: its coroutine's control (null when none waits), the generation it
  // armed, its handle and its condition.
  std::shared_ptr<CoroControl> waiter ABSL_GUARDED_BY(mu);
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  std::coroutine_handle<> handle ABSL_GUARDED_BY(mu);
  size_t count ABSL_GUARDED_BY(mu) = 0;
  bool or_failure ABSL_GUARDED_BY(mu) = false;
};

AsyncWatch::AsyncWatch(std::span<const AnyFuture> futures)
    : futures_(futures), shared_(std::make_shared<Shared>()), handles_(futures.size(), nullptr) {
  try {
    for (size_t i = 0; i < futures_.size(); ++i) {
      const AnyFuture& future = futures_[i];
      // The callback holds its own future to tell an error from a value; the cycle ends when the
      // callback runs or is removed.
      handles_[i] = future.AddCallbackIfPending(
          [shared = shared_, future, i] { shared->Record(i, future.Error() != nullptr); });
      if (handles_[i] == nullptr) shared_->Record(i, future.Error() != nullptr);
    }
  } catch (...) {
    RemoveCallbacks();
    throw;
  }
}

AsyncWatch::~AsyncWatch() { RemoveCallbacks(); }

void AsyncWatch::RemoveCallbacks() noexcept {
  {
    // Callbacks that recorded their index have run (or are returning): skip them.
    absl::MutexLock lock(&shared_->mu);
    for (size_t index : shared_->completed) handles_[index] = nullptr;
    shared_->waiter.reset();
  }
  for (size_t i = 0; i < handles_.size(); ++i) {
    if (handles_[i] != nullptr) futures_[i].RemoveCallback(std::exchange(handles_[i], nullptr));
  }
}

AsyncWatch::Awaiter AsyncWatch::Await(size_t count, bool or_failure, Clock& clock,
                                      absl::Time deadline, Snapshot* snapshot) {
  return Awaiter(shared_, count, or_failure, clock, deadline, snapshot);
}

AsyncWatch::Awaiter::~Awaiter() {
  if (control_ == nullptr) return;
  // Destroyed while suspended (the frame was destroyed): leave nothing that could wake it.
  CancelTimer();
  absl::MutexLock lock(&shared_->mu);
  shared_->waiter.reset();
}

bool AsyncWatch::Awaiter::await_ready() {
  {
    absl::MutexLock lock(&shared_->mu);
    if (shared_->MetLocked(count_, or_failure_)) return true;
  }
  return deadline_ <= clock_.Now();
}

bool AsyncWatch::Awaiter::Suspend(CoroControl& control, std::coroutine_handle<> handle) {
  control_ = &control;
  const uint64_t generation = control.Arm(handle);
  bool met = false;
  {
    absl::MutexLock lock(&shared_->mu);
    met = shared_->MetLocked(count_, or_failure_);
    if (!met) {
      shared_->waiter = control.shared_from_this();
      shared_->generation = generation;
      shared_->handle = handle;
      shared_->count = count_;
      shared_->or_failure = or_failure_;
    }
  }
  if (met) {
    // Completed after await_ready: go on, unless a cancellation won the generation meanwhile.
    if (control.Disarm(generation)) return false;
    return control.Suspend(generation);
  }
  if (deadline_ != absl::InfiniteFuture()) {
    CoroScheduler& scheduler = control.scheduler();
    try {
      timer_ = scheduler.WakeAt(clock_, deadline_,
                                [ref = control.shared_from_this(), generation, handle] {
                                  ref->Wake(generation, handle);
                                });
      timer_owner_ = &scheduler;
    } catch (...) {
      {
        absl::MutexLock lock(&shared_->mu);
        shared_->waiter.reset();
      }
      if (control.Disarm(generation)) {
        control_ = nullptr;
        throw;
      }
      // A completion or a cancellation won meanwhile and resumes the coroutine.
    }
  }
  return control.Suspend(generation);
}

bool AsyncWatch::Awaiter::await_resume() {
  bool met = false;
  {
    absl::MutexLock lock(&shared_->mu);
    shared_->waiter.reset();
    snapshot_->completed.insert(snapshot_->completed.end(),
                                shared_->completed.begin() + snapshot_->completed.size(),
                                shared_->completed.end());
    snapshot_->failures = shared_->failures;
    met = shared_->MetLocked(count_, or_failure_);
  }
  CancelTimer();
  futures_internal::CoroControl* control = std::exchange(control_, nullptr);
  // Cancelled (CancelledError) or stopped because a step was dropped (StoppedError): the wait ends
  // with the error every other await of the coroutine throws from now on.
  if (!met && control != nullptr && control->cancellable() && control->cancelled()) {
    control->ThrowEnded();
  }
  return met;
}

void AsyncWatch::Awaiter::CancelTimer() noexcept {
  if (timer_owner_ == nullptr) return;
  std::exchange(timer_owner_, nullptr)->CancelWake(timer_);
}

Coro<WaitResult> WaitAsyncUnchecked(std::vector<AnyFuture> futures, WaitOptions options) {
  // The timeout counts from the first step: a Coro starts when it is awaited.
  Clock& clock = options.clock != nullptr ? *options.clock : SchedulerClockOrReal();
  const absl::Time deadline = DeadlineAfter(clock, options.timeout);
  ProgressReporter progress(options.progress, static_cast<int64_t>(futures.size()), "Waiting",
                            clock);
  const WaitCondition condition(options.return_when, futures.size());

  // Fast path: no callbacks and no suspension when the condition already holds.
  Snapshot snapshot = ScanDone(futures);
  bool met = condition.Holds(snapshot);
  if (met) {
    progress.Advance(static_cast<int64_t>(snapshot.completed.size()));
  } else {
    AsyncWatch watch(futures);
    snapshot = {};  // The watch records every completion, including the ones scanned above.
    for (bool reached = true; reached && !met;) {
      const size_t before = snapshot.completed.size();
      // A progress report needs a wake-up at each completion; otherwise only the last one wakes.
      const size_t count = progress.active() ? before + 1 : condition.needed;
      reached = co_await watch.Await(count, condition.or_failure, clock, deadline, &snapshot);
      progress.Advance(static_cast<int64_t>(snapshot.completed.size() - before));
      met = condition.Holds(snapshot);
    }
  }
  co_return EndWait(futures, snapshot, met, progress, options.cancel_pending_on_timeout);
}

Coro<void> AwaitAllAsync(const char* operation, std::vector<AnyFuture> futures,
                         GatherOptions options) {
  const bool all_done =
      std::all_of(futures.begin(), futures.end(), [](const AnyFuture& f) { return f.Done(); });
  if (all_done && !options.progress.enabled && !options.progress.callback) co_return;
  const size_t total = futures.size();
  WaitOptions wait_options{.timeout = options.timeout,
                           .return_when = ReturnWhen::kAllCompleted,
                           .clock = options.clock,
                           .progress = std::move(options.progress),
                           .cancel_pending_on_timeout = options.cancel_pending_on_timeout};
  if (wait_options.progress.description.empty()) wait_options.progress.description = "Gathering";
  Coro<WaitResult> wait = WaitAsyncUnchecked(std::move(futures), std::move(wait_options));
  const WaitResult result = co_await std::move(wait);
  if (result.timed_out) {
    throw TimeoutError(absl::StrCat(operation, ": timed out after ",
                                    absl::FormatDuration(options.timeout), "; ", result.done.size(),
                                    " of ", total, " futures completed"));
  }
}

}  // namespace sync_internal
}  // namespace concurry

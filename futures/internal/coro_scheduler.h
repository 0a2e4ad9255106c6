// Where the steps of a concurry::Coro run, and the per-coroutine control block that wakes and
// cancels it. Internal: futures/coro.h is the user API; event loops (workers/coroutine) implement
// CoroScheduler.
//
//   class MyLoop : public Executor, public futures_internal::CoroScheduler { ... };
//   futures_internal::ScopedCoroScheduler scope(&loop);  // on the loop's thread
//   // a Coro started here resumes through loop.Resume(...)

#ifndef CONCURRY_FUTURES_INTERNAL_CORO_SCHEDULER_H_
#define CONCURRY_FUTURES_INTERNAL_CORO_SCHEDULER_H_

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"

namespace concurry {
namespace futures_internal {

class CoroControl;

// Identifies a wake-up scheduled by CoroScheduler::WakeAt. Its meaning belongs to the scheduler.
struct WakeToken {
  void* owner = nullptr;  // null: nothing scheduled.
  uint64_t sequence = 0;
  absl::Time deadline = absl::InfinitePast();
};

// Runs the steps of coroutines: every resumption after a suspension is posted to it, never run on
// the thread that completed what the coroutine awaited. Implementations are thread-safe.
class CoroScheduler {
 public:
  virtual ~CoroScheduler() = default;

  // Posts `handle.resume()` (run with this scheduler current, ScopedCoroScheduler). Never runs it
  // inline. Post futures_internal::MakeResumeStep(this, control, handle) (futures/coro.h): it
  // handles a step dropped unrun. `control` is the coroutine's; the posted step keeps a reference
  // to it.
  virtual void Resume(CoroControl& control, std::coroutine_handle<> handle) = 0;
  // Runs `wake` once when `clock` reaches `deadline` (soon if it already has), on any thread; it
  // must only post work. Returns a token for CancelWake.
  virtual WakeToken WakeAt(Clock& clock, absl::Time deadline, absl::AnyInvocable<void()> wake) = 0;
  // Drops a wake-up that has not run yet (no-op when it ran or is running).
  virtual void CancelWake(const WakeToken& token) = 0;
  // The clock of SleepFor / SleepUntil for coroutines running here.
  virtual Clock& clock() = 0;
  // The executor the steps run on (CurrentCoroutineExecutor()).
  virtual Executor& executor() = 0;
  // Whether the calling thread runs a step of this scheduler now.
  virtual bool InThisThread() const = 0;
  // A top-level coroutine begins / has ended here (bounded loops count them).
  virtual void RootStarted(CoroControl& /*control*/) {}
  virtual void RootFinished(CoroControl& /*control*/) {}
  // Returns an owner of this scheduler for the coroutines started on it to share, or null when
  // its maker keeps it alive longer than its coroutines (they then borrow it).
  virtual std::shared_ptr<CoroScheduler> Share() { return nullptr; }
};

// Returns the scheduler whose step the calling thread runs, or null.
CoroScheduler* CurrentCoroScheduler() noexcept;

// Makes `scheduler` the calling thread's for the scope (loop threads and posted steps use it),
// with `control` (may be null) the control of the coroutine whose step runs. Scopes nest. Not
// copyable.
class ScopedCoroScheduler {
 public:
  explicit ScopedCoroScheduler(CoroScheduler* scheduler, CoroControl* control = nullptr) noexcept;
  // Makes `owned` current with no running coroutine: roots started in the scope share it.
  explicit ScopedCoroScheduler(std::shared_ptr<CoroScheduler> owned) noexcept;
  ~ScopedCoroScheduler();
  ScopedCoroScheduler(const ScopedCoroScheduler&) = delete;
  ScopedCoroScheduler& operator=(const ScopedCoroScheduler&) = delete;

 private:
  CoroScheduler* outer_;
  CoroControl* outer_control_;
  const std::shared_ptr<CoroScheduler>* outer_owned_;
  std::shared_ptr<CoroScheduler> owned_;
};

// Returns a control for a coroutine that is not a Coro (a Future<T>-coroutine) awaiting inside a
// step of the current scheduler: resumption goes through that scheduler, cancellation does not
// apply. It keeps the running coroutine's control, and so a scheduler made for that coroutine,
// alive. Null outside a scheduler's step.
std::shared_ptr<CoroControl> MakeStandInControl();

// Returns the current scheduler, sharing ownership with the running coroutine's control (so a
// scheduler made for that coroutine lives as long as the result); a non-owning pointer when no
// coroutine's step runs (a loop's own thread); null outside a scheduler.
std::shared_ptr<CoroScheduler> CurrentCoroSchedulerShared();

// One per top-level coroutine (its children share it): the cancel flag and the wake protocol that
// lets exactly one of (the awaited event, a cancellation) resume the coroutine suspended at a
// leaf await, through the scheduler.
//
// Protocol for one leaf await: the coroutine's own step calls Arm(h), which returns an odd
// generation g; the waker (a future's callback, a timer, Cancel) calls Wake(g, h), which wins only
// by moving the generation g -> g + 1. The step then calls Suspend() (or Disarm(g) when there is
// nothing to wait for). Of Suspend() and the winning Wake, the second to come resumes: Wake posts
// the step to the scheduler, Suspend() tells await_suspend to go on at once. So a wake that comes
// while await_suspend still runs never resumes the frame on another thread, and the waking thread
// never touches the frame.
//
// Memory ordering: Arm publishes the handle and the reset hand-off flag with a store of the
// generation; wakers acquire it in their compare-exchange (acq_rel). The hand-off exchange is
// acq_rel, so the awaiter's writes before Suspend() are seen by the step that resumes it. Cancel
// stores the flag then loads the generation, Arm stores the generation and Suspend then loads the
// flag, all seq_cst: at least one side sees the other, so a cancellation racing a new await is
// never lost (Cancel wakes it, or Suspend declines to suspend).
//
// Thread-safe (Arm, Disarm and Suspend only from the coroutine's running step).
class CoroControl : public std::enable_shared_from_this<CoroControl> {
 public:
  // `owned` (may be null) is kept alive as long as this control: a scheduler made for one root.
  CoroControl(CoroScheduler* scheduler, std::shared_ptr<CoroScheduler> owned = nullptr,
              bool cancellable = true)
      : scheduler_(scheduler), owned_(std::move(owned)), cancellable_(cancellable) {}
  CoroControl(const CoroControl&) = delete;
  CoroControl& operator=(const CoroControl&) = delete;

  CoroScheduler& scheduler() const { return *scheduler_; }
  // Whether Cancel() can end this coroutine (false for the stand-in control of a Future-coroutine
  // awaiting on a scheduler).
  bool cancellable() const { return cancellable_; }
  // Whether the coroutine was cancelled or stopped: its awaits throw.
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // Whether a step of the coroutine was rejected or dropped by its executor (see Stop()).
  bool stopped() const { return stopped_.load(std::memory_order_acquire); }
  // Throws StoppedError for a stopped coroutine, else CancelledError.
  [[noreturn]] void ThrowEnded() const;

  // Records `handle` as suspended and returns the generation a wake must present.
  uint64_t Arm(std::coroutine_handle<> handle) noexcept;
  // For an await that found nothing to wait for after Arm: true when it may go on at once; false
  // when a cancellation won meanwhile (then call Suspend()).
  bool Disarm(uint64_t generation) noexcept;
  // Ends await_suspend for the await armed with `generation`: returns true to stay suspended (the
  // winning wake will post the resumption) or false when that wake already came, or when a
  // cancellation that could not see the armed await came meanwhile (go on now, on this thread: the
  // scheduler's; the awaitable's await_resume then finds cancelled()).
  bool Suspend(uint64_t generation) noexcept;
  // Resumes `handle` through the scheduler if the generation is still `generation`; else nothing.
  void Wake(uint64_t generation, std::coroutine_handle<> handle) noexcept;
  // Called when a resumption step of this coroutine was destroyed without running (its executor
  // rejected or dropped it), before that step is run on the dropping thread instead: from now on
  // every await of the coroutine, the one it resumes included, throws StoppedError, so the frame
  // unwinds (RAII, catch blocks) and its future fails. Sticky. No-op for a stand-in control (its
  // Future-coroutine just goes on on the dropping thread).
  void Stop() noexcept;
  // Sets the cancel flag and wakes the coroutine if it is suspended at a leaf await (it then
  // throws CancelledError there); a running one throws at its next co_await. Any thread.
  void Cancel() noexcept;

 private:
  CoroScheduler* const scheduler_;
  const std::shared_ptr<CoroScheduler> owned_;
  const bool cancellable_;
  std::atomic<bool> cancelled_{false};  // Set by Cancel() and by Stop().
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> armed_{0};  // Odd while a leaf await waits for its wake.
  std::atomic<void*> suspended_{nullptr};
  std::atomic<bool> handoff_{false};
};

// Base of every Coro promise: lets awaiters (FutureAwaiter, SleepFor) find the control.
struct CoroFrameBase {
  CoroControl* control = nullptr;  // Owned by the root (shared_ptr); borrowed by children.
};

}  // namespace futures_internal
}  // namespace concurry

#endif  // CONCURRY_FUTURES_INTERNAL_CORO_SCHEDULER_H_

// Template bodies and internals of futures/coro.h. Internal: include coro.h instead.

#ifndef CONCURRY_FUTURES_INTERNAL_CORO_IMPL_H_
#define CONCURRY_FUTURES_INTERNAL_CORO_IMPL_H_

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/internal/coro_scheduler.h"
#include "futures/timer.h"

namespace concurry {
namespace futures_internal {

// Runs each task on the submitting thread, after the task of its own running there, if any (no
// recursion). The executor of a coroutine that Then starts with no scheduler at hand.
Executor& InlineStepExecutor();

// Returns the scheduler for coroutines whose steps run on `executor`: `executor` itself when it is
// a CoroScheduler (SyncWait's loop, a coroutine worker's loop; then its own clock applies and the
// coroutine is one of its roots, shared with it when it is shareable), else a new
// ExecutorScheduler over `executor` with `clock`.
std::shared_ptr<CoroScheduler> SchedulerFor(Executor& executor, Clock& clock = Clock::Real());

// Runs one step of a coroutine on the calling thread: `handle.resume()` with `scheduler` and
// `control` current. When the thread runs no step yet, the steps that InlineStepExecutor() gets
// meanwhile (an inline Yield, a resumption dropped by an executor) run after this one, not nested.
void RunCoroStep(CoroScheduler* scheduler, CoroControl* control,
                 std::coroutine_handle<> handle) noexcept;

// Returns the task a CoroScheduler posts in Resume(): it runs the step (RunCoroStep) holding
// `control`; destroyed without having run (rejected or dropped), it stops the coroutine
// (CoroControl::Stop) and runs the step on the destroying thread instead, after the step running
// there if any. Destroy dropped tasks outside the scheduler's locks: the step may run then.
Executor::Task MakeResumeStep(CoroScheduler* scheduler, CoroControl& control,
                              std::coroutine_handle<> handle);

// Timers for WakeAt: Timer::Default() for Clock::Real(), else the Timer of that clock, one per
// clock in the process, shared by every ClockTimers using it (each keeps the ones it used alive;
// the last to let go destroys it). Thread-safe.
class ClockTimers {
 public:
  ClockTimers() = default;
  ClockTimers(const ClockTimers&) = delete;
  ClockTimers& operator=(const ClockTimers&) = delete;

  WakeToken Schedule(Clock& clock, absl::Time deadline, absl::AnyInvocable<void()> wake)
      ABSL_LOCKS_EXCLUDED(mu_);
  static void Cancel(const WakeToken& token);

 private:
  absl::Mutex mu_;
  std::vector<std::pair<Clock*, std::shared_ptr<Timer>>> timers_ ABSL_GUARDED_BY(mu_);
};

// A scheduler over any Executor: each step is a task submitted to it. A step the executor rejects
// or destroys without running stops the coroutine (CoroControl::Stop) and runs on the rejecting or
// dropping thread, after the step running there if any, so the frame unwinds with StoppedError.
// Over InlineExecutor() the steps go through InlineStepExecutor(): they run on the waking thread,
// but one after another, never nested (a Yield loop does not grow the stack). Thread-safe.
class ExecutorScheduler final : public CoroScheduler {
 public:
  explicit ExecutorScheduler(Executor& executor, Clock& clock = Clock::Real())
      : executor_(executor),
        submit_to_(&executor == &InlineExecutor() ? InlineStepExecutor() : executor),
        clock_(clock) {}

  void Resume(CoroControl& control, std::coroutine_handle<> handle) override;
  WakeToken WakeAt(Clock& clock, absl::Time deadline, absl::AnyInvocable<void()> wake) override {
    return timers_.Schedule(clock, deadline, std::move(wake));
  }
  void CancelWake(const WakeToken& token) override { ClockTimers::Cancel(token); }
  Clock& clock() override { return clock_; }
  Executor& executor() override { return executor_; }
  bool InThisThread() const override { return CurrentCoroScheduler() == this; }

 private:
  Executor& executor_;
  Executor& submit_to_;  // Where steps are submitted (see the class comment).
  Clock& clock_;
  ClockTimers timers_;
};

// SyncWait's loop: steps are queued and run on the thread that calls Run(). Shared (SyncWait's
// root control owns it, and so does anything that outlives SyncWait while holding that control or
// the loop: a root started on it through CurrentCoroutineExecutor(), a Future-coroutine started in
// a step or in a plain task of the loop). Must be made by std::make_shared. When the main coroutine
// ends, Run() cancels the other roots started here and runs steps until they have ended (as
// asyncio.run does); then the loop is closed: a later resumption runs on the waking thread, and
// Submit throws StoppedError. Thread-safe (Run and Finish from the owning thread).
class LocalLoop final : public Executor,
                        public CoroScheduler,
                        public std::enable_shared_from_this<LocalLoop> {
 public:
  explicit LocalLoop(Clock& clock) : clock_(clock), owner_(std::this_thread::get_id()) {}

  void Submit(Task task) override ABSL_LOCKS_EXCLUDED(mu_);
  int max_concurrency() const override { return 1; }

  void Resume(CoroControl& control, std::coroutine_handle<> handle) override
      ABSL_LOCKS_EXCLUDED(mu_);
  WakeToken WakeAt(Clock& clock, absl::Time deadline, absl::AnyInvocable<void()> wake) override {
    return timers_.Schedule(clock, deadline, std::move(wake));
  }
  void CancelWake(const WakeToken& token) override { ClockTimers::Cancel(token); }
  Clock& clock() override { return clock_; }
  Executor& executor() override { return *this; }
  bool InThisThread() const override { return std::this_thread::get_id() == owner_; }
  void RootStarted(CoroControl& control) override ABSL_LOCKS_EXCLUDED(mu_);
  void RootFinished(CoroControl& control) override ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<CoroScheduler> Share() override { return shared_from_this(); }

  // Runs queued steps until Finish() was called and every other root started here has ended
  // (they are cancelled then); waits (a BlockingRegion) while none is queued. Closes the loop.
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  // Marks the main coroutine as ended.
  void Finish() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Posts `task` unless the loop is closed; returns whether it did.
  bool Post(Task& task) ABSL_LOCKS_EXCLUDED(mu_);
  void CancelRoots() ABSL_LOCKS_EXCLUDED(mu_);

  Clock& clock_;
  const std::thread::id owner_;
  absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<CoroControl*> roots_ ABSL_GUARDED_BY(mu_);  // Started here, not ended yet.
  bool finished_ ABSL_GUARDED_BY(mu_) = false;            // The main coroutine ended.
  bool closed_ ABSL_GUARDED_BY(mu_) = false;              // Run() returned.
  ClockTimers timers_;
};

// The owner of a top-level coroutine: completes its promise when the frame reaches its final
// suspension point.
class RootBase {
 public:
  // Called from the final suspension point, on the scheduler's thread. Destroys the frame and
  // this object.
  virtual void Finish() noexcept = 0;

 protected:
  ~RootBase() = default;
};

// What await_transform gives for a rejected operand, after its static_assert: an awaitable of the
// expected type, so that the static_assert is the only error.
template <typename T>
struct NeverAwaited {
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  T await_resume() const { std::terminate(); }
};

// The promise part shared by every Coro<T>: lazy start, the hand-off to the parent at the end,
// the error, and the cancellation check of every co_await. Not thread-safe; one step at a time.
class CoroPromiseBase : public CoroFrameBase {
 public:
  std::suspend_always initial_suspend() noexcept { return {}; }

  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    void await_suspend(std::coroutine_handle<P> handle) noexcept {
      handle.promise().OnFinal();
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { error_ = std::current_exception(); }

  // Every co_await in a Coro passes here: a cancelled coroutine throws at its next one.
  template <typename A>
  decltype(auto) await_transform(A&& awaitable) {
    if constexpr (kIsCoro<std::remove_cvref_t<A>> && std::is_lvalue_reference_v<A>) {
      // `auto c = F(); co_await c;`: say so instead of "use of deleted function" (GCC would copy
      // the Coro). Returns an awaitable only so that this error is the only one.
      static_assert(!std::is_lvalue_reference_v<A>,
                    "co_await std::move(coro): a Coro is awaited once");
      return NeverAwaited<typename std::remove_cvref_t<A>::value_type>{};
    } else {
      if (control != nullptr && control->cancelled()) control->ThrowEnded();
      return std::forward<A>(awaitable);
    }
  }
  // A future handed over to the await (a temporary such as `co_await worker.Call(...)`, or
  // std::move): in a cancelled coroutine it is cancelled too when this was its only consumer
  // handle, so the work it stands for does not go on unawaited; then the await throws.
  template <typename U>
  Future<U>&& await_transform(Future<U>&& future) {
    if (control != nullptr && control->cancelled()) {
      if (future.valid()) {
        const FutureRef<U> held = ReleaseState(std::move(future));
        if (held->sole_consumer()) held->Cancel();
      }
      control->ThrowEnded();
    }
    return std::move(future);
  }

  // At the final suspension point: a root completes its promise; a child hands control back to
  // its parent (resumes it only when the parent's await_suspend has returned already).
  void OnFinal() noexcept {
    if (root_ != nullptr) {
      root_->Finish();
      return;
    }
    if (handoff_.exchange(true, std::memory_order_acq_rel)) continuation_.resume();
  }

  std::coroutine_handle<> continuation_;
  // Set by the second of (the parent's await_suspend, the child's end); see Coro::await_suspend.
  std::atomic<bool> handoff_{false};
  std::exception_ptr error_;
  RootBase* root_ = nullptr;
};

template <typename T>
class CoroPromise : public CoroPromiseBase {
 public:
  Coro<T> get_return_object() noexcept {
    return Coro<T>(std::coroutine_handle<CoroPromise>::from_promise(*this));
  }
  template <typename V = T>
  void return_value(V&& value) {
    value_.emplace(std::forward<V>(value));
  }
  std::optional<T> value_;
};

template <>
class CoroPromise<void> : public CoroPromiseBase {
 public:
  Coro<void> get_return_object() noexcept {
    return Coro<void>(std::coroutine_handle<CoroPromise>::from_promise(*this));
  }
  void return_void() noexcept {}
};

// Lets the runners take the frame out of a Coro.
struct CoroAccess {
  template <typename T>
  static std::coroutine_handle<CoroPromise<T>> Release(Coro<T>& coro) noexcept {
    return std::exchange(coro.handle_, {});
  }
};

// Owns a top-level Coro<U> and the promise it completes; deletes itself in Finish().
template <typename U>
class CoroRoot final : public RootBase {
 public:
  CoroRoot(Promise<U> promise, std::coroutine_handle<CoroPromise<U>> handle,
           std::shared_ptr<CoroControl> control, absl::AnyInvocable<void()> on_finished)
      : promise_(std::move(promise)),
        handle_(handle),
        control_(std::move(control)),
        on_finished_(std::move(on_finished)) {}

  void Finish() noexcept override {
    std::exception_ptr error = handle_.promise().error_;
    std::optional<Stored<U>> value;
    if (!error) {
      try {
        if constexpr (std::is_void_v<U>) {
          value.emplace();
        } else {
          value.emplace(std::move(*handle_.promise().value_));
        }
      } catch (...) {
        error = std::current_exception();
      }
    }
    handle_.destroy();  // The frame's destructors run before the future completes.
    Complete(std::move(error), std::move(value));
  }

 private:
  ~CoroRoot() = default;

  // Completes the promise (`error` or else `value`), then ends this root.
  void Complete(std::exception_ptr error, std::optional<Stored<U>> value) noexcept {
    try {
      if (error) {
        promise_.SetError(error);
      } else if constexpr (std::is_void_v<U>) {
        promise_.SetValue();
      } else {
        promise_.SetValue(std::move(*value));
      }
    } catch (...) {
      promise_.SetError(std::current_exception());
    }
    std::shared_ptr<CoroControl> control = std::move(control_);
    if (on_finished_) {
      try {
        on_finished_();
      } catch (...) {
        // on_finished is library code that does not throw; nothing to report to.
      }
    }
    control->scheduler().RootFinished(*control);
    delete this;
  }

  Promise<U> promise_;
  std::coroutine_handle<CoroPromise<U>> handle_;
  std::shared_ptr<CoroControl> control_;
  absl::AnyInvocable<void()> on_finished_;
};

// Starts `coro` as a top-level coroutine on `scheduler` (now, on this thread, when `start_inline`:
// the caller runs a step of it; else posted) and completes `promise` with its outcome. `owned`
// (may be null) is kept alive until the coroutine's last step.
template <typename U>
void StartCoroRoot(Promise<U>& promise, Coro<U> coro, absl::AnyInvocable<void()> on_finished,
                   CoroScheduler& scheduler, std::shared_ptr<CoroScheduler> owned,
                   bool start_inline) noexcept {
  if (!coro.valid()) {
    promise.SetError(std::make_exception_ptr(
        InvalidOptionError("a Coro to run is invalid (default-constructed or moved-from)")));
    if (on_finished) on_finished();
    return;
  }
  auto control = std::make_shared<CoroControl>(&scheduler, std::move(owned));
  try {
    promise.OnCancel([control] { control->Cancel(); });
  } catch (...) {
    // Only an invalid promise throws; then nobody can cancel.
  }
  std::coroutine_handle<CoroPromise<U>> handle = CoroAccess::Release(coro);
  handle.promise().control = control.get();
  auto* root = new CoroRoot<U>(std::move(promise), handle, control, std::move(on_finished));
  handle.promise().root_ = root;
  scheduler.RootStarted(*control);
  if (start_inline) {
    // May finish and release `scheduler` if owned: not used after this.
    RunCoroStep(&scheduler, control.get(), handle);
  } else {
    scheduler.Resume(*control, handle);
  }
}

template <typename U>
void CompleteWithCoro(Promise<U>& promise, Coro<U> coro,
                      absl::AnyInvocable<void()> on_finished) noexcept {
  if (CoroScheduler* scheduler = CurrentCoroScheduler()) {
    // Shares ownership of a scheduler made for the running coroutine: this one may outlive it.
    StartCoroRoot(promise, std::move(coro), std::move(on_finished), *scheduler,
                  CurrentCoroSchedulerShared(), scheduler->InThisThread());
    return;
  }
  // No scheduler at hand (Then on a plain thread, a timer's or a pool's): never block this thread.
  // The first step runs now and later steps on the threads that wake the coroutine, as a
  // Future-coroutine's do.
  auto inline_steps = std::make_shared<ExecutorScheduler>(InlineStepExecutor());
  CoroScheduler& where = *inline_steps;
  StartCoroRoot(promise, std::move(coro), std::move(on_finished), where, std::move(inline_steps),
                /*start_inline=*/false);
}

template <typename U, typename Fn, typename Tuple>
Future<U> AsyncCoro(Executor& executor, Fn fn, Tuple bound) {
  Promise<U> promise;
  Future<U> future = promise.GetFuture();
  std::shared_ptr<CoroScheduler> scheduler = SchedulerFor(executor);
  // The callable and its arguments stay alive with the frame (a coroutine lambda's captures and
  // reference parameters point into them).
  auto keep = std::make_shared<std::pair<Fn, Tuple>>(std::move(fn), std::move(bound));
  try {
    executor.Submit([p = std::move(promise), keep, scheduler]() mutable {
      if (p.IsCancelled()) return;
      Coro<U> coro;
      try {
        coro =
            std::apply([&](auto&... args) { return std::invoke(keep->first, std::move(args)...); },
                       keep->second);
      } catch (...) {
        p.SetError(std::current_exception());
        return;
      }
      CoroScheduler& where = *scheduler;
      StartCoroRoot(
          p, std::move(coro), [keep = std::move(keep)] {}, where, std::move(scheduler),
          /*start_inline=*/true);
    });
  } catch (...) {
    return MakeFailedFuture<U>(std::current_exception());
  }
  return future;
}

// The control of the coroutine awaiting in `handle`: a Coro's own, else a stand-in (kept in
// `own`) for a coroutine running a step of the current scheduler, else null.
template <typename P>
CoroControl* ControlFor(std::coroutine_handle<P> handle, std::shared_ptr<CoroControl>& own) {
  if constexpr (std::is_base_of_v<CoroFrameBase, P>) {
    if (handle.promise().control != nullptr) return handle.promise().control;
  }
  own = MakeStandInControl();
  return own.get();
}

}  // namespace futures_internal

template <typename T>
template <typename P>
bool Coro<T>::await_suspend(std::coroutine_handle<P> parent) {
  promise_type& child = handle_.promise();
  if constexpr (std::is_base_of_v<futures_internal::CoroFrameBase, P>) {
    child.control = parent.promise().control;
  }
  child.continuation_ = parent;
  handle_.resume();  // Runs the child until it first suspends or ends.
  // False: the child ended already, so the parent goes on in this frame (no stack growth).
  return !child.handoff_.exchange(true, std::memory_order_acq_rel);
}

template <typename T>
T Coro<T>::await_resume() {
  if (!handle_) futures_internal::ThrowInvalid("Coro", "co_await");
  promise_type& promise = handle_.promise();
  if (promise.error_) std::rethrow_exception(promise.error_);
  if constexpr (!std::is_void_v<T>) return std::move(*promise.value_);
}

// What SleepFor / SleepUntil return; await it at once. Not thread-safe.
class [[nodiscard]] SleepAwaitable {
 public:
  SleepAwaitable(SleepAwaitable&&) = default;
  bool await_ready() const noexcept { return relative_ && duration_ <= absl::ZeroDuration(); }
  template <typename P>
  bool await_suspend(std::coroutine_handle<P> handle) {
    futures_internal::CoroControl* control = futures_internal::ControlFor(handle, own_);
    if (control == nullptr) {
      throw InvalidOptionError(
          "SleepFor/SleepUntil: co_await them in a coroutine run by Spawn, SyncWait, Async or a "
          "coroutine worker");
    }
    futures_internal::CoroScheduler& scheduler = control->scheduler();
    Clock& clock = scheduler.clock();
    const absl::Time now = clock.Now();
    const absl::Time deadline = relative_ ? now + duration_ : deadline_;
    if (now >= deadline) return false;
    control_ = control;
    const uint64_t generation = control->Arm(handle);
    std::coroutine_handle<> erased = handle;
    try {
      token_ = scheduler.WakeAt(clock, deadline,
                                [ref = control->shared_from_this(), generation, erased] {
                                  ref->Wake(generation, erased);
                                });
    } catch (...) {
      if (control->Disarm(generation)) throw;
      // A cancellation won meanwhile and resumes the coroutine (await_resume throws).
    }
    return control->Suspend(generation);
  }
  void await_resume() {
    if (control_ != nullptr && control_->cancelled()) {
      control_->scheduler().CancelWake(token_);
      control_->ThrowEnded();
    }
  }

 private:
  friend struct SleepForFn;
  friend struct SleepUntilFn;
  SleepAwaitable(bool relative, absl::Duration duration, absl::Time deadline)
      : relative_(relative), duration_(duration), deadline_(deadline) {}

  bool relative_;
  absl::Duration duration_;
  absl::Time deadline_;
  futures_internal::CoroControl* control_ = nullptr;
  std::shared_ptr<futures_internal::CoroControl> own_;
  futures_internal::WakeToken token_;
};

// What Yield() returns; await it at once. Not thread-safe.
class [[nodiscard]] YieldAwaitable {
 public:
  bool await_ready() const noexcept { return false; }
  template <typename P>
  bool await_suspend(std::coroutine_handle<P> handle) {
    control_ = futures_internal::ControlFor(handle, own_);
    if (control_ == nullptr) return false;  // No scheduler: nothing to yield to.
    control_->scheduler().Resume(*control_, handle);
    return true;
  }
  void await_resume() {
    if (control_ != nullptr && control_->cancelled()) control_->ThrowEnded();
  }

 private:
  futures_internal::CoroControl* control_ = nullptr;
  std::shared_ptr<futures_internal::CoroControl> own_;
};

inline SleepAwaitable SleepForFn::operator()(absl::Duration duration) const {
  return SleepAwaitable(/*relative=*/true, duration, absl::InfinitePast());
}
inline SleepAwaitable SleepUntilFn::operator()(absl::Time deadline) const {
  return SleepAwaitable(/*relative=*/false, absl::ZeroDuration(), deadline);
}

template <typename T>
Future<T> Spawn(Executor& executor, Coro<T> coro, Clock& clock) {
  if (!coro.valid()) futures_internal::ThrowInvalid("Coro", "Spawn");
  Promise<T> promise;
  Future<T> future = promise.GetFuture();
  std::shared_ptr<futures_internal::CoroScheduler> scheduler =
      futures_internal::SchedulerFor(executor, clock);
  try {
    executor.Submit([p = std::move(promise), c = std::move(coro), scheduler]() mutable {
      if (p.IsCancelled()) return;
      futures_internal::CoroScheduler& where = *scheduler;
      futures_internal::StartCoroRoot(p, std::move(c), nullptr, where, std::move(scheduler),
                                      /*start_inline=*/true);
    });
  } catch (...) {
    return MakeFailedFuture<T>(std::current_exception());
  }
  return future;
}

template <typename T>
T SyncWait(Coro<T> coro, Clock& clock) {
  if (!coro.valid()) futures_internal::ThrowInvalid("Coro", "SyncWait");
  Promise<T> promise;
  Future<T> future = promise.GetFuture();
  auto loop = std::make_shared<futures_internal::LocalLoop>(clock);
  futures_internal::LocalLoop* raw = loop.get();
  futures_internal::StartCoroRoot(
      promise, std::move(coro), [raw] { raw->Finish(); }, *raw, loop, /*start_inline=*/false);
  loop->Run();
  return std::move(future).Result();
}

}  // namespace concurry

#endif  // CONCURRY_FUTURES_INTERNAL_CORO_IMPL_H_

#include "futures/coro.h"

#include <coroutine>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/internal/coro_scheduler.h"
#include "futures/timer.h"

namespace concurry {
namespace futures_internal {
namespace {

// Ends the coroutine of a resumption step destroyed without having run (its executor rejected
// or dropped it), so its future does not stay pending. Move-only.
class StepGuard {
 public:
  explicit StepGuard(std::shared_ptr<CoroControl> control) : control_(std::move(control)) {}
  StepGuard(StepGuard&& other) noexcept : control_(std::move(other.control_)) {}
  StepGuard& operator=(StepGuard&&) = delete;
  ~StepGuard() {
    if (control_ == nullptr) return;
    control_->Abandon(std::make_exception_ptr(StoppedError(
        "a step of the coroutine was rejected or dropped by its executor; the coroutine ended")));
  }
  // Marks the step as run; returns the control.
  std::shared_ptr<CoroControl> Ran() { return std::move(control_); }

 private:
  std::shared_ptr<CoroControl> control_;
};

// The step that resumes `handle` with `scheduler` current. Holds the control (and so a scheduler
// owned by it) until the step has run.
Executor::Task ResumeStep(CoroScheduler* scheduler, CoroControl& control,
                          std::coroutine_handle<> handle) {
  return [scheduler, guard = StepGuard(control.shared_from_this()), handle]() mutable {
    std::shared_ptr<CoroControl> ref = guard.Ran();
    ScopedCoroScheduler scope(scheduler, ref.get());
    handle.resume();
  };
}

// Runs each task on the submitting thread, but never inside another of its tasks: a task
// submitted while one runs on this thread is queued and runs after it (so a coroutine that yields
// in a loop does not grow the stack).
class InlineSteps final : public Executor {
 public:
  void Submit(Task task) override {
    if (queue_ != nullptr) {
      queue_->push_back(std::move(task));
      return;
    }
    std::deque<Task> queue;
    queue_ = &queue;
    RunExecutorTask(task, "Then");
    while (!queue.empty()) {
      Task next = std::move(queue.front());
      queue.pop_front();
      RunExecutorTask(next, "Then");
    }
    queue_ = nullptr;
  }

 private:
  static thread_local std::deque<Task>* queue_;
};

thread_local std::deque<Executor::Task>* InlineSteps::queue_ = nullptr;

}  // namespace

Executor& InlineStepExecutor() {
  static InlineSteps* const executor = new InlineSteps();
  return *executor;
}

std::shared_ptr<CoroScheduler> SchedulerFor(Executor& executor, Clock& clock) {
  if (auto* scheduler = dynamic_cast<CoroScheduler*>(&executor)) {
    if (std::shared_ptr<CoroScheduler> shared = scheduler->Share()) return shared;
    return std::shared_ptr<CoroScheduler>(std::shared_ptr<CoroScheduler>(), scheduler);
  }
  return std::make_shared<ExecutorScheduler>(executor, clock);
}

void RunWithCoroExecutor(Executor& executor, absl::FunctionRef<void()> body) {
  ScopedCoroScheduler scope(SchedulerFor(executor));
  body();
}

void ThrowCoroCancelled() { throw CancelledError("the coroutine was cancelled"); }

WakeToken ClockTimers::Schedule(Clock& clock, absl::Time deadline,
                                absl::AnyInvocable<void()> wake) {
  Timer* timer = nullptr;
  if (&clock == &Clock::Real()) {
    timer = &Timer::Default();
  } else {
    absl::MutexLock lock(&mu_);
    for (auto& [c, t] : timers_) {
      if (c == &clock) timer = t.get();
    }
    if (timer == nullptr) {
      timers_.emplace_back(&clock, std::make_unique<Timer>(clock));
      timer = timers_.back().second.get();
    }
  }
  const Timer::Id id = timer->Schedule(deadline, std::move(wake));
  return WakeToken{.owner = timer, .sequence = id.sequence, .deadline = id.deadline};
}

void ClockTimers::Cancel(const WakeToken& token) {
  if (token.owner == nullptr) return;
  static_cast<Timer*>(token.owner)
      ->Cancel(Timer::Id{.deadline = token.deadline, .sequence = token.sequence});
}

void ExecutorScheduler::Resume(CoroControl& control, std::coroutine_handle<> handle) {
  // A rejected step ends the coroutine (StepGuard), which may release this scheduler: hold it.
  std::shared_ptr<CoroControl> keep = control.shared_from_this();
  try {
    submit_to_.Submit(ResumeStep(this, control, handle));
  } catch (...) {
    // The destroyed step failed the coroutine's future already.
  }
}

bool LocalLoop::Post(Task& task) {
  absl::MutexLock lock(&mu_);
  if (closed_) return false;
  queue_.push_back(std::move(task));
  return true;
}

void LocalLoop::Submit(Task task) {
  if (!Post(task)) {
    throw StoppedError("a task was submitted to a SyncWait loop after SyncWait returned");
  }
}

void LocalLoop::Resume(CoroControl& control, std::coroutine_handle<> handle) {
  Task step = ResumeStep(this, control, handle);
  // After SyncWait returned (a Future-coroutine it started still waits), resume on this thread.
  if (!Post(step)) InlineStepExecutor().Submit(std::move(step));
}

void LocalLoop::RootStarted(CoroControl& control) {
  bool cancel = false;
  {
    absl::MutexLock lock(&mu_);
    roots_.push_back(&control);
    // Started while the loop drains: it ends as the others do. Once the loop is closed, its steps
    // run on the waking thread (Resume) and nothing cancels it.
    cancel = finished_ && !closed_;
  }
  if (cancel) control.Cancel();
}

void LocalLoop::RootFinished(CoroControl& control) {
  absl::MutexLock lock(&mu_);
  for (CoroControl*& root : roots_) {
    if (root == &control) {
      root = roots_.back();
      roots_.pop_back();
      return;
    }
  }
}

void LocalLoop::CancelRoots() {
  std::vector<std::shared_ptr<CoroControl>> roots;
  {
    absl::MutexLock lock(&mu_);
    // Listed controls are alive: a root leaves the list (under mu_) before its control dies.
    for (CoroControl* root : roots_) roots.push_back(root->shared_from_this());
  }
  for (const auto& root : roots) root->Cancel();
}

void LocalLoop::Run() {
  // Owning: a Future-coroutine that a plain task of the loop starts shares the loop.
  ScopedCoroScheduler scope(Share());
  bool cancelled = false;
  for (;;) {
    Task task;
    bool cancel_now = false;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || finished_; };
      if (!ready() || (finished_ && cancelled && queue_.empty() && !roots_.empty())) {
        BlockingRegion blocking;  // Waits for a step posted from another thread.
        mu_.Await(absl::Condition(
            +[](LocalLoop* loop) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return !loop->queue_.empty() || (loop->finished_ && loop->roots_.empty());
            },
            this));
      }
      if (finished_ && !cancelled) {
        cancel_now = true;
      } else if (queue_.empty()) {
        // finished_, every root ended and nothing is queued: close.
        closed_ = true;
        return;
      } else {
        task = std::move(queue_.front());
        queue_.pop_front();
      }
    }
    if (cancel_now) {
      cancelled = true;
      CancelRoots();
      continue;
    }
    RunExecutorTask(task, "SyncWait");
  }
}

void LocalLoop::Finish() {
  absl::MutexLock lock(&mu_);
  finished_ = true;
}

}  // namespace futures_internal

YieldAwaitable Yield() { return YieldAwaitable(); }

Executor& CurrentCoroutineExecutor() {
  futures_internal::CoroScheduler* scheduler = futures_internal::CurrentCoroScheduler();
  if (scheduler == nullptr) {
    throw InvalidOptionError(
        "CurrentCoroutineExecutor: the calling thread does not run a coroutine's step");
  }
  return scheduler->executor();
}

}  // namespace concurry

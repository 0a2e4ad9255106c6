#include "futures/coro.h"

#include <coroutine>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/const_init.h"
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

// Runs tasks on the submitting thread, never nested in one another: a task submitted while the
// thread runs a coroutine step or another of these tasks is queued and runs when that ends (so a
// coroutine that yields in a loop does not grow the stack, and a step dropped under an awaiter
// still on the stack runs after it has returned).
class InlineSteps final : public Executor {
 public:
  void Submit(Task task) override {
    if (queue_ != nullptr) {
      queue_->push_back(std::move(task));
      return;
    }
    Trampoline([&task] { RunExecutorTask(task, "coroutine step run on its waking thread"); });
  }

  // Runs `body`, then the tasks submitted meanwhile, each after the one before. Inside another
  // Trampoline on this thread, runs just `body` (the outer one runs what `body` submits).
  static void Trampoline(absl::FunctionRef<void()> body) {
    if (queue_ != nullptr) {
      body();
      return;
    }
    std::deque<Task> queue;
    queue_ = &queue;
    body();
    while (!queue.empty()) {
      Task next = std::move(queue.front());
      queue.pop_front();
      RunExecutorTask(next, "coroutine step run on its waking thread");
    }
    queue_ = nullptr;
  }

  // Makes the calling thread run no Trampoline for the scope: a loop that blocks inside a step
  // (SyncWait) runs the inline steps of its own coroutines itself.
  class Detach {
   public:
    Detach() : outer_(std::exchange(queue_, nullptr)) {}
    ~Detach() { queue_ = outer_; }
    Detach(const Detach&) = delete;
    Detach& operator=(const Detach&) = delete;

   private:
    std::deque<Task>* const outer_;
  };

 private:
  static thread_local std::deque<Task>* queue_;
};

thread_local std::deque<Executor::Task>* InlineSteps::queue_ = nullptr;

// The task that resumes a suspended coroutine on its scheduler. Destroyed without having run (its
// executor rejected or dropped it), it stops the coroutine (CoroControl::Stop) and runs the
// resumption on the dropping thread instead, through InlineSteps: never nested under a step that
// runs there, never destroying a frame that an awaiter on the stack still uses. Move-only.
class ResumeStep {
 public:
  ResumeStep(CoroScheduler* scheduler, std::shared_ptr<CoroControl> control,
             std::coroutine_handle<> handle)
      : scheduler_(scheduler), control_(std::move(control)), handle_(handle) {}
  ResumeStep(ResumeStep&& other) noexcept
      : scheduler_(other.scheduler_), control_(std::move(other.control_)), handle_(other.handle_) {}
  ResumeStep& operator=(ResumeStep&&) = delete;
  ~ResumeStep() {
    if (control_ == nullptr) return;
    control_->Stop();
    InlineStepExecutor().Submit(
        [scheduler = scheduler_, control = std::move(control_), handle = handle_] {
          RunCoroStep(scheduler, control.get(), handle);
        });
  }

  void operator()() {
    // Holds the control (and so a scheduler owned by it) until the step has run.
    const std::shared_ptr<CoroControl> control = std::move(control_);
    RunCoroStep(scheduler_, control.get(), handle_);
  }

 private:
  CoroScheduler* scheduler_;
  std::shared_ptr<CoroControl> control_;  // Null once run or moved from.
  std::coroutine_handle<> handle_;
};

}  // namespace

Executor::Task MakeResumeStep(CoroScheduler* scheduler, CoroControl& control,
                              std::coroutine_handle<> handle) {
  return ResumeStep(scheduler, control.shared_from_this(), handle);
}

Executor& InlineStepExecutor() {
  static InlineSteps* const executor = new InlineSteps();
  return *executor;
}

void RunCoroStep(CoroScheduler* scheduler, CoroControl* control,
                 std::coroutine_handle<> handle) noexcept {
  InlineSteps::Trampoline([&] {
    ScopedCoroScheduler scope(scheduler, control);
    handle.resume();
  });
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

namespace {

// Returns the process's Timer for `clock`, made if no ClockTimers holds one now.
std::shared_ptr<Timer> SharedTimerFor(Clock& clock) {
  static absl::Mutex mu(absl::kConstInit);
  // Weak: the ClockTimers own the timers. An expired entry (its clock may be gone, and another
  // clock may now live at its address) is dropped, never reused.
  static auto* const timers = new std::vector<std::pair<Clock*, std::weak_ptr<Timer>>>();
  absl::MutexLock lock(&mu);
  std::erase_if(*timers, [](const auto& entry) { return entry.second.expired(); });
  for (const auto& [c, weak] : *timers) {
    if (c != &clock) continue;
    if (std::shared_ptr<Timer> timer = weak.lock()) return timer;
  }
  auto timer = std::make_shared<Timer>(clock);
  timers->emplace_back(&clock, timer);
  return timer;
}

}  // namespace

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
      timers_.emplace_back(&clock, SharedTimerFor(clock));
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
  // A rejected step may run (and end the coroutine, releasing this scheduler) inside Submit.
  std::shared_ptr<CoroControl> keep = control.shared_from_this();
  try {
    submit_to_.Submit(MakeResumeStep(this, control, handle));
  } catch (...) {
    // The destroyed step stopped the coroutine and runs on this thread (ResumeStep).
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
  Task step = MakeResumeStep(this, control, handle);
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
  InlineSteps::Detach detach;
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

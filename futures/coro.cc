#include "futures/coro.h"

#include <coroutine>
#include <cstdio>
#include <exception>
#include <memory>
#include <utility>

#include "absl/functional/any_invocable.h"
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

// The step that resumes `handle` with `scheduler` current. Holds the control (and so a scheduler
// owned by it) until the step has run.
Executor::Task ResumeStep(CoroScheduler* scheduler, CoroControl& control,
                          std::coroutine_handle<> handle) {
  return [scheduler, ref = control.shared_from_this(), handle] {
    ScopedCoroScheduler scope(scheduler, ref.get());
    handle.resume();
  };
}

}  // namespace

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
  try {
    executor_.Submit(ResumeStep(this, control, handle));
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "concurry: a coroutine step could not be submitted to its executor (%s); the "
                 "coroutine stays suspended\n",
                 e.what());
  } catch (...) {
    std::fprintf(stderr,
                 "concurry: a coroutine step could not be submitted to its executor; the "
                 "coroutine stays suspended\n");
  }
}

void LocalLoop::Submit(Task task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
}

void LocalLoop::Resume(CoroControl& control, std::coroutine_handle<> handle) {
  Submit(ResumeStep(this, control, handle));
}

void LocalLoop::Run() {
  ScopedCoroScheduler scope(this);
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      if (queue_.empty() && !finished_) {
        BlockingRegion blocking;  // Waits for a step posted from another thread.
        mu_.Await(absl::Condition(
            +[](LocalLoop* loop) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return !loop->queue_.empty() || loop->finished_;
            },
            this));
      }
      if (finished_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
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

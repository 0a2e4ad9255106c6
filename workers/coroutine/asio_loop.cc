#include "workers/coroutine/asio_loop.h"

#include <coroutine>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "futures/errors.h"
#include "futures/internal/coro_impl.h"
#include "futures/internal/task_context.h"
#include "futures/timer.h"
#include "workers/internal/cancel_signal.h"

namespace concurry::workers_internal {
namespace {

// this_call::CancelRequested() in a step of a coroutine call: whether the coroutine was
// cancelled (its call's future, or the worker's Stop).
class ControlSignal final : public CancelSignal {
 public:
  explicit ControlSignal(const futures_internal::CoroControl& control) : control_(control) {}
  bool CancelRequested() const noexcept override { return control_.cancelled(); }

 private:
  const futures_internal::CoroControl& control_;
};

}  // namespace

AsioLoop::AsioLoop(Clock& clock, Listener& listener) : clock_(clock), listener_(&listener) {
  absl::MutexLock lock(&mu_);
  guard_.emplace(io_.get_executor());
}

AsioLoop::~AsioLoop() = default;

void AsioLoop::Run(const void* serial_context) {
  thread_.store(std::this_thread::get_id(), std::memory_order_release);
  // CurrentWorker(), CurrentWorkerLimits() and DeadlockError work after a co_await as in a call.
  const futures_internal::ScopedSerialContext context(serial_context);
  // The loop is an event thread: a bounded worker called from here queues instead of blocking.
  const NonBlockingScope non_blocking;
  // Owning: the roots of calls and the Future-coroutines that plain tasks start share the loop.
  const futures_internal::ScopedCoroScheduler scheduler(Share());
  for (;;) {
    try {
      io_.run();
      return;
    } catch (...) {
      std::fprintf(stderr,
                   "concurry: an exception escaped a task on a coroutine worker's event loop and "
                   "was ignored: %s\n",
                   ExceptionMessage(std::current_exception()).c_str());
    }
  }
}

void AsioLoop::Close() {
  {
    // First: while a listener call is in progress the loop is still open, so what it posts is
    // queued (never run inline under listener_mu_).
    absl::WriterMutexLock lock(&listener_mu_);
    listener_ = nullptr;
  }
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    guard_.reset();  // run() returns once the queue is empty.
  }
  std::vector<Timer*> timers;
  {
    absl::MutexLock lock(&timers_mu_);
    timers_closed_ = true;
    for (auto& [clock, timer] : timers_) timers.push_back(timer.get());
  }
  // Pending wake-ups are dropped (their coroutines stay suspended); a running one only posts.
  // The timers themselves stay until the loop goes: a token may still name one (CancelWake).
  for (Timer* timer : timers) timer->Shutdown();
}

Timer& AsioLoop::TimerFor(Clock& clock) {
  if (&clock == &Clock::Real()) return Timer::Default();
  absl::MutexLock lock(&timers_mu_);
  for (auto& [c, timer] : timers_) {
    if (c == &clock) return *timer;  // Shut down after Close(): Schedule throws StoppedError.
  }
  if (timers_closed_) {
    throw StoppedError("a coroutine slept on the clock of a coroutine worker that has stopped");
  }
  timers_.emplace_back(&clock, std::make_unique<Timer>(clock));
  return *timers_.back().second;
}

void AsioLoop::RootStarted(futures_internal::CoroControl& control) {
  absl::ReaderMutexLock lock(&listener_mu_);
  if (listener_ != nullptr) listener_->RootStarted(control);
}

void AsioLoop::RootFinished(futures_internal::CoroControl& control) {
  absl::ReaderMutexLock lock(&listener_mu_);
  if (listener_ != nullptr) listener_->RootFinished(control);
}

void AsioLoop::TimersChanged(int64_t delta) {
  absl::ReaderMutexLock lock(&listener_mu_);
  if (listener_ != nullptr) listener_->TimersChanged(delta);
}

void AsioLoop::Submit(Task task) {
  auto run = [task = std::move(task)]() mutable { RunExecutorTask(task, "coroutine worker"); };
  if (!Post(std::move(run))) {
    throw StoppedError(
        "a task was submitted to a coroutine worker's loop after the worker stopped");
  }
}

void AsioLoop::Resume(futures_internal::CoroControl& control, std::coroutine_handle<> handle) {
  // The step runs through RunCoroStep (MakeResumeStep), with the coroutine's cancel signal for
  // this_call::CancelRequested(). One dropped unrun stops the coroutine (CoroControl::Stop).
  Task step = [control = control.shared_from_this(),
               resume = futures_internal::MakeResumeStep(this, control, handle)]() mutable {
    const ControlSignal signal(*control);
    const ScopedCancelSignal cancel_signal(&signal);
    resume();
  };
  // Closed (a Future-coroutine started in a step outlived the worker): the step runs on this
  // thread, after the step running here if any, outside the loop's locks.
  if (!Post(std::move(step))) futures_internal::InlineStepExecutor().Submit(std::move(step));
}

futures_internal::WakeToken AsioLoop::WakeAt(Clock& clock, absl::Time deadline,
                                             absl::AnyInvocable<void()> wake) {
  TimersChanged(1);
  try {
    Timer& timer = TimerFor(clock);
    // Owns the loop: the wake-up may come after the worker has gone.
    const Timer::Id id =
        timer.Schedule(deadline, [self = shared_from_this(), wake = std::move(wake)]() mutable {
          self->TimersChanged(-1);
          wake();
        });
    return futures_internal::WakeToken{
        .owner = &timer, .sequence = id.sequence, .deadline = id.deadline};
  } catch (...) {
    TimersChanged(-1);
    throw;
  }
}

void AsioLoop::CancelWake(const futures_internal::WakeToken& token) {
  if (token.owner == nullptr) return;
  if (static_cast<Timer*>(token.owner)
          ->Cancel(Timer::Id{.deadline = token.deadline, .sequence = token.sequence})) {
    TimersChanged(-1);
  }
}

}  // namespace concurry::workers_internal

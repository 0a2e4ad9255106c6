#include "workers/coroutine/asio_loop.h"

#include <coroutine>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "futures/errors.h"
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

// A posted resumption. One that is destroyed without having run (the loop closed first) ends
// its coroutine with StoppedError, so that its future does not stay pending. Move-only.
class ResumeStep {
 public:
  ResumeStep(AsioLoop* loop, std::shared_ptr<futures_internal::CoroControl> control,
             std::coroutine_handle<> handle)
      : loop_(loop), control_(std::move(control)), handle_(handle) {}
  ResumeStep(ResumeStep&& other) noexcept
      : loop_(other.loop_), control_(std::move(other.control_)), handle_(other.handle_) {}
  ResumeStep& operator=(ResumeStep&&) = delete;
  ~ResumeStep() {
    if (control_ == nullptr) return;
    control_->Abandon(std::make_exception_ptr(
        StoppedError("the coroutine worker stopped before the coroutine could resume")));
  }

  void operator()() {
    const std::shared_ptr<futures_internal::CoroControl> control = std::move(control_);
    const ControlSignal signal(*control);
    const ScopedCancelSignal cancel_signal(&signal);
    const futures_internal::ScopedCoroScheduler scope(loop_, control.get());
    handle_.resume();
  }

 private:
  AsioLoop* loop_;
  std::shared_ptr<futures_internal::CoroControl> control_;
  std::coroutine_handle<> handle_;
};

}  // namespace

AsioLoop::AsioLoop(Clock& clock, Listener& listener) : clock_(clock), listener_(listener) {
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
  const futures_internal::ScopedCoroScheduler scheduler(this);
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
    absl::MutexLock lock(&mu_);
    closed_ = true;
    guard_.reset();  // run() returns once the queue is empty.
  }
  std::vector<std::pair<Clock*, std::unique_ptr<Timer>>> timers;
  {
    absl::MutexLock lock(&timers_mu_);
    timers.swap(timers_);
  }
  // Pending wake-ups are dropped (no coroutine is left to wake); a running one only posts.
  for (auto& [clock, timer] : timers) timer->Shutdown();
}

Timer& AsioLoop::TimerFor(Clock& clock) {
  if (&clock == &Clock::Real()) return Timer::Default();
  absl::MutexLock lock(&timers_mu_);
  for (auto& [c, timer] : timers_) {
    if (c == &clock) return *timer;
  }
  timers_.emplace_back(&clock, std::make_unique<Timer>(clock));
  return *timers_.back().second;
}

void AsioLoop::Submit(Task task) {
  auto run = [task = std::move(task)]() mutable { RunExecutorTask(task, "coroutine worker"); };
  if (!Post(std::move(run))) {
    throw StoppedError(
        "a task was submitted to a coroutine worker's loop after the worker stopped");
  }
}

void AsioLoop::Resume(futures_internal::CoroControl& control, std::coroutine_handle<> handle) {
  ResumeStep step(this, control.shared_from_this(), handle);
  // A closed loop has no coroutine left to resume; if one were, the unposted step ends it.
  Post(std::move(step));
}

futures_internal::WakeToken AsioLoop::WakeAt(Clock& clock, absl::Time deadline,
                                             absl::AnyInvocable<void()> wake) {
  listener_.TimersChanged(1);
  try {
    Timer& timer = TimerFor(clock);
    const Timer::Id id = timer.Schedule(deadline, [this, wake = std::move(wake)]() mutable {
      listener_.TimersChanged(-1);
      wake();
    });
    return futures_internal::WakeToken{
        .owner = &timer, .sequence = id.sequence, .deadline = id.deadline};
  } catch (...) {
    listener_.TimersChanged(-1);
    throw;
  }
}

void AsioLoop::CancelWake(const futures_internal::WakeToken& token) {
  if (token.owner == nullptr) return;
  if (static_cast<Timer*>(token.owner)
          ->Cancel(Timer::Id{.deadline = token.deadline, .sequence = token.sequence})) {
    listener_.TimersChanged(-1);
  }
}

}  // namespace concurry::workers_internal

// AsioLoop: the event loop of a Mode::kCoroutine worker. An asio io_context run by one thread,
// which is an Executor (tasks run on the loop) and the CoroScheduler of every coroutine that
// runs there (each resumption is posted to the loop; SleepFor waits on a timer of the loop's
// clock, never on a sleeping thread).
//
//   auto loop = std::make_shared<AsioLoop>(clock, listener);
//   std::thread thread([loop] { loop->Run(actor); });  // until Close() and the queue is empty
//   loop->Post([] { ... });                             // false once closed
//   loop->Close();                                      // the listener hears nothing more
//
// Shared: the coroutines started on the loop (and the Future-coroutines started in their steps,
// and the timer wake-ups) own it, so it may outlive its worker. Once closed, a resumption runs
// on the thread that wakes the coroutine, as after SyncWait returned.
//
// Internal to //workers/coroutine: users never see asio.

#ifndef CONCURRY_WORKERS_COROUTINE_ASIO_LOOP_H_
#define CONCURRY_WORKERS_COROUTINE_ASIO_LOOP_H_

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/executor.h"
#include "futures/internal/coro_scheduler.h"
#include "futures/timer.h"

namespace concurry::workers_internal {

// Thread-safe; Run from one thread only. Must be made by std::make_shared.
class AsioLoop final : public Executor,
                       public futures_internal::CoroScheduler,
                       public std::enable_shared_from_this<AsioLoop> {
 public:
  // What the loop's owner hears about the coroutines and timers of the loop, until Close(). Called
  // from any thread (mostly the loop's); must not call back into the loop except to Post.
  class Listener {
   public:
    virtual void RootStarted(futures_internal::CoroControl& control) = 0;
    virtual void RootFinished(futures_internal::CoroControl& control) = 0;
    // The number of pending timer wake-ups changed by `delta`.
    virtual void TimersChanged(int64_t delta) = 0;

   protected:
    ~Listener() = default;
  };

  // `clock` is SleepFor's; `listener` must stay valid until Close() has returned.
  AsioLoop(Clock& clock, Listener& listener);
  ~AsioLoop() override;
  AsioLoop(const AsioLoop&) = delete;
  AsioLoop& operator=(const AsioLoop&) = delete;

  // Runs posted handlers on the calling thread, with `serial_context` (the worker's actor) as the
  // thread's serial context and this loop as its coroutine scheduler (the coroutines and
  // Future-coroutines started there share it), until Close() was called
  // and nothing is queued. An exception escaping a handler is reported on stderr and the loop
  // goes on: it never terminates the process.
  void Run(const void* serial_context);
  // Queues `handler` to run on the loop; returns false (and drops nothing: `handler` is left
  // as it was) once the loop is closed.
  template <typename H>
  bool Post(H&& handler) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (closed_) return false;
    asio::post(io_, std::forward<H>(handler));
    return true;
  }
  // Takes no more handlers, and Run returns once the queued ones have run; the listener hears
  // nothing from now on (a call in progress has returned when Close returns); shuts down the
  // timers this loop made for clocks other than the real one (their threads wait on those clocks,
  // which may be gone once the worker has stopped: SleepFor on them throws StoppedError from now
  // on). Idempotent.
  void Close() ABSL_LOCKS_EXCLUDED(mu_, timers_mu_, listener_mu_);

  // Executor: a task runs on the loop. Throws StoppedError once the loop is closed.
  void Submit(Task task) override;
  int max_concurrency() const override { return 1; }

  // CoroScheduler. After Close(), Resume runs the step on the calling thread.
  void Resume(futures_internal::CoroControl& control, std::coroutine_handle<> handle) override;
  futures_internal::WakeToken WakeAt(Clock& clock, absl::Time deadline,
                                     absl::AnyInvocable<void()> wake) override;
  void CancelWake(const futures_internal::WakeToken& token) override;
  Clock& clock() override { return clock_; }
  Executor& executor() override { return *this; }
  bool InThisThread() const override {
    return std::this_thread::get_id() == thread_.load(std::memory_order_acquire);
  }
  void RootStarted(futures_internal::CoroControl& control) override
      ABSL_LOCKS_EXCLUDED(listener_mu_);
  void RootFinished(futures_internal::CoroControl& control) override
      ABSL_LOCKS_EXCLUDED(listener_mu_);
  std::shared_ptr<futures_internal::CoroScheduler> Share() override { return shared_from_this(); }

 private:
  // Tells the listener, if the loop is not closed yet, that the number of pending wake-ups changed.
  void TimersChanged(int64_t delta) ABSL_LOCKS_EXCLUDED(listener_mu_);

  Clock& clock_;
  // Held (shared) around each call of the listener; Close() clears it holding it exclusively.
  absl::Mutex listener_mu_;
  Listener* listener_ ABSL_GUARDED_BY(listener_mu_);
  std::atomic<std::thread::id> thread_{};
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Declared before the timers: a timer callback (the wake) only posts here.
  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_
      ABSL_GUARDED_BY(mu_);
  // Timer::Default() serves the real clock; one Timer per other clock, made on first use. Those
  // are shut down by Close() but kept until the loop goes (a token may still name one); after
  // Close(), a new clock throws StoppedError.
  Timer& TimerFor(Clock& clock) ABSL_LOCKS_EXCLUDED(timers_mu_);
  absl::Mutex timers_mu_;
  bool timers_closed_ ABSL_GUARDED_BY(timers_mu_) = false;
  std::vector<std::pair<Clock*, std::unique_ptr<Timer>>> timers_ ABSL_GUARDED_BY(timers_mu_);
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_COROUTINE_ASIO_LOOP_H_

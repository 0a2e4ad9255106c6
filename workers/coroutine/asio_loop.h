// AsioLoop: the event loop of a Mode::kCoroutine worker. An asio io_context run by one thread,
// which is an Executor (tasks run on the loop) and the CoroScheduler of every coroutine that
// runs there (each resumption is posted to the loop; SleepFor waits on a timer of the loop's
// clock, never on a sleeping thread).
//
//   AsioLoop loop(clock, listener);
//   std::thread thread([&] { loop.Run(actor); });  // until Close() and the queue is empty
//   loop.Post([] { ... });                          // false once closed
//   loop.Close();
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

// Thread-safe; Run from one thread only.
class AsioLoop final : public Executor, public futures_internal::CoroScheduler {
 public:
  // What the loop's owner hears about the coroutines and timers of the loop. Called from any
  // thread (mostly the loop's); must not call back into the loop except to Post.
  class Listener {
   public:
    virtual void RootStarted(futures_internal::CoroControl& control) = 0;
    virtual void RootFinished(futures_internal::CoroControl& control) = 0;
    // The number of pending timer wake-ups changed by `delta`.
    virtual void TimersChanged(int64_t delta) = 0;

   protected:
    ~Listener() = default;
  };

  // `clock` is SleepFor's; `listener` must outlive the loop.
  AsioLoop(Clock& clock, Listener& listener);
  ~AsioLoop() override;
  AsioLoop(const AsioLoop&) = delete;
  AsioLoop& operator=(const AsioLoop&) = delete;

  // Runs posted handlers on the calling thread, with `serial_context` (the worker's actor) as the
  // thread's serial context and this loop as its coroutine scheduler, until Close() was called
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
  // Takes no more handlers, and Run returns once the queued ones have run; shuts down the timers
  // this loop made for clocks other than the real one (their threads wait on those clocks, which
  // may be gone once the worker has stopped). Idempotent.
  void Close() ABSL_LOCKS_EXCLUDED(mu_, timers_mu_);

  // Executor: a task runs on the loop. Throws StoppedError once the loop is closed.
  void Submit(Task task) override;
  int max_concurrency() const override { return 1; }

  // CoroScheduler.
  void Resume(futures_internal::CoroControl& control, std::coroutine_handle<> handle) override;
  futures_internal::WakeToken WakeAt(Clock& clock, absl::Time deadline,
                                     absl::AnyInvocable<void()> wake) override;
  void CancelWake(const futures_internal::WakeToken& token) override;
  Clock& clock() override { return clock_; }
  Executor& executor() override { return *this; }
  bool InThisThread() const override {
    return std::this_thread::get_id() == thread_.load(std::memory_order_acquire);
  }
  void RootStarted(futures_internal::CoroControl& control) override {
    listener_.RootStarted(control);
  }
  void RootFinished(futures_internal::CoroControl& control) override {
    listener_.RootFinished(control);
  }

 private:
  Clock& clock_;
  Listener& listener_;
  std::atomic<std::thread::id> thread_{};
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Declared before the timers: a timer callback (the wake) only posts here.
  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_
      ABSL_GUARDED_BY(mu_);
  // Timer::Default() serves the real clock; one Timer per other clock, made on first use.
  Timer& TimerFor(Clock& clock) ABSL_LOCKS_EXCLUDED(timers_mu_);
  absl::Mutex timers_mu_;
  std::vector<std::pair<Clock*, std::unique_ptr<Timer>>> timers_ ABSL_GUARDED_BY(timers_mu_);
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_COROUTINE_ASIO_LOOP_H_

// Timer: runs callbacks at deadlines of a Clock, on one internal thread, so that waiting (retry
// back-off, timeouts) occupies no thread of its own.
//
//   concurry::Timer& timer = concurry::Timer::Default();  // the real clock
//   concurry::Timer::Id id = timer.ScheduleAfter(absl::Milliseconds(50), [] { Poke(); });
//   timer.Cancel(id);  // true: Poke() will not run
//
//   concurry::testkit::FakeClock clock;  // tests: exact times
//   concurry::Timer fake_timer(clock);
//
// Callbacks should be short (submit the real work to an executor): they run one at a time, inside
// a NonBlockingScope (futures/executor.h), so a bounded executor queues their submissions instead
// of blocking the timer.

#ifndef CONCURRY_FUTURES_TIMER_H_
#define CONCURRY_FUTURES_TIMER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"

namespace concurry {

// A queue of callbacks ordered by deadline on a Clock. One thread, started by the first
// Schedule(), waits on the clock for the earliest deadline (woken by an earlier one or by
// Shutdown(); never polls) and runs each due callback, earliest deadline first and in scheduling
// order for equal deadlines, outside the timer's lock — a callback may schedule or cancel others.
// A callback that throws has its error printed to stderr and ignored. Shutdown() (also run by
// the destructor) destroys pending callbacks without running them, waits for a running one and
// joins the thread; called from a callback it returns without waiting (the thread then ends by
// itself). In a fork()ed child the timer starts empty (the parent's pending callbacks stay the
// parent's) and gets a thread of its own on the first Schedule(). The clock must outlive the
// timer. Thread-safe.
class Timer {
 public:
  using Callback = absl::AnyInvocable<void()>;

  // Identifies a scheduled callback. Default-constructed: identifies nothing.
  struct Id {
    absl::Time deadline = absl::InfinitePast();
    uint64_t sequence = 0;  // 0: none.
  };

  explicit Timer(Clock& clock = Clock::Real());
  ~Timer();

  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Returns the clock the deadlines refer to.
  Clock& clock() const { return clock_; }

  // Runs `callback` once on the timer's thread when clock().Now() >= `deadline` (soon, if it
  // already is). Every absl::Time is accepted: absl::InfinitePast() runs at once, and
  // absl::InfiniteFuture() never runs (the callback stays pending until Cancel() or Shutdown()).
  // Throws InvalidOptionError for an empty callback, StoppedError after Shutdown() (the callback
  // is then destroyed), and std::system_error if the thread cannot start.
  Id Schedule(absl::Time deadline, Callback callback);
  // Schedule(clock().Now() + delay, callback); a negative delay (down to -InfiniteDuration())
  // counts as zero. The sum saturates (absl::Time arithmetic does not overflow):
  // InfiniteDuration(), or a finite delay whose end absl::Time cannot represent, gives
  // InfiniteFuture().
  Id ScheduleAfter(absl::Duration delay, Callback callback);

  // Removes a pending callback and destroys it (outside the lock). Returns true if it was pending
  // (it will never run), false if it has run, is running, was cancelled or dropped already.
  bool Cancel(const Id& id);

  // Drops pending callbacks, waits for a running one (unless called from it) and stops the
  // thread. Idempotent.
  void Shutdown();

  // Returns the number of callbacks waiting for their deadline.
  size_t pending() const;

  // Returns a process-wide timer on Clock::Real(), created on first use and never destroyed (so
  // it can be used during static destruction).
  static Timer& Default();

 private:
  // Everything the thread touches, shared with it so that the timer may be destroyed from one of
  // its own callbacks. Belongs to the process that created it.
  struct Shared;

  // Returns this process's state: in a fork()ed child, a fresh one on first use. The parent's
  // state is left alone there (its mutex may hold the parent's waiting thread, which does not
  // exist in the child, and its callbacks are the parent's).
  Shared& Here() const ABSL_LOCKS_EXCLUDED(fork_mu_);

  static void Loop(const std::shared_ptr<Shared>& shared);

  Clock& clock_;
  // The state of the process using the timer; never null. Memory ordering: release when a
  // fork()ed child installs its own state, acquire when reading it, so the state is seen
  // constructed.
  mutable std::atomic<Shared*> shared_;
  // Taken only in a fork()ed child, to replace the state (never in the process that created it,
  // so a child never inherits it locked).
  mutable absl::Mutex fork_mu_;
  // Owns *shared_ (the thread shares it). Written only under fork_mu_ in a child, where the
  // parent's state is leaked rather than destroyed.
  mutable std::shared_ptr<Shared> owned_;
};

}  // namespace concurry

#endif  // CONCURRY_FUTURES_TIMER_H_

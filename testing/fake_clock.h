// FakeClock: a concurry::Clock whose time moves only when a test says so, so time-dependent code
// (timeouts, rate limits, backoff, reaping) can be tested with exact numbers and no flakiness.
//
//   concurry::testkit::FakeClock clock;
//   std::thread t([&] { clock.SleepFor(absl::Milliseconds(10)); });
//   clock.BlockUntilWaiters(1);            // `t` is now blocked on the clock
//   clock.Advance(absl::Milliseconds(9));  // not yet: clock.NumWaiters() == 1
//   clock.Advance(absl::Milliseconds(1));  // deadline reached: `t` wakes
//   t.join();

#ifndef CONCURRY_TESTING_FAKE_CLOCK_H_
#define CONCURRY_TESTING_FAKE_CLOCK_H_

#include <list>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"

namespace concurry {
namespace testkit {

// A manually driven clock. Now() returns the start time until Advance() or SetTime() moves it;
// time never goes backwards. A thread blocked in AwaitWithDeadline() (or SleepUntil() and
// SleepFor(), which use it) wakes when its condition becomes true or when Advance() / SetTime()
// reaches its deadline, and at no other time: there are no spurious timeouts. NumWaiters() and
// BlockUntilWaiters() let a test wait, without sleeping, until the code under test is blocked.
//
// Do not call Advance() or SetTime() while holding a mutex that a waiter passed to
// AwaitWithDeadline(): waking the waiter needs that mutex. The clock must outlive every call on
// it. Thread-safe.
class FakeClock final : public Clock {
 public:
  // Returns the default start time: 1970-01-01 01:00:00 UTC (the Unix epoch plus one hour), a
  // fixed instant far from absl::InfinitePast() so tests may subtract durations from it.
  static absl::Time DefaultStartTime() { return absl::UnixEpoch() + absl::Hours(1); }

  explicit FakeClock(absl::Time start = DefaultStartTime());
  ~FakeClock() override;

  FakeClock(const FakeClock&) = delete;
  FakeClock& operator=(const FakeClock&) = delete;

  // Returns the current fake time.
  absl::Time Now() const override ABSL_LOCKS_EXCLUDED(mu_);

  // AwaitWithDeadline (see Clock) blocks until `cond` holds or this clock reaches `deadline`.
  // It returns true at once if `cond` holds, false at once if Now() >= `deadline`, and may
  // release and reacquire `*mu` before returning even when it does not block.

  // Moves time forward by `duration` and wakes every waiter whose deadline has been reached,
  // earliest deadline first. Returns once each of them has been notified (they may still be
  // returning). Throws InvalidOptionError if `duration` is negative.
  void Advance(absl::Duration duration) ABSL_LOCKS_EXCLUDED(mu_);

  // Sets the time to `time` and wakes waiters as Advance() does. Throws InvalidOptionError if
  // `time` is before Now().
  void SetTime(absl::Time time) ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the number of threads blocked on this clock (in AwaitWithDeadline(), SleepUntil() or
  // SleepFor()) that have not yet been woken by their condition or deadline.
  int NumWaiters() const ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until NumWaiters() >= `n`.
  void BlockUntilWaiters(int n) ABSL_LOCKS_EXCLUDED(mu_);

 protected:
  bool DoAwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                           absl::Time deadline) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // One blocked call of AwaitWithDeadline(); owned by `waiters_`.
  struct Waiter {
    Waiter(absl::Mutex* mu, absl::Time deadline) : mu(mu), deadline(deadline) {}

    absl::Mutex* const mu;  // The caller's mutex.
    const absl::Time deadline;
    // Set by Advance() under `*mu` once the deadline is reached; part of the waiter's condition.
    bool expired ABSL_GUARDED_BY(mu) = false;
    // Set when an Advance() has picked this waiter; it is picked at most once.
    bool picked = false;  // Guarded by FakeClock::mu_.
    // True while an Advance() may still lock `*mu` or write `expired`: the waiter must not return.
    bool notifying = false;  // Guarded by FakeClock::mu_.
  };

  // Marks the not yet picked waiters whose deadline is <= now_ as picked and notifying, and
  // returns them earliest deadline first.
  std::vector<Waiter*> PickDueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets `expired` on each of `due` under its mutex, then clears its `notifying`.
  void Notify(const std::vector<Waiter*>& due) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  // Registered waiters, in registration order. An entry stays until its thread deregisters it.
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // Entries of `waiters_` not yet picked by Advance() nor deregistered: what NumWaiters() counts.
  int num_pending_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_FAKE_CLOCK_H_

// A clock seam: every time-dependent component takes a `Clock&` so tests can drive time with
// `concurry::testing::FakeClock` (in //testing) and assert exact timings.
//
//   concurry::Clock& clock = concurry::Clock::Real();
//   absl::MutexLock lock(&mu);
//   bool ready = clock.AwaitWithDeadline(&mu, absl::Condition(&done), clock.Now() + timeout);
//
// Abseil 20220623 has no absl::Clock, hence this small interface.

#ifndef CONCURRY_FUTURES_CLOCK_H_
#define CONCURRY_FUTURES_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace concurry {

// Source of the current time and of deadline-bounded waits. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;

  // Returns the current time.
  virtual absl::Time Now() const = 0;

  // With `*mu` held, blocks until `cond` holds or Now() >= `deadline`, releasing `*mu` while
  // blocked, and returns with `*mu` held. Returns whether `cond` holds on return. Whatever makes
  // `cond` true must change it while holding `*mu` (as absl::Mutex::Await requires), which is
  // how stop and cancel requests wake the waiter.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // Blocks the calling thread until Now() >= `deadline`.
  void SleepUntil(absl::Time deadline);
  // Blocks the calling thread for `duration` of this clock's time.
  void SleepFor(absl::Duration duration) { SleepUntil(Now() + duration); }

  // Returns the process-wide wall clock (absl::Now(), absl::Mutex deadlines).
  static Clock& Real();
};

}  // namespace concurry

#endif  // CONCURRY_FUTURES_CLOCK_H_

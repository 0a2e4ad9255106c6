// A clock seam: every time-dependent component takes a `Clock&` so tests can drive time with
// `concurry::testkit::FakeClock` (in //testing) and assert exact timings.
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

  // With `*mu` held (exclusively), blocks until `cond` holds or Now() >= `deadline`, releasing
  // `*mu` while blocked, and returns with `*mu` held. Returns whether `cond` holds on return.
  // Whatever makes `cond` true must change it while holding `*mu` (as absl::Mutex::Await
  // requires), which is how stop and cancel requests wake the waiter. Inside a TbbExecutor task,
  // a wait that lasts longer than kBlockingGrace becomes a BlockingRegion (executor.h): the
  // executor adds a thread meanwhile, and `*mu` is released for a moment before that.
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Blocks the calling thread until Now() >= `deadline`.
  void SleepUntil(absl::Time deadline);
  // Blocks the calling thread for `duration` of this clock's time.
  void SleepFor(absl::Duration duration) { SleepUntil(Now() + duration); }

  // Returns the process-wide wall clock (absl::Now(), absl::Mutex deadlines).
  static Clock& Real();

  // How long a wait inside a compensating executor's task lasts before the executor is told
  // (real time): shorter waits, the common case, cost no added thread.
  static constexpr absl::Duration kBlockingGrace = absl::Microseconds(50);

 protected:
  // The wait itself, as AwaitWithDeadline describes it (implementations need not report
  // blocking).
  virtual bool DoAwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                                   absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;
};

}  // namespace concurry

#endif  // CONCURRY_FUTURES_CLOCK_H_

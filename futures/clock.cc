#include "futures/clock.h"

#include <algorithm>

#include "futures/executor.h"

namespace concurry {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }

  bool DoAwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                           absl::Time deadline) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return mu->AwaitWithDeadline(cond, deadline);
  }
};

}  // namespace

bool Clock::AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) {
  if (!BlockingRegion::WouldCompensate() || cond.Eval()) {
    return DoAwaitWithDeadline(mu, cond, deadline);
  }
  // Inside a compensating executor's task. Most waits there are short (a call to another worker
  // answers in microseconds), and adding a thread for them would cost more than the wait: first
  // wait a moment as any wait would (real time; on the real clock, never past `deadline`).
  const absl::Time grace = absl::Now() + kBlockingGrace;
  if (mu->AwaitWithDeadline(cond, this == &Real() ? std::min(grace, deadline) : grace)) return true;
  if (deadline <= Now()) return DoAwaitWithDeadline(mu, cond, deadline);
  // Still waiting: tell the executor, without holding `*mu` (it may start a thread, and whoever
  // makes `cond` true needs `*mu`). The wait checks `cond` again.
  mu->Unlock();
  BlockingRegion region;
  mu->Lock();
  return DoAwaitWithDeadline(mu, cond, deadline);
}

void Clock::SleepUntil(absl::Time deadline) {
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  // Nothing ever makes this condition true: only the deadline ends the wait.
  static constexpr bool kNever = false;
  AwaitWithDeadline(&mu, absl::Condition(&kNever), deadline);
}

Clock& Clock::Real() {
  static RealClock* const clock = new RealClock();
  return *clock;
}

}  // namespace concurry

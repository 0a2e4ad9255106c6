#include "testing/fake_clock.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "futures/errors.h"

namespace concurry {
namespace testkit {

// Locking protocol. `mu_` is a leaf lock: nothing else is locked while it is held. A waiter
// registers itself while holding its own mutex `*mu` (order: `*mu` then `mu_`). Advance() picks
// the due waiters under `mu_` and marks them `notifying`, then, holding no lock of its own, locks
// each waiter's `*mu` to set `expired` (releasing `*mu` makes absl re-evaluate the waiter's
// condition), then clears `notifying` under `mu_`. A waiter may not return while it is
// `notifying`; if it must wait for that, it first releases `*mu`, which Advance() needs. So once a
// waiter has returned, the clock never touches it or its mutex again.

FakeClock::FakeClock(absl::Time start) : now_(start) {}

FakeClock::~FakeClock() {
  absl::MutexLock lock(&mu_);
  if (!waiters_.empty()) {
    std::fprintf(stderr, "FakeClock destroyed while %d thread(s) are blocked on it\n",
                 static_cast<int>(waiters_.size()));
    std::abort();
  }
}

absl::Time FakeClock::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

bool FakeClock::DoAwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                                    absl::Time deadline) {
  while (true) {
    if (cond.Eval()) return true;

    std::list<Waiter>::iterator entry;
    {
      absl::MutexLock lock(&mu_);
      // Checking the deadline and registering under one lock: no Advance() can slip in between.
      if (now_ >= deadline) return false;
      entry = waiters_.emplace(waiters_.end(), mu, deadline);
      ++num_pending_;
    }
    // The entry is heap-allocated, so ASan would catch an Advance() touching it after erase().
    Waiter& waiter = *entry;

    auto ready = [&] { return waiter.expired || cond.Eval(); };
    mu->Await(absl::Condition(&ready));

    // Deregister. `*mu` is held here.
    mu_.Lock();
    if (waiter.notifying) {
      // An Advance() has picked this waiter and may still lock `*mu`: let it, and wait until it
      // is done with `waiter` before the entry (and `waiter`) goes away.
      mu_.Unlock();
      mu->Unlock();
      mu_.Lock();
      mu_.Await(absl::Condition(
          +[](Waiter* w) { return !w->notifying; }, &waiter));
      waiters_.erase(entry);  // `waiter` is gone from here on.
      mu_.Unlock();
      mu->Lock();
    } else {
      if (!waiter.picked) --num_pending_;  // A picked waiter was uncounted by Advance().
      waiters_.erase(entry);
      mu_.Unlock();
    }
    // Re-evaluate: the condition may hold, or the deadline may have been reached.
  }
}

void FakeClock::Advance(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat("FakeClock::Advance: duration must be >= 0 (time never ",
                                          "goes backwards), got ", absl::FormatDuration(duration)));
  }
  std::vector<Waiter*> due;
  {
    absl::MutexLock lock(&mu_);
    now_ += duration;
    due = PickDueLocked();
  }
  Notify(due);
}

void FakeClock::SetTime(absl::Time time) {
  std::vector<Waiter*> due;
  {
    absl::MutexLock lock(&mu_);
    if (time < now_) {
      throw InvalidOptionError(absl::StrCat(
          "FakeClock::SetTime: time must be >= Now() (time never goes backwards); Now() is ",
          absl::FormatTime(now_, absl::UTCTimeZone()), ", got ",
          absl::FormatTime(time, absl::UTCTimeZone())));
    }
    now_ = time;
    due = PickDueLocked();
  }
  Notify(due);
}

std::vector<FakeClock::Waiter*> FakeClock::PickDueLocked() {
  std::vector<Waiter*> due;
  for (Waiter& w : waiters_) {
    if (!w.picked && w.deadline <= now_) {
      w.picked = true;
      w.notifying = true;
      --num_pending_;
      due.push_back(&w);
    }
  }
  // Earliest deadline first; ties in registration order.
  std::stable_sort(due.begin(), due.end(),
                   [](const Waiter* a, const Waiter* b) { return a->deadline < b->deadline; });
  return due;
}

void FakeClock::Notify(const std::vector<Waiter*>& due) {
  for (Waiter* w : due) {
    {
      absl::MutexLock lock(w->mu);
      w->expired = true;
    }  // Releasing `*w->mu` re-evaluates the waiter's condition and wakes it.
    absl::MutexLock lock(&mu_);
    w->notifying = false;  // From here on `w` may be gone.
  }
}

int FakeClock::NumWaiters() const {
  absl::MutexLock lock(&mu_);
  return num_pending_;
}

void FakeClock::BlockUntilWaiters(int n) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return num_pending_ >= n; };
  mu_.Await(absl::Condition(&enough));
}

}  // namespace testkit
}  // namespace concurry

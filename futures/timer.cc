#include "futures/timer.h"

#include <sys/types.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/internal/process_id.h"

namespace concurry {

struct Timer::Shared {
  explicit Shared(Clock& clock) : clock(clock) {}

  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return shutdown || !entries.empty();
  }
  // Wakes the thread waiting for `waiting_until` when an earlier deadline arrives.
  bool EarlierOrShutdownLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return shutdown || (!entries.empty() && entries.begin()->first.first < waiting_until);
  }

  Clock& clock;
  mutable absl::Mutex mu;
  std::map<std::pair<absl::Time, uint64_t>, Callback> entries ABSL_GUARDED_BY(mu);
  uint64_t next_sequence ABSL_GUARDED_BY(mu) = 1;
  absl::Time waiting_until ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  bool shutdown ABSL_GUARDED_BY(mu) = false;
  // Started by the first Schedule (never once `shutdown` is set); taken by Shutdown.
  std::thread thread ABSL_GUARDED_BY(mu);
  // The process that started `thread`: a fork()ed child inherits the object but not the thread.
  pid_t thread_pid ABSL_GUARDED_BY(mu) = 0;
};

Timer::Timer(Clock& clock) : clock_(clock), shared_(std::make_shared<Shared>(clock)) {}

Timer::~Timer() { Shutdown(); }

Timer::Id Timer::Schedule(absl::Time deadline, Callback callback) {
  if (!callback) throw InvalidOptionError("Timer::Schedule: the callback is empty");
  std::map<std::pair<absl::Time, uint64_t>, Callback> dropped;  // Destroyed after unlocking.
  absl::MutexLock lock(&shared_->mu);
  if (shared_->shutdown) {
    throw StoppedError("Timer::Schedule: the timer has been shut down");
  }
  const pid_t pid = internal::CurrentPid();
  if (shared_->thread.joinable() && shared_->thread_pid != pid) {
    // A fork()ed child: the parent's thread does not exist here (joining it would hang), and the
    // parent's pending callbacks are the parent's to run. Start afresh.
    static_cast<void>(new std::thread(std::move(shared_->thread)));  // Never joined nor destroyed.
    dropped.swap(shared_->entries);
  }
  if (!shared_->thread.joinable()) {
    shared_->thread = std::thread([shared = shared_] { Loop(shared); });
    shared_->thread_pid = pid;
  }
  const Id id{deadline, shared_->next_sequence++};
  shared_->entries.emplace(std::make_pair(id.deadline, id.sequence), std::move(callback));
  return id;
}

Timer::Id Timer::ScheduleAfter(absl::Duration delay, Callback callback) {
  return Schedule(clock_.Now() + std::max(delay, absl::ZeroDuration()), std::move(callback));
}

bool Timer::Cancel(const Id& id) {
  Callback removed;  // Destroyed after unlocking.
  absl::MutexLock lock(&shared_->mu);
  auto it = shared_->entries.find(std::make_pair(id.deadline, id.sequence));
  if (it == shared_->entries.end()) return false;
  removed = std::move(it->second);
  shared_->entries.erase(it);
  return true;
}

void Timer::Shutdown() {
  std::map<std::pair<absl::Time, uint64_t>, Callback> dropped;  // Destroyed after unlocking.
  std::thread thread;
  bool inherited = false;
  {
    absl::MutexLock lock(&shared_->mu);
    shared_->shutdown = true;
    dropped.swap(shared_->entries);
    thread = std::move(shared_->thread);
    inherited = thread.joinable() && shared_->thread_pid != internal::CurrentPid();
  }
  if (!thread.joinable()) return;
  if (inherited) {
    // A fork()ed child: the thread is the parent's and does not exist here.
    static_cast<void>(new std::thread(std::move(thread)));  // Never joined nor destroyed.
    return;
  }
  if (thread.get_id() == std::this_thread::get_id()) {
    thread.detach();  // Called from a callback: the loop ends by itself; it owns `shared_` too.
  } else {
    thread.join();
  }
}

size_t Timer::pending() const {
  absl::MutexLock lock(&shared_->mu);
  return shared_->entries.size();
}

Timer& Timer::Default() {
  static Timer* const timer = new Timer(Clock::Real());
  return *timer;
}

void Timer::Loop(const std::shared_ptr<Shared>& shared) {
  Shared& s = *shared;
  for (;;) {
    Callback due;
    {
      absl::MutexLock lock(&s.mu);
      for (;;) {
        if (s.shutdown) return;
        if (s.entries.empty()) {
          // Nothing to time: wait on the mutex, not on the clock.
          s.mu.Await(absl::Condition(&s, &Shared::HasWorkLocked));
          continue;
        }
        const absl::Time first = s.entries.begin()->first.first;
        if (s.clock.Now() >= first) break;  // Due.
        // Woken by the deadline, an earlier entry or shutdown; the loop then looks again (the
        // entry may also have been cancelled meanwhile).
        s.waiting_until = first;
        s.clock.AwaitWithDeadline(&s.mu, absl::Condition(&s, &Shared::EarlierOrShutdownLocked),
                                  first);
        s.waiting_until = absl::InfiniteFuture();
      }
      due = std::move(s.entries.begin()->second);
      s.entries.erase(s.entries.begin());
    }
    // Outside the lock: the callback may schedule or cancel, or shut the timer down. It must not
    // block on a full executor either (later deadlines would be missed).
    try {
      const NonBlockingScope non_blocking;
      due();
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      std::fprintf(stderr, "concurry: a Timer callback threw and was ignored: %s: %s\n",
                   ExceptionTypeName(error).c_str(), ExceptionMessage(error).c_str());
    }
    due = nullptr;
  }
}

}  // namespace concurry

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

struct Timer::Shared : std::enable_shared_from_this<Shared> {
  explicit Shared(Clock& clock) : clock(clock) {}

  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return shutdown || !entries.empty();
  }
  // Wakes the thread waiting for `waiting_until` when an earlier deadline arrives.
  bool EarlierOrShutdownLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return shutdown || (!entries.empty() && entries.begin()->first.first < waiting_until);
  }

  Clock& clock;
  // The process this state belongs to.
  const pid_t pid = internal::CurrentPid();
  mutable absl::Mutex mu;
  std::map<std::pair<absl::Time, uint64_t>, Callback> entries ABSL_GUARDED_BY(mu);
  uint64_t next_sequence ABSL_GUARDED_BY(mu) = 1;
  absl::Time waiting_until ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  bool shutdown ABSL_GUARDED_BY(mu) = false;
  // Started by the first Schedule (never once `shutdown` is set); taken by Shutdown.
  std::thread thread ABSL_GUARDED_BY(mu);
};

Timer::Timer(Clock& clock) : clock_(clock), owned_(std::make_shared<Shared>(clock)) {
  shared_.store(owned_.get(), std::memory_order_release);
}

Timer::~Timer() { Shutdown(); }

Timer::Shared& Timer::Here() const {
  Shared* shared = shared_.load(std::memory_order_acquire);
  if (shared->pid == internal::CurrentPid()) return *shared;
  // A fork()ed child. Its first thread here installs a state of its own. The parent's state is
  // neither locked nor destroyed: its mutex may record the parent's timer thread as a waiter
  // (waking that thread, which does not exist here, would leave the mutex to it for ever) or
  // even as its holder, and its std::thread must not be joined or destroyed.
  absl::MutexLock lock(&fork_mu_);
  shared = shared_.load(std::memory_order_acquire);
  if (shared->pid != internal::CurrentPid()) {
    static_cast<void>(new std::shared_ptr<Shared>(std::move(owned_)));  // Leaked on purpose.
    owned_ = std::make_shared<Shared>(clock_);
    shared = owned_.get();
    shared_.store(shared, std::memory_order_release);
  }
  return *shared;
}

Timer::Id Timer::Schedule(absl::Time deadline, Callback callback) {
  if (!callback) throw InvalidOptionError("Timer::Schedule: the callback is empty");
  Shared& s = Here();
  absl::MutexLock lock(&s.mu);
  if (s.shutdown) {
    throw StoppedError("Timer::Schedule: the timer has been shut down");
  }
  if (!s.thread.joinable()) {
    s.thread = std::thread([shared = s.shared_from_this()] { Loop(shared); });
  }
  const Id id{deadline, s.next_sequence++};
  s.entries.emplace(std::make_pair(id.deadline, id.sequence), std::move(callback));
  return id;
}

Timer::Id Timer::ScheduleAfter(absl::Duration delay, Callback callback) {
  return Schedule(clock_.Now() + std::max(delay, absl::ZeroDuration()), std::move(callback));
}

bool Timer::Cancel(const Id& id) {
  Callback removed;  // Destroyed after unlocking.
  Shared& s = Here();
  absl::MutexLock lock(&s.mu);
  auto it = s.entries.find(std::make_pair(id.deadline, id.sequence));
  if (it == s.entries.end()) return false;
  removed = std::move(it->second);
  s.entries.erase(it);
  return true;
}

void Timer::Shutdown() {
  std::map<std::pair<absl::Time, uint64_t>, Callback> dropped;  // Destroyed after unlocking.
  std::thread thread;
  Shared& s = Here();
  {
    absl::MutexLock lock(&s.mu);
    s.shutdown = true;
    dropped.swap(s.entries);
    thread = std::move(s.thread);
  }
  if (!thread.joinable()) return;
  if (thread.get_id() == std::this_thread::get_id()) {
    thread.detach();  // Called from a callback: the loop ends by itself; it owns the state too.
  } else {
    thread.join();
  }
}

size_t Timer::pending() const {
  Shared& s = Here();
  absl::MutexLock lock(&s.mu);
  return s.entries.size();
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

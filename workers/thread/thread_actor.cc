#include "workers/thread/thread_actor.h"

#include <atomic>
#include <memory>
#include <thread>

#include "futures/executor.h"

namespace concurry::workers_internal {
namespace {

// How long an idle dedicated thread spins on its mailbox before it sleeps. Pipelined callers
// refill the mailbox within a few microseconds; sleeping and waking costs more than this.
constexpr int kIdleSpins = 2000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

void ThreadActor::OnStart() {
  thread_ = std::thread(
      [self = std::static_pointer_cast<ThreadActor>(shared_from_this())] { self->Loop(); });
}

void ThreadActor::Loop() {
  for (;;) {
    // Acquire pairs with Schedule's release (the actor's lock orders the mailbox itself).
    for (int i = 0; i < kIdleSpins && work_.load(std::memory_order_acquire) == 0; ++i) CpuRelax();
    uint32_t asked;
    while ((asked = work_.exchange(0, std::memory_order_acquire)) == 0) {
      work_.wait(0, std::memory_order_acquire);
    }
    const bool open = (asked & kDrain) == 0 || Drain(kNoBudget);
    AfterDrain();
    if (!open) return;
  }
}

void ThreadActor::Schedule() {
  if (!SendNowScope::Active() && !stop_requested() && ActorCore::Current() == nullptr &&
      !NonBlockingScope::Active() && SendsOnCaller()) {
    // While the scope lives, the drain's own reschedule (of what it leaves) goes to the thread.
    const SendNowScope send_now;
    // One call that only sends (not a retried one, which waits for its attempts), never a stop.
    DrainOneOnCaller();
    return;
  }
  work_.fetch_or(kDrain, std::memory_order_release);
  work_.notify_one();
}

void ThreadActor::Poke() {
  work_.fetch_or(kPoke, std::memory_order_release);
  work_.notify_one();
}

ThreadActor::~ThreadActor() {
  // The thread holds a reference until Loop returns, so this runs either on that thread (which
  // then cannot join itself) or after it has left Loop.
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }
}

}  // namespace concurry::workers_internal

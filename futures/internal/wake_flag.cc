#include "futures/internal/wake_flag.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"

namespace concurry::futures_internal {
namespace {

void FutexWake(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// Sleeps while *word == value, for at most `timeout` (null: no limit). Spurious returns are fine:
// the caller checks again.
void FutexWait(std::atomic<uint32_t>* word, uint32_t value, const timespec* timeout) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, value, timeout, nullptr,
          0);
}

}  // namespace

void WakeFlag::Set() noexcept {
  // Release: publishes what the setter wrote. Only a waiter that announced its sleep needs the
  // system call.
  if (state_.exchange(kSet, std::memory_order_acq_rel) == kSleeping) FutexWake(&state_);
}

bool WakeFlag::Park(absl::Time deadline) noexcept {
  for (;;) {
    uint32_t state = state_.load(std::memory_order_acquire);
    if (state == kSet) return true;
    // Announce the sleep, so that Set wakes us; a Set in between makes the exchange fail.
    if (state == kUnset &&
        !state_.compare_exchange_strong(state, kSleeping, std::memory_order_acquire,
                                        std::memory_order_acquire)) {
      if (state == kSet) return true;
    }
    if (deadline == absl::InfiniteFuture()) {
      FutexWait(&state_, kSleeping, nullptr);
      continue;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return IsSet();
    const timespec timeout = absl::ToTimespec(std::min(left, absl::Hours(24)));
    FutexWait(&state_, kSleeping, &timeout);
  }
}

bool WakeFlag::WaitUntil(absl::Time deadline) noexcept {
  if (IsSet()) return true;
  if (!BlockingRegion::WouldCompensate()) return Park(deadline);
  // Inside a compensating executor's task: most waits are short, and adding a thread for them
  // costs more than the wait. Wait a moment first, then tell the executor.
  if (Park(std::min(absl::Now() + Clock::kBlockingGrace, deadline))) return true;
  if (deadline <= absl::Now()) return IsSet();
  BlockingRegion region;
  return Park(deadline);
}

}  // namespace concurry::futures_internal

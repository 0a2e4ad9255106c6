// WakeFlag: a one-shot flag one thread waits on and another sets, parked on a futex. The wait of
// a future on the real clock (Future::Wait, Result), where an absl::Mutex and its condition cost a
// mutex per wait, a slower hand-off and, with Debian's Abseil, a deadlock-graph update on every
// lock.
//
// Thread-safe: Set from any thread; one thread at a time in WaitUntil.
//
// Memory order: Set's exchange is a release and the waiter's loads are acquires, so whatever the
// setter wrote before Set is visible to a waiter that sees the flag set.

#ifndef CONCURRY_FUTURES_INTERNAL_WAKE_FLAG_H_
#define CONCURRY_FUTURES_INTERNAL_WAKE_FLAG_H_

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace concurry::futures_internal {

class WakeFlag {
 public:
  // Sets the flag and wakes the waiter, if one sleeps. Never blocks.
  void Set() noexcept;
  bool IsSet() const noexcept { return state_.load(std::memory_order_acquire) == kSet; }
  // Blocks until Set() or until absl::Now() >= `deadline` (absl::InfiniteFuture(): no limit).
  // Returns IsSet(). Inside a compensating executor's task, a wait that lasts
  // Clock::kBlockingGrace becomes a BlockingRegion (futures/executor.h), as every wait of the
  // library does.
  bool WaitUntil(absl::Time deadline) noexcept;

 private:
  static constexpr uint32_t kUnset = 0;
  static constexpr uint32_t kSet = 1;
  static constexpr uint32_t kSleeping = 2;  // Unset, and the waiter sleeps (or is about to).

  // Parks until the flag is set or `deadline` passes.
  bool Park(absl::Time deadline) noexcept;

  std::atomic<uint32_t> state_{kUnset};
};

}  // namespace concurry::futures_internal

#endif  // CONCURRY_FUTURES_INTERNAL_WAKE_FLAG_H_

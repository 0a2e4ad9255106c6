// RateLock: the spin lock RateLimiter keeps next to a locked algorithm's state (RateState's lock
// slot), built for the case it exists for: a few threads calling TryAcquire() on one limiter as
// fast as they can, each critical section a few dozen instructions on one cache line.
//
//   limits_internal::RateLock* lock = new (state->lock_slot()) limits_internal::RateLock();
//   {
//     limits_internal::RateLockHolder hold(lock);
//     state->TryAcquire(now, 1);
//   }

#ifndef CONCURRY_LIMITS_INTERNAL_RATE_LOCK_H_
#define CONCURRY_LIMITS_INTERNAL_RATE_LOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"

namespace concurry {
namespace limits_internal {

// A test-and-test-and-set lock whose waiters back off exponentially (in CPU pause hints: x86
// `pause`, about 20 ns here; aarch64 `isb`) before looking at the lock word again. The lock word
// shares its cache line with the state it guards, so every look by a waiter pulls that line away
// from the holder in the middle of its critical section, and the holder's next write pulls it
// back: with a waiter polling after every `pause`, as internal::SpinLock does, two cores trade
// the line several times per call. Backing off lets the holder finish (and often take the lock
// again while the line is still in its cache) before the waiter looks.
//
// The cost: a waiter's first look comes after kFirstBackoff pauses (about 160 ns on x86) even
// when the holder's section takes 20 ns, and later looks 16, 32 and 64 pauses apart. The figures
// in docs/limits.md measure two threads calling without pause; a waiter that arrives just before
// an unlock is not measured there. A preempted holder costs each waiter about 310 pauses of
// spinning (the ramp, then kYieldAfter looks at the longest backoff), then a yield of its CPU on
// every look until the holder runs again. Not fair, and nothing bounds a waiter's wait: a holder
// that takes the lock again before the waiter looks keeps it (this only becomes unlikely as the
// waiter's looks go on). Hold it only for short sections that never block or call user code;
// position-independent (one 32-bit word), trivially destructible. Thread-safe.
//
// Memory ordering: Lock's successful exchange acquires and Unlock's store releases, so what one
// holder wrote happens-before the next holder's section; the waiters' looks are relaxed.
class ABSL_LOCKABLE RateLock {
 public:
  RateLock() = default;
  RateLock(const RateLock&) = delete;
  RateLock& operator=(const RateLock&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    if (locked_.exchange(1, std::memory_order_acquire) != 0) LockSlow();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() { locked_.store(0, std::memory_order_release); }

 private:
  static constexpr int kFirstBackoff = 8;  // Pause hints before the first look.
  static constexpr int kLastBackoff = 64;  // The longest backoff: about 1.3 us on x86.
  static constexpr int kYieldAfter = 4;

  void LockSlow();

  std::atomic<uint32_t> locked_{0};
};

// Holds a RateLock for its lifetime. Not thread-safe; confine to one scope.
class ABSL_SCOPED_LOCKABLE RateLockHolder {
 public:
  explicit RateLockHolder(RateLock* lock) ABSL_EXCLUSIVE_LOCK_FUNCTION(lock) : lock_(lock) {
    lock_->Lock();
  }
  ~RateLockHolder() ABSL_UNLOCK_FUNCTION() { lock_->Unlock(); }
  RateLockHolder(const RateLockHolder&) = delete;
  RateLockHolder& operator=(const RateLockHolder&) = delete;

 private:
  RateLock* const lock_;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_RATE_LOCK_H_

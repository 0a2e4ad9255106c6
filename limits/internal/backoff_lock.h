// BackoffLock: the spin lock of the limits component's hot paths: RateLimiter keeps one in
// RateState's lock slot, next to a locked algorithm's state, and an in-process LimitSet keeps one
// at the head of its shared header, on the cache line with the words an acquisition writes. Built
// for what both see: a few threads calling as fast as they can, each critical section a few dozen
// instructions on one cache line, never blocking and never calling user code.
//
//   BackoffLock* lock = new (state->lock_slot()) BackoffLock();
//   {
//     BackoffLockHolder hold(lock);
//     state->TryAcquire(now, 1);
//   }

#ifndef CONCURRY_LIMITS_INTERNAL_BACKOFF_LOCK_H_
#define CONCURRY_LIMITS_INTERNAL_BACKOFF_LOCK_H_

#include <atomic>
#include <cstdint>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"

namespace concurry {
namespace limits_internal {

// A test-and-test-and-set lock whose waiters back off exponentially, in CPU pause hints (x86
// `pause`, about 20 ns here; aarch64 `isb`, tens of ns; elsewhere a relaxed load of the lock
// word), before looking at the lock word again, and then yield their CPU.
//
// Why not internal::SpinLock: the lock word shares its cache line with the state it guards, so
// every look by a waiter pulls that line away from the holder in the middle of its critical
// section, and the holder's next write pulls it back. With a waiter polling after every pause,
// as internal::SpinLock does, two cores trade the line several times per section. Backing off
// lets the holder finish (and often take the lock again while the line is still in its cache)
// before the waiter looks.
//
// The cost: a waiter's first look comes kFirstBackoff pauses (about 160 ns on x86) after it found
// the lock held, even when the holder's section takes 20 ns; later looks come 16, 32 and 64
// pauses apart. A waiter that has spun for about 6 us (312 pauses: the ramp, then kYieldAfter
// looks at the longest backoff) assumes the holder was preempted and yields its CPU before every
// further look, until it gets the lock. Not fair, and nothing bounds a waiter's wait: a holder
// that takes the lock again before the waiter looks keeps it (this only becomes unlikely as the
// waiter's looks go on).
//
// An uncontended Lock() is one inline exchange; Unlock() is one store. Position-independent (one
// 32-bit word, 0 when free) and trivially destructible, so it may live in a placement-new'd slot.
// Thread-safe.
//
// For threads of one process only. If a holder dies while holding it, the lock stays held for
// good: nothing detects the death or recovers the lock, and every later Lock() spins forever.
// Within one process a holder dies only with the process, and its waiters with it; between
// processes, one may be killed mid-section, so state shared between processes needs a lock that
// recovers: a LimitSharing::kProcesses LimitSet takes a RobustMutex (process_shared.h) instead.
// Both users here (RateLimiter, an in-process LimitSet) take it only in process-private memory;
// a kProcesses set's shared header has the word but never takes it.
//
// Memory ordering: Lock's successful exchange acquires and Unlock's store releases, so what one
// holder wrote happens-before the next holder's section; the waiters' looks are relaxed.
class ABSL_LOCKABLE BackoffLock {
 public:
  BackoffLock() = default;
  BackoffLock(const BackoffLock&) = delete;
  BackoffLock& operator=(const BackoffLock&) = delete;

  // Takes the lock, spinning (then yielding) while another thread holds it.
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    if (ABSL_PREDICT_FALSE(locked_.exchange(1, std::memory_order_acquire) != 0)) LockSlow();
  }
  // Lets go of the lock; the caller holds it.
  void Unlock() ABSL_UNLOCK_FUNCTION() { locked_.store(0, std::memory_order_release); }

 private:
  static constexpr int kFirstBackoff = 8;  // Pause hints before the first look.
  static constexpr int kLastBackoff = 64;  // The longest backoff: about 1.3 us on x86.
  static constexpr int kYieldAfter = 4;    // Looks at kLastBackoff before yielding.

  // Lock() once the first exchange found the lock held: out of line, so the fast path stays small.
  void LockSlow();

  std::atomic<uint32_t> locked_{0};
};

// Holds a BackoffLock for its lifetime. Not thread-safe; confine to one scope.
class ABSL_SCOPED_LOCKABLE BackoffLockHolder {
 public:
  explicit BackoffLockHolder(BackoffLock* lock) ABSL_EXCLUSIVE_LOCK_FUNCTION(lock) : lock_(lock) {
    lock_->Lock();
  }
  ~BackoffLockHolder() ABSL_UNLOCK_FUNCTION() { lock_->Unlock(); }
  BackoffLockHolder(const BackoffLockHolder&) = delete;
  BackoffLockHolder& operator=(const BackoffLockHolder&) = delete;

 private:
  BackoffLock* const lock_;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_BACKOFF_LOCK_H_

// RateLimiter: one rate limit (capacity per window) run by one of concurry's five algorithms —
// TokenBucket, LeakyBucket, SlidingWindow (default), FixedWindow, GCRA — on an injected Clock.
// TokenBucket and GCRA are lock-free (one compare-exchange per admitted request).
//
//   concurry::RateLimiter limiter({.algorithm = concurry::RateLimitAlgorithm::kGcra,
//                                  .capacity = 100, .window = absl::Seconds(1), .burst = 10});
//   if (!limiter.TryAcquire(1)) {
//     absl::Duration retry_after = limiter.TimeUntilAvailable(1);
//   }
//   bool admitted = limiter.Acquire(5, /*timeout=*/absl::Milliseconds(200));

#ifndef CONCURRY_LIMITS_RATE_LIMITER_H_
#define CONCURRY_LIMITS_RATE_LIMITER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "limits/internal/backoff_lock.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/rate_atomic_window.h"
#include "limits/rate_window.h"

namespace concurry {

// What a RateLimiter enforces: `capacity` units per `window`.
struct RateLimiterOptions {
  RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm;
  // Units per window: > 0; +infinity means unlimited. TokenBucket and GCRA accept fractions
  // (0.0001, 1e-300); the others count whole units: from 1 to kMaxWholeUnits (2^53 - 1).
  double capacity = 0;
  // From 1 ns to kMaxRateWindow (100 years); see ParseRateWindow() for concurry's names.
  absl::Duration window = absl::Seconds(1);
  // The most units admitted at once; unset means the capacity. Same meaning and checks as
  // RateLimitOptions::burst (limits/limit.h): GCRA and TokenBucket tolerance, LeakyBucket depth,
  // not accepted (unless equal to the capacity) by the window algorithms.
  std::optional<double> burst;
};

// A snapshot of a RateLimiter (concurry's get_stats()).
struct RateLimiterStats {
  RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm;
  double capacity = 0;
  absl::Duration window;
  // capacity / window in units per second.
  double max_rate = 0;
  // The most units admitted at once (the options' burst, else the capacity).
  double burst = 0;
  // Units counted against the burst now: tokens missing from the bucket (TokenBucket, GCRA),
  // queue size (LeakyBucket), units admitted in the current window (window algorithms).
  double in_use = 0;
  // burst - in_use.
  double available = 0;
  // in_use / burst, in [0, 1] (0 when the capacity is infinite).
  double utilization = 0;
  // The algorithm's own state (GCRA's TAT and tolerance, a bucket's tokens or level, a window's
  // start and count).
  RateAlgorithmStats state;
};

// A rate limiter with concurry's semantics (reference §5.3) and two of its bugs fixed: LeakyBucket
// keeps the fractional leak between checks (no starvation under frequent checks), and FixedWindow
// windows are aligned to the clock (window i covers [i*W, (i+1)*W) since the Unix epoch).
//
// TokenBucket and GCRA share one lock-free implementation (a bucket's "time at which it is full
// again" is GCRA's theoretical arrival time) and differ only in name; both start full, accept
// fractional amounts and support Refund(). FixedWindow is lock-free too while its window and
// count fit one word (a capacity below 2^40, and for about 3/4 * 2^(64 - bit width of the
// capacity) windows after construction and 1/4 of that before: 150 days and 50 days for 10^9 per
// millisecond); past that, or at a first use before that, it moves to the locked path for good. The
// others take a short spin lock kept on the same cache line as their state, and all three accept
// whole amounts only.
//
// Every method that takes an amount throws InvalidOptionError if it is not positive and finite,
// if it is fractional (or above kMaxWholeUnits) and the algorithm is not TokenBucket or GCRA, or if
// it exceeds the burst (the capacity by default; such a request could never be admitted). Acquire()
// blocks on the clock until the exact time the request can be admitted or the timeout expires; a
// Refund() wakes blocked acquirers. Do not destroy a limiter while a thread is blocked in
// Acquire(). Thread-safe.
class RateLimiter {
 public:
  // Throws InvalidOptionError, naming the option, the value and the allowed range, unless
  // `options.algorithm` is a known value, `options.capacity` is > 0 (from 1 to kMaxWholeUnits for
  // the algorithms that count whole units; +infinity means unlimited) and `options.window` is
  // from 1 ns to kMaxRateWindow, and `options.burst` is unset or valid (RateLimitOptions::burst).
  // `clock` must outlive the limiter. FixedWindow reads it once here: the windows its lock-free
  // word can hold start a quarter of their range before that reading.
  explicit RateLimiter(const RateLimiterOptions& options, Clock& clock = Clock::Real());
  ~RateLimiter();

  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Takes `amount` units if available now and returns true; otherwise returns false, taking
  // nothing. Never blocks.
  bool TryAcquire(double amount = 1);

  // Returns whether TryAcquire(`amount`) would succeed now, taking nothing.
  bool CanAcquire(double amount = 1) const;

  // Takes `amount` units, blocking until they are available. Returns true once taken, or false
  // when `timeout` (on the limiter's clock) expires first. Throws InvalidOptionError for a
  // negative timeout (zero tries once).
  bool Acquire(double amount = 1, absl::Duration timeout = absl::InfiniteDuration())
      ABSL_LOCKS_EXCLUDED(wait_mu_);

  // Returns whether Refund() is supported: true for TokenBucket and GCRA.
  bool SupportsRefund() const;

  // Gives back `amount` unused units (never above the capacity) and wakes blocked acquirers.
  // Throws InvalidOptionError if the algorithm does not support refunds or `amount` is not
  // positive and finite.
  void Refund(double amount) ABSL_LOCKS_EXCLUDED(wait_mu_);

  // Returns how long from now until TryAcquire(`amount`) could succeed if nothing else is taken
  // (a retry-after); zero if it would succeed now.
  absl::Duration TimeUntilAvailable(double amount = 1) const;

  // Returns a snapshot of the limiter's state.
  RateLimiterStats Stats() const;

  // Returns the options the limiter was built with.
  const RateLimiterOptions& options() const { return options_; }

 private:
  // Throws InvalidOptionError unless `amount` is valid for this limiter.
  void CheckAmount(double amount, const char* method) const;
  bool TryAcquireAt(int64_t now, double amount);
  int64_t WaitNsAt(int64_t now, double amount) const;
  // Hands the lock-free FixedWindow's state over to `state_` unless done (the word is out of
  // range or retired).
  void RetireWindowLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(*lock_);

  // Read-only after construction: the hot path reads these lines and never writes them.
  const RateLimiterOptions options_;
  Clock& clock_;
  // The algorithm's state. TokenBucket and GCRA are lock-free; `*lock_` serializes the others.
  const limits_internal::OwnedRateState state_;
  // In `state_`'s lock slot (RateLayout::kLockSlot), next to the algorithm's state; null for
  // TokenBucket and GCRA.
  limits_internal::BackoffLock* const lock_;
  // FixedWindow while it fits one word (AtomicFixedWindow::Fits()); null otherwise. Once retired,
  // `state_` (under `*lock_`) holds the window.
  const std::unique_ptr<limits_internal::AtomicFixedWindow> window_;

  // Slow path of Acquire(): blocked acquirers wait on the clock with `wait_mu_`; Refund() bumps
  // `generation_` when `waiters_` (seq_cst, see AtomicGcra) is non-zero.
  absl::Mutex wait_mu_;
  uint64_t generation_ ABSL_GUARDED_BY(wait_mu_) = 0;
  std::atomic<int> waiters_{0};
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_RATE_LIMITER_H_

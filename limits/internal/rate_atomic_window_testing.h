// For tests: RateLimiter's lock-free FixedWindow word together with its hand-over, on one thread.
// RateLimiter (limits/rate_limiter.cc) runs the word until it answers kOutOfRange or kRetired,
// then hands it over (AtomicFixedWindow::RetireInto()) to a fresh locked FixedWindow, used from
// then on. This class does the same without the lock, so tests can compare the pair against a
// plain FixedWindow reading by reading.
//
//   limits_internal::HandingOverWindow window(/*capacity=*/10, /*window_ns=*/1000, /*now=*/0);
//   bool admitted = window.TryAcquire(/*now=*/5, /*amount=*/3);

#ifndef CONCURRY_LIMITS_INTERNAL_RATE_ATOMIC_WINDOW_TESTING_H_
#define CONCURRY_LIMITS_INTERNAL_RATE_ATOMIC_WINDOW_TESTING_H_

#include <cstdint>

#include "limits/internal/rate_algorithms.h"
#include "limits/internal/rate_atomic_window.h"
#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {

// Not thread-safe.
class HandingOverWindow {
 public:
  // `capacity` must fit the word (AtomicFixedWindow::Fits()).
  HandingOverWindow(double capacity, int64_t window_ns, int64_t now)
      : word_(capacity, window_ns, now),
        locked_(RateLimitAlgorithm::kFixedWindow, capacity, window_ns) {}

  bool TryAcquire(int64_t now, uint64_t amount) {
    switch (word_.TryAcquire(now, amount)) {
      case AtomicFixedWindow::Outcome::kAdmitted:
        return true;
      case AtomicFixedWindow::Outcome::kRejected:
        return false;
      case AtomicFixedWindow::Outcome::kOutOfRange:
      case AtomicFixedWindow::Outcome::kRetired:
        break;
    }
    word_.RetireInto(*locked_);
    retired_ = true;
    return locked_->TryAcquire(now, static_cast<double>(amount));
  }
  int64_t WaitNs(int64_t now, uint64_t amount) {
    int64_t wait;
    if (word_.WaitNs(now, amount, &wait)) return wait;
    return locked_->WaitNs(now, static_cast<double>(amount));
  }
  double InUse(int64_t now) {
    double in_use;
    if (word_.InUse(now, &in_use)) return in_use;
    return locked_->InUse(now);
  }
  // Whether the word was handed over (the locked FixedWindow answers from then on).
  bool retired() const { return retired_; }

 private:
  AtomicFixedWindow word_;
  OwnedRateState locked_;
  bool retired_ = false;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_RATE_ATOMIC_WINDOW_TESTING_H_

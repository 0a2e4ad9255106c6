#include "limits/rate_limiter.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <string>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/internal/future_state.h"
#include "limits/internal/backoff_lock.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/rate_atomic_window.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

using limits_internal::BackoffLockHolder;

int64_t ToNanos(absl::Time time) { return absl::ToUnixNanos(time); }

const RateLimiterOptions& Validated(const RateLimiterOptions& options) {
  if (absl::Status status =
          limits_internal::ValidateRateParams(options.algorithm, options.capacity, options.window);
      !status.ok()) {
    throw InvalidOptionError(absl::StrCat("RateLimiterOptions::", status.message()));
  }
  if (options.burst.has_value()) {
    if (absl::Status status = limits_internal::ValidateBurst(options.algorithm, options.capacity,
                                                             options.window, *options.burst);
        !status.ok()) {
      throw InvalidOptionError(absl::StrCat("RateLimiterOptions::", status.message()));
    }
  }
  return options;
}

ABSL_ATTRIBUTE_NOINLINE ABSL_ATTRIBUTE_NORETURN void ThrowBadAmount(
    const limits_internal::RateState& state, double amount, const char* method) {
  throw InvalidOptionError(absl::StrCat("RateLimiter::", method, ": ", state.AmountError(amount)));
}

// The locked algorithms keep their lock on the cache line of their state.
limits_internal::RateLayout LayoutFor(RateLimitAlgorithm algorithm) {
  return limits_internal::CountsWholeUnits(algorithm) ? limits_internal::RateLayout::kLockSlot
                                                      : limits_internal::RateLayout::kPacked;
}

limits_internal::BackoffLock* LockIn(const limits_internal::OwnedRateState& state) {
  static_assert(sizeof(limits_internal::BackoffLock) <=
                    limits_internal::RateState::kLockSlotBytes &&
                alignof(limits_internal::BackoffLock) <= 8);
  if (state->lock_free()) return nullptr;
  return new (state->lock_slot()) limits_internal::BackoffLock();
}

std::unique_ptr<limits_internal::AtomicFixedWindow> AtomicWindowFor(
    const RateLimiterOptions& options, Clock& clock) {
  if (options.algorithm != RateLimitAlgorithm::kFixedWindow ||
      !limits_internal::AtomicFixedWindow::Fits(options.capacity)) {
    return nullptr;
  }
  return std::make_unique<limits_internal::AtomicFixedWindow>(
      options.capacity, absl::ToInt64Nanoseconds(options.window), ToNanos(clock.Now()));
}

}  // namespace

RateLimiter::RateLimiter(const RateLimiterOptions& options, Clock& clock)
    : options_(Validated(options)),
      clock_(clock),
      state_(options.algorithm, options.capacity, absl::ToInt64Nanoseconds(options.window),
             options.burst.value_or(limits_internal::kDefaultBurst), LayoutFor(options.algorithm)),
      lock_(LockIn(state_)),
      window_(AtomicWindowFor(options, clock)) {}

RateLimiter::~RateLimiter() = default;

void RateLimiter::CheckAmount(double amount, const char* method) const {
  // One branch on the hot path; the message is built out of line.
  if (ABSL_PREDICT_FALSE(!state_->ValidAmount(amount))) ThrowBadAmount(*state_, amount, method);
}

bool RateLimiter::TryAcquireAt(int64_t now, double amount) {
  if (state_->lock_free()) return state_->TryAcquire(now, amount);
  if (window_ != nullptr) {
    // Whole amounts from 1 to the capacity (CheckAmount()).
    switch (window_->TryAcquire(now, static_cast<uint64_t>(amount))) {
      case limits_internal::AtomicFixedWindow::Outcome::kAdmitted:
        return true;
      case limits_internal::AtomicFixedWindow::Outcome::kRejected:
        return false;
      case limits_internal::AtomicFixedWindow::Outcome::kOutOfRange:
      case limits_internal::AtomicFixedWindow::Outcome::kRetired:
        break;
    }
    BackoffLockHolder holder(lock_);
    RetireWindowLocked();
    return state_->TryAcquire(now, amount);
  }
  BackoffLockHolder holder(lock_);
  return state_->TryAcquire(now, amount);
}

int64_t RateLimiter::WaitNsAt(int64_t now, double amount) const {
  if (state_->lock_free()) return state_->WaitNs(now, amount);
  int64_t wait;
  if (window_ != nullptr && window_->WaitNs(now, static_cast<uint64_t>(amount), &wait)) {
    return wait;
  }
  // Retired (under the lock, before the retiring thread released it) if window_ is set.
  BackoffLockHolder holder(lock_);
  return state_->WaitNs(now, amount);
}

void RateLimiter::RetireWindowLocked() const {
  // A reading past the range rolls past the carried window in this same lock hold.
  window_->RetireInto(*state_);
}

bool RateLimiter::TryAcquire(double amount) {
  CheckAmount(amount, "TryAcquire");
  return TryAcquireAt(ToNanos(clock_.Now()), amount);
}

bool RateLimiter::CanAcquire(double amount) const {
  CheckAmount(amount, "CanAcquire");
  return WaitNsAt(ToNanos(clock_.Now()), amount) == 0;
}

absl::Duration RateLimiter::TimeUntilAvailable(double amount) const {
  CheckAmount(amount, "TimeUntilAvailable");
  return absl::Nanoseconds(WaitNsAt(ToNanos(clock_.Now()), amount));
}

bool RateLimiter::Acquire(double amount, absl::Duration timeout) {
  CheckAmount(amount, "Acquire");
  futures_internal::CheckTimeout(timeout, "RateLimiter::Acquire");
  absl::Time now = clock_.Now();
  if (TryAcquireAt(ToNanos(now), amount)) return true;
  const absl::Time deadline = now + timeout;  // Saturates to InfiniteFuture().
  absl::MutexLock lock(&wait_mu_);
  // Registered before every retry below, so a Refund() that the retry misses sees the waiter
  // (both sides seq_cst) and bumps `generation_`, which it can only do once we wait or return.
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  bool admitted = false;
  for (;;) {
    now = clock_.Now();
    const int64_t now_ns = ToNanos(now);
    if (TryAcquireAt(now_ns, amount)) {
      admitted = true;
      break;
    }
    if (now >= deadline) break;
    const absl::Time ready = now + absl::Nanoseconds(WaitNsAt(now_ns, amount));
    const uint64_t generation = generation_;
    const auto refunded = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(wait_mu_) {
      return generation_ != generation;
    };
    clock_.AwaitWithDeadline(&wait_mu_, absl::Condition(&refunded),
                             ready < deadline ? ready : deadline);
  }
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return admitted;
}

bool RateLimiter::SupportsRefund() const { return state_->supports_refund(); }

void RateLimiter::Refund(double amount) {
  if (!SupportsRefund()) {
    throw InvalidOptionError(
        absl::StrCat("RateLimiter::Refund: ", RateLimitAlgorithmName(options_.algorithm),
                     " does not support refunds; only TokenBucket and GCRA do"));
  }
  if (!(amount > 0) || !std::isfinite(amount)) {
    throw InvalidOptionError(
        absl::StrCat("RateLimiter::Refund: amount must be positive and finite, got ",
                     limits_internal::FormatNumber(amount)));
  }
  state_->Refund(ToNanos(clock_.Now()), amount);
  if (waiters_.load(std::memory_order_seq_cst) > 0) {
    absl::MutexLock lock(&wait_mu_);
    ++generation_;
  }
}

RateLimiterStats RateLimiter::Stats() const {
  RateLimiterStats stats;
  stats.algorithm = options_.algorithm;
  stats.capacity = options_.capacity;
  stats.window = options_.window;
  stats.max_rate = options_.capacity / absl::ToDoubleSeconds(options_.window);
  stats.burst = state_->burst();
  const int64_t now = ToNanos(clock_.Now());
  double in_use;
  if (state_->lock_free()) {
    stats.state = state_->Snapshot(now, &stats.in_use);
  } else if (window_ != nullptr && window_->InUse(now, &in_use)) {
    // RateState::Snapshot()'s figures for FixedWindow, from the word; `state_` stays untouched
    // (fresh) for RetireWindowLocked().
    stats.state.burst = state_->burst();
    stats.state.max_rate = state_->capacity() / (static_cast<double>(state_->window_ns()) / 1e9);
    stats.state.window_start =
        absl::FromUnixNanos(limits_internal::FixedWindow(options_.capacity, state_->window_ns())
                                .WindowStart(state_->ClampNow(now)));
    stats.state.window_count = in_use;
    stats.in_use = in_use;
  } else {
    BackoffLockHolder holder(lock_);
    stats.state = state_->Snapshot(now, &stats.in_use);
  }
  stats.available = stats.burst - stats.in_use;
  if (std::isinf(options_.capacity)) return stats;
  stats.utilization = stats.in_use / stats.burst;
  return stats;
}

}  // namespace concurry

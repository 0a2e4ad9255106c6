#include "limits/rate_limiter.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/internal/spin_lock.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

using internal::SpinLockHolder;

int64_t ToNanos(absl::Time time) { return absl::ToUnixNanos(time); }

const RateLimiterOptions& Validated(const RateLimiterOptions& options) {
  if (!(options.capacity > 0)) {
    throw InvalidOptionError(absl::StrCat(
        "RateLimiter capacity must be > 0 (+infinity means unlimited), got ", options.capacity));
  }
  if (absl::Status status = ValidateRateWindow(options.window); !status.ok()) {
    throw InvalidOptionError(absl::StrCat("RateLimiter ", status.message()));
  }
  return options;
}

bool IsGcraLike(RateLimitAlgorithm algorithm) {
  return algorithm == RateLimitAlgorithm::kTokenBucket || algorithm == RateLimitAlgorithm::kGcra;
}

std::unique_ptr<limits_internal::LockedRateAlgorithm> MakeLocked(const RateLimiterOptions& options,
                                                                 int64_t window_ns) {
  switch (options.algorithm) {
    case RateLimitAlgorithm::kLeakyBucket:
      return std::make_unique<limits_internal::LeakyBucket>(options.capacity, window_ns);
    case RateLimitAlgorithm::kSlidingWindow:
      return std::make_unique<limits_internal::SlidingWindow>(options.capacity, window_ns);
    case RateLimitAlgorithm::kFixedWindow:
      return std::make_unique<limits_internal::FixedWindow>(options.capacity, window_ns);
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      break;
  }
  return nullptr;
}

ABSL_ATTRIBUTE_NOINLINE ABSL_ATTRIBUTE_NORETURN void ThrowBadAmount(
    const RateLimiterOptions& options, double amount, const char* method) {
  const absl::string_view name = RateLimitAlgorithmName(options.algorithm);
  if (!(amount > 0) || !std::isfinite(amount)) {
    throw InvalidOptionError(absl::StrCat("RateLimiter::", method,
                                          ": amount must be positive and finite, got ", amount));
  }
  if (amount > options.capacity) {
    throw InvalidOptionError(absl::StrCat("RateLimiter::", method, ": requested amount (", amount,
                                          ") exceeds capacity (", options.capacity, ") of this ",
                                          name, " limiter; this request can never be fulfilled"));
  }
  throw InvalidOptionError(absl::StrCat("RateLimiter::", method, ": ", name,
                                        " accepts only whole amounts, got ", amount,
                                        "; use TokenBucket or GCRA for fractional amounts"));
}

}  // namespace

RateLimiter::RateLimiter(const RateLimiterOptions& options, Clock& clock)
    : options_(Validated(options)),
      clock_(clock),
      window_ns_(absl::ToInt64Nanoseconds(options.window)),
      unlimited_(std::isinf(options.capacity)),
      whole_amounts_(!IsGcraLike(options.algorithm)) {
  if (IsGcraLike(options.algorithm)) {
    gcra_ = std::make_unique<limits_internal::AtomicGcra>(window_ns_);
  } else {
    SpinLockHolder holder(&lock_);
    locked_ = MakeLocked(options, window_ns_);
  }
}

RateLimiter::~RateLimiter() = default;

void RateLimiter::CheckAmount(double amount, const char* method) const {
  // One branch on the hot path; the message is built out of line.
  if (ABSL_PREDICT_FALSE(!(amount > 0) || !std::isfinite(amount) || amount > options_.capacity ||
                         (whole_amounts_ && amount != std::floor(amount)))) {
    ThrowBadAmount(options_, amount, method);
  }
}

bool RateLimiter::TryAcquireAt(int64_t now, double amount) {
  if (unlimited_) return true;
  if (gcra_ != nullptr) {
    return gcra_->TryAcquire(now, limits_internal::GcraCost(amount, options_.capacity, window_ns_));
  }
  SpinLockHolder holder(&lock_);
  return locked_->TryAcquire(now, amount);
}

int64_t RateLimiter::WaitNsAt(int64_t now, double amount) const {
  if (unlimited_) return 0;
  if (gcra_ != nullptr) {
    return limits_internal::GcraWaitNs(
        gcra_->tat(), now, limits_internal::GcraCost(amount, options_.capacity, window_ns_),
        window_ns_);
  }
  SpinLockHolder holder(&lock_);
  return locked_->WaitNs(now, amount);
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

bool RateLimiter::SupportsRefund() const { return IsLockFree(); }

void RateLimiter::Refund(double amount) {
  if (!SupportsRefund()) {
    throw InvalidOptionError(
        absl::StrCat("RateLimiter::Refund: ", RateLimitAlgorithmName(options_.algorithm),
                     " does not support refunds; only TokenBucket and GCRA do"));
  }
  if (!(amount > 0) || !std::isfinite(amount)) {
    throw InvalidOptionError(
        absl::StrCat("RateLimiter::Refund: amount must be positive and finite, got ", amount));
  }
  if (unlimited_) return;
  gcra_->Refund(ToNanos(clock_.Now()),
                limits_internal::GcraCost(amount, options_.capacity, window_ns_));
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
  if (unlimited_) {
    stats.available = options_.capacity;
    return stats;
  }
  const int64_t now = ToNanos(clock_.Now());
  if (gcra_ != nullptr) {
    stats.available =
        limits_internal::GcraAvailable(gcra_->tat(), now, options_.capacity, window_ns_);
    stats.in_use = options_.capacity - stats.available;
  } else {
    SpinLockHolder holder(&lock_);
    stats.in_use = locked_->InUse(now);
    stats.available = options_.capacity - stats.in_use;
  }
  stats.utilization = stats.in_use / options_.capacity;
  return stats;
}

}  // namespace concurry

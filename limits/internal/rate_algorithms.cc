#include "limits/internal/rate_algorithms.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace concurry {
namespace limits_internal {

int64_t GcraCost(double amount, double capacity, int64_t window_ns) {
  const double cost = std::floor(amount / capacity * static_cast<double>(window_ns));
  if (!(cost < static_cast<double>(window_ns))) return window_ns;  // Also catches overflow.
  if (cost < 1) return 1;
  return static_cast<int64_t>(cost);
}

double GcraAvailable(int64_t tat, int64_t now, double capacity, int64_t window_ns) {
  if (tat <= now) return capacity;
  const double used = static_cast<double>(tat - now) / static_cast<double>(window_ns);
  return std::max(0.0, capacity * (1 - used));
}

// ---- LeakyBucket ----

void LeakyBucket::Leak(int64_t now) {
  if (level_ <= 0) {
    level_ = 0;
    last_leak_ = now;
    return;
  }
  if (now <= last_leak_) return;
  const double elapsed = static_cast<double>(now - last_leak_);
  const double leaked = std::floor(elapsed * capacity_ / static_cast<double>(window_ns_));
  if (leaked <= 0) return;
  if (leaked >= level_) {
    level_ = 0;
    last_leak_ = now;
    return;
  }
  level_ -= leaked;
  // Advance by the time the whole tokens took, not to `now`: the fraction carries over.
  last_leak_ += static_cast<int64_t>(leaked * static_cast<double>(window_ns_) / capacity_);
}

bool LeakyBucket::TryAcquire(int64_t now, double amount) {
  Leak(now);
  if (level_ + amount > capacity_) return false;
  level_ += amount;
  return true;
}

void LeakyBucket::Charge(int64_t now, double amount) {
  Leak(now);
  level_ += amount;
}

int64_t LeakyBucket::WaitNs(int64_t now, double amount) {
  Leak(now);
  const double excess = level_ + amount - capacity_;
  if (excess <= 0) return 0;
  // Whole tokens must leak; the k-th leaks at last_leak_ + ceil(k * T).
  const double tokens = std::ceil(excess);
  const int64_t at =
      last_leak_ +
      static_cast<int64_t>(std::ceil(tokens * static_cast<double>(window_ns_) / capacity_));
  return std::max<int64_t>(at - now, 1);
}

double LeakyBucket::InUse(int64_t now) {
  Leak(now);
  return level_;
}

// ---- SlidingWindow ----

int64_t SlidingWindow::SlotsFor(double capacity) {
  if (!(capacity < static_cast<double>(kMaxSlots))) return kMaxSlots;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(capacity)));
}

SlidingWindow::SlidingWindow(double capacity, int64_t window_ns, Entry* ring)
    : capacity_(capacity),
      window_ns_(window_ns),
      slots_(SlotsFor(capacity)),
      // One entry per slice of ceil(W / kMaxSlots): a window touches at most kMaxSlots + 1
      // slices, and the rare overflow joins the newest entry.
      merge_ns_(capacity > static_cast<double>(kMaxSlots) ? (window_ns + kMaxSlots - 1) / kMaxSlots
                                                          : 0),
      ring_offset_(reinterpret_cast<char*>(ring) - reinterpret_cast<char*>(this)) {}

void SlidingWindow::Expire(int64_t now) {
  while (size_ > 0 && at(0).time <= now - window_ns_) {
    count_ -= at(0).amount;
    head_ = (head_ + 1) % slots_;
    --size_;
  }
  if (size_ == 0) count_ = 0;
}

void SlidingWindow::Record(int64_t now, double amount) {
  // Callers read the clock before taking the lock, so `now` may be slightly behind the newest
  // entry; recording the later time keeps the log sorted and only delays that entry's expiry.
  if (size_ > 0) {
    Entry& newest = at(size_ - 1);
    const bool same_slice = merge_ns_ > 0 && Slice(newest.time) == Slice(now);
    if (newest.time >= now || same_slice || size_ == slots_) {
      newest.amount += amount;
      newest.time = std::max(newest.time, now);
      count_ += amount;
      return;
    }
  }
  at(size_) = Entry{now, amount};
  ++size_;
  count_ += amount;
}

bool SlidingWindow::TryAcquire(int64_t now, double amount) {
  Expire(now);
  if (count_ + amount > capacity_) return false;
  Record(now, amount);
  return true;
}

void SlidingWindow::Charge(int64_t now, double amount) {
  Expire(now);
  Record(now, amount);
}

int64_t SlidingWindow::WaitNs(int64_t now, double amount) {
  Expire(now);
  double excess = count_ + amount - capacity_;
  if (excess <= 0) return 0;
  for (int64_t i = 0; i < size_; ++i) {
    excess -= at(i).amount;
    if (excess <= 0) return std::max<int64_t>(at(i).time + window_ns_ - now, 1);
  }
  return window_ns_;  // Unreachable for amount <= capacity.
}

double SlidingWindow::InUse(int64_t now) {
  Expire(now);
  return count_;
}

// ---- FixedWindow ----

int64_t FixedWindow::WindowIndex(int64_t now) const {
  int64_t index = now / window_ns_;
  if (now % window_ns_ < 0) --index;  // Floor division for times before the epoch.
  return index;
}

void FixedWindow::Roll(int64_t now) {
  const int64_t index = WindowIndex(now);
  if (index > index_) {
    index_ = index;
    count_ = 0;
  }
}

bool FixedWindow::TryAcquire(int64_t now, double amount) {
  Roll(now);
  if (count_ + amount > capacity_) return false;
  count_ += amount;
  return true;
}

void FixedWindow::Charge(int64_t now, double amount) {
  Roll(now);
  count_ += amount;
}

int64_t FixedWindow::WaitNs(int64_t now, double amount) {
  Roll(now);
  if (count_ + amount <= capacity_) return 0;
  return (index_ + 1) * window_ns_ - now;
}

double FixedWindow::InUse(int64_t now) {
  Roll(now);
  return count_;
}

// ---- RateState ----

namespace {

constexpr size_t RoundUp8(size_t n) { return (n + 7) / 8 * 8; }

bool IsGcraLike(RateLimitAlgorithm algorithm) {
  return algorithm == RateLimitAlgorithm::kTokenBucket || algorithm == RateLimitAlgorithm::kGcra;
}

size_t BodyBytes(RateLimitAlgorithm algorithm, double capacity) {
  switch (algorithm) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return RoundUp8(sizeof(AtomicGcra));
    case RateLimitAlgorithm::kLeakyBucket:
      return RoundUp8(sizeof(LeakyBucket));
    case RateLimitAlgorithm::kSlidingWindow:
      return RoundUp8(sizeof(SlidingWindow)) +
             static_cast<size_t>(SlidingWindow::SlotsFor(capacity)) * sizeof(SlidingWindow::Entry);
    case RateLimitAlgorithm::kFixedWindow:
      return RoundUp8(sizeof(FixedWindow));
  }
  return 0;
}

}  // namespace

const size_t RateState::kBodyOffset = RoundUp8(sizeof(RateState));

size_t RateState::BytesFor(RateLimitAlgorithm algorithm, double capacity) {
  return kBodyOffset + (std::isinf(capacity) ? 0 : BodyBytes(algorithm, capacity));
}

RateState::RateState(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns)
    : algorithm_(algorithm),
      capacity_(capacity),
      window_ns_(window_ns),
      lock_free_(IsGcraLike(algorithm)),
      unlimited_(std::isinf(capacity)) {}

RateState* RateState::Create(void* memory, RateLimitAlgorithm algorithm, double capacity,
                             int64_t window_ns) {
  auto* state = new (memory) RateState(algorithm, capacity, window_ns);
  if (state->unlimited_) return state;
  void* body = state->body();
  switch (algorithm) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      new (body) AtomicGcra(window_ns);
      break;
    case RateLimitAlgorithm::kLeakyBucket:
      new (body) LeakyBucket(capacity, window_ns);
      break;
    case RateLimitAlgorithm::kSlidingWindow:
      new (body) SlidingWindow(capacity, window_ns,
                               reinterpret_cast<SlidingWindow::Entry*>(
                                   static_cast<char*>(body) + RoundUp8(sizeof(SlidingWindow))));
      break;
    case RateLimitAlgorithm::kFixedWindow:
      new (body) FixedWindow(capacity, window_ns);
      break;
  }
  return state;
}

std::string RateState::AmountError(double amount) const {
  const absl::string_view name = RateLimitAlgorithmName(algorithm_);
  if (!(amount > 0) || !std::isfinite(amount)) {
    return absl::StrCat("amount must be positive and finite, got ", amount);
  }
  if (amount > capacity_) {
    return absl::StrCat("requested amount (", amount, ") exceeds capacity (", capacity_,
                        ") of this ", name, " limit; this request can never be fulfilled");
  }
  return absl::StrCat(name, " accepts only whole amounts, got ", amount,
                      "; use TokenBucket or GCRA for fractional amounts");
}

bool RateState::TryAcquire(int64_t now, double amount) {
  if (unlimited_) return true;
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return gcra().TryAcquire(now, Cost(amount));
    case RateLimitAlgorithm::kLeakyBucket:
      return leaky().TryAcquire(now, amount);
    case RateLimitAlgorithm::kSlidingWindow:
      return sliding().TryAcquire(now, amount);
    case RateLimitAlgorithm::kFixedWindow:
      return fixed().TryAcquire(now, amount);
  }
  return false;
}

int64_t RateState::WaitNs(int64_t now, double amount) {
  if (unlimited_) return 0;
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return GcraWaitNs(gcra().tat(), now, Cost(amount), window_ns_);
    case RateLimitAlgorithm::kLeakyBucket:
      return leaky().WaitNs(now, amount);
    case RateLimitAlgorithm::kSlidingWindow:
      return sliding().WaitNs(now, amount);
    case RateLimitAlgorithm::kFixedWindow:
      return fixed().WaitNs(now, amount);
  }
  return 0;
}

double RateState::InUse(int64_t now) {
  if (unlimited_) return 0;
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return capacity_ - GcraAvailable(gcra().tat(), now, capacity_, window_ns_);
    case RateLimitAlgorithm::kLeakyBucket:
      return leaky().InUse(now);
    case RateLimitAlgorithm::kSlidingWindow:
      return sliding().InUse(now);
    case RateLimitAlgorithm::kFixedWindow:
      return fixed().InUse(now);
  }
  return 0;
}

void RateState::Refund(int64_t now, double amount) {
  if (unlimited_ || !lock_free_) return;
  gcra().Refund(now, Cost(amount));
}

void RateState::Charge(int64_t now, double amount) {
  if (unlimited_) return;
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      // Not GcraCost(): an over-use may exceed the capacity, and the cost must not be clamped.
      gcra().Charge(
          now,
          std::max<int64_t>(1, static_cast<int64_t>(std::min(
                                   amount / capacity_ * static_cast<double>(window_ns_),
                                   static_cast<double>(std::numeric_limits<int64_t>::max() / 4)))));
      return;
    case RateLimitAlgorithm::kLeakyBucket:
      leaky().Charge(now, amount);
      return;
    case RateLimitAlgorithm::kSlidingWindow:
      sliding().Charge(now, amount);
      return;
    case RateLimitAlgorithm::kFixedWindow:
      fixed().Charge(now, amount);
      return;
  }
}

}  // namespace limits_internal
}  // namespace concurry

#include "limits/internal/rate_algorithms.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

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

void SlidingWindow::Expire(int64_t now) {
  while (!log_.empty() && log_.front().time <= now - window_ns_) {
    count_ -= log_.front().amount;
    log_.pop_front();
  }
  if (log_.empty()) count_ = 0;
}

bool SlidingWindow::TryAcquire(int64_t now, double amount) {
  Expire(now);
  if (count_ + amount > capacity_) return false;
  // Callers read the clock before taking the lock, so `now` may be slightly behind the newest
  // entry; recording the later time keeps the log sorted and only delays that entry's expiry.
  if (!log_.empty() && log_.back().time >= now) {
    log_.back().amount += amount;
  } else {
    log_.push_back({now, amount});
  }
  count_ += amount;
  return true;
}

int64_t SlidingWindow::WaitNs(int64_t now, double amount) {
  Expire(now);
  double excess = count_ + amount - capacity_;
  if (excess <= 0) return 0;
  for (const Entry& entry : log_) {
    excess -= entry.amount;
    if (excess <= 0) return entry.time + window_ns_ - now;
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

int64_t FixedWindow::WaitNs(int64_t now, double amount) {
  Roll(now);
  if (count_ + amount <= capacity_) return 0;
  return (index_ + 1) * window_ns_ - now;
}

double FixedWindow::InUse(int64_t now) {
  Roll(now);
  return count_;
}

}  // namespace limits_internal
}  // namespace concurry

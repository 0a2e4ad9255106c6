#include "limits/internal/rate_atomic_window.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <limits>

#include "limits/internal/rate_algorithms.h"

namespace concurry {
namespace limits_internal {

bool AtomicFixedWindow::Fits(double capacity) {
  return capacity >= 1 && capacity < static_cast<double>(uint64_t{1} << kMaxCountBits);
}

AtomicFixedWindow::AtomicFixedWindow(double capacity, int64_t window_ns, int64_t now)
    : capacity_(static_cast<uint64_t>(capacity)),
      window_ns_(static_cast<uint64_t>(window_ns)),
      max_now_(std::numeric_limits<int64_t>::max() - window_ns),
      count_bits_(static_cast<int>(std::bit_width(capacity_))) {
  count_mask_ = (uint64_t{1} << count_bits_) - 1;
  const int offset_bits = 64 - count_bits_;  // At least 64 - kMaxCountBits.
  // Window indices as FixedWindow counts them: floor(time / window_ns).
  const FixedWindow windows(capacity, window_ns);
  const int64_t index = windows.WindowIndex(Clamp(now));
  // The first window (it may start before INT64_MIN: then its start exists only modulo 2^64)
  // and the last one a clamped clock reaches.
  const int64_t first = windows.WindowIndex(std::numeric_limits<int64_t>::min());
  const int64_t last = windows.WindowIndex(max_now_);
  // A quarter of the offsets before the window of `now`, without going below `first`.
  const uint64_t before = uint64_t{1} << (offset_bits - 2);
  base_ = static_cast<uint64_t>(index) - static_cast<uint64_t>(first) < before
              ? first
              : index - static_cast<int64_t>(before);
  base_start_ = static_cast<uint64_t>(base_) * window_ns_;  // Modulo 2^64.
  min_now_ = base_ == first ? std::numeric_limits<int64_t>::min() : base_ * window_ns;
  // The top offset stays clear of all ones (kRetiredWord); last - base_ < 2^64 (both are window
  // indices of int64 times).
  max_offset_ = std::min((uint64_t{1} << offset_bits) - 2,
                         static_cast<uint64_t>(last) - static_cast<uint64_t>(base_));
}

bool AtomicFixedWindow::IsLater(int64_t now, uint64_t offset, uint64_t* now_offset) const {
  if (now < min_now_) return false;  // Before the base window: the stored window is later.
  // now - (the base window's start) is in [0, 2^64), so the difference modulo 2^64 is exact;
  // offset * W <= (last - base_) * W < 2^64 likewise.
  const uint64_t since_base = static_cast<uint64_t>(now) - base_start_;
  const uint64_t start = offset * window_ns_;
  // The usual case, the stored window, costs two comparisons and no division.
  if (since_base < start || since_base - start < window_ns_) return false;
  *now_offset = since_base / window_ns_;
  return true;
}

AtomicFixedWindow::Outcome AtomicFixedWindow::TryAcquire(int64_t now, uint64_t amount) {
  now = Clamp(now);
  uint64_t word = word_.load(std::memory_order_acquire);
  for (;;) {
    if (word == kRetiredWord) return Outcome::kRetired;
    uint64_t offset = Offset(word);
    uint64_t count = Count(word);
    // Before the base window, an untouched word (offset 0, count 0: any admission leaves a count
    // of at least 1) has no window yet, as a fresh FixedWindow; counting the reading in the base
    // window would hold every later reading to one capacity until the clock reaches the base
    // window (years away for a large capacity). Hand over: the locked FixedWindow opens the
    // reading's own window. A touched word's window is current, and a reading before it counts
    // in it, as FixedWindow does.
    if (word == 0 && now < min_now_) return Outcome::kOutOfRange;
    uint64_t now_offset;
    if (IsLater(now, offset, &now_offset)) {
      if (now_offset > max_offset_) return Outcome::kOutOfRange;
      offset = now_offset;
      count = 0;
    }
    // A reading before the stored window (another thread's later reading won the race, or the
    // clock was set back) counts in the stored window, as FixedWindow::Roll() keeps it.
    if (amount > capacity_ - count) return Outcome::kRejected;  // count <= capacity_.
    if (word_.compare_exchange_weak(word, (offset << count_bits_) | (count + amount),
                                    std::memory_order_acq_rel, std::memory_order_acquire)) {
      return Outcome::kAdmitted;
    }
  }
}

bool AtomicFixedWindow::WaitNs(int64_t now, uint64_t amount, int64_t* wait) const {
  now = Clamp(now);
  const uint64_t word = word_.load(std::memory_order_acquire);
  if (word == kRetiredWord) return false;
  uint64_t now_offset;
  if (IsLater(now, Offset(word), &now_offset) || amount <= capacity_ - Count(word)) {
    *wait = 0;  // A new window admits any amount up to the capacity.
    return true;
  }
  // The stored window's end, (base_ + offset + 1) * W <= (last + 1) * W <= INT64_MAX, exists;
  // at least 1 ns away (a clock set back waits for the later window to end).
  const int64_t end = static_cast<int64_t>(base_start_ + (Offset(word) + 1) * window_ns_);
  *wait = std::max<int64_t>(SaturatingSub(end, now), 1);
  return true;
}

bool AtomicFixedWindow::InUse(int64_t now, double* in_use) const {
  now = Clamp(now);
  const uint64_t word = word_.load(std::memory_order_acquire);
  if (word == kRetiredWord) return false;
  uint64_t now_offset;
  *in_use = IsLater(now, Offset(word), &now_offset) ? 0 : static_cast<double>(Count(word));
  return true;
}

bool AtomicFixedWindow::Retire(int64_t* window_start, uint64_t* count) {
  uint64_t word = word_.load(std::memory_order_acquire);
  do {
    if (word == kRetiredWord) return false;
  } while (!word_.compare_exchange_weak(word, kRetiredWord, std::memory_order_acq_rel,
                                        std::memory_order_acquire));
  // Saturated as FixedWindow::WindowStart() (the first window starts before INT64_MIN).
  if (__builtin_mul_overflow(base_ + static_cast<int64_t>(Offset(word)),
                             static_cast<int64_t>(window_ns_), window_start)) {
    *window_start = std::numeric_limits<int64_t>::min();
  }
  *count = Count(word);
  return true;
}

void AtomicFixedWindow::RetireInto(RateState& locked) {
  int64_t window_start;
  uint64_t count;
  // A count of 0 is an untouched word (every admission leaves at least 1): `locked` stays fresh,
  // with no window yet, so that the reading that retired the word opens its own window (the base
  // window may lie far from it). Otherwise this sets its window to the stored one and its count
  // to `count` (see Retire() for when that matters).
  if (Retire(&window_start, &count) && count > 0) {
    locked.Charge(window_start, static_cast<double>(count));
  }
}

}  // namespace limits_internal
}  // namespace concurry

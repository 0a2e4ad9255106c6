// A lock-free FixedWindow for RateLimiter: the current window and its count packed in one 64-bit
// word, updated by compare-exchange, as AtomicGcra does for TokenBucket and GCRA. Same decisions
// as limits_internal::FixedWindow (windows aligned to the clock, a request of n admitted iff
// count + n <= capacity, a clock reading before the current window counted in that window) for
// the parameters and clock readings the word can represent; past them it hands over to the
// caller's locked FixedWindow (Retire()).
//
//   AtomicFixedWindow window(/*capacity=*/10, /*window_ns=*/1'000'000'000, /*now=*/clock_ns);
//   switch (window.TryAcquire(now, /*amount=*/3)) {
//     case AtomicFixedWindow::Outcome::kAdmitted: ...
//     case AtomicFixedWindow::Outcome::kRejected: ...
//     default: ...  // Take the lock, Retire(), use the locked FixedWindow from then on.
//   }

#ifndef CONCURRY_LIMITS_INTERNAL_RATE_ATOMIC_WINDOW_H_
#define CONCURRY_LIMITS_INTERNAL_RATE_ATOMIC_WINDOW_H_

#include <atomic>
#include <cstdint>

#include "limits/internal/rate_algorithms.h"
#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {

// The word holds (window offset << count_bits) | count, where count_bits is the bit width of
// floor(capacity) and the offset counts windows from a base chosen at construction: a quarter of
// the offsets lie before the window of `now` at construction (none before the window that
// contains INT64_MIN), the rest after it (up to the window of INT64_MAX - window_ns, the clamp of
// RateState). Offsets are exact (no truncated index, so no wrap-around can ever make an old
// window look new). The word starts untouched (offset 0, count 0; any admission leaves a count of
// at least 1). A reading past the last offset, or a reading before the base window while the
// word is untouched (it has no window yet, as a fresh FixedWindow), returns kOutOfRange, and the
// caller then moves to its locked FixedWindow for good. Once the word holds a window, a reading
// before it (the base window's included) counts in it, as FixedWindow counts any reading before
// its current window: that only admits less. With 10^9 per window (30 bits of count, 34 of
// offset), 1 ms windows reach about 150 days past construction and 50 days before it; with 2^30
// (31 bits) half that; 1 s windows reach centuries, up to the clamp near the year 2262.
//
// Counts never exceed the capacity (there is no Charge(): RateLimiter only admits), so a
// capacity up to 2^kMaxCountBits - 1 fits; Fits() tells. Amounts are whole numbers from 1 to the
// capacity, validated by the caller.
//
// Thread-safe. Memory ordering: the word is the whole state and guards no other data, so
// admission needs only the atomicity of the compare-exchange; loads are acquire and the exchanges
// acq_rel so that a thread that reads the retired mark and then takes the caller's lock sees the
// locked state the retiring thread set up (which it does under that lock before releasing it).
class alignas(kRateCacheLine) AtomicFixedWindow {
 public:
  // Counts need at most this many bits; the other 64 - count bits hold the window offset.
  static constexpr int kMaxCountBits = 40;

  // Returns whether a limit of `capacity` (a finite whole-unit capacity, >= 1) fits the word.
  static bool Fits(double capacity);

  // `capacity` must fit (Fits()); `window_ns` from 1 to kMaxRateWindow's; `now`: the clock at
  // construction, around which the representable windows are placed.
  AtomicFixedWindow(double capacity, int64_t window_ns, int64_t now);

  AtomicFixedWindow(const AtomicFixedWindow&) = delete;
  AtomicFixedWindow& operator=(const AtomicFixedWindow&) = delete;

  enum class Outcome {
    kAdmitted,
    kRejected,
    // `now` lies past the last window the word can hold: nothing changed; the caller retires
    // the word under its lock and uses its locked FixedWindow.
    kOutOfRange,
    // Retire() has run: the caller's locked FixedWindow holds the state.
    kRetired,
  };

  // Counts `amount` (whole, from 1 to the capacity) at `now` if it fits in the window.
  Outcome TryAcquire(int64_t now, uint64_t amount);

  // Sets `*wait` to the ns from `now` until `amount` would be admitted (0 if now) and returns
  // true; returns false once retired.
  bool WaitNs(int64_t now, uint64_t amount, int64_t* wait) const;

  // Sets `*in_use` to the amount counted in the window of `now` and returns true; false once
  // retired.
  bool InUse(int64_t now, double* in_use) const;

  // Replaces the word by the retired mark, from then on every call returns kRetired or false.
  // Returns false if already retired; otherwise true, with the start of the stored window in
  // `*window_start` and its count in `*count`, for the caller to carry over into its locked
  // FixedWindow: RateState::Charge(*window_start, *count) on a fresh state if `*count` > 0; a
  // count of 0 is an untouched word, whose base window must not become the locked state's.
  //
  // When the carry matters: RateLimiter retires on kOutOfRange. A reading past the range lies
  // past the stored window, so its own roll under the same lock drops the carried count before
  // any other thread reads the state. But a reading before the base window that found the word
  // untouched may retire it after another thread's in-range admission: it then must count in
  // that stored window, with its count, as FixedWindow would count it. Do not drop the carry.
  bool Retire(int64_t* window_start, uint64_t* count);
  // The hand-over: Retire(), then the carry into `locked`, a fresh FixedWindow RateState with
  // this word's parameters that the caller's lock guards (the same lock held for every later
  // use of `locked`). Does nothing if already retired.
  void RetireInto(RateState& locked);

 private:
  static constexpr uint64_t kRetiredWord = ~uint64_t{0};

  // `now`, at most INT64_MAX - window_ns_ (as RateState clamps it).
  int64_t Clamp(int64_t now) const { return now < max_now_ ? now : max_now_; }

  // The window offset and count stored in `word`.
  uint64_t Offset(uint64_t word) const { return word >> count_bits_; }
  uint64_t Count(uint64_t word) const { return word & count_mask_; }

  // Returns whether `now` (clamped) falls in a window after the one at `offset`, setting
  // `*now_offset` to its offset (possibly above max_offset_).
  bool IsLater(int64_t now, uint64_t offset, uint64_t* now_offset) const;

  // The word first, alone written: the other members are read-only after construction, so the
  // second cache line the object spans (from count_mask_ on) stays shared between the cores.
  std::atomic<uint64_t> word_{0};  // Untouched: offset 0 (the base window), count 0.
  uint64_t capacity_;              // floor(capacity).
  uint64_t window_ns_;
  int64_t base_;         // The window index at offset 0.
  uint64_t base_start_;  // Its start modulo 2^64 (the first window starts before INT64_MIN).
  int64_t min_now_;      // Readings before it lie before the base window.
  int64_t max_now_;
  uint64_t max_offset_;  // Below 2^(64 - count_bits_) - 1: no word equals kRetiredWord.
  uint64_t count_mask_;
  int count_bits_;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_RATE_ATOMIC_WINDOW_H_

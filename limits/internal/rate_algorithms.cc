#include "limits/internal/rate_algorithms.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <new>
#include <string>

#include "absl/base/attributes.h"
#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {

// ---- Parameters and numbers ----

bool CountsWholeUnits(RateLimitAlgorithm algorithm) {
  return algorithm != RateLimitAlgorithm::kTokenBucket && algorithm != RateLimitAlgorithm::kGcra;
}

absl::Status ValidateRateParams(RateLimitAlgorithm algorithm, double capacity,
                                absl::Duration window) {
  switch (algorithm) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kLeakyBucket:
    case RateLimitAlgorithm::kSlidingWindow:
    case RateLimitAlgorithm::kFixedWindow:
    case RateLimitAlgorithm::kGcra:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("algorithm: unknown value ", static_cast<int>(algorithm),
                       "; allowed: kTokenBucket, kLeakyBucket, kSlidingWindow, kFixedWindow, "
                       "kGcra"));
  }
  if (!CountsWholeUnits(algorithm)) {
    if (!(capacity > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("capacity must be > 0 (fractions allowed), or +infinity for unlimited, got ",
                       FormatNumber(capacity)));
    }
  } else if (!(capacity >= 1 && capacity <= kMaxWhole) &&
             capacity != std::numeric_limits<double>::infinity()) {
    std::string why;
    if (capacity > 0 && capacity < 1) {
      why = absl::StrCat("; ", RateLimitAlgorithmName(algorithm),
                         " counts whole units, so it could never admit anything (TokenBucket and "
                         "GCRA accept fractional capacities)");
    } else if (capacity > 1) {
      why =
          absl::StrCat("; ", RateLimitAlgorithmName(algorithm),
                       " counts whole units, which a double cannot count exactly beyond 2^53 - 1");
    }
    return absl::InvalidArgumentError(absl::StrCat("capacity must be from 1 to ", kMaxWholeUnits,
                                                   " (2^53 - 1), or +infinity for unlimited, got ",
                                                   FormatNumber(capacity), why));
  }
  if (absl::Status status = ValidateRateWindow(window); !status.ok()) return status;
  return absl::OkStatus();
}

absl::Status ValidateBurst(RateLimitAlgorithm algorithm, double capacity, absl::Duration window,
                           double burst) {
  if (burst == capacity) return absl::OkStatus();
  const std::string given = FormatNumber(burst);
  if (std::isinf(capacity)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "burst must be left unset for an unlimited (+infinity) capacity, got ", given));
  }
  switch (algorithm) {
    case RateLimitAlgorithm::kSlidingWindow:
    case RateLimitAlgorithm::kFixedWindow:
      return absl::InvalidArgumentError(
          absl::StrCat("burst must be unset or equal to the capacity (", FormatNumber(capacity),
                       ") for ", RateLimitAlgorithmName(algorithm),
                       ", which admits its whole capacity at once by definition, got ", given,
                       "; to admit at most ", given,
                       " at once, use kGcra, kTokenBucket or kLeakyBucket with this burst, or "
                       "capacity ",
                       given, " per ", absl::FormatDuration(window * (burst / capacity)),
                       " (the same average rate)"));
    case RateLimitAlgorithm::kLeakyBucket:
      if (!(burst >= 1 && burst <= kMaxWhole) || burst != std::floor(burst)) {
        return absl::InvalidArgumentError(
            absl::StrCat("burst must be a whole number from 1 to ", kMaxWholeUnits,
                         " (2^53 - 1) for leaky_bucket (the bucket's depth), got ", given));
      }
      break;
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      if (!(burst >= 1) || std::isinf(burst)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "burst must be >= 1 and finite (or equal to the capacity, the default) for ",
            RateLimitAlgorithmName(algorithm), ", got ", given));
      }
      break;
  }
  // The time a full burst takes to refill (GCRA's tolerance) or a full leaky bucket to drain,
  // burst * window / capacity, must stay within kMaxRateWindow, so that now + tau exists for every
  // clock reading the algorithms accept and every wait fits in int64 nanoseconds.
  const double tolerance = burst / capacity * static_cast<double>(absl::ToInt64Nanoseconds(window));
  if (!(tolerance <= static_cast<double>(absl::ToInt64Nanoseconds(kMaxRateWindow)))) {
    return absl::InvalidArgumentError(
        absl::StrCat("burst ", given, " is too large for ", FormatNumber(capacity), " per ",
                     absl::FormatDuration(window),
                     ": refilling or draining it (burst / capacity * window) would take ",
                     FormatNumber(tolerance / 1e9), "s, beyond the allowed ",
                     absl::FormatDuration(kMaxRateWindow)));
  }
  return absl::OkStatus();
}

int64_t GcraToleranceNs(double capacity, int64_t window_ns, double burst) {
  if (burst == kDefaultBurst || burst == capacity) return window_ns;
  // burst emission intervals, each rounded down to whole ns as GcraCost() rounds the cost of one
  // unit: a burst of single units then fits exactly, and the unit after it waits exactly one
  // rounded interval (45 per second, burst 5: the sixth waits 22222222 ns).
  const double interval = std::max(1.0, std::floor(static_cast<double>(window_ns) / capacity));
  const int64_t tolerance = SaturatingNanos(std::floor(burst * interval));
  return tolerance < 1 ? 1 : tolerance;
}

std::string FormatNumber(double value) {
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (std::isnan(value)) return "nan";
  const double magnitude = std::fabs(value);
  // Plain std::to_chars() picks whichever notation is shorter, which writes 0.0001 as "1e-04" and
  // 1000000 as "1e+06".
  const std::chars_format format = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16)
                                       ? std::chars_format::fixed
                                       : std::chars_format::scientific;
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value, format);
  return std::string(buffer, result.ptr);
}

// ---- GCRA ----

double GcraAvailable(int64_t tat, int64_t now, double burst, int64_t tolerance_ns) {
  if (tat <= now) return burst;
  const double used =
      static_cast<double>(SaturatingSub(tat, now)) / static_cast<double>(tolerance_ns);
  return std::max(0.0, burst * (1 - used));
}

// ---- Locked algorithms ----

namespace {

// How far `used` + `amount` goes beyond `capacity` (> 0: the request does not fit). Written so that
// it is exact for whole numbers up to kMaxWholeUnits: used - capacity is, and so is adding an
// amount to it, whereas used + amount may exceed 2^53 and round.
double Excess(double used, double amount, double capacity) { return (used - capacity) + amount; }

}  // namespace

// ---- LeakyBucket ----

LeakyBucket::LeakyBucket(double capacity, int64_t window_ns, double depth)
    : window_ns_(window_ns), depth_(depth) {
  // capacity = mantissa * 2^exponent, mantissa in [0.5, 1): M = mantissa * 2^53, s = 53 - exponent
  // (0 <= s <= 52 for 1 <= capacity < 2^53), then reduced.
  int exponent = 0;
  const double mantissa = std::frexp(capacity, &exponent);
  capacity_numerator_ = static_cast<uint64_t>(std::ldexp(mantissa, 53));
  capacity_shift_ = 53 - exponent;
  while (capacity_shift_ > 0 && capacity_numerator_ % 2 == 0) {
    capacity_numerator_ /= 2;
    --capacity_shift_;
  }
}

absl::uint128 LeakyBucket::LeaksBy(uint64_t elapsed) const {
  // floor(floor(e * M / 2^s) / W) = floor(e * M / (2^s * W)); e * M < 2^64 * 2^53.
  return ((absl::uint128(elapsed) * capacity_numerator_) >> capacity_shift_) /
         static_cast<uint64_t>(window_ns_);
}

uint64_t LeakyBucket::LeakTime(absl::uint128 tokens) const {
  constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
  if (tokens > LeaksBy(kNever)) return kNever;
  // LeaksBy(e) >= k  <=>  e * M >= k * W * 2^s, so e = ceil(k * W * 2^s / M); and
  // k * W * 2^s <= LeaksBy(2^64) * W * 2^s <= 2^64 * M < 2^117.
  const absl::uint128 scaled = (tokens * static_cast<uint64_t>(window_ns_)) << capacity_shift_;
  return absl::Uint128Low64((scaled + (capacity_numerator_ - 1)) / capacity_numerator_);
}

void LeakyBucket::Empty(int64_t now) {
  level_ = 0;
  origin_ = now;
  set_leaked(0);
}

// Inlined into its callers: it is most of their work, and a call per step costs ~1 ns.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline void LeakyBucket::Leak(int64_t now) {
  if (level_ <= 0) return Empty(now);
  if (now <= origin_) return;  // A clock set back leaks nothing.
  // now > origin_: the difference fits in 64 unsigned bits, whatever the two readings.
  const uint64_t elapsed = static_cast<uint64_t>(now) - static_cast<uint64_t>(origin_);
  uint64_t product;
  if (leaked_high_ == 0 && !__builtin_mul_overflow(elapsed, capacity_numerator_, &product) &&
      product < (uint64_t{1} << 53)) {
    // The usual case, in 64 bits: e * M < 2^53, so every count is below 2^53 and LeaksBy() is
    // one double division, exact after truncation (a / W just below an integer k rounds up to k
    // only if a >= k * W > 2^53; a W beyond 2^53 exceeds a). Much faster than 128 bits.
    const uint64_t total = static_cast<uint64_t>(static_cast<double>(product >> capacity_shift_) /
                                                 static_cast<double>(window_ns_));
    if (total <= leaked_low_) return;
    return Drain(now, static_cast<double>(total - leaked_low_), total);
  }
  const absl::uint128 total = LeaksBy(elapsed);
  if (total <= leaked()) return;
  Drain(now, static_cast<double>(total - leaked()), total);
}

void LeakyBucket::Drain(int64_t now, double fresh, absl::uint128 total) {
  if (fresh >= level_) return Empty(now);
  level_ -= fresh;
  set_leaked(total);
}

bool LeakyBucket::TryAcquire(int64_t now, double amount) {
  Leak(now);
  if (Excess(level_, amount, depth_) > 0) return false;
  level_ += amount;
  return true;
}

void LeakyBucket::Charge(int64_t now, double amount) {
  Leak(now);
  level_ = std::min(level_ + amount, kMaxWhole);
}

int64_t LeakyBucket::WaitNs(int64_t now, double amount) {
  Leak(now);
  const double excess = Excess(level_, amount, depth_);
  if (excess <= 0) return 0;
  // Not empty (level_ > depth_ - amount >= 0): whole tokens must leak, the k-th at
  // origin_ + LeakTime(k), saturated (a level raised by Charge() may take centuries to drain).
  // excess <= level_ <= kMaxWhole, so the count fits.
  const uint64_t after = LeakTime(leaked() + absl::uint128(std::ceil(excess)));
  const uint64_t room = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) -
                        static_cast<uint64_t>(origin_);  // Exact modulo 2^64: origin_ <= max.
  const int64_t at = after > room ? std::numeric_limits<int64_t>::max()
                                  : static_cast<int64_t>(static_cast<uint64_t>(origin_) + after);
  return std::max<int64_t>(SaturatingSub(at, now), 1);
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
      // One entry per slice of ceil(W / kMaxSlots): a window touches at most kMaxSlots + 1
      // slices, and the rare overflow joins the newest entry.
      merge_ns_(capacity > static_cast<double>(kMaxSlots) ? (window_ns + kMaxSlots - 1) / kMaxSlots
                                                          : 0),
      slots_(static_cast<int32_t>(SlotsFor(capacity))),
      // RateState lays the ring out right after the object.
      ring_offset_(
          static_cast<int32_t>(reinterpret_cast<char*>(ring) - reinterpret_cast<char*>(this))) {}

int64_t SlidingWindow::SliceLast(int64_t time) const {
  // Slice k > 0 covers [k * m, (k + 1) * m), slice 0 (-m, m), slice k < 0 ((k - 1) * m, k * m];
  // k * m lies between 0 and `time`, and the last ns at most time + m - 1 <= INT64_MAX (time is
  // at most INT64_MAX - W, and m <= W).
  const int64_t k = time / merge_ns_;
  return k >= 0 ? k * merge_ns_ + (merge_ns_ - 1) : k * merge_ns_;
}

// Inlined into its callers: it is most of their work, and a call per step costs ~1 ns.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline void SlidingWindow::Expire(int64_t now) {
  // time <= now - W, without computing now - W (which does not exist for the earliest clocks).
  while (size_ > 0 && SaturatingSub(now, at(0).time) >= window_ns_) {
    count_ -= at(0).amount;
    head_ = head_ + 1 < slots_ ? head_ + 1 : 0;
    --size_;
  }
  if (size_ == 0) count_ = 0;
}

// Inlined into its callers: it is most of their work, and a call per step costs ~1 ns.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline void SlidingWindow::Record(int64_t now, double amount) {
  // Callers read the clock before taking the lock, so `now` may be slightly behind the newest
  // entry; recording the later time keeps the log sorted and only delays that entry's expiry.
  if (size_ > 0) {
    Entry& newest = at(size_ - 1);
    // With newest.time < now, `now` is in the newest entry's slice iff it is not past the slice's
    // last ns (newest_slice_last_ is INT64_MIN without slices).
    if (newest.time >= now || now <= newest_slice_last_ || size_ == slots_) {
      newest.amount += amount;
      if (newest.time < now) {
        newest.time = now;
        // Only a full ring moves an entry to a later slice.
        if (merge_ns_ > 0 && now > newest_slice_last_) newest_slice_last_ = SliceLast(now);
      }
      count_ += amount;
      return;
    }
  }
  at(size_) = Entry{now, amount};
  ++size_;
  count_ += amount;
  if (merge_ns_ > 0) newest_slice_last_ = SliceLast(now);
}

bool SlidingWindow::TryAcquire(int64_t now, double amount) {
  Expire(now);
  if (Excess(count_, amount, capacity_) > 0) return false;
  Record(now, amount);
  return true;
}

void SlidingWindow::Charge(int64_t now, double amount) {
  Expire(now);
  amount = std::min(amount, kMaxWhole - count_);
  if (amount > 0) Record(now, amount);
}

int64_t SlidingWindow::WaitNs(int64_t now, double amount) {
  Expire(now);
  double excess = Excess(count_, amount, capacity_);
  if (excess <= 0) return 0;
  for (int64_t i = 0; i < size_; ++i) {
    excess -= at(i).amount;
    if (excess <= 0) {
      return std::max<int64_t>(SaturatingAdd(SaturatingSub(at(i).time, now), window_ns_), 1);
    }
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

int64_t FixedWindow::WindowStart(int64_t now) const {
  int64_t start;
  if (__builtin_mul_overflow(WindowIndex(now), window_ns_, &start)) {
    start = std::numeric_limits<int64_t>::min();
  }
  return start;
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
  if (Excess(count_, amount, capacity_) > 0) return false;
  count_ += amount;
  return true;
}

void FixedWindow::Charge(int64_t now, double amount) {
  Roll(now);
  count_ = std::min(count_ + amount, kMaxWhole);
}

int64_t FixedWindow::WaitNs(int64_t now, double amount) {
  Roll(now);
  if (Excess(count_, amount, capacity_) <= 0) return 0;
  // The current window's end, (index_ + 1) * W, exists when now <= INT64_MAX - W (its start may
  // not, before 1677); saturated all the same, and at least 1 ns away (a clock set back keeps the
  // later window).
  int64_t end;
  if (__builtin_mul_overflow(SaturatingAdd(index_, 1), window_ns_, &end)) {
    end = std::numeric_limits<int64_t>::max();
  }
  return std::max<int64_t>(SaturatingSub(end, now), 1);
}

double FixedWindow::InUse(int64_t now) {
  Roll(now);
  return count_;
}

// ---- RateState ----

namespace {

constexpr size_t RoundUp8(size_t n) { return (n + 7) / 8 * 8; }

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

// The header fits one cache line, so that kLockSlot's lock and state start the next one.
static_assert(sizeof(RateState) <= kRateCacheLine);
// The fields TryAcquire() touches lie in the first kRateCacheLine - kLockSlotBytes bytes of the
// locked algorithms (LeakyBucket: up to capacity_shift_; see the layout comments).
static_assert(sizeof(SlidingWindow) <= kRateCacheLine - RateState::kLockSlotBytes);
static_assert(sizeof(FixedWindow) <= kRateCacheLine - RateState::kLockSlotBytes);

size_t RateState::BodyOffset(RateLayout layout) {
  return layout == RateLayout::kLockSlot ? kRateCacheLine + kLockSlotBytes
                                         : RoundUp8(sizeof(RateState));
}

size_t RateState::BytesFor(RateLimitAlgorithm algorithm, double capacity, RateLayout layout) {
  return BodyOffset(layout) + (std::isinf(capacity) ? 0 : BodyBytes(algorithm, capacity));
}

RateState::RateState(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns, double burst,
                     RateLayout layout)
    : algorithm_(algorithm),
      body_offset_(static_cast<uint32_t>(BodyOffset(layout))),
      capacity_(capacity),
      window_ns_(window_ns),
      burst_(EffectiveBurst(capacity, burst)),
      tolerance_ns_(CountsWholeUnits(algorithm) ? 0 : GcraToleranceNs(capacity, window_ns, burst)),
      max_now_(std::numeric_limits<int64_t>::max() - std::max(window_ns, tolerance_ns_)),
      lock_free_(!CountsWholeUnits(algorithm)),
      unlimited_(std::isinf(capacity)) {}

RateState* RateState::Create(void* memory, RateLimitAlgorithm algorithm, double capacity,
                             int64_t window_ns, double burst, RateLayout layout) {
  auto* state = new (memory) RateState(algorithm, capacity, window_ns, burst, layout);
  if (state->unlimited_) return state;
  void* body = state->body();
  switch (algorithm) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      new (body) AtomicGcra(state->tolerance_ns_);
      break;
    case RateLimitAlgorithm::kLeakyBucket:
      new (body) LeakyBucket(capacity, window_ns, state->burst_);
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
    return absl::StrCat("amount must be positive and finite, got ", FormatNumber(amount));
  }
  if (amount > burst_) {
    if (burst_ != capacity_) {
      return absl::StrCat("requested amount (", FormatNumber(amount), ") exceeds the burst (",
                          FormatNumber(burst_), ") of this ", name, " limit (capacity ",
                          FormatNumber(capacity_), "); this request can never be fulfilled");
    }
    return absl::StrCat("requested amount (", FormatNumber(amount), ") exceeds capacity (",
                        FormatNumber(capacity_), ") of this ", name,
                        " limit; this request can never be fulfilled");
  }
  if (amount > kMaxWhole) {
    return absl::StrCat(name, " counts whole units, from 1 to ", kMaxWholeUnits,
                        " (2^53 - 1) at a time, got ", FormatNumber(amount));
  }
  return absl::StrCat(name, " accepts only whole amounts, got ", FormatNumber(amount),
                      "; use TokenBucket or GCRA for fractional amounts");
}

bool RateState::TryAcquire(int64_t now, double amount) {
  if (unlimited_) return true;
  now = Clamp(now);
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
  now = Clamp(now);
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return GcraWaitNs(gcra().tat(), now, Cost(amount), tolerance_ns_);
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
  now = Clamp(now);
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return burst_ - GcraAvailable(gcra().tat(), now, burst_, tolerance_ns_);
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
  now = Clamp(now);
  gcra().Refund(now, Cost(amount));
}

void RateState::Charge(int64_t now, double amount) {
  if (unlimited_) return;
  now = Clamp(now);
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      // Not GcraCost(): an over-use may exceed the capacity, and the cost must not be clamped
      // to the window (only saturated).
      gcra().Charge(now, std::max<int64_t>(1, SaturatingNanos(amount / capacity_ *
                                                              static_cast<double>(window_ns_))));
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

RateAlgorithmStats RateState::Snapshot(int64_t now, double* in_use) {
  RateAlgorithmStats stats;
  stats.burst = burst_;
  const double window_seconds = static_cast<double>(window_ns_) / 1e9;
  stats.max_rate = capacity_ / window_seconds;
  *in_use = InUse(now);
  if (unlimited_) return stats;
  now = Clamp(now);
  switch (algorithm_) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra: {
      stats.emission_interval = absl::Nanoseconds(static_cast<double>(window_ns_) / capacity_);
      stats.tolerance = absl::Nanoseconds(tolerance_ns_);
      const int64_t tat = gcra().tat();
      if (tat != kGcraInitialTat) stats.theoretical_arrival = absl::FromUnixNanos(tat);
      stats.tokens = burst_ - *in_use;
      break;
    }
    case RateLimitAlgorithm::kLeakyBucket:
      stats.emission_interval = absl::Nanoseconds(static_cast<double>(window_ns_) / capacity_);
      stats.level = *in_use;
      break;
    case RateLimitAlgorithm::kSlidingWindow:
      stats.window_start = absl::FromUnixNanos(now) - absl::Nanoseconds(window_ns_);
      stats.window_count = *in_use;
      break;
    case RateLimitAlgorithm::kFixedWindow:
      stats.window_start = absl::FromUnixNanos(fixed().WindowStart(now));
      stats.window_count = *in_use;
      break;
  }
  return stats;
}

}  // namespace limits_internal
}  // namespace concurry

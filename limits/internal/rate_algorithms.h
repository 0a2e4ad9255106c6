// The arithmetic of the five rate-limiting algorithms behind concurry::RateLimiter, with time as
// an argument (nanoseconds since the Unix epoch) so tests are tables of (now, request, outcome).
// Parameters are validated once, by ValidateRateParams(); amounts are validated by the callers
// (positive, finite, at most the capacity, whole numbers for LeakyBucket and the window
// algorithms). The nanosecond arithmetic never overflows: see "Overflow" below.
//
//   limits_internal::AtomicGcra gcra(/*window_ns=*/1'000'000'000);
//   int64_t cost = GcraCost(/*amount=*/1, /*capacity=*/10, /*window_ns=*/1'000'000'000);
//   bool admitted = gcra.TryAcquire(/*now=*/0, cost);
//   limits_internal::OwnedRateState fixed(RateLimitAlgorithm::kFixedWindow, /*capacity=*/10,
//                                         /*window_ns=*/1'000'000'000);
//   bool ok = fixed->TryAcquire(/*now=*/5, /*amount=*/3);

#ifndef CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_
#define CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <string>

#include "absl/base/macros.h"
#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {

// ---- Parameters, numbers and overflow --------------------------------------------------------
//
// Overflow: windows are at most kMaxRateWindow (about 2^61.5 ns) and whole-unit capacities at
// most kMaxWholeUnits, both checked at construction by ValidateRateParams(). Clock readings may be
// anything absl::ToUnixNanos() returns (it saturates at the int64 range, years 1677 and 2262):
// RateState clamps `now` to at most INT64_MAX - window_ns (or - tau, the GCRA tolerance, when an
// explicit burst makes it longer; see "Burst"), so that "now + window" always exists
// (time stands still for the limit after that point, ~2162 at the latest), and every other sum
// or difference of times that state or a backwards clock could push out of range saturates
// (SaturatingAdd() and friends) in the direction that admits less, never more.

// kMaxWholeUnits as a double (exact). The locked algorithms also count at most this many units
// in use: Charge() saturates there, so that every count stays exact.
inline constexpr double kMaxWhole = static_cast<double>(kMaxWholeUnits);

// Returns whether `algorithm` counts whole units (LeakyBucket, SlidingWindow, FixedWindow), as
// opposed to TokenBucket and GCRA, which accept fractional capacities and amounts.
bool CountsWholeUnits(RateLimitAlgorithm algorithm);

// Returns OK if `algorithm` is a known value, `capacity` is > 0 (+infinity means unlimited; for
// the algorithms that count whole units, from 1 to kMaxWholeUnits) and `window` is from 1 ns to
// kMaxRateWindow. Otherwise InvalidArgument whose message starts with the argument's name and
// gives the value and the allowed range ("capacity must be ..., got 0.5 ..."), for the caller to
// prefix with its own name.
absl::Status ValidateRateParams(RateLimitAlgorithm algorithm, double capacity,
                                absl::Duration window);

// The burst used when none is given: the capacity (a full window's worth at once).
inline constexpr double kDefaultBurst = 0;

// Returns the burst a limit runs with: `burst`, or `capacity` when `burst` is kDefaultBurst.
inline double EffectiveBurst(double capacity, double burst) {
  return burst == kDefaultBurst ? capacity : burst;
}

// Returns OK if `burst` (the most units admitted at once, as given by the user: kDefaultBurst is
// not special here) suits parameters that passed ValidateRateParams(). TokenBucket and GCRA: >= 1
// (fractions allowed) or equal to the capacity, finite. LeakyBucket: a whole number from 1 to
// kMaxWholeUnits. Both: burst / capacity * window (the refill or drain time of a full burst) at
// most kMaxRateWindow. SlidingWindow
// and FixedWindow: only the capacity (a window admits its whole capacity at once by definition). An
// infinite capacity takes no burst. Otherwise InvalidArgument starting with "burst", giving the
// value, the allowed range and, for the window algorithms, what to use instead.
absl::Status ValidateBurst(RateLimitAlgorithm algorithm, double capacity, absl::Duration window,
                           double burst);

// Returns the GCRA tolerance in ns for `burst` (validated): window_ns when it equals the
// capacity (or is kDefaultBurst), else floor(burst * T) with T = max(1, floor(window_ns /
// capacity)) the emission interval rounded down as GcraCost() rounds it (at most burst /
// capacity * window_ns), at least 1.
int64_t GcraToleranceNs(double capacity, int64_t window_ns, double burst);

// The shortest decimal form that reads back as `value`, in positional notation for magnitudes in
// [1e-4, 1e16) and in scientific notation outside it, as Python's repr() writes floats ("300",
// "0.0001", "9007199254740991", "1e-05", "1e+16", "inf", "nan"). For messages and signatures.
std::string FormatNumber(double value);

// `a + b` and `a - b`, saturated to the int64 range instead of overflowing.
inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return sum;
}
inline int64_t SaturatingSub(int64_t a, int64_t b) {
  int64_t difference;
  if (__builtin_sub_overflow(a, b, &difference)) {
    return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return difference;
}
// `ns` rounded toward zero, saturated to the int64 range (NaN gives the maximum). A plain cast of
// a double outside the range is undefined behaviour.
inline int64_t SaturatingNanos(double ns) {
  if (!(ns < 9223372036854775808.0)) return std::numeric_limits<int64_t>::max();  // 2^63, NaN.
  if (ns < -9223372036854775808.0) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(ns);
}

// ---- GCRA and TokenBucket (one algorithm) ------------------------------------------------------
//
// TokenBucket(capacity C per window W) and GCRA are the same algorithm written two ways: a bucket
// whose deficit is D tokens is full again after D * T, with T = W / C the emission interval. So
// both keep one number, the theoretical arrival time TAT ("the time at which the bucket is full
// again"): available tokens = C * (1 - max(0, TAT - now) / W). A request costing n * T is admitted
// iff max(TAT, now) + n * T - now <= W (tau = C * T = W), and then TAT = max(TAT, now) + n * T.
// A refund of n sets TAT = max(now, TAT - n * T), i.e. tokens = min(C, tokens + n).
//
// Overflow: the test max(TAT, now) + cost - now <= W is computed as
// SaturatingSub(max(TAT, now), now) <= W - cost (0 <= W - cost since cost <= W), so a TAT far
// from `now` (after a large Charge(), or a clock set back by centuries) rejects instead of
// wrapping around; an admitted request sets TAT <= now + W, which exists because `now` is at
// most INT64_MAX - W (RateState clamps it). Charge() and Refund() saturate.

// The TAT of a limiter no request has touched: "full" at any clock reading.
inline constexpr int64_t kGcraInitialTat = std::numeric_limits<int64_t>::min();

// Burst: with an explicit burst B (RateLimitOptions::burst), the emission interval stays
// T = W / C but the tolerance becomes tau = B * T (GcraToleranceNs(), with T rounded down to
// whole ns): at most B tokens at once, refilled at C per W. Every formula above holds with W
// replaced by tau and C by B; the default B = C gives tau = W exactly. `tolerance_ns` below is
// tau (W by default). Overflow: tau <= kMaxRateWindow (ValidateBurst()), and RateState clamps
// `now` to INT64_MAX - max(W, tau).

// Returns the cost in ns of `amount` tokens: floor(amount / capacity * window_ns), clamped to
// [1, tolerance_ns] (tolerance_ns defaults to window_ns). Rounding down guarantees a full burst
// fits in the tolerance (the rate may exceed the nominal one by less than 1 ns per request); the
// minimum of 1 ns caps the number of requests at 1e9 per second.
// Inline: LimitSet computes it for each rate limit of every acquisition.
inline int64_t GcraCost(double amount, double capacity, int64_t window_ns, int64_t tolerance_ns) {
  const double cost = std::floor(amount / capacity * static_cast<double>(window_ns));
  if (!(cost < static_cast<double>(tolerance_ns))) return tolerance_ns;  // Also catches overflow.
  if (cost < 1) return 1;
  return static_cast<int64_t>(cost);
}
inline int64_t GcraCost(double amount, double capacity, int64_t window_ns) {
  return GcraCost(amount, capacity, window_ns, window_ns);
}

// Returns the ns to wait from `now` until a request of `cost` (at most `tolerance_ns`) would be
// admitted (0 if now).
inline int64_t GcraWaitNs(int64_t tat, int64_t now, int64_t cost, int64_t tolerance_ns) {
  const int64_t wait = SaturatingSub(tat > now ? tat : now, now) - (tolerance_ns - cost);
  return wait > 0 ? wait : 0;
}

// The TAT after taking `cost` at `now` (the wait for it was 0, so no overflow): the GCRA take,
// shared by AtomicGcra's exclusive calls and LimitSet's hot words.
inline int64_t GcraTaken(int64_t tat, int64_t now, int64_t cost) {
  return (tat > now ? tat : now) + cost;
}

// The TAT after giving back `cost` (>= 1) at `now`, never below `now` (a full bucket stays full):
// the GCRA refund, shared as GcraTaken() is.
inline int64_t GcraRefunded(int64_t tat, int64_t now, int64_t cost) {
  if (tat <= now) return tat;
  const int64_t refunded = SaturatingSub(tat, cost);
  return refunded > now ? refunded : now;
}

// Whether a rate state of `algorithm` and `capacity` runs on a GCRA word its owner may drive with
// plain loads and stores under its own lock (RateState::exclusive_gcra(): TokenBucket and GCRA
// with a finite capacity). LimitSet gives such limits its hot words.
inline bool HasExclusiveGcra(RateLimitAlgorithm algorithm, double capacity) {
  return !CountsWholeUnits(algorithm) && !std::isinf(capacity);
}

// Returns the tokens available at `now` out of `burst` (the capacity by default).
double GcraAvailable(int64_t tat, int64_t now, double burst, int64_t tolerance_ns);

// The lock-free GCRA/TokenBucket state: one std::atomic<int64_t> holding the TAT in ns.
// TryAcquire() is one load and, when admitted, one compare-exchange (retried only when another
// thread changed the word in between). Thread-safe.
//
// Memory ordering: every operation on the word is memory_order_seq_cst. Admission needs only the
// atomicity of the compare-exchange (the word is the whole state and guards no other data), but
// RateLimiter's wake-up of blocked acquirers after a Refund() is a Dekker handshake (the refunder
// writes the TAT then reads the waiter count; a waiter bumps the count then reads the TAT), which
// needs both sides sequentially consistent. On x86-64 a seq_cst load is a plain load and a
// compare-exchange is `lock cmpxchg` either way, so this costs nothing on the hot path.
// The *Exclusive calls are the exception: relaxed plain loads and stores for an owner (LimitSet)
// that takes one lock around every access to the word, readers included.
class AtomicGcra {
 public:
  // `tolerance_ns`: tau, the window by default (see "Burst").
  explicit AtomicGcra(int64_t tolerance_ns) : tolerance_ns_(tolerance_ns) {}

  // Admits a request of `cost` (in [1, tolerance_ns]) at `now` (at most INT64_MAX -
  // tolerance_ns) and returns true, or returns false without change.
  bool TryAcquire(int64_t now, int64_t cost) {
    const int64_t slack = tolerance_ns_ - cost;  // Tolerance left for the time already owed.
    int64_t tat = tat_.load(std::memory_order_seq_cst);
    for (;;) {
      const int64_t base = tat > now ? tat : now;
      if (SaturatingSub(base, now) > slack) return false;
      // base + cost <= now + tolerance_ns: no overflow.
      if (tat_.compare_exchange_weak(tat, base + cost, std::memory_order_seq_cst)) return true;
    }
  }

  // Returns whether a request of `cost` would be admitted at `now`.
  bool CanAcquire(int64_t now, int64_t cost) const {
    return GcraWaitNs(tat(), now, cost, tolerance_ns_) == 0;
  }

  // Returns `cost` (>= 1) worth of tokens at `now` (never above the capacity).
  void Refund(int64_t now, int64_t cost) {
    int64_t tat = tat_.load(std::memory_order_seq_cst);
    for (;;) {
      if (tat <= now) return;  // Already full.
      const int64_t refunded = SaturatingSub(tat, cost);
      if (tat_.compare_exchange_weak(tat, refunded > now ? refunded : now,
                                     std::memory_order_seq_cst)) {
        return;
      }
    }
  }

  // Takes `cost` (>= 1) at `now` even beyond the tolerance (usage reported after the fact). The
  // TAT saturates at INT64_MAX: a debt beyond year 2262 blocks the limiter for good.
  void Charge(int64_t now, int64_t cost) {
    int64_t tat = tat_.load(std::memory_order_seq_cst);
    while (!tat_.compare_exchange_weak(tat, SaturatingAdd(tat > now ? tat : now, cost),
                                       std::memory_order_seq_cst)) {
    }
  }

  // The same decisions for a caller that serializes every access to this word with its own lock
  // (LimitSet checks all its limits, then takes them, under one lock): plain loads and stores
  // instead of a compare-exchange, which costs a locked instruction per limit on the hot path.
  // Relaxed: the caller's lock orders these accesses; nothing else reads the word meanwhile.
  //
  // Returns the ns to wait from `now` until `cost` would be admitted (0 if now).
  int64_t WaitNsExclusive(int64_t now, int64_t cost) const {
    return GcraWaitNs(tat_.load(std::memory_order_relaxed), now, cost, tolerance_ns_);
  }
  // Takes `cost` at `now`; WaitNsExclusive(now, cost) must have returned 0 under the same lock.
  void TakeExclusive(int64_t now, int64_t cost) {
    tat_.store(GcraTaken(tat_.load(std::memory_order_relaxed), now, cost),
               std::memory_order_relaxed);
  }
  // Refund() under the caller's lock.
  void RefundExclusive(int64_t now, int64_t cost) {
    tat_.store(GcraRefunded(tat_.load(std::memory_order_relaxed), now, cost),
               std::memory_order_relaxed);
  }

  // Sets the TAT, and returns it, under the caller's lock (LimitSet keeps some TATs elsewhere
  // and runs this word on their value for the calls it does not make itself).
  void SetExclusive(int64_t tat) { tat_.store(tat, std::memory_order_relaxed); }
  int64_t TatExclusive() const { return tat_.load(std::memory_order_relaxed); }

  // Returns the theoretical arrival time.
  int64_t tat() const { return tat_.load(std::memory_order_seq_cst); }
  int64_t tolerance_ns() const { return tolerance_ns_; }

 private:
  const int64_t tolerance_ns_;
  std::atomic<int64_t> tat_{kGcraInitialTat};
};

// ---- Locked algorithms ---------------------------------------------------------------------
//
// Each keeps plain state with no pointers and no virtual functions, so it can live in memory
// shared by several processes (see RateState). The caller serializes calls. Calls may advance
// the algorithm's own bookkeeping (leaks, expiries, window roll-over) even when they do not
// consume. Charge() records usage unconditionally (an over-use reported after the fact), so the
// amount in use may exceed the capacity until time brings it back; it saturates at
// kMaxWholeUnits, which keeps every count exact in a double (and is at least the capacity). `now`
// is at most INT64_MAX - window_ns (RateState clamps it); time differences saturate, so a clock
// that jumps by centuries in either direction delays admissions but never wraps around. WaitNs() is
// 0 exactly when TryAcquire() at the same `now` would admit, and at least 1 otherwise.

// LeakyBucket(capacity C per window W): a bucket of at most C tokens that leaks one token every
// T = W / C. A request of n is admitted iff level + n <= C. Unlike concurry, which truncates the
// leaked count and restarts its leak clock at every check (so checks more frequent than T never
// leak: reference §11.14), the k-th token leaks at exactly ceil(k * T) after the bucket last
// became non-empty (its origin), however often it is checked; the clock restarts when the bucket
// empties (an empty bucket banks no credit). Counting from the origin keeps the fraction of a
// token between checks without rounding it at each one, so several checks in one nanosecond leak
// no more than one check does (which matters once more than one token leaks per nanosecond).
// The schedule is exact integer arithmetic for any capacity (a double C >= 1 is M / 2^s for
// integers M < 2^53, s <= 52) and any time since the origin (< 2^64 ns). Not thread-safe.
//
// Burst: with an explicit burst B the bucket holds at most B tokens (admitted iff level + n <= B)
// and still leaks one token every T = W / C; by default B = C.
class LeakyBucket {
 public:
  // `depth`: the burst B (the capacity by default).
  LeakyBucket(double capacity, int64_t window_ns, double depth);
  LeakyBucket(double capacity, int64_t window_ns) : LeakyBucket(capacity, window_ns, capacity) {}

  bool TryAcquire(int64_t now, double amount);
  void Charge(int64_t now, double amount);
  int64_t WaitNs(int64_t now, double amount);
  double InUse(int64_t now);

 private:
  // Removes the whole tokens leaked by `now`. Inline: defined, and used only, in the .cc.
  inline void Leak(int64_t now);
  // Returns the whole tokens leaked `elapsed` ns after the origin: floor(elapsed * C / W).
  absl::uint128 LeaksBy(uint64_t elapsed) const;
  // Returns the least elapsed time after the origin by which `tokens` have leaked, i.e. the least
  // e with LeaksBy(e) >= tokens; UINT64_MAX if there is none below it.
  uint64_t LeakTime(absl::uint128 tokens) const;
  // Empties the bucket at `now`.
  void Empty(int64_t now);
  // Takes `fresh` leaked tokens off the level at `now`, `total` having leaked since the origin.
  void Drain(int64_t now, double fresh, absl::uint128 total);
  // The tokens leaked since the origin, kept as two words: absl::uint128 wants 16-byte alignment,
  // which the memory RateState lays this object in does not promise.
  absl::uint128 leaked() const { return absl::MakeUint128(leaked_high_, leaked_low_); }
  void set_leaked(absl::uint128 leaked) {
    // Stored only when it changes, so that its cache line stays clean (see the layout below).
    if (leaked_high_ != absl::Uint128High64(leaked)) leaked_high_ = absl::Uint128High64(leaked);
    leaked_low_ = absl::Uint128Low64(leaked);
  }

  // Layout: what TryAcquire() reads and writes comes first, within the first 56 bytes, so that
  // it shares one cache line with an owner's lock in RateLayout::kLockSlot; leaked_high_, almost
  // always 0, is read there but written only when it changes.
  double level_ = 0;
  // Meaningful only while level_ > 0: when the bucket last became non-empty, and how many tokens
  // have leaked since (already taken off level_).
  int64_t origin_ = 0;
  uint64_t leaked_low_ = 0;
  int64_t window_ns_;
  double depth_;
  // The capacity = capacity_numerator_ / 2^capacity_shift_, exactly.
  uint64_t capacity_numerator_;
  int capacity_shift_;
  uint64_t leaked_high_ = 0;
};

// SlidingWindow(capacity K per window W), concurry's default: a log of admitted requests; entries
// at or before now - W expire; a request of n is admitted iff the amount in the log plus n <= K.
//
// The log is a ring of (time, amount) entries in caller-provided memory right after the object
// (RateState lays it out), one entry per distinct time. Whole amounts make the log at most K
// entries long, so the ring has min(K, kMaxSlots) slots. When K > kMaxSlots, time is cut into
// slices of ceil(W / kMaxSlots) and a request in the same slice as the newest entry is added to
// that entry, whose time moves up to the request's: earlier units then expire less than one slice
// late, never early, so the limit is never exceeded (for 1 000 000 per minute, under 15 ms late).
// Not thread-safe; not copyable.
class SlidingWindow {
 public:
  struct Entry {
    int64_t time;
    double amount;
  };

  static constexpr int64_t kMaxSlots = 4096;

  // Returns the number of ring slots for `capacity`: min(ceil(capacity), kMaxSlots), at least 1.
  static int64_t SlotsFor(double capacity);

  // `ring` must hold SlotsFor(capacity) entries and keep its position relative to this object.
  SlidingWindow(double capacity, int64_t window_ns, Entry* ring);
  SlidingWindow(const SlidingWindow&) = delete;
  SlidingWindow& operator=(const SlidingWindow&) = delete;

  bool TryAcquire(int64_t now, double amount);
  void Charge(int64_t now, double amount);
  int64_t WaitNs(int64_t now, double amount);
  double InUse(int64_t now);

 private:
  Entry* ring() { return reinterpret_cast<Entry*>(reinterpret_cast<char*>(this) + ring_offset_); }
  // The i-th entry from the oldest, 0 <= i < slots_ (a subtraction instead of a division: `%` by
  // a variable costs a 64-bit division on every call).
  Entry& at(int64_t i) {
    const int64_t slot = head_ + i;
    return ring()[slot < slots_ ? slot : slot - slots_];
  }
  // Returns the last ns of the slice of `time` (slices are time / merge_ns_, rounded toward
  // zero), when merge_ns_ > 0.
  int64_t SliceLast(int64_t time) const;
  // Drops the entries that have expired by `now`. Inline, as Record(): defined, and used only,
  // in the .cc.
  inline void Expire(int64_t now);
  // Records `amount` at `now`.
  inline void Record(int64_t now, double amount);

  // Layout: 56 bytes, so that the whole object shares one cache line with an owner's lock in
  // RateLayout::kLockSlot (the ring follows on its own lines).
  double capacity_;
  int64_t window_ns_;
  int64_t merge_ns_;  // Slice length when K > kMaxSlots, else 0.
  // The last ns of the newest entry's slice (when merge_ns_ > 0): a later request in the same
  // slice joins that entry. Remembered so that Record() divides only when a new entry starts.
  int64_t newest_slice_last_ = std::numeric_limits<int64_t>::min();
  double count_ = 0;     // Sum of the amounts in the ring.
  int32_t slots_;        // At most kMaxSlots.
  int32_t ring_offset_;  // Ring address minus this object's address: valid in every process.
  int32_t head_ = 0;
  int32_t size_ = 0;
};

// FixedWindow(capacity K per window W): a counter per window, where windows are aligned to the
// clock: window i covers [i * W, (i + 1) * W) in ns since the Unix epoch (so minute windows start
// on the minute, day windows at 00:00 UTC, week windows on Thursdays 00:00 UTC, the epoch's
// weekday). concurry instead restarts the window lazily at the first check after expiry
// (reference §11.15), so its windows drift with traffic. A request of n is admitted iff
// count + n <= K. As with any fixed window, up to 2K can pass around a boundary. Not thread-safe.
class FixedWindow {
 public:
  FixedWindow(double capacity, int64_t window_ns) : capacity_(capacity), window_ns_(window_ns) {}

  bool TryAcquire(int64_t now, double amount);
  void Charge(int64_t now, double amount);
  int64_t WaitNs(int64_t now, double amount);
  double InUse(int64_t now);

  // Returns the index of the window containing `now`: floor(now / window_ns).
  int64_t WindowIndex(int64_t now) const;
  // Returns the start of the window containing `now` in ns since the epoch, saturated (the first
  // window before 1677 starts before the int64 range).
  int64_t WindowStart(int64_t now) const;

 private:
  // Starts a new window if `now` is past the current one.
  void Roll(int64_t now);

  double capacity_;
  int64_t window_ns_;
  int64_t index_ = std::numeric_limits<int64_t>::min();
  double count_ = 0;
};

// ---- RateState: any algorithm, placeable in shared memory ------------------------------------

// The cache line size RateLayout::kLockSlot arranges the state for.
inline constexpr size_t kRateCacheLine = 64;

// How RateState::Create() lays a state out in its memory.
enum class RateLayout {
  // The header, then the algorithm's state, packed (memory aligned to 8): the smallest block, for
  // an owner whose lock lives elsewhere (LimitSet, which takes one lock for all its limits).
  kPacked,
  // For an owner that serializes calls with a lock kept in the block (RateLimiter): memory aligned
  // to kRateCacheLine; the header, read-only after Create(), alone on the first line; then
  // lock_slot() (kLockSlotBytes) and the algorithm's state. Taking the lock then brings along
  // everything a LeakyBucket, FixedWindow or SlidingWindow call reads or writes (besides the
  // sliding window's ring), so that two cores trade one cache line per call instead of three.
  kLockSlot,
};

// One rate limit's complete state (parameters and algorithm state) in one block of memory with
// no pointers and no virtual functions, so the same code runs it on the heap (RateLimiter, an
// in-process LimitSet) and in memory shared by forked processes (a process-shared LimitSet).
// Create() builds it in BytesFor() bytes; the block needs no destruction.
//
// TokenBucket and GCRA are lock-free: TryAcquire(), WaitNs(), InUse(), Refund() and Charge() may
// be called concurrently. For the other algorithms the caller serializes every call. An infinite
// capacity admits everything and keeps no state.
//
// Every method that takes `now` first clamps it to at most INT64_MAX - max(window_ns,
// tolerance_ns) (see "Overflow" above); any int64 reading is accepted. An explicit burst sets the
// GCRA tolerance or the LeakyBucket depth (see "Burst"); the window algorithms take none.
class RateState {
 public:
  // Parameters accepted by ValidateRateParams() and ValidateBurst(); the callers (Limit,
  // RateLimiter) check them.
  static size_t BytesFor(RateLimitAlgorithm algorithm, double capacity,
                         RateLayout layout = RateLayout::kPacked);
  // Builds the state in `memory`, which must hold BytesFor() bytes aligned to 8 (kPacked) or to
  // kRateCacheLine (kLockSlot). `burst`: kDefaultBurst for the capacity.
  static RateState* Create(void* memory, RateLimitAlgorithm algorithm, double capacity,
                           int64_t window_ns, double burst = kDefaultBurst,
                           RateLayout layout = RateLayout::kPacked);

  // The bytes right before the algorithm's state reserved for the owner's lock: kLockSlotBytes,
  // aligned to 8, on the cache line where the algorithm's state starts. Create() leaves them
  // uninitialized; the owner constructs its lock there (position-independent). ONLY for a state
  // created with RateLayout::kLockSlot: in a kPacked state these bytes are the header's own
  // (checked in debug builds).
  static constexpr size_t kLockSlotBytes = 8;
  void* lock_slot() {
    ABSL_ASSERT(HasLayout(RateLayout::kLockSlot));
    return reinterpret_cast<char*>(this) + body_offset_ - kLockSlotBytes;
  }

  // Returns whether Create() laid this state out with `layout`. Every call finds the algorithm's
  // state through the layout recorded in the block, so a caller that attaches to a block it did
  // not create (a process-shared LimitSet) checks this along with the parameters.
  bool HasLayout(RateLayout layout) const { return body_offset_ == BodyOffset(layout); }

  RateState(const RateState&) = delete;
  RateState& operator=(const RateState&) = delete;

  RateLimitAlgorithm algorithm() const { return algorithm_; }
  double capacity() const { return capacity_; }
  int64_t window_ns() const { return window_ns_; }
  // The most units admitted at once: the burst, the capacity by default.
  double burst() const { return burst_; }
  // GCRA's tau (TokenBucket, GCRA): window_ns by default; 0 for the other algorithms.
  int64_t tolerance_ns() const { return tolerance_ns_; }
  bool lock_free() const { return lock_free_; }
  // Refund() is meaningful: TokenBucket and GCRA.
  bool supports_refund() const { return lock_free_; }
  // Amounts must be whole numbers: every algorithm but TokenBucket and GCRA.
  bool whole_amounts() const { return !lock_free_; }

  // Returns whether `amount` is one this limit can ever admit: positive, finite, at most the
  // burst (the capacity by default), and, unless the algorithm is TokenBucket or GCRA, whole and
  // at most kMaxWholeUnits (which only an infinite capacity allows beyond). Cheap when valid.
  bool ValidAmount(double amount) const {
    return amount > 0 && amount <= burst_ && amount < kInfinity &&
           (!whole_amounts() ||
            (amount <= kMaxWhole && amount == static_cast<double>(static_cast<int64_t>(amount))));
  }
  // Returns what is wrong with an amount for which ValidAmount() is false, for an error message.
  std::string AmountError(double amount) const;

  // Consumes `amount` at `now` and returns true, or returns false without consuming.
  bool TryAcquire(int64_t now, double amount);
  // Returns the ns from `now` until `amount` would be admitted (0 if now).
  int64_t WaitNs(int64_t now, double amount);
  bool CanAcquire(int64_t now, double amount) { return WaitNs(now, amount) == 0; }
  // Returns the amount counted against the capacity at `now`.
  double InUse(int64_t now);
  // Gives back `amount` (never above the capacity). Only when supports_refund().
  void Refund(int64_t now, double amount);
  // Records `amount` as used at `now` whether or not it fits (usage reported beyond a request).
  void Charge(int64_t now, double amount);
  // Returns the algorithm's state at `now` (in_use as InUse()). Locked algorithms: as the other
  // calls, the caller serializes.
  RateAlgorithmStats Snapshot(int64_t now, double* in_use);

  // TokenBucket and GCRA with a finite capacity: the GCRA word, for callers that serialize every
  // access to this state and want AtomicGcra's *Exclusive calls (`now` clamped by ClampNow(),
  // costs from Cost()). Null for the other algorithms and for an infinite capacity: non-null
  // exactly when HasExclusiveGcra(algorithm, capacity) (rate_algorithms_test checks they agree).
  AtomicGcra* exclusive_gcra() { return lock_free_ && !unlimited_ ? &gcra() : nullptr; }
  // `now`, at most INT64_MAX - max(window_ns, tolerance_ns), as every call above clamps it.
  int64_t ClampNow(int64_t now) const { return Clamp(now); }
  // The GCRA cost in ns of `amount` (TokenBucket and GCRA).
  int64_t Cost(double amount) const {
    return GcraCost(amount, capacity_, window_ns_, tolerance_ns_);
  }

 private:
  static constexpr double kInfinity = std::numeric_limits<double>::infinity();
  RateState(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns, double burst,
            RateLayout layout);
  // `now`, at most INT64_MAX - max(window_ns, tolerance_ns).
  int64_t Clamp(int64_t now) const { return now < max_now_ ? now : max_now_; }
  void* body() { return reinterpret_cast<char*>(this) + body_offset_; }
  AtomicGcra& gcra() { return *static_cast<AtomicGcra*>(body()); }
  LeakyBucket& leaky() { return *static_cast<LeakyBucket*>(body()); }
  SlidingWindow& sliding() { return *static_cast<SlidingWindow*>(body()); }
  FixedWindow& fixed() { return *static_cast<FixedWindow*>(body()); }

  // Where the algorithm's state starts, from this object (see RateLayout).
  static size_t BodyOffset(RateLayout layout);

  RateLimitAlgorithm algorithm_;
  uint32_t body_offset_;
  double capacity_;
  int64_t window_ns_;
  double burst_;
  int64_t tolerance_ns_;
  int64_t max_now_;  // INT64_MAX - max(window_ns_, tolerance_ns_).
  bool lock_free_;
  bool unlimited_;
};

// A RateState on the heap.
class OwnedRateState {
 public:
  OwnedRateState(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns,
                 double burst = kDefaultBurst, RateLayout layout = RateLayout::kPacked)
      : memory_(::operator new (RateState::BytesFor(algorithm, capacity, layout),
                                std::align_val_t{kRateCacheLine})),
        state_(RateState::Create(memory_.get(), algorithm, capacity, window_ns, burst, layout)) {}

  RateState& operator*() const { return *state_; }
  RateState* operator->() const { return state_; }

 private:
  struct Free {
    void operator()(void* memory) const {
      ::operator delete (memory, std::align_val_t{kRateCacheLine});
    }
  };
  std::unique_ptr<void, Free> memory_;
  RateState* state_;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_

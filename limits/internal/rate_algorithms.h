// The arithmetic of the five rate-limiting algorithms behind concurry::RateLimiter, with time as
// an argument (nanoseconds since the Unix epoch) so tests are tables of (now, request, outcome).
// Amounts are doubles already validated by RateLimiter (positive, finite, at most the capacity,
// whole numbers for LeakyBucket and the window algorithms); capacities are positive and finite.
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
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {

// ---- GCRA and TokenBucket (one algorithm) ------------------------------------------------------
//
// TokenBucket(capacity C per window W) and GCRA are the same algorithm written two ways: a bucket
// whose deficit is D tokens is full again after D * T, with T = W / C the emission interval. So
// both keep one number, the theoretical arrival time TAT ("the time at which the bucket is full
// again"): available tokens = C * (1 - max(0, TAT - now) / W). A request costing n * T is admitted
// iff max(TAT, now) + n * T - now <= W (tau = C * T = W), and then TAT = max(TAT, now) + n * T.
// A refund of n sets TAT = max(now, TAT - n * T), i.e. tokens = min(C, tokens + n).

// The TAT of a limiter no request has touched: far enough in the past to mean "full" for any
// clock reading in [1824, 2116].
inline constexpr int64_t kGcraInitialTat = std::numeric_limits<int64_t>::min() / 4;

// Returns the cost in ns of `amount` tokens: floor(amount / capacity * window_ns), clamped to
// [1, window_ns]. Rounding down guarantees a full burst of `capacity` fits in the tolerance (the
// rate may exceed the nominal one by less than 1 ns per request); the minimum of 1 ns caps the
// number of requests at 1e9 per second.
int64_t GcraCost(double amount, double capacity, int64_t window_ns);

// Returns the ns to wait from `now` until a request of `cost` would be admitted (0 if now).
inline int64_t GcraWaitNs(int64_t tat, int64_t now, int64_t cost, int64_t window_ns) {
  const int64_t wait = (tat > now ? tat : now) + cost - now - window_ns;
  return wait > 0 ? wait : 0;
}

// Returns the tokens available at `now` out of `capacity`.
double GcraAvailable(int64_t tat, int64_t now, double capacity, int64_t window_ns);

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
class AtomicGcra {
 public:
  explicit AtomicGcra(int64_t window_ns) : window_ns_(window_ns) {}

  // Admits a request of `cost` at `now` and returns true, or returns false without change.
  bool TryAcquire(int64_t now, int64_t cost) {
    int64_t tat = tat_.load(std::memory_order_seq_cst);
    for (;;) {
      const int64_t next = (tat > now ? tat : now) + cost;
      if (next - now > window_ns_) return false;
      if (tat_.compare_exchange_weak(tat, next, std::memory_order_seq_cst)) return true;
    }
  }

  // Returns whether a request of `cost` would be admitted at `now`.
  bool CanAcquire(int64_t now, int64_t cost) const {
    return GcraWaitNs(tat(), now, cost, window_ns_) == 0;
  }

  // Returns `cost` worth of tokens at `now` (never above the capacity).
  void Refund(int64_t now, int64_t cost) {
    int64_t tat = tat_.load(std::memory_order_seq_cst);
    for (;;) {
      const int64_t next = tat - cost > now ? tat - cost : now;
      if (next >= tat) return;  // Already full.
      if (tat_.compare_exchange_weak(tat, next, std::memory_order_seq_cst)) return;
    }
  }

  // Takes `cost` at `now` even beyond the tolerance (usage reported after the fact).
  void Charge(int64_t now, int64_t cost) {
    int64_t tat = tat_.load(std::memory_order_seq_cst);
    while (!tat_.compare_exchange_weak(tat, (tat > now ? tat : now) + cost,
                                       std::memory_order_seq_cst)) {
    }
  }

  // Returns the theoretical arrival time.
  int64_t tat() const { return tat_.load(std::memory_order_seq_cst); }
  int64_t window_ns() const { return window_ns_; }

 private:
  const int64_t window_ns_;
  std::atomic<int64_t> tat_{kGcraInitialTat};
};

// ---- Locked algorithms ---------------------------------------------------------------------
//
// Each keeps plain state with no pointers and no virtual functions, so it can live in memory
// shared by several processes (see RateState). The caller serializes calls. Calls may advance
// the algorithm's own bookkeeping (leaks, expiries, window roll-over) even when they do not
// consume. Charge() records usage unconditionally (an over-use reported after the fact), so the
// amount in use may exceed the capacity until time brings it back.

// LeakyBucket(capacity C per window W): a bucket of at most C tokens that leaks one token every
// T = W / C. A request of n is admitted iff level + n <= C. Unlike concurry, which truncates the
// leaked count and restarts its leak clock at every check (so checks more frequent than T never
// leak: reference §11.14), the leak clock advances only by the whole tokens leaked, keeping the
// fraction; it restarts when the bucket empties (an empty bucket banks no credit). Not thread-safe.
class LeakyBucket {
 public:
  LeakyBucket(double capacity, int64_t window_ns) : capacity_(capacity), window_ns_(window_ns) {}

  bool TryAcquire(int64_t now, double amount);
  void Charge(int64_t now, double amount);
  int64_t WaitNs(int64_t now, double amount);
  double InUse(int64_t now);

 private:
  // Removes the whole tokens leaked by `now`.
  void Leak(int64_t now);

  double capacity_;
  int64_t window_ns_;
  double level_ = 0;
  int64_t last_leak_ = 0;  // Meaningful only while level_ > 0.
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
  Entry& at(int64_t i) { return ring()[(head_ + i) % slots_]; }
  int64_t Slice(int64_t time) const { return time / merge_ns_; }
  // Drops the entries that have expired by `now`.
  void Expire(int64_t now);
  // Records `amount` at `now`.
  void Record(int64_t now, double amount);

  double capacity_;
  int64_t window_ns_;
  int64_t slots_;
  int64_t merge_ns_;     // Slice length when K > kMaxSlots, else 0.
  int64_t ring_offset_;  // Ring address minus this object's address: valid in every process.
  int64_t head_ = 0;
  int64_t size_ = 0;
  double count_ = 0;  // Sum of the amounts in the ring.
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

 private:
  // Starts a new window if `now` is past the current one.
  void Roll(int64_t now);

  double capacity_;
  int64_t window_ns_;
  int64_t index_ = std::numeric_limits<int64_t>::min();
  double count_ = 0;
};

// ---- RateState: any algorithm, placeable in shared memory ------------------------------------

// One rate limit's complete state (parameters and algorithm state) in one block of memory with
// no pointers and no virtual functions, so the same code runs it on the heap (RateLimiter, an
// in-process LimitSet) and in memory shared by forked processes (a process-shared LimitSet).
// Create() builds it in BytesFor() bytes; the block needs no destruction.
//
// TokenBucket and GCRA are lock-free: TryAcquire(), WaitNs(), InUse(), Refund() and Charge() may
// be called concurrently. For the other algorithms the caller serializes every call. An infinite
// capacity admits everything and keeps no state.
class RateState {
 public:
  // `capacity` > 0 (possibly +infinity), `window_ns` > 0; RateLimiter validates them.
  static size_t BytesFor(RateLimitAlgorithm algorithm, double capacity);
  // Builds the state in `memory`, which must hold BytesFor() bytes aligned to 8.
  static RateState* Create(void* memory, RateLimitAlgorithm algorithm, double capacity,
                           int64_t window_ns);

  RateState(const RateState&) = delete;
  RateState& operator=(const RateState&) = delete;

  RateLimitAlgorithm algorithm() const { return algorithm_; }
  double capacity() const { return capacity_; }
  int64_t window_ns() const { return window_ns_; }
  bool lock_free() const { return lock_free_; }
  // Refund() is meaningful: TokenBucket and GCRA.
  bool supports_refund() const { return lock_free_; }
  // Amounts must be whole numbers: every algorithm but TokenBucket and GCRA.
  bool whole_amounts() const { return !lock_free_; }

  // Returns whether `amount` is one this limit can ever admit: positive, finite, at most the
  // capacity, and whole unless the algorithm is TokenBucket or GCRA. One branch when valid.
  bool ValidAmount(double amount) const {
    return amount > 0 && amount <= capacity_ && amount < kInfinity &&
           (!whole_amounts() || amount == static_cast<double>(static_cast<int64_t>(amount)));
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

 private:
  static constexpr double kInfinity = std::numeric_limits<double>::infinity();
  RateState(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns);
  void* body() { return reinterpret_cast<char*>(this) + kBodyOffset; }
  AtomicGcra& gcra() { return *static_cast<AtomicGcra*>(body()); }
  LeakyBucket& leaky() { return *static_cast<LeakyBucket*>(body()); }
  SlidingWindow& sliding() { return *static_cast<SlidingWindow*>(body()); }
  FixedWindow& fixed() { return *static_cast<FixedWindow*>(body()); }
  int64_t Cost(double amount) const { return GcraCost(amount, capacity_, window_ns_); }

  static const size_t kBodyOffset;

  RateLimitAlgorithm algorithm_;
  double capacity_;
  int64_t window_ns_;
  bool lock_free_;
  bool unlimited_;
};

// A RateState on the heap.
class OwnedRateState {
 public:
  OwnedRateState(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns)
      : memory_(new uint64_t[(RateState::BytesFor(algorithm, capacity) + 7) / 8]),
        state_(RateState::Create(memory_.get(), algorithm, capacity, window_ns)) {}

  RateState& operator*() const { return *state_; }
  RateState* operator->() const { return state_; }

 private:
  std::unique_ptr<uint64_t[]> memory_;
  RateState* state_;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_

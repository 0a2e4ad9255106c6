// The arithmetic of the five rate-limiting algorithms behind concurry::RateLimiter, with time as
// an argument (nanoseconds since the Unix epoch) so tests are tables of (now, request, outcome).
// Amounts are doubles already validated by RateLimiter (positive, finite, at most the capacity,
// whole numbers for LeakyBucket and the window algorithms); capacities are positive and finite.
//
//   limits_internal::AtomicGcra gcra(/*window_ns=*/1'000'000'000);
//   int64_t cost = GcraCost(/*amount=*/1, /*capacity=*/10, /*window_ns=*/1'000'000'000);
//   bool admitted = gcra.TryAcquire(/*now=*/0, cost);
//   limits_internal::FixedWindow fixed(/*capacity=*/10, /*window_ns=*/1'000'000'000);
//   bool ok = fixed.TryAcquire(/*now=*/5, /*amount=*/3);

#ifndef CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_
#define CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <limits>

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

  // Returns the theoretical arrival time.
  int64_t tat() const { return tat_.load(std::memory_order_seq_cst); }
  int64_t window_ns() const { return window_ns_; }

 private:
  const int64_t window_ns_;
  std::atomic<int64_t> tat_{kGcraInitialTat};
};

// ---- Locked algorithms ---------------------------------------------------------------------
//
// Each keeps plain state; RateLimiter serializes calls with a SpinLock. Calls may advance the
// algorithm's own bookkeeping (leaks, expiries, window roll-over) even when they do not consume.

// The interface RateLimiter uses for the three locked algorithms. Not thread-safe; the caller
// serializes calls.
class LockedRateAlgorithm {
 public:
  virtual ~LockedRateAlgorithm() = default;

  // Consumes `amount` at `now` and returns true, or returns false without consuming.
  virtual bool TryAcquire(int64_t now, double amount) = 0;
  // Returns the ns to wait from `now` until `amount` would be admitted (0 if now).
  virtual int64_t WaitNs(int64_t now, double amount) = 0;
  // Returns the amount counted against the capacity at `now` (queue size, requests in window).
  virtual double InUse(int64_t now) = 0;

  bool CanAcquire(int64_t now, double amount) { return WaitNs(now, amount) == 0; }
};

// LeakyBucket(capacity C per window W): a bucket of at most C tokens that leaks one token every
// T = W / C. A request of n is admitted iff level + n <= C. Unlike concurry, which truncates the
// leaked count and restarts its leak clock at every check (so checks more frequent than T never
// leak: reference §11.14), the leak clock advances only by the whole tokens leaked, keeping the
// fraction; it restarts when the bucket empties (an empty bucket banks no credit). Not thread-safe.
class LeakyBucket final : public LockedRateAlgorithm {
 public:
  LeakyBucket(double capacity, int64_t window_ns) : capacity_(capacity), window_ns_(window_ns) {}

  bool TryAcquire(int64_t now, double amount) override;
  int64_t WaitNs(int64_t now, double amount) override;
  double InUse(int64_t now) override;

 private:
  // Removes the whole tokens leaked by `now`.
  void Leak(int64_t now);

  const double capacity_;
  const int64_t window_ns_;
  double level_ = 0;
  int64_t last_leak_ = 0;  // Meaningful only while level_ > 0.
};

// SlidingWindow(capacity K per window W), concurry's default: a log of admitted requests; entries
// at or before now - W expire; a request of n is admitted iff the amount in the log plus n <= K.
// The log holds one entry per distinct time (with its amount), so its size is bounded by K.
// Not thread-safe.
class SlidingWindow final : public LockedRateAlgorithm {
 public:
  SlidingWindow(double capacity, int64_t window_ns) : capacity_(capacity), window_ns_(window_ns) {}

  bool TryAcquire(int64_t now, double amount) override;
  int64_t WaitNs(int64_t now, double amount) override;
  double InUse(int64_t now) override;

 private:
  struct Entry {
    int64_t time;
    double amount;
  };

  // Drops the entries that have expired by `now`.
  void Expire(int64_t now);

  const double capacity_;
  const int64_t window_ns_;
  std::deque<Entry> log_;  // Ordered by time.
  double count_ = 0;       // Sum of log_ amounts.
};

// FixedWindow(capacity K per window W): a counter per window, where windows are aligned to the
// clock: window i covers [i * W, (i + 1) * W) in ns since the Unix epoch (so minute windows start
// on the minute, day windows at 00:00 UTC, week windows on Thursdays 00:00 UTC, the epoch's
// weekday). concurry instead restarts the window lazily at the first check after expiry
// (reference §11.15), so its windows drift with traffic. A request of n is admitted iff
// count + n <= K. As with any fixed window, up to 2K can pass around a boundary. Not thread-safe.
class FixedWindow final : public LockedRateAlgorithm {
 public:
  FixedWindow(double capacity, int64_t window_ns) : capacity_(capacity), window_ns_(window_ns) {}

  bool TryAcquire(int64_t now, double amount) override;
  int64_t WaitNs(int64_t now, double amount) override;
  double InUse(int64_t now) override;

  // Returns the index of the window containing `now`: floor(now / window_ns).
  int64_t WindowIndex(int64_t now) const;

 private:
  // Starts a new window if `now` is past the current one.
  void Roll(int64_t now);

  const double capacity_;
  const int64_t window_ns_;
  int64_t index_ = std::numeric_limits<int64_t>::min();
  double count_ = 0;
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_RATE_ALGORITHMS_H_

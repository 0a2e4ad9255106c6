// Limit definitions: what a LimitSet enforces. RateLimit (units per window, by one of five
// algorithms), CallLimit (calls per window, key "call_count") and ResourceLimit (a counting
// semaphore: units held until released). These are plain immutable values, validated on
// construction; a LimitSet runs them.
//
//   std::vector<concurry::Limit> limits = {
//       concurry::RateLimit("tokens", 10'000, "minute", concurry::RateLimitAlgorithm::kGcra),
//       concurry::CallLimit(45, "second", concurry::RateLimitAlgorithm::kGcra, {.burst = 5}),
//       concurry::ResourceLimit("connections", 4),
//   };
//   limits[0].ParamsSignature();  // "c10000w60gcr"

#ifndef CONCURRY_LIMITS_LIMIT_H_
#define CONCURRY_LIMITS_LIMIT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "limits/rate_window.h"

namespace concurry {

enum class LimitKind {
  kRate,      // RateLimit: a named budget of units per window, amounts given explicitly.
  kCall,      // CallLimit: calls per window, taken with amount 1 unless given.
  kResource,  // ResourceLimit: units held while an acquisition lives.
};

// Returns "rate", "call" or "resource".
absl::string_view LimitKindName(LimitKind kind);

// The key of every CallLimit.
inline constexpr absl::string_view kCallLimitKey = "call_count";

// Options of a RateLimit or CallLimit, the trailing constructor argument.
struct RateLimitOptions {
  // The most units admitted at once (the bucket size), while the long-run rate stays capacity per
  // window. Unset (the default) means the capacity: a full window's worth at once, as before this
  // option existed and as in concurry. A rate limit without it admits `capacity` at t = 0, which
  // a server limiting the same rate with a smaller burst rejects (see docs/limits.md, "Matching
  // a server's limiter").
  // - kGcra, kTokenBucket: GCRA tolerance tau = burst * window / capacity; burst >= 1 (fractions
  //   allowed), finite, may exceed the capacity as long as tau <= kMaxRateWindow. 45 per second
  //   with burst 5 admits 5 at once, then one every 1/45 s.
  // - kLeakyBucket: the bucket's depth (it still leaks capacity per window); a whole number from
  //   1 to kMaxWholeUnits, with a drain time burst * window / capacity <= kMaxRateWindow.
  // - kSlidingWindow, kFixedWindow: must be unset or equal to the capacity (a window admits its
  //   whole capacity at once by definition); InvalidOptionError otherwise, naming the
  //   alternatives.
  // - An unlimited (+infinity) capacity takes no burst.
  // A RateLimit or CallLimit given a burst other than its capacity and no algorithm uses kGcra:
  // `CallLimit(45, "second", {.burst = 5})` is `CallLimit(45, "second", kGcra, {.burst = 5})`.
  std::optional<double> burst;
};

// The algorithm of a RateLimit or CallLimit constructed without one: kGcra when `options` give a
// burst other than `capacity` (the window algorithms have no burst of their own), else
// kDefaultRateLimitAlgorithm.
inline RateLimitAlgorithm DefaultRateLimitAlgorithm(double capacity,
                                                    const RateLimitOptions& options) {
  return options.burst.has_value() && *options.burst != capacity ? RateLimitAlgorithm::kGcra
                                                                 : kDefaultRateLimitAlgorithm;
}

// One limit. Construct it as a RateLimit, CallLimit or ResourceLimit (they add nothing but their
// constructors, so a std::vector<Limit> holds any mix). Copyable; immutable.
class Limit {
 public:
  LimitKind kind() const { return kind_; }
  const std::string& key() const { return key_; }
  // Units per window (rate and call limits; may be +infinity) or units held at once (resource).
  // Whole-unit capacities are at most kMaxWholeUnits, so the double holds them exactly.
  double capacity() const { return capacity_; }
  // Rate and call limits only; zero for a ResourceLimit.
  absl::Duration window() const { return window_; }
  // Rate and call limits only.
  RateLimitAlgorithm algorithm() const { return algorithm_; }
  // Rate and call limits: the most units admitted at once, RateLimitOptions::burst or, when unset,
  // the capacity. A ResourceLimit: its capacity. Amounts above it are rejected.
  double burst() const { return burst_; }
  // Whether RateLimitOptions::burst was given (with a value other than the capacity).
  bool explicit_burst() const { return burst_ != capacity_; }

  // A stable string naming the parameters (not the key), equal for equal limits across processes
  // and runs: "c{capacity}w{window seconds}{first 3 letters of the algorithm}" for rate and call
  // limits as in concurry ("c300w60gcr", "c0.0001w86400tok", "cinfw1sli"), followed by
  // "b{burst}" when the burst differs from the capacity ("c45w1gcrb5"), "c{capacity}r" for a
  // ResourceLimit. Numbers are written in their shortest exact form (300.0 gives "300").
  std::string ParamsSignature() const;

  // "RateLimit(key=tokens, capacity=100, window=1m, algorithm=gcra)" and the like.
  std::string DebugString() const;

 protected:
  // Validates everything (InvalidOptionError, also for an unknown `kind` or `algorithm`).
  Limit(LimitKind kind, std::string key, double capacity, absl::Duration window,
        RateLimitAlgorithm algorithm, const RateLimitOptions& options = {});

 private:
  LimitKind kind_;
  std::string key_;
  double capacity_;
  absl::Duration window_;
  RateLimitAlgorithm algorithm_;
  double burst_;

  // ", burst=5" when the burst differs from the capacity, else "".
  std::string BurstSuffix() const;
};

// `capacity` units per `window`, by `algorithm`. Acquiring it needs an explicit amount, and the
// usage must be reported with LimitAcquisition::Update() before release (unused units are
// refunded where the algorithm can). Throws InvalidOptionError, naming the argument, the value and
// the allowed range, unless `key` is non-empty and not "call_count", `algorithm` is a known value,
// `capacity` is > 0 (+infinity means unlimited; TokenBucket and GCRA accept fractions, the other
// algorithms count whole units and take 1 to kMaxWholeUnits), and `window` is from 1 ns to
// kMaxRateWindow (100 years); the string form takes concurry's names ("minute", "per_hour",
// "Weekly"; see ParseRateWindow()) or seconds. `options.burst`: see RateLimitOptions (its errors
// name the burst and the allowed values).
//
//   RateLimit("calls", 45, "second", RateLimitAlgorithm::kGcra, {.burst = 5})
class RateLimit : public Limit {
 public:
  RateLimit(std::string key, double capacity, absl::Duration window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm,
            const RateLimitOptions& options = {});
  RateLimit(std::string key, double capacity, absl::string_view window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm,
            const RateLimitOptions& options = {});
  RateLimit(std::string key, double capacity, absl::Duration window,
            const RateLimitOptions& options)
      : RateLimit(std::move(key), capacity, window, DefaultRateLimitAlgorithm(capacity, options),
                  options) {}
  RateLimit(std::string key, double capacity, absl::string_view window,
            const RateLimitOptions& options)
      : RateLimit(std::move(key), capacity, window, DefaultRateLimitAlgorithm(capacity, options),
                  options) {}
};

// At most `capacity` calls per `window`, key "call_count". A LimitSet takes it with amount 1 on
// every acquisition that does not name it; such an implicit use needs no Update(), and neither
// does an explicit request of 1 ({{"call_count", 1}}): both count exactly one call, and Update()
// accepts only 1 for them (as in concurry). An explicit amount above 1 must be updated like a
// RateLimit. Validation as for RateLimit, and `capacity` must be >= 1, since every call takes
// 1: write one call per two seconds as CallLimit(1, absl::Seconds(2)) or CallLimit(1, "2"), not
// CallLimit(0.5, "second"). The burst options come last, after the algorithm, which may be left
// out (with a burst it is then kGcra; see RateLimitOptions::burst):
//
//   CallLimit(45, "second", {.burst = 5})  // GCRA: 5 at once, then one every 1/45 s
class CallLimit : public Limit {
 public:
  CallLimit(double capacity, absl::Duration window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm,
            const RateLimitOptions& options = {});
  CallLimit(double capacity, absl::string_view window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm,
            const RateLimitOptions& options = {});
  CallLimit(double capacity, absl::Duration window, const RateLimitOptions& options)
      : CallLimit(capacity, window, DefaultRateLimitAlgorithm(capacity, options), options) {}
  CallLimit(double capacity, absl::string_view window, const RateLimitOptions& options)
      : CallLimit(capacity, window, DefaultRateLimitAlgorithm(capacity, options), options) {}
};

// At most `capacity` units held at once (a counting semaphore, e.g. connections). A LimitSet
// takes it with amount 1 unless given, and gives the units back when the acquisition is released;
// no Update() is needed. `capacity` is a whole number of any integer type (a fractional one does
// not compile) from 1 to kMaxWholeUnits (2^53 - 1, so that a double counts the units exactly),
// and `key` is non-empty; InvalidOptionError naming the value as given otherwise.
class ResourceLimit : public Limit {
 public:
  template <typename Int>
  ResourceLimit(std::string key, Int capacity)
      : ResourceLimit(Validate(std::move(key), capacity)) {}

 private:
  struct Validated {
    std::string key;
    double capacity;
  };
  template <typename Int>
  static Validated Validate(std::string key, Int capacity) {
    static_assert(std::is_integral_v<Int> && !std::is_same_v<Int, bool>,
                  "ResourceLimit capacity is a whole number of units");
    static_assert(sizeof(Int) <= sizeof(uint64_t), "ResourceLimit capacity: at most 64 bits");
    if constexpr (std::is_signed_v<Int>) {
      if (capacity < 0) {
        return Validate(std::move(key), /*negative=*/true,
                        uint64_t{0} - static_cast<uint64_t>(static_cast<int64_t>(capacity)));
      }
    }
    return Validate(std::move(key), /*negative=*/false, static_cast<uint64_t>(capacity));
  }
  // Checks a capacity given as its sign and magnitude, so that every integer type is judged and
  // printed exactly.
  static Validated Validate(std::string key, bool negative, uint64_t magnitude);
  explicit ResourceLimit(Validated validated);
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_LIMIT_H_

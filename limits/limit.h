// Limit definitions: what a LimitSet enforces. RateLimit (units per window, by one of five
// algorithms), CallLimit (calls per window, key "call_count") and ResourceLimit (a counting
// semaphore: units held until released). These are plain immutable values, validated on
// construction; a LimitSet runs them.
//
//   std::vector<concurry::Limit> limits = {
//       concurry::RateLimit("tokens", 10'000, "minute", concurry::RateLimitAlgorithm::kGcra),
//       concurry::CallLimit(100, absl::Seconds(1)),
//       concurry::ResourceLimit("connections", 4),
//   };
//   limits[0].ParamsSignature();  // "c10000w60gcr"

#ifndef CONCURRY_LIMITS_LIMIT_H_
#define CONCURRY_LIMITS_LIMIT_H_

#include <cstdint>
#include <string>
#include <type_traits>

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

// One limit. Construct it as a RateLimit, CallLimit or ResourceLimit (they add nothing but their
// constructors, so a std::vector<Limit> holds any mix). Copyable; immutable.
class Limit {
 public:
  LimitKind kind() const { return kind_; }
  const std::string& key() const { return key_; }
  // Units per window (rate and call limits; may be +infinity) or units held at once (resource).
  double capacity() const { return capacity_; }
  // Rate and call limits only; zero for a ResourceLimit.
  absl::Duration window() const { return window_; }
  // Rate and call limits only.
  RateLimitAlgorithm algorithm() const { return algorithm_; }

  // A stable string naming the parameters (not the key), equal for equal limits across processes
  // and runs: "c{capacity}w{window seconds}{first 3 letters of the algorithm}" for rate and call
  // limits as in concurry ("c300w60gcr", "c0.0001w86400tok", "cinfw1sli"), "c{capacity}r" for a
  // ResourceLimit. Numbers are written in their shortest exact form (300.0 gives "300").
  std::string ParamsSignature() const;

  // "RateLimit(key=tokens, capacity=100, window=1m, algorithm=gcra)" and the like.
  std::string DebugString() const;

 protected:
  Limit(LimitKind kind, std::string key, double capacity, absl::Duration window,
        RateLimitAlgorithm algorithm);

 private:
  LimitKind kind_;
  std::string key_;
  double capacity_;
  absl::Duration window_;
  RateLimitAlgorithm algorithm_;
};

// `capacity` units per `window`, by `algorithm`. Acquiring it needs an explicit amount, and the
// usage must be reported with LimitAcquisition::Update() before release (unused units are
// refunded where the algorithm can). Throws InvalidOptionError unless `key` is non-empty and not
// "call_count", `capacity` is > 0 (+infinity means unlimited; fractions are fine, but only
// TokenBucket and GCRA admit fractional amounts), and `window` is positive and finite; the string
// form takes concurry's names ("minute", "per_hour", "Weekly"; see ParseRateWindow()) or seconds.
class RateLimit : public Limit {
 public:
  RateLimit(std::string key, double capacity, absl::Duration window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm);
  RateLimit(std::string key, double capacity, absl::string_view window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm);
};

// At most `capacity` calls per `window`, key "call_count". A LimitSet takes it with amount 1 on
// every acquisition that does not name it; such an implicit use needs no Update(). An explicit
// amount above 1 must be updated like a RateLimit. Validation as for RateLimit.
class CallLimit : public Limit {
 public:
  CallLimit(double capacity, absl::Duration window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm);
  CallLimit(double capacity, absl::string_view window,
            RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm);
};

// At most `capacity` units held at once (a counting semaphore, e.g. connections). A LimitSet
// takes it with amount 1 unless given, and gives the units back when the acquisition is released;
// no Update() is needed. `capacity` is a whole number >= 1 (a fractional one does not compile;
// InvalidOptionError otherwise), `key` non-empty.
class ResourceLimit : public Limit {
 public:
  template <typename Int>
  ResourceLimit(std::string key, Int capacity) : ResourceLimit(std::move(key), Checked(capacity)) {}

 private:
  struct Capacity {
    int64_t value;
  };
  template <typename Int>
  static Capacity Checked(Int capacity) {
    static_assert(std::is_integral_v<Int> && !std::is_same_v<Int, bool>,
                  "ResourceLimit capacity is a whole number of units");
    return Capacity{static_cast<int64_t>(capacity)};
  }
  ResourceLimit(std::string key, Capacity capacity);
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_LIMIT_H_

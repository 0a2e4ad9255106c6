// Rate-limit windows and algorithm names as concurry spells them, and the ranges limits accept:
// ParseRateWindow() turns "minute", "per_hr", "Weekly" or a number of seconds ("0.5") into an
// absl::Duration, and RateLimitAlgorithm parses from "token", "gcra", "sliding_window" and the
// other aliases via AbslParseFlag(). RateAlgorithmStats is the algorithm-specific part of a rate
// limit's statistics (RateLimiter::Stats(), LimitSet::Stats()).
//
//   absl::StatusOr<absl::Duration> window = concurry::ParseRateWindow("per_minute");  // 60 s
//   concurry::RateLimitAlgorithm algorithm;
//   std::string error;
//   bool ok = AbslParseFlag("leaky", &algorithm, &error);  // RateLimitAlgorithm::kLeakyBucket

#ifndef CONCURRY_LIMITS_RATE_WINDOW_H_
#define CONCURRY_LIMITS_RATE_WINDOW_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace concurry {

// The longest rate-limit window: 100 years of 365 days. Longer windows are rejected: they would
// bring the algorithms' nanosecond arithmetic near the end of the int64 range, and no rate needs
// them.
inline constexpr absl::Duration kMaxRateWindow = absl::Hours(100 * 365 * 24);

// The largest whole number of units a limit that counts whole units can hold or be asked for
// (the capacity and amounts of a ResourceLimit, and of a rate limit run by LeakyBucket,
// SlidingWindow or FixedWindow): 2^53 - 1, the largest integer n such that a double tells n from
// n + 1. Larger capacities and amounts are rejected, since they would be counted inexactly.
inline constexpr int64_t kMaxWholeUnits = (int64_t{1} << 53) - 1;

// Returns the window named by `text`: a positive, finite number of seconds ("60", "0.5") or one of
// concurry's RateWindow names and aliases, case-insensitive: second(s)/sec(s)/per_second(s)/
// per_sec(s)/secondly = 1 s; minute(s)/min(s)/per_minute(s)/per_min(s)/minutely = 60 s;
// hour(s)/hr(s)/per_hour(s)/per_hr(s)/hourly = 1 h; day(s)/per_day(s)/daily = 24 h;
// week(s)/wk(s)/per_week(s)/per_wk(s)/weekly = 7 days. There is no month (as in concurry).
// A number must be from 1e-9 (1 ns) to 3153600000 (kMaxRateWindow); NaN is rejected. Returns
// InvalidArgument naming the accepted spellings and range otherwise.
absl::StatusOr<absl::Duration> ParseRateWindow(absl::string_view text);

// Returns OK if `window` is usable as a rate-limit window (from 1 ns to kMaxRateWindow),
// InvalidArgument naming the value and the allowed range otherwise.
absl::Status ValidateRateWindow(absl::Duration window);

// The five rate-limiting algorithms of concurry (reference §5.3). kSlidingWindow is the default.
enum class RateLimitAlgorithm {
  kTokenBucket,
  kLeakyBucket,
  kSlidingWindow,
  kFixedWindow,
  kGcra,
};

inline constexpr RateLimitAlgorithm kDefaultRateLimitAlgorithm = RateLimitAlgorithm::kSlidingWindow;

// The algorithm-specific state of one rate limit, in RateLimiterStats::state and
// LimitStats::rate. Fields that do not apply to the algorithm keep their defaults.
struct RateAlgorithmStats {
  // The most units admitted at once (the bucket size): the limit's burst (its capacity unless
  // set; RateLimitOptions::burst).
  double burst = 0;
  // capacity / window, in units per second: the refill rate (TokenBucket, GCRA), the leak rate
  // (LeakyBucket), the average rate (window algorithms). +infinity when unlimited.
  double max_rate = 0;
  // window / capacity: the time one unit takes to refill or leak (TokenBucket, GCRA, LeakyBucket);
  // zero for the window algorithms and when unlimited.
  absl::Duration emission_interval;
  // TokenBucket, GCRA: burst * emission_interval, the refill time of an empty bucket (GCRA's
  // tau), rounded down to whole nanoseconds.
  absl::Duration tolerance;
  // TokenBucket, GCRA: the theoretical arrival time (TAT), at and after which the bucket is full;
  // InfinitePast() until the first admission.
  absl::Time theoretical_arrival = absl::InfinitePast();
  // TokenBucket, GCRA: tokens in the bucket now (burst - in_use).
  double tokens = 0;
  // LeakyBucket: tokens in the bucket now (the queue size; in_use).
  double level = 0;
  // FixedWindow: the start of the current window (aligned to the clock); SlidingWindow: now -
  // window, the start of the window that counts. InfinitePast() for the other algorithms.
  absl::Time window_start = absl::InfinitePast();
  // FixedWindow, SlidingWindow: units admitted in the window (in_use).
  double window_count = 0;
};

// Returns the canonical snake_case name: "token_bucket", "leaky_bucket", "sliding_window",
// "fixed_window" or "gcra" (the `algorithm` field of concurry's statistics).
absl::string_view RateLimitAlgorithmName(RateLimitAlgorithm algorithm);

// Parses concurry's names and aliases, case-insensitive: "token"/"token_bucket"/"TokenBucket",
// "leaky"/"leaky_bucket", "sliding"/"sliding_window", "fixed"/"fixed_window", "gcra"/
// "generic cell rate"/"generic cell rate algorithm". On failure sets `*error` to a message listing
// the accepted names and returns false.
bool AbslParseFlag(absl::string_view text, RateLimitAlgorithm* algorithm, std::string* error);

// Returns the canonical name (RateLimitAlgorithmName()), which AbslParseFlag() accepts.
std::string AbslUnparseFlag(RateLimitAlgorithm algorithm);

}  // namespace concurry

#endif  // CONCURRY_LIMITS_RATE_WINDOW_H_

#include "limits/limit.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

using limits_internal::FormatNumber;

absl::Duration ParsedWindow(absl::string_view what, absl::string_view window) {
  absl::StatusOr<absl::Duration> parsed = ParseRateWindow(window);
  if (!parsed.ok()) throw InvalidOptionError(absl::StrCat(what, ": ", parsed.status().message()));
  return *parsed;
}

std::string CheckedRateKey(std::string key) {
  if (key.empty()) throw InvalidOptionError("RateLimit key must not be empty");
  if (key == kCallLimitKey) {
    throw InvalidOptionError(
        "RateLimit key 'call_count' is reserved for CallLimit; use CallLimit(capacity, window)");
  }
  return key;
}

void CheckResourceKey(const std::string& key) {
  if (key.empty()) throw InvalidOptionError("ResourceLimit key must not be empty");
}

[[noreturn]] void ThrowResourceCapacity(const std::string& key, absl::string_view value) {
  throw InvalidOptionError(absl::StrCat("ResourceLimit '", key,
                                        "': capacity must be a whole number from 1 to ",
                                        kMaxWholeUnits, " (2^53 - 1), got ", value));
}

// A CallLimit below one call per window: every call takes 1, so it could never admit one (or,
// with TokenBucket and GCRA, would admit one per window, more than asked). Names the equivalent.
[[noreturn]] void ThrowFractionalCalls(double capacity, absl::Duration window) {
  const absl::Duration per_call = window / capacity;
  std::string instead;
  if (ValidateRateWindow(per_call).ok()) {
    const std::string seconds = FormatNumber(absl::ToDoubleSeconds(per_call));
    instead = absl::StrCat("; for one call per ", absl::FormatDuration(per_call),
                           ", write CallLimit(1, absl::Seconds(", seconds, ")) or CallLimit(1, \"",
                           seconds, "\")");
  } else {
    instead = absl::StrCat("; one call per window / capacity would need a window of ",
                           absl::FormatDuration(per_call), ", beyond the allowed 1ns to ",
                           absl::FormatDuration(kMaxRateWindow));
  }
  throw InvalidOptionError(
      absl::StrCat("CallLimit 'call_count': capacity must be >= 1 (each call "
                   "takes 1), or +infinity for unlimited, got ",
                   FormatNumber(capacity), instead));
}

}  // namespace

absl::string_view LimitKindName(LimitKind kind) {
  switch (kind) {
    case LimitKind::kRate:
      return "rate";
    case LimitKind::kCall:
      return "call";
    case LimitKind::kResource:
      return "resource";
  }
  return "unknown";
}

Limit::Limit(LimitKind kind, std::string key, double capacity, absl::Duration window,
             RateLimitAlgorithm algorithm, const RateLimitOptions& options)
    : kind_(kind),
      key_(std::move(key)),
      capacity_(capacity),
      window_(window),
      algorithm_(algorithm),
      burst_(options.burst.value_or(capacity)) {
  switch (kind) {
    case LimitKind::kRate:
    case LimitKind::kCall:
      break;
    case LimitKind::kResource:
      // ResourceLimit checks its integer capacity exactly before converting it; this catches
      // only a subclass passing a bad double.
      CheckResourceKey(key_);
      if (!(capacity >= 1 && capacity <= limits_internal::kMaxWhole) ||
          capacity != std::floor(capacity)) {
        ThrowResourceCapacity(key_, FormatNumber(capacity));
      }
      return;
    default:
      throw InvalidOptionError(absl::StrCat("Limit '", key_, "': kind: unknown value ",
                                            static_cast<int>(kind),
                                            "; allowed: kRate, kCall, kResource"));
  }
  if (kind == LimitKind::kCall && capacity > 0 && capacity < 1) {
    ThrowFractionalCalls(capacity, window);
  }
  if (absl::Status status = limits_internal::ValidateRateParams(algorithm, capacity, window);
      !status.ok()) {
    throw InvalidOptionError(absl::StrCat(kind == LimitKind::kRate ? "RateLimit" : "CallLimit",
                                          " '", key_, "': ", status.message()));
  }
  if (options.burst.has_value()) {
    if (absl::Status status =
            limits_internal::ValidateBurst(algorithm, capacity, window, *options.burst);
        !status.ok()) {
      throw InvalidOptionError(absl::StrCat(kind == LimitKind::kRate ? "RateLimit" : "CallLimit",
                                            " '", key_, "': ", status.message()));
    }
  }
}

std::string Limit::ParamsSignature() const {
  if (kind_ == LimitKind::kResource) return absl::StrCat("c", FormatNumber(capacity_), "r");
  return absl::StrCat("c", FormatNumber(capacity_), "w",
                      FormatNumber(absl::ToDoubleSeconds(window_)),
                      RateLimitAlgorithmName(algorithm_).substr(0, 3),
                      explicit_burst() ? absl::StrCat("b", FormatNumber(burst_)) : std::string());
}

std::string Limit::DebugString() const {
  switch (kind_) {
    case LimitKind::kRate:
      return absl::StrCat("RateLimit(key=", key_, ", capacity=", FormatNumber(capacity_),
                          ", window=", absl::FormatDuration(window_),
                          ", algorithm=", RateLimitAlgorithmName(algorithm_), BurstSuffix(), ")");
    case LimitKind::kCall:
      return absl::StrCat("CallLimit(capacity=", FormatNumber(capacity_),
                          ", window=", absl::FormatDuration(window_),
                          ", algorithm=", RateLimitAlgorithmName(algorithm_), BurstSuffix(), ")");
    case LimitKind::kResource:
      return absl::StrCat("ResourceLimit(key=", key_, ", capacity=", FormatNumber(capacity_), ")");
  }
  return "Limit()";
}

std::string Limit::BurstSuffix() const {
  return explicit_burst() ? absl::StrCat(", burst=", FormatNumber(burst_)) : std::string();
}

RateLimit::RateLimit(std::string key, double capacity, absl::Duration window,
                     RateLimitAlgorithm algorithm, const RateLimitOptions& options)
    : Limit(LimitKind::kRate, CheckedRateKey(std::move(key)), capacity, window, algorithm,
            options) {}

RateLimit::RateLimit(std::string key, double capacity, absl::string_view window,
                     RateLimitAlgorithm algorithm, const RateLimitOptions& options)
    : RateLimit(key, capacity, ParsedWindow(absl::StrCat("RateLimit '", key, "'"), window),
                algorithm, options) {}

CallLimit::CallLimit(double capacity, absl::Duration window, RateLimitAlgorithm algorithm,
                     const RateLimitOptions& options)
    : Limit(LimitKind::kCall, std::string(kCallLimitKey), capacity, window, algorithm, options) {}

CallLimit::CallLimit(double capacity, absl::string_view window, RateLimitAlgorithm algorithm,
                     const RateLimitOptions& options)
    : CallLimit(capacity, ParsedWindow("CallLimit 'call_count'", window), algorithm, options) {}

ResourceLimit::Validated ResourceLimit::Validate(std::string key, bool negative,
                                                 uint64_t magnitude) {
  CheckResourceKey(key);
  if (negative || magnitude < 1 || magnitude > static_cast<uint64_t>(kMaxWholeUnits)) {
    ThrowResourceCapacity(key, absl::StrCat(negative ? "-" : "", magnitude));
  }
  return Validated{std::move(key), static_cast<double>(magnitude)};
}

ResourceLimit::ResourceLimit(Validated validated)
    : Limit(LimitKind::kResource, std::move(validated.key), validated.capacity,
            absl::ZeroDuration(), kDefaultRateLimitAlgorithm) {}

}  // namespace concurry

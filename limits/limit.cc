#include "limits/limit.h"

#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "limits/rate_window.h"

namespace concurry {
namespace {

// The shortest decimal form that reads back as `value`, in positional notation for magnitudes in
// [1e-4, 1e16) and in scientific notation outside it, as Python's repr() writes floats (so
// "300", "0.0001", "1000000", "1e-05", "1e-300", "inf"). Plain std::to_chars() picks whichever
// notation is shorter, which writes 0.0001 as "1e-04" and 1000000 as "1e+06".
std::string ShortestNumber(double value) {
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (std::isnan(value)) return "nan";
  const double magnitude = std::fabs(value);
  const std::chars_format format = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16)
                                       ? std::chars_format::fixed
                                       : std::chars_format::scientific;
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value, format);
  return std::string(buffer, result.ptr);
}

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
             RateLimitAlgorithm algorithm)
    : kind_(kind),
      key_(std::move(key)),
      capacity_(capacity),
      window_(window),
      algorithm_(algorithm) {
  const absl::string_view type = kind == LimitKind::kRate   ? "RateLimit"
                                 : kind == LimitKind::kCall ? "CallLimit"
                                                            : "ResourceLimit";
  if (kind == LimitKind::kResource) {
    if (key_.empty()) throw InvalidOptionError("ResourceLimit key must not be empty");
    if (capacity < 1) {
      throw InvalidOptionError(
          absl::StrCat("ResourceLimit capacity must be >= 1, got: ", ShortestNumber(capacity)));
    }
    return;
  }
  if (!(capacity > 0)) {
    throw InvalidOptionError(absl::StrCat(type, " '", key_,
                                          "': capacity must be > 0 (+infinity means unlimited), "
                                          "got ",
                                          ShortestNumber(capacity)));
  }
  if (absl::Status status = ValidateRateWindow(window); !status.ok()) {
    throw InvalidOptionError(absl::StrCat(type, " '", key_, "': ", status.message()));
  }
}

std::string Limit::ParamsSignature() const {
  if (kind_ == LimitKind::kResource) return absl::StrCat("c", ShortestNumber(capacity_), "r");
  return absl::StrCat("c", ShortestNumber(capacity_), "w",
                      ShortestNumber(absl::ToDoubleSeconds(window_)),
                      RateLimitAlgorithmName(algorithm_).substr(0, 3));
}

std::string Limit::DebugString() const {
  switch (kind_) {
    case LimitKind::kRate:
      return absl::StrCat("RateLimit(key=", key_, ", capacity=", ShortestNumber(capacity_),
                          ", window=", absl::FormatDuration(window_),
                          ", algorithm=", RateLimitAlgorithmName(algorithm_), ")");
    case LimitKind::kCall:
      return absl::StrCat("CallLimit(capacity=", ShortestNumber(capacity_),
                          ", window=", absl::FormatDuration(window_),
                          ", algorithm=", RateLimitAlgorithmName(algorithm_), ")");
    case LimitKind::kResource:
      return absl::StrCat("ResourceLimit(key=", key_, ", capacity=", ShortestNumber(capacity_),
                          ")");
  }
  return "Limit()";
}

RateLimit::RateLimit(std::string key, double capacity, absl::Duration window,
                     RateLimitAlgorithm algorithm)
    : Limit(LimitKind::kRate, CheckedRateKey(std::move(key)), capacity, window, algorithm) {}

RateLimit::RateLimit(std::string key, double capacity, absl::string_view window,
                     RateLimitAlgorithm algorithm)
    : RateLimit(key, capacity, ParsedWindow(absl::StrCat("RateLimit '", key, "'"), window),
                algorithm) {}

CallLimit::CallLimit(double capacity, absl::Duration window, RateLimitAlgorithm algorithm)
    : Limit(LimitKind::kCall, std::string(kCallLimitKey), capacity, window, algorithm) {}

CallLimit::CallLimit(double capacity, absl::string_view window, RateLimitAlgorithm algorithm)
    : CallLimit(capacity, ParsedWindow("CallLimit", window), algorithm) {}

ResourceLimit::ResourceLimit(std::string key, Capacity capacity)
    : Limit(LimitKind::kResource, std::move(key), static_cast<double>(capacity.value),
            absl::ZeroDuration(), kDefaultRateLimitAlgorithm) {}

}  // namespace concurry

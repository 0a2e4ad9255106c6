#include "limits/rate_window.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace concurry {
namespace {

struct NamedWindow {
  absl::string_view name;
  int64_t seconds;
};

constexpr NamedWindow kWindows[] = {
    {"second", 1},        {"seconds", 1},        {"sec", 1},          {"secs", 1},
    {"per_second", 1},    {"per_seconds", 1},    {"per_sec", 1},      {"per_secs", 1},
    {"secondly", 1},      {"minute", 60},        {"minutes", 60},     {"min", 60},
    {"mins", 60},         {"per_minute", 60},    {"per_minutes", 60}, {"per_min", 60},
    {"per_mins", 60},     {"minutely", 60},      {"hour", 3600},      {"hours", 3600},
    {"hr", 3600},         {"hrs", 3600},         {"per_hour", 3600},  {"per_hours", 3600},
    {"per_hr", 3600},     {"per_hrs", 3600},     {"hourly", 3600},    {"day", 86400},
    {"days", 86400},      {"per_day", 86400},    {"per_days", 86400}, {"daily", 86400},
    {"week", 604800},     {"weeks", 604800},     {"wk", 604800},      {"wks", 604800},
    {"per_week", 604800}, {"per_weeks", 604800}, {"per_wk", 604800},  {"per_wks", 604800},
    {"weekly", 604800},
};

struct NamedAlgorithm {
  absl::string_view name;
  RateLimitAlgorithm algorithm;
};

constexpr NamedAlgorithm kAlgorithms[] = {
    {"token", RateLimitAlgorithm::kTokenBucket},
    {"token_bucket", RateLimitAlgorithm::kTokenBucket},
    {"tokenbucket", RateLimitAlgorithm::kTokenBucket},
    {"leaky", RateLimitAlgorithm::kLeakyBucket},
    {"leaky_bucket", RateLimitAlgorithm::kLeakyBucket},
    {"leakybucket", RateLimitAlgorithm::kLeakyBucket},
    {"sliding", RateLimitAlgorithm::kSlidingWindow},
    {"sliding_window", RateLimitAlgorithm::kSlidingWindow},
    {"slidingwindow", RateLimitAlgorithm::kSlidingWindow},
    {"fixed", RateLimitAlgorithm::kFixedWindow},
    {"fixed_window", RateLimitAlgorithm::kFixedWindow},
    {"fixedwindow", RateLimitAlgorithm::kFixedWindow},
    {"gcra", RateLimitAlgorithm::kGcra},
    {"generic cell rate", RateLimitAlgorithm::kGcra},
    {"generic cell rate algorithm", RateLimitAlgorithm::kGcra},
};

// kMaxRateWindow in seconds (absl::ToInt64Seconds() is not constexpr).
constexpr int64_t kMaxWindowSeconds = int64_t{100} * 365 * 24 * 60 * 60;

}  // namespace

absl::Status ValidateRateWindow(absl::Duration window) {
  if (window < absl::Nanoseconds(1) || window > kMaxRateWindow) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window must be positive and finite, from 1ns to ", absl::FormatDuration(kMaxRateWindow),
        " (100 years), got ", absl::FormatDuration(window)));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> ParseRateWindow(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  for (const NamedWindow& window : kWindows) {
    if (lower == window.name) return absl::Seconds(window.seconds);
  }
  double seconds = 0;
  if (absl::SimpleAtod(lower, &seconds)) {
    // Checked as a number first: absl::Seconds() of a huge or NaN value would not say why.
    const absl::Duration window =
        seconds > 0 && seconds <= kMaxWindowSeconds ? absl::Seconds(seconds) : absl::ZeroDuration();
    if (window < absl::Nanoseconds(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rate-limit window must be a positive, finite number of seconds, from 1e-09 (1ns) to ",
          kMaxWindowSeconds, " (100 years), got '", text, "'",
          std::isnan(seconds) ? " (not a number)" : ""));
    }
    return window;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown rate-limit window '", text,
      "'; expected a number of seconds or one of second(s), sec(s), per_second(s), per_sec(s), "
      "minute(s), min(s), per_minute(s), per_min(s), hour(s), hr(s), per_hour(s), per_hr(s), "
      "day(s), per_day(s), week(s), wk(s), per_week(s), per_wk(s) (case-insensitive)"));
}

absl::string_view RateLimitAlgorithmName(RateLimitAlgorithm algorithm) {
  switch (algorithm) {
    case RateLimitAlgorithm::kTokenBucket:
      return "token_bucket";
    case RateLimitAlgorithm::kLeakyBucket:
      return "leaky_bucket";
    case RateLimitAlgorithm::kSlidingWindow:
      return "sliding_window";
    case RateLimitAlgorithm::kFixedWindow:
      return "fixed_window";
    case RateLimitAlgorithm::kGcra:
      return "gcra";
  }
  return "unknown";
}

bool AbslParseFlag(absl::string_view text, RateLimitAlgorithm* algorithm, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  for (const NamedAlgorithm& named : kAlgorithms) {
    if (lower == named.name) {
      *algorithm = named.algorithm;
      return true;
    }
  }
  *error = absl::StrCat("unknown rate-limit algorithm '", text,
                        "'; expected one of token, token_bucket, leaky, leaky_bucket, sliding, "
                        "sliding_window, fixed, fixed_window, gcra (case-insensitive)");
  return false;
}

std::string AbslUnparseFlag(RateLimitAlgorithm algorithm) {
  return std::string(RateLimitAlgorithmName(algorithm));
}

}  // namespace concurry

#include "retry/retry_after.h"

#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/errors.h"

namespace concurry {

RetryAfterError::RetryAfterError(absl::Duration delay, const std::string& message,
                                 absl::StatusCode code)
    : Error(code, message), delay_(delay) {}

absl::Status RetryAfterError::ToStatus() const { return WithRetryAfter(Error::ToStatus(), delay_); }

void SetRetryAfter(absl::Status& status, absl::Duration delay) {
  status.SetPayload(kRetryAfterPayloadUrl, absl::Cord(absl::FormatDuration(delay)));
}

absl::Status WithRetryAfter(absl::Status status, absl::Duration delay) {
  SetRetryAfter(status, delay);
  return status;
}

std::optional<absl::Duration> GetRetryAfter(const absl::Status& status) {
  const auto payload = status.GetPayload(kRetryAfterPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  absl::Duration delay;
  if (!absl::ParseDuration(std::string(*payload), &delay)) return std::nullopt;
  return delay;
}

std::optional<absl::Duration> RetryAfterOf(const std::exception_ptr& error) {
  if (!error) return std::nullopt;
  try {
    std::rethrow_exception(error);
  } catch (const RetryAfterError& e) {
    return e.delay();
  } catch (const StatusError& e) {
    return GetRetryAfter(e.status());
  } catch (const Error& e) {
    return GetRetryAfter(e.ToStatus());
  } catch (const absl::Status& status) {
    return GetRetryAfter(status);
  } catch (...) {
  }
  return std::nullopt;
}

std::optional<absl::Duration> ParseRetryAfter(absl::string_view value, absl::Time now) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return std::nullopt;
  if (absl::ascii_isdigit(static_cast<unsigned char>(value.front()))) {
    // delay-seconds: 1*DIGIT. A value too large for int64 seconds saturates (absl::Seconds of the
    // largest int64 is still finite, and the retry treats a wait it cannot schedule as endless).
    int64_t seconds = 0;
    for (const char c : value) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
      const int digit = c - '0';
      if (seconds > (std::numeric_limits<int64_t>::max() - digit) / 10) {
        seconds = std::numeric_limits<int64_t>::max();
      } else {
        seconds = seconds * 10 + digit;
      }
    }
    return absl::Seconds(seconds);
  }
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
  absl::Time date;
  std::string error;
  if (!absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", value, absl::UTCTimeZone(), &date, &error)) {
    return std::nullopt;
  }
  return date > now ? date - now : absl::ZeroDuration();
}

}  // namespace concurry

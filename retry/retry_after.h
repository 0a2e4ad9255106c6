// Server delay hints (Retry-After): a standard way for user code to say "the server asked to wait
// this long before the next attempt", which the retry loop (retry/retry.h) reads by default.
//
//   throw concurry::RetryAfterError(absl::Seconds(2), "429 from api.example.com");
//   return concurry::WithRetryAfter(absl::UnavailableError("busy"), absl::Seconds(2));
//   std::optional<absl::Duration> d = concurry::ParseRetryAfter("120");  // 120 s
//
// RetryPolicy (retry/policy.h) jitters the hint upward, combines it with the back-off and caps it
// (delay_hook_jitter, delay_hook_mode, max_wait, deadline).

#ifndef CONCURRY_RETRY_RETRY_AFTER_H_
#define CONCURRY_RETRY_RETRY_AFTER_H_

#include <exception>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/errors.h"

namespace concurry {

// The type URL of the absl::Status payload that carries a server delay. Its value is the delay
// formatted by absl::FormatDuration() ("1.5s", "2m", "inf"), read back with absl::ParseDuration().
inline constexpr absl::string_view kRetryAfterPayloadUrl = "concurry.dev/RetryAfter";

// Thrown by user code when a server asked to wait `delay` before trying again (HTTP 429 or 503
// with Retry-After, a gRPC RetryInfo). A concurry::Error whose code() is `code` (default
// kUnavailable; kResourceExhausted suits HTTP 429); ToStatus() carries the delay as the
// kRetryAfterPayloadUrl payload, so the hint survives a trip through absl::Status (futures,
// workers). Retried like any std::exception under the default `retry_on`. Thread-safe
// (immutable).
class RetryAfterError : public Error {
 public:
  RetryAfterError(absl::Duration delay, const std::string& message,
                  absl::StatusCode code = absl::StatusCode::kUnavailable);

  // The delay the server asked for, as given (the retry clamps a negative one to 0).
  absl::Duration delay() const noexcept { return delay_; }
  // code() and what(), with the delay as the kRetryAfterPayloadUrl payload.
  absl::Status ToStatus() const override;

 private:
  absl::Duration delay_;
};

// Attaches `delay` to `status` as the kRetryAfterPayloadUrl payload (replacing any earlier one).
// No effect on an OK status (absl::Status keeps no payload on OK).
void SetRetryAfter(absl::Status& status, absl::Duration delay);

// Returns `status` with `delay` attached (SetRetryAfter), for
// `return WithRetryAfter(absl::UnavailableError("busy"), absl::Seconds(2));`.
absl::Status WithRetryAfter(absl::Status status, absl::Duration delay);

// Returns the delay attached by SetRetryAfter(), or nullopt when `status` carries none (or a
// payload under kRetryAfterPayloadUrl that is not a duration).
std::optional<absl::Duration> GetRetryAfter(const absl::Status& status);

// Returns the server delay carried by a thrown error, or nullopt: a RetryAfterError's delay(),
// else the payload of a concurry::Error's ToStatus() (a StatusError: a non-OK absl::Status that
// was turned into an exception), else of a thrown absl::Status. Null `error`: nullopt.
std::optional<absl::Duration> RetryAfterOf(const std::exception_ptr& error);

// Parses the value of an HTTP Retry-After header (RFC 9110, section 10.2.3) as a delay:
//   - delay-seconds, a non-negative decimal integer ("120"): that many seconds;
//   - an HTTP-date in IMF-fixdate form ("Wed, 21 Oct 2015 07:28:00 GMT"): the time from `now` to
//     that date, 0 if it is already past.
// Surrounding whitespace is ignored. Returns nullopt for anything else (a negative or fractional
// number, the obsolete date forms, garbage): a caller then falls back to its back-off.
std::optional<absl::Duration> ParseRetryAfter(absl::string_view value,
                                              absl::Time now = absl::Now());

}  // namespace concurry

#endif  // CONCURRY_RETRY_RETRY_AFTER_H_

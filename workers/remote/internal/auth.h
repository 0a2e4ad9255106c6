// The bearer token of Mode::kRemote: how a client presents it and how a host checks it.

#ifndef CONCURRY_WORKERS_REMOTE_INTERNAL_AUTH_H_
#define CONCURRY_WORKERS_REMOTE_INTERNAL_AUTH_H_

#include <string>

#include "absl/strings/string_view.h"

namespace concurry::remote_internal {

// The metadata key that carries the token (gRPC keys are lower case).
inline constexpr char kAuthorizationKey[] = "authorization";

// Returns the metadata value for `token`: "Bearer <token>".
std::string BearerValue(absl::string_view token);

// Whether `value` is exactly BearerValue(`token`). Takes the same time whatever the position of
// the first differing byte, so that timing does not reveal how much of a guess was right (it
// depends only on the lengths).
bool BearerTokenMatches(absl::string_view value, absl::string_view token);

}  // namespace concurry::remote_internal

#endif  // CONCURRY_WORKERS_REMOTE_INTERNAL_AUTH_H_

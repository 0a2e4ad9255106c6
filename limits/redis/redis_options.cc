#include "limits/redis/redis_options.h"

#include <sys/un.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/errors.h"

namespace concurry {
namespace {

// Throws InvalidOptionError for a duration outside [min, max].
void CheckDuration(absl::string_view field, absl::Duration value, absl::Duration min,
                   absl::Duration max) {
  if (value >= min && value <= max) return;
  throw InvalidOptionError(absl::StrCat("RedisOptions.", field, " = ", absl::FormatDuration(value),
                                        " is out of range; allowed: ", absl::FormatDuration(min),
                                        " to ", absl::FormatDuration(max)));
}

void CheckInt(absl::string_view field, int value, int min, int max) {
  if (value >= min && value <= max) return;
  throw InvalidOptionError(absl::StrCat("RedisOptions.", field, " = ", value,
                                        " is out of range; allowed: ", min, " to ", max));
}

}  // namespace

absl::string_view RedisFailureName(RedisFailure failure) {
  return failure == RedisFailure::kFailOpen ? "fail_open" : "fail_closed";
}

bool AbslParseFlag(absl::string_view text, RedisFailure* failure, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (lower == "fail_closed" || lower == "closed") {
    *failure = RedisFailure::kFailClosed;
    return true;
  }
  if (lower == "fail_open" || lower == "open") {
    *failure = RedisFailure::kFailOpen;
    return true;
  }
  *error =
      absl::StrCat("unknown Redis failure mode '", text,
                   "'; expected one of fail_closed, closed, fail_open, open (case-insensitive)");
  return false;
}

std::string AbslUnparseFlag(RedisFailure failure) { return std::string(RedisFailureName(failure)); }

void RedisOptions::Validate() const {
  if (unix_socket.empty()) {
    if (host.empty()) {
      throw InvalidOptionError(
          "RedisOptions.host is empty; set a host name or address, or "
          "unix_socket");
    }
    CheckInt("port", port, 1, 65535);
  } else if (unix_socket.size() >= sizeof(sockaddr_un::sun_path)) {
    throw InvalidOptionError(absl::StrCat("RedisOptions.unix_socket '", unix_socket, "' is ",
                                          unix_socket.size(), " bytes long; allowed: at most ",
                                          sizeof(sockaddr_un::sun_path) - 1));
  }
  if (!user.empty() && password.empty()) {
    throw InvalidOptionError(absl::StrCat("RedisOptions.user '", user,
                                          "' needs a password (AUTH user password); for an ACL "
                                          "user with nopass, any non-empty password works"));
  }
  CheckInt("db", db, 0, 1 << 20);
  if (absl::StrContains(key_prefix, '{') || absl::StrContains(key_prefix, '}')) {
    throw InvalidOptionError(absl::StrCat("RedisOptions.key_prefix '", key_prefix,
                                          "' contains '{' or '}'; allowed: any other bytes (the "
                                          "keys of a set add their own hash tag)"));
  }
  CheckDuration("connect_timeout", connect_timeout, absl::Milliseconds(1), absl::Hours(1));
  CheckDuration("command_timeout", command_timeout, absl::Milliseconds(1), absl::Hours(1));
  CheckInt("pool_size", pool_size, 1, 1024);
  CheckDuration("lease_ttl", lease_ttl, absl::Milliseconds(100), absl::Hours(24));
  if (failure != RedisFailure::kFailClosed && failure != RedisFailure::kFailOpen) {
    throw InvalidOptionError(absl::StrCat("RedisOptions.failure = ", static_cast<int>(failure),
                                          " is not a RedisFailure; allowed: kFailClosed, "
                                          "kFailOpen"));
  }
  CheckDuration("reconnect_backoff", reconnect_backoff, absl::Milliseconds(1), absl::Minutes(1));
}

std::string RedisOptions::Address() const {
  if (!unix_socket.empty()) return absl::StrCat("unix:", unix_socket);
  // An IPv6 literal gets brackets, so that the port stays readable.
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

RedisError::RedisError(const std::string& message)
    : Error(absl::StatusCode::kUnavailable, message) {}

RedisError::RedisError(absl::StatusCode code, const std::string& message) : Error(code, message) {}

RedisConfigError::RedisConfigError(const std::string& message)
    : RedisError(absl::StatusCode::kFailedPrecondition, message) {}

}  // namespace concurry

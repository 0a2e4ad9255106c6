// Connection settings of concurry's Redis client (the store of LimitSets shared across hosts) and
// the error it raises when Redis cannot be reached or does not answer in time.
//
//   concurry::RedisOptions options{.host = "10.0.0.5", .port = 6380, .user = "limits",
//                                  .password = "secret", .key_prefix = "billing:",
//                                  .command_timeout = absl::Milliseconds(200)};
//   options.Validate();  // throws InvalidOptionError naming a bad field, its value and the range
//   try { ... } catch (const concurry::RedisConfigError& e) {  // kFailedPrecondition: fix it
//   } catch (const concurry::RedisError& e) {}                 // kUnavailable: an outage
//
// TLS is not offered: the client is built on Debian's hiredis 0.14.1, which has no TLS support
// (hiredis_ssl arrived in hiredis 1.0). Reach a remote Redis over a trusted network or a tunnel.

#ifndef CONCURRY_LIMITS_REDIS_REDIS_OPTIONS_H_
#define CONCURRY_LIMITS_REDIS_REDIS_OPTIONS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/errors.h"

namespace concurry {

// What a LimitSet on Redis does while Redis cannot be reached.
enum class RedisFailure {
  // Acquire() and its variants throw RedisError (the default: a limit is never exceeded).
  kFailClosed,
  // Acquire() grants an acquisition that holds nothing on the server, with a warning.
  kFailOpen,
};

// Returns "fail_closed" or "fail_open".
absl::string_view RedisFailureName(RedisFailure failure);

// Parses "fail_closed"/"closed" and "fail_open"/"open" (case-insensitive). On failure sets
// `*error` to a message listing the accepted names and returns false.
bool AbslParseFlag(absl::string_view text, RedisFailure* failure, std::string* error);

// Returns RedisFailureName(failure), which AbslParseFlag() accepts.
std::string AbslUnparseFlag(RedisFailure failure);

// Where Redis is and how to talk to it. Fill with designated initializers; Validate() checks it
// (the client and the store call it too).
struct RedisOptions {
  // TCP address. Ignored when unix_socket is set.
  std::string host = "127.0.0.1";
  int port = 6379;
  // Path of Redis's unix socket; when set, used instead of host and port.
  std::string unix_socket = "";
  // ACL user (Redis 6+), sent as AUTH user password; empty: AUTH password (the default user).
  std::string user = "";
  // Password; empty: no AUTH. Required when user is set.
  std::string password = "";
  // Database index selected on every connection (SELECT); the server's "databases" bounds it.
  int db = 0;
  // Prefix of every key concurry writes, so that several applications share one Redis. Must not
  // contain '{' or '}' (the keys of one set share a hash tag, "{name}", for Redis Cluster).
  std::string key_prefix = "concurry:";
  // Bound of one connection attempt (TCP connect or unix socket connect).
  absl::Duration connect_timeout = absl::Seconds(1);
  // Bound of one command: sending it and receiving its reply; also the longest wait for a free
  // pooled connection.
  absl::Duration command_timeout = absl::Seconds(1);
  // Connections of a client's pool (at most this many commands in flight at once).
  int pool_size = 4;
  // Life of a resource-limit lease that is not renewed (the holder died): its units return to
  // the limit after at most this long. Live holders renew their leases every lease_ttl / 3.
  absl::Duration lease_ttl = absl::Seconds(10);
  // Behaviour while Redis cannot be reached.
  RedisFailure failure = RedisFailure::kFailClosed;
  // Wait after a failed connection attempt before the next one; calls in between fail at once
  // with the last attempt's error (no connection storm against a Redis that is down).
  absl::Duration reconnect_backoff = absl::Milliseconds(100);

  // Throws InvalidOptionError naming the first bad field, its value and the allowed range.
  void Validate() const;
  // Returns "host:port", or "unix:<path>" with a unix socket: how messages name the server.
  std::string Address() const;
};

// Redis could not be reached, the connection broke, or it did not answer within the timeout: an
// outage, which RedisFailure::kFailOpen may ride out. kUnavailable. The message names the server
// (RedisOptions::Address()) and what failed ("connection refused", "timed out after 200ms").
// A RedisConfigError (below) is a RedisError too, but never an outage. Thread-safe (immutable).
class RedisError : public Error {
 public:
  explicit RedisError(const std::string& message);

 protected:
  RedisError(absl::StatusCode code, const std::string& message);
};

// Redis answered, but refused what the options or the scripts ask for: AUTH failed (WRONGPASS,
// an unknown ACL user, a password given to a server without one), the user lacks a permission
// (NOPERM, e.g. no +@scripting for EVALSHA), SELECT db is out of range, or a script does not load
// (a compile error). Retrying does not help: fix the options or the server's configuration.
// kFailedPrecondition. Not an outage: a LimitSet with RedisFailure::kFailOpen throws it instead of
// granting. Transient refusals (LOADING, BUSY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN) stay plain
// RedisErrors. Thread-safe (immutable).
class RedisConfigError : public RedisError {
 public:
  explicit RedisConfigError(const std::string& message);
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_REDIS_OPTIONS_H_

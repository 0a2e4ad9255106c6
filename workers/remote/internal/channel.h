// The gRPC channels of Mode::kRemote clients: one per host target and set of channel settings,
// shared by every worker on that host (their streams share its HTTP/2 connection), and the
// choice of the host a new worker goes to.

#ifndef CONCURRY_WORKERS_REMOTE_INTERNAL_CHANNEL_H_
#define CONCURRY_WORKERS_REMOTE_INTERNAL_CHANNEL_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "workers/options.h"

namespace concurry::remote_internal {

// Returns the channel to `target` with the credentials and limits of `options`: TLS when
// options.tls_root_certs is set (with the client certificate, if given), plaintext otherwise;
// keepalive, connection-attempt timeout and reconnect backoff from `options`; a service config
// with the round_robin balancing policy (a target resolving to many addresses, dns:///...,
// spreads workers over them), client-side health checking (grpc.health.v1, so that a host that
// reports NOT_SERVING is not picked) and a retry policy for UNAVAILABLE on Stats (not on
// Connect: channel.cc says why). Throws InvalidOptionError when a TLS file cannot
// be read. Thread-safe.
std::shared_ptr<grpc::Channel> ChannelFor(const RemoteOptions& options, const std::string& target);

// Returns gRPC call credentials that add "authorization: Bearer <token>" to every call they are
// set on. Their minimum security level is none, so that they apply over plaintext channels too
// (loopback, a trusted network; TLS is the caller's choice, through RemoteOptions).
std::shared_ptr<grpc::CallCredentials> TokenCredentials(const std::string& token);

// The token of `options`: `token`, or the contents of `token_file` without surrounding
// whitespace. Throws InvalidOptionError when neither or both are set, the file cannot be read or
// holds only whitespace. Logs a warning (once per program) for a token shorter than 16 bytes.
std::string ResolveToken(const RemoteOptions& options);

// Whether gRPC target `target` ("127.0.0.1:7000", "[::1]:7000", "localhost:7000",
// "dns:///localhost:7000", "ipv4:127.0.0.1:7000", "unix:/path") names this machine only.
bool IsLoopbackTarget(absl::string_view target);

// Throws InvalidOptionError when `options` would send the token in plaintext (no tls_root_certs)
// to a host that is not on loopback and allow_insecure is not set.
void CheckTokenIsSafe(const RemoteOptions& options);

// The host a new worker goes to.
struct HostChoice {
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
};

// Picks the host for a worker whose turn is `turn` (host turn % hosts of options.hosts): that
// host if it is connected, or connects within min(connect_timeout / hosts, 1 s) while no other
// host is ready, or within 250 ms (at most that slice) once one is; else the first ready host
// after it in turn order. A turn's host known to be down (its last connection attempt failed) is
// passed over as soon as another host is ready. Throws StatusError (kUnavailable) when no host
// connected within options.connect_timeout.
HostChoice PickHost(const RemoteOptions& options, size_t turn);

}  // namespace concurry::remote_internal

#endif  // CONCURRY_WORKERS_REMOTE_INTERNAL_CHANNEL_H_

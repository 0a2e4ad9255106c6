// The gRPC channels of Mode::kRemote clients: one per host target and set of credentials, shared
// by every worker on that host (their streams share its HTTP/2 connection).

#ifndef CONCURRY_WORKERS_REMOTE_INTERNAL_CHANNEL_H_
#define CONCURRY_WORKERS_REMOTE_INTERNAL_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "workers/options.h"

namespace concurry::remote_internal {

// Returns the channel to `target` with the credentials and limits of `options`: TLS when
// options.tls_root_certs is set (with the client certificate, if given), plaintext otherwise;
// keepalive pings every second, so that a host that vanished without closing its connection is
// noticed within about two seconds; the round_robin balancing policy, so that a target resolving
// to many addresses (dns:///...) spreads workers over them. Throws InvalidOptionError when a TLS
// file cannot be read. Thread-safe.
std::shared_ptr<grpc::Channel> ChannelFor(const RemoteOptions& options, const std::string& target);

// Returns gRPC call credentials that add "authorization: Bearer <token>" to every call they are
// set on. Their minimum security level is none, so that they apply over plaintext channels too
// (loopback, a trusted network; TLS is the caller's choice, through RemoteOptions).
std::shared_ptr<grpc::CallCredentials> TokenCredentials(const std::string& token);

// Waits until `channel` is connected, or `deadline` passes; with `skip_if_down`, gives up at
// once when the channel failed to connect (the host is down or refuses connections).
bool WaitUntilConnected(grpc::Channel& channel, absl::Time deadline, bool skip_if_down);

}  // namespace concurry::remote_internal

#endif  // CONCURRY_WORKERS_REMOTE_INTERNAL_CHANNEL_H_

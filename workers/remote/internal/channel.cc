#include "workers/remote/internal/channel.h"

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "workers/remote/internal/auth.h"

namespace concurry::remote_internal {
namespace {

// The service config of every channel. round_robin: a target resolving to many addresses
// spreads workers over them. healthCheckConfig: gRPC watches each address's grpc.health.v1 status
// (the overall one, service name ""), and an address whose host says NOT_SERVING is not used.
// retryPolicy: Stats, which only reads, is tried again when it fails with UNAVAILABLE, up to 3
// times in all; an attempt that fails in the client, with no connected address to pick (as while
// the channel backs off after a refused connection), counts as one of them. A worker's stream
// (Connect) is not: with gRPC 1.51's synchronous API, when the first attempt fails before the
// Create left, Write reports false, gRPC retries, the host makes the worker on the second attempt,
// and every later Write on the stream fails, so the client could never call or stop the worker it
// got (seen against a flaky server in a test, in about half the rounds under ASan). Connect keeps
// gRPC's transparent retry of a stream that never left the client; anything else fails Create
// with UNAVAILABLE.
constexpr char kServiceConfig[] = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""},
  "methodConfig": [{
    "name": [{"service": "concurry.remote.v1.WorkerHost", "method": "Stats"}],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})";

// Milliseconds for a gRPC channel argument, clamped to what an int holds.
int Millis(absl::Duration d) {
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
}

// The most the host whose turn it is may take to connect, while no other host is ready.
constexpr absl::Duration kTurnSlice = absl::Seconds(1);
// ... and once another host is ready.
constexpr absl::Duration kTurnGrace = absl::Milliseconds(500);
// How often PickHost looks at the other candidates.
constexpr absl::Duration kPollTick = absl::Milliseconds(10);

std::string ReadPem(const std::string& path, const char* field) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  if (!in || !(contents << in.rdbuf())) {
    throw InvalidOptionError(
        absl::StrCat("worker options: remote.", field, ": cannot read \"", path, "\""));
  }
  return contents.str();
}

std::shared_ptr<grpc::Channel> MakeChannel(const RemoteOptions& options,
                                           const std::string& target) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_root_certs.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadPem(options.tls_root_certs, "tls_root_certs");
    if (!options.tls_client_cert.empty()) {
      ssl.pem_cert_chain = ReadPem(options.tls_client_cert, "tls_client_cert");
      ssl.pem_private_key = ReadPem(options.tls_client_key, "tls_client_key");
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Millis(options.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC's "min reconnect backoff" is the shortest time one connection attempt is given.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, Millis(options.connect_attempt_timeout));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, Millis(options.reconnect_backoff_initial));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, Millis(options.reconnect_backoff_max));
  args.SetServiceConfigJSON(kServiceConfig);
  return grpc::CreateCustomChannel(target, credentials, args);
}

// Adds the bearer token to a call's metadata (gRPC's call credentials plugin).
class TokenPlugin final : public grpc::MetadataCredentialsPlugin {
 public:
  explicit TokenPlugin(const std::string& token) : value_(BearerValue(token)) {}

  // Nothing to wait for: gRPC may run it on the calling thread.
  bool IsBlocking() const override { return false; }
  const char* GetType() const override { return "concurry.bearer_token"; }
  grpc::Status GetMetadata(grpc::string_ref /*service_url*/, grpc::string_ref /*method_name*/,
                           const grpc::AuthContext& /*channel_auth_context*/,
                           std::multimap<grpc::string, grpc::string>* metadata) override {
    metadata->emplace(kAuthorizationKey, value_);
    return grpc::Status::OK;
  }
  grpc::string DebugString() override { return "concurry bearer token"; }

 private:
  const std::string value_;
};

}  // namespace

std::shared_ptr<grpc::CallCredentials> TokenCredentials(const std::string& token) {
  return grpc::experimental::MetadataCredentialsFromPlugin(std::make_unique<TokenPlugin>(token),
                                                           GRPC_SECURITY_NONE);
}

std::shared_ptr<grpc::Channel> ChannelFor(const RemoteOptions& options, const std::string& target) {
  using Key = std::tuple<std::string, std::string, std::string, std::string, int, int64_t, int64_t,
                         int64_t, int64_t, int64_t>;
  static absl::Mutex mu(absl::kConstInit);
  // Channels are kept for the life of the program: a host that restarts is reconnected to by
  // the same channel. TLS files are read when a channel is made: a certificate replaced under the
  // same path is not read again until the program restarts.
  static auto* channels ABSL_GUARDED_BY(mu) =
      new absl::flat_hash_map<Key, std::shared_ptr<grpc::Channel>>();
  const Key key{target,
                options.tls_root_certs,
                options.tls_client_cert,
                options.tls_client_key,
                options.max_message_bytes,
                absl::ToInt64Milliseconds(options.keepalive_time),
                absl::ToInt64Milliseconds(options.keepalive_timeout),
                absl::ToInt64Milliseconds(options.connect_attempt_timeout),
                absl::ToInt64Milliseconds(options.reconnect_backoff_initial),
                absl::ToInt64Milliseconds(options.reconnect_backoff_max)};
  absl::MutexLock lock(&mu);
  auto it = channels->find(key);
  if (it != channels->end()) return it->second;
  std::shared_ptr<grpc::Channel> channel = MakeChannel(options, target);
  channels->emplace(key, channel);
  return channel;
}

std::string ResolveToken(const RemoteOptions& options) {
  if (!options.token.empty() && !options.token_file.empty()) {
    throw InvalidOptionError(
        "worker options: remote.token and remote.token_file are both set; set one");
  }
  std::string token = options.token;
  if (!options.token_file.empty()) {
    std::ifstream in(options.token_file, std::ios::binary);
    std::stringstream contents;
    if (!in || !(contents << in.rdbuf())) {
      throw InvalidOptionError(absl::StrCat("worker options: remote.token_file: cannot read \"",
                                            options.token_file, "\""));
    }
    token = std::string(absl::StripAsciiWhitespace(contents.str()));
    if (token.empty()) {
      throw InvalidOptionError(absl::StrCat("worker options: remote.token_file \"",
                                            options.token_file,
                                            "\" holds no token (only whitespace)"));
    }
  }
  if (token.empty()) {
    throw InvalidOptionError(
        "worker options: Mode::kRemote needs remote.token or remote.token_file: hosts refuse "
        "calls without the shared secret of their --token_file");
  }
  static std::atomic<bool> warned{false};
  if (token.size() < 16 && !warned.exchange(true)) {
    std::fprintf(stderr,
                 "concurry: warning: the remote token is %zu bytes; use at least 16 random "
                 "bytes (e.g. head -c 32 /dev/urandom | base64) so that it cannot be guessed\n",
                 token.size());
  }
  return token;
}

bool IsLoopbackTarget(absl::string_view target) {
  if (absl::StartsWith(target, "unix:") || absl::StartsWith(target, "unix-abstract:")) {
    return true;
  }
  // "dns:///host:port", "dns://authority/host:port", "ipv4:host:port", "ipv6:[host]:port".
  if (absl::ConsumePrefix(&target, "dns:")) {
    // "dns://authority/name": the name is resolved by that DNS server, which may say anything.
    if (absl::ConsumePrefix(&target, "//") && !absl::ConsumePrefix(&target, "/")) return false;
  } else if (!absl::ConsumePrefix(&target, "ipv4:")) {
    absl::ConsumePrefix(&target, "ipv6:");
  }
  // The host part: "[v6]:port", "v4:port", "name:port", or without the port.
  std::string host;
  if (absl::ConsumePrefix(&target, "[")) {
    const size_t end = target.find(']');
    if (end == absl::string_view::npos) return false;
    host = std::string(target.substr(0, end));
  } else {
    const size_t colon = target.rfind(':');
    host = std::string(colon == absl::string_view::npos ? target : target.substr(0, colon));
  }
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

void CheckTokenIsSafe(const RemoteOptions& options) {
  if (!options.tls_root_certs.empty() || options.allow_insecure) return;
  for (const std::string& host : options.hosts) {
    if (!IsLoopbackTarget(host)) {
      throw InvalidOptionError(absl::StrCat(
          "worker options: remote.hosts has \"", host,
          "\", which is not on loopback, and TLS is off (remote.tls_root_certs is empty): the "
          "token would travel in plaintext. Set remote.tls_root_certs, or remote.allow_insecure "
          "= true on a network you trust"));
    }
  }
}

HostChoice PickHost(const RemoteOptions& options, size_t turn) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options.connect_timeout;
  const size_t n = options.hosts.size();
  // The candidates in turn order.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  channels.reserve(n);
  for (size_t k = 0; k < n; ++k)
    channels.push_back(ChannelFor(options, options.hosts[(turn + k) % n]));
  const auto choice = [&](size_t k) {
    return HostChoice{options.hosts[(turn + k) % n], channels[k]};
  };
  // How long the turn's host may take to connect: its slice, or a short grace once another host
  // is ready. Placement stays round-robin while hosts connect quickly (a pool's workers made at
  // once start every channel connecting together), and a host that does not is passed over soon.
  const absl::Duration slice =
      std::min(options.connect_timeout / static_cast<int64_t>(n), kTurnSlice);
  const absl::Duration grace = std::min(slice, kTurnGrace);
  std::vector<grpc_connectivity_state> states(n);
  for (;;) {
    // Asking for the state also starts connecting an idle channel.
    for (size_t k = 0; k < n; ++k) states[k] = channels[k]->GetState(/*try_to_connect=*/true);
    if (states[0] == GRPC_CHANNEL_READY) return choice(0);
    std::optional<size_t> ready;
    for (size_t k = 1; k < n && !ready; ++k) {
      if (states[k] == GRPC_CHANNEL_READY) ready = k;
    }
    const absl::Time now = absl::Now();
    // A turn's host known to be down (its last attempt failed) gets no patience.
    if (ready && (states[0] == GRPC_CHANNEL_TRANSIENT_FAILURE || now - start >= grace)) {
      return choice(*ready);
    }
    if (now >= deadline) break;
    // Woken when the turn's host changes state, or at the next tick to look at the others.
    channels[0]->WaitForStateChange(states[0],
                                    absl::ToChronoTime(std::min(deadline, now + kPollTick)));
  }
  throw StatusError(absl::UnavailableError(
      absl::StrCat("worker options: remote: could not connect to ",
                   n == 1 ? "the worker host \"" : "any of the worker hosts \"",
                   absl::StrJoin(options.hosts, "\", \""), "\" within ",
                   absl::FormatDuration(options.connect_timeout),
                   " (remote.connect_timeout); is a host running there?")));
}

}  // namespace concurry::remote_internal

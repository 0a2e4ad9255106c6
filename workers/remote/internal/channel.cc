#include "workers/remote/internal/channel.h"

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "workers/remote/internal/auth.h"

namespace concurry::remote_internal {
namespace {

// Keepalive: a ping every second on a connection with open streams, and the connection counts
// as dead when a ping is not answered within a second (the host's kMinClientPingIntervalMs
// allows this rate).
constexpr int kKeepaliveTimeMs = 1000;
constexpr int kKeepaliveTimeoutMs = 1000;

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
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetServiceConfigJSON(R"({"loadBalancingConfig": [{"round_robin": {}}]})");
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

bool WaitUntilConnected(grpc::Channel& channel, absl::Time deadline, bool skip_if_down) {
  for (;;) {
    const grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) return true;
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE && skip_if_down) return false;
    if (!channel.WaitForStateChange(state, absl::ToChronoTime(deadline))) return false;
  }
}

std::shared_ptr<grpc::Channel> ChannelFor(const RemoteOptions& options, const std::string& target) {
  using Key = std::tuple<std::string, std::string, std::string, std::string, int>;
  static absl::Mutex mu(absl::kConstInit);
  // Channels are kept for the life of the program: a host that restarts is reconnected to by
  // the same channel.
  static auto* channels ABSL_GUARDED_BY(mu) =
      new absl::flat_hash_map<Key, std::shared_ptr<grpc::Channel>>();
  const Key key{target, options.tls_root_certs, options.tls_client_cert, options.tls_client_key,
                options.max_message_bytes};
  absl::MutexLock lock(&mu);
  auto it = channels->find(key);
  if (it != channels->end()) return it->second;
  std::shared_ptr<grpc::Channel> channel = MakeChannel(options, target);
  channels->emplace(key, channel);
  return channel;
}

}  // namespace concurry::remote_internal

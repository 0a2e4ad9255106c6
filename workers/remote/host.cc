#include "workers/remote/host.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "workers/registration.h"
#include "workers/remote/internal/auth.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/remote.pb.h"

namespace concurry::remote {
namespace {

using v1::Call;
using v1::ClientFrame;
using v1::HostFrame;
using v1::StatsReply;
using v1::StatsRequest;
using workers_internal::EncodedClass;

// How often the host pings an idle client to find out that it is gone (the client's lease): a
// client whose machine vanished without closing its connection loses its workers within
// kKeepaliveTime + kKeepaliveTimeout.
constexpr int kKeepaliveTimeMs = 10'000;
constexpr int kKeepaliveTimeoutMs = 5'000;
// Clients ping every second (workers/remote/internal/channel.cc); pings closer than this are
// refused as abuse.
constexpr int kMinClientPingIntervalMs = 500;

std::string ErrorReply(absl::Status status) {
  return workers_internal::EncodeErrorReply(
      std::make_exception_ptr(StatusError(std::move(status))));
}

// The calls of one worker, and the thread that runs them one at a time, in order. The stream's
// handler thread reads frames and queues them here; the runner thread answers them (it is the
// only writer of the stream once the worker exists).
class Session {
 public:
  Session(const EncodedClass& cls, void* object,
          grpc::ServerReaderWriter<HostFrame, ClientFrame>* stream, int max_message_bytes,
          int64_t client_max_message_bytes, std::atomic<int64_t>* calls)
      : cls_(cls),
        object_(object),
        stream_(stream),
        max_message_bytes_(max_message_bytes),
        client_max_message_bytes_(client_max_message_bytes),
        reply_limit_(client_max_message_bytes > 0
                         ? std::min<int64_t>(max_message_bytes, client_max_message_bytes)
                         : max_message_bytes),
        calls_(calls) {}

  // Reads frames until the stream ends, running calls meanwhile; then destroys the object.
  void Serve() {
    std::thread runner([this] { Run(); });
    ClientFrame frame;
    while (stream_->Read(&frame)) {
      absl::MutexLock lock(&mu_);
      if (frame.has_call()) {
        queue_.push_back(std::move(*frame.mutable_call()));
      } else if (frame.has_cancel()) {
        if (frame.cancel().id() >= next_id_) cancelled_.insert(frame.cancel().id());
      } else if (frame.has_stop()) {
        stop_ = true;
      } else {
        // A second Create, or a frame of a kind this host does not know: answered in order as an
        // error, so that the client's replies stay aligned.
        Call bad;
        bad.set_id(UINT64_MAX);
        bad.set_method("");
        queue_.push_back(std::move(bad));
      }
    }
    {
      absl::MutexLock lock(&mu_);
      // Without a Stop, the client is gone: nobody waits for the queued calls.
      gone_ = !stop_;
      ended_ = true;
    }
    runner.join();
    cls_.destroy(object_);
  }

 private:
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || ended_;
  }

  void Run() {
    const std::string cancelled_reply = workers_internal::EncodeErrorReply(std::make_exception_ptr(
        CancelledError("the call was cancelled before it started on the worker host")));
    for (;;) {
      Call call;
      bool cancelled;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &Session::HasWorkLocked));
        if (queue_.empty() || gone_) return;
        call = std::move(queue_.front());
        queue_.pop_front();
        if (call.id() != UINT64_MAX) next_id_ = call.id() + 1;
        cancelled = stop_ || cancelled_.erase(call.id()) > 0;
      }
      std::string reply;
      if (call.id() == UINT64_MAX) {
        reply = ErrorReply(absl::InvalidArgumentError(
            "the worker host received a frame that is neither a call, a cancellation nor a stop "
            "after the worker was created"));
      } else if (cancelled) {
        reply = cancelled_reply;
      } else {
        // Unknown methods and undecodable arguments fail the future: the reply says so.
        Future<std::string> result = cls_.invoke(object_, call.method(), call.args());
        result.Wait();
        if (std::exception_ptr error = result.Error()) {
          reply = workers_internal::EncodeErrorReply(error);
        } else {
          reply = std::move(result).Result();
        }
      }
      HostFrame frame;
      frame.mutable_reply()->set_id(call.id());
      frame.mutable_reply()->set_reply(std::move(reply));
      // A reply gRPC would refuse to send would end the stream, and the worker with it: the
      // caller gets an error instead.
      if (frame.ByteSizeLong() > static_cast<size_t>(reply_limit_)) {
        const size_t size = frame.ByteSizeLong();
        frame.mutable_reply()->set_reply(ErrorReply(absl::ResourceExhaustedError(absl::StrCat(
            "the reply of ", call.method(), " is ", size, " bytes, more than the ", reply_limit_,
            " allowed (the worker host's --max_message_bytes is ", max_message_bytes_,
            client_max_message_bytes_ > 0
                ? absl::StrCat(", the client's remote.max_message_bytes is ",
                               client_max_message_bytes_)
                : std::string(),
            ")"))));
      }
      calls_->fetch_add(1, std::memory_order_relaxed);
      // A failed write: the stream is over, and the reader sees it too.
      if (!stream_->Write(frame)) return;
    }
  }

  const EncodedClass& cls_;
  void* const object_;
  grpc::ServerReaderWriter<HostFrame, ClientFrame>* const stream_;
  const int max_message_bytes_;
  // What the client's Create said it accepts (0: not said), and the smaller of the two limits.
  const int64_t client_max_message_bytes_;
  const int64_t reply_limit_;
  std::atomic<int64_t>* const calls_;

  absl::Mutex mu_;
  std::deque<Call> queue_ ABSL_GUARDED_BY(mu_);
  // Cancellations of calls not popped yet.
  absl::flat_hash_set<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  // The id after the last call popped: a cancellation below it comes too late.
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
};

class Service final : public v1::WorkerHost::Service {
 public:
  explicit Service(const HostOptions& options) : options_(options) {}

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<HostFrame, ClientFrame>* stream) override {
    if (grpc::Status denied = Authenticate(*context); !denied.ok()) return denied;
    // A slot among max_workers, held until the worker is gone.
    if (live_.fetch_add(1, std::memory_order_acq_rel) >= options_.max_workers) {
      live_.fetch_sub(1, std::memory_order_acq_rel);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the worker host runs its maximum of ", options_.max_workers,
                                       " workers (--max_workers)"));
    }
    struct Release {
      std::atomic<int64_t>* live;
      ~Release() { live->fetch_sub(1, std::memory_order_acq_rel); }
    } release{&live_};

    ClientFrame first;
    if (!stream->Read(&first)) return grpc::Status::OK;  // The client left before asking.
    if (!first.has_create()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message of a worker stream must be a Create");
    }
    const std::string& name = first.create().class_name();
    const EncodedClass* cls = name == workers_internal::kTaskHostClassName
                                  ? &workers_internal::TaskHostClass()
                                  : workers_internal::FindEncodedClass(name);
    if (cls == nullptr) {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("the worker host does not know the worker class \"", name,
                       "\": it is not registered (CONCURRY_REGISTER_WORKER) in the host's "
                       "program; add the library that registers it to the host's deps"));
    }
    void* object = nullptr;
    HostFrame created;
    created.mutable_created()->set_max_message_bytes(options_.max_message_bytes);
    try {
      object = cls->construct(first.create().constructor());
      created.mutable_created()->set_reply(workers_internal::EncodeReply());
    } catch (...) {
      created.mutable_created()->set_reply(
          workers_internal::EncodeErrorReply(std::current_exception()));
    }
    if (!stream->Write(created) || object == nullptr) {
      if (object != nullptr) cls->destroy(object);
      return grpc::Status::OK;
    }
    created_.fetch_add(1, std::memory_order_relaxed);
    // A reply larger than what the client accepts would end the stream at the client: it is
    // held to the smaller limit (a client that does not say is held to the host's).
    const int64_t client_max = first.create().max_message_bytes();
    Session(*cls, object, stream, options_.max_message_bytes, client_max, &calls_).Serve();
    return grpc::Status::OK;
  }

  grpc::Status Stats(grpc::ServerContext* context, const StatsRequest* /*request*/,
                     StatsReply* reply) override {
    if (grpc::Status denied = Authenticate(*context); !denied.ok()) return denied;
    reply->set_workers(live_.load(std::memory_order_relaxed));
    reply->set_workers_created(created_.load(std::memory_order_relaxed));
    reply->set_calls(calls_.load(std::memory_order_relaxed));
    reply->set_max_workers(options_.max_workers);
    return grpc::Status::OK;
  }

  int64_t live() const { return live_.load(std::memory_order_relaxed); }

 private:
  grpc::Status Authenticate(const grpc::ServerContext& context) const {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find(remote_internal::kAuthorizationKey);
    if (it == metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the worker host requires \"authorization: Bearer <token>\" metadata; "
                          "the call had none (set RemoteOptions::token)");
    }
    if (!remote_internal::BearerTokenMatches(
            absl::string_view(it->second.data(), it->second.size()), options_.token)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the worker host refused the call: wrong token");
    }
    return grpc::Status::OK;
  }

  const HostOptions options_;
  // Streams inside Connect (workers alive or being built).
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> created_{0};
  std::atomic<int64_t> calls_{0};
};

class HostImpl final : public remote::WorkerHost {
 public:
  explicit HostImpl(const HostOptions& options) : service_(options) {}
  ~HostImpl() override {
    if (server_ != nullptr) Shutdown(absl::Seconds(5));
  }

  void Build(const HostOptions& options) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> credentials;
    if (options.tls_cert_pem.empty()) {
      credentials = grpc::InsecureServerCredentials();
    } else {
      grpc::SslServerCredentialsOptions ssl;
      ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
      credentials = grpc::SslServerCredentials(ssl);
    }
    builder.AddListeningPort(options.listen, credentials, &port_);
    builder.RegisterService(&service_);
    builder.SetMaxReceiveMessageSize(options.max_message_bytes);
    builder.SetMaxSendMessageSize(options.max_message_bytes);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                               kMinClientPingIntervalMs);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      throw StatusError(absl::UnavailableError(
          absl::StrCat("the worker host could not listen on \"", options.listen,
                       "\" (address in use, or not an address of this machine)")));
    }
  }

  int port() const override { return port_; }
  void Wait() override { server_->Wait(); }
  void Shutdown(absl::Duration grace) override {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  }
  int64_t live_workers() const override { return service_.live(); }

 private:
  Service service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

bool IsLoopbackAddress(const std::string& address) {
  absl::string_view host = address;
  if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

std::unique_ptr<WorkerHost> WorkerHost::Start(const HostOptions& options) {
  if (options.token.empty()) {
    throw InvalidOptionError(
        "worker host: no token; every call must carry a shared secret (--token_file)");
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    throw InvalidOptionError(
        "worker host: TLS needs both a certificate and its key (--tls_cert and --tls_key)");
  }
  if (options.max_message_bytes <= 0 || options.max_workers <= 0) {
    throw InvalidOptionError(absl::StrCat("worker host: max_message_bytes (",
                                          options.max_message_bytes, ") and max_workers (",
                                          options.max_workers, ") must be > 0"));
  }
  if (options.tls_cert_pem.empty() && !IsLoopbackAddress(options.listen)) {
    std::fprintf(stderr,
                 "WARNING: concurry worker host listens on %s WITHOUT TLS: tokens and worker data "
                 "cross the network in plaintext. Give --tls_cert and --tls_key.\n",
                 options.listen.c_str());
  }
  auto host = std::make_unique<HostImpl>(options);
  host->Build(options);
  return host;
}

}  // namespace concurry::remote

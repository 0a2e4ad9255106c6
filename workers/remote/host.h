// A worker host: the gRPC server that builds and runs Mode::kRemote workers for clients on other
// machines. It serves every class registered with CONCURRY_REGISTER_WORKER and every function
// registered with CONCURRY_REGISTER_FUNCTION in its program; the concurry_worker_host Bazel macro
// (workers/remote/host.bzl) builds such a program with a main that takes flags (docs/remote.md).
//
//   concurry::remote::HostOptions options;
//   options.token = "s3cret";
//   std::unique_ptr<concurry::remote::WorkerHost> host =
//   concurry::remote::WorkerHost::Start(options); std::printf("listening on port %d\n",
//   host->port()); host->Wait();

#ifndef CONCURRY_WORKERS_REMOTE_HOST_H_
#define CONCURRY_WORKERS_REMOTE_HOST_H_

#include <memory>
#include <string>

#include "absl/time/time.h"

namespace concurry::remote {

struct HostOptions {
  // Where to listen, "address:port"; port 0 picks a free port (WorkerHost::port()).
  std::string listen = "127.0.0.1:0";
  // The shared secret every call must carry ("authorization: Bearer <token>"). Required.
  std::string token;
  // TLS: the host's certificate chain and private key, PEM text (not file names). Both or neither;
  // neither listens in plaintext, which the host warns about on stderr unless it listens on
  // loopback.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // The largest message sent or accepted, in bytes.
  int max_message_bytes = 128 << 20;
  // Workers alive at once; a client's Create beyond it fails with RESOURCE_EXHAUSTED.
  int max_workers = 1024;
};

// A running host. Thread-safe.
class WorkerHost {
 public:
  // Starts serving. Throws InvalidOptionError for bad options (no token, a key without a
  // certificate, sizes <= 0) and StatusError (kUnavailable) when it cannot listen on
  // options.listen.
  static std::unique_ptr<WorkerHost> Start(const HostOptions& options);

  // Shuts down (see Shutdown).
  virtual ~WorkerHost() = default;

  // The port it listens on (the one chosen for port 0).
  virtual int port() const = 0;
  // Blocks until the host shuts down.
  virtual void Wait() = 0;
  // Stops accepting streams, gives the open ones until `grace` to end, then cancels them (their
  // workers are destroyed once their running call returns). Idempotent.
  virtual void Shutdown(absl::Duration grace) = 0;
  // Workers alive now.
  virtual int64_t live_workers() const = 0;
};

// Whether `address` ("host:port") listens on loopback only (127.0.0.0/8, ::1, localhost).
bool IsLoopbackAddress(const std::string& address);

}  // namespace concurry::remote

#endif  // CONCURRY_WORKERS_REMOTE_HOST_H_

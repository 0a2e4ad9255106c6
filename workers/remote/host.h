// A worker host: the gRPC server that builds and runs Mode::kRemote workers for clients on other
// machines. It serves every class registered with CONCURRY_REGISTER_WORKER and every function
// registered with CONCURRY_REGISTER_FUNCTION in its program; the concurry_worker_host Bazel macro
// (workers/remote/host.bzl) builds such a program with a main that takes flags (docs/remote.md).
//
//   concurry::remote::HostOptions options;
//   options.token = "s3cret";
//   std::unique_ptr<concurry::remote::WorkerHost> host =
//       concurry::remote::WorkerHost::Start(options);
//   std::printf("listening on port %d\n", host->port());
//   host->Wait();

#ifndef CONCURRY_WORKERS_REMOTE_HOST_H_
#define CONCURRY_WORKERS_REMOTE_HOST_H_

#include <cstdint>
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
  // PEM text of the CA that signs client certificates. Set (it needs TLS), the host requires every
  // client to present a certificate signed by it, and refuses the connection otherwise.
  std::string tls_client_ca_pem;
  // The largest message sent or accepted, in bytes. gRPC's own default; larger messages (e.g. 64
  // MiB arguments) are opt-in, since every worker may hold 2 x this much of queued calls.
  int max_message_bytes = 4 << 20;
  // Workers alive at once; a client's Create beyond it fails with RESOURCE_EXHAUSTED.
  int max_workers = 1024;
  // Memory gRPC may use for its buffers (its ResourceQuota), 0 for max(256 MiB, 4 x
  // max_message_bytes). It is what bounds a peer without the token: gRPC 1.51 receives a whole
  // request message (even one above max_message_bytes) before the size check and the handler's
  // token check, so only the quota stops it; past the quota gRPC resets the largest streams
  // (RST_STREAM ENHANCE_YOUR_CALM), which may be workers' streams too. The calls queued on
  // workers are counted apart (max_message_bytes above).
  int64_t max_grpc_memory_bytes = 0;
  // The calls queued on all workers together, in bytes; 0 for no host-wide bound (each worker
  // then queues up to 2 x max_message_bytes, so up to max_workers times that in all). Set, each
  // worker queues up to its share, min(2 x max_message_bytes, max_queued_bytes / max_workers),
  // which must hold one message of the largest size: a budget under max_workers x
  // max_message_bytes is refused. The share is announced to clients, which keep their unanswered
  // calls within it; the host stops reading a worker's stream at its share, so a client that
  // ignores it gets at most one message more queued.
  int64_t max_queued_bytes = 0;
  // How long a new stream may take to send its Create; past it the host cancels the stream and
  // frees its worker slot.
  absl::Duration create_timeout = absl::Seconds(10);
  // How long a client may stay silent before the host counts it as gone and stops its workers:
  // the host pings a connection after a third of it without traffic, and drops the connection
  // when the ping is not answered within the other two thirds. So a client whose machine vanished
  // (or that hangs, or was stopped) without closing its connection loses its workers after about
  // the lease, at most a third more (a flow-control ping of gRPC's may restart the clock once).
  // 500 ms to 24 h; a short lease drops clients that stall that long, through load or a slow
  // network.
  absl::Duration client_lease = absl::Seconds(15);
};

// A running host. Thread-safe.
class WorkerHost {
 public:
  // Starts serving. Throws InvalidOptionError for bad options (no token, a key without a
  // certificate, numbers out of range) and StatusError (kUnavailable) when it cannot listen on
  // options.listen.
  static std::unique_ptr<WorkerHost> Start(const HostOptions& options);

  // Shuts down (see Shutdown).
  virtual ~WorkerHost() = default;

  // The port it listens on (the one chosen for port 0).
  virtual int port() const = 0;
  // Blocks until the host shuts down.
  virtual void Wait() = 0;
  // Reports NOT_SERVING on the health service, stops accepting streams, gives the open ones until
  // `grace` to end, then cancels them. It returns only once every worker is destroyed, which
  // waits for each running call to return: a call that never returns blocks Shutdown (and the
  // destructor) forever. The host binary (host_main.cc) therefore runs it on a thread and exits
  // anyway a few seconds after `grace`. Idempotent.
  virtual void Shutdown(absl::Duration grace) = 0;
  // Workers alive now.
  virtual int64_t live_workers() const = 0;
};

// Whether `address` ("host:port", "[v6]:port" or "unix:path") is reachable from this machine only:
// an IPv4 address in 127.0.0.0/8, ::1, the name "localhost", or a Unix socket. Other names are not
// resolved, so they count as public.
bool IsLoopbackAddress(const std::string& address);

}  // namespace concurry::remote

#endif  // CONCURRY_WORKERS_REMOTE_HOST_H_

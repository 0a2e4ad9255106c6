// main() of a worker host built with concurry_worker_host (workers/remote/host.bzl): serves the
// classes and functions registered in the binary's deps until SIGTERM or SIGINT.
//
//   my_host --listen=0.0.0.0:7000 --token_file=/etc/app/token --tls_cert=host.pem --tls_key=key.pem

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "workers/remote/host.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "address:port to listen on; port 0 picks a free one (printed, and written to "
          "--port_file). Anything but loopback without TLS is warned about.");
ABSL_FLAG(std::string, port_file, "",
          "if set, the chosen port is written to this file once the host serves");
ABSL_FLAG(std::string, token_file, "",
          "file holding the shared secret clients must send (RemoteOptions::token); required");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain of the host (enables TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM certificates of the CA that signs client certificates; set (with TLS), every client "
          "must present a certificate it signed");
ABSL_FLAG(int, max_message_bytes, 4 << 20,
          "largest message sent or accepted, in bytes; each worker may hold twice this much of "
          "queued calls");
ABSL_FLAG(int, max_workers, 1024, "workers alive at once; more Creates are refused");
ABSL_FLAG(int64_t, max_grpc_memory_mb, 0,
          "memory gRPC may use for its buffers (its resource quota), in MiB; 0 for max(256 MiB, "
          "4 x --max_message_bytes). It bounds what peers without the token can make the host "
          "hold; past it gRPC resets the largest streams");
ABSL_FLAG(int64_t, max_queued_mb, 0,
          "calls queued on all workers together, in MiB; 0 for no host-wide bound (each worker "
          "queues up to 2 x --max_message_bytes). Set, each worker gets its share, which must "
          "hold one message: at least --max_workers x --max_message_bytes");
ABSL_FLAG(int, create_timeout_ms, 10000,
          "a new worker stream must send its Create within this time, or it is cancelled");
ABSL_FLAG(int64_t, client_lease_ms, 15000,
          "a client silent this long (its connection's pings unanswered: machine gone, process "
          "hung or stopped) counts as gone, and its workers are stopped; 500 to 86400000");
ABSL_FLAG(int, shutdown_grace_ms, 5000,
          "on SIGTERM/SIGINT, how long open workers get to finish before they are cancelled");

namespace {

// How long after the shutdown grace the host waits for running calls before it exits anyway.
constexpr absl::Duration kExitSlack = absl::Seconds(3);

// The contents of `path`; exits with a message naming the flag when it cannot be read.
std::string ReadFileOrDie(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "concurry worker host: cannot read --%s=%s\n", flag, path.c_str());
    std::exit(2);
  }
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Writes `text` to `path` through a temporary file, so that a reader never sees half of it.
bool WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!(out << text)) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // SIGTERM and SIGINT are taken by sigwait below; every thread started from here inherits the
  // mask, so none of them gets the signal instead.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  concurry::remote::HostOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  if (absl::GetFlag(FLAGS_token_file).empty()) {
    std::fprintf(stderr,
                 "concurry worker host: --token_file is required (a file holding the shared "
                 "secret that clients send as RemoteOptions::token)\n");
    return 2;
  }
  options.token = std::string(
      absl::StripAsciiWhitespace(ReadFileOrDie(absl::GetFlag(FLAGS_token_file), "token_file")));
  if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
    options.tls_cert_pem = ReadFileOrDie(absl::GetFlag(FLAGS_tls_cert), "tls_cert");
  }
  if (!absl::GetFlag(FLAGS_tls_key).empty()) {
    options.tls_key_pem = ReadFileOrDie(absl::GetFlag(FLAGS_tls_key), "tls_key");
  }
  if (!absl::GetFlag(FLAGS_tls_client_ca).empty()) {
    options.tls_client_ca_pem = ReadFileOrDie(absl::GetFlag(FLAGS_tls_client_ca), "tls_client_ca");
  }
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_workers = absl::GetFlag(FLAGS_max_workers);
  // Checked before the shift, which would overflow; WorkerHost::Start checks the bytes again.
  const int64_t memory_mb = absl::GetFlag(FLAGS_max_grpc_memory_mb);
  if (memory_mb < 0 || memory_mb > (int64_t{1} << 20)) {
    std::fprintf(stderr, "concurry worker host: --max_grpc_memory_mb is %lld; allowed: 0 to %lld\n",
                 static_cast<long long>(memory_mb), static_cast<long long>(int64_t{1} << 20));
    return 2;
  }
  options.max_grpc_memory_bytes = memory_mb << 20;
  const int64_t queued_mb = absl::GetFlag(FLAGS_max_queued_mb);
  if (queued_mb < 0 || queued_mb > (int64_t{1} << 20)) {
    std::fprintf(stderr, "concurry worker host: --max_queued_mb is %lld; allowed: 0 to %lld\n",
                 static_cast<long long>(queued_mb), static_cast<long long>(int64_t{1} << 20));
    return 2;
  }
  options.max_queued_bytes = queued_mb << 20;
  options.create_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_create_timeout_ms));
  options.client_lease = absl::Milliseconds(absl::GetFlag(FLAGS_client_lease_ms));

  std::unique_ptr<concurry::remote::WorkerHost> host;
  try {
    host = concurry::remote::WorkerHost::Start(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "concurry worker host: %s\n", e.what());
    return 1;
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WriteFileAtomically(port_file, absl::StrCat(host->port(), "\n"))) {
    std::fprintf(stderr, "concurry worker host: cannot write --port_file=%s\n", port_file.c_str());
    return 1;
  }
  // Printed after the port file is written: a reader of either finds both.
  std::printf("concurry worker host listening on port %d\n", host->port());
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  // Shutdown returns only when every running call has returned; one that never does must not
  // keep the process alive, so it runs on a thread with a bound.
  const absl::Duration grace = absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms));
  absl::Notification shut_down;
  std::thread shutdown([&] {
    host->Shutdown(grace);
    shut_down.Notify();
  });
  if (!shut_down.WaitForNotificationWithTimeout(grace + kExitSlack)) {
    std::fprintf(stderr,
                 "concurry worker host: %lld worker(s) still run a call %s after the shutdown "
                 "grace; exiting without waiting for them\n",
                 static_cast<long long>(host->live_workers()),
                 absl::FormatDuration(kExitSlack).c_str());
    std::fflush(stderr);
    _exit(1);
  }
  shutdown.join();
  return 0;
}

// Benchmarks for Mode::kRemote (//workers/remote) with their peer in the same binary, so ratios
// come from one run. Hosts are processes forked from this binary before anything else (they serve
// its registered class on 127.0.0.1, as a concurry_worker_host binary would); the client talks to
// them over loopback TCP.
//   round trip:  one call of a tiny method (int -> int), one at a time (p50/p99 counters in us,
//                time = mean) vs a raw gRPC bidirectional stream echoing 4 bytes to a service in
//                the host process (the floor; the goal is <= 1.5x) - Ray's published sync
//                actor call is about 460 us
//   pipelined:   n calls back to back on one worker, and on a pool of 3 workers on 3 hosts, then
//                a wait for all (calls_per_s; the goal is >= 30k)
//   payload:     a 64 MB std::string echoed by the worker (GB/s, both directions counted)
//
//   bazel run --config=opt //benchmarks:remote_benchmark -- --benchmark_min_time=0.5

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/echo.grpc.pb.h"
#include "benchmarks/measure.h"
#include "futures/future.h"
#include "grpcpp/grpcpp.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/remote/host.h"
#include "workers/worker.h"

namespace bench_remote {
class Echo {
 public:
  int AddOne(int x) { return x + 1; }
  std::string Reflect(std::string s) { return s; }
};
}  // namespace bench_remote
CONCURRY_REGISTER_WORKER(bench_remote::Echo, (), AddOne, Reflect);

namespace concurry {
namespace {

using bench_remote::Echo;

constexpr char kToken[] = "bench-token";
constexpr int kHosts = 3;
constexpr int64_t kPayloadBytes = 64 << 20;

// The raw peer: echoes every message of the stream.
class EchoService final : public bench::Echo::Service {
  grpc::Status Echo(grpc::ServerContext* /*context*/,
                    grpc::ServerReaderWriter<bench::Blob, bench::Blob>* stream) override {
    bench::Blob blob;
    while (stream->Read(&blob)) {
      if (!stream->Write(blob)) break;
    }
    return grpc::Status::OK;
  }
};

struct Host {
  pid_t pid = 0;
  int worker_port = 0;
  int echo_port = 0;
};

std::vector<Host>& Hosts() {
  static std::vector<Host> hosts;
  return hosts;
}

// Forks a process that serves workers and the echo peer until this process dies. Called before
// this process has threads or gRPC state.
Host ForkHost() {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  const pid_t parent = getpid();
  Host host;
  host.pid = fork();
  if (host.pid < 0) std::abort();
  if (host.pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    close(fds[0]);
    remote::HostOptions options;
    options.token = kToken;
    options.max_message_bytes = 128 << 20;  // The 64 MB payload (the default is 4 MiB).
    std::unique_ptr<remote::WorkerHost> workers = remote::WorkerHost::Start(options);
    EchoService echo;
    grpc::ServerBuilder builder;
    int echo_port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &echo_port);
    builder.RegisterService(&echo);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    const int ports[2] = {workers->port(), echo_port};
    if (write(fds[1], ports, sizeof(ports)) != sizeof(ports)) _exit(2);
    close(fds[1]);
    workers->Wait();
    _exit(0);
  }
  close(fds[1]);
  int ports[2];
  if (read(fds[0], ports, sizeof(ports)) != sizeof(ports)) std::abort();
  close(fds[0]);
  host.worker_port = ports[0];
  host.echo_port = ports[1];
  return host;
}

WorkerOptions RemoteOptionsFor(int hosts) {
  WorkerOptions options{.mode = Mode::kRemote, .remote = RemoteOptions{.token = kToken}};
  for (int i = 0; i < hosts; ++i) {
    options.remote->hosts.push_back(absl::StrCat("127.0.0.1:", Hosts()[i].worker_port));
  }
  return options;
}

// ============================== 1. Round trip =================================================

void BM_RemoteRoundTrip(benchmark::State& state) {
  auto worker = Worker<Echo>::Create(RemoteOptionsFor(1));
  int x = 0;
  bench::RunRoundTrips(state, [&] { x = worker.Call(&Echo::AddOne, x).Result(); });
  if (x != state.iterations()) state.SkipWithError("AddOne returned a wrong value");
}
BENCHMARK(BM_RemoteRoundTrip)->UseRealTime();

void BM_RawGrpcStreamEcho(benchmark::State& state) {
  auto stub = bench::Echo::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", Hosts()[0].echo_port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Echo(&context);
  bench::Blob out, in;
  out.set_data(std::string(4, 'x'));
  bench::RunRoundTrips(state, [&] {
    if (!stream->Write(out) || !stream->Read(&in)) state.SkipWithError("the echo stream broke");
  });
  stream->WritesDone();
  while (stream->Read(&in)) {
  }
  stream->Finish();
}
BENCHMARK(BM_RawGrpcStreamEcho)->UseRealTime();

// ============================== 2. Pipelined ==================================================

// n calls issued back to back to a worker (or a pool, round-robin over its workers), then a wait
// for all of them.
void BM_RemotePipelined(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int hosts = static_cast<int>(state.range(1));
  WorkerOptions options = RemoteOptionsFor(hosts);
  options.max_workers = hosts;
  auto worker = Worker<Echo>::Create(options);
  std::vector<Future<int>> calls;
  calls.reserve(n);
  for (auto _ : state) {
    calls.clear();
    for (int64_t i = 0; i < n; ++i) calls.push_back(worker.Call(&Echo::AddOne, 1));
    for (Future<int>& call : calls) {
      if (call.Result() != 2) state.SkipWithError("AddOne returned a wrong value");
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["calls_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_RemotePipelined)
    ->ArgNames({"calls", "hosts"})
    ->Args({10'000, 1})
    ->Args({10'000, kHosts})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 3. Payload: 64 MB there and back ==============================

void BM_RemotePayload64MB(benchmark::State& state) {
  auto worker = Worker<Echo>::Create(RemoteOptionsFor(1));
  const std::string payload(kPayloadBytes, 'p');
  int64_t timed_ns = 0;
  for (auto _ : state) {
    std::string copy = payload;
    const int64_t start_ns = bench::SteadyNowNs();
    std::string back = worker.Call(&Echo::Reflect, std::move(copy)).Result();
    timed_ns += bench::SteadyNowNs() - start_ns;
    if (back.size() != payload.size()) state.SkipWithError("Reflect returned a wrong size");
  }
  const double bytes = 2.0 * static_cast<double>(kPayloadBytes) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  if (timed_ns > 0) state.counters["GB/s"] = bytes / static_cast<double>(timed_ns);
}
BENCHMARK(BM_RemotePayload64MB)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace concurry

int main(int argc, char** argv) {
  // The hosts first, while this process has one thread and no gRPC state.
  for (int i = 0; i < concurry::kHosts; ++i) concurry::Hosts().push_back(concurry::ForkHost());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (const concurry::Host& host : concurry::Hosts()) {
    kill(host.pid, SIGKILL);
    waitpid(host.pid, nullptr, 0);
  }
  return 0;
}

// Benchmarks for Mode::kProcess (//workers/process) with their peers in the same binary, so ratios
// come from one run:
//   round trip:  one call of a tiny method (int -> int), result back on the caller, one at a time
//                (p50/p99 counters in us, time = mean), for both start methods; the same call on a
//                kLoopback worker (the same encoding, no process: what the transport adds) vs two
//                processes ping-ponging 8 bytes over a Unix socket (the floor) and Python's
//                ProcessPoolExecutor(max_workers=1)
//   pipelined:   n calls to one worker back to back, then wait for the last (calls_per_s) vs
//                Python's ProcessPoolExecutor
//   payload:     a 64 MB std::string echoed by the worker (GB/s) vs 64 MB each way over a raw
//                Unix socket between two processes
//   start:       Create + first call + Stop, per start method (start_us = Create alone) vs
//                Python's first call on a new ProcessPoolExecutor
//   crash:       SIGKILL of the worker's process while a call runs, until that call fails with
//                CrashedError (p50_ms; the bound is 100 ms)
//
//   bazel run --config=opt //benchmarks:process_benchmark -- --benchmark_min_time=0.5
//
// main() starts the fork server before anything else (workers/process/fork_server.h). The peers
// that fork (BM_Pipe*) fork this threaded program, so their children only call read/write/_exit.
// The Python peer runs benchmarks/python/processpool_roundtrip.py (a data dependency, found in the
// binary's runfiles) with `python3` from PATH, once per process.

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "workers/options.h"
#include "workers/process/fork_server.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace procbench {

// The worker class of the concurry benchmarks.
class Echo {
 public:
  int AddOne(int x) { return x + 1; }
  int Pid() { return static_cast<int>(getpid()); }
  std::string Reflect(std::string s) { return s; }
  void Sleep(int ms) { absl::SleepFor(absl::Milliseconds(ms)); }
};

}  // namespace procbench

CONCURRY_REGISTER_WORKER(procbench::Echo, (), AddOne, Pid, Reflect, Sleep);

namespace concurry {
namespace {

using procbench::Echo;

constexpr int64_t kPayloadBytes = int64_t{64} << 20;

WorkerOptions ProcessOptions(ProcessStart start) {
  return {.mode = Mode::kProcess, .process_start = start};
}

// Benchmark argument 0 = the fork server, 1 = fork(); also the label.
ProcessStart StartOf(benchmark::State& state) {
  const ProcessStart start = state.range(0) == 0 ? ProcessStart::kForkServer : ProcessStart::kFork;
  state.SetLabel(AbslUnparseFlag(start));
  return start;
}

// ---- Peer: two processes over a Unix stream socket (the transport's floor) --------------------

// Writes all of `size` bytes; false on error or a closed peer. Async-signal-safe.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t done = send(fd, data, size, MSG_NOSIGNAL);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    data += done;
    size -= static_cast<size_t>(done);
  }
  return true;
}

// Reads exactly `size` bytes; false on error or end of stream. Async-signal-safe.
bool ReadAll(int fd, char* data, size_t size) {
  while (size > 0) {
    const ssize_t done = read(fd, data, size);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    data += done;
    size -= static_cast<size_t>(done);
  }
  return true;
}

// A forked child on the other end of a socketpair that echoes messages of a fixed size: it reads
// a whole message into `buffer` (allocated before the fork: the child of a threaded program must
// not call malloc), then writes it back, until the parent closes its end. Not thread-safe.
class EchoChild {
 public:
  // Starts the child; `message_size` <= buffer.size(). Throws std::runtime_error on failure.
  EchoChild(std::vector<char>& buffer, size_t message_size) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
    }
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      close(pair[0]);
      while (ReadAll(pair[1], buffer.data(), message_size) &&
             WriteAll(pair[1], buffer.data(), message_size)) {
      }
      _exit(0);
    }
    close(pair[1]);
    fd_ = pair[0];
  }
  ~EchoChild() {
    close(fd_);  // the child reads end of stream and exits
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  EchoChild(const EchoChild&) = delete;
  EchoChild& operator=(const EchoChild&) = delete;

  int fd() const { return fd_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

// ---- Peer: Python's concurrent.futures.ProcessPoolExecutor (benchmarks/python/) ---------------

constexpr char kPythonScript[] = "benchmarks/python/processpool_roundtrip.py";
// Small counts: a Python process pool call takes hundreds of us (more on a busy machine), and
// CI's smoke run must stay short.
constexpr int kPythonRoundTrips = 2000;
constexpr int kPythonPipelined = 2000;

struct PythonFigures {
  std::string error;  // non-empty: why there are no figures
  double p50_us = 0;
  double p99_us = 0;
  double pipelined_calls_per_s = 0;
  double start_us = 0;
  std::string version;
};

// Runs the script once per process and returns its figures (or why it could not).
const PythonFigures& RunPythonPeer() {
  static const PythonFigures* const figures = [] {
    auto* result = new PythonFigures;
    const bench::ScriptOutput run = bench::RunPythonScript(
        kPythonScript, {"--roundtrips", std::to_string(kPythonRoundTrips), "--pipelined",
                        std::to_string(kPythonPipelined), "--warmup", "200"});
    if (!run.error.empty()) {
      result->error = run.error;
      return result;
    }
    const std::optional<double> p50 = bench::JsonNumber(run.output, "roundtrip_p50_us");
    const std::optional<double> p99 = bench::JsonNumber(run.output, "roundtrip_p99_us");
    const std::optional<double> rate = bench::JsonNumber(run.output, "pipelined_calls_per_s");
    const std::optional<double> start = bench::JsonNumber(run.output, "start_us");
    if (!p50 || !p99 || !rate || !start || *rate <= 0) {
      result->error = "unexpected output of " + std::string(kPythonScript) + ": " + run.output;
      return result;
    }
    result->p50_us = *p50;
    result->p99_us = *p99;
    result->pipelined_calls_per_s = *rate;
    result->start_us = *start;
    result->version = "Python " + bench::JsonString(run.output, "python").value_or("?");
    return result;
  }();
  return *figures;
}

// ============================== 1. Round trip: one tiny call ===================================

// arg 0: the fork server; 1: fork().
void BM_ProcessRoundTrip(benchmark::State& state) {
  auto worker = Worker<Echo>::Create(ProcessOptions(StartOf(state)));
  int x = 0;
  bench::RunRoundTrips(state, [&] { x = worker.Call(&Echo::AddOne, x).Result(); });
  if (x != state.iterations()) state.SkipWithError("AddOne returned a wrong value");
}
BENCHMARK(BM_ProcessRoundTrip)->ArgName("fork")->Arg(0)->Arg(1)->UseRealTime();

// The same call through the same encoding, served by a thread in this process: the round trip
// minus the process boundary.
void BM_LoopbackRoundTrip(benchmark::State& state) {
  auto worker = Worker<Echo>::Create({.mode = Mode::kLoopback});
  int x = 0;
  bench::RunRoundTrips(state, [&] { x = worker.Call(&Echo::AddOne, x).Result(); });
  if (x != state.iterations()) state.SkipWithError("AddOne returned a wrong value");
}
BENCHMARK(BM_LoopbackRoundTrip)->UseRealTime();

// 8 bytes to a forked child and back over a socketpair: two context switches each way, nothing
// else.
void BM_PipeRoundTrip(benchmark::State& state) {
  std::vector<char> child_buffer(8);
  EchoChild child(child_buffer, 8);
  uint64_t message = 0;
  bool ok = true;
  bench::RunRoundTrips(state, [&] {
    ++message;
    ok = ok && WriteAll(child.fd(), reinterpret_cast<const char*>(&message), sizeof(message)) &&
         ReadAll(child.fd(), reinterpret_cast<char*>(&message), sizeof(message));
  });
  if (!ok) state.SkipWithError("the echo child went away");
}
BENCHMARK(BM_PipeRoundTrip)->UseRealTime();

// One run of the script: the time column is the p50 (manual time).
void BM_PythonProcessPoolRoundTrip(benchmark::State& state) {
  const PythonFigures& python = RunPythonPeer();
  if (!python.error.empty()) {
    state.SkipWithError(python.error.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(python.p50_us * 1e-6);
  state.counters["p50_us"] = python.p50_us;
  state.counters["p99_us"] = python.p99_us;
  state.SetLabel(python.version + ", " + std::to_string(kPythonRoundTrips) + " round trips");
}
BENCHMARK(BM_PythonProcessPoolRoundTrip)->Iterations(1)->UseManualTime();

// ============================== 2. Pipelined: n calls to one worker ===========================

// n calls issued back to back, then a wait for the last: a worker runs its calls in FIFO order,
// so the last one done means all are (as in workers_benchmark, only the last future is kept).
void BM_ProcessPipelined(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto worker = Worker<Echo>::Create(ProcessOptions(ProcessStart::kForkServer));
  for (auto _ : state) {
    Future<int> last;
    for (int64_t i = 0; i < n; ++i) last = worker.Call(&Echo::AddOne, static_cast<int>(i));
    if (last.Result() != n) state.SkipWithError("AddOne returned a wrong value");
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["calls_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ProcessPipelined)->Arg(10'000)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_PythonProcessPoolPipelined(benchmark::State& state) {
  const PythonFigures& python = RunPythonPeer();
  if (!python.error.empty()) {
    state.SkipWithError(python.error.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(kPythonPipelined / python.pipelined_calls_per_s);
  state.counters["calls_per_s"] = python.pipelined_calls_per_s;
  state.SetLabel(python.version + ", " + std::to_string(kPythonPipelined) + " calls");
}
BENCHMARK(BM_PythonProcessPoolPipelined)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 3. Payload: 64 MB there and back ==============================

// GB/s counts the bytes of both directions (64 MB out + 64 MB back = 128 MB per iteration) over
// the wall time of the round trips (`timed_ns`), in both this benchmark and its peer.
void ReportPayloadRate(benchmark::State& state, int64_t timed_ns) {
  const double bytes = 2.0 * static_cast<double>(kPayloadBytes) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  if (timed_ns > 0) state.counters["GB/s"] = bytes / static_cast<double>(timed_ns);
}

// A 64 MB std::string echoed by a worker (Reflect takes and returns it by value). The argument is
// copied outside the timed part and moved into the call, so the time is the library's alone.
void BM_ProcessPayload64MB(benchmark::State& state) {
  auto worker = Worker<Echo>::Create(ProcessOptions(ProcessStart::kForkServer));
  const std::string payload(kPayloadBytes, 'x');
  int64_t timed_ns = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::string argument = payload;
    state.ResumeTiming();
    const int64_t start_ns = bench::SteadyNowNs();
    const std::string back = worker.Call(&Echo::Reflect, std::move(argument)).Result();
    timed_ns += bench::SteadyNowNs() - start_ns;
    if (back.size() != payload.size()) state.SkipWithError("the echo has the wrong size");
  }
  ReportPayloadRate(state, timed_ns);
}
BENCHMARK(BM_ProcessPayload64MB)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

// 64 MB written to a forked child that reads all of it, then writes it back (as a worker does:
// the whole request, then the whole reply).
void BM_PipePayload64MB(benchmark::State& state) {
  std::vector<char> out(kPayloadBytes, 'x');
  std::vector<char> in(kPayloadBytes);
  std::vector<char> child_buffer(kPayloadBytes);
  EchoChild child(child_buffer, kPayloadBytes);
  int64_t timed_ns = 0;
  for (auto _ : state) {
    const int64_t start_ns = bench::SteadyNowNs();
    if (!WriteAll(child.fd(), out.data(), out.size()) ||
        !ReadAll(child.fd(), in.data(), in.size())) {
      state.SkipWithError("the echo child went away");
      break;
    }
    timed_ns += bench::SteadyNowNs() - start_ns;
  }
  ReportPayloadRate(state, timed_ns);
}
BENCHMARK(BM_PipePayload64MB)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

// ============================== 4. Start: Create + first call + Stop ==========================

// Counters (p50 over the iterations, us): start_us = Create (returns once the object exists in
// the new process), first_call_us = the first AddOne round trip, stop_us = Stop (waits for the
// process to finish). The time column is the mean of the three together.
void BM_ProcessStart(benchmark::State& state) {
  const ProcessStart start = StartOf(state);
  std::vector<int64_t> create_ns, call_ns, stop_ns;
  for (auto _ : state) {
    const int64_t t0 = bench::SteadyNowNs();
    auto worker = Worker<Echo>::Create(ProcessOptions(start));
    const int64_t t1 = bench::SteadyNowNs();
    if (worker.Call(&Echo::AddOne, 1).Result() != 2) state.SkipWithError("AddOne is wrong");
    const int64_t t2 = bench::SteadyNowNs();
    if (!worker.Stop(absl::Seconds(10))) state.SkipWithError("Stop timed out");
    const int64_t t3 = bench::SteadyNowNs();
    create_ns.push_back(t1 - t0);
    call_ns.push_back(t2 - t1);
    stop_ns.push_back(t3 - t2);
  }
  state.counters["start_us"] = bench::PercentileMicros(create_ns, 0.50);
  state.counters["start_p99_us"] = bench::PercentileMicros(create_ns, 0.99);
  state.counters["first_call_us"] = bench::PercentileMicros(call_ns, 0.50);
  state.counters["stop_us"] = bench::PercentileMicros(stop_ns, 0.50);
}
BENCHMARK(BM_ProcessStart)
    ->ArgName("fork")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(30)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// A new ProcessPoolExecutor until its first result (Python starts the process at the first
// submit; "fork" start method on Linux).
void BM_PythonProcessPoolStart(benchmark::State& state) {
  const PythonFigures& python = RunPythonPeer();
  if (!python.error.empty()) {
    state.SkipWithError(python.error.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(python.start_us * 1e-6);
  state.counters["start_us"] = python.start_us;
  state.SetLabel(python.version + ", one start");
}
BENCHMARK(BM_PythonProcessPoolStart)->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ============================== 5. Crash detection ============================================

// A call that sleeps in the worker; the benchmark SIGKILLs the worker's process and times until
// the call's future is done with CrashedError (manual time: the kill to the failure). A new worker
// per iteration (the killed one stops itself).
void BM_ProcessCrashDetection(benchmark::State& state) {
  std::vector<int64_t> samples;
  for (auto _ : state) {
    auto worker = Worker<Echo>::Create(ProcessOptions(ProcessStart::kForkServer));
    const pid_t pid = worker.Call(&Echo::Pid).Result();
    Future<void> sleeping = worker.Call(&Echo::Sleep, 60'000);
    absl::SleepFor(absl::Milliseconds(2));  // let the call reach the process and start
    const int64_t start_ns = bench::SteadyNowNs();
    if (kill(pid, SIGKILL) != 0) {
      state.SkipWithError("kill failed");
      break;
    }
    if (!sleeping.Wait(absl::Seconds(10))) {
      state.SkipWithError("the call did not fail within 10 s of the kill");
      break;
    }
    const int64_t elapsed_ns = bench::SteadyNowNs() - start_ns;
    try {
      std::move(sleeping).Result();
      state.SkipWithError("the call succeeded after its process was killed");
      break;
    } catch (const CrashedError&) {
    }
    samples.push_back(elapsed_ns);
    state.SetIterationTime(static_cast<double>(elapsed_ns) * 1e-9);
  }
  if (samples.empty()) return;
  state.counters["p50_ms"] = bench::PercentileMicros(samples, 0.50) / 1000.0;
  state.counters["max_ms"] = bench::PercentileMicros(samples, 1.0) / 1000.0;
}
BENCHMARK(BM_ProcessCrashDetection)->Iterations(10)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace concurry

// The fork server must start while the program has one thread: before Google Benchmark (or any
// benchmark) starts one.
int main(int argc, char** argv) {
  concurry::StartForkServer();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// Measurements the benchmark binaries share: CPU time of a thread or the process (getrusage), the
// peak resident-memory growth of one benchmark run, and running a Python peer script from the
// binary's runfiles.
//
//   const int64_t before = concurry::bench::CpuMicros(RUSAGE_THREAD);
//   future.Wait(absl::Seconds(1));
//   state.counters["cpu_us"] = concurry::bench::CpuMicros(RUSAGE_THREAD) - before;

#ifndef CONCURRY_BENCHMARKS_MEASURE_H_
#define CONCURRY_BENCHMARKS_MEASURE_H_

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"

namespace concurry::bench {

// Now on the steady clock, in nanoseconds.
inline int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Returns user + system CPU time in microseconds of `who`: RUSAGE_THREAD (the calling thread) or
// RUSAGE_SELF (the whole process).
int64_t CpuMicros(int who);

// Returns the p-quantile (p in [0, 1]) of latency samples in nanoseconds, in microseconds. Sorts
// `samples_ns` in place; 0 for no samples.
double PercentileMicros(std::vector<int64_t>& samples_ns, double p);

// Returns the context switches (voluntary and involuntary) of every thread of this process so
// far; not those of its children.
int64_t ContextSwitches();

// Runs `round_trip` once per iteration and reports the p50/p99 of the per-call latency as counters
// in microseconds (the benchmark's own time is the mean), and ctx_switches: the context switches
// of this process's threads per call (another process's, a worker's or a peer server's, are not
// counted). Each thread that sleeps and wakes once per call adds 1.
template <typename F>
void RunRoundTrips(benchmark::State& state, F&& round_trip) {
  std::vector<int64_t> samples;
  samples.reserve(1 << 16);
  const int64_t switches_before = ContextSwitches();
  for (auto _ : state) {
    const int64_t start_ns = SteadyNowNs();
    round_trip();
    samples.push_back(SteadyNowNs() - start_ns);
  }
  const int64_t switches = ContextSwitches() - switches_before;
  state.SetItemsProcessed(state.iterations());
  if (samples.empty()) return;
  state.counters["ctx_switches"] =
      static_cast<double>(switches) / static_cast<double>(state.iterations());
  state.counters["p50_us"] = PercentileMicros(samples, 0.50);
  state.counters["p99_us"] = PercentileMicros(samples, 0.99);
}

// Peak RSS growth of one run. The constructor resets the kernel's peak (VmHWM) to the current RSS
// by writing "5" to /proc/self/clear_refs (Linux >= 4.0) and reads VmRSS; GrowthKb() is VmHWM
// minus that, i.e. the peak extra resident memory since construction, although VmHWM is
// otherwise monotonic per process. Not thread-safe; one instance at a time.
class PeakRssGrowth {
 public:
  PeakRssGrowth();
  // Returns the growth in kB, or -1 when /proc does not allow the measurement.
  double GrowthKb() const;

 private:
  bool ok_ = false;
  int64_t baseline_kb_ = -1;
};

// Returns the path of `path` (relative to the workspace root) in this binary's runfiles: under
// $RUNFILES_DIR or $TEST_SRCDIR when set, else beside the binary (<binary>.runfiles/, the layout of
// `bazel-bin/...` and `bazel run`), else relative to the working directory (the root of the
// runfiles tree under `bazel run`, or the workspace root). Returns "" if none exists.
std::string FindRunfile(const std::string& path);

// What RunPythonScript printed, or why it could not run.
struct ScriptOutput {
  std::string error;   // non-empty: the script did not run to a successful end
  std::string output;  // its stdout and stderr
};

// Runs `python3 <script> <args...>` (python3 from PATH; `script` relative to the workspace root,
// found with FindRunfile) and waits for it. Arguments are quoted for the shell.
ScriptOutput RunPythonScript(const std::string& script, const std::vector<std::string>& args);

// Returns the number after `"key": ` in a one-line JSON object, or nullopt.
std::optional<double> JsonNumber(const std::string& json, const std::string& key);

// Returns the string after `"key": "` in a one-line JSON object (up to the next quote; no escapes),
// or nullopt.
std::optional<std::string> JsonString(const std::string& json, const std::string& key);

}  // namespace concurry::bench

#endif  // CONCURRY_BENCHMARKS_MEASURE_H_

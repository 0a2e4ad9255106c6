// Benchmarks for //workers (Worker<T> in modes kThread and kTbb) with their peers in the same
// binary, so ratios come from one run. Every call is empty (Counter::Noop or its peer equivalent):
//   round trip:  one call, result back on the caller (p50/p99 counters in us, time = mean) vs a
//                bare thread + std::mutex/std::condition_variable (the floor), std::async, a CAF
//                0.17 actor (scheduled and detached; request/receive), Python's
//                ThreadPoolExecutor(max_workers=1)
//   pipelined:   n calls to one worker, then wait for the last (items/s) vs a mutex + deque
//                thread queue with a std::promise per call, CAF anon_send + a final request, Python
//   spread:      n calls round-robin over 64 kTbb workers, wait for all (items/s) vs a raw
//                tbb::task_group setting a concurry Promise<void> or a std::promise per call, and
//                64 CAF actors
//   create:      n kTbb workers created (Create, or CreateAsync + Gather), each called once and
//                stopped (counters: seconds per phase, bytes_per_worker from the peak RSS growth)
//                vs n CAF actors
//   blocking:    a kTbb worker's round trip while k other kTbb workers wait inside their calls
//                (k = 0, 8, 64: the executor adds a thread per waiting call); a kTbb call that
//                waits for another kTbb worker's call (nested round trip: the added thread's cost)
//                vs the same in kThread mode and vs oneTBB's resumable tasks (tbb::task::suspend /
//                resume, the alternative to adding threads)
//
//   bazel run --config=opt //benchmarks:workers_benchmark -- --benchmark_min_time=0.5
//
// The Python peer runs benchmarks/python/threadpool_roundtrip.py (a data dependency, found in the
// binary's runfiles) with `python3` from PATH, once per process; it reports both its round trip and
// its pipelined figures.

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "benchmarks/measure.h"
#include "caf/all.hpp"
#include "futures/future.h"
#include "oneapi/tbb/task.h"
#include "oneapi/tbb/task_arena.h"
#include "oneapi/tbb/task_group.h"
#include "sync/gather.h"
#include "workers/options.h"
#include "workers/worker.h"

namespace concurry {
namespace {

constexpr int kSpreadWorkers = 64;

// The empty call every benchmark makes.
void EmptyCall() { benchmark::ClobberMemory(); }

// The worker class of the concurry benchmarks.
class Counter {
 public:
  void Noop() { EmptyCall(); }
};

// ---- Peer: a bare thread with a std::mutex + std::condition_variable handoff both ways --------

// One dedicated thread running one call at a time: the physical floor of a round trip through
// another thread that sleeps in the kernel between calls. Call() is not thread-safe; confine it to
// one thread.
class CondvarThread {
 public:
  CondvarThread() : thread_([this] { Serve(); }) {}
  ~CondvarThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    request_cv_.notify_one();
    thread_.join();
  }

  // Runs `fn` on the thread and returns once it has run.
  void Call(void (*fn)()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = fn;
    }
    request_cv_.notify_one();
    std::unique_lock<std::mutex> lock(mu_);
    reply_cv_.wait(lock, [this] { return done_; });
    done_ = false;
  }

 private:
  void Serve() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      request_cv_.wait(lock, [this] { return fn_ != nullptr || stop_; });
      if (stop_) return;
      void (*fn)() = std::exchange(fn_, nullptr);
      lock.unlock();
      fn();
      lock.lock();
      done_ = true;
      reply_cv_.notify_one();
    }
  }

  std::mutex mu_;
  std::condition_variable request_cv_;
  std::condition_variable reply_cv_;
  void (*fn_)() = nullptr;  // Guarded by mu_: the pending call.
  bool done_ = false;       // Guarded by mu_: the last call has run.
  bool stop_ = false;       // Guarded by mu_.
  std::thread thread_;
};

// ---- Peer: a hand-rolled thread queue (std::mutex + std::deque), a std::promise per call ------

// One thread draining a FIFO of calls; each call completes its own std::promise. Thread-safe.
class DequeThread {
 public:
  DequeThread() : thread_([this] { Serve(); }) {}
  ~DequeThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  // Queues `fn` and returns the future of its completion.
  std::future<void> Submit(void (*fn)()) {
    Task task{fn, {}};
    std::future<void> future = task.done.get_future();
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu_);
      was_empty = tasks_.empty();
      tasks_.push_back(std::move(task));
    }
    // The server only sleeps on an empty queue, so only the first push into it needs a wake-up.
    if (was_empty) cv_.notify_one();
    return future;
  }

 private:
  struct Task {
    void (*fn)();
    std::promise<void> done;
  };

  void Serve() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return !tasks_.empty() || stop_; });
      if (tasks_.empty()) return;  // stop_ and drained
      Task task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task.fn();
      task.done.set_value();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;  // Guarded by mu_.
  bool stop_ = false;       // Guarded by mu_.
  std::thread thread_;
};

// ---- Peer: CAF 0.17 (Debian libcaf-dev) -------------------------------------------------------

using PingAtom = caf::atom_constant<caf::atom("ping")>;  // request: replies 0
using NoopAtom = caf::atom_constant<caf::atom("noop")>;  // one-way: no reply

caf::behavior NoopActor() {
  return {
      [](PingAtom) { return int32_t{0}; },
      [](NoopAtom) { EmptyCall(); },
  };
}

// An actor system with CAF's default configuration (a work-stealing scheduler with one thread per
// core) and the scoped actor the benchmark thread talks through. Stops the actors it spawned.
class CafPeer {
 public:
  CafPeer() : system_(config_), self_(system_) {}
  ~CafPeer() { ExitAll(); }

  // Sends an exit message to every actor spawned so far.
  void ExitAll() {
    for (const caf::actor& actor : actors_) {
      self_->send_exit(actor, caf::exit_reason::user_shutdown);
    }
    actors_.clear();
  }

  // Spawns an actor running NoopActor(); `Options` = caf::detached gives it its own thread.
  template <caf::spawn_options Options = caf::no_spawn_options>
  caf::actor Spawn() {
    return actors_.emplace_back(system_.spawn<Options>(NoopActor));
  }

  // Sends a ping to `actor` and blocks until its reply arrives.
  void Ping(const caf::actor& actor) {
    self_->request(actor, caf::infinite, PingAtom::value)
        .receive([](int32_t) {}, [](caf::error&) { std::abort(); });
  }

  caf::scoped_actor& self() { return self_; }
  const std::vector<caf::actor>& actors() const { return actors_; }

 private:
  caf::actor_system_config config_;
  caf::actor_system system_;
  caf::scoped_actor self_;
  std::vector<caf::actor> actors_;
};

// ---- Peer: Python's concurrent.futures.ThreadPoolExecutor (benchmarks/python/) ----------------

constexpr char kPythonScript[] = "benchmarks/python/threadpool_roundtrip.py";
constexpr int kPythonRoundTrips = 10'000;
constexpr int kPythonPipelined = 100'000;

struct PythonFigures {
  std::string error;  // non-empty: why there are no figures
  double p50_us = 0;
  double p99_us = 0;
  double pipelined_calls_per_s = 0;
  std::string version;
};

// Runs the script once per process and returns its figures (or why it could not).
const PythonFigures& RunPythonPeer() {
  static const PythonFigures* const figures = [] {
    auto* result = new PythonFigures;
    const bench::ScriptOutput run =
        bench::RunPythonScript(kPythonScript, {"--roundtrips", std::to_string(kPythonRoundTrips),
                                               "--pipelined", std::to_string(kPythonPipelined)});
    if (!run.error.empty()) {
      result->error = run.error;
      return result;
    }
    const std::string& output = run.output;
    const std::optional<double> p50 = bench::JsonNumber(output, "roundtrip_p50_us");
    const std::optional<double> p99 = bench::JsonNumber(output, "roundtrip_p99_us");
    const std::optional<double> rate = bench::JsonNumber(output, "pipelined_calls_per_s");
    if (!p50 || !p99 || !rate || *rate <= 0) {
      result->error = "unexpected output of " + std::string(kPythonScript) + ": " + output;
      return result;
    }
    result->p50_us = *p50;
    result->p99_us = *p99;
    result->pipelined_calls_per_s = *rate;
    if (const std::optional<std::string> version = bench::JsonString(output, "python")) {
      result->version = "Python " + *version;
    }
    return result;
  }();
  return *figures;
}

// ============================== 1. Round trip: one empty call ===================================

void BM_RoundTrip_MutexCondvarFloor(benchmark::State& state) {
  CondvarThread thread;
  bench::RunRoundTrips(state, [&] { thread.Call(EmptyCall); });
}
BENCHMARK(BM_RoundTrip_MutexCondvarFloor)->UseRealTime();

void BM_RoundTrip_StdAsync(benchmark::State& state) {
  bench::RunRoundTrips(state, [] { std::async(std::launch::async, EmptyCall).get(); });
}
BENCHMARK(BM_RoundTrip_StdAsync)->UseRealTime();

void BM_RoundTrip_ConcurryThreadWorker(benchmark::State& state) {
  auto worker = Worker<Counter>::Create({.mode = Mode::kThread});
  bench::RunRoundTrips(state, [&] { worker.Call(&Counter::Noop).Result(); });
}
BENCHMARK(BM_RoundTrip_ConcurryThreadWorker)->UseRealTime();

void BM_RoundTrip_ConcurryTbbWorker(benchmark::State& state) {
  auto worker = Worker<Counter>::Create({.mode = Mode::kTbb});
  bench::RunRoundTrips(state, [&] { worker.Call(&Counter::Noop).Result(); });
}
BENCHMARK(BM_RoundTrip_ConcurryTbbWorker)->UseRealTime();

// A scheduled (thread-pool) CAF actor, the usual kind.
void BM_RoundTrip_CafPingPong(benchmark::State& state) {
  CafPeer caf;
  const caf::actor actor = caf.Spawn();
  bench::RunRoundTrips(state, [&] { caf.Ping(actor); });
}
BENCHMARK(BM_RoundTrip_CafPingPong)->UseRealTime();

// A detached CAF actor: its own thread, like Mode::kThread.
void BM_RoundTrip_CafDetachedPingPong(benchmark::State& state) {
  CafPeer caf;
  const caf::actor actor = caf.Spawn<caf::detached>();
  bench::RunRoundTrips(state, [&] { caf.Ping(actor); });
}
BENCHMARK(BM_RoundTrip_CafDetachedPingPong)->UseRealTime();

// One run of the script: the time column is the p50 (manual time).
void BM_RoundTrip_PythonThreadPoolExecutor(benchmark::State& state) {
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
BENCHMARK(BM_RoundTrip_PythonThreadPoolExecutor)->Iterations(1)->UseManualTime();

// ============================== 2. Pipelined: n calls to one thread ===========================

// n calls, then a wait for the last: a worker runs its calls in FIFO order.
void RunPipelined(benchmark::State& state, Mode mode) {
  const int64_t n = state.range(0);
  auto worker = Worker<Counter>::Create({.mode = mode});
  for (auto _ : state) {
    Future<void> last;
    for (int64_t i = 0; i < n; ++i) last = worker.Call(&Counter::Noop);
    last.Result();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_Pipelined_ConcurryThreadWorker(benchmark::State& state) {
  RunPipelined(state, Mode::kThread);
}
BENCHMARK(BM_Pipelined_ConcurryThreadWorker)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Pipelined_ConcurryTbbWorker(benchmark::State& state) { RunPipelined(state, Mode::kTbb); }
BENCHMARK(BM_Pipelined_ConcurryTbbWorker)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Pipelined_MutexDequeThread(benchmark::State& state) {
  const int64_t n = state.range(0);
  DequeThread thread;
  for (auto _ : state) {
    std::future<void> last;
    for (int64_t i = 0; i < n; ++i) last = thread.Submit(EmptyCall);
    last.get();
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Pipelined_MutexDequeThread)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// n anon_send to one scheduled actor, then a request: its reply comes after the n (FIFO mailbox).
void BM_Pipelined_CafAnonSend(benchmark::State& state) {
  const int64_t n = state.range(0);
  CafPeer caf;
  const caf::actor actor = caf.Spawn();
  for (auto _ : state) {
    for (int64_t i = 0; i < n; ++i) caf::anon_send(actor, NoopAtom::value);
    caf.Ping(actor);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Pipelined_CafAnonSend)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The pipelined half of the Python script's single run (manual time = its measured time).
void BM_Pipelined_PythonThreadPoolExecutor(benchmark::State& state) {
  const PythonFigures& python = RunPythonPeer();
  if (!python.error.empty()) {
    state.SkipWithError(python.error.c_str());
    return;
  }
  for (auto _ : state) state.SetIterationTime(kPythonPipelined / python.pipelined_calls_per_s);
  state.SetItemsProcessed(state.iterations() * kPythonPipelined);
  state.SetLabel(python.version);
}
BENCHMARK(BM_Pipelined_PythonThreadPoolExecutor)
    ->Arg(kPythonPipelined)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 3. Spread: n calls over 64 workers ============================

// n calls round-robin over 64 kTbb workers; Gather waits for every call's future.
void BM_Spread64_ConcurryTbbWorkers(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::vector<Worker<Counter>> workers;
  for (int i = 0; i < kSpreadWorkers; ++i) {
    workers.push_back(Worker<Counter>::Create({.mode = Mode::kTbb}));
  }
  for (auto _ : state) {
    // Calls on one worker finish in FIFO order, so waiting for each worker's last call waits for
    // all of them (the task_group peers likewise wait once, with group.wait()).
    std::vector<Future<void>> last(kSpreadWorkers);
    for (int64_t i = 0; i < n; ++i) {
      last[i % kSpreadWorkers] = workers[i % kSpreadWorkers].Call(&Counter::Noop);
    }
    for (Future<void>& f : last) {
      if (f.valid()) f.Wait();
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Spread64_ConcurryTbbWorkers)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Starts TBB's worker threads (the first use of the default arena takes milliseconds).
void WarmUpTbb(tbb::task_group& group) {
  for (int i = 0; i < 100; ++i) group.run(EmptyCall);
  group.wait();
}

// Each call is a task that completes its own promise (made by the caller, as a call's future
// would be); task_group.wait() waits for all.
template <typename PromiseT>
void RunTbbTaskGroupSpread(benchmark::State& state) {
  const int64_t n = state.range(0);
  tbb::task_group group;
  WarmUpTbb(group);
  for (auto _ : state) {
    std::vector<PromiseT> promises(n);
    for (PromiseT& promise : promises) {
      group.run([promise = &promise] {
        EmptyCall();
        if constexpr (std::is_same_v<PromiseT, std::promise<void>>) {
          promise->set_value();
        } else {
          promise->SetValue();
        }
      });
    }
    group.wait();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_Spread64_TbbTaskGroupConcurryPromise(benchmark::State& state) {
  RunTbbTaskGroupSpread<Promise<void>>(state);
}
BENCHMARK(BM_Spread64_TbbTaskGroupConcurryPromise)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Spread64_TbbTaskGroupStdPromise(benchmark::State& state) {
  RunTbbTaskGroupSpread<std::promise<void>>(state);
}
BENCHMARK(BM_Spread64_TbbTaskGroupStdPromise)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// n anon_send round-robin over 64 scheduled actors, then one request to each (FIFO mailboxes).
void BM_Spread64_CafActors(benchmark::State& state) {
  const int64_t n = state.range(0);
  CafPeer caf;
  std::vector<caf::actor> actors;
  for (int i = 0; i < kSpreadWorkers; ++i) actors.push_back(caf.Spawn());
  for (auto _ : state) {
    for (int64_t i = 0; i < n; ++i) caf::anon_send(actors[i % kSpreadWorkers], NoopAtom::value);
    for (const caf::actor& actor : actors) caf.Ping(actor);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Spread64_CafActors)
    ->Arg(1000)
    ->Arg(1'000'000)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 4. Create n workers, call each once, stop =====================

// Returns the bytes malloc has handed out and not taken back (every arena).
double HeapInUseBytes() {
  const struct mallinfo2 info = mallinfo2();
  return static_cast<double>(info.uordblks + info.hblkhd);
}

// Phases of BM_Create_*, reported as counters (seconds per phase) beside the memory per worker:
//   bytes_per_worker:       the peak RSS growth of the run / n (includes thread stacks, and
//                           memory malloc keeps after the workers are freed)
//   heap_bytes_per_worker:  the malloc'ed bytes in use once all n workers exist / n
// malloc_trim first gives freed memory back to the kernel, so that the RSS growth is not hidden by
// memory that earlier benchmarks left in malloc's free lists.
class CreatePhases {
 public:
  explicit CreatePhases(int64_t n) : n_(n) {
    malloc_trim(0);
    rss_.emplace();
  }
  // Starts the first phase of an iteration.
  void Start() {
    heap_at_start_ = HeapInUseBytes();
    last_ns_ = bench::SteadyNowNs();
  }
  // Ends the current phase and adds its duration to counter `name`.
  void End(const char* name) {
    const int64_t now_ns = bench::SteadyNowNs();
    seconds_[name] += static_cast<double>(now_ns - last_ns_) * 1e-9;
    last_ns_ = now_ns;
  }
  // Samples the heap while all n workers exist (the time it takes is not counted).
  void SampleHeap() {
    heap_growth_ = std::max(heap_growth_, HeapInUseBytes() - heap_at_start_);
    last_ns_ = bench::SteadyNowNs();
  }
  // Reports the phases (mean per iteration) and the memory per worker.
  void Report(benchmark::State& state) {
    double total = 0;
    for (const auto& [name, seconds] : seconds_) {
      state.counters[name] = benchmark::Counter(seconds, benchmark::Counter::kAvgIterations);
      total += seconds;
    }
    state.counters["total_s"] = benchmark::Counter(total, benchmark::Counter::kAvgIterations);
    state.counters["bytes_per_worker"] = rss_->GrowthKb() * 1024.0 / static_cast<double>(n_);
    state.counters["heap_bytes_per_worker"] = heap_growth_ / static_cast<double>(n_);
    state.SetItemsProcessed(state.iterations() * n_);
  }

 private:
  const int64_t n_;
  int64_t last_ns_ = 0;
  double heap_at_start_ = 0;
  double heap_growth_ = 0;
  std::map<std::string, double> seconds_;
  std::optional<bench::PeakRssGrowth> rss_;
};

// n kTbb workers created (args: create = 0: Create one after the other; 1: CreateAsync for all,
// then Gather), one call each (then Gather), stopped (Stop without waiting on each, then Gather of
// their StoppedFuture: stop_wait_s).
void BM_Create_ConcurryTbbWorkers(benchmark::State& state) {
  const int64_t n = state.range(0);
  const bool async = state.range(1) != 0;
  CreatePhases phases(n);
  for (auto _ : state) {
    phases.Start();
    std::vector<Worker<Counter>> workers;
    if (async) {
      std::vector<Future<Worker<Counter>>> created;
      created.reserve(n);
      for (int64_t i = 0; i < n; ++i) {
        created.push_back(Worker<Counter>::CreateAsync({.mode = Mode::kTbb}));
      }
      workers = Gather(std::move(created));
    } else {
      workers.reserve(n);
      for (int64_t i = 0; i < n; ++i)
        workers.push_back(Worker<Counter>::Create({.mode = Mode::kTbb}));
    }
    phases.End("create_s");
    phases.SampleHeap();
    std::vector<Future<void>> calls;
    calls.reserve(n);
    for (const Worker<Counter>& worker : workers) calls.push_back(worker.Call(&Counter::Noop));
    Gather(std::move(calls));
    phases.End("call_s");
    std::vector<Future<void>> stopped;
    stopped.reserve(n);
    for (const Worker<Counter>& worker : workers) {
      worker.Stop(absl::ZeroDuration());
      stopped.push_back(worker.StoppedFuture());
    }
    phases.End("stop_s");
    Gather(std::move(stopped));
    workers.clear();
    phases.End("stop_wait_s");
  }
  phases.Report(state);
  state.SetLabel(async ? "CreateAsync + Gather" : "Create");
}
BENCHMARK(BM_Create_ConcurryTbbWorkers)
    ->ArgNames({"n", "async"})
    ->Args({1000, 0})
    ->Args({1000, 1})
    ->Args({100'000, 0})
    ->Args({100'000, 1})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// n scheduled actors spawned, pinged once each (all pings sent, then all replies received) and
// stopped (exit messages, then the actor system's shutdown waits for them).
void BM_Create_CafActors(benchmark::State& state) {
  const int64_t n = state.range(0);
  CreatePhases phases(n);
  for (auto _ : state) {
    phases.Start();
    auto caf = std::make_unique<CafPeer>();
    for (int64_t i = 0; i < n; ++i) caf->Spawn();
    phases.End("create_s");
    phases.SampleHeap();
    for (const caf::actor& actor : caf->actors()) caf->self()->send(actor, PingAtom::value);
    int64_t replies = 0;
    caf->self()->receive_for(replies, n)([](int32_t) {});
    phases.End("call_s");
    caf->ExitAll();
    phases.End("stop_s");
    caf.reset();  // the actor system's shutdown waits for every actor
    phases.End("stop_wait_s");
  }
  phases.Report(state);
}
BENCHMARK(BM_Create_CafActors)
    ->Arg(1000)
    ->Arg(100'000)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ============================== 5. Blocking inside tbb-mode calls ================================

// Holds a call until the benchmark ends: a library wait, so the executor adds a thread for it.
class Waiter {
 public:
  void WaitFor(std::shared_ptr<Promise<void>> release) { release->GetFuture().Wait(); }
  void Noop() { EmptyCall(); }
  // Calls `other` and waits for it inside this call.
  void CallAndWait(const Worker<Waiter>& other) { other.Call(&Waiter::Noop).Result(); }
};

// An idle kTbb worker's round trip while state.range(0) other kTbb workers wait in their calls.
void BM_Blocking_IdleTbbWorkerRoundTripBesideWaitingWorkers(benchmark::State& state) {
  auto release = std::make_shared<Promise<void>>();
  std::vector<Worker<Waiter>> waiting;
  std::vector<Future<void>> held;
  for (int64_t i = 0; i < state.range(0); ++i) {
    waiting.push_back(Worker<Waiter>::Create({.mode = Mode::kTbb}));
    held.push_back(waiting.back().Call(&Waiter::WaitFor, release));
  }
  auto idle = Worker<Waiter>::Create({.mode = Mode::kTbb});
  bench::RunRoundTrips(state, [&] { idle.Call(&Waiter::Noop).Result(); });
  release->SetValue();
  Gather(held);
}
BENCHMARK(BM_Blocking_IdleTbbWorkerRoundTripBesideWaitingWorkers)
    ->Arg(0)
    ->Arg(8)
    ->Arg(64)
    ->UseRealTime();

// Round trip of a call whose method calls another worker and waits for it, both in `mode`.
void RunNestedWait(benchmark::State& state, Mode mode) {
  auto outer = Worker<Waiter>::Create({.mode = mode});
  auto inner = Worker<Waiter>::Create({.mode = mode});
  bench::RunRoundTrips(state, [&] { outer.Call(&Waiter::CallAndWait, inner).Result(); });
}
void BM_NestedWait_ConcurryTbbWorkers(benchmark::State& state) { RunNestedWait(state, Mode::kTbb); }
BENCHMARK(BM_NestedWait_ConcurryTbbWorkers)->UseRealTime();
void BM_NestedWait_ConcurryThreadWorkers(benchmark::State& state) {
  RunNestedWait(state, Mode::kThread);
}
BENCHMARK(BM_NestedWait_ConcurryThreadWorkers)->UseRealTime();

// The alternative to adding threads: a oneTBB task waits for another task by suspending itself
// (tbb::task::suspend); the other task resumes it. Same shape: the caller waits for an outer task,
// the outer task for an inner one, on an arena of one thread per core.
void BM_NestedWait_TbbSuspendResume(benchmark::State& state) {
  // Default arena: oneTBB's worker threads (the waiting caller does not join it).
  tbb::task_arena arena;
  bench::RunRoundTrips(state, [&] {
    auto done = std::make_shared<Promise<void>>();
    Future<void> finished = done->GetFuture();
    arena.enqueue([&arena, done] {
      tbb::task::suspend([&arena](tbb::task::suspend_point outer) {
        arena.enqueue([outer] {
          EmptyCall();
          tbb::task::resume(outer);
        });
      });
      done->SetValue();
    });
    finished.Wait();
  });
}
BENCHMARK(BM_NestedWait_TbbSuspendResume)->UseRealTime();

}  // namespace
}  // namespace concurry

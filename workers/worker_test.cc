// The worker conformance suite: one contract, instantiated for every backend linked into the test.

#include "workers/worker.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/manual_executor.h"
#include "testing/shared_gates.h"
#include "workers/backend.h"
#include "workers/exception_registry.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/this_call.h"

namespace concurry::worker_test {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Gates a test can hold a worker's call on, addressed by id so that the id crosses any boundary;
// in memory shared with worker processes (Mode::kProcess), like every counter a method bumps.
using Gates = testkit::SharedGates;

// An over-aligned argument: a call node that stores it must be allocated with its alignment.
struct alignas(64) Wide {
  int64_t v = 0;
  template <typename Archive>
  void serialize(Archive& archive) {
    archive(v);
  }
};

struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Counters alive, wherever they live (a worker process too); made before main, so that every
// worker process shares it.
std::atomic<int>& live_counters = *testkit::NewShared<std::atomic<int>>(0);

class Counter {
 public:
  explicit Counter(int start = 0) : n_(start) {
    if (start < 0) throw std::invalid_argument("negative start " + std::to_string(start));
    ++live_counters;
  }
  ~Counter() { --live_counters; }

  int Add(int k) { return n_ += k; }
  int Get() const { return n_; }
  void Reset() { n_ = 0; }
  // Overloads: callers pick one with static_cast.
  int Scale(int k) { return n_ *= k; }
  std::string Scale(const std::string& s) { return s + std::to_string(n_); }
  int Throw(int kind) {
    if (kind == 0) throw std::out_of_range("index 7 out of range");
    throw CustomError("custom failure");
  }
  absl::Status Check(int k) const {
    if (k > n_) return absl::FailedPreconditionError("k exceeds n");
    return absl::OkStatus();
  }
  absl::StatusOr<int> Half() const {
    if (n_ % 2 != 0) return absl::InvalidArgumentError("odd");
    return n_ / 2;
  }
  Future<int> Later(int k) { return MakeReadyFuture(n_ + k); }
  std::unique_ptr<int> Box(std::unique_ptr<int> p) {
    *p += n_;
    return p;
  }
  int Hold(int gate) {
    Gates::Get().Hold(gate);
    return ++n_;
  }
  // Records the call order.
  std::vector<int> Record(int i) {
    log_.push_back(i);
    return log_;
  }
  int SumVector(std::vector<int> v) {
    int s = 0;
    for (int x : v) s += x;
    return n_ += s;
  }
  int SumMap(std::map<std::string, int> m) {
    int s = 0;
    for (const auto& [k, v] : m) s += v;
    return n_ += s;
  }
  int SumHashMap(absl::flat_hash_map<std::string, int> m) {
    int s = 0;
    for (const auto& [k, v] : m) s += v;
    return n_ += s;
  }
  // -1 when the argument the call node holds is not aligned as its type requires.
  int AddWide(const Wide& w) {
    if (reinterpret_cast<uintptr_t>(&w) % alignof(Wide) != 0) return -1;
    return n_ += static_cast<int>(w.v);
  }
  std::string Describe(std::tuple<int, std::string> t, std::pair<int, int> p,
                       std::optional<int> o) {
    return std::get<1>(t) + ":" +
           std::to_string(std::get<0>(t) + p.first + p.second + o.value_or(0));
  }
  bool IsDone(Future<int> f) { return f.Done(); }
  bool CancelRequested() const { return this_call::CancelRequested(); }
  // Releases gate `started`, then works until its call is cancelled, for at most 10 s (a test
  // that fails then does not hang). Adds 1 when it saw the cancellation, 1000 when it gave up.
  int WorkUntilCancelled(int started) {
    Gates::Get().Release(started);
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (!this_call::CancelRequested()) {
      if (absl::Now() >= give_up) return n_ += 1000;
      std::this_thread::yield();  // A slice of work.
    }
    return n_ += 1;
  }
  int AddShared(std::shared_ptr<int> p, int k) { return n_ += *p + k; }

 private:
  int n_;
  std::vector<int> log_;
};

}  // namespace concurry::worker_test

// Loopback mode sends everything as bytes: the class, its methods and its exception are registered.
CONCURRY_REGISTER_WORKER(
    concurry::worker_test::Counter, (int), Add, Get, Reset,
    CONCURRY_METHOD(ScaleInt, static_cast<int (concurry::worker_test::Counter::*)(int)>(
                                  &concurry::worker_test::Counter::Scale)),
    CONCURRY_METHOD(
        ScaleText, static_cast<std::string (concurry::worker_test::Counter::*)(const std::string&)>(
                       &concurry::worker_test::Counter::Scale)),
    Throw, Check, Half, Later, Box, Hold, Record, SumVector, SumMap, SumHashMap, Describe, AddWide,
    CancelRequested, WorkUntilCancelled);
CONCURRY_REGISTER_EXCEPTION(concurry::worker_test::CustomError);

namespace concurry::worker_test {

// A method cannot be called with arguments it does not take (checked by the compiler).
// (A misuse selects the overload that fails with a message: workers_internal::CallRejected.)
template <typename R>
concept Accepted = !std::is_same_v<R, workers_internal::CallRejected>;
template <typename W, typename M, typename... A>
concept CanCall = requires(const W& w, M m, A... a) {
  { w.Call(m, a...) } -> Accepted;
};
static_assert(CanCall<Worker<Counter>, decltype(&Counter::Add), int>);
static_assert(CanCall<Worker<Counter>, decltype(&Counter::Add), Future<int>>);
static_assert(!CanCall<Worker<Counter>, decltype(&Counter::Add), std::string>);
static_assert(!CanCall<Worker<Counter>, decltype(&Counter::Add)>);
static_assert(!CanCall<Worker<Counter>, decltype(&Counter::Add), int, int>);
static_assert(!CanCall<Worker<Counter>, int Counter::*, int>);

class WorkerConformanceTest : public ::testing::TestWithParam<Mode> {
 protected:
  WorkerOptions Options() const { return {.mode = GetParam()}; }
  Worker<Counter> Make(int start = 0) { return Worker<Counter>::Create(Options(), start); }
  Worker<Counter> MakeBounded(int64_t cap, QueueFullPolicy policy) {
    return Worker<Counter>::Create(
        {.mode = GetParam(), .max_queued_tasks = cap, .queue_full = policy}, 0);
  }
  // Starts a call that holds the worker until Gates::Get().Release(gate); returns once it runs.
  static Future<int> Occupy(const Worker<Counter>& w, int gate) {
    Future<int> call = w.Call(&Counter::Hold, gate);
    Gates::Get().WaitEntered(gate);
    return call;
  }
};

TEST_P(WorkerConformanceTest, StatePersistsAcrossCalls) {
  auto w = Make(10);
  EXPECT_EQ(w.Call(&Counter::Add, 5).Result(), 15);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 16);
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 16);
}

TEST_P(WorkerConformanceTest, OverAlignedArgumentsKeepTheirAlignment) {
  auto w = Make(1);
  for (int i = 0; i < 20; ++i) w.Call(&Counter::AddWide, Wide{.v = 1});
  EXPECT_EQ(w.Call(&Counter::AddWide, Wide{.v = 1}).Result(), 22);
}

TEST_P(WorkerConformanceTest, TwoWorkersNeverShareState) {
  auto a = Make(1);
  auto b = Make(100);
  a.Call(&Counter::Add, 1);
  b.Call(&Counter::Add, 1);
  EXPECT_EQ(a.Call(&Counter::Get).Result(), 2);
  EXPECT_EQ(b.Call(&Counter::Get).Result(), 101);
}

TEST_P(WorkerConformanceTest, CallsRunInFifoOrder) {
  auto w = Make();
  std::vector<Future<std::vector<int>>> fs;
  for (int i = 0; i < 200; ++i) fs.push_back(w.Call(&Counter::Record, i));
  std::vector<int> expected;
  for (int i = 0; i < 200; ++i) expected.push_back(i);
  EXPECT_EQ(fs.back().Result(), expected);
}

TEST_P(WorkerConformanceTest, MethodKinds) {
  auto w = Make(4);
  w.Call(&Counter::Reset).Result();  // void
  EXPECT_EQ(w.Call(&Counter::Add, 4).Result(), 4);
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 4);  // const
  EXPECT_EQ(w.Call(static_cast<int (Counter::*)(int)>(&Counter::Scale), 3).Result(), 12);
  EXPECT_EQ(w.Call(static_cast<std::string (Counter::*)(const std::string&)>(&Counter::Scale),
                   std::string("n="))
                .Result(),
            "n=12");
  EXPECT_EQ(w.Call(&Counter::Later, 1).Result(), 13);  // Future<int> flattened
  EXPECT_EQ(w.Call(&Counter::Half).Result(), 6);       // StatusOr<int> flattened
  EXPECT_TRUE(w.Call(&Counter::Check, 1).Status().ok());
  EXPECT_EQ(w.Call(&Counter::Check, 100).Status().code(), absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<int> boxed = w.Call(&Counter::Box, std::make_unique<int>(1)).Result();
  EXPECT_EQ(*boxed, 13);  // move-only argument and result
}

TEST_P(WorkerConformanceTest, ExceptionsKeepTypeAndMessage) {
  auto w = Make();
  try {
    w.Call(&Counter::Throw, 0).Result();
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 7 out of range");
  }
  try {
    w.Call(&Counter::Throw, 1).Result();
    FAIL() << "no exception";
  } catch (const CustomError& e) {
    EXPECT_STREQ(e.what(), "custom failure");
  }
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 1);  // The worker keeps working.
}

TEST_P(WorkerConformanceTest, ConstructorErrorReachesCreateAndNothingRuns) {
  const int before = live_counters.load();
  try {
    Worker<Counter>::Create(Options(), -3);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "negative start -3");
  }
  EXPECT_EQ(live_counters.load(), before);
  Future<Worker<Counter>> f = Worker<Counter>::CreateAsync(Options(), -1);
  EXPECT_THROW(f.Result(), std::invalid_argument);
}

TEST_P(WorkerConformanceTest, StopCancelsQueuedLetsRunningFinishAndRejectsLaterCalls) {
  auto w = Make();
  const int gate = Gates::Get().Make();
  Future<int> running;
  // In sync mode the call runs in the calling thread, so make it from another thread.
  std::thread caller([&] { running = w.Call(&Counter::Hold, gate); });
  Gates::Get().WaitEntered(gate);
  Future<int> queued = w.Call(&Counter::Add, 10);
  EXPECT_FALSE(queued.Done());
  std::thread stopper([&] { EXPECT_TRUE(w.Stop(absl::Seconds(60))); });
  // Stop cancels the queued call before it waits for the running one.
  queued.Wait();
  EXPECT_TRUE(queued.Cancelled());
  EXPECT_TRUE(w.stopped());
  Gates::Get().Release(gate);
  stopper.join();
  caller.join();
  EXPECT_EQ(running.Result(), 1);  // The running call finished.
  EXPECT_THROW(w.Call(&Counter::Add, 1).Result(), StoppedError);
  EXPECT_TRUE(w.Stop());  // Idempotent.
  EXPECT_TRUE(w.StoppedFuture().Done());
}

TEST_P(WorkerConformanceTest, AStoppedWorkerHasNoPendingCalls) {
  // Whoever sees the worker stopped (a second Stop, StoppedFuture) sees every call done.
  auto w = Make();
  const int gate = Gates::Get().Make();
  Future<int> running;
  std::thread caller([&] { running = w.Call(&Counter::Hold, gate); });
  Gates::Get().WaitEntered(gate);
  std::vector<Future<int>> queued;
  for (int i = 0; i < 20; ++i) queued.push_back(w.Call(&Counter::Add, 1));
  std::thread stopper([&] { w.Stop(); });
  Gates::Get().Release(gate);
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(60)));
  for (const Future<int>& f : queued) EXPECT_TRUE(f.Done());
  stopper.join();
  caller.join();
}

TEST_P(WorkerConformanceTest, StopTimesOutWhileACallRuns) {
  auto w = Make();
  const int gate = Gates::Get().Make();
  std::thread caller([&] { w.Call(&Counter::Hold, gate); });
  Gates::Get().WaitEntered(gate);
  EXPECT_FALSE(w.Stop(absl::ZeroDuration()));
  EXPECT_FALSE(w.StoppedFuture().Done());
  Gates::Get().Release(gate);
  caller.join();
  EXPECT_TRUE(w.Stop(absl::Seconds(60)));
}

TEST_P(WorkerConformanceTest, LastHandleStops) {
  const int before = live_counters.load();
  Future<void> stopped;
  {
    auto w = Make();
    auto copy = w;
    stopped = copy.StoppedFuture();
    EXPECT_EQ(live_counters.load(), before + 1);
  }
  EXPECT_TRUE(stopped.Done());
  EXPECT_EQ(live_counters.load(), before);
}

TEST_P(WorkerConformanceTest, UnwrapsNestedFutures) {
  auto w = Make();
  Promise<int> p;
  Future<int> late = p.GetFuture();
  Future<int> sum = w.Call(&Counter::Add, late);
  EXPECT_FALSE(sum.Done());  // The caller did not block; the call waits for its input.
  p.SetValue(5);
  EXPECT_EQ(sum.Result(), 5);
  EXPECT_EQ(w.Call(&Counter::SumVector,
                   std::vector<Future<int>>{MakeReadyFuture(1), w.Call(&Counter::Get)})
                .Result(),
            11);
  std::map<std::string, Future<int>> m{{"a", MakeReadyFuture(1)}, {"b", MakeReadyFuture(2)}};
  EXPECT_EQ(w.Call(&Counter::SumMap, m).Result(), 14);
  absl::flat_hash_map<std::string, Future<int>> h{{"x", MakeReadyFuture(6)}};
  EXPECT_EQ(w.Call(&Counter::SumHashMap, h).Result(), 20);
  EXPECT_EQ(
      w.Call(&Counter::Describe, std::make_tuple(MakeReadyFuture(1), std::string("t")),
             std::make_pair(MakeReadyFuture(2), 3), std::optional<Future<int>>(MakeReadyFuture(4)))
          .Result(),
      "t:10");
}

TEST_P(WorkerConformanceTest, FailedInputFailsTheCallWithoutRunningIt) {
  auto w = Make(1);
  Future<int> bad = MakeFailedFuture<int>(std::out_of_range("upstream"));
  Future<int> r = w.Call(&Counter::Add, std::vector<Future<int>>{bad}.front());
  try {
    r.Result();
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "upstream");
  }
  EXPECT_THROW(
      w.Call(&Counter::SumVector, std::vector<Future<int>>{MakeReadyFuture(1), bad}).Result(),
      std::out_of_range);
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 1);  // Neither call ran.
}

TEST_P(WorkerConformanceTest, StopCancelsCallsWaitingForInputs) {
  auto w = Make();
  Promise<int> never;
  Future<int> r = w.Call(&Counter::Add, never.GetFuture());
  EXPECT_TRUE(w.Stop());
  EXPECT_TRUE(r.Cancelled());
  never.SetValue(1);
  EXPECT_TRUE(r.Cancelled());
}

TEST_P(WorkerConformanceTest, BlockingWorkerReturnsValues) {
  auto b = BlockingWorker<Counter>::Create(Options(), 2);
  EXPECT_EQ(b.Call(&Counter::Add, 3), 5);
  EXPECT_THROW(b.Call(&Counter::Throw, 0), std::out_of_range);
  EXPECT_EQ(b.Async().Call(&Counter::Get).Result(), 5);
  EXPECT_EQ(Make(7).Blocking().Call(&Counter::Get), 7);
}

TEST_P(WorkerConformanceTest, DeferredCallsWaitOnTheCallerSideInOrder) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  auto w = MakeBounded(2, QueueFullPolicy::kDefer);
  const int gate = Gates::Get().Make();
  Future<int> first = Occupy(w, gate);
  std::vector<Future<std::vector<int>>> rest;
  for (int i = 0; i < 5; ++i) rest.push_back(w.Call(&Counter::Record, i));  // Returns at once.
  Gates::Get().Release(gate);
  EXPECT_EQ(first.Result(), 1);
  EXPECT_THAT(rest.back().Result(), ElementsAre(0, 1, 2, 3, 4));
}

TEST_P(WorkerConformanceTest, StopCancelsDeferredCalls) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  auto w = MakeBounded(1, QueueFullPolicy::kDefer);
  const int gate = Gates::Get().Make();
  Future<int> first = Occupy(w, gate);
  Future<int> deferred = w.Call(&Counter::Add, 1);
  std::thread stopper([&] { w.Stop(absl::Seconds(60)); });
  deferred.Wait();
  EXPECT_TRUE(deferred.Cancelled());
  Gates::Get().Release(gate);
  stopper.join();
  EXPECT_EQ(first.Result(), 1);
}

TEST_P(WorkerConformanceTest, BlockPolicyBlocksTheCallerUntilThereIsRoom) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  auto w = MakeBounded(1, QueueFullPolicy::kBlock);
  const int gate = Gates::Get().Make();
  Future<int> first = Occupy(w, gate);
  std::atomic<bool> returned{false};
  Future<int> second;
  std::thread caller([&] {
    second = w.Call(&Counter::Add, 10);
    returned = true;
  });
  // The slot is held by `first` until the gate opens, so the second call cannot have returned.
  EXPECT_FALSE(returned.load());
  Gates::Get().Release(gate);
  caller.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(second.Result(), 11);
}

TEST_P(WorkerConformanceTest, AFreedSlotGoesToTheOldestWaiter) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  auto w = MakeBounded(1, QueueFullPolicy::kBlock);
  const int gate = Gates::Get().Make();
  Future<int> first = Occupy(w, gate);
  EXPECT_EQ(w.Stats().queued, 0);
  Future<std::vector<int>> blocked_call;
  std::thread caller([&] { blocked_call = w.Call(&Counter::Record, 1); });
  // Wait (yielding) until the caller is parked in the gate; Stats() reads the gate's queue.
  while (w.Stats().blocked_callers != 1) std::this_thread::yield();
  // A call dispatched when its input completes never blocks: it is deferred behind the caller.
  Promise<int> input;
  Future<std::vector<int>> deferred_call = w.Call(&Counter::Record, input.GetFuture());
  input.SetValue(2);
  EXPECT_EQ(w.Stats().deferred, 1);
  Gates::Get().Release(gate);
  caller.join();
  EXPECT_THAT(deferred_call.Result(), ElementsAre(1, 2));  // The blocked caller went first.
  const WorkerStats idle = w.Stats();
  EXPECT_EQ(idle.queued + idle.deferred + idle.blocked_callers, 0);
}

TEST_P(WorkerConformanceTest, StopWakesABlockedCaller) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  auto w = MakeBounded(1, QueueFullPolicy::kBlock);
  const int gate = Gates::Get().Make();
  Future<int> first = Occupy(w, gate);
  Future<int> second;
  std::thread caller([&] { second = w.Call(&Counter::Add, 10); });
  std::thread stopper([&] { w.Stop(absl::Seconds(60)); });
  caller.join();  // Woken by Stop.
  EXPECT_THROW(second.Result(), StoppedError);
  Gates::Get().Release(gate);
  stopper.join();
}

TEST_P(WorkerConformanceTest, UnwrapOptOutPassesFutures) {
  auto w = Worker<Counter>::Create({.mode = GetParam(), .unwrap_futures = false}, 0);
  Promise<int> p;
  if (FindWorkerBackend(GetParam())->encodes_calls()) {
    // A future cannot cross a byte boundary; IsDone is not registered, and the error says so.
    try {
      w.Call(&Counter::IsDone, p.GetFuture()).Result();
      FAIL() << "no exception";
    } catch (const InvalidOptionError& e) {
      EXPECT_THAT(e.what(), HasSubstr("not registered for concurry::worker_test::Counter"));
    }
    return;
  }
  EXPECT_FALSE(w.Call(&Counter::IsDone, p.GetFuture()).Result());
  // A method that takes values cannot take futures when unwrapping is off.
  EXPECT_THROW(w.Call(&Counter::Add, MakeReadyFuture(1)).Result(), InvalidOptionError);
}

TEST_P(WorkerConformanceTest, CallerCancelsAQueuedCall) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  if (GetParam() == Mode::kRemote) {
    // The cancellation travels over gRPC, whose writes complete before the bytes reach the host:
    // released at once, the running call can finish and the host start the next before the
    // cancellation arrives. //workers/remote:remote_client_test cancels with time to arrive.
    GTEST_SKIP() << "a remote cancellation racing the start of the call may arrive too late";
  }
  auto w = Make();
  const int gate = Gates::Get().Make();
  Future<int> first = Occupy(w, gate);
  Future<int> second = w.Call(&Counter::Add, 100);
  EXPECT_TRUE(second.Cancel());
  Gates::Get().Release(gate);
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 1);  // The cancelled call never ran.
}

TEST_P(WorkerConformanceTest, CancelRequestedIsFalseOutsideCallsAndInCallsNotCancelled) {
  EXPECT_FALSE(this_call::CancelRequested());
  auto w = Make();
  EXPECT_FALSE(w.Call(&Counter::CancelRequested).Result());
  EXPECT_FALSE(this_call::CancelRequested());
}

TEST_P(WorkerConformanceTest, ARunningCallSeesItsCancellationAndTheWorkerGoesOn) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync calls finish before they return";
  auto w = Make();
  const int started = Gates::Get().Make();
  Future<int> running = w.Call(&Counter::WorkUntilCancelled, started);
  Gates::Get().Hold(started);  // Returns once the method has released it: it runs.
  EXPECT_TRUE(running.Cancel());
  // Well before the method's own 10 s limit, which would add 1000 instead.
  Future<int> next = w.Call(&Counter::Get);
  ASSERT_TRUE(next.Wait(absl::Seconds(5)));
  EXPECT_EQ(next.Result(), 1);
  EXPECT_TRUE(running.Cancelled());
}

// Every backend linked into this test (//workers links all of them; the next test checks that none
// was dropped), so a new backend is checked by linking it here.
INSTANTIATE_TEST_SUITE_P(Modes, WorkerConformanceTest, ::testing::ValuesIn(LinkedWorkerModes()),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST(WorkerTest, TheConformanceSuiteRunsOnEveryBackend) {
  EXPECT_THAT(LinkedWorkerModes(), ElementsAre(Mode::kSync, Mode::kThread, Mode::kTbb,
                                               Mode::kLoopback, Mode::kProcess, Mode::kCoroutine));
}

// Runs a sync-mode worker's call inside its own call (the inner call sets and restores the
// thread's cancellation signal), then works until its own call is cancelled, for at most 10 s.
class Relay {
 public:
  // Returns (whether the inner call saw a cancellation, whether this call saw its own).
  std::pair<bool, bool> InnerThenWork(int started) {
    auto inner = Worker<Counter>::Create({.mode = Mode::kSync}, 0);
    inner_saw_ = inner.Call(&Counter::CancelRequested).Result();
    Gates::Get().Release(started);
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (!this_call::CancelRequested() && absl::Now() < give_up) std::this_thread::yield();
    outer_saw_ = this_call::CancelRequested();
    return {inner_saw_, outer_saw_};
  }
  std::pair<bool, bool> Seen() const { return {inner_saw_, outer_saw_}; }

 private:
  bool inner_saw_ = true;
  bool outer_saw_ = false;
};

TEST(WorkerTest, AnInlineCallInsideACallLeavesTheOuterCallsCancellationVisible) {
  auto w = Worker<Relay>::Create({.mode = Mode::kThread});
  const int started = Gates::Get().Make();
  Future<std::pair<bool, bool>> running = w.Call(&Relay::InnerThenWork, started);
  Gates::Get().Hold(started);
  EXPECT_TRUE(running.Cancel());
  Future<std::pair<bool, bool>> seen = w.Call(&Relay::Seen);
  ASSERT_TRUE(seen.Wait(absl::Seconds(5)));
  EXPECT_EQ(seen.Result(), std::make_pair(false, true));
}

TEST(WorkerTest, SyncModeReturnsDoneFutures) {
  auto w = Worker<Counter>::Create({.mode = Mode::kSync}, 1);
  Future<int> f = w.Call(&Counter::Add, 1);
  EXPECT_TRUE(f.Done());
  EXPECT_EQ(f.Result(), 2);
}

TEST(WorkerTest, TbbWorkerRunsOnTheGivenExecutor) {
  testkit::ManualExecutor executor;
  auto created = Worker<Counter>::CreateAsync({.mode = Mode::kTbb, .executor = &executor}, 3);
  EXPECT_FALSE(created.Done());
  EXPECT_EQ(executor.RunAll(), 1);
  auto w = created.Result();
  Future<int> f = w.Call(&Counter::Add, 1);
  Future<int> g = w.Call(&Counter::Add, 1);
  EXPECT_FALSE(f.Done());
  EXPECT_EQ(executor.RunAll(), 1);  // One drain runs both calls.
  EXPECT_EQ(g.Result(), 5);
  w.Stop(absl::ZeroDuration());
  executor.RunAll();
  EXPECT_TRUE(w.StoppedFuture().Done());
}

class Parent {
 public:
  explicit Parent(Worker<Counter> child) : child_(std::move(child)) {}

 private:
  Worker<Counter> child_;
};

TEST(WorkerTest, AWorkerDroppedInsideAnotherWorkerStopsWithoutWaiting) {
  // Both run on one manual executor: if the child's implicit Stop waited (for an infinite
  // stop_timeout) inside the parent's drain, the child could never drain and this would hang.
  testkit::ManualExecutor executor;
  auto child_created = Worker<Counter>::CreateAsync(
      {.mode = Mode::kTbb, .stop_timeout = absl::InfiniteDuration(), .executor = &executor}, 0);
  executor.RunAll();
  Future<void> child_stopped = child_created.Result().StoppedFuture();
  auto parent_created = Worker<Parent>::CreateAsync({.mode = Mode::kTbb, .executor = &executor},
                                                    std::move(child_created).Result());
  executor.RunAll();
  Worker<Parent> parent = parent_created.Result();
  parent_created = {};  // The parent's object now holds the child's only handle.
  EXPECT_FALSE(parent.Stop(absl::ZeroDuration()));
  executor.RunAll();  // The parent's StopNode destroys the child's last handle, then the child.
  EXPECT_TRUE(parent.StoppedFuture().Done());
  EXPECT_TRUE(child_stopped.Done());
}

TEST(WorkerTest, StopInsideACancellationCallbackDoesNotWaitForItself) {
  auto w =
      Worker<Counter>::Create({.mode = Mode::kThread, .stop_timeout = absl::InfiniteDuration()}, 0);
  Promise<int> never;
  Future<int> call = w.Call(&Counter::Add, never.GetFuture());
  std::optional<bool> nested;
  call.AddDoneCallback([w, &nested] { nested = w.Stop(); });
  EXPECT_TRUE(w.Stop());
  // The nested Stop returned at once (false: the stop it is part of was still going on) instead
  // of waiting forever for the pass that runs it.
  EXPECT_EQ(nested, false);
  EXPECT_TRUE(call.Cancelled());
  EXPECT_TRUE(w.StoppedFuture().Done());
}

TEST(WorkerTest, StopCancelsChainsOfCallsWaitingForInputs) {
  for (int i = 0; i < 50; ++i) {
    auto w = Worker<Counter>::Create({.mode = Mode::kThread}, 0);
    Promise<int> never;
    Future<int> first = w.Call(&Counter::Add, never.GetFuture());
    Future<int> second = w.Call(&Counter::Add, first);
    Future<int> third = w.Call(&Counter::Add, second);
    w.Stop();
    EXPECT_TRUE(first.Cancelled());
    EXPECT_TRUE(second.Cancelled());
    EXPECT_TRUE(third.Cancelled());
  }
}

TEST(WorkerTest, ACancelledCallLetsGoOfItsArgumentsAtOnce) {
  auto w = Worker<Counter>::Create({.mode = Mode::kThread}, 0);
  Promise<int> never;
  auto arg = std::make_shared<int>(1);
  std::weak_ptr<int> watch = arg;
  Future<int> call = w.Call(&Counter::AddShared, std::move(arg), never.GetFuture());
  EXPECT_FALSE(watch.expired());
  EXPECT_TRUE(call.Cancel());
  EXPECT_TRUE(watch.expired());  // Not kept until `never` completes.
  auto arg2 = std::make_shared<int>(2);
  watch = arg2;
  Future<int> call2 = w.Call(&Counter::AddShared, std::move(arg2), never.GetFuture());
  w.Stop();
  EXPECT_TRUE(call2.Cancelled());
  EXPECT_TRUE(watch.expired());
  never.SetValue(1);
}

TEST(WorkerTest, SyncWorkersIgnoreTheQueueCap) {
  auto w = Worker<Counter>::Create(
      {.mode = Mode::kSync, .max_queued_tasks = 1, .queue_full = QueueFullPolicy::kBlock}, 0);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), i + 1);
}

TEST(WorkerTest, ManyTbbWorkersAreCreatedUsedAndStopped) {
  constexpr int kWorkers = 100000;
  const int before = live_counters.load();
  std::vector<Future<Worker<Counter>>> created;
  created.reserve(kWorkers);
  for (int i = 0; i < kWorkers; ++i) {
    created.push_back(Worker<Counter>::CreateAsync({.mode = Mode::kTbb}, i));
  }
  std::vector<Worker<Counter>> workers;
  workers.reserve(kWorkers);
  for (auto& f : created) workers.push_back(std::move(f).Result());
  std::vector<Future<int>> results;
  results.reserve(kWorkers);
  for (auto& w : workers) results.push_back(w.Call(&Counter::Add, 1));
  for (int i = 0; i < kWorkers; ++i) ASSERT_EQ(results[i].Result(), i + 1);
  EXPECT_EQ(live_counters.load(), before + kWorkers);
  for (auto& w : workers) w.Stop(absl::ZeroDuration());
  for (auto& w : workers) w.StoppedFuture().Wait();
  EXPECT_EQ(live_counters.load(), before);
}

TEST(WorkerTest, RejectsBadOptionsWithClearMessages) {
  auto message = [](auto fn) {
    try {
      fn();
    } catch (const InvalidOptionError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message([] { Worker<Counter>::Create({.mode = Mode::kRemote}, 0); }),
              HasSubstr("Mode::kRemote needs @concurry//workers/remote in deps"));
  EXPECT_THAT(message([] { Worker<Counter>::Create({.mode = Mode::kSync, .max_workers = 2}, 0); }),
              HasSubstr("cannot form a pool"));
  EXPECT_THAT(
      message([] { Worker<Counter>::Create({.mode = Mode::kThread, .max_queued_tasks = 0}, 0); }),
      HasSubstr(">= 1"));
  EXPECT_THAT(
      message([] { Worker<Counter>::Create({.mode = Mode::kThread, .blocking = true}, 0); }),
      HasSubstr("BlockingWorker"));
  EXPECT_THAT(message([] { Worker<Counter>().Call(&Counter::Get); }), HasSubstr("empty"));
  EXPECT_THAT(
      message([] { Worker<Counter>::Create({.mode = Mode::kSync}, 0).Stop(absl::Seconds(-1)); }),
      HasSubstr("negative"));
}

TEST(WorkerTest, ScopedDefaultsApplyAndRestore) {
  {
    ScopedWorkerDefaults scope(Mode::kThread, [](WorkerDefaults& d) { d.max_queued_tasks = 7; });
    EXPECT_EQ(Worker<Counter>::Create({.mode = Mode::kThread}, 0).options().max_queued_tasks, 7);
    // The explicit option wins over the scope.
    EXPECT_EQ(Worker<Counter>::Create({.mode = Mode::kThread, .max_queued_tasks = 3}, 0)
                  .options()
                  .max_queued_tasks,
              3);
  }
  EXPECT_EQ(Worker<Counter>::Create({.mode = Mode::kThread}, 0).options().max_queued_tasks,
            kUnbounded);
}

}  // namespace concurry::worker_test

// What blocking inside a worker's call does: in tbb mode, waits never starve the shared oneTBB
// threads (a thread is added for each blocked call); in every mode, a call that waits for a call
// queued behind it in the same worker fails at once instead of hanging; a worker's handle to
// itself (CurrentWorker) does not keep it running.

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "retry/policy.h"
#include "retry/retry.h"
#include "sync/as_completed.h"
#include "sync/gather.h"
#include "sync/wait.h"
#include "testing/fake_clock.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;

// Completes a future when `total` parties have arrived.
class Arrivals {
 public:
  explicit Arrivals(int total) : total_(total), all_(promise_.GetFuture()) {}
  void Arrive() {
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == total_) promise_.SetValue();
  }
  Future<void> all() const { return all_; }

 private:
  const int total_;
  std::atomic<int> arrived_{0};
  Promise<void> promise_;
  Future<void> all_;
};

// Answers once `gate` is done: a call that blocks (in a library wait) on top of the caller's wait.
class Callee {
 public:
  explicit Callee(Future<void> gate) : gate_(std::move(gate)) {}
  int Get(int x) {
    gate_.Wait();
    return x + 1;
  }
  // Get, once the call has said it is running.
  int ArriveAndGet(int x, std::shared_ptr<Arrivals> arrivals) {
    arrivals->Arrive();
    return Get(x);
  }

 private:
  Future<void> gate_;
};

class Caller {
 public:
  // Once every caller is in this method (all of them blocked at once, each holding a oneTBB
  // thread), waits for another tbb worker's call.
  int AskAndWait(Worker<Callee> callee, int x, std::shared_ptr<Arrivals> arrivals) {
    arrivals->Arrive();
    arrivals->all().Wait();
    return callee.Call(&Callee::Get, x).Result();
  }
  // Creates a tbb worker synchronously, then waits for its call.
  int CreateAndAsk(int x) {
    auto callee = Worker<Callee>::Create({.mode = Mode::kTbb}, MakeReadyFuture());
    return callee.Call(&Callee::Get, x).Result();
  }
  // Blocks in the worker's limits until the test releases the unit it holds.
  int AcquireAndReturn(int x, std::shared_ptr<Arrivals> arrivals) {
    arrivals->Arrive();
    LimitAcquisition held = CurrentWorkerLimits().Acquire({{"connections", 1}});
    return x;
  }
  // Fails once, then sleeps a retry back-off of one hour on `clock` before succeeding.
  int RetryAfterBackoff(int x, testkit::FakeClock* clock, std::shared_ptr<Arrivals> arrivals) {
    int attempts = 0;
    return Retry(
        [&] {
          if (attempts++ == 0) {
            arrivals->Arrive();
            throw std::runtime_error("first attempt fails");
          }
          return x;
        },
        RetryPolicy{.num_retries = 1, .wait = absl::Hours(1), .jitter = 0},
        RetryOptions{.clock = clock});
  }
  int Trivial() { return 42; }
};

class TbbDeadlockPatternTest : public ::testing::TestWithParam<int> {};

TEST_P(TbbDeadlockPatternTest, WorkersWaitingForOtherWorkersCallsAllComplete) {
  const int n = GetParam();
  testkit::Watchdog watchdog(absl::Seconds(120), "tbb workers waiting for each other");
  auto arrivals = std::make_shared<Arrivals>(n);
  std::vector<Worker<Caller>> callers;
  std::vector<Worker<Callee>> callees;
  for (int i = 0; i < n; ++i) {
    callers.push_back(Worker<Caller>::Create({.mode = Mode::kTbb}));
    callees.push_back(Worker<Callee>::Create({.mode = Mode::kTbb}, MakeReadyFuture()));
  }
  std::vector<Future<int>> answers;
  for (int i = 0; i < n; ++i) {
    answers.push_back(callers[i].Call(&Caller::AskAndWait, callees[i], i, arrivals));
  }
  const std::vector<int> values = Gather(answers);
  for (int i = 0; i < n; ++i) EXPECT_EQ(values[i], i + 1);
}

TEST_P(TbbDeadlockPatternTest, WorkersCreatingWorkersAndWaitingAllComplete) {
  const int n = GetParam();
  testkit::Watchdog watchdog(absl::Seconds(120), "tbb workers creating tbb workers");
  std::vector<Worker<Caller>> callers;
  for (int i = 0; i < n; ++i) callers.push_back(Worker<Caller>::Create({.mode = Mode::kTbb}));
  std::vector<Future<int>> answers;
  for (int i = 0; i < n; ++i) answers.push_back(callers[i].Call(&Caller::CreateAndAsk, i));
  const std::vector<int> values = Gather(answers);
  for (int i = 0; i < n; ++i) EXPECT_EQ(values[i], i + 1);
  // And the process is still fine: a Create from here works.
  auto after = Worker<Callee>::Create({.mode = Mode::kTbb}, MakeReadyFuture());
  EXPECT_EQ(after.Call(&Callee::Get, 1).Result(), 2);
}

INSTANTIATE_TEST_SUITE_P(Actors, TbbDeadlockPatternTest, ::testing::Values(2, 8, 64),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "Actors";
                         });

// Eight tbb workers blocked in their limits (in-process waits, or futex waits of a set shared
// with other processes); an unrelated tbb worker's call still runs.
class TbbLimitsBlockingTest : public ::testing::TestWithParam<LimitSharing> {};

TEST_P(TbbLimitsBlockingTest, WorkersBlockedInLimitsDoNotDelayAnIdleWorker) {
  testkit::Watchdog watchdog(absl::Seconds(60), "tbb workers blocked in CurrentWorkerLimits");
  constexpr int kBlocked = 8;
  LimitSet limits = LimitSet::Create({ResourceLimit("connections", 1)}, {.sharing = GetParam()});
  LimitAcquisition taken = limits.Acquire({{"connections", 1}});  // The only unit.
  auto arrivals = std::make_shared<Arrivals>(kBlocked);
  std::vector<Worker<Caller>> blocked;
  std::vector<Future<int>> results;
  for (int i = 0; i < kBlocked; ++i) {
    blocked.push_back(Worker<Caller>::Create({.mode = Mode::kTbb, .limits = limits}));
    results.push_back(blocked.back().Call(&Caller::AcquireAndReturn, i, arrivals));
  }
  arrivals->all().Result();  // All eight are in their calls, about to block or blocked.
  auto idle = Worker<Caller>::Create({.mode = Mode::kTbb});
  const absl::Time start = absl::Now();
  EXPECT_EQ(idle.Call(&Caller::Trivial).Result(), 42);
  // Generous: a few milliseconds in the benchmark (workers_benchmark); seconds would mean a
  // starved arena waking late.
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  for (const Future<int>& result : results) EXPECT_FALSE(result.Done());
  taken.Release();  // They acquire one after the other.
  const std::vector<int> values = Gather(results);
  for (int i = 0; i < kBlocked; ++i) EXPECT_EQ(values[i], i);
}

INSTANTIATE_TEST_SUITE_P(Sharing, TbbLimitsBlockingTest,
                         ::testing::Values(LimitSharing::kThreads, LimitSharing::kProcesses),
                         [](const ::testing::TestParamInfo<LimitSharing>& info) {
                           return info.param == LimitSharing::kThreads ? "Threads" : "Processes";
                         });

// Eight tbb workers sleeping in retry back-off; an unrelated tbb worker's call still runs.
TEST(TbbBlockingTest, WorkersSleepingInRetryBackoffDoNotDelayAnIdleWorker) {
  testkit::Watchdog watchdog(absl::Seconds(60), "tbb workers sleeping in retry back-off");
  constexpr int kBlocked = 8;
  testkit::FakeClock clock;
  auto arrivals = std::make_shared<Arrivals>(kBlocked);
  std::vector<Worker<Caller>> sleepers;
  std::vector<Future<int>> results;
  for (int i = 0; i < kBlocked; ++i) {
    sleepers.push_back(Worker<Caller>::Create({.mode = Mode::kTbb}));
    results.push_back(sleepers.back().Call(&Caller::RetryAfterBackoff, i, &clock, arrivals));
  }
  clock.BlockUntilWaiters(kBlocked);  // All eight sleep their hour.
  auto idle = Worker<Caller>::Create({.mode = Mode::kTbb});
  EXPECT_EQ(idle.Call(&Caller::Trivial).Result(), 42);
  for (const Future<int>& result : results) EXPECT_FALSE(result.Done());
  clock.Advance(absl::Hours(1));
  const std::vector<int> values = Gather(results);
  for (int i = 0; i < kBlocked; ++i) EXPECT_EQ(values[i], i);
}

// User code that blocks on something the library does not see, declared with a BlockingRegion.
class Sleeper {
 public:
  void Hold(std::shared_ptr<absl::Notification> release, std::shared_ptr<Arrivals> arrivals) {
    BlockingRegion blocking;
    arrivals->Arrive();
    release->WaitForNotification();
  }
  int Trivial() { return 7; }
};

TEST(TbbBlockingTest, ABlockingRegionInUserCodeKeepsOtherWorkersRunning) {
  testkit::Watchdog watchdog(absl::Seconds(60), "tbb workers in user blocking regions");
  constexpr int kBlocked = 8;
  auto release = std::make_shared<absl::Notification>();
  auto arrivals = std::make_shared<Arrivals>(kBlocked);
  std::vector<Worker<Sleeper>> sleepers;
  std::vector<Future<void>> held;
  for (int i = 0; i < kBlocked; ++i) {
    sleepers.push_back(Worker<Sleeper>::Create({.mode = Mode::kTbb}));
    held.push_back(sleepers.back().Call(&Sleeper::Hold, release, arrivals));
  }
  arrivals->all().Result();  // All eight hold a thread each at once.
  auto idle = Worker<Sleeper>::Create({.mode = Mode::kTbb});
  EXPECT_EQ(idle.Call(&Sleeper::Trivial).Result(), 7);
  release->Notify();
  Gather(held);
}

TEST(TbbBlockingTest, StoppingAnotherTbbWorkerInsideATbbCallWaitsWithoutStarving) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a tbb call stopping other tbb workers");
  struct Stopper {
    bool StopAll(std::vector<Worker<Callee>> others) {
      bool all = true;
      for (Worker<Callee>& other : others) all = other.Stop(absl::Seconds(30)) && all;
      return all;
    }
  };
  auto gate = std::make_shared<Promise<void>>();
  std::vector<Worker<Callee>> callees;
  std::vector<Future<int>> running;
  auto arrivals = std::make_shared<Arrivals>(4);
  for (int i = 0; i < 4; ++i) {
    callees.push_back(Worker<Callee>::Create({.mode = Mode::kTbb}, gate->GetFuture()));
    running.push_back(callees.back().Call(&Callee::ArriveAndGet, i, arrivals));
  }
  // All four run (blocked on the gate) before the stop: Stop would cancel a call still queued.
  arrivals->all().Result();
  auto stopper = Worker<Stopper>::Create({.mode = Mode::kTbb});
  Future<bool> stopped = stopper.Call(&Stopper::StopAll, callees);
  // Stop waits for the running calls, which wait for the gate; opening it from another tbb worker
  // needs a thread while the stopper and the four callees all wait.
  auto opener = TaskWorker::Create({.mode = Mode::kTbb});
  opener.Submit([gate] { gate->SetValue(); }).Result();
  EXPECT_TRUE(stopped.Result());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(running[i].Result(), i + 1);
}

// --- A call waiting for its own worker -------------------------------------------------------

class SelfCaller {
 public:
  int Value() { return 5; }
  // Waits for a call queued behind this one in the same worker.
  int WaitForOwnCall() { return CurrentWorker<SelfCaller>().Call(&SelfCaller::Value).Result(); }
  bool TimedWaitForOwnCall() {
    return CurrentWorker<SelfCaller>().Call(&SelfCaller::Value).Wait(absl::Seconds(30));
  }
  absl::Status OwnCallStatus() {
    return CurrentWorker<SelfCaller>().Call(&SelfCaller::Value).Status();
  }
  int BlockingSelfCall() { return CurrentWorker<SelfCaller>().Blocking().Call(&SelfCaller::Value); }
  std::vector<int> GatherOwnCalls() {
    Worker<SelfCaller> self = CurrentWorker<SelfCaller>();
    return Gather(std::vector<Future<int>>{self.Call(&SelfCaller::Value)});
  }
  // Waits for the first of an own call and another worker's call: not a deadlock.
  size_t FirstOfOwnAndOther(Future<int> other) {
    std::vector<AnyFuture> both = {CurrentWorker<SelfCaller>().Call(&SelfCaller::Value), other};
    return Wait(both, {.return_when = ReturnWhen::kFirstCompleted}).done.at(0);
  }
  int AsCompletedOverOwnCall() {
    int sum = 0;
    for (auto& [index, outcome] : AsCompleted(
             std::vector<Future<int>>{CurrentWorker<SelfCaller>().Call(&SelfCaller::Value)})) {
      sum += outcome.value();
    }
    return sum;
  }
  // Not waiting is fine: the call runs after this one.
  Future<int> ReturnOwnCall() { return CurrentWorker<SelfCaller>().Call(&SelfCaller::Value); }
  // A zero-timeout poll over an own queued call never blocks, so it is no deadlock.
  bool PollOwnCall() {
    std::vector<AnyFuture> own = {CurrentWorker<SelfCaller>().Call(&SelfCaller::Value)};
    return Wait(own, {.timeout = absl::ZeroDuration()}).done.empty();
  }
  // Keeps an own call whose method returns `later`, a future someone else completes. Once that
  // call has run, waiting for its result waits for `later`, not for this worker's queue.
  void KeepOwnCallOf(Future<int> later) {
    kept_ = CurrentWorker<SelfCaller>().Call(&SelfCaller::Forward, std::move(later));
  }
  Future<int> Forward(Future<int> later) { return later; }
  // Waits briefly for the kept call's result, which `later` still holds back: a timeout, not an
  // error. Returns whether it is still pending.
  bool BrieflyWaitForKept() { return !kept_.Wait(absl::Milliseconds(1)); }
  int KeptResult() { return kept_.Result(); }

 private:
  Future<int> kept_;
};

class SelfWaitTest : public ::testing::TestWithParam<Mode> {};

TEST_P(SelfWaitTest, WaitingForOwnCallFailsAtOnceWithDeadlockError) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a worker waiting for its own call");
  auto w = Worker<SelfCaller>::Create({.mode = GetParam()});
  try {
    w.Call(&SelfCaller::WaitForOwnCall).Result();
    ADD_FAILURE() << "no error";
  } catch (const DeadlockError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("Future::Result: a worker's call is waiting for the result of "
                                    "another call to the same worker"));
  }
  EXPECT_THROW(w.Call(&SelfCaller::TimedWaitForOwnCall).Result(), DeadlockError);
  // The method returns the no-throw view's status, which the call's future carries.
  const absl::Status status = w.Call(&SelfCaller::OwnCallStatus).Status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("Future::Status"));
  EXPECT_THROW(w.Call(&SelfCaller::BlockingSelfCall).Result(), DeadlockError);
  EXPECT_THROW(w.Call(&SelfCaller::GatherOwnCalls).Result(), DeadlockError);
  EXPECT_THROW(w.Call(&SelfCaller::AsCompletedOverOwnCall).Result(), DeadlockError);
  // The worker is not wedged: it still answers, and a returned own call completes.
  EXPECT_EQ(w.Call(&SelfCaller::Value).Result(), 5);
  EXPECT_EQ(w.Call(&SelfCaller::ReturnOwnCall).Result(), 5);
}

TEST_P(SelfWaitTest, PollingAnOwnQueuedCallIsAllowed) {
  testkit::Watchdog watchdog(absl::Seconds(60), "polling an own call");
  auto w = Worker<SelfCaller>::Create({.mode = GetParam()});
  EXPECT_TRUE(w.Call(&SelfCaller::PollOwnCall).Result());
}

TEST_P(SelfWaitTest, WaitingForAnOwnCallThatAlreadyRanIsAllowed) {
  // The call ran and returned a Future that the test completes: its result no longer depends on
  // this worker's queue (before the fix: DeadlockError).
  testkit::Watchdog watchdog(absl::Seconds(60), "waiting for an own call that already ran");
  auto w = Worker<SelfCaller>::Create({.mode = GetParam(), .unwrap_futures = false});
  Promise<int> later;
  w.Call(&SelfCaller::KeepOwnCallOf, later.GetFuture()).Result();
  w.Call(&SelfCaller::Value).Result();  // Queued after Forward: Forward has run.
  try {
    EXPECT_TRUE(w.Call(&SelfCaller::BrieflyWaitForKept).Result());
  } catch (const DeadlockError& e) {
    ADD_FAILURE() << e.what();
  }
  later.SetValue(7);
  EXPECT_EQ(w.Call(&SelfCaller::KeptResult).Result(), 7);
}

TEST_P(SelfWaitTest, WaitingForTheFirstOfOwnAndAnotherWorkersCallIsAllowed) {
  testkit::Watchdog watchdog(absl::Seconds(60), "first of own and other call");
  auto w = Worker<SelfCaller>::Create({.mode = GetParam(), .unwrap_futures = false});
  auto other = Worker<SelfCaller>::Create({.mode = Mode::kThread});
  EXPECT_EQ(w.Call(&SelfCaller::FirstOfOwnAndOther, other.Call(&SelfCaller::Value)).Result(), 1u);
}

TEST_P(SelfWaitTest, WaitingForAnotherWorkerOfTheSameClassIsAllowed) {
  struct Asker {
    int Ask(Worker<SelfCaller> other) { return other.Call(&SelfCaller::Value).Result(); }
  };
  auto a = Worker<Asker>::Create({.mode = GetParam()});
  auto b = Worker<SelfCaller>::Create({.mode = GetParam()});
  EXPECT_EQ(a.Call(&Asker::Ask, b).Result(), 5);
}

INSTANTIATE_TEST_SUITE_P(Modes, SelfWaitTest,
                         ::testing::Values(Mode::kSync, Mode::kThread, Mode::kTbb),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return AbslUnparseFlag(info.param);
                         });

// --- CurrentWorker ---------------------------------------------------------------------------

std::atomic<int> self_holders_alive{0};

class SelfHolder {
 public:
  SelfHolder() { self_holders_alive.fetch_add(1); }
  ~SelfHolder() { self_holders_alive.fetch_sub(1); }
  void KeepSelf() { self_ = CurrentWorker<SelfHolder>(); }
  int Twice(int x) { return 2 * x; }
  // Calls itself through the stored handle, without waiting.
  Future<int> CallSelf(int x) { return self_.Call(&SelfHolder::Twice, x); }

 private:
  Worker<SelfHolder> self_;
};

TEST(CurrentWorkerTest, AWorkerHoldingItsOwnHandleStillStopsWhenOutsideHandlesAreGone) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a worker holding CurrentWorker");
  for (const Mode mode : {Mode::kSync, Mode::kThread, Mode::kTbb}) {
    Future<void> stopped;
    {
      auto w = Worker<SelfHolder>::Create({.mode = mode});
      w.Call(&SelfHolder::KeepSelf).Result();
      EXPECT_EQ(w.Call(&SelfHolder::CallSelf, 4).Result(), 8);
      stopped = w.StoppedFuture();
    }  // The last outside handle: the worker stops although its T holds a handle to it.
    stopped.Result();
    EXPECT_EQ(self_holders_alive.load(), 0) << AbslUnparseFlag(mode);
  }
}

class Lender {
 public:
  Worker<Lender> Lend() { return CurrentWorker<Lender>(); }
  int One() { return 1; }
};

TEST(CurrentWorkerTest, AHandleFromCurrentWorkerDoesNotKeepTheWorkerRunning) {
  Worker<Lender> borrowed;
  Future<void> stopped;
  {
    auto w = Worker<Lender>::Create({.mode = Mode::kThread});
    borrowed = w.Call(&Lender::Lend).Result();
    EXPECT_EQ(borrowed.Call(&Lender::One).Result(), 1);
    stopped = w.StoppedFuture();
  }  // The only owning handle: the worker stops although `borrowed` lives on.
  stopped.Result();
  EXPECT_TRUE(borrowed.stopped());
  EXPECT_THROW(borrowed.Call(&Lender::One).Result(), StoppedError);
}

TEST(CurrentWorkerTest, OutsideAWorkerOrForAnotherClassItSaysWhy) {
  try {
    CurrentWorker<SelfHolder>();
    ADD_FAILURE() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("CurrentWorker<T>() was called outside a worker"));
  }
  struct Other {
    std::string Try() {
      try {
        CurrentWorker<SelfHolder>();
      } catch (const InvalidOptionError& e) {
        return e.what();
      }
      return "no error";
    }
  };
  auto w = Worker<Other>::Create({.mode = Mode::kThread});
  EXPECT_THAT(w.Call(&Other::Try).Result(),
              HasSubstr("not a concurry::(anonymous namespace)::SelfHolder"));
  auto tasks = TaskWorker::Create({.mode = Mode::kThread});
  const std::string in_task = tasks
                                  .Submit([]() -> std::string {
                                    try {
                                      CurrentWorker<SelfHolder>();
                                    } catch (const InvalidOptionError& e) {
                                      return e.what();
                                    }
                                    return "no error";
                                  })
                                  .Result();
  EXPECT_THAT(in_task, HasSubstr("the calling worker runs tasks (a TaskWorker)"));
}

}  // namespace
}  // namespace concurry

// Mode::kProcess when the worker process dies: killed from outside, aborting, segfaulting, or
// dying in its constructor. Its running and queued calls fail with CrashedError saying how it
// ended, the handle reports the worker stopped, and a pool replaces the worker and keeps serving.

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pools/load_balancer.h"
#include "pools/pool_stats.h"
#include "testing/shared_gates.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace app {

// A worker that can die in every way a process can.
class Fragile {
 public:
  static constexpr int kAbortInConstructor = -1;

  explicit Fragile(int n) : n_(n) {
    if (n == kAbortInConstructor) std::abort();
  }
  int Add(int k) { return n_ += k; }
  int Pid() { return static_cast<int>(getpid()); }
  int Square(int k) { return k * k; }
  // Returns the pid once the test releases `gate`.
  int HoldPid(int gate) {
    concurry::testkit::SharedGates::Get().Hold(gate);
    return static_cast<int>(getpid());
  }
  // Aborts once the test releases `gate` (after it queued the calls that must fail with it).
  void Abort(int gate) {
    concurry::testkit::SharedGates::Get().Hold(gate);
    std::abort();
  }
  // A write through a null pointer the compiler cannot see, once the test releases `gate`: a
  // segfault (or, under the sanitizers, their report and an abort).
  void WriteNull(int gate) {
    concurry::testkit::SharedGates::Get().Hold(gate);
    int* volatile pointer = nullptr;
    *pointer = 1;
  }

 private:
  int n_;
};

}  // namespace app

CONCURRY_REGISTER_WORKER(app::Fragile, (int), Add, Pid, Square, HoldPid, Abort, WriteNull);

namespace concurry {
namespace {

using ::concurry::testkit::SharedGates;
using ::concurry::testkit::Watchdog;
using ::testing::AnyOf;
using ::testing::HasSubstr;

// The message of the CrashedError `f` failed with ("" and a test failure otherwise).
template <typename T>
std::string CrashMessage(const Future<T>& f) {
  try {
    f.Result();
  } catch (const CrashedError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a CrashedError: " << e.what();
    return "";
  }
  ADD_FAILURE() << "the call succeeded";
  return "";
}

class ProcessCrashTest : public ::testing::TestWithParam<ProcessStart> {
 protected:
  WorkerOptions Options() const { return {.mode = Mode::kProcess, .process_start = GetParam()}; }

  // Expects the worker to be stopped for good: StoppedFuture completes, stopped() is true, and a
  // later call fails with StoppedError saying how the process ended (`how_it_ended` matches it).
  template <typename Matcher>
  static void ExpectDead(const Worker<app::Fragile>& w, const Matcher& how_it_ended) {
    EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
    EXPECT_TRUE(w.stopped());
    try {
      w.Call(&app::Fragile::Add, 1).Result();
      ADD_FAILURE() << "a call to a dead worker succeeded";
    } catch (const StoppedError& e) {
      EXPECT_THAT(e.what(), HasSubstr("the worker is stopped: the worker process"));
      EXPECT_THAT(e.what(), how_it_ended);
    }
  }
};

TEST_P(ProcessCrashTest, KilledFromOutsideDuringACallFailsItAndTheQueuedCalls) {
  Watchdog watchdog(absl::Seconds(60), "a worker process killed during a call");
  auto w = Worker<app::Fragile>::Create(Options(), 0);
  const pid_t pid = w.Call(&app::Fragile::Pid).Result();
  ASSERT_NE(pid, getpid());
  const int gate = SharedGates::Get().Make();
  Future<int> running = w.Call(&app::Fragile::HoldPid, gate);
  SharedGates::Get().WaitEntered(gate);
  std::vector<Future<int>> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(w.Call(&app::Fragile::Add, 1));
  const absl::Time killed = absl::Now();
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  running.Wait();
  const absl::Duration to_failure = absl::Now() - killed;
  // The 100 ms target is measured in the benchmark; here a generous bound.
  EXPECT_LT(to_failure, absl::Seconds(1));
  const std::string message = CrashMessage(running);
  EXPECT_THAT(message, HasSubstr(absl::StrCat("the worker process ", pid, " (app::Fragile)")));
  EXPECT_THAT(message, HasSubstr("was killed by signal 9 (Killed)"));
  for (const Future<int>& f : queued) {
    EXPECT_THAT(CrashMessage(f), HasSubstr("was killed by signal 9"));
  }
  ExpectDead(w, HasSubstr("was killed by signal 9"));
}

TEST_P(ProcessCrashTest, AbortInAMethodFailsItAndTheQueuedCalls) {
  Watchdog watchdog(absl::Seconds(60), "a worker process that aborts");
  auto w = Worker<app::Fragile>::Create(Options(), 0);
  const int gate = SharedGates::Get().Make();
  Future<void> dies = w.Call(&app::Fragile::Abort, gate);
  SharedGates::Get().WaitEntered(gate);
  std::vector<Future<int>> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(w.Call(&app::Fragile::Add, 1));
  SharedGates::Get().Release(gate);
  EXPECT_THAT(CrashMessage(dies), HasSubstr("was killed by signal 6 (Aborted)"));
  for (const Future<int>& f : queued) EXPECT_THAT(CrashMessage(f), HasSubstr("signal 6"));
  ExpectDead(w, HasSubstr("was killed by signal 6 (Aborted)"));
}

TEST_P(ProcessCrashTest, SegfaultInAMethodFailsItAndTheQueuedCalls) {
#if defined(__SANITIZE_THREAD__)
  // With g++ 12's TSan a write through null does not end the process (the call returns; a
  // plain program built with -fsanitize=thread survives it too), so there is no segfault here.
  GTEST_SKIP() << "under TSan a null write does not end the process";
#endif
  Watchdog watchdog(absl::Seconds(60), "a worker process that segfaults");
  auto w = Worker<app::Fragile>::Create(Options(), 0);
  const int gate = SharedGates::Get().Make();
  Future<void> dies = w.Call(&app::Fragile::WriteNull, gate);
  SharedGates::Get().WaitEntered(gate);
  Future<int> queued = w.Call(&app::Fragile::Add, 1);
  SharedGates::Get().Release(gate);
  // SIGSEGV; under ASan or UBSan their report, then an abort (abort_on_error) or exit(1).
  const auto how_it_ended =
      AnyOf(HasSubstr("was killed by signal 11 (Segmentation fault)"),
            HasSubstr("was killed by signal 6"), HasSubstr("exited with status"));
  EXPECT_THAT(CrashMessage(dies), how_it_ended);
  EXPECT_THAT(CrashMessage(queued), how_it_ended);
  ExpectDead(w, how_it_ended);
}

TEST_P(ProcessCrashTest, DeathInTheConstructorFailsCreate) {
  Watchdog watchdog(absl::Seconds(60), "a worker process that dies in its constructor");
  try {
    Worker<app::Fragile>::Create(Options(), app::Fragile::kAbortInConstructor);
    FAIL() << "no error";
  } catch (const CrashedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("(app::Fragile) was killed by signal 6 (Aborted)"));
  }
  Future<Worker<app::Fragile>> created =
      Worker<app::Fragile>::CreateAsync(Options(), app::Fragile::kAbortInConstructor);
  EXPECT_THAT(CrashMessage(created), HasSubstr("signal 6"));
  // Nothing is left broken: the next worker starts and serves.
  EXPECT_EQ(Worker<app::Fragile>::Create(Options(), 1).Call(&app::Fragile::Add, 1).Result(), 2);
}

INSTANTIATE_TEST_SUITE_P(Starts, ProcessCrashTest,
                         ::testing::Values(ProcessStart::kForkServer, ProcessStart::kFork),
                         [](const ::testing::TestParamInfo<ProcessStart>& info) {
                           return AbslUnparseFlag(info.param);
                         });

// ---- Pools of process workers, under every balancer ------------------------------------------

class ProcessPoolTest : public ::testing::TestWithParam<LoadBalancing> {
 protected:
  static constexpr int kWorkers = 3;

  Worker<app::Fragile> MakePool() const {
    return Worker<app::Fragile>::Create(
        {.mode = Mode::kProcess, .max_workers = kWorkers, .load_balancing = GetParam()}, 0);
  }

  // Waits (bounded) until the pool has replaced `replaced` workers and every worker is alive
  // (built in its process: until then the pool sends calls to the others). No event reports
  // that to a caller.
  static void WaitUntilAlive(const Worker<app::Fragile>& pool, int replaced) {
    const absl::Time until = absl::Now() + absl::Seconds(30);
    for (PoolStats now = pool.GetPoolStats();
         (now.replaced_workers < replaced || now.total_workers < kWorkers) && absl::Now() < until;
         now = pool.GetPoolStats()) {
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  // The pids of the workers that answer `n` calls, made together. Every balancer but kRandom
  // puts the first kWorkers calls on distinct workers, since each call holds its worker until
  // all are in; kRandom spreads n = 90 calls over 3 workers all but surely (miss: 3 (2/3)^90).
  static std::set<int> Pids(const Worker<app::Fragile>& pool, int n) {
    std::vector<int> gates;
    std::vector<Future<int>> held;
    for (int i = 0; i < n; ++i) {
      gates.push_back(SharedGates::Get().Make());
      held.push_back(pool.Call(&app::Fragile::HoldPid, gates.back()));
    }
    for (int gate : gates) SharedGates::Get().Release(gate);
    std::set<int> pids;
    for (const Future<int>& f : held) pids.insert(f.Result());
    return pids;
  }
};

TEST_P(ProcessPoolTest, SpreadsCallsAndReplacesAKilledWorker) {
  Watchdog watchdog(absl::Seconds(120), "a pool of process workers");
  Worker<app::Fragile> pool = MakePool();
  WaitUntilAlive(pool, /*replaced=*/0);
  const int n = GetParam() == LoadBalancing::kRandom ? 90 : kWorkers;
  const std::set<int> pids = Pids(pool, n);
  // Every balancer sees the held calls: a call sent to a process counts as active until its
  // reply (so kLeastActiveLoad gives each held worker's successor the next call).
  ASSERT_EQ(pids.size(), kWorkers) << "the calls reached every worker";
  EXPECT_EQ(pids.count(getpid()), 0);

  // Results are right, whichever worker answers.
  std::vector<Future<int>> squares;
  for (int i = 0; i < 30; ++i) squares.push_back(pool.Call(&app::Fragile::Square, i));
  for (int i = 0; i < 30; ++i) EXPECT_EQ(squares[i].Result(), i * i);

  // Kill one worker's process: the pool notices and replaces it.
  const int victim = *pids.begin();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  WaitUntilAlive(pool, /*replaced=*/1);
  const PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.replaced_workers, 1);
  EXPECT_EQ(stats.total_workers, kWorkers);

  // Later calls succeed, on three live workers, none of them the killed one.
  const std::set<int> after = Pids(pool, n);
  EXPECT_EQ(after.size(), kWorkers);
  EXPECT_EQ(after.count(victim), 0);
  std::vector<Future<int>> more;
  for (int i = 0; i < 30; ++i) more.push_back(pool.Call(&app::Fragile::Pid));
  for (const Future<int>& f : more) EXPECT_NE(f.Result(), victim);
  EXPECT_TRUE(pool.Stop(absl::Seconds(30)));
}

INSTANTIATE_TEST_SUITE_P(Balancers, ProcessPoolTest,
                         ::testing::Values(LoadBalancing::kRoundRobin,
                                           LoadBalancing::kLeastActiveLoad,
                                           LoadBalancing::kLeastTotalLoad, LoadBalancing::kRandom),
                         [](const ::testing::TestParamInfo<LoadBalancing>& info) {
                           return AbslUnparseFlag(info.param);
                         });

}  // namespace
}  // namespace concurry

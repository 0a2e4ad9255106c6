// Mode::kProcess: what only a worker in another process has (its own address space, crashes,
// the transport); the contract shared with every mode is in //workers:worker_test.

#include <signal.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace app {

class Echo {
 public:
  explicit Echo(int base) : base_(base) {}
  int Add(int k) { return base_ += k; }
  int Pid() { return static_cast<int>(getpid()); }
  std::string Reflect(std::string s) { return s; }
  void Throw(std::string message) { throw std::out_of_range(message); }
  void Die() { raise(SIGKILL); }
  void Sleep(int ms) { absl::SleepFor(absl::Milliseconds(ms)); }

 private:
  int base_;
};

}  // namespace app

CONCURRY_REGISTER_WORKER(app::Echo, (int), Add, Pid, Reflect, Throw, Die, Sleep);

namespace concurry {
namespace {

using ::testing::HasSubstr;

class ProcessWorkerTest : public ::testing::TestWithParam<ProcessStart> {
 protected:
  WorkerOptions Options() { return {.mode = Mode::kProcess, .process_start = GetParam()}; }
};

TEST_P(ProcessWorkerTest, RunsInAnotherProcessAndKeepsState) {
  auto w = Worker<app::Echo>::Create(Options(), 10);
  EXPECT_NE(w.Call(&app::Echo::Pid).Result(), getpid());
  EXPECT_EQ(w.Call(&app::Echo::Add, 5).Result(), 15);
  EXPECT_EQ(w.Call(&app::Echo::Add, 1).Result(), 16);
  EXPECT_EQ(w.Call(&app::Echo::Reflect, std::string("hi")).Result(), "hi");
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(ProcessWorkerTest, RebuildsExceptions) {
  auto w = Worker<app::Echo>::Create(Options(), 0);
  EXPECT_THROW(w.Call(&app::Echo::Throw, std::string("boom")).Result(), std::out_of_range);
  EXPECT_EQ(w.Call(&app::Echo::Add, 1).Result(), 1);
}

TEST_P(ProcessWorkerTest, ACrashFailsCallsWithCrashedError) {
  auto w = Worker<app::Echo>::Create(Options(), 0);
  Future<void> dies = w.Call(&app::Echo::Die);
  Future<int> after = w.Call(&app::Echo::Add, 1);
  try {
    dies.Result();
    FAIL() << "no error";
  } catch (const CrashedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("killed by signal 9"));
  }
  EXPECT_THROW(after.Result(), CrashedError);
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
  // The handle says the worker is dead, and why.
  EXPECT_TRUE(w.stopped());
  EXPECT_THAT(w.Stats().error, HasSubstr("killed by signal 9"));
  // A later call: StoppedError, saying why.
  try {
    w.Call(&app::Echo::Add, 1).Result();
    FAIL() << "no error";
  } catch (const StoppedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("the worker is stopped: the worker process"));
    EXPECT_THAT(e.what(), HasSubstr("killed by signal 9"));
  }
}

TEST_P(ProcessWorkerTest, PipelinesManyCalls) {
  auto w = Worker<app::Echo>::Create(Options(), 0);
  std::vector<Future<int>> results;
  for (int i = 0; i < 10000; ++i) results.push_back(w.Call(&app::Echo::Add, 1));
  EXPECT_EQ(results.back().Result(), 10000);
}

TEST_P(ProcessWorkerTest, AFinishedCallsReplyDoesNotWaitForTheNextCall) {
  auto w = Worker<app::Echo>::Create(Options(), 0);
  Future<int> quick = w.Call(&app::Echo::Add, 1);
  Future<void> slow = w.Call(&app::Echo::Sleep, 3000);
  // Both were sent at once; the process answers the first before it starts the second.
  EXPECT_TRUE(quick.Wait(absl::Seconds(2)));
  EXPECT_FALSE(slow.Done());
  EXPECT_EQ(quick.Result(), 1);
}

TEST_P(ProcessWorkerTest, StopTerminatesABusyProcessAtItsDeadline) {
  auto w = Worker<app::Echo>::Create(Options(), 0);
  const pid_t pid = w.Call(&app::Echo::Pid).Result();
  Future<void> sleeping = w.Call(&app::Echo::Sleep, 60000);
  // 64 MB that the busy process does not read: the worker's own thread blocks writing them.
  Future<std::string> big = w.Call(&app::Echo::Reflect, std::string(64 << 20, 'x'));
  // Until the worker's thread has taken the big call from its queue (and is writing it); the
  // assertions below hold either way, this only makes the blocked writer the case tested.
  const absl::Time taken_by = absl::Now() + absl::Seconds(10);
  while (w.Stats().queued > 0 && absl::Now() < taken_by) absl::SleepFor(absl::Milliseconds(1));
  const absl::Time start = absl::Now();
  EXPECT_FALSE(w.Stop(absl::Milliseconds(200)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
  EXPECT_THROW(sleeping.Result(), StoppedError);
  EXPECT_NE(big.Error(), nullptr);
  EXPECT_EQ(kill(pid, 0), -1);  // Gone (and reaped: a zombie would still answer).
}

INSTANTIATE_TEST_SUITE_P(Starts, ProcessWorkerTest,
                         ::testing::Values(ProcessStart::kForkServer, ProcessStart::kFork),
                         [](const ::testing::TestParamInfo<ProcessStart>& info) {
                           return AbslUnparseFlag(info.param);
                         });

}  // namespace
}  // namespace concurry

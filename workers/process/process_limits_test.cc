// Limits given to process workers are shared across their processes: the worker processes act
// on the same process-shared LimitSet as the program.

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace app {

// Counters in memory shared with every process forked from this one after start-up: the fork
// server is forked in main, after static initialization, so its workers share this page.
struct Shared {
  std::atomic<int> running{0};
  std::atomic<int> most_running{0};
  std::atomic<int> finished{0};
};
Shared* const shared = [] {
  void* page =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return new (page) Shared();
}();

class Runner {
 public:
  Runner() = default;
  // Runs `tasks` tasks of `ms` milliseconds at once, each holding one "slots" unit.
  int Run(int tasks, int ms) {
    std::vector<std::thread> threads;
    for (int i = 0; i < tasks; ++i) {
      threads.emplace_back([ms] {
        concurry::LimitAcquisition slot = concurry::CurrentWorkerLimits().Acquire({{"slots", 1}});
        const int now = shared->running.fetch_add(1) + 1;
        int most = shared->most_running.load();
        while (now > most && !shared->most_running.compare_exchange_weak(most, now)) {
        }
        absl::SleepFor(absl::Milliseconds(ms));
        shared->running.fetch_sub(1);
        shared->finished.fetch_add(1);
      });
    }
    for (std::thread& thread : threads) thread.join();
    return tasks;
  }
  // Takes `n` slots and keeps them (the process is then killed holding them).
  int Hold(int n) {
    held_.push_back(concurry::CurrentWorkerLimits().Acquire({{"slots", static_cast<double>(n)}}));
    return n;
  }
  int Pid() { return static_cast<int>(getpid()); }

 private:
  std::vector<concurry::LimitAcquisition> held_;
};

}  // namespace app

CONCURRY_REGISTER_WORKER(app::Runner, (), Run, Hold, Pid);

namespace concurry {
namespace {

using ::testing::HasSubstr;

TEST(ProcessLimitsTest, AResourceLimitIsSharedByTheWorkersProcesses) {
  testkit::Watchdog watchdog(absl::Seconds(60), "process workers sharing a ResourceLimit");
  LimitSet slots =
      LimitSet::Create({ResourceLimit("slots", 3)}, {.sharing = LimitSharing::kProcesses});
  auto a = Worker<app::Runner>::Create({.mode = Mode::kProcess, .limits = slots});
  auto b = Worker<app::Runner>::Create({.mode = Mode::kProcess, .limits = slots});
  app::shared->most_running = 0;
  app::shared->finished = 0;
  const absl::Time start = absl::Now();
  // Six one-second tasks, three in each process, for three slots: three at once, twice.
  Future<int> ran_a = a.Call(&app::Runner::Run, 3, 1000);
  Future<int> ran_b = b.Call(&app::Runner::Run, 3, 1000);
  EXPECT_EQ(ran_a.Result() + ran_b.Result(), 6);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(app::shared->finished.load(), 6);
  EXPECT_EQ(app::shared->most_running.load(), 3);
  EXPECT_GE(took, absl::Milliseconds(1990));
  EXPECT_LT(took, absl::Seconds(4));
  // The program's own view of the set is the same state: everything is free again.
  EXPECT_TRUE(slots.TryAcquire({{"slots", 3}}).has_value());
}

TEST(ProcessLimitsTest, UnitsHeldByAKilledWorkerComeBack) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a killed process worker holding units");
  LimitSet slots = LimitSet::Create(
      {ResourceLimit("slots", 3)},
      {.sharing = LimitSharing::kProcesses, .lease_check_interval = absl::Milliseconds(20)});
  auto w = Worker<app::Runner>::Create({.mode = Mode::kProcess, .limits = slots});
  EXPECT_EQ(w.Call(&app::Runner::Hold, 2).Result(), 2);
  EXPECT_FALSE(slots.TryAcquire({{"slots", 2}}).has_value());
  kill(w.Call(&app::Runner::Pid).Result(), SIGKILL);
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
  // A blocked acquirer finds the dead holder and takes its units back.
  LimitAcquisition all = slots.Acquire({{"slots", 3}}, absl::Seconds(10));
  EXPECT_EQ(slots.Stats().recovered_holders, 1);
}

TEST(ProcessLimitsTest, AListOfLimitsBecomesOneSetSharedByAPoolsProcesses) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a pool of process workers with limits");
  auto pool = Worker<app::Runner>::Create(
      {.mode = Mode::kProcess, .max_workers = 2, .limits = {ResourceLimit("slots", 2)}});
  app::shared->most_running = 0;
  Future<int> x = pool.Call(&app::Runner::Run, 2, 300);
  Future<int> y = pool.Call(&app::Runner::Run, 2, 300);
  EXPECT_EQ(x.Result() + y.Result(), 4);
  EXPECT_EQ(app::shared->most_running.load(), 2);
}

TEST(ProcessLimitsTest, ASetForThreadsOnlyIsRejectedAtCreate) {
  LimitSet threads_only = LimitSet::Create({ResourceLimit("slots", 3)});
  try {
    Worker<app::Runner>::Create({.mode = Mode::kProcess, .limits = threads_only});
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("LimitSharing::kProcesses"));
  }
}

}  // namespace
}  // namespace concurry

// A pool whose workers die: a backend defined here (for Mode::kRemote, which has none of its own
// in this version) drains on a ManualExecutor and can crash a worker the way a dead process or
// host will, by abandoning its actor with a CrashedError. The pool code is the same for every
// mode, so this is how process and remote pools will behave when a worker dies.

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pools/load_balancer.h"
#include "pools/pool_stats.h"
#include "testing/manual_executor.h"
#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using ::concurry::testkit::ManualExecutor;
using ::testing::HasSubstr;

ManualExecutor& Drains() {
  static auto* const executor = new ManualExecutor();
  return *executor;
}

class CrashableActor final : public workers_internal::ActorCore {
 public:
  using ActorCore::ActorCore;
  // What the backend does when the worker's process or host dies.
  void Crash() { Abandon(std::make_exception_ptr(CrashedError("the worker's process died"))); }

 protected:
  void Schedule() override {
    Drains().Submit([self = shared_from_this(), this] { Drain(kNoBudget); });
  }
};

// Set to make the backend fail to make workers (no process could be started).
std::atomic<bool> fail_make_actor{false};

absl::Mutex actors_mu;
std::vector<std::shared_ptr<CrashableActor>>& Actors() {
  static auto* const actors = new std::vector<std::shared_ptr<CrashableActor>>();
  return *actors;
}

class CrashableBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kRemote; }
  std::shared_ptr<workers_internal::ActorCore> MakeActor(
      const ResolvedWorkerOptions& options) const override {
    if (fail_make_actor) throw CrashedError("CrashableBackend: cannot start a worker process");
    auto actor = std::make_shared<CrashableActor>(options, *this);
    absl::MutexLock lock(&actors_mu);
    Actors().push_back(actor);
    return actor;
  }
};

}  // namespace
}  // namespace concurry

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::CrashableBackend)

namespace concurry {
namespace {

bool fail_construction = false;

class Counter {
 public:
  Counter() {
    if (fail_construction) throw std::runtime_error("Counter: no connection");
  }
  int Count() { return ++n_; }

 private:
  int n_ = 0;
};

CrashableActor& ActorNumber(size_t i) {
  absl::MutexLock lock(&actors_mu);
  return *Actors().at(i);
}

size_t NumActors() {
  absl::MutexLock lock(&actors_mu);
  return Actors().size();
}

TEST(PoolCrashTest, ACrashedWorkerIsReplacedAndItsCallsFailWithTheCrash) {
  Future<Worker<Counter>> creating =
      Worker<Counter>::CreateAsync({.mode = Mode::kRemote, .max_workers = 2});
  Drains().RunAll();
  Worker<Counter> pool = creating.Result();
  // Round robin: calls 0 and 2 on worker 0, 1 and 3 on worker 1; none has run yet.
  std::vector<Future<int>> calls;
  for (int i = 0; i < 4; ++i) calls.push_back(pool.Call(&Counter::Count));
  ActorNumber(0).Crash();
  EXPECT_THROW(calls[0].Result(), CrashedError);
  EXPECT_THROW(calls[2].Result(), CrashedError);
  Drains().RunAll();  // The replacement's construction and worker 1's calls.
  EXPECT_EQ(calls[1].Result(), 1);
  EXPECT_EQ(calls[3].Result(), 2);
  PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.replaced_workers, 1);
  EXPECT_EQ(stats.total_workers, 2);
  EXPECT_EQ(pool.GetWorkerStats(0).restarts, 1);
  EXPECT_THAT(stats.load_balancer.active_calls, ::testing::ElementsAre(0, 0));
  // The pool keeps serving; the new worker 0 has a fresh Counter.
  Future<int> next = pool.Call(&Counter::Count);
  Drains().RunAll();
  EXPECT_EQ(next.Result(), 1);

  // A replacement whose constructor throws leaves its slot dead; the other worker serves.
  fail_construction = true;
  ActorNumber(1).Crash();
  Drains().RunAll();
  EXPECT_FALSE(pool.GetWorkerStats(1).alive);
  EXPECT_THAT(pool.GetWorkerStats(1).error, HasSubstr("Counter: no connection"));
  EXPECT_EQ(pool.GetPoolStats().total_workers, 1);
  std::vector<Future<int>> more;
  for (int i = 0; i < 3; ++i) more.push_back(pool.Call(&Counter::Count));
  Drains().RunAll();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(more[i].Result(), 2 + i) << "all on worker 0";

  // With no live worker left, calls fail with CrashedError naming why.
  ActorNumber(2).Crash();  // Worker 0's replacement (actor 3 was worker 1's, which failed).
  Drains().RunAll();
  try {
    pool.Call(&Counter::Count).Result();
    FAIL() << "expected CrashedError";
  } catch (const CrashedError& error) {
    EXPECT_THAT(error.what(), HasSubstr("no live worker"));
    EXPECT_THAT(error.what(), HasSubstr("worker 1: Counter: no connection"));
  }
  fail_construction = false;
  pool.Stop(absl::ZeroDuration());
  Drains().RunAll();
  EXPECT_TRUE(pool.StoppedFuture().Done());
}

TEST(PoolCrashTest, LeastActiveRoutesAroundADeadSlot) {
  Future<Worker<Counter>> creating = Worker<Counter>::CreateAsync(
      {.mode = Mode::kRemote, .max_workers = 2, .load_balancing = LoadBalancing::kLeastActiveLoad});
  Drains().RunAll();
  Worker<Counter> pool = creating.Result();
  const size_t first = NumActors() - 2;
  // Worker 0 dies and its replacement cannot be made: slot 0 is dead, yet it looks idle.
  fail_make_actor = true;
  ActorNumber(first).Crash();
  fail_make_actor = false;
  EXPECT_THAT(pool.GetWorkerStats(0).error, HasSubstr("cannot start a worker process"));
  std::vector<Future<int>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(pool.Call(&Counter::Count));
  Drains().RunAll();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(calls[i].Result(), i + 1) << "all on worker 1";
  EXPECT_EQ(pool.GetWorkerStats(1).total_calls, 5);
  pool.Stop(absl::ZeroDuration());
  Drains().RunAll();
}

TEST(PoolCrashTest, ASharedQueuePoolWithNoWorkerLeftFailsItsCalls) {
  std::thread runner([] {
    for (int i = 0; i < 2; ++i) {
      Drains().BlockUntilPending(1);
      Drains().RunOne();
    }
  });
  TaskWorker pool = TaskWorker::Create({.mode = Mode::kRemote, .max_workers = 2});
  runner.join();
  const size_t first = NumActors() - 2;
  // Each worker holds a task (not run yet); a third waits in the pool.
  Future<int> a = pool.Submit([] { return 1; });
  Future<int> b = pool.Submit([] { return 2; });
  Future<int> waiting = pool.Submit([] { return 3; });
  EXPECT_EQ(pool.GetPoolStats().queued_in_pool, 1);
  // Both die and neither can be replaced: the waiting task fails rather than waiting for ever.
  fail_make_actor = true;
  ActorNumber(first).Crash();
  ActorNumber(first + 1).Crash();
  EXPECT_THROW(a.Result(), CrashedError);
  EXPECT_THROW(b.Result(), CrashedError);
  try {
    waiting.Result();
    FAIL() << "expected CrashedError";
  } catch (const CrashedError& error) {
    EXPECT_THAT(error.what(), HasSubstr("no live worker"));
    EXPECT_THAT(error.what(), HasSubstr("cannot start a worker process"));
  }
  EXPECT_THROW(pool.Submit([] { return 4; }).Result(), CrashedError);
  fail_make_actor = false;
  pool.Stop(absl::ZeroDuration());
  Drains().RunAll();
  EXPECT_TRUE(pool.StoppedFuture().Done());
}

TEST(PoolCrashTest, AnOnDemandWorkerWhoseConstructorFailsFailsItsCall) {
  Worker<Counter> pool = Worker<Counter>::Create({.mode = Mode::kRemote, .on_demand = true});
  fail_construction = true;
  Future<int> call = pool.Call(&Counter::Count);
  Drains().RunAll();
  try {
    call.Result();
    FAIL() << "expected the constructor's error";
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "Counter: no connection");
  }
  fail_construction = false;
  Future<int> next = pool.Call(&Counter::Count);
  Drains().RunAll();
  EXPECT_EQ(next.Result(), 1);
  EXPECT_EQ(pool.GetPoolStats().on_demand_active, 0);
}

}  // namespace
}  // namespace concurry

// Worker pools through the public handles: routing, statistics, work conservation, Map, limits,
// on-demand workers, bounded submission, Stop, deaths. Exact expectations come from tbb-mode pools
// on a ManualExecutor (every drain runs when and where the test says) and a FakeClock; the rest
// run on real threads with watchdogs instead of sleeps.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "pools/load_balancer.h"
#include "pools/pool_stats.h"
#include "sync/gather.h"
#include "sync/stream.h"
#include "testing/error_message.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"
#include "testing/watchdog.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using ::concurry::testkit::FakeClock;
using ::concurry::testkit::InvalidOptionMessage;
using ::concurry::testkit::ManualExecutor;
using ::concurry::testkit::Watchdog;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs `create` while a helper thread runs the `drains` construction drains it queues on
// `executor` (Create waits for the workers' constructors).
template <typename F>
auto CreateOn(ManualExecutor& executor, int drains, F create) {
  std::thread runner([&] {
    for (int i = 0; i < drains; ++i) {
      executor.BlockUntilPending(1);
      executor.RunOne();
    }
  });
  auto handle = create();
  runner.join();
  return handle;
}

// Stops a pool whose workers drain on `executor`, running their stop messages.
template <typename Handle>
void StopOn(ManualExecutor& executor, const Handle& pool) {
  pool.Stop(absl::ZeroDuration());
  executor.RunAll();
  EXPECT_TRUE(pool.StoppedFuture().Done());
}

// Waits in a library wait, so that a tbb worker blocked here gets a thread added.
void WaitFor(absl::Mutex& mu, const std::function<bool()>& condition) {
  const auto check = [&] { return condition(); };
  EXPECT_TRUE(Clock::Real().AwaitWithDeadline(&mu, absl::Condition(&check),
                                              absl::Now() + absl::Seconds(30)))
      << "timed out";
}

// Fails the test instead of hanging: waits up to 30 s for `condition`.
template <typename F>
bool Eventually(F condition) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class Counter {
 public:
  Counter() = default;
  explicit Counter(int start) : n_(start) {}
  int Count() { return ++n_; }
  int Add(int k) { return n_ += k; }
  // Blocks until `release` completes (after telling `started`). A library wait: a tbb worker
  // blocked here gets a thread added.
  int Slow(absl::Notification* started, Future<void>* release) {
    started->Notify();
    release->Wait();
    return -1;
  }
  // Whether the pool's shared limits still allow a call.
  bool TryCall() { return CurrentWorkerLimits().TryAcquire().has_value(); }
  int64_t LimitWorkerIndex() { return CurrentWorkerLimits().Stats().worker_index; }
  // Stops this worker from inside (a death the pool must repair).
  void StopSelf() { CurrentWorker<Counter>().Stop(absl::ZeroDuration()); }

 private:
  int n_ = 0;
};

class PoolTest : public ::testing::TestWithParam<Mode> {};

INSTANTIATE_TEST_SUITE_P(Modes, PoolTest,
                         ::testing::Values(Mode::kThread, Mode::kTbb, Mode::kCoroutine),
                         [](const auto& info) { return AbslUnparseFlag(info.param); });

TEST_P(PoolTest, RoundRobinGivesEachWorkerItsOwnState) {
  auto pool = BlockingWorker<Counter>::Create({.mode = GetParam(), .max_workers = 3});
  EXPECT_TRUE(pool.is_pool());
  std::vector<int> counts;
  for (int i = 0; i < 9; ++i) counts.push_back(pool.Call(&Counter::Count));
  EXPECT_THAT(counts, ElementsAre(1, 1, 1, 2, 2, 2, 3, 3, 3));
  EXPECT_TRUE(pool.Stop());
  const PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.load_balancer.algorithm, "RoundRobin");
  EXPECT_EQ(stats.load_balancer.total_dispatched, 9);
  EXPECT_THAT(stats.load_balancer.total_calls, ElementsAre(3, 3, 3));
  EXPECT_THAT(stats.load_balancer.active_calls, ElementsAre(0, 0, 0));
  EXPECT_EQ(stats.max_workers, 3);
  EXPECT_FALSE(stats.on_demand);
  EXPECT_TRUE(stats.stopped);
  EXPECT_EQ(stats.total_workers, 0);
  EXPECT_EQ(pool.GetWorkerStats(2).total_calls, 3);
}

TEST_P(PoolTest, CallsWorkAsOnOneWorker) {
  auto pool = Worker<Counter>::Create({.mode = GetParam(), .max_workers = 2}, 100);
  // Constructor arguments are copied into each worker; futures are unwrapped.
  Future<int> a = pool.Call(&Counter::Add, 1);
  Future<int> b = pool.Call(&Counter::Add, a);  // Runs once `a` is done: 100 + 101.
  EXPECT_EQ(a.Result(), 101);
  EXPECT_EQ(b.Result(), 201);
  // The same pool with calls that return values.
  EXPECT_EQ(pool.Blocking().Call(&Counter::Add, 0), 101);
  // A TaskWorker pool is an Executor.
  TaskWorker tasks = MakeExecutor({.mode = GetParam(), .max_workers = 2});
  EXPECT_EQ(Async(tasks, [] { return 7; }).Result(), 7);
  EXPECT_EQ(tasks.Submit([](int x) { return x * 2; }, a).Result(), 202);
}

TEST_P(PoolTest, StatsOfAWorkerIndexOutsideThePoolAreAClearError) {
  auto pool = Worker<Counter>::Create({.mode = GetParam(), .max_workers = 2});
  EXPECT_THAT(InvalidOptionMessage([&] { pool.GetWorkerStats(2); }),
              HasSubstr("worker index 2 is out of range; allowed: 0 to 1"));
  EXPECT_THAT(InvalidOptionMessage([&] { pool.GetWorkerStats(-1); }),
              HasSubstr("worker index -1 is out of range"));
  auto one = Worker<Counter>::Create({.mode = GetParam()});
  EXPECT_FALSE(one.is_pool());
  EXPECT_THAT(InvalidOptionMessage([&] { one.GetPoolStats(); }),
              HasSubstr("this handle is one worker, not a pool"));
}

TEST(PoolOptionsTest, BadPoolOptionsAreClearErrors) {
  EXPECT_THAT(InvalidOptionMessage(
                  [] { Worker<Counter>::Create({.mode = Mode::kSync, .max_workers = 4}); }),
              HasSubstr("mode sync runs every call in the caller's thread, so it cannot form a "
                        "pool (max_workers is 4)"));
  EXPECT_THAT(
      InvalidOptionMessage([] { TaskWorker::Create({.mode = Mode::kSync, .on_demand = true}); }),
      HasSubstr("cannot form a pool"));
  EXPECT_THAT(InvalidOptionMessage(
                  [] { Worker<Counter>::Create({.mode = Mode::kThread, .max_workers = 0}); }),
              HasSubstr("max_workers for mode thread is 0; allowed: 1 to 65536"));
  EXPECT_THAT(InvalidOptionMessage(
                  [] { Worker<Counter>::Create({.mode = Mode::kThread, .max_workers = 1 << 30}); }),
              HasSubstr("is 1073741824; allowed: 1 to 65536"));
  EXPECT_THAT(
      InvalidOptionMessage([] {
        TaskWorker::Create({.mode = Mode::kThread, .on_demand_keepalive = absl::Seconds(1)});
      }),
      HasSubstr("on_demand_keepalive is set but on_demand is not"));
  EXPECT_THAT(
      InvalidOptionMessage([] {
        TaskWorker::Create(
            {.mode = Mode::kThread, .on_demand = true, .on_demand_keepalive = absl::Seconds(-1)});
      }),
      HasSubstr("on_demand_keepalive is -1s; allowed: >= 0"));
  EXPECT_THAT(
      InvalidOptionMessage([] {
        TaskWorker::Create(
            {.mode = Mode::kThread, .on_demand = true, .load_balancing = LoadBalancing::kRandom});
      }),
      HasSubstr("load_balancing is set on an on-demand pool"));
  EXPECT_THAT(InvalidOptionMessage([] {
                TaskWorker::Create({.mode = Mode::kThread,
                                    .max_workers = 2,
                                    .load_balancing = static_cast<LoadBalancing>(9)});
              }),
              HasSubstr("load_balancing: unknown value 9"));
  EXPECT_THAT(InvalidOptionMessage([] {
                Worker<Counter>::Create(
                    {.mode = Mode::kThread, .load_balancing = LoadBalancing::kLeastActiveLoad});
              }),
              HasSubstr("load_balancing is set but max_workers is 1, which makes one worker"));
  // Each worker gets its own copy of the constructor arguments.
  EXPECT_THAT(InvalidOptionMessage([] {
                struct Owner {
                  explicit Owner(std::unique_ptr<int> p) : p_(std::move(p)) {}
                  std::unique_ptr<int> p_;
                };
                Worker<Owner>::Create({.mode = Mode::kThread, .max_workers = 2},
                                      std::make_unique<int>(1));
              }),
              HasSubstr("one of them cannot be copied"));
}

TEST(PoolOptionsTest, ConcurryNamesSelectTheBalancer) {
  for (const auto& [name, expected] :
       std::vector<std::pair<std::string, std::string>>{{"rr", "RoundRobin"},
                                                        {"active", "LeastActiveLoad"},
                                                        {"least_total", "LeastTotalLoad"},
                                                        {"random", "Random"}}) {
    LoadBalancing balancing;
    std::string error;
    ASSERT_TRUE(AbslParseFlag(name, &balancing, &error)) << error;
    auto pool = Worker<Counter>::Create(
        {.mode = Mode::kTbb, .max_workers = 2, .load_balancing = balancing});
    EXPECT_EQ(pool.GetPoolStats().load_balancer.algorithm, expected);
  }
}

// A balancer of one's own: always the last worker.
class LastWorker final : public LoadBalancer {
 public:
  explicit LastWorker(int n) : n_(n) {}
  int Pick() override {
    ++picks_;
    return n_ - 1;
  }
  void RecordComplete(int) override {}
  LoadBalancerStats Stats() const override {
    return {.algorithm = "LastWorker", .total_dispatched = picks_.load()};
  }
  int num_workers() const override { return n_; }

 private:
  const int n_;
  std::atomic<int64_t> picks_{0};
};

TEST(PoolOptionsTest, AUserBalancerPicksTheWorkers) {
  auto pool = BlockingWorker<Counter>::Create(
      {.mode = Mode::kThread, .max_workers = 3, .make_balancer = [](int n) {
         return std::make_unique<LastWorker>(n);
       }});
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(pool.Call(&Counter::Count), i);
  EXPECT_TRUE(pool.Stop());
  const PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.load_balancer.algorithm, "LastWorker");
  EXPECT_EQ(stats.load_balancer.total_dispatched, 3);
  EXPECT_THAT(stats.load_balancer.total_calls, ElementsAre(0, 0, 3));
  // A balancer over the wrong number of workers, or none, is refused at creation.
  EXPECT_THAT(
      InvalidOptionMessage([] {
        Worker<Counter>::Create({.mode = Mode::kThread, .max_workers = 3, .make_balancer = [](int) {
                                   return std::make_unique<LastWorker>(2);
                                 }});
      }),
      HasSubstr("make_balancer made a balancer over 2 workers for a pool of 3"));
  EXPECT_THAT(InvalidOptionMessage([] {
                Worker<Counter>::Create(
                    {.mode = Mode::kThread,
                     .max_workers = 3,
                     .load_balancing = LoadBalancing::kRandom,
                     .make_balancer = [](int n) { return std::make_unique<LastWorker>(n); }});
              }),
              HasSubstr("both load_balancing and make_balancer are set"));
}

TEST(PoolOptionsTest, AFailingConstructorFailsCreationAndStopsThePool) {
  struct Picky {
    explicit Picky(int x) {
      if (x < 0) throw std::invalid_argument("Picky: negative");
    }
  };
  try {
    Worker<Picky>::Create({.mode = Mode::kThread, .max_workers = 3}, -1);
    FAIL() << "expected the constructor's error";
  } catch (const std::invalid_argument& error) {
    EXPECT_STREQ(error.what(), "Picky: negative");
  }
}

// The seed's mixed workload: one slow call, then fast ones, on 3 workers. Drains run on a
// ManualExecutor: the slow worker's drain on a helper thread (blocked in the call), every other
// drain on the test thread, so each fast call completes before the next is made.
struct MixedWorkload {
  ManualExecutor executor;
  absl::Notification started;
  Promise<void> release;
  Future<void> released = release.GetFuture();
  Worker<Counter> pool;
  Future<int> slow;
  std::thread slow_thread;

  explicit MixedWorkload(std::optional<LoadBalancing> balancing) {
    pool = CreateOn(executor, 3, [&] {
      return Worker<Counter>::Create({.mode = Mode::kTbb,
                                      .max_workers = 3,
                                      .load_balancing = balancing,
                                      .executor = &executor});
    });
    slow = pool.Call(&Counter::Slow, &started, &released);
    slow_thread = std::thread([this] { executor.RunOne(); });
    started.WaitForNotification();
  }
  ~MixedWorkload() {
    release.SetValue();
    slow_thread.join();
    StopOn(executor, pool);
  }
};

TEST(PoolBalancingTest, LeastActiveNeverQueuesAFastCallBehindTheSlowOne) {
  MixedWorkload w(LoadBalancing::kLeastActiveLoad);
  EXPECT_EQ(w.pool.GetWorkerStats(0).active_calls, 1);
  for (int i = 0; i < 10; ++i) {
    Future<int> fast = w.pool.Call(&Counter::Count);
    w.executor.RunAll();
    ASSERT_TRUE(fast.Done()) << "fast call " << i << " queued behind the slow one";
  }
  const PoolStats stats = w.pool.GetPoolStats();
  EXPECT_EQ(stats.load_balancer.algorithm, "LeastActiveLoad");
  // Ties go to the lowest index: worker 1 took every fast call, worker 0 only the slow one.
  EXPECT_THAT(stats.load_balancer.active_calls, ElementsAre(1, 0, 0));
  EXPECT_THAT(stats.load_balancer.total_calls, ElementsAre(1, 10, 0));
  EXPECT_EQ(stats.load_balancer.total_dispatched, 11);
  EXPECT_FALSE(w.slow.Done());
}

TEST(PoolBalancingTest, RoundRobinQueuesEveryThirdFastCallBehindTheSlowOne) {
  MixedWorkload w(std::nullopt);
  std::vector<Future<int>> fast;
  for (int i = 0; i < 3; ++i) {
    fast.push_back(w.pool.Call(&Counter::Count));
    w.executor.RunAll();
  }
  EXPECT_TRUE(fast[0].Done());
  EXPECT_TRUE(fast[1].Done());
  EXPECT_FALSE(fast[2].Done()) << "round robin sent it to the busy worker 0";
  EXPECT_THAT(w.pool.GetPoolStats().load_balancer.total_calls, ElementsAre(2, 1, 1));
}

TEST(PoolBalancingTest, ATaskWorkerPoolIsWorkConserving) {
  ManualExecutor executor;
  TaskWorker pool = CreateOn(executor, 3, [&] {
    return TaskWorker::Create({.mode = Mode::kTbb, .max_workers = 3, .executor = &executor});
  });
  absl::Notification started, release;
  Future<int> slow = pool.Submit([&] {
    started.Notify();
    release.WaitForNotification();
    return -1;
  });
  std::thread slow_thread([&] { executor.RunOne(); });
  started.WaitForNotification();
  // Fast tasks go to idle workers only, never behind the slow task.
  for (int i = 0; i < 10; ++i) {
    Future<int> fast = pool.Submit([i] { return i; });
    executor.RunAll();
    ASSERT_TRUE(fast.Done()) << i;
  }
  // With every worker busy, tasks wait in the pool's queue, not in a worker's.
  std::vector<Future<int>> queued;
  queued.push_back(pool.Submit([] { return 1; }));  // Two idle workers take these two...
  queued.push_back(pool.Submit([] { return 2; }));
  queued.push_back(pool.Submit([] { return 3; }));  // ...and this one waits in the pool.
  EXPECT_EQ(pool.GetPoolStats().queued_in_pool, 1);
  EXPECT_EQ(pool.Stats().deferred, 1);
  executor.RunAll();  // The first worker to finish takes it, in its own drain.
  for (auto& f : queued) EXPECT_TRUE(f.Done());
  EXPECT_EQ(pool.GetPoolStats().queued_in_pool, 0);
  const PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.load_balancer.algorithm, "SharedQueue");
  EXPECT_EQ(stats.load_balancer.total_dispatched, 14);
  // The slow task's worker is the one with a call in flight; it ran nothing else.
  const auto slow_worker = std::find(stats.load_balancer.active_calls.begin(),
                                     stats.load_balancer.active_calls.end(), 1) -
                           stats.load_balancer.active_calls.begin();
  ASSERT_LT(slow_worker, 3);
  EXPECT_EQ(stats.load_balancer.total_active, 1);
  EXPECT_EQ(stats.load_balancer.total_calls[slow_worker], 1);
  release.Notify();
  slow_thread.join();
  EXPECT_EQ(slow.Result(), -1);
  StopOn(executor, pool);
}

TEST(PoolBalancingTest, InFlightCountsDropForFailedCancelledAndRetriedCalls) {
  ManualExecutor executor;
  std::atomic<int> attempts{0};
  TaskWorker pool = CreateOn(executor, 2, [&] {
    return TaskWorker::Create(
        {.mode = Mode::kTbb,
         .max_workers = 2,
         .load_balancing = LoadBalancing::kLeastActiveLoad,
         .executor = &executor,
         .retry = RetryPolicy{.num_retries = 2, .wait = absl::ZeroDuration()}});
  });
  Future<int> fails = pool.Submit([]() -> int { throw std::runtime_error("no"); });
  Future<int> retried = pool.Submit([&] {
    if (++attempts < 3) throw std::runtime_error("again");
    return 3;
  });
  Future<int> cancelled = pool.Submit([] { return 0; });  // Queued behind `fails` on worker 0.
  EXPECT_THAT(pool.GetPoolStats().load_balancer.active_calls, ElementsAre(2, 1));
  cancelled.Cancel();
  executor.RunAll();
  EXPECT_THROW(fails.Result(), std::runtime_error);
  EXPECT_EQ(retried.Result(), 3);
  EXPECT_TRUE(cancelled.Cancelled());
  EXPECT_THAT(pool.GetPoolStats().load_balancer.active_calls, ElementsAre(0, 0));
  EXPECT_THAT(pool.GetPoolStats().load_balancer.total_calls, ElementsAre(2, 1));

  // Unwrapping: a call waiting for its input future is not on a worker yet (and never is if the
  // input fails); a task returning a pending future leaves its worker when it returns.
  Promise<int> input;
  Future<int> waits = pool.Submit([](int x) { return x; }, input.GetFuture());
  EXPECT_EQ(pool.GetPoolStats().load_balancer.total_dispatched, 3);
  input.SetError(std::make_exception_ptr(std::runtime_error("input failed")));
  EXPECT_THROW(waits.Result(), std::runtime_error);
  Promise<int> later;
  Future<int> forwarded = pool.Submit([f = later.GetFuture()] { return f; });
  executor.RunAll();
  EXPECT_FALSE(forwarded.Done());
  EXPECT_THAT(pool.GetPoolStats().load_balancer.active_calls, ElementsAre(0, 0));
  later.SetValue(5);
  EXPECT_EQ(forwarded.Result(), 5);
  EXPECT_EQ(pool.GetPoolStats().load_balancer.total_dispatched, 4);
  StopOn(executor, pool);
}

TEST_P(PoolTest, MapSpreadsItemsAcrossTheWorkersInInputOrder) {
  Watchdog watchdog(absl::Seconds(60), "map over a pool");
  TaskWorker pool = TaskWorker::Create({.mode = GetParam(), .max_workers = 4});
  // Four items that can only finish together: they must run on four workers at once.
  absl::Mutex mu;
  int arrived = 0;
  std::atomic<int> running{0}, most{0};
  const auto meet = [&](int x) {
    const int now = ++running;
    int seen = most.load();
    while (seen < now && !most.compare_exchange_weak(seen, now)) {
    }
    absl::MutexLock lock(&mu);
    ++arrived;
    WaitFor(mu, [&] { return arrived >= 4; });
    --running;
    return x * 10;
  };
  std::vector<int> in(12);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> out;
  for (auto& item : pool.Map({.max_in_flight = 4}, meet, in)) out.push_back(item.value());
  EXPECT_THAT(out, ElementsAre(0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110));
  EXPECT_EQ(most.load(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_GT(pool.GetWorkerStats(i).total_calls, 0) << i;
  // max_in_flight still bounds it: with 2, never more than 2 run at once.
  most = 0;
  const auto count = [&](int x) {
    const int now = ++running;
    int seen = most.load();
    while (seen < now && !most.compare_exchange_weak(seen, now)) {
    }
    --running;
    return x;
  };
  int n = 0;
  for (auto& item : pool.Map({.max_in_flight = 2}, count, in)) EXPECT_EQ(item.value(), n++);
  EXPECT_LE(most.load(), 2);
}

TEST(PoolStreamTest, AThreadTaskWorkerPoolDrivesAStreamOfBlockingCalls) {
  TaskWorker io = MakeExecutor({.mode = Mode::kThread, .max_workers = 8});
  // Eight blocking calls that can only finish together.
  absl::Mutex mu;
  int arrived = 0;
  const auto fetch = [&](int x) {
    absl::MutexLock lock(&mu);
    ++arrived;
    WaitFor(mu, [&] { return arrived >= 8; });
    return x + 1;
  };
  std::vector<int> in(8);
  std::iota(in.begin(), in.end(), 0);
  int sum = 0;
  for (auto& item : Stream(io, in, fetch, {.max_in_flight = 8})) sum += item.value();
  EXPECT_EQ(sum, 36);
}

TEST_P(PoolTest, AListOfLimitsIsSharedByThePoolsWorkers) {
  auto pool = Worker<Counter>::Create(
      {.mode = GetParam(), .max_workers = 4, .limits = {CallLimit(10, absl::Hours(1))}});
  std::vector<Future<bool>> calls;
  for (int i = 0; i < 40; ++i) calls.push_back(pool.Call(&Counter::TryCall));
  int allowed = 0;
  for (auto& call : calls) allowed += call.Result() ? 1 : 0;
  EXPECT_EQ(allowed, 10) << "four private sets would have allowed 40";
  // Each worker's LimitPool starts at its own index.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(pool.Call(&Counter::LimitWorkerIndex).Result(), i);
  }
}

TEST(PoolOnDemandTest, AWorkerPerCallAndNoneLeftAfterwards) {
  ManualExecutor executor;
  TaskWorker pool =
      TaskWorker::Create({.mode = Mode::kTbb, .on_demand = true, .executor = &executor});
  EXPECT_EQ(pool.GetPoolStats().max_workers, kDefaultOnDemandWorkers);
  EXPECT_EQ(pool.GetPoolStats().total_workers, 0);
  for (int i = 0; i < 3; ++i) {
    Future<int> f = pool.Submit([i] { return i; });
    EXPECT_EQ(pool.GetPoolStats().on_demand_active, 1);
    executor.RunAll();  // Constructs, runs the call, then the worker stops itself.
    EXPECT_EQ(f.Result(), i);
    EXPECT_EQ(pool.GetPoolStats().on_demand_active, 0);
  }
  EXPECT_EQ(pool.GetWorkerStats(0).restarts, 3) << "each call had a worker of its own";
}

TEST(PoolOnDemandTest, MaxWorkersCapsConcurrencyAndExtraCallsWait) {
  ManualExecutor executor;
  TaskWorker pool = TaskWorker::Create(
      {.mode = Mode::kTbb, .max_workers = 2, .on_demand = true, .executor = &executor});
  std::vector<Future<int>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(pool.Submit([i] { return i; }));
  PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.on_demand_active, 2);
  EXPECT_EQ(stats.queued_in_pool, 3);
  executor.RunAll();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(calls[i].Result(), i);
  stats = pool.GetPoolStats();
  EXPECT_EQ(stats.on_demand_active, 0);
  EXPECT_EQ(stats.queued_in_pool, 0);
  EXPECT_EQ(stats.load_balancer.total_dispatched, 5);
  // A worker that finished took the next waiting call instead of a new worker being made.
  EXPECT_EQ(pool.GetWorkerStats(0).restarts + pool.GetWorkerStats(1).restarts, 2);
}

TEST(PoolOnDemandTest, KeepaliveReusesAWarmWorkerUntilItExpires) {
  ManualExecutor executor;
  FakeClock clock;
  TaskWorker pool = TaskWorker::Create({.mode = Mode::kTbb,
                                        .on_demand = true,
                                        .on_demand_keepalive = absl::Seconds(10),
                                        .clock = &clock,
                                        .executor = &executor});
  for (int i = 0; i < 3; ++i) {
    Future<int> f = pool.Submit([i] { return i; });
    executor.RunAll();
    EXPECT_EQ(f.Result(), i);
    EXPECT_EQ(pool.GetPoolStats().on_demand_active, 1) << "idle, within its keepalive";
    clock.Advance(absl::Seconds(9));  // Each call restarts the keepalive.
  }
  EXPECT_EQ(pool.GetWorkerStats(0).restarts, 1) << "one worker served all three calls";
  EXPECT_EQ(executor.pending(), 0u);
  clock.Advance(absl::Seconds(1));  // 10 s idle: the timer stops the worker...
  executor.BlockUntilPending(1);    // ...whose stop message needs a drain.
  executor.RunAll();
  // The timer's thread finishes its part of the stop concurrently.
  ASSERT_TRUE(Eventually([&] { return pool.GetPoolStats().on_demand_active == 0; }));
  EXPECT_EQ(pool.GetPoolStats().total_workers, 0);
}

TEST(PoolSubmissionTest, KBlockBoundsASharedQueuePool) {
  TaskWorker pool = TaskWorker::Create({.mode = Mode::kThread,
                                        .max_queued_tasks = 1,
                                        .queue_full = QueueFullPolicy::kBlock,
                                        .max_workers = 2});
  absl::Notification release;
  std::atomic<int> started{0};
  auto busy = [&] {
    ++started;
    release.WaitForNotification();
    return 1;
  };
  Future<int> a = pool.Submit(busy);
  Future<int> b = pool.Submit(busy);
  ASSERT_TRUE(Eventually([&] { return started.load() == 2; }));
  // The pool holds 2 x 1 calls: a third caller blocks until one finishes.
  std::atomic<bool> submitted{false};
  std::thread caller([&] {
    pool.Submit([] { return 3; }).Result();
    submitted = true;
  });
  ASSERT_TRUE(Eventually([&] { return pool.Stats().blocked_callers == 1; }));
  EXPECT_FALSE(submitted.load());
  release.Notify();
  caller.join();
  EXPECT_TRUE(submitted.load());
  EXPECT_EQ(a.Result() + b.Result(), 2);
}

TEST(PoolSubmissionTest, ABalancedPoolBoundsEachWorkerAsOneWorkerWould) {
  Watchdog watchdog(absl::Seconds(60), "bounded balanced pool");
  auto pool = Worker<Counter>::Create({.mode = Mode::kThread,
                                       .max_queued_tasks = 1,
                                       .queue_full = QueueFullPolicy::kBlock,
                                       .max_workers = 2});
  absl::Notification started0, started1;
  Promise<void> release;
  Future<void> released = release.GetFuture();
  // Round robin: one running call per worker fills both workers' single slot.
  Future<int> a = pool.Call(&Counter::Slow, &started0, &released);
  Future<int> b = pool.Call(&Counter::Slow, &started1, &released);
  started0.WaitForNotification();
  started1.WaitForNotification();
  // The next call goes to worker 0, whose slot is taken: the caller blocks there.
  std::atomic<bool> returned{false};
  std::thread caller([&] {
    Future<int> c = pool.Call(&Counter::Count);
    returned = true;
    EXPECT_EQ(c.Result(), 1);
  });
  ASSERT_TRUE(Eventually([&] { return pool.Stats().blocked_callers == 1; }));
  EXPECT_EQ(pool.GetWorkerStats(0).queues.blocked_callers, 1);
  EXPECT_FALSE(returned.load());
  release.SetValue();
  caller.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(a.Result() + b.Result(), -2);
}

TEST_P(PoolTest, StopCancelsQueuedCallsStopsWorkersAtOnceAndIsIdempotent) {
  Watchdog watchdog(absl::Seconds(60), "pool stop");
  auto pool = Worker<Counter>::Create({.mode = GetParam(), .max_workers = 4});
  std::vector<std::unique_ptr<absl::Notification>> started;
  std::vector<Promise<void>> release(4);
  std::vector<Future<void>> released;
  for (auto& r : release) released.push_back(r.GetFuture());
  std::vector<Future<int>> running;
  for (int i = 0; i < 4; ++i) {
    started.push_back(std::make_unique<absl::Notification>());
    running.push_back(pool.Call(&Counter::Slow, started.back().get(), &released[i]));
  }
  for (auto& s : started) s->WaitForNotification();
  Future<int> queued = pool.Call(&Counter::Count);  // Behind worker 0's running call.
  // Every worker is busy past the timeout: one deadline for all, not one per worker.
  const absl::Time begin = absl::Now();
  EXPECT_FALSE(pool.Stop(absl::Milliseconds(300)));
  const absl::Duration took = absl::Now() - begin;
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Milliseconds(1200)) << "stopped the workers one after another";
  EXPECT_TRUE(queued.Cancelled());
  EXPECT_TRUE(pool.stopped());
  EXPECT_THROW(pool.Call(&Counter::Count).Result(), StoppedError);
  for (auto& r : release) r.SetValue();
  EXPECT_TRUE(pool.Stop());  // Idempotent; now everything finished.
  EXPECT_TRUE(pool.StoppedFuture().Done());
  for (auto& call : running) EXPECT_EQ(call.Result(), -1);
  EXPECT_EQ(pool.GetPoolStats().total_workers, 0);
}

TEST_P(PoolTest, AStopInsideTheStopsCallbacksDoesNotWaitForItself) {
  Watchdog watchdog(absl::Seconds(60), "nested pool stop");
  auto pool = Worker<Counter>::Create(
      {.mode = GetParam(), .stop_timeout = absl::InfiniteDuration(), .max_workers = 2});
  // A call waiting for its input is cancelled by Stop; its callback stops the pool again and
  // drops a handle.
  Promise<int> never;
  Future<int> waits = pool.Call(&Counter::Add, never.GetFuture());
  auto copy = std::make_shared<Worker<Counter>>(pool);
  bool nested_returned = false;
  AnyFuture(waits).AddDoneCallback([&, copy]() mutable {
    nested_returned = !copy->Stop();  // Does not wait (it would wait for itself).
    copy.reset();
  });
  copy.reset();
  EXPECT_TRUE(pool.Stop());
  EXPECT_TRUE(nested_returned);
  EXPECT_TRUE(waits.Cancelled());
}

TEST_P(PoolTest, AWorkerThatStopsItselfIsReplaced) {
  auto pool = Worker<Counter>::Create({.mode = GetParam(), .max_workers = 2});
  pool.Call(&Counter::StopSelf).Result();  // Worker 0 stops itself.
  ASSERT_TRUE(Eventually(
      [&] { return pool.GetPoolStats().replaced_workers == 1 && pool.GetWorkerStats(0).alive; }));
  EXPECT_EQ(pool.GetWorkerStats(0).restarts, 1);
  EXPECT_TRUE(pool.GetWorkerStats(0).alive);
  // The pool keeps serving, on both slots; the new worker 0 starts from a fresh Counter.
  std::vector<int> counts;
  for (int i = 0; i < 4; ++i) counts.push_back(pool.Call(&Counter::Count).Result());
  EXPECT_THAT(counts, ElementsAre(1, 1, 2, 2));
  EXPECT_EQ(pool.GetPoolStats().total_workers, 2);
}

TEST_P(PoolTest, TenThousandCallsFromFourThreads) {
  auto pool = Worker<Counter>::Create({.mode = GetParam(), .max_workers = 3});
  TaskWorker tasks = TaskWorker::Create({.mode = GetParam(), .max_workers = 3});
  std::atomic<int64_t> sum{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Future<int>> calls;
      for (int i = 0; i < 1250; ++i) {
        calls.push_back(pool.Call(&Counter::Add, 0));
        calls.push_back(tasks.Submit([i, t] { return i + t; }));
      }
      for (size_t i = 1; i < calls.size(); i += 2) sum += calls[i].Result();
      for (size_t i = 0; i < calls.size(); i += 2) EXPECT_EQ(calls[i].Result(), 0);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(sum.load(), 4 * (1249 * 1250 / 2) + 1250 * (0 + 1 + 2 + 3));
  EXPECT_TRUE(pool.Stop());
  EXPECT_TRUE(tasks.Stop());
  EXPECT_EQ(pool.GetPoolStats().load_balancer.total_dispatched, 5000);
  EXPECT_EQ(pool.GetPoolStats().load_balancer.total_active, 0);
  EXPECT_EQ(tasks.GetPoolStats().load_balancer.sum_total_calls, 5000);
}

}  // namespace
}  // namespace concurry

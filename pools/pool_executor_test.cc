// Pools whose workers run on a WorkerOptions::executor (tbb mode): at most
// min(max_workers, executor.max_concurrency()) calls run at once, and PoolStats says so.

#include <vector>

#include "absl/time/time.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "pools/pool_stats.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/test_thread_executor.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using ::concurry::testkit::Watchdog;
using ::concurry::workers_test::ConcurrencyProbe;
using ::concurry::workers_test::ThreadsExecutor;

// A stateful worker whose calls go through a shared probe.
class Probed {
 public:
  explicit Probed(ConcurrencyProbe* probe) : probe_(probe) {}
  int Echo(int x) {
    probe_->Run();
    return x;
  }

 private:
  ConcurrencyProbe* probe_;
};

TEST(PoolExecutorTest, APoolOnAnExecutorRunsAtMostTheExecutorsConcurrency) {
  Watchdog watchdog(absl::Seconds(60), "pool on a 3-thread executor");
  ThreadsExecutor io(3);
  ConcurrencyProbe probe;
  auto pool =
      Worker<Probed>::Create({.mode = Mode::kTbb, .max_workers = 5, .executor = &io}, &probe);
  const PoolStats stats = pool.GetPoolStats();
  EXPECT_EQ(stats.max_workers, 5);
  EXPECT_EQ(stats.effective_concurrency, 3);
  // Round robin gives each of the 5 workers one call; only 3 can run on the executor's threads.
  std::vector<Future<int>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(pool.Call(&Probed::Echo, i));
  probe.WaitRunning(3);
  probe.Release();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(calls[static_cast<size_t>(i)].Result(), i);
  EXPECT_EQ(probe.peak(), 3);
}

TEST(PoolExecutorTest, APoolSmallerThanItsExecutorRunsMaxWorkersAtOnce) {
  Watchdog watchdog(absl::Seconds(60), "pool of 2 on a 4-thread executor");
  ThreadsExecutor io(4);
  ConcurrencyProbe probe;
  auto pool =
      Worker<Probed>::Create({.mode = Mode::kTbb, .max_workers = 2, .executor = &io}, &probe);
  EXPECT_EQ(pool.GetPoolStats().effective_concurrency, 2);
  std::vector<Future<int>> calls;
  for (int i = 0; i < 4; ++i) calls.push_back(pool.Call(&Probed::Echo, i));
  probe.WaitRunning(2);
  probe.Release();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(calls[static_cast<size_t>(i)].Result(), i);
  EXPECT_EQ(probe.peak(), 2);
}

TEST(PoolExecutorTest, AWorkerKeepsItsOneWorkerMeaningWithAnExecutor) {
  ThreadsExecutor io(4);
  ConcurrencyProbe probe;
  probe.Release();
  auto worker = Worker<Probed>::Create({.mode = Mode::kTbb, .executor = &io}, &probe);
  EXPECT_FALSE(worker.is_pool());
  EXPECT_EQ(worker.Call(&Probed::Echo, 4).Result(), 4);
}

TEST(PoolExecutorTest, PoolsWithoutAnExecutorReportMaxWorkers) {
  ConcurrencyProbe probe;
  auto pool = Worker<Probed>::Create({.mode = Mode::kThread, .max_workers = 3}, &probe);
  EXPECT_EQ(pool.GetPoolStats().effective_concurrency, 3);
  auto on_demand =
      Worker<Probed>::Create({.mode = Mode::kThread, .max_workers = 4, .on_demand = true}, &probe);
  EXPECT_EQ(on_demand.GetPoolStats().effective_concurrency, 4);
}

}  // namespace
}  // namespace concurry

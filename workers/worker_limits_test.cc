// The `limits` option of workers: concurry's §5.6 forms, privacy and sharing, the in-method
// accessor, and release when a method throws. Runs in every available mode.

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace worker_limits_test {

// A plain class: no base, no limits parameter.
class Client {
 public:
  Client() : limit_sets_at_construction_(static_cast<int>(CurrentWorkerLimits().size())) {}

  // Holds a connection and spends `tokens`, reporting `used` of them.
  int Spend(int tokens, int used) {
    LimitAcquisition acquired = CurrentWorkerLimits().Acquire({{"tokens", tokens}});
    acquired.Update({{"tokens", used}});
    return used;
  }
  // Takes the connection and throws while holding it.
  int Fail() {
    LimitAcquisition acquired = CurrentWorkerLimits().Acquire({{"tokens", 1}});
    acquired.Update({{"tokens", 1}});
    throw std::runtime_error("model error");
  }
  // Whether a connection is free right now (without keeping it).
  bool ConnectionFree() { return CurrentWorkerLimits()[0].TryAcquire({{"tokens", 1}}).has_value(); }
  // Whether `tokens` are available now (taking and using them).
  bool TrySpend(int tokens) {
    std::optional<LimitAcquisition> acquired =
        CurrentWorkerLimits().TryAcquire({{"tokens", tokens}});
    if (!acquired.has_value()) return false;
    acquired->Update({{"tokens", tokens}});
    return true;
  }
  std::string Account() {
    LimitAcquisition acquired = CurrentWorkerLimits().Acquire({{"tokens", 1}});
    acquired.Update({{"tokens", 1}});
    return acquired.config().at("account");
  }
  int LimitSetsAtConstruction() const { return limit_sets_at_construction_; }

 private:
  int limit_sets_at_construction_;
};

}  // namespace worker_limits_test
}  // namespace concurry

CONCURRY_REGISTER_WORKER(concurry::worker_limits_test::Client, (), Spend, Fail, ConnectionFree,
                         TrySpend, Account, LimitSetsAtConstruction);

namespace concurry {
namespace worker_limits_test {
namespace {

std::vector<Limit> ClientLimits() {
  return {RateLimit("tokens", 1000, absl::Minutes(1), RateLimitAlgorithm::kGcra),
          ResourceLimit("connections", 1)};
}

class WorkerLimitsTest : public ::testing::TestWithParam<Mode> {
 protected:
  WorkerOptions Options(WorkerLimits limits) {
    WorkerOptions options;
    options.mode = GetParam();
    options.limits = std::move(limits);
    return options;
  }
};

TEST_P(WorkerLimitsTest, AListOfLimitsIsPrivateToEachWorker) {
  const std::vector<Limit> limits = ClientLimits();
  auto a = BlockingWorker<Client>::Create(Options(limits));
  auto b = BlockingWorker<Client>::Create(Options(limits));
  EXPECT_EQ(a.Call(&Client::Spend, 1000, 1000), 1000);
  // a's budget is spent; b has its own.
  EXPECT_EQ(b.Call(&Client::Spend, 1000, 10), 10);
  EXPECT_EQ(a.Call(&Client::LimitSetsAtConstruction), 1);
}

TEST_P(WorkerLimitsTest, ALimitSetIsSharedByTheWorkersGivenIt) {
  const LimitSet shared = LimitSet::Create(ClientLimits());
  auto a = BlockingWorker<Client>::Create(Options(shared));
  auto b = BlockingWorker<Client>::Create(Options(shared));
  a.Call(&Client::Spend, 600, 600);
  EXPECT_FALSE(b.Call(&Client::TrySpend, 600)) << "only 400 tokens are left";
  EXPECT_TRUE(b.Call(&Client::TrySpend, 400));
}

TEST_P(WorkerLimitsTest, UnusedTokensAreRefundedAndThrowingMethodsRelease) {
  const LimitSet shared = LimitSet::Create(ClientLimits());
  auto worker = BlockingWorker<Client>::Create(Options(shared));
  worker.Call(&Client::Spend, 1000, 100);  // 900 refunded.
  EXPECT_NEAR(shared.Stats().limits[0].in_use, 100, 1);
  EXPECT_THROW(worker.Call(&Client::Fail), std::runtime_error);
  EXPECT_TRUE(worker.Call(&Client::ConnectionFree));
  EXPECT_EQ(shared.Stats().limits[1].in_use, 0);
  EXPECT_EQ(shared.Stats().holding, 0);
}

TEST_P(WorkerLimitsTest, ListsOfSetsBecomeARoundRobinPool) {
  std::vector<LimitSet> sets;
  for (const char* account : {"a", "b"}) {
    LimitSetOptions options;
    options.config = {{"account", account}};
    sets.push_back(LimitSet::Create(ClientLimits(), options));
  }
  auto worker = BlockingWorker<Client>::Create(Options(sets));
  EXPECT_EQ(worker.Call(&Client::Account), "a");
  EXPECT_EQ(worker.Call(&Client::Account), "b");
  EXPECT_EQ(worker.Call(&Client::Account), "a");
  auto offset =
      BlockingWorker<Client>::Create(Options(LimitPool::Create(sets, {.worker_index = 1})));
  EXPECT_EQ(offset.Call(&Client::Account), "b");
  EXPECT_EQ(offset.Call(&Client::LimitSetsAtConstruction), 2);
}

TEST_P(WorkerLimitsTest, AListOfLimitsRunsOnTheWorkersClock) {
  testkit::FakeClock clock;
  WorkerOptions options = Options(std::vector<Limit>{
      RateLimit("tokens", 1000, absl::Minutes(1), RateLimitAlgorithm::kTokenBucket)});
  options.clock = &clock;
  auto worker = BlockingWorker<Client>::Create(options);
  EXPECT_TRUE(worker.Call(&Client::TrySpend, 1000));
  EXPECT_FALSE(worker.Call(&Client::TrySpend, 1)) << "the budget is spent";
  clock.Advance(absl::Seconds(30));  // Refills half of it, on the fake clock only.
  EXPECT_FALSE(worker.Call(&Client::TrySpend, 501));
  EXPECT_TRUE(worker.Call(&Client::TrySpend, 500));
  EXPECT_FALSE(worker.Call(&Client::TrySpend, 1));
  clock.Advance(absl::Minutes(5));  // Full again, and no more than full.
  EXPECT_TRUE(worker.Call(&Client::TrySpend, 1000));
  EXPECT_FALSE(worker.Call(&Client::TrySpend, 1));
}

TEST_P(WorkerLimitsTest, NoLimitsGiveANoOpPool) {
  auto worker = BlockingWorker<Client>::Create(Options({}));
  EXPECT_EQ(worker.Call(&Client::Spend, 1'000'000, 5), 5);
  auto empty = BlockingWorker<Client>::Create(Options(std::vector<LimitSet>{}));
  EXPECT_EQ(empty.Call(&Client::Spend, 10, 5), 5);
}

INSTANTIATE_TEST_SUITE_P(Modes, WorkerLimitsTest,
                         ::testing::Values(Mode::kSync, Mode::kThread, Mode::kTbb, Mode::kLoopback),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST(WorkerLimitsOutsideTest, TheAccessorFailsOutsideAWorker) {
  try {
    CurrentWorkerLimits();
    FAIL() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_NE(std::string(error.what()).find("outside a worker"), std::string::npos);
  }
}

TEST(WorkerLimitsOutsideTest, TaskWorkerTasksSeeTheirLimits) {
  const LimitSet shared = LimitSet::Create({ResourceLimit("connections", 3)});
  TaskWorker tasks = TaskWorker::Create({.mode = Mode::kThread, .limits = shared});
  const double capacity =
      tasks.Submit([] { return CurrentWorkerLimits()[0]["connections"].capacity(); }).Result();
  EXPECT_EQ(capacity, 3);
}

TEST(WorkerLimitsOutsideTest, ThreadSetsCannotServeOtherProcesses) {
  const LimitSet threads = LimitSet::Create(ClientLimits());
  try {
    WorkerLimits(threads).Resolve(Mode::kProcess);
    FAIL() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_NE(std::string(error.what()).find("not compatible with worker mode process"),
              std::string::npos)
        << error.what();
  }
  const LimitSet processes =
      LimitSet::Create(ClientLimits(), {.sharing = LimitSharing::kProcesses});
  EXPECT_EQ(WorkerLimits(processes).Resolve(Mode::kProcess)[0], processes);
  EXPECT_EQ(WorkerLimits(threads).Resolve(Mode::kThread)[0], threads);
}

}  // namespace
}  // namespace worker_limits_test
}  // namespace concurry

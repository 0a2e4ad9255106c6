// LimitSet on Redis (LimitSharing::kHosts with a RedisLimitStore) against a real redis-server
// started by the test (//testing:redis_server). Time is the server's real clock, so the checks use
// windows long enough for exact counts (an hour) or generous bounds for waits.

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "limits/redis/internal/redis_set_backend.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_limit_store.h"
#include "limits/redis/redis_options.h"
#include "testing/redis_server.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

using ::concurry::testkit::RedisServer;

// Generous bounds for real-time checks under the sanitizers on a shared 2-core machine.
constexpr absl::Duration kSlack = absl::Seconds(2);

// Collects warnings.
class Warnings {
 public:
  std::function<void(absl::string_view)> Sink() {
    return [this](absl::string_view message) {
      absl::MutexLock lock(&mu_);
      messages_.emplace_back(message);
    };
  }
  std::vector<std::string> messages() {
    absl::MutexLock lock(&mu_);
    return messages_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mu_);
};

// Waits (bounded) until `condition` holds; false if it never did.
template <typename Condition>
bool Eventually(Condition condition, absl::Duration limit = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + limit;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

class RedisLimitSetTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why_not;
    if (RedisServer::Available(&why_not)) shared_server_ = RedisServer::Start().release();
  }
  static void TearDownTestSuite() {
    delete shared_server_;
    shared_server_ = nullptr;
  }

  void SetUp() override {
    std::string why_not;
    ASSERT_TRUE(RedisServer::Available(&why_not)) << why_not;
    ASSERT_NE(shared_server_, nullptr);
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    prefix_ = absl::StrCat("test:", info->name(), ":");
  }

  RedisOptions Options(const RedisServer* server = nullptr) const {
    return {.port = (server != nullptr ? server : shared_server_)->port(), .key_prefix = prefix_};
  }

  LimitSet Create(std::shared_ptr<RedisLimitStore> store, std::vector<Limit> limits,
                  std::string name = "set", LimitFairness fairness = LimitFairness::kFifo) {
    LimitSetOptions options;
    options.fairness = fairness;
    options.sharing = LimitSharing::kHosts;
    options.on_warning = warnings_.Sink();
    options.store = std::move(store);
    options.name = std::move(name);
    return LimitSet::Create(std::move(limits), std::move(options));
  }

  static RedisServer* shared_server_;
  std::string prefix_;
  Warnings warnings_;
};

RedisServer* RedisLimitSetTest::shared_server_ = nullptr;

// Stops a redis-server with SIGSTOP (connections are accepted, nothing is answered) until
// destroyed.
class Stopped {
 public:
  explicit Stopped(const RedisServer& server) : pid_(server.pid()) {
    EXPECT_EQ(kill(pid_, SIGSTOP), 0);
  }
  ~Stopped() { EXPECT_EQ(kill(pid_, SIGCONT), 0); }

 private:
  const pid_t pid_;
};

TEST_F(RedisLimitSetTest, GcraAndTokenBucketTakeAndRefundUnusedTokens) {
  for (RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kGcra, RateLimitAlgorithm::kTokenBucket}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    auto store = RedisLimitStore::Connect(Options());
    LimitSet set = Create(store, {RateLimit("tokens", 10, absl::Hours(1), algorithm)},
                          std::string(RateLimitAlgorithmName(algorithm)));
    {
      LimitAcquisition taken = set.Acquire({{"tokens", 6}});
      taken.Update({{"tokens", 2}});
      taken.Release();
      EXPECT_EQ(taken.charge("tokens")->refunded, 4);
    }
    EXPECT_NEAR(set.Stats().at("tokens").in_use, 2, 0.01);
    std::optional<LimitAcquisition> rest = set.TryAcquire({{"tokens", 8}});
    ASSERT_TRUE(rest.has_value());
    rest->Update({{"tokens", 8}});
    EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
    const LimitSetStats stats = set.Stats();
    EXPECT_NEAR(stats.at("tokens").in_use, 10, 0.01);
    EXPECT_NEAR(stats.at("tokens").rate.tokens, 0, 0.01);
    EXPECT_EQ(stats.at("tokens").rate.tolerance, absl::Hours(1));
    EXPECT_GT(stats.at("tokens").rate.theoretical_arrival, absl::Now());
    EXPECT_EQ(stats.acquisitions, 2);
    EXPECT_EQ(stats.holding, 1);
  }
}

TEST_F(RedisLimitSetTest, GcraWaitsForItsRetryAfter) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set =
      Create(store, {RateLimit("tokens", 10, absl::Seconds(5), RateLimitAlgorithm::kGcra)});
  // Before the first take: the bucket empties no earlier than this, however slow the takes are.
  const absl::Time first = absl::Now();
  for (int i = 0; i < 10; ++i) set.TryAcquire({{"tokens", 1}})->Update({{"tokens", 1}});
  // Empty now, unless the takes were so slow (a descheduled thread) that a token came back.
  if (absl::Now() - first < absl::Milliseconds(450)) {
    EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
  }
  const absl::Time start = absl::Now();
  LimitAcquisition later = set.Acquire({{"tokens", 1}}, absl::Seconds(10));
  later.Update({{"tokens", 1}});
  // One token refills every 500 ms after the first take (server and test share the clock).
  EXPECT_GE(absl::Now() - first, absl::Milliseconds(490));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500) + kSlack);
}

TEST_F(RedisLimitSetTest, LeakyBucketKeepsTheRequestChargedAndLeaks) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set =
      Create(store, {RateLimit("tokens", 5, absl::Seconds(5), RateLimitAlgorithm::kLeakyBucket)});
  {
    LimitAcquisition taken = set.Acquire({{"tokens", 5}});
    taken.Update({{"tokens", 1}});
    taken.Release();
    EXPECT_EQ(taken.charge("tokens")->refunded, 0);  // LeakyBucket cannot refund.
  }
  EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
  const absl::Time start = absl::Now();
  set.Acquire({{"tokens", 1}}, absl::Seconds(10)).Update({{"tokens", 1}});
  EXPECT_LT(absl::Now() - start, absl::Seconds(1) + kSlack);  // One leaks every second.
  EXPECT_GT(set.Stats().at("tokens").rate.level, 0);
}

TEST_F(RedisLimitSetTest, SlidingWindowCountsTheLastWindow) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set =
      Create(store, {RateLimit("tokens", 3, absl::Hours(1), RateLimitAlgorithm::kSlidingWindow)});
  for (int i = 0; i < 3; ++i) set.TryAcquire({{"tokens", 1}})->Update({{"tokens", 1}});
  EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
  const LimitStats stats = set.Stats().at("tokens");
  EXPECT_EQ(stats.in_use, 3);
  EXPECT_EQ(stats.rate.window_count, 3);
  EXPECT_NEAR(absl::ToDoubleSeconds(absl::Now() - absl::Hours(1) - stats.rate.window_start), 0,
              absl::ToDoubleSeconds(kSlack));

  LimitSet fast =
      Create(store, {RateLimit("tokens", 2, absl::Seconds(1), RateLimitAlgorithm::kSlidingWindow)},
             "fast");
  for (int i = 0; i < 2; ++i) fast.TryAcquire({{"tokens", 1}})->Update({{"tokens", 1}});
  const absl::Time start = absl::Now();
  fast.Acquire({{"tokens", 1}}, absl::Seconds(10)).Update({{"tokens", 1}});
  EXPECT_LT(absl::Now() - start, absl::Seconds(1) + kSlack);
}

TEST_F(RedisLimitSetTest, FixedWindowCountsPerAlignedWindow) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set =
      Create(store, {RateLimit("tokens", 3, absl::Seconds(1), RateLimitAlgorithm::kFixedWindow)});
  std::vector<LimitAcquisition> held;
  // Up to 3 in the window of the first one. Each try starts just after a window boundary, so that
  // its takes fall in one window (a second try if a stalled thread crossed into the next one).
  for (int attempt = 0; attempt < 2; ++attempt) {
    held.clear();
    const absl::Time now = absl::Now();
    absl::SleepFor(absl::FromUnixSeconds(absl::ToUnixSeconds(now) + 1) + absl::Milliseconds(20) -
                   now);
    while (std::optional<LimitAcquisition> one = set.TryAcquire({{"tokens", 1}})) {
      one->Update({{"tokens", 1}});
      held.push_back(*std::move(one));
      if (held.size() > 3) break;
    }
    const LimitStats stats = set.Stats().at("tokens");
    if (stats.in_use == 3) break;
  }
  EXPECT_EQ(held.size(), 3);
  const LimitStats stats = set.Stats().at("tokens");
  EXPECT_EQ(absl::ToUnixMicros(stats.rate.window_start) % 1'000'000, 0);
  const absl::Time start = absl::Now();
  set.Acquire({{"tokens", 1}}, absl::Seconds(10)).Update({{"tokens", 1}});
  EXPECT_LT(absl::Now() - start, absl::Seconds(1) + kSlack);
}

TEST_F(RedisLimitSetTest, MultiLimitAcquisitionIsAllOrNothing) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra),
                                CallLimit(100, absl::Hours(1), RateLimitAlgorithm::kSlidingWindow),
                                ResourceLimit("connections", 1)});
  LimitAcquisition held = set.Acquire({{"tokens", 1}});
  held.Update({{"tokens", 1}});
  std::optional<LimitAcquisition> other;
  std::thread([&] { other = set.TryAcquire({{"tokens", 5}}); }).join();
  EXPECT_FALSE(other.has_value());
  LimitSetStats stats = set.Stats();
  EXPECT_NEAR(stats.at("tokens").in_use, 1, 0.01);  // Not 6: nothing was taken.
  EXPECT_EQ(stats.at("call_count").in_use, 1);
  EXPECT_EQ(stats.at("connections").in_use, 1);
  held.Release();
  stats = set.Stats();
  EXPECT_EQ(stats.at("connections").in_use, 0);
  EXPECT_EQ(stats.at("connections").available, 1);
  EXPECT_EQ(stats.holding, 0);
}

TEST_F(RedisLimitSetTest, FifoQueuesBehindAWaiterButNotItsHolders) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {ResourceLimit("connections", 2)});
  std::optional<LimitAcquisition> mine = set.Acquire();  // This thread holds 1 of 2.
  std::atomic<bool> served{false};
  std::thread waiter([&] {
    LimitAcquisition both = set.Acquire({{"connections", 2}}, absl::Seconds(20));
    served = true;
  });
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  // 1 unit is free, but the waiter came first.
  std::optional<LimitAcquisition> late;
  std::thread([&] { late = set.TryAcquire(); }).join();
  EXPECT_FALSE(late.has_value());
  // A thread holding an acquisition of the set is exempt (a nested acquisition cannot deadlock
  // behind the waiter that needs what it holds).
  std::optional<LimitAcquisition> nested = set.TryAcquire();
  EXPECT_TRUE(nested.has_value());
  EXPECT_FALSE(served);
  mine.reset();
  nested.reset();
  waiter.join();
  EXPECT_TRUE(served);
  EXPECT_EQ(set.Stats().waiting, 0);
}

TEST_F(RedisLimitSetTest, BargingTakesWhatIsFree) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {ResourceLimit("connections", 2)}, "set", LimitFairness::kBarging);
  std::optional<LimitAcquisition> mine = set.Acquire();
  std::thread waiter([&] { set.Acquire({{"connections", 2}}, absl::Seconds(20)); });
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  std::optional<LimitAcquisition> late;
  std::thread([&] { late = set.TryAcquire(); }).join();
  EXPECT_TRUE(late.has_value());
  mine.reset();
  late.reset();
  waiter.join();
}

TEST_F(RedisLimitSetTest, ConcurrentHoldersNeverExceedTheCapacity) {
  // Two "hosts", two threads each, acquiring and releasing one set with 2 units: at most 2 held
  // at once, and every acquisition succeeds (FIFO: none starves). Run under --config=tsan too.
  auto host1 = RedisLimitStore::Connect(Options());
  auto host2 = RedisLimitStore::Connect(Options());
  std::vector<Limit> limits = {ResourceLimit("connections", 2),
                               RateLimit("tokens", 1e9, absl::Hours(1), RateLimitAlgorithm::kGcra)};
  LimitSet sets[] = {Create(host1, limits), Create(host2, limits)};
  std::atomic<int> holding{0};
  std::atomic<int> most{0};
  std::atomic<int> served{0};
  testkit::TestConcurrent(/*num_threads=*/4, /*iterations=*/25, [&](int thread) {
    LimitAcquisition held = sets[thread % 2].Acquire({{"tokens", 3}}, absl::Seconds(30));
    const int now = ++holding;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    held.Update({{"tokens", thread % 3}});
    --holding;
    held.Release();
    ++served;
  });
  EXPECT_LE(most.load(), 2);
  EXPECT_EQ(served.load(), 100);
  const LimitSetStats stats = sets[0].Stats();
  EXPECT_EQ(stats.acquisitions, 100);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.at("connections").in_use, 0);
}

TEST_F(RedisLimitSetTest, PreparedRequestsAndHandlesWork) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra),
                                ResourceLimit("connections", 1)});
  const PreparedLimitRequest four = set.Prepare({{"tokens", 4}});
  const LimitHandle tokens = set.Handle("tokens");
  {
    LimitAcquisition taken = set.Acquire(four);
    taken.Update(tokens, 1);
    EXPECT_FALSE(set.TryAcquire(four).has_value());  // The connection is held.
  }
  std::optional<LimitAcquisition> again = set.TryAcquire(four);
  ASSERT_TRUE(again.has_value());
  again->Update(tokens, 4);
  again.reset();
  EXPECT_NEAR(set.Stats().at("tokens").in_use, 5, 0.01);
  LimitAcquisition async = set.AcquireAsync(four).Result(kSlack);
  async.Update(tokens, 4);
}

TEST_F(RedisLimitSetTest, AnExplicitBurstLimitsWhatGoesAtOnce) {
  // 45 per minute with a burst of 5: 5 at once, then one every 4/3 s.
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {CallLimit(45, "minute", {.burst = 5})});
  // Before the first take: the 6th is admitted no earlier than 4/3 s after it.
  const absl::Time first = absl::Now();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(set.TryAcquire().has_value()) << i;
  EXPECT_FALSE(set.TryAcquire().has_value());
  const LimitStats stats = set.Stats().at("call_count");
  EXPECT_EQ(stats.burst, 5);
  // One call drains every 4/3 s: less than one unless the thread stalled that long.
  EXPECT_NEAR(stats.in_use, 5, 1.0);
  EXPECT_EQ(stats.rate.tolerance, absl::Microseconds(5 * 1333333));  // Intervals in whole µs.
  const absl::Time start = absl::Now();
  set.Acquire({}, absl::Seconds(10));
  EXPECT_GE(absl::Now() - first, absl::Milliseconds(1330));
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1334) + kSlack);
}

TEST_F(RedisLimitSetTest, ANestedRequestSkipsTheQueue) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {RateLimit("tokens", 100, absl::Hours(1), RateLimitAlgorithm::kGcra),
                                ResourceLimit("connections", 1)});
  std::optional<LimitAcquisition> outer;
  std::thread([&] { outer = set.Acquire({{"tokens", 1}}); }).join();  // Not this thread's.
  outer->Update({{"tokens", 1}});
  std::thread waiter([&] { set.Acquire({{"tokens", 1}}, absl::Seconds(20)); });
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  // Amount 0 for the connection: it nests inside `outer` and does not queue behind the waiter.
  std::optional<LimitAcquisition> nested = set.TryAcquire({{"tokens", 2}, {"connections", 0}});
  ASSERT_TRUE(nested.has_value());
  nested->Update({{"tokens", 2}});
  // Not nested: it needs the held connection, and queues behind the waiter.
  EXPECT_FALSE(set.TryAcquire({{"tokens", 2}}).has_value());
  nested.reset();
  outer.reset();
  waiter.join();
}

TEST_F(RedisLimitSetTest, ASetWithoutLimitsAndAPoolOfSetsWork) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet none = Create(store, {}, "none");
  EXPECT_TRUE(none.no_op());
  none.Acquire({{"anything", 3}}).Update({{"anything", 5}});
  LimitPool pool = LimitPool::Create({Create(store, {ResourceLimit("connections", 1)}, "a"),
                                      Create(store, {ResourceLimit("connections", 1)}, "b")});
  LimitAcquisition first = pool.Acquire();
  LimitAcquisition second = pool.Acquire();
  EXPECT_FALSE(pool.TryAcquire().has_value());
  const LimitPoolStats stats = pool.Stats();
  EXPECT_EQ(stats.sets[0].at("connections").in_use, 1);
  EXPECT_EQ(stats.sets[1].at("connections").in_use, 1);
}

TEST_F(RedisLimitSetTest, AnAcquisitionCostsOneScriptAndItsReleaseOneWhenItGivesBack) {
  redis_internal::RedisClient client(Options());
  // The scripts the server ran so far (INFO commandstats).
  const auto scripts = [&client] {
    const std::string info = client.Command({"INFO", "commandstats"}).str();
    const size_t at = info.find("cmdstat_evalsha:calls=");
    if (at == std::string::npos) return int64_t{0};
    return static_cast<int64_t>(
        std::strtoll(info.c_str() + at + std::strlen("cmdstat_evalsha:calls="), nullptr, 10));
  };
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {RateLimit("tokens", 100, absl::Hours(1), RateLimitAlgorithm::kGcra),
                                CallLimit(100, absl::Hours(1))});
  LimitSet held = Create(store, {ResourceLimit("connections", 1)}, "held");
  set.Acquire({{"tokens", 1}}).Update({{"tokens", 1}});  // Loads the scripts.
  held.Acquire();
  // Releases are one-way: Stats() (one script more) waits until those sent before it are done.
  int64_t before = scripts();
  set.Acquire({{"tokens", 5}}).Update({{"tokens", 5}});  // All used: nothing to give back.
  set.Stats();
  EXPECT_EQ(scripts() - before, 1 + 1);
  before = scripts();
  set.Acquire({{"tokens", 5}}).Update({{"tokens", 2}});  // A refund.
  set.Stats();
  EXPECT_EQ(scripts() - before, 2 + 1);
  before = scripts();
  held.Acquire();  // A resource unit.
  held.Stats();
  EXPECT_EQ(scripts() - before, 2 + 1);
}

TEST_F(RedisLimitSetTest, AReleaseReturnsOnceSentAndAnotherHostThenGetsTheUnits) {
  auto host1 = RedisLimitStore::Connect(Options());
  auto host2 = RedisLimitStore::Connect(Options());
  LimitSet set1 = Create(host1, {ResourceLimit("connections", 1)});
  LimitSet set2 = Create(host2, {ResourceLimit("connections", 1)});
  for (int i = 0; i < 20; ++i) {
    set1.Acquire().Release();  // Sent, not waited for.
    // The other host's request may reach Redis first: it then waits for the release's message.
    LimitAcquisition other = set2.Acquire({}, kSlack);
    other.Release();
    // This process's own TryAcquire() sees its releases sent before it.
    set2.Acquire({}, kSlack).Release();
    EXPECT_TRUE(set2.TryAcquire().has_value()) << i;
  }
  EXPECT_EQ(set1.Stats().at("connections").in_use, 0);
  EXPECT_TRUE(warnings_.messages().empty());
}

TEST_F(RedisLimitSetTest, DestroyingASetFlushesItsPendingReleases) {
  auto reader = RedisLimitStore::Connect(Options());
  LimitSet observer = Create(reader, {ResourceLimit("connections", 50)});
  for (int round = 0; round < 5; ++round) {
    auto store = RedisLimitStore::Connect(Options());
    std::optional<LimitSet> set = Create(store, {ResourceLimit("connections", 50)});
    std::vector<LimitAcquisition> held;
    for (int i = 0; i < 50; ++i) held.push_back(set->Acquire({}, kSlack));
    held.clear();  // 50 one-way releases.
    set.reset();
    store.reset();  // Returns once they are done.
    EXPECT_EQ(observer.Stats().at("connections").in_use, 0) << round;
    EXPECT_EQ(observer.Stats().holding, 0) << round;
  }
  EXPECT_TRUE(warnings_.messages().empty());
}

TEST_F(RedisLimitSetTest, AReleaseWhileRedisIsDownWarns) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.command_timeout = absl::Milliseconds(300);
  auto store = RedisLimitStore::Connect(options);
  std::optional<LimitSet> set = Create(store, {ResourceLimit("connections", 2)});
  LimitAcquisition first = set->Acquire();
  LimitAcquisition second = set->Acquire();
  first.Release();  // Opens the one-way connection while Redis is up.
  set->Stats();
  EXPECT_TRUE(warnings_.messages().empty());
  server->Stop();
  second.Release();
  set.reset();  // Waits for the release's outcome.
  const std::vector<std::string> warnings = warnings_.messages();
  ASSERT_EQ(warnings.size(), 1);
  EXPECT_TRUE(absl::StrContains(warnings[0], "a release could not reach it")) << warnings[0];
}

TEST_F(RedisLimitSetTest, OnWarningOfAReleaseMayDropTheLastSetAndStoreHandles) {
  // A watchdog: a set destroyed on the thread its destructor waits for would hang for ever.
  absl::Notification finished;
  std::thread watchdog([&finished] {
    if (!finished.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      std::cerr << "OnWarningOfAReleaseMayDropTheLastSetAndStoreHandles hung" << std::endl;
      std::_Exit(1);
    }
  });
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.command_timeout = absl::Milliseconds(300);
  struct Owned {
    absl::Mutex mu;
    std::shared_ptr<RedisLimitStore> store;
    std::optional<LimitSet> set;
    std::vector<std::string> warnings;
  };
  Owned owned;
  absl::Notification warned;
  owned.store = RedisLimitStore::Connect(options);
  LimitSetOptions set_options;
  set_options.sharing = LimitSharing::kHosts;
  set_options.store = owned.store;
  set_options.name = "set";
  // Drops the last handles of the set and the store ("Redis is down: switch to a local set").
  set_options.on_warning = [owned = &owned, warned = &warned](absl::string_view message) {
    std::shared_ptr<RedisLimitStore> store;
    std::optional<LimitSet> set;
    {
      absl::MutexLock lock(&owned->mu);
      owned->warnings.emplace_back(message);
      store = std::move(owned->store);
      set = std::move(owned->set);
      owned->set.reset();
    }
    set.reset();
    store.reset();
    if (!warned->HasBeenNotified()) warned->Notify();
  };
  owned.set = LimitSet::Create({ResourceLimit("connections", 2)}, std::move(set_options));
  std::optional<Stopped> stopped;
  {
    LimitAcquisition first = owned.set->Acquire();
    LimitAcquisition second = owned.set->Acquire();
    first.Release();  // Opens the one-way connection while Redis is up.
    owned.set->Stats();
    stopped.emplace(*server);        // Sends still succeed; the replies never come.
  }                                  // The second one's release times out on the store's thread.
  absl::SleepFor(absl::Seconds(1));  // Past command_timeout: the outcome is known.
  std::optional<LimitSet> local;
  {
    absl::MutexLock lock(&owned.mu);
    local = owned.set;
  }
  if (local.has_value()) {
    try {
      local->Stats();  // Reports the release's warning, on this thread.
    } catch (const std::exception&) {
    }
    local.reset();
  }
  EXPECT_TRUE(warned.WaitForNotificationWithTimeout(kSlack));
  {
    absl::MutexLock lock(&owned.mu);
    ASSERT_EQ(owned.warnings.size(), 1);
    EXPECT_TRUE(absl::StrContains(owned.warnings[0], "a release could not reach it"))
        << owned.warnings[0];
    EXPECT_FALSE(owned.set.has_value());
    EXPECT_EQ(owned.store, nullptr);
  }
  finished.Notify();
  watchdog.join();
}

TEST_F(RedisLimitSetTest, ACommandInFlightEndsAtTheCallersDeadline) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.command_timeout = absl::Milliseconds(800);
  auto store = RedisLimitStore::Connect(options);
  LimitSet set = Create(store, {RateLimit("tokens", 10, absl::Hours(1))});
  set.Acquire({{"tokens", 1}}).Update({{"tokens", 1}});  // Scripts loaded, connections open.
  redis_internal::RedisClient admin(options);
  ASSERT_EQ(admin.Command({"CLIENT", "PAUSE", "10000"}).str(), "OK");
  // Shorter than command_timeout: cut at the caller's deadline, not granted, TimeoutError.
  absl::Time start = absl::Now();
  EXPECT_THROW(set.Acquire({{"tokens", 1}}, absl::Milliseconds(200)), TimeoutError);
  absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(195));
  EXPECT_LT(took, absl::Milliseconds(200) + kSlack);
  // No timeout of the caller's: RedisError after command_timeout.
  start = absl::Now();
  EXPECT_THROW(set.Acquire({{"tokens", 1}}, absl::InfiniteDuration()), RedisError);
  took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(795));
  EXPECT_LT(took, absl::Milliseconds(800) + kSlack);
  // A timeout longer than command_timeout: RedisError too.
  EXPECT_THROW(set.Acquire({{"tokens", 1}}, absl::Seconds(10)), RedisError);
}

TEST_F(RedisLimitSetTest, OverUseIsChargedAndReported) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set =
      Create(store, {RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra),
                     RateLimit("bytes", 10, absl::Hours(1), RateLimitAlgorithm::kFixedWindow)});
  {
    LimitAcquisition taken = set.Acquire({{"tokens", 2}, {"bytes", 1}});
    taken.Update({{"tokens", 5}, {"bytes", 4}});
    taken.Update({{"tokens", 5}, {"bytes", 4}});  // Charged once.
  }
  const LimitSetStats stats = set.Stats();
  EXPECT_NEAR(stats.at("tokens").in_use, 5, 0.01);
  EXPECT_EQ(stats.at("bytes").in_use, 4);
  EXPECT_EQ(stats.overuse_reports, 1);
  const std::vector<std::string> warnings = warnings_.messages();
  ASSERT_EQ(warnings.size(), 1);
  EXPECT_TRUE(absl::StrContains(warnings[0], "'tokens' used 5 of 2 requested")) << warnings[0];
}

TEST_F(RedisLimitSetTest, MissingUpdatesAndTimeoutsAreCounted) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet set = Create(store, {RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra),
                                ResourceLimit("connections", 1)});
  {
    LimitAcquisition forgotten = set.Acquire({{"tokens", 1}});
    EXPECT_THROW(set.Acquire({{"tokens", 1}}, absl::Seconds(1)), TimeoutError);
  }  // Released without Update(): a warning.
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.missing_updates, 1);
  EXPECT_EQ(stats.timeouts, 1);
  EXPECT_EQ(stats.acquisitions, 1);
  EXPECT_EQ(stats.waiting, 0);
}

TEST_F(RedisLimitSetTest, ADifferentDefinitionOfTheNameIsRejectedNamingBoth) {
  auto store = RedisLimitStore::Connect(Options());
  LimitSet first = Create(store, {RateLimit("tokens", 10, "minute")}, "api");
  try {
    Create(store, {RateLimit("tokens", 20, "minute")}, "api");
    ADD_FAILURE() << "no InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_TRUE(absl::StrContains(error.what(), "tokens=c10w60sli")) << error.what();
    EXPECT_TRUE(absl::StrContains(error.what(), "tokens=c20w60sli")) << error.what();
  }
  // The same definition opens the same set.
  LimitSet again = Create(store, {RateLimit("tokens", 10, "minute")}, "api");
  first.Acquire({{"tokens", 4}}).Update({{"tokens", 4}});
  EXPECT_EQ(again.Stats().at("tokens").in_use, 4);
}

TEST_F(RedisLimitSetTest, AWindowUnderAMicrosecondIsRefused) {
  auto store = RedisLimitStore::Connect(Options());
  try {
    Create(store, {RateLimit("tokens", 10, absl::Nanoseconds(500), RateLimitAlgorithm::kGcra)},
           "tiny");
    ADD_FAILURE() << "no InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_TRUE(absl::StrContains(error.what(), "'tokens' has a window of 500ns")) << error.what();
    EXPECT_TRUE(absl::StrContains(error.what(), "at least 1us")) << error.what();
  }
}

TEST_F(RedisLimitSetTest, TwoStoresShareOneSet) {
  // Two stores: two "hosts" with their own connections.
  auto host1 = RedisLimitStore::Connect(Options());
  auto host2 = RedisLimitStore::Connect(Options());
  LimitSet set1 = Create(host1, {ResourceLimit("connections", 1), CallLimit(5, absl::Hours(1))});
  LimitSet set2 = Create(host2, {ResourceLimit("connections", 1), CallLimit(5, absl::Hours(1))});
  {
    LimitAcquisition held = set1.Acquire();
    std::optional<LimitAcquisition> other;
    std::thread([&] { other = set2.TryAcquire(); }).join();
    EXPECT_FALSE(other.has_value());
  }
  // set1's release is one-way: host2 sees it once Redis applied it.
  EXPECT_TRUE(Eventually([&] { return set2.TryAcquire().has_value(); }));
  EXPECT_EQ(set1.Stats().at("call_count").in_use, 2);
  EXPECT_EQ(set2.Stats().at("call_count").in_use, 2);
}

TEST_F(RedisLimitSetTest, AWaiterIsWokenByAReleaseOnAnotherHost) {
  // Tickets are renewed every lease_ttl / 3 = 20 s: only the release's message can wake the
  // waiter sooner.
  RedisOptions options = Options();
  options.lease_ttl = absl::Seconds(60);
  auto host1 = RedisLimitStore::Connect(options);
  auto host2 = RedisLimitStore::Connect(options);
  LimitSet set1 = Create(host1, {ResourceLimit("connections", 1)});
  LimitSet set2 = Create(host2, {ResourceLimit("connections", 1)});
  std::optional<LimitAcquisition> held = set1.Acquire();
  absl::Time served = absl::InfiniteFuture();
  std::thread waiter([&] {
    LimitAcquisition mine = set2.Acquire({}, absl::Seconds(30));
    served = absl::Now();
  });
  // Queued in Redis; asleep or about to be (a message before it sleeps moves the generation it
  // waits on, so it is not lost).
  ASSERT_TRUE(Eventually([&] { return set1.Stats().waiting == 1; }));
  const absl::Time released = absl::Now();
  held.reset();
  waiter.join();
  EXPECT_LT(served - released, kSlack);
}

TEST_F(RedisLimitSetTest, AcquireAsyncWaitsCancelsAndTimesOut) {
  RedisOptions options = Options();
  // Far beyond the checks below: a ticket left behind would not expire meanwhile.
  options.lease_ttl = absl::Seconds(60);
  auto store = RedisLimitStore::Connect(options);
  LimitSet set = Create(store, {ResourceLimit("connections", 1)});
  std::optional<LimitAcquisition> held = set.Acquire();
  Future<LimitAcquisition> waiting = set.AcquireAsync({}, absl::Seconds(30));
  Future<LimitAcquisition> cancelled = set.AcquireAsync({}, absl::Seconds(30));
  // Both queued before a deadline near enough to cut a take in flight: the helper's takes end by
  // the earliest deadline it serves, and a first take cut short leaves a ticket it never learnt.
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 2; }));
  Future<LimitAcquisition> expiring = set.AcquireAsync({}, absl::Seconds(1));
  EXPECT_THROW(std::move(expiring).Result(kSlack * 2), TimeoutError);
  EXPECT_FALSE(waiting.Done());
  EXPECT_TRUE(cancelled.Cancel());
  held.reset();
  LimitAcquisition got = std::move(waiting).Result(kSlack * 2);
  EXPECT_TRUE(got.held());
  got.Release();
  // The cancelled request left the queue: a try from another thread gets the unit.
  ASSERT_TRUE(Eventually(
      [&] {
        std::optional<LimitAcquisition> now;
        std::thread([&] { now = set.TryAcquire(); }).join();
        return now.has_value();
      },
      absl::Seconds(2) + kSlack));
  EXPECT_EQ(set.Stats().timeouts, 1);
}

TEST_F(RedisLimitSetTest, LeasesOfLiveHoldersAreRenewed) {
  RedisOptions options = Options();
  // Renewed every 1 s: a renewal may come up to 2 s late (a loaded machine, sanitizers).
  options.lease_ttl = absl::Seconds(3);
  auto store = RedisLimitStore::Connect(options);
  LimitSet set = Create(store, {ResourceLimit("connections", 1)});
  LimitAcquisition held = set.Acquire();
  absl::SleepFor(absl::Milliseconds(7500));  // Two and a half TTLs: renewed meanwhile.
  std::optional<LimitAcquisition> other;
  std::thread([&] { other = set.TryAcquire(); }).join();
  EXPECT_FALSE(other.has_value());
  EXPECT_EQ(set.Stats().recovered_holders, 0);
}

TEST_F(RedisLimitSetTest, RedisDownFailsClosedWithinTheTimeoutAndRecovers) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.command_timeout = absl::Milliseconds(500);
  auto store = RedisLimitStore::Connect(options);
  LimitSet set =
      Create(store, {ResourceLimit("connections", 1),
                     RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra)});
  LimitAcquisition across = set.Acquire({{"tokens", 1}});  // Held across the restart.
  across.Update({{"tokens", 1}});
  server->Stop();
  const absl::Time start = absl::Now();
  EXPECT_THROW(set.Acquire({{"tokens", 1}}, absl::Seconds(5)), RedisError);
  EXPECT_THROW(set.TryAcquire({{"tokens", 1}}), RedisError);
  EXPECT_THROW(set.AcquireAsync({{"tokens", 1}}).Result(kSlack), RedisError);
  EXPECT_LT(absl::Now() - start, kSlack);
  // Back (empty: no persistence), with the scripts loaded again and new connections.
  server->Restart();
  std::optional<LimitAcquisition> again;
  ASSERT_TRUE(Eventually([&] {
    try {
      again = set.TryAcquire({{"tokens", 1}});
      return again.has_value();
    } catch (const RedisError&) {
      return false;  // Within reconnect_backoff of the last failed attempt.
    }
  }));
  again->Update({{"tokens", 1}});
  EXPECT_NEAR(set.Stats().at("tokens").in_use, 1, 0.01);
  EXPECT_EQ(set.Stats().at("connections").in_use, 1);
  // The restart lost the lease of the acquisition held across it: its release says so.
  EXPECT_TRUE(warnings_.messages().empty());
  across.Release();
  // Stats() waits for the releases sent before it (one-way) and their warnings.
  EXPECT_EQ(set.Stats().at("connections").in_use, 1);  // `again`'s unit stays counted.
  const std::vector<std::string> warnings = warnings_.messages();
  ASSERT_EQ(warnings.size(), 1);
  EXPECT_TRUE(absl::StrContains(warnings[0], "had expired")) << warnings[0];
}

TEST_F(RedisLimitSetTest, RedisDownFailsOpenWithOneWarningPerOutage) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.failure = RedisFailure::kFailOpen;
  auto store = RedisLimitStore::Connect(options);
  LimitSet set = Create(store, {ResourceLimit("connections", 1)});
  LimitAcquisition before = set.Acquire();
  server->Stop();
  {
    LimitAcquisition first = set.Acquire();  // Unlimited while Redis is down.
    LimitAcquisition second = set.Acquire();
    EXPECT_TRUE(first.held());
    EXPECT_TRUE(second.held());
    before.Release();  // Cannot reach Redis: the lease expires by itself.
  }
  EXPECT_TRUE(set.AcquireAsync({}).Result(kSlack).held());
  std::vector<std::string> warnings = warnings_.messages();
  ASSERT_EQ(warnings.size(), 1);
  EXPECT_TRUE(absl::StrContains(warnings[0], "unavailable")) << warnings[0];
  server->Restart();
  ASSERT_TRUE(Eventually([&] {
    LimitAcquisition one = set.Acquire();
    return set.Stats().at("connections").in_use == 1;
  }));
  server->Stop();
  set.Acquire();
  EXPECT_EQ(warnings_.messages().size(), 2);  // A second outage.
}

TEST_F(RedisLimitSetTest, FailOpenNeverGrantsOnAConfigurationError) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  const RedisOptions admin_options = Options(server.get());
  redis_internal::RedisClient admin(admin_options);
  // A user that may not run scripts: every take is refused, on every try.
  ASSERT_EQ(
      admin.Command({"ACL", "SETUSER", "plain", "on", ">pw", "~*", "&*", "+@all", "-@scripting"})
          .str(),
      "OK");
  RedisOptions options = admin_options;
  options.user = "plain";
  options.password = "pw";
  options.failure = RedisFailure::kFailOpen;
  LimitSet set = Create(RedisLimitStore::Connect(options), {ResourceLimit("connections", 1)});
  EXPECT_THROW(set.TryAcquire(), RedisConfigError);
  EXPECT_THROW(set.Acquire({{"connections", 1}}, absl::Seconds(1)), RedisConfigError);
  EXPECT_THROW(set.AcquireAsync({}, absl::Seconds(1)).Result(kSlack), RedisConfigError);
  EXPECT_THROW(set.Stats(), RedisConfigError);
  // A script's error reply that lasts (a key of the set overwritten with another type).
  RedisOptions open = admin_options;
  open.failure = RedisFailure::kFailOpen;
  LimitSet typed =
      Create(RedisLimitStore::Connect(open),
             {RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra)}, "typed");
  ASSERT_EQ(admin.Command({"RPUSH", prefix_ + "{typed}:rate:0", "x"}).integer(), 1);
  try {
    typed.TryAcquire({{"tokens", 1}});
    ADD_FAILURE() << "no RedisConfigError";
  } catch (const RedisConfigError& error) {
    EXPECT_TRUE(absl::StrContains(error.what(), "WRONGTYPE")) << error.what();
  }
  EXPECT_THROW(typed.Acquire({{"tokens", 1}}, absl::Seconds(1)), RedisConfigError);
  for (const std::string& warning : warnings_.messages()) {
    EXPECT_FALSE(absl::StrContains(warning, "granting without limits")) << warning;
  }
}

TEST_F(RedisLimitSetTest, ABusyPoolIsNotAnOutageAndDoesNotStopRenewals) {
  RedisOptions options = Options();
  options.pool_size = 1;
  // Long enough that a healthy Redis always answers in time on a loaded machine (sanitizers).
  options.command_timeout = absl::Seconds(2);
  options.lease_ttl = absl::Seconds(3);
  options.failure = RedisFailure::kFailOpen;
  auto core = std::make_shared<limits_internal::redis::StoreCore>(options);
  LimitSetOptions set_options;
  set_options.sharing = LimitSharing::kHosts;
  set_options.name = "busy";
  set_options.on_warning = warnings_.Sink();
  std::shared_ptr<LimitSetBackend> set = limits_internal::redis::RedisSetBackend::Open(
      core, {ResourceLimit("connections", 1)}, set_options);
  const LimitAmount one[] = {{"connections", 1}};
  LimitAcquisition held = set->Acquire(set, one, absl::Seconds(5), /*try_once=*/false);
  ASSERT_TRUE(held.held());
  // Two threads keep the pool's only connection busy (BLPOPs that end at command_timeout).
  std::atomic<bool> stop{false};
  std::vector<std::thread> hogs;
  for (int i = 0; i < 2; ++i) {
    hogs.emplace_back([&] {
      while (!stop.load()) {
        try {
          core->client().Command({"BLPOP", prefix_ + "never", "0"});
        } catch (const RedisError&) {
        }
      }
    });
  }
  // Longer than the lease's TTL: only renewals on a connection of their own keep it.
  int busy = 0;
  const absl::Time end = absl::Now() + absl::Seconds(6);
  while (absl::Now() < end) {
    try {
      LimitAcquisition other = set->Acquire(set, one, absl::ZeroDuration(), /*try_once=*/true);
      EXPECT_FALSE(other.held());  // `held` has the unit: never granted without limits.
    } catch (const redis_internal::RedisPoolBusyError&) {
      ++busy;
    }
  }
  stop = true;
  for (std::thread& hog : hogs) hog.join();
  std::cout << busy << " tries found the pool busy\n";
  const LimitSetStats stats = set->Stats();
  EXPECT_EQ(stats.recovered_holders, 0);
  EXPECT_EQ(stats.limits.at(0).in_use, 1);
  for (const std::string& warning : warnings_.messages()) {
    EXPECT_FALSE(absl::StrContains(warning, "unavailable")) << warning;
  }
}

TEST_F(RedisLimitSetTest, TheDefinitionSurvivesARedisRestart) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  const RedisOptions options = Options(server.get());
  LimitSet set =
      Create(RedisLimitStore::Connect(options), {RateLimit("tokens", 10, "minute")}, "api");
  set.Acquire({{"tokens", 1}}).Update({{"tokens", 1}});
  // Restarted without persistence: the definition is gone; the next take writes it back.
  server->Restart();
  ASSERT_TRUE(Eventually([&] {
    try {
      return set.TryAcquire({{"tokens", 1}}).has_value();
    } catch (const RedisError&) {
      return false;  // Within reconnect_backoff of the last failed attempt.
    }
  }));
  const auto expect_both_named = [](const InvalidOptionError& error) {
    EXPECT_TRUE(absl::StrContains(error.what(), "tokens=c10w60sli")) << error.what();
    EXPECT_TRUE(absl::StrContains(error.what(), "tokens=c20w60sli")) << error.what();
  };
  try {
    Create(RedisLimitStore::Connect(options), {RateLimit("tokens", 20, "minute")}, "api");
    ADD_FAILURE() << "no InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    expect_both_named(error);
  }
  LimitSet same =
      Create(RedisLimitStore::Connect(options), {RateLimit("tokens", 10, "minute")}, "api");
  EXPECT_TRUE(same.TryAcquire({{"tokens", 1}}).has_value());
  // Another host opens the name with other limits before any take wrote the definition back:
  // the takes of the first definition refuse, naming both.
  server->Restart();
  LimitSet other =
      Create(RedisLimitStore::Connect(options), {RateLimit("tokens", 20, "minute")}, "api");
  EXPECT_TRUE(other.TryAcquire({{"tokens", 1}}).has_value());
  std::optional<InvalidOptionError> refused;
  ASSERT_TRUE(Eventually([&] {
    try {
      set.TryAcquire({{"tokens", 1}});
      ADD_FAILURE() << "granted under another definition";
      return true;
    } catch (const InvalidOptionError& error) {
      refused = error;
      return true;
    } catch (const RedisError&) {
      return false;
    }
  }));
  ASSERT_TRUE(refused.has_value());
  expect_both_named(*refused);
  EXPECT_THROW(set.Acquire({{"tokens", 1}}, absl::Seconds(1)), InvalidOptionError);
  EXPECT_THROW(set.AcquireAsync({{"tokens", 1}}).Result(kSlack), InvalidOptionError);
}

TEST_F(RedisLimitSetTest, AStoppedRedisFailsTimedRequestsByTheirDeadline) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.command_timeout = absl::Seconds(5);
  options.lease_ttl = absl::Milliseconds(600);  // The async helper takes again every 200 ms.
  LimitSet set = Create(RedisLimitStore::Connect(options), {ResourceLimit("connections", 1)});
  { LimitAcquisition warm = set.Acquire(); }  // Connections open, scripts loaded.
  std::optional<LimitAcquisition> held = set.Acquire();
  Future<LimitAcquisition> patient = set.AcquireAsync({}, absl::Seconds(20));
  const absl::Time short_deadline = absl::Now() + absl::Milliseconds(1500);
  Future<LimitAcquisition> hasty = set.AcquireAsync({}, absl::Milliseconds(1500));
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 2; }));  // Both queued in Redis.
  {
    Stopped stopped(*server);
    absl::Time start = absl::Now();
    EXPECT_THROW(set.Acquire({{"connections", 1}}, absl::Milliseconds(300)), TimeoutError);
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(300) + absl::Seconds(1));
    start = absl::Now();
    EXPECT_THROW(set.AcquireAsync({}, absl::Milliseconds(300)).Result(kSlack * 2), TimeoutError);
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(300) + absl::Seconds(1));
    // The helper's take for `patient` hangs: it is cut at `hasty`'s deadline (not command_timeout
    // later), and `hasty` fails then.
    EXPECT_THROW(std::move(hasty).Result(kSlack * 4), TimeoutError);
    EXPECT_LT(absl::Now() - short_deadline, absl::Seconds(1));
  }
  held.reset();
  try {
    std::move(patient).Result(absl::Seconds(30));
  } catch (const std::exception&) {
    // Either outcome is fine once Redis answers again.
  }
}

TEST_F(RedisLimitSetTest, TheLastTryWaitsForReleasesInFlightAtMostItsGrace) {
  std::unique_ptr<RedisServer> server = RedisServer::Start();
  RedisOptions options = Options(server.get());
  options.command_timeout = absl::Seconds(3);
  LimitSet set = Create(RedisLimitStore::Connect(options), {ResourceLimit("connections", 1)});
  std::optional<LimitAcquisition> held = set.Acquire();
  absl::Duration waited;
  std::thread waiter([&] {
    const absl::Time start = absl::Now();
    EXPECT_THROW(set.Acquire({{"connections", 1}}, absl::Milliseconds(800)), TimeoutError);
    waited = absl::Now() - start;
  });
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));  // Queued in Redis.
  {
    Stopped stopped(*server);
    held.reset();  // A release in flight: its reply never comes (3 s).
    waiter.join();
  }
  // The last try's flush and take share min(command_timeout, 50 ms) past the deadline.
  EXPECT_LT(waited, absl::Milliseconds(800) + absl::Seconds(1));
}

}  // namespace
}  // namespace concurry

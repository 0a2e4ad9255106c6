#include "limits/limit_pool.h"

#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

LimitSet AccountSet(const std::string& account, int64_t connections = 1) {
  LimitSetOptions options;
  options.config = {{"account", account}};
  return LimitSet::Create({ResourceLimit("connections", connections)}, options);
}

std::vector<std::string> Accounts(const LimitPool& pool, int n) {
  std::vector<std::string> accounts;
  for (int i = 0; i < n; ++i) accounts.push_back(pool.Acquire().config().at("account"));
  return accounts;
}

TEST(LimitPoolTest, RejectsAnEmptyPoolAndNegativeIndexes) {
  try {
    LimitPool::Create({});
    FAIL() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_STREQ(error.what(), "LimitPool requires at least one LimitSet");
  }
  EXPECT_THROW(LimitPool::Create({AccountSet("a")}, {.worker_index = -1}), InvalidOptionError);
  EXPECT_THROW(LimitPool::Create({AccountSet("a")}).WithWorkerIndex(-2), InvalidOptionError);
}

TEST(LimitPoolTest, RejectsSetsWithDifferentKeysNamingThem) {
  // Such a pool used to be accepted, and then every other Acquire() failed.
  const LimitSet tokens = LimitSet::Create(
      {RateLimit("tokens", 100, "minute", RateLimitAlgorithm::kGcra), CallLimit(10, "second")});
  const LimitSet connections =
      LimitSet::Create({RateLimit("tokens", 500, "minute"), ResourceLimit("connections", 2)});
  EXPECT_THAT(
      [&] {
        LimitPool::Create({tokens, tokens, connections});
      },
      ThrowsMessage<InvalidOptionError>(
          "LimitPool: every LimitSet must have the same limit keys, of the same kinds (a "
          "request must suit whichever set is picked); set 0 has [call_count, tokens], "
          "set 2 has [connections, tokens]; set 2 lacks [call_count]; set 2 has "
          "[connections] which set 0 lacks"));
  // The no-op set has no keys.
  EXPECT_THAT(
      [&] {
        LimitPool::Create({LimitSet::NoOp(), tokens});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("set 0 has [], set 1 has [call_count, "
                                                  "tokens]; set 1 has [call_count, "
                                                  "tokens] which set 0 lacks")));
  // Capacities and algorithms may differ (accounts of different tiers); order does not matter.
  const LimitSet bigger = LimitSet::Create(
      {CallLimit(50, "second"), RateLimit("tokens", 9000, "minute", RateLimitAlgorithm::kGcra)});
  EXPECT_EQ(LimitPool::Create({tokens, bigger}).size(), 2u);
  EXPECT_TRUE(LimitPool::Create({LimitSet::NoOp(), LimitSet::Create({})}).no_op());
}

TEST(LimitPoolTest, RejectsSetsWhoseLimitsDifferInKind) {
  const LimitSet rate = LimitSet::Create({RateLimit("gpu", 4, "second")});
  const LimitSet resource = LimitSet::Create({ResourceLimit("gpu", 4)});
  EXPECT_THAT(
      [&] {
        LimitPool::Create({rate, resource});
      },
      ThrowsMessage<InvalidOptionError>(
          HasSubstr("set 0 has [gpu], set 1 has [gpu]; 'gpu' is a rate limit in set 0 "
                    "but a resource limit in set 1")));
}

TEST(LimitPoolTest, RejectsAnUnknownBalancing) {
  EXPECT_THAT(
      [] {
        LimitPool::Create({AccountSet("a")}, {.balancing = static_cast<LimitPoolBalancing>(7)});
      },
      ThrowsMessage<InvalidOptionError>(
          "LimitPoolOptions::balancing: unknown value 7; allowed: kRoundRobin, kRandom"));
  EXPECT_EQ(LimitPoolBalancingName(static_cast<LimitPoolBalancing>(7)), "unknown");
}

TEST(LimitPoolTest, RejectsANegativeTimeoutBeforePicking) {
  const LimitPool pool = LimitPool::Create({AccountSet("a"), AccountSet("b")});
  EXPECT_THAT([&] { pool.Acquire({}, -absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitPool::Acquire: timeout must be >= 0 (or infinite), got -1s"));
  EXPECT_THAT([&] { pool.AcquireAsync({}, -absl::Milliseconds(5)); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitPool::AcquireAsync: timeout must be >= 0 (or infinite), got -5ms"));
  EXPECT_EQ(pool.Stats().picks, (std::vector<int64_t>{0, 0}));  // No pick was spent.
  EXPECT_EQ(pool.Acquire({}, absl::ZeroDuration()).config().at("account"), "a");
}

TEST(LimitPoolTest, RoundRobinStartsAtTheWorkerIndexAndCarriesTheSetsConfig) {
  const std::vector<LimitSet> sets = {AccountSet("a"), AccountSet("b"), AccountSet("c")};
  EXPECT_EQ(Accounts(LimitPool::Create(sets), 4), (std::vector<std::string>{"a", "b", "c", "a"}));
  const LimitPool second = LimitPool::Create(sets, {.worker_index = 1});
  EXPECT_EQ(Accounts(second, 3), (std::vector<std::string>{"b", "c", "a"}));
  // Offsets larger than the pool wrap.
  EXPECT_EQ(Accounts(LimitPool::Create(sets, {.worker_index = 5}), 2),
            (std::vector<std::string>{"c", "a"}));
  // Per-worker views share the sets but not the position.
  const LimitPool base = LimitPool::Create(sets);
  const LimitPool worker2 = base.WithWorkerIndex(2);
  EXPECT_EQ(Accounts(worker2, 1), std::vector<std::string>{"c"});
  EXPECT_EQ(Accounts(base, 1), std::vector<std::string>{"a"});
  EXPECT_TRUE(worker2[0] == base[0]);
  // Copies share the position.
  const LimitPool copy = base;
  EXPECT_EQ(Accounts(copy, 1), std::vector<std::string>{"b"});
  EXPECT_EQ(Accounts(base, 1), std::vector<std::string>{"c"});
}

TEST(LimitPoolTest, RandomPicksEverySet) {
  const LimitPool pool = LimitPool::Create({AccountSet("a"), AccountSet("b"), AccountSet("c")},
                                           {.balancing = LimitPoolBalancing::kRandom});
  std::set<std::string> seen;
  for (const std::string& account : Accounts(pool, 300)) seen.insert(account);
  EXPECT_EQ(seen, (std::set<std::string>{"a", "b", "c"}));
  const LimitPoolStats stats = pool.Stats();
  ASSERT_EQ(stats.picks.size(), 3u);
  EXPECT_EQ(stats.picks[0] + stats.picks[1] + stats.picks[2], 300);
  for (int64_t picks : stats.picks) EXPECT_GT(picks, 30);  // 100 expected; p(<=30) is ~1e-15.
  EXPECT_EQ(stats.balancing, LimitPoolBalancing::kRandom);
}

TEST(LimitPoolTest, AcquisitionsHoldThePickedSet) {
  const LimitPool pool = LimitPool::Create({AccountSet("a"), AccountSet("b")});
  LimitAcquisition first = pool.Acquire();      // a
  LimitAcquisition second = pool.Acquire();     // b
  EXPECT_FALSE(pool.TryAcquire().has_value());  // a again: its only connection is held.
  EXPECT_FALSE(pool.TryAcquire().has_value());  // b
  first.Release();
  std::optional<LimitAcquisition> third = pool.TryAcquire();  // a
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->config().at("account"), "a");
  EXPECT_EQ(pool.Stats().picks, (std::vector<int64_t>{3, 2}));
  EXPECT_THROW(pool.Acquire({}, absl::ZeroDuration()), TimeoutError);  // b, still held.
}

TEST(LimitPoolTest, IndexingAndTheDefaultPool) {
  const LimitPool pool = LimitPool::Create({AccountSet("a"), AccountSet("b")});
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_EQ(pool[1].config().at("account"), "b");
  EXPECT_THROW(pool[2], InvalidOptionError);
  EXPECT_FALSE(pool.no_op());
  const LimitPool none;
  EXPECT_TRUE(none.no_op());
  EXPECT_EQ(none.size(), 1u);
  LimitAcquisition acquired = none.Acquire({{"anything", 5}});
  acquired.Update({{"anything", 7}});
  EXPECT_TRUE(acquired.held());
}

TEST(LimitPoolTest, AsyncAcquireUsesThePickedSet) {
  const LimitPool pool = LimitPool::Create({AccountSet("a"), AccountSet("b")}, {.worker_index = 1});
  LimitAcquisition acquired = pool.AcquireAsync().Result(absl::Seconds(10));
  EXPECT_EQ(acquired.config().at("account"), "b");
}

}  // namespace
}  // namespace concurry

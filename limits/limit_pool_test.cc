#include "limits/limit_pool.h"

#include <set>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"

namespace concurry {
namespace {

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

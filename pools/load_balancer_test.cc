#include "pools/load_balancer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/error_message.h"

namespace concurry {
namespace {

using ::concurry::testkit::InvalidOptionMessage;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<int> Picks(LoadBalancer& balancer, int count) {
  std::vector<int> picks;
  for (int i = 0; i < count; ++i) picks.push_back(balancer.Pick());
  return picks;
}

TEST(RoundRobinTest, CyclesFromTheOffset) {
  auto plain = MakeLoadBalancer(LoadBalancing::kRoundRobin, 3);
  EXPECT_THAT(Picks(*plain, 7), ElementsAre(0, 1, 2, 0, 1, 2, 0));
  auto offset = MakeLoadBalancer(LoadBalancing::kRoundRobin, 3, {.offset = 4});
  EXPECT_THAT(Picks(*offset, 4), ElementsAre(1, 2, 0, 1));
  const LoadBalancerStats stats = offset->Stats();
  EXPECT_EQ(stats.algorithm, "RoundRobin");
  EXPECT_EQ(stats.total_dispatched, 4);
  EXPECT_EQ(stats.offset, 1);
  EXPECT_TRUE(stats.active_calls.empty());
  EXPECT_TRUE(stats.total_calls.empty());
}

TEST(LeastActiveLoadTest, PicksTheFewestInFlightWithTiesToTheLowestIndex) {
  auto balancer = MakeLoadBalancer(LoadBalancing::kLeastActiveLoad, 3);
  EXPECT_THAT(Picks(*balancer, 4), ElementsAre(0, 1, 2, 0));  // Active: 2, 1, 1.
  balancer->RecordComplete(1);                                // Active: 2, 0, 1.
  EXPECT_EQ(balancer->Pick(), 1);                             // Active: 2, 1, 1.
  balancer->RecordComplete(2);
  balancer->RecordComplete(2);  // No matching start: stays at 0.
  LoadBalancerStats stats = balancer->Stats();
  EXPECT_EQ(stats.algorithm, "LeastActiveLoad");
  EXPECT_THAT(stats.active_calls, ElementsAre(2, 1, 0));
  EXPECT_EQ(stats.total_active, 3);
  EXPECT_EQ(stats.total_dispatched, 5);
  EXPECT_EQ(balancer->Pick(), 2);
}

TEST(LeastActiveLoadTest, FastCallsNeverQueueBehindASlowOne) {
  // The seed's mixed workload on 3 workers: one slow call, then fast calls that each finish
  // before the next starts.
  auto balancer = MakeLoadBalancer(LoadBalancing::kLeastActiveLoad, 3);
  const int slow = balancer->Pick();
  EXPECT_EQ(slow, 0);
  for (int i = 0; i < 100; ++i) {
    const int fast = balancer->Pick();
    EXPECT_NE(fast, slow) << "fast call " << i;
    balancer->RecordComplete(fast);
  }
  EXPECT_THAT(balancer->Stats().active_calls, ElementsAre(1, 0, 0));
}

TEST(LeastTotalLoadTest, PicksTheFewestStartedWhateverCompleted) {
  auto balancer = MakeLoadBalancer(LoadBalancing::kLeastTotalLoad, 3);
  EXPECT_THAT(Picks(*balancer, 2), ElementsAre(0, 1));
  balancer->RecordComplete(0);  // Completion does not change the lifetime count.
  EXPECT_THAT(Picks(*balancer, 4), ElementsAre(2, 0, 1, 2));
  const LoadBalancerStats stats = balancer->Stats();
  EXPECT_EQ(stats.algorithm, "LeastTotalLoad");
  EXPECT_THAT(stats.total_calls, ElementsAre(2, 2, 2));
  EXPECT_EQ(stats.sum_total_calls, 6);
  EXPECT_EQ(stats.total_dispatched, 6);
}

TEST(RandomTest, ASeedFixesTheSequenceAndPicksAreUniform) {
  auto a = MakeLoadBalancer(LoadBalancing::kRandom, 3, {.seed = 42});
  auto b = MakeLoadBalancer(LoadBalancing::kRandom, 3, {.seed = 42});
  std::vector<int> counts(3);
  for (int i = 0; i < 30000; ++i) {
    const int pick = a->Pick();
    ASSERT_EQ(pick, b->Pick());
    ASSERT_GE(pick, 0);
    ASSERT_LT(pick, 3);
    ++counts[pick];
  }
  for (int c : counts) {
    EXPECT_GT(c, 9500);
    EXPECT_LT(c, 10500);
  }
  EXPECT_EQ(a->Stats().algorithm, "Random");
  EXPECT_EQ(a->Stats().total_dispatched, 30000);
  // A different seed gives a different sequence.
  auto c = MakeLoadBalancer(LoadBalancing::kRandom, 1000, {.seed = 43});
  auto d = MakeLoadBalancer(LoadBalancing::kRandom, 1000, {.seed = 42});
  EXPECT_NE(Picks(*c, 20), Picks(*d, 20));
}

TEST(LoadBalancerTest, ParsesConcurryNamesAndAliases) {
  const std::pair<const char*, LoadBalancing> cases[] = {
      {"rr", LoadBalancing::kRoundRobin},
      {"round_robin", LoadBalancing::kRoundRobin},
      {"RoundRobin", LoadBalancing::kRoundRobin},
      {"active", LoadBalancing::kLeastActiveLoad},
      {"least_active", LoadBalancing::kLeastActiveLoad},
      {"LeastActiveLoad", LoadBalancing::kLeastActiveLoad},
      {"total", LoadBalancing::kLeastTotalLoad},
      {"least_total", LoadBalancing::kLeastTotalLoad},
      {"LeastTotalLoad", LoadBalancing::kLeastTotalLoad},
      {"rand", LoadBalancing::kRandom},
      {" Random ", LoadBalancing::kRandom},
  };
  for (const auto& [text, expected] : cases) {
    LoadBalancing parsed;
    std::string error;
    ASSERT_TRUE(AbslParseFlag(text, &parsed, &error)) << text;
    EXPECT_EQ(parsed, expected) << text;
  }
  LoadBalancing parsed;
  std::string error;
  EXPECT_FALSE(AbslParseFlag("fastest", &parsed, &error));
  EXPECT_EQ(error,
            "unknown load balancing \"fastest\"; expected round_robin (rr), least_active (active), "
            "least_total (total) or random (rand)");
  EXPECT_EQ(AbslUnparseFlag(LoadBalancing::kLeastTotalLoad), "least_total");
}

TEST(LoadBalancerTest, RejectsBadInputSayingWhatIsAllowed) {
  EXPECT_EQ(InvalidOptionMessage([] { MakeLoadBalancer(LoadBalancing::kRoundRobin, 0); }),
            "MakeLoadBalancer: num_workers is 0; num_workers must be positive (>= 1)");
  EXPECT_THAT(InvalidOptionMessage([] { MakeLoadBalancer(LoadBalancing::kRandom, -3); }),
              HasSubstr("num_workers is -3"));
  EXPECT_EQ(
      InvalidOptionMessage([] { MakeLoadBalancer(LoadBalancing::kRoundRobin, 2, {.offset = -1}); }),
      "MakeLoadBalancer: offset is -1; allowed: >= 0");
  EXPECT_THAT(InvalidOptionMessage([] { MakeLoadBalancer(static_cast<LoadBalancing>(9), 2); }),
              HasSubstr("balancing: unknown value 9; allowed: kRoundRobin"));
  for (LoadBalancing balancing : {LoadBalancing::kRoundRobin, LoadBalancing::kLeastActiveLoad,
                                  LoadBalancing::kLeastTotalLoad, LoadBalancing::kRandom}) {
    auto balancer = MakeLoadBalancer(balancing, 3);
    EXPECT_THAT(InvalidOptionMessage([&] { balancer->RecordComplete(3); }),
                HasSubstr("::RecordComplete: worker index 3 is out of range; allowed: 0 to 2"));
    EXPECT_THAT(InvalidOptionMessage([&] { balancer->RecordComplete(-1); }),
                HasSubstr("worker index -1 is out of range"));
  }
}

TEST(LoadBalancerTest, CountsStayExactUnderConcurrentPicks) {
  for (LoadBalancing balancing : {LoadBalancing::kRoundRobin, LoadBalancing::kLeastActiveLoad,
                                  LoadBalancing::kLeastTotalLoad, LoadBalancing::kRandom}) {
    auto balancer = MakeLoadBalancer(balancing, 4);
    constexpr int kThreads = 4;
    constexpr int kPicks = 10000;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < kPicks; ++i) balancer->RecordComplete(balancer->Pick());
      });
    }
    for (auto& thread : threads) thread.join();
    const LoadBalancerStats stats = balancer->Stats();
    EXPECT_EQ(stats.total_dispatched, kThreads * kPicks) << stats.algorithm;
    EXPECT_EQ(stats.total_active, 0) << stats.algorithm;
    if (balancing == LoadBalancing::kLeastTotalLoad) {
      EXPECT_EQ(stats.sum_total_calls, kThreads * kPicks);
    }
  }
}

}  // namespace
}  // namespace concurry

#include "sync/as_completed.h"

#include <map>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

static_assert(std::ranges::input_range<AsCompletedRange<size_t, int>>);

struct CustomError : std::runtime_error {
  CustomError() : std::runtime_error("custom") {}
};

std::vector<Future<int>> FuturesOf(std::vector<Promise<int>>& promises) {
  std::vector<Future<int>> futures;
  for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
  return futures;
}

TEST(AsCompletedTest, YieldsInCompletionOrder) {
  std::vector<Promise<int>> promises(3);
  auto range = AsCompleted(FuturesOf(promises));
  promises[2].SetValue(20);
  promises[0].SetValue(0);
  promises[1].SetValue(10);
  std::vector<std::pair<size_t, int>> seen;
  for (auto& [index, outcome] : range) seen.emplace_back(index, outcome.value());
  EXPECT_THAT(seen, ElementsAre(std::pair<size_t, int>(2, 20), std::pair<size_t, int>(0, 0),
                                std::pair<size_t, int>(1, 10)));
}

TEST(AsCompletedTest, FollowsTheOrderInWhichAnExecutorRunsTasks) {
  testkit::ManualExecutor executor;
  Future<int> first = Async(executor, [] { return 1; });
  Future<int> second = Async(executor, [] { return 2; });
  Future<int> third = Async(executor, [] { return 3; });
  auto range = AsCompleted(std::vector<Future<int>>{third, first, second});
  ASSERT_TRUE(executor.RunOne());  // `first`, at index 1.
  auto it = range.begin();
  EXPECT_EQ(it->key, 1u);
  EXPECT_EQ(it->outcome.value(), 1);
  ASSERT_TRUE(executor.RunOne());  // `second`, at index 2.
  ++it;
  EXPECT_EQ(it->key, 2u);
  ASSERT_TRUE(executor.RunOne());  // `third`, at index 0.
  ++it;
  EXPECT_EQ(it->key, 0u);
  ++it;
  EXPECT_TRUE(it == range.end());
}

TEST(AsCompletedTest, BlocksUntilTheNextCompletionFromAnotherThread) {
  std::vector<Promise<int>> promises(3);
  auto range = AsCompleted(FuturesOf(promises));
  std::thread producer([&] {
    promises[1].SetValue(1);
    promises[2].SetValue(2);
    promises[0].SetValue(0);
  });
  std::vector<size_t> order;
  for (auto& item : range) order.push_back(item.key);
  producer.join();
  EXPECT_THAT(order, ElementsAre(1, 2, 0));  // The producer's order, whatever the interleaving.
}

TEST(AsCompletedTest, YieldsAlreadyDoneFuturesFirstInInputOrder) {
  Promise<int> pending;
  auto range = AsCompleted(
      std::vector<Future<int>>{pending.GetFuture(), MakeReadyFuture(1), MakeReadyFuture(2)});
  auto it = range.begin();
  EXPECT_EQ(it->key, 1u);
  ++it;
  EXPECT_EQ(it->key, 2u);
  pending.SetValue(0);
  ++it;
  EXPECT_EQ(it->key, 0u);
}

TEST(AsCompletedTest, YieldsErrorsAsOutcomesWithTheirOriginalType) {
  auto range = AsCompleted(std::vector<Future<int>>{MakeFailedFuture<int>(CustomError())});
  auto it = range.begin();
  EXPECT_FALSE(it->outcome.ok());
  EXPECT_THROW(it->outcome.value(), CustomError);
}

TEST(AsCompletedTest, MovesValuesOutOfFuturesItOwns) {
  std::vector<Future<std::unique_ptr<int>>> futures;
  futures.push_back(MakeReadyFuture(std::make_unique<int>(4)));
  for (auto& [index, outcome] : AsCompleted(std::move(futures))) {
    std::unique_ptr<int> value = std::move(outcome).value();
    EXPECT_EQ(*value, 4);
  }
}

TEST(AsCompletedTest, EmptyInputEndsAtOnce) {
  auto range = AsCompleted(std::vector<Future<int>>());
  EXPECT_TRUE(range.begin() == range.end());
  EXPECT_EQ(range.size(), 0u);
}

TEST(AsCompletedTest, MapYieldsKeys) {
  std::map<std::string, Promise<int>> promises;
  std::map<std::string, Future<int>> futures;
  for (const char* key : {"a", "b", "c"}) futures[key] = promises[key].GetFuture();
  auto range = AsCompleted(std::move(futures));
  promises["c"].SetValue(3);
  promises["a"].SetValue(1);
  promises["b"].SetError(std::make_exception_ptr(CustomError()));
  std::vector<std::string> keys;
  for (auto& [key, outcome] : range) keys.push_back(key);
  EXPECT_THAT(keys, ElementsAre("c", "a", "b"));
}

TEST(AsCompletedTest, FlatHashMapYieldsKeys) {
  absl::flat_hash_map<int, Future<std::string>> futures;
  futures[1] = MakeReadyFuture(std::string("one"));
  futures[2] = MakeReadyFuture(std::string("two"));
  std::vector<std::pair<int, std::string>> seen;
  for (auto& [key, outcome] : AsCompleted(std::move(futures))) {
    seen.emplace_back(key, outcome.value());
  }
  EXPECT_THAT(seen, UnorderedElementsAre(std::pair<int, std::string>(1, "one"),
                                         std::pair<int, std::string>(2, "two")));
}

TEST(AsCompletedTest, TimeoutBoundsTheWholeIterationOnTheInjectedClock) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(3);
  auto range =
      AsCompleted(FuturesOf(promises), {.timeout = absl::Milliseconds(10), .clock = &clock});
  promises[0].SetValue(0);
  auto it = range.begin();
  EXPECT_EQ(it->key, 0u);
  clock.Advance(absl::Milliseconds(4));
  std::string message;
  std::thread consumer([&] {
    try {
      ++it;
    } catch (const TimeoutError& e) {
      message = e.what();
    }
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Milliseconds(5));  // 9 ms since AsCompleted: not yet.
  EXPECT_EQ(clock.NumWaiters(), 1);
  clock.Advance(absl::Milliseconds(1));
  consumer.join();
  EXPECT_THAT(message, HasSubstr("AsCompleted: timed out after 10ms; yielded 1 of 3"));
}

TEST(AsCompletedTest, YieldsWhatCompletedBeforeReportingTheTimeout) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(2);
  auto range = AsCompleted(FuturesOf(promises), {.timeout = absl::ZeroDuration(), .clock = &clock});
  promises[1].SetValue(1);
  auto it = range.begin();
  EXPECT_EQ(it->key, 1u);
  EXPECT_THROW(++it, TimeoutError);
}

TEST(AsCompletedTest, ATimeoutCancelsThePendingFuturesOnlyWhenAsked) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(3);
  {
    auto range =
        AsCompleted(FuturesOf(promises), {.timeout = absl::ZeroDuration(), .clock = &clock});
    EXPECT_THROW(range.begin(), TimeoutError);
  }
  for (Promise<int>& p : promises) EXPECT_FALSE(p.IsCancelled());
  promises[1].SetValue(1);
  auto range = AsCompleted(
      FuturesOf(promises),
      {.timeout = absl::Milliseconds(5), .clock = &clock, .cancel_pending_on_timeout = true});
  auto it = range.begin();
  EXPECT_EQ(it->key, 1u);
  clock.Advance(absl::Milliseconds(5));
  EXPECT_THROW(++it, TimeoutError);
  EXPECT_TRUE(promises[0].IsCancelled());
  EXPECT_TRUE(promises[2].IsCancelled());
  // Iterating on yields the cancelled futures.
  ++it;
  EXPECT_THROW(it->outcome.value(), CancelledError);
}

TEST(AsCompletedTest, BreakingEarlyThenDestroyingPromisesIsSafe) {
  auto promises = std::make_unique<std::vector<Promise<int>>>(3);
  {
    auto range = AsCompleted(FuturesOf(*promises));
    (*promises)[1].SetValue(1);
    for (auto& item : range) {
      EXPECT_EQ(item.key, 1u);
      break;
    }
  }  // The range removes its callbacks from the two pending futures.
  (*promises)[0].SetValue(0);
  promises.reset();  // Breaks the last promise: no callback of the range may run.
}

TEST(AsCompletedTest, DestroyingTheRangeWhileFuturesCompleteOnAnotherThreadIsSafe) {
  for (int round = 0; round < 100; ++round) {
    std::vector<Promise<int>> promises(8);
    std::vector<Future<int>> futures = FuturesOf(promises);
    std::thread producer([&] {
      for (Promise<int>& p : promises) p.SetValue(1);
    });
    {
      auto range = AsCompleted(std::move(futures));
      range.begin();
    }
    producer.join();
  }
}

TEST(AsCompletedTest, RejectsBadInput) {
  const auto message = [](auto fn) {
    try {
      fn();
    } catch (const InvalidOptionError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message([] {
                AsCompleted(std::vector<Future<int>>{MakeReadyFuture(1), Future<int>()});
              }),
              HasSubstr("AsCompleted: future at index 1 is invalid"));
  EXPECT_THAT(message([] {
                AsCompleted(std::map<std::string, Future<int>>{{"k", {}}});
              }),
              HasSubstr("AsCompleted: future at key \"k\" is invalid"));
  EXPECT_THAT(message([] {
                AsCompleted(std::vector<Future<int>>{MakeReadyFuture(1)},
                            {.timeout = absl::Milliseconds(-5)});
              }),
              HasSubstr("AsCompleted: timeout must be >= 0"));
}

}  // namespace
}  // namespace concurry

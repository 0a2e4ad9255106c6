#include "sync/as_completed_async.h"

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/async_testing.h"
#include "testing/fake_clock.h"
#include "testing/live_allocations.h"
#include "testing/manual_executor.h"

namespace concurry {
namespace {

using ::concurry::async_testing::FuturesOf;
using ::concurry::async_testing::RunCoro;
using ::concurry::async_testing::Runner;
using ::concurry::testkit::FakeClock;
using ::concurry::testkit::LiveAllocations;
using ::concurry::testkit::ManualExecutor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

struct CustomError : std::runtime_error {
  CustomError() : std::runtime_error("custom") {}
};

// Drains `completions` and returns {key, value} in the order given (-1 for an error).
template <typename Key>
Coro<std::vector<std::pair<Key, int>>> Drain(AsyncCompletions<Key, int> completions) {
  std::vector<std::pair<Key, int>> seen;
  while (true) {
    std::optional<Completion<Key, int>> item = co_await completions.Next();
    if (!item.has_value()) break;
    seen.emplace_back(item->key, item->outcome.ok() ? item->outcome.value() : -1);
  }
  co_return seen;
}

TEST(AsCompletedAsyncTest, GivesCompletionsInCompletionOrderThroughTheScheduler) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  Future<std::vector<std::pair<size_t, int>>> out =
      Spawn(executor, Drain(AsCompletedAsync(FuturesOf(promises))));
  executor.RunAll();
  std::thread([&] { promises[2].SetValue(20); }).join();
  EXPECT_EQ(executor.pending(), 1u);  // The completion only posted the next step.
  executor.RunAll();
  promises[0].SetValue(0);
  executor.RunAll();
  promises[1].SetValue(10);
  executor.RunAll();
  EXPECT_THAT(out.Result(), ElementsAre(Pair(2u, 20), Pair(0u, 0), Pair(1u, 10)));
}

TEST(AsCompletedAsyncTest, GivesAlreadyDoneFuturesFirstInInputOrderThenNullopt) {
  std::vector<Promise<int>> promises(3);
  promises[2].SetValue(2);
  promises[1].SetValue(1);
  auto body = [](std::vector<Future<int>> futures,
                 Promise<int>* last) -> Coro<std::vector<size_t>> {
    auto completions = AsCompletedAsync(std::move(futures));
    EXPECT_EQ(completions.size(), 3u);
    std::vector<size_t> keys;
    std::optional<Completion<size_t, int>> first = co_await completions.Next();
    keys.push_back(first->key);
    std::optional<Completion<size_t, int>> second = co_await completions.Next();
    keys.push_back(second->key);
    EXPECT_EQ(completions.remaining(), 1u);
    last->SetValue(0);
    std::optional<Completion<size_t, int>> third = co_await completions.Next();
    keys.push_back(third->key);
    std::optional<Completion<size_t, int>> end = co_await completions.Next();
    EXPECT_FALSE(end.has_value());
    std::optional<Completion<size_t, int>> still_end = co_await completions.Next();
    EXPECT_FALSE(still_end.has_value());
    co_return keys;
  };
  EXPECT_THAT(SyncWait(body(FuturesOf(promises), &promises[0])), ElementsAre(1, 2, 0));
}

TEST(AsCompletedAsyncTest, GivesErrorsAsOutcomesWithTheirOriginalType) {
  auto body = []() -> Coro<void> {
    auto completions = AsCompletedAsync(
        std::vector<Future<int>>{MakeFailedFuture<int>(CustomError()), MakeReadyFuture(3)});
    std::optional<Completion<size_t, int>> failed = co_await completions.Next();
    EXPECT_EQ(failed->key, 0u);
    EXPECT_THROW(failed->outcome.value(), CustomError);
    std::optional<Completion<size_t, int>> fine = co_await completions.Next();
    EXPECT_EQ(std::move(fine->outcome).value(), 3);
  };
  SyncWait(body());
}

TEST(AsCompletedAsyncTest, EmptyInputEndsAtOnce) {
  EXPECT_TRUE(SyncWait(Drain(AsCompletedAsync(std::vector<Future<int>>()))).empty());
}

TEST(AsCompletedAsyncTest, MapsGiveKeys) {
  std::map<std::string, Future<int>> futures = {{"a", MakeReadyFuture(1)},
                                                {"b", MakeReadyFuture(2)}};
  EXPECT_THAT(SyncWait(Drain(AsCompletedAsync(std::move(futures)))),
              ElementsAre(Pair("a", 1), Pair("b", 2)));
  Promise<int> later;
  absl::flat_hash_map<int, Future<int>> by_id = {{7, later.GetFuture()}, {8, MakeReadyFuture(8)}};
  std::thread completer([&] { later.SetValue(7); });
  EXPECT_THAT(SyncWait(Drain(AsCompletedAsync(std::move(by_id)))),
              UnorderedElementsAre(Pair(7, 7), Pair(8, 8)));
  completer.join();
}

TEST(AsCompletedAsyncTest, MapsWithOptionsGiveKeysThenTimeOutAndCancelWhenAsked) {
  FakeClock clock;
  Promise<int> never;
  AsCompletedOptions options;
  options.timeout = absl::Seconds(2);
  options.clock = &clock;
  options.cancel_pending_on_timeout = true;
  std::map<std::string, Future<int>> futures = {{"done", MakeReadyFuture(1)},
                                                {"never", never.GetFuture()}};
  auto body = [](AsyncCompletions<std::string, int> completions,
                 std::string* message) -> Coro<std::vector<std::string>> {
    std::vector<std::string> keys;
    try {
      while (true) {
        std::optional<Completion<std::string, int>> item = co_await completions.Next();
        if (!item.has_value()) break;
        keys.push_back(item->key);
      }
    } catch (const TimeoutError& e) {
      *message = e.what();
    }
    co_return keys;
  };
  std::string message;
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(2));
  });
  EXPECT_THAT(SyncWait(body(AsCompletedAsync(std::move(futures), options), &message)),
              ElementsAre("done"));
  advancer.join();
  EXPECT_EQ(message, "AsCompletedAsync: timed out after 2s; yielded 1 of 2");
  EXPECT_TRUE(never.IsCancelled());
}

TEST(AsCompletedAsyncTest, TimeoutBoundsTheWholeIterationOnTheSchedulersClock) {
  FakeClock clock;
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  promises[0].SetValue(0);
  std::string message;
  auto body = [](std::vector<Future<int>> futures, FakeClock* clock,
                 std::string* message) -> Coro<size_t> {
    // Made inside the coroutine's step: the timeout starts now, on the scheduler's clock.
    auto completions = AsCompletedAsync(std::move(futures), {.timeout = absl::Milliseconds(10)});
    std::optional<Completion<size_t, int>> first = co_await completions.Next();
    EXPECT_EQ(first->key, 0u);
    clock->Advance(absl::Milliseconds(4));
    try {
      std::optional<Completion<size_t, int>> never = co_await completions.Next();
      ADD_FAILURE() << "got key " << never->key;
    } catch (const TimeoutError& e) {
      *message = e.what();
    }
    co_return completions.remaining();
  };
  Future<size_t> out = Spawn(executor, body(FuturesOf(promises), &clock, &message), clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Milliseconds(5));  // 9 ms since AsCompletedAsync: not yet.
  clock.BlockUntilWaiters(1);
  EXPECT_EQ(executor.pending(), 0u);
  clock.Advance(absl::Milliseconds(1));
  executor.BlockUntilPending(1);
  executor.RunAll();
  EXPECT_EQ(out.Result(), 2u);
  EXPECT_THAT(message, HasSubstr("AsCompletedAsync: timed out after 10ms; yielded 1 of 3"));
  // A timeout leaves the pending futures running.
  EXPECT_FALSE(promises[1].IsCancelled());
  EXPECT_FALSE(promises[2].IsCancelled());
}

TEST(AsCompletedAsyncTest, AfterATimeoutNextStillGivesWhatCompletedMeanwhile) {
  FakeClock clock;
  std::vector<Promise<int>> promises(2);
  auto body = [](std::vector<Future<int>> futures, FakeClock* clock,
                 Promise<int>* late) -> Coro<size_t> {
    auto completions =
        AsCompletedAsync(std::move(futures), {.timeout = absl::ZeroDuration(), .clock = clock});
    bool timed_out = false;
    try {
      std::optional<Completion<size_t, int>> none = co_await completions.Next();
    } catch (const TimeoutError&) {
      timed_out = true;
    }
    EXPECT_TRUE(timed_out);
    late->SetValue(1);
    std::optional<Completion<size_t, int>> item = co_await completions.Next();
    co_return item->key;
  };
  EXPECT_EQ(SyncWait(body(FuturesOf(promises), &clock, &promises[1]), clock), 1u);
}

TEST(AsCompletedAsyncTest, CancelPendingOnTimeoutCancelsWhatHasNotCompleted) {
  FakeClock clock;
  std::vector<Promise<int>> promises(3);
  promises[1].SetValue(1);
  auto body = [](std::vector<Future<int>> futures, FakeClock* clock) -> Coro<void> {
    auto completions = AsCompletedAsync(
        std::move(futures),
        {.timeout = absl::Seconds(1), .clock = clock, .cancel_pending_on_timeout = true});
    std::optional<Completion<size_t, int>> done = co_await completions.Next();
    EXPECT_EQ(done->key, 1u);
    clock->Advance(absl::Seconds(1));
    bool timed_out = false;
    try {
      std::optional<Completion<size_t, int>> none = co_await completions.Next();
    } catch (const TimeoutError&) {
      timed_out = true;
    }
    EXPECT_TRUE(timed_out);
    // The cancelled futures come next, as cancelled.
    std::optional<Completion<size_t, int>> cancelled = co_await completions.Next();
    EXPECT_THROW(cancelled->outcome.value(), CancelledError);
  };
  SyncWait(body(FuturesOf(promises), &clock), clock);
  EXPECT_TRUE(promises[0].IsCancelled());
  EXPECT_TRUE(promises[2].IsCancelled());
  EXPECT_FALSE(promises[1].IsCancelled());
}

TEST(AsCompletedAsyncTest, CancellingTheCoroutineInNextEndsTheWaitAndLeavesTheFuturesAlone) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(2);
  Future<std::vector<std::pair<size_t, int>>> out =
      Spawn(executor, Drain(AsCompletedAsync(FuturesOf(promises))));
  executor.RunAll();
  promises[1].SetValue(1);
  executor.RunAll();  // Gives index 1, waits in the second Next().
  EXPECT_TRUE(out.Cancel());
  executor.RunAll();
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_FALSE(promises[0].IsCancelled());
  EXPECT_TRUE(promises[0].SetValue(0));  // No callback is left to run.
  EXPECT_EQ(executor.pending(), 0u);
}

// A callback left on the pending future, or a timer entry left behind, would pile up: the
// pending future and the clock outlive every round.
TEST(AsCompletedAsyncTest, CancelledAndTimedOutIterationsLeaveNothingBehind) {
  FakeClock clock;
  ManualExecutor executor;
  Promise<int> promise;
  const Future<int> pending = promise.GetFuture();
  const std::vector<Future<int>> futures = {MakeReadyFuture(1), pending};
  AsCompletedOptions long_timeout;
  long_timeout.timeout = absl::Hours(1);
  AsCompletedOptions no_time;
  no_time.timeout = absl::ZeroDuration();
  auto cancelled_iteration = [&] {
    Future<std::vector<std::pair<size_t, int>>> out =
        Spawn(executor, Drain(AsCompletedAsync(futures, long_timeout)), clock);
    executor.RunAll();  // Gives index 0, waits in the second Next().
    ASSERT_FALSE(out.Done());
    out.Cancel();
    executor.RunAll();
    ASSERT_THROW(out.Result(), CancelledError);
  };
  auto timed_out_iteration = [&] {
    Future<std::vector<std::pair<size_t, int>>> out =
        Spawn(executor, Drain(AsCompletedAsync(futures, no_time)), clock);
    executor.RunAll();
    ASSERT_THROW(out.Result(), TimeoutError);
  };
  cancelled_iteration();  // Warms up lazily allocated state (the clock's timer).
  timed_out_iteration();
  const int64_t before = LiveAllocations();
  for (int i = 0; i < 50; ++i) {
    cancelled_iteration();
    timed_out_iteration();
  }
  // Only growth counts: an earlier test's thread may still free its state meanwhile (a timer
  // destroyed by its own callback ends on its detached thread); a leak adds one per round.
  EXPECT_LE(LiveAllocations(), before);
  EXPECT_FALSE(promise.IsCancelled());
}

TEST(AsCompletedAsyncTest, RejectsBadInputAtTheCall) {
  try {
    auto unused = AsCompletedAsync(std::vector<Future<int>>{Future<int>()});
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("AsCompletedAsync: future at index 0 is invalid"));
  }
  EXPECT_THROW(AsCompletedAsync(std::vector<Future<int>>(), {.timeout = -absl::Seconds(1)}),
               InvalidOptionError);
  std::map<std::string, Future<int>> map = {{"m", Future<int>()}};
  EXPECT_THROW(AsCompletedAsync(std::move(map)), InvalidOptionError);
}

class AsCompletedAsyncRunnerTest : public ::testing::TestWithParam<Runner> {};

TEST_P(AsCompletedAsyncRunnerTest, GivesEveryCompletionFromAnotherThread) {
  std::vector<Promise<int>> promises(6);
  std::vector<Future<int>> futures = FuturesOf(promises);
  std::thread completer([&] {
    for (int i = 5; i >= 0; --i) {
      if (i == 3) {
        promises[i].SetError(std::make_exception_ptr(CustomError()));
      } else {
        promises[i].SetValue(i);
      }
    }
  });
  std::vector<std::pair<size_t, int>> seen =
      RunCoro(GetParam(), Drain(AsCompletedAsync(std::move(futures))));
  completer.join();
  EXPECT_THAT(seen, UnorderedElementsAre(Pair(0u, 0), Pair(1u, 1), Pair(2u, 2), Pair(3u, -1),
                                         Pair(4u, 4), Pair(5u, 5)));
}

INSTANTIATE_TEST_SUITE_P(Runners, AsCompletedAsyncRunnerTest,
                         ::testing::Values(Runner::kSyncWait, Runner::kThreadPool),
                         [](const auto& info) { return async_testing::RunnerName(info.param); });

}  // namespace
}  // namespace concurry

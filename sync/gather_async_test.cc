#include "sync/gather_async.h"

#include <cstdint>
#include <exception>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/async_testing.h"
#include "sync/outcome.h"
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
using ::testing::IsEmpty;
using ::testing::Pair;

struct CustomError : std::runtime_error {
  explicit CustomError(const std::string& what) : std::runtime_error(what) {}
};

TEST(GatherAsyncTest, ResumesThroughItsSchedulerWithValuesInInputOrder) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  Future<std::vector<int>> out = Spawn(executor, GatherAsync(FuturesOf(promises)));
  executor.RunAll();
  std::thread([&] {
    promises[2].SetValue(20);
    promises[0].SetValue(0);
    promises[1].SetValue(10);
  }).join();
  EXPECT_FALSE(out.Done());  // The completions only posted the next step.
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_THAT(out.Result(), ElementsAre(0, 10, 20));
}

TEST(GatherAsyncTest, EmptyInputGivesAnEmptyResult) {
  EXPECT_THAT(SyncWait(GatherAsync(std::vector<Future<int>>())), IsEmpty());
}

TEST(GatherAsyncTest, RethrowsTheFirstFailureInInputOrderWithItsOriginalType) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  Future<std::vector<int>> out = Spawn(executor, GatherAsync(FuturesOf(promises)));
  executor.RunAll();
  promises[2].SetError(std::make_exception_ptr(std::out_of_range("later")));
  promises[1].SetError(std::make_exception_ptr(CustomError("first in input order")));
  promises[0].SetValue(0);
  executor.RunAll();
  try {
    out.Result();
    FAIL() << "no error";
  } catch (const CustomError& e) {
    EXPECT_STREQ(e.what(), "first in input order");
  }
  Promise<int> cancelled;
  cancelled.Cancel();
  EXPECT_THROW(SyncWait(GatherAsync(std::vector<Future<int>>{cancelled.GetFuture()})),
               CancelledError);
}

TEST(GatherAsyncTest, VoidFuturesOnlyWaitAndRethrow) {
  std::vector<Future<void>> fine = {MakeReadyFuture(), MakeReadyFuture()};
  SyncWait(GatherAsync(fine));
  std::vector<Future<void>> failing = {MakeReadyFuture(),
                                       MakeFailedFuture<void>(CustomError("void failed"))};
  EXPECT_THROW(SyncWait(GatherAsync(failing)), CustomError);
  std::map<int, Future<void>> by_key = {{1, MakeReadyFuture()},
                                        {2, MakeFailedFuture<void>(CustomError("map void"))}};
  EXPECT_THROW(SyncWait(GatherAsync(std::move(by_key))), CustomError);
}

TEST(GatherAsyncTest, MapKeepsKeysAndContainerType) {
  std::map<std::string, Future<int>> futures = {{"a", MakeReadyFuture(1)},
                                                {"b", MakeReadyFuture(2)}};
  std::map<std::string, int> values = SyncWait(GatherAsync(std::move(futures)));
  EXPECT_THAT(values, ElementsAre(Pair("a", 1), Pair("b", 2)));

  Promise<std::string> later;
  absl::flat_hash_map<int, Future<std::string>> by_id = {{7, later.GetFuture()}};
  std::thread completer([&] { later.SetValue("seven"); });
  absl::flat_hash_map<int, std::string> names = SyncWait(GatherAsync(std::move(by_id)));
  completer.join();
  EXPECT_EQ(names.at(7), "seven");
}

TEST(GatherAsyncTest, TupleOfMixedTypesIncludingVoid) {
  Promise<std::string> name;
  Future<std::string> name_future = name.GetFuture();
  std::thread completer([&] { name.SetValue("x"); });
  auto [n, s, nothing] = SyncWait(GatherAsync(MakeReadyFuture(1), name_future, MakeReadyFuture()));
  completer.join();
  EXPECT_EQ(n, 1);
  EXPECT_EQ(s, "x");
  EXPECT_EQ(nothing, std::monostate());
  std::tuple<int, double> both = SyncWait(GatherAsync(
      std::make_tuple(MakeReadyFuture(2), MakeReadyFuture(0.5)), {.timeout = absl::Seconds(1)}));
  EXPECT_EQ(both, std::make_tuple(2, 0.5));
  EXPECT_THROW(SyncWait(GatherAsync(MakeReadyFuture(1), MakeFailedFuture<int>(CustomError("t")))),
               CustomError);
}

TEST(GatherAsyncTest, TimesOutOnTheSchedulersClockNamingHowManyCompleted) {
  FakeClock clock;
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  Future<std::vector<int>> out =
      Spawn(executor, GatherAsync(FuturesOf(promises), {.timeout = absl::Milliseconds(10)}), clock);
  executor.RunAll();
  promises[0].SetValue(0);
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Milliseconds(9));
  clock.BlockUntilWaiters(1);
  EXPECT_EQ(executor.pending(), 0u);
  clock.Advance(absl::Milliseconds(1));
  executor.BlockUntilPending(1);
  executor.RunAll();
  try {
    out.Result();
    FAIL() << "no timeout";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("GatherAsync: timed out after 10ms; 1 of 3 futures completed"));
  }
  // A timeout leaves the pending futures running.
  EXPECT_FALSE(promises[1].IsCancelled());
  EXPECT_TRUE(promises[2].SetValue(2));
}

TEST(GatherAsyncTest, CancelPendingOnTimeoutCancelsThePendingFutures) {
  FakeClock clock;
  ManualExecutor executor;
  std::vector<Promise<int>> promises(2);
  promises[1].SetValue(1);
  Future<std::vector<Outcome<int>>> out =
      Spawn(executor,
            GatherSettledAsync(FuturesOf(promises),
                               {.timeout = absl::Seconds(1), .cancel_pending_on_timeout = true}),
            clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(1));
  executor.BlockUntilPending(1);
  executor.RunAll();
  EXPECT_THROW(out.Result(), TimeoutError);
  EXPECT_TRUE(promises[0].IsCancelled());
}

TEST(GatherAsyncTest, RejectsBadInputAtTheCall) {
  try {
    auto unused = GatherAsync(std::vector<Future<int>>{MakeReadyFuture(1), Future<int>()});
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("GatherAsync: future at index 1 is invalid"));
  }
  EXPECT_THROW(auto unused = GatherAsync(std::vector<Future<int>>{MakeReadyFuture(1)},
                                         {.timeout = -absl::Seconds(1)}),
               InvalidOptionError);
  std::map<std::string, Future<int>> map = {{"k", Future<int>()}};
  try {
    auto unused = GatherSettledAsync(std::move(map));
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("GatherSettledAsync: future at key \"k\" is invalid"));
  }
  try {
    auto unused = GatherAsync(MakeReadyFuture(1), Future<std::string>());
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("GatherAsync: future at index 1 is invalid"));
  }
}

TEST(GatherAsyncTest, CancellingTheCoroutineEndsTheWaitAndLeavesTheFuturesAlone) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(2);
  Future<std::vector<int>> out = Spawn(executor, GatherAsync(FuturesOf(promises)));
  executor.RunAll();
  promises[0].SetValue(0);
  EXPECT_TRUE(out.Cancel());
  executor.RunAll();
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_FALSE(promises[1].IsCancelled());
  EXPECT_TRUE(promises[1].SetValue(1));
  EXPECT_EQ(executor.pending(), 0u);  // No callback was left to wake anything.
}

// A callback left on the pending future, or a timer entry left behind, would pile up: the
// pending future and the clock outlive every round.
TEST(GatherAsyncTest, CancelledAndTimedOutGathersLeaveNothingBehind) {
  FakeClock clock;
  ManualExecutor executor;
  Promise<int> promise;
  const Future<int> pending = promise.GetFuture();
  const std::vector<Future<int>> futures = {MakeReadyFuture(1), pending};
  const std::map<int, Future<int>> by_key = {{1, MakeReadyFuture(1)}, {2, pending}};
  GatherOptions long_timeout;
  long_timeout.timeout = absl::Hours(1);
  GatherOptions no_time;
  no_time.timeout = absl::ZeroDuration();
  auto cancelled_gather = [&] {
    Future<std::vector<int>> out = Spawn(executor, GatherAsync(futures, long_timeout), clock);
    Future<std::map<int, Outcome<int>>> settled =
        Spawn(executor, GatherSettledAsync(by_key, long_timeout), clock);
    executor.RunAll();
    ASSERT_FALSE(out.Done());
    ASSERT_FALSE(settled.Done());
    out.Cancel();
    settled.Cancel();
    executor.RunAll();
    ASSERT_THROW(out.Result(), CancelledError);
    ASSERT_THROW(settled.Result(), CancelledError);
  };
  auto timed_out_gather = [&] {
    Future<std::vector<int>> out = Spawn(executor, GatherAsync(futures, no_time), clock);
    executor.RunAll();
    ASSERT_THROW(out.Result(), TimeoutError);
  };
  cancelled_gather();  // Warms up lazily allocated state (the clock's timer).
  timed_out_gather();
  const int64_t before = LiveAllocations();
  for (int i = 0; i < 50; ++i) {
    cancelled_gather();
    timed_out_gather();
  }
  // Only growth counts: an earlier test's thread may still free its state meanwhile (a timer
  // destroyed by its own callback ends on its detached thread); a leak adds one per round.
  EXPECT_LE(LiveAllocations(), before);
  EXPECT_FALSE(promise.IsCancelled());
}

TEST(GatherAsyncTest, ReportsProgressEvenWhenEverythingIsReady) {
  std::vector<int64_t> reported;
  SyncWait(GatherAsync(std::vector<Future<int>>{MakeReadyFuture(1), MakeReadyFuture(2)},
                       {.progress = {.callback = [&](int64_t completed, int64_t, absl::Duration) {
                          reported.push_back(completed);
                        }}}));
  EXPECT_THAT(reported, ElementsAre(2));
}

TEST(GatherSettledAsyncTest, KeepsEachOutcomeInItsSlotWithItsType) {
  std::vector<Future<int>> futures = {MakeReadyFuture(1),
                                      MakeFailedFuture<int>(CustomError("bad"))};
  std::vector<Outcome<int>> outcomes = SyncWait(GatherSettledAsync(std::move(futures)));
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0].value(), 1);
  EXPECT_THROW(outcomes[1].value(), CustomError);
  EXPECT_EQ(outcomes[1].error_message(), "bad");
}

TEST(GatherSettledAsyncTest, MapAndTupleForms) {
  std::map<int, Future<int>> map = {{1, MakeReadyFuture(1)},
                                    {2, MakeFailedFuture<int>(CustomError("two"))}};
  std::map<int, Outcome<int>> by_key = SyncWait(GatherSettledAsync(std::move(map)));
  EXPECT_TRUE(by_key.at(1).ok());
  EXPECT_THROW(by_key.at(2).value(), CustomError);

  Promise<void> cancelled;
  cancelled.Cancel();
  auto [number, nothing] =
      SyncWait(GatherSettledAsync(MakeReadyFuture(std::string("s")), cancelled.GetFuture()));
  EXPECT_EQ(number.value(), "s");
  EXPECT_THROW(nothing.value(), CancelledError);
  auto tuple = SyncWait(GatherSettledAsync(std::make_tuple(MakeReadyFuture(3))));
  EXPECT_EQ(std::get<0>(tuple).value(), 3);
}

TEST(GatherAsyncTest, EveryFormCanBeAwaitedDirectlyInsideACoroutine) {
  auto body = [](Future<int> a, Future<std::string> b) -> Coro<std::string> {
    // Inputs in named variables: GCC 12 rejects or miscompiles braced temporaries inside a
    // co_await expression.
    std::vector<Future<int>> two = {a, a};
    std::vector<int> values = co_await GatherAsync(two);
    std::map<std::string, Future<int>> map = {{"k", a}};
    std::map<std::string, int> by_key = co_await GatherAsync(std::move(map));
    auto [n, s] = co_await GatherAsync(a, b);
    std::tuple<Outcome<int>> settled = co_await GatherSettledAsync(std::make_tuple(a));
    const GatherOptions options{.timeout = absl::Seconds(30)};
    std::vector<Future<int>> one = {a};
    std::vector<Outcome<int>> outcomes = co_await GatherSettledAsync(one, options);
    co_return s + std::to_string(values.size() + by_key.size() + n + std::get<0>(settled).value() +
                                 outcomes.size());
  };
  Promise<std::string> b;
  std::thread completer([&] { b.SetValue("b"); });
  EXPECT_EQ(SyncWait(body(MakeReadyFuture(1), b.GetFuture())), "b6");
  completer.join();
}

TEST(GatherAsyncTest, ATimeoutAsTheArgumentInsideACoroutine) {
  FakeClock clock;
  Promise<int> pending;
  auto body = [](Future<int> ready, Future<int> pending) -> Coro<std::string> {
    std::vector<Future<int>> ready_only = {ready};
    std::vector<int> values = co_await GatherAsync(ready_only, absl::Seconds(1));
    std::map<int, Future<int>> map = {{1, ready}};
    std::map<int, Outcome<int>> settled = co_await GatherSettledAsync(map, absl::Seconds(1));
    std::tuple<int> one = co_await GatherAsync(std::make_tuple(ready), absl::Seconds(1));
    std::string message;
    try {
      std::vector<Future<int>> both = {ready, pending};
      std::vector<int> never = co_await GatherAsync(both, absl::Seconds(3));
    } catch (const TimeoutError& e) {
      message = e.what();
    }
    co_return message + " " + std::to_string(values[0] + settled.at(1).value() + std::get<0>(one));
  };
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(3));
  });
  const std::string out = SyncWait(body(MakeReadyFuture(1), pending.GetFuture()), clock);
  advancer.join();
  EXPECT_EQ(out, "GatherAsync: timed out after 3s; 1 of 2 futures completed 3");
}

TEST(GatherAsyncTest, MapWithOptionsKeepsKeysAndCancelsPendingOnTimeoutWhenAsked) {
  FakeClock clock;
  Promise<int> never;
  auto body = [](Future<int> pending) -> Coro<std::string> {
    GatherOptions options;
    options.timeout = absl::Seconds(1);
    std::map<std::string, Future<int>> ready = {{"a", MakeReadyFuture(1)},
                                                {"b", MakeReadyFuture(2)}};
    std::map<std::string, int> values = co_await GatherAsync(ready, options);
    EXPECT_THAT(values, ElementsAre(Pair("a", 1), Pair("b", 2)));
    options.cancel_pending_on_timeout = true;
    std::map<std::string, Future<int>> with_pending = {{"a", MakeReadyFuture(1)}, {"p", pending}};
    try {
      std::map<std::string, int> never_given = co_await GatherAsync(with_pending, options);
      ADD_FAILURE() << "no timeout";
    } catch (const TimeoutError& e) {
      co_return e.what();
    }
    co_return "";
  };
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(1));
  });
  EXPECT_EQ(SyncWait(body(never.GetFuture()), clock),
            "GatherAsync: timed out after 1s; 1 of 2 futures completed");
  advancer.join();
  EXPECT_TRUE(never.IsCancelled());
}

TEST(GatherSettledAsyncTest, ATimeoutAsTheArgumentForVectorsAndTuples) {
  FakeClock clock;
  Promise<int> failing;
  failing.SetError(std::make_exception_ptr(CustomError("bad")));
  Promise<int> never;
  auto body = [](Future<int> failed, Future<int> pending) -> Coro<std::string> {
    std::vector<Future<int>> settled_input = {MakeReadyFuture(1), failed};
    std::vector<Outcome<int>> outcomes =
        co_await GatherSettledAsync(settled_input, absl::Seconds(1));
    EXPECT_EQ(outcomes[0].value(), 1);
    EXPECT_THROW(outcomes[1].value(), CustomError);
    std::tuple<Outcome<int>, Outcome<std::string>> pair = co_await GatherSettledAsync(
        std::make_tuple(failed, MakeReadyFuture(std::string("s"))), absl::Seconds(1));
    EXPECT_THROW(std::get<0>(pair).value(), CustomError);
    EXPECT_EQ(std::get<1>(pair).value(), "s");
    std::vector<Future<int>> with_pending = {MakeReadyFuture(1), pending};
    try {
      std::vector<Outcome<int>> never_given =
          co_await GatherSettledAsync(with_pending, absl::Seconds(2));
      ADD_FAILURE() << "no timeout";
    } catch (const TimeoutError& e) {
      co_return e.what();
    }
    co_return "";
  };
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(2));
  });
  EXPECT_EQ(SyncWait(body(failing.GetFuture(), never.GetFuture()), clock),
            "GatherSettledAsync: timed out after 2s; 1 of 2 futures completed");
  advancer.join();
  EXPECT_FALSE(never.IsCancelled());
}

// Review: `GatherAsync(v, {})` was ambiguous between GatherOptions and the timeout overloads.
TEST(GatherAsyncTest, ABracedSecondArgumentMeansOptions) {
  const std::vector<Future<int>> futures = {MakeReadyFuture(1)};
  const std::map<int, Future<int>> by_key = {{7, MakeReadyFuture(7)}};
  Coro<std::vector<int>> values = GatherAsync(futures, {});
  Coro<std::vector<Outcome<int>>> outcomes =
      GatherSettledAsync(futures, {.timeout = absl::Seconds(1)});
  Coro<std::map<int, int>> keyed = GatherAsync(by_key, {});
  Coro<std::map<int, Outcome<int>>> keyed_outcomes = GatherSettledAsync(by_key, {});
  Coro<std::tuple<int>> one = GatherAsync(std::make_tuple(futures[0]), {});
  Coro<std::tuple<Outcome<int>>> one_outcome = GatherSettledAsync(std::make_tuple(futures[0]), {});
  EXPECT_THAT(SyncWait(std::move(values)), ElementsAre(1));
  EXPECT_EQ(SyncWait(std::move(outcomes)).at(0).value(), 1);
  EXPECT_THAT(SyncWait(std::move(keyed)), ElementsAre(Pair(7, 7)));
  EXPECT_EQ(SyncWait(std::move(keyed_outcomes)).at(7).value(), 7);
  EXPECT_EQ(std::get<0>(SyncWait(std::move(one))), 1);
  EXPECT_EQ(std::get<0>(SyncWait(std::move(one_outcome))).value(), 1);
}

class GatherAsyncRunnerTest : public ::testing::TestWithParam<Runner> {};

TEST_P(GatherAsyncRunnerTest, GathersCompletionsFromAnotherThread) {
  std::vector<Promise<int>> promises(8);
  std::vector<Future<int>> futures = FuturesOf(promises);
  std::thread completer([&] {
    for (int i = 7; i >= 0; --i) promises[i].SetValue(i);
  });
  const std::vector<int> values = RunCoro(GetParam(), GatherAsync(std::move(futures)));
  completer.join();
  EXPECT_THAT(values, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
}

TEST_P(GatherAsyncRunnerTest, SettledOutcomesFromAnotherThread) {
  std::vector<Promise<int>> promises(2);
  std::vector<Future<int>> futures = FuturesOf(promises);
  std::thread completer([&] {
    promises[1].SetError(std::make_exception_ptr(CustomError("remote")));
    promises[0].SetValue(5);
  });
  std::vector<Outcome<int>> outcomes = RunCoro(GetParam(), GatherSettledAsync(std::move(futures)));
  completer.join();
  EXPECT_EQ(outcomes[0].value(), 5);
  EXPECT_THROW(outcomes[1].value(), CustomError);
}

TEST_P(GatherAsyncRunnerTest, TimesOutOnTheRunnersFakeClock) {
  FakeClock clock;
  Promise<int> pending;
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(4));
  });
  EXPECT_THROW(RunCoro(GetParam(),
                       GatherAsync(std::vector<Future<int>>{pending.GetFuture()},
                                   {.timeout = absl::Seconds(4)}),
                       clock),
               TimeoutError);
  advancer.join();
  EXPECT_FALSE(pending.IsCancelled());
}

INSTANTIATE_TEST_SUITE_P(Runners, GatherAsyncRunnerTest,
                         ::testing::Values(Runner::kSyncWait, Runner::kThreadPool),
                         [](const auto& info) { return async_testing::RunnerName(info.param); });

}  // namespace
}  // namespace concurry

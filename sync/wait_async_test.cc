#include "sync/wait_async.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/executor.h"
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
using ::testing::IsEmpty;

struct CustomError : std::runtime_error {
  CustomError() : std::runtime_error("custom") {}
};

TEST(WaitAsyncTest, ResumesThroughItsSchedulerNotOnTheCompletingThread) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(2);
  Future<WaitResult> out = Spawn(executor, WaitAsync(FuturesOf(promises)));
  executor.RunAll();
  std::thread([&] { promises[0].SetValue(0); }).join();
  EXPECT_EQ(executor.pending(), 0u);  // One completion of two: no wake-up.
  std::thread([&] { promises[1].SetValue(1); }).join();
  EXPECT_FALSE(out.Done());  // The last completion only posted the coroutine's next step.
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  const WaitResult r = out.Result();
  EXPECT_THAT(r.done, ElementsAre(0, 1));
  EXPECT_THAT(r.not_done, IsEmpty());
  EXPECT_FALSE(r.timed_out);
}

TEST(WaitAsyncTest, EmptyInputCompletesAtOnce) {
  const WaitResult r = SyncWait(WaitAsync(std::vector<AnyFuture>()));
  EXPECT_THAT(r.done, IsEmpty());
  EXPECT_FALSE(r.timed_out);
}

TEST(WaitAsyncTest, FirstCompletedResumesAtTheFirstCompletion) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  Future<WaitResult> out =
      Spawn(executor, WaitAsync(FuturesOf(promises), {.return_when = ReturnWhen::kFirstCompleted}));
  executor.RunAll();
  promises[2].SetValue(2);
  executor.RunAll();
  const WaitResult r = out.Result();
  EXPECT_THAT(r.done, ElementsAre(2));
  EXPECT_THAT(r.not_done, ElementsAre(0, 1));
}

TEST(WaitAsyncTest, FirstExceptionResumesAtTheFirstFailureOrWhenAllSucceed) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  Future<WaitResult> out =
      Spawn(executor, WaitAsync(FuturesOf(promises), {.return_when = ReturnWhen::kFirstException}));
  executor.RunAll();
  promises[0].SetValue(0);
  executor.RunAll();
  EXPECT_FALSE(out.Done());
  promises[1].Cancel();  // A cancellation counts as a failure.
  executor.RunAll();
  EXPECT_THAT(out.Result().done, ElementsAre(0, 1));

  std::vector<Promise<int>> fine(2);
  Future<WaitResult> all =
      Spawn(executor, WaitAsync(FuturesOf(fine), {.return_when = ReturnWhen::kFirstException}));
  executor.RunAll();
  fine[1].SetValue(1);
  fine[0].SetValue(0);
  executor.RunAll();
  EXPECT_THAT(all.Result().done, ElementsAre(0, 1));
}

TEST(WaitAsyncTest, TimesOutExactlyOnTheSchedulersClock) {
  FakeClock clock;
  ManualExecutor executor;
  std::vector<Promise<int>> promises(2);
  Future<WaitResult> out =
      Spawn(executor, WaitAsync(FuturesOf(promises), {.timeout = absl::Milliseconds(10)}), clock);
  executor.RunAll();
  promises[1].SetValue(1);
  clock.BlockUntilWaiters(1);  // The scheduler's timer waits for the deadline.
  clock.Advance(absl::Milliseconds(9));
  clock.BlockUntilWaiters(1);  // Not due: it waits again.
  EXPECT_EQ(executor.pending(), 0u);
  clock.Advance(absl::Milliseconds(1));
  executor.BlockUntilPending(1);
  executor.RunAll();
  const WaitResult r = out.Result();
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.done, ElementsAre(1));
  EXPECT_THAT(r.not_done, ElementsAre(0));
  // A timeout leaves the pending futures running.
  EXPECT_FALSE(promises[0].IsCancelled());
  EXPECT_TRUE(promises[0].SetValue(0));
}

TEST(WaitAsyncTest, CancelPendingOnTimeoutCancelsThePendingFuturesOnly) {
  FakeClock clock;
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  promises[0].SetValue(0);
  Future<WaitResult> out =
      Spawn(executor,
            WaitAsync(FuturesOf(promises),
                      {.timeout = absl::Seconds(1), .cancel_pending_on_timeout = true}),
            clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(1));
  executor.BlockUntilPending(1);
  executor.RunAll();
  const WaitResult r = out.Result();
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.not_done, ElementsAre(1, 2));
  EXPECT_TRUE(promises[1].IsCancelled());
  EXPECT_TRUE(promises[2].IsCancelled());
  EXPECT_FALSE(promises[0].IsCancelled());
}

TEST(WaitAsyncTest, AClockInTheOptionsTimesTheWait) {
  FakeClock scheduler_clock;
  FakeClock wait_clock;
  ManualExecutor executor;
  Promise<int> pending;
  Future<WaitResult> out =
      Spawn(executor,
            WaitAsync({pending.GetFuture()}, {.timeout = absl::Seconds(3), .clock = &wait_clock}),
            scheduler_clock);
  executor.RunAll();
  wait_clock.BlockUntilWaiters(1);
  EXPECT_EQ(scheduler_clock.NumWaiters(), 0);
  wait_clock.Advance(absl::Seconds(3));
  executor.BlockUntilPending(1);
  executor.RunAll();
  EXPECT_TRUE(out.Result().timed_out);
}

TEST(WaitAsyncTest, ZeroTimeoutChecksWithoutSuspending) {
  ManualExecutor executor;
  Promise<int> pending;
  Future<WaitResult> out = Spawn(executor, WaitAsync({pending.GetFuture(), MakeReadyFuture(1)},
                                                     {.timeout = absl::ZeroDuration()}));
  EXPECT_EQ(executor.RunAll(), 1);
  const WaitResult r = out.Result();
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.done, ElementsAre(1));
}

TEST(WaitAsyncTest, WaitsOnFuturesOfDifferentTypesAndOnSpans) {
  Promise<std::string> name;
  name.SetValue("x");
  const WaitResult r =
      SyncWait(WaitAsync({MakeReadyFuture(1), name.GetFuture(), MakeReadyFuture()}));
  EXPECT_THAT(r.done, ElementsAre(0, 1, 2));
  const std::array<AnyFuture, 2> array = {MakeReadyFuture(1), MakeReadyFuture(2.5)};
  EXPECT_THAT(SyncWait(WaitAsync(std::span<const AnyFuture>(array))).done, ElementsAre(0, 1));
}

TEST(WaitAsyncTest, MapResultsNameKeys) {
  Promise<int> pending;
  std::map<std::string, Future<int>> futures = {{"a", MakeReadyFuture(1)},
                                                {"b", pending.GetFuture()}};
  const WaitResultKeyed<std::string> r =
      SyncWait(WaitAsync(futures, {.timeout = absl::ZeroDuration()}));
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.done, ElementsAre("a"));
  EXPECT_THAT(r.not_done, ElementsAre("b"));

  absl::flat_hash_map<int, Future<int>> by_id = {{7, MakeReadyFuture(1)}};
  EXPECT_THAT(SyncWait(WaitAsync(by_id)).done, ElementsAre(7));
}

TEST(WaitAsyncTest, RejectsBadInputAtTheCall) {
  Promise<int> p;
  std::vector<Future<int>> futures = {p.GetFuture(), Future<int>()};
  try {
    auto unused = WaitAsync(futures);
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("WaitAsync: future at index 1 is invalid"));
  }
  EXPECT_THROW(auto unused = WaitAsync({p.GetFuture()}, {.timeout = -absl::Seconds(1)}),
               InvalidOptionError);
  EXPECT_THROW(
      auto unused = WaitAsync({p.GetFuture()}, {.return_when = static_cast<ReturnWhen>(42)}),
      InvalidOptionError);
  std::map<std::string, Future<int>> map = {{"bad", Future<int>()}};
  try {
    auto unused = WaitAsync(map);
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("future at key \"bad\" is invalid"));
  }
}

TEST(WaitAsyncTest, CancellingTheCoroutineEndsTheWaitAndLeavesTheFuturesAlone) {
  FakeClock clock;
  ManualExecutor executor;
  std::vector<Promise<int>> promises(2);
  std::vector<Future<int>> futures = FuturesOf(promises);
  Future<WaitResult> out = Spawn(executor, WaitAsync(futures, {.timeout = absl::Hours(1)}), clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);
  EXPECT_TRUE(out.Cancel());
  EXPECT_EQ(executor.pending(), 1u);  // The cancellation posted the coroutine's last step.
  executor.RunAll();
  EXPECT_THROW(out.Result(), CancelledError);
  for (Promise<int>& p : promises) EXPECT_FALSE(p.IsCancelled());
  promises[0].SetValue(0);  // Late completions find no callback and no coroutine.
  promises[1].SetValue(1);
  EXPECT_EQ(executor.pending(), 0u);
}

TEST(WaitAsyncTest, CancelledAndTimedOutWaitsLeaveNothingBehind) {
  FakeClock clock;
  ManualExecutor executor;
  Promise<int> promise;
  const Future<int> pending = promise.GetFuture();
  const std::vector<Future<int>> futures = {pending, MakeReadyFuture(1)};
  auto cancelled_wait = [&] {
    Future<WaitResult> out =
        Spawn(executor, WaitAsync(futures, {.timeout = absl::Hours(1)}), clock);
    executor.RunAll();
    out.Cancel();
    executor.RunAll();
    ASSERT_THROW(out.Result(), CancelledError);
  };
  auto timed_out_wait = [&] {
    Future<WaitResult> out =
        Spawn(executor, WaitAsync(futures, {.timeout = absl::ZeroDuration()}), clock);
    executor.RunAll();
    ASSERT_TRUE(out.Result().timed_out);
  };
  cancelled_wait();  // Warms up lazily allocated state (the clock's timer).
  timed_out_wait();
  const int64_t before = LiveAllocations();
  for (int i = 0; i < 50; ++i) {
    cancelled_wait();
    timed_out_wait();
  }
  // Only growth counts: an earlier test's thread may still free its state meanwhile (a timer
  // destroyed by its own callback ends on its detached thread); a leak adds one per round.
  EXPECT_LE(LiveAllocations(), before);
}

TEST(WaitAsyncTest, ReportsProgressToTheCallback) {
  ManualExecutor executor;
  std::vector<Promise<int>> promises(3);
  std::vector<int64_t> reported;
  Future<WaitResult> out = Spawn(
      executor,
      WaitAsync(FuturesOf(promises),
                {.progress = {.callback = [&](int64_t completed, int64_t total, absl::Duration) {
                   EXPECT_EQ(total, 3);
                   reported.push_back(completed);
                 }}}));
  executor.RunAll();
  for (Promise<int>& p : promises) {
    p.SetValue(1);
    executor.RunAll();
  }
  out.Result();
  EXPECT_THAT(reported, ElementsAre(1, 2, 3));
}

TEST(WaitAsyncTest, InsideAParentCoroutineItCanBeAwaitedMoreThanOnce) {
  std::vector<Promise<int>> promises(2);
  std::vector<Future<int>> futures = FuturesOf(promises);
  std::thread completer([&] {
    promises[0].SetValue(0);
    promises[1].SetError(std::make_exception_ptr(CustomError()));
  });
  auto parent = [](std::vector<Future<int>> futures) -> Coro<size_t> {
    // Named options: GCC 12 miscompiles a braced options temporary inside a co_await expression.
    const WaitOptions first_done{.return_when = ReturnWhen::kFirstCompleted};
    WaitResult first = co_await WaitAsync(futures, first_done);
    WaitResult all = co_await WaitAsync(futures);
    co_return first.done.size() + all.done.size();
  };
  const size_t n = SyncWait(parent(futures));
  completer.join();
  EXPECT_GE(n, 3u);
  EXPECT_THROW(futures[1].Result(), CustomError);  // The error keeps its type.
}

TEST(WaitAsyncTest, EveryFormCanBeAwaitedDirectlyInsideACoroutine) {
  auto body = [](Future<int> a, Future<std::string> b) -> Coro<size_t> {
    // GCC 12 rejects a braced list inside a co_await expression: make the Coro first.
    Coro<WaitResult> wait_listed = WaitAsync({a, b});
    WaitResult listed = co_await std::move(wait_listed);
    std::vector<Future<int>> vector = {a, a};
    WaitResult from_vector = co_await WaitAsync(vector);
    std::map<int, Future<int>> map = {{1, a}};
    WaitResultKeyed<int> keyed = co_await WaitAsync(map);
    const WaitOptions first{.return_when = ReturnWhen::kFirstCompleted};
    std::vector<AnyFuture> any = {a, b};
    WaitResult with_options = co_await WaitAsync(any, first);
    co_return listed.done.size() + from_vector.done.size() + keyed.done.size() +
        with_options.done.size();
  };
  Promise<std::string> b;
  std::thread completer([&] { b.SetValue("b"); });
  EXPECT_GE(SyncWait(body(MakeReadyFuture(1), b.GetFuture())), 6u);
  completer.join();
}

TEST(WaitAsyncTest, ReturnWhenAndTimeoutAsArgumentsInsideACoroutine) {
  FakeClock clock;
  Promise<int> pending;
  auto body = [](std::vector<Future<int>> futures) -> Coro<WaitResult> {
    WaitResult first = co_await WaitAsync(futures, ReturnWhen::kFirstCompleted);
    EXPECT_THAT(first.done, ElementsAre(1));
    std::map<int, Future<int>> map = {{5, futures[0]}};
    WaitResultKeyed<int> keyed =
        co_await WaitAsync(map, ReturnWhen::kAllCompleted, absl::ZeroDuration());
    EXPECT_THAT(keyed.not_done, ElementsAre(5));
    WaitResult all = co_await WaitAsync(futures, ReturnWhen::kAllCompleted, absl::Seconds(2));
    co_return all;
  };
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(2));
  });
  const WaitResult r = SyncWait(body({pending.GetFuture(), MakeReadyFuture(1)}), clock);
  advancer.join();
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.not_done, ElementsAre(0));
}

TEST(WaitAsyncTest, AnyFutureListWithReturnWhenAndTimeoutAsArguments) {
  FakeClock clock;
  Promise<int> pending;
  auto body = [](std::vector<AnyFuture> any) -> Coro<WaitResult> {
    WaitResult first = co_await WaitAsync(any, ReturnWhen::kFirstCompleted, absl::Seconds(1));
    EXPECT_THAT(first.done, ElementsAre(1));
    EXPECT_FALSE(first.timed_out);
    WaitResult all = co_await WaitAsync(any, ReturnWhen::kAllCompleted, absl::Seconds(2));
    co_return all;
  };
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(2));
  });
  std::vector<AnyFuture> any = {pending.GetFuture(), MakeReadyFuture(std::string("ready"))};
  const WaitResult r = SyncWait(body(std::move(any)), clock);
  advancer.join();
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.done, ElementsAre(1));
  EXPECT_THAT(r.not_done, ElementsAre(0));
  EXPECT_FALSE(pending.IsCancelled());
}

// `WaitAsync(futures, {})` means WaitOptions, not ReturnWhen{}.
TEST(WaitAsyncTest, ABracedSecondArgumentMeansOptions) {
  Promise<int> pending;
  const std::vector<AnyFuture> any = {MakeReadyFuture(1), pending.GetFuture()};
  const std::map<int, Future<int>> by_key = {{7, MakeReadyFuture(7)}};
  Coro<WaitResult> wait = WaitAsync(any, {});
  Coro<WaitResult> timed = WaitAsync(any, {.timeout = absl::ZeroDuration()});
  Coro<WaitResultKeyed<int>> keyed = WaitAsync(by_key, {});
  EXPECT_TRUE(SyncWait(std::move(timed)).timed_out);
  EXPECT_THAT(SyncWait(std::move(keyed)).done, ElementsAre(7));
  std::thread completer([&] { pending.SetValue(2); });
  EXPECT_THAT(SyncWait(std::move(wait)).done, ElementsAre(0, 1));
  completer.join();
}

// An executor that queues tasks until told to run them and, once stopped, rejects new ones with
// StoppedError, as a shut-down pool does. Not thread-safe except Submit's rejection.
class StoppingExecutor final : public Executor {
 public:
  void Submit(Task task) override {
    if (stopped.load()) throw StoppedError("test executor: stopped");
    tasks.push_back(std::move(task));
  }
  void RunQueued() {
    while (!tasks.empty()) {
      Task task = std::move(tasks.front());
      tasks.pop_front();
      task();
    }
  }
  std::atomic<bool> stopped{false};
  std::deque<Task> tasks;
};

// A waiting coroutine whose resumption its executor rejects stops: the wait ends with the error
// every await of a stopped coroutine throws (StoppedError), and the futures are left alone.
TEST(WaitAsyncTest, AStoppedCoroutineEndsItsWaitWithStoppedError) {
  FakeClock clock;
  StoppingExecutor executor;
  Promise<int> pending;
  bool saw_stopped = false;
  auto body = [](Future<int> future, bool* saw_stopped) -> Coro<int> {
    WaitOptions options;
    options.timeout = absl::Seconds(1);
    std::vector<Future<int>> futures = {std::move(future)};
    try {
      WaitResult r = co_await WaitAsync(futures, options);
      ADD_FAILURE() << "resumed normally, timed_out=" << r.timed_out;
    } catch (const StoppedError&) {
      *saw_stopped = true;
      throw;
    }
    co_return 0;
  };
  Future<int> out = Spawn(executor, body(pending.GetFuture(), &saw_stopped), clock);
  executor.RunQueued();
  ASSERT_FALSE(out.Done());
  executor.stopped.store(true);
  clock.Advance(absl::Seconds(1));  // The timer's wake-up is rejected: the coroutine stops.
  EXPECT_THROW(out.Result(), StoppedError);
  EXPECT_TRUE(saw_stopped);
  EXPECT_FALSE(pending.IsCancelled());
  EXPECT_TRUE(executor.tasks.empty());
}

class WaitAsyncRunnerTest : public ::testing::TestWithParam<Runner> {};

TEST_P(WaitAsyncRunnerTest, WakesOnCompletionsFromAnotherThread) {
  std::vector<Promise<int>> promises(4);
  std::vector<Future<int>> futures = FuturesOf(promises);
  std::thread completer([&] {
    for (Promise<int>& p : promises) p.SetValue(1);
  });
  const WaitResult r = RunCoro(GetParam(), WaitAsync(futures));
  completer.join();
  EXPECT_THAT(r.done, ElementsAre(0, 1, 2, 3));
  EXPECT_FALSE(r.timed_out);
}

TEST_P(WaitAsyncRunnerTest, TimesOutOnTheRunnersFakeClock) {
  FakeClock clock;
  Promise<int> pending;
  std::thread advancer([&] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(2));
  });
  const WaitResult r =
      RunCoro(GetParam(), WaitAsync({pending.GetFuture()}, {.timeout = absl::Seconds(2)}), clock);
  advancer.join();
  EXPECT_TRUE(r.timed_out);
  EXPECT_THAT(r.not_done, ElementsAre(0));
  EXPECT_FALSE(pending.IsCancelled());
}

INSTANTIATE_TEST_SUITE_P(Runners, WaitAsyncRunnerTest,
                         ::testing::Values(Runner::kSyncWait, Runner::kThreadPool),
                         [](const auto& info) { return async_testing::RunnerName(info.param); });

}  // namespace
}  // namespace concurry

#include "futures/coro.h"

#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/thread_pool_executor.h"
#include "futures/timer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"

namespace concurry {
namespace {

using ::concurry::testkit::FakeClock;
using ::concurry::testkit::ManualExecutor;
using ::testing::ElementsAre;

// Counts its destructions: proves that a coroutine's locals were destroyed.
struct DestructorCounter {
  explicit DestructorCounter(int* count) : count(count) {}
  ~DestructorCounter() { ++*count; }
  int* count;
};

Coro<int> Value(int v) { co_return v; }
Coro<void> Nothing() { co_return; }
Coro<int> Throws() {
  throw std::out_of_range("child failed");
  co_return 0;
}

Coro<int> AddChildren() {
  const int a = co_await Value(20);
  co_await Nothing();
  const int b = co_await Value(22);
  co_return a + b;
}

TEST(CoroTest, SyncWaitReturnsTheValueOfNestedChildren) { EXPECT_EQ(SyncWait(AddChildren()), 42); }

TEST(CoroTest, SyncWaitRunsAVoidCoro) {
  int runs = 0;
  auto body = [](int* runs) -> Coro<void> {
    co_await Nothing();
    ++*runs;
  };
  SyncWait(body(&runs));
  EXPECT_EQ(runs, 1);
}

TEST(CoroTest, IsLazyUntilRun) {
  int runs = 0;
  auto make = [](int* runs) -> Coro<int> {
    ++*runs;
    co_return 1;
  };
  Coro<int> coro = make(&runs);
  EXPECT_EQ(runs, 0);
  EXPECT_EQ(SyncWait(std::move(coro)), 1);
  EXPECT_EQ(runs, 1);
}

TEST(CoroTest, ChildErrorKeepsItsType) {
  auto parent = []() -> Coro<int> {
    const int v = co_await Throws();
    co_return v;
  };
  EXPECT_THROW(SyncWait(parent()), std::out_of_range);
}

TEST(CoroTest, ParentCanCatchAChildError) {
  auto parent = []() -> Coro<std::string> {
    std::string what;
    try {
      co_await Throws();
    } catch (const std::out_of_range& e) {
      what = e.what();
    }
    co_return what;
  };
  EXPECT_EQ(SyncWait(parent()), "child failed");
}

Coro<int> One() { co_return 1; }
Coro<long> SumOfReadyChildren(int n) {
  long sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await One();
  co_return sum;
}

// No symmetric transfer: a million children that finish without suspending use constant stack in
// every build (-O0 ASan, -O1 TSan included).
TEST(CoroTest, AMillionReadyChildrenDoNotGrowTheStack) {
  EXPECT_EQ(SyncWait(SumOfReadyChildren(1000000)), 1000000);
}

TEST(CoroTest, InvalidCoroIsRejected) {
  EXPECT_THROW(SyncWait(Coro<int>()), InvalidOptionError);
  ManualExecutor executor;
  EXPECT_THROW(Spawn(executor, Coro<int>()), InvalidOptionError);
}

TEST(CoroTest, SpawnRunsStepsAsTasksOfTheExecutor) {
  ManualExecutor executor;
  Future<int> out = Spawn(executor, AddChildren());
  EXPECT_FALSE(out.Done());
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 42);
}

TEST(CoroTest, SpawnedErrorKeepsItsType) {
  ManualExecutor executor;
  Future<int> out = Spawn(executor, Throws());
  executor.RunAll();
  EXPECT_THROW(out.Result(), std::out_of_range);
}

TEST(CoroTest, CurrentCoroutineExecutorIsTheSpawnExecutor) {
  ManualExecutor executor;
  auto coro = []() -> Coro<Executor*> { co_return &CurrentCoroutineExecutor(); };
  Future<Executor*> out = Spawn(executor, coro());
  executor.RunAll();
  EXPECT_EQ(out.Result(), &executor);
  EXPECT_THROW(CurrentCoroutineExecutor(), InvalidOptionError);
}

Coro<int> AwaitPlusOne(Future<int> in, std::thread::id* resumed_on) {
  const int v = co_await std::move(in);
  *resumed_on = std::this_thread::get_id();
  co_return v + 1;
}

TEST(CoroAwaitFutureTest, ResumesThroughTheSchedulerNotOnTheCompletingThread) {
  ManualExecutor executor;
  Promise<int> p;
  std::thread::id resumed_on;
  Future<int> out = Spawn(executor, AwaitPlusOne(p.GetFuture(), &resumed_on));
  executor.RunAll();
  EXPECT_FALSE(out.Done());
  EXPECT_EQ(executor.pending(), 0u);
  std::thread completer([&p] { p.SetValue(1); });
  completer.join();
  // The completion only posted the next step.
  EXPECT_FALSE(out.Done());
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(out.Result(), 2);
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

TEST(CoroAwaitFutureTest, AReadyFutureDoesNotSuspend) {
  ManualExecutor executor;
  std::thread::id resumed_on;
  Future<int> out = Spawn(executor, AwaitPlusOne(MakeReadyFuture(4), &resumed_on));
  EXPECT_EQ(executor.RunAll(), 1);
  EXPECT_EQ(out.Result(), 5);
}

TEST(CoroAwaitFutureTest, SyncWaitResumesOnItsOwnThread) {
  Promise<int> p;
  std::thread::id resumed_on;
  std::thread completer([&p] { p.SetValue(41); });
  EXPECT_EQ(SyncWait(AwaitPlusOne(p.GetFuture(), &resumed_on)), 42);
  completer.join();
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

TEST(CoroAwaitFutureTest, FailedAndCancelledFuturesThrowAsResultDoes) {
  std::thread::id unused;
  EXPECT_THROW(SyncWait(AwaitPlusOne(MakeFailedFuture<int>(std::invalid_argument("x")), &unused)),
               std::invalid_argument);
  Promise<int> p;
  p.Cancel();
  EXPECT_THROW(SyncWait(AwaitPlusOne(p.GetFuture(), &unused)), CancelledError);
  ManualExecutor executor;
  Promise<int> later;
  Future<int> out = Spawn(executor, AwaitPlusOne(later.GetFuture(), &unused));
  executor.RunAll();
  later.SetError(std::make_exception_ptr(std::domain_error("late")));
  executor.RunAll();
  EXPECT_THROW(out.Result(), std::domain_error);
}

Coro<int> GuardedAwait(Future<int> in, int* destroyed) {
  DestructorCounter guard(destroyed);
  const int v = co_await std::move(in);
  co_return v;
}

TEST(CoroCancelTest, CancelAtASuspensionPointThrowsAndRunsDestructors) {
  ManualExecutor executor;
  Promise<int> p;
  int destroyed = 0;
  Future<int> out = Spawn(executor, GuardedAwait(p.GetFuture(), &destroyed));
  executor.RunAll();
  ASSERT_FALSE(out.Done());
  EXPECT_TRUE(out.Cancel());
  EXPECT_EQ(destroyed, 0);  // The wake-up is a posted step.
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(destroyed, 1);
  EXPECT_THROW(out.Result(), CancelledError);
  // The awaiter held the only consumer handle: the awaited work is withdrawn.
  EXPECT_TRUE(p.IsCancelled());
  EXPECT_FALSE(p.SetValue(1));
}

TEST(CoroCancelTest, ASharedAwaitedFutureIsLeftAlone) {
  ManualExecutor executor;
  Promise<int> p;
  Future<int> shared = p.GetFuture();
  int destroyed = 0;
  Future<int> out = Spawn(executor, GuardedAwait(shared, &destroyed));
  executor.RunAll();
  out.Cancel();
  executor.RunAll();
  EXPECT_EQ(destroyed, 1);
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_FALSE(p.IsCancelled());
  EXPECT_TRUE(p.SetValue(3));
  EXPECT_EQ(shared.Result(), 3);
}

TEST(CoroCancelTest, ALateCompletionAfterCancelIsIgnored) {
  ManualExecutor executor;
  Promise<int> p;
  Future<int> shared = p.GetFuture();
  int destroyed = 0;
  Future<int> out = Spawn(executor, GuardedAwait(shared, &destroyed));
  executor.RunAll();
  out.Cancel();
  p.SetValue(1);  // Loses to the cancellation: no second resumption.
  EXPECT_EQ(executor.RunAll(), 1);
  EXPECT_EQ(executor.pending(), 0u);
  EXPECT_THROW(out.Result(), CancelledError);
}

TEST(CoroCancelTest, ACoroThatCatchesTheCancellationGetsItAgainAtTheNextAwait) {
  ManualExecutor executor;
  Promise<int> p;
  std::string trace;
  auto coro = [](Future<int> in, std::string* trace) -> Coro<void> {
    try {
      co_await std::move(in);
    } catch (const CancelledError&) {
      *trace += "caught;";
    }
    try {
      co_await Value(1);
    } catch (const CancelledError&) {
      *trace += "again;";
    }
  };
  Future<void> out = Spawn(executor, coro(p.GetFuture(), &trace));
  executor.RunAll();
  out.Cancel();
  executor.RunAll();
  EXPECT_EQ(trace, "caught;again;");
  EXPECT_THROW(out.Result(), CancelledError);
}

// Re-review S4: in a coroutine already cancelled, `co_await Async(...)` (a temporary: the await
// holds its only consumer) withdraws the call it just made, then throws; a future someone else
// also holds is left alone.
TEST(CoroCancelTest, AnAwaitInACancelledCoroutineWithdrawsTheFutureItWasHanded) {
  ManualExecutor work;  // Where the awaited calls would run.
  ManualExecutor steps;
  Promise<int> gate;
  Promise<int> shared_source;
  Future<int> shared = shared_source.GetFuture();
  int calls = 0;
  std::string trace;
  auto coro = [](Future<int> gate, Future<int> shared, ManualExecutor* work, int* calls,
                 std::string* trace) -> Coro<void> {
    try {
      co_await std::move(gate);
    } catch (const CancelledError&) {
      *trace += "cancelled;";
    }
    try {
      co_await Async(*work, [calls] { return ++*calls; });
    } catch (const CancelledError&) {
      *trace += "withdrawn;";
    }
    try {
      co_await std::move(shared);
    } catch (const CancelledError&) {
      *trace += "shared;";
    }
  };
  Future<void> out = Spawn(steps, coro(gate.GetFuture(), shared, &work, &calls, &trace));
  steps.RunAll();
  out.Cancel();
  steps.RunAll();
  EXPECT_EQ(trace, "cancelled;withdrawn;shared;");
  EXPECT_THROW(out.Result(), CancelledError);
  work.RunAll();
  EXPECT_EQ(calls, 0);  // The call was cancelled before it ran.
  EXPECT_FALSE(shared_source.IsCancelled());
  EXPECT_TRUE(shared_source.SetValue(1));
  EXPECT_EQ(shared.Result(), 1);
}

TEST(CoroCancelTest, CancelledBeforeItStartsItNeverRuns) {
  ManualExecutor executor;
  int runs = 0;
  auto coro = [](int* runs) -> Coro<void> {
    ++*runs;
    co_return;
  };
  Future<void> out = Spawn(executor, coro(&runs));
  out.Cancel();
  executor.RunAll();
  EXPECT_EQ(runs, 0);
  EXPECT_THROW(out.Result(), CancelledError);
}

// A Future<T>-coroutine keeps resuming on the completing thread when no scheduler runs it
// (future_test.cc pins that); inside a Coro's step it resumes through the scheduler.
TEST(CoroAwaitFutureTest, AFutureCoroutineInsideACoroStepResumesThroughTheScheduler) {
  ManualExecutor executor;
  Promise<int> p;
  auto plain = [](Future<int> in) -> Future<int> {
    const int v = co_await std::move(in);
    co_return v * 10;
  };
  auto outer = [](Future<int> inner) -> Coro<int> {
    const int v = co_await std::move(inner);
    co_return v + 1;
  };
  Future<int> inner;
  auto start = [&]() -> Coro<int> {
    inner = plain(p.GetFuture());  // Runs eagerly, inside this step.
    co_return 0;
  };
  Spawn(executor, start());
  executor.RunAll();
  ASSERT_TRUE(inner.valid());
  Future<int> out = Spawn(executor, outer(inner));
  executor.RunAll();
  std::thread completer([&p] { p.SetValue(4); });
  completer.join();
  EXPECT_FALSE(inner.Done());  // Its resumption is a posted step.
  executor.RunAll();
  EXPECT_EQ(inner.Result(), 40);
  EXPECT_EQ(out.Result(), 41);
}

Coro<int> AddWhenReady(Future<int> gate, int x) {
  const int y = co_await std::move(gate);
  co_return x + y;
}

// Review B2: the closure of a capturing coroutine lambda given to Then lives until the coroutine
// ends, though the continuation that called it is gone after the first step.
TEST(CoroAsyncTest, ThenKeepsACapturingCoroutineLambdaAliveAcrossSuspensions) {
  ManualExecutor executor;
  Promise<int> gate;
  Future<std::string> inner;
  auto start = [](Future<int> g, Future<std::string>* inner) -> Coro<void> {
    *inner = MakeReadyFuture(1).Then([g, s = std::string(64, 'x')](int) -> Coro<std::string> {
      Future<int> copy = g;
      co_await std::move(copy);
      co_return s;
    });
    co_return;
  };
  Future<void> outer = Spawn(executor, start(gate.GetFuture(), &inner));
  executor.RunAll();
  ASSERT_TRUE(outer.Done());
  EXPECT_FALSE(inner.Done());
  gate.SetValue(1);
  executor.RunAll();
  EXPECT_EQ(inner.Result(), std::string(64, 'x'));
}

// A coroutine Then taking its value by const reference reads a kept copy, not the source's value.
TEST(CoroAsyncTest, ThenKeepsTheValueAConstRefCoroutineParameterRefersTo) {
  ManualExecutor executor;
  Promise<int> gate;
  Future<std::string> inner;
  auto start = [](Future<int> g, Future<std::string>* inner) -> Coro<void> {
    Future<std::string> source = MakeReadyFuture(std::string(48, 'y'));
    *inner = source.Then([g](const std::string& v) -> Coro<std::string> {
      Future<int> copy = g;
      co_await std::move(copy);
      co_return v;
    });
    co_return;
  };
  Future<void> outer = Spawn(executor, start(gate.GetFuture(), &inner));
  executor.RunAll();
  gate.SetValue(1);
  executor.RunAll();
  EXPECT_EQ(inner.Result(), std::string(48, 'y'));
}

// CompleteWithInvoke's Coro branch inside a step: the new root runs on the same scheduler and
// keeps it alive after the coroutine that started it has ended.
TEST(CoroAsyncTest, ACoroutineContinuationStartedInAStepOutlivesThatStep) {
  ManualExecutor executor;
  Promise<int> p;
  Future<int> inner;
  auto start = [](Future<int> gate, Future<int>* inner) -> Coro<void> {
    // A plain lambda returning a coroutine of a free function (the capturing coroutine lambda
    // case is ThenKeepsACapturingCoroutineLambdaAliveAcrossSuspensions).
    *inner = MakeReadyFuture(1).Then([gate](int x) { return AddWhenReady(gate, x); });
    co_return;
  };
  Future<void> outer = Spawn(executor, start(p.GetFuture(), &inner));
  executor.RunAll();
  ASSERT_TRUE(outer.Done());
  EXPECT_FALSE(inner.Done());
  p.SetValue(2);
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(inner.Result(), 3);
}

TEST(CoroSleepTest, SleepForWakesExactlyOnTheFakeClock) {
  FakeClock clock;
  ManualExecutor executor;
  const absl::Time start = clock.Now();
  auto coro = [](Clock* clock) -> Coro<absl::Time> {
    co_await SleepFor(absl::Seconds(10));
    co_return clock->Now();
  };
  Future<absl::Time> out = Spawn(executor, coro(&clock), clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);  // The timer thread waits for the deadline.
  clock.Advance(absl::Seconds(9));
  clock.BlockUntilWaiters(1);  // Not due: it waits again.
  EXPECT_EQ(executor.pending(), 0u);
  clock.Advance(absl::Seconds(1));
  executor.BlockUntilPending(1);
  executor.RunAll();
  EXPECT_EQ(out.Result(), start + absl::Seconds(10));
}

TEST(CoroSleepTest, SleepUntilAPastDeadlineDoesNotSuspend) {
  FakeClock clock;
  auto coro = [](Clock* clock) -> Coro<int> {
    co_await SleepUntil(clock->Now() - absl::Seconds(1));
    co_await SleepFor(absl::ZeroDuration());
    co_return 7;
  };
  EXPECT_EQ(SyncWait(coro(&clock), clock), 7);
}

TEST(CoroSleepTest, SyncWaitSleepsOnItsClock) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  std::thread advancer([&clock] {
    clock.BlockUntilWaiters(1);
    clock.Advance(absl::Seconds(5));
  });
  auto coro = [](Clock* clock) -> Coro<absl::Time> {
    co_await SleepFor(absl::Seconds(5));
    co_return clock->Now();
  };
  EXPECT_EQ(SyncWait(coro(&clock), clock), start + absl::Seconds(5));
  advancer.join();
}

// Re-review S5: schedulers share one Timer (one thread) per clock instead of making their own.
TEST(CoroSleepTest, SchedulersShareOneTimerPerClock) {
  FakeClock clock;
  FakeClock other;
  futures_internal::ClockTimers a;
  futures_internal::ClockTimers b;
  const absl::Time later = clock.Now() + absl::Seconds(1);
  const futures_internal::WakeToken ta = a.Schedule(clock, later, [] {});
  const futures_internal::WakeToken tb = b.Schedule(clock, later, [] {});
  const futures_internal::WakeToken to = b.Schedule(other, later, [] {});
  EXPECT_EQ(ta.owner, tb.owner);
  EXPECT_NE(ta.owner, to.owner);
  futures_internal::ClockTimers::Cancel(ta);
  futures_internal::ClockTimers::Cancel(tb);
  futures_internal::ClockTimers::Cancel(to);
}

// Two spawned coroutines sleeping on one clock both wake on one Advance.
TEST(CoroSleepTest, CoroutinesOfTwoSpawnsSleepOnTheSharedTimer) {
  FakeClock clock;
  ManualExecutor executor;
  auto sleeper = [](int v) -> Coro<int> {
    co_await SleepFor(absl::Seconds(1));
    co_return v;
  };
  Future<int> one = Spawn(executor, sleeper(1), clock);
  Future<int> two = Spawn(executor, sleeper(2), clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);  // The shared timer's thread waits for the deadline.
  clock.Advance(absl::Seconds(1));
  executor.BlockUntilPending(2);  // Both wake-ups posted their steps.
  executor.RunAll();
  EXPECT_EQ(one.Result(), 1);
  EXPECT_EQ(two.Result(), 2);
}

TEST(CoroSleepTest, CancelEndsASleepWithCancelledError) {
  FakeClock clock;
  ManualExecutor executor;
  int destroyed = 0;
  auto coro = [](int* destroyed) -> Coro<void> {
    DestructorCounter guard(destroyed);
    co_await SleepFor(absl::Hours(1));
  };
  Future<void> out = Spawn(executor, coro(&destroyed), clock);
  executor.RunAll();
  clock.BlockUntilWaiters(1);
  out.Cancel();
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(destroyed, 1);
  EXPECT_THROW(out.Result(), CancelledError);
}

TEST(CoroYieldTest, YieldLetsQueuedStepsRunFirst) {
  ManualExecutor executor;
  std::vector<std::string> trace;
  auto coro = [](std::vector<std::string>* trace, std::string name) -> Coro<void> {
    trace->push_back(name + "1");
    co_await Yield();
    trace->push_back(name + "2");
  };
  Future<void> a = Spawn(executor, coro(&trace, "a"));
  Future<void> b = Spawn(executor, coro(&trace, "b"));
  executor.RunAll();
  EXPECT_THAT(trace, ElementsAre("a1", "b1", "a2", "b2"));
  EXPECT_TRUE(a.Done());
  EXPECT_TRUE(b.Done());
}

TEST(CoroAsyncTest, AsyncOfACoroutineLambdaReturnsAFutureAndKeepsItsCapturesAlive) {
  ManualExecutor executor;
  Promise<int> p;
  auto fn = [prefix = std::string("value=")](Future<int> in) -> Coro<std::string> {
    const int v = co_await std::move(in);
    co_return prefix + std::to_string(v);  // The closure outlives Async's task.
  };
  Future<std::string> out = Async(executor, std::move(fn), p.GetFuture());
  executor.RunAll();
  EXPECT_FALSE(out.Done());
  p.SetValue(7);
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(out.Result(), "value=7");
}

TEST(CoroAsyncTest, AsyncOfACoroutineIsCancellable) {
  ManualExecutor executor;
  Promise<int> p;
  int destroyed = 0;
  Future<int> out = Async(
      executor, [&destroyed](Future<int> in) { return GuardedAwait(std::move(in), &destroyed); },
      p.GetFuture());
  executor.RunAll();
  out.Cancel();
  executor.RunAll();
  EXPECT_EQ(destroyed, 1);
  EXPECT_TRUE(p.IsCancelled());
}

TEST(CoroAsyncTest, ThenWithACoroutineRunsItToTheEnd) {
  Future<int> out = MakeReadyFuture(2).Then([](int x) -> Coro<int> {
    const int y = co_await Value(x);
    co_return y * 21;
  });
  EXPECT_EQ(out.Result(), 42);
}

// Review B1: a root started inside a SyncWait step (here by Then) would outlive SyncWait's loop.
// SyncWait now cancels it and runs the loop until it has ended, as asyncio.run does.
Future<int> StartThenRootUnderSyncWait(Future<int> gate) {
  Future<int> inner;
  auto outer = [](Future<int> g, Future<int>* inner) -> Coro<void> {
    *inner = MakeReadyFuture(1).Then([g](int x) { return AddWhenReady(g, x); });
    co_return;
  };
  SyncWait(outer(std::move(gate), &inner));
  return inner;
}

TEST(CoroSyncWaitTest, CancelsAndDrainsTheRootsItsStepsStartedWhenItsCoroutineEnds) {
  Promise<int> gate;
  Future<int> inner = StartThenRootUnderSyncWait(gate.GetFuture());
  ASSERT_TRUE(inner.Done());
  EXPECT_THROW(inner.Result(), CancelledError);
  gate.SetValue(2);  // Nothing is left waiting for it.
}

Future<int> PlainAddOne(Future<int> gate) {
  const int y = co_await std::move(gate);
  co_return y + 1;
}

// Review B1, second shape: an eager Future-coroutine started in a SyncWait step keeps the (now
// closed) loop alive and resumes on the thread that completes what it awaits.
TEST(CoroSyncWaitTest, AFutureCoroutineStartedInAStepResumesOnTheCompleterAfterSyncWait) {
  Promise<int> gate;
  Future<int> inner;
  auto outer = [](Future<int> g, Future<int>* inner) -> Coro<void> {
    *inner = PlainAddOne(std::move(g));
    co_return;
  };
  SyncWait(outer(gate.GetFuture(), &inner));
  EXPECT_FALSE(inner.Done());
  gate.SetValue(2);
  ASSERT_TRUE(inner.Done());
  EXPECT_EQ(inner.Result(), 3);
}

// A closed loop is no scheduler any more: a coroutine Then started after SyncWait returned, by a
// Future-coroutine resuming with the loop still current, runs to its end (it used to be cancelled
// at once as if the loop were draining).
TEST(CoroSyncWaitTest, ACoroutineStartedOnTheClosedLoopIsNotCancelled) {
  Promise<int> gate;
  Future<int> inner;
  auto plain = [](Future<int> g) -> Future<int> {
    const int y = co_await std::move(g);  // Resumes after SyncWait, on this (the waking) thread.
    co_return co_await MakeReadyFuture(y).Then([](int x) -> Coro<int> {
      co_await Yield();
      co_return x + 1;
    });
  };
  auto outer = [&plain](Future<int> g, Future<int>* inner) -> Coro<void> {
    *inner = plain(std::move(g));
    co_return;
  };
  SyncWait(outer(gate.GetFuture(), &inner));
  EXPECT_FALSE(inner.Done());
  gate.SetValue(2);
  ASSERT_TRUE(inner.Done());
  EXPECT_EQ(inner.Result(), 3);
}

// A root still sleeping when SyncWait's coroutine ends is cancelled, so SyncWait returns.
TEST(CoroSyncWaitTest, ARootSleepingWhenTheMainCoroutineEndsIsCancelled) {
  FakeClock clock;
  Future<int> sleeper;
  auto outer = [](Future<int>* sleeper) -> Coro<int> {
    *sleeper = MakeReadyFuture(1).Then([](int x) -> Coro<int> {
      co_await SleepFor(absl::Hours(1));
      co_return x;
    });
    co_return 7;
  };
  EXPECT_EQ(SyncWait(outer(&sleeper), clock), 7);
  ASSERT_TRUE(sleeper.Done());
  EXPECT_THROW(sleeper.Result(), CancelledError);
}

// Re-review R1: roots started on SyncWait's loop through CurrentCoroutineExecutor() are the loop's
// own roots: SyncWait cancels and drains them when its coroutine ends, and nothing they hold
// outlives the loop. `how` picks the way the root is started; each is still waiting for `gate`.
enum class StartOnLoop { kSpawn, kAsync, kThenOnExecutor };

Future<int> StartRootOnSyncWaitLoop(StartOnLoop how, Future<int> gate) {
  Future<int> inner;
  auto outer = [](StartOnLoop how, Future<int> g, Future<int>* inner) -> Coro<void> {
    Executor& loop = CurrentCoroutineExecutor();
    switch (how) {
      case StartOnLoop::kSpawn:
        *inner = Spawn(loop, AddWhenReady(g, 1));
        break;
      case StartOnLoop::kAsync:
        *inner = Async(loop, [g]() -> Coro<int> { co_return co_await AddWhenReady(g, 1); });
        break;
      case StartOnLoop::kThenOnExecutor:
        *inner = MakeReadyFuture(1).Then(loop, [g](int x) { return AddWhenReady(g, x); });
        break;
    }
    co_await Yield();  // Lets the root's start task run on the loop.
  };
  SyncWait(outer(how, std::move(gate), &inner));
  return inner;
}

TEST(CoroSyncWaitTest, ARootSpawnedOnItsLoopIsCancelledAndDrained) {
  for (StartOnLoop how : {StartOnLoop::kSpawn, StartOnLoop::kAsync, StartOnLoop::kThenOnExecutor}) {
    Promise<int> gate;
    Future<int> inner = StartRootOnSyncWaitLoop(how, gate.GetFuture());
    ASSERT_TRUE(inner.Done()) << static_cast<int>(how);
    EXPECT_THROW(inner.Result(), CancelledError) << static_cast<int>(how);
    gate.SetValue(2);  // Nothing is left waiting for it (ASan: no use of the freed loop).
  }
}

// A root spawned on the loop runs there and sleeps on SyncWait's clock.
TEST(CoroSyncWaitTest, ARootSpawnedOnItsLoopRunsThereOnItsClock) {
  FakeClock clock;
  auto outer = [](FakeClock* clock) -> Coro<int> {
    const std::thread::id here = std::this_thread::get_id();
    auto child = [](std::thread::id here) -> Coro<int> {
      co_await SleepFor(absl::Seconds(1));
      co_return std::this_thread::get_id() == here ? 1 : -1;
    };
    Future<int> spawned = Spawn(CurrentCoroutineExecutor(), child(here));
    co_await Yield();  // The child starts and sleeps.
    clock->Advance(absl::Seconds(1));
    co_return co_await std::move(spawned);
  };
  EXPECT_EQ(SyncWait(outer(&clock), clock), 1);
}

// A Future-coroutine started by a plain task of SyncWait's loop shares the loop, so it resumes on
// the completing thread after SyncWait returned (ASan: the loop is not freed under it).
TEST(CoroSyncWaitTest, AFutureCoroutineStartedByAPlainTaskOfTheLoopOutlivesIt) {
  Promise<int> gate;
  Future<int> inner;
  auto outer = [](Future<int> g, Future<int>* inner) -> Coro<void> {
    *inner = Async(CurrentCoroutineExecutor(), [g] { return PlainAddOne(g); });
    co_await Yield();
  };
  SyncWait(outer(gate.GetFuture(), &inner));
  EXPECT_FALSE(inner.Done());
  gate.SetValue(2);
  ASSERT_TRUE(inner.Done());
  EXPECT_EQ(inner.Result(), 3);
}

// Review B3: a coroutine continuation off any scheduler never blocks the completing thread. Here
// that thread is Timer::Default()'s, which the coroutine's own sleep needs.
TEST(CoroThenTest, ACoroutineThenCompletedOnTheTimerThreadDoesNotBlockIt) {
  Promise<int> p;
  Future<int> out = p.GetFuture().Then([](int x) -> Coro<int> {
    co_await SleepFor(absl::Milliseconds(1));
    co_return x;
  });
  Timer::Default().ScheduleAfter(absl::Milliseconds(1),
                                 [p = std::move(p)]() mutable { p.SetValue(1); });
  ASSERT_TRUE(out.Wait(absl::Seconds(30)));
  EXPECT_EQ(out.Result(), 1);
}

// Review B3 on a one-thread pool: the continuation awaits work on the same pool, which must not
// find its only thread blocked.
TEST(CoroThenTest, ACoroutineThenOnAOneThreadPoolCanAwaitThatPool) {
  ThreadPoolExecutor pool(1);
  Future<int> out = Async(pool, [] { return 1; }).Then([&pool](int x) -> Coro<int> {
    const int y = co_await Async(pool, [] { return 2; });
    co_return x + y;
  });
  ASSERT_TRUE(out.Wait(absl::Seconds(30)));
  EXPECT_EQ(out.Result(), 3);
}

// Then(executor, coroutine function) runs every step of the coroutine on that executor.
TEST(CoroThenTest, ThenOnAnExecutorRunsTheCoroutinesStepsThere) {
  ManualExecutor executor;
  Promise<int> source;
  Promise<int> gate;
  Future<int> out = source.GetFuture().Then(executor, [g = gate.GetFuture()](int x) -> Coro<int> {
    Future<int> copy = g;
    const int y = co_await std::move(copy);
    co_return x + y;
  });
  source.SetValue(1);
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_FALSE(out.Done());
  gate.SetValue(2);
  EXPECT_FALSE(out.Done());  // The resumption is a task on `executor`, not run by SetValue.
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  EXPECT_EQ(out.Result(), 3);
}

// With no scheduler, a yielding loop runs on the waking thread without growing the stack.
TEST(CoroThenTest, AnInlineCoroutineThenYieldsWithoutRecursion) {
  Future<int> out = MakeReadyFuture(0).Then([](int x) -> Coro<int> {
    for (int i = 0; i < 300000; ++i) co_await Yield();
    co_return x + 1;
  });
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 1);
}

// An executor for the tests of rejected and dropped steps: queues tasks, runs them when told,
// throws StoppedError once stopped, and can destroy what it holds unrun. Not thread-safe.
class StoppableExecutor final : public Executor {
 public:
  void Submit(Task task) override {
    if (stopped) throw StoppedError("the test executor stopped");
    tasks.push_back(std::move(task));
  }
  void RunAll() {
    while (!tasks.empty()) {
      Task task = std::move(tasks.front());
      tasks.pop_front();
      task();
    }
  }
  bool stopped = false;
  std::deque<Task> tasks;
};

// Review S1: a resumption the executor rejects ends the coroutine; its future fails.
TEST(CoroSpawnTest, ARejectedResumptionFailsTheFutureWithStoppedError) {
  StoppableExecutor executor;
  Promise<int> gate;
  int destroyed = 0;
  auto body = [](Future<int> g, int* destroyed) -> Coro<int> {
    DestructorCounter counter(destroyed);
    co_return co_await std::move(g);
  };
  Future<int> out = Spawn(executor, body(gate.GetFuture(), &destroyed));
  executor.RunAll();
  ASSERT_FALSE(out.Done());
  executor.stopped = true;
  gate.SetValue(1);
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), StoppedError);
  EXPECT_EQ(destroyed, 1);  // The frame was destroyed, not leaked.
}

// Review S1: a resumption the executor destroys unrun (shutdown dropping its queue) also does.
TEST(CoroSpawnTest, ADroppedResumptionFailsTheFutureWithStoppedError) {
  StoppableExecutor executor;
  Promise<int> gate;
  Future<int> out = Spawn(executor, AddWhenReady(gate.GetFuture(), 1));
  executor.RunAll();
  gate.SetValue(2);
  ASSERT_EQ(executor.tasks.size(), 1u);
  EXPECT_FALSE(out.Done());
  executor.tasks.clear();
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), StoppedError);
}

// A child coroutine's dropped resumption ends the whole tree, the child's frame first.
TEST(CoroSpawnTest, ADroppedResumptionOfAChildUnwindsTheWholeTree) {
  StoppableExecutor executor;
  Promise<int> gate;
  int destroyed = 0;
  auto parent = [](Future<int> g, int* destroyed) -> Coro<int> {
    DestructorCounter counter(destroyed);
    co_return co_await AddWhenReady(std::move(g), 1);
  };
  Future<int> out = Spawn(executor, parent(gate.GetFuture(), &destroyed));
  executor.RunAll();
  gate.SetValue(2);
  executor.tasks.clear();
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), StoppedError);
  EXPECT_EQ(destroyed, 1);
}

// Records what a stopped coroutine tree runs, in order.
struct Recorder {
  Recorder(std::vector<std::string>* log, std::string name) : log(log), name(std::move(name)) {}
  ~Recorder() { log->push_back("~" + name); }
  std::vector<std::string>* log;
  std::string name;
};

// Re-review R2: the executor rejects the resumption while the child's await (and the parent's
// await of the child) are still on the stack. The frames are not destroyed under them: the step
// runs after they returned, every await throws StoppedError, and RAII and catch blocks run in
// order, child first. An await in a catch block throws again.
TEST(CoroSpawnTest, AStepRejectedInsideANestedAwaitUnwindsInOrder) {
  StoppableExecutor executor;
  std::vector<std::string> log;
  auto child = [](StoppableExecutor* executor, std::vector<std::string>* log) -> Coro<int> {
    Recorder r(log, "child");
    executor->stopped = true;  // As a shutdown from another thread would.
    try {
      co_await Yield();
    } catch (const StoppedError&) {
      log->push_back("child caught");
    }
    try {
      co_await Yield();
    } catch (const StoppedError&) {
      log->push_back("child caught again");
      throw;
    }
    co_return 1;
  };
  auto parent = [&child](StoppableExecutor* executor, std::vector<std::string>* log) -> Coro<int> {
    Recorder r(log, "parent");
    try {
      co_return co_await child(executor, log);
    } catch (const StoppedError&) {
      log->push_back("parent caught");
      throw;
    }
  };
  Future<int> out = Spawn(executor, parent(&executor, &log));
  executor.RunAll();
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), StoppedError);
  EXPECT_THAT(
      log, ElementsAre("child caught", "child caught again", "~child", "parent caught", "~parent"));
}

// Re-review R2 with a real pool: the child shuts down the only thread's pool, then yields.
TEST(CoroSpawnTest, AChildYieldingOnAPoolItShutDownFailsWithStoppedError) {
  ThreadPoolExecutor pool(1);
  auto child = [](ThreadPoolExecutor* pool) -> Coro<int> {
    pool->Shutdown(/*wait=*/false, /*cancel_pending=*/false);
    co_await Yield();
    co_return 1;
  };
  auto parent = [&child](ThreadPoolExecutor* pool) -> Coro<int> {
    co_return co_await child(pool) + 1;
  };
  Future<int> out = Spawn(pool, parent(&pool));
  ASSERT_TRUE(out.Wait(absl::Seconds(30)));
  EXPECT_THROW(out.Result(), StoppedError);
}

// A dropped resumption of a child whose parent waits on it: the child's future await throws
// StoppedError though that future has its value, and the parent sees the child's error.
TEST(CoroSpawnTest, ADroppedStepOfANestedChildFailsTheParentWithStoppedError) {
  StoppableExecutor executor;
  Promise<int> gate;
  std::vector<std::string> log;
  auto child = [](Future<int> g, std::vector<std::string>* log) -> Coro<int> {
    Recorder r(log, "child");
    co_return co_await std::move(g);
  };
  auto parent = [&child](Future<int> g, std::vector<std::string>* log) -> Coro<int> {
    Recorder r(log, "parent");
    try {
      co_return co_await child(std::move(g), log);
    } catch (const StoppedError&) {
      log->push_back("parent caught");
    }
    co_return -1;  // A caught stop may still give a value.
  };
  Future<int> out = Spawn(executor, parent(gate.GetFuture(), &log));
  executor.RunAll();
  gate.SetValue(2);
  ASSERT_EQ(executor.tasks.size(), 1u);
  executor.tasks.clear();  // Runs the step here, on this thread.
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), -1);
  EXPECT_THAT(log, ElementsAre("~child", "parent caught", "~parent"));
}

// A Future-coroutine awaiting inside a step (it cannot be stopped) whose resumption the executor
// rejects goes on on the rejecting thread instead of staying suspended.
TEST(CoroSpawnTest, ARejectedResumptionOfAFutureCoroutineRunsOnTheRejectingThread) {
  StoppableExecutor executor;
  Promise<int> gate;
  Future<int> inner;
  auto start = [](Future<int> g, Future<int>* inner) -> Coro<void> {
    *inner = PlainAddOne(std::move(g));
    co_return;
  };
  Future<void> started = Spawn(executor, start(gate.GetFuture(), &inner));
  executor.RunAll();
  ASSERT_TRUE(started.Done());
  executor.stopped = true;
  gate.SetValue(2);
  ASSERT_TRUE(inner.Done());
  EXPECT_EQ(inner.Result(), 3);
}

// Review S2: on InlineExecutor a Yield loop's steps run one after another, not nested.
TEST(CoroSpawnTest, AYieldLoopOnTheInlineExecutorDoesNotGrowTheStack) {
  auto body = []() -> Coro<int> {
    for (int i = 0; i < 300000; ++i) co_await Yield();
    co_return 5;
  };
  Future<int> out = Spawn(InlineExecutor(), body());
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 5);
}

}  // namespace
}  // namespace concurry

// Mode::kCoroutine workers: methods returning Coro<T> start on the worker's event loop and
// interleave at their co_awaits; plain methods run one at a time, FIFO, on the side thread.

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "retry/policy.h"
#include "testing/fake_clock.h"
#include "testing/watchdog.h"
#include "workers/backend.h"
#include "workers/coroutine/coroutine_testing.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/task_worker.h"
#include "workers/this_call.h"
#include "workers/worker.h"

namespace concurry::coroutine_worker_test {

// Registered, so that it also runs in the modes that encode calls.
class Echo {
 public:
  Coro<int> Twice(int x) {
    co_await Yield();
    co_return 2 * x;
  }
};

}  // namespace concurry::coroutine_worker_test

CONCURRY_REGISTER_WORKER(concurry::coroutine_worker_test::Echo, (), Twice);

namespace concurry::coroutine_worker_test {

struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Counts its destructions (a coroutine's RAII local).
class Guard {
 public:
  explicit Guard(std::atomic<int>* destroyed) : destroyed_(destroyed) {}
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  ~Guard() { destroyed_->fetch_add(1); }

 private:
  std::atomic<int>* destroyed_;
};

class Host {
 public:
  Host() : a_started_(a_.GetFuture()), b_started_(b_.GetFuture()) {}

  // Where the methods run.
  Coro<std::thread::id> LoopThread() { co_return std::this_thread::get_id(); }
  std::thread::id SideThread() { return std::this_thread::get_id(); }

  // Each awaits the other's start: both finish only if they interleave on the loop.
  Coro<int> A() {
    a_.SetValue();
    co_await std::move(b_started_);
    co_return 1;
  }
  Coro<int> B() {
    b_.SetValue();
    co_await std::move(a_started_);
    co_return 2;
  }

  // Suspends until `release` completes; records the order in which the calls started.
  Coro<int> Hold(int id, Future<int> release, Promise<void>* started) {
    {
      absl::MutexLock lock(&mu_);
      started_.push_back(id);
    }
    if (started != nullptr) started->SetValue();
    const int unused = co_await std::move(release);
    (void)unused;
    co_return id;
  }
  std::vector<int> Started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }

  // A plain method: appends to a log (only the side thread touches it).
  int Append(int value) {
    log_.push_back(value);
    return static_cast<int>(log_.size());
  }
  std::vector<int> Log() { return log_; }

  // Awaits `release`, with a local whose destructor counts.
  Coro<int> Guarded(std::atomic<int>* destroyed, Future<int> release) {
    Guard guard(destroyed);
    const int value = co_await std::move(release);
    co_return value;
  }

  Coro<int> Throw() {
    co_await Yield();
    throw CustomError("from a coroutine");
  }

  // Submits a throwing task to the loop, then goes on.
  Coro<int> ThrowOnTheLoop() {
    CurrentCoroutineExecutor().Submit([] { throw std::runtime_error("a task threw"); });
    co_await Yield();
    co_return 3;
  }

  // Holds one "slot" of the worker's limits until `release` completes. The request waits, without
  // holding the loop, while another call holds the slot.
  Coro<int> UseSlot(int id, Future<int> release, Promise<void>* acquired) {
    std::vector<LimitAmount> request = {{"slots", 1}};
    Future<LimitAcquisition> pending = CurrentWorkerLimits().AcquireAsync(std::move(request));
    LimitAcquisition slot = co_await std::move(pending);
    acquired->SetValue();
    const int unused = co_await std::move(release);
    (void)unused;
    co_return id;
  }

  // Fails its first two attempts (with the original error type), then returns the attempt count.
  Coro<int> FailTwice(std::atomic<int>* attempts) {
    const int attempt = attempts->fetch_add(1) + 1;
    co_await Yield();
    if (attempt < 3) throw CustomError("attempt failed");
    co_return attempt;
  }

  Coro<int> Sleep(absl::Duration d) {
    co_await SleepFor(d);
    co_return 1;
  }

  // After a co_await, calls a plain method through CurrentWorker and awaits it.
  Coro<int> ViaCurrentWorker(int value) {
    co_await Yield();
    Future<int> reply = CurrentWorker<Host>().Call(&Host::Append, value);
    const int size = co_await std::move(reply);
    co_return size;
  }

  // Records this_call::CancelRequested() after its awaits, before and after being cancelled.
  Coro<void> WatchCancel(Future<int> release, Promise<bool>* before, Promise<bool>* after) {
    co_await Yield();
    before->SetValue(this_call::CancelRequested());
    try {
      const int unused = co_await std::move(release);
      (void)unused;
    } catch (const CancelledError&) {
      after->SetValue(this_call::CancelRequested());
      throw;
    }
  }

 private:
  Promise<void> a_;
  Promise<void> b_;
  Future<void> a_started_;
  Future<void> b_started_;
  absl::Mutex mu_;
  std::vector<int> started_ ABSL_GUARDED_BY(mu_);
  std::vector<int> log_;
};

// Nothing here should hang; a deadlock fails the test instead of timing out the runner.
class CoroutineWorkerTest : public ::testing::Test {
 protected:
  testkit::Watchdog watchdog_{absl::Seconds(120), "a coroutine worker test"};
};

TEST_F(CoroutineWorkerTest, CoroutineMethodsRunOnTheLoopAndPlainOnesOnTheSideThread) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  const std::thread::id loop = w.Call(&Host::LoopThread).Result();
  const std::thread::id side = w.Call(&Host::SideThread).Result();
  EXPECT_NE(loop, side);
  EXPECT_NE(loop, std::this_thread::get_id());
  EXPECT_NE(side, std::this_thread::get_id());
  EXPECT_EQ(w.Call(&Host::LoopThread).Result(), loop);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, TwoCallsThatAwaitEachOtherBothComplete) {
  // In kThread mode A would hold the worker's only thread while it waits for B, which could
  // never start: a deadlock. On the loop A suspends and B runs.
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  Future<int> a = w.Call(&Host::A);
  Future<int> b = w.Call(&Host::B);
  EXPECT_EQ(a.Result(), 1);
  EXPECT_EQ(b.Result(), 2);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, PlainMethodsRunFifoWhileCoroutinesAreSuspended) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  std::vector<Future<int>> held;
  std::vector<Promise<int>> later(100);
  for (int i = 0; i < 100; ++i) {
    held.push_back(
        w.Call(&Host::Hold, i, later[i].GetFuture(), static_cast<Promise<void>*>(nullptr)));
  }
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutines == 100; }));
  std::vector<Future<int>> plain;
  for (int i = 0; i < 10; ++i) plain.push_back(w.Call(&Host::Append, i));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(plain[i].Result(), i + 1);
  EXPECT_THAT(w.Call(&Host::Log).Result(), ::testing::ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(held[i].Done());
    later[i].SetValue(0);
  }
  for (int i = 0; i < 100; ++i) EXPECT_EQ(held[i].Result(), i);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, MaxInFlightCoroutinesMakesTheRestWaitFifo) {
  auto w = Worker<Host>::Create(
      {.mode = Mode::kCoroutine, .unwrap_futures = false, .max_in_flight_coroutines = 2});
  EXPECT_EQ(w.Stats().coroutines, 0);
  std::vector<Promise<int>> release(4);
  std::vector<Promise<void>> started(4);
  std::vector<Future<void>> started_seen;
  std::vector<Future<int>> calls;
  for (int i = 0; i < 4; ++i) {
    started_seen.push_back(started[i].GetFuture());
    calls.push_back(w.Call(&Host::Hold, i, release[i].GetFuture(), &started[i]));
  }
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutines == 2 && s.coroutines_waiting == 2; }));
  started_seen[0].Wait();
  started_seen[1].Wait();
  EXPECT_THAT(w.Call(&Host::Started).Result(), ::testing::ElementsAre(0, 1));
  release[1].SetValue(0);
  EXPECT_EQ(calls[1].Result(), 1);
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutines == 2 && s.coroutines_waiting == 1; }));
  // The oldest waiting call took the freed slot.
  started_seen[2].Wait();
  EXPECT_THAT(w.Call(&Host::Started).Result(), ::testing::ElementsAre(0, 1, 2));
  release[0].SetValue(0);
  release[2].SetValue(0);
  release[3].SetValue(0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(calls[i].Result(), i);
  EXPECT_THAT(w.Call(&Host::Started).Result(), ::testing::ElementsAre(0, 1, 2, 3));
  EXPECT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutines == 0 && s.coroutines_waiting == 0; }));
  EXPECT_EQ(w.Stats().coroutines, 0);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, CancellingOneCallEndsItsCoroutineAtItsAwaitOnly) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  std::atomic<int> destroyed{0};
  Promise<int> first;
  Promise<int> second;
  Future<int> cancelled = w.Call(&Host::Guarded, &destroyed, first.GetFuture());
  Future<int> other = w.Call(&Host::Guarded, &destroyed, second.GetFuture());
  ASSERT_TRUE(
      testkit::BlockUntilCoroutineStats(w, [](const WorkerStats& s) { return s.coroutines == 2; }));
  cancelled.Cancel();
  ASSERT_TRUE(
      testkit::BlockUntilCoroutineStats(w, [](const WorkerStats& s) { return s.coroutines == 1; }));
  EXPECT_EQ(destroyed.load(), 1);  // Its local's destructor ran when it ended.
  EXPECT_TRUE(cancelled.Cancelled());
  EXPECT_FALSE(other.Done());
  second.SetValue(7);
  EXPECT_EQ(other.Result(), 7);
  EXPECT_EQ(destroyed.load(), 2);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, ACoroutineThatThrowsFailsItsFutureWithTheOriginalType) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  EXPECT_THROW(w.Call(&Host::Throw).Result(), CustomError);
  // The loop goes on.
  EXPECT_EQ(w.Call(&Host::Sleep, absl::ZeroDuration()).Result(), 1);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, AThrowingTaskOnTheLoopDoesNotStopIt) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(w.Call(&Host::ThrowOnTheLoop).Result(), 3);
  EXPECT_EQ(w.Call(&Host::ThrowOnTheLoop).Result(), 3);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, ::testing::HasSubstr("a task threw"));
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, BlockingWorkerReturnsTheCoroutinesValue) {
  auto w = BlockingWorker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  EXPECT_EQ(w.Call(&Host::Sleep, absl::ZeroDuration()), 1);
  EXPECT_THROW(w.Call(&Host::Throw), CustomError);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, SleepForWaitsOnTheWorkersFakeClock) {
  testkit::FakeClock fake;
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .clock = &fake});
  Future<int> sleeping = w.Call(&Host::Sleep, absl::Seconds(5));
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutine_timers == 1; }));
  fake.Advance(absl::Seconds(4));
  EXPECT_FALSE(sleeping.Done());  // Its deadline is 1 s away: nothing can have woken it.
  EXPECT_EQ(w.Stats().coroutine_timers, 1);
  fake.Advance(absl::Seconds(1));
  EXPECT_EQ(sleeping.Result(), 1);
  EXPECT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutine_timers == 0 && s.coroutines == 0; }));
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, AcquireAsyncWaitsOnTheLoopUntilTheLimitFreesUp) {
  auto w = Worker<Host>::Create(
      {.mode = Mode::kCoroutine, .unwrap_futures = false, .limits = {ResourceLimit("slots", 1)}});
  Promise<int> release_first;
  Promise<int> release_second;
  Promise<void> first_acquired;
  Promise<void> second_acquired;
  Future<void> first_seen = first_acquired.GetFuture();
  Future<void> second_seen = second_acquired.GetFuture();
  Future<int> first = w.Call(&Host::UseSlot, 1, release_first.GetFuture(), &first_acquired);
  first_seen.Wait();
  Future<int> second = w.Call(&Host::UseSlot, 2, release_second.GetFuture(), &second_acquired);
  ASSERT_TRUE(
      testkit::BlockUntilCoroutineStats(w, [](const WorkerStats& s) { return s.coroutines == 2; }));
  // The loop is free while the second request waits: other coroutine calls still run.
  EXPECT_EQ(w.Call(&Host::Sleep, absl::ZeroDuration()).Result(), 1);
  EXPECT_FALSE(second_seen.Done());
  release_first.SetValue(0);
  EXPECT_EQ(first.Result(), 1);
  second_seen.Wait();  // Granted once the first call's acquisition was released.
  release_second.SetValue(0);
  EXPECT_EQ(second.Result(), 2);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, CurrentWorkerWorksAfterACoAwait) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  EXPECT_EQ(w.Call(&Host::ViaCurrentWorker, 9).Result(), 1);
  EXPECT_EQ(w.Call(&Host::ViaCurrentWorker, 8).Result(), 2);
  EXPECT_THAT(w.Call(&Host::Log).Result(), ::testing::ElementsAre(9, 8));
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, CancelRequestedHoldsInEveryStepOfTheCall) {
  auto w = Worker<Host>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  Promise<int> release;
  Promise<bool> before;
  Promise<bool> after;
  Future<bool> before_seen = before.GetFuture();
  Future<bool> after_seen = after.GetFuture();
  Future<void> call = w.Call(&Host::WatchCancel, release.GetFuture(), &before, &after);
  EXPECT_FALSE(before_seen.Result());
  call.Cancel();
  EXPECT_TRUE(after_seen.Result());
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, ARetriedCoroutineMethodBacksOffOnTheLoopsTimer) {
  testkit::FakeClock fake;
  auto w = Worker<Host>::Create(
      {.mode = Mode::kCoroutine,
       .unwrap_futures = false,
       .clock = &fake,
       .retry = RetryPolicy{.num_retries = 3, .wait = absl::Seconds(1), .jitter = 0}});
  std::atomic<int> attempts{0};
  Future<int> call = w.Call(&Host::FailTwice, &attempts);
  // Attempt 1 failed; the back-off (1 s) waits on the loop's timer, not on a sleeping thread.
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutine_timers == 1; }));
  EXPECT_EQ(attempts.load(), 1);
  // Meanwhile the loop serves other coroutine calls.
  EXPECT_EQ(w.Call(&Host::Sleep, absl::ZeroDuration()).Result(), 1);
  fake.Advance(absl::Milliseconds(999));
  EXPECT_FALSE(call.Done());
  EXPECT_EQ(attempts.load(), 1);
  fake.Advance(absl::Milliseconds(1));
  // Attempt 2 failed; exponential back-off: 2 s.
  // Attempts first: a Stats() read before attempt 2 could still count attempt 1's timer.
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(w, [&attempts, &w](const WorkerStats&) {
    return attempts.load() == 2 && w.Stats().coroutine_timers == 1;
  }));
  fake.Advance(absl::Seconds(1));
  EXPECT_FALSE(call.Done());
  fake.Advance(absl::Seconds(1));
  EXPECT_EQ(call.Result(), 3);
  EXPECT_EQ(attempts.load(), 3);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, CancellingARetriedCallEndsItsBackOff) {
  testkit::FakeClock fake;
  auto w = Worker<Host>::Create(
      {.mode = Mode::kCoroutine,
       .unwrap_futures = false,
       .clock = &fake,
       .retry = RetryPolicy{.num_retries = 3, .wait = absl::Seconds(1), .jitter = 0}});
  std::atomic<int> attempts{0};
  Future<int> call = w.Call(&Host::FailTwice, &attempts);
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutine_timers == 1; }));
  call.Cancel();
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutines == 0 && s.coroutine_timers == 0; }));
  EXPECT_EQ(attempts.load(), 1);
  EXPECT_TRUE(call.Cancelled());
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, ARetriedCoroMethodInThreadModeRunsToItsEnd) {
  // Outside the coroutine backend the retried coroutine runs on the call's thread; its back-off
  // waits on the worker's clock there.
  testkit::FakeClock fake;
  auto w = Worker<Host>::Create(
      {.mode = Mode::kThread,
       .unwrap_futures = false,
       .clock = &fake,
       .retry = RetryPolicy{.num_retries = 3, .wait = absl::Seconds(1), .jitter = 0}});
  std::atomic<int> attempts{0};
  Future<int> call = w.Call(&Host::FailTwice, &attempts);
  fake.BlockUntilWaiters(1);
  fake.Advance(absl::Seconds(1));
  fake.BlockUntilWaiters(1);
  EXPECT_EQ(attempts.load(), 2);
  fake.Advance(absl::Seconds(2));
  EXPECT_EQ(call.Result(), 3);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, TaskWorkerRunsACapturingCoroutineLambda) {
  TaskWorker w = TaskWorker::Create({.mode = Mode::kCoroutine});
  const std::string prefix = "item-";
  Future<std::string> f = w.Submit(
      [prefix](int i) -> Coro<std::string> {
        co_await Yield();
        co_return prefix + std::to_string(i);
      },
      4);
  EXPECT_EQ(f.Result(), "item-4");
  // A plain lambda runs on the side thread as in kThread mode.
  EXPECT_EQ(w.Submit([] { return 5; }).Result(), 5);
  EXPECT_TRUE(w.Stop());
}

TEST_F(CoroutineWorkerTest, MapKeepsItsItemsInterleavedOnOneLoop) {
  // Every item waits until all eight have started: only interleaving lets them finish.
  constexpr int kItems = 8;
  TaskWorker w = TaskWorker::Create({.mode = Mode::kCoroutine});
  // The items' latch; only the loop thread touches it, so it needs no lock.
  struct Latch {
    int started = 0;
    std::vector<Promise<void>> waiting;
  };
  auto latch = std::make_shared<Latch>();
  std::vector<int> inputs;
  for (int i = 0; i < kItems; ++i) inputs.push_back(i);
  std::vector<int> got;
  for (auto& item : w.Map(
           {.max_in_flight = kItems},
           [latch](int i) -> Coro<int> {
             if (++latch->started == kItems) {
               for (Promise<void>& p : latch->waiting) p.SetValue();
             } else {
               Promise<void> p;
               Future<void> wait = p.GetFuture();
               latch->waiting.push_back(std::move(p));
               co_await std::move(wait);
             }
             co_return i * 10;
           },
           inputs)) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ::testing::ElementsAre(0, 10, 20, 30, 40, 50, 60, 70));
  EXPECT_TRUE(w.Stop());
}

// --- The loop outlives its worker ----------------------------------------------------------------

// Starts a Future-coroutine that no call waits for, which may outlive the worker.
class Starter {
 public:
  Coro<int> StartAwaiting(Future<int> f, Promise<int>* seen) {
    (void)AwaitThen(std::move(f), seen);
    co_return 1;
  }
  Coro<int> StartSleeping(absl::Duration d, absl::Notification* woke) {
    (void)SleepThen(d, woke);
    co_return 1;
  }

 private:
  static Future<int> AwaitThen(Future<int> f, Promise<int>* seen) {
    const int v = co_await std::move(f);
    seen->SetValue(v);
    co_return v;
  }
  static Future<void> SleepThen(absl::Duration d, absl::Notification* woke) {
    co_await SleepFor(d);
    woke->Notify();
  }
};

TEST_F(CoroutineWorkerTest, AFutureCoroutineStartedOnTheLoopResumesAfterTheWorkerIsGone) {
  Promise<int> p;
  Promise<int> seen;
  Future<int> seen_future = seen.GetFuture();
  {
    auto w = Worker<Starter>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
    EXPECT_EQ(w.Call(&Starter::StartAwaiting, p.GetFuture(), &seen).Result(), 1);
    EXPECT_TRUE(w.Stop());
  }
  // The loop is closed (and the worker gone): the step runs here (ASan: no use after free).
  p.SetValue(7);
  EXPECT_EQ(seen_future.Result(), 7);
}

TEST_F(CoroutineWorkerTest, AFutureCoroutineSleepingOnTheLoopWakesAfterTheWorkerIsGone) {
  absl::Notification woke;
  {
    auto w = Worker<Starter>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
    EXPECT_EQ(w.Call(&Starter::StartSleeping, absl::Milliseconds(20), &woke).Result(), 1);
    EXPECT_TRUE(w.Stop());
  }
  // Timer::Default's thread wakes it after the loop closed; the wake-up owns the loop.
  woke.WaitForNotification();
}

// --- Which root is the call's
// ---------------------------------------------------------------------

class Prestarter {
 public:
  // Not a coroutine itself: starts (and ends) another root on the loop while making its Coro.
  Coro<int> ThenFirst(Future<int> release) {
    Future<int> side = MakeReadyFuture(1).Then([](int v) -> Coro<int> { co_return v; });
    (void)side;
    return HoldOn(std::move(release));
  }

 private:
  static Coro<int> HoldOn(Future<int> release) {
    const int v = co_await std::move(release);
    co_return v;
  }
};

TEST_F(CoroutineWorkerTest, ACallCountsItsOwnRootNotOneItsMethodStartedFirst) {
  auto w = Worker<Prestarter>::Create({.mode = Mode::kCoroutine, .unwrap_futures = false});
  Promise<int> release;
  Future<int> call = w.Call(&Prestarter::ThenFirst, release.GetFuture());
  // The call's coroutine is the one in flight, although the other root started (and ended) first.
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [&call](const WorkerStats& s) { return s.coroutines == 1 && !call.Done(); }));
  release.SetValue(5);
  EXPECT_EQ(call.Result(), 5);
  EXPECT_TRUE(
      testkit::BlockUntilCoroutineStats(w, [](const WorkerStats& s) { return s.coroutines == 0; }));
  EXPECT_TRUE(w.Stop());
}

// --- A Coro method run on the call's thread
// --------------------------------------------------------

class InlineYielder {
 public:
  // Its first step spawns a coroutine whose steps run inline (InlineExecutor) and awaits it.
  Coro<int> SpawnInline() {
    const int v = co_await Spawn(InlineExecutor(), Inner());
    co_return v + 1;
  }

 private:
  static Coro<int> Inner() {
    co_await Yield();
    co_return 41;
  }
};

TEST_F(CoroutineWorkerTest, ASyncWorkersCoroMethodCalledInsideACoroutineStepCompletes) {
  auto w = Worker<InlineYielder>::Create({.mode = Mode::kSync});
  auto outer = [&w]() -> Coro<int> {
    co_await Yield();
    // Blocks this step (an inline one, in a trampoline) on a call run on this thread.
    co_return w.Call(&InlineYielder::SpawnInline).Result();
  };
  EXPECT_EQ(Spawn(InlineExecutor(), outer()).Result(), 42);
  EXPECT_TRUE(w.Stop());
}

// --- A pool of coroutine workers -----------------------------------------------------------------

TEST_F(CoroutineWorkerTest, APoolsStatsSumItsWorkersCoroutineCounters) {
  testkit::FakeClock fake;
  auto pool = Worker<Host>::Create({.mode = Mode::kCoroutine,
                                    .unwrap_futures = false,
                                    .max_workers = 2,
                                    .clock = &fake,
                                    .max_in_flight_coroutines = 1});
  ASSERT_TRUE(pool.is_pool());
  // Each worker sleeps in one call (a timer); two more calls wait for a slot (on a worker, or
  // deferred by the pool).
  std::vector<Future<int>> calls;
  for (int i = 0; i < 4; ++i) calls.push_back(pool.Call(&Host::Sleep, absl::Seconds(1)));
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(pool, [](const WorkerStats& s) {
    return s.coroutines == 2 && s.coroutines_waiting + s.deferred == 2 && s.coroutine_timers == 2;
  }));
  fake.Advance(absl::Seconds(1));
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(pool, [](const WorkerStats& s) {
    return s.coroutines == 2 && s.coroutines_waiting + s.deferred == 0 && s.coroutine_timers == 2;
  }));
  fake.Advance(absl::Seconds(1));
  for (Future<int>& call : calls) EXPECT_EQ(call.Result(), 1);
  // A call's result comes just before its coroutine has left the worker's count.
  EXPECT_TRUE(testkit::BlockUntilCoroutineStats(pool, [](const WorkerStats& s) {
    return s.coroutines == 0 && s.coroutines_waiting == 0 && s.coroutine_timers == 0;
  }));
  EXPECT_TRUE(pool.Stop());
}

// --- A Coro method in every mode -----------------------------------------------------------------

class CoroEveryModeTest : public ::testing::TestWithParam<Mode> {};

TEST_P(CoroEveryModeTest, ACoroMethodReturnsItsValue) {
  // kCoroutine runs it on the loop; every other mode runs it to its end on the call's thread.
  auto w = Worker<Echo>::Create({.mode = GetParam()});
  EXPECT_EQ(w.Call(&Echo::Twice, 21).Result(), 42);
  std::vector<Future<int>> calls;
  for (int i = 0; i < 10; ++i) calls.push_back(w.Call(&Echo::Twice, i));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(calls[i].Result(), 2 * i);
  EXPECT_TRUE(w.Stop());
}

INSTANTIATE_TEST_SUITE_P(Modes, CoroEveryModeTest, ::testing::ValuesIn(LinkedWorkerModes()),
                         [](const auto& info) { return AbslUnparseFlag(info.param); });

TEST(CoroEveryModeTest, EveryBackendIsLinked) {
  EXPECT_THAT(LinkedWorkerModes(),
              ::testing::ElementsAre(Mode::kSync, Mode::kThread, Mode::kTbb, Mode::kLoopback,
                                     Mode::kProcess, Mode::kCoroutine));
}

}  // namespace concurry::coroutine_worker_test

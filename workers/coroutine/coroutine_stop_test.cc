// Stopping a Mode::kCoroutine worker: suspended coroutines are cancelled at their await (their
// destructors run before the object's), and a coroutine that ignores cancellation is reported
// instead of waited for forever.

#include <atomic>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/watchdog.h"
#include "workers/coroutine/coroutine_testing.h"
#include "workers/options.h"
#include "workers/worker.h"

namespace concurry::coroutine_stop_test {
namespace {

// What the coroutines and the object share: counters read after the worker stopped.
struct Tally {
  std::atomic<int> guards_destroyed{0};
  // guards_destroyed as the object's destructor saw it.
  std::atomic<int> guards_at_object_death{-1};
};

// Whether `call` ended cancelled: cancelled before it started, or its coroutine ended with
// CancelledError at its await.
bool EndedCancelled(const Future<int>& call) {
  if (!call.Done()) return false;
  if (call.Cancelled()) return true;
  try {
    std::rethrow_exception(call.Error());
  } catch (const CancelledError&) {
    return true;
  } catch (...) {
    return false;
  }
}

class Guard {
 public:
  explicit Guard(Tally* tally) : tally_(tally) {}
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  ~Guard() { tally_->guards_destroyed.fetch_add(1); }

 private:
  Tally* tally_;
};

class Sleeper {
 public:
  explicit Sleeper(Tally* tally) : tally_(tally) {}
  ~Sleeper() { tally_->guards_at_object_death.store(tally_->guards_destroyed.load()); }

  // Waits for a promise nobody completes (only the loop thread touches never_).
  Coro<int> AwaitForever() {
    Guard guard(tally_);
    Promise<int> never;
    Future<int> wait = never.GetFuture();
    never_.push_back(std::move(never));
    const int value = co_await std::move(wait);
    co_return value;
  }
  // Sleeps on the worker's clock until the end of time.
  Coro<int> SleepForever() {
    Guard guard(tally_);
    co_await SleepFor(absl::InfiniteDuration());
    co_return 0;
  }
  // Spins on the loop, without awaiting, while `*spin` holds; then awaits once.
  Coro<int> Spin(std::atomic<bool>* spin, absl::Notification* started) {
    started->Notify();
    while (spin->load()) std::this_thread::yield();
    co_await Yield();
    co_return 1;
  }

 private:
  Tally* tally_;
  std::vector<Promise<int>> never_;
};

TEST(CoroutineStopTest, TenThousandSuspendedCoroutinesStopCleanly) {
  testkit::Watchdog watchdog(absl::Seconds(120), "stopping 10^4 suspended coroutines");
  constexpr int kCalls = 10000;
  Tally tally;
  testkit::FakeClock fake;
  auto w = Worker<Sleeper>::Create(
      {.mode = Mode::kCoroutine, .clock = &fake, .max_in_flight_coroutines = kCalls}, &tally);
  std::vector<Future<int>> calls;
  calls.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(w.Call(i % 2 == 0 ? &Sleeper::AwaitForever : &Sleeper::SleepForever));
  }
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(w, [](const WorkerStats& s) {
    return s.coroutines == kCalls && s.coroutine_timers == kCalls / 2;
  }));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
  for (const Future<int>& call : calls) EXPECT_TRUE(EndedCancelled(call));
  EXPECT_EQ(tally.guards_destroyed.load(), kCalls);
  // Every coroutine's destructors ran before the object's.
  EXPECT_EQ(tally.guards_at_object_death.load(), kCalls);
  const WorkerStats stats = w.Stats();
  EXPECT_EQ(stats.coroutines, 0);
  EXPECT_EQ(stats.coroutines_waiting, 0);
  EXPECT_EQ(stats.coroutine_timers, 0);
}

TEST(CoroutineStopTest, CallsWaitingForASlotAreCancelledByStop) {
  testkit::Watchdog watchdog(absl::Seconds(60), "stopping with waiting calls");
  Tally tally;
  auto w =
      Worker<Sleeper>::Create({.mode = Mode::kCoroutine, .max_in_flight_coroutines = 1}, &tally);
  Future<int> running = w.Call(&Sleeper::AwaitForever);
  Future<int> waiting = w.Call(&Sleeper::AwaitForever);
  ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
      w, [](const WorkerStats& s) { return s.coroutines == 1 && s.coroutines_waiting == 1; }));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
  EXPECT_TRUE(EndedCancelled(running));
  EXPECT_TRUE(EndedCancelled(waiting));
  EXPECT_EQ(tally.guards_destroyed.load(), 1);  // The waiting call never started.
  EXPECT_THROW(w.Call(&Sleeper::AwaitForever).Result(), StoppedError);
}

TEST(CoroutineStopTest, ACoroutineThatIgnoresCancellationIsReportedNotWaitedFor) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a coroutine ignoring cancellation");
  Tally tally;
  auto w = Worker<Sleeper>::Create({.mode = Mode::kCoroutine}, &tally);
  std::atomic<bool> spin{true};
  absl::Notification started;
  Future<int> spinning = w.Call(&Sleeper::Spin, &spin, &started);
  started.WaitForNotification();
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(w.Stop(absl::Milliseconds(100)));
  const std::string report = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(report, ::testing::HasSubstr("Stop: 1 coroutine(s) did not end within 100ms after "
                                           "cancellation; the object and the worker's two "
                                           "threads stay until they end"));
  EXPECT_THAT(report, ::testing::HasSubstr("Sleeper"));
  EXPECT_EQ(w.Stats().coroutines, 1);
  EXPECT_EQ(tally.guards_at_object_death.load(), -1);  // The object is still alive.
  // Once it reaches its next co_await it ends with the cancellation, and the stop completes.
  spin.store(false);
  EXPECT_TRUE(w.Stop(absl::Seconds(30)));
  EXPECT_THROW(spinning.Result(), CancelledError);
  EXPECT_EQ(tally.guards_at_object_death.load(), 0);
}

TEST(CoroutineStopTest, TheLastHandleStopsTheWorkerAndItsCoroutines) {
  testkit::Watchdog watchdog(absl::Seconds(60), "dropping a coroutine worker");
  Tally tally;
  Future<int> call;
  {
    auto w = Worker<Sleeper>::Create({.mode = Mode::kCoroutine}, &tally);
    call = w.Call(&Sleeper::AwaitForever);
    ASSERT_TRUE(testkit::BlockUntilCoroutineStats(
        w, [](const WorkerStats& s) { return s.coroutines == 1; }));
  }
  EXPECT_TRUE(EndedCancelled(call));
  EXPECT_EQ(tally.guards_destroyed.load(), 1);
  EXPECT_EQ(tally.guards_at_object_death.load(), 1);
}

}  // namespace
}  // namespace concurry::coroutine_stop_test

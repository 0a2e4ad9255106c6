#include "futures/timer.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;

// Records (label, time) of each callback; WaitFor(n) blocks until n have run.
class Log {
 public:
  explicit Log(Clock& clock) : clock_(clock) {}
  Timer::Callback Record(std::string label) {
    return [this, label = std::move(label)] {
      const absl::Time now = clock_.Now();
      absl::MutexLock lock(&mu_);
      entries_.push_back(label + "@" + absl::FormatDuration(now - start_));
    };
  }
  void WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    struct Arg {
      Log* log;
      size_t n;
    } arg{this, n};
    mu_.Await(absl::Condition(
        +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS { return a->log->entries_.size() >= a->n; },
        &arg));
  }
  std::vector<std::string> entries() {
    absl::MutexLock lock(&mu_);
    return entries_;
  }

 private:
  Clock& clock_;
  const absl::Time start_ = testkit::FakeClock::DefaultStartTime();
  absl::Mutex mu_;
  std::vector<std::string> entries_ ABSL_GUARDED_BY(mu_);
};

TEST(TimerTest, RunsCallbacksAtTheirDeadlinesInDeadlineThenSchedulingOrder) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  const absl::Time t0 = clock.Now();
  timer.Schedule(t0 + absl::Seconds(30), log.Record("c"));
  timer.Schedule(t0 + absl::Seconds(10), log.Record("a"));
  timer.Schedule(t0 + absl::Seconds(20), log.Record("b"));
  timer.Schedule(t0 + absl::Seconds(10), log.Record("a2"));
  EXPECT_EQ(timer.pending(), 4u);
  clock.BlockUntilWaiters(1);  // The timer's thread waits for t0 + 10 s.
  clock.Advance(absl::Seconds(9));
  EXPECT_EQ(timer.pending(), 4u);
  clock.Advance(absl::Seconds(1));
  log.WaitFor(2);
  clock.Advance(absl::Seconds(15));
  log.WaitFor(3);
  clock.Advance(absl::Seconds(5));
  log.WaitFor(4);
  EXPECT_THAT(log.entries(), ElementsAre("a@10s", "a2@10s", "b@25s", "c@30s"));
  EXPECT_EQ(timer.pending(), 0u);
}

TEST(TimerTest, AnEarlierDeadlineWakesTheWaitingThread) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  timer.ScheduleAfter(absl::Seconds(100), log.Record("late"));
  clock.BlockUntilWaiters(1);
  timer.ScheduleAfter(absl::Seconds(10), log.Record("early"));
  clock.Advance(absl::Seconds(10));
  log.WaitFor(1);
  EXPECT_THAT(log.entries(), ElementsAre("early@10s"));
  EXPECT_EQ(timer.pending(), 1u);
}

TEST(TimerTest, PastDeadlinesRunAtOnce) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  timer.Schedule(clock.Now() - absl::Seconds(1), log.Record("past"));
  timer.ScheduleAfter(-absl::Seconds(5), log.Record("negative"));
  log.WaitFor(2);
  EXPECT_THAT(log.entries(), ElementsAre("past@0", "negative@0"));
}

TEST(TimerTest, ExtremePastDeadlinesAndNegativeDelaysRunAtOnce) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  // Holds the timer's thread until every entry is in, so that they run in deadline order.
  absl::Notification scheduled;
  timer.Schedule(absl::InfinitePast(), [&] { scheduled.WaitForNotification(); });
  timer.Schedule(absl::InfinitePast(), log.Record("infinite-past"));
  timer.ScheduleAfter(-absl::InfiniteDuration(), log.Record("minus-infinity"));
  timer.ScheduleAfter(absl::Seconds(std::numeric_limits<int64_t>::min()), log.Record("min"));
  timer.Schedule(absl::FromUnixSeconds(std::numeric_limits<int64_t>::min()), log.Record("first"));
  scheduled.Notify();
  log.WaitFor(4);
  // The two past deadlines first, then the two "now" ones in scheduling order.
  EXPECT_THAT(log.entries(),
              ElementsAre("infinite-past@0", "first@0", "minus-infinity@0", "min@0"));
}

TEST(TimerTest, DeadlinesAtTheEndOfTimeStayPendingAndCanBeCancelled) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // The last finite absl::Time, and three ways to say "never": they saturate, never overflow.
  const absl::Time last = absl::FromUnixSeconds(kMax);
  ASSERT_LT(last, absl::InfiniteFuture());
  const Timer::Id never = timer.Schedule(absl::InfiniteFuture(), log.Record("never"));
  const Timer::Id infinite = timer.ScheduleAfter(absl::InfiniteDuration(), log.Record("infinite"));
  const Timer::Id huge = timer.ScheduleAfter(absl::Seconds(kMax), log.Record("huge"));
  EXPECT_EQ(infinite.deadline, absl::InfiniteFuture());
  EXPECT_EQ(huge.deadline, absl::InfiniteFuture());
  timer.Schedule(last, log.Record("last"));
  timer.ScheduleAfter(absl::Seconds(1), log.Record("soon"));
  clock.Advance(absl::Seconds(1));
  log.WaitFor(1);
  clock.SetTime(last - absl::Nanoseconds(1));
  clock.BlockUntilWaiters(1);  // Still waiting for `last`.
  EXPECT_EQ(timer.pending(), 4u);
  clock.SetTime(last);
  log.WaitFor(2);
  const std::string last_entry =
      "last@" + absl::FormatDuration(last - testkit::FakeClock::DefaultStartTime());
  EXPECT_THAT(log.entries(), ElementsAre("soon@1s", last_entry));
  EXPECT_EQ(timer.pending(), 3u);
  EXPECT_TRUE(timer.Cancel(never));
  EXPECT_TRUE(timer.Cancel(infinite));
  EXPECT_TRUE(timer.Cancel(huge));
  EXPECT_EQ(timer.pending(), 0u);
}

TEST(TimerTest, FarDeadlinesOnTheRealClockNeitherFireNorBlockShutdown) {
  Timer timer;
  std::atomic<int> far_runs{0};
  timer.Schedule(absl::InfiniteFuture(), [&] { ++far_runs; });
  timer.Schedule(absl::FromUnixSeconds(std::numeric_limits<int64_t>::max()), [&] { ++far_runs; });
  timer.ScheduleAfter(absl::Hours(24 * 365 * 1000), [&] { ++far_runs; });
  // The thread now waits on absl::Mutex with a deadline beyond what the kernel's timespec holds;
  // an earlier entry still wakes it.
  absl::Notification near;
  timer.ScheduleAfter(absl::ZeroDuration(), [&] { near.Notify(); });
  ASSERT_TRUE(near.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(timer.pending(), 3u);
  timer.Shutdown();  // Wakes the far wait and joins.
  EXPECT_EQ(timer.pending(), 0u);
  EXPECT_EQ(far_runs.load(), 0);
}

TEST(TimerTest, CancelRemovesAPendingCallback) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  auto token = std::make_shared<int>(0);
  const Timer::Id id = timer.ScheduleAfter(
      absl::Seconds(5), [token, record = log.Record("cancelled")]() mutable { record(); });
  timer.ScheduleAfter(absl::Seconds(6), log.Record("sentinel"));
  EXPECT_TRUE(timer.Cancel(id));
  EXPECT_EQ(token.use_count(), 1);  // The callback was destroyed.
  EXPECT_FALSE(timer.Cancel(id));
  EXPECT_FALSE(timer.Cancel(Timer::Id()));
  clock.Advance(absl::Seconds(6));
  log.WaitFor(1);
  EXPECT_THAT(log.entries(), ElementsAre("sentinel@6s"));
}

TEST(TimerTest, CancelAfterTheCallbackRanReturnsFalse) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  const Timer::Id id = timer.ScheduleAfter(absl::Seconds(1), log.Record("ran"));
  clock.Advance(absl::Seconds(1));
  log.WaitFor(1);
  EXPECT_FALSE(timer.Cancel(id));
}

TEST(TimerTest, CallbacksMayScheduleAndCancel) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  absl::Notification first_ran;
  const Timer::Id doomed = timer.ScheduleAfter(absl::Seconds(3), log.Record("doomed"));
  timer.ScheduleAfter(absl::Seconds(1), [&] {
    timer.Cancel(doomed);
    timer.ScheduleAfter(absl::Seconds(1), log.Record("chained"));
    first_ran.Notify();
  });
  clock.Advance(absl::Seconds(1));
  first_ran.WaitForNotification();
  clock.BlockUntilWaiters(1);  // The thread waits for the chained callback, at 2 s.
  clock.Advance(absl::Seconds(1));
  log.WaitFor(1);
  EXPECT_THAT(log.entries(), ElementsAre("chained@2s"));
  EXPECT_EQ(timer.pending(), 0u);
}

TEST(TimerTest, AThrowingCallbackIsContained) {
  testkit::FakeClock clock;
  Timer timer(clock);
  Log log(clock);
  timer.ScheduleAfter(absl::ZeroDuration(), [] { throw std::runtime_error("callback bug"); });
  timer.ScheduleAfter(absl::ZeroDuration(), log.Record("after"));
  log.WaitFor(1);
  EXPECT_THAT(log.entries(), ElementsAre("after@0"));
}

TEST(TimerTest, ShutdownDropsPendingCallbacksAndRejectsNewOnes) {
  testkit::FakeClock clock;
  Timer timer(clock);
  auto token = std::make_shared<int>(0);
  timer.ScheduleAfter(absl::Seconds(1), [token] { FAIL() << "ran after shutdown"; });
  clock.BlockUntilWaiters(1);
  timer.Shutdown();
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_EQ(timer.pending(), 0u);
  EXPECT_THROW(timer.ScheduleAfter(absl::Seconds(1), [] {}), StoppedError);
  timer.Shutdown();  // Idempotent.
  clock.Advance(absl::Seconds(2));
}

TEST(TimerTest, RejectsAnEmptyCallback) {
  Timer timer;
  EXPECT_THROW(timer.ScheduleAfter(absl::Seconds(1), Timer::Callback()), InvalidOptionError);
}

TEST(TimerTest, MayBeDestroyedFromItsOwnCallback) {
  testkit::FakeClock clock;
  auto* timer = new Timer(clock);
  absl::Notification done;
  timer->ScheduleAfter(absl::ZeroDuration(), [&] {
    delete timer;
    done.Notify();
  });
  done.WaitForNotification();
}

TEST(TimerTest, DestructionWithoutAnyScheduleStartsNoThread) {
  testkit::FakeClock clock;
  Timer timer(clock);
  EXPECT_EQ(&timer.clock(), &clock);
}

// A fork()ed child inherits the timer's object but not its thread: the child's first Schedule
// starts a thread of its own (the parent's pending callbacks stay the parent's), and shutting an
// inherited timer down does not wait for the parent's thread. The child must not use the parent's
// mutex, which records the parent's timer thread as a waiter: the child's own timer thread used to
// block in it for ever, unwoken (in about one run in four of this test under
// `--runs_per_test=8`). Several forks, each just after a Schedule() that woke the parent's thread,
// widen the window.
TEST(TimerTest, WorksInAForkedChild) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer runtimes do not support starting threads in the child of a "
                  "multi-threaded process (the parent has the timer's thread)";
#endif
  Timer timer;
  absl::Notification ran;
  timer.Schedule(absl::InfinitePast(), [&] { ran.Notify(); });
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  int parent_calls = 0;
  int status = 0;
  constexpr int kForks = 10;
  for (int i = 0; i < kForks; ++i) {
    // Earlier than every pending entry: wakes the parent's thread, which is then re-waiting when
    // fork() runs, or about to.
    timer.ScheduleAfter(absl::Hours(100 - i), [&] { ++parent_calls; });
    const pid_t child = fork();
    if (child == 0) {
      absl::Notification child_ran;
      timer.Schedule(absl::InfinitePast(), [&] { child_ran.Notify(); });
      const bool ok = child_ran.WaitForNotificationWithTimeout(absl::Seconds(10)) &&
                      timer.pending() == 0;  // The parent's pending callbacks are not here.
      _exit(ok ? 0 : 1);
    }
    ASSERT_GT(child, 0);
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "fork " << i << ": " << status;
  }
  const pid_t stopper = fork();
  if (stopper == 0) {
    timer.Shutdown();  // Returns at once: it must not join the parent's thread.
    _exit(timer.pending() == 0 ? 0 : 1);
  }
  ASSERT_GT(stopper, 0);
  ASSERT_EQ(waitpid(stopper, &status, 0), stopper);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(timer.pending(), static_cast<size_t>(kForks));  // Still the parent's.
  EXPECT_EQ(parent_calls, 0);
}

TEST(TimerTest, DefaultTimerRunsOnTheRealClock) {
  Timer& timer = Timer::Default();
  EXPECT_EQ(&timer, &Timer::Default());
  EXPECT_EQ(&timer.clock(), &Clock::Real());
  absl::Notification ran;
  const absl::Time start = absl::Now();
  timer.ScheduleAfter(absl::Milliseconds(5), [&] { ran.Notify(); });
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(5));
}

}  // namespace
}  // namespace concurry

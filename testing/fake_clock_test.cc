#include "testing/fake_clock.h"

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace testkit {
namespace {

constexpr bool kNever = false;

// One thread blocked in clock.AwaitWithDeadline(&mu, Condition(&ready), deadline); records the
// result and the clock's time when it returned.
class AwaitingThread {
 public:
  AwaitingThread(FakeClock& clock, absl::Time deadline) : clock_(clock) {
    thread_ = std::thread([this, deadline] {
      absl::MutexLock lock(&mu_);
      bool result = clock_.AwaitWithDeadline(&mu_, absl::Condition(&ready_), deadline);
      result_ = result;
      returned_at_ = clock_.Now();
      returned_ = true;
    });
  }
  ~AwaitingThread() { Join(); }

  void MakeReady() {
    absl::MutexLock lock(&mu_);
    ready_ = true;
  }
  bool returned() {
    absl::MutexLock lock(&mu_);
    return returned_;
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  // Call after Join().
  bool result() {
    absl::MutexLock lock(&mu_);
    return result_;
  }
  absl::Time returned_at() {
    absl::MutexLock lock(&mu_);
    return returned_at_;
  }

 private:
  FakeClock& clock_;
  absl::Mutex mu_;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  bool returned_ ABSL_GUARDED_BY(mu_) = false;
  bool result_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time returned_at_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

TEST(FakeClockTest, StartsAtTheGivenTimeAndMovesOnlyWhenTold) {
  FakeClock default_clock;
  EXPECT_EQ(default_clock.Now(), FakeClock::DefaultStartTime());
  EXPECT_EQ(default_clock.Now(), absl::UnixEpoch() + absl::Hours(1));

  const absl::Time start = absl::FromUnixSeconds(1'000'000);
  FakeClock clock(start);
  EXPECT_EQ(clock.Now(), start);
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(absl::Milliseconds(1500));
  EXPECT_EQ(clock.Now(), start + absl::Milliseconds(1500));
  clock.Advance(absl::ZeroDuration());
  EXPECT_EQ(clock.Now(), start + absl::Milliseconds(1500));
  clock.SetTime(start + absl::Seconds(7));
  EXPECT_EQ(clock.Now(), start + absl::Seconds(7));
  clock.SetTime(start + absl::Seconds(7));  // Standing still is allowed.
  EXPECT_EQ(clock.Now(), start + absl::Seconds(7));
}

TEST(FakeClockTest, AdvanceRejectsNegativeDuration) {
  FakeClock clock;
  const absl::Time before = clock.Now();
  try {
    clock.Advance(absl::Milliseconds(-1));
    FAIL() << "Advance(-1ms) did not throw";
  } catch (const InvalidOptionError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("must be >= 0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("-1ms"), std::string::npos) << e.what();
  }
  EXPECT_EQ(clock.Now(), before);
}

TEST(FakeClockTest, SetTimeRejectsGoingBackwards) {
  FakeClock clock;
  const absl::Time before = clock.Now();
  EXPECT_THROW(clock.SetTime(before - absl::Nanoseconds(1)), InvalidOptionError);
  EXPECT_EQ(clock.Now(), before);
}

TEST(FakeClockTest, AwaitReturnsTrueAtOnceWhenConditionHolds) {
  FakeClock clock;
  absl::Mutex mu;
  bool ready = true;
  absl::MutexLock lock(&mu);
  // Even with the deadline already passed: the condition wins.
  EXPECT_TRUE(clock.AwaitWithDeadline(&mu, absl::Condition(&ready), clock.Now()));
  EXPECT_TRUE(clock.AwaitWithDeadline(&mu, absl::Condition(&ready), absl::InfiniteFuture()));
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(FakeClockTest, AwaitReturnsFalseAtOnceWhenDeadlineHasPassed) {
  FakeClock clock;
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(clock.AwaitWithDeadline(&mu, absl::Condition(&kNever), clock.Now()));
  EXPECT_FALSE(
      clock.AwaitWithDeadline(&mu, absl::Condition(&kNever), clock.Now() - absl::Seconds(1)));
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(FakeClockTest, WaiterWakesWhenAdvanceReachesDeadlineAndNotBefore) {
  FakeClock clock;
  const absl::Time deadline = clock.Now() + absl::Milliseconds(10);
  AwaitingThread waiter(clock, deadline);
  clock.BlockUntilWaiters(1);

  clock.Advance(absl::Milliseconds(9));
  EXPECT_EQ(clock.NumWaiters(), 1);
  EXPECT_FALSE(waiter.returned());

  clock.Advance(absl::Milliseconds(1));
  EXPECT_EQ(clock.NumWaiters(), 0);
  waiter.Join();
  EXPECT_FALSE(waiter.result());
  EXPECT_EQ(waiter.returned_at(), deadline);
}

TEST(FakeClockTest, AdvancePastDeadlineWakesWaiter) {
  FakeClock clock;
  const absl::Time deadline = clock.Now() + absl::Milliseconds(10);
  AwaitingThread waiter(clock, deadline);
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Hours(1));
  waiter.Join();
  EXPECT_FALSE(waiter.result());
  EXPECT_EQ(waiter.returned_at(), deadline - absl::Milliseconds(10) + absl::Hours(1));
}

TEST(FakeClockTest, ConditionWakesWaiterBeforeDeadline) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  AwaitingThread waiter(clock, start + absl::Milliseconds(10));
  clock.BlockUntilWaiters(1);
  waiter.MakeReady();
  waiter.Join();
  EXPECT_TRUE(waiter.result());
  EXPECT_EQ(waiter.returned_at(), start);
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(FakeClockTest, ConditionWakesWaiterWithInfiniteDeadline) {
  FakeClock clock;
  AwaitingThread waiter(clock, absl::InfiniteFuture());
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Hours(24 * 365));
  EXPECT_EQ(clock.NumWaiters(), 1);
  EXPECT_FALSE(waiter.returned());
  waiter.MakeReady();
  waiter.Join();
  EXPECT_TRUE(waiter.result());
}

TEST(FakeClockTest, SleepForWakesWhenAdvanceReachesIt) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  Clock& as_clock = clock;  // Through the interface that production code sees.
  absl::Mutex mu;
  bool slept = false;
  std::thread sleeper([&] {
    as_clock.SleepFor(absl::Seconds(1));
    absl::MutexLock lock(&mu);
    slept = true;
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Milliseconds(999));
  EXPECT_EQ(clock.NumWaiters(), 1);
  {
    absl::MutexLock lock(&mu);
    EXPECT_FALSE(slept);
  }
  clock.Advance(absl::Milliseconds(1));
  sleeper.join();
  EXPECT_TRUE(slept);
  EXPECT_EQ(clock.Now(), start + absl::Seconds(1));
}

TEST(FakeClockTest, SetTimeWakesWaitersItReaches) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  std::thread early([&] { clock.SleepUntil(start + absl::Seconds(1)); });
  AwaitingThread late(clock, start + absl::Seconds(3));
  clock.BlockUntilWaiters(2);
  clock.SetTime(start + absl::Seconds(2));
  early.join();
  EXPECT_EQ(clock.NumWaiters(), 1);
  EXPECT_FALSE(late.returned());
  clock.SetTime(start + absl::Seconds(3));
  late.Join();
  EXPECT_FALSE(late.result());
}

TEST(FakeClockTest, WakesExactlyTheWaitersWhoseDeadlinesAreReached) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  const std::vector<int> deadlines_ms = {30, 10, 50, 20, 40};

  absl::Mutex mu;
  std::vector<int> woken_ms;  // Guarded by mu.
  std::vector<std::thread> threads;
  for (int ms : deadlines_ms) {
    threads.emplace_back([&, ms] {
      clock.SleepUntil(start + absl::Milliseconds(ms));
      absl::MutexLock lock(&mu);
      woken_ms.push_back(ms);
    });
  }
  clock.BlockUntilWaiters(5);
  auto await_woken = [&](size_t n) {
    absl::MutexLock lock(&mu);
    auto enough = [&] { return woken_ms.size() >= n; };
    mu.Await(absl::Condition(&enough));
    return woken_ms;
  };

  clock.Advance(absl::Milliseconds(9));
  EXPECT_EQ(clock.NumWaiters(), 5);
  clock.Advance(absl::Milliseconds(1));  // t = 10
  EXPECT_EQ(clock.NumWaiters(), 4);
  EXPECT_EQ(await_woken(1), std::vector<int>({10}));

  clock.Advance(absl::Milliseconds(15));  // t = 25
  EXPECT_EQ(clock.NumWaiters(), 3);
  EXPECT_EQ(await_woken(2), std::vector<int>({10, 20}));

  clock.Advance(absl::Milliseconds(14));  // t = 39
  EXPECT_EQ(clock.NumWaiters(), 2);
  EXPECT_EQ(await_woken(3), std::vector<int>({10, 20, 30}));

  clock.Advance(absl::Milliseconds(11));  // t = 50: the last two at once, in either order.
  EXPECT_EQ(clock.NumWaiters(), 0);
  std::vector<int> all = await_woken(5);
  std::sort(all.begin() + 3, all.end());
  EXPECT_EQ(all, std::vector<int>({10, 20, 30, 40, 50}));
  for (std::thread& t : threads) t.join();
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(woken_ms.size(), 5u);
  }
}

TEST(FakeClockTest, WaitersSharingAMutexWakeIndependently) {
  FakeClock clock;
  const absl::Time start = clock.Now();
  absl::Mutex mu;
  bool a_ready = false;
  bool b_ready = false;
  int returned = 0;
  bool a_result = true;
  bool b_result = false;
  std::thread a([&] {
    absl::MutexLock lock(&mu);
    a_result = clock.AwaitWithDeadline(&mu, absl::Condition(&a_ready), start + absl::Seconds(1));
    ++returned;
  });
  std::thread b([&] {
    absl::MutexLock lock(&mu);
    b_result = clock.AwaitWithDeadline(&mu, absl::Condition(&b_ready), start + absl::Seconds(2));
    ++returned;
  });
  clock.BlockUntilWaiters(2);
  clock.Advance(absl::Seconds(1));  // Times out `a` only.
  a.join();
  {
    absl::MutexLock lock(&mu);
    EXPECT_FALSE(a_result);
    EXPECT_EQ(returned, 1);
    b_ready = true;  // Wakes `b` by its condition.
  }
  b.join();
  EXPECT_TRUE(b_result);
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(FakeClockTest, BlockUntilWaitersReturnsAtOnceWhenEnoughAreBlocked) {
  FakeClock clock;
  clock.BlockUntilWaiters(0);
  clock.BlockUntilWaiters(-1);
  AwaitingThread waiter(clock, clock.Now() + absl::Seconds(1));
  clock.BlockUntilWaiters(1);
  clock.BlockUntilWaiters(1);
  EXPECT_EQ(clock.NumWaiters(), 1);
  waiter.MakeReady();
}

// Sleepers, a waiter whose condition is set while Advance() times it out, a waiter that destroys
// its mutex as soon as it returns, and an advancer, all at once. Under ASan, a clock that touched
// a returned waiter's mutex would be caught; under TSan, any unsynchronized access.
TEST(FakeClockTest, ConcurrentWaitersAndAdvanceRaceSafely) {
  std::unique_ptr<FakeClock> clock;
  absl::Time start;
  absl::Mutex flag_mu;
  bool flag = false;

  auto sleeper = [&](int ms) {
    const absl::Time deadline = start + absl::Milliseconds(ms);
    clock->SleepUntil(deadline);
    EXPECT_GE(clock->Now(), deadline);
  };
  TestConcurrent(
      /*iterations=*/1000,
      /*before=*/
      [&] {
        clock = std::make_unique<FakeClock>();
        start = clock->Now();
        absl::MutexLock lock(&flag_mu);
        flag = false;
      },
      /*after=*/
      [&] {
        EXPECT_EQ(clock->NumWaiters(), 0);
        EXPECT_EQ(clock->Now(), start + absl::Milliseconds(4));
        clock.reset();  // Aborts if a waiter were still registered.
      },
      {
          [&] { sleeper(1); },
          [&] { sleeper(2); },
          [&] { sleeper(4); },
          [&] {
            absl::MutexLock lock(&flag_mu);
            const absl::Time deadline = start + absl::Milliseconds(1);
            if (clock->AwaitWithDeadline(&flag_mu, absl::Condition(&flag), deadline)) {
              EXPECT_TRUE(flag);
            } else {
              EXPECT_GE(clock->Now(), deadline);
            }
          },
          [&] {
            absl::MutexLock lock(&flag_mu);
            flag = true;
          },
          [&] {
            auto mu = std::make_unique<absl::Mutex>();
            {
              absl::MutexLock lock(mu.get());
              EXPECT_FALSE(clock->AwaitWithDeadline(mu.get(), absl::Condition(&kNever),
                                                    start + absl::Milliseconds(2)));
            }
            mu.reset();  // The clock must not touch it any more.
          },
          [&] {
            for (int i = 0; i < 4; ++i) clock->Advance(absl::Milliseconds(1));
          },
      });
}

}  // namespace
}  // namespace testkit
}  // namespace concurry

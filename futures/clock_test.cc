// Real-clock tests. Bounds are generous: they check behaviour, not latency (benchmarks do that).

#include "futures/clock.h"

#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace concurry {
namespace {

constexpr absl::Duration kGenerous = absl::Seconds(30);

TEST(RealClockTest, RealIsOneProcessWideInstance) { EXPECT_EQ(&Clock::Real(), &Clock::Real()); }

TEST(RealClockTest, NowTracksWallTime) {
  const absl::Time before = absl::Now();
  const absl::Time now = Clock::Real().Now();
  const absl::Time after = absl::Now();
  EXPECT_LE(before, now);
  EXPECT_LE(now, after);
}

TEST(RealClockTest, NowAdvances) {
  Clock& clock = Clock::Real();
  const absl::Time start = clock.Now();
  clock.SleepFor(absl::Milliseconds(2));
  const absl::Time end = clock.Now();
  EXPECT_GE(end - start, absl::Milliseconds(2) - absl::Microseconds(100));
  EXPECT_LT(end - start, kGenerous);
}

TEST(RealClockTest, SleepUntilAPastDeadlineReturnsAtOnce) {
  Clock& clock = Clock::Real();
  const absl::Time start = clock.Now();
  clock.SleepUntil(start - absl::Seconds(1));
  EXPECT_LT(clock.Now() - start, kGenerous);
}

TEST(RealClockTest, AwaitWithDeadlineReturnsTrueWhenTheConditionAlreadyHolds) {
  absl::Mutex mu;
  bool ready = true;
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(Clock::Real().AwaitWithDeadline(&mu, absl::Condition(&ready),
                                              absl::Now() - absl::Seconds(1)));
}

TEST(RealClockTest, AwaitWithDeadlineReturnsTrueWhenAnotherThreadMakesTheConditionTrue) {
  absl::Mutex mu;
  bool ready = false;
  std::thread setter([&] {
    absl::MutexLock lock(&mu);
    ready = true;
  });
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(
        Clock::Real().AwaitWithDeadline(&mu, absl::Condition(&ready), absl::InfiniteFuture()));
    EXPECT_TRUE(ready);
  }
  setter.join();
}

TEST(RealClockTest, AwaitWithDeadlineReturnsFalseAfterTheDeadline) {
  Clock& clock = Clock::Real();
  absl::Mutex mu;
  bool never = false;
  const absl::Time start = clock.Now();
  const absl::Time deadline = start + absl::Milliseconds(20);
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(clock.AwaitWithDeadline(&mu, absl::Condition(&never), deadline));
  const absl::Time end = clock.Now();
  // absl::Now() and the kernel's timer may disagree by a few microseconds.
  EXPECT_GE(end, deadline - absl::Milliseconds(1));
  EXPECT_LT(end - start, kGenerous);
}

}  // namespace
}  // namespace concurry

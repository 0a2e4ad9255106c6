// The real-clock wait of a future: WakeFlag (futures/internal/wake_flag.h) and the driver a
// waiting thread may run itself (futures/internal/wait_driver.h).

#include <atomic>
#include <memory>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/future.h"
#include "futures/internal/wait_driver.h"
#include "futures/internal/wake_flag.h"
#include "gtest/gtest.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

using futures_internal::WaitDriver;
using futures_internal::WakeFlag;
using testkit::Watchdog;

TEST(WakeFlagTest, ASetFlagDoesNotWait) {
  WakeFlag flag;
  flag.Set();
  EXPECT_TRUE(flag.IsSet());
  EXPECT_TRUE(flag.WaitUntil(absl::InfinitePast()));
  EXPECT_TRUE(flag.WaitUntil(absl::InfiniteFuture()));
}

TEST(WakeFlagTest, SetFromAnotherThreadWakesAWaiterWithoutADeadline) {
  Watchdog watchdog(absl::Seconds(30), "a waiter woken by Set");
  WakeFlag flag;
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(20));
    flag.Set();
  });
  EXPECT_TRUE(flag.WaitUntil(absl::InfiniteFuture()));
  setter.join();
}

TEST(WakeFlagTest, AnUnsetFlagWaitsUntilItsDeadlineAndNoLonger) {
  WakeFlag flag;
  const absl::Time start = absl::Now();
  EXPECT_FALSE(flag.WaitUntil(start + absl::Milliseconds(30)));
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(30));
  EXPECT_LT(waited, absl::Seconds(5));
  EXPECT_FALSE(flag.IsSet());
  // A later Set still counts.
  flag.Set();
  EXPECT_TRUE(flag.WaitUntil(absl::Now()));
}

TEST(WakeFlagTest, ManyRacingSetsAndWaitsAllEnd) {
  Watchdog watchdog(absl::Seconds(60), "racing Set and WaitUntil");
  for (int i = 0; i < 2000; ++i) {
    WakeFlag flag;
    std::thread setter([&] { flag.Set(); });
    EXPECT_TRUE(flag.WaitUntil(absl::Now() + absl::Seconds(30)));
    setter.join();
  }
}

// Counts its drives and completes `promise` when told to.
class TestDriver final : public WaitDriver {
 public:
  explicit TestDriver(Promise<int>* complete) : complete_(complete) {}
  void Drive(absl::Time deadline) noexcept override {
    ++drives;
    last_deadline = deadline;
    if (complete_ != nullptr) complete_->SetValue(7);
  }
  int drives = 0;
  absl::Time last_deadline;

 private:
  Promise<int>* complete_;
};

TEST(WaitDriverTest, TheWaitingThreadDrivesTheOfferedFutureAndNeedNotSleep) {
  Watchdog watchdog(absl::Seconds(30), "a driven wait");
  Promise<int> promise;
  Future<int> future = promise.GetFuture();
  auto driver = std::make_shared<TestDriver>(&promise);
  futures_internal::OfferWaitDriver(promise, driver);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  ASSERT_TRUE(future.Wait(absl::Seconds(20)));
  EXPECT_EQ(future.Result(), 7);
  EXPECT_EQ(driver->drives, 1);
  EXPECT_LE(driver->last_deadline, deadline + absl::Seconds(1));
  EXPECT_GE(driver->last_deadline, deadline - absl::Seconds(19));
}

TEST(WaitDriverTest, AWaitOnAnotherFutureDropsTheOffer) {
  Promise<int> offered;
  auto driver = std::make_shared<TestDriver>(nullptr);
  futures_internal::OfferWaitDriver(offered, driver);
  Promise<int> other;
  Future<int> other_future = other.GetFuture();
  EXPECT_FALSE(other_future.Wait(absl::Milliseconds(5)));
  EXPECT_EQ(driver->drives, 0);
  // The offer went with that wait: the offered future's wait sleeps as usual.
  Future<int> offered_future = offered.GetFuture();
  EXPECT_FALSE(offered_future.Wait(absl::Milliseconds(5)));
  EXPECT_EQ(driver->drives, 0);
}

TEST(WaitDriverTest, AnOfferIsOnlyForItsThread) {
  Watchdog watchdog(absl::Seconds(30), "an offer on another thread");
  Promise<int> promise;
  Future<int> future = promise.GetFuture();
  auto driver = std::make_shared<TestDriver>(nullptr);
  futures_internal::OfferWaitDriver(promise, driver);
  std::thread waiter([&] { EXPECT_EQ(future.Result(), 3); });
  absl::SleepFor(absl::Milliseconds(20));
  promise.SetValue(3);
  waiter.join();
  EXPECT_EQ(driver->drives, 0);
  EXPECT_EQ(futures_internal::TakeWaitDriver(nullptr), nullptr);  // Clears this thread's offer.
}

TEST(WaitDriverTest, WhatTheDriverLeavesUndoneIsWaitedForAsUsual) {
  Watchdog watchdog(absl::Seconds(30), "a wait after an unfinished drive");
  Promise<int> promise;
  Future<int> future = promise.GetFuture();
  auto driver = std::make_shared<TestDriver>(nullptr);
  futures_internal::OfferWaitDriver(promise, driver);
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(20));
    promise.SetValue(5);
  });
  EXPECT_EQ(future.Result(), 5);
  EXPECT_EQ(driver->drives, 1);
  setter.join();
}

}  // namespace
}  // namespace concurry

#include "testing/watchdog.h"

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace concurry {
namespace testkit {
namespace {

TEST(WatchdogTest, StandsDownWhenDestroyedInTime) {
  { Watchdog watchdog(absl::Seconds(30), "a quick block"); }
  SUCCEED();  // Reaching this line is the test: the watchdog did not abort.
}

TEST(WatchdogDeathTest, AbortsNamingWhatHungWhenTheLimitPasses) {
  // Re-executes the test binary for the death test instead of forking a threaded process.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Watchdog watchdog(absl::Milliseconds(50), "the stuck block");
        absl::Notification never;
        never.WaitForNotification();
      },
      "Watchdog: the stuck block did not finish within 50ms");
}

}  // namespace
}  // namespace testkit
}  // namespace concurry

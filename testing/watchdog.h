// Watchdog: fails a test that deadlocks instead of letting it hang until the test runner's
// timeout. While a Watchdog is alive, a thread of its own waits for its destruction; if `limit`
// passes first, it prints what did not finish and aborts the process (a failed test, with a stack
// dump under the sanitizers).
//
//   TEST(WorkerTest, TwoBlockingActorsDoNotDeadlock) {
//     concurry::testkit::Watchdog watchdog(absl::Seconds(30), "two blocking tbb workers");
//     ... code that would hang on a deadlock ...
//   }  // Finished in time: the watchdog stands down.

#ifndef CONCURRY_TESTING_WATCHDOG_H_
#define CONCURRY_TESTING_WATCHDOG_H_

#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace concurry {
namespace testkit {

// Aborts the process, naming `what`, unless destroyed within `limit` of construction (real time).
// Not copyable or movable.
class Watchdog {
 public:
  explicit Watchdog(absl::Duration limit = absl::Seconds(30), std::string what = "the test");
  ~Watchdog();

  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_WATCHDOG_H_

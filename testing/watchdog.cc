#include "testing/watchdog.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace concurry {
namespace testkit {

Watchdog::Watchdog(absl::Duration limit, std::string what)
    : thread_([this, limit, what = std::move(what)] {
        if (done_.WaitForNotificationWithTimeout(limit)) return;
        std::fprintf(stderr, "Watchdog: %s did not finish within %s: deadlock? Aborting.\n",
                     what.c_str(), absl::FormatDuration(limit).c_str());
        std::fflush(stderr);
        std::abort();
      }) {}

Watchdog::~Watchdog() {
  done_.Notify();
  thread_.join();
}

}  // namespace testkit
}  // namespace concurry

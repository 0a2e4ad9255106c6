// Mode::kProcess, a call made while the worker process is idle: the caller's thread writes it to
// the socket itself and, when it waits for the reply, reads the reply itself
// (futures/internal/wait_driver.h). What must hold on that path: replies complete (on the
// caller's thread, that is the point), a wait still ends on cancellation, on its deadline and
// when the process dies, and calls other threads make meanwhile are answered.

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "testing/shared_gates.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace app {

class Counter {
 public:
  int Add(int k) { return total_ += k; }
  void Sleep(int ms) { absl::SleepFor(absl::Milliseconds(ms)); }
  int Pid() { return static_cast<int>(getpid()); }
  void Hold(int gate) { concurry::testkit::SharedGates::Get().Hold(gate); }

 private:
  int total_ = 0;
};

}  // namespace app

CONCURRY_REGISTER_WORKER(app::Counter, (), Add, Sleep, Pid, Hold);

namespace concurry {
namespace {

using testkit::Watchdog;

WorkerOptions Options() { return {.mode = Mode::kProcess}; }

int64_t VoluntarySwitches() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_nvcsw;
}

TEST(ProcessCallerReadTest, TheCallersThreadReadsItsOwnReplies) {
  Watchdog watchdog(absl::Seconds(60), "calls whose caller reads the reply");
  auto w = Worker<app::Counter>::Create(Options());
  EXPECT_EQ(w.Call(&app::Counter::Add, 1).Result(), 1);
  constexpr int kCalls = 50;
  const int64_t before = VoluntarySwitches();
  for (int i = 2; i <= kCalls + 1; ++i) EXPECT_EQ(w.Call(&app::Counter::Add, 1).Result(), i);
  const int64_t switches = VoluntarySwitches() - before;
  // A caller reading its reply sleeps once per call (until the reply comes). Handing the call to
  // the actor's thread, or the reply to the reader thread, would add a sleep of that thread per
  // call too.
  EXPECT_LT(switches, kCalls * 3 / 2) << switches << " sleeps of this process's threads";
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(ProcessCallerReadTest, CallbacksOfTheFutureStillRunOnTheReaderThread) {
  Watchdog watchdog(absl::Seconds(60), "a call with a callback");
  auto w = Worker<app::Counter>::Create(Options());
  // The waiting thread does not read the reply of a future with callbacks: they would run inside
  // its wait instead of where they ran before.
  const std::thread::id me = std::this_thread::get_id();
  testkit::SharedGates& gates = testkit::SharedGates::Get();
  for (int i = 1; i <= 10; ++i) {
    // The reply cannot come before the callback is there: the call holds on a gate until then
    // (a callback added to a done future would run at once, on the thread adding it).
    const int gate = gates.Make();
    Future<void> f = w.Call(&app::Counter::Hold, gate);
    std::atomic<bool> on_reader{false};
    f.AddDoneCallback([&](const Future<void>&) { on_reader = std::this_thread::get_id() != me; });
    gates.Release(gate);
    f.Result();
    EXPECT_TRUE(on_reader);
  }
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(ProcessCallerReadTest, CancellingTheCallEndsTheWaitOfACallerReadingItsReply) {
  Watchdog watchdog(absl::Seconds(60), "a cancelled call whose caller reads the reply");
  auto w = Worker<app::Counter>::Create(Options());
  Future<void> f = w.Call(&app::Counter::Sleep, 3000);
  std::thread canceller([f]() mutable {
    absl::SleepFor(absl::Milliseconds(50));
    f.Cancel();
  });
  const absl::Time start = absl::Now();
  EXPECT_THROW(f.Result(), CancelledError);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  canceller.join();
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(ProcessCallerReadTest, ATimedWaitEndsAtItsDeadline) {
  auto w = Worker<app::Counter>::Create(Options());
  Future<void> f = w.Call(&app::Counter::Sleep, 1000);
  const absl::Time start = absl::Now();
  EXPECT_FALSE(f.Wait(absl::Milliseconds(40)));
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(40));
  EXPECT_LT(waited, absl::Milliseconds(800));
  f.Result();  // The reply still comes, to whichever thread reads it.
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(ProcessCallerReadTest, AProcessKilledWhileItsCallerWaitsFailsTheCall) {
  Watchdog watchdog(absl::Seconds(60), "a caller reading the reply of a killed process");
  auto w = Worker<app::Counter>::Create(Options());
  const int pid = w.Call(&app::Counter::Pid).Result();
  Future<void> f = w.Call(&app::Counter::Sleep, 5000);
  std::thread killer([pid] {
    absl::SleepFor(absl::Milliseconds(30));
    kill(pid, SIGKILL);
  });
  const absl::Time start = absl::Now();
  EXPECT_THROW(f.Result(), CrashedError);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  killer.join();
}

TEST(ProcessCallerReadTest, AContinuationThatStopsTheWorkerDoesNotHangItsCaller) {
  Watchdog watchdog(absl::Seconds(60), "a continuation stopping the worker on the caller's thread");
  auto w = Worker<app::Counter>::Create(Options());
  Future<int> f = w.Call(&app::Counter::Add, 2);
  f.AddDoneCallback([w](const Future<int>&) mutable { w.Stop(absl::Seconds(5)); });
  EXPECT_EQ(f.Result(), 2);
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(20)));
}

TEST(ProcessCallerReadTest, CallsOfOtherThreadsMeanwhileAreAllAnswered) {
  Watchdog watchdog(absl::Seconds(120), "calls of two threads on one process");
  auto w = Worker<app::Counter>::Create(Options());
  std::atomic<bool> done{false};
  std::thread other([&] {
    for (int round = 0; round < 50; ++round) {
      std::vector<Future<int>> calls;
      for (int i = 0; i < 20; ++i) calls.push_back(w.Call(&app::Counter::Add, 0));
      for (Future<int>& call : calls) call.Result();
    }
    done = true;
  });
  int mine = 0;
  while (!done) {
    w.Call(&app::Counter::Add, 1).Result();
    ++mine;
  }
  other.join();
  // Every call of this thread added 1, in order, whoever read its reply.
  EXPECT_EQ(w.Call(&app::Counter::Add, 0).Result(), mine);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

}  // namespace
}  // namespace concurry

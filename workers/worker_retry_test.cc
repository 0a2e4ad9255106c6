// Retries of worker calls (WorkerOptions::retry): inside the worker, per method, counted once,
// limits released between attempts, no retries multiplied by nested calls. Every available mode.

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/timer.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "retry/policy.h"
#include "retry/retry.h"
#include "testing/fake_clock.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace worker_retry_test {

// What the methods did, in order: shared with the test (the worker's object lives elsewhere).
struct Log {
  absl::Mutex mu;
  std::vector<std::string> events ABSL_GUARDED_BY(mu);
  void Add(std::string event) {
    absl::MutexLock lock(&mu);
    events.push_back(std::move(event));
  }
  std::vector<std::string> Get() {
    absl::MutexLock lock(&mu);
    return events;
  }
};

Log* log = nullptr;  // Set by the fixture.

class Flaky {
 public:
  // Fails the first `failures` calls, then returns the attempt number.
  int FailTimes(std::string label, int failures) {
    const int attempt = ++attempts_[label];
    log->Add(label + std::to_string(attempt));
    if (attempt <= failures) throw std::runtime_error(label + " failed");
    return attempt;
  }
  // Never retried when its own entry says so.
  int Other(int failures) { return FailTimes("other", failures); }
  // Calls FailTimes directly: its failures are this method's, retried once per attempt of Outer.
  int Outer(int inner_failures) { return FailTimes("inner", inner_failures) * 100; }
  // Holds the worker's only connection while it fails; a connection left held by a failed
  // attempt would make a later attempt find none.
  int HoldAndFail(int failures) {
    std::optional<LimitAcquisition> connection = CurrentWorkerLimits().TryAcquire();
    if (!connection.has_value()) {
      log->Add("no connection");
      return -1;
    }
    return FailTimes("hold", failures);
  }
  // Takes arguments that cannot be copied: runs once, unretried.
  int Consume(std::vector<std::unique_ptr<int>> values) {
    log->Add("consume");
    throw std::runtime_error("consume failed with " + std::to_string(values.size()));
  }
  // Throws CancelledError, which is never retried.
  int Cancelled() {
    log->Add("cancelled");
    throw CancelledError("gave up");
  }
  // Tells the test it runs, waits until the test cancelled the call, then fails.
  int FailAfterCancel(std::shared_ptr<absl::Notification> running,
                      std::shared_ptr<absl::Notification> cancelled) {
    log->Add("attempt");
    running->Notify();
    cancelled->WaitForNotification();
    throw std::runtime_error("failed after the cancel");
  }
  // Returns a future the test completes later.
  Future<int> Later(std::shared_ptr<Promise<int>> promise) {
    log->Add("later");
    return promise->GetFuture();
  }
  // Returns `value` (validators decide whether it is good).
  int Echo(int value) {
    log->Add("echo" + std::to_string(value));
    return value;
  }

 private:
  std::map<std::string, int> attempts_;
};

}  // namespace worker_retry_test
}  // namespace concurry

CONCURRY_REGISTER_WORKER(concurry::worker_retry_test::Flaky, (), FailTimes, Other, Outer,
                         HoldAndFail, Cancelled, Echo);

namespace concurry {
namespace worker_retry_test {
namespace {

RetryPolicy Immediate(int retries) {
  return RetryPolicy{.num_retries = retries, .wait = absl::ZeroDuration(), .jitter = 0};
}

class WorkerRetryTest : public ::testing::TestWithParam<Mode> {
 protected:
  WorkerRetryTest() { log = &log_; }
  ~WorkerRetryTest() override { log = nullptr; }

  WorkerOptions Options(WorkerRetry retry) {
    WorkerOptions options;
    options.mode = GetParam();
    options.retry = std::move(retry);
    return options;
  }

  Log log_;
};

TEST_P(WorkerRetryTest, FailingCallsAreRetriedInsideTheWorker) {
  auto worker = BlockingWorker<Flaky>::Create(Options(Immediate(2)));
  EXPECT_EQ(worker.Call(&Flaky::FailTimes, std::string("a"), 2), 3);
  EXPECT_EQ(log_.Get(), (std::vector<std::string>{"a1", "a2", "a3"}));
  // Out of retries: the original exception, unwrapped.
  try {
    worker.Call(&Flaky::FailTimes, std::string("b"), 5);
    FAIL() << "expected the method's error";
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "b failed");
  }
}

TEST_P(WorkerRetryTest, AMethodsOwnEntryReplacesThePolicyForEveryMethod) {
  auto worker = BlockingWorker<Flaky>::Create(
      Options(WorkerRetry(Immediate(3)).For<Flaky>(&Flaky::Other, Immediate(0))));
  EXPECT_THROW(worker.Call(&Flaky::Other, 1), std::runtime_error);  // Not retried.
  EXPECT_EQ(worker.Call(&Flaky::FailTimes, std::string("a"), 3), 4);
}

TEST_P(WorkerRetryTest, NestedCallsOfTheClassAreNotRetriedAgain) {
  auto worker = BlockingWorker<Flaky>::Create(Options(Immediate(3)));
  // Outer's three failures come from its direct call of FailTimes: 3 retries of Outer, not 4 x 4.
  EXPECT_EQ(worker.Call(&Flaky::Outer, 3), 400);
  EXPECT_EQ(log_.Get(), (std::vector<std::string>{"inner1", "inner2", "inner3", "inner4"}));
}

TEST_P(WorkerRetryTest, ARetriedCallCountsOnceAndKeepsTheWorker) {
  WorkerOptions options = Options(Immediate(2));
  options.max_queued_tasks = 1;
  auto worker = Worker<Flaky>::Create(options);
  Future<int> first = worker.Call(&Flaky::FailTimes, std::string("a"), 2);
  Future<int> second = worker.Call(&Flaky::FailTimes, std::string("b"), 0);
  EXPECT_EQ(first.Result(absl::Seconds(30)), 3);
  EXPECT_EQ(second.Result(absl::Seconds(30)), 1);
  // The second call waited for the first one's slot: no attempt of it ran in between.
  EXPECT_EQ(log_.Get(), (std::vector<std::string>{"a1", "a2", "a3", "b1"}));
}

TEST_P(WorkerRetryTest, LimitsHeldByAFailedAttemptAreReleasedBeforeTheNext) {
  WorkerOptions options = Options(Immediate(2));
  options.limits = LimitSet::Create({ResourceLimit("connections", 1)});
  auto worker = BlockingWorker<Flaky>::Create(options);
  EXPECT_EQ(worker.Call(&Flaky::HoldAndFail, 2), 3);
  EXPECT_EQ(log_.Get(), (std::vector<std::string>{"hold1", "hold2", "hold3"}));
}

TEST_P(WorkerRetryTest, CallsThatCannotBeCopiedOrWereCancelledRunOnce) {
  auto worker = BlockingWorker<Flaky>::Create(Options(Immediate(3)));
  std::vector<std::unique_ptr<int>> values;
  values.push_back(std::make_unique<int>(1));
  EXPECT_THROW(worker.Call(&Flaky::Consume, std::move(values)), std::runtime_error);
  EXPECT_THROW(worker.Call(&Flaky::Cancelled), CancelledError);
  // (Loopback rejects Consume before it runs: its argument cannot be encoded.)
  EXPECT_EQ(log_.Get(), GetParam() == Mode::kLoopback
                            ? std::vector<std::string>{"cancelled"}
                            : (std::vector<std::string>{"consume", "cancelled"}));
}

TEST_P(WorkerRetryTest, ACancelledCallIsNotRetried) {
  if (GetParam() == Mode::kSync || GetParam() == Mode::kLoopback) {
    GTEST_SKIP() << "the call runs inside Call() (sync) or needs encodable arguments (loopback)";
  }
  auto worker = Worker<Flaky>::Create(Options(Immediate(5)));
  auto running = std::make_shared<absl::Notification>();
  auto cancelled = std::make_shared<absl::Notification>();
  Future<int> call = worker.Call(&Flaky::FailAfterCancel, running, cancelled);
  running->WaitForNotification();
  call.Cancel();
  cancelled->Notify();
  worker.Stop();
  EXPECT_EQ(log_.Get(), std::vector<std::string>{"attempt"});
}

TEST_P(WorkerRetryTest, APendingFutureResultEndsTheRetriesEvenForCatchAllFilters) {
  if (GetParam() == Mode::kLoopback) GTEST_SKIP() << "a Promise argument cannot be encoded";
  RetryPolicy policy = Immediate(3);
  policy.retry_on = {[](const std::exception_ptr&, const RetryContext&) { return true; }};
  auto worker = Worker<Flaky>::Create(Options(policy));
  auto promise = std::make_shared<Promise<int>>();
  Future<int> call = worker.Call(&Flaky::Later, promise);
  promise->SetValue(7);
  EXPECT_EQ(call.Result(absl::Seconds(30)), 7);
  EXPECT_EQ(log_.Get(), std::vector<std::string>{"later"});
}

TEST_P(WorkerRetryTest, ValidatorsWorkWithZeroRetries) {
  RetryPolicy policy = Immediate(0);
  policy.retry_until = {Validate<int>("positive", [](const int& v) { return v > 0; })};
  auto worker = BlockingWorker<Flaky>::Create(Options(policy));
  EXPECT_EQ(worker.Call(&Flaky::Echo, 5), 5);
  try {
    worker.Call(&Flaky::Echo, -1);
    FAIL() << "expected RetryValidationError";
  } catch (const RetryValidationError& error) {
    EXPECT_EQ(error.attempts(), 1);
    ASSERT_EQ(error.validation_errors().size(), 1u);
    EXPECT_NE(error.validation_errors()[0].find("positive"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, WorkerRetryTest,
                         ::testing::Values(Mode::kSync, Mode::kThread, Mode::kTbb, Mode::kLoopback),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return AbslUnparseFlag(info.param);
                         });

class Other {
 public:
  int Get() { return 1; }
};

TEST(WorkerRetryOptionsTest, EntriesForAnotherClassAndInvalidPoliciesAreRejected) {
  try {
    BlockingWorker<Flaky>::Create(
        {.mode = Mode::kThread, .retry = WorkerRetry().For<Other>(&Other::Get, Immediate(1))});
    FAIL() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_NE(std::string(error.what()).find("are for class"), std::string::npos) << error.what();
  }
  RetryPolicy bad = Immediate(1);
  bad.jitter = 2;
  try {
    BlockingWorker<Flaky>::Create({.mode = Mode::kThread, .retry = bad});
    FAIL() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& error) {
    EXPECT_NE(std::string(error.what()).find("retry"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("jitter"), std::string::npos) << error.what();
  }
  EXPECT_THROW(TaskWorker::Create({.retry = WorkerRetry().For<Flaky>(&Flaky::Echo, Immediate(1))}),
               InvalidOptionError);
}

TEST(WorkerRetryOptionsTest, TaskWorkerSubmitUsesThePolicyForEveryCall) {
  TaskWorker tasks = TaskWorker::Create({.mode = Mode::kThread, .retry = Immediate(2)});
  auto attempts = std::make_shared<int>(0);
  const int result = tasks
                         .Submit([attempts] {
                           if (++*attempts < 3) throw std::runtime_error("flaky");
                           return *attempts;
                         })
                         .Result(absl::Seconds(30));
  EXPECT_EQ(result, 3);
}

// RetryAsync submits its next attempt from the timer's thread. On a full worker whose queue
// blocks callers, that submission is deferred (Timer callbacks run in a NonBlockingScope): the
// timer keeps serving its other callbacks.
TEST(WorkerRetryOptionsTest, RetryAsyncOnAFullBlockingWorkerDoesNotStallTheTimer) {
  testkit::FakeClock clock;
  Timer timer(clock);
  TaskWorker worker = TaskWorker::Create(
      {.mode = Mode::kThread, .max_queued_tasks = 1, .queue_full = QueueFullPolicy::kBlock});
  auto attempts = std::make_shared<std::atomic<int>>(0);
  Future<int> retried = RetryAsync(
      worker,
      [attempts] {
        if (attempts->fetch_add(1) == 0) throw std::runtime_error("first attempt fails");
        return 5;
      },
      RetryPolicy{.num_retries = 1, .wait = absl::Seconds(1), .jitter = 0}, {.timer = &timer});
  clock.BlockUntilWaiters(1);  // Attempt 1 failed; the timer waits for the back-off.
  absl::Notification running;
  absl::Notification release;
  Future<void> busy = worker.Submit([&] {
    running.Notify();
    release.WaitForNotification();
  });
  running.WaitForNotification();    // The worker's only slot is taken.
  clock.Advance(absl::Seconds(1));  // The timer submits attempt 2 to the full worker.
  absl::Notification timer_alive;
  timer.Schedule(clock.Now(), [&] { timer_alive.Notify(); });
  EXPECT_TRUE(timer_alive.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_FALSE(retried.Done());
  release.Notify();
  EXPECT_EQ(retried.Result(absl::Seconds(30)), 5);
  EXPECT_EQ(attempts->load(), 2);
  busy.Result(absl::Seconds(30));
}

TEST(WorkerRetryOptionsTest, CallsWithMoveOnlyArgumentsRunOnce) {
  TaskWorker tasks = TaskWorker::Create({.mode = Mode::kThread, .retry = Immediate(2)});
  auto attempts = std::make_shared<int>(0);
  Future<int> result = tasks.Submit(
      [attempts](std::unique_ptr<int> value) -> int {
        ++*attempts;
        throw std::runtime_error("flaky " + std::to_string(*value));
      },
      std::make_unique<int>(7));
  EXPECT_THROW(result.Result(absl::Seconds(30)), std::runtime_error);
  EXPECT_EQ(*attempts, 1);
}

}  // namespace
}  // namespace worker_retry_test
}  // namespace concurry

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/timer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retry/policy.h"
#include "retry/retry.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs the next attempt once the timer's thread has submitted it.
void RunNext(testkit::ManualExecutor& executor) {
  executor.BlockUntilPending(1);
  ASSERT_TRUE(executor.RunOne());
}

class RetryAsyncTest : public ::testing::Test {
 protected:
  RetryOptions Options() { return RetryOptions{.timer = &timer_}; }
  absl::Duration SinceStart() const { return clock_.Now() - start_; }

  testkit::FakeClock clock_;
  const absl::Time start_ = clock_.Now();
  Timer timer_{clock_};
  testkit::ManualExecutor executor_;
};

TEST_F(RetryAsyncTest, WaitsOnTheTimerWithExactTimes) {
  std::vector<absl::Duration> attempts;
  const RetryPolicy policy{.num_retries = 3, .wait = absl::Seconds(1), .jitter = 0};
  Future<int> future = RetryAsync(
      executor_,
      [&] {
        attempts.push_back(SinceStart());
        if (attempts.size() < 3) throw std::runtime_error("flaky");
        return 42;
      },
      policy, Options());
  ASSERT_EQ(executor_.pending(), 1u);
  ASSERT_TRUE(executor_.RunOne());  // Attempt 1 fails; the wait is on the timer.
  EXPECT_EQ(executor_.pending(), 0u);
  EXPECT_EQ(timer_.pending(), 1u);
  EXPECT_FALSE(future.Done());
  clock_.Advance(absl::Milliseconds(999));
  EXPECT_EQ(executor_.pending(), 0u);
  clock_.Advance(absl::Milliseconds(1));
  RunNext(executor_);  // Attempt 2 at 1 s fails; next wait 2 s.
  clock_.Advance(absl::Seconds(2));
  RunNext(executor_);  // Attempt 3 at 3 s succeeds.
  ASSERT_TRUE(future.Done());
  EXPECT_EQ(future.Result(), 42);
  EXPECT_THAT(attempts, ElementsAre(absl::ZeroDuration(), absl::Seconds(1), absl::Seconds(3)));
  EXPECT_EQ(timer_.pending(), 0u);
}

TEST_F(RetryAsyncTest, ZeroWaitResubmitsWithoutTheTimer) {
  int calls = 0;
  Future<int> future = RetryAsync(
      executor_,
      [&] {
        if (++calls < 3) throw std::runtime_error("x");
        return calls;
      },
      RetryPolicy{.num_retries = 5, .wait = absl::ZeroDuration()}, Options());
  EXPECT_EQ(executor_.RunAll(), 3);
  EXPECT_EQ(future.Result(), 3);
  EXPECT_EQ(timer_.pending(), 0u);
}

TEST_F(RetryAsyncTest, CancellingDuringTheWaitStopsFurtherAttempts) {
  int calls = 0;
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        ++calls;
        throw std::runtime_error("down");
      },
      RetryPolicy{.num_retries = 5, .wait = absl::Seconds(1), .jitter = 0}, Options());
  ASSERT_TRUE(executor_.RunOne());
  ASSERT_EQ(timer_.pending(), 1u);
  EXPECT_TRUE(future.Cancel());
  EXPECT_EQ(timer_.pending(), 0u);  // The wait was cancelled.
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(executor_.pending(), 0u);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(future.Cancelled());
  EXPECT_THROW(future.Result(), CancelledError);
}

TEST_F(RetryAsyncTest, CancellingBeforeAQueuedAttemptSkipsIt) {
  int calls = 0;
  Future<int> future = RetryAsync(
      executor_, [&] { return ++calls; }, RetryPolicy{}, Options());
  EXPECT_TRUE(future.Cancel());
  EXPECT_EQ(executor_.RunAll(), 1);
  EXPECT_EQ(calls, 0);
}

TEST_F(RetryAsyncTest, OutcomesReachTheFutureAsTheyWould) {
  // A non-retried error: its original type.
  Future<int> error = RetryAsync(
      executor_, []() -> int { throw std::logic_error("bug"); },
      RetryPolicy{.num_retries = 3, .retry_on = {RetryOn<std::out_of_range>()}}, Options());
  executor_.RunAll();
  EXPECT_THROW(error.Result(), std::logic_error);

  // A status: kUnavailable retried, the last status is the error.
  int calls = 0;
  Future<std::string> status = RetryAsync(
      executor_,
      [&]() -> absl::StatusOr<std::string> {
        ++calls;
        return absl::UnavailableError("down");
      },
      RetryPolicy{.num_retries = 1, .wait = absl::ZeroDuration()}, Options());
  executor_.RunAll();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(status.Status(), absl::UnavailableError("down"));

  // absl::Status callables give Future<void>.
  Future<void> ok = RetryAsync(
      executor_, [] { return absl::OkStatus(); }, RetryPolicy{}, Options());
  executor_.RunAll();
  EXPECT_TRUE(ok.Status().ok());

  // Validation failure: a TypedRetryValidationError.
  Future<int> invalid = RetryAsync(
      executor_, [n = 0]() mutable { return ++n; },
      RetryPolicy{.num_retries = 1,
                  .wait = absl::ZeroDuration(),
                  .retry_until = {Validate<int>("big", [](int v) { return v > 5; })}},
      Options());
  executor_.RunAll();
  try {
    invalid.Result();
    FAIL();
  } catch (const TypedRetryValidationError<int>& e) {
    EXPECT_EQ(e.attempts(), 2);
    EXPECT_THAT(e.values(), ElementsAre(1, 2));
    EXPECT_THAT(e.validation_errors(), ElementsAre("attempt 1: validator 'big' returned false",
                                                   "attempt 2: validator 'big' returned false"));
  }
}

TEST_F(RetryAsyncTest, CallInfoIsCopied) {
  std::vector<std::string> seen;
  Future<int> future;
  {
    std::string name = "a method name longer than the small string buffer";
    RetryOptions options = Options();
    options.call.method_name = name;
    future = RetryAsync(
        executor_, []() -> int { throw std::runtime_error("x"); },
        RetryPolicy{.num_retries = 1,
                    .wait = absl::ZeroDuration(),
                    .retry_on = {[&](const std::exception_ptr&, const RetryContext& context) {
                      seen.push_back(std::string(context.method_name));
                      return true;
                    }}},
        options);
    name.assign(name.size(), '?');
  }
  executor_.RunAll();
  EXPECT_THAT(seen, ElementsAre("a method name longer than the small string buffer",
                                "a method name longer than the small string buffer"));
  EXPECT_THROW(future.Result(), std::runtime_error);
}

TEST_F(RetryAsyncTest, DeadlineUsesTheTimersClock) {
  int calls = 0;
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        ++calls;
        throw std::runtime_error("x");
      },
      RetryPolicy{
          .num_retries = 10, .wait = absl::Seconds(1), .jitter = 0, .deadline = absl::Seconds(2)},
      Options());
  ASSERT_TRUE(executor_.RunOne());  // At 0: wait 1 s (ends at 1 <= 2).
  clock_.Advance(absl::Seconds(1));
  RunNext(executor_);  // At 1: wait 2 s would end at 3 > 2: the error is final.
  EXPECT_EQ(calls, 2);
  EXPECT_THROW(future.Result(), std::runtime_error);
  EXPECT_EQ(timer_.pending(), 0u);
}

TEST_F(RetryAsyncTest, RejectsAnInvalidPolicyOrAForeignClock) {
  EXPECT_THROW(RetryAsync(
                   executor_, [] { return 1; }, RetryPolicy{.num_retries = -1}, Options()),
               InvalidOptionError);
  testkit::FakeClock other;
  RetryOptions options = Options();
  options.clock = &other;
  EXPECT_THROW(RetryAsync(
                   executor_, [] { return 1; }, RetryPolicy{}, options),
               InvalidOptionError);
  options.clock = &clock_;  // The timer's own clock is fine.
  Future<int> future = RetryAsync(
      executor_, [] { return 1; }, RetryPolicy{}, options);
  executor_.RunAll();
  EXPECT_EQ(future.Result(), 1);
  EXPECT_EQ(executor_.pending(), 0u);
}

class RejectingExecutor final : public Executor {
 public:
  void Submit(Task) override { throw StoppedError("executor stopped"); }
};

TEST_F(RetryAsyncTest, AWaitThatWouldNeverEndFailsTheFutureInsteadOfLeavingItPending) {
  // A Retry-After of InfiniteDuration() with no max_wait, and a finite wait whose end saturates at
  // absl::InfiniteFuture(): a timer entry that never fires would leave the future pending for
  // ever. The retry ends with the attempt's error instead.
  for (const absl::Duration delay :
       {absl::InfiniteDuration(), absl::Seconds(std::numeric_limits<int64_t>::max())}) {
    SCOPED_TRACE(absl::FormatDuration(delay));
    int calls = 0;
    Future<int> future = RetryAsync(
        executor_,
        [&]() -> int {
          ++calls;
          throw std::runtime_error("busy");
        },
        RetryPolicy{.num_retries = 3,
                    .delay_hook = [delay](const RetryFailure&, const RetryContext&)
                        -> std::optional<absl::Duration> { return delay; }},
        Options());
    ASSERT_TRUE(executor_.RunOne());
    EXPECT_EQ(timer_.pending(), 0u);
    ASSERT_TRUE(future.Done());
    EXPECT_THROW(future.Result(), std::runtime_error);
    EXPECT_EQ(calls, 1);
  }
}

TEST_F(RetryAsyncTest, HugeFiniteWaitsAreScheduledExactly) {
  // 2^61 s fits: the timer gets a finite deadline that far away (and the wait can be cancelled).
  int calls = 0;
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        ++calls;
        throw std::runtime_error("down");
      },
      RetryPolicy{.num_retries = 1, .wait = absl::Seconds(int64_t{1} << 61), .jitter = 0},
      Options());
  ASSERT_TRUE(executor_.RunOne());
  EXPECT_EQ(timer_.pending(), 1u);
  clock_.Advance(absl::Hours(24 * 365 * 1000));
  EXPECT_EQ(executor_.pending(), 0u);
  clock_.SetTime(start_ + absl::Seconds(int64_t{1} << 61));
  RunNext(executor_);
  EXPECT_EQ(calls, 2);
  EXPECT_THROW(future.Result(), std::runtime_error);
}

TEST_F(RetryAsyncTest, AnExecutorThatRejectsFailsTheFuture) {
  RejectingExecutor executor;
  Future<int> future = RetryAsync(
      executor, [] { return 1; }, RetryPolicy{}, Options());
  EXPECT_THROW(future.Result(), StoppedError);
}

TEST(RetryAsyncRealTimeTest, DefaultTimerAndInlineExecutor) {
  int calls = 0;
  Future<int> future = RetryAsync(
      InlineExecutor(),
      [&] {
        if (++calls < 3) throw std::runtime_error("x");
        return calls;
      },
      RetryPolicy{.num_retries = 3, .wait = absl::Milliseconds(1)});
  EXPECT_EQ(future.Result(absl::Seconds(30)), 3);
}

}  // namespace
}  // namespace concurry

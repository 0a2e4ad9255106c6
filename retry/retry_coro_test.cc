#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/timer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retry/policy.h"
#include "retry/retry.h"
#include "retry/retry_after.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Coroutines spawned on a ManualExecutor whose scheduler clock is a FakeClock: every step and
// every wake is run by the test.
class RetryCoroTest : public ::testing::Test {
 protected:
  template <typename T>
  Future<T> Start(Coro<T> coro) {
    return Spawn(executor_, std::move(coro), clock_);
  }
  absl::Duration SinceStart() const { return clock_.Now() - start_; }
  // Once the timer waits for the next wake, moves `clock` on by `step`; the wake is not due.
  void AdvanceNotDue(testkit::FakeClock& clock, absl::Duration step) {
    clock.BlockUntilWaiters(1);
    clock.Advance(step);
    clock.BlockUntilWaiters(1);  // Still waiting for the same wake.
    EXPECT_EQ(executor_.pending(), 0u);
  }
  // Once the timer waits for the next wake, moves `clock` on by `step`, which makes it due, and
  // runs the step that resumes the coroutine.
  void AdvanceAndRun(testkit::FakeClock& clock, absl::Duration step) {
    clock.BlockUntilWaiters(1);
    clock.Advance(step);
    executor_.BlockUntilPending(1);
    executor_.RunAll();
  }

  testkit::FakeClock clock_;
  const absl::Time start_ = clock_.Now();
  testkit::ManualExecutor executor_;
};

TEST_F(RetryCoroTest, WaitsOnTheSchedulersClockWithExactTimes) {
  std::vector<absl::Duration> attempts;
  auto attempt = [&]() -> Coro<int> {
    attempts.push_back(SinceStart());
    if (attempts.size() < 3) throw std::runtime_error("flaky");
    co_return 42;
  };
  Future<int> out = Start(
      RetryAsync(attempt, RetryPolicy{.num_retries = 3, .wait = absl::Seconds(1), .jitter = 0}));
  ASSERT_EQ(executor_.pending(), 1u);
  executor_.RunAll();  // Attempt 1 fails at 0 s; the coroutine waits 1 s without a thread.
  EXPECT_FALSE(out.Done());
  AdvanceNotDue(clock_, absl::Milliseconds(999));
  AdvanceAndRun(clock_, absl::Milliseconds(1));  // Attempt 2 fails at 1 s; next wait 2 s.
  AdvanceNotDue(clock_, absl::Milliseconds(1999));
  AdvanceAndRun(clock_, absl::Milliseconds(1));  // Attempt 3 succeeds at 3 s.
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 42);
  EXPECT_THAT(attempts, ElementsAre(absl::ZeroDuration(), absl::Seconds(1), absl::Seconds(3)));
}

TEST_F(RetryCoroTest, AttemptsMayReturnFuturesCorosOrPlainValues) {
  // Future<int>: a failed one is retried; a pending one is awaited through the scheduler.
  std::vector<Promise<int>> promises(2);
  int calls = 0;
  Future<int> from_futures =
      Start(RetryAsync([&] { return promises[calls++].GetFuture(); },
                       RetryPolicy{.num_retries = 2, .wait = absl::ZeroDuration()}));
  promises[0].SetError(std::make_exception_ptr(std::runtime_error("first")));
  executor_.RunAll();  // Attempt 1's future failed; attempt 2's is pending.
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(from_futures.Done());
  promises[1].SetValue(7);
  EXPECT_EQ(executor_.pending(), 1u);  // The resumption goes through the scheduler.
  executor_.RunAll();
  EXPECT_EQ(from_futures.Result(), 7);

  // Coro<void>.
  int void_calls = 0;
  auto void_attempt = [&]() -> Coro<void> {
    if (++void_calls < 2) throw std::runtime_error("again");
    co_return;
  };
  SyncWait(RetryAsync(void_attempt, RetryPolicy{.num_retries = 1, .wait = absl::ZeroDuration()}),
           clock_);
  EXPECT_EQ(void_calls, 2);

  // A plain value, returned by reference: copied.
  std::string stored = "kept";
  int plain_calls = 0;
  auto by_reference = [&]() -> const std::string& {
    if (++plain_calls < 3) throw std::runtime_error("x");
    return stored;
  };
  Coro<std::string> plain =
      RetryAsync(by_reference, RetryPolicy{.num_retries = 5, .wait = absl::ZeroDuration()});
  EXPECT_EQ(SyncWait(std::move(plain), clock_), "kept");
  EXPECT_EQ(plain_calls, 3);
  EXPECT_EQ(stored, "kept");
}

TEST_F(RetryCoroTest, OutcomesKeepTheirTypes) {
  const RetryPolicy fast{.num_retries = 2, .wait = absl::ZeroDuration()};

  // A non-retried error: its original type, after one attempt.
  int calls = 0;
  auto logic = [&]() -> Coro<int> {
    ++calls;
    throw std::logic_error("bug");
    co_return 0;
  };
  RetryPolicy only_range = fast;
  only_range.retry_on = {RetryOn<std::out_of_range>()};
  EXPECT_THROW(SyncWait(RetryAsync(logic, only_range), clock_), std::logic_error);
  EXPECT_EQ(calls, 1);

  // The last error once attempts run out: the object the attempt threw.
  calls = 0;
  auto range = [&]() -> Coro<int> {
    ++calls;
    throw std::out_of_range("attempt " + std::to_string(calls));
    co_return 0;
  };
  try {
    SyncWait(RetryAsync(range, fast), clock_);
    FAIL() << "no error";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "attempt 3");
  }

  // A status is the value, as Retry() returns it: kUnavailable retried, the last one returned.
  calls = 0;
  auto unavailable = [&]() -> Coro<absl::StatusOr<int>> {
    ++calls;
    co_return absl::UnavailableError("down");
  };
  absl::StatusOr<int> status = SyncWait(RetryAsync(unavailable, fast), clock_);
  EXPECT_EQ(status.status(), absl::UnavailableError("down"));
  EXPECT_EQ(calls, 3);

  // Validation failure: a TypedRetryValidationError with the rejected values.
  auto counter = [n = 0]() mutable -> Coro<int> { co_return ++n; };
  RetryPolicy validated{.num_retries = 1,
                        .wait = absl::ZeroDuration(),
                        .retry_until = {Validate<int>("big", [](int v) { return v > 5; })}};
  try {
    SyncWait(RetryAsync(counter, validated), clock_);
    FAIL() << "no error";
  } catch (const TypedRetryValidationError<int>& e) {
    EXPECT_EQ(e.attempts(), 2);
    EXPECT_THAT(e.values(), ElementsAre(1, 2));
    EXPECT_THAT(e.validation_errors(), ElementsAre("attempt 1: validator 'big' returned false",
                                                   "attempt 2: validator 'big' returned false"));
  }

  // ... and an absl::AbortedError for a status callable.
  auto ok_status = []() -> Coro<absl::Status> { co_return absl::OkStatus(); };
  RetryPolicy never_valid{
      .num_retries = 1,
      .wait = absl::ZeroDuration(),
      .retry_until = {RetryValidator{.name = "never",
                                     .check = [](const RetryResult&, const RetryContext&)
                                         -> std::optional<std::string> { return "not yet"; }}}};
  absl::Status aborted = SyncWait(RetryAsync(ok_status, never_valid), clock_);
  EXPECT_EQ(aborted.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(aborted.message(), HasSubstr("validator 'never'"));
}

TEST_F(RetryCoroTest, CancellingDuringTheWaitEndsTheRetry) {
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    ++calls;
    throw std::runtime_error("down");
    co_return 0;
  };
  Future<int> out = Start(
      RetryAsync(attempt, RetryPolicy{.num_retries = 5, .wait = absl::Hours(1), .jitter = 0}));
  executor_.RunAll();
  clock_.BlockUntilWaiters(1);  // Waiting for the 1 h back-off.
  EXPECT_TRUE(out.Cancel());
  EXPECT_EQ(executor_.pending(), 1u);  // The cancellation resumes the coroutine on its executor.
  executor_.RunAll();
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryCoroTest, CancellingDuringAnAwaitedAttemptCancelsItsFuture) {
  Promise<int> reply;
  int calls = 0;
  Future<int> out = Start(RetryAsync(
      [&] {
        ++calls;
        return reply.GetFuture();
      },
      RetryPolicy{.num_retries = 5, .wait = absl::ZeroDuration()}));
  executor_.RunAll();  // Attempt 1 awaits the reply.
  EXPECT_TRUE(out.Cancel());
  executor_.RunAll();
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_TRUE(reply.IsCancelled());  // The retry held the only reference: withdrawn.
  EXPECT_EQ(calls, 1);
}

// A policy that would retry anything, and records what its filter and RetryOptions::stop see:
// neither may see the end of a cancelled or stopped coroutine.
struct WatchedRetry {
  RetryPolicy Policy() {
    return RetryPolicy{.num_retries = 5,
                       .wait = absl::Seconds(1),
                       .jitter = 0,
                       .retry_on = {[this](const std::exception_ptr&, const RetryContext&) {
                         ++filtered;
                         return true;
                       }}};
  }
  RetryOptions Options() {
    return RetryOptions{.stop = [this] {
      ++stop_asked;
      return false;
    }};
  }
  int filtered = 0;
  int stop_asked = 0;
};

TEST_F(RetryCoroTest, CancellingWhileACoroAttemptIsAwaitedEndsTheRetryUnfiltered) {
  Promise<int> reply;
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    ++calls;
    const int v = co_await reply.GetFuture();
    co_return v;
  };
  WatchedRetry watched;
  Future<int> out = Start(RetryAsync(attempt, watched.Policy(), watched.Options()));
  executor_.RunAll();  // Attempt 1 awaits the reply inside its own Coro.
  ASSERT_FALSE(out.Done());
  EXPECT_TRUE(out.Cancel());
  executor_.RunAll();
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(watched.filtered, 0);
  EXPECT_EQ(watched.stop_asked, 0);
  EXPECT_EQ(executor_.pending(), 0u);
}

// Queues steps and runs them when told; once `rejecting`, Submit throws StoppedError, as an
// executor shutting down does. Not thread-safe.
class RejectingExecutor final : public Executor {
 public:
  void Submit(Task task) override {
    if (rejecting) throw StoppedError("the test executor is shutting down");
    queue.push_back(std::move(task));
  }
  void RunAll() {
    while (!queue.empty()) {
      Task task = std::move(queue.front());
      queue.erase(queue.begin());
      task();
    }
  }
  bool rejecting = false;
  std::vector<Task> queue;
};

// The executor rejects the step that would resume an awaited attempt: the coroutine is stopped,
// the attempt's await throws StoppedError, and the retry ends with it at once.
TEST_F(RetryCoroTest, AStoppedCoroutineEndsTheRetryUnfiltered) {
  RejectingExecutor executor;
  Promise<int> reply;
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    ++calls;
    const int v = co_await reply.GetFuture();
    co_return v;
  };
  WatchedRetry watched;
  Future<int> out =
      Spawn(executor, RetryAsync(attempt, watched.Policy(), watched.Options()), clock_);
  executor.RunAll();
  ASSERT_FALSE(out.Done());
  executor.rejecting = true;
  reply.SetValue(1);  // Its resumption is rejected: the step runs here, stopped.
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), StoppedError);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(watched.filtered, 0);
  EXPECT_EQ(watched.stop_asked, 0);
}

TEST_F(RetryCoroTest, ACancellationBetweenZeroWaitAttemptsIsSeen) {
  Future<int> out;
  int calls = 0;
  auto attempt = [&]() -> int {
    ++calls;
    out.Cancel();  // From inside the running step: seen at the check before the next attempt.
    throw std::runtime_error("x");
  };
  out = Start(RetryAsync(attempt, RetryPolicy{.num_retries = 5, .wait = absl::ZeroDuration()}));
  executor_.RunAll();
  EXPECT_THROW(out.Result(), CancelledError);
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryCoroTest, StopEndsTheRetryWithTheAttemptsError) {
  int calls = 0;
  bool stop = false;
  auto attempt = [&]() -> Coro<int> {
    if (++calls == 2) stop = true;
    throw std::out_of_range("attempt " + std::to_string(calls));
    co_return 0;
  };
  RetryOptions options{.stop = [&] { return stop; }};
  try {
    SyncWait(
        RetryAsync(attempt, RetryPolicy{.num_retries = 5, .wait = absl::ZeroDuration()}, options),
        clock_);
    FAIL() << "no error";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "attempt 2");
  }
  EXPECT_EQ(calls, 2);
}

TEST_F(RetryCoroTest, OptionsClockIsUsedInsteadOfTheSchedulers) {
  testkit::FakeClock other;
  const absl::Time other_start = other.Now();
  std::vector<absl::Time> attempts;
  auto attempt = [&]() -> Coro<int> {
    attempts.push_back(other.Now());
    if (attempts.size() < 2) throw std::runtime_error("x");
    co_return 1;
  };
  Future<int> out = Start(
      RetryAsync(attempt, RetryPolicy{.num_retries = 1, .wait = absl::Seconds(1), .jitter = 0},
                 RetryOptions{.clock = &other}));
  executor_.RunAll();
  clock_.Advance(absl::Hours(1));  // The scheduler's clock does not end the wait.
  AdvanceNotDue(other, absl::Milliseconds(999));
  AdvanceAndRun(other, absl::Milliseconds(1));
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 1);
  EXPECT_THAT(attempts, ElementsAre(other_start, other_start + absl::Seconds(1)));
}

TEST_F(RetryCoroTest, DeadlineIsOnTheSameClock) {
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    ++calls;
    throw std::runtime_error("x");
    co_return 0;
  };
  Future<int> out = Start(RetryAsync(
      attempt,
      RetryPolicy{
          .num_retries = 10, .wait = absl::Seconds(1), .jitter = 0, .deadline = absl::Seconds(2)}));
  executor_.RunAll();                       // At 0: wait 1 s (ends at 1 <= 2).
  AdvanceAndRun(clock_, absl::Seconds(1));  // At 1: a 2 s wait would end at 3 > 2: final.
  EXPECT_EQ(calls, 2);
  ASSERT_TRUE(out.Done());
  EXPECT_THROW(out.Result(), std::runtime_error);
}

TEST_F(RetryCoroTest, AServerDelayHintSetsTheWait) {
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    if (++calls == 1) throw RetryAfterError(absl::Seconds(5), "busy");
    co_return calls;
  };
  Future<int> out = Start(RetryAsync(
      attempt,
      RetryPolicy{
          .num_retries = 1, .wait = absl::Seconds(1), .jitter = 0, .delay_hook_jitter = 0}));
  executor_.RunAll();
  AdvanceNotDue(clock_, absl::Milliseconds(4999));  // max(5 s asked, 1 s back-off).
  AdvanceAndRun(clock_, absl::Milliseconds(1));
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 2);
}

TEST_F(RetryCoroTest, JitterDrawsFromTheGivenBitGen) {
  const RetryPolicy policy{.num_retries = 1, .wait = absl::Seconds(10), .jitter = 0.5};
  std::mt19937_64 expected_gen(17);
  const absl::Duration expected = BackoffWait(policy, 1, expected_gen);
  ASSERT_LT(expected, absl::Seconds(10));  // The jitter drew something below the base.

  std::mt19937_64 gen(17);
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    if (++calls == 1) throw std::runtime_error("x");
    co_return calls;
  };
  Future<int> out = Start(RetryAsync(attempt, policy, RetryOptions{.bitgen = gen}));
  executor_.RunAll();
  AdvanceNotDue(clock_, expected - absl::Nanoseconds(1));
  AdvanceAndRun(clock_, absl::Nanoseconds(1));
  ASSERT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 2);
}

TEST_F(RetryCoroTest, AwaitedFromAParentCoroUnderSyncWait) {
  std::thread advancer([this] {
    clock_.BlockUntilWaiters(1);  // SyncWait's coroutine waits 1 s on the clock.
    clock_.Advance(absl::Seconds(1));
  });
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    if (++calls == 1) throw std::runtime_error("x");
    co_return 10;
  };
  auto parent = [](decltype(attempt)& attempt, absl::Time start,
                   Clock& clock) -> Coro<absl::Duration> {
    // GCC 12: no braced temporaries in a co_await expression; build the retry first.
    const RetryPolicy policy{.num_retries = 1, .wait = absl::Seconds(1), .jitter = 0};
    Coro<int> retry = RetryAsync(attempt, policy);
    const int v = co_await std::move(retry);
    if (v != 10) throw std::logic_error("unexpected value");
    co_return clock.Now() - start;
  };
  EXPECT_EQ(SyncWait(parent(attempt, start_, clock_), clock_), absl::Seconds(1));
  advancer.join();
  EXPECT_EQ(calls, 2);
}

// GCC 12 keeps the temporaries of a co_await expression in the frame: the by-value policy and
// the default options of the call must survive that (ASan checks it).
TEST_F(RetryCoroTest, AwaitedDirectlyInACoAwaitExpression) {
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    if (++calls < 3) throw std::runtime_error("x");
    co_return calls;
  };
  auto parent = [](decltype(attempt)& attempt) -> Coro<int> {
    const RetryPolicy policy{
        .num_retries = 3,
        .wait = absl::ZeroDuration(),
        .retry_until = {Validate<int>("a validator name longer than the small string buffer",
                                      [](int v) { return v > 0; })}};
    const int with_default_options = co_await RetryAsync(attempt, policy);
    RetryOptions options;
    options.call.method_name = "a method name longer than the small string buffer";
    const int with_options = co_await RetryAsync(attempt, policy, options);
    // A capturing lambda: named first (GCC 12 and temporaries in a co_await expression).
    auto sso = [prefix = std::string("sso")]() -> Coro<std::string> { co_return prefix + "!"; };
    const RetryPolicy once{};
    const std::string text = co_await RetryAsync(sso, once);
    if (text != "sso!") throw std::logic_error(text);
    co_return with_default_options * 10 + with_options;
  };
  EXPECT_EQ(SyncWait(parent(attempt), clock_), 34);
}

// A Future-coroutine on a plain thread has no scheduler to wait on: a due wait fails clearly.
Future<int> RetryOnAPlainThread(Coro<int> retry) {
  const int v = co_await std::move(retry);
  co_return v;
}

TEST_F(RetryCoroTest, AWaitWithoutASchedulerFailsWithInvalidOptionError) {
  int calls = 0;
  auto attempt = [&]() -> Coro<int> {
    if (++calls == 1) throw std::runtime_error("x");
    co_return calls;
  };
  const RetryPolicy policy{.num_retries = 1, .wait = absl::Seconds(1), .jitter = 0};
  Future<int> out = RetryOnAPlainThread(RetryAsync(attempt, policy));
  ASSERT_TRUE(out.Done());
  try {
    out.Result();
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("needs a coroutine scheduler"));
  }
  EXPECT_EQ(calls, 1);

  // Without a wait due, it runs to its end there.
  const RetryPolicy no_wait{.num_retries = 1, .wait = absl::ZeroDuration()};
  calls = 0;
  EXPECT_EQ(RetryOnAPlainThread(RetryAsync(attempt, no_wait)).Result(), 2);
}

TEST_F(RetryCoroTest, RejectsAnInvalidPolicyAndATimerAtTheCall) {
  auto attempt = []() -> Coro<int> { co_return 1; };
  EXPECT_THROW((void)RetryAsync(attempt, RetryPolicy{.num_retries = -1}), InvalidOptionError);
  Timer timer(clock_);
  try {
    (void)RetryAsync(attempt, RetryPolicy{}, RetryOptions{.timer = &timer});
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("options.timer must be null"));
  }
}

TEST_F(RetryCoroTest, CallInfoIsCopiedIntoTheLazyCoroutine) {
  std::vector<std::string> seen;
  Coro<int> retry;
  {
    std::string name = "a method name longer than the small string buffer";
    RetryOptions options;
    options.call.method_name = name;
    auto attempt = []() -> Coro<int> {
      throw std::runtime_error("x");
      co_return 0;
    };
    retry = RetryAsync(
        attempt,
        RetryPolicy{.num_retries = 1,
                    .wait = absl::ZeroDuration(),
                    .retry_on = {[&](const std::exception_ptr&, const RetryContext& context) {
                      seen.push_back(std::string(context.method_name));
                      return true;
                    }}},
        options);
    name.assign(name.size(), '?');
  }
  EXPECT_THROW(SyncWait(std::move(retry), clock_), std::runtime_error);
  EXPECT_THAT(seen, ElementsAre("a method name longer than the small string buffer",
                                "a method name longer than the small string buffer"));
}

}  // namespace
}  // namespace concurry

// Server delay hints: RetryAfterError, the absl::Status payload, ParseRetryAfter, ServerDelayWait
// (upward jitter, combination with the back-off, cap), decorrelated jitter, and the retry loop
// honouring hints under caps and deadlines.

#include "retry/retry_after.h"

#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <random>
#include <set>
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
#include "testing/watchdog.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InvalidOptionError& e) {
    return e.what();
  }
  return "(no error)";
}

// --- The error type and the status payload ---

TEST(RetryAfterErrorTest, CarriesTheDelayCodeAndMessage) {
  const RetryAfterError error(absl::Seconds(2), "429 Too Many Requests",
                              absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(error.delay(), absl::Seconds(2));
  EXPECT_EQ(error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_STREQ(error.what(), "429 Too Many Requests");
  EXPECT_EQ(RetryAfterError(absl::Seconds(1), "busy").code(), absl::StatusCode::kUnavailable);
  const absl::Status status = error.ToStatus();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "429 Too Many Requests");
  EXPECT_EQ(GetRetryAfter(status), absl::Seconds(2));
  // The no-throw view of a thrown RetryAfterError keeps the hint.
  EXPECT_EQ(GetRetryAfter(StatusFromException(std::make_exception_ptr(error))), absl::Seconds(2));
}

TEST(RetryAfterPayloadTest, RoundTripsThroughTheDocumentedPayload) {
  absl::Status status = absl::UnavailableError("busy");
  EXPECT_EQ(GetRetryAfter(status), std::nullopt);
  SetRetryAfter(status, absl::Milliseconds(1500));
  EXPECT_EQ(GetRetryAfter(status), absl::Milliseconds(1500));
  EXPECT_EQ(std::string(*status.GetPayload("concurry.dev/RetryAfter")), "1.5s");
  SetRetryAfter(status, absl::Minutes(2));  // Replaces.
  EXPECT_EQ(GetRetryAfter(status), absl::Minutes(2));
  EXPECT_EQ(GetRetryAfter(WithRetryAfter(absl::InternalError("x"), absl::InfiniteDuration())),
            absl::InfiniteDuration());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "busy");
  // OK statuses keep no payload; a payload that is not a duration is no hint.
  EXPECT_EQ(GetRetryAfter(WithRetryAfter(absl::OkStatus(), absl::Seconds(1))), std::nullopt);
  absl::Status garbled = absl::UnavailableError("busy");
  garbled.SetPayload(kRetryAfterPayloadUrl, absl::Cord("soon"));
  EXPECT_EQ(GetRetryAfter(garbled), std::nullopt);
}

TEST(RetryAfterOfTest, ReadsThrownErrorsAndStatuses) {
  EXPECT_EQ(RetryAfterOf(std::make_exception_ptr(RetryAfterError(absl::Seconds(3), "x"))),
            absl::Seconds(3));
  EXPECT_EQ(RetryAfterOf(ExceptionFromStatus(
                WithRetryAfter(absl::ResourceExhaustedError("quota"), absl::Seconds(4)))),
            absl::Seconds(4));
  EXPECT_EQ(RetryAfterOf(std::make_exception_ptr(
                WithRetryAfter(absl::UnavailableError("thrown"), absl::Seconds(5)))),
            absl::Seconds(5));
  EXPECT_EQ(RetryAfterOf(ExceptionFromStatus(absl::UnavailableError("no hint"))), std::nullopt);
  EXPECT_EQ(RetryAfterOf(std::make_exception_ptr(std::runtime_error("x"))), std::nullopt);
  EXPECT_EQ(RetryAfterOf(std::make_exception_ptr(TimeoutError("t"))), std::nullopt);
  EXPECT_EQ(RetryAfterOf(nullptr), std::nullopt);
  // ServerRetryAfter: the failure's error or status; a rejected result has none.
  EXPECT_EQ(ServerRetryAfter(RetryFailure{
                .status = WithRetryAfter(absl::UnavailableError("u"), absl::Seconds(6))}),
            absl::Seconds(6));
  EXPECT_EQ(ServerRetryAfter(RetryFailure{.invalid = true}), std::nullopt);
}

TEST(ParseRetryAfterTest, DelaySecondsAndHttpDates) {
  const absl::Time now = absl::FromUnixSeconds(1445412480);  // Wed, 21 Oct 2015 07:28:00 GMT.
  EXPECT_EQ(ParseRetryAfter("120", now), absl::Seconds(120));
  EXPECT_EQ(ParseRetryAfter(" 0 ", now), absl::ZeroDuration());
  EXPECT_EQ(ParseRetryAfter("99999999999999999999999", now),
            absl::Seconds(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:30:30 GMT", now), absl::Seconds(150));
  EXPECT_EQ(ParseRetryAfter("Wed, 21 Oct 2015 07:00:00 GMT", now), absl::ZeroDuration());  // Past.
  for (const char* bad : {"", "  ", "-1", "1.5", "12s", "soon", "Wednesday, 21-Oct-15 07:28:00 GMT",
                          "Wed, 21 Oct 2015 07:28:00"}) {
    EXPECT_EQ(ParseRetryAfter(bad, now), std::nullopt) << bad;
  }
}

// --- ServerDelayWait: jitter, combination, cap ---

TEST(ServerDelayWaitTest, JitterIsUpwardAndExactForASeed) {
  std::mt19937_64 bitgen(42);
  const RetryPolicy policy{.delay_hook_jitter = 0.2};
  std::vector<std::string> waits;
  for (int i = 0; i < 3; ++i) {
    waits.push_back(absl::FormatDuration(
        ServerDelayWait(policy, absl::Seconds(1), absl::ZeroDuration(), bitgen)));
  }
  // 1 s · (1 + 0.2 · u), u = (bitgen() >> 11) · 2^-53.
  EXPECT_THAT(waits, ElementsAre("1.1510311065s", "1.12780627875s", "1.15042904025s"));
}

TEST(ServerDelayWaitTest, JitterStaysInItsRangeOverManyDraws) {
  std::mt19937_64 bitgen(1);
  const RetryPolicy policy{.delay_hook_jitter = 0.5};
  absl::Duration low = absl::InfiniteDuration(), high = absl::ZeroDuration();
  for (int i = 0; i < 10000; ++i) {
    const absl::Duration w =
        ServerDelayWait(policy, absl::Seconds(2), absl::ZeroDuration(), bitgen);
    low = std::min(low, w);
    high = std::max(high, w);
  }
  EXPECT_GE(low, absl::Seconds(2));  // Never earlier than the server asked.
  EXPECT_LT(high, absl::Seconds(3));
  // The draws spread over the range (10,000 uniform draws: the extremes are within 1%).
  EXPECT_LT(low, absl::Milliseconds(2010));
  EXPECT_GT(high, absl::Milliseconds(2990));
}

TEST(ServerDelayWaitTest, NoJitterDrawsNothing) {
  std::mt19937_64 bitgen(5), untouched(5);
  const RetryPolicy policy{.delay_hook_jitter = 0};
  EXPECT_EQ(ServerDelayWait(policy, absl::Seconds(1), absl::ZeroDuration(), bitgen),
            absl::Seconds(1));
  EXPECT_EQ(bitgen, untouched);
  // Neither for a zero, negative or infinite delay.
  const RetryPolicy jittered{.delay_hook_jitter = 1};
  EXPECT_EQ(ServerDelayWait(jittered, absl::ZeroDuration(), absl::ZeroDuration(), bitgen),
            absl::ZeroDuration());
  EXPECT_EQ(ServerDelayWait(jittered, -absl::Seconds(3), absl::ZeroDuration(), bitgen),
            absl::ZeroDuration());
  EXPECT_EQ(ServerDelayWait(jittered, absl::InfiniteDuration(), absl::ZeroDuration(), bitgen),
            absl::InfiniteDuration());
  EXPECT_EQ(bitgen, untouched);
}

TEST(ServerDelayWaitTest, CombinesWithTheBackoffAsTheModeSays) {
  std::mt19937_64 bitgen(3);
  const auto wait = [&](HookDelayMode mode, absl::Duration server, absl::Duration backoff) {
    const RetryPolicy policy{.delay_hook_mode = mode, .delay_hook_jitter = 0};
    return ServerDelayWait(policy, server, backoff, bitgen);
  };
  EXPECT_EQ(wait(HookDelayMode::kMax, absl::Seconds(1), absl::Seconds(4)), absl::Seconds(4));
  EXPECT_EQ(wait(HookDelayMode::kMax, absl::Seconds(5), absl::Seconds(4)), absl::Seconds(5));
  EXPECT_EQ(wait(HookDelayMode::kHookOnly, absl::Seconds(1), absl::Seconds(4)), absl::Seconds(1));
  EXPECT_EQ(wait(HookDelayMode::kSum, absl::Seconds(1), absl::Seconds(4)), absl::Seconds(5));
  EXPECT_EQ(wait(HookDelayMode::kMax, -absl::Seconds(1), absl::Seconds(4)), absl::Seconds(4));
  EXPECT_EQ(RetryPolicy().delay_hook_mode, HookDelayMode::kMax);
  EXPECT_EQ(RetryPolicy().delay_hook_jitter, 0.2);
}

TEST(HookDelayModeTest, ParsesAndUnparsesItsNames) {
  for (const HookDelayMode mode :
       {HookDelayMode::kMax, HookDelayMode::kHookOnly, HookDelayMode::kSum}) {
    HookDelayMode parsed = HookDelayMode::kSum;
    std::string error;
    ASSERT_TRUE(AbslParseFlag(AbslUnparseFlag(mode), &parsed, &error)) << error;
    EXPECT_EQ(parsed, mode);
  }
  HookDelayMode parsed = HookDelayMode::kMax;
  std::string error;
  EXPECT_TRUE(AbslParseFlag(" Hook ", &parsed, &error));
  EXPECT_EQ(parsed, HookDelayMode::kHookOnly);
  EXPECT_FALSE(AbslParseFlag("min", &parsed, &error));
  EXPECT_EQ(error,
            "unknown delay hook mode 'min'; expected one of max, hook_only (hook), sum "
            "(case-insensitive)");
  EXPECT_EQ(parsed, HookDelayMode::kHookOnly);
  EXPECT_EQ(AbslUnparseFlag(static_cast<HookDelayMode>(8)), "8");
  EXPECT_EQ(HookDelayModeName(static_cast<HookDelayMode>(8)), "unknown");
}

TEST(ServerDelayWaitTest, TheCapAppliesLast) {
  std::mt19937_64 bitgen(9);
  const RetryPolicy policy{.max_wait = absl::Seconds(30), .delay_hook_mode = HookDelayMode::kSum};
  // A server asking for an hour gets the cap: the next attempt comes earlier than it asked.
  EXPECT_EQ(ServerDelayWait(policy, absl::Hours(1), absl::Seconds(1), bitgen), absl::Seconds(30));
  EXPECT_EQ(ServerDelayWait(policy, absl::Seconds(25), absl::Seconds(4), bitgen),
            absl::Seconds(30));
  EXPECT_EQ(ServerDelayWait(policy, absl::InfiniteDuration(), absl::ZeroDuration(), bitgen),
            absl::Seconds(30));
}

TEST(ServerDelayWaitTest, RejectsInvalidFieldsNamingThem) {
  std::mt19937_64 bitgen(1);
  const auto error_of = [&](const RetryPolicy& policy) {
    return ErrorOf(
        [&] { ServerDelayWait(policy, absl::Seconds(1), absl::ZeroDuration(), bitgen); });
  };
  EXPECT_EQ(error_of(RetryPolicy{.delay_hook_jitter = -0.1}),
            "RetryPolicy.delay_hook_jitter must be >= 0 and finite, got -0.1");
  EXPECT_EQ(error_of(RetryPolicy{.delay_hook_jitter = std::numeric_limits<double>::quiet_NaN()}),
            "RetryPolicy.delay_hook_jitter must be >= 0 and finite, got NaN");
  EXPECT_EQ(error_of(RetryPolicy{.delay_hook_jitter = std::numeric_limits<double>::infinity()}),
            "RetryPolicy.delay_hook_jitter must be >= 0 and finite, got inf");
  EXPECT_EQ(error_of(RetryPolicy{.delay_hook_mode = static_cast<HookDelayMode>(7)}),
            "RetryPolicy.delay_hook_mode: unknown value 7; allowed: kMax, kHookOnly, kSum");
  EXPECT_EQ(error_of(RetryPolicy{.max_wait = -absl::Seconds(1)}),
            "RetryPolicy.max_wait must be >= 0 (or infinite), got -1s");
  // Retry checks them before the first call too.
  int calls = 0;
  EXPECT_THROW(Retry([&] { return ++calls; }, RetryPolicy{.delay_hook_jitter = -1}),
               InvalidOptionError);
  EXPECT_EQ(calls, 0);
}

// --- Decorrelated jitter ---

TEST(DecorrelatedBackoffTest, ExactSequenceForASeed) {
  std::mt19937_64 bitgen(7);
  const RetryPolicy policy{.algorithm = BackoffAlgorithm::kDecorrelated,
                           .wait = absl::Seconds(1),
                           .max_wait = absl::Seconds(20)};
  std::vector<std::string> waits;
  absl::Duration previous = absl::ZeroDuration();
  for (int n = 1; n <= 8; ++n) {
    previous = BackoffWait(policy, n, bitgen, previous);
    waits.push_back(absl::FormatDuration(previous));
  }
  // min(20 s, 1 s + (3 · previous − 1 s) · u); the first previous is 1 s.
  EXPECT_THAT(waits,
              ElementsAre("2.50877060825s", "7.19543566575s", "3.41712643525s", "9.2514271055s",
                          "4.779619144s", "1.73487978675s", "4.50045889225s", "12.260120943s"));
}

TEST(DecorrelatedBackoffTest, StaysWithinBaseAndThreeTimesThePreviousAndTheCap) {
  std::mt19937_64 bitgen(11);
  const RetryPolicy policy{.algorithm = BackoffAlgorithm::kDecorrelated,
                           .wait = absl::Milliseconds(100),
                           .max_wait = absl::Seconds(5)};
  absl::Duration previous = absl::ZeroDuration();
  bool reached_cap = false;
  for (int n = 1; n <= 10000; ++n) {
    const absl::Duration w = BackoffWait(policy, n, bitgen, previous);
    ASSERT_GE(w, absl::Milliseconds(100));
    ASSERT_LE(w, absl::Seconds(5));
    ASSERT_LT(w, 3 * std::max(previous, absl::Milliseconds(100)));
    reached_cap = reached_cap || w == absl::Seconds(5);
    previous = w;
  }
  EXPECT_TRUE(reached_cap);
  // A zero base waits 0 and draws nothing.
  std::mt19937_64 untouched = bitgen;
  EXPECT_EQ(BackoffWait(RetryPolicy{.algorithm = BackoffAlgorithm::kDecorrelated,
                                    .wait = absl::ZeroDuration()},
                        3, bitgen, absl::Seconds(1)),
            absl::ZeroDuration());
  EXPECT_EQ(bitgen, untouched);
  EXPECT_EQ(BackoffAlgorithmName(BackoffAlgorithm::kDecorrelated), "decorrelated");
}

// --- RetryDelayHook's accepted forms ---

TEST(RetryDelayHookTest, TakesTheFailureWithOrWithoutTheContext) {
  const RetryFailure failure{.status = absl::UnavailableError("u")};
  const RetryContext context{.attempt = 3};
  const RetryDelayHook with_context = [](const RetryFailure&,
                                         const RetryContext& c) -> std::optional<absl::Duration> {
    return absl::Seconds(c.attempt);
  };
  const RetryDelayHook failure_only = [](const RetryFailure& f) -> std::optional<absl::Duration> {
    if (f.status.ok()) return std::nullopt;
    return absl::Seconds(10);
  };
  const RetryDelayHook plain_duration = [](const RetryFailure&) { return absl::Seconds(2); };
  ASSERT_TRUE(with_context && failure_only && plain_duration);
  EXPECT_EQ(with_context(failure, context), absl::Seconds(3));
  EXPECT_EQ(failure_only(failure, context), absl::Seconds(10));
  EXPECT_EQ(failure_only(RetryFailure{.invalid = true}, context), std::nullopt);
  EXPECT_EQ(plain_duration(failure, context), absl::Seconds(2));
  // Empty: no hook (the retry then reads the standard hints).
  EXPECT_FALSE(RetryDelayHook());
  EXPECT_FALSE(RetryDelayHook(nullptr));
  EXPECT_FALSE(RetryDelayHook(RetryDelayHook::Function()));
  EXPECT_FALSE(RetryPolicy().delay_hook);
}

// --- The retry loop honouring hints (RetryAsync on a FakeClock) ---

// Runs the next attempt once the timer's thread has submitted it.
void RunNext(testkit::ManualExecutor& executor) {
  executor.BlockUntilPending(1);
  ASSERT_TRUE(executor.RunOne());
}

class RetryAfterLoopTest : public ::testing::Test {
 protected:
  RetryOptions Options() {
    return RetryOptions{.bitgen = absl::BitGenRef(bitgen_), .timer = &timer_};
  }
  absl::Duration SinceStart() const { return clock_.Now() - start_; }
  // Moves time to just before `at` (no attempt runs), then to `at`, and runs the next attempt.
  void RunAttemptAt(absl::Duration at) {
    clock_.SetTime(start_ + at - absl::Nanoseconds(1));
    EXPECT_EQ(executor_.pending(), 0u) << "attempt before " << at;
    clock_.SetTime(start_ + at);
    RunNext(executor_);
  }

  // RunNext() waits for the timer: an attempt that never becomes due fails the test, not hangs it.
  testkit::Watchdog watchdog_{absl::Seconds(60), "a retry attempt that never became due"};
  std::mt19937_64 bitgen_{42};
  testkit::FakeClock clock_;
  const absl::Time start_ = clock_.Now();
  Timer timer_{clock_};
  testkit::ManualExecutor executor_;
};

TEST_F(RetryAfterLoopTest, AThrownRetryAfterErrorIsHonouredByDefaultWithJitter) {
  std::vector<absl::Duration> attempts;
  // Back-off 1 s (no jitter) < the server's 3 s: max(3 s jittered, 1 s).
  const RetryPolicy policy{.num_retries = 2, .wait = absl::Seconds(1), .jitter = 0};
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        attempts.push_back(SinceStart());
        if (attempts.size() == 1) throw RetryAfterError(absl::Seconds(3), "429");
        return 7;
      },
      policy, Options());
  ASSERT_TRUE(executor_.RunOne());
  // 3 s · (1 + 0.2 · u1), u1 the seed's first draw (see JitterIsUpwardAndExactForASeed).
  std::mt19937_64 replay(42);
  const absl::Duration exact = ServerDelayWait(policy, absl::Seconds(3), absl::Seconds(1), replay);
  EXPECT_EQ(absl::FormatDuration(exact), "3.45309331975s");
  RunAttemptAt(exact);
  EXPECT_EQ(future.Result(), 7);
  EXPECT_THAT(attempts, ElementsAre(absl::ZeroDuration(), exact));
}

TEST_F(RetryAfterLoopTest, AReturnedStatusPayloadIsHonoured) {
  std::vector<absl::Duration> attempts;
  const RetryPolicy policy{
      .num_retries = 1, .wait = absl::Seconds(1), .jitter = 0, .delay_hook_jitter = 0};
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> absl::StatusOr<int> {
        attempts.push_back(SinceStart());
        if (attempts.size() == 1) {
          return WithRetryAfter(absl::UnavailableError("busy"), absl::Seconds(8));
        }
        return 9;
      },
      policy, Options());
  ASSERT_TRUE(executor_.RunOne());
  RunAttemptAt(absl::Seconds(8));
  EXPECT_EQ(future.Result(), 9);
  EXPECT_THAT(attempts, ElementsAre(absl::ZeroDuration(), absl::Seconds(8)));
}

TEST_F(RetryAfterLoopTest, TheBackoffWinsWhenLongerUnderKMax) {
  std::vector<absl::Duration> attempts;
  const RetryPolicy policy{
      .num_retries = 2, .wait = absl::Seconds(4), .jitter = 0, .delay_hook_jitter = 0};
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        attempts.push_back(SinceStart());
        if (attempts.size() < 3) throw RetryAfterError(absl::Seconds(1), "busy");
        return 1;
      },
      policy, Options());
  ASSERT_TRUE(executor_.RunOne());
  RunAttemptAt(absl::Seconds(4));   // max(1 s, 4 s).
  RunAttemptAt(absl::Seconds(12));  // max(1 s, 8 s).
  EXPECT_EQ(future.Result(), 1);
}

TEST_F(RetryAfterLoopTest, AServerDelayPastTheDeadlineEndsTheRetryAtOnce) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 5, .deadline = absl::Minutes(10)};
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        ++calls;
        throw RetryAfterError(absl::Hours(1), "come back in an hour");
      },
      policy, Options());
  ASSERT_TRUE(executor_.RunOne());
  EXPECT_EQ(timer_.pending(), 0u);  // No pointless wait.
  ASSERT_TRUE(future.Done());
  try {
    future.Result();
    ADD_FAILURE() << "no error";
  } catch (const RetryAfterError& e) {
    EXPECT_EQ(e.delay(), absl::Hours(1));  // The caller still sees the hint.
  }
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryAfterLoopTest, MaxWaitCapsAServerDelay) {
  std::vector<absl::Duration> attempts;
  const RetryPolicy policy{.num_retries = 1, .max_wait = absl::Seconds(30)};
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        attempts.push_back(SinceStart());
        if (attempts.size() == 1) throw RetryAfterError(absl::Hours(1), "busy");
        return 2;
      },
      policy, Options());
  ASSERT_TRUE(executor_.RunOne());
  RunAttemptAt(absl::Seconds(30));
  EXPECT_EQ(future.Result(), 2);
}

TEST_F(RetryAfterLoopTest, CallersToldTheSameDelayComeBackAtDifferentTimes) {
  // Eight retries told "1 s" on their first attempt: their second attempts are spread over
  // [1 s, 1.2 s), not all at 1 s.
  const RetryPolicy policy{.num_retries = 1, .wait = absl::Milliseconds(10), .jitter = 0};
  std::vector<Future<int>> futures;
  std::vector<absl::Duration> second_attempts;
  for (int i = 0; i < 8; ++i) {
    futures.push_back(RetryAsync(
        executor_,
        [this, &second_attempts, calls = 0]() mutable -> int {
          if (++calls == 1) throw RetryAfterError(absl::Seconds(1), "busy");
          second_attempts.push_back(SinceStart());
          return calls;
        },
        policy, Options()));
    ASSERT_TRUE(executor_.RunOne());
  }
  EXPECT_EQ(timer_.pending(), 8u);
  clock_.Advance(absl::Milliseconds(1200));
  for (int i = 0; i < 8; ++i) RunNext(executor_);
  for (Future<int>& future : futures) EXPECT_EQ(future.Result(), 2);
  // The attempts ran when the clock was already at 1.2 s; the timer's deadlines are what differ:
  // replay the draws.
  std::mt19937_64 replay(42);
  std::set<absl::Duration> wakes;
  for (int i = 0; i < 8; ++i) {
    const absl::Duration w =
        ServerDelayWait(policy, absl::Seconds(1), absl::Milliseconds(10), replay);
    EXPECT_GE(w, absl::Seconds(1));
    EXPECT_LT(w, absl::Milliseconds(1200));
    wakes.insert(w);
  }
  EXPECT_EQ(wakes.size(), 8u);
  EXPECT_EQ(second_attempts.size(), 8u);
}

TEST_F(RetryAfterLoopTest, AHookOfYourOwnCanStillReadTheStandardHints) {
  std::vector<absl::Duration> attempts;
  const RetryPolicy policy{.num_retries = 1,
                           .jitter = 0,
                           .delay_hook = [](const RetryFailure& failure,
                                            const RetryContext&) -> std::optional<absl::Duration> {
                             const std::optional<absl::Duration> hint = ServerRetryAfter(failure);
                             return hint ? std::optional<absl::Duration>(*hint * 2) : std::nullopt;
                           },
                           .delay_hook_mode = HookDelayMode::kHookOnly,
                           .delay_hook_jitter = 0};
  Future<int> future = RetryAsync(
      executor_,
      [&]() -> int {
        attempts.push_back(SinceStart());
        if (attempts.size() == 1) throw RetryAfterError(absl::Seconds(2), "busy");
        return 3;
      },
      policy, Options());
  ASSERT_TRUE(executor_.RunOne());
  RunAttemptAt(absl::Seconds(4));
  EXPECT_EQ(future.Result(), 3);
}

}  // namespace
}  // namespace concurry

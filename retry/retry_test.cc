#include "retry/retry.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retry/policy.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A clock for the synchronous loop: a sleep returns at once, moving time to its deadline and
// recording its length; Now() reads are counted.
class SteppingClock final : public Clock {
 public:
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    ++reads_;
    return now_;
  }
  bool DoAwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                           absl::Time deadline) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (cond.Eval()) return true;
    absl::MutexLock lock(&mu_);
    if (deadline > now_) {
      sleeps_.push_back(deadline - now_);
      now_ = deadline;
    }
    return cond.Eval();
  }
  // Moves time as if an attempt took `d`.
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  std::vector<absl::Duration> sleeps() const {
    absl::MutexLock lock(&mu_);
    return sleeps_;
  }
  int reads() const {
    absl::MutexLock lock(&mu_);
    return reads_;
  }
  absl::Time start() const { return absl::UnixEpoch() + absl::Hours(1); }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::UnixEpoch() + absl::Hours(1);
  std::vector<absl::Duration> sleeps_ ABSL_GUARDED_BY(mu_);
  mutable int reads_ ABSL_GUARDED_BY(mu_) = 0;
};

std::vector<absl::Duration> Seconds(std::vector<double> values) {
  std::vector<absl::Duration> out;
  for (double v : values) out.push_back(absl::Seconds(v));
  return out;
}

struct BaseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct DerivedError : BaseError {
  using BaseError::BaseError;
};
// Carries a server's Retry-After hint.

class RetryTest : public ::testing::Test {
 protected:
  RetryOptions Options() {
    return RetryOptions{
        .clock = &clock_,
        .bitgen = absl::BitGenRef(gen_),
        .report = [this](absl::string_view line) { reports_.push_back(std::string(line)); }};
  }

  SteppingClock clock_;
  std::mt19937_64 gen_{2024};
  std::vector<std::string> reports_;
};

TEST_F(RetryTest, SuccessReturnsTheResultWithoutReadingTheClock) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 3};
  EXPECT_EQ(Retry([&] { return ++calls * 10; }, policy, Options()), 10);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(clock_.reads(), 0);
  Retry([&] { ++calls; }, policy, Options());  // void
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(clock_.reads(), 0);
}

TEST_F(RetryTest, RetriesWithExactWaitsForEveryAlgorithm) {
  struct Case {
    BackoffAlgorithm algorithm;
    std::vector<double> waits;
  };
  for (const Case& c : {Case{BackoffAlgorithm::kExponential, {1, 2, 4, 8}},
                        Case{BackoffAlgorithm::kLinear, {1, 2, 3, 4}},
                        Case{BackoffAlgorithm::kFibonacci, {1, 1, 2, 3}}}) {
    SteppingClock clock;
    int calls = 0;
    const RetryPolicy policy{
        .num_retries = 5, .algorithm = c.algorithm, .wait = absl::Seconds(1), .jitter = 0};
    const int result = Retry(
        [&] {
          if (++calls < 5) throw std::runtime_error("flaky");
          return calls;
        },
        policy, RetryOptions{.clock = &clock});
    EXPECT_EQ(result, 5);
    EXPECT_EQ(clock.sleeps(), Seconds(c.waits));
  }
}

TEST_F(RetryTest, JitteredWaitsAreTheSeededBackoffSequence) {
  const RetryPolicy policy{.num_retries = 6, .wait = absl::Milliseconds(100), .jitter = 1.0};
  std::mt19937_64 same_seed(2024);
  std::vector<absl::Duration> expected;
  for (int attempt = 1; attempt <= 6; ++attempt) {
    expected.push_back(BackoffWait(policy, attempt, same_seed));
  }
  EXPECT_THROW(Retry([]() -> int { throw std::runtime_error("down"); }, policy, Options()),
               std::runtime_error);
  std::vector<absl::Duration> sleeps = clock_.sleeps();
  expected.erase(std::remove(expected.begin(), expected.end(), absl::ZeroDuration()),
                 expected.end());  // A zero wait does not sleep.
  EXPECT_EQ(sleeps, expected);
  for (size_t i = 0; i < sleeps.size(); ++i) {
    EXPECT_LE(sleeps[i], absl::Milliseconds(100) * (int64_t{1} << i));
  }
}

TEST_F(RetryTest, RethrowsTheOriginalExceptionObjectWhenAttemptsRunOut) {
  const std::exception_ptr original = std::make_exception_ptr(DerivedError("boom"));
  const void* address = nullptr;
  try {
    std::rethrow_exception(original);
  } catch (const DerivedError& e) {
    address = &e;
  }
  int calls = 0;
  const RetryPolicy policy{.num_retries = 2, .wait = absl::Seconds(1), .jitter = 0};
  try {
    Retry(
        [&] {
          ++calls;
          std::rethrow_exception(original);
        },
        policy, Options());
    FAIL() << "no exception";
  } catch (const DerivedError& e) {
    EXPECT_EQ(&e, address);  // The same object: not wrapped, not copied.
  }
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2}));
}

TEST_F(RetryTest, TypeFiltersMatchDerivedTypesAndAnythingElseFailsAtOnce) {
  const RetryPolicy policy{
      .num_retries = 3, .wait = absl::Seconds(1), .jitter = 0, .retry_on = {RetryOn<BaseError>()}};
  int calls = 0;
  EXPECT_EQ(Retry(
                [&] {
                  if (++calls < 3) throw DerivedError("derived");
                  return calls;
                },
                policy, Options()),
            3);
  calls = 0;
  EXPECT_THROW(Retry(
                   [&]() -> int {
                     ++calls;
                     throw std::logic_error("bug");
                   },
                   policy, Options()),
               std::logic_error);
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryTest, DefaultRetriesStdExceptionsButNotOtherThrownTypes) {
  const RetryPolicy policy{.num_retries = 2, .wait = absl::ZeroDuration()};
  int calls = 0;
  EXPECT_THROW(Retry(
                   [&] {
                     ++calls;
                     throw 42;
                   },
                   policy, Options()),
               int);
  EXPECT_EQ(calls, 1);
  calls = 0;
  EXPECT_THROW(Retry(
                   [&] {
                     ++calls;
                     throw std::out_of_range("x");
                   },
                   policy, Options()),
               std::out_of_range);
  EXPECT_EQ(calls, 3);
}

TEST_F(RetryTest, EmptyRetryOnRetriesNoException) {
  int calls = 0;
  EXPECT_THROW(Retry(
                   [&] {
                     ++calls;
                     throw std::runtime_error("x");
                   },
                   RetryPolicy{.num_retries = 3, .retry_on = {}}, Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryTest, PredicatesSeeTheContext) {
  std::vector<std::string> seen;
  const RetryPolicy policy{
      .num_retries = 5,
      .wait = absl::Seconds(1),
      .jitter = 0,
      .retry_on = {[&](const std::exception_ptr& error, const RetryContext& context) {
        seen.push_back(absl::StrCat(context.method_name, "/", context.worker_type_name, "/",
                                    context.attempt, "/", absl::FormatDuration(context.elapsed),
                                    "/", context.Arguments(), "/", ExceptionMessage(error)));
        return context.attempt < 3;
      }}};
  RetryOptions options = Options();
  options.call = {.method_name = "fetch", .worker_type_name = "Client", .arguments = [] {
                    return std::string("(\"a\", 1)");
                  }};
  EXPECT_THROW(Retry(
                   [&]() -> int {
                     clock_.Advance(absl::Milliseconds(500));  // Each attempt takes 0.5 s.
                     throw std::runtime_error("e");
                   },
                   policy, options),
               std::runtime_error);
  EXPECT_THAT(seen, ElementsAre("fetch/Client/1/500ms/(\"a\", 1)/e",
                                "fetch/Client/2/2s/(\"a\", 1)/e",      // 0.5 + 1 + 0.5
                                "fetch/Client/3/4.5s/(\"a\", 1)/e"));  // 2 + 2 + 0.5
}

TEST_F(RetryTest, AFilterThatThrowsDoesNotMatchAndIsReported) {
  int calls = 0;
  const RetryPolicy throwing{
      .num_retries = 3,
      .wait = absl::ZeroDuration(),
      .retry_on = {[](const std::exception_ptr&, const RetryContext&) -> bool {
        throw std::logic_error("filter bug");
      }}};
  EXPECT_THROW(Retry(
                   [&] {
                     ++calls;
                     throw BaseError("original");
                   },
                   throwing, Options()),
               BaseError);
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_THAT(reports_[0], HasSubstr("retry_on[0] (predicate) threw std::logic_error: filter bug"));
  EXPECT_THAT(reports_[0], HasSubstr("BaseError: original"));

  // Another filter that matches still retries.
  RetryPolicy with_type = throwing;
  with_type.retry_on.push_back(RetryOn<BaseError>());
  calls = 0;
  EXPECT_EQ(Retry(
                [&] {
                  if (++calls < 2) throw BaseError("original");
                  return calls;
                },
                with_type, Options()),
            2);
  EXPECT_EQ(reports_.size(), 2u);
}

TEST_F(RetryTest, StatusCodesInTheListAreRetriedOthersReturnedAtOnce) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 3, .wait = absl::Seconds(1), .jitter = 0};
  EXPECT_EQ(Retry([&] { return ++calls < 3 ? absl::UnavailableError("later") : absl::OkStatus(); },
                  policy, Options()),
            absl::OkStatus());
  EXPECT_EQ(calls, 3);
  calls = 0;
  EXPECT_EQ(Retry(
                [&] {
                  ++calls;
                  return absl::InvalidArgumentError("bad");
                },
                policy, Options()),
            absl::InvalidArgumentError("bad"));
  EXPECT_EQ(calls, 1);
  calls = 0;
  EXPECT_EQ(Retry(
                [&] {
                  ++calls;
                  return absl::UnavailableError(absl::StrCat("down ", calls));
                },
                policy, Options()),
            absl::UnavailableError("down 4"));  // The last status, after 3 retries.
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2, 1, 2, 4}));
}

TEST_F(RetryTest, StatusOrValuesAndCustomCodes) {
  int calls = 0;
  const RetryPolicy policy{
      .num_retries = 3,
      .wait = absl::ZeroDuration(),
      .retry_on_codes = {absl::StatusCode::kResourceExhausted, absl::StatusCode::kAborted}};
  absl::StatusOr<std::string> result = Retry(
      [&]() -> absl::StatusOr<std::string> {
        if (++calls == 1) return absl::ResourceExhaustedError("quota");
        if (calls == 2) return absl::AbortedError("conflict");
        return std::string("ok");
      },
      policy, Options());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(*result, "ok");
  EXPECT_EQ(calls, 3);
  calls = 0;
  result = Retry(
      [&]() -> absl::StatusOr<std::string> {
        ++calls;
        return absl::UnavailableError("not in the list now");
      },
      policy, Options());
  EXPECT_EQ(result.status(), absl::UnavailableError("not in the list now"));
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryTest, ExceptionsFromStatusCallablesAreFilteredAsUsual) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 2, .wait = absl::ZeroDuration()};
  EXPECT_EQ(Retry(
                [&]() -> absl::Status {
                  if (++calls < 2) throw std::runtime_error("x");
                  return absl::OkStatus();
                },
                policy, Options()),
            absl::OkStatus());
  EXPECT_EQ(calls, 2);
}

TEST_F(RetryTest, RetriesUntilEveryValidatorPasses) {
  int calls = 0;
  const RetryPolicy policy{
      .num_retries = 5,
      .wait = absl::Seconds(1),
      .jitter = 0,
      .retry_until = {
          Validate<std::string>("non_empty", [](const std::string& s) { return !s.empty(); }),
          Validate<std::string>("json", [](const std::string& s) { return s.front() == '{'; })}};
  const std::string result = Retry(
      [&] {
        ++calls;
        return calls == 1 ? std::string("") : calls == 2 ? std::string("x") : std::string("{}");
      },
      policy, Options());
  EXPECT_EQ(result, "{}");
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2}));
}

TEST_F(RetryTest, ValidationWithZeroRetriesValidatesOnce) {
  const RetryPolicy policy{.retry_until = {Validate<int>("positive", [](int v) { return v > 0; })}};
  EXPECT_EQ(Retry([] { return 3; }, policy, Options()), 3);
  try {
    Retry([] { return -1; }, policy, Options());
    FAIL() << "no exception";
  } catch (const TypedRetryValidationError<int>& e) {
    EXPECT_EQ(e.attempts(), 1);
    EXPECT_THAT(e.values(), ElementsAre(-1));
    EXPECT_THAT(e.results(), ElementsAre("-1"));
    EXPECT_THAT(e.validation_errors(),
                ElementsAre("attempt 1: validator 'positive' returned false"));
    EXPECT_EQ(e.code(), absl::StatusCode::kAborted);
  }
  EXPECT_TRUE(clock_.sleeps().empty());
}

TEST_F(RetryTest, RetryValidationErrorCarriesEveryAttempt) {
  int calls = 0;
  RetryOptions options = Options();
  options.call.method_name = "complete";
  const RetryPolicy policy{
      .num_retries = 3,
      .wait = absl::ZeroDuration(),
      .retry_until = {Validate<std::string>([](const std::string& s) -> absl::Status {
                        if (s.size() > 3) return absl::OkStatus();
                        return absl::InvalidArgumentError("too short");
                      }),
                      Validate<std::string>("no_x", [](const std::string& s) -> bool {
                        if (s == "boom") throw std::domain_error("bad x");
                        return s.find('x') == std::string::npos;
                      })}};
  try {
    Retry(
        [&]() -> std::string {
          switch (++calls) {
            case 1:
              return "ab";
            case 2:
              throw std::runtime_error("transient");
            case 3:
              return "boom";
            default:
              return "xx";
          }
        },
        policy, options);
    FAIL() << "no exception";
  } catch (const RetryValidationError& e) {
    EXPECT_EQ(e.attempts(), 4);
    EXPECT_EQ(e.method_name(), "complete");
    EXPECT_THAT(e.results(),
                ElementsAre("ab", "threw std::runtime_error: transient", "boom", "xx"));
    EXPECT_THAT(e.validation_errors(),
                ElementsAre("attempt 1: validator #1 failed: too short",
                            "attempt 3: validator 'no_x' raised std::domain_error: bad x",
                            "attempt 4: validator #1 failed: too short",
                            "attempt 4: validator 'no_x' returned false"));
    EXPECT_THAT(e.what(), HasSubstr("Validation failed for method 'complete' after 4 attempts."));
    EXPECT_THAT(e.what(), HasSubstr("Attempt 3:\nboom"));
    const auto* typed = dynamic_cast<const TypedRetryValidationError<std::string>*>(&e);
    ASSERT_NE(typed, nullptr);
    EXPECT_THAT(typed->values(), ElementsAre("ab", "boom", "xx"));
  }
}

TEST_F(RetryTest, AnExceptionOnTheLastAttemptIsRethrownEvenWhenValidating) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 1,
                           .wait = absl::ZeroDuration(),
                           .retry_until = {Validate<int>([](int) { return false; })}};
  EXPECT_THROW(Retry(
                   [&] {
                     if (++calls == 2) throw BaseError("last");
                     return calls;
                   },
                   policy, Options()),
               BaseError);
}

TEST_F(RetryTest, ValidationFailureOfAStatusCallableIsReturnedAsAborted) {
  const RetryPolicy policy{
      .num_retries = 1,
      .wait = absl::ZeroDuration(),
      .retry_until = {Validate<int>("even", [](int v) { return v % 2 == 0; })}};
  int calls = 0;
  const absl::StatusOr<int> result =
      Retry([&]() -> absl::StatusOr<int> { return 2 * ++calls + 1; }, policy, Options());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(result.status().message(), HasSubstr("after 2 attempts"));
  EXPECT_THAT(result.status().message(), HasSubstr("Attempt 2:\n5"));
}

TEST_F(RetryTest, MoveOnlyAndVoidResultsCanBeValidated) {
  const RetryPolicy policy{
      .num_retries = 1,
      .wait = absl::ZeroDuration(),
      .retry_until = {Validate<std::unique_ptr<int>>(
          [](const std::unique_ptr<int>& p) { return p != nullptr && *p > 1; })}};
  int calls = 0;
  std::unique_ptr<int> p = Retry([&] { return std::make_unique<int>(++calls); }, policy, Options());
  EXPECT_EQ(*p, 2);
  try {
    Retry([] { return std::make_unique<int>(0); }, policy, Options());
    FAIL();
  } catch (const TypedRetryValidationError<std::unique_ptr<int>>& e) {
    ASSERT_EQ(e.values().size(), 2u);
    EXPECT_EQ(*e.values()[1], 0);
  }
  int void_calls = 0;
  const RetryPolicy void_policy{
      .num_retries = 2,
      .wait = absl::ZeroDuration(),
      .retry_until = {RetryValidator{
          .name = "third",
          .check = [&](const RetryResult& r, const RetryContext& c) -> std::optional<std::string> {
            EXPECT_EQ(r.type(), typeid(void));
            if (c.attempt == 3) return std::nullopt;
            return "not yet";
          }}}};
  Retry([&] { ++void_calls; }, void_policy, Options());
  EXPECT_EQ(void_calls, 3);
}

TEST_F(RetryTest, DeadlineStopsBeforeAWaitThatWouldEndPastIt) {
  // Waits 1, 2, 4 s; attempts take 0.5 s. Attempt 1 ends at 0.5 (+1 -> 1.5 <= 5: retry),
  // attempt 2 at 2 (+2 -> 4 <= 5: retry), attempt 3 at 4.5 (+4 -> 8.5 > 5: stop).
  int calls = 0;
  const RetryPolicy policy{
      .num_retries = 10, .wait = absl::Seconds(1), .jitter = 0, .deadline = absl::Seconds(5)};
  EXPECT_THROW(Retry(
                   [&]() -> int {
                     ++calls;
                     clock_.Advance(absl::Milliseconds(500));
                     throw std::runtime_error("down");
                   },
                   policy, Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2}));
}

TEST_F(RetryTest, AnAttemptMayStartExactlyAtTheDeadline) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 10,
                           .algorithm = BackoffAlgorithm::kLinear,
                           .wait = absl::Seconds(1),
                           .jitter = 0,
                           .deadline = absl::Seconds(3)};
  // Attempts at 0, 1 and 3 (1 + 2 == 3: allowed); the next wait (3) would end at 6.
  EXPECT_THROW(Retry(
                   [&]() -> int {
                     ++calls;
                     throw std::runtime_error("down");
                   },
                   policy, Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2}));
}

TEST_F(RetryTest, CapLimitsEveryWait) {
  const RetryPolicy policy{
      .num_retries = 5, .wait = absl::Seconds(1), .jitter = 0, .max_wait = absl::Seconds(3)};
  EXPECT_THROW(Retry([]() -> int { throw std::runtime_error("x"); }, policy, Options()),
               std::runtime_error);
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2, 3, 3, 3}));
}

TEST_F(RetryTest, DelayHookRequestsASpecificDelayBoundedByTheCap) {
  const RetryPolicy policy{.num_retries = 3,
                           .wait = absl::Seconds(1),
                           .jitter = 0.5,
                           .max_wait = absl::Seconds(10),
                           .delay_hook = [](const RetryFailure& failure,
                                            const RetryContext&) -> std::optional<absl::Duration> {
                             try {
                               if (failure.error) std::rethrow_exception(failure.error);
                             } catch (const RetryAfterError& e) {
                               return e.delay();
                             } catch (...) {
                             }
                             return std::nullopt;
                           },
                           .delay_hook_mode = HookDelayMode::kHookOnly,  // Without the back-off,
                           .delay_hook_jitter = 0};                      // and exact.
  int calls = 0;
  EXPECT_EQ(Retry(
                [&] {
                  ++calls;
                  if (calls == 1) throw RetryAfterError(absl::Seconds(7), "busy");
                  if (calls == 2)
                    throw RetryAfterError(absl::Minutes(5), "busy");  // Capped to 10 s.
                  if (calls == 3)
                    throw RetryAfterError(-absl::Seconds(1), "busy");  // Clamped to 0.
                  return calls;
                },
                policy, Options()),
            4);
  EXPECT_EQ(clock_.sleeps(), Seconds({7, 10}));
}

TEST_F(RetryTest, DelayHookSeesStatusesAndRejectedResults) {
  std::vector<std::string> seen;
  const RetryPolicy policy{
      .num_retries = 2,
      .wait = absl::Seconds(1),
      .jitter = 0,
      .retry_until = {Validate<int>([](int v) { return v > 2; })},
      .delay_hook = [&](const RetryFailure& failure,
                        const RetryContext& context) -> std::optional<absl::Duration> {
        if (!failure.status.ok()) seen.push_back(failure.status.ToString());
        if (failure.invalid) seen.push_back(absl::StrCat("invalid ", failure.result.ToString()));
        return absl::Seconds(context.attempt * 10);
      },
      .delay_hook_jitter = 0};  // max(10 s, back-off 1 s), max(20 s, 2 s).
  int calls = 0;
  const absl::StatusOr<int> result = Retry(
      [&]() -> absl::StatusOr<int> {
        if (++calls == 1) return absl::UnavailableError("u");
        return calls;
      },
      policy, Options());
  EXPECT_EQ(*result, 3);
  EXPECT_THAT(seen, ElementsAre("UNAVAILABLE: u", "invalid 2"));
  EXPECT_EQ(clock_.sleeps(), Seconds({10, 20}));
}

TEST_F(RetryTest, ADelayHookThatThrowsFallsBackToTheBackoffAndIsReported) {
  const RetryPolicy policy{
      .num_retries = 1,
      .wait = absl::Seconds(2),
      .jitter = 0,
      .delay_hook = [](const RetryFailure&, const RetryContext&) -> std::optional<absl::Duration> {
        throw std::runtime_error("hook bug");
      }};
  int calls = 0;
  EXPECT_EQ(Retry(
                [&] {
                  if (++calls == 1) throw std::runtime_error("x");
                  return calls;
                },
                policy, Options()),
            2);
  EXPECT_EQ(clock_.sleeps(), Seconds({2}));
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_THAT(reports_[0], HasSubstr("delay_hook threw std::runtime_error: hook bug"));
}

TEST_F(RetryTest, InvalidPolicyIsRejectedBeforeTheFirstCall) {
  int calls = 0;
  EXPECT_THROW(Retry([&] { return ++calls; }, RetryPolicy{.jitter = 2}, Options()),
               InvalidOptionError);
  for (const RetryPolicy& policy :
       {RetryPolicy{.num_retries = std::numeric_limits<int>::max()},
        RetryPolicy{.algorithm = static_cast<BackoffAlgorithm>(5)},
        RetryPolicy{.jitter = std::numeric_limits<double>::quiet_NaN()},
        RetryPolicy{.retry_on_codes = {static_cast<absl::StatusCode>(99)}}}) {
    EXPECT_THROW(Retry([&] { return ++calls; }, policy, Options()), InvalidOptionError);
  }
  EXPECT_EQ(calls, 0);
}

// Returns a delay hook answering `delay` for every failure.
RetryDelayHook AlwaysDelay(absl::Duration delay) {
  return [delay](const RetryFailure&, const RetryContext&) -> std::optional<absl::Duration> {
    return delay;
  };
}

TEST_F(RetryTest, AnInfiniteHookDelayEndsTheRetryInsteadOfSleepingForever) {
  int calls = 0;
  const auto down = [&]() -> int {
    ++calls;
    throw std::runtime_error("down");
  };
  EXPECT_THROW(
      Retry(down,
            RetryPolicy{.num_retries = 3, .delay_hook = AlwaysDelay(absl::InfiniteDuration())},
            Options()),
      std::runtime_error);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(clock_.sleeps().empty());
  // With a cap it is the cap; a negative infinity is 0.
  calls = 0;
  EXPECT_THROW(Retry(down,
                     RetryPolicy{.num_retries = 2,
                                 .max_wait = absl::Seconds(5),
                                 .delay_hook = AlwaysDelay(absl::InfiniteDuration())},
                     Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), Seconds({5, 5}));
  calls = 0;
  EXPECT_THROW(Retry(down,
                     RetryPolicy{.num_retries = 2,
                                 .delay_hook = AlwaysDelay(-absl::InfiniteDuration()),
                                 .delay_hook_mode = HookDelayMode::kHookOnly},
                     Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), Seconds({5, 5}));  // No further sleep.
}

TEST_F(RetryTest, AWaitWhoseEndAbslTimeCannotRepresentEndsTheRetry) {
  // The largest finite duration: Now() + it saturates at absl::InfiniteFuture().
  int calls = 0;
  EXPECT_THROW(Retry(
                   [&]() -> int {
                     ++calls;
                     throw std::runtime_error("down");
                   },
                   RetryPolicy{.num_retries = 3,
                               .delay_hook =
                                   AlwaysDelay(absl::Seconds(std::numeric_limits<int64_t>::max()))},
                   Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(clock_.sleeps().empty());
}

TEST_F(RetryTest, ABackoffThatSaturatesEndsTheRetry) {
  // Exponential from 2^61 s: 2^61 s, 2^62 s, then 2^63 s does not fit in absl::Duration.
  int calls = 0;
  EXPECT_THROW(
      Retry(
          [&]() -> int {
            ++calls;
            throw std::runtime_error("down");
          },
          RetryPolicy{.num_retries = 10, .wait = absl::Seconds(int64_t{1} << 61), .jitter = 0},
          Options()),
      std::runtime_error);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(clock_.sleeps(), (std::vector<absl::Duration>{absl::Seconds(int64_t{1} << 61),
                                                          absl::Seconds(int64_t{1} << 62)}));
}

TEST_F(RetryTest, ADeadlineBeyondInfiniteFutureNeverEndsTheRetry) {
  // t0 + deadline saturates at absl::InfiniteFuture(): no overflow, and every wait fits.
  int calls = 0;
  const RetryPolicy policy{.num_retries = 3,
                           .wait = absl::Seconds(1),
                           .jitter = 0,
                           .deadline = absl::Seconds(std::numeric_limits<int64_t>::max())};
  EXPECT_EQ(Retry(
                [&] {
                  if (++calls < 4) throw std::runtime_error("flaky");
                  return calls;
                },
                policy, Options()),
            4);
  EXPECT_EQ(clock_.sleeps(), Seconds({1, 2, 4}));
  // The smallest deadline: only the first attempt (any wait ends past it).
  calls = 0;
  EXPECT_THROW(Retry(
                   [&]() -> int {
                     ++calls;
                     throw std::runtime_error("down");
                   },
                   RetryPolicy{.num_retries = 3, .deadline = absl::Nanoseconds(1)}, Options()),
               std::runtime_error);
  EXPECT_EQ(calls, 1);
}

TEST_F(RetryTest, ReferenceResultsAreReturnedAsReferences) {
  int value = 5;
  int& ref = Retry([&]() -> int& { return value; }, RetryPolicy{}, Options());
  EXPECT_EQ(&ref, &value);
}

TEST_F(RetryTest, RealClockAndDefaultGeneratorWork) {
  int calls = 0;
  const RetryPolicy policy{.num_retries = 2, .wait = absl::Milliseconds(1)};
  EXPECT_EQ(Retry(
                [&] {
                  if (++calls < 3) throw std::runtime_error("x");
                  return calls;
                },
                policy),
            3);
}

}  // namespace
}  // namespace concurry

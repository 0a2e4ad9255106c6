#include "retry/policy.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;

// A URBG that counts how often it is asked for bits.
struct CountingGen {
  using result_type = uint64_t;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()() {
    ++calls;
    return engine();
  }
  std::mt19937_64 engine{42};
  int calls = 0;
};

std::vector<absl::Duration> Waits(const RetryPolicy& policy, int n, absl::BitGenRef bitgen) {
  std::vector<absl::Duration> waits;
  for (int attempt = 1; attempt <= n; ++attempt) {
    waits.push_back(BackoffWait(policy, attempt, bitgen));
  }
  return waits;
}

std::vector<absl::Duration> Seconds(std::vector<double> values) {
  std::vector<absl::Duration> out;
  for (double v : values) out.push_back(absl::Seconds(v));
  return out;
}

TEST(BackoffAlgorithmTest, ParsesConcurryNamesAndAliasesCaseInsensitively) {
  struct Case {
    const char* text;
    BackoffAlgorithm expected;
  };
  for (const Case& c :
       {Case{"exponential", BackoffAlgorithm::kExponential},
        Case{"Exponential", BackoffAlgorithm::kExponential},
        Case{"EXP", BackoffAlgorithm::kExponential}, Case{"expo", BackoffAlgorithm::kExponential},
        Case{"linear", BackoffAlgorithm::kLinear}, Case{" Linear ", BackoffAlgorithm::kLinear},
        Case{"lin", BackoffAlgorithm::kLinear}, Case{"fibonacci", BackoffAlgorithm::kFibonacci},
        Case{"Fibonacci", BackoffAlgorithm::kFibonacci}, Case{"fib", BackoffAlgorithm::kFibonacci},
        Case{"decorrelated", BackoffAlgorithm::kDecorrelated},
        Case{"Decorr", BackoffAlgorithm::kDecorrelated}}) {
    BackoffAlgorithm algorithm = BackoffAlgorithm::kLinear;
    std::string error;
    EXPECT_TRUE(AbslParseFlag(c.text, &algorithm, &error)) << c.text;
    EXPECT_EQ(algorithm, c.expected) << c.text;
  }
}

TEST(BackoffAlgorithmTest, RejectsUnknownNamesListingTheAccepted) {
  BackoffAlgorithm algorithm = BackoffAlgorithm::kLinear;
  std::string error;
  EXPECT_FALSE(AbslParseFlag("quadratic", &algorithm, &error));
  EXPECT_THAT(error, HasSubstr("'quadratic'"));
  EXPECT_THAT(error, HasSubstr("exponential"));
  EXPECT_THAT(error, HasSubstr("fibonacci"));
  EXPECT_EQ(algorithm, BackoffAlgorithm::kLinear);
}

TEST(BackoffAlgorithmTest, UnparseRoundTrips) {
  for (BackoffAlgorithm a : {BackoffAlgorithm::kExponential, BackoffAlgorithm::kLinear,
                             BackoffAlgorithm::kFibonacci, BackoffAlgorithm::kDecorrelated}) {
    BackoffAlgorithm parsed;
    std::string error;
    ASSERT_TRUE(AbslParseFlag(AbslUnparseFlag(a), &parsed, &error));
    EXPECT_EQ(parsed, a);
  }
  EXPECT_EQ(AbslUnparseFlag(BackoffAlgorithm::kFibonacci), "fibonacci");
  // Out of range: the number, which does not parse back.
  EXPECT_EQ(AbslUnparseFlag(static_cast<BackoffAlgorithm>(9)), "9");
  EXPECT_EQ(BackoffAlgorithmName(static_cast<BackoffAlgorithm>(9)), "unknown");
  BackoffAlgorithm parsed;
  std::string error;
  EXPECT_FALSE(AbslParseFlag("9", &parsed, &error));
}

TEST(RetryPolicyTest, DefaultsMatchConcurry) {
  const RetryPolicy policy;
  EXPECT_EQ(policy.num_retries, 0);
  EXPECT_EQ(policy.algorithm, BackoffAlgorithm::kExponential);
  EXPECT_EQ(policy.wait, absl::Seconds(1));
  EXPECT_EQ(policy.jitter, 0.3);
  EXPECT_EQ(policy.max_wait, absl::InfiniteDuration());
  EXPECT_EQ(policy.deadline, absl::InfiniteDuration());
  ASSERT_EQ(policy.retry_on.size(), 1u);
  EXPECT_EQ(policy.retry_on[0].Describe(), "type std::exception");
  EXPECT_EQ(policy.retry_on_codes, std::vector<absl::StatusCode>{absl::StatusCode::kUnavailable});
  EXPECT_TRUE(policy.retry_until.empty());
  EXPECT_NO_THROW(ValidateRetryPolicy(policy));
}

TEST(BackoffWaitTest, ExactTablesWithoutJitter) {
  CountingGen gen;
  RetryPolicy policy{.wait = absl::Seconds(1), .jitter = 0};
  policy.algorithm = BackoffAlgorithm::kExponential;
  EXPECT_EQ(Waits(policy, 6, gen), Seconds({1, 2, 4, 8, 16, 32}));
  policy.algorithm = BackoffAlgorithm::kLinear;
  EXPECT_EQ(Waits(policy, 6, gen), Seconds({1, 2, 3, 4, 5, 6}));
  policy.algorithm = BackoffAlgorithm::kFibonacci;
  EXPECT_EQ(Waits(policy, 8, gen), Seconds({1, 1, 2, 3, 5, 8, 13, 21}));
  policy.wait = absl::Milliseconds(250);
  EXPECT_EQ(Waits(policy, 5, gen), Seconds({0.25, 0.25, 0.5, 0.75, 1.25}));
  policy.algorithm = BackoffAlgorithm::kExponential;
  EXPECT_EQ(Waits(policy, 4, gen), Seconds({0.25, 0.5, 1, 2}));
  EXPECT_EQ(gen.calls, 0);  // Jitter 0 draws nothing.
}

TEST(BackoffWaitTest, ZeroBaseWaitIsAlwaysZero) {
  CountingGen gen;
  const RetryPolicy policy{.wait = absl::ZeroDuration(), .jitter = 1};
  EXPECT_EQ(Waits(policy, 3, gen), Seconds({0, 0, 0}));
  EXPECT_EQ(gen.calls, 0);
}

TEST(BackoffWaitTest, JitteredWaitsStayWithinTheirBoundsForEveryAlgorithm) {
  for (BackoffAlgorithm algorithm :
       {BackoffAlgorithm::kExponential, BackoffAlgorithm::kLinear, BackoffAlgorithm::kFibonacci}) {
    for (double jitter : {0.1, 0.3, 0.5, 1.0}) {
      std::mt19937_64 gen(7);
      const RetryPolicy exact{.algorithm = algorithm, .wait = absl::Seconds(1), .jitter = 0};
      RetryPolicy policy = exact;
      policy.jitter = jitter;
      for (int attempt = 1; attempt <= 8; ++attempt) {
        const absl::Duration w = BackoffWait(exact, attempt, gen);
        absl::Duration lowest = absl::InfiniteDuration(), highest = absl::ZeroDuration();
        for (int i = 0; i < 500; ++i) {
          const absl::Duration jittered = BackoffWait(policy, attempt, gen);
          ASSERT_GE(jittered, w * (1 - jitter)) << attempt << " " << jitter;
          ASSERT_LE(jittered, w) << attempt << " " << jitter;
          lowest = std::min(lowest, jittered);
          highest = std::max(highest, jittered);
        }
        // The samples spread over most of the interval.
        EXPECT_LT(lowest, w * (1 - 0.9 * jitter));
        EXPECT_GT(highest, w * (1 - 0.1 * jitter));
      }
    }
  }
}

TEST(BackoffWaitTest, SeededJitterIsReproducible) {
  const RetryPolicy policy{.algorithm = BackoffAlgorithm::kFibonacci, .jitter = 1};
  std::mt19937_64 a(123), b(123);
  const std::vector<absl::Duration> first = Waits(policy, 10, a);
  EXPECT_EQ(first, Waits(policy, 10, b));
  // Full jitter: uniform in [0, w] for w = 1, 1, 2, 3, 5 ... s.
  const std::vector<absl::Duration> exact = Seconds({1, 1, 2, 3, 5, 8, 13, 21, 34, 55});
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_GE(first[i], absl::ZeroDuration());
    EXPECT_LE(first[i], exact[i]);
  }
}

TEST(BackoffWaitTest, CapAppliesAfterJitter) {
  CountingGen gen;
  const RetryPolicy policy{.wait = absl::Seconds(1), .jitter = 0, .max_wait = absl::Seconds(5)};
  EXPECT_EQ(Waits(policy, 5, gen), Seconds({1, 2, 4, 5, 5}));
  RetryPolicy jittered = policy;
  jittered.jitter = 0.5;
  for (int i = 0; i < 200; ++i) {
    const absl::Duration w = BackoffWait(jittered, 4, gen);  // Uniform in [4, 8] s, then capped.
    EXPECT_GE(w, absl::Seconds(4));
    EXPECT_LE(w, absl::Seconds(5));
  }
}

TEST(BackoffWaitTest, HugeAttemptNumbersSaturateAndAreCapped) {
  CountingGen gen;
  RetryPolicy policy{.wait = absl::Seconds(1), .jitter = 0.5};
  EXPECT_EQ(BackoffWait(policy, 200, gen), absl::InfiniteDuration());
  policy.algorithm = BackoffAlgorithm::kFibonacci;
  EXPECT_EQ(BackoffWait(policy, 100, gen), absl::InfiniteDuration());
  policy.max_wait = absl::Minutes(1);
  EXPECT_EQ(BackoffWait(policy, 100, gen), absl::Minutes(1));
  policy.algorithm = BackoffAlgorithm::kExponential;
  EXPECT_EQ(BackoffWait(policy, 63, gen), absl::Minutes(1));
}

TEST(BackoffWaitTest, RejectsAttemptBelowOne) {
  CountingGen gen;
  EXPECT_THROW(BackoffWait(RetryPolicy{}, 0, gen), InvalidOptionError);
  EXPECT_THROW(BackoffWait(RetryPolicy{}, std::numeric_limits<int>::min(), gen),
               InvalidOptionError);
}

// The message of the InvalidOptionError that `f` throws, or "no error".
template <typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const InvalidOptionError& e) {
    return e.what();
  }
  return "no error";
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(BackoffWaitTest, ValidatesThePolicyItReads) {
  // Unchecked, jitter 2 drew factors in [-1, 1]: negative waits.
  CountingGen gen;
  const auto wait_of = [&](const RetryPolicy& policy) {
    return ErrorOf([&] { BackoffWait(policy, 1, gen); });
  };
  EXPECT_EQ(wait_of(RetryPolicy{.jitter = 2}), "RetryPolicy.jitter must be in [0, 1], got 2");
  EXPECT_EQ(wait_of(RetryPolicy{.jitter = -0.5}), "RetryPolicy.jitter must be in [0, 1], got -0.5");
  EXPECT_EQ(wait_of(RetryPolicy{.jitter = kNaN}), "RetryPolicy.jitter must be in [0, 1], got NaN");
  EXPECT_EQ(wait_of(RetryPolicy{.jitter = -kNaN}), "RetryPolicy.jitter must be in [0, 1], got NaN");
  EXPECT_EQ(wait_of(RetryPolicy{.jitter = kInf}), "RetryPolicy.jitter must be in [0, 1], got inf");
  EXPECT_EQ(wait_of(RetryPolicy{.algorithm = static_cast<BackoffAlgorithm>(7)}),
            "RetryPolicy.algorithm: unknown value 7; allowed: kExponential, kLinear, kFibonacci, "
            "kDecorrelated");
  EXPECT_EQ(wait_of(RetryPolicy{.wait = -absl::Milliseconds(1)}),
            "RetryPolicy.wait must be >= 0 and finite, got -1ms");
  EXPECT_EQ(wait_of(RetryPolicy{.wait = absl::InfiniteDuration()}),
            "RetryPolicy.wait must be >= 0 and finite, got inf");
  EXPECT_EQ(wait_of(RetryPolicy{.max_wait = -absl::InfiniteDuration()}),
            "RetryPolicy.max_wait must be >= 0 (or infinite), got -inf");
  EXPECT_EQ(gen.calls, 0);
  // What it does not read is left to ValidateRetryPolicy().
  EXPECT_EQ(BackoffWait(RetryPolicy{.num_retries = -1, .jitter = 0}, 1, gen), absl::Seconds(1));
}

TEST(BackoffWaitTest, JitteredWaitsNeverLeaveZeroToMaxWait) {
  std::mt19937_64 gen(99);
  for (double jitter : {0.0, std::numeric_limits<double>::denorm_min(), 0.5, 1.0}) {
    const RetryPolicy policy{.wait = absl::Nanoseconds(1), .jitter = jitter};
    for (int attempt : {1, 2, 64, 100}) {
      for (int i = 0; i < 100; ++i) {
        const absl::Duration w = BackoffWait(policy, attempt, gen);
        ASSERT_GE(w, absl::ZeroDuration()) << jitter << " " << attempt;
      }
    }
  }
}

TEST(BackoffWaitTest, SaturatesExactlyAtTheLimitsOfAbslDuration) {
  CountingGen gen;
  RetryPolicy policy{.wait = absl::Nanoseconds(1), .jitter = 0};
  // Exponential: 2^62 ns and 2^63 ns fit in absl::Duration (its range is about +-2^63 s).
  EXPECT_EQ(BackoffWait(policy, 63, gen), absl::Nanoseconds(int64_t{1} << 62));
  EXPECT_EQ(BackoffWait(policy, 64, gen), absl::Nanoseconds(int64_t{1} << 62) * 2);
  policy.wait = absl::Seconds(int64_t{1} << 61);
  EXPECT_EQ(BackoffWait(policy, 2, gen), absl::Seconds(int64_t{1} << 62));
  EXPECT_EQ(BackoffWait(policy, 3, gen), absl::InfiniteDuration());  // 2^63 s does not fit.
  EXPECT_EQ(BackoffWait(policy, std::numeric_limits<int>::max(), gen), absl::InfiniteDuration());
  // Fibonacci: fib(92) is the largest that fits in int64; the Duration goes further.
  policy = RetryPolicy{
      .algorithm = BackoffAlgorithm::kFibonacci, .wait = absl::Nanoseconds(1), .jitter = 0};
  EXPECT_EQ(BackoffWait(policy, 92, gen), absl::Nanoseconds(int64_t{7540113804746346429}));
  EXPECT_LT(BackoffWait(policy, 93, gen), absl::InfiniteDuration());
  EXPECT_EQ(BackoffWait(policy, std::numeric_limits<int>::max(), gen), absl::InfiniteDuration());
  // Linear: the largest multiple, and the largest finite base.
  policy =
      RetryPolicy{.algorithm = BackoffAlgorithm::kLinear, .wait = absl::Seconds(1), .jitter = 0};
  EXPECT_EQ(BackoffWait(policy, std::numeric_limits<int>::max(), gen),
            absl::Seconds(std::numeric_limits<int>::max()));
  policy.wait = absl::Seconds(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(BackoffWait(policy, 1, gen), absl::Seconds(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(BackoffWait(policy, 2, gen), absl::InfiniteDuration());
  // Full jitter on the largest finite wait stays finite and in range; the cap applies last.
  policy.jitter = 1;
  const absl::Duration jittered = BackoffWait(policy, 1, gen);
  EXPECT_GE(jittered, absl::ZeroDuration());
  EXPECT_LE(jittered, absl::Seconds(std::numeric_limits<int64_t>::max()));
  policy.max_wait = absl::Hours(1);
  EXPECT_EQ(BackoffWait(policy, 2, gen), absl::Hours(1));
  EXPECT_EQ(BackoffWait(policy, std::numeric_limits<int>::max(), gen), absl::Hours(1));
  policy.max_wait = absl::ZeroDuration();
  EXPECT_EQ(BackoffWait(policy, 2, gen), absl::ZeroDuration());
}

TEST(ValidateRetryPolicyTest, NamesTheFieldAndTheValue) {
  struct Case {
    RetryPolicy policy;
    const char* expected;
  };
  std::vector<Case> cases;
  cases.push_back({RetryPolicy{.num_retries = -1},
                   "RetryPolicy.num_retries must be in [0, 2147483646], got -1"});
  cases.push_back({RetryPolicy{.wait = absl::Seconds(-1)}, "RetryPolicy.wait must be >= 0"});
  cases.push_back({RetryPolicy{.wait = absl::InfiniteDuration()}, "RetryPolicy.wait"});
  cases.push_back({RetryPolicy{.jitter = 1.5}, "RetryPolicy.jitter must be in [0, 1], got 1.5"});
  cases.push_back({RetryPolicy{.jitter = -0.1}, "RetryPolicy.jitter"});
  cases.push_back(
      {RetryPolicy{.jitter = std::numeric_limits<double>::quiet_NaN()}, "RetryPolicy.jitter"});
  cases.push_back({RetryPolicy{.max_wait = absl::Seconds(-2)}, "RetryPolicy.max_wait"});
  cases.push_back(
      {RetryPolicy{.deadline = absl::ZeroDuration()}, "RetryPolicy.deadline must be > 0"});
  cases.push_back({RetryPolicy{.retry_on = {RetryFilter::Predicate()}}, "RetryPolicy.retry_on[0]"});
  cases.push_back({RetryPolicy{.retry_on_codes = {absl::StatusCode::kOk}},
                   "RetryPolicy.retry_on_codes[0]: kOk (0) is not an error"});
  cases.push_back({RetryPolicy{.retry_until = {RetryValidator{.name = "json"}}},
                   "RetryPolicy.retry_until[0] ('json')"});
  for (const Case& c : cases) {
    try {
      ValidateRetryPolicy(c.policy);
      ADD_FAILURE() << "accepted: " << c.expected;
    } catch (const InvalidOptionError& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.expected));
    }
  }
  EXPECT_NO_THROW(ValidateRetryPolicy(RetryPolicy{.wait = absl::ZeroDuration(), .jitter = 1}));
}

std::string PolicyError(const RetryPolicy& policy) {
  return ErrorOf([&] { ValidateRetryPolicy(policy); });
}

TEST(ValidateRetryPolicyTest, RejectsOutOfRangeEnumValuesLikeTheOtherOptions) {
  EXPECT_EQ(PolicyError(RetryPolicy{.algorithm = static_cast<BackoffAlgorithm>(4)}),
            "RetryPolicy.algorithm: unknown value 4; allowed: kExponential, kLinear, kFibonacci, "
            "kDecorrelated");
  EXPECT_EQ(PolicyError(RetryPolicy{.algorithm = static_cast<BackoffAlgorithm>(-1)}),
            "RetryPolicy.algorithm: unknown value -1; allowed: kExponential, kLinear, kFibonacci, "
            "kDecorrelated");
  EXPECT_EQ(PolicyError(RetryPolicy{.retry_on_codes = {absl::StatusCode::kUnavailable,
                                                       static_cast<absl::StatusCode>(99)}}),
            "RetryPolicy.retry_on_codes[1]: unknown value 99; allowed: the error codes 1 "
            "(kCancelled) to 16 (kUnauthenticated)");
  EXPECT_EQ(PolicyError(RetryPolicy{.retry_on_codes = {static_cast<absl::StatusCode>(-2)}}),
            "RetryPolicy.retry_on_codes[0]: unknown value -2; allowed: the error codes 1 "
            "(kCancelled) to 16 (kUnauthenticated)");
  EXPECT_EQ(PolicyError(RetryPolicy{.retry_on_codes = {static_cast<absl::StatusCode>(17)}}),
            "RetryPolicy.retry_on_codes[0]: unknown value 17; allowed: the error codes 1 "
            "(kCancelled) to 16 (kUnauthenticated)");
  // Abseil's reserved "do not use" enumerator is not a code either.
  EXPECT_THAT(
      PolicyError(RetryPolicy{
          .retry_on_codes =
              {absl::StatusCode::kDoNotUseReservedForFutureExpansionUseDefaultInSwitchInstead_}}),
      HasSubstr("unknown value 20"));
  EXPECT_EQ(PolicyError(RetryPolicy{.retry_on_codes = {absl::StatusCode::kOk}}),
            "RetryPolicy.retry_on_codes[0]: kOk (0) is not an error and cannot be retried; "
            "allowed: the error codes 1 (kCancelled) to 16 (kUnauthenticated)");
  EXPECT_EQ(PolicyError(RetryPolicy{.retry_on_codes = {absl::StatusCode::kCancelled,
                                                       absl::StatusCode::kUnauthenticated}}),
            "no error");
}

TEST(ValidateRetryPolicyTest, NumericFieldsAtTheirExtremes) {
  EXPECT_EQ(PolicyError(RetryPolicy{.num_retries = std::numeric_limits<int>::max()}),
            "RetryPolicy.num_retries must be in [0, 2147483646], got 2147483647");
  EXPECT_EQ(PolicyError(RetryPolicy{.num_retries = std::numeric_limits<int>::min()}),
            "RetryPolicy.num_retries must be in [0, 2147483646], got -2147483648");
  EXPECT_EQ(PolicyError(RetryPolicy{.num_retries = kMaxNumRetries}), "no error");
  EXPECT_EQ(PolicyError(RetryPolicy{.jitter = kNaN}),
            "RetryPolicy.jitter must be in [0, 1], got NaN");
  EXPECT_EQ(PolicyError(RetryPolicy{.jitter = -kInf}),
            "RetryPolicy.jitter must be in [0, 1], got -inf");
  EXPECT_EQ(PolicyError(RetryPolicy{.jitter = std::nextafter(1.0, 2.0)}),
            "RetryPolicy.jitter must be in [0, 1], got 1.0000000000000002");
  EXPECT_EQ(PolicyError(RetryPolicy{.jitter = -0.0}), "no error");
  // absl::Duration has no NaN: absl::Seconds(NaN) is +inf and absl::Seconds(-NaN) is -inf.
  EXPECT_EQ(PolicyError(RetryPolicy{.wait = absl::Seconds(kNaN)}),
            "RetryPolicy.wait must be >= 0 and finite, got inf");
  EXPECT_EQ(PolicyError(RetryPolicy{.wait = absl::Seconds(-kNaN)}),
            "RetryPolicy.wait must be >= 0 and finite, got -inf");
  EXPECT_EQ(PolicyError(RetryPolicy{.wait = absl::Seconds(std::numeric_limits<int64_t>::max())}),
            "no error");
  EXPECT_EQ(PolicyError(RetryPolicy{.max_wait = absl::Seconds(-kNaN)}),
            "RetryPolicy.max_wait must be >= 0 (or infinite), got -inf");
  EXPECT_EQ(PolicyError(RetryPolicy{.deadline = -absl::InfiniteDuration()}),
            "RetryPolicy.deadline must be > 0 (or infinite), got -inf");
  EXPECT_EQ(PolicyError(RetryPolicy{.deadline = absl::Nanoseconds(1)}), "no error");
}

struct BaseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct DerivedError : BaseError {
  using BaseError::BaseError;
};

TEST(RetryFilterTest, TypeFilterMatchesDerivedTypes) {
  const RetryContext context;
  const RetryFilter filter = RetryOn<BaseError>();
  EXPECT_FALSE(filter.is_predicate());
  EXPECT_TRUE(filter.Matches(std::make_exception_ptr(BaseError("b")), context));
  EXPECT_TRUE(filter.Matches(std::make_exception_ptr(DerivedError("d")), context));
  EXPECT_FALSE(filter.Matches(std::make_exception_ptr(std::runtime_error("r")), context));
  EXPECT_FALSE(filter.Matches(std::make_exception_ptr(42), context));
  EXPECT_THAT(filter.Describe(), HasSubstr("BaseError"));
}

TEST(RetryFilterTest, PredicateSeesTheErrorAndTheContext) {
  const RetryFilter filter = [](const std::exception_ptr& error, const RetryContext& context) {
    return context.attempt < 3 && ExceptionMessage(error) == "flaky";
  };
  EXPECT_TRUE(filter.is_predicate());
  RetryContext context{.attempt = 2};
  EXPECT_TRUE(filter.Matches(std::make_exception_ptr(std::runtime_error("flaky")), context));
  EXPECT_FALSE(filter.Matches(std::make_exception_ptr(std::runtime_error("fatal")), context));
  context.attempt = 3;
  EXPECT_FALSE(filter.Matches(std::make_exception_ptr(std::runtime_error("flaky")), context));
}

TEST(RetryContextTest, ArgumentsAreRenderedOnlyWhenAvailable) {
  RetryContext context;
  EXPECT_EQ(context.Arguments(), "");
  const std::function<std::string()> render = [] { return "(1, \"x\")"; };
  context.arguments_renderer = &render;
  EXPECT_EQ(context.Arguments(), "(1, \"x\")");
}

struct Opaque {};
struct Printable {
  int v;
  friend std::ostream& operator<<(std::ostream& out, const Printable& p) {
    return out << "Printable(" << p.v << ")";
  }
};

TEST(RetryResultTest, RendersValuesForMessages) {
  EXPECT_EQ(RetryResult::Render(std::string("abc")), "abc");
  EXPECT_EQ(RetryResult::Render(42), "42");
  EXPECT_EQ(RetryResult::Render(true), "true");
  EXPECT_EQ(RetryResult::Render(Printable{7}), "Printable(7)");
  EXPECT_THAT(RetryResult::Render(Opaque{}), HasSubstr("Opaque>"));
  EXPECT_EQ(RetryResult().ToString(), "(void)");
  const int x = 5;
  const RetryResult view = RetryResult::Of(x);
  EXPECT_EQ(view.ToString(), "5");
  ASSERT_NE(view.get<int>(), nullptr);
  EXPECT_EQ(*view.get<int>(), 5);
  EXPECT_EQ(view.get<long>(), nullptr);
}

TEST(ValidateTest, AcceptsBoolStatusAndOptionalMessageVerdicts) {
  const RetryContext context{.attempt = 1};
  const std::string good = "{}", bad = "oops";
  const RetryValidator by_bool =
      Validate<std::string>("json", [](const std::string& s) { return s == "{}"; });
  EXPECT_EQ(by_bool.name, "json");
  EXPECT_EQ(by_bool.check(RetryResult::Of(good), context), std::nullopt);
  EXPECT_EQ(by_bool.check(RetryResult::Of(bad), context), "returned false");

  const RetryValidator by_status = Validate<std::string>([](const std::string& s) {
    return s == "{}" ? absl::OkStatus() : absl::InvalidArgumentError("not JSON");
  });
  EXPECT_EQ(by_status.check(RetryResult::Of(good), context), std::nullopt);
  EXPECT_EQ(by_status.check(RetryResult::Of(bad), context), "failed: not JSON");

  const RetryValidator by_message = Validate<std::string>(
      [](const std::string& s, const RetryContext& c) -> std::optional<std::string> {
        if (s == "{}") return std::nullopt;
        return "attempt " + std::to_string(c.attempt) + " gave " + s;
      });
  EXPECT_EQ(by_message.check(RetryResult::Of(bad), context), "failed: attempt 1 gave oops");

  const int wrong = 3;
  EXPECT_THAT(*by_bool.check(RetryResult::Of(wrong), context), HasSubstr("but the result is int"));
}

}  // namespace
}  // namespace concurry

#include "limits/rate_window.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;

TEST(ParseRateWindowTest, AcceptsConcurryNamesAndAliasesCaseInsensitively) {
  const struct {
    const char* text;
    absl::Duration want;
  } kCases[] = {
      {"second", absl::Seconds(1)},
      {"Seconds", absl::Seconds(1)},
      {"sec", absl::Seconds(1)},
      {"SECS", absl::Seconds(1)},
      {"per_second", absl::Seconds(1)},
      {"per_seconds", absl::Seconds(1)},
      {"per_sec", absl::Seconds(1)},
      {"per_secs", absl::Seconds(1)},
      {"Secondly", absl::Seconds(1)},
      {"minute", absl::Minutes(1)},
      {"minutes", absl::Minutes(1)},
      {"min", absl::Minutes(1)},
      {"mins", absl::Minutes(1)},
      {"per_minute", absl::Minutes(1)},
      {"per_minutes", absl::Minutes(1)},
      {"per_min", absl::Minutes(1)},
      {"per_mins", absl::Minutes(1)},
      {"Minutely", absl::Minutes(1)},
      {"hour", absl::Hours(1)},
      {"hours", absl::Hours(1)},
      {"hr", absl::Hours(1)},
      {"hrs", absl::Hours(1)},
      {"per_hour", absl::Hours(1)},
      {"per_hours", absl::Hours(1)},
      {"per_hr", absl::Hours(1)},
      {"Per_Hrs", absl::Hours(1)},
      {"hourly", absl::Hours(1)},
      {"day", absl::Hours(24)},
      {"days", absl::Hours(24)},
      {"per_day", absl::Hours(24)},
      {"per_days", absl::Hours(24)},
      {"DAILY", absl::Hours(24)},
      {"week", absl::Hours(168)},
      {"weeks", absl::Hours(168)},
      {"wk", absl::Hours(168)},
      {"wks", absl::Hours(168)},
      {"per_week", absl::Hours(168)},
      {"per_weeks", absl::Hours(168)},
      {"per_wk", absl::Hours(168)},
      {"per_wks", absl::Hours(168)},
      {"Weekly", absl::Hours(168)},
      {"60", absl::Seconds(60)},
      {"0.5", absl::Milliseconds(500)},
      {" 2 ", absl::Seconds(2)},
  };
  for (const auto& c : kCases) {
    absl::StatusOr<absl::Duration> window = ParseRateWindow(c.text);
    ASSERT_TRUE(window.ok()) << c.text << ": " << window.status();
    EXPECT_EQ(*window, c.want) << c.text;
  }
}

TEST(ParseRateWindowTest, RejectsUnknownNamesListingTheAccepted) {
  for (const char* text : {"month", "monthly", "", "fortnight"}) {
    absl::StatusOr<absl::Duration> window = ParseRateWindow(text);
    ASSERT_FALSE(window.ok()) << text;
    EXPECT_EQ(window.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(window.status().message(), HasSubstr("unknown rate-limit window"));
    EXPECT_THAT(window.status().message(), HasSubstr("per_minute(s)"));
  }
}

TEST(ParseRateWindowTest, RejectsNonPositiveAndNonFiniteSeconds) {
  for (const char* text : {"0", "-1", "inf", "nan", "1e-12"}) {
    absl::StatusOr<absl::Duration> window = ParseRateWindow(text);
    ASSERT_FALSE(window.ok()) << text;
    EXPECT_EQ(window.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(window.status().message(), HasSubstr("positive")) << text;
  }
}

TEST(ParseRateWindowTest, TakesSecondsUpToTheLongestWindowAndSaysSo) {
  absl::StatusOr<absl::Duration> longest = ParseRateWindow("3153600000");
  ASSERT_TRUE(longest.ok()) << longest.status();
  EXPECT_EQ(*longest, kMaxRateWindow);
  EXPECT_EQ(*ParseRateWindow("1e-9"), absl::Nanoseconds(1));
  for (const char* text : {"1e10", "3153600001", "1e300", "1e-10"}) {
    absl::StatusOr<absl::Duration> window = ParseRateWindow(text);
    ASSERT_FALSE(window.ok()) << text;
    EXPECT_EQ(window.status().message(),
              absl::StrCat("rate-limit window must be a positive, finite number of seconds, from "
                           "1e-09 (1ns) to 3153600000 (100 years), got '",
                           text, "'"));
  }
}

TEST(ParseRateWindowTest, SaysANaNIsNotANumber) {
  for (const char* text : {"nan", "NaN", " -nan "}) {
    absl::StatusOr<absl::Duration> window = ParseRateWindow(text);
    ASSERT_FALSE(window.ok()) << text;
    EXPECT_THAT(window.status().message(), HasSubstr("(not a number)")) << text;
    EXPECT_THAT(window.status().message(), HasSubstr(absl::StrCat("got '", text, "'"))) << text;
  }
  absl::StatusOr<absl::Duration> with_unit = ParseRateWindow("NaN seconds");
  ASSERT_FALSE(with_unit.ok());
  EXPECT_THAT(with_unit.status().message(), HasSubstr("unknown rate-limit window 'NaN seconds'"));
}

TEST(ValidateRateWindowTest, AcceptsFromOneNanosecondToTheLongestWindow) {
  EXPECT_TRUE(ValidateRateWindow(absl::Nanoseconds(1)).ok());
  EXPECT_TRUE(ValidateRateWindow(absl::Hours(168)).ok());
  EXPECT_TRUE(ValidateRateWindow(kMaxRateWindow).ok());
  EXPECT_EQ(kMaxRateWindow, absl::Hours(100 * 365 * 24));
  EXPECT_FALSE(ValidateRateWindow(absl::ZeroDuration()).ok());
  EXPECT_FALSE(ValidateRateWindow(-absl::Seconds(1)).ok());
  EXPECT_FALSE(ValidateRateWindow(absl::InfiniteDuration()).ok());
  const absl::Status too_long = ValidateRateWindow(absl::Hours(1e7));
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_long.message(),
            "window must be positive and finite, from 1ns to 876000h (100 years), got 10000000h");
  EXPECT_EQ(ValidateRateWindow(absl::Nanoseconds(0.5)).message(),
            "window must be positive and finite, from 1ns to 876000h (100 years), got 0.5ns");
}

TEST(RateLimitAlgorithmTest, ParsesConcurryNamesAndAliases) {
  const struct {
    const char* text;
    RateLimitAlgorithm want;
  } kCases[] = {
      {"token", RateLimitAlgorithm::kTokenBucket},
      {"token_bucket", RateLimitAlgorithm::kTokenBucket},
      {"TokenBucket", RateLimitAlgorithm::kTokenBucket},
      {"leaky", RateLimitAlgorithm::kLeakyBucket},
      {"leaky_bucket", RateLimitAlgorithm::kLeakyBucket},
      {"LeakyBucket", RateLimitAlgorithm::kLeakyBucket},
      {"sliding", RateLimitAlgorithm::kSlidingWindow},
      {"sliding_window", RateLimitAlgorithm::kSlidingWindow},
      {"SlidingWindow", RateLimitAlgorithm::kSlidingWindow},
      {"fixed", RateLimitAlgorithm::kFixedWindow},
      {"fixed_window", RateLimitAlgorithm::kFixedWindow},
      {"FixedWindow", RateLimitAlgorithm::kFixedWindow},
      {"gcra", RateLimitAlgorithm::kGcra},
      {"GCRA", RateLimitAlgorithm::kGcra},
      {"Generic cell rate", RateLimitAlgorithm::kGcra},
      {"Generic cell rate algorithm", RateLimitAlgorithm::kGcra},
  };
  for (const auto& c : kCases) {
    RateLimitAlgorithm algorithm = RateLimitAlgorithm::kFixedWindow;
    std::string error;
    EXPECT_TRUE(AbslParseFlag(c.text, &algorithm, &error)) << c.text << ": " << error;
    EXPECT_EQ(algorithm, c.want) << c.text;
  }
}

TEST(RateLimitAlgorithmTest, RejectsUnknownWithTheAcceptedNames) {
  RateLimitAlgorithm algorithm = RateLimitAlgorithm::kGcra;
  std::string error;
  EXPECT_FALSE(AbslParseFlag("bucket", &algorithm, &error));
  EXPECT_EQ(algorithm, RateLimitAlgorithm::kGcra);
  EXPECT_THAT(error, HasSubstr("unknown rate-limit algorithm 'bucket'"));
  EXPECT_THAT(error, HasSubstr("sliding_window"));
}

TEST(RateLimitAlgorithmTest, UnparseRoundTripsAndDefaultIsSlidingWindow) {
  EXPECT_EQ(kDefaultRateLimitAlgorithm, RateLimitAlgorithm::kSlidingWindow);
  for (RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
        RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
        RateLimitAlgorithm::kGcra}) {
    RateLimitAlgorithm parsed = RateLimitAlgorithm::kGcra;
    std::string error;
    EXPECT_TRUE(AbslParseFlag(AbslUnparseFlag(algorithm), &parsed, &error));
    EXPECT_EQ(parsed, algorithm);
  }
  EXPECT_EQ(AbslUnparseFlag(RateLimitAlgorithm::kTokenBucket), "token_bucket");
  EXPECT_EQ(RateLimitAlgorithmName(RateLimitAlgorithm::kGcra), "gcra");
}

}  // namespace
}  // namespace concurry

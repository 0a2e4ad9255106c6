#include "limits/rate_window.h"

#include <string>

#include "absl/status/status.h"
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

TEST(ValidateRateWindowTest, AcceptsPositiveFiniteOnly) {
  EXPECT_TRUE(ValidateRateWindow(absl::Nanoseconds(1)).ok());
  EXPECT_TRUE(ValidateRateWindow(absl::Hours(168)).ok());
  EXPECT_FALSE(ValidateRateWindow(absl::ZeroDuration()).ok());
  EXPECT_FALSE(ValidateRateWindow(-absl::Seconds(1)).ok());
  EXPECT_FALSE(ValidateRateWindow(absl::InfiniteDuration()).ok());
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

// What a LimitSet reports: a call request of 1 (implicit or named) counts exactly one call; an
// acquisition's requested, used, charged and refunded amounts per limit (charges()); stats lookup
// by key (LimitSetStats::Find/at) and each algorithm's own state in the stats.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/rate_window.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::concurry::testkit::FakeClock;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

class CallRequestOfOneTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  std::vector<std::string> warnings_;
  LimitSet set_ = LimitSet::Create(
      {CallLimit(10, "second")},
      {.clock = &clock_,
       .on_warning = [this](absl::string_view message) { warnings_.emplace_back(message); }});
};

TEST_F(CallRequestOfOneTest, NamedRequestOfOneAcceptsOnlyAUsageOfOne) {
  LimitAcquisition acquired = set_.Acquire({{"call_count", 1}});
  for (const double bad : {0.0, 2.0, 0.5}) {
    EXPECT_THAT(
        [&] {
          acquired.Update({{"call_count", bad}});
        },
        ThrowsMessage<InvalidOptionError>(
            AllOf(HasSubstr("CallLimit usage must be 1 for a call request of 1 "
                            "({\"call_count\", 1}, which counts one call like the implicit "
                            "one), got "),
                  HasSubstr("to report a number of calls, request it: {\"call_count\", n}"))));
  }
  EXPECT_FALSE(acquired.charge("call_count")->updated);  // Nothing recorded by the failures.
  acquired.Update({{"call_count", 1}});
  EXPECT_NO_THROW(acquired.Release());
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(CallRequestOfOneTest, NamedRequestOfOneNeedsNoUpdateLikeTheImplicitOne) {
  set_.Acquire({{"call_count", 1}}).Release();  // No LimitUsageError.
  set_.Acquire().Release();
  EXPECT_EQ(set_.Stats().missing_updates, 0);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(CallRequestOfOneTest, ImplicitRequestNamesItselfInTheError) {
  LimitAcquisition acquired = set_.Acquire();
  EXPECT_THAT(
      [&] {
        acquired.Update({{"call_count", 0}});
      },
      ThrowsMessage<InvalidOptionError>(
          HasSubstr("(an implicit acquisition, taken without naming 'call_count'), got 0")));
}

TEST_F(CallRequestOfOneTest, LargerRequestTakesAnyUsageUpToItAndWarnsAbove) {
  LimitAcquisition none = set_.Acquire({{"call_count", 3}});
  none.Update({{"call_count", 0}});
  none.Release();
  LimitAcquisition more = set_.Acquire({{"call_count", 3}});
  more.Update({{"call_count", 4}});
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_THAT(warnings_[0], HasSubstr("'call_count' used 4 of 3 requested"));
  EXPECT_EQ(more.charge("call_count")->charged, 4);
}

// ---- charges() ----

class ChargesTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  std::vector<std::string> warnings_;
  LimitSet set_ = LimitSet::Create(
      {RateLimit("tokens", 100, "minute", RateLimitAlgorithm::kGcra),
       RateLimit("fixed", 100, "minute", RateLimitAlgorithm::kFixedWindow), CallLimit(10, "second"),
       ResourceLimit("conn", 2)},
      {.clock = &clock_,
       .on_warning = [this](absl::string_view message) { warnings_.emplace_back(message); }});
};

TEST_F(ChargesTest, ReportsRequestedUsedChargedAndRefundedPerLimit) {
  LimitAcquisition acquired = set_.Acquire({{"tokens", 50}, {"fixed", 20}});
  std::vector<LimitCharge> charges = acquired.charges();
  ASSERT_EQ(charges.size(), 4u);  // In the set's order.
  EXPECT_EQ(charges[0].key, "tokens");
  EXPECT_EQ(charges[0].kind, LimitKind::kRate);
  EXPECT_EQ(charges[0].requested, 50);
  EXPECT_FALSE(charges[0].updated);
  EXPECT_EQ(charges[0].used, 50);  // The default: the request.
  EXPECT_EQ(charges[0].charged, 50);
  EXPECT_EQ(charges[0].refunded, 0);
  EXPECT_EQ(charges[2].key, "call_count");
  EXPECT_EQ(charges[2].requested, 1);
  EXPECT_EQ(charges[2].used, 1);
  EXPECT_EQ(charges[3].key, "conn");
  EXPECT_EQ(charges[3].kind, LimitKind::kResource);
  EXPECT_EQ(charges[3].charged, 1);  // Held.
  EXPECT_FALSE(acquired.released());

  acquired.Update({{"tokens", 30}, {"fixed", 25}});  // Over-use of "fixed" is charged.
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_EQ(acquired.charge("fixed")->used, 25);
  EXPECT_EQ(acquired.charge("fixed")->charged, 25);
  EXPECT_EQ(acquired.charge("tokens")->charged, 50);  // Refunds come with the release.

  acquired.Release();
  EXPECT_FALSE(acquired.held());
  EXPECT_TRUE(acquired.released());
  const std::optional<LimitCharge> tokens = acquired.charge("tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_TRUE(tokens->updated);
  EXPECT_EQ(tokens->used, 30);
  EXPECT_EQ(tokens->refunded, 20);  // GCRA refunds the unused part.
  EXPECT_EQ(tokens->charged, 30);
  const std::optional<LimitCharge> fixed = acquired.charge("fixed");
  EXPECT_EQ(fixed->refunded, 0);
  EXPECT_EQ(fixed->charged, 25);
  const std::optional<LimitCharge> conn = acquired.charge("conn");
  EXPECT_EQ(conn->refunded, 1);
  EXPECT_EQ(conn->charged, 0);
  EXPECT_EQ(acquired.charge("call_count")->charged, 1);
  EXPECT_FALSE(acquired.charge("nope").has_value());
  EXPECT_DOUBLE_EQ(set_.Stats().at("tokens").in_use, 30);

  // The report moves with the acquisition.
  LimitAcquisition moved = std::move(acquired);
  EXPECT_TRUE(acquired.charges().empty());  // NOLINT(bugprone-use-after-move): tested.
  EXPECT_FALSE(acquired.released());        // NOLINT(bugprone-use-after-move): tested.
  EXPECT_TRUE(moved.released());
  EXPECT_EQ(moved.charge("tokens")->charged, 30);
}

TEST_F(ChargesTest, RateLimitWithoutUpdateIsChargedInFull) {
  LimitAcquisition acquired = set_.Acquire({{"tokens", 10}, {"conn", 0}});
  EXPECT_THROW(acquired.Release(), LimitUsageError);
  const std::optional<LimitCharge> tokens = acquired.charge("tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_FALSE(tokens->updated);
  EXPECT_EQ(tokens->used, 10);
  EXPECT_EQ(tokens->charged, 10);
  EXPECT_EQ(tokens->refunded, 0);
  EXPECT_FALSE(acquired.charge("conn").has_value());  // Amount 0: not taken.
}

TEST_F(ChargesTest, EmptyAndNoOpAcquisitionsReportNothing) {
  EXPECT_TRUE(LimitAcquisition().charges().empty());
  EXPECT_FALSE(LimitAcquisition().released());
  LimitAcquisition no_op = LimitSet::NoOp().Acquire({{"anything", 3}});
  EXPECT_TRUE(no_op.charges().empty());
}

// ---- Stats ----

TEST_F(ChargesTest, StatsFindAndAtLookUpByKey) {
  const LimitSetStats stats = set_.Stats();
  ASSERT_NE(stats.Find("tokens"), nullptr);
  EXPECT_EQ(stats.Find("tokens")->capacity, 100);
  EXPECT_EQ(&stats.at("conn"), stats.Find("conn"));
  EXPECT_EQ(stats.Find("nope"), nullptr);
  // On a temporary, at() returns a copy: the reference below does not dangle (ASan checks).
  const LimitStats& copied = set_.Stats().at("tokens");
  EXPECT_EQ(copied.capacity, 100);
  EXPECT_THAT([&] { stats.at("nope"); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitSetStats::at: no limit with key 'nope'; the set has: tokens, fixed, "
                  "call_count, conn"));
  EXPECT_THAT([] { LimitSet::NoOp().Stats().at("x"); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitSetStats::at: no limit with key 'x'; the set has no limits"));
}

TEST_F(ChargesTest, StatsShowEachAlgorithmsState) {
  const absl::Time start = clock_.Now();  // On the hour: a fixed window starts here.
  clock_.Advance(absl::Seconds(15));
  LimitAcquisition acquired = set_.Acquire({{"tokens", 25}, {"fixed", 7}});
  acquired.Update({{"tokens", 25}, {"fixed", 7}});
  const LimitSetStats stats = set_.Stats();

  const LimitStats& tokens = stats.at("tokens");
  EXPECT_EQ(tokens.burst, 100);
  EXPECT_EQ(tokens.rate.burst, 100);
  EXPECT_DOUBLE_EQ(tokens.rate.max_rate, 100.0 / 60);
  EXPECT_EQ(tokens.rate.emission_interval, absl::Milliseconds(600));
  EXPECT_EQ(tokens.rate.tolerance, absl::Minutes(1));
  // 25 tokens of 600 ms each, taken at start + 15 s from a full bucket.
  EXPECT_EQ(tokens.rate.theoretical_arrival, start + absl::Seconds(15 + 15));
  EXPECT_DOUBLE_EQ(tokens.rate.tokens, 75);
  EXPECT_DOUBLE_EQ(tokens.available, 75);

  const LimitStats& fixed = stats.at("fixed");
  EXPECT_EQ(fixed.rate.window_start, start);
  EXPECT_DOUBLE_EQ(fixed.rate.window_count, 7);
  EXPECT_EQ(fixed.rate.theoretical_arrival, absl::InfinitePast());
  EXPECT_EQ(fixed.rate.emission_interval, absl::ZeroDuration());

  const LimitStats& calls = stats.at("call_count");
  EXPECT_EQ(calls.algorithm, RateLimitAlgorithm::kSlidingWindow);
  EXPECT_EQ(calls.rate.window_start, start + absl::Seconds(14));
  EXPECT_DOUBLE_EQ(calls.rate.window_count, 1);

  const LimitStats& conn = stats.at("conn");
  EXPECT_EQ(conn.burst, 2);
  EXPECT_DOUBLE_EQ(conn.in_use, 1);
  EXPECT_EQ(conn.rate.burst, 0);  // Not a rate limit.
}

}  // namespace
}  // namespace concurry

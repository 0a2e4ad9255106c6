// Tests that a kThreads LimitSet whose GCRA words and resource counts live in the hot line of its
// memory block (in front of the lock, instead of in their rate states) keeps every figure exact:
// takes, refunds, over-use charges and statistics, for the limits with a hot word and for those
// past the kHotWords that keep their rate state's word. On a FakeClock, so the numbers are exact.

#include <optional>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using testkit::FakeClock;

// 10 per second: one token every 100 ms, a full bucket of 10.
constexpr double kRate = 10;

class LimitSetHotWordsTest : public ::testing::Test {
 protected:
  LimitSetHotWordsTest() {
    LimitSetOptions options;
    options.clock = &clock_;
    options.on_warning = [](absl::string_view) {};
    // "a" and "b" and "connections" get the 3 hot words; "c" and "slots" keep theirs.
    set_ = LimitSet::Create({RateLimit("a", kRate, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                             RateLimit("b", kRate, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                             ResourceLimit("connections", 2),
                             RateLimit("c", kRate, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                             ResourceLimit("slots", 1)},
                            options);
  }

  absl::Time start() const { return FakeClock::DefaultStartTime(); }
  LimitStats At(absl::string_view key) { return set_.Stats().at(key); }

  FakeClock clock_;
  LimitSet set_;
};

TEST_F(LimitSetHotWordsTest, TakesRefundsAndChargesExactlyWithAndWithoutAHotWord) {
  {
    LimitAcquisition acquired = set_.Acquire({{"a", 3}, {"b", 4}, {"c", 5}});
    for (const char* key : {"a", "b", "c"}) {
      EXPECT_EQ(At(key).rate.theoretical_arrival,
                start() + absl::Milliseconds(100) * acquired.requested(key))
          << key;
    }
    EXPECT_EQ(At("a").in_use, 3);
    EXPECT_EQ(At("b").in_use, 4);
    EXPECT_EQ(At("c").in_use, 5);
    EXPECT_EQ(At("connections").in_use, 1);
    EXPECT_EQ(At("slots").in_use, 1);
    // a: 2 refunded; b: 6 charged beyond the request (10 in use); c: 5 refunded.
    acquired.Update({{"a", 1}, {"b", 10}, {"c", 0}});
    EXPECT_EQ(At("b").rate.theoretical_arrival, start() + absl::Seconds(1));
  }
  EXPECT_EQ(At("a").rate.theoretical_arrival, start() + absl::Milliseconds(100));
  EXPECT_EQ(At("a").in_use, 1);
  EXPECT_EQ(At("b").in_use, 10);
  EXPECT_EQ(At("c").in_use, 0);
  EXPECT_EQ(At("connections").in_use, 0);
  EXPECT_EQ(At("slots").in_use, 0);

  // b is full until its TAT comes within the tolerance; a and c are not.
  EXPECT_FALSE(set_.TryAcquire({{"a", 1}, {"b", 1}, {"c", 1}}).has_value());
  clock_.Advance(absl::Milliseconds(100));
  std::optional<LimitAcquisition> next = set_.TryAcquire({{"a", 1}, {"b", 1}, {"c", 1}});
  ASSERT_TRUE(next.has_value());
  next->Update({{"a", 1}, {"b", 1}, {"c", 1}});
  next->Release();
  EXPECT_EQ(At("a").rate.theoretical_arrival, start() + absl::Milliseconds(200));
  EXPECT_EQ(At("b").rate.theoretical_arrival, start() + absl::Milliseconds(1100));
  EXPECT_EQ(At("c").rate.theoretical_arrival, start() + absl::Milliseconds(200));
  EXPECT_EQ(set_.Stats().overuse_reports, 1);
}

TEST_F(LimitSetHotWordsTest, ResourceCountsWithAndWithoutAHotWordBlockAtTheirCapacity) {
  LimitAcquisition first = set_.Acquire({{"a", 1}, {"b", 1}, {"c", 1}});
  first.Update({{"a", 1}, {"b", 1}, {"c", 1}});
  // slots (1, no hot word) is used up; connections (2, a hot word) is not.
  EXPECT_FALSE(set_.TryAcquire({{"a", 1}, {"b", 1}, {"c", 1}}).has_value());
  std::optional<LimitAcquisition> second =
      set_.TryAcquire({{"a", 1}, {"b", 1}, {"c", 1}, {"slots", 0}});
  ASSERT_TRUE(second.has_value());
  second->Update({{"a", 1}, {"b", 1}, {"c", 1}});
  EXPECT_EQ(At("connections").in_use, 2);
  EXPECT_FALSE(set_.TryAcquire({{"a", 1}, {"b", 1}, {"c", 1}, {"slots", 0}}).has_value());
  second->Release();
  first.Release();
  EXPECT_EQ(At("connections").in_use, 0);
  EXPECT_EQ(At("slots").in_use, 0);
}

}  // namespace
}  // namespace concurry

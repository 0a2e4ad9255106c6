// Tests that a kThreads LimitSet whose GCRA words and resource counts live in the hot line of its
// memory block (in front of the lock, instead of in their rate states) keeps every figure exact:
// takes, refunds, over-use charges and statistics, for the limits with a hot word and for those
// past the kHotWords that keep their rate state's word. On a FakeClock, so the numbers are exact.

#include <cstddef>
#include <deque>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "limits/internal/set_access.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using limits_internal::SetAccess;
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

// The fixture's set really runs on hot words: the first three GCRA or resource limits keep their
// word on the lock's cache line, the others do not (every test above would pass with none).
TEST_F(LimitSetHotWordsTest, TheFirstThreeGcraOrResourceLimitsShareTheLocksLine) {
  EXPECT_TRUE(SetAccess::HasHotWord(set_, 0));   // a
  EXPECT_TRUE(SetAccess::HasHotWord(set_, 1));   // b
  EXPECT_TRUE(SetAccess::HasHotWord(set_, 2));   // connections
  EXPECT_FALSE(SetAccess::HasHotWord(set_, 3));  // c
  EXPECT_FALSE(SetAccess::HasHotWord(set_, 4));  // slots
}

TEST_F(LimitSetHotWordsTest, TokenBucketLimitsGetHotWordsAndWindowAlgorithmsDoNot) {
  const LimitSet set = LimitSet::Create(
      {RateLimit("w", kRate, absl::Seconds(1), RateLimitAlgorithm::kSlidingWindow),
       RateLimit("t", kRate, absl::Seconds(1), RateLimitAlgorithm::kTokenBucket),
       RateLimit("u", kRate, absl::Seconds(1), RateLimitAlgorithm::kGcra, {.burst = 3.5})});
  EXPECT_FALSE(SetAccess::HasHotWord(set, 0));
  EXPECT_TRUE(SetAccess::HasHotWord(set, 1));
  EXPECT_TRUE(SetAccess::HasHotWord(set, 2));
}

// A blocked Acquire() on a hot word waits exactly until the word admits it; so does an
// AcquireAsync() and a prepared request's.
TEST_F(LimitSetHotWordsTest, BlockedAcquisitionsOnAHotWordWakeExactlyWhenItAdmits) {
  LimitAcquisition all = set_.Acquire({{"a", 10}, {"b", 1}, {"c", 1}});
  all.Update({{"a", 10}, {"b", 1}, {"c", 1}});
  all.Release();
  // "a" is empty: one more unit in 100 ms.
  std::optional<LimitAcquisition> blocked;
  std::thread waiter([&] { blocked = set_.Acquire({{"a", 1}, {"b", 1}, {"c", 1}}); });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(100) - absl::Nanoseconds(1));
  EXPECT_EQ(clock_.NumWaiters(), 1);
  clock_.Advance(absl::Nanoseconds(1));
  waiter.join();
  ASSERT_TRUE(blocked.has_value() && blocked->held());
  blocked->Update({{"a", 1}, {"b", 1}, {"c", 1}});
  blocked->Release();
  EXPECT_EQ(At("a").rate.theoretical_arrival, start() + absl::Milliseconds(1100));

  Future<LimitAcquisition> future = set_.AcquireAsync({{"a", 2}, {"b", 1}, {"c", 1}});
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(200) - absl::Nanoseconds(1));
  // The helper is still parked on the clock (Advance() would have uncounted it had its wake-up
  // come due, and once it admits it does not wait on the clock again), so it has not completed
  // the future: checking Done() alone could miss an early admission still on its way.
  EXPECT_EQ(clock_.NumWaiters(), 1);
  EXPECT_FALSE(future.Done());
  clock_.Advance(absl::Nanoseconds(1));
  LimitAcquisition async = std::move(future).Result(absl::Seconds(60));
  EXPECT_EQ(async.requested("a"), 2);
  async.Update({{"a", 2}, {"b", 1}, {"c", 1}});
  async.Release();
  EXPECT_EQ(At("a").rate.theoretical_arrival, start() + absl::Milliseconds(1300));

  const PreparedLimitRequest prepared = set_.Prepare({{"a", 1}, {"b", 1}, {"c", 1}});
  EXPECT_FALSE(set_.TryAcquire(prepared).has_value());
  clock_.Advance(absl::Milliseconds(100));
  std::optional<LimitAcquisition> taken = set_.TryAcquire(prepared);
  ASSERT_TRUE(taken.has_value());
  taken->Update({{"a", 1}, {"b", 1}, {"c", 1}});
  taken->Release();
  EXPECT_EQ(At("a").rate.theoretical_arrival, start() + absl::Milliseconds(1400));
}

// The same random takes, usages (below and above the request), releases and clock steps on limit
// "x" with a hot word (first in its set) and without one (behind three resource limits): every
// decision and every figure agrees, for GCRA and TokenBucket, with the default and a fractional
// burst.
TEST(LimitSetHotWordsDifferentialTest, HotAndColdWordsDecideAlike) {
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kGcra, RateLimitAlgorithm::kTokenBucket}) {
    for (const std::optional<double> burst :
         {std::optional<double>(), std::optional<double>(3.5)}) {
      SCOPED_TRACE(absl::StrCat(RateLimitAlgorithmName(algorithm), " burst ", burst.value_or(0)));
      FakeClock clock;
      LimitSetOptions options;
      options.clock = &clock;
      options.on_warning = [](absl::string_view) {};
      const Limit x = RateLimit("x", 5, absl::Seconds(1), algorithm, {.burst = burst});
      const LimitSet hot = LimitSet::Create({x}, options);
      const LimitSet cold = LimitSet::Create(
          {ResourceLimit("r1", 100), ResourceLimit("r2", 100), ResourceLimit("r3", 100), x},
          options);
      ASSERT_TRUE(SetAccess::HasHotWord(hot, 0));
      ASSERT_FALSE(SetAccess::HasHotWord(cold, 3));
      std::deque<std::pair<LimitAcquisition, LimitAcquisition>> held;
      std::mt19937 random(11);
      for (int step = 0; step < 3000; ++step) {
        SCOPED_TRACE(step);
        switch (random() % 4) {
          case 0: {
            const double amount = 1 + random() % 3;
            std::optional<LimitAcquisition> a = hot.TryAcquire({{"x", amount}});
            std::optional<LimitAcquisition> b =
                cold.TryAcquire({{"x", amount}, {"r1", 0}, {"r2", 0}, {"r3", 0}});
            ASSERT_EQ(a.has_value(), b.has_value());
            if (a.has_value()) held.emplace_back(std::move(*a), std::move(*b));
            break;
          }
          case 1:
            if (!held.empty()) {
              auto& [a, b] = held.front();
              // 0 .. requested + 2: refunds and over-use charges.
              const double used =
                  static_cast<double>(random() % (static_cast<int>(a.requested("x")) + 3));
              a.Update({{"x", used}});
              b.Update({{"x", used}});
              a.Release();
              b.Release();
              held.pop_front();
            }
            break;
          case 2:
            clock.Advance(absl::Milliseconds(random() % 300));
            break;
          default: {
            const LimitStats a = hot.Stats().at("x");
            const LimitStats b = cold.Stats().at("x");
            ASSERT_EQ(a.rate.theoretical_arrival, b.rate.theoretical_arrival);
            ASSERT_EQ(a.in_use, b.in_use);
            ASSERT_EQ(a.available, b.available);
            break;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace concurry

// Stress tests for LimitSet's hot path: threads acquiring, updating and releasing the same set at
// once. The rate states are driven with plain loads and stores under the set's lock (no
// compare-exchange), so a lost update would show up here as a count that is off. The clock is a
// frozen FakeClock, which makes every expected figure exact. Run under --config=tsan in CI (tag
// "stress").

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

using testkit::FakeClock;
using testkit::TestConcurrent;

constexpr int kThreads = 4;
constexpr int kIterations = 200;
constexpr int kCallsPerWindow = 50;
constexpr int kConnections = 3;

LimitSet MakeSet(FakeClock& clock) {
  LimitSetOptions options;
  options.clock = &clock;
  return LimitSet::Create({RateLimit("tokens", 1'000, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                           CallLimit(kCallsPerWindow, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                           ResourceLimit("connections", kConnections)},
                          options);
}

// With time frozen, the call limit admits exactly its capacity however the threads interleave,
// and the resource limit is never exceeded nor left held.
TEST(LimitSetStressTest, FrozenTimeAdmitsExactlyTheCapacityAndReturnsEveryConnection) {
  FakeClock clock;
  std::optional<LimitSet> set;
  std::atomic<int> admitted{0};
  std::atomic<int> holding{0};
  std::atomic<int> most_held{0};
  TestConcurrent(
      kThreads, kIterations,
      [&] {
        set = MakeSet(clock);
        admitted.store(0);
        most_held.store(0);
      },
      [&](int) {
        for (int i = 0; i < 2 * kCallsPerWindow; ++i) {
          std::optional<LimitAcquisition> taken = set->TryAcquire({{"tokens", 2}});
          if (!taken.has_value()) continue;
          const int now_held = holding.fetch_add(1) + 1;
          int seen = most_held.load();
          while (now_held > seen && !most_held.compare_exchange_weak(seen, now_held)) {
          }
          admitted.fetch_add(1);
          taken->Update({{"tokens", 2}});
          holding.fetch_sub(1);
          taken->Release();
        }
      },
      [&] {
        EXPECT_EQ(admitted.load(), kCallsPerWindow);
        EXPECT_LE(most_held.load(), kConnections);
        const LimitSetStats stats = set->Stats();
        EXPECT_EQ(stats.at("connections").in_use, 0);
        EXPECT_EQ(stats.holding, 0);
        EXPECT_EQ(stats.acquisitions, kCallsPerWindow);
      });
}

// Every acquisition reports nothing used, so every token comes back: with time frozen, the bucket
// is full again once all are released, whatever the interleaving of takes and refunds.
TEST(LimitSetStressTest, RefundsRacingTakesLeaveTheBucketFull) {
  FakeClock clock;
  std::optional<LimitSet> set;
  std::atomic<int> admitted{0};
  TestConcurrent(
      kThreads, kIterations,
      [&] {
        set = MakeSet(clock);
        admitted.store(0);
      },
      [&](int) {
        for (int i = 0; i < 20; ++i) {
          std::optional<LimitAcquisition> taken = set->TryAcquire({{"tokens", 100}});
          if (!taken.has_value()) continue;
          admitted.fetch_add(1);
          taken->Update({{"tokens", 0}});
          taken->Release();
        }
      },
      [&] {
        EXPECT_GT(admitted.load(), 0);
        EXPECT_EQ(set->Stats().at("tokens").available, 1'000);
        EXPECT_EQ(set->Stats().at("tokens").in_use, 0);
      });
}

// Acquisitions of a kThreads set keep it alive by being counted in it under its lock, not through
// the handles' reference count. Here the last handle goes while other threads still acquire,
// release and destroy acquisitions (with and without an explicit Release()): the set must be
// destroyed exactly once, after the last of them (a sentinel in its options shows when).
TEST(LimitSetStressTest, LastHandleAndLastAcquisitionRaceToDestroyTheSetOnce) {
  std::optional<LimitSet> set;
  std::weak_ptr<int> alive;
  std::vector<std::optional<LimitSet>> handles(kThreads);
  TestConcurrent(
      kThreads, kIterations,
      [&] {
        auto sentinel = std::make_shared<int>(0);
        alive = sentinel;
        LimitSetOptions options;
        options.on_warning = [sentinel](absl::string_view) {};
        set =
            LimitSet::Create({RateLimit("tokens", 1e9, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                              ResourceLimit("connections", kThreads)},
                             std::move(options));
        for (std::optional<LimitSet>& handle : handles) handle = *set;
        set.reset();
      },
      [&](int thread) {
        std::optional<LimitAcquisition> kept;
        for (int i = 0; i < 4; ++i) {
          LimitAcquisition taken = handles[thread]->Acquire({{"tokens", 1}});
          taken.Update({{"tokens", 1}});
          if (i % 2 == 0) taken.Release();
          if (i == 3) kept = std::move(taken);
        }
        handles[thread].reset();  // Some thread drops the last handle while others acquire.
        if (thread % 2 == 0) kept->Release();
        EXPECT_EQ(kept->charges().size(), 2u);  // The set's definitions are still there.
        kept.reset();
      },
      [&] { EXPECT_TRUE(alive.expired()); });
}

// A release that wakes a waiter while that waiter times out and drops the last handle: the
// release keeps the set alive (counted) until its wake-up is done, whoever ends up destroying
// the set. Under --config=tsan or asan-ubsan, a wake-up after the count was dropped shows as a
// race with, or a use after, the waiter's destruction of the set.
TEST(LimitSetStressTest, AWakeUpOutlivesAWaiterThatDropsTheLastHandle) {
  std::unique_ptr<FakeClock> clock;
  std::optional<LimitSet> waiter_handle;
  std::optional<LimitAcquisition> held;
  std::weak_ptr<int> alive;
  std::atomic<int> timeouts{0};
  TestConcurrent(
      kIterations,
      [&] {
        clock = std::make_unique<FakeClock>();
        auto sentinel = std::make_shared<int>(0);
        alive = sentinel;
        LimitSetOptions options;
        options.clock = clock.get();
        options.on_warning = [sentinel](absl::string_view) {};
        const LimitSet set =
            LimitSet::Create({RateLimit("tokens", 10, absl::Hours(1), RateLimitAlgorithm::kGcra)},
                             std::move(options));
        held = set.Acquire({{"tokens", 10}});
        held->Update({{"tokens", 5}});  // Its release refunds 5: never the 10 the waiter wants.
        waiter_handle = set;
      },
      [&] {
        EXPECT_TRUE(alive.expired());
        clock.reset();
      },
      {[&] {
         try {
           waiter_handle->Acquire({{"tokens", 10}}, absl::Seconds(1));
           ADD_FAILURE() << "acquired more than was ever available";
         } catch (const TimeoutError&) {
           timeouts.fetch_add(1, std::memory_order_relaxed);
         }
         waiter_handle.reset();  // The last handle, unless the release is still under way.
       },
       [&] {
         clock->BlockUntilWaiters(1);
         clock->Advance(absl::Seconds(1));  // The waiter's deadline.
         held.reset();                      // Wakes the waiter unless it already left.
       }});
  EXPECT_EQ(timeouts.load(), kIterations);
}

}  // namespace
}  // namespace concurry

// Tests for LimitSet::Prepare() and LimitSet::Handle() (requests and limits resolved once), and
// for how long a set lives when only acquisitions refer to it.

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
using testkit::FakeClock;

LimitSet MakeSet(LimitSetOptions options = {}) {
  return LimitSet::Create(
      {RateLimit("tokens", 100, absl::Seconds(1), RateLimitAlgorithm::kGcra),
       CallLimit(10, absl::Seconds(1), RateLimitAlgorithm::kGcra), ResourceLimit("connections", 2)},
      std::move(options));
}

TEST(LimitSetPreparedTest, AcquiresWhatTheSameRequestWouldTake) {
  const LimitSet set = MakeSet();
  const PreparedLimitRequest ten = set.Prepare({{"tokens", 10}});
  const LimitHandle tokens = set.Handle("tokens");
  {
    LimitAcquisition acquired = set.Acquire(ten);
    EXPECT_EQ(acquired.requested("tokens"), 10);
    EXPECT_EQ(acquired.requested("call_count"), 1);
    EXPECT_EQ(acquired.requested("connections"), 1);
    acquired.Update(tokens, 4);
    acquired.Release();
    const std::optional<LimitCharge> charge = acquired.charge("tokens");
    ASSERT_TRUE(charge.has_value());
    EXPECT_TRUE(charge->updated);
    EXPECT_EQ(charge->used, 4);
    EXPECT_EQ(charge->refunded, 6);
  }
  std::optional<LimitAcquisition> tried = set.TryAcquire(ten);
  ASSERT_TRUE(tried.has_value());
  tried->Update(tokens, 10);
  Future<LimitAcquisition> future = set.AcquireAsync(ten, absl::Seconds(5));
  LimitAcquisition async = std::move(future).Result();
  EXPECT_EQ(async.requested("tokens"), 10);
  async.Update({{"tokens", 10}});
  EXPECT_EQ(set.Stats().holding, 2);
}

TEST(LimitSetPreparedTest, NestedAndEmptyRequestsKeepTheirMeaning) {
  const LimitSet set = LimitSet::Create({ResourceLimit("connections", 1)});
  LimitAcquisition outer = set.Acquire(set.Prepare());
  EXPECT_EQ(outer.requested("connections"), 1);
  // A request naming the held limit with 0 takes nothing of it.
  LimitAcquisition inner = set.Acquire(set.Prepare({{"connections", 0}}), absl::ZeroDuration());
  EXPECT_TRUE(inner.held());
  EXPECT_EQ(inner.requested("connections"), 0);
  EXPECT_FALSE(set.TryAcquire(set.Prepare()).has_value());
}

TEST(LimitSetPreparedTest, PrepareRejectsWhatAcquireRejects) {
  const LimitSet set = MakeSet();
  EXPECT_THAT(
      [&] {
        set.Prepare({{"nope", 1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("unknown limit key 'nope'")));
  EXPECT_THAT(
      [&] {
        set.Prepare({{"tokens", -1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("must be >= 0 and finite")));
  EXPECT_THAT(
      [&] {
        set.Prepare({{"tokens", 1000}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("can never be fulfilled")));
  EXPECT_THAT(
      [&] {
        set.Prepare({{"tokens", 1}, {"tokens", 2}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("appears twice")));
  EXPECT_THAT([&] { set.Prepare(); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("Must specify requested amount")));
  EXPECT_THAT([&] { set.Handle("nope"); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("no limit 'nope'")));
  EXPECT_THAT([&] { LimitSet::NoOp().Handle("tokens"); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("no limits")));
}

TEST(LimitSetPreparedTest, ARequestOrHandleOfAnotherSetIsAnError) {
  const LimitSet set = MakeSet();
  const LimitSet other = MakeSet();
  const PreparedLimitRequest theirs = other.Prepare({{"tokens", 1}});
  EXPECT_THAT([&] { set.Acquire(theirs); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("prepared by another LimitSet")));
  EXPECT_THAT([&] { set.TryAcquire(theirs); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("prepared by another LimitSet")));
  EXPECT_THAT([&] { set.AcquireAsync(theirs); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("prepared by another LimitSet")));
  EXPECT_EQ(set.Stats().acquisitions, 0);
  // A copy of the handle is the same set.
  const LimitSet copy = set;
  EXPECT_TRUE(copy.TryAcquire(set.Prepare({{"tokens", 1}})).has_value());

  LimitAcquisition acquired = set.Acquire({{"tokens", 2}});
  EXPECT_THAT([&] { acquired.Update(other.Handle("tokens"), 1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("belongs to another LimitSet")));
  EXPECT_THAT([&] { acquired.Update(LimitHandle(), 1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("an empty LimitHandle")));
  EXPECT_FALSE(acquired.charge("tokens")->updated);
  acquired.Update({{"tokens", 2}});
}

TEST(LimitSetPreparedTest, UpdateByHandleChecksAsUpdateByKey) {
  const LimitSet set = MakeSet();
  LimitAcquisition acquired = set.Acquire({{"tokens", 5}, {"connections", 0}});
  EXPECT_THAT([&] { acquired.Update(set.Handle("connections"), 1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("not part of this acquisition")));
  EXPECT_THAT([&] { acquired.Update(set.Handle("tokens"), -1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("must be >= 0 and finite")));
  EXPECT_THAT([&] { acquired.Update(set.Handle("call_count"), 2); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("CallLimit usage must be 1")));
  EXPECT_FALSE(acquired.charge("tokens")->updated);
  acquired.Update(set.Handle("tokens"), 5);
  acquired.Release();
  EXPECT_THAT([&] { acquired.Update(set.Handle("tokens"), 5); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("already released")));
}

TEST(LimitSetPreparedTest, UpdateByHandleChargesOveruse) {
  std::string warning;
  LimitSetOptions options;
  options.on_warning = [&](absl::string_view message) { warning = std::string(message); };
  const LimitSet set = MakeSet(std::move(options));
  LimitAcquisition acquired = set.Acquire({{"tokens", 5}});
  acquired.Update(set.Handle("tokens"), 8);
  EXPECT_THAT(warning, HasSubstr("'tokens' used 8 of 5 requested"));
  EXPECT_EQ(acquired.charge("tokens")->charged, 8);
  EXPECT_EQ(set.Stats().overuse_reports, 1);
}

// The set lives while an acquisition does, also when every handle is gone (acquisitions are
// counted in the set rather than holding a handle). A sentinel in the options shows when the set
// is destroyed.
TEST(LimitSetLifetimeTest, AcquisitionsKeepTheSetAliveAfterTheLastHandle) {
  for (const bool release_first : {false, true}) {
    auto sentinel = std::make_shared<int>(0);
    std::weak_ptr<int> alive = sentinel;
    LimitSetOptions options;
    options.on_warning = [sentinel](absl::string_view) {};
    sentinel.reset();
    std::optional<LimitSet> set = MakeSet(std::move(options));
    std::optional<LimitAcquisition> first = set->Acquire({{"tokens", 1}});
    std::optional<LimitAcquisition> second = set->TryAcquire({{"tokens", 1}});
    ASSERT_TRUE(second.has_value());
    set.reset();
    EXPECT_FALSE(alive.expired());
    first->Update({{"tokens", 1}});
    if (release_first) first->Release();
    first.reset();
    EXPECT_FALSE(alive.expired());
    second->Update({{"tokens", 1}});
    if (release_first) second->Release();
    EXPECT_FALSE(alive.expired());
    // Moving keeps the one reference.
    LimitAcquisition moved = std::move(*second);
    second.reset();
    EXPECT_FALSE(alive.expired());
    EXPECT_EQ(moved.charges().size(), 3u);
    EXPECT_EQ(moved.charges()[0].key, "tokens");
    moved = LimitAcquisition();
    EXPECT_TRUE(alive.expired());
  }
}

TEST(LimitSetLifetimeTest, AnAsyncAcquisitionKeepsTheSetAlive) {
  auto sentinel = std::make_shared<int>(0);
  std::weak_ptr<int> alive = sentinel;
  LimitSetOptions options;
  options.on_warning = [sentinel](absl::string_view) {};
  sentinel.reset();
  std::optional<LimitSet> set = MakeSet(std::move(options));
  LimitAcquisition acquired = set->AcquireAsync({{"tokens", 1}}).Result();
  set.reset();
  EXPECT_FALSE(alive.expired());
  acquired.Update({{"tokens", 1}});
  acquired.Release();
  EXPECT_FALSE(alive.expired());
  acquired = LimitAcquisition();
  EXPECT_TRUE(alive.expired());
}

// State of the blocking warning sink below. Global, not captured: on a failure the set (and with
// it the sink's captures) is destroyed while the sink runs.
struct SinkGate {
  absl::Notification entered;
  absl::Notification handle_gone;
  std::weak_ptr<int> alive;
  bool alive_inside = false;
};
SinkGate* sink_gate = nullptr;

// The release of an acquisition without Update() reports it through the warning sink after the
// set's lock is released. Meanwhile the last handle goes (from the test thread, or from a waiter
// that times out after the release woke it): the set must stay alive until the release is done
// with it, and go afterwards.
TEST(LimitSetLifetimeTest, AWarningOutlivesTheLastHandle) {
  for (const bool waiter : {false, true}) {
    SCOPED_TRACE(waiter ? "with a waiter" : "without a waiter");
    SinkGate gate;
    sink_gate = &gate;
    FakeClock clock;
    auto sentinel = std::make_shared<int>(0);
    gate.alive = sentinel;
    LimitSetOptions options;
    options.clock = &clock;
    options.on_warning = [sentinel](absl::string_view) {
      sink_gate->entered.Notify();
      sink_gate->handle_gone.WaitForNotification();
      sink_gate->alive_inside = !sink_gate->alive.expired();
    };
    sentinel.reset();
    std::optional<LimitSet> set = MakeSet(std::move(options));
    // Both connections, so that a waiter waits; no Update(): the release warns.
    std::optional<LimitAcquisition> acquired = set->Acquire({{"tokens", 5}, {"connections", 2}});
    std::thread waiting;
    if (waiter) {
      waiting = std::thread([handle = *set]() mutable {
        // The release gives back the connections but not the 100 tokens: it wakes this waiter,
        // which then times out.
        EXPECT_THROW(handle.Acquire({{"tokens", 100}}, absl::Milliseconds(10)), TimeoutError);
        handle = LimitSet();  // The last handle of the set.
      });
      clock.BlockUntilWaiters(1);
    }
    std::thread releaser([&acquired] { acquired.reset(); });
    gate.entered.WaitForNotification();
    set.reset();
    if (waiter) {
      clock.Advance(absl::Milliseconds(10));
      waiting.join();
    }
    gate.handle_gone.Notify();
    releaser.join();
    EXPECT_TRUE(gate.alive_inside);
    EXPECT_TRUE(gate.alive.expired());
    sink_gate = nullptr;
  }
}

// A pending AcquireAsync() keeps the set alive also when the only other thing that does is a
// counted acquisition: its helper thread holds on to the set from one round to the next.
TEST(LimitSetLifetimeTest, APendingAsyncRequestOutlivesTheLastHandle) {
  std::optional<LimitSet> set = LimitSet::Create({ResourceLimit("c", 1), ResourceLimit("d", 2)});
  std::optional<LimitAcquisition> keep = set->Acquire({{"d", 1}, {"c", 0}});
  std::optional<LimitAcquisition> first = set->Acquire({{"c", 1}});
  Future<LimitAcquisition> second = set->AcquireAsync({{"c", 1}});
  set.reset();
  first.reset();  // Lets the pending request through.
  LimitAcquisition got = std::move(second).Result();
  EXPECT_TRUE(got.held());
  EXPECT_EQ(got.requested("c"), 1);
}

}  // namespace
}  // namespace concurry

#include "sync/gather.h"

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/outcome.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

struct ErrorA : std::runtime_error {
  ErrorA() : std::runtime_error("A") {}
};
struct ErrorB : std::runtime_error {
  ErrorB() : std::runtime_error("B") {}
};

// Returns the message of the InvalidOptionError / TimeoutError that `fn` throws.
template <typename E, typename F>
std::string MessageOf(F fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "no error";
}

TEST(GatherTest, ReturnsValuesInInputOrderWhateverTheCompletionOrder) {
  std::vector<Promise<int>> promises(3);
  std::vector<Future<int>> futures;
  for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
  std::thread producer([&] {
    for (int i = 2; i >= 0; --i) promises[i].SetValue(i * 10);
  });
  EXPECT_THAT(Gather(std::move(futures)), ElementsAre(0, 10, 20));
  producer.join();
}

TEST(GatherTest, MovesValuesOutOfAnRvalueVector) {
  std::vector<Future<std::unique_ptr<int>>> futures;
  futures.push_back(MakeReadyFuture(std::make_unique<int>(1)));
  futures.push_back(MakeReadyFuture(std::make_unique<int>(2)));
  std::vector<std::unique_ptr<int>> values = Gather(std::move(futures));
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(*values[1], 2);
}

TEST(GatherTest, CopiesValuesOfAnLvalueVector) {
  const std::vector<Future<std::string>> futures = {MakeReadyFuture(std::string("a")),
                                                    MakeReadyFuture(std::string("b"))};
  EXPECT_THAT(Gather(futures), ElementsAre("a", "b"));
  EXPECT_EQ(futures[0].Result(), "a");  // Still there.
}

TEST(GatherTest, EmptyInputGivesAnEmptyResult) {
  EXPECT_THAT(Gather(std::vector<Future<int>>()), IsEmpty());
  EXPECT_THAT(Gather(std::map<int, Future<int>>()), IsEmpty());
  EXPECT_THAT(GatherSettled(std::vector<Future<int>>()), IsEmpty());
}

TEST(GatherTest, RethrowsTheFirstFailureInInputOrderWithItsOriginalType) {
  Promise<int> a;
  Promise<int> b;
  std::vector<Future<int>> futures = {MakeReadyFuture(0), a.GetFuture(), b.GetFuture()};
  std::thread producer([&] {
    b.SetError(std::make_exception_ptr(ErrorB()));  // Fails first in time...
    a.SetError(std::make_exception_ptr(ErrorA()));  // ...but this one is first in input order.
  });
  EXPECT_THROW(Gather(std::move(futures)), ErrorA);
  producer.join();
}

TEST(GatherTest, RethrowsCancellation) {
  Promise<int> promise;
  Future<int> future = promise.GetFuture();
  future.Cancel();
  EXPECT_THROW(Gather(std::vector<Future<int>>{future}), CancelledError);
}

TEST(GatherTest, VoidFuturesOnlyWaitAndRethrow) {
  static_assert(std::is_void_v<decltype(Gather(std::vector<Future<void>>()))>);
  Gather(std::vector<Future<void>>{MakeReadyFuture(), MakeReadyFuture()});
  EXPECT_THROW(
      Gather(std::vector<Future<void>>{MakeReadyFuture(), MakeFailedFuture<void>(ErrorA())}),
      ErrorA);
  EXPECT_THROW(Gather(std::map<int, Future<void>>{{1, MakeFailedFuture<void>(ErrorB())}}), ErrorB);
}

TEST(GatherTest, MapKeepsKeysAndContainerType) {
  std::map<std::string, Future<int>> futures = {{"x", MakeReadyFuture(1)},
                                                {"y", MakeReadyFuture(2)}};
  std::map<std::string, int> values = Gather(std::move(futures));
  EXPECT_THAT(values, ElementsAre(Pair("x", 1), Pair("y", 2)));
}

TEST(GatherTest, FlatHashMapKeepsKeysAndContainerType) {
  Promise<std::string> promise;
  absl::flat_hash_map<int, Future<std::string>> futures;
  futures[1] = MakeReadyFuture(std::string("one"));
  futures[2] = promise.GetFuture();
  std::thread producer([&] { promise.SetValue("two"); });
  absl::flat_hash_map<int, std::string> values = Gather(std::move(futures));
  producer.join();
  EXPECT_THAT(values, UnorderedElementsAre(Pair(1, "one"), Pair(2, "two")));
}

TEST(GatherTest, TupleOfMixedTypesIncludingVoid) {
  Promise<std::string> text;
  std::thread producer([&] { text.SetValue("hi"); });
  auto [number, greeting, nothing] =
      Gather(MakeReadyFuture(7), text.GetFuture(), MakeReadyFuture());
  producer.join();
  EXPECT_EQ(number, 7);
  EXPECT_EQ(greeting, "hi");
  static_assert(std::is_same_v<decltype(nothing), std::monostate>);

  std::tuple<int, double> values =
      Gather(std::tuple(MakeReadyFuture(1), MakeReadyFuture(2.5)), {.timeout = absl::Seconds(1)});
  EXPECT_EQ(values, std::make_tuple(1, 2.5));
}

TEST(GatherTest, TupleRethrowsTheFirstFailureInInputOrder) {
  EXPECT_THROW(Gather(MakeReadyFuture(1), MakeFailedFuture<void>(ErrorA()),
                      MakeFailedFuture<std::string>(ErrorB())),
               ErrorA);
}

TEST(GatherTest, TimesOutOnTheInjectedClockNamingHowManyCompleted) {
  testkit::FakeClock clock;
  Promise<int> pending1;
  Promise<int> pending2;
  std::vector<Future<int>> futures = {MakeReadyFuture(1), pending1.GetFuture(),
                                      pending2.GetFuture()};
  std::string message;
  std::thread gatherer([&] {
    message = MessageOf<TimeoutError>(
        [&] { Gather(futures, {.timeout = absl::Milliseconds(10), .clock = &clock}); });
  });
  clock.BlockUntilWaiters(1);
  pending2.SetValue(2);
  clock.Advance(absl::Milliseconds(9));
  EXPECT_EQ(clock.NumWaiters(), 1);
  clock.Advance(absl::Milliseconds(1));
  gatherer.join();
  EXPECT_THAT(message, HasSubstr("Gather: timed out after 10ms; 2 of 3 futures completed"));
}

TEST(GatherTest, ATimeoutCancelsThePendingFuturesOnlyWhenAsked) {
  Promise<int> pending;
  std::vector<Future<int>> futures = {MakeReadyFuture(1), pending.GetFuture()};
  EXPECT_THROW(Gather(futures, {.timeout = absl::ZeroDuration()}), TimeoutError);
  EXPECT_FALSE(pending.IsCancelled());  // By default a timeout leaves them running.
  EXPECT_THROW(
      GatherSettled(futures, {.timeout = absl::ZeroDuration(), .cancel_pending_on_timeout = true}),
      TimeoutError);
  EXPECT_TRUE(pending.IsCancelled());
}

TEST(GatherTest, RejectsBadInputBeforeWaiting) {
  Promise<int> pending;  // Would block forever if Gather waited before checking.
  EXPECT_THAT(MessageOf<InvalidOptionError>([&] {
                Gather(std::vector<Future<int>>{pending.GetFuture(), MakeReadyFuture(1), {}});
              }),
              HasSubstr("Gather: future at index 2 is invalid"));
  EXPECT_THAT(
      MessageOf<InvalidOptionError>([&] {
        GatherSettled(std::map<std::string, Future<int>>{{"a", pending.GetFuture()}, {"b", {}}});
      }),
      HasSubstr("GatherSettled: future at key \"b\" is invalid"));
  EXPECT_THAT(MessageOf<InvalidOptionError>(
                  [&] { Gather(std::tuple(pending.GetFuture(), Future<std::string>())); }),
              HasSubstr("Gather: future at index 1 is invalid"));
  EXPECT_THAT(MessageOf<InvalidOptionError>([&] {
                Gather(std::vector<Future<int>>{pending.GetFuture()},
                       {.timeout = absl::Seconds(-1)});
              }),
              HasSubstr("Gather: timeout must be >= 0"));
}

TEST(GatherTest, ReportsProgressEvenWhenEverythingIsReady) {
  int64_t last = -1;
  Gather(std::vector<Future<int>>{MakeReadyFuture(1), MakeReadyFuture(2)},
         {.progress = {.callback = [&](int64_t completed, int64_t total, absl::Duration) {
            EXPECT_EQ(total, 2);
            last = completed;
          }}});
  EXPECT_EQ(last, 2);
}

TEST(GatherSettledTest, KeepsEachOutcomeInItsSlot) {
  std::vector<Outcome<int>> outcomes = GatherSettled(std::vector<Future<int>>{
      MakeReadyFuture(1), MakeFailedFuture<int>(ErrorA()), MakeFailedFuture<int>(ErrorB())});
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_EQ(outcomes[0].value(), 1);
  EXPECT_THROW(outcomes[1].value(), ErrorA);
  EXPECT_THROW(outcomes[2].value(), ErrorB);
  EXPECT_EQ(outcomes[2].status().code(), absl::StatusCode::kUnknown);
}

TEST(GatherSettledTest, MapAndTupleForms) {
  std::map<std::string, Outcome<int>> by_key = GatherSettled(std::map<std::string, Future<int>>{
      {"ok", MakeReadyFuture(1)}, {"bad", MakeFailedFuture<int>(absl::NotFoundError("gone"))}});
  EXPECT_EQ(by_key.at("ok").value(), 1);
  EXPECT_EQ(by_key.at("bad").status(), absl::NotFoundError("gone"));

  auto [number, nothing] = GatherSettled(MakeReadyFuture(1), MakeFailedFuture<void>(ErrorA()));
  EXPECT_EQ(number.value(), 1);
  EXPECT_THROW(nothing.value(), ErrorA);
}

TEST(GatherSettledTest, StillTimesOut) {
  Promise<int> pending;
  EXPECT_THAT(MessageOf<TimeoutError>([&] {
                GatherSettled(std::vector<Future<int>>{pending.GetFuture()},
                              {.timeout = absl::ZeroDuration()});
              }),
              HasSubstr("GatherSettled: timed out after 0; 0 of 1 futures completed"));
}

}  // namespace
}  // namespace concurry

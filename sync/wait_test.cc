#include "sync/wait.h"

#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/marshalling.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/live_allocations.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

struct CustomError : std::runtime_error {
  CustomError() : std::runtime_error("custom") {}
};

// Runs Wait on another thread; Get() joins and returns its result.
class AsyncWait {
 public:
  AsyncWait(std::vector<Future<int>> futures, WaitOptions options)
      : futures_(std::move(futures)), thread_([this, options = std::move(options)] {
          result_ = Wait(futures_, options);
          returned_.Notify();
        }) {}
  ~AsyncWait() {
    if (thread_.joinable()) thread_.join();
  }
  bool returned() const { return returned_.HasBeenNotified(); }
  WaitResult Get() {
    thread_.join();
    return result_;
  }

 private:
  const std::vector<Future<int>> futures_;
  WaitResult result_;
  absl::Notification returned_;
  std::thread thread_;
};

std::vector<Future<int>> FuturesOf(std::vector<Promise<int>>& promises) {
  std::vector<Future<int>> futures;
  for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
  return futures;
}

TEST(ReturnWhenTest, ParsesConcurryStringsAndAliasesCaseInsensitively) {
  const std::pair<const char*, ReturnWhen> cases[] = {
      {"all", ReturnWhen::kAllCompleted},
      {"all_completed", ReturnWhen::kAllCompleted},
      {"ALL_COMPLETED", ReturnWhen::kAllCompleted},
      {"first", ReturnWhen::kFirstCompleted},
      {"First_Completed", ReturnWhen::kFirstCompleted},
      {"exception", ReturnWhen::kFirstException},
      {"FIRST_EXCEPTION", ReturnWhen::kFirstException},
  };
  for (const auto& [text, expected] : cases) {
    ReturnWhen parsed;
    std::string error;
    EXPECT_TRUE(absl::ParseFlag(text, &parsed, &error)) << text;
    EXPECT_EQ(parsed, expected) << text;
  }
  ReturnWhen parsed;
  std::string error;
  EXPECT_FALSE(absl::ParseFlag("sometimes", &parsed, &error));
  EXPECT_THAT(error, HasSubstr("first_exception"));
}

TEST(ReturnWhenTest, UnparsesToCanonicalStringsThatParseBack) {
  for (ReturnWhen when :
       {ReturnWhen::kAllCompleted, ReturnWhen::kFirstCompleted, ReturnWhen::kFirstException}) {
    ReturnWhen parsed;
    std::string error;
    ASSERT_TRUE(absl::ParseFlag(absl::UnparseFlag(when), &parsed, &error));
    EXPECT_EQ(parsed, when);
  }
  EXPECT_EQ(absl::UnparseFlag(ReturnWhen::kFirstCompleted), "first_completed");
}

TEST(WaitTest, EmptyInputReturnsAtOnce) {
  for (ReturnWhen when :
       {ReturnWhen::kAllCompleted, ReturnWhen::kFirstCompleted, ReturnWhen::kFirstException}) {
    const WaitResult result = Wait(std::vector<Future<int>>(), {.return_when = when});
    EXPECT_THAT(result.done, IsEmpty());
    EXPECT_THAT(result.not_done, IsEmpty());
    EXPECT_FALSE(result.timed_out);
  }
}

TEST(WaitTest, AllCompletedReturnsWhenEveryFutureIsDone) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(3);
  AsyncWait wait(FuturesOf(promises), {.clock = &clock});
  clock.BlockUntilWaiters(1);
  promises[2].SetValue(2);
  promises[0].SetError(std::make_exception_ptr(CustomError()));
  promises[1].SetValue(1);
  const WaitResult result = wait.Get();
  EXPECT_THAT(result.done, ElementsAre(0, 1, 2));
  EXPECT_THAT(result.not_done, IsEmpty());
  EXPECT_FALSE(result.timed_out);
}

TEST(WaitTest, AllCompletedDoesNotReturnBeforeTheLastCompletion) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(2);
  AsyncWait wait(FuturesOf(promises), {.timeout = absl::Milliseconds(10), .clock = &clock});
  clock.BlockUntilWaiters(1);
  promises[1].SetValue(1);
  clock.Advance(absl::Milliseconds(10));  // Times out: one completion was not enough.
  const WaitResult result = wait.Get();
  EXPECT_THAT(result.done, ElementsAre(1));
  EXPECT_THAT(result.not_done, ElementsAre(0));
  EXPECT_TRUE(result.timed_out);
}

TEST(WaitTest, FirstCompletedReturnsAtTheFirstCompletion) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(3);
  AsyncWait wait(FuturesOf(promises),
                 {.return_when = ReturnWhen::kFirstCompleted, .clock = &clock});
  clock.BlockUntilWaiters(1);
  promises[1].SetValue(1);
  const WaitResult result = wait.Get();
  EXPECT_THAT(result.done, ElementsAre(1));
  EXPECT_THAT(result.not_done, ElementsAre(0, 2));
  EXPECT_FALSE(result.timed_out);
}

TEST(WaitTest, FirstCompletedWithADoneFutureDoesNotBlock) {
  Promise<int> pending;
  const WaitResult result =
      Wait({pending.GetFuture(), MakeReadyFuture(1)}, {.return_when = ReturnWhen::kFirstCompleted});
  EXPECT_THAT(result.done, ElementsAre(1));
  EXPECT_THAT(result.not_done, ElementsAre(0));
}

TEST(WaitTest, FirstExceptionReturnsAtTheFirstFailure) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(3);
  AsyncWait wait(FuturesOf(promises),
                 {.return_when = ReturnWhen::kFirstException, .clock = &clock});
  clock.BlockUntilWaiters(1);
  promises[0].SetValue(0);  // A value does not satisfy FIRST_EXCEPTION.
  promises[2].SetError(std::make_exception_ptr(CustomError()));
  const WaitResult result = wait.Get();
  EXPECT_THAT(result.done, ElementsAre(0, 2));
  EXPECT_THAT(result.not_done, ElementsAre(1));
  EXPECT_FALSE(result.timed_out);
}

TEST(WaitTest, FirstExceptionCountsCancellationAsFailure) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(2);
  std::vector<Future<int>> futures = FuturesOf(promises);
  AsyncWait wait(futures, {.return_when = ReturnWhen::kFirstException, .clock = &clock});
  clock.BlockUntilWaiters(1);
  futures[1].Cancel();
  const WaitResult result = wait.Get();
  EXPECT_THAT(result.done, ElementsAre(1));
  EXPECT_THAT(result.not_done, ElementsAre(0));
}

// concurry's wait(FIRST_EXCEPTION) hangs until its timeout when nothing fails (its bug 10).
TEST(WaitTest, FirstExceptionReturnsWhenAllSucceed) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(2);
  AsyncWait wait(FuturesOf(promises),
                 {.return_when = ReturnWhen::kFirstException, .clock = &clock});
  clock.BlockUntilWaiters(1);
  promises[0].SetValue(0);
  promises[1].SetValue(1);
  const WaitResult result = wait.Get();
  EXPECT_THAT(result.done, ElementsAre(0, 1));
  EXPECT_FALSE(result.timed_out);
  // And without blocking when they already succeeded.
  EXPECT_FALSE(
      Wait({MakeReadyFuture(1), MakeReadyFuture()}, {.return_when = ReturnWhen::kFirstException})
          .timed_out);
}

TEST(WaitTest, TimesOutExactlyAtTheTimeoutOnTheInjectedClock) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(2);
  AsyncWait wait(FuturesOf(promises), {.timeout = absl::Milliseconds(10), .clock = &clock});
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Milliseconds(9));
  EXPECT_EQ(clock.NumWaiters(), 1);
  EXPECT_FALSE(wait.returned());
  clock.Advance(absl::Milliseconds(1));
  const WaitResult result = wait.Get();
  EXPECT_TRUE(result.timed_out);
  EXPECT_THAT(result.done, IsEmpty());
  EXPECT_THAT(result.not_done, ElementsAre(0, 1));
}

TEST(WaitTest, ZeroTimeoutChecksWithoutBlocking) {
  Promise<int> pending;
  const WaitResult result =
      Wait({MakeReadyFuture(1), pending.GetFuture()}, {.timeout = absl::ZeroDuration()});
  EXPECT_TRUE(result.timed_out);
  EXPECT_THAT(result.done, ElementsAre(0));
  EXPECT_THAT(result.not_done, ElementsAre(1));
  EXPECT_FALSE(Wait({MakeReadyFuture(1)}, {.timeout = absl::ZeroDuration()}).timed_out);
}

TEST(WaitTest, ATimeoutCancelsThePendingFuturesOnlyWhenAsked) {
  Promise<int> pending;
  const Future<int> ready = MakeReadyFuture(1);
  EXPECT_TRUE(Wait({ready, pending.GetFuture()}, {.timeout = absl::ZeroDuration()}).timed_out);
  EXPECT_FALSE(pending.IsCancelled());  // By default a timeout leaves them running.
  const WaitResult result = Wait({ready, pending.GetFuture()}, {.timeout = absl::ZeroDuration(),
                                                                .cancel_pending_on_timeout = true});
  EXPECT_TRUE(result.timed_out);
  EXPECT_THAT(result.not_done, ElementsAre(1));
  EXPECT_TRUE(pending.IsCancelled());
  EXPECT_EQ(ready.Result(), 1);
}

TEST(WaitTest, CancelPendingOnTimeoutCancelsAtTheTimeoutOnTheInjectedClock) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(2);
  AsyncWait wait(
      FuturesOf(promises),
      {.timeout = absl::Milliseconds(10), .clock = &clock, .cancel_pending_on_timeout = true});
  clock.BlockUntilWaiters(1);
  promises[0].SetValue(0);
  clock.Advance(absl::Milliseconds(9));
  EXPECT_FALSE(promises[1].IsCancelled());
  clock.Advance(absl::Milliseconds(1));
  const WaitResult result = wait.Get();
  EXPECT_TRUE(result.timed_out);
  EXPECT_THAT(result.not_done, ElementsAre(1));
  EXPECT_TRUE(promises[1].IsCancelled());
  EXPECT_FALSE(promises[0].IsCancelled());
}

TEST(WaitTest, CancelPendingOnTimeoutLeavesFuturesAloneWhenTheWaitEndsInTime) {
  Promise<int> pending;
  const WaitResult result =
      Wait({MakeReadyFuture(1), pending.GetFuture()}, {.timeout = absl::ZeroDuration(),
                                                       .return_when = ReturnWhen::kFirstCompleted,
                                                       .cancel_pending_on_timeout = true});
  EXPECT_FALSE(result.timed_out);
  EXPECT_FALSE(pending.IsCancelled());
}

TEST(WaitTest, WakesOnACompletionFromAnotherThread) {
  Promise<int> promise;
  std::thread producer([&] { promise.SetValue(1); });
  const WaitResult result = Wait({promise.GetFuture()});
  producer.join();
  EXPECT_THAT(result.done, ElementsAre(0));
}

TEST(WaitTest, WaitsOnFuturesOfDifferentTypes) {
  Promise<std::string> text;
  Promise<void> signal;
  std::thread producer([&] {
    text.SetValue("x");
    signal.SetValue();
  });
  const WaitResult result = Wait({MakeReadyFuture(1), text.GetFuture(), signal.GetFuture()});
  producer.join();
  EXPECT_THAT(result.done, ElementsAre(0, 1, 2));
}

TEST(WaitTest, WaitsOnASpanOfAnyFutures) {
  const std::vector<AnyFuture> futures = {MakeReadyFuture(1), MakeReadyFuture()};
  EXPECT_THAT(Wait(futures).done, ElementsAre(0, 1));
}

TEST(WaitTest, MapResultNamesKeys) {
  Promise<int> pending;
  const std::map<std::string, Future<int>> futures = {
      {"a", MakeReadyFuture(1)}, {"b", pending.GetFuture()}, {"c", MakeReadyFuture(3)}};
  const WaitResultKeyed<std::string> result = Wait(futures, {.timeout = absl::ZeroDuration()});
  EXPECT_THAT(result.done, ElementsAre("a", "c"));
  EXPECT_THAT(result.not_done, ElementsAre("b"));
  EXPECT_TRUE(result.timed_out);
}

TEST(WaitTest, FlatHashMapResultNamesKeys) {
  Promise<int> pending;
  absl::flat_hash_map<int, Future<int>> futures;
  futures[10] = MakeReadyFuture(1);
  futures[20] = pending.GetFuture();
  futures[30] = MakeFailedFuture<int>(CustomError());
  const WaitResultKeyed<int> result = Wait(futures, {.return_when = ReturnWhen::kFirstException});
  EXPECT_THAT(result.done, UnorderedElementsAre(10, 30));
  EXPECT_THAT(result.not_done, ElementsAre(20));
  EXPECT_FALSE(result.timed_out);
}

TEST(WaitTest, RejectsANegativeTimeout) {
  try {
    Wait({MakeReadyFuture(1)}, {.timeout = absl::Milliseconds(-1)});
    FAIL() << "accepted a negative timeout";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Wait: timeout must be >= 0"));
    EXPECT_THAT(e.what(), HasSubstr("-1ms"));
  }
}

TEST(WaitTest, RejectsAnUnknownReturnWhen) {
  try {
    Wait({MakeReadyFuture(1)}, {.return_when = static_cast<ReturnWhen>(7)});
    FAIL() << "accepted return_when 7";
  } catch (const InvalidOptionError& e) {
    EXPECT_STREQ(e.what(),
                 "Wait: return_when: unknown value 7; allowed: kAllCompleted, kFirstCompleted, "
                 "kFirstException");
  }
}

TEST(WaitTest, RejectsAnInvalidFutureByIndexBeforeWaiting) {
  Promise<int> pending;  // Would block forever if Wait waited before checking.
  std::vector<Future<int>> futures = {pending.GetFuture(), MakeReadyFuture(1), MakeReadyFuture(2),
                                      Future<int>()};
  try {
    Wait(futures);
    FAIL() << "accepted an invalid future";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Wait: future at index 3 is invalid"));
  }
}

struct Point {
  int x;
  bool operator<(const Point& other) const { return x < other.x; }
};
struct Opaque {
  int id;
  bool operator<(const Opaque& other) const { return id < other.id; }
};
std::ostream& operator<<(std::ostream& os, const Point& p) { return os << "Point(" << p.x << ")"; }

TEST(WaitTest, RejectsAnInvalidFutureInAMapByKey) {
  const auto message = [](const auto& futures) {
    try {
      Wait(futures);
    } catch (const InvalidOptionError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message(std::map<std::string, Future<int>>{{"a", MakeReadyFuture(1)}, {"b", {}}}),
              HasSubstr("Wait: future at key \"b\" is invalid"));
  EXPECT_THAT(message(std::map<int, Future<int>>{{7, {}}}),
              HasSubstr("Wait: future at key 7 is invalid"));
  EXPECT_THAT(message(std::map<Point, Future<int>>{{Point{1}, MakeReadyFuture(1)}, {Point{2}, {}}}),
              HasSubstr("future at key Point(2) is invalid"));
  EXPECT_THAT(
      message(std::map<Opaque, Future<int>>{{Opaque{1}, MakeReadyFuture(1)}, {Opaque{2}, {}}}),
      HasSubstr("future at key #1 is invalid"));
}

TEST(WaitTest, ReportsProgressToTheCallback) {
  testkit::FakeClock clock;
  std::vector<Promise<int>> promises(3);
  std::vector<int64_t> reported;  // Written by the waiting thread only; read after Get().
  ProgressOptions progress{.callback = [&](int64_t completed, int64_t total, absl::Duration) {
    EXPECT_EQ(total, 3);
    reported.push_back(completed);
  }};
  AsyncWait wait(FuturesOf(promises), {.clock = &clock, .progress = progress});
  clock.BlockUntilWaiters(1);
  for (Promise<int>& p : promises) p.SetValue(0);
  EXPECT_FALSE(wait.Get().timed_out);
  ASSERT_FALSE(reported.empty());
  EXPECT_EQ(reported.back(), 3);
  for (size_t i = 1; i < reported.size(); ++i) EXPECT_LT(reported[i - 1], reported[i]);
}

TEST(WaitTest, TimedOutWaitsLeaveNoCallbacksBehind) {
  Promise<int> promise;
  const Future<int> pending = promise.GetFuture();
  const std::vector<Future<int>> futures = {pending, MakeReadyFuture(1)};
  const WaitOptions options{.timeout = absl::ZeroDuration()};
  ASSERT_TRUE(Wait(futures, options).timed_out);  // Warms up lazily allocated state.
  const int64_t before = testkit::LiveAllocations();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(Wait(futures, options).timed_out);
  EXPECT_EQ(testkit::LiveAllocations(), before);
}

}  // namespace
}  // namespace concurry

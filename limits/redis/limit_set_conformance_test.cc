// The LimitSet contract, checked once for every backend: the in-process set (kThreads), the
// process-shared one (kProcesses) and the Redis engine (kHosts on a RedisLimitStore). Every test
// runs on the real clock, the only one kProcesses and kHosts accept, so the timing checks have
// wide bounds ("well before a 5 s bound", counts) rather than exact instants; the exact timings
// are in limit_set_test.cc on the fake clock. Rate limits use a one-day window where a test must
// not see them refill.
//
// The Redis tests share one redis-server, started for the suite; each set gets a name of its own,
// so no two tests see each other's state.

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/redis/redis_limit_store.h"
#include "limits/redis/redis_options.h"
#include "testing/redis_server.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::ThrowsMessage;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Bounds every wait that should end soon: reaching it fails the test instead of hanging it.
constexpr absl::Duration kGuard = absl::Seconds(30);
// What "at once" and "soon after" mean on a loaded two-core machine, under the sanitizers.
constexpr absl::Duration kPrompt = absl::Seconds(5);
// Rate limits over a day refill 10 units in 86400 s: this covers what a test's seconds regain.
constexpr double kRefillSlack = 0.01;

constexpr RateLimitAlgorithm kAlgorithms[] = {
    RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
    RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
    RateLimitAlgorithm::kGcra};

bool Refundable(RateLimitAlgorithm algorithm) {
  return algorithm == RateLimitAlgorithm::kTokenBucket || algorithm == RateLimitAlgorithm::kGcra;
}

enum class Backend { kThreads, kProcesses, kRedis };

std::string BackendName(Backend backend) {
  switch (backend) {
    case Backend::kThreads:
      return "Threads";
    case Backend::kProcesses:
      return "Processes";
    case Backend::kRedis:
      return "Redis";
  }
  return "Unknown";
}

LimitStats StatsOf(const LimitSet& set, absl::string_view key) {
  const LimitSetStats stats = set.Stats();
  const LimitStats* found = stats.Find(key);
  if (found == nullptr) {
    ADD_FAILURE() << "no limit '" << key << "' in Stats()";
    return {};
  }
  return *found;
}
double InUse(const LimitSet& set, absl::string_view key) { return StatsOf(set, key).in_use; }
double Available(const LimitSet& set, absl::string_view key) { return StatsOf(set, key).available; }

// Polls `condition` every millisecond until it holds or kGuard passes. Only for states that no
// event announces (a Stats() figure such as "one acquirer is blocked now").
template <typename Condition>
bool Eventually(Condition condition) {
  const absl::Time deadline = absl::Now() + kGuard;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// The warnings a set reports.
class Warnings {
 public:
  std::function<void(absl::string_view)> Sink() {
    return [this](absl::string_view message) {
      absl::MutexLock lock(&mu_);
      messages_.emplace_back(message);
    };
  }
  std::vector<std::string> Get() {
    absl::MutexLock lock(&mu_);
    return messages_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mu_);
};

// Acquire(request, timeout) on a thread of its own, which keeps the acquisition until Finish()
// (or destruction) and then reports the requested rate amounts as used and releases it.
class Acquirer {
 public:
  Acquirer(LimitSet set, std::vector<std::pair<std::string, double>> request,
           absl::Duration timeout = kGuard)
      : request_(std::move(request)) {
    thread_ = std::thread([this, set = std::move(set), timeout] {
      std::vector<LimitAmount> amounts;
      for (const auto& [key, amount] : request_) amounts.push_back({key, amount});
      try {
        acquisition_ = set.Acquire(amounts, timeout);
      } catch (...) {
        error_ = std::current_exception();
      }
      done_at_ = absl::Now();
      done_.Notify();
      finish_.WaitForNotification();
      if (acquisition_.has_value()) {
        for (const auto& [key, amount] : request_) {
          if (set[key].kind() != LimitKind::kResource) acquisition_->Update({{key, amount}});
        }
      }
      acquisition_.reset();
    });
  }
  ~Acquirer() { Finish(); }
  Acquirer(const Acquirer&) = delete;
  Acquirer& operator=(const Acquirer&) = delete;

  bool done() const { return done_.HasBeenNotified(); }
  // Waits until Acquire() returned or threw; false if that took longer than kGuard.
  bool WaitDone() const { return done_.WaitForNotificationWithTimeout(kGuard); }
  // After done(): the outcome and when it came.
  bool acquired() const { return acquisition_.has_value(); }
  std::exception_ptr error() const { return error_; }
  absl::Time done_at() const { return done_at_; }
  // Releases (after reporting the usage) and joins the thread.
  void Finish() {
    if (!finish_.HasBeenNotified()) finish_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  const std::vector<std::pair<std::string, double>> request_;
  std::optional<LimitAcquisition> acquisition_;
  std::exception_ptr error_;
  absl::Time done_at_;
  absl::Notification done_;
  absl::Notification finish_;
  std::thread thread_;
};

// TryAcquire() on a thread that holds nothing of the set, so that it queues like a newcomer.
bool TryAcquireElsewhere(const LimitSet& set, std::vector<std::pair<std::string, double>> request) {
  bool acquired = false;
  std::thread([&] {
    std::vector<LimitAmount> amounts;
    for (const auto& [key, amount] : request) amounts.push_back({key, amount});
    std::optional<LimitAcquisition> acquisition = set.TryAcquire(amounts);
    acquired = acquisition.has_value();
    if (acquisition.has_value()) {
      for (const auto& [key, amount] : request) {
        if (set[key].kind() != LimitKind::kResource) acquisition->Update({{key, amount}});
      }
    }
  }).join();
  return acquired;
}

// The type and message of `error`, or "no error".
std::string Describe(std::exception_ptr error) {
  if (error == nullptr) return "no error";
  try {
    std::rethrow_exception(error);
  } catch (const InvalidOptionError& e) {
    return absl::StrCat("InvalidOptionError: ", e.what());
  } catch (const LimitUsageError& e) {
    return absl::StrCat("LimitUsageError: ", e.what());
  } catch (const TimeoutError& e) {
    return absl::StrCat("TimeoutError: ", e.what());
  } catch (const std::exception& e) {
    return absl::StrCat("other exception: ", e.what());
  } catch (...) {
    return "unknown exception";
  }
}

// Describe() of what `action` throws.
std::string ErrorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (...) {
    return Describe(std::current_exception());
  }
  return "no error";
}

class LimitSetConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  // One redis-server for the whole suite; the kThreads and kProcesses tests do not use it.
  static void SetUpTestSuite() {
    server_error_ = new std::string();
    if (!testkit::RedisServer::Available(server_error_)) return;
    try {
      server_ = testkit::RedisServer::Start().release();
    } catch (const std::exception& e) {
      *server_error_ = e.what();
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete server_error_;
    server_error_ = nullptr;
  }

  void SetUp() override {
    if (GetParam() != Backend::kRedis) return;
    ASSERT_NE(server_, nullptr) << "no redis-server for the Redis backend: " << *server_error_;
    store_ = RedisLimitStore::Connect(
        {.host = "127.0.0.1", .port = server_->port(), .key_prefix = "conformance:"});
  }

  // A set of `limits` on the backend under test; warnings go to `on_warning`, or to warnings_
  // when it is null. Each Redis set gets a new name, so it starts empty.
  LimitSet Make(std::vector<Limit> limits,
                std::function<void(absl::string_view)> on_warning = nullptr) {
    LimitSetOptions options;
    options.on_warning = on_warning ? std::move(on_warning) : warnings_.Sink();
    switch (GetParam()) {
      case Backend::kThreads:
        options.sharing = LimitSharing::kThreads;
        break;
      case Backend::kProcesses:
        options.sharing = LimitSharing::kProcesses;
        break;
      case Backend::kRedis:
        options.sharing = LimitSharing::kHosts;
        options.store = store_;
        options.name = absl::StrCat("set-", next_set_.fetch_add(1));
        break;
    }
    return LimitSet::Create(std::move(limits), std::move(options));
  }

  Warnings warnings_;
  // A test that hangs (a wait nothing ends) fails here, naming itself, rather than at the
  // runner's timeout.
  testkit::Watchdog watchdog_{absl::Minutes(2),
                              ::testing::UnitTest::GetInstance()->current_test_info()->name()};

 private:
  static testkit::RedisServer* server_;
  static std::string* server_error_;
  static std::atomic<int64_t> next_set_;
  std::shared_ptr<RedisLimitStore> store_;
};

testkit::RedisServer* LimitSetConformanceTest::server_ = nullptr;
std::string* LimitSetConformanceTest::server_error_ = nullptr;
std::atomic<int64_t> LimitSetConformanceTest::next_set_{0};

INSTANTIATE_TEST_SUITE_P(Backends, LimitSetConformanceTest,
                         ::testing::Values(Backend::kThreads, Backend::kProcesses, Backend::kRedis),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return BackendName(info.param);
                         });

// ---- All or nothing ----

TEST_P(LimitSetConformanceTest, TakesEveryLimitOrNothing) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "day", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 2)});
  {
    LimitAcquisition both_connections = set.Acquire({{"conn", 2}}, kGuard);
    // The tokens are there, the implicit connection is not.
    EXPECT_FALSE(set.TryAcquire({{"tok", 5}}).has_value());
    EXPECT_NEAR(InUse(set, "tok"), 0, kRefillSlack);
    EXPECT_EQ(InUse(set, "conn"), 2);
  }
  EXPECT_EQ(InUse(set, "conn"), 0);
  LimitAcquisition eight = set.Acquire({{"tok", 8}}, kGuard);
  // A connection is there, the tokens are not.
  EXPECT_FALSE(set.TryAcquire({{"tok", 5}}).has_value());
  EXPECT_NEAR(InUse(set, "tok"), 8, kRefillSlack);
  EXPECT_EQ(InUse(set, "conn"), 1);
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.acquisitions, 2);
  EXPECT_EQ(stats.holding, 1);
  EXPECT_EQ(stats.timeouts, 0);  // A failed TryAcquire() is not a timeout.
  eight.Update({{"tok", 8}});
}

// ---- Not waiting, timing out, waking up ----

TEST_P(LimitSetConformanceTest, TryAcquireFailsWithoutWaiting) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "day", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  {
    LimitAcquisition held = set.Acquire({{"tok", 1}}, kGuard);
    held.Update({{"tok", 1}});
    const absl::Time start = absl::Now();
    EXPECT_FALSE(TryAcquireElsewhere(set, {{"tok", 1}}));  // No connection.
    EXPECT_LT(absl::Now() - start, kPrompt);
  }
  LimitAcquisition burst = set.Acquire({{"tok", 9}}, kGuard);
  burst.Update({{"tok", 9}});
  burst.Release();
  // The next token comes back in 2.4 hours.
  const absl::Time start = absl::Now();
  EXPECT_FALSE(TryAcquireElsewhere(set, {{"tok", 1}}));
  EXPECT_LT(absl::Now() - start, kPrompt);
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.timeouts, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.acquisitions, 2);
}

TEST_P(LimitSetConformanceTest, AcquireTimesOutWithinBounds) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire({}, kGuard);
  // On a thread holding nothing, so that it waits in the FIFO queue.
  const absl::Time start = absl::Now();
  Acquirer waiter(set, {}, absl::Milliseconds(300));
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_FALSE(waiter.acquired());
  EXPECT_THAT(
      Describe(waiter.error()),
      AllOf(HasSubstr("TimeoutError"), HasSubstr("failed to acquire all limits within 300ms")));
  // Not before the timeout (a millisecond of slack for a server clock read in microseconds),
  // and not much after it.
  EXPECT_GE(waiter.done_at() - start, absl::Milliseconds(299));
  EXPECT_LT(waiter.done_at() - start, absl::Milliseconds(300) + kPrompt);
  EXPECT_THAT([&] { set.Acquire({}, absl::ZeroDuration()); },
              ThrowsMessage<TimeoutError>(HasSubstr("within 0")));
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.timeouts, 2);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.acquisitions, 1);
  EXPECT_EQ(stats.limits[0].in_use, 1);  // The timed-out requests took nothing.
  held.Release();
  // The timed-out waiter left the queue: a newcomer is served at once, not queued behind it.
  EXPECT_TRUE(TryAcquireElsewhere(set, {}));
}

TEST_P(LimitSetConformanceTest, BlockedAcquireWakesOnARelease) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire({}, kGuard);
  // Nothing but the release can wake it before its 30 s timeout.
  Acquirer waiter(set, {}, kGuard);
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  EXPECT_FALSE(waiter.done());
  const absl::Time released = absl::Now();
  held.Release();
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_TRUE(waiter.acquired());
  EXPECT_LT(waiter.done_at() - released, kPrompt);
  EXPECT_EQ(InUse(set, "conn"), 1);
  waiter.Finish();
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().timeouts, 0);
}

TEST_P(LimitSetConformanceTest, BlockedAcquireWakesWhenTheRateLimitAdmitsAgain) {
  // 10 per second: after a burst of 10, one more is admitted within about a second (up to two
  // for the sliding window, which still weighs the previous window), far from the 30 s timeout.
  for (const RateLimitAlgorithm algorithm : kAlgorithms) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    const LimitSet set = Make({RateLimit("tok", 10, "second", algorithm)});
    LimitAcquisition burst = set.Acquire({{"tok", 10}}, kGuard);
    burst.Update({{"tok", 10}});
    burst.Release();
    const absl::Time start = absl::Now();
    Acquirer waiter(set, {{"tok", 1}}, kGuard);
    ASSERT_TRUE(waiter.WaitDone());
    EXPECT_TRUE(waiter.acquired());
    EXPECT_LT(waiter.done_at() - start, absl::Seconds(2) + kPrompt);
  }
}

// ---- The algorithms ----

TEST_P(LimitSetConformanceTest, EachAlgorithmAdmitsExactlyItsBurstThenRefuses) {
  struct Case {
    RateLimitAlgorithm algorithm;
    std::optional<double> burst;
    int admitted;
  };
  std::vector<Case> cases;
  for (const RateLimitAlgorithm algorithm : kAlgorithms) cases.push_back({algorithm, {}, 10});
  cases.push_back({RateLimitAlgorithm::kGcra, 3, 3});
  cases.push_back({RateLimitAlgorithm::kTokenBucket, 4, 4});
  cases.push_back({RateLimitAlgorithm::kLeakyBucket, 5, 5});
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(RateLimitAlgorithmName(c.algorithm), " burst ",
                              c.burst.has_value() ? absl::StrCat(*c.burst) : "unset"));
    const LimitSet set = Make({RateLimit("tok", 10, "day", c.algorithm, {.burst = c.burst})});
    for (int i = 0; i < c.admitted; ++i) {
      std::optional<LimitAcquisition> one = set.TryAcquire({{"tok", 1}});
      ASSERT_TRUE(one.has_value()) << "refused unit " << i + 1 << " of " << c.admitted;
      one->Update({{"tok", 1}});
    }
    EXPECT_FALSE(set.TryAcquire({{"tok", 1}}).has_value());
    EXPECT_NEAR(Available(set, "tok"), 0, kRefillSlack);
    EXPECT_EQ(set.Stats().acquisitions, c.admitted);
  }
}

TEST_P(LimitSetConformanceTest, RefundsRequestedMinusUsedForTokenBucketAndGcraOnly) {
  for (const RateLimitAlgorithm algorithm : kAlgorithms) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    const LimitSet set = Make({RateLimit("tok", 10, "day", algorithm)});
    LimitAcquisition acquired = set.Acquire({{"tok", 6}}, kGuard);
    EXPECT_NEAR(Available(set, "tok"), 4, kRefillSlack);
    acquired.Update({{"tok", 2}});
    EXPECT_NEAR(Available(set, "tok"), 4, kRefillSlack);  // Refunded at release only.
    acquired.Release();
    const bool refunds = Refundable(algorithm);
    EXPECT_NEAR(Available(set, "tok"), refunds ? 8 : 4, kRefillSlack);
    const std::optional<LimitCharge> charge = acquired.charge("tok");
    ASSERT_TRUE(charge.has_value());
    EXPECT_EQ(charge->requested, 6);
    EXPECT_EQ(charge->used, 2);
    EXPECT_EQ(charge->refunded, refunds ? 4 : 0);
    EXPECT_EQ(charge->charged, refunds ? 2 : 6);
  }
  EXPECT_THAT(warnings_.Get(), IsEmpty());
}

TEST_P(LimitSetConformanceTest, OveruseIsChargedAndWarned) {
  for (const RateLimitAlgorithm algorithm : kAlgorithms) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    Warnings warnings;
    const LimitSet set = Make({RateLimit("tok", 10, "day", algorithm)}, warnings.Sink());
    LimitAcquisition acquired = set.Acquire({{"tok", 2}}, kGuard);
    acquired.Update({{"tok", 5}});
    EXPECT_THAT(warnings.Get(), ElementsAre(AllOf(HasSubstr("usage above the request"),
                                                  HasSubstr("'tok' used 5 of 2 requested"))));
    EXPECT_EQ(set.Stats().overuse_reports, 1);
    EXPECT_NEAR(InUse(set, "tok"), 5, kRefillSlack);
    acquired.Release();
    EXPECT_NEAR(InUse(set, "tok"), 5, kRefillSlack);  // Nothing to refund: all of it was used.
    EXPECT_EQ(acquired.charge("tok")->charged, 5);
    EXPECT_FALSE(set.TryAcquire({{"tok", 6}}).has_value());
    std::optional<LimitAcquisition> rest = set.TryAcquire({{"tok", 5}});
    ASSERT_TRUE(rest.has_value());
    rest->Update({{"tok", 5}});
  }
}

TEST_P(LimitSetConformanceTest, ReleaseWithoutUpdateIsChargedInFullAndReported) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "day", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  { LimitAcquisition forgotten = set.Acquire({{"tok", 3}}, kGuard); }  // The destructor warns.
  EXPECT_THAT(warnings_.Get(), ElementsAre(HasSubstr("Missing: [tok]")));
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_NEAR(InUse(set, "tok"), 3, kRefillSlack);
  LimitAcquisition acquired = set.Acquire({{"tok", 2}}, kGuard);
  EXPECT_THAT(
      [&] { acquired.Release(); },
      ThrowsMessage<LimitUsageError>(AllOf(HasSubstr("Not all limits in the LimitSet were updated"),
                                           HasSubstr("Missing: [tok]"))));
  EXPECT_FALSE(acquired.held());
  EXPECT_EQ(InUse(set, "conn"), 0);                 // The connection came back...
  EXPECT_NEAR(InUse(set, "tok"), 5, kRefillSlack);  // ...and the tokens were charged in full.
  EXPECT_THAT(warnings_.Get(), SizeIs(1));          // Thrown, not warned.
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.missing_updates, 2);
  EXPECT_EQ(stats.holding, 0);
}

// ---- Implicit and nested amounts ----

TEST_P(LimitSetConformanceTest, ACallLimitIsTakenWithOneAndNeedsNoUpdate) {
  const LimitSet set = Make({CallLimit(3, "day")});
  LimitAcquisition first = set.Acquire({}, kGuard);
  EXPECT_EQ(first.requested("call_count"), 1);
  EXPECT_THAT(
      [&] {
        first.Update({{"call_count", 2}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("implicit acquisition")));
  EXPECT_NO_THROW(first.Update({{"call_count", 1}}));
  EXPECT_NO_THROW(first.Release());
  LimitAcquisition second = set.Acquire({}, kGuard);
  EXPECT_NO_THROW(second.Release());  // Without Update().
  std::optional<LimitAcquisition> third = set.TryAcquire({{"call_count", 1}});
  ASSERT_TRUE(third.has_value());
  third.reset();
  EXPECT_FALSE(set.TryAcquire().has_value());  // Three calls a day.
  EXPECT_EQ(InUse(set, "call_count"), 3);      // Calls are not given back.
  EXPECT_EQ(set.Stats().missing_updates, 0);
  EXPECT_THAT(warnings_.Get(), IsEmpty());
}

TEST_P(LimitSetConformanceTest, AResourceLimitIsTakenWithOneAndGivenBack) {
  const LimitSet set =
      Make({ResourceLimit("conn", 2), RateLimit("tok", 100, "day", RateLimitAlgorithm::kGcra)});
  LimitAcquisition first = set.Acquire({{"tok", 1}}, kGuard);
  EXPECT_EQ(first.requested("conn"), 1);
  EXPECT_EQ(InUse(set, "conn"), 1);
  Acquirer second(set, {{"tok", 1}});
  ASSERT_TRUE(second.WaitDone());
  ASSERT_TRUE(second.acquired());
  EXPECT_EQ(InUse(set, "conn"), 2);
  EXPECT_FALSE(TryAcquireElsewhere(set, {{"tok", 1}}));
  first.Update({{"tok", 1}});
  first.Release();
  EXPECT_EQ(InUse(set, "conn"), 1);
  second.Finish();
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().holding, 0);
  EXPECT_THAT(warnings_.Get(), IsEmpty());
}

TEST_P(LimitSetConformanceTest, AmountZeroLeavesALimitOutOfANestedAcquisition) {
  const LimitSet set =
      Make({RateLimit("tokens", 100, "day", RateLimitAlgorithm::kGcra),
            CallLimit(1000, "day", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  LimitAcquisition session = set.Acquire({{"tokens", 1}}, kGuard);
  session.Update({{"tokens", 1}});
  // Without {"conn", 0} this would wait for the connection this very thread holds.
  LimitAcquisition inner = set.Acquire({{"tokens", 10}, {"conn", 0}}, absl::ZeroDuration());
  EXPECT_EQ(inner.requested("conn"), 0);
  EXPECT_EQ(inner.requested("call_count"), 1);  // Not named: taken implicitly.
  inner.Update({{"tokens", 10}});
  EXPECT_EQ(InUse(set, "conn"), 1);
  inner.Release();
  EXPECT_EQ(InUse(set, "conn"), 1);
  session.Release();
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_NEAR(InUse(set, "call_count"), 2, kRefillSlack);
}

// ---- Fairness ----

TEST_P(LimitSetConformanceTest, WaitersAreServedInArrivalOrder) {
  const LimitSet set = Make({ResourceLimit("r", 3)});
  LimitAcquisition two = set.Acquire({{"r", 2}}, kGuard);
  Acquirer big(set, {{"r", 3}});
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  // One unit is free, but the big request came first.
  EXPECT_FALSE(TryAcquireElsewhere(set, {{"r", 1}}));
  Acquirer small(set, {{"r", 1}});
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 2; }));
  EXPECT_FALSE(small.done());  // Blocked with a unit free: it queues behind `big`.
  EXPECT_EQ(InUse(set, "r"), 2);
  two.Release();
  ASSERT_TRUE(big.WaitDone());
  EXPECT_TRUE(big.acquired());
  EXPECT_FALSE(small.done());
  EXPECT_EQ(InUse(set, "r"), 3);
  big.Finish();
  ASSERT_TRUE(small.WaitDone());
  EXPECT_TRUE(small.acquired());
  EXPECT_EQ(InUse(set, "r"), 1);
  EXPECT_EQ(set.Stats().timeouts, 0);
}

// ---- AcquireAsync ----

TEST_P(LimitSetConformanceTest, AcquireAsyncCompletesAtOnceOrWhenCapacityReturns) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition first = set.AcquireAsync().Result(kGuard);
  EXPECT_TRUE(first.held());
  EXPECT_EQ(InUse(set, "conn"), 1);
  Future<LimitAcquisition> second = set.AcquireAsync({}, kGuard);
  EXPECT_FALSE(second.Done());  // The only connection is held.
  const absl::Time released = absl::Now();
  first.Release();
  LimitAcquisition acquired = std::move(second).Result(kGuard);
  EXPECT_LT(absl::Now() - released, kPrompt);
  EXPECT_TRUE(acquired.held());
  EXPECT_EQ(InUse(set, "conn"), 1);
  acquired.Release();
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().acquisitions, 2);
}

TEST_P(LimitSetConformanceTest, AcquireAsyncTimesOut) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire({}, kGuard);
  const absl::Time start = absl::Now();
  Future<LimitAcquisition> future = set.AcquireAsync({}, absl::Milliseconds(300));
  EXPECT_THAT([&] { future.Result(kGuard); },
              ThrowsMessage<TimeoutError>(HasSubstr("failed to acquire all limits in time")));
  const absl::Duration waited = absl::Now() - start;
  EXPECT_GE(waited, absl::Milliseconds(299));
  EXPECT_LT(waited, absl::Milliseconds(300) + kPrompt);
  EXPECT_EQ(set.Stats().timeouts, 1);
  EXPECT_EQ(InUse(set, "conn"), 1);
  held.Release();
  // The timed-out request left the queue.
  EXPECT_TRUE(TryAcquireElsewhere(set, {}));
}

TEST_P(LimitSetConformanceTest, CancellingAcquireAsyncWithdrawsTheRequest) {
  const LimitSet set = Make({ResourceLimit("conn", 2)});
  LimitAcquisition held = set.Acquire({{"conn", 2}}, kGuard);
  Future<LimitAcquisition> cancelled = set.AcquireAsync({{"conn", 1}});
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));  // Queued.
  EXPECT_TRUE(cancelled.Cancel());
  EXPECT_TRUE(cancelled.Cancelled());
  EXPECT_THROW(cancelled.Result(kGuard), CancelledError);
  // The helper thread leaves the queue on its behalf, promptly but not within Cancel().
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 0; }));
  held.Release();
  // Withdrawn: it neither took a unit nor keeps a place in the queue ahead of a newcomer.
  EXPECT_TRUE(TryAcquireElsewhere(set, {{"conn", 2}}));
  const absl::Time start = absl::Now();
  LimitAcquisition both = set.AcquireAsync({{"conn", 2}}, kGuard).Result(kGuard);
  EXPECT_LT(absl::Now() - start, kPrompt);
  EXPECT_TRUE(both.held());
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.acquisitions, 3);  // `held`, the newcomer's and `both`; not the cancelled one.
  EXPECT_EQ(stats.timeouts, 0);
  EXPECT_EQ(stats.limits[0].in_use, 2);
}

// A caller that saw its future complete and dropped its handle destroys the set on its own
// thread: the helper thread that served the request no longer holds it, even while continuations
// it runs are still going (a set destroyed later, there, would call on_warning behind the caller's
// back, e.g. after the sink it captured was gone).
TEST_P(LimitSetConformanceTest, TheHelperLetsGoOfTheSetBeforeCompletingTheLastFuture) {
  auto sink_state = std::make_shared<int>(0);
  const std::weak_ptr<int> sink_alive = sink_state;  // Lives as long as the set's options.
  // Shared with the continuation, which may outlive a failed test.
  auto continued = std::make_shared<absl::Notification>();
  Future<void> after;
  {
    LimitSet set = Make({ResourceLimit("conn", 1)},
                        [state = std::move(sink_state)](absl::string_view) { ++*state; });
    std::optional<LimitAcquisition> held = set.Acquire({}, kGuard);
    after = set.AcquireAsync({}, kGuard).Then([continued](LimitAcquisition acquisition) {
      acquisition.Release();
      { LimitAcquisition dropped = std::move(acquisition); }
      continued->Notify();
      // Keeps the helper thread here while the caller drops its handle. Dropping the last handle
      // waits for the helper (the set's destructor joins it), so this ends the wait; had the
      // helper still held the set, the handle would not be the last and the check below would
      // run while this sleeps.
      absl::SleepFor(absl::Milliseconds(300));
    });
    held.reset();
    EXPECT_TRUE(continued->WaitForNotificationWithTimeout(kGuard));
  }  // The caller's handle, the last one: the set is destroyed here.
  EXPECT_TRUE(sink_alive.expired()) << "the set outlived the caller's last handle";
  std::move(after).Result(kGuard);
}

// ---- Prepared requests and handles ----

TEST_P(LimitSetConformanceTest, APreparedRequestTakesWhatTheRequestWould) {
  const std::vector<Limit> limits = {RateLimit("tokens", 100, "day", RateLimitAlgorithm::kGcra),
                                     CallLimit(10, "day", RateLimitAlgorithm::kGcra),
                                     ResourceLimit("connections", 2)};
  const LimitSet set = Make(limits);
  const LimitSet other = Make(limits);
  const PreparedLimitRequest ten = set.Prepare({{"tokens", 10}});
  const LimitHandle tokens = set.Handle("tokens");
  {
    LimitAcquisition acquired = set.Acquire(ten, kGuard);
    EXPECT_EQ(acquired.requested("tokens"), 10);
    EXPECT_EQ(acquired.requested("call_count"), 1);
    EXPECT_EQ(acquired.requested("connections"), 1);
    acquired.Update(tokens, 4);
    acquired.Release();
    EXPECT_EQ(acquired.charge("tokens")->refunded, 6);
  }
  std::optional<LimitAcquisition> tried = set.TryAcquire(ten);
  ASSERT_TRUE(tried.has_value());
  tried->Update(tokens, 10);
  LimitAcquisition async = set.AcquireAsync(ten, kGuard).Result(kGuard);
  EXPECT_EQ(async.requested("tokens"), 10);
  async.Update({{"tokens", 10}});
  EXPECT_EQ(set.Stats().holding, 2);
  EXPECT_NEAR(InUse(set, "tokens"), 24, kRefillSlack);

  const PreparedLimitRequest theirs = other.Prepare({{"tokens", 1}});
  EXPECT_THAT([&] { set.Acquire(theirs); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("prepared by another LimitSet")));
  EXPECT_THAT([&] { async.Update(other.Handle("tokens"), 1); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("belongs to another LimitSet")));
}

// ---- Stats ----

TEST_P(LimitSetConformanceTest, StatsShowWhatIsHeldAndAvailable) {
  const LimitSet set = Make(
      {ResourceLimit("conn", 4), RateLimit("tok", 10, "day", RateLimitAlgorithm::kFixedWindow)});
  LimitSetStats stats = set.Stats();
  ASSERT_THAT(stats.limits, SizeIs(2));
  EXPECT_EQ(stats.limits[0].key, "conn");
  EXPECT_EQ(stats.limits[0].kind, LimitKind::kResource);
  EXPECT_EQ(stats.limits[0].capacity, 4);
  EXPECT_EQ(stats.limits[0].burst, 4);
  EXPECT_EQ(stats.limits[0].in_use, 0);
  EXPECT_EQ(stats.limits[0].available, 4);
  EXPECT_EQ(stats.limits[1].key, "tok");
  EXPECT_EQ(stats.limits[1].kind, LimitKind::kRate);
  EXPECT_EQ(stats.limits[1].algorithm, RateLimitAlgorithm::kFixedWindow);
  EXPECT_EQ(stats.limits[1].window, absl::Hours(24));
  EXPECT_EQ(stats.limits[1].available, 10);

  LimitAcquisition acquired = set.Acquire({{"conn", 3}, {"tok", 4}}, kGuard);
  stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 3);
  EXPECT_EQ(stats.limits[0].available, 1);
  EXPECT_DOUBLE_EQ(stats.limits[0].utilization, 0.75);
  EXPECT_EQ(stats.limits[1].in_use, 4);
  EXPECT_EQ(stats.limits[1].available, 6);
  EXPECT_EQ(stats.holding, 1);
  EXPECT_EQ(stats.acquisitions, 1);
  EXPECT_EQ(set.Stats().at("conn").in_use, 3);

  acquired.Update({{"tok", 4}});
  acquired.Release();
  stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 0);
  EXPECT_EQ(stats.limits[0].available, 4);
  EXPECT_EQ(stats.limits[1].in_use, 4);
  EXPECT_EQ(stats.holding, 0);
}

// ---- Bad input ----

// Every backend validates through the same code: the same error type and message, word for word,
// as the in-process set's.
TEST_P(LimitSetConformanceTest, BadInputErrorsAreTheInProcessSetsWordForWord) {
  const std::vector<Limit> limits = {RateLimit("tok", 100, "day", RateLimitAlgorithm::kGcra),
                                     RateLimit("win", 100, "day"), CallLimit(1000, "day"),
                                     ResourceLimit("conn", 2)};
  Warnings reference_warnings;
  LimitSetOptions reference_options;  // kThreads.
  reference_options.on_warning = reference_warnings.Sink();
  const LimitSet reference = LimitSet::Create(limits, std::move(reference_options));
  const LimitSet set = Make(limits);

  // Each case acts on one set and leaves nothing held.
  using Case = std::function<void(const LimitSet&)>;
  const std::vector<std::pair<std::string, Case>> cases = {
      {"unknown key",
       [](const LimitSet& s) {
         s.Acquire({{"nope", 1}, {"tok", 1}}, kGuard);
       }},
      {"repeated key",
       [](const LimitSet& s) {
         s.Acquire({{"tok", 1}, {"tok", 2}}, kGuard);
       }},
      {"above the capacity",
       [](const LimitSet& s) {
         s.TryAcquire({{"tok", 101}});
       }},
      {"resource above the capacity",
       [](const LimitSet& s) {
         s.Acquire({{"tok", 1}, {"conn", 3}}, kGuard);
       }},
      {"negative amount",
       [](const LimitSet& s) {
         s.Acquire({{"tok", -1}}, kGuard);
       }},
      {"NaN amount",
       [](const LimitSet& s) {
         s.Acquire({{"tok", kNaN}}, kGuard);
       }},
      {"infinite amount",
       [](const LimitSet& s) {
         s.AcquireAsync({{"tok", kInf}});
       }},
      {"fraction of a whole unit",
       [](const LimitSet& s) {
         s.Acquire({{"win", 1.5}}, kGuard);
       }},
      {"fraction of a resource",
       [](const LimitSet& s) {
         s.Acquire({{"tok", 1}, {"conn", 0.5}}, kGuard);
       }},
      {"whole units above 2^53 - 1",
       [](const LimitSet& s) {
         s.Acquire({{"win", 1e16}}, kGuard);
       }},
      {"empty request with a rate limit", [](const LimitSet& s) { s.Acquire({}, kGuard); }},
      {"negative timeout",
       [](const LimitSet& s) {
         s.Acquire({{"tok", 1}}, -absl::Seconds(1));
       }},
      {"negative async timeout",
       [](const LimitSet& s) {
         s.AcquireAsync({{"tok", 1}}, -absl::Nanoseconds(1));
       }},
      {"prepare an unknown key",
       [](const LimitSet& s) {
         s.Prepare({{"nope", 1}});
       }},
      {"handle of an unknown key", [](const LimitSet& s) { s.Handle("nope"); }},
      {"operator[] of an unknown key", [](const LimitSet& s) { s["nope"]; }},
      {"Stats().at() of an unknown key", [](const LimitSet& s) { s.Stats().at("nope"); }},
      {"update of a key outside the acquisition",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Update({{"win", 1}});
       }},
      {"negative update",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Update({{"tok", -1}});
       }},
      {"NaN update",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Update({{"tok", kNaN}});
       }},
      {"update naming a key twice",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Update({{"tok", 1}, {"tok", 1}});
       }},
      {"fractional update of a whole-unit limit",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"win", 2}}, kGuard);
         a.Update({{"win", 2}});
         a.Update({{"win", 1.5}});
       }},
      {"implicit call updated with 2",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Update({{"call_count", 2}});
       }},
      {"update with an empty handle",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Update(LimitHandle(), 1);
       }},
      {"update after release",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Update({{"tok", 1}});
         a.Release();
         a.Update({{"tok", 1}});
       }},
      {"release without update",
       [](const LimitSet& s) {
         LimitAcquisition a = s.Acquire({{"tok", 1}}, kGuard);
         a.Release();
       }},
  };
  for (const auto& [name, action] : cases) {
    SCOPED_TRACE(name);
    const std::string expected = ErrorOf([&] { action(reference); });
    EXPECT_NE(expected, "no error");
    EXPECT_EQ(ErrorOf([&] { action(set); }), expected);
  }
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().holding, 0);

  // Construction errors too.
  const auto duplicate = [&](const std::function<LimitSet(std::vector<Limit>)>& create) {
    return ErrorOf([&] { create({ResourceLimit("k", 1), RateLimit("k", 1, "second")}); });
  };
  EXPECT_EQ(duplicate([&](std::vector<Limit> l) { return Make(std::move(l)); }),
            duplicate([](std::vector<Limit> l) { return LimitSet::Create(std::move(l)); }));
}

}  // namespace
}  // namespace concurry

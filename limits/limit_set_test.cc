#include "limits/limit_set.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/limit.h"
#include "limits/rate_window.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::concurry::testkit::FakeClock;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::ThrowsMessage;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Bounds real-time waits that should end at once; reaching it means the test failed.
constexpr absl::Duration kGuard = absl::Seconds(30);

LimitStats StatsOf(const LimitSet& set, absl::string_view key) {
  for (LimitStats& stats : set.Stats().limits) {
    if (stats.key == key) return stats;
  }
  ADD_FAILURE() << "no limit '" << key << "'";
  return {};
}
double InUse(const LimitSet& set, absl::string_view key) { return StatsOf(set, key).in_use; }
double Available(const LimitSet& set, absl::string_view key) { return StatsOf(set, key).available; }

// Collects the set's warnings.
struct Warnings {
  std::vector<std::string> Get() {
    absl::MutexLock lock(&mu);
    return messages;
  }
  std::function<void(absl::string_view)> Sink() {
    return [this](absl::string_view message) {
      absl::MutexLock lock(&mu);
      messages.emplace_back(message);
    };
  }
  absl::Mutex mu;
  std::vector<std::string> messages ABSL_GUARDED_BY(mu);
};

// Runs Acquire(request, timeout) on its own thread and holds the acquisition there until
// Finish() (or destruction); the test reads the outcome once done() is true.
class Acquirer {
 public:
  Acquirer(LimitSet set, std::vector<std::pair<std::string, double>> request,
           absl::Duration timeout = absl::InfiniteDuration())
      : request_(std::move(request)) {
    thread_ = std::thread([this, set = std::move(set), timeout] {
      std::vector<LimitAmount> amounts;
      for (const auto& [key, amount] : request_) amounts.push_back({key, amount});
      try {
        acquisition_ = set.Acquire(amounts, timeout);
      } catch (...) {
        error_ = std::current_exception();
      }
      done_.Notify();
      finish_.WaitForNotification();
      if (acquisition_.has_value() && acquisition_->held()) {
        for (const auto& [key, amount] : request_) {
          if (set[key].kind() != LimitKind::kResource) {
            acquisition_->Update({{{key, amount}}});
          }
        }
      }
      acquisition_.reset();
    });
  }
  ~Acquirer() { Finish(); }

  bool done() const { return done_.HasBeenNotified(); }
  // Waits until Acquire() has returned or thrown; false if that takes longer than kGuard.
  bool WaitDone() const { return done_.WaitForNotificationWithTimeout(kGuard); }
  // After done(): whether it acquired, and the error otherwise.
  bool acquired() const { return acquisition_.has_value(); }
  std::exception_ptr error() const { return error_; }
  LimitAcquisition& acquisition() { return *acquisition_; }
  // Reports the full request as used (rate limits), releases, and joins the thread.
  void Finish() {
    if (!finish_.HasBeenNotified()) finish_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  const std::vector<std::pair<std::string, double>> request_;
  std::optional<LimitAcquisition> acquisition_;
  std::exception_ptr error_;
  absl::Notification done_;
  absl::Notification finish_;
  std::thread thread_;
};

template <typename E>
bool Is(std::exception_ptr error, std::string* message = nullptr) {
  if (error == nullptr) return false;
  try {
    std::rethrow_exception(error);
  } catch (const E& e) {
    if (message != nullptr) *message = e.what();
    return true;
  } catch (...) {
    return false;
  }
}

// Calls TryAcquire on a thread that holds nothing (so it is not exempt from the FIFO queue).
bool TryAcquireElsewhere(const LimitSet& set, std::vector<LimitAmount> request) {
  bool acquired = false;
  std::thread([&] { acquired = set.TryAcquire(request).has_value(); }).join();
  return acquired;
}

class LimitSetTest : public ::testing::Test {
 protected:
  LimitSet Make(std::vector<Limit> limits, LimitSetOptions options = {}) {
    options.clock = &clock_;
    if (!options.on_warning) options.on_warning = warnings_.Sink();
    return LimitSet::Create(std::move(limits), std::move(options));
  }

  FakeClock clock_;
  Warnings warnings_;
};

// ---- Construction and lookup ----

TEST_F(LimitSetTest, RejectsDuplicateKeys) {
  EXPECT_THAT(
      [&] {
        Make({ResourceLimit("k", 1), RateLimit("k", 1, "second")});
      },
      ThrowsMessage<InvalidOptionError>("Duplicate limit key: 'k'"));
  EXPECT_THAT(
      [&] {
        Make({CallLimit(1, "second"), CallLimit(2, "minute")});
      },
      ThrowsMessage<InvalidOptionError>("Duplicate limit key: 'call_count'"));
}

TEST_F(LimitSetTest, RejectsBadOptions) {
  EXPECT_THAT([&] { Make({ResourceLimit("k", 1)}, {.max_holders = 0}); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("max_holders must be >= 1, got 0")));
  EXPECT_THAT([&] { Make({ResourceLimit("k", 1)}, {.sharing = LimitSharing::kProcesses}); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("real clock")));
  EXPECT_THAT(
      [&] { Make({ResourceLimit("k", 1)}, {.lease_check_interval = absl::ZeroDuration()}); },
      ThrowsMessage<InvalidOptionError>(HasSubstr("lease_check_interval must be positive")));
}

TEST_F(LimitSetTest, RejectsUnknownFairnessAndSharingValues) {
  EXPECT_THAT([&] { Make({ResourceLimit("k", 1)}, {.fairness = static_cast<LimitFairness>(7)}); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitSetOptions::fairness: unknown value 7; allowed: kFifo, kBarging"));
  EXPECT_THAT(
      [&] { Make({ResourceLimit("k", 1)}, {.sharing = static_cast<LimitSharing>(-1)}); },
      ThrowsMessage<InvalidOptionError>(
          "LimitSetOptions::sharing: unknown value -1; allowed: kThreads, kProcesses, kHosts"));
  // Checked for the no-op set as well.
  EXPECT_THAT([&] { Make({}, {.fairness = static_cast<LimitFairness>(2)}); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("fairness: unknown value 2")));
}

TEST_F(LimitSetTest, ExposesLimitsAndOptions) {
  const LimitSet set = Make({RateLimit("tokens", 100, "minute", RateLimitAlgorithm::kGcra),
                             CallLimit(10, "second"), ResourceLimit("conn", 4)},
                            {.fairness = LimitFairness::kBarging});
  EXPECT_FALSE(set.no_op());
  EXPECT_EQ(set.sharing(), LimitSharing::kThreads);
  EXPECT_EQ(set.fairness(), LimitFairness::kBarging);
  ASSERT_THAT(set.limits(), SizeIs(3));
  EXPECT_EQ(set.limits()[0].key(), "tokens");
  EXPECT_EQ(set.limits()[1].key(), "call_count");
  EXPECT_EQ(set.limits()[2].key(), "conn");
  EXPECT_EQ(set["tokens"].capacity(), 100);
  EXPECT_EQ(set["conn"].kind(), LimitKind::kResource);
  ASSERT_NE(set.Find("call_count"), nullptr);
  EXPECT_EQ(set.Find("call_count")->window(), absl::Seconds(1));
  EXPECT_EQ(set.Find("nope"), nullptr);
  EXPECT_THAT([&] { set["nope"]; },
              ThrowsMessage<InvalidOptionError>(
                  AllOf(HasSubstr("no limit 'nope'"), HasSubstr("[tokens, call_count, conn]"))));

  const LimitSetStats stats = set.Stats();
  ASSERT_THAT(stats.limits, SizeIs(3));
  EXPECT_EQ(stats.limits[0].key, "tokens");
  EXPECT_EQ(stats.limits[0].kind, LimitKind::kRate);
  EXPECT_EQ(stats.limits[0].algorithm, RateLimitAlgorithm::kGcra);
  EXPECT_EQ(stats.limits[0].window, absl::Minutes(1));
  EXPECT_EQ(stats.limits[0].available, 100);
  EXPECT_EQ(stats.limits[1].kind, LimitKind::kCall);
  EXPECT_EQ(stats.limits[2].capacity, 4);
  EXPECT_EQ(stats.limits[2].in_use, 0);
  EXPECT_EQ(stats.acquisitions, 0);
  EXPECT_EQ(stats.holding, 0);
}

// ---- Building the request ----

TEST_F(LimitSetTest, EmptyRequestWithARateLimitIsAnError) {
  const LimitSet set = Make({RateLimit("tokens", 10, "second"), ResourceLimit("conn", 1)});
  const auto message = AllOf(HasSubstr("Must specify requested amount for RateLimit 'tokens'"),
                             HasSubstr("RateLimits require explicit token amounts"));
  EXPECT_THAT([&] { set.Acquire(); }, ThrowsMessage<InvalidOptionError>(message));
  EXPECT_THAT([&] { set.TryAcquire(); }, ThrowsMessage<InvalidOptionError>(message));
  EXPECT_THAT([&] { set.AcquireAsync(); }, ThrowsMessage<InvalidOptionError>(message));
  EXPECT_EQ(InUse(set, "conn"), 0);
}

TEST_F(LimitSetTest, UnnamedCallAndResourceLimitsAreTakenWithOne) {
  const LimitSet set = Make({RateLimit("tokens", 100, "second", RateLimitAlgorithm::kGcra),
                             CallLimit(10, "second"), ResourceLimit("conn", 4)});
  LimitAcquisition acquired = set.Acquire({{"tokens", 5}});
  EXPECT_TRUE(acquired.held());
  EXPECT_EQ(acquired.requested("tokens"), 5);
  EXPECT_EQ(acquired.requested("call_count"), 1);
  EXPECT_EQ(acquired.requested("conn"), 1);
  EXPECT_EQ(acquired.requested("nope"), 0);
  const std::vector<LimitAmount> amounts = acquired.amounts();
  ASSERT_THAT(amounts, SizeIs(3));
  EXPECT_EQ(amounts[0].key, "tokens");
  EXPECT_EQ(amounts[0].amount, 5);
  EXPECT_EQ(amounts[1].key, "call_count");
  EXPECT_EQ(amounts[1].amount, 1);
  EXPECT_EQ(amounts[2].key, "conn");
  EXPECT_EQ(amounts[2].amount, 1);
  EXPECT_EQ(InUse(set, "tokens"), 5);
  EXPECT_EQ(InUse(set, "call_count"), 1);
  EXPECT_EQ(InUse(set, "conn"), 1);
  EXPECT_EQ(set.Stats().holding, 1);
  acquired.Update({{"tokens", 5}});
  acquired.Release();  // The implicit CallLimit needs no Update().
  EXPECT_FALSE(acquired.held());
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(InUse(set, "call_count"), 1);  // Calls are not given back.
  EXPECT_EQ(set.Stats().holding, 0);
  EXPECT_EQ(set.Stats().acquisitions, 1);
  EXPECT_THAT(warnings_.Get(), IsEmpty());
}

TEST_F(LimitSetTest, EmptyRequestTakesEveryCallAndResourceLimit) {
  const LimitSet set = Make({CallLimit(10, "second"), ResourceLimit("conn", 2)});
  LimitAcquisition acquired = set.Acquire();
  EXPECT_EQ(acquired.requested("call_count"), 1);
  EXPECT_EQ(acquired.requested("conn"), 1);
  EXPECT_NO_THROW(acquired.Release());
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().missing_updates, 0);
}

TEST_F(LimitSetTest, UnnamedRateLimitIsNotTaken) {
  const LimitSet set = Make({RateLimit("a", 10, "second", RateLimitAlgorithm::kGcra),
                             RateLimit("b", 10, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition acquired = set.Acquire({{"a", 3}});
  EXPECT_EQ(acquired.requested("b"), 0);
  EXPECT_THAT(acquired.amounts(), SizeIs(1));
  EXPECT_EQ(InUse(set, "a"), 3);
  EXPECT_EQ(InUse(set, "b"), 0);
  acquired.Update({{"a", 3}});
  EXPECT_NO_THROW(acquired.Release());
}

TEST_F(LimitSetTest, RejectsUnknownKey) {
  const LimitSet set = Make({ResourceLimit("a", 1), ResourceLimit("b", 1)});
  EXPECT_THAT(
      [&] {
        set.Acquire({{"nope", 1}});
      },
      ThrowsMessage<InvalidOptionError>(
          AllOf(HasSubstr("unknown limit key 'nope'"), HasSubstr("the set has: a, b"))));
  EXPECT_THAT(
      [&] {
        set.TryAcquire({{"a", 1}, {"nope", 1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("unknown limit key 'nope'")));
  EXPECT_EQ(InUse(set, "a"), 0);
  EXPECT_EQ(set.Stats().acquisitions, 0);
}

// Keys are compared a word at a time: keys of every length (under 4 bytes, 4-7, exactly 8, more
// words, a partial last word) that differ from a limit's key in one byte (first, middle or last),
// or are a prefix of it, are unknown in requests and in Update(); the exact keys match.
TEST_F(LimitSetTest, KeysDifferingInOneByteAreNotTheLimitsKey) {
  const std::vector<std::string> keys = {"a",
                                         "bcd",
                                         "efgh",
                                         "ijklmno",
                                         "pqrstuvw",
                                         "xyzABCDEF",
                                         "0123456789abcdef",
                                         "GHIJKLMNOPQRSTUVW",
                                         "ghijklmnopqrstuvwxyz012"};
  std::vector<Limit> limits;
  for (const std::string& key : keys) limits.push_back(ResourceLimit(key, 1));
  const LimitSet set = Make(std::move(limits));
  for (const std::string& key : keys) {
    std::vector<std::string> near = {key.substr(0, key.size() - 1), key + "a"};
    for (const size_t at : {size_t{0}, key.size() / 2, key.size() - 1}) {
      std::string changed = key;
      changed[at] = static_cast<char>(changed[at] ^ 1);
      near.push_back(changed);
    }
    LimitAcquisition acquired = set.Acquire({{key, 1}});
    EXPECT_EQ(acquired.requested(key), 1) << key;
    for (const std::string& other : near) {
      if (other.empty() || std::find(keys.begin(), keys.end(), other) != keys.end()) continue;
      EXPECT_THAT(
          [&] {
            set.TryAcquire({{other, 1}});
          },
          ThrowsMessage<InvalidOptionError>(HasSubstr("unknown limit key")))
          << other;
      EXPECT_THAT(
          [&] {
            acquired.Update({{other, 1}});
          },
          ThrowsMessage<InvalidOptionError>(HasSubstr("is not part of this acquisition")))
          << other;
    }
    EXPECT_NO_THROW(acquired.Update({{key, 1}})) << key;
    EXPECT_TRUE(acquired.charge(key)->updated) << key;
  }
}

TEST_F(LimitSetTest, RejectsRepeatedKey) {
  const LimitSet set = Make({ResourceLimit("a", 5)});
  EXPECT_THAT(
      [&] {
        set.Acquire({{"a", 1}, {"a", 2}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("key 'a' appears twice")));
  EXPECT_EQ(InUse(set, "a"), 0);
}

TEST_F(LimitSetTest, RejectsAmountAboveCapacity) {
  const LimitSet set = Make({RateLimit("a", 10, "second"), ResourceLimit("conn", 4)});
  EXPECT_THAT(
      [&] {
        set.Acquire({{"a", 11}});
      },
      ThrowsMessage<InvalidOptionError>(
          AllOf(HasSubstr("Requested amount (11) exceeds capacity (10) for limit 'a'"),
                HasSubstr("can never be fulfilled"))));
  EXPECT_THAT(
      [&] {
        set.TryAcquire({{"a", 1}, {"conn", 5}});
      },
      ThrowsMessage<InvalidOptionError>(
          AllOf(HasSubstr("exceeds capacity (4)"), HasSubstr("can never be fulfilled"))));
  EXPECT_EQ(InUse(set, "a"), 0);
  EXPECT_EQ(InUse(set, "conn"), 0);
}

TEST_F(LimitSetTest, RejectsAmountsThatAreNegativeOrNotFinite) {
  const LimitSet set = Make({RateLimit("a", kInf, "second", RateLimitAlgorithm::kGcra)});
  for (const double amount : {-1.0, -1e-300, kNaN, kInf, -kInf}) {
    SCOPED_TRACE(amount);
    EXPECT_THAT(
        [&] {
          set.Acquire({{"a", amount}});
        },
        ThrowsMessage<InvalidOptionError>(
            AllOf(HasSubstr("'a'"), HasSubstr("must be >= 0 and finite"))));
  }
  // An infinite capacity admits any finite amount.
  LimitAcquisition acquired = set.Acquire({{"a", 1e12}});
  acquired.Update({{"a", 1e12}});
}

TEST_F(LimitSetTest, WholeUnitAmountsStopAt2To53Minus1) {
  // With an infinite capacity nothing else bounds them; beyond 2^53 - 1 a double cannot count.
  const LimitSet set = Make({RateLimit("window", kInf, "second"),
                             RateLimit("gcra", kInf, "second", RateLimitAlgorithm::kGcra)});
  EXPECT_THAT(
      [&] {
        set.Acquire({{"window", 1e16}});
      },
      ThrowsMessage<InvalidOptionError>(
          "LimitSet::Acquire: limit 'window' (sliding_window) counts whole units, at most "
          "9007199254740991, got 1e+16"));
  LimitAcquisition acquired = set.Acquire({{"window", 9007199254740991.0}, {"gcra", 1e300}});
  EXPECT_THAT(
      [&] {
        acquired.Update({{"window", 9007199254740992.0}});
      },
      ThrowsMessage<InvalidOptionError>(
          "LimitAcquisition::Update: 'window' (sliding_window) counts whole units, at most "
          "9007199254740991, got 9007199254740992"));
  acquired.Update({{"window", 9007199254740991.0}, {"gcra", 1e300}});
}

TEST_F(LimitSetTest, ImplicitCallLimitOfOnePerTwoSecondsWaitsExactlyTwoSeconds) {
  // Every CallLimit and ResourceLimit holds at least one unit (their constructors reject less),
  // so the implicit 1 always fits and nothing waits for the impossible: one call per two seconds
  // is CallLimit(1, 2 s), and its implicit acquisitions wait exactly two seconds, whatever the
  // algorithm.
  EXPECT_THROW(CallLimit(0.5, "second"), InvalidOptionError);
  for (const RateLimitAlgorithm algorithm :
       {RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
        RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
        RateLimitAlgorithm::kGcra}) {
    SCOPED_TRACE(RateLimitAlgorithmName(algorithm));
    const LimitSet set = Make({CallLimit(1, absl::Seconds(2), algorithm)});
    set.Acquire();
    EXPECT_FALSE(TryAcquireElsewhere(set, {}));
    // The fake clock starts on an even second, so a fixed window also ends 2 s from now.
    Acquirer waiter(set, {});
    clock_.BlockUntilWaiters(1);
    clock_.Advance(absl::Seconds(2) - absl::Nanoseconds(1));
    EXPECT_FALSE(waiter.done());
    clock_.Advance(absl::Nanoseconds(1));
    ASSERT_TRUE(waiter.WaitDone());
    EXPECT_TRUE(waiter.acquired());
    waiter.Finish();
    clock_.Advance(absl::Seconds(2));
  }
}

TEST_F(LimitSetTest, AmountZeroLeavesALimitOutSoNestedAcquisitionsKeepOneConnection) {
  const LimitSet set =
      Make({RateLimit("tokens", 100, "second", RateLimitAlgorithm::kGcra),
            CallLimit(1000, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  LimitAcquisition session = set.Acquire({{"tokens", 1}});
  session.Update({{"tokens", 1}});
  EXPECT_EQ(InUse(set, "conn"), 1);
  // Without the 0 this would wait forever for a second connection held by this very thread.
  LimitAcquisition inner = set.Acquire({{"tokens", 10}, {"conn", 0}}, absl::ZeroDuration());
  EXPECT_EQ(inner.requested("conn"), 0);
  EXPECT_EQ(inner.requested("call_count"), 1);  // Not named: still taken implicitly.
  inner.Update({{"tokens", 10}});
  EXPECT_EQ(InUse(set, "conn"), 1);
  inner.Release();
  EXPECT_EQ(InUse(set, "conn"), 1);
  session.Release();
  EXPECT_EQ(InUse(set, "conn"), 0);
  // A request that names only zeros takes just the implicit limits it did not name.
  LimitAcquisition calls_only = set.Acquire({{"tokens", 0}, {"conn", 0}});
  EXPECT_EQ(calls_only.amounts().size(), 1u);
  EXPECT_EQ(calls_only.requested("call_count"), 1);
}

TEST_F(LimitSetTest, FractionalAmountsOnlyForTokenBucketAndGcra) {
  const LimitSet set = Make({RateLimit("sliding", 10, "second"),
                             RateLimit("leaky", 10, "second", RateLimitAlgorithm::kLeakyBucket),
                             RateLimit("gcra", 10, "second", RateLimitAlgorithm::kGcra),
                             RateLimit("token", 10, "second", RateLimitAlgorithm::kTokenBucket),
                             ResourceLimit("conn", 4)});
  EXPECT_THAT(
      [&] {
        set.Acquire({{"sliding", 1.5}});
      },
      ThrowsMessage<InvalidOptionError>(
          AllOf(HasSubstr("'sliding' (sliding_window) counts whole units, got 1.5"),
                HasSubstr("use TokenBucket or GCRA"))));
  EXPECT_THAT(
      [&] {
        set.Acquire({{"leaky", 0.5}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("counts whole units")));
  EXPECT_THAT(
      [&] {
        set.Acquire({{"gcra", 1}, {"conn", 1.5}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("'conn' (a ResourceLimit) counts whole "
                                                  "units, got 1.5")));
  LimitAcquisition acquired = set.Acquire({{"gcra", 2.5}, {"token", 0.25}, {"sliding", 2.0}});
  EXPECT_DOUBLE_EQ(InUse(set, "gcra"), 2.5);
  EXPECT_DOUBLE_EQ(InUse(set, "token"), 0.25);
  EXPECT_EQ(InUse(set, "sliding"), 2);
  acquired.Update({{"gcra", 2.5}, {"token", 0.25}, {"sliding", 2}});
}

class LimitSetRefundableTest : public LimitSetTest,
                               public ::testing::WithParamInterface<RateLimitAlgorithm> {};

INSTANTIATE_TEST_SUITE_P(Refundable, LimitSetRefundableTest,
                         ::testing::Values(RateLimitAlgorithm::kGcra,
                                           RateLimitAlgorithm::kTokenBucket),
                         [](const ::testing::TestParamInfo<RateLimitAlgorithm>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST_P(LimitSetRefundableTest, TinyFractionalCapacity) {
  const LimitSet set = Make({RateLimit("t", 0.0001, "day", GetParam())});
  EXPECT_THAT(
      [&] {
        set.Acquire({{"t", 0.001}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("exceeds capacity")));
  LimitAcquisition acquired = set.Acquire({{"t", 0.000084}});
  EXPECT_NEAR(InUse(set, "t"), 0.000084, 1e-12);
  EXPECT_FALSE(set.TryAcquire({{"t", 0.0001}}).has_value());
  acquired.Update({{"t", 0.000084}});
  acquired.Release();

  const LimitSet fresh = Make({RateLimit("t", 0.0001, "day", GetParam())});
  LimitAcquisition all = fresh.Acquire({{"t", 0.0001}});
  EXPECT_NEAR(Available(fresh, "t"), 0, 1e-12);
  all.Update({{"t", 0.00004}});
  all.Release();
  EXPECT_NEAR(Available(fresh, "t"), 0.00006, 1e-12);
}

TEST_P(LimitSetRefundableTest, UnusedTokensAreRefundedOnRelease) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", GetParam())});
  LimitAcquisition acquired = set.Acquire({{"tok", 6}});
  EXPECT_DOUBLE_EQ(Available(set, "tok"), 4);
  acquired.Update({{"tok", 2}});
  EXPECT_DOUBLE_EQ(Available(set, "tok"), 4);  // Refunded only on release.
  acquired.Release();
  EXPECT_DOUBLE_EQ(Available(set, "tok"), 8);
  EXPECT_THAT(warnings_.Get(), IsEmpty());
}

TEST_P(LimitSetRefundableTest, TheLastUpdateWins) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", GetParam())});
  LimitAcquisition acquired = set.Acquire({{"tok", 6}});
  acquired.Update({{"tok", 1}});
  acquired.Update({{"tok", 5}});
  acquired.Release();
  EXPECT_DOUBLE_EQ(Available(set, "tok"), 5);
}

TEST_F(LimitSetTest, WindowAlgorithmsDoNotRefund) {
  const LimitSet set = Make({RateLimit("tok", 10, "second")});
  LimitAcquisition acquired = set.Acquire({{"tok", 6}});
  acquired.Update({{"tok", 2}});
  acquired.Release();
  EXPECT_EQ(Available(set, "tok"), 4);
}

// ---- All or nothing ----

TEST_F(LimitSetTest, TakesNothingWhenOneLimitIsShort) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 2)});
  {
    LimitAcquisition both_connections = set.Acquire({{"conn", 2}});
    // Tokens are there, the implicit connection is not.
    EXPECT_FALSE(set.TryAcquire({{"tok", 5}}).has_value());
    EXPECT_EQ(InUse(set, "tok"), 0);
    EXPECT_EQ(InUse(set, "conn"), 2);
  }
  LimitAcquisition eight = set.Acquire({{"tok", 8}});
  // A connection is there, the tokens are not.
  EXPECT_FALSE(set.TryAcquire({{"tok", 5}}).has_value());
  EXPECT_EQ(InUse(set, "tok"), 8);
  EXPECT_EQ(InUse(set, "conn"), 1);
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.acquisitions, 2);
  EXPECT_EQ(stats.holding, 1);
  EXPECT_EQ(stats.timeouts, 0);  // A failed TryAcquire is not a timeout.
  eight.Update({{"tok", 8}});
}

TEST_F(LimitSetTest, TryAcquireSucceedsWhenEverythingIsAvailable) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 2)});
  std::optional<LimitAcquisition> acquired = set.TryAcquire({{"tok", 10}});
  ASSERT_TRUE(acquired.has_value());
  EXPECT_TRUE(acquired->held());
  EXPECT_EQ(InUse(set, "tok"), 10);
  EXPECT_EQ(InUse(set, "conn"), 1);
  acquired->Update({{"tok", 10}});
}

// ---- Timeouts ----

TEST_F(LimitSetTest, AcquireTimesOutExactlyAtTheDeadline) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire();
  Acquirer waiter(set, {}, absl::Seconds(1));
  clock_.BlockUntilWaiters(1);
  EXPECT_EQ(set.Stats().waiting, 1);
  clock_.Advance(absl::Seconds(1) - absl::Nanoseconds(1));
  EXPECT_FALSE(waiter.done());
  EXPECT_EQ(clock_.NumWaiters(), 1);
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(waiter.WaitDone());
  std::string message;
  EXPECT_TRUE(Is<TimeoutError>(waiter.error(), &message));
  EXPECT_THAT(message, HasSubstr("failed to acquire all limits within 1s"));
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.timeouts, 1);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.acquisitions, 1);
  EXPECT_EQ(stats.limits[0].in_use, 1);
}

TEST_F(LimitSetTest, TimeoutTakesNothing) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 2)});
  LimitAcquisition all_tokens = set.Acquire({{"tok", 10}});
  all_tokens.Update({{"tok", 10}});
  // 5 tokens come back after 500 ms; the deadline is at 200 ms.
  Acquirer waiter(set, {{"tok", 5}}, absl::Milliseconds(200));
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(200));
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_TRUE(Is<TimeoutError>(waiter.error()));
  EXPECT_EQ(InUse(set, "conn"), 1);
  EXPECT_DOUBLE_EQ(InUse(set, "tok"), 8);  // 200 ms refilled 2.
  EXPECT_EQ(set.Stats().timeouts, 1);
}

TEST_F(LimitSetTest, ZeroTimeoutTriesOnce) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  {
    LimitAcquisition first = set.Acquire({}, absl::ZeroDuration());
    EXPECT_THAT([&] { set.Acquire({}, absl::ZeroDuration()); },
                ThrowsMessage<TimeoutError>(HasSubstr("within 0")));
    EXPECT_EQ(set.Stats().timeouts, 1);
  }
  EXPECT_NO_THROW(set.Acquire({}, absl::ZeroDuration()));
  EXPECT_EQ(clock_.NumWaiters(), 0);
}

TEST_F(LimitSetTest, RejectsANegativeTimeout) {
  // It used to be taken as 0; everywhere else in the library a negative timeout is an error.
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  EXPECT_THAT([&] { set.Acquire({}, -absl::Seconds(1)); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitSet::Acquire: timeout must be >= 0 (or infinite), got -1s"));
  EXPECT_THAT([&] { set.Acquire({}, -absl::InfiniteDuration()); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitSet::Acquire: timeout must be >= 0 (or infinite), got -inf"));
  EXPECT_THAT([&] { set.AcquireAsync({}, -absl::Nanoseconds(1)); },
              ThrowsMessage<InvalidOptionError>(
                  "LimitSet::AcquireAsync: timeout must be >= 0 (or infinite), got -1ns"));
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.timeouts, 0);
  EXPECT_EQ(stats.acquisitions, 0);
  EXPECT_EQ(stats.limits[0].in_use, 0);
  // The no-op set too.
  EXPECT_THAT([] { LimitSet::NoOp().Acquire({}, -absl::Seconds(2)); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("got -2s")));
}

// ---- Waking up ----

TEST_F(LimitSetTest, BlockedAcquireWakesWhenAResourceIsReleased) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire();
  Acquirer waiter(set, {});
  clock_.BlockUntilWaiters(1);
  EXPECT_FALSE(waiter.done());
  held.Release();
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_TRUE(waiter.acquired());
  EXPECT_EQ(clock_.Now(), FakeClock::DefaultStartTime());  // No time passed.
  EXPECT_EQ(InUse(set, "conn"), 1);
  waiter.Finish();
  EXPECT_EQ(InUse(set, "conn"), 0);
}

// After 10 units at the (window-aligned) start time, the wait for one more.
absl::Duration WaitForOneAfterBurst(RateLimitAlgorithm algorithm) {
  switch (algorithm) {
    case RateLimitAlgorithm::kSlidingWindow:
    case RateLimitAlgorithm::kFixedWindow:
      return absl::Seconds(1);
    default:
      return absl::Milliseconds(100);
  }
}

class LimitSetAlgorithmTest : public LimitSetTest,
                              public ::testing::WithParamInterface<RateLimitAlgorithm> {};

INSTANTIATE_TEST_SUITE_P(All, LimitSetAlgorithmTest,
                         ::testing::Values(RateLimitAlgorithm::kTokenBucket,
                                           RateLimitAlgorithm::kLeakyBucket,
                                           RateLimitAlgorithm::kSlidingWindow,
                                           RateLimitAlgorithm::kFixedWindow,
                                           RateLimitAlgorithm::kGcra),
                         [](const ::testing::TestParamInfo<RateLimitAlgorithm>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST_P(LimitSetAlgorithmTest, BlockedAcquireWakesExactlyWhenTheRateLimitRefills) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", GetParam()), ResourceLimit("conn", 2)});
  LimitAcquisition burst = set.Acquire({{"tok", 10}});
  burst.Update({{"tok", 10}});
  burst.Release();
  Acquirer waiter(set, {{"tok", 1}});
  clock_.BlockUntilWaiters(1);
  const absl::Duration wait = WaitForOneAfterBurst(GetParam());
  clock_.Advance(wait - absl::Nanoseconds(1));
  EXPECT_FALSE(waiter.done());
  EXPECT_EQ(InUse(set, "conn"), 0);
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_TRUE(waiter.acquired());
  EXPECT_EQ(InUse(set, "conn"), 1);
  EXPECT_EQ(set.Stats().timeouts, 0);
}

TEST_P(LimitSetAlgorithmTest, OveruseIsChargedAndWarned) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", GetParam())});
  LimitAcquisition acquired = set.Acquire({{"tok", 2}});
  acquired.Update({{"tok", 5}});
  EXPECT_THAT(warnings_.Get(), ElementsAre(AllOf(HasSubstr("usage above the request"),
                                                 HasSubstr("'tok' used 5 of 2 requested"))));
  EXPECT_EQ(set.Stats().overuse_reports, 1);
  EXPECT_DOUBLE_EQ(InUse(set, "tok"), 5);
  acquired.Release();
  EXPECT_DOUBLE_EQ(InUse(set, "tok"), 5);
  EXPECT_FALSE(set.TryAcquire({{"tok", 6}}).has_value());
}

TEST_P(LimitSetAlgorithmTest, OveruseIsChargedBeyondTheCapacity) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", GetParam())});
  LimitAcquisition acquired = set.Acquire({{"tok", 2}});
  acquired.Update({{"tok", 15}});
  // Stats show at least the whole capacity in use (TokenBucket and GCRA cap in_use there).
  EXPECT_GE(InUse(set, "tok"), 10);
  EXPECT_EQ(Available(set, "tok"), 0);
  // Charged extra is never given back, and reporting it again charges nothing more.
  acquired.Update({{"tok", 15}});
  EXPECT_EQ(set.Stats().overuse_reports, 1);  // Nothing new to report or charge.
  acquired.Update({{"tok", 16}});             // One more unit: charged and reported.
  acquired.Release();
  EXPECT_EQ(set.Stats().overuse_reports, 2);
  // 16 units were charged at the start: half a window later there is still no room (with only 10
  // charged, the buckets would have refilled 5 by now).
  clock_.Advance(absl::Milliseconds(500));
  EXPECT_FALSE(set.TryAcquire({{"tok", 1}}).has_value());
  clock_.Advance(absl::Milliseconds(600));
  std::optional<LimitAcquisition> later = set.TryAcquire({{"tok", 1}});
  ASSERT_TRUE(later.has_value());
  later->Update({{"tok", 1}});
}

// ---- FIFO and barging ----

TEST_F(LimitSetTest, FifoServesABigResourceWaiterBeforeLaterSmallOnes) {
  const LimitSet set = Make({ResourceLimit("r", 3)});
  LimitAcquisition two = set.Acquire({{"r", 2}});
  Acquirer big(set, {{"r", 3}});
  clock_.BlockUntilWaiters(1);
  // One unit is free, but the big request came first.
  EXPECT_FALSE(TryAcquireElsewhere(set, {{"r", 1}}));
  Acquirer small(set, {{"r", 1}});
  clock_.BlockUntilWaiters(2);
  EXPECT_FALSE(small.done());
  EXPECT_EQ(InUse(set, "r"), 2);
  EXPECT_EQ(set.Stats().waiting, 2);
  two.Release();
  ASSERT_TRUE(big.WaitDone());
  EXPECT_TRUE(big.acquired());
  EXPECT_FALSE(small.done());
  EXPECT_EQ(InUse(set, "r"), 3);
  big.Finish();
  ASSERT_TRUE(small.WaitDone());
  EXPECT_TRUE(small.acquired());
  EXPECT_EQ(InUse(set, "r"), 1);
}

TEST_F(LimitSetTest, FifoServesABigRateWaiterBeforeLaterSmallOnes) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition burst = set.Acquire({{"tok", 10}});
  burst.Update({{"tok", 10}});
  burst.Release();
  Acquirer big(set, {{"tok", 10}});  // Admitted at 1 s.
  clock_.BlockUntilWaiters(1);
  Acquirer small(set, {{"tok", 1}});  // Would be admitted at 100 ms, but queues behind `big`.
  clock_.BlockUntilWaiters(2);
  clock_.Advance(absl::Milliseconds(100));
  EXPECT_FALSE(small.done());
  clock_.Advance(absl::Milliseconds(900) - absl::Nanoseconds(1));
  EXPECT_FALSE(big.done());
  EXPECT_FALSE(small.done());
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(big.WaitDone());
  EXPECT_TRUE(big.acquired());
  // Then `small` waits for one token after the second burst: 100 ms.
  EXPECT_FALSE(small.done());
  clock_.Advance(absl::Milliseconds(100) - absl::Nanoseconds(1));
  EXPECT_FALSE(small.done());
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(small.WaitDone());
  EXPECT_TRUE(small.acquired());
}

TEST_F(LimitSetTest, BargingLetsSmallRequestsPass) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra)},
                            {.fairness = LimitFairness::kBarging});
  LimitAcquisition burst = set.Acquire({{"tok", 10}});
  burst.Update({{"tok", 10}});
  burst.Release();
  Acquirer big(set, {{"tok", 10}});
  clock_.BlockUntilWaiters(1);
  Acquirer small(set, {{"tok", 1}});
  clock_.BlockUntilWaiters(2);
  clock_.Advance(absl::Milliseconds(100));
  ASSERT_TRUE(small.WaitDone());
  EXPECT_TRUE(small.acquired());
  EXPECT_FALSE(big.done());
  // `big` now needs until 1.1 s.
  clock_.Advance(absl::Milliseconds(1000) - absl::Nanoseconds(1));
  EXPECT_FALSE(big.done());
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(big.WaitDone());
  EXPECT_TRUE(big.acquired());
}

TEST_F(LimitSetTest, BargingTryAcquirePassesAWaiter) {
  const LimitSet set = Make({ResourceLimit("r", 3)}, {.fairness = LimitFairness::kBarging});
  LimitAcquisition two = set.Acquire({{"r", 2}});
  Acquirer big(set, {{"r", 3}});
  clock_.BlockUntilWaiters(1);
  EXPECT_TRUE(TryAcquireElsewhere(set, {{"r", 1}}));
  Acquirer small(set, {{"r", 1}});
  ASSERT_TRUE(small.WaitDone());
  EXPECT_TRUE(small.acquired());
  EXPECT_FALSE(big.done());
  small.Finish();
  two.Release();
  ASSERT_TRUE(big.WaitDone());
  EXPECT_TRUE(big.acquired());
}

// ---- Nested acquisitions ----

TEST_F(LimitSetTest, NestedAcquisitionOnOneThread) {
  const LimitSet set =
      Make({ResourceLimit("conn", 2), RateLimit("tok", 100, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition connection = set.Acquire({{"conn", 1}});
  {
    LimitAcquisition tokens = set.Acquire({{"tok", 30}});  // Takes the second connection too.
    EXPECT_EQ(InUse(set, "conn"), 2);
    tokens.Update({{"tok", 20}});
  }
  EXPECT_EQ(InUse(set, "conn"), 1);
  EXPECT_DOUBLE_EQ(InUse(set, "tok"), 20);
}

TEST_F(LimitSetTest, NestedAcquisitionPassesTheFifoQueue) {
  const LimitSet set =
      Make({ResourceLimit("conn", 2), RateLimit("tok", 100, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition connection = set.Acquire({{"conn", 1}});
  Acquirer waiter(set, {{"conn", 2}});  // Needs the connection this thread holds.
  clock_.BlockUntilWaiters(1);
  // This thread holds an acquisition, so it does not queue behind `waiter` (which would
  // deadlock: `waiter` needs what it holds).
  std::optional<LimitAcquisition> tried = set.TryAcquire({{"tok", 5}});
  ASSERT_TRUE(tried.has_value());
  tried->Update({{"tok", 5}});
  tried.reset();
  {
    LimitAcquisition inner = set.Acquire({{"tok", 5}}, absl::ZeroDuration());
    EXPECT_EQ(InUse(set, "conn"), 2);
    inner.Update({{"tok", 5}});
  }
  EXPECT_FALSE(waiter.done());
  connection.Release();
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_TRUE(waiter.acquired());
  EXPECT_EQ(InUse(set, "conn"), 2);
}

// ---- Update ----

TEST_F(LimitSetTest, UpdateRejectsNegativeAndRecordsNothing) {
  const LimitSet set = Make({RateLimit("a", 10, "second", RateLimitAlgorithm::kGcra),
                             RateLimit("b", 10, "second", RateLimitAlgorithm::kTokenBucket)});
  LimitAcquisition acquired = set.Acquire({{"a", 6}, {"b", 6}});
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", 2}, {"b", -1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("usage of 'b' must be >= 0")));
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", kNaN}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("usage of 'a' must be >= 0")));
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", kInf}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("finite")));
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", 1}, {"a", 2}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("'a' appears twice")));
  // Nothing was recorded: both still miss their update, and nothing is refunded.
  EXPECT_THAT([&] { acquired.Release(); },
              ThrowsMessage<LimitUsageError>(HasSubstr("Missing: [a, b]")));
  EXPECT_DOUBLE_EQ(InUse(set, "a"), 6);
  EXPECT_DOUBLE_EQ(InUse(set, "b"), 6);
}

TEST_F(LimitSetTest, UpdateRejectsKeysOutsideTheAcquisition) {
  const LimitSet set = Make({RateLimit("a", 10, "second", RateLimitAlgorithm::kGcra),
                             RateLimit("b", 10, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition acquired = set.Acquire({{"a", 1}});
  EXPECT_THAT(
      [&] {
        acquired.Update({{"zzz", 1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("'zzz' is not part of this acquisition")));
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", 1}, {"b", 1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("'b' is not part of this acquisition")));
  acquired.Update({{"a", 1}});
  EXPECT_NO_THROW(acquired.Release());
}

TEST_F(LimitSetTest, UpdateRejectsFractionsForWholeUnitAlgorithms) {
  const LimitSet set = Make({RateLimit("a", 10, "second")});
  LimitAcquisition acquired = set.Acquire({{"a", 2}});
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", 1.5}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("counts whole units")));
  acquired.Update({{"a", 1}});
}

TEST_F(LimitSetTest, ImplicitCallLimitUsageMustBeOne) {
  const LimitSet set = Make({CallLimit(10, "second")});
  LimitAcquisition acquired = set.Acquire();
  EXPECT_THAT(
      [&] {
        acquired.Update({{"call_count", 2}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("implicit acquisition")));
  EXPECT_THAT(
      [&] {
        acquired.Update({{"call_count", 0}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("implicit acquisition")));
  EXPECT_NO_THROW(acquired.Update({{"call_count", 1}}));
  EXPECT_NO_THROW(acquired.Release());
}

TEST_F(LimitSetTest, ExplicitCallLimitAboveOneNeedsAnUpdate) {
  const LimitSet set = Make({CallLimit(10, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition three = set.Acquire({{"call_count", 3}});
  EXPECT_THAT([&] { three.Release(); },
              ThrowsMessage<LimitUsageError>(HasSubstr("Missing: [call_count]")));
  LimitAcquisition four = set.Acquire({{"call_count", 4}});
  four.Update({{"call_count", 2}});
  EXPECT_NO_THROW(four.Release());
  EXPECT_DOUBLE_EQ(InUse(set, "call_count"), 5);  // 3 charged in full, 2 of 4 used.
  LimitAcquisition one = set.Acquire({{"call_count", 1}});
  EXPECT_NO_THROW(one.Release());
}

TEST_F(LimitSetTest, UpdateAfterReleaseThrows) {
  const LimitSet set = Make({RateLimit("a", 10, "second")});
  LimitAcquisition acquired = set.Acquire({{"a", 1}});
  acquired.Update({{"a", 1}});
  acquired.Release();
  EXPECT_THAT(
      [&] {
        acquired.Update({{"a", 1}});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("already released")));
  LimitAcquisition empty;
  EXPECT_THROW(empty.Update({}), InvalidOptionError);
}

// ---- Release ----

TEST_F(LimitSetTest, ReleaseWithoutUpdateReleasesThenThrows) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  LimitAcquisition acquired = set.Acquire({{"tok", 3}});
  try {
    acquired.Release();
    ADD_FAILURE() << "Release() did not throw";
  } catch (const LimitUsageError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("Not all limits in the LimitSet were updated"),
                                HasSubstr("Missing: [tok]")));
    EXPECT_EQ(e.code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_FALSE(acquired.held());
  EXPECT_EQ(InUse(set, "conn"), 0);        // The resource came back...
  EXPECT_DOUBLE_EQ(InUse(set, "tok"), 3);  // ...and the tokens were charged in full.
  EXPECT_EQ(set.Stats().missing_updates, 1);
  EXPECT_EQ(set.Stats().holding, 0);
  EXPECT_THAT(warnings_.Get(), IsEmpty());  // Thrown, not warned.
  EXPECT_NO_THROW(acquired.Release());      // Released already: nothing to do.
  EXPECT_EQ(set.Stats().missing_updates, 1);
  EXPECT_NO_THROW(set.Acquire({{"tok", 1}}, absl::ZeroDuration()).Update({{"tok", 1}}));
}

TEST_F(LimitSetTest, DestructorReportsAMissingUpdateAndReleases) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  { LimitAcquisition acquired = set.Acquire({{"tok", 3}}); }
  EXPECT_THAT(warnings_.Get(), ElementsAre(HasSubstr("Missing: [tok]")));
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().missing_updates, 1);
  EXPECT_EQ(set.Stats().holding, 0);
}

TEST_F(LimitSetTest, AnExceptionInTheScopeStillReleases) {
  const LimitSet set =
      Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  EXPECT_THAT(
      [&] {
        LimitAcquisition acquired = set.Acquire({{"tok", 3}});
        acquired.Update({{"tok", 1}});
        throw std::runtime_error("boom");
      },
      ThrowsMessage<std::runtime_error>("boom"));
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_DOUBLE_EQ(InUse(set, "tok"), 1);
  // Without an Update(), the body's exception still wins; the miss is a warning.
  EXPECT_THAT(
      [&] {
        LimitAcquisition acquired = set.Acquire({{"tok", 3}});
        throw std::runtime_error("bang");
      },
      ThrowsMessage<std::runtime_error>("bang"));
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_THAT(warnings_.Get(), ElementsAre(HasSubstr("Missing: [tok]")));
  EXPECT_EQ(set.Stats().holding, 0);
}

TEST_F(LimitSetTest, MovesTransferTheHold) {
  const LimitSet set = Make({ResourceLimit("conn", 2)});
  LimitAcquisition first = set.Acquire();
  LimitAcquisition moved = std::move(first);
  EXPECT_FALSE(first.held());  // NOLINT(bugprone-use-after-move): documented state.
  EXPECT_TRUE(moved.held());
  EXPECT_EQ(InUse(set, "conn"), 1);
  LimitAcquisition second = set.Acquire();
  EXPECT_EQ(InUse(set, "conn"), 2);
  second = std::move(moved);  // Releases what `second` held.
  EXPECT_EQ(InUse(set, "conn"), 1);
  EXPECT_TRUE(second.held());
  second.Release();
  second.Release();
  EXPECT_EQ(InUse(set, "conn"), 0);
  EXPECT_EQ(set.Stats().holding, 0);
}

// ---- AcquireAsync ----

TEST_F(LimitSetTest, AcquireAsyncIsReadyWhenAvailable) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  Future<LimitAcquisition> future = set.AcquireAsync();
  ASSERT_TRUE(future.Done());
  LimitAcquisition acquired = std::move(future).Result();
  EXPECT_TRUE(acquired.held());
  EXPECT_EQ(InUse(set, "conn"), 1);
  acquired.Release();
  EXPECT_EQ(InUse(set, "conn"), 0);
}

TEST_F(LimitSetTest, AcquireAsyncCompletesWhenCapacityReturns) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire();
  Future<LimitAcquisition> future = set.AcquireAsync();
  clock_.BlockUntilWaiters(1);
  EXPECT_FALSE(future.Done());
  held.Release();
  LimitAcquisition acquired = std::move(future).Result(kGuard);
  EXPECT_TRUE(acquired.held());
  EXPECT_EQ(InUse(set, "conn"), 1);
  EXPECT_EQ(clock_.Now(), FakeClock::DefaultStartTime());
}

TEST_F(LimitSetTest, AcquireAsyncCompletesWhenTheRateLimitRefills) {
  const LimitSet set = Make({RateLimit("tok", 10, "second", RateLimitAlgorithm::kGcra)});
  LimitAcquisition burst = set.Acquire({{"tok", 10}});
  burst.Update({{"tok", 10}});
  burst.Release();
  Future<LimitAcquisition> future = set.AcquireAsync({{"tok", 2}});
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(200) - absl::Nanoseconds(1));
  EXPECT_FALSE(future.Done());
  clock_.Advance(absl::Nanoseconds(1));
  LimitAcquisition acquired = std::move(future).Result(kGuard);
  EXPECT_EQ(acquired.requested("tok"), 2);
  acquired.Update({{"tok", 2}});
}

TEST_F(LimitSetTest, AcquireAsyncTimesOut) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire();
  Future<LimitAcquisition> future = set.AcquireAsync({}, absl::Seconds(1));
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Seconds(1) - absl::Nanoseconds(1));
  EXPECT_FALSE(future.Done());
  clock_.Advance(absl::Nanoseconds(1));
  EXPECT_THAT([&] { future.Result(kGuard); },
              ThrowsMessage<TimeoutError>(HasSubstr("failed to acquire all limits in time")));
  EXPECT_EQ(set.Stats().timeouts, 1);
  EXPECT_EQ(InUse(set, "conn"), 1);
}

TEST_F(LimitSetTest, NestedAsyncRequestsPassAWaitingAsyncRequest) {
  const LimitSet set =
      Make({RateLimit("tok", 100, "second", RateLimitAlgorithm::kGcra), ResourceLimit("conn", 1)});
  LimitAcquisition session = set.AcquireAsync({{"tok", 1}}).Result();  // Ready: the connection.
  session.Update({{"tok", 1}});
  Future<LimitAcquisition> other = set.AcquireAsync({{"tok", 1}});  // Waits for the connection.
  clock_.BlockUntilWaiters(1);
  // Nested (names the held connection with 0): served although `other` waits ahead of it. With
  // one request served at a time, or without the exemption, this would wait for `other`, which
  // waits for the session's connection: a deadlock.
  LimitAcquisition inner = set.AcquireAsync({{"tok", 10}, {"conn", 0}}).Result(kGuard);
  EXPECT_EQ(inner.requested("conn"), 0);
  EXPECT_FALSE(other.Done());
  inner.Update({{"tok", 10}});
  inner.Release();
  session.Release();
  LimitAcquisition later = std::move(other).Result(kGuard);
  later.Update({{"tok", 1}});
}

TEST_F(LimitSetTest, AWaitingAsyncRequestKeepsItsPlaceInTheQueue) {
  const LimitSet set = Make({ResourceLimit("r", 3)});
  LimitAcquisition two = set.Acquire({{"r", 2}});
  Future<LimitAcquisition> big = set.AcquireAsync({{"r", 3}});
  clock_.BlockUntilWaiters(1);
  EXPECT_FALSE(TryAcquireElsewhere(set, {{"r", 1}}));  // One unit is free, but `big` is first.
  // A new request wakes the helper; `big` keeps its place ahead of later acquirers.
  Future<LimitAcquisition> small = set.AcquireAsync({{"r", 1}});
  EXPECT_FALSE(TryAcquireElsewhere(set, {{"r", 1}}));
  EXPECT_FALSE(small.Done());
  two.Release();
  LimitAcquisition got = std::move(big).Result(kGuard);
  EXPECT_EQ(got.requested("r"), 3);
  EXPECT_FALSE(small.Done());
  got.Release();
  EXPECT_TRUE(std::move(small).Result(kGuard).held());
}

TEST_F(LimitSetTest, AnAsyncAcquisitionDoesNotLetItsThreadSkipTheQueue) {
  const LimitSet set = Make({ResourceLimit("r", 2)});
  LimitAcquisition mine = set.AcquireAsync().Result();  // Ready at once, on this thread.
  Acquirer waiter(set, {{"r", 2}});
  clock_.BlockUntilWaiters(1);
  // One unit is free, and this thread holds an acquisition, but one made for async use: it
  // queues like anyone else (a sync acquisition would let it pass, see the nested tests).
  EXPECT_FALSE(set.TryAcquire({{"r", 1}}).has_value());
  mine.Release();
  ASSERT_TRUE(waiter.WaitDone());
  EXPECT_TRUE(waiter.acquired());
}

TEST_F(LimitSetTest, CancellingAcquireAsyncWithdrawsTheRequest) {
  const LimitSet set = Make({ResourceLimit("conn", 2)});
  LimitAcquisition held = set.Acquire({{"conn", 2}});
  Future<LimitAcquisition> cancelled = set.AcquireAsync({{"conn", 1}});
  clock_.BlockUntilWaiters(1);
  EXPECT_TRUE(cancelled.Cancel());
  EXPECT_TRUE(cancelled.Cancelled());
  EXPECT_THROW(cancelled.Result(kGuard), CancelledError);
  held.Release();
  // Served after the cancelled request by the same helper thread: both units are free.
  Future<LimitAcquisition> next = set.AcquireAsync({{"conn", 2}});
  LimitAcquisition acquired = std::move(next).Result(kGuard);
  EXPECT_TRUE(acquired.held());
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.acquisitions, 2);  // `held` and `acquired`; never the cancelled one.
  EXPECT_EQ(stats.timeouts, 0);
  EXPECT_EQ(stats.limits[0].in_use, 2);
}

TEST_F(LimitSetTest, AsyncRequestsAreServedInOrder) {
  const LimitSet set = Make({ResourceLimit("r", 3)});
  LimitAcquisition held = set.Acquire({{"r", 3}});
  Future<LimitAcquisition> big = set.AcquireAsync({{"r", 3}});
  Future<LimitAcquisition> small = set.AcquireAsync({{"r", 1}});
  clock_.BlockUntilWaiters(1);
  held.Release();
  LimitAcquisition first = std::move(big).Result(kGuard);
  EXPECT_EQ(first.requested("r"), 3);
  EXPECT_FALSE(small.Done());
  first.Release();
  LimitAcquisition second = std::move(small).Result(kGuard);
  EXPECT_EQ(second.requested("r"), 1);
}

TEST_F(LimitSetTest, AQueuedAsyncRequestTimesOutWhileAnotherWaits) {
  const LimitSet set = Make({ResourceLimit("conn", 1)});
  LimitAcquisition held = set.Acquire();
  Future<LimitAcquisition> patient = set.AcquireAsync();
  clock_.BlockUntilWaiters(1);
  // Queued behind `patient`, which the helper thread is serving.
  Future<LimitAcquisition> hasty = set.AcquireAsync({}, absl::Seconds(1));
  clock_.Advance(absl::Milliseconds(500));
  EXPECT_FALSE(hasty.Done());
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(500));
  EXPECT_THROW(hasty.Result(kGuard), TimeoutError);
  EXPECT_EQ(set.Stats().timeouts, 1);
  EXPECT_FALSE(patient.Done());
  held.Release();
  EXPECT_TRUE(std::move(patient).Result(kGuard).held());
  EXPECT_EQ(set.Stats().timeouts, 1);
}

// ---- The no-op set ----

TEST(LimitSetNoOpTest, AcceptsEverything) {
  for (const LimitSet& set : {LimitSet(), LimitSet::Create({}), LimitSet::NoOp()}) {
    EXPECT_TRUE(set.no_op());
    EXPECT_THAT(set.limits(), IsEmpty());
    EXPECT_EQ(set.Find("anything"), nullptr);
    EXPECT_THROW(set["anything"], InvalidOptionError);
    LimitAcquisition plain = set.Acquire();
    EXPECT_TRUE(plain.held());
    LimitAcquisition named = set.Acquire({{"anything", 5}, {"else", 0.5}}, absl::ZeroDuration());
    EXPECT_TRUE(named.held());
    EXPECT_NO_THROW(named.Update({{"whatever", 3}, {"anything", 500}}));
    EXPECT_NO_THROW(named.Release());
    EXPECT_FALSE(named.held());
    EXPECT_NO_THROW(plain.Release());  // Nothing to update.
    std::optional<LimitAcquisition> tried = set.TryAcquire({{"x", 1}});
    ASSERT_TRUE(tried.has_value());
    EXPECT_TRUE(tried->held());
    Future<LimitAcquisition> future = set.AcquireAsync({{"x", 1}});
    EXPECT_TRUE(future.Done());
    EXPECT_TRUE(std::move(future).Result().held());
    EXPECT_THAT(set.Stats().limits, IsEmpty());
    EXPECT_THROW(set.Acquire({{"x", -1}}), InvalidOptionError);
    LimitAcquisition another = set.Acquire();
    EXPECT_THROW(another.Update({{"x", -1}}), InvalidOptionError);
  }
}

TEST(LimitSetNoOpTest, AcceptsAnyKeyButRejectsNaNAndOtherBadAmounts) {
  // As on every set (docs/limits.md says so): any key, but amounts >= 0 and finite.
  const LimitSet set = LimitSet::NoOp();
  for (const double amount : {kNaN, -kNaN, kInf, -kInf, -1.0}) {
    SCOPED_TRACE(amount);
    EXPECT_THAT(
        [&] {
          set.Acquire({{"anything", amount}});
        },
        ThrowsMessage<InvalidOptionError>(
            absl::StrCat("LimitSet::Acquire: amount for 'anything' must be >= 0 and finite (0 "
                         "leaves the limit out), got ",
                         limits_internal::FormatNumber(amount))));
    EXPECT_THROW(set.TryAcquire({{"x", amount}}), InvalidOptionError);
    EXPECT_THROW(set.AcquireAsync({{"x", amount}}), InvalidOptionError);
    LimitAcquisition acquired = set.Acquire();
    EXPECT_THAT(
        [&] {
          acquired.Update({{"x", amount}});
        },
        ThrowsMessage<InvalidOptionError>(HasSubstr("usage of 'x' must be >= 0 and finite")));
  }
  EXPECT_TRUE(set.Acquire({{"anything", 1e300}, {"else", 0}}).held());
}

TEST(LimitSetNoOpTest, DefaultIsTheSharedNoOpSet) {
  EXPECT_EQ(LimitSet(), LimitSet::NoOp());
  EXPECT_NE(LimitSet::Create({}), LimitSet::NoOp());
}

// ---- Config, handles, holders ----

TEST_F(LimitSetTest, AcquisitionsExposeTheConfig) {
  const LimitConfig config = {{"account", "a-17"}, {"region", "eu"}};
  const LimitSet set = Make({ResourceLimit("conn", 2)}, {.config = config});
  EXPECT_EQ(set.config(), config);
  LimitAcquisition acquired = set.Acquire();
  EXPECT_EQ(acquired.config(), config);
  EXPECT_EQ(acquired.config().at("account"), "a-17");
  std::optional<LimitAcquisition> tried = set.TryAcquire();
  ASSERT_TRUE(tried.has_value());
  EXPECT_EQ(tried->config(), config);
  EXPECT_THAT(LimitAcquisition().config(), IsEmpty());
  EXPECT_THAT(LimitSet().config(), IsEmpty());
}

TEST_F(LimitSetTest, CopiesShareOneSet) {
  std::optional<LimitSet> original = Make({ResourceLimit("conn", 2)});
  const LimitSet copy = *original;
  EXPECT_EQ(copy, *original);
  EXPECT_NE(copy, Make({ResourceLimit("conn", 2)}));
  LimitAcquisition acquired = copy.Acquire();
  EXPECT_EQ(InUse(*original, "conn"), 1);
  EXPECT_EQ(original->Stats().acquisitions, 1);
  original.reset();
  EXPECT_EQ(InUse(copy, "conn"), 1);
}

TEST_F(LimitSetTest, AnAcquisitionKeepsItsSetAlive) {
  std::optional<LimitAcquisition> acquired;
  {
    const LimitSet set = Make({ResourceLimit("conn", 2)}, {.config = {{"k", "v"}}});
    acquired = set.Acquire();
  }
  EXPECT_EQ(acquired->config().at("k"), "v");
  EXPECT_EQ(acquired->requested("conn"), 1);
  EXPECT_NO_THROW(acquired->Release());
}

TEST_F(LimitSetTest, MaxHoldersExceededIsACapacityError) {
  const LimitSet set = Make({ResourceLimit("conn", 4)}, {.max_holders = 1});
  LimitAcquisition held = set.Acquire();
  LimitAcquisition nested = set.Acquire();  // The same thread: still one holder.
  std::string message;
  std::thread([&] {
    try {
      set.Acquire();
    } catch (const CapacityError& e) {
      message = e.what();
    }
    EXPECT_THROW(set.TryAcquire(), CapacityError);
  }).join();
  EXPECT_THAT(message, HasSubstr("more than max_holders (1)"));
  EXPECT_EQ(InUse(set, "conn"), 2);
  held.Release();
  nested.Release();
  std::thread([&] { EXPECT_TRUE(set.TryAcquire().has_value()); }).join();
  EXPECT_EQ(InUse(set, "conn"), 0);
}

// ---- Contention (real clock) ----

class LimitSetContentionTest : public ::testing::TestWithParam<LimitFairness> {};

INSTANTIATE_TEST_SUITE_P(Fairness, LimitSetContentionTest,
                         ::testing::Values(LimitFairness::kFifo, LimitFairness::kBarging),
                         [](const ::testing::TestParamInfo<LimitFairness>& info) {
                           return info.param == LimitFairness::kFifo ? "Fifo" : "Barging";
                         });

TEST_P(LimitSetContentionTest, AcquisitionsAreAtomic) {
  constexpr int kThreads = 6;
  constexpr int kIterations = 300;
  const LimitSet set =
      LimitSet::Create({ResourceLimit("r1", 3), ResourceLimit("r2", 2),
                        RateLimit("tok", 1e9, "second", RateLimitAlgorithm::kTokenBucket),
                        CallLimit(1e9, "second", RateLimitAlgorithm::kGcra)},
                       {.fairness = GetParam()});
  std::atomic<int> held_r1{0};
  std::atomic<int> held_r2{0};
  std::atomic<bool> over{false};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> acquired{0};

  std::thread checker([&] {
    while (!stop.load(std::memory_order_acquire)) {
      const LimitSetStats stats = set.Stats();
      if (stats.limits[0].in_use > 3 || stats.limits[1].in_use > 2 || stats.limits[0].in_use < 0 ||
          stats.limits[1].in_use < 0) {
        over.store(true);
      }
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        const int r1 = 1 + (t + i) % 3;
        const int r2 = 1 + (t * 7 + i) % 2;
        std::vector<LimitAmount> request = {{"r1", static_cast<double>(r1)},
                                            {"r2", static_cast<double>(r2)}};
        if (i % 2 == 0) request.push_back({"tok", 1.5});
        std::optional<LimitAcquisition> acquisition;
        if (i % 5 == 0) {
          acquisition = set.TryAcquire(request);
          if (!acquisition.has_value()) continue;
        } else {
          acquisition = set.Acquire(request, absl::Seconds(60));
        }
        acquired.fetch_add(1);
        if (held_r1.fetch_add(r1) + r1 > 3) over.store(true);
        if (held_r2.fetch_add(r2) + r2 > 2) over.store(true);
        held_r1.fetch_sub(r1);
        held_r2.fetch_sub(r2);
        if (i % 2 == 0) acquisition->Update({{"tok", 1}});
        acquisition->Release();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  stop.store(true, std::memory_order_release);
  checker.join();
  EXPECT_FALSE(over.load());
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 0);
  EXPECT_EQ(stats.limits[1].in_use, 0);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.timeouts, 0);
  EXPECT_EQ(stats.missing_updates, 0);
  EXPECT_EQ(stats.acquisitions, acquired.load());
  EXPECT_GE(stats.acquisitions, kThreads * kIterations * 4 / 5);
}

}  // namespace
}  // namespace concurry

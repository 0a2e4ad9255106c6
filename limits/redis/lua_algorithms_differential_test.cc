// A differential test of the Redis engine's Lua algorithms (limits/redis/internal/scripts.cc)
// against the in-process ones (limits/internal/rate_algorithms.h): the real take, charge, release
// and stats scripts run on a real redis-server with a clock the test sets (WithTestClock()), and
// the same steps run on an OwnedRateState with now in ns = µs * 1000. Every decision, wait, refund
// and amount in use must agree.
//
// How the two are compared: the scripts return waits in whole µs, rounded up (the engine sleeps
// absl::Microseconds(wait)), so a wait of w ns in C++ must be ceil(w / 1000) µs in Lua. Amounts in
// use (stats) must be equal as doubles.
//
// Where the two differ by design, the inputs are restricted (and the restriction is checked, so
// a case outside it fails loudly instead of testing nothing):
// - µs resolution of GCRA/TokenBucket: the cost floor(amount / capacity * window) and the
//   tolerance tau are computed in µs by the scripts and in ns in C++, so they agree only when the
//   µs value is whole (cost_ns == 1000 * cost_us): amounts whose cost is not are skipped
//   (ExactGcraCost()), and the explicit bursts are chosen so that tau is a whole number of µs.
// - µs resolution of SlidingWindow slices (capacity > 4096): slices of ceil(W / 4096) agree only
//   when the window in µs is a multiple of 4096.
// - Doubles: the scripts compute with Lua numbers, exact to 2^53; C++ uses 64- and 128-bit
//   integers. Every time, count and product here stays far below 2^53 (times since the epoch in
//   µs are ~2^51; charges are at most a few capacities).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/rate_window.h"
#include "limits/redis/internal/scripts.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_options.h"
#include "testing/redis_server.h"

namespace concurry {
namespace {

using limits_internal::OwnedRateState;
using limits_internal::RateState;
namespace scripts = limits_internal::redis;

// Around 2025-12 in µs since the epoch: the size of the times the server's clock gives.
constexpr int64_t kStartUs = 1'765'000'000'000'000;

// A number as the engine passes it (redis_set_backend.cc: whole numbers as integers, others with
// 17 significant digits, which strtod() reads back exactly).
std::string Number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 9e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrFormat("%.17g", value);
}

struct Config {
  std::string name;
  RateLimitAlgorithm algorithm;
  double capacity;
  int64_t window_us;
  double burst = limits_internal::kDefaultBurst;  // kDefaultBurst: the capacity.
  std::vector<double> amounts;                    // What a request may take.
  int idle_percent = 2;                           // Steps that idle for a window or more.
};

char Code(RateLimitAlgorithm algorithm) {
  switch (algorithm) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return scripts::kGcraCode;
    case RateLimitAlgorithm::kLeakyBucket:
      return scripts::kLeakyCode;
    case RateLimitAlgorithm::kSlidingWindow:
      return scripts::kSlidingCode;
    case RateLimitAlgorithm::kFixedWindow:
      return scripts::kFixedCode;
  }
  return scripts::kSlidingCode;
}

bool IsGcra(RateLimitAlgorithm algorithm) {
  return algorithm == RateLimitAlgorithm::kTokenBucket || algorithm == RateLimitAlgorithm::kGcra;
}

// The wait in µs the scripts must return for a C++ wait of `ns`: rounded up.
int64_t CeilMicros(int64_t ns) { return ns / 1000 + (ns % 1000 > 0 ? 1 : 0); }

// One limit run both ways: in Lua on the server under `base_`, and in C++.
class Differential {
 public:
  Differential(redis_internal::RedisClient& client, const Config& config, std::string base)
      : client_(client),
        config_(config),
        base_(std::move(base)),
        window_ns_(config.window_us * 1000),
        state_(config.algorithm, config.capacity, window_ns_, config.burst) {
    const double burst = limits_internal::EffectiveBurst(config.capacity, config.burst);
    // tau as the engine computes it (ToleranceMicros() in redis_set_backend.cc): the window for
    // the default burst, else burst emission intervals rounded down to whole µs, at least 1.
    double tau_us = 0;
    if (IsGcra(config.algorithm)) {
      tau_us = static_cast<double>(config.window_us);
      if (burst != config.capacity) {
        const double interval =
            std::max(1.0, std::floor(static_cast<double>(config.window_us) / config.capacity));
        tau_us = std::max(1.0, std::floor(burst * interval));
      }
      tau_us_ = static_cast<int64_t>(tau_us);
    }
    fields_ = {"0",
               std::string(1, Code(config.algorithm)),
               Number(config.capacity),
               Number(static_cast<double>(config.window_us)),
               Number(burst),
               Number(tau_us)};
  }

  // The inputs are inside the restrictions of the file comment.
  void CheckRestrictions() const {
    if (IsGcra(config_.algorithm)) {
      ASSERT_EQ(state_->tolerance_ns(), tau_us_ * 1000)
          << config_.name << ": tau is not a whole number of µs";
    }
    if (config_.algorithm == RateLimitAlgorithm::kSlidingWindow && config_.capacity > 4096) {
      ASSERT_EQ(config_.window_us % 4096, 0) << config_.name << ": slices are not whole µs";
    }
  }

  // Whether the GCRA cost of `amount` (a take, or a charge when `charge`) is the same time in
  // both units: cost_ns == 1000 * cost_us.
  bool ExactGcraCost(double amount, bool charge) const {
    if (!IsGcra(config_.algorithm)) return true;
    const double w_us = static_cast<double>(config_.window_us);
    const double cost_us = std::floor(amount / config_.capacity * w_us);
    if (charge) {
      const int64_t ns =
          std::max<int64_t>(1, limits_internal::SaturatingNanos(amount / config_.capacity *
                                                                static_cast<double>(window_ns_)));
      return ns == 1000 * static_cast<int64_t>(std::max(1.0, cost_us));
    }
    const double clamped = !(cost_us < static_cast<double>(tau_us_)) ? static_cast<double>(tau_us_)
                           : cost_us < 1                             ? 1.0
                                                                     : cost_us;
    return state_->Cost(amount) == 1000 * static_cast<int64_t>(clamped);
  }

  // A take (all or nothing, as the engine's TryAcquire: a last try, no ticket). Returns the wait
  // in µs (0: taken), after checking both sides agree.
  int64_t Take(int64_t now_us, double amount, const std::string& where) {
    const int64_t wait_ns = state_->WaitNs(now_us * 1000, amount);
    if (wait_ns == 0) {
      EXPECT_TRUE(state_->TryAcquire(now_us * 1000, amount)) << where;
    }
    std::vector<std::string> args = {"10000000", "0", "0", "0", "1", "1"};
    AddItem(args, amount, now_us);
    args.insert(args.end() - 1, "");  // No definition to check, before the clock.
    const redis_internal::RedisReply reply = client_.EvalSha(take_, {base_}, args);
    const int64_t lua_wait = reply.elements().at(0).integer();
    EXPECT_EQ(lua_wait, CeilMicros(wait_ns))
        << where << ": take " << amount << " at " << now_us << " µs: Lua waits " << lua_wait
        << " µs, C++ " << wait_ns << " ns";
    EXPECT_EQ(reply.elements().at(2).integer(), now_us) << where << ": the test clock";
    return lua_wait;
  }

  // An over-use charged after the fact.
  void Charge(int64_t now_us, double amount) {
    state_->Charge(now_us * 1000, amount);
    std::vector<std::string> args = {"0", "1"};
    AddItem(args, amount, now_us);
    client_.EvalSha(charge_, {base_}, args);
  }

  // A refund (TokenBucket and GCRA), as a release gives back what was requested and not used.
  void Refund(int64_t now_us, double amount) {
    state_->Refund(now_us * 1000, amount);
    std::vector<std::string> args = {"0", "0", "0", "1"};
    AddItem(args, amount, now_us);
    client_.EvalSha(release_, {base_}, args);
  }

  // Compares the amounts in use (stats).
  void CompareInUse(int64_t now_us, const std::string& where) {
    const double expected = state_->InUse(now_us * 1000);
    std::vector<std::string> args = {"0", "1"};
    AddItem(args, 1, now_us);
    const redis_internal::RedisReply reply = client_.EvalSha(stats_, {base_}, args);
    double lua = -1;
    ASSERT_TRUE(absl::SimpleAtod(reply.elements().at(8).str(), &lua)) << where;
    EXPECT_EQ(lua, expected) << where << ": in use at " << now_us << " µs";
  }

 private:
  void AddItem(std::vector<std::string>& args, double amount, int64_t now_us) const {
    args.insert(args.end(), fields_.begin(), fields_.end());
    args.push_back(Number(amount));
    args.push_back(absl::StrCat(now_us));  // WithTestClock()'s clock.
  }

  redis_internal::RedisClient& client_;
  const Config config_;
  const std::string base_;
  const int64_t window_ns_;
  OwnedRateState state_;
  int64_t tau_us_ = 0;
  std::vector<std::string> fields_;  // Index, code, capacity, window, burst, tau.

  static inline const redis_internal::RedisScript take_{
      "take (test clock)", scripts::WithTestClock(scripts::TakeScript())};
  static inline const redis_internal::RedisScript charge_{
      "charge (test clock)", scripts::WithTestClock(scripts::ChargeScript())};
  static inline const redis_internal::RedisScript release_{
      "release (test clock)", scripts::WithTestClock(scripts::ReleaseScript())};
  static inline const redis_internal::RedisScript stats_{
      "stats (test clock)", scripts::WithTestClock(scripts::StatsScript())};
};

class LuaDifferentialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why_not;
    ASSERT_TRUE(testkit::RedisServer::Available(&why_not)) << "no redis-server: " << why_not;
    server_ = testkit::RedisServer::Start();
    RedisOptions options;
    options.host = "127.0.0.1";
    options.port = server_->port();
    options.pool_size = 1;
    options.command_timeout = absl::Seconds(10);
    client_ = std::make_unique<redis_internal::RedisClient>(options);
  }

  // A fresh key prefix per run.
  std::string Base(const std::string& name) {
    return absl::StrCat("diff:{", name, "-", ++runs_, "}:");
  }

  // `steps` random steps: takes (mostly), jumps to the edge of a wait, over-use charges,
  // refunds, small steps back of the clock, stats.
  void RunRandom(const Config& config, int steps, uint64_t seed, int min_refused = -1) {
    SCOPED_TRACE(config.name);
    Differential both(*client_, config, Base(config.name));
    both.CheckRestrictions();
    if (HasFatalFailure()) return;
    std::mt19937_64 random(seed);
    const auto uniform = [&](int64_t low, int64_t high) {
      return std::uniform_int_distribution<int64_t>(low, high)(random);
    };
    int skipped = 0;  // Amounts outside the restrictions (GCRA costs not whole µs).
    const auto pick_amount = [&](bool charge) {
      for (int tries = 0; tries < 100; ++tries) {
        const double amount =
            config.amounts[static_cast<size_t>(uniform(0, config.amounts.size() - 1))];
        if (both.ExactGcraCost(amount, charge)) return amount;
        ++skipped;
      }
      ADD_FAILURE() << "no amount with an exact GCRA cost";
      return config.amounts[0];
    };
    // The mean time between steps: a fraction of the time one unit takes to come back.
    const int64_t unit_us = std::max<int64_t>(
        1, static_cast<int64_t>(static_cast<double>(config.window_us) / config.capacity));
    int64_t now = kStartUs + uniform(0, config.window_us);
    int64_t last_wait = 0;
    int admitted = 0;
    int refused = 0;
    for (int step = 0; step < steps && !HasFailure(); ++step) {
      const std::string where = absl::StrCat("step ", step);
      const int64_t dice = uniform(0, 99);
      // The clock: usually forward a little; sometimes to the edge of the last wait (one µs
      // before it, or exactly at it), still, or a little back (a server clock that steps back).
      if (last_wait > 0 && dice < 15) {
        now += last_wait - (dice < 5 ? 1 : 0);
      } else if (dice < 20) {
        // Same µs.
      } else if (dice < 22) {
        now -= uniform(1, 50);
      } else if (dice < 22 + config.idle_percent) {
        now += uniform(config.window_us / 2, 3 * config.window_us);  // Long idle.
      } else {
        now += uniform(0, unit_us);
      }
      const int64_t op = uniform(0, 99);
      if (op < 75) {
        last_wait = both.Take(now, pick_amount(false), where);
        ++(last_wait == 0 ? admitted : refused);
      } else if (op < 82) {
        const double amount = pick_amount(true) * static_cast<double>(uniform(1, 3));
        if (both.ExactGcraCost(amount, true)) both.Charge(now, amount);
      } else if (op < 90 && IsGcra(config.algorithm)) {
        both.Refund(now, pick_amount(false));
      } else {
        both.CompareInUse(now, where);
      }
    }
    // Not vacuous: the steps both admit and refuse, often.
    EXPECT_GT(admitted, steps / 10);
    EXPECT_GT(refused, min_refused >= 0 ? min_refused : steps / 10);
    std::printf("%s: %d admitted, %d refused, %d amounts skipped\n", config.name.c_str(), admitted,
                refused, skipped);
  }

  std::unique_ptr<testkit::RedisServer> server_;
  std::unique_ptr<redis_internal::RedisClient> client_;
  int runs_ = 0;
};

constexpr int kSteps = 2500;

TEST_F(LuaDifferentialTest, Gcra) {
  RunRandom({"gcra 8/s", RateLimitAlgorithm::kGcra, 8, 1'000'000, {}, {0.5, 1, 2, 3, 5, 8}}, kSteps,
            1);
  // Amounts whose cost in µs is not whole are skipped (1/3 of a second).
  RunRandom({"gcra 3/ms", RateLimitAlgorithm::kGcra, 3, 3'000, {}, {1, 2, 3}}, kSteps, 2);
}

TEST_F(LuaDifferentialTest, TokenBucket) {
  RunRandom({"token bucket 10/s", RateLimitAlgorithm::kTokenBucket, 10, 1'000'000, {}, {1, 2, 5}},
            kSteps, 3);
  // A fractional capacity: half a token per second.
  RunRandom({"token bucket 0.5/s",
             RateLimitAlgorithm::kTokenBucket,
             0.5,
             1'000'000,
             {},
             {0.125, 0.25, 0.5}},
            kSteps, 4);
}

TEST_F(LuaDifferentialTest, GcraAndTokenBucketWithExplicitBursts) {
  // 40/s, at most 5 at once: tau = 5 * 25 ms.
  RunRandom({"gcra 40/s burst 5", RateLimitAlgorithm::kGcra, 40, 1'000'000, 5, {1, 2, 5}}, kSteps,
            5);
  // A fractional burst: 2.5 * 250 ms.
  RunRandom({"token bucket 4/s burst 2.5",
             RateLimitAlgorithm::kTokenBucket,
             4,
             1'000'000,
             2.5,
             {0.5, 1, 2.5}},
            kSteps, 6);
  // A burst above the capacity: 20 at once, 10 per second.
  RunRandom({"gcra 10/s burst 20", RateLimitAlgorithm::kGcra, 10, 1'000'000, 20, {1, 4, 20}},
            kSteps, 7);
}

TEST_F(LuaDifferentialTest, LeakyBucket) {
  RunRandom({"leaky 10/s", RateLimitAlgorithm::kLeakyBucket, 10, 1'000'000, {}, {1, 2, 3, 10}},
            kSteps, 8);
  // A token every 333.33 µs: leak times rounded up to whole µs by the scripts.
  RunRandom({"leaky 3/ms", RateLimitAlgorithm::kLeakyBucket, 3, 1'000, {}, {1, 2, 3}}, kSteps, 9);
  // An explicit burst (depth).
  RunRandom({"leaky 10/s burst 3", RateLimitAlgorithm::kLeakyBucket, 10, 1'000'000, 3, {1, 2, 3}},
            kSteps, 10);
}

TEST_F(LuaDifferentialTest, LeakyBucketWithFractionalCapacities) {
  RunRandom({"leaky 2.5/s", RateLimitAlgorithm::kLeakyBucket, 2.5, 1'000'000, {}, {1, 2}}, kSteps,
            11);
  // Not a binary fraction: the leak schedule in doubles vs exact integers.
  RunRandom({"leaky 1.1/s", RateLimitAlgorithm::kLeakyBucket, 1.1, 1'000'000, {}, {1}}, kSteps, 12);
  RunRandom({"leaky 7.3/7ms", RateLimitAlgorithm::kLeakyBucket, 7.3, 7'000, {}, {1, 2, 7}}, kSteps,
            13);
}

TEST_F(LuaDifferentialTest, SlidingWindow) {
  RunRandom({"sliding 10/s", RateLimitAlgorithm::kSlidingWindow, 10, 1'000'000, {}, {1, 2, 3, 10}},
            kSteps, 14);
  RunRandom({"sliding 7/ms", RateLimitAlgorithm::kSlidingWindow, 7, 1'000, {}, {1, 2, 7}}, kSteps,
            15);
}

TEST_F(LuaDifferentialTest, SlidingWindowAboveTheSlotsMergesSlices) {
  // 5000 per 409.6 ms: slices of 100 µs, steps of up to 81 µs; amounts up to 1000 fill the
  // window (refusals) over a few hundred slices.
  Config config{"sliding 5000/409.6ms", RateLimitAlgorithm::kSlidingWindow, 5000, 4096 * 100, {},
                {1, 3, 50, 400, 1000}};
  RunRandom(config, 4 * kSteps, 16);
  // Small amounts: a long log (thousands of entries, most of them merged into their slice's
  // newest), which only a few steps fill up.
  config.name = "sliding 5000/409.6ms, small amounts";
  config.amounts = {1, 2, 3};
  config.idle_percent = 0;
  RunRandom(config, 4 * kSteps, 19, /*min_refused=*/100);
}

TEST_F(LuaDifferentialTest, FixedWindow) {
  RunRandom({"fixed 10/s", RateLimitAlgorithm::kFixedWindow, 10, 1'000'000, {}, {1, 2, 3, 10}},
            kSteps, 17);
  RunRandom({"fixed 7/ms", RateLimitAlgorithm::kFixedWindow, 7, 1'000, {}, {1, 2, 7}}, kSteps, 18);
}

// Hand-picked boundaries, with the expected values written out (both sides must give them).
TEST_F(LuaDifferentialTest, FixedWindowBoundaries) {
  Differential both(*client_, {"fixed", RateLimitAlgorithm::kFixedWindow, 3, 1'000'000, {}, {}},
                    Base("fixed-boundaries"));
  const int64_t start = 1'765'000'000'000'000;  // A window start (a multiple of 1 s).
  EXPECT_EQ(both.Take(start + 999'999, 3, "last µs"), 0);
  EXPECT_EQ(both.Take(start + 999'999, 1, "full"), 1);
  EXPECT_EQ(both.Take(start + 1'000'000, 3, "next window"), 0);
  EXPECT_EQ(both.Take(start + 1'000'001, 1, "full again"), 999'999);
  both.CompareInUse(start + 1'999'999, "end of the window");
  both.CompareInUse(start + 2'000'000, "new window");
}

TEST_F(LuaDifferentialTest, LeakyBucketLeakTimes) {
  // 3 per ms: the k-th token leaks ceil(k * 333.33) µs after the origin.
  Differential both(*client_, {"leaky", RateLimitAlgorithm::kLeakyBucket, 3, 1'000, {}, {}},
                    Base("leaky-times"));
  const int64_t t = kStartUs;
  EXPECT_EQ(both.Take(t, 3, "fill"), 0);
  EXPECT_EQ(both.Take(t, 1, "full"), 334);
  EXPECT_EQ(both.Take(t + 333, 1, "one µs early"), 1);
  EXPECT_EQ(both.Take(t + 334, 1, "leaked"), 0);
  EXPECT_EQ(both.Take(t + 334, 2, "two more"), 666);  // Token 3 leaks at 1000 µs.
  EXPECT_EQ(both.Take(t + 667, 1, "token 2"), 0);
  both.CompareInUse(t + 5'000, "empty");
}

TEST_F(LuaDifferentialTest, GcraRefundsAndOveruse) {
  // 10 per second, the emission interval 100 ms.
  Differential both(*client_, {"gcra", RateLimitAlgorithm::kGcra, 10, 1'000'000, {}, {}},
                    Base("gcra-refund"));
  const int64_t t = kStartUs;
  EXPECT_EQ(both.Take(t, 10, "all"), 0);
  EXPECT_EQ(both.Take(t, 1, "none left"), 100'000);
  both.Refund(t + 10, 4);
  EXPECT_EQ(both.Take(t + 10, 4, "the refunded four"), 0);
  both.Charge(t + 10, 25);  // 2.5 s of debt.
  EXPECT_EQ(both.Take(t + 10, 1, "in debt"), 2'600'000 - 10);
  both.CompareInUse(t + 20, "over");
}

TEST(WithTestClockTest, TakesOnlyTheEngineScripts) {
  EXPECT_THROW(scripts::WithTestClock("return 1"), std::invalid_argument);
  EXPECT_THROW(scripts::WithTestClock(scripts::RenewScript()), std::invalid_argument);
  EXPECT_NE(scripts::WithTestClock(scripts::LeaveScript()), scripts::LeaveScript());
}

}  // namespace
}  // namespace concurry

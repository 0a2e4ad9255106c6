// A seeded fuzz test of the rate-limit arithmetic: every algorithm, driven through random and
// boundary capacities (from the smallest subnormal to the largest allowed, and infinity), windows
// (1 ns to kMaxRateWindow), explicit bursts (1, fractions, below and far above the capacity, up
// to the largest tolerance allowed), amounts, refunds, over-use charges and clock readings (absl's
// saturated extremes included). Run under --config=ubsan it proves the nanosecond arithmetic free
// of overflow and of out-of-range double-to-int64 conversions; in every build it checks
// invariants that hold for any input:
// - WaitNs() is never negative, and is 0 exactly when TryAcquire() at the same time admits;
// - a request admitted after waiting exactly WaitNs() (nothing else happening) succeeds;
// - over any stretch of time, admissions never exceed capacity + refill (+ refunds);
// - a capacity-1 limit never admits twice in one window, and a burst-1 limit never twice in one
//   (rounded) emission interval;
// - InUse() is never negative or NaN;
// - a FixedWindow's decisions and waits are those of RateLimiter's lock-free word with its
//   hand-over (capacities below 2^40, no over-use charges).
// Each trial's state takes either RateState layout.
// The seeds are fixed, so a failure reproduces; its trace names the trial. A few seconds under
// ubsan.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/rate_atomic_window.h"
#include "limits/internal/rate_atomic_window_testing.h"
#include "limits/rate_window.h"

namespace concurry {
namespace limits_internal {
namespace {

constexpr int64_t kMaxTime = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinTime = std::numeric_limits<int64_t>::min();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr RateLimitAlgorithm kAlgorithms[] = {
    RateLimitAlgorithm::kTokenBucket, RateLimitAlgorithm::kLeakyBucket,
    RateLimitAlgorithm::kSlidingWindow, RateLimitAlgorithm::kFixedWindow,
    RateLimitAlgorithm::kGcra};

int64_t MaxWindowNs() { return absl::ToInt64Nanoseconds(kMaxRateWindow); }

// The fixed seed `fixed`, or, to explore, `fixed` + the CONCURRY_FUZZ_SEED environment variable
// (bazel test --test_env=CONCURRY_FUZZ_SEED=17 ...).
uint64_t Seed(uint64_t fixed) {
  const char* offset = std::getenv("CONCURRY_FUZZ_SEED");
  return offset == nullptr ? fixed : fixed + std::strtoull(offset, nullptr, 10);
}

class Fuzzer {
 public:
  explicit Fuzzer(uint64_t seed) : rng_(seed) {}

  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  template <typename T>
  T OneOf(const std::vector<T>& values) {
    return values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng_)];
  }
  int64_t Uniform(int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(rng_);
  }
  double Real(double low, double high) {
    return std::uniform_real_distribution<double>(low, high)(rng_);
  }
  // Log-uniform in [1, high].
  int64_t LogUniform(int64_t high) {
    const double exponent = Real(0, std::log2(static_cast<double>(high)));
    return std::clamp<int64_t>(SaturatingNanos(std::exp2(exponent)), 1, high);
  }

  double Capacity(RateLimitAlgorithm algorithm) {
    if (!CountsWholeUnits(algorithm)) {
      if (Chance(0.5)) {
        return OneOf<double>({std::numeric_limits<double>::denorm_min(), 1e-300, 1e-9, 0.1 + 0.2,
                              0.5, 1, 2.5, 3, 1e6, kMaxWhole, 1e18, 1e300,
                              std::numeric_limits<double>::max(), kInf});
      }
      return std::pow(10.0, Real(-323, 308));
    }
    // Mostly whole capacities; fractional ones (2.5 per window) are allowed too.
    if (Chance(0.5)) {
      return OneOf<double>({1, 1.5, 2, 2.5, 3, 4095, 4096, 4096.5, 4097, 1e6, 1e9 + 0.25,
                            kMaxWhole - 1, kMaxWhole, kInf});
    }
    const double whole = std::floor(std::exp2(Real(0, 53)));
    return Chance(0.2) && whole < 0x1p50 ? whole + 0.5 : whole;
  }

  // A burst for the limit: kDefaultBurst half the time, else one ValidateBurst() accepts.
  double Burst(RateLimitAlgorithm algorithm, double capacity, int64_t window_ns) {
    if (Chance(0.5) || std::isinf(capacity) || algorithm == RateLimitAlgorithm::kSlidingWindow ||
        algorithm == RateLimitAlgorithm::kFixedWindow) {
      return kDefaultBurst;
    }
    // The largest burst whose tolerance fits: kMaxRateWindow / window * capacity.
    const double top = static_cast<double>(MaxWindowNs()) / static_cast<double>(window_ns) *
                       capacity * (1 - 1e-12);
    double burst = OneOf<double>(
        {1, 1.5, 2, 5, capacity / 2, capacity * 2, capacity * 1e6, top, std::exp2(Real(0, 60))});
    if (algorithm == RateLimitAlgorithm::kLeakyBucket) {
      burst = std::floor(std::min(burst, kMaxWhole));
    }
    if (!ValidateBurst(algorithm, capacity, absl::Nanoseconds(window_ns), burst).ok()) {
      return kDefaultBurst;
    }
    return burst;
  }

  int64_t Window() {
    if (Chance(0.5)) {
      return OneOf<int64_t>(
          {1, 2, 3, 999, 1'000'000'000, 86'400'000'000'000, MaxWindowNs() - 1, MaxWindowNs()});
    }
    return LogUniform(MaxWindowNs());
  }

  int64_t Start(int64_t window_ns) {
    if (Chance(0.6)) {
      return OneOf<int64_t>({kMinTime, kMinTime + 1, kMinTime / 2, -1, 0, 1,
                             1'700'000'000'000'000'000, kMaxTime - window_ns - 1,
                             kMaxTime - window_ns, kMaxTime - window_ns + 1, kMaxTime - 1,
                             kMaxTime});
    }
    return Uniform(kMinTime, kMaxTime);
  }

  // A time step forward of about the scales that matter for the limit.
  int64_t Step(double capacity, int64_t window_ns) {
    const int64_t per_unit =
        std::isinf(capacity)
            ? 1
            : std::max<int64_t>(1, SaturatingNanos(static_cast<double>(window_ns) / capacity));
    switch (Uniform(0, 7)) {
      case 0:
      case 1:
        return 0;
      case 2:
        return 1;
      case 3:
        return Uniform(0, std::min<int64_t>(per_unit, kMaxTime / 4) * 2);
      case 4:
        return window_ns - Uniform(0, 1);
      case 5:
        return Uniform(0, window_ns);
      case 6:
        return Chance(0.5) ? Uniform(0, kMaxTime) : kMaxTime;  // Saturates at the end of time.
      default:
        return Uniform(0, 1000);
    }
  }

  // An amount valid for the limit (see RateState::ValidAmount()).
  double Amount(const RateState& state) {
    const double capacity = state.burst();  // The most one request may ask for.
    if (!state.whole_amounts()) {
      if (std::isinf(capacity)) return OneOf<double>({1e-300, 0.5, 1, 1e300});
      if (Chance(0.3)) return capacity;
      const double amount = capacity * Real(0, 1);
      return amount > 0 ? amount : capacity;
    }
    const double top = std::floor(std::min(capacity, kMaxWhole));
    if (Chance(0.4)) return 1;
    if (Chance(0.3)) return top;
    return std::clamp(std::floor(top * Real(0, 1)), 1.0, top);
  }

 private:
  std::mt19937_64 rng_;
};

struct Event {
  int64_t time;
  double amount;  // Admitted (> 0) or refunded (< 0).
};

// The most a limit may admit in a stretch of `ns` nanoseconds holding `events` admissions (for
// the GCRA rounding: each cost is rounded down by less than 1 ns).
double MaxAdmitted(RateLimitAlgorithm algorithm, double capacity, double burst, int64_t window_ns,
                   uint64_t ns, int events) {
  // Whole windows counted exactly: beyond 2^53 ns, a double would round them.
  const double whole_windows = static_cast<double>(ns / static_cast<uint64_t>(window_ns));
  const double windows = static_cast<double>(ns) / static_cast<double>(window_ns);
  switch (algorithm) {
    case RateLimitAlgorithm::kSlidingWindow:
      return capacity * (whole_windows + 1);
    case RateLimitAlgorithm::kFixedWindow:
      return capacity * (whole_windows + 2);
    case RateLimitAlgorithm::kLeakyBucket:
      return burst + capacity * windows + 2;
    default:
      // Each cost is rounded down by less than 1 ns, and clamped to the tolerance, which an
      // explicit burst rounds down by less than `burst` ns.
      return burst + capacity * windows +
             capacity * events * (burst == capacity ? 1 : 1 + burst) /
                 static_cast<double>(window_ns);
  }
}

// Runs one trial: a fresh limit, time moving forward only. Counts its admissions in
// `*admissions`. The state takes either layout; a FixedWindow without over-use charges (which
// RateLimiter never makes) whose capacity fits a word is checked against the word too.
void RunTrial(Fuzzer& fuzz, int trial, int* admissions) {
  const RateLimitAlgorithm algorithm = fuzz.OneOf<RateLimitAlgorithm>(
      std::vector<RateLimitAlgorithm>(std::begin(kAlgorithms), std::end(kAlgorithms)));
  const double capacity = fuzz.Capacity(algorithm);
  const int64_t window_ns = fuzz.Window();
  const double burst = fuzz.Burst(algorithm, capacity, window_ns);
  const bool charges = fuzz.Chance(0.2);
  EXPECT_TRUE(ValidateRateParams(algorithm, capacity, absl::Nanoseconds(window_ns)).ok());
  const RateLayout layout = fuzz.Chance(0.5) ? RateLayout::kLockSlot : RateLayout::kPacked;
  OwnedRateState state(algorithm, capacity, window_ns, burst, layout);
  const int64_t horizon = std::max(window_ns, state->tolerance_ns());
  int64_t now = fuzz.Start(window_ns);
  std::optional<HandingOverWindow> word;
  if (algorithm == RateLimitAlgorithm::kFixedWindow && !charges &&
      AtomicFixedWindow::Fits(capacity)) {
    word.emplace(capacity, window_ns, now);
  }
  SCOPED_TRACE(absl::StrCat("trial ", trial, ": ", RateLimitAlgorithmName(algorithm), " capacity ",
                            FormatNumber(capacity), " burst ", FormatNumber(state->burst()),
                            " window ", window_ns, "ns start ", now));
  std::vector<Event> events;
  for (int op = 0; op < 40; ++op) {
    now = SaturatingAdd(now, fuzz.Step(capacity, window_ns));
    const double in_use = state->InUse(now);
    EXPECT_TRUE(in_use >= 0) << "InUse " << in_use << " at " << now;
    if (state->supports_refund() && fuzz.Chance(0.15)) {
      const double refund = fuzz.Chance(0.2) ? state->burst() * 1e6 : fuzz.Amount(*state);
      if (std::isfinite(refund) && refund > 0) {
        state->Refund(now, refund);
        events.push_back({now, -refund});
      }
      continue;
    }
    if (charges && fuzz.Chance(0.1)) {
      // Over-use reported after the fact: huge amounts too. It only makes admission stricter.
      state->Charge(now, fuzz.Chance(0.5) ? fuzz.Amount(*state) : kMaxWhole);
      continue;
    }
    const double amount = fuzz.Amount(*state);
    ASSERT_TRUE(state->ValidAmount(amount)) << FormatNumber(amount);
    const int64_t wait = state->WaitNs(now, amount);
    ASSERT_GE(wait, 0) << "at " << now;
    if (word.has_value()) {
      ASSERT_EQ(word->WaitNs(now, static_cast<uint64_t>(amount)), wait) << "word, at " << now;
    }
    const bool admitted = state->TryAcquire(now, amount);
    if (word.has_value()) {
      ASSERT_EQ(word->TryAcquire(now, static_cast<uint64_t>(amount)), admitted)
          << "word, at " << now;
    }
    ASSERT_EQ(admitted, wait == 0)
        << "amount " << FormatNumber(amount) << " at " << now << ", wait " << wait;
    // Waiting exactly the announced time admits it, not a nanosecond earlier, unless the limit's
    // clock stands still by then. Not checked in trials with over-use charges: a debt of 2^53
    // units, or one beyond the int64 clock, is counted approximately (it saturates).
    if (!admitted && !charges && fuzz.Chance(0.5) && wait <= SaturatingSub(kMaxTime, now)) {
      if (wait > 1) {
        EXPECT_GT(state->WaitNs(now + wait - 1, amount), 0) << "early, at " << now;
      }
      now += wait;
      if (now <= kMaxTime - horizon) {
        ASSERT_TRUE(state->TryAcquire(now, amount))
            << "not admitted after waiting " << wait << "ns, at " << now;
        if (word.has_value()) {
          ASSERT_TRUE(word->TryAcquire(now, static_cast<uint64_t>(amount))) << "word, at " << now;
        }
        events.push_back({now, amount});
        ++*admissions;
      }
      continue;
    }
    if (!admitted) continue;
    ++*admissions;
    events.push_back({now, amount});
    if (std::isinf(capacity)) continue;
    // Every stretch ending now admits at most capacity + refill, plus what was refunded in it.
    double admitted_sum = 0;
    double refunded_sum = 0;
    int count = 0;
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      (it->amount > 0 ? admitted_sum : refunded_sum) += std::fabs(it->amount);
      ++count;
      // now >= it->time: the unsigned difference is exact even across the whole int64 range.
      const uint64_t ns = static_cast<uint64_t>(now) - static_cast<uint64_t>(it->time);
      const double bound =
          MaxAdmitted(algorithm, capacity, state->burst(), window_ns, ns, count) + refunded_sum;
      ASSERT_LE(admitted_sum, bound * (1 + 1e-9) + 1e-300)
          << "over " << ns << "ns ending at " << now << ", " << count << " events";
    }
  }
}

TEST(RateArithmeticFuzzTest, InvariantsHoldForExtremeParametersAndTimes) {
  Fuzzer fuzz(Seed(20240611));
  int admissions = 0;
  for (int trial = 0; trial < 10'000; ++trial) {
    RunTrial(fuzz, trial, &admissions);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(admissions, 10'000);  // The trials did exercise admissions, not only rejections.
}

TEST(RateArithmeticFuzzTest, CapacityOneNeverAdmitsTwiceInOneWindow) {
  Fuzzer fuzz(Seed(7));
  int admissions = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    const RateLimitAlgorithm algorithm = kAlgorithms[trial % 5];
    const int64_t window_ns = fuzz.Window();
    OwnedRateState state(algorithm, 1, window_ns);
    int64_t now = fuzz.Start(window_ns);
    SCOPED_TRACE(absl::StrCat("trial ", trial, ": ", RateLimitAlgorithmName(algorithm), " window ",
                              window_ns, "ns start ", now));
    bool any = false;
    int64_t last = 0;
    for (int op = 0; op < 30; ++op) {
      now = SaturatingAdd(now, fuzz.Step(1, window_ns));
      if (!state->TryAcquire(now, 1)) continue;
      ++admissions;
      if (any) {
        if (algorithm == RateLimitAlgorithm::kFixedWindow) {
          const FixedWindow windows(1, window_ns);
          ASSERT_GT(windows.WindowIndex(now), windows.WindowIndex(last))
              << "admitted at " << last << " and " << now;
        } else {
          ASSERT_GE(SaturatingSub(now, last), window_ns)
              << "admitted at " << last << " and " << now;
        }
      }
      any = true;
      last = now;
    }
  }
  EXPECT_GT(admissions, 5000);
}

TEST(RateArithmeticFuzzTest, BurstOneNeverAdmitsTwiceInOneInterval) {
  Fuzzer fuzz(Seed(31));
  int admissions = 0;
  constexpr RateLimitAlgorithm kBuckets[] = {RateLimitAlgorithm::kTokenBucket,
                                             RateLimitAlgorithm::kLeakyBucket,
                                             RateLimitAlgorithm::kGcra};
  for (int trial = 0; trial < 5000; ++trial) {
    const RateLimitAlgorithm algorithm = kBuckets[trial % 3];
    double capacity = fuzz.Capacity(algorithm);
    if (!(capacity >= 1) || std::isinf(capacity)) capacity = 1;
    const int64_t window_ns = fuzz.Window();
    if (!ValidateBurst(algorithm, capacity, absl::Nanoseconds(window_ns), 1).ok()) continue;
    OwnedRateState state(algorithm, capacity, window_ns, /*burst=*/1);
    // The emission interval, rounded down (GCRA rounds each cost down).
    const int64_t interval = SaturatingNanos(std::floor(static_cast<double>(window_ns) / capacity));
    int64_t now = fuzz.Start(window_ns);
    SCOPED_TRACE(absl::StrCat("trial ", trial, ": ", RateLimitAlgorithmName(algorithm),
                              " capacity ", FormatNumber(capacity), " window ", window_ns,
                              "ns start ", now));
    bool any = false;
    int64_t last = 0;
    for (int op = 0; op < 30; ++op) {
      now = SaturatingAdd(now, fuzz.Step(capacity, window_ns));
      ASSERT_FALSE(state->ValidAmount(2)) << "a request above the burst";
      if (!state->TryAcquire(now, 1)) continue;
      ++admissions;
      if (any) {
        // Within the rounding of the double quotient (the limit computes it the same way).
        ASSERT_GE(SaturatingSub(now, last), interval - interval / (int64_t{1} << 50) - 1)
            << "admitted at " << last << " and " << now;
      }
      any = true;
      last = now;
    }
  }
  EXPECT_GT(admissions, 5000);
}

TEST(RateArithmeticFuzzTest, ClockJumpsBackAndForthKeepWaitsConsistent) {
  Fuzzer fuzz(Seed(99));
  for (int trial = 0; trial < 5000; ++trial) {
    const RateLimitAlgorithm algorithm = kAlgorithms[trial % 5];
    const double capacity = fuzz.Capacity(algorithm);
    const int64_t window_ns = fuzz.Window();
    OwnedRateState state(algorithm, capacity, window_ns,
                         fuzz.Burst(algorithm, capacity, window_ns));
    SCOPED_TRACE(absl::StrCat("trial ", trial, ": ", RateLimitAlgorithmName(algorithm),
                              " capacity ", FormatNumber(capacity), " window ", window_ns));
    for (int op = 0; op < 20; ++op) {
      // Any reading, in any order: a clock set back by centuries, or past absl's range.
      const int64_t now = fuzz.Start(window_ns);
      const double amount = fuzz.Amount(*state);
      const int64_t wait = state->WaitNs(now, amount);
      ASSERT_GE(wait, 0);
      ASSERT_EQ(state->TryAcquire(now, amount), wait == 0) << "at " << now;
      const double in_use = state->InUse(now);
      ASSERT_TRUE(in_use >= 0) << in_use;
      double snapshot_in_use = -1;
      const RateAlgorithmStats snapshot = state->Snapshot(now, &snapshot_in_use);
      ASSERT_EQ(snapshot_in_use, in_use);
      ASSERT_EQ(snapshot.burst, state->burst());
      ASSERT_TRUE(snapshot.tokens >= 0 && snapshot.level >= 0 && snapshot.window_count >= 0);
      if (fuzz.Chance(0.2)) state->Charge(now, fuzz.Amount(*state));
      if (state->supports_refund() && fuzz.Chance(0.2)) state->Refund(now, fuzz.Amount(*state));
    }
  }
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

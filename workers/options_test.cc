#include "workers/options.h"

#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "limits/limit_set_backend.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(const WorkerOptions& options) {
  try {
    ResolveWorkerOptions(options);
  } catch (const InvalidOptionError& e) {
    return e.what();
  }
  return "no error";
}

TEST(ModeFlagTest, ParsesConcurryNamesAndAliases) {
  const std::pair<const char*, Mode> cases[] = {
      {"sync", Mode::kSync},           {"Synchronous", Mode::kSync},  {"thread", Mode::kThread},
      {"THREADS", Mode::kThread},      {"tbb", Mode::kTbb},           {"loopback", Mode::kLoopback},
      {"process", Mode::kProcess},     {"procs", Mode::kProcess},     {"proc", Mode::kProcess},
      {"processes", Mode::kProcess},   {"asyncio", Mode::kCoroutine}, {"async", Mode::kCoroutine},
      {"coroutine", Mode::kCoroutine}, {"ray", Mode::kRemote},        {"remote", Mode::kRemote},
  };
  for (const auto& [text, expected] : cases) {
    Mode mode = Mode::kSync;
    std::string error;
    EXPECT_TRUE(AbslParseFlag(text, &mode, &error)) << text;
    EXPECT_EQ(mode, expected) << text;
  }
  Mode mode;
  std::string error;
  EXPECT_FALSE(AbslParseFlag("threadz", &mode, &error));
  EXPECT_THAT(error, HasSubstr("unknown mode \"threadz\""));
  EXPECT_THAT(error, HasSubstr("thread (threads)"));
}

TEST(ModeFlagTest, UnparseRoundTrips) {
  for (Mode m : {Mode::kSync, Mode::kThread, Mode::kTbb, Mode::kLoopback, Mode::kProcess,
                 Mode::kCoroutine, Mode::kRemote}) {
    Mode parsed;
    std::string error;
    ASSERT_TRUE(AbslParseFlag(AbslUnparseFlag(m), &parsed, &error));
    EXPECT_EQ(parsed, m);
  }
}

TEST(QueueFullPolicyFlagTest, Parses) {
  QueueFullPolicy p;
  std::string error;
  EXPECT_TRUE(AbslParseFlag("block", &p, &error));
  EXPECT_EQ(p, QueueFullPolicy::kBlock);
  EXPECT_TRUE(AbslParseFlag("park", &p, &error));
  EXPECT_EQ(p, QueueFullPolicy::kDefer);
  EXPECT_FALSE(AbslParseFlag("drop", &p, &error));
  EXPECT_THAT(error, HasSubstr("defer (park) or block"));
}

TEST(ResolveWorkerOptionsTest, FillsModeDefaults) {
  const ResolvedWorkerOptions r = ResolveWorkerOptions({.mode = Mode::kTbb});
  EXPECT_EQ(r.mode, Mode::kTbb);
  EXPECT_FALSE(r.blocking);
  EXPECT_EQ(r.max_queued_tasks, kUnbounded);
  EXPECT_EQ(r.queue_full, QueueFullPolicy::kDefer);
  EXPECT_TRUE(r.unwrap_futures);
  EXPECT_EQ(r.stop_timeout, absl::Seconds(30));
}

TEST(ResolveWorkerOptionsTest, ResolvesPoolOptions) {
  ResolvedWorkerOptions r = ResolveWorkerOptions({.mode = Mode::kThread});
  EXPECT_EQ(r.max_workers, 1);
  EXPECT_FALSE(r.pooled());
  r = ResolveWorkerOptions({.mode = Mode::kThread, .max_workers = 4});
  EXPECT_TRUE(r.pooled());
  EXPECT_FALSE(r.on_demand);
  EXPECT_FALSE(r.load_balancing.has_value());
  // On demand, max_workers is a cap; unset or 0 means the documented default.
  r = ResolveWorkerOptions({.mode = Mode::kTbb, .on_demand = true});
  EXPECT_EQ(r.max_workers, kDefaultOnDemandWorkers);
  EXPECT_EQ(r.on_demand_keepalive, absl::ZeroDuration());
  r = ResolveWorkerOptions({.mode = Mode::kTbb, .max_workers = 0, .on_demand = true});
  EXPECT_EQ(r.max_workers, kDefaultOnDemandWorkers);
  r = ResolveWorkerOptions({.mode = Mode::kTbb,
                            .max_workers = 3,
                            .on_demand = true,
                            .on_demand_keepalive = absl::Seconds(2)});
  EXPECT_EQ(r.max_workers, 3);
  EXPECT_EQ(r.on_demand_keepalive, absl::Seconds(2));
  r = ResolveWorkerOptions(
      {.mode = Mode::kThread, .max_workers = 2, .load_balancing = LoadBalancing::kRandom});
  EXPECT_EQ(r.load_balancing, LoadBalancing::kRandom);
}

TEST(ResolveWorkerOptionsTest, RejectsInvalidCombinations) {
  // Whether a mode's backend is linked is checked at Create (workers/backend_test.cc), not here:
  // the options of every known mode resolve.
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kCoroutine}).mode, Mode::kCoroutine);
  EXPECT_EQ(ErrorOf({.mode = static_cast<Mode>(42)}),
            "worker options: mode: unknown value 42; allowed: kSync, kThread, kTbb, kLoopback, "
            "kProcess, kCoroutine, kRemote");
  // (Whether the mode can pool at all is the backend's to say, at creation: pool_test.)
  EXPECT_THAT(
      ErrorOf({.mode = Mode::kThread, .max_workers = 0}),
      HasSubstr("max_workers for mode thread is 0; allowed: 1 to 65536 (more than 1 makes a "
                "pool; 0 is allowed only with on_demand)"));
  EXPECT_THAT(ErrorOf({.mode = Mode::kTbb, .max_workers = kMaxPoolWorkers + 1}),
              HasSubstr("is 65537; allowed: 1 to 65536"));
  EXPECT_THAT(ErrorOf({.mode = Mode::kThread, .max_queued_tasks = -5}),
              HasSubstr("max_queued_tasks for mode thread is -5; allowed: >= 1, or kUnbounded"));
  EXPECT_THAT(ErrorOf({.mode = Mode::kThread, .stop_timeout = absl::Seconds(-1)}),
              HasSubstr("stop_timeout is -1s"));
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread,
                     .max_queued_tasks = 4,
                     .queue_full = static_cast<QueueFullPolicy>(9)}),
            "worker options: queue_full: unknown value 9; allowed: kDefer, kBlock");
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .queue_full = static_cast<QueueFullPolicy>(-1)}),
            "worker options: queue_full: unknown value -1; allowed: kDefer, kBlock");
  EXPECT_THAT(ErrorOf({.mode = Mode::kThread, .executor = reinterpret_cast<Executor*>(8)}),
              HasSubstr("only tbb mode runs on an executor"));
}

TEST(ResolveWorkerOptionsTest, RejectsUnknownModesInTheDefaultsFunctionsToo) {
  try {
    GetWorkerDefaults(static_cast<Mode>(7));
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_STREQ(e.what(),
                 "GetWorkerDefaults: mode: unknown value 7; allowed: kSync, kThread, kTbb, "
                 "kLoopback, kProcess, kCoroutine, kRemote");
  }
  try {
    ScopedWorkerDefaults scope(static_cast<Mode>(-3), [](WorkerDefaults&) {});
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("ScopedWorkerDefaults: mode: unknown value -3; allowed: kSync"));
  }
}

TEST(ResolveWorkerOptionsTest, BlockNeedsAQueueCap) {
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .queue_full = QueueFullPolicy::kBlock}),
            "worker options: queue_full is kBlock for mode thread but max_queued_tasks is "
            "kUnbounded (from the mode's defaults); kBlock needs max_queued_tasks: set it to the "
            "cap (>= 1), or use kDefer");
  EXPECT_EQ(ErrorOf({.mode = Mode::kTbb,
                     .max_queued_tasks = kUnbounded,
                     .queue_full = QueueFullPolicy::kBlock}),
            "worker options: queue_full is kBlock for mode tbb but max_queued_tasks is "
            "kUnbounded; kBlock needs max_queued_tasks: set it to the cap (>= 1), or use kDefer");
  EXPECT_THAT(ErrorOf({.mode = Mode::kSync, .queue_full = QueueFullPolicy::kBlock}),
              HasSubstr("kBlock needs max_queued_tasks"));
  const ResolvedWorkerOptions r = ResolveWorkerOptions(
      {.mode = Mode::kThread, .max_queued_tasks = 1, .queue_full = QueueFullPolicy::kBlock});
  EXPECT_EQ(r.max_queued_tasks, 1);
  EXPECT_EQ(r.queue_full, QueueFullPolicy::kBlock);
  // The largest finite cap is accepted; only kUnbounded (no cap) is not.
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread,
                                  .max_queued_tasks = kUnbounded - 1,
                                  .queue_full = QueueFullPolicy::kBlock})
                .max_queued_tasks,
            kUnbounded - 1);
}

TEST(ScopedWorkerDefaultsTest, BlockWithoutACapIsRejectedInScopesAndWhereverItIsCombined) {
  // A scope whose defaults would be kBlock without a cap.
  try {
    ScopedWorkerDefaults bad(Mode::kThread,
                             [](WorkerDefaults& d) { d.queue_full = QueueFullPolicy::kBlock; });
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_STREQ(e.what(),
                 "ScopedWorkerDefaults: queue_full is kBlock for mode thread but max_queued_tasks "
                 "is kUnbounded; kBlock needs max_queued_tasks: set it to the cap (>= 1), or use "
                 "kDefer");
  }
  EXPECT_EQ(GetWorkerDefaults(Mode::kThread).queue_full, QueueFullPolicy::kDefer);
  {
    // kBlock with a cap in the same scope is fine; explicit options may not remove the cap.
    ScopedWorkerDefaults capped(Mode::kThread, [](WorkerDefaults& d) {
      d.queue_full = QueueFullPolicy::kBlock;
      d.max_queued_tasks = 8;
    });
    EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread}).queue_full, QueueFullPolicy::kBlock);
    EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .max_queued_tasks = kUnbounded}),
              "worker options: queue_full is kBlock (from the mode's defaults) for mode thread but "
              "max_queued_tasks is kUnbounded; kBlock needs max_queued_tasks: set it to the cap "
              "(>= 1), or use kDefer");
    EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread,
                                    .max_queued_tasks = kUnbounded,
                                    .queue_full = QueueFullPolicy::kDefer})
                  .queue_full,
              QueueFullPolicy::kDefer);
    // A nested scope may not remove the cap either.
    EXPECT_THROW(ScopedWorkerDefaults uncapped(
                     Mode::kThread, [](WorkerDefaults& d) { d.max_queued_tasks = kUnbounded; }),
                 InvalidOptionError);
  }
  // Scopes ending out of order: the cap's scope ends first and leaves kBlock without a cap.
  auto cap = std::make_unique<ScopedWorkerDefaults>(
      Mode::kThread, [](WorkerDefaults& d) { d.max_queued_tasks = 4; });
  auto block = std::make_unique<ScopedWorkerDefaults>(
      Mode::kThread, [](WorkerDefaults& d) { d.queue_full = QueueFullPolicy::kBlock; });
  cap.reset();
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread}),
            "worker options: queue_full is kBlock (from the mode's defaults) for mode thread but "
            "max_queued_tasks is kUnbounded (from the mode's defaults); kBlock needs "
            "max_queued_tasks: set it to the cap (>= 1), or use kDefer");
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread, .max_queued_tasks = 2}).max_queued_tasks,
            2);
  block.reset();
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread}).queue_full, QueueFullPolicy::kDefer);
}

TEST(ResolveWorkerOptionsTest, StopTimeoutAtTheExtremes) {
  // absl::Duration has no NaN: absl::Seconds(NaN) is +infinity (wait forever, allowed) and
  // absl::Seconds(-NaN) is -infinity (rejected as negative).
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread, .stop_timeout = absl::InfiniteDuration()})
                .stop_timeout,
            absl::InfiniteDuration());
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread, .stop_timeout = absl::ZeroDuration()})
                .stop_timeout,
            absl::ZeroDuration());
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .stop_timeout = -absl::InfiniteDuration()}),
            "worker options: stop_timeout is -inf; allowed: >= 0 (InfiniteDuration waits "
            "forever)");
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread,
                     .stop_timeout = absl::Seconds(-std::numeric_limits<double>::quiet_NaN())}),
            "worker options: stop_timeout is -inf; allowed: >= 0 (InfiniteDuration waits "
            "forever)");
  // Nor does a duration flag: absl::ParseDuration (behind AbslParseFlag) rejects "nan".
  absl::Duration parsed;
  EXPECT_FALSE(absl::ParseDuration("nan", &parsed));
  EXPECT_FALSE(absl::ParseDuration("nans", &parsed));
  EXPECT_TRUE(absl::ParseDuration("inf", &parsed));
  EXPECT_EQ(parsed, absl::InfiniteDuration());
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .stop_timeout = -absl::Nanoseconds(1)}),
            "worker options: stop_timeout is -1ns; allowed: >= 0 (InfiniteDuration waits "
            "forever)");
}

// A list of Limits given to a worker in another process becomes one process-shared set (shared
// by every worker process of a pool); an in-process worker keeps a private thread-shared set.
TEST(WorkerLimitsTest, AListOfLimitsIsProcessSharedForProcessAndRemoteWorkers) {
  const WorkerLimits limits = {ResourceLimit("slots", 3)};
  for (Mode mode : {Mode::kProcess, Mode::kRemote}) {
    const LimitPool pool = limits.Resolve(mode);
    ASSERT_EQ(pool.size(), 1u);
    EXPECT_EQ(pool[0].sharing(), LimitSharing::kProcesses) << AbslUnparseFlag(mode);
    EXPECT_EQ(pool[0].limits().at(0).key(), "slots");
    // The real clock, given explicitly, is accepted too.
    EXPECT_EQ(limits.Resolve(mode, &Clock::Real())[0].sharing(), LimitSharing::kProcesses);
  }
  EXPECT_EQ(limits.Resolve(Mode::kThread)[0].sharing(), LimitSharing::kThreads);
  // Through ResolveWorkerOptions as well.
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kProcess, .limits = limits}).limits[0].sharing(),
            LimitSharing::kProcesses);
  // No limits: the no-op pool, whatever the mode.
  EXPECT_TRUE(WorkerLimits().Resolve(Mode::kProcess).no_op());
}

TEST(WorkerLimitsTest, AProcessWorkersListOfLimitsNeedsTheRealClock) {
  testkit::FakeClock clock;
  const WorkerLimits limits = {CallLimit(10, "second")};
  for (Mode mode : {Mode::kProcess, Mode::kRemote}) {
    try {
      limits.Resolve(mode, &clock);
      ADD_FAILURE() << "no error for mode " << AbslUnparseFlag(mode);
    } catch (const InvalidOptionError& e) {
      EXPECT_THAT(e.what(), HasSubstr(absl::StrCat("a worker in mode ", AbslUnparseFlag(mode),
                                                   " runs in another process")));
      EXPECT_THAT(e.what(), HasSubstr("LimitSharing::kProcesses"));
      EXPECT_THAT(e.what(), HasSubstr("WorkerOptions::clock must be null or Clock::Real()"));
    }
  }
  EXPECT_THAT(ErrorOf({.mode = Mode::kProcess, .clock = &clock, .limits = limits}),
              HasSubstr("runs on the real clock"));
  // In-process workers run their limits on the worker's clock.
  EXPECT_EQ(limits.Resolve(Mode::kThread, &clock)[0].sharing(), LimitSharing::kThreads);
  // A process worker without limits may have any clock.
  EXPECT_TRUE(WorkerLimits().Resolve(Mode::kProcess, &clock).no_op());
}

TEST(WorkerLimitsTest, AThreadsOnlySetCannotGoToAWorkerInAnotherProcess) {
  const LimitSet threads = LimitSet::Create({ResourceLimit("slots", 3)});
  const LimitSet shared =
      LimitSet::Create({ResourceLimit("slots", 3)}, {.sharing = LimitSharing::kProcesses});
  for (Mode mode : {Mode::kProcess, Mode::kRemote}) {
    for (const WorkerLimits& limits :
         {WorkerLimits(threads), WorkerLimits(std::vector<LimitSet>{shared, threads}),
          WorkerLimits(LimitPool::Create({threads}))}) {
      try {
        limits.Resolve(mode);
        ADD_FAILURE() << "no error for mode " << AbslUnparseFlag(mode);
      } catch (const InvalidOptionError& e) {
        EXPECT_THAT(e.what(), HasSubstr("LimitSharing::kThreads"));
        EXPECT_THAT(e.what(), HasSubstr("create it with LimitSharing::kProcesses"));
      }
    }
    // A process-shared set is used as given.
    EXPECT_EQ(WorkerLimits(shared).Resolve(mode)[0], shared);
    // The no-op set is fine anywhere.
    EXPECT_TRUE(WorkerLimits(LimitSet::NoOp()).Resolve(mode).no_op());
  }
  // In-process workers take a thread-shared set.
  EXPECT_EQ(WorkerLimits(threads).Resolve(Mode::kThread)[0], threads);
}

// The least a LimitStore needs for a kHosts set to exist: an engine that is never acquired.
class UnusedEngine final : public LimitSetBackend {
 public:
  UnusedEngine(std::vector<Limit> limits, LimitSetOptions options)
      : LimitSetBackend(std::move(limits), std::move(options)) {}
  LimitAcquisition Acquire(const std::shared_ptr<LimitSetBackend>& /*self*/,
                           absl::Span<const LimitAmount> /*request*/, absl::Duration /*timeout*/,
                           bool /*try_once*/) override {
    return LimitAcquisition();
  }
  LimitAcquisition AcquirePrepared(const std::shared_ptr<LimitSetBackend>& /*self*/,
                                   const PreparedLimitRequest& /*request*/,
                                   absl::Duration /*timeout*/, bool /*try_once*/) override {
    return LimitAcquisition();
  }
  Future<LimitAcquisition> AcquireAsync(Request /*request*/, absl::Time /*deadline*/) override {
    return MakeFailedFuture<LimitAcquisition>(
        std::make_exception_ptr(TimeoutError("UnusedEngine")));
  }
  void RecordUsage(Item* const* /*targets*/, const double* /*amounts*/, size_t /*count*/) override {
  }
  bool Release(LimitAcquisition& /*acquisition*/, bool /*drop*/) noexcept override { return false; }
  void DropReference() noexcept override {}
  LimitSetStats Stats() override { return {}; }
  void CountMissingUpdate() noexcept override {}
  Clock& clock() const override { return Clock::Real(); }
};

class UnusedStore final : public LimitStore {
 public:
  std::shared_ptr<LimitSetBackend> OpenSet(std::vector<Limit> limits,
                                           LimitSetOptions options) override {
    return std::make_shared<UnusedEngine>(std::move(limits), std::move(options));
  }
};

// A kHosts set lives in its LimitStore, reached through this process's connections: it cannot
// be handed to a worker in another process (yet), and Resolve says so at configuration time
// rather than ExportLimitPool() when the worker starts.
TEST(WorkerLimitsTest, AHostsSetCannotGoToAWorkerInAnotherProcess) {
  const LimitSet hosts = LimitSet::Create(
      {ResourceLimit("slots", 3)},
      {.sharing = LimitSharing::kHosts, .store = std::make_shared<UnusedStore>(), .name = "slots"});
  const LimitSet shared =
      LimitSet::Create({ResourceLimit("slots", 3)}, {.sharing = LimitSharing::kProcesses});
  for (Mode mode : {Mode::kProcess, Mode::kRemote}) {
    for (const WorkerLimits& limits :
         {WorkerLimits(hosts), WorkerLimits(std::vector<LimitSet>{shared, hosts}),
          WorkerLimits(LimitPool::Create({hosts}))}) {
      try {
        limits.Resolve(mode);
        ADD_FAILURE() << "no error for mode " << AbslUnparseFlag(mode);
      } catch (const InvalidOptionError& e) {
        EXPECT_EQ(std::string(e.what()),
                  absl::StrCat("worker options: limits: a LimitSet shared across hosts through a "
                               "LimitStore (LimitSharing::kHosts) cannot be handed to a worker "
                               "in mode ",
                               AbslUnparseFlag(mode),
                               " yet; open the same set in the worker's process instead (the "
                               "same store options and LimitSetOptions::name share the same "
                               "state)"));
      }
    }
    EXPECT_THAT(ErrorOf({.mode = mode, .limits = hosts}), HasSubstr("LimitSharing::kHosts"));
  }
  // In-process workers use it as given.
  EXPECT_EQ(WorkerLimits(hosts).Resolve(Mode::kThread)[0], hosts);
}

TEST(ResolveWorkerOptionsTest, RemoteSettingsComeFromTheOptionsOrTheModesDefaults) {
  // Only remote mode takes them; what they must contain is checked by its backend at Create
  // (workers/remote/remote_worker_test.cc).
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .remote = RemoteOptions{.hosts = {"h:1"}}}),
            "worker options: remote is set for mode thread; only remote mode reaches hosts");
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote}).remote, RemoteOptions{});
  const RemoteOptions given{.hosts = {"a:1", "b:2"}, .token = "t"};
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote, .remote = given}).remote, given);
  {
    ScopedWorkerDefaults scope(Mode::kRemote, [](WorkerDefaults& d) {
      d.remote.hosts = {"c:3"};
      d.remote.token = "s";
    });
    EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote}).remote.hosts,
              std::vector<std::string>{"c:3"});
    // The options win over the defaults, as a whole.
    EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote, .remote = given}).remote, given);
  }
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote}).remote, RemoteOptions{});
  // Scopes change remote settings field by field: an inner scope that sets the token keeps the
  // outer scope's hosts, and the outer scope's hosts come back with a newer outer layer.
  {
    ScopedWorkerDefaults outer(Mode::kRemote, [](WorkerDefaults& d) { d.remote.hosts = {"a:1"}; });
    ScopedWorkerDefaults inner(Mode::kRemote, [](WorkerDefaults& d) { d.remote.token = "t2"; });
    const RemoteOptions resolved = ResolveWorkerOptions({.mode = Mode::kRemote}).remote;
    EXPECT_EQ(resolved.hosts, std::vector<std::string>{"a:1"});
    EXPECT_EQ(resolved.token, "t2");
  }
  {
    ScopedWorkerDefaults first(Mode::kRemote, [](WorkerDefaults& d) { d.remote.token = "t1"; });
    auto second = std::make_unique<ScopedWorkerDefaults>(
        Mode::kRemote, [](WorkerDefaults& d) { d.remote.hosts = {"b:2"}; });
    auto third = std::make_unique<ScopedWorkerDefaults>(
        Mode::kRemote, [](WorkerDefaults& d) { d.remote.keepalive_time = absl::Seconds(30); });
    // Ending the middle scope removes only the field it set.
    second.reset();
    const RemoteOptions resolved = ResolveWorkerOptions({.mode = Mode::kRemote}).remote;
    EXPECT_EQ(resolved.hosts, std::vector<std::string>{});
    EXPECT_EQ(resolved.token, "t1");
    EXPECT_EQ(resolved.keepalive_time, absl::Seconds(30));
  }
  // call_timeout is one more field applied on its own.
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote}).remote.call_timeout,
            absl::InfiniteDuration());
  {
    ScopedWorkerDefaults outer(Mode::kRemote, [](WorkerDefaults& d) { d.remote.hosts = {"a:1"}; });
    ScopedWorkerDefaults inner(
        Mode::kRemote, [](WorkerDefaults& d) { d.remote.call_timeout = absl::Milliseconds(250); });
    const RemoteOptions resolved = ResolveWorkerOptions({.mode = Mode::kRemote}).remote;
    EXPECT_EQ(resolved.hosts, std::vector<std::string>{"a:1"});
    EXPECT_EQ(resolved.call_timeout, absl::Milliseconds(250));
  }
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kRemote}).remote.call_timeout,
            absl::InfiniteDuration());
  // Other modes' defaults cannot hold remote settings.
  EXPECT_THROW(ScopedWorkerDefaults(Mode::kThread, [](WorkerDefaults& d) { d.remote.token = "x"; }),
               InvalidOptionError);
}

TEST(ScopedWorkerDefaultsTest, OverridesNestAndRestore) {
  EXPECT_TRUE(GetWorkerDefaults(Mode::kThread).unwrap_futures);
  {
    ScopedWorkerDefaults outer(Mode::kThread, [](WorkerDefaults& d) {
      d.unwrap_futures = false;
      d.max_queued_tasks = 10;
    });
    EXPECT_FALSE(ResolveWorkerOptions({.mode = Mode::kThread}).unwrap_futures);
    EXPECT_TRUE(ResolveWorkerOptions({.mode = Mode::kTbb}).unwrap_futures);  // Other modes kept.
    {
      ScopedWorkerDefaults inner(Mode::kThread, [](WorkerDefaults& d) { d.max_queued_tasks = 3; });
      const ResolvedWorkerOptions r = ResolveWorkerOptions({.mode = Mode::kThread});
      EXPECT_EQ(r.max_queued_tasks, 3);
      EXPECT_FALSE(r.unwrap_futures);  // Inherited from the outer scope.
      // Explicit options beat every scope.
      EXPECT_TRUE(
          ResolveWorkerOptions({.mode = Mode::kThread, .unwrap_futures = true}).unwrap_futures);
    }
    EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread}).max_queued_tasks, 10);
  }
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kThread}).max_queued_tasks, kUnbounded);
  EXPECT_TRUE(GetWorkerDefaults(Mode::kThread).unwrap_futures);
}

TEST(ScopedWorkerDefaultsTest, ScopesMayEndOutOfOrder) {
  auto a = std::make_unique<ScopedWorkerDefaults>(
      Mode::kThread, [](WorkerDefaults& d) { d.max_queued_tasks = 5; });
  auto b = std::make_unique<ScopedWorkerDefaults>(
      Mode::kThread, [](WorkerDefaults& d) { d.stop_timeout = absl::Seconds(1); });
  a.reset();  // Ends first, as when scopes live on two threads.
  EXPECT_EQ(GetWorkerDefaults(Mode::kThread).max_queued_tasks, kUnbounded);
  EXPECT_EQ(GetWorkerDefaults(Mode::kThread).stop_timeout, absl::Seconds(1));
  b.reset();
  EXPECT_EQ(GetWorkerDefaults(Mode::kThread).stop_timeout, absl::Seconds(30));
}

TEST(ScopedWorkerDefaultsTest, ChangeMayReadTheDefaults) {
  ScopedWorkerDefaults scope(Mode::kTbb, [](WorkerDefaults& d) {
    d.max_queued_tasks = GetWorkerDefaults(Mode::kThread).max_queued_tasks == kUnbounded ? 8 : 9;
  });
  EXPECT_EQ(GetWorkerDefaults(Mode::kTbb).max_queued_tasks, 8);
}

TEST(ScopedWorkerDefaultsTest, RejectsInvalidDefaultsAndLeavesThemUnchanged) {
  try {
    ScopedWorkerDefaults bad(Mode::kTbb, [](WorkerDefaults& d) { d.max_queued_tasks = 0; });
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("ScopedWorkerDefaults: max_queued_tasks for mode tbb is 0"));
  }
  EXPECT_EQ(GetWorkerDefaults(Mode::kTbb).max_queued_tasks, kUnbounded);
}

TEST(ResolveWorkerOptionsTest, MaxInFlightCoroutinesDefaultsTo1024InCoroutineMode) {
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kCoroutine}).max_in_flight_coroutines, 1024);
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kCoroutine, .max_in_flight_coroutines = 2})
                .max_in_flight_coroutines,
            2);
  EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kCoroutine, .max_in_flight_coroutines = kUnbounded})
                .max_in_flight_coroutines,
            kUnbounded);
  EXPECT_EQ(ResolveWorkerOptions(
                {.mode = Mode::kCoroutine, .max_in_flight_coroutines = kMaxInFlightCoroutines})
                .max_in_flight_coroutines,
            kMaxInFlightCoroutines);
}

TEST(ResolveWorkerOptionsTest, MaxInFlightCoroutinesIsCheckedAndOnlyForCoroutineMode) {
  EXPECT_EQ(ErrorOf({.mode = Mode::kCoroutine, .max_in_flight_coroutines = 0}),
            "worker options: max_in_flight_coroutines for mode coroutine is 0; allowed: 1 to "
            "1048576, or kUnbounded for no cap");
  EXPECT_THAT(
      ErrorOf({.mode = Mode::kCoroutine, .max_in_flight_coroutines = kMaxInFlightCoroutines + 1}),
      HasSubstr("max_in_flight_coroutines for mode coroutine is 1048577"));
  EXPECT_EQ(ErrorOf({.mode = Mode::kThread, .max_in_flight_coroutines = 4}),
            "worker options: max_in_flight_coroutines is set for mode thread; only coroutine "
            "mode interleaves calls (other modes run one call at a time)");
  EXPECT_THAT(ErrorOf({.mode = Mode::kTbb, .max_in_flight_coroutines = 1024}),
              HasSubstr("max_in_flight_coroutines is set for mode tbb"));
}

TEST(ScopedWorkerDefaultsTest, MaxInFlightCoroutinesDefaultIsScopedAndChecked) {
  {
    ScopedWorkerDefaults scope(Mode::kCoroutine,
                               [](WorkerDefaults& d) { d.max_in_flight_coroutines = 8; });
    EXPECT_EQ(GetWorkerDefaults(Mode::kCoroutine).max_in_flight_coroutines, 8);
    EXPECT_EQ(ResolveWorkerOptions({.mode = Mode::kCoroutine}).max_in_flight_coroutines, 8);
  }
  EXPECT_EQ(GetWorkerDefaults(Mode::kCoroutine).max_in_flight_coroutines, 1024);
  try {
    ScopedWorkerDefaults bad(Mode::kCoroutine,
                             [](WorkerDefaults& d) { d.max_in_flight_coroutines = -1; });
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("ScopedWorkerDefaults: max_in_flight_coroutines for mode "
                                    "coroutine is -1"));
  }
}

TEST(WorkerStatsTest, CoroutineCountersStartAtZero) {
  const WorkerStats stats;
  EXPECT_EQ(stats.coroutines, 0);
  EXPECT_EQ(stats.coroutines_waiting, 0);
  EXPECT_EQ(stats.coroutine_timers, 0);
}

}  // namespace
}  // namespace concurry

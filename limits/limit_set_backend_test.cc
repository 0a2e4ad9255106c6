// LimitSetBackend is implementable from outside limits/internal: a tiny engine (resource units in
// a map shared by the sets of one name, no waiting) behind a tiny LimitStore runs LimitSet's API
// with LimitSharing::kHosts. Also the kHosts option errors of LimitSet::Create(), and what
// Create() does with a store that breaks LimitStore::OpenSet()'s promises.

#include "limits/limit_set_backend.h"

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/internal/process_transfer.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// The state of the sets of one name: units held per limit index, and counters.
struct MapState {
  absl::Mutex mu;
  std::map<int32_t, double> held ABSL_GUARDED_BY(mu);
  int64_t acquisitions ABSL_GUARDED_BY(mu) = 0;
  int64_t holding ABSL_GUARDED_BY(mu) = 0;
  int64_t timeouts ABSL_GUARDED_BY(mu) = 0;
  int64_t overuse_reports ABSL_GUARDED_BY(mu) = 0;
  int64_t missing_updates ABSL_GUARDED_BY(mu) = 0;
  uint64_t next_lease ABSL_GUARDED_BY(mu) = 1;
};

// Resource limits hold units in the map; rate and call limits always admit (and refund any
// unused part of an updated request). Never waits: what is short fails at once.
class MapBackend final : public LimitSetBackend {
 public:
  MapBackend(std::vector<Limit> limits, LimitSetOptions options, std::shared_ptr<MapState> state)
      : LimitSetBackend(std::move(limits), std::move(options)), state_(std::move(state)) {}

  static uint64_t Lease(const LimitAcquisition& acquisition) { return LeaseOf(acquisition); }

  LimitAcquisition Acquire(const std::shared_ptr<LimitSetBackend>& self,
                           absl::Span<const LimitAmount> request, absl::Duration /*timeout*/,
                           bool try_once) override {
    return Take(self, Prepare(request), /*count_timeout=*/!try_once);
  }
  LimitAcquisition AcquirePrepared(const std::shared_ptr<LimitSetBackend>& self,
                                   const PreparedLimitRequest& request, absl::Duration /*timeout*/,
                                   bool try_once) override {
    return Take(self, ToRequest(request), /*count_timeout=*/!try_once);
  }
  Future<LimitAcquisition> AcquireAsync(Request request, absl::Time /*deadline*/) override {
    LimitAcquisition taken = Take(owner_.lock(), std::move(request), /*count_timeout=*/true);
    if (!taken.held()) {
      return MakeFailedFuture<LimitAcquisition>(
          std::make_exception_ptr(TimeoutError("MapBackend: short")));
    }
    return MakeReadyFuture(std::move(taken));
  }
  void RecordUsage(Item* const* targets, const double* /*amounts*/, size_t count) override {
    const std::string message = OveruseMessage(targets, count);
    for (size_t i = 0; i < count; ++i) {
      Item& item = *targets[i];
      item.charged_extra += NewExcess(item, limits()[item.index].kind());
    }
    {
      absl::MutexLock lock(&state_->mu);
      ++state_->overuse_reports;
    }
    Warn(message);
  }
  bool Release(LimitAcquisition& acquisition, bool /*drop*/) noexcept override {
    absl::MutexLock lock(&state_->mu);
    for (Item& item : ItemsOf(acquisition)) {
      if (limits()[item.index].kind() == LimitKind::kResource) {
        state_->held[item.index] -= item.requested;
        item.refunded = item.requested;
      } else if (item.updated && item.used < item.requested) {
        item.refunded = item.requested - item.used;
      }
    }
    --state_->holding;
    return false;
  }
  void DropReference() noexcept override {
    ADD_FAILURE() << "only counted acquisitions drop references";
  }
  LimitSetStats Stats() override {
    LimitSetStats stats;
    absl::MutexLock lock(&state_->mu);
    for (size_t i = 0; i < limits().size(); ++i) {
      LimitStats& entry = stats.limits.emplace_back();
      entry.key = limits()[i].key();
      entry.kind = limits()[i].kind();
      entry.capacity = limits()[i].capacity();
      entry.burst = limits()[i].burst();
      entry.in_use = state_->held[static_cast<int32_t>(i)];
      entry.available = entry.burst - entry.in_use;
    }
    stats.acquisitions = state_->acquisitions;
    stats.holding = state_->holding;
    stats.timeouts = state_->timeouts;
    stats.overuse_reports = state_->overuse_reports;
    stats.missing_updates = state_->missing_updates;
    return stats;
  }
  void CountMissingUpdate() noexcept override {
    absl::MutexLock lock(&state_->mu);
    ++state_->missing_updates;
  }
  Clock& clock() const override { return Clock::Real(); }

  std::weak_ptr<LimitSetBackend> owner_;  // For AcquireAsync(), set by the store.

 private:
  LimitAcquisition Take(std::shared_ptr<LimitSetBackend> self, Request request,
                        bool count_timeout) {
    LimitAcquisition result;
    absl::MutexLock lock(&state_->mu);
    for (const Item& item : request.items) {
      const Limit& limit = limits()[item.index];
      if (limit.kind() == LimitKind::kResource &&
          state_->held[item.index] + item.requested > limit.capacity()) {
        if (count_timeout) ++state_->timeouts;
        return result;
      }
    }
    for (const Item& item : request.items) {
      if (limits()[item.index].kind() == LimitKind::kResource) {
        state_->held[item.index] += item.requested;
      }
    }
    ++state_->acquisitions;
    ++state_->holding;
    ItemsOf(result) = std::move(request.items);
    LeaseOf(result) = state_->next_lease++;
    Bind(result, this, std::move(self));
    return result;
  }

  std::shared_ptr<MapState> state_;
};

class MapStore : public LimitStore {
 public:
  std::shared_ptr<LimitSetBackend> OpenSet(std::vector<Limit> limits,
                                           LimitSetOptions options) override {
    EXPECT_EQ(options.clock, nullptr);  // Clock::Real() given explicitly arrives as null.
    std::shared_ptr<MapState>& state = states_[options.name];
    if (state == nullptr) state = std::make_shared<MapState>();
    auto backend = std::make_shared<MapBackend>(std::move(limits), std::move(options), state);
    backend->owner_ = backend;
    return backend;
  }

 private:
  std::map<std::string, std::shared_ptr<MapState>> states_;
};

std::vector<Limit> TokensAndConnections() {
  return {RateLimit("tokens", 100, "second", RateLimitAlgorithm::kGcra),
          ResourceLimit("connections", 2)};
}

TEST(LimitSetBackendTest, RunsLimitSetThroughAnEngineOutsideTheLibrary) {
  const auto store = std::make_shared<MapStore>();
  std::vector<std::string> warnings;
  const LimitSet hosts = LimitSet::Create(
      TokensAndConnections(), {.sharing = LimitSharing::kHosts,
                               .on_warning = [&](absl::string_view w) { warnings.emplace_back(w); },
                               .store = store,
                               .name = "api"});
  EXPECT_EQ(hosts.sharing(), LimitSharing::kHosts);
  // A second set of the same name shares the units.
  const LimitSet twin = LimitSet::Create(
      TokensAndConnections(), {.sharing = LimitSharing::kHosts,
                               .on_warning = [&](absl::string_view w) { warnings.emplace_back(w); },
                               .store = store,
                               .name = "api"});

  LimitAcquisition first = hosts.Acquire({{"tokens", 10}});
  const uint64_t lease = MapBackend::Lease(first);
  EXPECT_NE(lease, 0u);
  LimitAcquisition moved = std::move(first);  // The lease moves with the acquisition.
  EXPECT_EQ(MapBackend::Lease(moved), lease);
  EXPECT_EQ(MapBackend::Lease(first), 0u);  // NOLINT: checking the moved-from object.
  EXPECT_EQ(moved.requested("connections"), 1);
  std::optional<LimitAcquisition> second = twin.TryAcquire({{"tokens", 5}});
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(hosts.TryAcquire({{"tokens", 1}}).has_value());  // Both connections held.
  EXPECT_THROW(hosts.Acquire({{"tokens", 1}}, absl::Milliseconds(1)), TimeoutError);
  EXPECT_EQ(hosts.Stats().at("connections").in_use, 2);

  // The base validates requests and usage for every engine.
  EXPECT_THROW(hosts.Acquire({{"bogus", 1}}), InvalidOptionError);
  EXPECT_THROW(moved.Update({{"tokens", -1}}), InvalidOptionError);
  moved.Update({{"tokens", 4}});
  second->Update(twin.Handle("tokens"), 7);  // Over-use: charged and warned.
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("'tokens' used 7 of 5 requested"));
  moved.Release();
  second.reset();
  const std::optional<LimitCharge> tokens = moved.charge("tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_EQ(tokens->used, 4);
  EXPECT_EQ(tokens->refunded, 6);
  EXPECT_EQ(tokens->charged, 4);
  EXPECT_EQ(moved.charge("connections")->refunded, 1);

  // A prepared request, an asynchronous one, and a release without Update().
  const PreparedLimitRequest three = hosts.Prepare({{"tokens", 3}});
  LimitAcquisition prepared = hosts.Acquire(three);
  LimitAcquisition async = hosts.AcquireAsync({{"tokens", 2}}).Result();
  EXPECT_THROW(prepared.Release(), LimitUsageError);
  async.Update({{"tokens", 2}});
  async.Release();

  const LimitSetStats stats = hosts.Stats();
  EXPECT_EQ(stats.at("connections").in_use, 0);
  EXPECT_EQ(stats.acquisitions, 4);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.timeouts, 1);
  EXPECT_EQ(stats.overuse_reports, 1);
  EXPECT_EQ(stats.missing_updates, 1);
}

TEST(LimitSetBackendTest, RejectsBadHostsOptions) {
  const auto store = std::make_shared<MapStore>();
  const auto create = [&](LimitSetOptions options) {
    LimitSet::Create(TokensAndConnections(), std::move(options));
  };
  EXPECT_THAT([&] { create({.sharing = LimitSharing::kHosts, .name = "api"}); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("needs LimitSetOptions::store")));
  for (const std::string& name :
       {std::string(), std::string("a b"), std::string("a\tb"), std::string("{api}"),
        std::string("a}"), std::string("a\0b", 3), std::string("a\x1b"), std::string("caf\xc3\xa9"),
        std::string("a\x7f"), std::string(257, 'n')}) {
    EXPECT_THAT([&] { create({.sharing = LimitSharing::kHosts, .store = store, .name = name}); },
                ThrowsMessage<InvalidOptionError>(HasSubstr("needs LimitSetOptions::name: 1 to 256 "
                                                            "bytes of printable ASCII")))
        << name;
  }
  // The name is escaped in the message; a long one is cut and its size given.
  EXPECT_THAT(
      [&] {
        create({.sharing = LimitSharing::kHosts, .store = store, .name = std::string("a\x1b\n")});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("got 'a\\033\\n'")));
  EXPECT_THAT(
      [&] {
        create({.sharing = LimitSharing::kHosts, .store = store, .name = std::string(300, 'n')});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("...' (300 bytes)")));
  // Every printable byte but the braces, and the longest name, are fine.
  std::string printable;
  for (char c = 0x21; c <= 0x7e; ++c) {
    if (c != '{' && c != '}') printable.push_back(c);
  }
  create({.sharing = LimitSharing::kHosts, .store = store, .name = printable});
  create({.sharing = LimitSharing::kHosts, .store = store, .name = std::string(256, 'n')});

  // The store's clock: null, or the real clock given explicitly (as kProcesses accepts it).
  testkit::FakeClock fake;
  EXPECT_THAT(
      [&] {
        create({.sharing = LimitSharing::kHosts, .clock = &fake, .store = store, .name = "api"});
      },
      ThrowsMessage<InvalidOptionError>(
          HasSubstr("leave LimitSetOptions::clock null (or Clock::Real())")));
  create({.sharing = LimitSharing::kHosts, .clock = &Clock::Real(), .store = store, .name = "api"});

  for (LimitSharing sharing : {LimitSharing::kThreads, LimitSharing::kProcesses}) {
    EXPECT_THAT(
        [&] { create({.sharing = sharing, .store = store}); },
        ThrowsMessage<InvalidOptionError>(HasSubstr("store is for LimitSharing::kHosts only")));
    EXPECT_THAT([&] { create({.sharing = sharing, .name = "api"}); },
                ThrowsMessage<InvalidOptionError>(
                    HasSubstr("LimitSetOptions::name is for LimitSharing::kHosts only")));
  }
  // An unknown sharing value is named first, whatever else is set.
  EXPECT_THAT(
      [&] { create({.sharing = static_cast<LimitSharing>(7), .store = store, .name = "api"}); },
      ThrowsMessage<InvalidOptionError>(
          "LimitSetOptions::sharing: unknown value 7; allowed: kThreads, kProcesses, kHosts"));
  EXPECT_THAT(
      [&] {
        LimitSet::Create({ResourceLimit("k", 1), ResourceLimit("k", 2)},
                         {.sharing = LimitSharing::kHosts, .store = store, .name = "api"});
      },
      ThrowsMessage<InvalidOptionError>("Duplicate limit key: 'k'"));
}

// A process worker gets its limits through ExportLimitPool(); a kHosts set cannot go that way
// yet, and says what to do instead.
TEST(LimitSetBackendTest, AHostsSetCannotBeHandedToAnotherProcessAndSaysWhy) {
  const auto store = std::make_shared<MapStore>();
  const LimitSet set = LimitSet::Create(
      TokensAndConnections(), {.sharing = LimitSharing::kHosts, .store = store, .name = "api"});
  EXPECT_THAT([&] { limits_internal::ExportLimitPool(LimitPool::Create({set})); },
              ThrowsMessage<InvalidOptionError>(
                  HasSubstr("keeps its state in a LimitStore (LimitSharing::kHosts)")));
}

// A store that breaks LimitStore::OpenSet()'s promises in the way `bug` says.
class BuggyStore : public LimitStore {
 public:
  enum class Bug { kNull, kNotHosts, kOtherLimits };
  explicit BuggyStore(Bug bug) : bug_(bug) {}

  std::shared_ptr<LimitSetBackend> OpenSet(std::vector<Limit> limits,
                                           LimitSetOptions options) override {
    switch (bug_) {
      case Bug::kNull:
        return nullptr;
      case Bug::kNotHosts:
        options.sharing = LimitSharing::kThreads;
        break;
      case Bug::kOtherLimits:
        limits.pop_back();
        break;
    }
    return std::make_shared<MapBackend>(std::move(limits), std::move(options),
                                        std::make_shared<MapState>());
  }

 private:
  const Bug bug_;
};

TEST(LimitSetBackendTest, AStoreThatBreaksOpenSetsPromisesIsNamedAsTheBug) {
  for (const auto& [bug, what] : std::vector<std::pair<BuggyStore::Bug, std::string>>{
           {BuggyStore::Bug::kNull, "returned no engine (null)"},
           {BuggyStore::Bug::kNotHosts, "whose options().sharing is not kHosts"},
           {BuggyStore::Bug::kOtherLimits, "with another number of limits"}}) {
    EXPECT_THAT(
        [&] {
          LimitSet::Create(TokensAndConnections(), {.sharing = LimitSharing::kHosts,
                                                    .store = std::make_shared<BuggyStore>(bug),
                                                    .name = "api"});
        },
        ThrowsMessage<std::logic_error>(AllOf(HasSubstr("LimitStore::OpenSet()"),
                                              HasSubstr("(set 'api') "), HasSubstr(what),
                                              HasSubstr("this is a bug in that store"))));
  }
}

// Assigning onto a held acquisition of an engine outside the library releases it first (through
// its owner, not a counted reference), with the missing-update warning as on destruction.
TEST(LimitSetBackendTest, MoveAssignmentOntoAHeldAcquisitionReleasesItFirst) {
  const auto store = std::make_shared<MapStore>();
  std::vector<std::string> warnings;
  const LimitSet set = LimitSet::Create(
      TokensAndConnections(), {.sharing = LimitSharing::kHosts,
                               .on_warning = [&](absl::string_view w) { warnings.emplace_back(w); },
                               .store = store,
                               .name = "api"});
  LimitAcquisition held = set.Acquire({{"tokens", 1}});
  const uint64_t first_lease = MapBackend::Lease(held);
  held = set.Acquire({{"tokens", 2}});  // The first one, never updated, is released and warned.
  EXPECT_NE(MapBackend::Lease(held), first_lease);
  EXPECT_EQ(held.requested("tokens"), 2);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("Missing: [tokens]"));
  LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.holding, 1);
  EXPECT_EQ(stats.at("connections").in_use, 1);
  EXPECT_EQ(stats.missing_updates, 1);

  // Assigning an empty (moved-from) acquisition releases the held one too.
  held.Update({{"tokens", 2}});
  LimitAcquisition empty = std::move(held);
  empty.Release();
  held = std::move(empty);
  EXPECT_FALSE(held.held());
  LimitAcquisition other = set.Acquire({{"tokens", 1}});
  other.Update({{"tokens", 1}});
  held = set.Acquire({{"tokens", 1}});
  held.Update({{"tokens", 1}});
  held = std::move(other);
  stats = set.Stats();
  EXPECT_EQ(stats.holding, 1);
  EXPECT_EQ(stats.at("connections").in_use, 1);
  EXPECT_EQ(stats.missing_updates, 1);
  EXPECT_EQ(warnings.size(), 1u);
  held = LimitAcquisition();
  EXPECT_EQ(set.Stats().holding, 0);
  EXPECT_EQ(set.Stats().at("connections").in_use, 0);
}

// A kHosts set without limits runs on its engine like any other, with the no-op set's checks:
// any key, amounts only checked to be >= 0 and finite.
TEST(LimitSetBackendTest, AHostsSetWithoutLimits) {
  const auto store = std::make_shared<MapStore>();
  const LimitSet set =
      LimitSet::Create({}, {.sharing = LimitSharing::kHosts, .store = store, .name = "none"});
  EXPECT_TRUE(set.no_op());
  EXPECT_EQ(set.sharing(), LimitSharing::kHosts);
  EXPECT_TRUE(set.limits().empty());
  {
    LimitAcquisition acquired = set.Acquire({});
    EXPECT_TRUE(acquired.held());
    LimitAcquisition named = set.Acquire({{"anything", 3}});
    named.Update({{"anything", 5}});  // Nothing to record or charge.
    EXPECT_THROW(named.Update({{"anything", -1}}), InvalidOptionError);
    EXPECT_EQ(set.Stats().holding, 2);
  }
  EXPECT_EQ(set.Stats().holding, 0);
  EXPECT_EQ(set.Stats().overuse_reports, 0);
  EXPECT_THROW(set.Acquire({{"anything", -1}}), InvalidOptionError);
  EXPECT_THAT([&] { set.Handle("anything"); },
              ThrowsMessage<InvalidOptionError>(HasSubstr("the set has: no limits")));
  EXPECT_TRUE(set.TryAcquire({}).has_value());
  EXPECT_TRUE(set.AcquireAsync({}).Result().held());
}

// A warning sink that throws cannot make a release of an outside engine's acquisition throw from
// a destructor; from Update() (an over-use warning) the exception reaches the caller, with the
// usage recorded.
TEST(LimitSetBackendTest, AWarningSinkThatThrowsDuringARelease) {
  const auto store = std::make_shared<MapStore>();
  int calls = 0;
  const LimitSet set =
      LimitSet::Create(TokensAndConnections(), {.sharing = LimitSharing::kHosts,
                                                .on_warning =
                                                    [&](absl::string_view) {
                                                      ++calls;
                                                      throw std::runtime_error("sink failed");
                                                    },
                                                .store = store,
                                                .name = "api"});
  {
    LimitAcquisition never_updated = set.Acquire({{"tokens", 3}});
  }  // The missing-update warning throws inside the (noexcept) release: caught.
  EXPECT_EQ(calls, 1);
  LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.missing_updates, 1);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.at("connections").in_use, 0);

  LimitAcquisition over = set.Acquire({{"tokens", 3}});
  EXPECT_THROW(over.Update({{"tokens", 5}}), std::runtime_error);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(set.Stats().overuse_reports, 1);
  LimitAcquisition moved = std::move(over);
  moved.Release();  // Updated: no warning.
  EXPECT_EQ(moved.charge("tokens")->used, 5);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(set.Stats().holding, 0);
}

}  // namespace
}  // namespace concurry

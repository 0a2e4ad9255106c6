// LimitSetBackend is implementable from outside limits/internal: a tiny engine (resource units in
// a map shared by the sets of one name, no waiting) behind a tiny LimitStore runs LimitSet's API
// with LimitSharing::kHosts. Also the kHosts option errors of LimitSet::Create().

#include "limits/limit_set_backend.h"

#include <map>
#include <memory>
#include <optional>
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

namespace concurry {
namespace {

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
      const double extra = item.used - item.requested - item.charged_extra;
      if (extra > 0 && limits()[item.index].kind() != LimitKind::kResource) {
        item.charged_extra += extra;
      }
    }
    {
      absl::MutexLock lock(&state_->mu);
      ++state_->overuse_reports;
    }
    Warn(message);
  }
  bool Release(LimitAcquisition& acquisition, bool /*drop*/) override {
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
  void DropReference() override { ADD_FAILURE() << "only counted acquisitions drop references"; }
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
  void CountMissingUpdate() override {
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
  for (const char* name : {"", "a b", "a\tb", "{api}", "a}"}) {
    EXPECT_THAT([&] { create({.sharing = LimitSharing::kHosts, .store = store, .name = name}); },
                ThrowsMessage<InvalidOptionError>(HasSubstr("needs LimitSetOptions::name")))
        << name;
  }
  EXPECT_THAT(
      [&] {
        create({.sharing = LimitSharing::kHosts,
                .clock = &Clock::Real(),
                .store = store,
                .name = "api"});
      },
      ThrowsMessage<InvalidOptionError>(HasSubstr("leave LimitSetOptions::clock null")));
  for (LimitSharing sharing : {LimitSharing::kThreads, LimitSharing::kProcesses}) {
    EXPECT_THAT([&] { create({.sharing = sharing, .store = store}); },
                ThrowsMessage<InvalidOptionError>(HasSubstr("for LimitSharing::kHosts only")));
  }
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

}  // namespace
}  // namespace concurry

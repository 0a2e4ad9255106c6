#include "limits/limit_set.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/internal/future_state.h"
#include "limits/internal/set_impl.h"
#include "limits/limit_set_backend.h"

namespace concurry {

LimitUsageError::LimitUsageError(const std::string& message)
    : Error(absl::StatusCode::kFailedPrecondition, message) {}

// ---- LimitAcquisition ----

LimitAcquisition::LimitAcquisition(LimitAcquisition&& other) noexcept
    : set_(other.set_),
      owner_(std::move(other.owner_)),
      released_(other.released_),
      items_(std::move(other.items_)),
      holder_(other.holder_),
      exempting_(other.exempting_),
      taken_ns_(other.taken_ns_),
      lease_(other.lease_) {
  other.set_ = nullptr;
  other.owner_ = nullptr;
  other.released_ = false;
  other.items_.clear();
  other.lease_ = 0;
}

LimitAcquisition& LimitAcquisition::operator=(LimitAcquisition&& other) noexcept {
  if (this != &other) {
    Drop();
    set_ = other.set_;
    owner_ = std::move(other.owner_);
    released_ = other.released_;
    items_ = std::move(other.items_);
    holder_ = other.holder_;
    exempting_ = other.exempting_;
    taken_ns_ = other.taken_ns_;
    lease_ = other.lease_;
    other.set_ = nullptr;
    other.owner_ = nullptr;
    other.released_ = false;
    other.items_.clear();
    other.lease_ = 0;
  }
  return *this;
}

LimitAcquisition::~LimitAcquisition() { Drop(); }

void LimitAcquisition::Drop() noexcept {
  if (set_ == nullptr) return;
  if (!released_) {
    ReleaseAndListMissing(/*warn=*/true, /*drop=*/true);
  } else if (owner_ == nullptr) {
    set_->DropReference();
  }
  set_ = nullptr;
  owner_ = nullptr;
}

double LimitAcquisition::requested(absl::string_view key) const {
  if (!held()) return 0;
  for (const Item& item : items_) {
    if (set_->limits()[item.index].key() == key) return item.requested;
  }
  return 0;
}

std::vector<LimitAmount> LimitAcquisition::amounts() const {
  std::vector<LimitAmount> result;
  if (!held()) return result;
  for (const Item& item : items_) {
    result.push_back({set_->limits()[item.index].key(), item.requested});
  }
  return result;
}

std::vector<LimitCharge> LimitAcquisition::charges() const {
  std::vector<LimitCharge> result;
  if (set_ == nullptr) return result;
  result.reserve(items_.size());
  for (const Item& item : items_) {
    const Limit& limit = set_->limits()[item.index];
    LimitCharge& charge = result.emplace_back();
    charge.key = limit.key();
    charge.kind = limit.kind();
    charge.requested = item.requested;
    charge.updated = item.updated;
    charge.used = item.updated ? item.used : item.requested;
    charge.refunded = item.refunded;
    if (limit.kind() == LimitKind::kResource) {
      charge.charged = released_ ? 0 : item.requested;
    } else {
      charge.charged = item.requested + item.charged_extra - item.refunded;
    }
  }
  return result;
}

std::optional<LimitCharge> LimitAcquisition::charge(absl::string_view key) const {
  for (LimitCharge& entry : charges()) {
    if (entry.key == key) return std::move(entry);
  }
  return std::nullopt;
}

const LimitConfig& LimitAcquisition::config() const {
  static const LimitConfig* const kEmpty = new LimitConfig();
  return !held() ? *kEmpty : set_->options().config;
}

void LimitAcquisition::Update(absl::Span<const LimitAmount> usage) {
  if (!held()) {
    throw InvalidOptionError("LimitAcquisition::Update: the acquisition was already released");
  }
  set_->Update(*this, usage);
}

void LimitAcquisition::Update(const LimitHandle& limit, double used) {
  if (!held()) {
    throw InvalidOptionError("LimitAcquisition::Update: the acquisition was already released");
  }
  set_->Update(*this, limit, used);
}

std::string LimitAcquisition::ReleaseAndListMissing(bool warn, bool drop) {
  if (!held()) return "";
  released_ = true;
  LimitSetBackend* const set = set_;
  bool any_missing = false;
  for (const Item& item : items_) any_missing |= item.needs_update && !item.updated;
  // With `drop`, the set may go with this release (when no handle is left): once the count is
  // 0, a thread dropping the last handle destroys it. So Release() drops the count only when
  // nothing here uses the set afterwards; with a warning to give, it is dropped after that.
  const bool counted = drop && owner_ == nullptr;
  const bool last = set->Release(*this, /*drop=*/counted && !any_missing);
  if (ABSL_PREDICT_TRUE(!any_missing)) {
    if (last) delete set;
    return "";
  }
  std::vector<absl::string_view> missing;
  for (const Item& item : items_) {
    if (item.needs_update && !item.updated) missing.push_back(set->limits()[item.index].key());
  }
  set->CountMissingUpdate();
  std::string message = absl::StrCat(
      "Not all limits in the LimitSet were updated. Missing: [", absl::StrJoin(missing, ", "),
      "]. The acquisition was released and the requested amounts charged in full; call "
      "Update() with the usage before release");
  if (warn) {
    try {
      set->Warn(message);
    } catch (...) {
      // A warning sink that throws cannot make a destructor throw; the count above remains.
    }
  }
  if (counted) set->DropReference();
  return message;
}

void LimitAcquisition::Release() {
  std::string missing = ReleaseAndListMissing(/*warn=*/false, /*drop=*/false);
  if (!missing.empty()) throw LimitUsageError(missing);
}

// ---- LimitSet ----

namespace {

// The longest LimitSetOptions::name of a kHosts set: it is part of every key of the set in the
// store and of messages.
constexpr size_t kMaxSetNameBytes = 256;

// The checks of a kHosts set's options before its store opens it.
void CheckHostsOptions(const std::vector<Limit>& limits, const LimitSetOptions& options) {
  if (options.store == nullptr) {
    throw InvalidOptionError(
        "LimitSet with LimitSharing::kHosts needs LimitSetOptions::store (e.g. a "
        "RedisLimitStore) to keep its state");
  }
  // Printable ASCII without the space: no byte that a store's keys, a log or a terminal would
  // take apart; '{' and '}' are Redis Cluster's hash tag around the name.
  const bool bad_name = options.name.empty() || options.name.size() > kMaxSetNameBytes ||
                        std::any_of(options.name.begin(), options.name.end(), [](char c) {
                          const auto byte = static_cast<unsigned char>(c);
                          return byte < 0x21 || byte > 0x7e || c == '{' || c == '}';
                        });
  if (bad_name) {
    throw InvalidOptionError(absl::StrCat(
        "LimitSet with LimitSharing::kHosts needs LimitSetOptions::name: 1 to ", kMaxSetNameBytes,
        " bytes of printable ASCII (0x21-0x7e: no whitespace or control bytes), without '{' or "
        "'}'; got '",
        absl::CEscape(options.name.substr(0, kMaxSetNameBytes)),
        options.name.size() > kMaxSetNameBytes
            ? absl::StrCat("...' (", options.name.size(), " bytes)")
            : "'"));
  }
  if (options.clock != nullptr && options.clock != &Clock::Real()) {
    throw InvalidOptionError(
        "LimitSet with LimitSharing::kHosts uses the store's clock (time must be the same on "
        "every host); leave LimitSetOptions::clock null (or Clock::Real())");
  }
  LimitSetBackend::CheckFairness(options.fairness);
  LimitSetBackend::CheckUniqueKeys(limits);
}

// The engine a LimitStore returned for a set of `limit_count` limits: one that keeps them and
// kHosts, as LimitStore::OpenSet() promises (LimitSet reads both from it). Anything else is a
// bug in the store, not in the caller's options.
void CheckOpenedSet(absl::string_view name, const LimitSetBackend* backend, size_t limit_count) {
  const char* wrong = nullptr;
  if (backend == nullptr) {
    wrong = "returned no engine (null)";
  } else if (backend->options().sharing != LimitSharing::kHosts) {
    wrong = "returned an engine whose options().sharing is not kHosts";
  } else if (backend->limits().size() != limit_count) {
    wrong = "returned an engine with another number of limits than it was given";
  }
  if (wrong != nullptr) {
    throw std::logic_error(
        absl::StrCat("LimitSet::Create: LimitStore::OpenSet() of the store in "
                     "LimitSetOptions::store (set '",
                     absl::CEscape(name), "') ", wrong, "; this is a bug in that store"));
  }
}

}  // namespace

LimitSet LimitSet::Create(std::vector<Limit> limits, LimitSetOptions options) {
  if (options.sharing != LimitSharing::kThreads && options.sharing != LimitSharing::kProcesses &&
      options.sharing != LimitSharing::kHosts) {
    throw InvalidOptionError(absl::StrCat("LimitSetOptions::sharing: unknown value ",
                                          static_cast<int>(options.sharing),
                                          "; allowed: kThreads, kProcesses, kHosts"));
  }
  if (options.sharing == LimitSharing::kHosts) {
    CheckHostsOptions(limits, options);
    options.clock = nullptr;  // The real clock given explicitly: the store's clock all the same.
    const std::shared_ptr<LimitStore> store = options.store;
    const std::string name = options.name;
    const size_t limit_count = limits.size();
    std::shared_ptr<LimitSetBackend> backend =
        store->OpenSet(std::move(limits), std::move(options));
    CheckOpenedSet(name, backend.get(), limit_count);
    return LimitSet(std::move(backend));
  }
  if (options.store != nullptr) {
    throw InvalidOptionError(
        "LimitSetOptions::store is for LimitSharing::kHosts only; leave it null with kThreads "
        "and kProcesses (or set sharing = kHosts)");
  }
  if (!options.name.empty()) {
    throw InvalidOptionError(
        "LimitSetOptions::name is for LimitSharing::kHosts only; leave it empty with kThreads "
        "and kProcesses (or set sharing = kHosts)");
  }
  return LimitSet(limits_internal::SetImpl::Make(std::move(limits), std::move(options)));
}

LimitSet LimitSet::NoOp() {
  static const LimitSet* const kNoOp = new LimitSet(Create({}));
  return *kNoOp;
}

LimitSet::LimitSet() : LimitSet(NoOp()) {}

LimitAcquisition LimitSet::Acquire(absl::Span<const LimitAmount> request,
                                   absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitSet::Acquire");
  LimitAcquisition acquired = impl_->Acquire(impl_, request, timeout, /*try_once=*/false);
  if (ABSL_PREDICT_FALSE(!acquired.held())) {
    throw TimeoutError(absl::StrCat("LimitSet::Acquire: failed to acquire all limits within ",
                                    absl::FormatDuration(timeout)));
  }
  return acquired;
}

std::optional<LimitAcquisition> LimitSet::TryAcquire(absl::Span<const LimitAmount> request) const {
  LimitAcquisition acquired =
      impl_->Acquire(impl_, request, absl::InfiniteDuration(), /*try_once=*/true);
  if (!acquired.held()) return std::nullopt;
  return acquired;
}

Future<LimitAcquisition> LimitSet::AcquireAsync(std::vector<LimitAmount> request,
                                                absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitSet::AcquireAsync");
  LimitSetBackend::Request prepared = impl_->Prepare(request);
  return impl_->AcquireAsync(std::move(prepared), impl_->clock().Now() + timeout);
}

PreparedLimitRequest LimitSet::Prepare(absl::Span<const LimitAmount> request) const {
  return impl_->PrepareRequest(request);
}

LimitAcquisition LimitSet::Acquire(const PreparedLimitRequest& request,
                                   absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitSet::Acquire");
  LimitAcquisition acquired = impl_->AcquirePrepared(
      impl_, impl_->CheckPrepared(request, "LimitSet::Acquire"), timeout, /*try_once=*/false);
  if (ABSL_PREDICT_FALSE(!acquired.held())) {
    throw TimeoutError(absl::StrCat("LimitSet::Acquire: failed to acquire all limits within ",
                                    absl::FormatDuration(timeout)));
  }
  return acquired;
}

std::optional<LimitAcquisition> LimitSet::TryAcquire(const PreparedLimitRequest& request) const {
  LimitAcquisition acquired = impl_->AcquirePrepared(
      impl_, impl_->CheckPrepared(request, "LimitSet::TryAcquire"), absl::InfiniteDuration(),
      /*try_once=*/true);
  if (!acquired.held()) return std::nullopt;
  return acquired;
}

Future<LimitAcquisition> LimitSet::AcquireAsync(const PreparedLimitRequest& request,
                                                absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitSet::AcquireAsync");
  return impl_->AcquireAsync(
      LimitSetBackend::ToRequest(impl_->CheckPrepared(request, "LimitSet::AcquireAsync")),
      impl_->clock().Now() + timeout);
}

LimitHandle LimitSet::Handle(absl::string_view key) const { return impl_->HandleOf(key); }

const Limit* LimitSet::Find(absl::string_view key) const {
  for (const Limit& limit : impl_->limits()) {
    if (limit.key() == key) return &limit;
  }
  return nullptr;
}

const Limit& LimitSet::operator[](absl::string_view key) const {
  if (const Limit* limit = Find(key)) return *limit;
  std::vector<absl::string_view> keys;
  for (const Limit& limit : impl_->limits()) keys.push_back(limit.key());
  throw InvalidOptionError(
      absl::StrCat("LimitSet has no limit '", key, "'; it has: [", absl::StrJoin(keys, ", "), "]"));
}

const std::vector<Limit>& LimitSet::limits() const { return impl_->limits(); }
bool LimitSet::no_op() const { return impl_->no_op(); }
LimitSharing LimitSet::sharing() const { return impl_->options().sharing; }
LimitFairness LimitSet::fairness() const { return impl_->options().fairness; }
const LimitConfig& LimitSet::config() const { return impl_->options().config; }
LimitSetStats LimitSet::Stats() const { return impl_->Stats(); }

const LimitStats* LimitSetStats::Find(absl::string_view key) const {
  for (const LimitStats& entry : limits) {
    if (entry.key == key) return &entry;
  }
  return nullptr;
}

LimitStats LimitSetStats::at(absl::string_view key) && {
  return std::move(const_cast<LimitStats&>(static_cast<const LimitSetStats&>(*this).at(key)));
}

const LimitStats& LimitSetStats::at(absl::string_view key) const& {
  if (const LimitStats* entry = Find(key)) return *entry;
  std::vector<absl::string_view> keys;
  for (const LimitStats& entry : limits) keys.push_back(entry.key);
  throw InvalidOptionError(
      absl::StrCat("LimitSetStats::at: no limit with key '", key, "'; ",
                   keys.empty() ? std::string("the set has no limits")
                                : absl::StrCat("the set has: ", absl::StrJoin(keys, ", "))));
}

}  // namespace concurry

// LimitSetBackend's common part: the limits and options, validating requests and usage reports
// into acquisitions' items, and warnings. The engines (the in-process one in limits/internal/
// set_*.cc, others through LimitStore) take and give back.

#include "limits/limit_set_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "futures/errors.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_validation.h"
#include "limits/limit.h"
#include "limits/limit_set.h"

namespace concurry {

using limits_internal::CountsWholeUnits;
using limits_internal::FormatNumber;
using limits_internal::kMaxWhole;

namespace {

std::atomic<uint64_t> next_set_id{1};

}  // namespace

LimitSetBackend::LimitSetBackend(std::vector<Limit> limits, LimitSetOptions options)
    : limits_(std::move(limits)),
      options_(std::move(options)),
      id_(next_set_id.fetch_add(1, std::memory_order_relaxed)) {
  info_.resize(limits_.size());
  for (size_t i = 0; i < limits_.size(); ++i) {
    const Limit& limit = limits_[i];
    LimitInfo& info = info_[i];
    info.key = limit.key();
    info.kind = limit.kind();
    info.burst = limit.burst();
    info.capacity = limit.capacity();
    info.whole = limit.kind() == LimitKind::kResource || CountsWholeUnits(limit.algorithm());
    info.implicit_ok = !(1 > limit.burst());
  }
  IndexCosts();
}

LimitSetBackend::~LimitSetBackend() = default;

void LimitSetBackend::IndexCosts() {
  cached_costs_.clear();
  template_items_.clear();
  rate_mask_ = 0;
  for (size_t i = 0; i < info_.size(); ++i) {
    const LimitInfo& info = info_[i];
    if (info.gcra == nullptr) continue;
    cached_costs_.resize(info_.size() * (kCachedCosts + 1));
    for (int amount = 1; amount <= kCachedCosts; ++amount) {
      cached_costs_[i * (kCachedCosts + 1) + amount] = info.rate->Cost(amount);
    }
  }
  bool shortcut = info_.size() <= 64;
  for (size_t i = 0; shortcut && i < info_.size(); ++i) {
    const LimitInfo& info = info_[i];
    Item& item = template_items_.emplace_back();
    item.index = static_cast<int32_t>(i);
    if (info.kind == LimitKind::kRate) {
      rate_mask_ |= uint64_t{1} << i;
      continue;  // Always named on the shortcut.
    }
    shortcut = info.implicit_ok;
    item.implicit = true;
    item.requested = 1;
    if (info.gcra != nullptr) item.cost = CostOf(i, 1);
  }
  if (!shortcut) template_items_.clear();
}

void LimitSetBackend::CheckFairness(LimitFairness fairness) {
  if (fairness != LimitFairness::kFifo && fairness != LimitFairness::kBarging) {
    throw InvalidOptionError(absl::StrCat("LimitSetOptions::fairness: unknown value ",
                                          static_cast<int>(fairness),
                                          "; allowed: kFifo, kBarging"));
  }
}

void LimitSetBackend::CheckUniqueKeys(const std::vector<Limit>& limits) {
  absl::flat_hash_set<absl::string_view> keys;
  for (const Limit& limit : limits) {
    if (!keys.insert(limit.key()).second) {
      throw InvalidOptionError(absl::StrCat("Duplicate limit key: '", limit.key(), "'"));
    }
  }
}

void LimitSetBackend::Warn(absl::string_view message) const {
  if (options_.on_warning) {
    options_.on_warning(message);
  } else {
    std::fprintf(stderr, "concurry: warning: %.*s\n", static_cast<int>(message.size()),
                 message.data());
  }
}

std::string LimitSetBackend::LimitKeys() const {
  std::vector<absl::string_view> keys;
  for (const Limit& limit : limits_) keys.push_back(limit.key());
  return absl::StrCat("[", absl::StrJoin(keys, ", "), "]");
}

void LimitSetBackend::CheckAmount(size_t index, double amount, bool implicit) const {
  const Limit& limit = limits_[index];
  if (amount > limit.burst()) {
    throw InvalidOptionError(absl::StrCat(
        "Requested amount (", FormatNumber(amount), ") exceeds ",
        limit.explicit_burst() ? absl::StrCat("the burst (", FormatNumber(limit.burst()),
                                              ", capacity ", FormatNumber(limit.capacity()), ")")
                               : absl::StrCat("capacity (", FormatNumber(limit.capacity()), ")"),
        " for limit '", limit.key(), "'",
        implicit ? " (taken with 1 because the request does not name it)" : "",
        ". This request can never be fulfilled."));
  }
  if (implicit) return;  // 1 is whole.
  const bool resource = limit.kind() == LimitKind::kResource;
  if (!info_[index].whole) return;
  const bool fraction = amount != std::floor(amount);
  if (fraction || amount > kMaxWhole) {
    throw InvalidOptionError(absl::StrCat(
        "LimitSet::Acquire: limit '", limit.key(), "' (",
        resource ? "a ResourceLimit" : RateLimitAlgorithmName(limit.algorithm()),
        ") counts whole units", fraction ? "" : absl::StrCat(", at most ", kMaxWholeUnits),
        ", got ", FormatNumber(amount),
        resource || !fraction ? "" : "; use TokenBucket or GCRA for fractions"));
  }
}

LimitSetBackend::Request LimitSetBackend::Prepare(absl::Span<const LimitAmount> request) const {
  Request result;
  result.nested = PrepareInto(request, &result.items);
  return result;
}

namespace {

ABSL_ATTRIBUTE_NOINLINE ABSL_ATTRIBUTE_NORETURN void ThrowBadRequestAmount(
    const LimitAmount& entry) {
  throw InvalidOptionError(absl::StrCat("LimitSet::Acquire: amount for '", entry.key,
                                        "' must be >= 0 and finite (0 leaves the limit out), got ",
                                        FormatNumber(entry.amount)));
}

}  // namespace

bool LimitSetBackend::PrepareFullInto(absl::Span<const LimitAmount> request, Items* items) const {
  const auto check_finite = [](const LimitAmount& entry) {
    if (ABSL_PREDICT_FALSE(!(entry.amount >= 0) || !std::isfinite(entry.amount))) {
      ThrowBadRequestAmount(entry);
    }
  };
  if (no_op()) {
    for (const LimitAmount& entry : request) check_finite(entry);
    return false;
  }
  bool nested = false;
  const size_t count = info_.size();
  // Per limit, the amount the request names, or -1. Items are then built in limit order. On the
  // stack for the usual handful of limits (an InlinedVector's bookkeeping showed in the profile).
  constexpr size_t kStackLimits = 16;
  double stack_named[kStackLimits];
  std::unique_ptr<double[]> heap_named;
  double* const named =
      count <= kStackLimits ? stack_named : (heap_named = std::make_unique<double[]>(count)).get();
  std::fill_n(named, count, -1.0);
  for (const LimitAmount& entry : request) {
    const size_t index = IndexOf(entry.key);
    if (index == count) {
      std::vector<absl::string_view> keys;
      for (const LimitInfo& known : info_) keys.push_back(known.key);
      throw InvalidOptionError(absl::StrCat("LimitSet::Acquire: unknown limit key '", entry.key,
                                            "'; the set has: ", absl::StrJoin(keys, ", ")));
    }
    if (named[index] >= 0) {
      throw InvalidOptionError(
          absl::StrCat("LimitSet::Acquire: key '", entry.key, "' appears twice in the request"));
    }
    check_finite(entry);
    named[index] = entry.amount;
    if (entry.amount == 0) {
      nested = true;  // Named to leave it out: a held connection when nesting.
      continue;
    }
    // The common case answered inline; CheckAmount() builds the message (and throws).
    const LimitInfo& info = info_[index];
    if (ABSL_PREDICT_FALSE(entry.amount > info.burst ||
                           (info.whole && (entry.amount != std::floor(entry.amount) ||
                                           entry.amount > kMaxWhole)))) {
      CheckAmount(index, entry.amount, /*implicit=*/false);
    }
  }
  // First which limits are taken (named[i] > 0: that amount; -1: the implicit 1; 0: not taken),
  // then the items in one resize: an emplace_back per item made each one wait for the previous
  // one's update of the vector's size in memory.
  size_t taken = 0;
  for (size_t i = 0; i < count; ++i) {
    const LimitInfo& info = info_[i];
    if (named[i] > 0) {
      ++taken;
    } else if (named[i] == 0) {
      continue;
    } else if (info.kind == LimitKind::kRate) {
      if (request.empty()) {
        throw InvalidOptionError(absl::StrCat(
            "Must specify requested amount for RateLimit '", info.key,
            "'. RateLimits require explicit token amounts: Acquire({{\"", info.key, "\", n}})"));
      }
      named[i] = 0;  // Not named: not taken.
    } else {
      if (ABSL_PREDICT_FALSE(!info.implicit_ok)) {
        // The implicit 1 of a CallLimit or ResourceLimit passes the same check as a named
        // amount (Limit's constructors already make it fit; nothing may wait for the
        // impossible).
        CheckAmount(i, 1, /*implicit=*/true);
      }
      ++taken;
    }
  }
  items->resize(taken);
  Item* item = items->data();
  for (size_t i = 0; i < count; ++i) {
    if (named[i] == 0) continue;
    const LimitInfo& info = info_[i];
    const bool implicit = named[i] < 0;
    const double requested = implicit ? 1 : named[i];
    item->index = static_cast<int32_t>(i);
    item->requested = requested;
    item->implicit = implicit;
    item->needs_update =
        info.kind == LimitKind::kRate || (info.kind == LimitKind::kCall && requested > 1);
    if (info.gcra != nullptr) item->cost = CostOf(i, requested);
    ++item;
  }
  return nested;
}

namespace {

ABSL_ATTRIBUTE_NOINLINE ABSL_ATTRIBUTE_NORETURN void ThrowBadUsageAmount(absl::string_view key,
                                                                         double amount) {
  throw InvalidOptionError(absl::StrCat("LimitAcquisition::Update: usage of '", key,
                                        "' must be >= 0 and finite, got ", FormatNumber(amount)));
}

}  // namespace

void LimitSetBackend::CheckUsage(const Item& item, absl::string_view key, double amount) const {
  if (!(amount >= 0) || !std::isfinite(amount)) ThrowBadUsageAmount(key, amount);
  const LimitInfo& limit = info_[item.index];
  if (limit.kind == LimitKind::kCall && item.requested == 1 && amount != 1) {
    throw InvalidOptionError(absl::StrCat(
        "LimitAcquisition::Update: CallLimit usage must be 1 for a call request of 1 (",
        item.implicit ? "an implicit acquisition, taken without naming 'call_count'"
                      : "{\"call_count\", 1}, which counts one call like the implicit one",
        "), got ", FormatNumber(amount),
        "; to report a number of calls, request it: {\"call_count\", n}"));
  }
  if (limit.kind != LimitKind::kResource && limit.whole &&
      (amount != std::floor(amount) || amount > kMaxWhole)) {
    const bool fraction = amount != std::floor(amount);
    throw InvalidOptionError(absl::StrCat(
        "LimitAcquisition::Update: '", key, "' (",
        RateLimitAlgorithmName(limits_[item.index].algorithm()), ") counts whole units",
        fraction ? "" : absl::StrCat(", at most ", kMaxWholeUnits), ", got ",
        FormatNumber(amount)));
  }
}

void LimitSetBackend::Update(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage) {
  if (no_op()) {
    for (const LimitAmount& entry : usage) {
      if (!(entry.amount >= 0) || !std::isfinite(entry.amount)) {
        ThrowBadUsageAmount(entry.key, entry.amount);
      }
    }
    return;
  }
  if (usage.size() == 1) {
    // The usual report of one limit's usage within its request, answered without the general
    // validation's bookkeeping.
    const auto index = static_cast<int32_t>(IndexOf(usage[0].key));
    for (Item& item : acquisition.items_) {
      if (item.index == index) {
        if (ABSL_PREDICT_TRUE(RecordWithinRequest(item, usage[0].amount))) return;
        break;
      }
    }
  }
  UpdateChecked(acquisition, usage);
}

ABSL_ATTRIBUTE_NOINLINE void LimitSetBackend::UpdateChecked(LimitAcquisition& acquisition,
                                                            absl::Span<const LimitAmount> usage) {
  // Validate everything first: nothing is recorded if anything is wrong. On the stack for the
  // usual short report.
  constexpr size_t kStackUsages = 8;
  Item* stack_targets[kStackUsages];
  double stack_amounts[kStackUsages];
  std::unique_ptr<Item*[]> heap_targets;
  std::unique_ptr<double[]> heap_amounts;
  Item** targets = stack_targets;
  double* amounts = stack_amounts;
  if (usage.size() > kStackUsages) {
    heap_targets = std::make_unique<Item*[]>(usage.size());
    heap_amounts = std::make_unique<double[]>(usage.size());
    targets = heap_targets.get();
    amounts = heap_amounts.get();
  }
  for (size_t i = 0; i < usage.size(); ++i) {
    const LimitAmount& entry = usage[i];
    // Items are in limit order with distinct indexes: the key's index picks its item.
    const auto index = static_cast<int32_t>(IndexOf(entry.key));
    Item* target = nullptr;
    for (Item& item : acquisition.items_) {
      if (item.index == index) {
        target = &item;
        break;
      }
    }
    if (target == nullptr) {
      throw InvalidOptionError(absl::StrCat("LimitAcquisition::Update: '", entry.key,
                                            "' is not part of this acquisition"));
    }
    if (std::find(targets, targets + i, target) != targets + i) {
      throw InvalidOptionError(
          absl::StrCat("LimitAcquisition::Update: key '", entry.key, "' appears twice"));
    }
    CheckUsage(*target, entry.key, entry.amount);
    targets[i] = target;
    amounts[i] = entry.amount;
  }
  Record(targets, amounts, usage.size());
}

void LimitSetBackend::Update(LimitAcquisition& acquisition, const LimitHandle& limit, double used) {
  if (limit.set_id_ != id_) {
    throw InvalidOptionError(
        limit.set_id_ == 0
            ? "LimitAcquisition::Update: an empty LimitHandle; get one from LimitSet::Handle()"
            : "LimitAcquisition::Update: the LimitHandle belongs to another LimitSet; get one "
              "from Handle() of the set the acquisition was taken from");
  }
  Item* target = nullptr;
  for (Item& item : acquisition.items_) {
    if (item.index == limit.index_) {
      target = &item;
      break;
    }
  }
  if (ABSL_PREDICT_TRUE(target != nullptr) && RecordWithinRequest(*target, used)) return;
  const absl::string_view key = info_[limit.index_].key;
  if (target == nullptr) {
    throw InvalidOptionError(
        absl::StrCat("LimitAcquisition::Update: '", key, "' is not part of this acquisition"));
  }
  CheckUsage(*target, key, used);
  Record(&target, &used, 1);
}

PreparedLimitRequest LimitSetBackend::PrepareRequest(absl::Span<const LimitAmount> request) const {
  PreparedLimitRequest prepared(id_);
  prepared.nested_ = PrepareInto(request, &prepared.items_);
  return prepared;
}

const PreparedLimitRequest& LimitSetBackend::CheckPrepared(const PreparedLimitRequest& prepared,
                                                           const char* caller) const {
  if (ABSL_PREDICT_FALSE(prepared.set_id_ != id_)) {
    throw InvalidOptionError(absl::StrCat(
        caller, ": the request was prepared by another LimitSet; Prepare() it with this set"));
  }
  return prepared;
}

LimitHandle LimitSetBackend::HandleOf(absl::string_view key) const {
  const size_t index = IndexOf(key);
  if (index == info_.size()) {
    throw InvalidOptionError(absl::StrCat("LimitSet::Handle: no limit '", key,
                                          "'; the set has: ", no_op() ? "no limits" : LimitKeys()));
  }
  LimitHandle handle;
  handle.set_id_ = id_;
  handle.index_ = static_cast<int32_t>(index);
  return handle;
}

void LimitSetBackend::Record(Item* const* targets, const double* amounts, size_t count) {
  bool charge = false;
  for (size_t i = 0; i < count; ++i) {
    Item& item = *targets[i];
    item.updated = true;
    item.used = amounts[i];
    const LimitInfo& info = info_[item.index];
    item.refund_cost = info.gcra != nullptr && item.used < item.requested
                           ? CostOf(item.index, item.requested - item.used)
                           : 0;
    // Reported (and charged) once per new excess: repeating a report charges nothing more.
    charge |= NewExcess(item, info.kind) > 0;
  }
  if (ABSL_PREDICT_FALSE(charge)) RecordUsage(targets, amounts, count);
}

std::string LimitSetBackend::OveruseMessage(const Item* const* targets, size_t count) const {
  std::string overuse;
  for (size_t i = 0; i < count; ++i) {
    const Item& item = *targets[i];
    if (NewExcess(item, info_[item.index].kind) > 0) {
      absl::StrAppend(&overuse, overuse.empty() ? "" : "; ", "'", info_[item.index].key, "' used ",
                      FormatNumber(item.used), " of ", FormatNumber(item.requested), " requested");
    }
  }
  return absl::StrCat("LimitAcquisition::Update: usage above the request, charged in full: ",
                      overuse);
}

LimitSetStats LimitSetBackend::DefinitionStats() const {
  LimitSetStats stats;
  stats.limits.resize(limits_.size());
  for (size_t i = 0; i < limits_.size(); ++i) {
    const Limit& limit = limits_[i];
    LimitStats& entry = stats.limits[i];
    entry.key = limit.key();
    entry.kind = limit.kind();
    entry.capacity = limit.capacity();
    entry.window = limit.window();
    entry.algorithm = limit.algorithm();
    entry.burst = limit.burst();
  }
  return stats;
}

}  // namespace concurry

// SetImpl's acquisitions: validating requests, holder slots, the FIFO queue, taking units
// (waiting for them when they are short), usage reports and releases. The uncontended path of
// Acquire() + Update() + release takes the set's lock twice and reads the clock once.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/errors.h"
#include "limits/internal/process_shared.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_impl.h"
#include "limits/limit_set.h"

namespace concurry {
namespace limits_internal {
namespace {

struct HolderCache {
  uint64_t set_id = 0;
  int32_t slot = -1;
};
thread_local HolderCache holder_cache;

}  // namespace

void SetImpl::CheckAmount(size_t index, double amount, bool implicit) const {
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
  if (!resource && !rates_[index]->whole_amounts()) return;
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

SetImpl::Request SetImpl::Prepare(absl::Span<const LimitAmount> request) const {
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

ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool SetImpl::PrepareCommonInto(
    absl::Span<const LimitAmount> request, Items* items) const {
  const size_t count = template_items_.size();
  // A copy-construction copies the inline buffer in one go (the items are trivially copyable);
  // assign() went item by item.
  *items = Items(template_items_);
  Item* const taken = items->data();
  uint64_t named = 0;
  for (const LimitAmount& entry : request) {
    const size_t index = IndexOf(entry.key);
    if (index == count) break;
    const uint64_t bit = uint64_t{1} << index;
    const LimitInfo& info = info_[index];
    const double amount = entry.amount;
    // Amount 0 (a nested request) and every error go the full way.
    if ((named & bit) != 0 || !(amount > 0 && amount <= info.burst) || !std::isfinite(amount) ||
        (info.whole && (amount != std::floor(amount) || amount > kMaxWhole))) {
      break;
    }
    named |= bit;
    Item& item = taken[index];
    item.requested = amount;
    item.implicit = false;
    item.needs_update =
        info.kind == LimitKind::kRate || (info.kind == LimitKind::kCall && amount > 1);
    if (info.gcra != nullptr) item.cost = CostOf(index, amount);
  }
  // Every entry matched (each sets a distinct bit) and every rate limit is named.
  if (static_cast<size_t>(__builtin_popcountll(named)) == request.size() &&
      (named & rate_mask_) == rate_mask_) {
    return true;
  }
  items->clear();
  return false;
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool SetImpl::PrepareInto(absl::Span<const LimitAmount> request,
                                                              Items* items) const {
  if (ABSL_PREDICT_TRUE(!template_items_.empty() && !request.empty()) &&
      PrepareCommonInto(request, items)) {
    return false;
  }
  return PrepareFullInto(request, items);
}

bool SetImpl::PrepareFullInto(absl::Span<const LimitAmount> request, Items* items) const {
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

int32_t SetImpl::HolderSlotLocked() {
  const pid_t pid = CurrentPid();
  const pid_t tid = CurrentTid();
  const int32_t count = options_.max_holders;
  if (holder_cache.set_id == id_ && holder_cache.slot >= 0 && holder_cache.slot < count) {
    const Holder& cached = holder(holder_cache.slot);
    if (cached.tid == tid && cached.pid == pid) return holder_cache.slot;
  }
  return ClaimHolderSlotLocked(pid, tid);
}

int32_t SetImpl::ClaimHolderSlotLocked(pid_t pid, pid_t tid) {
  const int32_t count = options_.max_holders;
  int32_t unused = -1;
  int32_t idle = -1;
  for (int32_t slot = 0; slot < count; ++slot) {
    const Holder& candidate = holder(slot);
    if (candidate.tid == tid && candidate.pid == pid) {
      holder_cache = {id_, slot};
      return slot;
    }
    if (candidate.pid == 0) {
      if (unused < 0) unused = slot;
    } else if (candidate.acquisitions == 0 && candidate.waiting == 0 && idle < 0) {
      idle = slot;
    }
  }
  const int32_t slot = unused >= 0 ? unused : idle;
  if (slot < 0) return -1;
  Holder& claimed = holder(slot);
  claimed.pid = pid;
  claimed.tid = tid;
  claimed.start_time = shared_ ? CurrentProcessStartTime() : 0;
  claimed.acquisitions = 0;
  std::fill(held(slot), held(slot) + num_resources_, 0.0);
  holder_cache = {id_, slot};
  return slot;
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline int64_t SetImpl::TryTakeLocked(int64_t now, const Items& items,
                                                                   int32_t slot,
                                                                   bool* resource_short) {
  int64_t wait = 0;
  *resource_short = false;
  for (const Item& item : items) {
    const LimitInfo& info = info_[item.index];
    if (info.tat != nullptr) {
      wait = std::max(wait, GcraWaitNs(TatLocked(info), info.rate->ClampNow(now), item.cost,
                                       info.tolerance_ns));
    } else if (info.gcra != nullptr) {
      wait = std::max(wait, info.gcra->WaitNsExclusive(info.rate->ClampNow(now), item.cost));
    } else if (info.rate == nullptr) {
      if (InUseLocked(info) + item.requested > info.capacity) {
        *resource_short = true;
        wait = kNoTime;
      }
    } else {
      wait = std::max(wait, info.rate->WaitNs(now, item.requested));
    }
  }
  if (wait > 0) return wait;
  double* holding = held(slot);
  for (const Item& item : items) {
    const LimitInfo& info = info_[item.index];
    // Cannot fail: checked above under the same lock, at the same `now`.
    if (info.tat != nullptr) {
      // AtomicGcra::TakeExclusive() on the hot word.
      int64_t& tat = TatLocked(info);
      tat = GcraTaken(tat, info.rate->ClampNow(now), item.cost);
    } else if (info.gcra != nullptr) {
      // Under the lock, so plain stores: no compare-exchange per limit.
      info.gcra->TakeExclusive(info.rate->ClampNow(now), item.cost);
    } else if (info.rate == nullptr) {
      InUseLocked(info) += item.requested;
      holding[resource_index_[item.index]] += item.requested;
    } else {
      info.rate->TryAcquire(now, item.requested);
    }
  }
  ++holder(slot).acquisitions;
  ++header_->holding;
  return 0;
}

uint64_t SetImpl::AddTicketLocked() {
  if (header_->queued >= options_.max_holders) return 0;  // Full: wait outside the queue.
  const uint64_t number = header_->next_ticket++;
  tickets_[header_->queued++] =
      Ticket{number, CurrentPid(), shared_ ? CurrentProcessStartTime() : 0};
  return number;
}

void SetImpl::RemoveTicketLocked(uint64_t ticket) {
  for (int32_t i = 0; i < header_->queued; ++i) {
    if (tickets_[i].number == ticket) {
      tickets_[i] = tickets_[--header_->queued];
      return;
    }
  }
}

uint64_t SetImpl::HeadTicketLocked() const {
  uint64_t head = 0;
  for (int32_t i = 0; i < header_->queued; ++i) {
    if (head == 0 || tickets_[i].number < head) head = tickets_[i].number;
  }
  return head;
}

void SetImpl::LeaveQueueLocked(uint64_t* ticket, bool* notify) {
  if (*ticket == 0) return;
  RemoveTicketLocked(*ticket);
  *ticket = 0;
  *notify = *notify || header_->waiters > 0;  // It may have been the head: the next one goes.
}

int64_t SetImpl::AttemptLocked(int64_t now, const Items& items, int32_t slot, bool exempt,
                               uint64_t* ticket, bool enqueue, bool* notify) {
  const bool fifo = options_.fairness == LimitFairness::kFifo;
  const int64_t lease_ns = lease_ns_;
  const bool recovery_due = shared_ && now - header_->last_recovery_ns >= lease_ns;
  if (recovery_due && !exempt && header_->queued > 0 &&
      (*ticket == 0 || *ticket != HeadTicketLocked()) && RecoverDeadLocked()) {
    *notify = *notify || header_->waiters > 0;  // A dead process may have held a place ahead.
  }
  const bool may_try =
      exempt || (*ticket == 0 ? header_->queued == 0 : *ticket == HeadTicketLocked());
  int64_t wait = kNoTime;
  if (may_try) {
    bool resource_short = false;
    wait = TryTakeLocked(now, items, slot, &resource_short);
    if (wait > 0 && resource_short && shared_ && now - header_->last_recovery_ns >= lease_ns &&
        RecoverDeadLocked()) {
      *notify = *notify || header_->waiters > 0;
      wait = TryTakeLocked(now, items, slot, &resource_short);
    }
    if (wait == 0) {
      LeaveQueueLocked(ticket, notify);
      ++header_->acquisitions;
      return 0;
    }
  }
  if (enqueue && fifo && !exempt && *ticket == 0) *ticket = AddTicketLocked();
  return wait;
}

LimitAcquisition SetImpl::Take(const Request& request, absl::Time deadline,
                               bool exempt_when_holding) {
  LimitAcquisition result;        // The only object returned, so it is built in place.
  result.items_ = request.items;  // Before locking: it may allocate.
  TakeInto(shared_from_this(), request.nested, deadline, exempt_when_holding, result);
  return result;
}

LimitAcquisition SetImpl::Acquire(const std::shared_ptr<SetImpl>& self,
                                  absl::Span<const LimitAmount> request, absl::Duration timeout,
                                  bool try_once) {
  LimitAcquisition result;  // The only object returned, so it is built in place.
  const bool nested = self->PrepareInto(request, &result.items_);
  // A zero timeout tries once and, failing, counts a timeout. No clock read for the usual
  // infinite timeout.
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : self->Now() + timeout;
  self->TakeInto(self, nested, deadline, /*exempt_when_holding=*/true, result);
  return result;
}

void SetImpl::TakeInto(const std::shared_ptr<SetImpl>& self, bool nested, absl::Time deadline,
                       bool exempt_when_holding, LimitAcquisition& result) {
  if (no_op()) {
    result.set_ = this;
    result.owner_ = self;
    return;
  }
  const bool fifo = options_.fairness == LimitFairness::kFifo;
  const absl::Duration lease = options_.lease_check_interval;
  uint64_t ticket = 0;
  bool notify = false;
  bool locked = false;
  bool registered = false;  // Counted in Header::waiters and the slot's `waiting`.
  bool taken = false;
  int32_t slot = -1;
  try {
    // The clock is read before taking the lock (a little early is harmless: it can only delay a
    // refill), which keeps the critical section short under contention.
    absl::Time now_time;
    int64_t now = 0;
    ReadClock(&now_time, &now);
    Lock();
    locked = true;
    if (!shared_) {
      // The usual in-process case first: a known holder, nobody queued ahead (or exempt), and
      // everything available. It is the first round of the loop below without the queue and
      // recovery bookkeeping; when it cannot take, nothing changed and the loop decides.
      const int32_t known = HolderSlotLocked();
      if (ABSL_PREDICT_TRUE(known >= 0)) {
        Holder& owner = holder(known);
        const bool exempt = !fifo || nested || (exempt_when_holding && owner.exempting > 0);
        bool resource_short = false;
        if (ABSL_PREDICT_TRUE(exempt || header_->queued == 0) &&
            TryTakeLocked(now, result.items_, known, &resource_short) == 0) {
          ++header_->acquisitions;
          if (exempt_when_holding) ++owner.exempting;
          if (counts_references_) ++header_->references;
          Unlock();
          result.holder_ = known;
          result.taken_ns_ = now;
          result.exempting_ = exempt_when_holding;
          result.set_ = this;
          if (!counts_references_) result.owner_ = self;
          return;
        }
      }
    }
    for (;;) {
      slot = HolderSlotLocked();
      if (slot < 0 && shared_ && RecoverDeadLocked()) slot = HolderSlotLocked();
      if (slot < 0) {
        throw CapacityError(absl::StrCat(
            "LimitSet: more than max_holders (", options_.max_holders,
            ") threads hold acquisitions at once; raise LimitSetOptions::max_holders"));
      }
      const bool exempt = !fifo || nested || (exempt_when_holding && holder(slot).exempting > 0);
      const bool may_wait = deadline != absl::InfinitePast() && now_time < deadline;
      const int64_t wait =
          AttemptLocked(now, result.items_, slot, exempt, &ticket, may_wait, &notify);
      if (wait == 0) {
        taken = true;
        result.holder_ = slot;
        result.taken_ns_ = now;
        result.exempting_ = exempt_when_holding;
        if (exempt_when_holding) ++holder(slot).exempting;
        if (counts_references_) ++header_->references;
        break;
      }
      if (!may_wait) {
        LeaveQueueLocked(&ticket, &notify);
        if (deadline != absl::InfinitePast()) {
          header_->timeouts.fetch_add(1, std::memory_order_relaxed);
        }
        result.items_.clear();
        break;
      }
      absl::Time wake = deadline;
      if (wait != kNoTime) wake = std::min(wake, now_time + absl::Nanoseconds(wait));
      if (shared_) wake = std::min(wake, now_time + lease);  // Look for dead holders and tickets.
      ++header_->waiters;
      ++holder(slot).waiting;
      registered = true;
      const uint32_t generation = header_->generation.load(std::memory_order_seq_cst);
      Unlock();
      locked = false;
      if (notify) {
        notify = false;
        Notify();
      }
      Wait(generation, wake, nullptr);
      ReadClock(&now_time, &now);
      Lock();
      locked = true;
      --header_->waiters;
      --holder(slot).waiting;
      registered = false;
      if (shared_ &&
          absl::ToUnixNanos(absl::Now()) - header_->last_recovery_ns >=
              absl::ToInt64Nanoseconds(lease) &&
          RecoverDeadLocked()) {
        notify = notify || header_->waiters > 0;
      }
    }
  } catch (...) {
    // Leave no trace: not counted as waiting, no place in the queue, the lock released.
    if (!locked) Lock();
    if (registered) {
      --header_->waiters;
      --holder(slot).waiting;
    }
    LeaveQueueLocked(&ticket, &notify);
    Unlock();
    Notify();
    throw;
  }
  Unlock();
  // Counted above, under the lock; else after the lock: a copy of the caller's handle is one
  // atomic increment (shared_from_this() would be a compare-exchange loop on the weak count),
  // and it need not lengthen the critical section. Nothing between here and the lock can throw,
  // so the items never leak.
  if (taken) {
    result.set_ = this;
    if (!counts_references_) result.owner_ = self;
  }
  if (notify) Notify();
}

namespace {

ABSL_ATTRIBUTE_NOINLINE ABSL_ATTRIBUTE_NORETURN void ThrowBadUsageAmount(absl::string_view key,
                                                                         double amount) {
  throw InvalidOptionError(absl::StrCat("LimitAcquisition::Update: usage of '", key,
                                        "' must be >= 0 and finite, got ", FormatNumber(amount)));
}

}  // namespace

void SetImpl::CheckUsage(const Item& item, absl::string_view key, double amount) const {
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

void SetImpl::Update(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage) {
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

void SetImpl::UpdateChecked(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage) {
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
  RecordUsage(targets, amounts, usage.size());
}

void SetImpl::Update(LimitAcquisition& acquisition, const LimitHandle& limit, double used) {
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
  RecordUsage(&target, &used, 1);
}

void SetImpl::RecordUsage(Item* const* targets, const double* amounts, size_t count) {
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
    charge |= item.used - item.requested > item.charged_extra && info.kind != LimitKind::kResource;
  }
  if (ABSL_PREDICT_TRUE(!charge)) return;
  std::string overuse;
  for (size_t i = 0; i < count; ++i) {
    const Item& item = *targets[i];
    if (item.used - item.requested > item.charged_extra &&
        info_[item.index].kind != LimitKind::kResource) {
      absl::StrAppend(&overuse, overuse.empty() ? "" : "; ", "'", info_[item.index].key, "' used ",
                      FormatNumber(item.used), " of ", FormatNumber(item.requested), " requested");
    }
  }
  {
    Locked locked(this);
    const int64_t now = NowNs();
    for (size_t i = 0; i < count; ++i) {
      Item& item = *targets[i];
      const double extra = std::max(0.0, item.used - item.requested) - item.charged_extra;
      if (extra > 0 && rates_[item.index] != nullptr) {
        if (info_[item.index].tat != nullptr) {
          HotRateStateLocked(item.index)->Charge(now, extra);
          CopyBackHotTatLocked(item.index);
        } else {
          rates_[item.index]->Charge(now, extra);
        }
        item.charged_extra += extra;
      }
    }
  }
  header_->overuse_reports.fetch_add(1, std::memory_order_relaxed);
  Warn(absl::StrCat("LimitAcquisition::Update: usage above the request, charged in full: ",
                    overuse));
}

PreparedLimitRequest SetImpl::PrepareRequest(absl::Span<const LimitAmount> request) const {
  PreparedLimitRequest prepared(id_);
  prepared.nested_ = PrepareInto(request, &prepared.items_);
  return prepared;
}

const PreparedLimitRequest& SetImpl::CheckPrepared(const PreparedLimitRequest& prepared,
                                                   const char* caller) const {
  if (ABSL_PREDICT_FALSE(prepared.set_id_ != id_)) {
    throw InvalidOptionError(absl::StrCat(
        caller, ": the request was prepared by another LimitSet; Prepare() it with this set"));
  }
  return prepared;
}

LimitAcquisition SetImpl::AcquirePrepared(const std::shared_ptr<SetImpl>& self,
                                          const PreparedLimitRequest& request,
                                          absl::Duration timeout, bool try_once) {
  LimitAcquisition result;  // The only object returned, so it is built in place.
  result.items_ =
      Items(request.items_);  // Before locking: it may allocate. See PrepareCommonInto().
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : self->Now() + timeout;
  self->TakeInto(self, request.nested_, deadline, /*exempt_when_holding=*/true, result);
  return result;
}

LimitHandle SetImpl::HandleOf(absl::string_view key) const {
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

bool SetImpl::Release(LimitAcquisition& acquisition, bool drop) {
  if (no_op()) return false;
  bool notify = false;
  bool last = false;
  // No clock read: a refund at the time the units were taken leaves the same state from now on
  // as one at the current time. A refund sets TAT' = max(t, TAT - cost) (or keeps TAT <= t),
  // and every later decision at u >= now looks only at max(TAT', u), which is the same for any
  // t <= u: the bucket is full from max(t, TAT - cost) on either way. That makes one clock
  // read per acquisition, not two. (A thread that read its clock before t and waited for the
  // lock decides at its older reading, as it already did before this refund: the slack is the
  // time it waited for the lock, the same as for the bucket's own refill.)
  const int64_t now = acquisition.taken_ns_;
  {
    Locked locked(this);
    Holder& owner = holder(acquisition.holder_);
    // A fork()ed child destroying its copy of the parent's acquisition: the parent releases it.
    if (shared_ && owner.pid != CurrentPid()) return false;
    double* holding = held(acquisition.holder_);
    for (Item& item : acquisition.items_) {
      const LimitInfo& info = info_[item.index];
      RateState* rate = info.rate;
      if (rate == nullptr) {
        double& in_use = InUseLocked(info);
        in_use = std::max(0.0, in_use - item.requested);
        holding[resource_index_[item.index]] -= item.requested;
        item.refunded = item.requested;
        notify = true;
      } else if (item.updated && item.used < item.requested && rate->supports_refund()) {
        const double unused = item.requested - item.used;
        if (info.gcra != nullptr) {
          // Cost() is at least 1, so 0 means Update() did not compute it (an acquisition whose
          // usage was set directly, as a cancelled AcquireAsync() does).
          const int64_t cost = item.refund_cost > 0 ? item.refund_cost : rate->Cost(unused);
          const int64_t clamped = info.rate->ClampNow(now);
          if (info.tat == nullptr) {
            info.gcra->RefundExclusive(clamped, cost);
          } else {
            int64_t& tat = TatLocked(info);
            tat = GcraRefunded(tat, clamped, cost);
          }
        } else {
          rate->Refund(now, unused);
        }
        item.refunded = unused;
        notify = true;
      }
    }
    if (owner.acquisitions > 0) --owner.acquisitions;
    if (acquisition.exempting_ && owner.exempting > 0) --owner.exempting;
    --header_->holding;
    notify = notify && header_->waiters > 0;
    // Once the count is 0, whoever drops the last handle destroys the set as soon as this lock
    // is released: dropped here only when nothing below uses the set.
    if (drop && !notify) last = --header_->references == 0 && orphaned_;
  }
  if (notify) {
    Notify();
    // One more pass through the lock, only when somebody waits.
    if (drop) last = DropReferenceGetLast();
  }
  return last;
}

}  // namespace limits_internal
}  // namespace concurry

// SetImpl's acquisitions: holder slots, the FIFO queue, taking units (waiting for them when they
// are short), over-use charges and releases. Requests and usage reports are validated by
// LimitSetBackend (limit_set_backend.cc, inline parts in set_validation.h). The uncontended path of
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

LimitAcquisition SetImpl::Acquire(const std::shared_ptr<LimitSetBackend>& self,
                                  absl::Span<const LimitAmount> request, absl::Duration timeout,
                                  bool try_once) {
  LimitAcquisition result;  // The only object returned, so it is built in place.
  const bool nested = PrepareInto(request, &result.items_);
  // A zero timeout tries once and, failing, counts a timeout. No clock read for the usual
  // infinite timeout.
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : Now() + timeout;
  TakeInto(self, nested, deadline, /*exempt_when_holding=*/true, result);
  return result;
}

void SetImpl::TakeInto(const std::shared_ptr<LimitSetBackend>& self, bool nested,
                       absl::Time deadline, bool exempt_when_holding, LimitAcquisition& result) {
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

LimitAcquisition SetImpl::AcquirePrepared(const std::shared_ptr<LimitSetBackend>& self,
                                          const PreparedLimitRequest& request,
                                          absl::Duration timeout, bool try_once) {
  LimitAcquisition result;  // The only object returned, so it is built in place.
  // Before locking: it may allocate. See PrepareCommonInto().
  result.items_ = Items(PreparedItems(request));
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : Now() + timeout;
  TakeInto(self, PreparedNested(request), deadline, /*exempt_when_holding=*/true, result);
  return result;
}

void SetImpl::RecordUsage(Item* const* targets, const double* /*amounts*/, size_t count) {
  const std::string message = OveruseMessage(targets, count);  // Before charging: see there.
  {
    Locked locked(this);
    const int64_t now = NowNs();
    for (size_t i = 0; i < count; ++i) {
      Item& item = *targets[i];
      const double extra = NewExcess(item, info_[item.index].kind);
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
  Warn(message);
}

bool SetImpl::Release(LimitAcquisition& acquisition, bool drop) noexcept {
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

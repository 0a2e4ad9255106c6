// SetImpl::AcquireAsync(): requests that must wait are served by one helper thread per set (per
// process), which retries them in queue order whenever capacity may have come back.

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "limits/internal/async_helper.h"
#include "limits/internal/process_shared.h"
#include "limits/internal/set_impl.h"
#include "limits/limit_set.h"

namespace concurry {
namespace limits_internal {

Future<LimitAcquisition> SetImpl::AcquireAsync(Request request, absl::Time deadline) {
  // Served at once when possible (and when nobody queues ahead). The acquisition does not make
  // the calling thread skip the queue later: it may be used anywhere.
  if (LimitAcquisition now = Take(request, absl::InfinitePast(), /*exempt_when_holding=*/false);
      now.held()) {
    return MakeReadyFuture(std::move(now));
  }
  AsyncRequest pending;
  pending.request = std::move(request);
  pending.deadline = deadline;
  pending.cancelled = std::make_shared<std::atomic<bool>>(false);
  pending.set = shared_from_this();
  Future<LimitAcquisition> future = pending.promise.GetFuture();
  std::shared_ptr<AsyncQueue> queue;
  {
    absl::MutexLock lock(&async_mu_);
    queue = HelperQueueLocked(&async_, CurrentPid(), &SetImpl::RunAsync);
  }
  pending.promise.OnCancel([weak = weak_from_this(), weak_queue = std::weak_ptr<AsyncQueue>(queue),
                            cancelled = pending.cancelled] {
    cancelled->store(true, std::memory_order_release);
    if (std::shared_ptr<AsyncQueue> queue = weak_queue.lock()) {
      queue->interrupt.store(true, std::memory_order_release);
    }
    if (std::shared_ptr<SetImpl> set = weak.lock()) set->Notify();
  });
  {
    absl::MutexLock lock(&queue->mu);
    queue->incoming.push_back(std::move(pending));
    queue->interrupt.store(true, std::memory_order_release);
  }
  Notify();
  return future;
}

void SetImpl::RunAsync(std::shared_ptr<AsyncQueue> queue) {
  // The helper holds the set while requests wait: acquisitions that keep it alive are counted in
  // it rather than holding a handle, so this may be its last handle meanwhile.
  RunAsyncHelper(queue, [](SetImpl& set, AsyncQueue& pending) { return set.ServeAsync(pending); });
}

SetImpl::AsyncCompletions SetImpl::ServeAsync(AsyncQueue& queue) {
  AsyncCompletions done(&GiveBackUnused);
  bool notify = false;
  absl::Time wake = absl::InfiniteFuture();
  uint32_t generation = 0;
  {
    Locked locked(this);
    generation = header_->generation.load(std::memory_order_seq_cst);
    const absl::Time now_time = clock_.Now();
    const int64_t now = absl::ToUnixNanos(now_time);
    int32_t& slot = queue.slot;
    if (slot < 0 || holder(slot).tid != CurrentTid()) slot = HolderSlotLocked();
    if (slot < 0 && shared_ && RecoverDeadLocked()) slot = HolderSlotLocked();
    const bool fifo = options_.fairness == LimitFairness::kFifo;
    for (auto it = queue.pending.begin(); it != queue.pending.end();) {
      AsyncRequest& request = *it;
      std::exception_ptr error;
      if (request.cancelled->load(std::memory_order_acquire)) {
        LeaveQueueLocked(&request.ticket, &notify);  // Withdrawn: its future is cancelled.
      } else if (slot < 0) {
        LeaveQueueLocked(&request.ticket, &notify);
        error = std::make_exception_ptr(CapacityError(absl::StrCat(
            "LimitSet: more than max_holders (", options_.max_holders,
            ") threads hold acquisitions at once; raise LimitSetOptions::max_holders")));
      } else if (now_time >= request.deadline) {
        LeaveQueueLocked(&request.ticket, &notify);
        header_->timeouts.fetch_add(1, std::memory_order_relaxed);
        error = AcquireAsyncTimeout();
      } else {
        const int64_t wait =
            AttemptLocked(now, request.request.items, slot, !fifo || request.request.nested,
                          &request.ticket, /*enqueue=*/true, &notify);
        if (wait != 0) {
          wake = std::min(wake, request.deadline);
          if (wait != kNoTime) wake = std::min(wake, now_time + absl::Nanoseconds(wait));
          ++it;
          continue;
        }
        AsyncCompletions::Completion& completion = done.Add();
        completion.acquisition.set_ = this;
        completion.acquisition.owner_ = shared_from_this();
        completion.acquisition.items_ = std::move(request.request.items);
        completion.acquisition.holder_ = slot;
        completion.acquisition.taken_ns_ = now;
        completion.promise = std::move(request.promise);
        it = queue.pending.erase(it);
        continue;
      }
      if (error != nullptr) done.Fail(std::move(request.promise), std::move(error));
      it = queue.pending.erase(it);
    }
    // Counted once in the waiters while requests wait, so releases notify.
    if (!queue.pending.empty() && !queue.registered && slot >= 0) {
      ++header_->waiters;
      ++holder(slot).waiting;
      queue.registered = true;
    } else if (queue.pending.empty() && queue.registered) {
      --header_->waiters;
      if (slot >= 0) --holder(slot).waiting;
      queue.registered = false;
    }
    if (shared_ && !queue.pending.empty())
      wake = std::min(wake, now_time + options_.lease_check_interval);
  }
  if (notify) Notify();
  if (queue.pending.empty()) return done;  // Completed once the helper let go of the set.
  done();
  Wait(generation, wake, &queue.interrupt);
  return done;  // Empty.
}

void SetImpl::GiveBackUnused(LimitAcquisition& acquisition) {
  for (LimitAcquisition::Item& item : acquisition.items_) {
    item.updated = true;
    item.used = 0;
  }
  acquisition.ReleaseAndListMissing(/*warn=*/false, /*drop=*/false);
}

}  // namespace limits_internal
}  // namespace concurry

// The consumer's and the user's side of StreamCore (stream_core.h): Next() and its batches, the
// consumer's spin, help and sleep, the timeout, Start(), Add(), Cancel() and the drain before
// destruction. Internal: include sync/stream.h instead.
//
//   while (StreamItem<R>* item = core.Next()) Use(*item);  // Refill() takes the next batch.
//   core.Cancel();  // From any thread: the consumer's next step throws CancelledError.

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_CONSUMER_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_CONSUMER_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <list>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/internal/spin_lock.h"
#include "sync/internal/stream_core.h"
#include "sync/internal/stream_runner.h"
#include "sync/progress.h"

namespace concurry {
namespace sync_internal {

template <typename In, typename R>
bool StreamCore<In, R>::Sleep(absl::Time deadline) {
  {
    absl::MutexLock lock(&wait_mu_);
    const bool woken = clock_.AwaitWithDeadline(&wait_mu_, absl::Condition(&wake_), deadline);
    wake_ = false;
    if (woken) return true;
  }
  bool taken;
  {
    internal::SpinLockHolder lock(&lock_);
    taken = !sleeping_;
    sleeping_ = false;
  }
  if (!taken) return false;
  // A thread took the announcement just before the deadline and is about to wake us: it may still
  // touch the core, so wait for it (it is between two short steps and never blocks).
  absl::MutexLock lock(&wait_mu_);
  wait_mu_.Await(absl::Condition(&wake_));
  wake_ = false;
  return true;
}

template <typename In, typename R>
void StreamCore<In, R>::AwaitNothingInFlight() {
  for (;;) {
    {
      internal::SpinLockHolder lock(&lock_);
      if (NothingRunningLocked()) return;
      sleeping_ = true;
      awaiting_drain_ = true;
    }
    // No deadline: the tasks reference the stream. On the clock, so a FakeClock test can see it.
    Sleep(absl::InfiniteFuture());
  }
}

template <typename In, typename R>
void StreamCore<In, R>::StartLocked() {
  if (started_) return;
  started_ = true;
  deadline_ =
      timeout_ == absl::InfiniteDuration() ? absl::InfiniteFuture() : clock_.Now() + timeout_;
}

template <typename In, typename R>
void StreamCore<In, R>::Start() {
  Work work;
  {
    internal::SpinLockHolder lock(&lock_);
    StartLocked();
    RequeueUnstartedLocked(CallerGroup(), &work);
    TopUpLocked(&work);
    EndSectionLocked(&work);
  }
  Finish(work);
}

template <typename In, typename R>
bool StreamCore<In, R>::AddInput(In input, bool from_outside) {
  // Allocated outside the lock; destroyed after unlocking when the stream refuses it.
  std::list<In> node;
  node.push_back(std::move(input));
  Work work;
  {
    internal::SpinLockHolder lock(&lock_);
    if (ended_ || stopping_.load(std::memory_order_relaxed)) return false;
    queued_.splice(queued_.end(), node);
    ++added_;
    if (from_outside) added_from_outside_ = true;
    RequeueUnstartedLocked(CallerGroup(), &work);
    TopUpLocked(&work);
    EndSectionLocked(&work);
  }
  Finish(work);
  return true;
}

template <typename In, typename R>
void StreamCore<In, R>::Cancel() {
  Work work;
  {
    internal::SpinLockHolder lock(&lock_);
    if (ended_) return;
    SetStopLocked(StopKind::kCancelled, StreamCancelledError(), &work.disposal);
    EndSectionLocked(&work);
  }
  Finish(work);
}

template <typename In, typename R>
void StreamCore<In, R>::Shutdown() {
  Work work;
  {
    internal::SpinLockHolder lock(&lock_);
    StopLocked(&work.disposal);
    EndSectionLocked(&work);
  }
  Finish(work);
  AwaitNothingInFlight();
  if (progress_ != nullptr && !finished_) progress_->Stop();
  progress_.reset();
}

template <typename In, typename R>
bool StreamCore<In, R>::NextInBatch(uint32_t* s) {
  if (ordered_) {
    if (batch_next_ >= batch_end_) return false;
    *s = SlotOfIndex(batch_next_);
    return true;
  }
  if (batch_cur_ == kNoSlot) return false;
  *s = batch_cur_;
  return true;
}

template <typename In, typename R>
void StreamCore<In, R>::LeaveCurrent() {
  has_current_ = false;
  Slot& entry = slot(current_);
  entry.item.reset();  // Frees the result now.
  if (ordered_) {
    ++batch_next_;
    // Release: the slot may be reused (see RoomLocked); completion order releases whole batches
    // under lock_ instead.
    released_.store(batch_next_, std::memory_order_release);
  } else {
    batch_cur_ = current_ == batch_last_ ? kNoSlot : entry.next;
  }
}

template <typename In, typename R>
void StreamCore<In, R>::ReleaseBatchLocked() {
  if (ordered_) return;  // Released item by item in LeaveCurrent().
  if (batch_count_ == 0) return;
  slot(batch_last_).next = free_head_;
  free_head_ = batch_first_;
  outstanding_ -= batch_count_;
  batch_count_ = 0;
  batch_first_ = batch_last_ = batch_cur_ = kNoSlot;
}

template <typename In, typename R>
bool StreamCore<In, R>::TakeBatchLocked() {
  if (ordered_) {
    const int64_t begin = released_.load(std::memory_order_relaxed);  // Written by this thread.
    int64_t end = begin;
    while (end < next_index_ && slot(SlotOfIndex(end)).done) ++end;
    batch_next_ = begin;
    batch_end_ = end;
    return end > begin;
  }
  if (ready_head_ == kNoSlot) return false;
  batch_first_ = batch_cur_ = ready_head_;
  batch_last_ = ready_tail_;
  batch_count_ = 0;
  for (uint32_t s = ready_head_;; s = slot(s).next) {
    ++batch_count_;
    if (s == ready_tail_) break;
  }
  ready_head_ = ready_tail_ = kNoSlot;
  return true;
}

template <typename In, typename R>
bool StreamCore<In, R>::Refill() {
  enum class Step { kBatch, kEnd, kFail, kAgain, kHelp, kSpin, kSleep, kTimeout };
  bool spun = false;       // This refill spun (at most once).
  bool just_spun = false;  // The spin ended right before this pass.
  bool slept = false;      // This refill slept.
  // The slots this refill ran itself, completed by the next locked section (see StreamHelpFrame).
  StreamHelpFrame helped{this};
  for (;;) {
    // A consumer that runs queued inputs itself never sleeps, so the deadline is checked here too
    // (the clock is read outside the lock).
    const absl::Time now =
        timeout_ == absl::InfiniteDuration() ? absl::InfinitePast() : clock_.Now();
    Work work;
    Step step;
    uint64_t completions = 0;
    int64_t total = ProgressReporter::kUnknownTotal;
    bool total_final = true;
    absl::Time deadline;
    AnyFuture inner;  // Of the helped slot (none for batched tasks); released after unlocking.
    {
      internal::SpinLockHolder lock(&lock_);
      // First: the helped completion tops up, and the batch's slots are free room.
      ReleaseBatchLocked();
      if (helped.group.taken) EndGroupLocked(&helped.group, &work, &inner);
      const bool after_spin = std::exchange(just_spun, false);
      // While more than half the window is in flight, leave the top-up to the completing
      // threads (each completion tops up every free slot): submitting from the executor's own
      // threads is cheaper, and the consumer stays free to yield. Below half, or with nothing
      // in flight, top up here so a few slow tasks cannot starve the window.
      // A deferred top-up is retried here, before the help pop below, and not after it: the
      // consumer would pull the source holding a slot that others may wait for.
      if (2 * in_flight_ <= max_in_flight_ || topup_deferred_) TopUpLocked(&work);
      // Before it may take a group to help (below): the results that drainers' groups recorded,
      // so that one held behind a drainer's slow input is yielded rather than left for queued
      // inputs that this thread would run first.
      if (drain_ && !groups_.empty() && runq_size_ > 0) {
        CollectFromGroupsLocked(nullptr, &work, &inner);
      }
      if (FatalLocked()) {
        step = Step::kFail;
      } else if (TakeBatchLocked()) {
        // The spin paid off: it found a batch without sleeping. Let the next one spin longer.
        if (after_spin && !slept) spin_limit_ = std::min(kMaxSpin, 2 * spin_limit_);
        step = Step::kBatch;
      } else if (in_flight_ == 0) {  // Nothing running, ready or startable.
        ended_ = true;
        step = Step::kEnd;
      } else if (work.reserved_count > 0 || work.to_submit.head != kNoSlot) {
        step = Step::kAgain;  // Start them before waiting.
      } else if (drain_ && runq_size_ > 0 && now >= deadline_) {
        step = Step::kTimeout;
      } else if (drain_ && runq_size_ > 0) {
        // Started slots wait for a drainer while this thread has nothing to yield: run one here
        // rather than spin or sleep (on a small machine the executor's threads and the consumer
        // share the cores, so a sleeping consumer leaves nothing to the drainers).
        TakeGroupLocked(&helped.group, &work);
        work.took_slot = true;
        deadline = deadline_;
        step = Step::kHelp;
      } else if (drain_ && !groups_.empty() && CollectOrRequeueLocked(spun, &work, &inner)) {
        // What a group recorded, or slots it did not start, are for this thread (a drainer may
        // be in a slow input, or in one that waits for them).
        step = Step::kAgain;
      } else if (!spun) {
        // Fast tasks complete within microseconds: spinning briefly, once per refill, instead
        // of sleeping saves the completing thread a wake-up and both threads a context switch
        // per batch. Slow tasks cost the consumer one short spin per batch.
        spun = true;
        completions = completions_.load(std::memory_order_relaxed);
        step = Step::kSpin;
      } else {
        // The spin did not pay off: spin less next time.
        spin_limit_ = std::max(kMinSpin, spin_limit_ / 2);
        slept = true;
        sleeping_ = true;
        awaiting_drain_ = false;
        deadline = deadline_;
        step = Step::kSleep;
      }
      EndSectionLocked(&work);
    }
    if (step == Step::kAgain &&
        consumer_waits_for_.load(std::memory_order_relaxed) != kNotWaiting) {
      consumer_waits_for_.store(kNotWaiting, std::memory_order_relaxed);  // It found something.
    }
    Finish(work);
    if (progress_ != nullptr) {
      // After Finish: inputs it started (and the end of the source it found) count already.
      internal::SpinLockHolder lock(&lock_);
      total = ProgressTotalLocked(&total_final);
    }
    if (progress_ != nullptr &&
        (total != reported_total_ || total_final != reported_total_final_)) {
      reported_total_ = total;
      reported_total_final_ = total_final;
      progress_->SetTotal(total, total_final);
    }
    switch (step) {
      case Step::kBatch:
        return true;
      case Step::kEnd:
        finished_ = true;
        if (progress_ != nullptr) progress_->Success();
        return false;
      case Step::kFail:
        FailAfterDrain(nullptr);
      case Step::kSpin:
        AnnounceWait();
        SpinWhile(completions);
        consumer_waits_for_.store(kNotWaiting, std::memory_order_relaxed);
        just_spun = true;
        break;
      case Step::kSleep:
      case Step::kTimeout: {
        // Announced already (CollectOrRequeueLocked) for a sleep on a stream with run groups.
        if (step == Step::kSleep) AnnounceWait();
        const bool woken = step == Step::kSleep && Sleep(deadline);
        consumer_waits_for_.store(kNotWaiting, std::memory_order_relaxed);
        if (!woken) {
          Work stop;
          {
            internal::SpinLockHolder lock(&lock_);
            // The timeout overrides a pending task error the consumer has not reached yet.
            if (!FatalLocked()) {
              stop_kind_ = StopKind::kTimeout;
              error_ = StreamTimeoutError(timeout_, yielded_);
            }
            StopLocked(&stop.disposal);
            EndSectionLocked(&stop);
          }
          Finish(stop);  // Cancels pending futures, before FailAfterDrain waits.
        }
        break;
      }
      case Step::kHelp:
        // Not a drainer here: the completions claim nothing. They are recorded in `helped` and
        // made by the next pass's locked section, which also takes them for the consumer.
        RunHelpGroup(&helped, deadline);
        break;
      case Step::kAgain:
        break;
    }
  }
}

template <typename In, typename R>
void StreamCore<In, R>::RunHelpGroup(StreamHelpFrame* help, absl::Time deadline) {
  StreamRunGroup& group = help->group;
  // While an input of the group blocks in a BlockingRegion, the group lets go of the rest
  // (ConsumerBlocked): it may wait for one of them. The observer this thread had, if any, hears
  // of the blocking as before (unless the thread was inside a BlockingRegion already).
  std::optional<GroupObserver> observer;
  std::optional<futures_internal::ScopedBlockingObserver> scope;
  // Relaxed: stored by this thread's section that took the group.
  if (StreamRunGroup::Count(group.state.load(std::memory_order_relaxed)) > 1) {
    observer.emplace(
        this, &group,
        BlockingRegion::WouldCompensate() ? futures_internal::CurrentBlockingObserver() : nullptr);
    scope.emplace(&*observer);
  }
  StreamHelpFrame* const outer_frame = std::exchange(tls_stream_help_frame, help);
  group.begin = group.mark = StreamTicks();
  // ConsumerBlocked() may shorten the group to the running slot, and a drainer may take
  // back what it has not started.
  for (bool first = true;; first = false) {
    // What ends the group (see StreamRunGroup::cut) leaves the rest unstarted, as is the timeout,
    // checked between the inputs the consumer runs as before each group it takes.
    if (!first && (group.cut || (deadline != absl::InfiniteFuture() && clock_.Now() >= deadline))) {
      break;
    }
    const int i = group.ClaimNext();
    if (i < 0) break;
    Run(group.slots[i]);
  }
  tls_stream_help_frame = outer_frame;
}

template <typename In, typename R>
void StreamCore<In, R>::FailAfterDrain(std::exception_ptr error) {
  StopKind kind;
  Work work;
  {
    internal::SpinLockHolder lock(&lock_);
    if (error != nullptr) SetStopLocked(StopKind::kTaskError, error, &work.disposal);
    StopLocked(&work.disposal);
    if (error == nullptr) error = error_;
    kind = stop_kind_;
    EndSectionLocked(&work);
  }
  Finish(work);
  AwaitNothingInFlight();
  finished_ = true;
  final_error_ = error;
  if (progress_ != nullptr) {
    if (kind == StopKind::kCancelled) {
      progress_->Stop("Cancelled");
    } else if (kind == StopKind::kTimeout) {
      progress_->Stop("Timeout");
    } else {
      progress_->Failure();
    }
  }
  std::rethrow_exception(error);
}

template <typename In, typename R>
StreamItem<R>* StreamCore<In, R>::Next() {
  if (finished_) {
    if (final_error_ != nullptr) std::rethrow_exception(final_error_);
    return nullptr;
  }
  if (!consumer_started_) {
    consumer_started_ = true;
    {
      internal::SpinLockHolder lock(&lock_);
      reported_total_ = ProgressTotalLocked(&reported_total_final_);
    }
    progress_ = std::make_unique<ProgressReporter>(progress_options_, reported_total_, "Streaming",
                                                   clock_, reported_total_final_);
    if (!progress_->active()) progress_.reset();
    Start();
  }
  if (has_current_) LeaveCurrent();
  for (;;) {
    uint32_t s;
    if (NextInBatch(&s)) {
      Slot& entry = slot(s);
      if (!entry.item.has_value()) FailAfterDrain(nullptr);  // Skipped after a stop.
      if (stop_on_error_ && !entry.item->outcome.ok()) FailAfterDrain(entry.item->outcome.error());
      has_current_ = true;
      current_ = s;
      ++yielded_;
      if (progress_ != nullptr) progress_->Advance();
      return &*entry.item;
    }
    if (!Refill()) return nullptr;
  }
}

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_CONSUMER_H_

// The task side of StreamCore (stream_core.h): reserving slots and starting inputs in them,
// submitting them (one task each, or to the drainers of batched tasks), running and completing
// them, and disposing of what a stop removes. Internal: include sync/stream.h instead.
//
//   Work work;
//   { internal::SpinLockHolder lock(&lock_); TopUpLocked(&work); EndSectionLocked(&work); }
//   Finish(work);  // Fills the reserved slots outside the lock, submits them, wakes the consumer.

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_TASKS_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_TASKS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <iterator>
#include <list>
#include <optional>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/internal/spin_lock.h"
#include "futures/internal/task_context.h"
#include "sync/internal/stream_core.h"
#include "sync/internal/stream_runner.h"
#include "sync/progress.h"

namespace concurry {
namespace sync_internal {

template <typename In, typename R>
uint32_t StreamCore<In, R>::AcquireSlotLocked() {
  uint32_t s;
  if (ordered_) {
    s = SlotOfIndex(next_index_);
  } else {
    s = free_head_ != kNoSlot ? free_head_ : allocated_;
  }
  EnsureChunkLocked(s);  // The only step that may throw: before any change.
  if (!ordered_) {
    if (s == free_head_) {
      free_head_ = slot(s).next;
    } else {
      ++allocated_;
    }
  }
  ++outstanding_;
  return s;
}

template <typename In, typename R>
void StreamCore<In, R>::TopUpLocked(Work* work) noexcept {
  // Whatever happens next, a top-up left for later (below) is no longer owed: this one decides.
  topup_deferred_ = false;
  if (!started_ || starting_ || stopping_.load(std::memory_order_relaxed)) return;
  uint32_t room = std::min(RoomLocked(), kMaxReserve);
  if (source_exhausted_) room = std::min<uint64_t>(room, queued_.size());
  if (room == 0) return;
  // Batched tasks: each completion frees one slot, and starting it alone costs the starter a
  // second locked section per input (its commit). While the run queue holds more than the
  // drainers can take, leave the room to grow to min_reserve_ and start that many at once: the
  // drainers lose nothing, and the profile of 10^6 trivial tasks showed these sections fighting
  // over lock_ with the completions. Not while an input blocks: the inputs it waits for may be
  // the ones left unstarted. And every section that takes a queued slot retries first
  // (topup_deferred_, see EndSectionLocked), since the completion that would otherwise start
  // them may never come when the queued inputs block in turn.
  if (drain_ && room < min_reserve_ && blocked_drainers_ == 0 &&
      runq_size_ > static_cast<uint32_t>(DrainerCapLocked())) {
    topup_deferred_ = true;
    return;
  }
  while (work->reserved_count < room) {
    uint32_t s;
    try {
      s = AcquireSlotLocked();
    } catch (...) {
      if (work->reserved_count > 0) break;  // Start those; the next top-up retries.
      SetStopLocked(StopKind::kFatal, std::current_exception(), &work->disposal);
      return;
    }
    Slot& entry = slot(s);
    entry.index = next_index_++;
    entry.done = false;
    ++in_flight_;
    Append(&work->reserved, s);
    ++work->reserved_count;
  }
  starting_ = true;
  // Follow-ups start before further source inputs.
  auto end = queued_.begin();
  std::advance(end, std::min<uint64_t>(work->reserved_count, queued_.size()));
  work->follow_ups.splice(work->follow_ups.end(), queued_, queued_.begin(), end);
}

template <typename In, typename R>
void StreamCore<In, R>::FillReserved(Work* work) noexcept {
  // The slots and the source belong to this thread until the commit below.
  uint32_t filled = 0;
  bool exhausted = false;
  std::exception_ptr source_error;
  std::exception_ptr fatal;
  uint32_t s = work->reserved.head;
  for (; filled < work->reserved_count; ++filled, s = slot(s).next) {
    Slot& entry = slot(s);
    if (!work->follow_ups.empty()) {
      try {
        entry.input.emplace(std::move(work->follow_ups.front()));
      } catch (...) {
        fatal = std::current_exception();  // The follow-up stays for the disposal.
        break;
      }
      work->follow_ups.pop_front();  // Destroys a moved-from In.
      continue;
    }
    // A hint: a stop re-checked at the commit. Pulling no further after it saves the source work.
    if (stopping_.load(std::memory_order_relaxed)) break;
    std::optional<In> pulled;
    try {
      pulled = source_();
    } catch (...) {
      source_error = std::current_exception();
      break;
    }
    if (!pulled.has_value()) {
      exhausted = true;
      break;
    }
    try {
      entry.input.emplace(std::move(*pulled));
    } catch (...) {
      fatal = std::current_exception();  // `pulled` is destroyed here, outside the lock.
      break;
    }
  }
  const SlotList reserved = std::exchange(work->reserved, SlotList());
  const uint32_t count = std::exchange(work->reserved_count, 0);
  internal::SpinLockHolder lock(&lock_);
  starting_ = false;
  s = reserved.head;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t next = slot(s).next;  // Read before Append relinks it.
    if (i < filled) {
      if (drain_) {
        PushRunnableLocked(s, work);
      } else {
        Append(&work->to_submit, s);
      }
    } else {
      UnacquireSlotLocked(s);  // Never started: its index is returned too (below).
    }
    s = next;
  }
  // Nobody else hands out indices while this thread is the starter, so the unused ones are the
  // last ones.
  next_index_ -= count - filled;
  in_flight_ -= static_cast<int>(count - filled);
  if (exhausted) {
    source_exhausted_ = true;
    // Destroyed after unlocking: it may own a range whose elements' destructors run user code.
    work->disposal.source.emplace(std::exchange(source_, nullptr));
  }
  if (source_error != nullptr) {
    SetStopLocked(StopKind::kSourceError, std::move(source_error), &work->disposal);
  }
  if (fatal != nullptr) SetStopLocked(StopKind::kFatal, std::move(fatal), &work->disposal);
  // A stop while this thread pulled left the source (and follow-ups it took) to it.
  if (stopping_.load(std::memory_order_relaxed)) StopLocked(&work->disposal);
  work->disposal.queued.splice(work->disposal.queued.end(), work->follow_ups);
  TopUpLocked(work);
  EndSectionLocked(work);
}

template <typename In, typename R>
void StreamCore<In, R>::Finish(Work& work) noexcept {
  for (;;) {
    // First: the consumer waits for it, and whatever follows keeps the core alive by itself.
    if (std::exchange(work.wake, false)) WakeConsumer();
    if (work.reserved_count > 0) {
      // Start what the last commit queued before pulling more: the source may wait for their
      // results. The reserved slots keep the core alive meanwhile.
      if (work.to_submit.head != kNoSlot) SubmitAll(std::exchange(work.to_submit, SlotList()));
      if (work.spawn > 0) SpawnDrainers(std::exchange(work.spawn, 0));
      FillReserved(&work);
      continue;
    }
    // With nothing counted, the core may be gone once the last slot is submitted (its task may
    // complete and the consumer destroy the stream): read nothing of it afterwards.
    if (work.to_submit.head != kNoSlot) SubmitAll(std::exchange(work.to_submit, SlotList()));
    if (work.spawn > 0) SpawnDrainers(std::exchange(work.spawn, 0));
    if (!work.counted) return;
    Dispose(work.disposal);
    internal::SpinLockHolder lock(&lock_);
    --in_flight_;
    work.counted = false;
    // A destructor may have added a follow-up that did not fit while this thread was counted.
    TopUpLocked(&work);
    EndSectionLocked(&work);
  }
}

template <typename In, typename R>
void StreamCore<In, R>::SubmitAll(SlotList list) noexcept {
  if (list.head == kNoSlot) return;
  StreamSubmitFrame* top = tls_stream_submit_frame;
  if (top != nullptr && top->core == this) {
    // A task of this stream ran inline inside Submit(): let the outer loop submit these.
    if (top->tail == kNoSlot) {
      top->head = list.head;
    } else {
      slot(top->tail).next = list.head;
    }
    top->tail = list.tail;
    return;
  }
  StreamSubmitFrame frame{this, list.head, list.tail, top};
  tls_stream_submit_frame = &frame;
  Executor& executor = executor_;
  while (frame.head != kNoSlot) {
    const uint32_t s = frame.head;
    // Read the link before submitting: once submitted, the slot belongs to its task.
    if (s == frame.tail) {
      frame.head = frame.tail = kNoSlot;
    } else {
      frame.head = slot(s).next;
    }
    try {
      executor.Submit(StreamTask<In, R>(this, s));
    } catch (...) {
      // The task was either run (tasks never throw, so the executor failed after running it:
      // the slot completed) or destroyed unrun, which stopped the stream (Drop).
    }
  }
  tls_stream_submit_frame = frame.prev;
}

template <typename In, typename R>
void StreamCore<In, R>::Run(uint32_t s) noexcept {
  // Relaxed: a hint (see "Memory ordering"). A task that misses the stop merely runs; one that
  // sees it skips. Nothing written before the stop is read here.
  if (stopping_.load(std::memory_order_relaxed)) {
    slot(s).input.reset();
    Complete(s);  // Skipped: no item.
    return;
  }
  Invoke(s);
}

template <typename In, typename R>
void StreamCore<In, R>::Drop(uint32_t s) noexcept {
  slot(s).input.reset();
  Complete(s, StreamDroppedTaskError());
}

template <typename In, typename R>
void StreamCore<In, R>::SpawnDrainers(int count) noexcept {
  Executor& executor = executor_;
  for (int i = 0; i < count; ++i) {
    try {
      executor.Submit(StreamDrainTask<In, R>(this));
    } catch (...) {
      // Run (then it failed after running: the drainer did its work) or dropped (DropDrainer).
    }
  }
}

template <typename In, typename R>
void StreamCore<In, R>::Drain() noexcept {
  StreamDrainFrame frame{this, tls_stream_drain_frame};
  tls_stream_drain_frame = &frame;
  // An executor that adds a thread while a task blocks (TbbExecutor) learns of it through its
  // observer; this one forwards to it and lets the stream add a drainer for the added thread.
  futures_internal::BlockingObserver* outer = futures_internal::CurrentBlockingObserver();
  std::optional<GroupObserver> observer;
  std::optional<futures_internal::ScopedBlockingObserver> scope;
  if (outer != nullptr) {
    observer.emplace(this, /*help=*/nullptr, outer);
    scope.emplace(&*observer);
  }
  // The first slot is claimed as after a completion: a deferred top-up is retried before it, and
  // when that reserves, the commit claims it, once the source was pulled (see EndSectionLocked).
  // Claiming nothing (another drainer took it) or one drainer too many leaves.
  frame.claim = true;
  {
    Work work;
    {
      internal::SpinLockHolder lock(&lock_);
      EndSectionLocked(&work);
    }
    Finish(work);  // Its reserved slots, or the slot it claimed, keep the core alive.
  }
  // Runs its group; once it has run what it could claim, one locked section makes the group's
  // completions and claims the next group (or lets the drainer leave).
  StreamRunGroup& group = frame.group;
  while (group.taken) {
    const uint64_t w = group.state.load(std::memory_order_relaxed);  // Relaxed: the owner.
    if (StreamRunGroup::Started(w) > 0 &&
        (group.cut || (StreamRunGroup::Completed(w) > 0 && ConsumerWaitsFor(group.last_index)))) {
      // Cut short, or the consumer waits for the result just recorded: hand over what the group
      // has done before running more of it, so a slow input never holds back a result the
      // consumer waits for (the check follows every record, see consumer_waits_for_). It holds
      // the slots, and is counted in drainers_: the core lives.
      EndDrainerGroup(&frame);
      continue;
    }
    const int i = group.ClaimNext();
    if (i < 0) {
      EndDrainerGroup(&frame);  // Ran what it claimed; the rest was taken back, if any.
      continue;
    }
    if (i == 0) group.begin = group.mark = StreamTicks();
    Run(group.slots[i]);
  }
  scope.reset();
  tls_stream_drain_frame = frame.prev;
  if (!frame.resubmit) return;  // Left: the core may be gone.
  // Still counted in drainers_, so the core is alive; the new task takes over that count.
  SpawnDrainers(1);
}

template <typename In, typename R>
void StreamCore<In, R>::DropDrainer() noexcept {
  // Completions below are not a drainer's, even on a drainer's thread.
  StreamDrainFrame shield{nullptr, tls_stream_drain_frame};
  tls_stream_drain_frame = &shield;
  SlotList orphans;
  Work work;
  const std::exception_ptr error = StreamDroppedTaskError();  // Allocates: before locking.
  {
    internal::SpinLockHolder lock(&lock_);
    SetStopLocked(StopKind::kFatal, error, &work.disposal);
    // Leaving and taking the queue in one section keeps "queued slots have a drainer": when
    // several drainers are dropped at once, the last to leave sees the count reach zero.
    if (--drainers_ == 0) {
      orphans = std::exchange(runq_, SlotList());
      runq_size_ = 0;
    }
    EndSectionLocked(&work);
  }
  // From here on only the orphans' own in_flight_ counts (and work.counted) keep the core alive.
  Finish(work);
  for (uint32_t s = orphans.head; s != kNoSlot;) {
    const uint32_t next = s == orphans.tail ? kNoSlot : slot(s).next;
    slot(s).input.reset();
    Complete(s);  // Skipped (the stream stopped). The last one may free the core.
    s = next;
  }
  tls_stream_drain_frame = shield.prev;  // Thread-local only.
}

template <typename In, typename R>
void StreamCore<In, R>::DrainerBlocked() noexcept {
  // Only the cap and the drainers change here: this runs inside the user's blocking call, on a
  // thread that may be pulling the source or about to run a claimed slot, so it neither claims
  // nor starts inputs. A deferred top-up is retried by the next pop: deferring needs more queued
  // slots than drainers, and one is spawned here or enough of them are not blocked; while this
  // input blocks, that retry does not defer (TopUpLocked).
  Work work;
  AnyFuture inner;  // None: batched tasks never hold futures.
  {
    internal::SpinLockHolder lock(&lock_);
    ++blocked_drainers_;
    StreamDrainFrame* frame = tls_stream_drain_frame;
    if (frame != nullptr && frame->core == this) {
      // The completions made here claim nothing: the running slot's completion ends the group
      // and claims then (a section that the blocked input may run before, an Add(), must not).
      const bool claim = frame->claim;
      GroupBlockedLocked(&frame->group, &work, &inner);
      frame->claim = claim;
    }
    if (runq_size_ > 0 && drainers_ < DrainerCapLocked()) {
      ++drainers_;
      ++work.spawn;
    }
    TakeSleepLocked(&work);  // The group's results, or its queued slots, are for the consumer.
  }
  FinishBlocked(work);
}

template <typename In, typename R>
void StreamCore<In, R>::ConsumerBlocked(StreamRunGroup* group) noexcept {
  Work work;
  AnyFuture inner;  // None: batched tasks never hold futures.
  {
    internal::SpinLockHolder lock(&lock_);
    GroupBlockedLocked(group, &work, &inner);
  }
  FinishBlocked(work);  // The consumer is this thread: nothing to wake.
}

template <typename In, typename R>
void StreamCore<In, R>::FinishBlocked(Work& work) noexcept {
  if (work.wake) WakeConsumer();
  // Their counts keep the core alive until they are submitted, as does the blocked input.
  if (work.spawn > 0) SpawnDrainers(work.spawn);
  // Always empty: the completions made here cannot stop the stream (an error or a fatal failure
  // cuts the group before its next input starts). Were that to change, user destructors would run
  // here, inside the user's blocking call (perhaps holding its lock).
  Dispose(work.disposal);
}

template <typename In, typename R>
void StreamCore<In, R>::DrainerUnblocked() noexcept {
  internal::SpinLockHolder lock(&lock_);
  --blocked_drainers_;
}

template <typename In, typename R>
bool StreamCore<In, R>::TrackInner(uint32_t s, AnyFuture inner) noexcept {
  internal::SpinLockHolder lock(&lock_);
  if (stopping_.load(std::memory_order_relaxed)) return false;
  slot(s).inner = std::move(inner);
  ++pending_inner_;
  return true;
}

template <typename In, typename R>
void StreamCore<In, R>::Complete(uint32_t s, std::exception_ptr fatal) noexcept {
  // A slot this thread runs from a group: a drainer's is made with the rest of its group when the
  // group ends, or earlier by a consumer that waits for a result (CollectFromGroupsLocked); one
  // the consumer ran itself is made by its next locked section.
  if (StreamRunGroup* group = CallerGroup(); group != nullptr) {
    if (const int index = group->RunningIndex(s); index >= 0) {
      RecordGroupCompletion(group, s, index, std::move(fatal));
      return;
    }
  }
  Work work;
  AnyFuture inner;  // The slot's future, released after unlocking.
  {
    internal::SpinLockHolder lock(&lock_);
    CompleteLocked(s, std::move(fatal), &work, &inner);
    EndSectionLocked(&work);
  }
  Finish(work);
}

template <typename In, typename R>
void StreamCore<In, R>::EndDrainerGroup(StreamDrainFrame* frame) noexcept {
  Work work;
  AnyFuture inner;  // None: batched tasks never hold futures.
  {
    internal::SpinLockHolder lock(&lock_);
    EndGroupLocked(&frame->group, &work, &inner);
    frame->claim = true;      // Even when nothing was left to make here.
    EndSectionLocked(&work);  // Claims the next group through `frame`.
  }
  Finish(work);
}

template <typename In, typename R>
void StreamCore<In, R>::CompleteLocked(uint32_t s, std::exception_ptr fatal, Work* work,
                                       AnyFuture* inner, bool top_up) noexcept {
  if (drain_) {
    StreamDrainFrame* frame = tls_stream_drain_frame;
    if (frame != nullptr && frame->core == this) frame->claim = true;
  }
  --in_flight_;
  if (fatal != nullptr) SetStopLocked(StopKind::kFatal, std::move(fatal), &work->disposal);
  Slot& entry = slot(s);
  if (entry.inner.valid()) {
    *inner = std::move(entry.inner);
    --pending_inner_;
  }
  const bool skipped = !entry.item.has_value();
  if (!skipped && stop_on_error_ && !entry.item->outcome.ok()) {
    SetStopLocked(StopKind::kTaskError, entry.item->outcome.error(), &work->disposal);
  }
  if (ordered_) {
    entry.done = true;
  } else if (skipped) {
    FreeSlotLocked(s);
  } else {
    entry.next = kNoSlot;
    if (ready_tail_ == kNoSlot) {
      ready_head_ = s;
    } else {
      slot(ready_tail_).next = s;
    }
    ready_tail_ = s;
  }
  if (top_up) {
    TopUpLocked(work);
  } else {
    topup_deferred_ = true;
  }
  // Relaxed: a hint for the spinning consumer, which re-checks under lock_.
  completions_.fetch_add(1, std::memory_order_relaxed);
}

template <typename In, typename R>
void StreamCore<In, R>::Dispose(Disposal& disposal) noexcept {
  disposal.queued.clear();
  disposal.source.reset();
  if (std::exchange(disposal.cancel_inner, false)) CancelInnerFutures();
}

template <typename In, typename R>
void StreamCore<In, R>::CancelInnerFutures() noexcept {
  for (;;) {
    AnyFuture inner;
    {
      internal::SpinLockHolder lock(&lock_);
      if (pending_inner_ == 0) return;
      uint32_t& c = cancel_cursor_;
      while (c < capacity_ && (chunks_[c >> kChunkBits] == nullptr || !slot(c).inner.valid())) ++c;
      if (c == capacity_) return;  // Not reached: pending_inner_ counts slots at or after c.
      inner = std::move(slot(c).inner);
      --pending_inner_;
    }
    CancelQuietly(inner);  // Runs the slot's done-callback, which completes it, unless done.
  }
}

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_TASKS_H_

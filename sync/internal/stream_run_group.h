// Run groups of a stream with batched tasks: the queued slots that one thread (a drainer, or the
// consumer when it helps) takes to run one after the other (StreamRunGroup), and the list of the
// groups taken from one stream (StreamGroupList). Internal: include sync/stream.h instead.
//
//   StreamRunGroup& group = frame.group;  // Filled and listed by StreamCore::TakeGroupLocked.
//   for (int i = group.ClaimNext(); i >= 0; i = group.ClaimNext()) {
//     Run(group.slots[i]);  // Its Complete() records the completion in the group.
//   }
//   // One locked section (EndGroupLocked) makes them, unlists the group and takes the next one.
//
// Run groups (the members and methods named here are StreamCore's, in stream_core.h; "Batched
// tasks" there says what drainers are): a drainer, and the consumer when it helps, take queued
// slots in groups (StreamRunGroup) and run them one after the other; a completion within a group is
// only recorded on the running thread, and one locked section makes the group's completions, claims
// the next group and puts back what the group did not start. With 10^6 trivial inputs on 2 cores
// the profile showed the consumer's time going to taking lock_ (half of its samples on the
// instruction after the exchange) whenever a drainer had run a slot since, and a run was 3 to 4
// times slower when the drainers ran 10 to 20% of the inputs than when the consumer ran them all;
// groups make that a lock per group. A group is at most group_limit_ slots, which starts at 1,
// doubles after a group whose inputs took at most kFastInputTicks each, and falls back to 1 after
// a slower one. A group also takes only the queued slots beyond one per drainer
// (DrainerCapLocked), so a few queued inputs are spread one per thread as before. A group ends
// early after an input slower than kSlowInputTicks, a failure or a task error under kStopOnError
// (what the stop would skip is not started), and, for the consumer, at the timeout; a drainer also
// ends its group before its next input when it has recorded a result the consumer waits for
// (consumer_waits_for_: under Order::kInput only the next result in order, under
// Order::kCompletion any result): so while an ordered consumer waits for a slow input, the other
// drainers keep their groups instead of taking the lock for every result.
//
// A group's slots are never held out of reach: a taken group is listed (groups_) and keeps its
// counts in one atomic word (StreamRunGroup::state), so its unstarted slots can be taken back
// (RequeueUnstartedLocked: a CAS lowers the count under lock_, the owner claims each next slot with
// a CAS) and its recorded completions made (MakeRecordedLocked, `made` under lock_) by another
// thread. That happens (1) whenever a thread takes a group (TakeGroupLocked, for a drainer or the
// consumer): first it puts back, at the front of the run queue, the unstarted slots of every
// listed group, however briefly their owner has run; (2) when a drainer finds the run queue empty,
// for every listed group, before it leaves; (3) when the consumer, with nothing to yield and
// nothing queued, is about to spin (their recorded completions) or sleep (those and their
// unstarted slots, CollectOrRequeueLocked); (4) before the consumer takes a group to help, their
// recorded completions. Not when a drainer has run its kDrainBatch inputs and hands over to a new
// executor task (ClaimForDrainerLocked, resubmit): it ends its own group but takes nothing back;
// the new task does, in (1), once it gets a thread behind the executor's queue. Meanwhile every
// other thread that takes work takes them back, as in (1); with one input per task, a queued slot
// likewise waited for a task to run it. The take-back in (1) is eager on purpose: a lazy one (after
// an input has run a while, or by a thread going idle) needs a thread that is not stuck itself, and
// with inputs that meet each other without a BlockingRegion every thread may be inside an input
// whose partner sits unstarted in its own group (one executor thread and the consumer, each waiting
// in the first input of its group for the second). Sections are serialized by lock_, so the thread
// that takes a group last has taken back the rest of every earlier group, and it runs the oldest
// unstarted slot first, as each free thread did with one slot per task. So an input that waits for
// a later input of its own group has it run by the next thread that takes work, and a slow input
// holds back neither queued inputs nor recorded results from a consumer that waits: (3) and (4)
// cover a consumer that starts waiting after the owner entered the slow input, consumer_waits_for_
// one that waited before. While one of its inputs blocks in a BlockingRegion (drainers forward
// their observer; the consumer installs one for a group of more than one slot), the group also puts
// back what it has not started and makes what it recorded at once (GroupBlockedLocked). Before an
// Add() or Start() from `fn` (which may make the thread the starter, pulling the source), the group
// puts back its unstarted slots.

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_RUN_GROUP_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_RUN_GROUP_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace concurry {
namespace sync_internal {

// The most queued slots a drainer or the consumer takes at once to run (see the file comment).
inline constexpr int kMaxRunGroup = 16;

// A cheap clock for timing inputs, in ticks: the time-stamp counter on x86 (a few GHz), else
// steady_clock's nanoseconds. Only compared with the thresholds of run groups, which tolerate
// either unit.
inline uint64_t StreamTicks() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

// Queued slots that one thread (the owner) took to run one after the other (see the file
// comment): their Complete() records the completion here, and one locked section makes them all.
// While the group is taken it is listed in the core (a StreamGroupList), so that another thread
// can take back the slots it has not started and make the completions it has recorded.
//
// Memory ordering (`state`, `fatal_at`): relaxed wherever the owner reads what it wrote itself
// (its claims and records change started and completed, nobody else does), and wherever the
// other side of the exchange holds the core's lock (the owner writes slots, stores, ends and
// rebases the word under the lock; a take-back reads them under it). A slot goes to the owner's
// claim or to a take-back by a CAS on the one word, which needs no ordering beyond the word's own.
// The one exchange without the lock is a recorded completion: the owner writes the slot's result
// and `fatal`/`fatal_at`, then bumps completed with a seq_cst RMW (release, and ordered with its
// load of StreamCore::consumer_waits_for_); whoever makes it on another thread loads the word
// seq_cst (acquire) first (StreamCore::CollectFromGroupsLocked).
//
// Thread-safe as described per member: owner only, under the core's lock, or `state`.
struct StreamRunGroup {
  // The three counts of the group in one word, so that each change is one atomic operation:
  // count (taken: slots[0, count)), started (run or running: slots[0, started)) and completed
  // (completed by their task: slots[0, completed)), 16 bits each.
  static constexpr uint64_t kStartedOne = uint64_t{1} << 16;
  static constexpr uint64_t kCompletedOne = uint64_t{1} << 32;
  static int Count(uint64_t w) noexcept { return static_cast<int>(w & 0xffff); }
  static int Started(uint64_t w) noexcept { return static_cast<int>((w >> 16) & 0xffff); }
  static int Completed(uint64_t w) noexcept { return static_cast<int>(w >> 32); }
  static uint64_t Pack(int count, int started, int completed) noexcept {
    return static_cast<uint64_t>(count) | static_cast<uint64_t>(started) << 16 |
           static_cast<uint64_t>(completed) << 32;
  }

  // The owner claims its next slot, unless the group was cut short (by the owner, or by a thread
  // that took the rest back). Returns its index, or -1. Relaxed: the slots it indexes were written
  // by this thread, and the CAS on the one word is what decides between the claim and a take-back.
  int ClaimNext() noexcept {
    uint64_t w = state.load(std::memory_order_relaxed);
    do {
      if (Started(w) >= Count(w)) return -1;
    } while (!state.compare_exchange_weak(w, w + kStartedOne, std::memory_order_relaxed,
                                          std::memory_order_relaxed));
    return Started(w);
  }

  // The position in the group of `s`, the slot the owner runs now, or -1 when the owner does not
  // run it from this group. On the owner's thread (relaxed: started and completed change there).
  int RunningIndex(uint32_t s) const noexcept {
    const uint64_t w = state.load(std::memory_order_relaxed);
    const int completed = Completed(w);
    return completed < Started(w) && slots[completed] == s ? completed : -1;
  }

  // Forgets the completions made and the fatal failure recorded: the group's slots were made or
  // are about to be replaced. Under the core's lock.
  void ResetRecorded() noexcept {
    made = 0;
    fatal = nullptr;
    fatal_at.store(-1, std::memory_order_relaxed);  // Relaxed: see "Memory ordering".
  }

  // Written under the core's lock by the owner (when it takes the group, or shortens it while an
  // input blocks); read by the owner without the lock and by other threads under the lock.
  uint32_t slots[kMaxRunGroup];
  // count, started, completed (see Pack). Changed outside the core's lock only by the owner's
  // claim (started) and record (completed, a seq_cst RMW after the slot's result is written, see
  // StreamCore::consumer_waits_for_); every other change is under the lock: a thread that takes
  // back the slots the owner has not started lowers count to started with a CAS
  // (StreamCore::RequeueUnstartedLocked), and the owner stores or rebases the word when it takes,
  // ends or shortens the group.
  std::atomic<uint64_t> state{0};
  // Guarded by the core's lock (only the owner writes `taken`, so it may also read it without):
  // the group is listed in the core; completions made so far (slots[0, made)), by the owner or by
  // the consumer (StreamCore::CollectFromGroupsLocked).
  bool taken = false;
  int made = 0;
  // StreamGroupList's links, under the core's lock while taken.
  StreamRunGroup* prev = nullptr;
  StreamRunGroup* next = nullptr;
  // The first failure outside the function (Complete's `fatal`) and the slot it came with: written
  // by the owner before the completion that publishes it, then read under the core's lock by
  // whoever makes that completion. A fatal failure cuts the group, so there is at most one.
  std::exception_ptr fatal;
  std::atomic<int> fatal_at{-1};
  // Owner only. The group ends before its next slot: a failure, a task error under
  // kStopOnError, or a slow input (the rest should not wait behind it).
  bool cut = false;
  // Owner only: the input index of the last completion it recorded (read from the slot before
  // recording; the slot may be reused right after).
  int64_t last_index = -1;
  uint64_t begin = 0;  // StreamTicks() when the group started.
  uint64_t mark = 0;   // StreamTicks() when the running slot started.
};

// The run groups taken from one stream (StreamRunGroup::taken), linked through their prev and
// next: the groups whose unstarted slots another thread may take back and whose recorded
// completions the consumer may make. Not thread-safe: the core guards it with its lock.
class StreamGroupList {
 public:
  class Iterator {
   public:
    explicit Iterator(StreamRunGroup* group) noexcept : group_(group) {}
    StreamRunGroup& operator*() const noexcept { return *group_; }
    Iterator& operator++() noexcept {
      group_ = group_->next;
      return *this;
    }
    bool operator==(const Iterator& other) const noexcept { return group_ == other.group_; }

   private:
    StreamRunGroup* group_;
  };

  bool empty() const noexcept { return head_ == nullptr; }
  // Lists `group` (not listed) and marks it taken.
  void Link(StreamRunGroup* group) noexcept {
    group->taken = true;
    group->prev = nullptr;
    group->next = head_;
    if (head_ != nullptr) head_->prev = group;
    head_ = group;
  }
  // Unlists `group` if it is listed.
  void Unlink(StreamRunGroup* group) noexcept {
    if (!group->taken) return;
    (group->prev != nullptr ? group->prev->next : head_) = group->next;
    if (group->next != nullptr) group->next->prev = group->prev;
    group->taken = false;
  }
  // The listed groups, newest first. Linking or unlinking while iterating is not allowed.
  Iterator begin() const noexcept { return Iterator(head_); }
  Iterator end() const noexcept { return Iterator(nullptr); }

 private:
  StreamRunGroup* head_ = nullptr;
};

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_RUN_GROUP_H_

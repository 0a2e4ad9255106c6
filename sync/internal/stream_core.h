// The state machine of a stream (StreamCore): its window of slots, the hand-over of results to
// the consumer, top-ups, stops and the consumer's wait. Internal: include sync/stream.h instead.
//
//   auto core = std::make_unique<StreamCoreImpl<In, R, F>>(executor, source, fn, options, ...);
//   while (StreamItem<R>* item = core->Next()) Use(*item);  // Tasks call Run() / Complete().
//
// The methods are defined in stream_tasks.h (the task side) and stream_consumer.h (the
// consumer's side).
//
// Design. A stream owns a fixed-capacity table of slots (allocated in chunks of 64 on first use):
// 2 * max_in_flight in completion order, max_in_flight in input order (slot = index mod
// max_in_flight). Starting an input takes a slot, stores the input in it and submits a 16-byte
// task {core, slot} to the executor (stored inline by absl::AnyInvocable: no allocation of ours
// per task). The task stores the outcome in the slot and calls Complete(), which, under the
// stream's lock, links the slot into the ready list (completion order) or marks it done (input
// order), then tops the window up. The consumer takes every ready slot in one batch under the
// lock and yields them without locking; completion order returns the batch's slots to the free
// list at the next lock, input order releases each slot as soon as its item is left (an atomic
// index), so completing tasks can reuse it at once. Top-ups happen on the completing threads; the
// consumer only tops up when at most half the window is in flight (see Refill).
//
// The lock is a short spin lock (futures/internal/spin_lock.h), not an absl::Mutex: it is taken
// once per item by a completing thread, and Debian's Abseil, built with deadlock detection,
// serialises every absl::Mutex operation of the process on one global lock (the profile of
// sync_benchmark showed a third of the stream's time in absl::Mutex and that global lock). No
// user code runs under it, and nobody blocks under it:
// - Starting inputs (moving them into slots, pulling the source) runs outside the lock. A thread
//   that tops up reserves the free slots (and their indices) under the lock and becomes the one
//   "starter" (starting_); it fills them outside the lock and commits them at its next lock, then
//   submits them. While a starter works, other top-ups leave the window to it: its commit sees the
//   slots they freed. So the source is called by one thread at a time, never under the lock.
// - The consumer sleeps on a separate absl::Mutex (wait_mu_), used only to sleep and to be woken:
//   it announces its sleep under the lock (sleeping_), and the one section that then makes its
//   condition true takes the announcement and wakes it once (see Sleep). A consumer that keeps
//   up is never woken; before sleeping it spins briefly (adaptively, see Refill).
//
// Lifetime: tasks reference the core, so the core is destroyed only after in_flight_ dropped to
// zero (Shutdown). A thread leaving a locked section touches the core afterwards only while
// something keeps in_flight_ above zero: slots it reserved or has still to submit, or a Disposal
// it still has to destroy (it counts itself in flight meanwhile: Work::counted). A drainer is
// counted in drainers_ until it leaves, and Shutdown waits for both counts to reach zero. A
// wake-up a thread owes the consumer comes first: the consumer cannot go on before it.
//
// User code and the lock: no future cancellation (which runs done-callbacks) and no user code
// (the source, moving or destroying inputs, destroying results) runs under lock_. Whatever a stop
// or the end of the source removes (queued follow-ups, the source, which may own a range) is
// moved into a Disposal under the lock and destroyed after unlocking, and the futures returned
// by the function that are still pending are cancelled then (see CancelInnerFutures).
//
// Futures returned by the function: a task is in flight until its future completes. While
// pending, the future is also held in its slot (Slot::inner, under lock_), so that a stop cancels
// it; a future that completes as cancelled while the stream stops counts as skipped, so the
// consumer reports the stop's error, not that cancellation.
//
// Exceptions: a task never throws (Executor's contract). What the function throws is its item's
// error; anything else that fails while running or completing a task (std::bad_alloc, a throwing
// move of In) stops the stream with that error (StopKind::kFatal), and the task still completes
// exactly once, so in_flight_ stays exact.
//
// Slot ownership (why slots carry no ABSL_GUARDED_BY): a slot is free or ready (guarded by
// lock_), or starting (owned by the starter that reserved it under lock_ until it submits it), or
// running (owned by its task, handed over by Executor::Submit), or in a run group (owned by the
// thread that took it from the run queue under lock_, until that thread makes its completion or
// puts it back under lock_), or in the consumer's batch (owned by the consumer, handed over under
// lock_; in input order handed back through released_). Each hand-over happens under lock_,
// through Submit, or through released_'s release/acquire pair.
//
// Batched tasks: a stream made by Stream() over an executor whose tasks may run on any thread
// (Executor::tasks_may_run_on_any_thread(): TbbExecutor; not a serial or set-up executor, since
// inputs move between tasks and onto the consumer's thread) and that says how many tasks it runs
// at once, with a function that does not return futures, does not give every slot an executor
// task. Started slots wait in a run queue (runq_), and up to
// min(max_concurrency, max_in_flight) drainer tasks run them one after the other: a drainer's
// completion claims its next slots in the same locked section (StreamDrainFrame), so a slot costs
// no executor task and no extra lock. After kDrainBatch slots a drainer queues a new task behind
// the executor's other work and ends, so a long stream shares the executor fairly. And when the
// consumer has nothing to yield while slots wait in the queue, it runs some itself instead of
// spinning or sleeping (Refill): on 2 cores, the executor's 2 threads and the consumer share the
// CPUs, and a profile of sync_benchmark showed the consumer asleep (35 ms of CPU in 0.9 s) while
// the window, full of results it had not taken, left the executor's threads idle-spinning in
// oneTBB (70% of the samples). Still at most max_in_flight inputs are in flight; the executor
// runs at most max_concurrency of them at once, and a waiting consumer one more. A drainer whose
// input blocks in a BlockingRegion makes TbbExecutor add a thread; the drainer's own observer
// (forwarding to the executor's) then allows one more drainer, so the added thread has inputs to
// run and inputs that wait for each other all get a thread (DrainerCapLocked). A drainer that is
// dropped (the executor rejected it) leaves in the same section that takes the queue when it was
// the last, so queued slots always have a drainer (DropDrainer). The consumer checks the timeout
// between the inputs it runs itself.
//
// Run groups: a drainer, and the consumer when it helps, take queued slots in groups and run
// them one after the other, with a lock per group rather than per input; a group's unstarted
// slots and recorded completions stay within reach of every other thread. See
// sync/internal/stream_run_group.h for the design; the core's part is TakeGroupLocked,
// EndGroupLocked, GroupBlockedLocked and the take-backs (RequeueUnstartedLocked,
// CollectFromGroupsLocked).
//
// Inline executors: a task that runs inside Submit() would recurse (complete -> top up ->
// submit -> run...). A thread-local frame turns that into a loop: while a thread is submitting for
// a stream, further submissions for the same stream on that thread are appended to the frame's
// list instead.

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_CORE_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_CORE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <iterator>
#include <list>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/macros.h"
#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/internal/spin_lock.h"
#include "futures/internal/task_context.h"
#include "sync/internal/stream_run_group.h"
#include "sync/internal/stream_runner.h"
#include "sync/progress.h"

namespace concurry {
namespace sync_internal {

inline constexpr uint32_t kNoSlot = 0xffffffffu;

// A thread's ongoing SubmitAll for one stream (see "Inline executors" above).
struct StreamSubmitFrame {
  const void* core;
  uint32_t head;
  uint32_t tail;
  StreamSubmitFrame* prev;
};
inline thread_local StreamSubmitFrame* tls_stream_submit_frame = nullptr;

// The drainer a thread runs (see "Batched tasks" above): the locked section that ends its group
// (EndDrainerGroup) claims the drainer's next group through it.
struct StreamDrainFrame {
  const void* core;
  StreamDrainFrame* prev;
  StreamRunGroup group;   // The slots to run next.
  int ran = 0;            // Slots claimed by this executor task.
  bool claim = false;     // A slot completed: claim the next group (or leave) at section end.
  bool resubmit = false;  // Ran its share: hand the rest to a new executor task.
};
inline thread_local StreamDrainFrame* tls_stream_drain_frame = nullptr;

// The group of slots the consumer runs itself (see "Batched tasks" above): the consumer's next
// locked section makes their completions. It must not go out of scope while the group is listed
// (StreamGroupList): the list would point at it and its unstarted slots would be lost.
struct StreamHelpFrame {
  ~StreamHelpFrame() { ABSL_ASSERT(!group.taken); }

  const void* core;
  StreamRunGroup group;
};
inline thread_local StreamHelpFrame* tls_stream_help_frame = nullptr;

template <typename In, typename R>
class StreamCore;

// The executor task of one slot: 16 bytes, so absl::AnyInvocable stores it inline. Destroying it
// without running it (the executor rejected or dropped it) stops the stream with StoppedError.
template <typename In, typename R>
class StreamTask {
 public:
  StreamTask(StreamCore<In, R>* core, uint32_t slot) noexcept : core_(core), slot_(slot) {}
  StreamTask(StreamTask&& other) noexcept
      : core_(std::exchange(other.core_, nullptr)), slot_(other.slot_) {}
  StreamTask(const StreamTask&) = delete;
  StreamTask& operator=(const StreamTask&) = delete;
  StreamTask& operator=(StreamTask&&) = delete;
  ~StreamTask() {
    if (core_ != nullptr) core_->Drop(slot_);
  }

  void operator()() { std::exchange(core_, nullptr)->Run(slot_); }

 private:
  StreamCore<In, R>* core_;
  uint32_t slot_;
};

// The executor task of a drainer (see "Batched tasks" above): 8 bytes, stored inline. Destroying
// it without running it stops the stream with StoppedError.
template <typename In, typename R>
class StreamDrainTask {
 public:
  explicit StreamDrainTask(StreamCore<In, R>* core) noexcept : core_(core) {}
  StreamDrainTask(StreamDrainTask&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  StreamDrainTask(const StreamDrainTask&) = delete;
  StreamDrainTask& operator=(const StreamDrainTask&) = delete;
  StreamDrainTask& operator=(StreamDrainTask&&) = delete;
  ~StreamDrainTask() {
    if (core_ != nullptr) core_->DropDrainer();
  }

  void operator()() { std::exchange(core_, nullptr)->Drain(); }

 private:
  StreamCore<In, R>* core_;
};

// The state of one stream, shared by the consumer and the tasks. See the file comment. The
// consumer-side members (batch, progress) are confined to the consuming thread.
//
// Memory ordering: besides lock_ (acquire on lock, release on unlock), these atomics are read
// without it. `stopping_` (written under lock_, relaxed: every reader that acts on it beyond a
// hint reads it under lock_): a task about to run skips when it sees it and merely runs when it
// misses it, a starter stops pulling early, the consumer's spin stops early, and a future
// cancelled by CancelInnerFutures() is read after the stop happened-before it (the cancelling
// thread stopped the stream or locked lock_ after the stop). `completions_` (relaxed): only ends
// the consumer's spin early; what it then does is decided under lock_. `released_` (input order;
// release store by the consumer after destroying the item it leaves, acquire load under lock_
// before a slot is reused): orders the consumer's last access to a slot before the next input's
// writes to it. The source is handed from one starter to the next through lock_ (starting_).
// Run groups add two more. `consumer_waits_for_` (the consumer's announcement, see the member):
// stored seq_cst by the consumer before it collects what the groups recorded
// (CollectOrRequeueLocked) and before it spins or sleeps; a drainer records each completion with a
// seq_cst RMW on its group's `state`, then loads consumer_waits_for_ seq_cst before its next
// input. In the single order of those operations, either the consumer's load of `state` sees the
// completion or the drainer's load sees the announcement and, when the completion is one the
// consumer waits for, hands it over (EndDrainerGroup, which wakes a sleeping consumer through
// sleeping_ under lock_); so no result the consumer waits for stays recorded while it sleeps. The
// consumer withdraws it with a relaxed store once it found something: a stale announcement only
// ends a group early. A group's `state` (see
// StreamRunGroup): the owner's claims and the taking back under lock_ are CAS on the same word,
// so each unstarted slot goes to exactly one of them; a recorded completion publishes the slot's
// result (written before the RMW) to whoever makes it under lock_ after loading `state`.
//
// Thread-safe as documented on ResultStream.
template <typename In, typename R>
class StreamCore : public StreamInputSink<In> {
 public:
  using Item = StreamItem<R>;

  StreamCore(Executor& executor, absl::AnyInvocable<std::optional<In>()> source,
             StreamOptions options, int64_t known_total, bool may_add_follow_ups,
             int runner_concurrency, bool batch_tasks)
      : executor_(executor),
        clock_(options.clock != nullptr ? *options.clock : Clock::Real()),
        max_in_flight_(options.max_in_flight),
        runner_concurrency_(runner_concurrency),
        drain_(batch_tasks && runner_concurrency > 0),
        max_drainers_(std::min(runner_concurrency, max_in_flight_)),
        min_reserve_(
            std::clamp<uint32_t>(static_cast<uint32_t>(max_in_flight_) / 4, 1, kMaxReserve)),
        may_add_follow_ups_(may_add_follow_ups),
        ordered_(options.order == Order::kInput),
        stop_on_error_(options.on_error == ErrorPolicy::kStopOnError),
        capacity_(ordered_ ? static_cast<uint32_t>(max_in_flight_)
                           : 2 * static_cast<uint32_t>(max_in_flight_)),
        timeout_(options.timeout),
        progress_options_(std::move(options.progress)),
        known_total_(known_total),
        chunks_((capacity_ + kChunkSize - 1) / kChunkSize),
        source_(std::move(source)) {}

  virtual ~StreamCore() = default;

  StreamCore(const StreamCore&) = delete;
  StreamCore& operator=(const StreamCore&) = delete;

  // ResultStream::Next.
  Item* Next() ABSL_LOCKS_EXCLUDED(lock_);
  // ResultStream::Start.
  void Start() ABSL_LOCKS_EXCLUDED(lock_);
  // StreamContext::Enqueue.
  bool Add(In input) override ABSL_LOCKS_EXCLUDED(lock_) {
    return AddInput(std::move(input), false);
  }
  // ResultStream::Add: from outside the tasks, so more may come at any time until the end.
  bool AddFromOutside(In input) ABSL_LOCKS_EXCLUDED(lock_) {
    return AddInput(std::move(input), true);
  }
  // ResultStream::max_in_flight, max_concurrency.
  int max_in_flight() const { return max_in_flight_; }
  int runner_concurrency() const { return runner_concurrency_; }
  // ResultStream::Cancel.
  void Cancel() ABSL_LOCKS_EXCLUDED(lock_);

  // Runs the task of `slot` (StreamTask): skips it when stopping, else Invoke(). Never throws.
  void Run(uint32_t slot) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Skips `slot` and stops the stream with StoppedError: the executor rejected or dropped its
  // task, so it is shut down and later tasks would fail alike.
  void Drop(uint32_t slot) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Runs a drainer (StreamDrainTask): started slots, one after the other, up to kDrainBatch of
  // them, then hands over to a new task if more are waiting. Never throws.
  void Drain() noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // The executor rejected or dropped a drainer: stops the stream with StoppedError; the last
  // drainer completes the slots nobody will run as skipped.
  void DropDrainer() noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // A drainer's input entered (or left) a BlockingRegion; on that drainer's thread, while the
  // input runs. See DrainerCapLocked.
  void DrainerBlocked() noexcept ABSL_LOCKS_EXCLUDED(lock_);
  void DrainerUnblocked() noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // An input the consumer runs from a group (StreamHelpFrame) entered a BlockingRegion: see
  // GroupBlockedLocked. On the consumer's thread, while the input runs.
  void ConsumerBlocked(StreamRunGroup* group) noexcept ABSL_LOCKS_EXCLUDED(lock_);

  // Hears of BlockingRegions entered by the inputs a thread runs from a group, for as long as it
  // is installed (ScopedBlockingObserver), and passes them on to the observer the thread had, if
  // any (`outer`): a drainer's (`help` null: DrainerBlocked, DrainerUnblocked) or the consumer's
  // help group (ConsumerBlocked). Its calls come while an input runs (Invoke destroys the input
  // before completing its slot) or while a drainer pulls the source into reserved slots, so the
  // core is alive for them.
  class GroupObserver final : public futures_internal::BlockingObserver {
   public:
    GroupObserver(StreamCore* core, StreamRunGroup* help,
                  futures_internal::BlockingObserver* outer) noexcept
        : core_(core), help_(help), outer_(outer) {}
    void BlockingBegan() noexcept override {
      if (outer_ != nullptr) outer_->BlockingBegan();
      if (help_ == nullptr) {
        core_->DrainerBlocked();
      } else {
        core_->ConsumerBlocked(help_);
      }
    }
    void BlockingEnded() noexcept override {
      if (help_ == nullptr) core_->DrainerUnblocked();
      if (outer_ != nullptr) outer_->BlockingEnded();
    }

   private:
    StreamCore* const core_;
    StreamRunGroup* const help_;
    futures_internal::BlockingObserver* const outer_;
  };

 protected:
  struct Slot {
    int64_t index = 0;
    std::optional<In> input;
    std::optional<Item> item;  // Empty after Run when the task was skipped.
    // The future returned by the function while it is pending and the stream may still cancel
    // it. Guarded by lock_ (unlike the rest of the slot, see the file comment).
    AnyFuture inner;
    uint32_t next = kNoSlot;  // Link in the free, ready, batch, reserved or submit list.
    bool done = false;        // Input order: the task finished (item set, or skipped).
  };

  // Calls the user function on the input of `slot` (running), stores the outcome in its item and
  // calls Complete(slot) exactly once, now or, for a returned future, when it completes. Never
  // throws: a failure outside the function completes the slot with a fatal error.
  virtual void Invoke(uint32_t slot) noexcept = 0;

  // Records the completion of `slot` and tops the window up; a non-null `fatal` stops the stream
  // with that error. The caller must not touch the core after this returns (the consumer may
  // have destroyed it).
  void Complete(uint32_t slot, std::exception_ptr fatal = nullptr) noexcept
      ABSL_LOCKS_EXCLUDED(lock_);

  // Records `inner`, the pending future returned for running `slot`, so that a stop cancels it.
  // Returns false when the stream is already stopping: the caller cancels it then.
  bool TrackInner(uint32_t slot, AnyFuture inner) noexcept ABSL_LOCKS_EXCLUDED(lock_);

  // Cancels `future` if pending. Its done-callbacks run all the same when creating the
  // CancelledError runs out of memory (it then fails with std::bad_alloc).
  static void CancelQuietly(const AnyFuture& future) noexcept {
    try {
      future.Cancel();
    } catch (...) {
    }
  }

  // Returns whether the stream is stopping, without locking: exact for a thread that the stop
  // happened-before (see "Memory ordering"), a hint otherwise.
  bool StoppingHint() const noexcept { return stopping_.load(std::memory_order_relaxed); }

  // Stops, then waits until no task is in flight. Idempotent; the first thing a destructor does.
  void Shutdown() ABSL_LOCKS_EXCLUDED(lock_);

  Slot& slot(uint32_t s) { return chunks_[s >> kChunkBits][s & (kChunkSize - 1)]; }

 private:
  // Keeps the lock's line, the consumer's lock-free writes and the hints apart (see the members).
  static constexpr size_t kCacheLine = 64;
  static constexpr uint32_t kChunkBits = 6;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  // Bounds of the consumer's adaptive spin before sleeping (see Refill), in pause instructions
  // (about 10 to 40 ns each): the limit doubles after a spin that found a batch and halves after
  // one that had to sleep, so an oversubscribed machine, where the producer is not running, soon
  // stops paying for it.
  static constexpr int kMinSpin = 8;
  static constexpr int kMaxSpin = 256;
  static constexpr int kYieldEvery = 8;
  // Slots a drainer runs in one executor task before it queues a new one behind the executor's
  // other tasks: 64 trivial slots take a few microseconds; the hand-over costs one task.
  static constexpr int kDrainBatch = 64;
  // Slots a starter reserves at a time: it commits them (and drainers or the consumer may run
  // them) before it pulls the next ones, instead of leaving the queue empty while it pulls a
  // whole window.
  static constexpr uint32_t kMaxReserve = 16;
  // Run groups (see stream_run_group.h): inputs that took at most kFastInputTicks on average let
  // the next groups grow; one that took more than kSlowInputTicks ends its group (StreamTicks():
  // about 1.5 us and 25 us at 2.6 GHz).
  static constexpr uint64_t kFastInputTicks = 4096;
  static constexpr uint64_t kSlowInputTicks = 65536;
  // Values of consumer_waits_for_ besides an input index.
  static constexpr int64_t kNotWaiting = -1;
  static constexpr int64_t kAnyResult = -2;

  // Why the stream stopped before its end.
  enum class StopKind {
    kNone,
    kTaskError,
    kCancelled,
    kTimeout,
    kSourceError,
    // The executor rejected or dropped a task, or a task could not be run or completed
    // (std::bad_alloc, a throwing move of In).
    kFatal,
  };

  // Slots linked through Slot::next.
  struct SlotList {
    uint32_t head = kNoSlot;
    uint32_t tail = kNoSlot;
  };

  // What a stop or the end of the source takes out of the stream under lock_, for Dispose() after
  // unlocking: destroying inputs and the source, and cancelling futures, runs user code, which
  // may call back into the stream. Every completion makes one, so creating and destroying an
  // empty one is cheap: no allocation, no indirect call.
  struct Disposal {
    std::list<In> queued;
    std::optional<absl::AnyInvocable<std::optional<In>()>> source;
    bool cancel_inner = false;  // Futures returned by the function are pending: cancel them.

    bool empty() const { return queued.empty() && !source.has_value() && !cancel_inner; }
  };

  // What a locked section leaves to do after unlocking (Finish()), in this order: wake the
  // consumer, submit (what a commit queued, before the next fill), fill the reserved slots,
  // dispose.
  struct Work {
    // Slots reserved for this thread, the starter (starting_), to fill in index order.
    SlotList reserved;
    uint32_t reserved_count = 0;
    // Queued follow-ups taken for the first reserved slots.
    std::list<In> follow_ups;
    SlotList to_submit;
    // Drainers to submit (counted in drainers_ already).
    int spawn = 0;
    Disposal disposal;
    // The consumer sleeps and this thread took its announcement: it owes the wake-up.
    bool wake = false;
    // This thread counts itself in in_flight_ until its disposal is done (see "Lifetime").
    bool counted = false;
    // This thread took a queued slot in this section and runs it next: it starts no inputs
    // before (see EndSectionLocked).
    bool took_slot = false;
  };

  bool HasReadyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (ordered_) {
      const int64_t head = released_.load(std::memory_order_acquire);
      return head < next_index_ && slot(SlotOfIndex(head)).done;
    }
    return ready_head_ != kNoSlot;
  }
  // An error the consumer throws at its next step, not at an item's position.
  bool FatalLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return stop_kind_ != StopKind::kNone && stop_kind_ != StopKind::kTaskError;
  }
  // What the consumer waits for in Refill: something to throw, yield or run (batched tasks), or
  // the end.
  bool ConsumerMayProceedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return FatalLocked() || HasReadyLocked() || in_flight_ == 0 || runq_size_ > 0;
  }
  uint32_t SlotOfIndex(int64_t index) const {
    return static_cast<uint32_t>(index % max_in_flight_);
  }
  // How many more inputs may start now.
  uint32_t RoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (ordered_) {
      // Acquire: pairs with the consumer's release in LeaveCurrent(), so the slot it freed (its
      // result destroyed) is reused only after that.
      const int64_t used = next_index_ - released_.load(std::memory_order_acquire);
      return used < max_in_flight_ ? static_cast<uint32_t>(max_in_flight_ - used) : 0;
    }
    if (in_flight_ >= max_in_flight_ || outstanding_ >= capacity_) return 0;
    return std::min(static_cast<uint32_t>(max_in_flight_ - in_flight_), capacity_ - outstanding_);
  }

  // Allocates the chunk of slot `s` if needed. May throw std::bad_alloc.
  void EnsureChunkLocked(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    auto& chunk = chunks_[s >> kChunkBits];
    if (chunk == nullptr) chunk = std::make_unique<Slot[]>(kChunkSize);
  }
  // Takes the slot for the next input. May throw std::bad_alloc, changing nothing.
  uint32_t AcquireSlotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Undoes AcquireSlotLocked() for a slot that was not started.
  void UnacquireSlotLocked(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (ordered_) {
      --outstanding_;
    } else {
      FreeSlotLocked(s);
    }
  }
  void FreeSlotLocked(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    slot(s).next = free_head_;
    free_head_ = s;
    --outstanding_;
  }
  void Append(SlotList* list, uint32_t s) {
    slot(s).next = kNoSlot;
    if (list->tail == kNoSlot) {
      list->head = s;
    } else {
      slot(list->tail).next = s;
    }
    list->tail = s;
  }
  // Complete()'s locked part: leaves the future of `slot` in `inner` (to release after
  // unlocking) and what to do after unlocking in `work`.
  // `top_up` false leaves the top-up to the next section that may take a queued slot
  // (topup_deferred_).
  void CompleteLocked(uint32_t slot, std::exception_ptr fatal, Work* work, AnyFuture* inner,
                      bool top_up = true) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);

  // Unless another thread is the starter: reserves the slots (and indices) for every input that
  // may start now and makes this thread the starter, with queued follow-ups taken for the first
  // ones (Finish fills them). Never throws: failing to allocate the first slot stops the stream.
  void TopUpLocked(Work* work) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // The starter, outside the lock: moves the follow-ups and pulls the source into the reserved
  // slots, then commits them for submission under the lock, returns the slots left unfilled (the
  // source ended or failed) and tops up again. Never throws.
  void FillReserved(Work* work) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Ends every locked section that may change what the consumer waits for: counts this thread in
  // flight while it has a disposal to destroy, and takes the consumer's sleep announcement when
  // it may proceed now (the caller wakes it in Finish).
  void EndSectionLocked(Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    // A section that took queued inputs may allow a top-up that a completion left for later (see
    // TopUpLocked): retry it before the claim, so that a drainer never pulls the source while it
    // holds a queued slot that others may wait for. When it reserves, the claim waits for the
    // commit (ClaimForDrainerLocked); a section that took a slot itself retries before taking it.
    if (topup_deferred_ && !work->took_slot) TopUpLocked(work);
    if (drain_) ClaimForDrainerLocked(work);
    if (!work->disposal.empty() && !work->counted) {
      ++in_flight_;
      work->counted = true;
    }
    TakeSleepLocked(work);
  }
  // Takes the consumer's sleep announcement when it may proceed now (the caller wakes it in
  // Finish, or with WakeConsumer()).
  void TakeSleepLocked(Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (sleeping_ && (awaiting_drain_ ? NothingRunningLocked() : ConsumerMayProceedLocked())) {
      sleeping_ = false;
      work->wake = true;
    }
  }
  bool NothingRunningLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return in_flight_ == 0 && drainers_ == 0;
  }
  // Queues started slots for the drainers, adding drainers up to max_drainers_.
  void PushRunnableLocked(uint32_t s, Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    Append(&runq_, s);
    QueuedRunnableLocked(work);
  }
  // Puts back, at the front of the run queue, started slots that a run group took and did not
  // run (they are older than the queued ones).
  void PushFrontRunnableLocked(uint32_t s, Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    slot(s).next = runq_.head;
    runq_.head = s;
    if (runq_.tail == kNoSlot) runq_.tail = s;
    QueuedRunnableLocked(work);
  }
  void QueuedRunnableLocked(Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    ++runq_size_;
    // Relaxed: ends the consumer's spin, which may then run it (a hint, re-checked under lock_).
    completions_.fetch_add(1, std::memory_order_relaxed);
    // Every executor thread gets a drainer while slots wait: one that finds nothing left leaves.
    if (drainers_ < DrainerCapLocked()) {
      ++drainers_;
      ++work->spawn;
    }
  }
  // A drainer whose input blocks (in a BlockingRegion) holds an executor thread that the
  // executor replaces: the stream may then have one more drainer, so the added thread has this
  // stream's inputs to run (as it had when every input was its own task).
  int DrainerCapLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return max_drainers_ + blocked_drainers_;
  }
  // Takes a group of queued slots for the calling thread to run (see "Run groups" in
  // stream_run_group.h): up to group_limit_ of them, and only those beyond one per drainer (the cap
  // counts the caller), so that a few queued inputs (a rendezvous of as many inputs as there are
  // threads) are spread one per thread as before. Takes none when the queue is empty.
  void TakeGroupLocked(StreamRunGroup* group, Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    // First, what the listed groups have not started (the caller's own group is not listed): the
    // input their owner runs may wait for one of them without a BlockingRegion, so this thread
    // runs them, oldest first (see "Run groups" in stream_run_group.h). Every group, whether or
    // not its owner is inside an input just now: an owner between two inputs may start the next
    // one right after this section, and that one may wait for the rest of its group.
    RequeueAllUnstartedLocked(nullptr, work);
    const uint32_t cap = static_cast<uint32_t>(DrainerCapLocked());
    const uint32_t surplus = runq_size_ > cap ? runq_size_ - cap : 1;
    const int limit = static_cast<int>(std::min<uint32_t>(surplus, group_limit_));
    int count = 0;
    while (count < limit) {
      const uint32_t s = PopRunnableLocked();
      if (s == kNoSlot) break;
      group->slots[count++] = s;
    }
    group->cut = false;
    group->ResetRecorded();
    // Relaxed: written under lock_, by the owner (see StreamRunGroup's "Memory ordering").
    group->state.store(StreamRunGroup::Pack(count, 0, 0), std::memory_order_relaxed);
    if (count == 0) return;
    // Listed, so that the next thread that takes work takes back what the owner has not started
    // (an input may wait for a later one of its own group without a BlockingRegion).
    groups_.Link(group);
  }
  // Makes the completions a group recorded and puts its slots that did not start back at the
  // front of the run queue (they are older than the queued ones); the group is then empty and no
  // longer listed. Adapts group_limit_ to how long its inputs took: doubled after a group of fast
  // ones, back to single slots after a slow one. Leaves the futures to release in `inner`.
  void EndGroupLocked(StreamRunGroup* group, Work* work, AnyFuture* inner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    RequeueUnstartedLocked(group, work);
    // Relaxed: on the owner's thread, which recorded them (see StreamRunGroup).
    const int completed = StreamRunGroup::Completed(group->state.load(std::memory_order_relaxed));
    if (completed > 0) {
      const uint64_t per_input = (group->mark - group->begin) / completed;
      group_limit_ = per_input <= kFastInputTicks ? std::min(2 * group_limit_, kMaxRunGroup) : 1;
    }
    MakeRecordedLocked(group, completed, work, inner, /*top_up=*/true);
    group->state.store(0, std::memory_order_relaxed);
    group->ResetRecorded();
    groups_.Unlink(group);
  }
  // Makes the completions slots[made, completed) of `group` (completed read by the caller after
  // they were recorded), on any thread: each is made once, by whoever gets there first.
  void MakeRecordedLocked(StreamRunGroup* group, int completed, Work* work, AnyFuture* inner,
                          bool top_up) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    // Relaxed: the caller's load of `state` ordered it (see StreamRunGroup's "Memory ordering").
    const int fatal_at = group->fatal_at.load(std::memory_order_relaxed);
    for (int i = group->made; i < completed; ++i) {
      CompleteLocked(group->slots[i], i == fatal_at ? std::move(group->fatal) : nullptr, work,
                     inner, top_up);
    }
    if (completed > group->made) group->made = completed;
  }
  // An input of `group` blocks (in a BlockingRegion), on its thread: puts the slots the group has
  // not started back in the run queue (the input may wait for one of them) and makes the
  // completions recorded so far (the room they hold may be what starts that input). Starts
  // nothing (this runs inside the user's blocking call): the top-up those completions allow is
  // left to an added drainer (one too many, it leaves afterwards) or to any section before it.
  void GroupBlockedLocked(StreamRunGroup* group, Work* work, AnyFuture* inner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    group_limit_ = 1;
    RequeueUnstartedLocked(group, work);
    // Nobody else changes the counts now: the owner runs the input, and others need lock_.
    const uint64_t w = group->state.load(std::memory_order_relaxed);
    const int ran = StreamRunGroup::Completed(w);
    if (ran == 0) return;
    MakeRecordedLocked(group, ran, work, inner, /*top_up=*/false);
    // The running slot moves to the front.
    const int count = StreamRunGroup::Count(w);
    std::copy(group->slots + ran, group->slots + count, group->slots);
    group->state.store(StreamRunGroup::Pack(count - ran, StreamRunGroup::Started(w) - ran, 0),
                       std::memory_order_relaxed);
    group->ResetRecorded();
    ++drainers_;
    ++work->spawn;
  }
  // The group the calling thread runs for this stream (as a drainer or as the consumer), if any.
  StreamRunGroup* CallerGroup() const noexcept {
    StreamDrainFrame* frame = tls_stream_drain_frame;
    if (frame != nullptr && frame->core == this) return &frame->group;
    StreamHelpFrame* help = tls_stream_help_frame;
    if (help != nullptr && help->core == this) return &help->group;
    return nullptr;
  }
  // Puts the slots `group` has not started back at the front of the run queue, on any thread
  // (the owner before a section that may make it the starter, an Add() or Start() from `fn`, so
  // that it never pulls the source while holding a queued input; or another thread that takes
  // work, see RequeueAllUnstartedLocked). A CAS lowers the group's count to what its owner started,
  // so each slot is either claimed by the owner or put back, never both. Returns how many it put
  // back.
  int RequeueUnstartedLocked(StreamRunGroup* group, Work* work)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (group == nullptr) return 0;
    // Relaxed: the CAS on the one word decides each slot between the owner's claim and this
    // take-back; the slots it reads (group->slots) were written under lock_, which this holds.
    uint64_t w = group->state.load(std::memory_order_relaxed);
    int started;
    int count;
    do {
      started = StreamRunGroup::Started(w);
      count = StreamRunGroup::Count(w);
      if (started >= count) return 0;
    } while (!group->state.compare_exchange_weak(w, w - static_cast<uint64_t>(count - started),
                                                 std::memory_order_relaxed,
                                                 std::memory_order_relaxed));
    for (int i = count; i-- > started;) PushFrontRunnableLocked(group->slots[i], work);
    return count - started;
  }
  // A thread about to take a group, or to go idle (a drainer about to leave, the consumer about
  // to sleep): puts back every listed group's unstarted slots but `except`'s, so that it can run
  // them itself. Without this, an input waiting (without a BlockingRegion) for a later input of
  // its own group would wait forever, and short inputs would wait behind a slow one. Returns how
  // many it put back.
  int RequeueAllUnstartedLocked(const StreamRunGroup* except, Work* work)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    int n = 0;
    for (StreamRunGroup& g : groups_) {
      if (&g != except) n += RequeueUnstartedLocked(&g, work);
    }
    return n;
  }
  // On the consumer, with nothing to yield and no queued slot, before it spins (`spun` false) or
  // sleeps: announces its wait in consumer_waits_for_ (so that a drainer hands over what it records
  // from now on), then makes what the groups recorded so far and, before a sleep, puts back their
  // unstarted slots for it to run. Returns whether it found anything.
  bool CollectOrRequeueLocked(bool spun, Work* work, AnyFuture* inner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    AnnounceWait();
    if (CollectFromGroupsLocked(nullptr, work, inner) > 0) return true;
    return spun && RequeueAllUnstartedLocked(nullptr, work) > 0;
  }
  // On the consumer, about to spin or sleep for a result (after announcing it in
  // consumer_waits_for_): makes the completions that the listed groups recorded, so that results a
  // drainer holds while it runs a slow input reach the consumer. Returns how many it made.
  int CollectFromGroupsLocked(const StreamRunGroup* except, Work* work, AnyFuture* inner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    int n = 0;
    for (StreamRunGroup& g : groups_) {
      if (&g == except) continue;
      // seq_cst: pairs with the owner's record and its load of consumer_waits_for_ (see there).
      const int completed = StreamRunGroup::Completed(g.state.load(std::memory_order_seq_cst));
      if (completed > g.made) {
        n += completed - g.made;
        MakeRecordedLocked(&g, completed, work, inner, /*top_up=*/true);
      }
    }
    return n;
  }
  uint32_t PopRunnableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    const uint32_t s = runq_.head;
    if (s == kNoSlot) return kNoSlot;
    runq_.head = s == runq_.tail ? kNoSlot : slot(s).next;
    if (runq_.head == kNoSlot) runq_.tail = kNoSlot;
    --runq_size_;
    return s;
  }
  // On a drainer's thread, once its group completed: claims its next group, or asks it to hand
  // over (kDrainBatch), or lets it leave when nothing waits. Deferred while this thread still has
  // slots to fill (its commit will queue them).
  void ClaimForDrainerLocked(Work* work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    StreamDrainFrame* frame = tls_stream_drain_frame;
    if (frame == nullptr || frame->core != this || !frame->claim || work->reserved_count > 0) {
      return;
    }
    frame->claim = false;
    if (drainers_ > DrainerCapLocked()) {
      // A blocked input that had this drainer added ended: one too many. The others (at least
      // max_drainers_ that are not blocked) run what waits.
      --drainers_;  // Leaves: from here on it touches nothing of the core.
    } else if (frame->ran >= kDrainBatch && runq_size_ > 0) {
      frame->resubmit = true;
    } else {
      // Takes back first what other groups have not started: their owner may be in a slow input,
      // or in one that waits for them.
      TakeGroupLocked(&frame->group, work);
      if (!frame->group.taken) {
        --drainers_;  // Leaves: from here on it touches nothing of the core.
      } else {
        // Counts slots that another thread may take back before this one runs them: a drainer
        // may then hand over before kDrainBatch inputs, which is harmless. Relaxed: stored by
        // this section.
        frame->ran += StreamRunGroup::Count(frame->group.state.load(std::memory_order_relaxed));
      }
    }
  }
  // Submits `count` drainers, counted in drainers_ already. Reads nothing of the core after the
  // last one is submitted.
  void SpawnDrainers(int count) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // The end of DrainerBlocked and ConsumerBlocked, after unlocking, inside the user's blocking
  // call: wakes the consumer and submits the drainers that `work` holds.
  void FinishBlocked(Work& work) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Does what `work` holds after unlocking (see Work). Touches the core only while it is alive
  // (see "Lifetime" in the file comment).
  void Finish(Work& work) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Wakes the consumer, whose sleep announcement this thread took.
  void WakeConsumer() noexcept ABSL_LOCKS_EXCLUDED(wait_mu_) {
    absl::MutexLock lock(&wait_mu_);
    wake_ = true;
  }
  // The consumer, after announcing its sleep (sleeping_) under lock_: sleeps until woken or until
  // `deadline` (on the stream's clock). Returns false when the deadline passed and nobody took
  // the announcement (then withdrawn).
  bool Sleep(absl::Time deadline) ABSL_LOCKS_EXCLUDED(lock_, wait_mu_);
  // The consumer: waits until no task is in flight.
  void AwaitNothingInFlight() ABSL_LOCKS_EXCLUDED(lock_, wait_mu_);

  void StartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool AddInput(In input, bool from_outside) ABSL_LOCKS_EXCLUDED(lock_);
  // The progress total: the inputs known so far, or kUnknownTotal while the source is unsized
  // and not exhausted. Sets `*final` to whether no more inputs can be discovered: no follow-up
  // can come from a task (the function takes no StreamContext, or nothing is left to run) nor
  // from ResultStream::Add (never called), or the stream ended.
  int64_t ProgressTotalLocked(bool* final) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    int64_t total = ProgressReporter::kUnknownTotal;
    if (ended_ || source_exhausted_) {
      total = next_index_ + static_cast<int64_t>(queued_.size());
    } else if (known_total_ >= 0) {
      total = known_total_ + added_;
    }
    *final = ended_ ||
             (!added_from_outside_ &&
              (!may_add_follow_ups_ || (source_exhausted_ && queued_.empty() && in_flight_ == 0)));
    return total;
  }
  // Stops pulling; moves queued follow-ups and the source (unless a starter holds it: it does so
  // at its commit) into `disposal` and flags pending futures for cancellation there. Tasks that
  // have not started will skip.
  void StopLocked(Disposal* disposal) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    // Relaxed: see "Memory ordering".
    stopping_.store(true, std::memory_order_relaxed);
    disposal->queued.splice(disposal->queued.end(), queued_);
    if (!starting_ && source_ != nullptr) disposal->source.emplace(std::exchange(source_, nullptr));
    if (pending_inner_ > 0) disposal->cancel_inner = true;
  }
  void SetStopLocked(StopKind kind, std::exception_ptr error, Disposal* disposal) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (stop_kind_ == StopKind::kNone) {
      stop_kind_ = kind;
      error_ = std::move(error);
    }
    StopLocked(disposal);
  }
  // Destroys what `disposal` holds and cancels the pending futures it flags, outside lock_. The
  // caller keeps the core alive (it is the consumer, a user holding the stream, or a thread that
  // is still counted in flight).
  void Dispose(Disposal& disposal) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Cancels the pending futures returned by the function, one at a time outside lock_ (their
  // done-callbacks complete their slots). Only called once stopping: no future is added then.
  void CancelInnerFutures() noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Submits the slots of `list` to the executor, outside lock_. Reads the core only for slots not
  // yet submitted (which keep it alive); see "Inline executors" in the file comment.
  void SubmitAll(SlotList list) noexcept ABSL_LOCKS_EXCLUDED(lock_);

  // Consumer side.
  bool NextInBatch(uint32_t* s);
  void LeaveCurrent();
  void ReleaseBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool TakeBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Returns true with a new batch, false at the end; throws when the stream failed.
  bool Refill() ABSL_LOCKS_EXCLUDED(lock_);
  // On a drainer's thread: makes the completions its group recorded, puts back what it did not
  // start, and claims the next group (or leaves: then it touches nothing of the core after).
  void EndDrainerGroup(StreamDrainFrame* frame) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Runs the group of queued slots the consumer took, one after the other, until one fails, is
  // slow, or `deadline` passes; the next locked section completes them.
  void RunHelpGroup(StreamHelpFrame* help, absl::Time deadline) ABSL_LOCKS_EXCLUDED(lock_);
  // Records the completion of the running slot `s` of `group` (see StreamRunGroup), on the
  // owner's thread. Touches nothing of the slot after that: the consumer may make it at once.
  void RecordGroupCompletion(StreamRunGroup* group, uint32_t s, int index,
                             std::exception_ptr fatal) noexcept {
    const uint64_t now = StreamTicks();
    const Slot& entry = slot(s);
    if (fatal != nullptr || now - group->mark > kSlowInputTicks ||
        (stop_on_error_ && entry.item.has_value() && !entry.item->outcome.ok())) {
      group->cut = true;
    }
    group->mark = now;
    // Relaxed: published by the RMW on `state` below (see StreamRunGroup's "Memory ordering").
    if (fatal != nullptr && group->fatal_at.load(std::memory_order_relaxed) < 0) {
      group->fatal = std::move(fatal);
      group->fatal_at.store(index, std::memory_order_relaxed);
    }
    group->last_index = entry.index;
    // seq_cst: pairs with the consumer's announcement in consumer_waits_for_ (see there).
    group->state.fetch_add(StreamRunGroup::kCompletedOne, std::memory_order_seq_cst);
  }
  // The consumer, about to spin or sleep for a result: announces which (consumer_waits_for_).
  // seq_cst: see "Memory ordering".
  void AnnounceWait() noexcept {
    // released_ is written by this thread: the index of the next result in order.
    consumer_waits_for_.store(ordered_ ? released_.load(std::memory_order_relaxed) : kAnyResult,
                              std::memory_order_seq_cst);
  }
  // On a drainer's thread, after recording the completion of input `index`: whether the consumer
  // waits for it (seq_cst: see "Memory ordering").
  bool ConsumerWaitsFor(int64_t index) const noexcept {
    const int64_t waits_for = consumer_waits_for_.load(std::memory_order_seq_cst);
    return waits_for == kAnyResult || (waits_for != kNotWaiting && waits_for == index);
  }
  [[noreturn]] void FailAfterDrain(std::exception_ptr error) ABSL_LOCKS_EXCLUDED(lock_);
  // Spins for at most spin_limit_ pause instructions while completions_ == `completions` and not
  // stopping, yielding the CPU every kYieldEvery of them: when the producing thread shares this
  // core (an oversubscribed machine), it gets to run instead of waiting for our time slice to end.
  void SpinWhile(uint64_t completions) {
    for (int i = 1; i <= spin_limit_; ++i) {
      if (completions_.load(std::memory_order_relaxed) != completions ||
          stopping_.load(std::memory_order_relaxed)) {
        return;
      }
      internal::CpuRelax();
      if (i % kYieldEvery == 0) std::this_thread::yield();
    }
  }

  Executor& executor_;
  Clock& clock_;
  const int max_in_flight_;
  // What the runner can run at once (0: unknown); see StreamRunner.
  const int runner_concurrency_;
  // Batched tasks (see the file comment): started slots wait in runq_ for up to max_drainers_
  // drainers instead of one executor task each.
  const bool drain_;
  const int max_drainers_;
  // Batched tasks: the fewest slots a top-up reserves while the run queue holds more than every
  // drainer can take (see TopUpLocked).
  const uint32_t min_reserve_;
  // The function takes a StreamContext: a running task may add inputs.
  const bool may_add_follow_ups_;
  const bool ordered_;
  const bool stop_on_error_;
  const uint32_t capacity_;
  const absl::Duration timeout_;
  const ProgressOptions progress_options_;
  const int64_t known_total_;
  // Written under lock_ (EnsureChunkLocked) before the slot is handed to anyone; see file comment.
  std::vector<std::unique_ptr<Slot[]>> chunks_;

  // Read without lock_ as a hint (see "Memory ordering"); written under lock_. On a cache line
  // of its own: every task reads it, and a stop writes it once.
  alignas(kCacheLine) std::atomic<bool> stopping_{false};
  // The consumer spins or sleeps for a result (written by the consumer alone, see "Memory
  // ordering"): under Order::kInput the index of the next result in order (the only result that
  // lets it go on), under Order::kCompletion kAnyResult; else kNotWaiting. A drainer that has
  // recorded that result hands over what its group has done before it runs the group's next input
  // (which may be slow). On a line of its own, apart from stopping_, which every task reads.
  alignas(kCacheLine) std::atomic<int64_t> consumer_waits_for_{kNotWaiting};

  // The lock starts a cache line apart from the read-only configuration above (read by every
  // section on every thread) and from what the consumer writes without the lock (released_ and
  // its own fields below): in the profile of 10^6 trivial tasks, the lock sections' time went
  // mostly to cache misses and to waiting for a holder. Its line also holds completions_ (which
  // the consumer's spin polls) and the counters from in_flight_ to topup_deferred_; next_index_
  // and the members after it fall on the next line.
  alignas(kCacheLine) internal::SpinLock lock_;
  // Completed tasks and slots queued for drainers, bumped under lock_; read without lock_ by the
  // consumer's brief spin before it sleeps (a hint only: every decision is re-checked under
  // lock_).
  std::atomic<uint64_t> completions_{0};
  // Tasks in flight, plus reserved slots and threads counted while disposing (see "Lifetime").
  int in_flight_ ABSL_GUARDED_BY(lock_) = 0;
  // Completion order: slots in use (in flight, ready or in the consumer's batch).
  uint32_t outstanding_ ABSL_GUARDED_BY(lock_) = 0;
  uint32_t allocated_ ABSL_GUARDED_BY(lock_) = 0;
  uint32_t free_head_ ABSL_GUARDED_BY(lock_) = kNoSlot;
  uint32_t ready_head_ ABSL_GUARDED_BY(lock_) = kNoSlot;
  uint32_t ready_tail_ ABSL_GUARDED_BY(lock_) = kNoSlot;
  // Batched tasks: started slots no drainer took yet, and the drainers submitted and not left.
  SlotList runq_ ABSL_GUARDED_BY(lock_);
  uint32_t runq_size_ ABSL_GUARDED_BY(lock_) = 0;
  int drainers_ ABSL_GUARDED_BY(lock_) = 0;
  // Drainers whose input is inside a BlockingRegion (see DrainerCapLocked).
  int blocked_drainers_ ABSL_GUARDED_BY(lock_) = 0;
  // How many queued slots a thread takes at once (see TakeGroupLocked), in [1, kMaxRunGroup].
  int group_limit_ ABSL_GUARDED_BY(lock_) = 1;
  // The taken run groups, whose unstarted slots another thread may put back
  // (RequeueAllUnstartedLocked) and whose recorded completions the consumer may make.
  StreamGroupList groups_ ABSL_GUARDED_BY(lock_);
  // A top-up returned early to start a larger group later (see TopUpLocked); the next section
  // that may take a queued slot retries it first (EndSectionLocked, Refill).
  bool topup_deferred_ ABSL_GUARDED_BY(lock_) = false;
  // Indices handed out, including those of slots reserved and not yet filled.
  int64_t next_index_ ABSL_GUARDED_BY(lock_) = 0;
  // The consumer announced that it sleeps (or is about to) on wait_mu_; taken by the section that
  // lets it proceed (EndSectionLocked), or withdrawn by the consumer after a timeout.
  bool sleeping_ ABSL_GUARDED_BY(lock_) = false;
  // What the consumer waits for: no task in flight (AwaitNothingInFlight), or anything it may
  // act on (Refill).
  bool awaiting_drain_ ABSL_GUARDED_BY(lock_) = false;
  // A thread has reserved slots and fills them outside the lock (see TopUpLocked).
  bool starting_ ABSL_GUARDED_BY(lock_) = false;
  bool source_exhausted_ ABSL_GUARDED_BY(lock_) = false;
  bool started_ ABSL_GUARDED_BY(lock_) = false;
  bool ended_ ABSL_GUARDED_BY(lock_) = false;
  StopKind stop_kind_ ABSL_GUARDED_BY(lock_) = StopKind::kNone;
  // Slots whose Slot::inner holds a pending future, and where CancelInnerFutures() resumes its
  // scan (every such slot is at or after it once stopping).
  int pending_inner_ ABSL_GUARDED_BY(lock_) = 0;
  uint32_t cancel_cursor_ ABSL_GUARDED_BY(lock_) = 0;
  // Less often touched: once per stream, per stop, or per follow-up.
  std::exception_ptr error_ ABSL_GUARDED_BY(lock_);
  absl::Time deadline_ ABSL_GUARDED_BY(lock_) = absl::InfiniteFuture();
  // A list, so that a stop hands it over without allocating, and Add() allocates its node
  // outside the lock.
  std::list<In> queued_ ABSL_GUARDED_BY(lock_);
  int64_t added_ ABSL_GUARDED_BY(lock_) = 0;
  bool added_from_outside_ ABSL_GUARDED_BY(lock_) = false;
  // Null once exhausted or stopping (moved into a Disposal). Owned by the starter while
  // starting_ is set (called outside lock_), else guarded by lock_; so not annotated.
  absl::AnyInvocable<std::optional<In>()> source_;

  // Input order: indices below this were yielded and their slots may be reused. Written by the
  // consumer alone, item by item and without lock_, so completing tasks can top up without
  // waiting for the consumer's next lock; read under lock_. On a cache line of its own, as it is
  // written once per item.
  alignas(kCacheLine) std::atomic<int64_t> released_{0};
  // Only for the consumer's sleep: on the stream's clock, so that a FakeClock drives the timeout.
  absl::Mutex wait_mu_;
  bool wake_ ABSL_GUARDED_BY(wait_mu_) = false;

  // Consumer thread only.
  alignas(kCacheLine) bool consumer_started_ = false;
  bool finished_ = false;           // Next() returned the end or threw.
  std::exception_ptr final_error_;  // What Next() threw.
  bool has_current_ = false;        // The last Next() returned slot current_.
  uint32_t current_ = kNoSlot;
  uint32_t batch_cur_ = kNoSlot;  // Completion order: next slot of the batch.
  uint32_t batch_first_ = kNoSlot;
  uint32_t batch_last_ = kNoSlot;
  uint32_t batch_count_ = 0;
  int64_t batch_next_ = 0;  // Input order: next index of the batch.
  int64_t batch_end_ = 0;
  int64_t yielded_ = 0;
  int spin_limit_ = 64;
  int64_t reported_total_ = ProgressReporter::kUnknownTotal;
  bool reported_total_final_ = true;
  std::unique_ptr<ProgressReporter> progress_;
};

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_CORE_H_

// Template machinery behind sync/stream.h. Internal: include sync/stream.h instead.
//
// Design. A stream owns a fixed-capacity table of slots (allocated in chunks of 64 on first use):
// 2 * max_in_flight in completion order, max_in_flight in input order (slot = index mod
// max_in_flight). Starting an input takes a slot, stores the input in it and submits a 16-byte
// task {core, slot} to the executor (stored inline by absl::AnyInvocable: no allocation of ours
// per task). The task stores the outcome in the slot and calls Complete(), which, under the
// stream's one mutex, links the slot into the ready list (completion order) or marks it done
// (input order), then tops the window up: it pulls further inputs into free slots and submits
// them after unlocking. The consumer takes every ready slot in one batch under the lock and
// yields them without locking; completion order returns the batch's slots to the free list at the
// next lock, input order releases each slot as soon as its item is left (an atomic index), so
// completing tasks can reuse it at once. Per item that is one lock on the completing thread and
// an amortized fraction of one on the consumer's. Top-ups happen on the completing threads; the
// consumer only tops up when at most half the window is in flight (see Refill). When nothing is
// ready the consumer spins briefly (adaptively, see Refill) and then blocks on an absl::Condition,
// woken by the unlock that makes something ready (or stops the stream).
//
// Lifetime: tasks reference the core, so the core is destroyed only after in_flight_ dropped to
// zero (Shutdown); a completing thread touches nothing of the core after its last unlock unless
// it still has slots to submit or a Disposal to destroy (both keep in_flight_ above zero).
//
// User code and the lock: no future cancellation (which runs done-callbacks) and no destructor of
// a user object, other than of a moved-from input, runs under mu_. Whatever a stop or the end of
// the source removes (queued follow-ups, the source, which may own a range) is moved into a
// Disposal under mu_ and destroyed after unlocking, and the futures returned by the function
// that are still pending are cancelled then (see CancelInnerFutures). The user code that does run
// under mu_: the source's call, by design (it needs no locking of its own; it must not call into
// the stream), moving inputs into their slots, and destroying a pulled input whose move threw.
//
// Futures returned by the function: a task is in flight until its future completes. While
// pending, the future is also held in its slot (Slot::inner, under mu_), so that a stop cancels
// it; a future that completes as cancelled while the stream stops counts as skipped, so the
// consumer reports the stop's error, not that cancellation.
//
// Exceptions: a task never throws (Executor's contract). What the function throws is its item's
// error; anything else that fails while running or completing a task (std::bad_alloc, a throwing
// move of In) stops the stream with that error (StopKind::kFatal), and the task still completes
// exactly once, so in_flight_ stays exact.
//
// Slot ownership (why slots carry no ABSL_GUARDED_BY): a slot is free or ready (guarded by mu_),
// or starting (owned by the thread that took it under mu_ until it submits it), or running (owned
// by its task, handed over by Executor::Submit), or in the consumer's batch (owned by the
// consumer, handed over under mu_; in input order handed back through released_). Each hand-over
// happens under mu_, through Submit, or through released_'s release/acquire pair.
//
// Inline executors: a task that runs inside Submit() would recurse (complete -> top up ->
// submit -> run...). A thread-local frame turns that into a loop: while a thread is submitting for
// a stream, further submissions for the same stream on that thread are appended to the frame's
// list instead.

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_IMPL_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_IMPL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "sync/outcome.h"
#include "sync/progress.h"

namespace concurry {
namespace sync_internal {

template <typename T>
inline constexpr bool kIsOptional = false;
template <typename T>
inline constexpr bool kIsOptional<std::optional<T>> = true;

template <typename S, typename = void>
inline constexpr bool kIsPullSource = false;
template <typename S>
inline constexpr bool kIsPullSource<S, std::void_t<std::invoke_result_t<std::decay_t<S>&>>> =
    kIsOptional<std::invoke_result_t<std::decay_t<S>&>>;

// A callable taking no arguments and returning std::optional<In>.
template <typename S>
concept StreamPullSource = kIsPullSource<S>;

// An input range that is not also a pull source.
template <typename R>
concept StreamInputRange = std::ranges::input_range<R> && !kIsPullSource<R>;

template <typename S>
using PullValueT = typename std::invoke_result_t<std::decay_t<S>&>::value_type;

// How a stream calls `F` on an input: with or without a StreamContext, and what it returns.
template <typename F, typename In>
struct StreamCall {
  static constexpr bool kWithContext = std::is_invocable_v<F&, In&&, StreamContext<In>&>;
  static_assert(kWithContext || std::is_invocable_v<F&, In&&>,
                "a stream function must be callable as fn(In&&) or "
                "fn(In&&, concurry::StreamContext<In>&)");
  using Raw =
      typename std::conditional_t<kWithContext, std::invoke_result<F&, In&&, StreamContext<In>&>,
                                  std::invoke_result<F&, In&&>>::type;
  using Result = UnwrapT<Raw>;
};

// Pulls the elements of a range one by one: the element after the one returned last is only
// computed (the iterator incremented) when asked for, so a generator runs no further than needed.
// An rvalue range is owned (on the heap, so its iterators stay valid when this moves); an owned
// container's elements are moved out.
template <typename Range>
class RangeSource {
  static constexpr bool kOwned = !std::is_lvalue_reference_v<Range>;
  using Stored = std::remove_reference_t<Range>;
  using Value = std::ranges::range_value_t<Range>;
  static constexpr bool kMoveElements = kOwned && !std::ranges::view<std::remove_cv_t<Stored>>;

 public:
  explicit RangeSource(Range&& range) {
    if constexpr (kOwned) {
      owned_ = std::make_unique<Stored>(std::move(range));
      range_ = owned_.get();
    } else {
      range_ = &range;
    }
  }

  std::optional<Value> operator()() {
    if (!it_.has_value()) {
      it_.emplace(std::ranges::begin(*range_));
      end_.emplace(std::ranges::end(*range_));
    } else {
      ++*it_;
    }
    if (*it_ == *end_) return std::nullopt;
    if constexpr (kMoveElements) {
      return Value(std::ranges::iter_move(*it_));
    } else {
      return Value(**it_);
    }
  }

 private:
  std::unique_ptr<Stored> owned_;
  Stored* range_ = nullptr;
  std::optional<std::ranges::iterator_t<Stored>> it_;
  std::optional<std::ranges::sentinel_t<Stored>> end_;
};

inline constexpr uint32_t kNoSlot = 0xffffffffu;

// A thread's ongoing SubmitAll for one stream (see "Inline executors" above).
struct StreamSubmitFrame {
  const void* core;
  uint32_t head;
  uint32_t tail;
  StreamSubmitFrame* prev;
};
inline thread_local StreamSubmitFrame* tls_stream_submit_frame = nullptr;

// Non-template helpers (stream.cc). Throws InvalidOptionError for bad options.
void ValidateStreamOptions(const StreamOptions& options);

// What runs a stream's tasks, as far as its concurrency goes: a stream compares it with
// max_in_flight (ResultStream::effective_concurrency() and a warning, see StreamOn).
struct StreamRunner {
  // How many tasks it runs at once; 0 when unknown (no check, no warning).
  int max_concurrency = 0;
  // Names it in the warning ("the worker"). Empty: named after `executor_type`, "the executor
  // (concurry::TbbExecutor, sized for CPU work)", built only when there is a warning to give.
  std::string description = {};
  const std::type_info* executor_type = nullptr;
  // What to do about it, ending the warning. Empty: use an executor with more threads.
  std::string advice = {};
  // The API named at the start of the warning.
  const char* api = "concurry::Stream";
  // Whether to warn at all; false: only ResultStream::effective_concurrency() tells (workers'
  // Map, where queueing items ahead of a worker is a normal way to keep it busy).
  bool warn = true;
};

// The runner of a stream whose tasks run on `executor`: its max_concurrency() and type.
StreamRunner ExecutorRunner(const Executor& executor);

// The warning for `max_in_flight` above what `runner` runs at once, or "" when there is none
// (max_in_flight <= runner.max_concurrency, or the concurrency is unknown).
std::string OverConcurrencyMessage(int max_in_flight, const StreamRunner& runner);

// Reports OverConcurrencyMessage(), if any: to options.on_warning (each time), or else to stderr
// as "concurry: warning: <message>", once per process for each distinct message.
void WarnIfOverConcurrency(const StreamOptions& options, const StreamRunner& runner);
// The errors a stream stops with: the executor rejected or dropped a task (StoppedError),
// Cancel() (CancelledError), the timeout (TimeoutError).
std::exception_ptr StreamDroppedTaskError();
std::exception_ptr StreamCancelledError();
std::exception_ptr StreamTimeoutError(absl::Duration timeout, int64_t yielded);

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

// The state of one stream, shared by the consumer and the tasks. See the file comment. The
// consumer-side members (batch, progress) are confined to the consuming thread.
//
// Memory ordering: three atomics are read without mu_. `stopping_` (written under mu_, relaxed:
// every reader that acts on it beyond a hint reads it under mu_): a task about to run skips when
// it sees it and merely runs when it misses it, the consumer's spin stops early, and a future
// cancelled by CancelInnerFutures() is read after the stop happened-before it (the cancelling
// thread stopped the stream or locked mu_ after the stop). `completions_` (relaxed): only ends the
// consumer's spin early; what it then does is decided under mu_. `released_` (input order;
// release store by the consumer after destroying the item it leaves, acquire load under mu_
// before a slot is reused): orders the consumer's last access to a slot before the next input's
// writes to it.
//
// Thread-safe as documented on ResultStream.
template <typename In, typename R>
class StreamCore : public StreamInputSink<In> {
 public:
  using Item = StreamItem<R>;

  StreamCore(Executor& executor, absl::AnyInvocable<std::optional<In>()> source,
             StreamOptions options, int64_t known_total, bool may_add_follow_ups,
             int runner_concurrency)
      : executor_(executor),
        clock_(options.clock != nullptr ? *options.clock : Clock::Real()),
        max_in_flight_(options.max_in_flight),
        runner_concurrency_(runner_concurrency),
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
  Item* Next() ABSL_LOCKS_EXCLUDED(mu_);
  // ResultStream::Start.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // StreamContext::Enqueue.
  bool Add(In input) override ABSL_LOCKS_EXCLUDED(mu_) { return AddInput(std::move(input), false); }
  // ResultStream::Add: from outside the tasks, so more may come at any time until the end.
  bool AddFromOutside(In input) ABSL_LOCKS_EXCLUDED(mu_) {
    return AddInput(std::move(input), true);
  }
  // ResultStream::max_in_flight, max_concurrency.
  int max_in_flight() const { return max_in_flight_; }
  int runner_concurrency() const { return runner_concurrency_; }
  // ResultStream::Cancel.
  void Cancel() ABSL_LOCKS_EXCLUDED(mu_);

  // Runs the task of `slot` (StreamTask): skips it when stopping, else Invoke(). Never throws.
  void Run(uint32_t slot) noexcept ABSL_LOCKS_EXCLUDED(mu_);
  // Skips `slot` and stops the stream with StoppedError: the executor rejected or dropped its
  // task, so it is shut down and later tasks would fail alike.
  void Drop(uint32_t slot) noexcept ABSL_LOCKS_EXCLUDED(mu_);

 protected:
  struct Slot {
    int64_t index = 0;
    std::optional<In> input;
    std::optional<Item> item;  // Empty after Run when the task was skipped.
    // The future returned by the function while it is pending and the stream may still cancel
    // it. Guarded by mu_ (unlike the rest of the slot, see the file comment).
    AnyFuture inner;
    uint32_t next = kNoSlot;  // Link in the free, ready, batch or submit list.
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
      ABSL_LOCKS_EXCLUDED(mu_);

  // Records `inner`, the pending future returned for running `slot`, so that a stop cancels it.
  // Returns false when the stream is already stopping: the caller cancels it then.
  bool TrackInner(uint32_t slot, AnyFuture inner) noexcept ABSL_LOCKS_EXCLUDED(mu_);

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
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  Slot& slot(uint32_t s) { return chunks_[s >> kChunkBits][s & (kChunkSize - 1)]; }

 private:
  static constexpr uint32_t kChunkBits = 6;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  // Bounds of the consumer's adaptive spin before blocking (see Refill), in pause instructions
  // (about 10 to 40 ns each): the limit doubles after a spin that found a batch and halves after
  // one that had to block, so an oversubscribed machine, where the producer is not running, soon
  // stops paying for it.
  static constexpr int kMinSpin = 8;
  static constexpr int kMaxSpin = 256;
  static constexpr int kYieldEvery = 8;

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

  // Slots to submit once mu_ is released, linked through Slot::next.
  struct SubmitList {
    uint32_t head = kNoSlot;
    uint32_t tail = kNoSlot;
  };

  // What a stop or the end of the source takes out of the stream under mu_, for Dispose() after
  // unlocking: destroying inputs and the source, and cancelling futures, runs user code, which
  // may call back into the stream. Every completion makes one, so creating and destroying an
  // empty one is cheap: no allocation, no indirect call.
  struct Disposal {
    std::list<In> queued;
    std::optional<absl::AnyInvocable<std::optional<In>()>> source;
    bool cancel_inner = false;  // Futures returned by the function are pending: cancel them.

    bool empty() const { return queued.empty() && !source.has_value() && !cancel_inner; }
  };

  bool CanStartLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Acquire: pairs with the consumer's release in LeaveCurrent(), so the slot it freed (its
    // result destroyed) is reused only after that.
    if (ordered_) return next_index_ - released_.load(std::memory_order_acquire) < max_in_flight_;
    return in_flight_ < max_in_flight_ && outstanding_ < capacity_;
  }
  bool HasReadyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ordered_) {
      const int64_t head = released_.load(std::memory_order_acquire);
      return head < next_index_ && slot(SlotOfIndex(head)).done;
    }
    return ready_head_ != kNoSlot;
  }
  // An error the consumer throws at its next step, not at an item's position.
  bool FatalLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_kind_ != StopKind::kNone && stop_kind_ != StopKind::kTaskError;
  }
  bool ConsumerMayProceedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return FatalLocked() || HasReadyLocked() || in_flight_ == 0;
  }
  bool NothingInFlightLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; }
  uint32_t SlotOfIndex(int64_t index) const {
    return static_cast<uint32_t>(index % max_in_flight_);
  }

  // Allocates the chunk of slot `s` if needed. May throw std::bad_alloc.
  void EnsureChunkLocked(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto& chunk = chunks_[s >> kChunkBits];
    if (chunk == nullptr) chunk = std::make_unique<Slot[]>(kChunkSize);
  }
  // Takes the slot for the next input. May throw std::bad_alloc, changing nothing.
  uint32_t AcquireSlotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Undoes AcquireSlotLocked() for a slot that was not started.
  void UnacquireSlotLocked(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ordered_) {
      --outstanding_;
    } else {
      FreeSlotLocked(s);
    }
  }
  void FreeSlotLocked(uint32_t s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    slot(s).next = free_head_;
    free_head_ = s;
    --outstanding_;
  }
  // Pulls inputs (queued follow-ups first) into free slots while the window has room. Never
  // throws: a failing source, or a failure to start an input, stops the stream. Moves a spent
  // source into `disposal`.
  void TopUpLocked(SubmitList* out, Disposal* disposal) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AddInput(In input, bool from_outside) ABSL_LOCKS_EXCLUDED(mu_);
  // The progress total: the inputs known so far, or kUnknownTotal while the source is unsized
  // and not exhausted. Sets `*final` to whether no more inputs can be discovered: no follow-up
  // can come from a task (the function takes no StreamContext, or nothing is left to run) nor
  // from ResultStream::Add (never called), or the stream ended.
  int64_t ProgressTotalLocked(bool* final) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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
  // Stops pulling; moves queued follow-ups and the source into `disposal` and flags pending
  // futures for cancellation there. Tasks that have not started will skip.
  void StopLocked(Disposal* disposal) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Relaxed: see "Memory ordering".
    stopping_.store(true, std::memory_order_relaxed);
    disposal->queued.splice(disposal->queued.end(), queued_);
    if (source_ != nullptr) disposal->source.emplace(std::exchange(source_, nullptr));
    if (pending_inner_ > 0) disposal->cancel_inner = true;
  }
  void SetStopLocked(StopKind kind, std::exception_ptr error, Disposal* disposal) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (stop_kind_ == StopKind::kNone) {
      stop_kind_ = kind;
      error_ = std::move(error);
    }
    StopLocked(disposal);
  }
  // Destroys what `disposal` holds and cancels the pending futures it flags, outside mu_. The
  // caller keeps the core alive (it is the consumer, a user holding the stream, or a task that
  // is still counted in flight).
  void Dispose(Disposal& disposal) noexcept ABSL_LOCKS_EXCLUDED(mu_);
  // Cancels the pending futures returned by the function, one at a time outside mu_ (their
  // done-callbacks complete their slots). Only called once stopping: no future is added then.
  void CancelInnerFutures() noexcept ABSL_LOCKS_EXCLUDED(mu_);
  // Submits the slots of `list` to the executor, outside mu_. Reads the core only for slots not
  // yet submitted (which keep it alive); see "Inline executors" in the file comment.
  void SubmitAll(SubmitList list) noexcept ABSL_LOCKS_EXCLUDED(mu_);

  // Consumer side.
  bool NextInBatch(uint32_t* s);
  void LeaveCurrent();
  void ReleaseBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool TakeBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns true with a new batch, false at the end; throws when the stream failed.
  bool Refill() ABSL_LOCKS_EXCLUDED(mu_);
  [[noreturn]] void FailAfterDrain(std::exception_ptr error) ABSL_LOCKS_EXCLUDED(mu_);
  // Spins for at most spin_limit_ pause instructions while completions_ == `completions` and not
  // stopping, yielding the CPU every kYieldEvery of them: when the producing thread shares this
  // core (an oversubscribed machine), it gets to run instead of waiting for our time slice to end.
  void SpinWhile(uint64_t completions) {
    for (int i = 1; i <= spin_limit_; ++i) {
      if (completions_.load(std::memory_order_relaxed) != completions ||
          stopping_.load(std::memory_order_relaxed)) {
        return;
      }
      CpuRelax();
      if (i % kYieldEvery == 0) std::this_thread::yield();
    }
  }
  static void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  Executor& executor_;
  Clock& clock_;
  const int max_in_flight_;
  // What the runner can run at once (0: unknown); see StreamRunner.
  const int runner_concurrency_;
  // The function takes a StreamContext: a running task may add inputs.
  const bool may_add_follow_ups_;
  const bool ordered_;
  const bool stop_on_error_;
  const uint32_t capacity_;
  const absl::Duration timeout_;
  const ProgressOptions progress_options_;
  const int64_t known_total_;
  // Written under mu_ (EnsureChunkLocked) before the slot is handed to anyone; see file comment.
  std::vector<std::unique_ptr<Slot[]>> chunks_;

  // Read without mu_ as a hint (see "Memory ordering"); written under mu_.
  std::atomic<bool> stopping_{false};
  // Completed tasks, bumped under mu_ by Complete(); read without mu_ by the consumer's brief spin
  // before it blocks (a hint only: every decision is re-checked under mu_).
  std::atomic<uint64_t> completions_{0};

  absl::Mutex mu_;
  // Null once exhausted or stopping (moved into a Disposal).
  absl::AnyInvocable<std::optional<In>()> source_ ABSL_GUARDED_BY(mu_);
  bool source_exhausted_ ABSL_GUARDED_BY(mu_) = false;
  // A list, so that a stop hands it over without allocating, and Add() allocates its node
  // outside mu_.
  std::list<In> queued_ ABSL_GUARDED_BY(mu_);
  int64_t added_ ABSL_GUARDED_BY(mu_) = 0;
  bool added_from_outside_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  int64_t next_index_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Completion order: slots in use (in flight, ready or in the consumer's batch).
  uint32_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t allocated_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t free_head_ ABSL_GUARDED_BY(mu_) = kNoSlot;
  uint32_t ready_head_ ABSL_GUARDED_BY(mu_) = kNoSlot;
  uint32_t ready_tail_ ABSL_GUARDED_BY(mu_) = kNoSlot;
  // Slots whose Slot::inner holds a pending future, and where CancelInnerFutures() resumes its
  // scan (every such slot is at or after it once stopping).
  int pending_inner_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t cancel_cursor_ ABSL_GUARDED_BY(mu_) = 0;
  // Input order: indices below this were yielded and their slots may be reused. Written by the
  // consumer alone, item by item and without mu_, so completing tasks can top up without waiting
  // for the consumer's next lock; read under mu_.
  std::atomic<int64_t> released_{0};
  StopKind stop_kind_ ABSL_GUARDED_BY(mu_) = StopKind::kNone;
  std::exception_ptr error_ ABSL_GUARDED_BY(mu_);

  // Consumer thread only.
  bool consumer_started_ = false;
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
void StreamCore<In, R>::TopUpLocked(SubmitList* out, Disposal* disposal) noexcept {
  if (!started_ || stopping_.load(std::memory_order_relaxed)) return;
  while (CanStartLocked()) {
    std::optional<In> pulled;  // Empty when a queued follow-up starts.
    if (queued_.empty()) {
      if (source_exhausted_) return;
      try {
        pulled = source_();
      } catch (...) {
        SetStopLocked(StopKind::kSourceError, std::current_exception(), disposal);
        return;
      }
      if (!pulled.has_value()) {
        source_exhausted_ = true;
        // Destroyed after unlocking: it may own a range whose elements' destructors run user code.
        disposal->source.emplace(std::exchange(source_, nullptr));
        return;
      }
    }
    uint32_t s = kNoSlot;
    try {
      s = AcquireSlotLocked();
      slot(s).input.emplace(std::move(pulled.has_value() ? *pulled : queued_.front()));
    } catch (...) {
      // Out of memory, or In's move threw: stop. A follow-up stays queued for the disposal; a
      // pulled input is destroyed here (under mu_, the one exception: moving it out may throw
      // again).
      if (s != kNoSlot) UnacquireSlotLocked(s);
      SetStopLocked(StopKind::kFatal, std::current_exception(), disposal);
      return;
    }
    if (!pulled.has_value()) queued_.pop_front();  // Destroys a moved-from In.
    Slot& entry = slot(s);
    entry.index = next_index_++;
    entry.done = false;
    entry.next = kNoSlot;
    ++in_flight_;
    if (out->tail == kNoSlot) {
      out->head = s;
    } else {
      slot(out->tail).next = s;
    }
    out->tail = s;
  }
}

template <typename In, typename R>
void StreamCore<In, R>::SubmitAll(SubmitList list) noexcept {
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
bool StreamCore<In, R>::TrackInner(uint32_t s, AnyFuture inner) noexcept {
  absl::MutexLock lock(&mu_);
  if (stopping_.load(std::memory_order_relaxed)) return false;
  slot(s).inner = std::move(inner);
  ++pending_inner_;
  return true;
}

template <typename In, typename R>
void StreamCore<In, R>::Complete(uint32_t s, std::exception_ptr fatal) noexcept {
  SubmitList to_submit;
  Disposal disposal;
  AnyFuture inner;  // The slot's future, released after unlocking.
  {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (fatal != nullptr) SetStopLocked(StopKind::kFatal, std::move(fatal), &disposal);
    Slot& entry = slot(s);
    if (entry.inner.valid()) {
      inner = std::move(entry.inner);
      --pending_inner_;
    }
    const bool skipped = !entry.item.has_value();
    if (!skipped && stop_on_error_ && !entry.item->outcome.ok()) {
      SetStopLocked(StopKind::kTaskError, entry.item->outcome.error(), &disposal);
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
    TopUpLocked(&to_submit, &disposal);
    // Relaxed: a hint for the spinning consumer, which re-checks under mu_.
    completions_.fetch_add(1, std::memory_order_relaxed);
    // Rare (a stop, or the end of the source): the disposal runs user code after unlocking; stay
    // counted in flight until it is done, so the consumer cannot destroy the core under it.
    if (!disposal.empty()) ++in_flight_;
  }
  if (disposal.empty()) {
    // With nothing to submit, the core may already be gone (the consumer saw the last completion
    // and destroyed the stream): do not even call a member function.
    if (to_submit.head != kNoSlot) SubmitAll(to_submit);
    return;
  }
  SubmitAll(to_submit);
  for (;;) {
    Dispose(disposal);
    to_submit = SubmitList();
    bool release;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      // A destructor may have added a follow-up that did not fit while this task was counted.
      TopUpLocked(&to_submit, &disposal);
      release = disposal.empty();  // Not empty only if starting an input failed (a stop).
      if (!release) ++in_flight_;
    }
    if (!release) {
      SubmitAll(to_submit);
      continue;
    }
    if (to_submit.head != kNoSlot) SubmitAll(to_submit);  // As above: the core may be gone.
    return;
  }
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
      absl::MutexLock lock(&mu_);
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

template <typename In, typename R>
void StreamCore<In, R>::StartLocked() {
  if (started_) return;
  started_ = true;
  deadline_ =
      timeout_ == absl::InfiniteDuration() ? absl::InfiniteFuture() : clock_.Now() + timeout_;
}

template <typename In, typename R>
void StreamCore<In, R>::Start() {
  SubmitList to_submit;
  Disposal disposal;
  {
    absl::MutexLock lock(&mu_);
    StartLocked();
    TopUpLocked(&to_submit, &disposal);
  }
  SubmitAll(to_submit);
  Dispose(disposal);
}

template <typename In, typename R>
bool StreamCore<In, R>::AddInput(In input, bool from_outside) {
  // Allocated outside mu_; destroyed after unlocking when the stream refuses it.
  std::list<In> node;
  node.push_back(std::move(input));
  SubmitList to_submit;
  Disposal disposal;
  {
    absl::MutexLock lock(&mu_);
    if (ended_ || stopping_.load(std::memory_order_relaxed)) return false;
    queued_.splice(queued_.end(), node);
    ++added_;
    if (from_outside) added_from_outside_ = true;
    TopUpLocked(&to_submit, &disposal);
  }
  SubmitAll(to_submit);
  Dispose(disposal);
  return true;
}

template <typename In, typename R>
void StreamCore<In, R>::Cancel() {
  Disposal disposal;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    SetStopLocked(StopKind::kCancelled, StreamCancelledError(), &disposal);
  }
  Dispose(disposal);
}

template <typename In, typename R>
void StreamCore<In, R>::Shutdown() {
  Disposal disposal;
  {
    absl::MutexLock lock(&mu_);
    StopLocked(&disposal);
  }
  Dispose(disposal);
  {
    absl::MutexLock lock(&mu_);
    clock_.AwaitWithDeadline(&mu_, absl::Condition(this, &StreamCore::NothingInFlightLocked),
                             absl::InfiniteFuture());
  }
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
    // Release: the slot may be reused (see CanStartLocked); completion order releases whole
    // batches under mu_ instead.
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
  enum class Step { kBatch, kEnd, kFail, kAgain, kSpin };
  bool spun = false;       // This refill spun (at most once).
  bool just_spun = false;  // The spin ended right before this pass.
  for (;;) {
    SubmitList to_submit;
    Disposal disposal;
    Step step;
    uint64_t completions = 0;
    int64_t total = ProgressReporter::kUnknownTotal;
    bool total_final = true;
    {
      absl::MutexLock lock(&mu_);
      const bool after_spin = std::exchange(just_spun, false);
      bool blocked = false;
      ReleaseBatchLocked();
      for (;;) {
        // While more than half the window is in flight, leave the top-up to the completing
        // threads (each completion tops up every free slot): submitting from the executor's own
        // threads is cheaper, and the consumer stays free to yield. Below half, or with nothing
        // in flight, top up here so a few slow tasks cannot starve the window.
        if (2 * in_flight_ <= max_in_flight_) TopUpLocked(&to_submit, &disposal);
        if (FatalLocked()) {
          step = Step::kFail;
          break;
        }
        if (TakeBatchLocked()) {
          // The spin paid off: it found a batch without blocking. Let the next one spin longer.
          if (after_spin && !blocked) spin_limit_ = std::min(kMaxSpin, 2 * spin_limit_);
          step = Step::kBatch;
          break;
        }
        if (in_flight_ == 0) {  // Nothing running, ready or startable.
          ended_ = true;
          step = Step::kEnd;
          break;
        }
        if (to_submit.head != kNoSlot) {  // Submit them before blocking.
          step = Step::kAgain;
          break;
        }
        if (!spun) {
          // Fast tasks complete within microseconds: spinning briefly, once per refill, instead
          // of blocking saves the completing thread a futex wake and both threads a context
          // switch per batch. Slow tasks cost the consumer one short spin per batch.
          spun = true;
          completions = completions_.load(std::memory_order_relaxed);
          step = Step::kSpin;
          break;
        }
        // The spin did not pay off: spin less next time.
        spin_limit_ = std::max(kMinSpin, spin_limit_ / 2);
        blocked = true;
        if (!clock_.AwaitWithDeadline(
                &mu_, absl::Condition(this, &StreamCore::ConsumerMayProceedLocked), deadline_)) {
          // The timeout overrides a pending task error the consumer has not reached yet.
          if (!FatalLocked()) {
            stop_kind_ = StopKind::kTimeout;
            error_ = StreamTimeoutError(timeout_, yielded_);
          }
          StopLocked(&disposal);
        }
      }
      if (progress_ != nullptr) total = ProgressTotalLocked(&total_final);
    }
    SubmitAll(to_submit);
    Dispose(disposal);  // Cancels pending futures after a timeout, before FailAfterDrain waits.
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
        SpinWhile(completions);
        just_spun = true;
        break;
      case Step::kAgain:
        break;
    }
  }
}

template <typename In, typename R>
void StreamCore<In, R>::FailAfterDrain(std::exception_ptr error) {
  StopKind kind;
  Disposal disposal;
  {
    absl::MutexLock lock(&mu_);
    if (error != nullptr) SetStopLocked(StopKind::kTaskError, error, &disposal);
    StopLocked(&disposal);
    if (error == nullptr) error = error_;
    kind = stop_kind_;
  }
  Dispose(disposal);
  {
    absl::MutexLock lock(&mu_);
    // On the clock (no deadline: the tasks reference the stream), so a FakeClock test can see it.
    clock_.AwaitWithDeadline(&mu_, absl::Condition(this, &StreamCore::NothingInFlightLocked),
                             absl::InfiniteFuture());
  }
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
      absl::MutexLock lock(&mu_);
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

// The core with the user function.
template <typename In, typename R, typename F>
class StreamCoreImpl final : public StreamCore<In, R> {
  using Call = StreamCall<F, In>;
  using Raw = std::decay_t<typename Call::Raw>;

 public:
  template <typename G>
  StreamCoreImpl(Executor& executor, absl::AnyInvocable<std::optional<In>()> source, G&& fn,
                 StreamOptions options, int64_t known_total, int runner_concurrency)
      : StreamCore<In, R>(executor, std::move(source), std::move(options), known_total,
                          Call::kWithContext, runner_concurrency),
        fn_(std::forward<G>(fn)) {}

  // Tasks reference fn_: drain them before it is destroyed.
  ~StreamCoreImpl() override { this->Shutdown(); }

 protected:
  void Invoke(uint32_t s) noexcept override {
    auto& entry = this->slot(s);
    const int64_t index = entry.index;
    std::optional<In> input;
    try {
      input.emplace(std::move(*entry.input));
    } catch (...) {
      // In's move threw: not the function's error but the stream's.
      entry.input.reset();
      this->Complete(s, std::current_exception());
      return;
    }
    entry.input.reset();
    if constexpr (futures_internal::kIsFuture<Raw>) {
      Raw inner;
      try {
        inner = CallFn(std::move(*input), index);
        if (!inner.valid()) {
          throw InvalidOptionError("Stream: the function returned an invalid Future");
        }
      } catch (...) {
        entry.item.emplace(index, Outcome<R>(std::current_exception()));
        this->Complete(s);
        return;
      }
      // Tracked before the callback is added: until the callback runs, the slot is ours. When
      // the stream is already stopping, cancelled at once (the callback then skips the slot).
      if (!this->TrackInner(s, inner)) this->CancelQuietly(inner);
      try {
        inner.AddDoneCallback([this, s](const Raw& done) {
          auto& completed = this->slot(s);
          try {
            // Cancelled by a stop (see CancelInnerFutures): skipped like a task that did not
            // start, so the consumer reports the stop's error, not this cancellation. The stop
            // happened-before the cancellation, so the hint is exact here.
            if (!done.Cancelled() || !this->StoppingHint()) {
              completed.item.emplace(completed.index, OutcomeOf(done));
            }
          } catch (...) {
            completed.item.emplace(completed.index, Outcome<R>(std::current_exception()));
          }
          this->Complete(s);
        });
      } catch (...) {
        // Out of memory: no callback was added, so nothing else will complete the slot.
        this->CancelQuietly(inner);
        this->Complete(s, std::current_exception());
      }
    } else {
      try {
        if constexpr (std::is_void_v<Raw>) {
          CallFn(std::move(*input), index);
          entry.item.emplace(index, Outcome<R>(std::in_place));
        } else if constexpr (std::is_same_v<Raw, absl::Status>) {
          absl::Status status = CallFn(std::move(*input), index);
          if (status.ok()) {
            entry.item.emplace(index, Outcome<R>(std::in_place));
          } else {
            entry.item.emplace(index, Outcome<R>(ExceptionFromStatus(std::move(status))));
          }
        } else if constexpr (futures_internal::kIsStatusOr<Raw>) {
          Raw result = CallFn(std::move(*input), index);
          if (result.ok()) {
            entry.item.emplace(index, Outcome<R>(std::in_place, *std::move(result)));
          } else {
            entry.item.emplace(index, Outcome<R>(ExceptionFromStatus(std::move(result).status())));
          }
        } else {
          entry.item.emplace(index, Outcome<R>(std::in_place, CallFn(std::move(*input), index)));
        }
      } catch (...) {
        entry.item.emplace(index, Outcome<R>(std::current_exception()));
      }
      this->Complete(s);
    }
  }

 private:
  decltype(auto) CallFn(In&& input, int64_t index) {
    if constexpr (Call::kWithContext) {
      StreamContext<In> context(this, index);
      return std::invoke(fn_, std::move(input), context);
    } else {
      return std::invoke(fn_, std::move(input));
    }
  }

  F fn_;
};

// Whether a stream function returns a Future: then a task stays in flight after the executor
// ran it, so the executor's concurrency does not bound the tasks in flight.
template <typename F, typename In>
inline constexpr bool kStreamFnReturnsFuture =
    futures_internal::kIsFuture<std::decay_t<typename StreamCall<std::decay_t<F>, In>::Raw>>;

// The runner of Stream(executor, ...): the executor, unless `fn` returns futures (then unknown).
template <typename F, typename In>
StreamRunner DefaultStreamRunner(const Executor& executor) {
  if constexpr (kStreamFnReturnsFuture<F, In>) {
    return StreamRunner{};
  } else {
    return ExecutorRunner(executor);
  }
}

template <typename In, typename R, typename F, typename Source>
ResultStream<In, R> MakeStream(Executor& executor, Source source, F&& fn, StreamOptions options,
                               int64_t total, const StreamRunner& runner) {
  ValidateStreamOptions(options);
  WarnIfOverConcurrency(options, runner);
  const int runner_concurrency = std::max(0, runner.max_concurrency);
  std::unique_ptr<StreamCore<In, R>> core =
      std::make_unique<StreamCoreImpl<In, R, std::decay_t<F>>>(
          executor, absl::AnyInvocable<std::optional<In>()>(std::move(source)), std::forward<F>(fn),
          std::move(options), total, runner_concurrency);
  return ResultStream<In, R>(std::move(core));
}

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_IMPL_H_

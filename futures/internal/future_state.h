// Shared state behind Future<T> / Promise<T> / AnyFuture. Internal: use future.h.

#ifndef CONCURRY_FUTURES_INTERNAL_FUTURE_STATE_H_
#define CONCURRY_FUTURES_INTERNAL_FUTURE_STATE_H_

#include <atomic>
#include <climits>
#include <cstdint>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/internal/spin_lock.h"

namespace concurry {
namespace futures_internal {

// Life cycle of a shared state: kPending, then kCompleting while the one winning producer writes
// the result, then exactly one of the three final states.
enum class Phase : uint8_t {
  kPending = 0,
  kCompleting = 1,
  kValue = 2,
  kError = 3,
  kCancelled = 4
};

class StateBase;

// Starting reference counts for a state whose owners are all made at once (a worker call's
// promise, its future and the block that holds both; see StateBase::Ref).
struct PresetRefs {
  int32_t refs;
  int32_t consumers;
};

// A registered done-callback. Owned by the state's list until the state turns final; owned by the
// completing thread after that.
struct CallbackNode {
  absl::AnyInvocable<void(StateBase&)> fn;
  CallbackNode* prev = nullptr;
  CallbackNode* next = nullptr;
};

using ::concurry::internal::SpinLock;
using ::concurry::internal::SpinLockHolder;

// Untyped part of the shared state: phase, error, callbacks, reference counts.
//
// Memory ordering: the producer that wins the kPending -> kCompleting compare-exchange is the only
// writer of the result (value or error); it then stores the final phase with release ordering
// (under lock_, together with taking the callback list). Readers load phase_ with acquire ordering
// and read the result only in a final phase, without any lock. Reference counts use relaxed
// increments and acq_rel decrements (the last owner must see every write before it destroys).
class StateBase {
 public:
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;

  void Ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  // Drops `count` references at once (one atomic operation for an owner holding several).
  void Unref(int32_t count) noexcept {
    if (refs_.fetch_sub(count, std::memory_order_acq_rel) == count) delete this;
  }
  // Consumers are the references that may read the value: Future<T> handles, and Then /
  // AddDoneCallback registrations until they have run. They are counted apart from the producer's
  // and AnyFuture's references, so the value can be taken (moved out) exactly when the taker is
  // the only consumer. Taking adds kTaken, which keeps the count negative from then on: a handle
  // made later (Promise::GetFuture) sees value_taken() and must not read.
  static constexpr int32_t kTaken = INT32_MIN / 2;
  void RefConsumer() noexcept {
    consumers_.fetch_add(1, std::memory_order_relaxed);
    Ref();
  }
  void UnrefConsumer() noexcept {
    consumers_.fetch_sub(1, std::memory_order_release);
    Unref();
  }
  // Claims the value for a caller that holds one consumer reference: succeeds only when it is the
  // only one. Acquire pairs with the release in UnrefConsumer: reads by consumers that have gone
  // happen before the move.
  bool TryTakeValue() noexcept {
    int32_t only_me = 1;
    return consumers_.compare_exchange_strong(only_me, 1 + kTaken, std::memory_order_acq_rel,
                                              std::memory_order_acquire);
  }
  // Claims the value even when other consumers exist (a move-only value has no other way out).
  // Returns false when it was taken already.
  bool ForceTakeValue() noexcept {
    int32_t count = consumers_.load(std::memory_order_acquire);
    do {
      if (count < 0) return false;
    } while (!consumers_.compare_exchange_weak(count, count + kTaken, std::memory_order_acq_rel,
                                               std::memory_order_acquire));
    return true;
  }
  bool value_taken() const noexcept { return consumers_.load(std::memory_order_acquire) < 0; }
  // Whether the caller's consumer reference is the only one (a snapshot): nobody else could read
  // the value, so a coroutine that stops awaiting it may cancel it.
  bool sole_consumer() const noexcept { return consumers_.load(std::memory_order_acquire) == 1; }

  Phase phase() const noexcept { return phase_.load(std::memory_order_acquire); }
  bool done() const noexcept { return phase() >= Phase::kValue; }

  // Returns the error of a final state (CancelledError when cancelled), null after a value.
  // Requires done().
  const std::exception_ptr& error() const noexcept { return error_; }

  // Blocks until done or `deadline` on `clock`. Returns done(). A blocked waiter parks on a mutex
  // of its own that a done-callback signals, so completing a future nobody waits on costs nothing.
  // Throws DeadlockError, naming `operation`, instead of blocking in the serial context that must
  // produce this state (see set_producer).
  bool WaitUntil(Clock& clock, absl::Time deadline, const char* operation);

  // Records the serial context (futures_internal::CurrentSerialContext(): a worker) that completes
  // this state by running a call queued in it. Waiting for the state inside that same context
  // would never end, so WaitUntil refuses it. Set before the future is handed out, and cleared
  // (null) when the call starts running: from then on the state no longer waits behind that
  // context's queue (a call returning a Future stays pending on whoever completes that one).
  void set_producer(const void* producer) noexcept {
    producer_.store(producer, std::memory_order_relaxed);
  }
  // Whether the calling thread runs the serial context that must produce this pending state.
  bool WaitWouldSelfDeadlock() const noexcept;

  // Completes with `error` unless already completed. Returns whether this call completed it.
  bool SetError(std::exception_ptr error);

  // Cancels a pending state: runs the producer's cancel callbacks, then the done-callbacks.
  // Returns false when the state was already completed (or is being completed).
  bool Cancel();

  // Registers `node` to run once when the state completes. Returns false, without taking the node,
  // when the state is already final (the caller then runs the callback itself).
  bool AddCallback(CallbackNode* node) ABSL_LOCKS_EXCLUDED(lock_);

  // Takes `node`: registers it (see AddCallback), or runs it now if the state is already final.
  void AddOrRunCallback(CallbackNode* node) ABSL_LOCKS_EXCLUDED(lock_) {
    if (!AddCallback(node)) RunCallbackNow(node);
  }

  // Runs `node` now (for a state that is already final) as a completion would: an exception it
  // throws is printed and ignored. Deletes the node.
  void RunCallbackNow(CallbackNode* node);

  // Unlinks and deletes `node` if the state is not final yet. Returns false when the state already
  // completed (the callback has run or is running and the completing thread owns the node).
  bool RemoveCallback(CallbackNode* node) ABSL_LOCKS_EXCLUDED(lock_);
  // Whether callbacks wait for the result (a snapshot).
  bool HasCallbacks() ABSL_LOCKS_EXCLUDED(lock_);

  // Registers a producer-side cancel callback; runs it now when already cancelled, drops it when
  // completed otherwise.
  void OnCancel(absl::AnyInvocable<void()> fn) ABSL_LOCKS_EXCLUDED(lock_);

  // Returns a process-unique id, assigned on first use.
  uint64_t id() noexcept;

 protected:
  StateBase() = default;
  // Already-final states start with one consumer reference (the Future that is returned).
  explicit StateBase(std::exception_ptr error)
      : error_(std::move(error)), consumers_(1), phase_(Phase::kError) {}
  struct ReadyTag {};
  explicit StateBase(ReadyTag) : consumers_(1), phase_(Phase::kValue) {}
  // A pending state with its owners already counted: saves the atomic increments of handing them
  // out one by one.
  explicit StateBase(PresetRefs preset) : refs_(preset.refs), consumers_(preset.consumers) {}
  virtual ~StateBase();

  // Completes the state if it is pending: `store` writes the result (it may throw: the state then
  // completes with that exception, which is rethrown to the producer). Returns false, without
  // calling `store`, when another completion or a cancellation won.
  template <typename Store>
  bool Complete(Phase final_phase, Store&& store) {
    if (!BeginCompletion()) return false;
    try {
      store();
    } catch (...) {
      error_ = std::current_exception();
      FinishCompletion(Phase::kError);
      throw;
    }
    FinishCompletion(final_phase);
    return true;
  }

  std::exception_ptr error_;  // Written once by the winning producer; see class comment.

 private:
  struct CancelNode;

  // Moves kPending -> kCompleting; false when someone else completed or cancelled first.
  bool BeginCompletion() noexcept;
  // Publishes `final_phase`, then runs the cancel callbacks (for kCancelled) and done-callbacks.
  void FinishCompletion(Phase final_phase) ABSL_LOCKS_EXCLUDED(lock_);

  std::atomic<int32_t> refs_{1};
  std::atomic<int32_t> consumers_{0};
  std::atomic<Phase> phase_{Phase::kPending};
  SpinLock lock_;  // Beside phase_: the two fill one word's padding.
  std::atomic<uint64_t> id_{0};
  // Relaxed: only a thread running the producing context can match it, and that context's own
  // clearing (when the call starts) is ordered before its later calls by the worker's mailbox.
  std::atomic<const void*> producer_{nullptr};
  CallbackNode* callbacks_head_ ABSL_GUARDED_BY(lock_) = nullptr;
  CallbackNode* callbacks_tail_ ABSL_GUARDED_BY(lock_) = nullptr;
  CancelNode* cancel_callbacks_ ABSL_GUARDED_BY(lock_) = nullptr;
};

// Stand-in value type for Future<void>.
struct Unit {};

template <typename T>
using Stored = std::conditional_t<std::is_void_v<T>, Unit, T>;

// Typed state: adds the value. Not final: a state that lives inside a larger block derives from
// it to give the block back (workers_internal::CallState).
template <typename T>
class State : public StateBase {
 public:
  State() = default;
  explicit State(PresetRefs preset) : StateBase(preset) {}
  explicit State(std::exception_ptr error) : StateBase(std::move(error)) {}
  template <typename... Args>
  explicit State(std::in_place_t, Args&&... args)
      : StateBase(ReadyTag{}), value_(std::in_place, std::forward<Args>(args)...) {}

  template <typename... Args>
  bool SetValue(Args&&... args) {
    return Complete(Phase::kValue, [&] { value_.emplace(std::forward<Args>(args)...); });
  }

  // Requires phase() == kValue.
  Stored<T>& value() noexcept { return *value_; }

 private:
  std::optional<Stored<T>> value_;  // Written once before phase_ leaves kPending.
};

// Owning pointer to a state (intrusive reference count). With kConsumer, the reference also
// counts as a consumer handle (see StateBase::RefConsumer).
template <typename S, bool kConsumer = false>
class StateRef {
 public:
  StateRef() = default;
  // Adopts one reference (already counted as a consumer when kConsumer).
  explicit StateRef(S* adopted) noexcept : ptr_(adopted) {}
  StateRef(const StateRef& other) noexcept : ptr_(other.ptr_) {
    if (ptr_ != nullptr) Acquire(ptr_);
  }
  StateRef(StateRef&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  StateRef& operator=(StateRef other) noexcept {
    std::swap(ptr_, other.ptr_);
    return *this;
  }
  ~StateRef() {
    if (ptr_ == nullptr) return;
    if constexpr (kConsumer) {
      ptr_->UnrefConsumer();
    } else {
      ptr_->Unref();
    }
  }
  // Takes a new reference to `raw`.
  static StateRef Share(S* raw) noexcept {
    Acquire(raw);
    return StateRef(raw);
  }

  S* get() const noexcept { return ptr_; }
  // Gives up the reference without dropping it: the caller now owns it.
  S* Release() noexcept { return std::exchange(ptr_, nullptr); }
  S* operator->() const noexcept { return ptr_; }
  S& operator*() const noexcept { return *ptr_; }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

 private:
  static void Acquire(S* raw) noexcept {
    if constexpr (kConsumer) {
      raw->RefConsumer();
    } else {
      raw->Ref();
    }
  }

  S* ptr_ = nullptr;
};

template <typename T>
using FutureRef = StateRef<State<T>, /*kConsumer=*/true>;

// Throws InvalidOptionError naming `operation` for an invalid (default-constructed or moved-from)
// handle.
[[noreturn]] void ThrowInvalid(const char* type, const char* operation);

// Returns the deadline `timeout` after now on `clock`; throws InvalidOptionError for a negative
// timeout.
absl::Time DeadlineAfter(Clock& clock, absl::Duration timeout, const char* operation);

// Throws InvalidOptionError for a negative timeout. Called before the done() fast paths, so a bad
// timeout is rejected whether or not the future is done.
[[noreturn]] void ThrowNegativeTimeout(const char* operation, absl::Duration timeout);
inline void CheckTimeout(absl::Duration timeout, const char* operation) {
  if (timeout < absl::ZeroDuration()) ThrowNegativeTimeout(operation, timeout);
}

// Throws DeadlockError naming `operation`: a wait for a state that the waiting serial context must
// produce.
[[noreturn]] void ThrowSelfDeadlock(const char* operation);

// Throws InvalidOptionError: the value was moved out through another handle.
[[noreturn]] void ThrowValueTaken(const char* operation);

// Returns the value of `state` (phase kValue) for a caller holding one consumer reference: moved
// out when the caller is the only consumer (or T is move-only), copied otherwise. Throws
// InvalidOptionError when another handle took the value already.
template <typename T>
T TakeOrCopy(State<T>& state, const char* operation) {
  if constexpr (std::is_copy_constructible_v<T>) {
    if (state.TryTakeValue()) return std::move(state.value());
    if (state.value_taken()) ThrowValueTaken(operation);
    return state.value();
  } else {
    if (!state.ForceTakeValue()) ThrowValueTaken(operation);
    return std::move(state.value());
  }
}

// Throws TimeoutError for a wait that ran out of time.
[[noreturn]] void ThrowTimeout(const char* operation, absl::Duration timeout);

// Waits for `state` up to `timeout` and returns its status: OK, the error's status, or
// kDeadlineExceeded naming `operation`. Throws InvalidOptionError for a negative timeout.
absl::Status WaitStatus(StateBase* state, const char* operation, absl::Duration timeout,
                        Clock& clock);

}  // namespace futures_internal
}  // namespace concurry

#endif  // CONCURRY_FUTURES_INTERNAL_FUTURE_STATE_H_

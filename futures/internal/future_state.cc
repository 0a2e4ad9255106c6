#include "futures/internal/future_state.h"

#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "futures/internal/task_context.h"
#include "futures/internal/wait_driver.h"
#include "futures/internal/wake_flag.h"

namespace concurry {
namespace futures_internal {

struct StateBase::CancelNode {
  absl::AnyInvocable<void()> fn;
  CancelNode* next = nullptr;
};

namespace {

std::atomic<uint64_t> next_id{1};

// The calling thread's offer (wait_driver.h).
struct Offer {
  const StateBase* state = nullptr;
  std::shared_ptr<WaitDriver> driver;
};
thread_local Offer offered;

// Runs a user callback; a callback that throws cannot report to anyone, so the error is printed
// rather than lost silently or allowed to terminate the completing thread.
template <typename F>
void RunGuarded(F& fn, const char* what) {
  try {
    fn();
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    std::fprintf(stderr, "concurry: a %s threw and was ignored: %s: %s\n", what,
                 ExceptionTypeName(error).c_str(), ExceptionMessage(error).c_str());
  }
}

}  // namespace

StateBase::~StateBase() {
  // The last owner has exclusive access: no lock needed. Nodes of a never-completed state (its
  // producer is gone without completing, e.g. a leaked promise) are still ours.
  for (CallbackNode* node = callbacks_head_; node != nullptr;) {
    delete std::exchange(node, node->next);
  }
  for (CancelNode* node = cancel_callbacks_; node != nullptr;) {
    delete std::exchange(node, node->next);
  }
}

uint64_t StateBase::id() noexcept {
  uint64_t id = id_.load(std::memory_order_relaxed);
  if (id != 0) return id;
  const uint64_t fresh = next_id.fetch_add(1, std::memory_order_relaxed);
  // Relaxed suffices: the id is a plain number, not a publication of other data.
  return id_.compare_exchange_strong(id, fresh, std::memory_order_relaxed) ? fresh : id;
}

namespace {
// A thread blocked in WaitUntil; shared with the done-callback that wakes it, which may still be
// running when a timed-out waiter returns.
struct Waiter {
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
};
}  // namespace

void OfferWaitDriver(const StateBase* state, std::shared_ptr<WaitDriver> driver) {
  offered.state = state;
  offered.driver = std::move(driver);
}

std::shared_ptr<WaitDriver> TakeWaitDriver(const StateBase* state) {
  if (offered.driver == nullptr) return nullptr;
  Offer offer = std::exchange(offered, Offer{});
  return offer.state == state ? std::move(offer.driver) : nullptr;
}

bool StateBase::HasCallbacks() {
  SpinLockHolder hold(&lock_);
  return callbacks_head_ != nullptr;
}

bool StateBase::WaitWouldSelfDeadlock() const noexcept {
  const void* producer = producer_.load(std::memory_order_relaxed);
  return producer != nullptr && producer == CurrentSerialContext() && !done();
}

void ThrowSelfDeadlock(const char* operation) {
  throw DeadlockError(absl::StrCat(
      operation,
      ": a worker's call is waiting for the result of another call to the same worker, which is "
      "queued behind the waiting call and cannot start before it returns: the wait would never "
      "end. Return the future instead (a method may return Future<T>), chain work with Then, or "
      "call the method directly on the object"));
}

bool StateBase::WaitUntil(Clock& clock, absl::Time deadline, const char* operation) {
  if (done()) return true;
  // A deadline already passed (a zero-timeout poll) needs no waiter, and skipping it saves an
  // absl::Mutex, which is costly with deadlock detection on.
  if (deadline <= clock.Now()) return done();
  if (WaitWouldSelfDeadlock()) ThrowSelfDeadlock(operation);
  if (&clock == &Clock::Real()) {
    // This thread may be able to finish the work itself (wait_driver.h), unless callbacks wait
    // for the result: they would then run inside this wait, on a thread that may hold what they
    // need (a lock taken before waiting).
    if (std::shared_ptr<WaitDriver> driver = TakeWaitDriver(this); driver && !HasCallbacks()) {
      driver->Drive(deadline);
      if (done()) return true;
    }
    // The real clock's wait parks on a futex (wake_flag.h): cheaper than a mutex and condition,
    // and the waker hands over with one system call.
    auto flag = std::make_shared<WakeFlag>();
    auto* node = new CallbackNode{[flag](StateBase&) { flag->Set(); }};
    if (!AddCallback(node)) {
      delete node;
      return true;
    }
    // On timeout, a failed removal means the state turned final meanwhile (its callback owns node).
    return flag->WaitUntil(deadline) || !RemoveCallback(node);
  }
  // Another clock (a FakeClock) decides itself when the deadline has come.
  auto waiter = std::make_shared<Waiter>();
  auto* node = new CallbackNode{[waiter](StateBase&) {
    absl::MutexLock lock(&waiter->mu);
    waiter->done = true;
  }};
  if (!AddCallback(node)) {
    delete node;
    return true;
  }
  bool signalled;
  {
    absl::MutexLock lock(&waiter->mu);
    signalled = clock.AwaitWithDeadline(&waiter->mu, absl::Condition(&waiter->done), deadline);
  }
  // On timeout, a failed removal means the state turned final meanwhile (its callback owns node).
  if (!signalled && RemoveCallback(node)) return false;
  return true;
}

bool StateBase::BeginCompletion() noexcept {
  Phase expected = Phase::kPending;
  // Relaxed: this only elects the one writer of the result. What it writes is published by the
  // release store of the final phase in FinishCompletion; the callback lists are under lock_.
  return phase_.compare_exchange_strong(expected, Phase::kCompleting, std::memory_order_relaxed,
                                        std::memory_order_relaxed);
}

void StateBase::FinishCompletion(Phase final_phase) {
  CallbackNode* callbacks;
  CancelNode* cancels;
  {
    SpinLockHolder hold(&lock_);
    callbacks_tail_ = nullptr;
    callbacks = std::exchange(callbacks_head_, nullptr);
    cancels = std::exchange(cancel_callbacks_, nullptr);
    // Release: publishes the result written by this thread before it.
    phase_.store(final_phase, std::memory_order_release);
  }
  if (callbacks == nullptr && cancels == nullptr) return;
  // A callback may drop every other reference (e.g. free the object owning the promise).
  const StateRef<StateBase> keep_alive = StateRef<StateBase>::Share(this);
  // Producer first (so it can stop work), then consumers; registration order within each list.
  CancelNode* reversed = nullptr;
  while (cancels != nullptr) {
    CancelNode* next = cancels->next;
    cancels->next = reversed;
    reversed = cancels;
    cancels = next;
  }
  while (reversed != nullptr) {
    if (final_phase == Phase::kCancelled) RunGuarded(reversed->fn, "cancel callback");
    delete std::exchange(reversed, reversed->next);
  }
  while (callbacks != nullptr) RunCallbackNow(std::exchange(callbacks, callbacks->next));
}

void StateBase::RunCallbackNow(CallbackNode* node) {
  std::unique_ptr<CallbackNode> owned(node);
  auto call = [&] { owned->fn(*this); };
  RunGuarded(call, "done callback");
}

bool StateBase::SetError(std::exception_ptr error) {
  return Complete(Phase::kError, [&] { error_ = std::move(error); });
}

bool StateBase::Cancel() {
  return Complete(Phase::kCancelled, [&] { error_ = std::make_exception_ptr(CancelledError()); });
}

bool StateBase::AddCallback(CallbackNode* node) {
  SpinLockHolder hold(&lock_);
  if (phase_.load(std::memory_order_relaxed) >= Phase::kValue) return false;
  node->next = nullptr;
  node->prev = callbacks_tail_;
  (callbacks_tail_ != nullptr ? callbacks_tail_->next : callbacks_head_) = node;
  callbacks_tail_ = node;
  return true;
}

bool StateBase::RemoveCallback(CallbackNode* node) {
  {
    SpinLockHolder hold(&lock_);
    if (phase_.load(std::memory_order_relaxed) >= Phase::kValue) return false;
    (node->prev != nullptr ? node->prev->next : callbacks_head_) = node->next;
    (node->next != nullptr ? node->next->prev : callbacks_tail_) = node->prev;
  }
  delete node;
  return true;
}

void StateBase::OnCancel(absl::AnyInvocable<void()> fn) {
  {
    SpinLockHolder hold(&lock_);
    const Phase phase = phase_.load(std::memory_order_relaxed);
    if (phase < Phase::kValue) {
      cancel_callbacks_ = new CancelNode{std::move(fn), cancel_callbacks_};
      return;
    }
    if (phase != Phase::kCancelled) return;
  }
  RunGuarded(fn, "cancel callback");
}

void ThrowInvalid(const char* type, const char* operation) {
  throw InvalidOptionError(
      absl::StrCat(type, "::", operation,
                   "() called on an invalid handle (default-constructed or "
                   "moved-from); obtain one from a Promise, Async or a worker"));
}

void ThrowNegativeTimeout(const char* operation, absl::Duration timeout) {
  throw InvalidOptionError(absl::StrCat(operation, ": timeout must be >= 0 (or infinite), got ",
                                        absl::FormatDuration(timeout)));
}

absl::Time DeadlineAfter(Clock& clock, absl::Duration timeout, const char* operation) {
  CheckTimeout(timeout, operation);
  if (timeout == absl::InfiniteDuration()) return absl::InfiniteFuture();
  return clock.Now() + timeout;
}

namespace {
std::string TimeoutMessage(const char* operation, absl::Duration timeout) {
  return absl::StrCat(operation, " timed out after ", absl::FormatDuration(timeout),
                      " (the future is still pending)");
}
}  // namespace

void ThrowValueTaken(const char* operation) {
  throw InvalidOptionError(absl::StrCat(
      operation,
      ": the value was already moved out by an rvalue Result() or Then() on another handle of "
      "this future; keep one handle, or call Result() on an lvalue to share the value"));
}

void ThrowTimeout(const char* operation, absl::Duration timeout) {
  throw TimeoutError(TimeoutMessage(operation, timeout));
}

absl::Status WaitStatus(StateBase* state, const char* operation, absl::Duration timeout,
                        Clock& clock) {
  CheckTimeout(timeout, operation);
  try {
    if (!state->done() &&
        !state->WaitUntil(clock, DeadlineAfter(clock, timeout, operation), operation)) {
      return absl::DeadlineExceededError(TimeoutMessage(operation, timeout));
    }
  } catch (const DeadlockError& e) {
    return e.ToStatus();
  }
  return StatusFromException(state->error());
}

}  // namespace futures_internal
}  // namespace concurry

#include "futures/internal/coro_scheduler.h"

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <utility>

#include "futures/errors.h"

namespace concurry {
namespace futures_internal {
namespace {
thread_local CoroScheduler* current_scheduler = nullptr;
thread_local CoroControl* current_control = nullptr;
// The owner of current_scheduler when a scope made it current with no coroutine running.
thread_local const std::shared_ptr<CoroScheduler>* current_owned = nullptr;
}  // namespace

CoroScheduler* CurrentCoroScheduler() noexcept { return current_scheduler; }

ScopedCoroScheduler::ScopedCoroScheduler(CoroScheduler* scheduler, CoroControl* control) noexcept
    : outer_(current_scheduler), outer_control_(current_control), outer_owned_(current_owned) {
  current_scheduler = scheduler;
  current_control = control;
  current_owned = nullptr;
}

ScopedCoroScheduler::ScopedCoroScheduler(std::shared_ptr<CoroScheduler> owned) noexcept
    : outer_(current_scheduler),
      outer_control_(current_control),
      outer_owned_(current_owned),
      owned_(std::move(owned)) {
  current_scheduler = owned_.get();
  current_control = nullptr;
  current_owned = &owned_;
}

ScopedCoroScheduler::~ScopedCoroScheduler() {
  current_scheduler = outer_;
  current_control = outer_control_;
  current_owned = outer_owned_;
}

std::shared_ptr<CoroScheduler> CurrentCoroSchedulerShared() {
  if (current_scheduler == nullptr) return nullptr;
  if (current_control == nullptr) {
    if (current_owned != nullptr) return *current_owned;
    return std::shared_ptr<CoroScheduler>(std::shared_ptr<CoroScheduler>(), current_scheduler);
  }
  // Shares the running control's ownership (and so its scheduler's), pointing at the scheduler.
  return std::shared_ptr<CoroScheduler>(current_control->shared_from_this(), current_scheduler);
}

std::shared_ptr<CoroControl> MakeStandInControl() {
  if (current_scheduler == nullptr) return nullptr;
  return std::make_shared<CoroControl>(current_scheduler, CurrentCoroSchedulerShared(),
                                       /*cancellable=*/false);
}

uint64_t CoroControl::Arm(std::coroutine_handle<> handle) noexcept {
  // Only the running step writes these; a waker reads them after acquiring the generation.
  handoff_.store(false, std::memory_order_relaxed);
  suspended_.store(handle.address(), std::memory_order_relaxed);
  const uint64_t generation = armed_.load(std::memory_order_relaxed) + 1;
  armed_.store(generation, std::memory_order_seq_cst);  // Pairs with Cancel; see class comment.
  return generation;
}

bool CoroControl::Disarm(uint64_t generation) noexcept {
  uint64_t expected = generation;
  return armed_.compare_exchange_strong(expected, generation + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire);
}

bool CoroControl::Suspend(uint64_t generation) noexcept {
  if (cancellable_ && cancelled_.load(std::memory_order_seq_cst) && Disarm(generation)) {
    return false;  // Cancelled before Cancel could see this await: do not wait.
  }
  return !handoff_.exchange(true, std::memory_order_acq_rel);
}

void CoroControl::Wake(uint64_t generation, std::coroutine_handle<> handle) noexcept {
  uint64_t expected = generation;
  if (!armed_.compare_exchange_strong(expected, generation + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
    return;  // Another wake won, or the await ended already.
  }
  // Second of (Suspend, Wake): the frame is suspended for good, post its resumption.
  if (handoff_.exchange(true, std::memory_order_acq_rel)) scheduler_->Resume(*this, handle);
}

void CoroControl::ThrowEnded() const {
  if (stopped()) {
    throw StoppedError(
        "a step of the coroutine was rejected or dropped by its executor; the coroutine stopped");
  }
  throw CancelledError("the coroutine was cancelled");
}

void CoroControl::Stop() noexcept {
  if (!cancellable_) return;
  // Before cancelled_: an await that finds cancelled() then finds stopped() too.
  stopped_.store(true, std::memory_order_release);
  cancelled_.store(true, std::memory_order_seq_cst);
}

void CoroControl::Cancel() noexcept {
  if (!cancellable_) return;
  cancelled_.store(true, std::memory_order_seq_cst);
  const uint64_t generation = armed_.load(std::memory_order_seq_cst);
  if (generation % 2 == 0) return;  // Not waiting at a leaf await: the next co_await throws.
  // If the coroutine moved on meanwhile, the generation changed and Wake does nothing.
  Wake(generation,
       std::coroutine_handle<>::from_address(suspended_.load(std::memory_order_relaxed)));
}

}  // namespace futures_internal
}  // namespace concurry

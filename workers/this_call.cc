#include "workers/this_call.h"

#include <utility>

#include "workers/internal/cancel_signal.h"

namespace concurry {
namespace workers_internal {
namespace {

// constinit: a plain TLS slot, with no initialization guard on each access.
constinit thread_local const CancelSignal* current_signal = nullptr;

}  // namespace

ScopedCancelSignal::ScopedCancelSignal(const CancelSignal* signal) noexcept
    : outer_(std::exchange(current_signal, signal)) {}

ScopedCancelSignal::~ScopedCancelSignal() { current_signal = outer_; }

}  // namespace workers_internal

namespace this_call {

bool CancelRequested() noexcept {
  const workers_internal::CancelSignal* signal = workers_internal::current_signal;
  return signal != nullptr && signal->CancelRequested();
}

}  // namespace this_call
}  // namespace concurry

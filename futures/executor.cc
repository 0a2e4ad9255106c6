#include "futures/executor.h"

#include <cstdio>
#include <exception>
#include <utility>

#include "futures/errors.h"
#include "futures/internal/task_context.h"

namespace concurry {
namespace {

thread_local bool non_blocking = false;

// The executor task the thread runs and how deep it is in blocking regions (only the outermost
// region reports).
struct BlockingState {
  futures_internal::BlockingObserver* observer = nullptr;
  int depth = 0;
};
thread_local BlockingState blocking;

thread_local const void* serial_context = nullptr;

}  // namespace

NonBlockingScope::NonBlockingScope() : outer_(std::exchange(non_blocking, true)) {}
NonBlockingScope::~NonBlockingScope() { non_blocking = outer_; }
bool NonBlockingScope::Active() { return non_blocking; }

BlockingRegion::BlockingRegion() noexcept
    : observer_(blocking.depth++ == 0 ? blocking.observer : nullptr) {
  if (observer_ != nullptr) observer_->BlockingBegan();
}

BlockingRegion::~BlockingRegion() {
  --blocking.depth;
  if (observer_ != nullptr) observer_->BlockingEnded();
}

bool BlockingRegion::WouldCompensate() noexcept {
  return blocking.observer != nullptr && blocking.depth == 0;
}

void RunExecutorTask(Executor::Task& task, const char* executor) noexcept {
  try {
    task();
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    std::fprintf(stderr, "concurry: a %s task threw and was ignored: %s: %s\n", executor,
                 ExceptionTypeName(error).c_str(), ExceptionMessage(error).c_str());
  }
}

namespace futures_internal {

ScopedBlockingObserver::ScopedBlockingObserver(BlockingObserver* observer) noexcept
    : outer_observer_(std::exchange(blocking.observer, observer)),
      outer_depth_(std::exchange(blocking.depth, 0)) {}

ScopedBlockingObserver::~ScopedBlockingObserver() {
  blocking.observer = outer_observer_;
  blocking.depth = outer_depth_;
}

BlockingObserver* CurrentBlockingObserver() noexcept { return blocking.observer; }

const void* CurrentSerialContext() noexcept { return serial_context; }

ScopedSerialContext::ScopedSerialContext(const void* context) noexcept
    : outer_(std::exchange(serial_context, context)) {}

ScopedSerialContext::~ScopedSerialContext() { serial_context = outer_; }

}  // namespace futures_internal
}  // namespace concurry

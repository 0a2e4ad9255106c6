#include "futures/executor.h"

#include <cstdio>
#include <exception>
#include <utility>

#include "futures/errors.h"

namespace concurry {
namespace {
thread_local bool non_blocking = false;
}  // namespace

NonBlockingScope::NonBlockingScope() : outer_(std::exchange(non_blocking, true)) {}
NonBlockingScope::~NonBlockingScope() { non_blocking = outer_; }
bool NonBlockingScope::Active() { return non_blocking; }

void RunExecutorTask(Executor::Task& task, const char* executor) noexcept {
  try {
    task();
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    std::fprintf(stderr, "concurry: a %s task threw and was ignored: %s: %s\n", executor,
                 ExceptionTypeName(error).c_str(), ExceptionMessage(error).c_str());
  }
}

}  // namespace concurry

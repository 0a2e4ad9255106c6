#include "futures/executor.h"

#include <cstdio>
#include <exception>

#include "futures/errors.h"

namespace concurry {

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

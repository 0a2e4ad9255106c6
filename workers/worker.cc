#include "workers/worker.h"

#include <memory>

#include "workers/internal/actor.h"

namespace concurry::workers_internal {

std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) {
  switch (options.mode) {
    case Mode::kSync:
      return std::make_shared<InlineActor>(options);
    case Mode::kTbb:
      return std::make_shared<ExecutorActor>(options);
    case Mode::kThread:
    case Mode::kLoopback:
      return std::make_shared<ThreadActor>(options);
    default:
      // ResolveWorkerOptions rejects the modes this build does not have.
      throw InvalidOptionError("Worker: mode " + AbslUnparseFlag(options.mode) +
                               " is not available in this build");
  }
}

HandleState::~HandleState() {
  try {
    core->Stop(core->options().stop_timeout);
  } catch (...) {
    // Stop only throws for bad arguments, which the resolved options rule out.
  }
}

}  // namespace concurry::workers_internal

#include "workers/worker.h"

#include <memory>

#include "workers/internal/actor.h"

namespace concurry::workers_internal {

HandleState::~HandleState() {
  if (!owning) return;
  try {
    // Dropped inside a worker's call (say, a worker owning another worker): do not wait there.
    // Waiting would hold that worker's thread, which in tbb mode may be the oneTBB thread the
    // stopping worker needs. It still stops; StoppedFuture() says when.
    core->Stop(ActorCore::InAnyActorContext() ? absl::ZeroDuration()
                                              : core->options().stop_timeout);
  } catch (...) {
    // Stop only throws for bad arguments, which the resolved options rule out.
  }
}

}  // namespace concurry::workers_internal

namespace concurry {

namespace workers_internal {

PoolCore& PoolOf(const std::shared_ptr<ActorCore>& core, const char* operation) {
  PoolCore* pool = AsPool(core);
  if (pool == nullptr) {
    throw InvalidOptionError(
        std::string(operation) +
        ": this handle is one worker, not a pool (create it with "
        "max_workers > 1 or on_demand for a pool); use Stats() for its queues");
  }
  return *pool;
}

ActorCore& CurrentActorOrThrow(const char* operation) {
  ActorCore* core = ActorCore::Current();
  if (core == nullptr) {
    throw InvalidOptionError(std::string(operation) +
                             " was called outside a worker: it is available in a worker's "
                             "constructor and methods");
  }
  return *core;
}

void ThrowWrongWorkerType(const char* operation, const std::type_info* actual,
                          const std::type_info& requested) {
  throw InvalidOptionError(std::string(operation) + ": the calling worker runs " +
                           (actual == nullptr || *actual == typeid(TaskHost)
                                ? std::string("tasks (a TaskWorker)")
                                : "a " + TypeName(*actual)) +
                           ", not a " + TypeName(requested));
}

}  // namespace workers_internal

LimitPool CurrentWorkerLimits() {
  const LimitPool* limits = workers_internal::ActorCore::CurrentLimits();
  if (limits == nullptr) {
    throw InvalidOptionError(
        "CurrentWorkerLimits() was called outside a worker: it is available in a worker's "
        "constructor, methods and TaskWorker tasks");
  }
  return *limits;
}

}  // namespace concurry

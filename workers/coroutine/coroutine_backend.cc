// Mode::kCoroutine: an event-loop thread for the methods returning Coro<T>, and a side thread for
// the plain ones, per worker.

#include <memory>

#include "workers/backend.h"
#include "workers/coroutine/coroutine_actor.h"
#include "workers/options.h"

namespace concurry::workers_internal {
namespace {

class CoroutineBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kCoroutine; }
  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<CoroutineActor>(options, *this);
  }
};

}  // namespace
}  // namespace concurry::workers_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::workers_internal::CoroutineBackend)

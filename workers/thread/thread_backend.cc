// Mode::kThread: one dedicated OS thread per worker.

#include <memory>

#include "workers/backend.h"
#include "workers/options.h"
#include "workers/thread/thread_actor.h"

namespace concurry::workers_internal {
namespace {

class ThreadBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kThread; }
  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<ThreadActor>(options, *this);
  }
};

}  // namespace
}  // namespace concurry::workers_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::workers_internal::ThreadBackend)

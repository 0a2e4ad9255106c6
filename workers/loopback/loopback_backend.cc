// Mode::kLoopback: a thread worker whose calls, arguments, results and errors are encoded to bytes
// and decoded again, as they will be for a worker in another process or on another host. The
// encoding itself is in the core (Worker<T>::Call picks the registered-name path when the backend
// encodes_calls()); this backend only supplies the thread.

#include <memory>

#include "workers/backend.h"
#include "workers/options.h"
#include "workers/thread/thread_actor.h"

namespace concurry::workers_internal {
namespace {

class LoopbackBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kLoopback; }
  bool encodes_calls() const override { return true; }
  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<ThreadActor>(options, *this);
  }
};

}  // namespace
}  // namespace concurry::workers_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::workers_internal::LoopbackBackend)

// Mode::kSync: calls run in the caller's thread, at call time.

#include <memory>

#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/options.h"

namespace concurry::workers_internal {
namespace {

// Drains in the thread that pushes to an idle mailbox: a lone caller's call is done when Call
// returns; a call made while another thread drains runs on that thread, after the calls before
// it.
class InlineActor final : public ActorCore {
 public:
  using ActorCore::ActorCore;

 protected:
  void Schedule() override { Drain(kNoBudget); }
};

class InlineBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kSync; }
  bool runs_calls_inline() const override { return true; }
  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<InlineActor>(options, *this);
  }
};

}  // namespace
}  // namespace concurry::workers_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::workers_internal::InlineBackend)

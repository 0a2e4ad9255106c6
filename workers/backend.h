// The execution backend interface: how a worker's calls get a thread.
//
// The worker core (Worker<T>, BlockingWorker<T>, TaskWorker, options, unwrapping, retries, limits,
// the mailbox and Stop) is the same for every mode. A backend supplies the one thing that differs:
// who runs the mailbox's drains. Each backend is its own Bazel target and makes its mode available
// by being linked into the binary:
//
//   mode             target                        costs
//   Mode::kSync      @concurry//workers/inline     nothing: calls run in the caller's thread
//   Mode::kThread    @concurry//workers/thread     one OS thread per worker
//   Mode::kTbb       @concurry//workers/tbb        oneTBB; one shared arena and its threads
//   Mode::kLoopback  @concurry//workers/loopback   one OS thread per worker, plus encoding
//   Mode::kProcess   @concurry//workers/process    a child process per worker, plus two threads
//                                                  in the caller's process (docs/process.md)
//   Mode::kCoroutine @concurry//workers/coroutine  two threads per worker: an asio event loop for
//                                                  methods returning Coro<T>, a side thread for
//                                                  the others (docs/coroutines.md)
//
// `@concurry//workers` and `@concurry//:concurry` link all of them. Creating a worker in a mode
// whose backend is not linked throws InvalidOptionError naming the target to add.
//
// Writing a backend:
// 1. Derive the actor from workers_internal::ActorCore (workers/internal/actor.h) and implement
//    its contract:
//    - OnStart(): acquire what the actor runs on (a thread, a connection); may throw, which fails
//      Create with that error. Called once, before the first call is queued.
//    - Schedule(): the mailbox went from idle to non-empty; arrange for Drain(budget) to run once,
//      soon, on the actor's execution context. Must not throw, and must not wait for another
//      thread (it may drain inline, as the sync backend does). Drain runs calls one at
//      a time in FIFO order and returns false once the actor has closed (stop it then).
//    - Stop with a timeout, stats and cancellation are the core's: a backend does nothing for
//      them, as long as every scheduled Drain eventually runs.
//    - Death: when the backend can never run another drain (its executor refused the drain, its
//      process died), it calls Abandon(), which cancels every queued call and completes
//      StoppedFuture(); Abandon(error) fails them with `error` instead (a CrashedError for a
//      dead process). A pool replaces such a worker (docs/pools.md). Never leave calls queued
//      with nothing to drain them.
//    - Blocking: code that waits for a long time inside a drain should be inside a
//      concurry::BlockingRegion (futures/executor.h), so that an executor can lend the thread's
//      slot to others; the library's own waits already are.
//    A backend whose calls cross a byte boundary (encodes_calls()) also says where the object
//    lives: MakeEncodedObject returns the actor's EncodedObject
//    (workers/internal/encoded_object.h), which sends each call's bytes there and completes its
//    reply.
// 2. Implement WorkerBackend below (mode, traits, MakeActor) and register one instance with
//    CONCURRY_REGISTER_WORKER_BACKEND in a .cc file of a cc_library with alwayslink = True (else
//    a static link drops the unreferenced registration). The core needs no change.

#ifndef CONCURRY_WORKERS_BACKEND_H_
#define CONCURRY_WORKERS_BACKEND_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "workers/internal/encoded_object.h"
#include "workers/options.h"
#include "workers/registration.h"

namespace concurry {

namespace workers_internal {
class ActorCore;
}  // namespace workers_internal

// One execution backend. Instances are registered once and live for the whole program; every
// method may be called from any thread.
class WorkerBackend {
 public:
  virtual ~WorkerBackend() = default;

  // The mode this backend implements. At most one backend per mode is registered.
  virtual Mode mode() const = 0;
  // Every call finishes before Call returns (it runs in the calling thread, or in the thread
  // already draining the worker): max_queued_tasks does not apply (kSync).
  virtual bool runs_calls_inline() const { return false; }
  // Calls, arguments, results and errors cross a byte boundary, so the worker class must be
  // registered with CONCURRY_REGISTER_WORKER and calls go by registered name (kLoopback; process
  // and remote later).
  virtual bool encodes_calls() const { return false; }
  // How long a drain that found the mailbox empty keeps watching it before the actor goes idle,
  // for actors whose calls arrive back to back (a pool's workers, a pipelining caller). Worth it
  // when scheduling a drain costs more than that (a oneTBB task plus a wake-up); 0 (the default)
  // goes idle at once. The time is spent spinning on the drain's thread. A drain nested in
  // another actor's call never lingers.
  virtual absl::Duration drain_linger(const ResolvedWorkerOptions& /*options*/) const {
    return absl::ZeroDuration();
  }

  // Whether a synchronous Create (Worker<T>::Create, BlockingWorker<T>::Create) may build the
  // object on the calling thread, inside the actor's context, instead of handing the construction
  // to the actor's own thread and sleeping until it is done. Only for backends whose actors have
  // no thread of their own to be built on (kTbb on its shared arena): there the round trip is
  // the whole cost of creating a worker. The caller waits for the constructor either way. Not
  // asked for pools (their workers are built on their own contexts) nor for backends that encode
  // calls (their objects live behind bytes).
  virtual bool constructs_on_caller(const ResolvedWorkerOptions& /*options*/) const {
    return false;
  }

  // Checks what only this backend knows about `options`; throws InvalidOptionError. The core has
  // already validated the options themselves.
  virtual void Validate(const ResolvedWorkerOptions& /*options*/) const {}
  // Returns a new actor that is not started yet. May throw (for example when a resource cannot
  // be had); the error reaches the creator.
  virtual std::shared_ptr<workers_internal::ActorCore> MakeActor(
      const ResolvedWorkerOptions& options) const = 0;

  // encodes_calls() backends: builds the object of registered class `cls` from its encoded
  // constructor arguments `ctor`, wherever this backend keeps objects, and returns the actor's
  // handle to it. Runs in `actor`'s context (its first message), so it may block. Throws what
  // the constructor threw (rebuilt from its record when it ran elsewhere), or why the object
  // could not be made. The default builds it in this process (LocalEncodedObject).
  virtual std::unique_ptr<workers_internal::EncodedObject> MakeEncodedObject(
      const workers_internal::EncodedClass& cls, std::string ctor,
      workers_internal::ActorCore& actor) const;
};

// Makes `backend` the one for its mode. `backend` must outlive every worker (a static object).
// Returns true; a second backend for the same mode is reported on stderr at start-up and ignored
// (the first one stays), so that a link mistake never terminates a program before main.
bool RegisterWorkerBackend(const WorkerBackend& backend);

// The backend linked for `mode`, or null.
const WorkerBackend* FindWorkerBackend(Mode mode);

// The backend for `mode`; throws InvalidOptionError naming the Bazel target to add when it is not
// linked ("Mode::kTbb needs @concurry//workers/tbb in deps ...").
const WorkerBackend& WorkerBackendFor(Mode mode);

// The modes whose backends this binary links, in enum order.
std::vector<Mode> LinkedWorkerModes();

}  // namespace concurry

namespace concurry::workers_internal {
// Registers `backend` (never destroyed) on construction and keeps it reachable.
struct WorkerBackendRegistrar {
  explicit WorkerBackendRegistrar(const WorkerBackend* b) : backend(b) {
    RegisterWorkerBackend(*backend);
  }
  const WorkerBackend* const backend;
};
}  // namespace concurry::workers_internal

// Registers an instance of `Backend` (a WorkerBackend with a default constructor) at start-up. Use
// once per backend, in a .cc file of an alwayslink cc_library. The registration runs before any
// ordinary static initializer of the program (init_priority 101, the earliest a program may use),
// so a worker created by a namespace-scope initializer finds its backend whatever the link order.
// (Hence `Backend`'s constructor must not use namespace-scope objects that need dynamic
// initialization: they may not exist yet.)
#define CONCURRY_REGISTER_WORKER_BACKEND(Backend) \
  CONCURRY_REGISTER_WORKER_BACKEND_IMPL(Backend, __COUNTER__)
#define CONCURRY_REGISTER_WORKER_BACKEND_IMPL(Backend, n) \
  CONCURRY_REGISTER_WORKER_BACKEND_IMPL2(Backend, n)
#define CONCURRY_REGISTER_WORKER_BACKEND_IMPL2(Backend, n)                                       \
  namespace {                                                                                    \
  __attribute__((init_priority(101))) const ::concurry::workers_internal::WorkerBackendRegistrar \
      concurry_worker_backend_registrar_##n(new Backend());                                      \
  }

#endif  // CONCURRY_WORKERS_BACKEND_H_

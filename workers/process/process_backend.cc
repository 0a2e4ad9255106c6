// Mode::kProcess: each worker in a child process of its own. The actor runs on a thread of its
// own in the caller's process (//workers/thread's ThreadActor), and its object is the connection
// to the process (internal/connection.h): a drain writes the calls it pops to the socket and
// moves on, so calls made back to back are pipelined and sent in batches, while the process runs
// them one at a time in FIFO order and the connection's reader completes their replies.
//
// A call made while the process is idle (every call sent is answered, nothing queued) skips the
// actor's thread: the caller's thread drains that one call itself, writing it to the socket at
// once. Handing it to the thread would cost a wake-up, a quarter of a small call's round trip.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/executor.h"
#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/internal/encoded_object.h"
#include "workers/options.h"
#include "workers/process/internal/connection.h"
#include "workers/registration.h"
#include "workers/thread/thread_actor.h"

namespace concurry::process_internal {
namespace {

using workers_internal::ActorCore;

// How long a process gets between SIGTERM and SIGKILL when Stop's deadline passes.
constexpr absl::Duration kTermGrace = absl::Milliseconds(100);

class ProcessActor final : public workers_internal::ThreadActor, public ConnectionOwner {
 public:
  using ThreadActor::ThreadActor;

  // A Stop with a timeout also bounds how long the process may take to finish: at the deadline
  // it is terminated. Stop(0), which pools and handle destructors use to stop without waiting,
  // leaves the process its stop_timeout.
  bool Stop(absl::Duration timeout) override {
    if (timeout > absl::ZeroDuration() && timeout != absl::InfiniteDuration()) {
      const int64_t deadline = absl::ToUnixNanos(absl::Now() + timeout);
      int64_t current = kill_deadline_ns_.load(std::memory_order_relaxed);
      while (deadline < current && !kill_deadline_ns_.compare_exchange_weak(
                                       current, deadline, std::memory_order_relaxed)) {
      }
    }
    // On the thread that completes this worker's replies, waiting would wait for itself.
    if (OnReaderThreadOf(this)) {
      ActorCore::Stop(absl::ZeroDuration());
      return stopped_future().Done();
    }
    const absl::Time deadline = absl::Now() + timeout;
    if (ActorCore::Stop(timeout) || timeout == absl::ZeroDuration() ||
        timeout == absl::InfiniteDuration() || absl::Now() < deadline) {
      // Done, or a Stop that did not wait (inside this worker's own context or Stop pass).
      return stopped_future().Done();
    }
    // The deadline passed. The actor's thread terminates the process when it gets to the stop,
    // but it may be blocked writing a call to a process that is busy and not reading: terminate
    // it from here too.
    ProcessKiller killer;
    {
      absl::MutexLock lock(&killer_mu_);
      killer = killer_;
    }
    killer.Kill(SIGTERM);
    if (!stopped_future().Wait(kTermGrace)) {
      killer.Kill(SIGKILL);
      stopped_future().Wait(kTermGrace);
    }
    return false;
  }

  absl::Time KillDeadline() const override {
    const absl::Duration grace = options().stop_timeout;
    const absl::Time own =
        grace == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + grace;
    const int64_t asked = kill_deadline_ns_.load(std::memory_order_relaxed);
    return asked == INT64_MAX ? own : std::min(own, absl::FromUnixNanos(asked));
  }

  void Died(std::exception_ptr error) override { StopWithError(std::move(error)); }
  void Launched(ProcessKiller killer) override {
    absl::MutexLock lock(&killer_mu_);
    killer_ = std::move(killer);
  }
  std::function<void()> MakeWaker() override {
    return [weak = std::weak_ptr<ActorCore>(shared_from_this())] {
      if (std::shared_ptr<ActorCore> actor = weak.lock()) static_cast<ProcessActor&>(*actor).Poke();
    };
  }
  void Closed() override { connection_.store(nullptr, std::memory_order_relaxed); }

  // On the actor's thread, once the object is built.
  void set_connection(ProcessConnection* connection) {
    connection_.store(connection, std::memory_order_release);
  }

 protected:
  // The calls the drain wrote go out together (and cancellations others could not send).
  void AfterDrain() override {
    if (ProcessConnection* connection = connection_.load(std::memory_order_acquire)) {
      connection->Flush();
    }
  }

 private:
  // A thread completing a process's replies (whose waits and order others depend on) does not
  // send; otherwise only an idle process's calls go out on the caller's thread. Only the drain's
  // owner asks (see ThreadActor::SendsOnCaller), and only the owner's drain can close the
  // connection, so `connection_` stays valid through the drain.
  bool SendsOnCaller() const override {
    if (OnAnyReaderThread()) return false;
    const ProcessConnection* connection = connection_.load(std::memory_order_acquire);
    return connection != nullptr && connection->Idle();
  }

  // Set on the actor's thread once the object is built, cleared there when it is destroyed;
  // release/acquire so that a caller draining inline sees the connection whole.
  std::atomic<ProcessConnection*> connection_{nullptr};
  // The earliest deadline of a Stop with a timeout, in Unix nanoseconds (INT64_MAX: none).
  std::atomic<int64_t> kill_deadline_ns_{INT64_MAX};
  absl::Mutex killer_mu_;
  ProcessKiller killer_ ABSL_GUARDED_BY(killer_mu_);
};

class ProcessBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kProcess; }
  bool encodes_calls() const override { return true; }
  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<ProcessActor>(options, *this);
  }
  std::unique_ptr<workers_internal::EncodedObject> MakeEncodedObject(
      const workers_internal::EncodedClass& cls, std::string ctor,
      ActorCore& actor) const override {
    auto& owner = static_cast<ProcessActor&>(actor);
    std::unique_ptr<ProcessConnection> connection =
        ProcessConnection::Open(cls, std::move(ctor), actor.options().limits,
                                actor.options().process_start, &owner, &owner);
    owner.set_connection(connection.get());
    return connection;
  }
};

}  // namespace
}  // namespace concurry::process_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::process_internal::ProcessBackend)

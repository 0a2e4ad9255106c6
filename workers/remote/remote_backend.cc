// Mode::kRemote: each worker in a host process reached over gRPC (docs/remote.md). The actor runs
// on a thread of its own in the caller's process (//workers/thread's ThreadActor), and its object
// is the stream to the worker's host (internal/connection.h): a drain queues the calls it pops for
// the stream and moves on, so calls made back to back are pipelined, while the host runs them one
// at a time in FIFO order and the connection completes their replies. A call made while the
// worker is idle skips the actor's thread: the caller's thread sends it and polls for its reply.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/timer.h"
#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/internal/encoded_object.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/remote/internal/channel.h"
#include "workers/remote/internal/connection.h"
#include "workers/thread/thread_actor.h"

namespace concurry::remote_internal {
namespace {

using workers_internal::ActorCore;

// How long a Stop past its deadline waits for the worker to end once it cancelled the stream.
constexpr absl::Duration kCancelGrace = absl::Milliseconds(100);

// Thread-safety: Stop, Died, Launched and StopDeadline are safe from any thread; set_connection
// and Closed run on the actor's thread.
class RemoteActor final : public workers_internal::ThreadActor, public RemoteOwner {
 public:
  using ThreadActor::ThreadActor;

  // Every Stop bounds how long the host may take to finish: by the Stop's timeout when it has
  // one, and by stop_timeout in any case (Stop(0), which pools use to stop their workers without
  // waiting, included). At that deadline the stream is cancelled, from a timer if the
  // actor's thread is blocked (writing to a host that does not read, or waiting for a constructor);
  // calls not answered fail with StoppedError.
  bool Stop(absl::Duration timeout) override {
    const absl::Time now = absl::Now();
    absl::Time cancel_at = options().stop_timeout == absl::InfiniteDuration()
                               ? absl::InfiniteFuture()
                               : now + options().stop_timeout;
    if (timeout > absl::ZeroDuration()) cancel_at = std::min(cancel_at, now + timeout);
    if (cancel_at != absl::InfiniteFuture()) {
      const int64_t deadline_ns = absl::ToUnixNanos(cancel_at);
      int64_t current = stop_deadline_ns_.load(std::memory_order_relaxed);
      bool earlier = false;
      while (deadline_ns < current) {
        if (stop_deadline_ns_.compare_exchange_weak(current, deadline_ns,
                                                    std::memory_order_relaxed)) {
          earlier = true;
          break;
        }
      }
      // A caller that waits (a finite timeout) cancels at its own deadline and reports that it
      // had to; the timer then only backs it up, a moment later.
      const bool caller_waits = timeout > absl::ZeroDuration() &&
                                timeout != absl::InfiniteDuration() && cancel_at == now + timeout;
      if (earlier) CancelAt(caller_waits ? cancel_at + kCancelGrace : cancel_at);
    }
    // A call waiting for room in the host's queue gives up (a Stop that comes before the stream
    // is open is seen by Launched).
    std::function<void()> interrupt;
    {
      absl::MutexLock lock(&cancel_mu_);
      stop_asked_ = true;
      interrupt = interrupt_;
    }
    if (interrupt) interrupt();
    // A negative timeout waits no more than a zero one.
    timeout = std::max(timeout, absl::ZeroDuration());
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
    // The deadline passed. The actor's thread cancels the stream when it gets to the stop, but it
    // may be blocked meanwhile: waiting for the host to build the object, or writing a call to a
    // host that does not read. Cancel it from here too.
    std::function<void()> cancel;
    {
      absl::MutexLock lock(&cancel_mu_);
      cancel = cancel_;
    }
    if (cancel) cancel();
    stopped_future().Wait(kCancelGrace);
    return false;
  }

  absl::Time StopDeadline() const override {
    const absl::Duration grace = options().stop_timeout;
    const absl::Time own =
        grace == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + grace;
    const int64_t asked = stop_deadline_ns_.load(std::memory_order_relaxed);
    return asked == INT64_MAX ? own : std::min(own, absl::FromUnixNanos(asked));
  }

  // Cancels the stream at `deadline` unless the worker has stopped by then (a timer entry that
  // holds the actor weakly).
  void CancelAt(absl::Time deadline) {
    Timer::Default().ScheduleAfter(std::max(deadline - absl::Now(), absl::ZeroDuration()),
                                   [weak = std::weak_ptr<ActorCore>(shared_from_this())] {
                                     std::shared_ptr<ActorCore> actor = weak.lock();
                                     if (actor == nullptr || actor->stopped_future().Done()) return;
                                     auto& self = static_cast<RemoteActor&>(*actor);
                                     std::function<void()> cancel;
                                     {
                                       absl::MutexLock lock(&self.cancel_mu_);
                                       cancel = self.cancel_;
                                     }
                                     // Not open yet: Launched cancels it when it opens, the
                                     // deadline having passed.
                                     if (cancel) cancel();
                                   });
  }

  void Launched(std::function<void()> cancel, std::function<void()> interrupt) override {
    bool stop_asked;
    {
      absl::MutexLock lock(&cancel_mu_);
      cancel_ = cancel;
      interrupt_ = interrupt;
      stop_asked = stop_asked_;
    }
    if (stop_asked) interrupt();
    // A Stop whose deadline passed while the stream was being opened found nothing to cancel;
    // it is cancelled here instead (a Stop that reads cancel_ after the store above cancels it
    // itself).
    if (stop_deadline_ns_.load(std::memory_order_relaxed) <= absl::ToUnixNanos(absl::Now())) {
      cancel();
    }
  }

  void Died(std::exception_ptr error) override { StopWithError(std::move(error)); }
  void Closed() override { connection_.store(nullptr, std::memory_order_relaxed); }

  // On the actor's thread, once the object is built.
  void set_connection(RemoteConnection* connection) {
    connection_.store(connection, std::memory_order_release);
  }

 protected:
  // A thread completing remote replies does not send (its continuations must not wait); otherwise
  // only an idle worker's calls go out on the caller's thread, which then polls for the reply
  // itself (internal/connection.h). Only the drain's owner asks (ThreadActor::SendsOnCaller), and
  // only the owner's drain can close the connection, so `connection_` stays valid through it.
  bool SendsOnCaller() const override {
    if (OnAnyReaderThread()) return false;
    const RemoteConnection* connection = connection_.load(std::memory_order_acquire);
    return connection != nullptr && connection->Idle();
  }

 private:
  // Set on the actor's thread once the object is built, cleared there when it is destroyed;
  // release/acquire so that a caller sending inline sees the connection whole.
  std::atomic<RemoteConnection*> connection_{nullptr};
  // The earliest deadline a Stop asked for (Unix ns; INT64_MAX: none).
  std::atomic<int64_t> stop_deadline_ns_{INT64_MAX};
  absl::Mutex cancel_mu_;
  // Cancels the stream (Launched); empty before it is open.
  std::function<void()> cancel_ ABSL_GUARDED_BY(cancel_mu_);
  // Stops a call's wait for room in the host's queue (Launched); empty before the stream is open.
  std::function<void()> interrupt_ ABSL_GUARDED_BY(cancel_mu_);
  // A Stop was asked for.
  bool stop_asked_ ABSL_GUARDED_BY(cancel_mu_) = false;
};

// A pool's first host: its address, mixed (a pool is a heap object, so the low bits of its
// address carry little).
uint64_t PoolOffset(const void* pool) {
  uint64_t x = reinterpret_cast<uintptr_t>(pool);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

class RemoteBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kRemote; }
  bool encodes_calls() const override { return true; }

  void Validate(const ResolvedWorkerOptions& options) const override {
    const RemoteOptions& remote = options.remote;
    if (remote.hosts.empty()) {
      throw InvalidOptionError(
          "worker options: Mode::kRemote needs remote.hosts: the \"host:port\" addresses (or a "
          "gRPC target such as \"dns:///workers:7000\") of concurry worker hosts");
    }
    for (const std::string& host : remote.hosts) {
      if (host.empty()) {
        throw InvalidOptionError("worker options: remote.hosts has an empty address");
      }
    }
    ResolveToken(remote);  // Throws for a missing or unreadable token.
    CheckTokenIsSafe(remote);
    if (remote.tls_client_cert.empty() != remote.tls_client_key.empty()) {
      throw InvalidOptionError(
          "worker options: remote.tls_client_cert and remote.tls_client_key go together; set "
          "both or neither");
    }
    if (!remote.tls_client_cert.empty() && remote.tls_root_certs.empty()) {
      throw InvalidOptionError(
          "worker options: remote.tls_client_cert is set without remote.tls_root_certs; a client "
          "certificate needs TLS, which remote.tls_root_certs turns on");
    }
    if (remote.connect_timeout <= absl::ZeroDuration()) {
      throw InvalidOptionError(absl::StrCat("worker options: remote.connect_timeout is ",
                                            absl::FormatDuration(remote.connect_timeout),
                                            "; allowed: > 0"));
    }
    const auto check_duration = [](absl::Duration value, const char* field, absl::Duration min) {
      if (value < min || value == absl::InfiniteDuration()) {
        throw InvalidOptionError(
            absl::StrCat("worker options: remote.", field, " is ", absl::FormatDuration(value),
                         "; allowed: >= ", absl::FormatDuration(min), " and finite"));
      }
    };
    check_duration(remote.connect_attempt_timeout, "connect_attempt_timeout",
                   absl::Milliseconds(100));
    check_duration(remote.reconnect_backoff_initial, "reconnect_backoff_initial",
                   absl::Milliseconds(100));
    check_duration(remote.reconnect_backoff_max, "reconnect_backoff_max",
                   remote.reconnect_backoff_initial);
    // The host expects pings at most every 500 ms (its GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL);
    // closer ones would be counted as abuse by hosts and proxies that limit them.
    check_duration(remote.keepalive_time, "keepalive_time", absl::Milliseconds(500));
    check_duration(remote.keepalive_timeout, "keepalive_timeout", absl::Milliseconds(1));
    // Room for an error reply, which the host sends in place of a reply too large.
    if (remote.max_message_bytes < 4096) {
      throw InvalidOptionError(absl::StrCat("worker options: remote.max_message_bytes is ",
                                            remote.max_message_bytes, "; allowed: >= 4096"));
    }
    if (remote.call_timeout <= absl::ZeroDuration()) {
      throw InvalidOptionError(absl::StrCat("worker options: remote.call_timeout is ",
                                            absl::FormatDuration(remote.call_timeout),
                                            "; allowed: > 0 (absl::InfiniteDuration() for no "
                                            "limit)"));
    }
    if (!options.limits.no_op()) {
      throw InvalidOptionError(
          "worker options: limits are not supported in Mode::kRemote yet (a limit set cannot be "
          "shared with another host)");
    }
  }

  std::shared_ptr<ActorCore> MakeActor(const ResolvedWorkerOptions& options) const override {
    return std::make_shared<RemoteActor>(options, *this);
  }

  std::unique_ptr<workers_internal::EncodedObject> MakeEncodedObject(
      const workers_internal::EncodedClass& cls, std::string ctor,
      ActorCore& actor) const override {
    auto& owner = static_cast<RemoteActor&>(actor);
    // Round-robin placement: worker i of a pool goes to host (offset + i) % hosts, where the
    // offset is the pool's own (from its address), so that pools made at the same time each
    // spread evenly and a replacement goes where the worker it replaces was (when that host is
    // up). Standalone workers take the hosts in turn. PickHost skips hosts that are down.
    const uint64_t turn = actor.pool() != nullptr
                              ? PoolOffset(actor.pool()) + actor.pool_index()
                              : next_host_.fetch_add(1, std::memory_order_relaxed);
    // A host that runs its --max_workers already refuses with RESOURCE_EXHAUSTED: the next hosts
    // in turn order are tried before giving up (each host once).
    const size_t hosts = actor.options().remote.hosts.size();
    for (size_t attempt = 0;; ++attempt) {
      try {
        std::unique_ptr<RemoteConnection> connection = RemoteConnection::Open(
            cls, attempt + 1 < hosts ? ctor : std::move(ctor), actor.options(),
            static_cast<size_t>((turn + attempt) % hosts), &owner, &owner);
        owner.set_connection(connection.get());
        return connection;
      } catch (const StatusError& e) {
        const bool full = e.status().code() == absl::StatusCode::kResourceExhausted &&
                          absl::StrContains(e.status().message(), "--max_workers");
        if (!full || attempt + 1 >= hosts || owner.stop_requested()) throw;
      }
    }
  }

 private:
  mutable std::atomic<uint64_t> next_host_{0};
};

}  // namespace
}  // namespace concurry::remote_internal

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::remote_internal::RemoteBackend)

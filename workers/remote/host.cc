#include "workers/remote/host.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "workers/internal/cancel_signal.h"
#include "workers/registration.h"
#include "workers/remote/internal/auth.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/remote.pb.h"

namespace concurry::remote {
namespace {

using v1::Call;
using v1::ClientFrame;
using v1::HostFrame;
using v1::StatsReply;
using v1::StatsRequest;
using workers_internal::EncodedClass;

// The range of --client_lease_ms (HostOptions::client_lease).
constexpr absl::Duration kMinClientLease = absl::Milliseconds(500);
constexpr absl::Duration kMaxClientLease = absl::Hours(24);
// gRPC counts a "strike" for a client ping closer than this to the one before. Clients ping at
// most every 500 ms (RemoteOptions::keepalive_time), which this leaves room for; and strikes
// never cost a connection here (GRPC_ARG_HTTP2_MAX_PING_STRIKES is 0: no limit), so that a
// client that keeps its dead-host bound short is never answered with GOAWAY too_many_pings.
constexpr int kMinClientPingIntervalMs = 250;

std::string ErrorReply(absl::Status status) {
  return workers_internal::EncodeErrorReply(
      std::make_exception_ptr(StatusError(std::move(status))));
}

// The queued calls of one worker may hold up to this many times --max_message_bytes, or its share
// of --max_queued_mb if less (QueueBytesPerWorker), and at most kMaxQueuedCalls calls; past it the
// stream's handler stops reading, so that gRPC's flow control makes the client's writes wait
// instead of the host's memory growing.
constexpr int64_t kQueuedBytesPerMessageLimit = 2;
constexpr size_t kMaxQueuedCalls = 1024;
// Our client writes a call before any cancellation of it, but another client may not: a Cancel
// for an id at most this far past the last call received is kept until that call arrives.
// Further ones are ignored, so Cancels cannot grow the host's memory.
constexpr uint64_t kEarlyCancelWindow = 64;
// The range of the host's options: a message must hold an error reply, and the thread and stream
// caps (2 x max_workers + spares) and the memory quota must not overflow.
constexpr int kMinMessageBytes = 4096;
constexpr int kMaxWorkersLimit = 1 << 20;
constexpr int64_t kMaxGrpcMemoryLimit = int64_t{1} << 40;
// How often a handler waiting for room in its queue looks whether its stream was cancelled.
constexpr absl::Duration kCancelCheckInterval = absl::Milliseconds(100);
// How long a call runs before the thread that does not run it reads the frames behind it. A short
// call's thread reads the next frame itself: a second thread reading the stream while the first
// writes a reply makes gRPC hand the stream's work to its executor thread, which costs wake-ups
// on every call.
constexpr absl::Duration kReadBehind = absl::Milliseconds(2);
// While calls started within this, the thread that neither reads nor runs looks every kReadBehind
// whether the running call got long; after it, it sleeps until a call starts.
constexpr absl::Duration kActiveSpell = absl::Milliseconds(100);

// Now on the steady clock, for the short timings of a worker's threads: a step of the wall clock
// must not stall them.
absl::Duration SteadyNow() {
  return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

// The bytes of calls one worker may queue: twice the largest message, or the worker's share of the
// host-wide budget when that is less (Start checks that it holds one message of the largest size).
int64_t QueueBytesPerWorker(const HostOptions& options) {
  const int64_t per_message = kQueuedBytesPerMessageLimit * options.max_message_bytes;
  if (options.max_queued_bytes == 0) return per_message;
  return std::min(per_message, options.max_queued_bytes / options.max_workers);
}

// Milliseconds for a gRPC channel argument (the options' ranges keep them within an int).
int Millis(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

// A call's timeout_us as a duration (0: none); values past what int64 holds count as the most.
absl::Duration CallTimeout(const Call& call) {
  return absl::Microseconds(static_cast<int64_t>(
      std::min<uint64_t>(call.timeout_us(), std::numeric_limits<int64_t>::max())));
}

// When a call received at `received` must have started: its timeout later (absl::Time
// saturates), or never when it has none.
absl::Time CallDeadline(const Call& call, absl::Time received) {
  if (call.timeout_us() == 0) return absl::InfiniteFuture();
  return received + CallTimeout(call);
}

// The error reply of a call that waited in the queue past its deadline (TimeoutError, as for any
// wait that ran out), or nullopt when the call may still start.
std::optional<std::string> ExpiredReply(const Call& call, absl::Time deadline) {
  if (absl::Now() < deadline) return std::nullopt;
  return workers_internal::EncodeErrorReply(std::make_exception_ptr(TimeoutError(absl::StrCat(
      "the call of ", call.method(), " waited in the worker host's queue past its deadline (",
      absl::FormatDuration(CallTimeout(call)),
      " after the host received it, remote.call_timeout); it was not started"))));
}

// One entry of a worker's queue: a call, or a frame the host cannot use (answered in order with
// an error reply).
struct Queued {
  enum class Kind { kCall, kBadFrame };
  Kind kind = Kind::kCall;
  Call call;
  // Set by a Cancel that arrived before the call started.
  bool cancelled = false;
  // What the entry counts against the queue's byte limit.
  int64_t bytes = 0;
  // Past this, the call is answered with a TimeoutError instead of being started.
  absl::Time deadline = absl::InfiniteFuture();
};

// Whether a Cancel named the call running now: what its method sees through
// this_call::CancelRequested(); also set when the client is gone. Set by the reader, read by the
// runner.
class RunningCallSignal final : public workers_internal::CancelSignal {
 public:
  // Release/acquire: the flag carries no other data, but the pairing keeps the reasoning simple.
  bool CancelRequested() const noexcept override {
    return requested_.load(std::memory_order_acquire);
  }
  void Request() { requested_.store(true, std::memory_order_release); }
  // Only between calls (the runner's role is free), so no method can miss a Request for it.
  void Reset() { requested_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> requested_{false};
};

// The calls of one worker. Two threads serve it, the stream's handler thread and one more, and
// take turns at two roles: the reader reads the next frame, the runner runs the first queued call
// and writes its reply. A thread that reads a call while no call runs runs it itself, and then
// reads the next frame: the call does not wait for another thread to wake up, and one thread uses
// the stream at a time. Once a call has run kReadBehind, the other thread takes over the reading,
// so that frames (cancellations, a stop, the calls behind it) are still read while it runs. One
// reader and one runner at a time: calls run one by one in FIFO order, and the stream has one
// reader and one writer.
class Session {
 public:
  Session(const EncodedClass& cls, void* object, grpc::ServerContext* context,
          grpc::ServerReaderWriter<HostFrame, ClientFrame>* stream, int max_message_bytes,
          int64_t client_max_message_bytes, int64_t max_queued_bytes, std::atomic<int64_t>* calls,
          std::atomic<int64_t>* orphans)
      : cls_(cls),
        object_(object),
        context_(context),
        stream_(stream),
        max_message_bytes_(max_message_bytes),
        client_max_message_bytes_(client_max_message_bytes),
        reply_limit_(client_max_message_bytes > 0
                         ? std::min<int64_t>(max_message_bytes, client_max_message_bytes)
                         : max_message_bytes),
        max_queued_bytes_(max_queued_bytes),
        calls_(calls),
        orphans_(orphans) {}

  // Reads frames until the stream ends, running calls meanwhile; then destroys the object.
  void Serve() {
    std::thread other([this] { Work(); });
    Work();
    other.join();
    bool orphaned;
    {
      absl::MutexLock lock(&mu_);
      orphaned = orphaned_;
    }
    if (orphaned) orphans_->fetch_sub(1, std::memory_order_relaxed);
    cls_.destroy(object_);
  }

 private:
  // What either thread does: take the runner's role when a call waits and none runs, else the
  // reader's when nobody reads, the stream goes on and the queue has room; return once the
  // stream has ended and nothing is left for this thread.
  void Work() ABSL_LOCKS_EXCLUDED(mu_) {
    mu_.Lock();
    for (;;) {
      WaitForRoleLocked();
      if (CanRunLocked()) {
        Queued queued = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= queued.bytes;
        const bool stopping = stop_;
        running_ = true;
        run_started_ = SteadyNow();
        ++starts_;
        running_id_ = queued.kind == Queued::Kind::kCall ? queued.call.id() : UINT64_MAX;
        running_signal_.Reset();
        mu_.Unlock();
        const bool written = Answer(queued, stopping);
        mu_.Lock();
        running_ = false;
        // The stream is over: nothing more is answered (the reader sees the end too).
        if (!written) runner_done_ = true;
      } else if (CanReadLocked()) {
        reading_ = true;
        mu_.Unlock();
        ClientFrame frame;
        const bool got = stream_->Read(&frame);
        mu_.Lock();
        reading_ = false;
        if (got) {
          AcceptLocked(frame);
        } else {
          EndLocked();
        }
      } else if (ended_) {
        break;  // The other thread answers what is left, if anything.
      }
    }
    mu_.Unlock();
  }

  bool CanRunLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !running_ && !runner_done_ && !gone_ && !queue_.empty();
  }
  // The thread that runs a call reads the next frame itself when the call is done; the other
  // thread reads behind it only when calls wait behind it (they, not the runner, come next) or
  // once it has run kReadBehind.
  bool CanReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !reading_ && !ended_ && HasRoomLocked() &&
           (!running_ || !queue_.empty() || SteadyNow() >= run_started_ + kReadBehind);
  }
  bool HasRoleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return CanRunLocked() || CanReadLocked() || ended_;
  }
  bool HasRoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return runner_done_ || (queued_bytes_ < max_queued_bytes_ && queue_.size() < kMaxQueuedCalls);
  }
  // What ends a wait for a role: a role, or a call that starts when the waiter asked for that.
  bool WakesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return HasRoleLocked() || starts_ >= wake_at_start_;
  }

  void WaitForRoleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!HasRoleLocked()) {
      const absl::Duration now = SteadyNow();
      absl::Duration timeout = absl::InfiniteDuration();
      bool check_cancel = false;
      if (running_ && !reading_ && !ended_ && HasRoomLocked()) {
        // Read behind the running call once it has run kReadBehind (or at once when the queue
        // gets a call, which CanReadLocked sees).
        timeout = run_started_ + kReadBehind - now;
      } else if (!reading_ && !ended_) {
        // Nobody reads: the queue is full behind a running call (back-pressure: gRPC's flow
        // control makes the client's writes wait). The next call to start makes room. A client
        // that gives up cancels the stream, which only a Read would show; look for it now and
        // then, so that its queued calls are dropped.
        timeout = kCancelCheckInterval;
        check_cancel = true;
        wake_at_start_ = starts_ + 1;
      } else if (now - run_started_ < kActiveSpell) {
        // The other thread reads and calls come often: the next one may run long. Looking every
        // kReadBehind (so reading behind starts 2 to 4 ms into a long call) costs fewer wake-ups
        // than being woken by every call.
        timeout = kReadBehind;
      } else {
        wake_at_start_ = starts_ + 1;  // Idle: woken when a call starts.
      }
      const bool woken = mu_.AwaitWithTimeout(absl::Condition(this, &Session::WakesLocked),
                                              std::max(timeout, absl::ZeroDuration()));
      wake_at_start_ = UINT64_MAX;
      if (!woken && check_cancel && context_->IsCancelled()) EndLocked();
    }
  }

  // Queues what the reader read.
  void AcceptLocked(ClientFrame& frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // The runner has given up (its write failed): what comes now is not answered, nor kept.
    if (runner_done_) return;
    if (frame.has_call()) {
      Queued queued;
      queued.call = std::move(*frame.mutable_call());
      queued.deadline = CallDeadline(queued.call, absl::Now());
      const uint64_t id = queued.call.id();
      if (id >= next_call_id_) next_call_id_ = id + 1;
      if (!early_cancels_.empty()) {
        queued.cancelled = early_cancels_.erase(id) > 0;
        // Ids at or below this one will not come again (a client numbers its calls in order).
        absl::erase_if(early_cancels_, [&](uint64_t early) { return early < next_call_id_; });
      }
      if (queued.cancelled) {
        queued.call.clear_args();
      } else {
        queued.bytes = static_cast<int64_t>(queued.call.ByteSizeLong());
        queued_bytes_ += queued.bytes;
      }
      queue_.push_back(std::move(queued));
    } else if (frame.has_cancel()) {
      CancelLocked(frame.cancel().id());
    } else if (frame.has_stop()) {
      stop_ = true;
    } else {
      // A second Create, or a frame of a kind this host does not know: answered in order with
      // an error reply. It has no id of its own; the reply carries UINT64_MAX.
      Queued queued;
      queued.kind = Queued::Kind::kBadFrame;
      queue_.push_back(std::move(queued));
    }
  }

  // The stream ended (or was cancelled). Without a Stop, the client is gone: nobody waits for the
  // queued calls. A call still running makes this worker an orphan until it returns.
  void EndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_) return;
    ended_ = true;
    gone_ = !stop_;
    if (running_) {
      orphaned_ = true;
      orphans_->fetch_add(1, std::memory_order_relaxed);
      // Nobody waits for its reply any more: a method that asks this_call::CancelRequested() may
      // stop early, so that the orphan does not outlive its client for long. (After a Stop, the
      // running call is finished as in every mode.)
      if (gone_) running_signal_.Request();
    }
  }

  // Marks call `id` cancelled if it is queued, tells the method if it is the running call, or
  // remembers it if it is one of the next kEarlyCancelWindow ids not received yet. Others (calls
  // already answered, ids far ahead) are ignored: Cancels cannot grow the host's memory past the
  // queue and the window.
  void CancelLocked(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (id >= next_call_id_) {
      if (id - next_call_id_ < kEarlyCancelWindow) early_cancels_.insert(id);
      return;
    }
    if (running_ && running_id_ == id) {
      running_signal_.Request();
      return;
    }
    // Cancels usually name recent calls: search from the back.
    for (auto it = queue_.rbegin(); it != queue_.rend(); ++it) {
      if (it->kind != Queued::Kind::kCall || it->call.id() != id) continue;
      if (!it->cancelled) {
        it->cancelled = true;
        // Its arguments will never be used: free them now.
        it->call.clear_args();
        queued_bytes_ -= it->bytes;
        it->bytes = 0;
      }
      return;
    }
  }

  // Answers one queued entry: runs the call (or not, when it was cancelled or the worker stops)
  // and writes the reply. False when the write failed: the stream is over.
  bool Answer(const Queued& queued, bool stopping) ABSL_LOCKS_EXCLUDED(mu_) {
    const Call& call = queued.call;
    std::string reply;
    if (queued.kind == Queued::Kind::kBadFrame) {
      reply = ErrorReply(absl::InvalidArgumentError(
          "the worker host received a frame that is neither a call, a cancellation nor a stop "
          "after the worker was created"));
    } else if (stopping || queued.cancelled) {
      reply = workers_internal::EncodeErrorReply(std::make_exception_ptr(
          CancelledError("the call was cancelled before it started on the worker host")));
    } else if (std::optional<std::string> expired = ExpiredReply(call, queued.deadline)) {
      reply = std::move(*expired);
    } else {
      // Unknown methods and undecodable arguments fail the future: the reply says so.
      const workers_internal::ScopedCancelSignal running(&running_signal_);
      Future<std::string> result = cls_.invoke(object_, call.method(), call.args());
      result.Wait();
      if (std::exception_ptr error = result.Error()) {
        reply = workers_internal::EncodeErrorReply(error);
      } else {
        reply = std::move(result).Result();
      }
    }
    HostFrame frame;
    frame.mutable_reply()->set_id(queued.kind == Queued::Kind::kCall ? call.id() : UINT64_MAX);
    frame.mutable_reply()->set_reply(std::move(reply));
    // A reply gRPC would refuse to send would end the stream, and the worker with it: the
    // caller gets an error instead.
    if (frame.ByteSizeLong() > static_cast<size_t>(reply_limit_)) {
      const size_t size = frame.ByteSizeLong();
      frame.mutable_reply()->set_reply(ErrorReply(absl::ResourceExhaustedError(absl::StrCat(
          "the reply of ", call.method(), " is ", size, " bytes, more than the ", reply_limit_,
          " allowed (the worker host's --max_message_bytes is ", max_message_bytes_,
          client_max_message_bytes_ > 0
              ? absl::StrCat(", the client's remote.max_message_bytes is ",
                             client_max_message_bytes_)
              : std::string(),
          ")"))));
    }
    calls_->fetch_add(1, std::memory_order_relaxed);
    // A failed write: the stream is over, and the reader sees it too.
    return stream_->Write(frame);
  }

  const EncodedClass& cls_;
  void* const object_;
  grpc::ServerContext* const context_;
  grpc::ServerReaderWriter<HostFrame, ClientFrame>* const stream_;
  const int max_message_bytes_;
  // What the client's Create said it accepts (0: not said), and the smaller of the two limits.
  const int64_t client_max_message_bytes_;
  const int64_t reply_limit_;
  const int64_t max_queued_bytes_;
  std::atomic<int64_t>* const calls_;
  std::atomic<int64_t>* const orphans_;

  absl::Mutex mu_;
  // Calls received and not started, in order; at most about max_queued_bytes_ and
  // kMaxQueuedCalls of them (the handler stops reading at either).
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // The id after the highest call received.
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Cancels that came before their call: ids in [next_call_id_, next_call_id_ + window) when they
  // came, dropped once passed, so at most kEarlyCancelWindow of them.
  absl::flat_hash_set<uint64_t> early_cancels_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The stream has ended: nothing more is read.
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  // Ended without a Stop: the queued calls are dropped.
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  // A reply could not be written (the stream is over): nothing more is answered.
  bool runner_done_ ABSL_GUARDED_BY(mu_) = false;
  // A thread holds the reader's role; one holds the runner's.
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  // When the running (or last) call started (SteadyNow), and how many calls started so far.
  absl::Duration run_started_ ABSL_GUARDED_BY(mu_) = -absl::InfiniteDuration();
  uint64_t starts_ ABSL_GUARDED_BY(mu_) = 0;
  // A thread waiting for a role is also woken once starts_ reaches this (UINT64_MAX: not).
  uint64_t wake_at_start_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
  // The id of the call running (UINT64_MAX for a bad frame's answer), and what a Cancel of it
  // sets. The signal is atomic: the runner reads it without mu_ while the method runs.
  uint64_t running_id_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
  RunningCallSignal running_signal_;
  // The stream ended while a call ran: counted in orphans_ until the session ends.
  bool orphaned_ ABSL_GUARDED_BY(mu_) = false;
};

class Service final : public v1::WorkerHost::Service {
 public:
  explicit Service(const HostOptions& options)
      : options_(options), queue_bytes_(QueueBytesPerWorker(options)) {}

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<HostFrame, ClientFrame>* stream) override {
    if (grpc::Status denied = Authenticate(*context); !denied.ok()) return denied;
    // A slot among max_workers, held until the worker is gone.
    if (live_.fetch_add(1, std::memory_order_acq_rel) >= options_.max_workers) {
      live_.fetch_sub(1, std::memory_order_acq_rel);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("the worker host runs its maximum of ", options_.max_workers,
                                       " workers (--max_workers)"));
    }
    struct Release {
      Service* service;
      ~Release() { service->live_.fetch_sub(1, std::memory_order_acq_rel); }
    } release{this};

    ClientFrame first;
    {
      // The slot is held from here: a stream that never sends its Create is cancelled after
      // create_timeout, so that idle streams cannot keep everyone else out.
      absl::Notification read;
      std::thread deadline([&] {
        if (!read.WaitForNotificationWithTimeout(options_.create_timeout)) context->TryCancel();
      });
      const bool got = stream->Read(&first);
      read.Notify();
      deadline.join();
      if (!got) {
        if (!context->IsCancelled()) return grpc::Status::OK;  // The client left before asking.
        return grpc::Status(
            grpc::StatusCode::DEADLINE_EXCEEDED,
            absl::StrCat("the worker host got no Create within ",
                         absl::FormatDuration(options_.create_timeout), " (--create_timeout_ms)"));
      }
    }
    if (!first.has_create()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message of a worker stream must be a Create");
    }
    const std::string& name = first.create().class_name();
    const EncodedClass* cls = name == workers_internal::kTaskHostClassName
                                  ? &workers_internal::TaskHostClass()
                                  : workers_internal::FindEncodedClass(name);
    if (cls == nullptr) {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("the worker host does not know the worker class \"", name,
                       "\": it is not registered (CONCURRY_REGISTER_WORKER) in the host's "
                       "program; add the library that registers it to the host's deps"));
    }
    void* object = nullptr;
    HostFrame created;
    created.mutable_created()->set_max_message_bytes(options_.max_message_bytes);
    created.mutable_created()->set_queue_bytes(queue_bytes_);
    created.mutable_created()->set_queue_calls(static_cast<int64_t>(kMaxQueuedCalls));
    try {
      object = cls->construct(first.create().constructor());
      created.mutable_created()->set_reply(workers_internal::EncodeReply());
    } catch (...) {
      created.mutable_created()->set_reply(
          workers_internal::EncodeErrorReply(std::current_exception()));
    }
    if (!stream->Write(created) || object == nullptr) {
      if (object != nullptr) cls->destroy(object);
      return grpc::Status::OK;
    }
    created_.fetch_add(1, std::memory_order_relaxed);
    // A reply larger than what the client accepts would end the stream at the client: it is
    // held to the smaller limit (a client that does not say is held to the host's).
    const int64_t client_max = first.create().max_message_bytes();
    Session(*cls, object, context, stream, options_.max_message_bytes, client_max, queue_bytes_,
            &calls_, &orphans_)
        .Serve();
    return grpc::Status::OK;
  }

  grpc::Status Stats(grpc::ServerContext* context, const StatsRequest* /*request*/,
                     StatsReply* reply) override {
    if (grpc::Status denied = Authenticate(*context); !denied.ok()) return denied;
    reply->set_workers(live_.load(std::memory_order_relaxed));
    reply->set_workers_created(created_.load(std::memory_order_relaxed));
    reply->set_calls(calls_.load(std::memory_order_relaxed));
    reply->set_max_workers(options_.max_workers);
    reply->set_orphans(orphans_.load(std::memory_order_relaxed));
    return grpc::Status::OK;
  }

  int64_t live() const { return live_.load(std::memory_order_relaxed); }

 private:
  grpc::Status Authenticate(const grpc::ServerContext& context) const {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find(remote_internal::kAuthorizationKey);
    if (it == metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the worker host requires \"authorization: Bearer <token>\" metadata; "
                          "the call had none (set RemoteOptions::token)");
    }
    if (!remote_internal::BearerTokenMatches(
            absl::string_view(it->second.data(), it->second.size()), options_.token)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the worker host refused the call: wrong token");
    }
    return grpc::Status::OK;
  }

  const HostOptions options_;
  // What each worker may queue (QueueBytesPerWorker), announced in Created.
  const int64_t queue_bytes_;
  // Streams inside Connect (workers alive or being built).
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> created_{0};
  std::atomic<int64_t> calls_{0};
  std::atomic<int64_t> orphans_{0};
};

// Checks the token on TLS hosts when a call's metadata arrives, before gRPC dispatches it to a
// handler (gRPC runs metadata processors only for secure credentials). The handlers check again,
// which is what protects plaintext hosts. The health service is left open, as documented.
class TokenProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenProcessor(std::string token) : token_(std::move(token)) {}

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* /*context*/,
                       OutputMetadata* /*consumed*/, OutputMetadata* /*response*/) override {
    auto path = auth_metadata.find(":path");
    if (path != auth_metadata.end() &&
        absl::StartsWith(absl::string_view(path->second.data(), path->second.size()),
                         "/grpc.health.v1.Health/")) {
      return grpc::Status::OK;
    }
    auto it = auth_metadata.find(remote_internal::kAuthorizationKey);
    if (it == auth_metadata.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the worker host requires \"authorization: Bearer <token>\" metadata; "
                          "the call had none (set RemoteOptions::token); refused before dispatch");
    }
    if (!remote_internal::BearerTokenMatches(
            absl::string_view(it->second.data(), it->second.size()), token_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "the worker host refused the call: wrong token; refused before dispatch");
    }
    return grpc::Status::OK;
  }

 private:
  const std::string token_;
};

class HostImpl final : public remote::WorkerHost {
 public:
  explicit HostImpl(const HostOptions& options) : service_(options) {}
  ~HostImpl() override {
    if (server_ != nullptr) Shutdown(absl::Seconds(5));
  }

  void Build(const HostOptions& options) {
    grpc::ServerBuilder builder;
    std::shared_ptr<grpc::ServerCredentials> credentials;
    if (options.tls_cert_pem.empty()) {
      credentials = grpc::InsecureServerCredentials();
    } else {
      grpc::SslServerCredentialsOptions ssl(
          options.tls_client_ca_pem.empty()
              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      ssl.pem_root_certs = options.tls_client_ca_pem;
      ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
      credentials = grpc::SslServerCredentials(ssl);
      credentials->SetAuthMetadataProcessor(std::make_shared<TokenProcessor>(options.token));
    }
    builder.AddListeningPort(options.listen, credentials, &port_);
    builder.RegisterService(&service_);
    builder.SetMaxReceiveMessageSize(options.max_message_bytes);
    builder.SetMaxSendMessageSize(options.max_message_bytes);
    // Bounds on what clients can make the host hold: gRPC's buffers, its threads (one per open
    // stream or unary call, a worker's runner thread is apart), and streams per connection.
    grpc::ResourceQuota quota("concurry_host");
    quota.Resize(static_cast<size_t>(
        options.max_grpc_memory_bytes > 0
            ? options.max_grpc_memory_bytes
            : std::max(kDefaultGrpcMemoryBytes, 4 * int64_t{options.max_message_bytes})));
    quota.SetMaxThreads(2 * options.max_workers + kSpareThreads);
    builder.SetResourceQuota(quota);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                               options.max_workers + kSpareStreams);
    // The client lease: a ping after a third of it without traffic, and the connection (every
    // stream on it, so every worker of that client) is dropped when the ping is not answered
    // within the rest. Connections without a stream are pinged too (few bytes, and an idle
    // client's dead connection is closed rather than kept).
    const absl::Duration ping_after = options.client_lease / 3;
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(ping_after));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                               Millis(options.client_lease - ping_after));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // Keep pinging a client that sends nothing (gRPC would stop after 2 pings without data).
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                               kMinClientPingIntervalMs);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    {
      // gRPC's standard health service is switched on by a process-wide flag that BuildAndStart
      // reads: it is turned on for this build only, and put back as it was, so that other servers
      // of the program are not changed.
      static absl::Mutex health_flag_mu(absl::kConstInit);
      absl::MutexLock lock(&health_flag_mu);
      const bool was_enabled = grpc::DefaultHealthCheckServiceEnabled();
      grpc::EnableDefaultHealthCheckService(true);
      server_ = builder.BuildAndStart();
      grpc::EnableDefaultHealthCheckService(was_enabled);
    }
    if (server_ == nullptr || port_ == 0) {
      throw StatusError(absl::UnavailableError(
          absl::StrCat("the worker host could not listen on \"", options.listen,
                       "\" (address in use, or not an address of this machine)")));
    }
  }

  int port() const override { return port_; }
  void Wait() override { server_->Wait(); }
  void Shutdown(absl::Duration grace) override {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    // NOT_SERVING first, so that probes stop sending work while the open streams end.
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();
    }
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  }
  int64_t live_workers() const override { return service_.live(); }

 private:
  // gRPC's memory when HostOptions::max_grpc_memory_bytes is 0 (and at least 4 messages).
  static constexpr int64_t kDefaultGrpcMemoryBytes = int64_t{256} << 20;
  // Threads and streams beyond those of max_workers workers: Stats, health checks, streams that
  // are refused.
  static constexpr int kSpareThreads = 16;
  static constexpr int kSpareStreams = 8;

  Service service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

bool IsLoopbackAddress(const std::string& address) {
  absl::string_view host = address;
  // A Unix socket is not reachable from other machines.
  if (absl::StartsWith(host, "unix:") || absl::StartsWith(host, "unix-abstract:")) return true;
  if (absl::ConsumePrefix(&host, "[")) {
    // "[v6]:port"
    const size_t close = host.find(']');
    if (close == absl::string_view::npos) return false;
    host = host.substr(0, close);
  } else if (const size_t colon = host.rfind(':');
             colon != absl::string_view::npos && host.find(':') == colon) {
    // "v4:port" or "name:port"; a bare v6 address (several colons) has no port to strip.
    host = host.substr(0, colon);
  }
  if (host == "localhost") return true;
  const std::string text(host);
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;  // 127.0.0.0/8
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

std::unique_ptr<WorkerHost> WorkerHost::Start(const HostOptions& options) {
  if (options.token.empty()) {
    throw InvalidOptionError(
        "worker host: no token; every call must carry a shared secret (--token_file)");
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    throw InvalidOptionError(
        "worker host: TLS needs both a certificate and its key (--tls_cert and --tls_key)");
  }
  // Bounds that keep the arithmetic on them (thread and stream caps, queue bytes) in range, and
  // leave room for an error reply in any message.
  if (options.max_message_bytes < kMinMessageBytes) {
    throw InvalidOptionError(
        absl::StrCat("worker host: max_message_bytes (--max_message_bytes) is ",
                     options.max_message_bytes, "; allowed: >= ", kMinMessageBytes));
  }
  if (options.max_workers <= 0 || options.max_workers > kMaxWorkersLimit) {
    throw InvalidOptionError(absl::StrCat("worker host: max_workers (--max_workers) is ",
                                          options.max_workers, "; allowed: 1 to ",
                                          kMaxWorkersLimit));
  }
  if (options.max_grpc_memory_bytes < 0 || options.max_grpc_memory_bytes > kMaxGrpcMemoryLimit) {
    throw InvalidOptionError(absl::StrCat("worker host: max_grpc_memory_bytes is ",
                                          options.max_grpc_memory_bytes,
                                          "; allowed: 0 (automatic) to ", kMaxGrpcMemoryLimit));
  }
  if (options.create_timeout <= absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat("worker host: create_timeout (",
                                          absl::FormatDuration(options.create_timeout),
                                          ") must be > 0"));
  }
  if (options.max_queued_bytes < 0 || options.max_queued_bytes > kMaxGrpcMemoryLimit) {
    throw InvalidOptionError(absl::StrCat("worker host: max_queued_bytes (--max_queued_mb) is ",
                                          options.max_queued_bytes, "; allowed: 0 (no host-wide ",
                                          "bound) to ", kMaxGrpcMemoryLimit));
  }
  if (options.max_queued_bytes > 0 &&
      options.max_queued_bytes / options.max_workers < options.max_message_bytes) {
    throw InvalidOptionError(absl::StrCat(
        "worker host: max_queued_bytes (--max_queued_mb) is ", options.max_queued_bytes,
        ", which leaves each of max_workers (--max_workers) ", options.max_workers,
        " workers less than one message of max_message_bytes (--max_message_bytes) ",
        options.max_message_bytes, "; allowed: 0, or at least max_workers x max_message_bytes = ",
        int64_t{options.max_workers} * options.max_message_bytes));
  }
  if (options.client_lease < kMinClientLease || options.client_lease > kMaxClientLease) {
    throw InvalidOptionError(absl::StrCat("worker host: client_lease (--client_lease_ms) is ",
                                          absl::FormatDuration(options.client_lease),
                                          "; allowed: ", absl::FormatDuration(kMinClientLease),
                                          " to ", absl::FormatDuration(kMaxClientLease)));
  }
  if (!options.tls_client_ca_pem.empty() && options.tls_cert_pem.empty()) {
    throw InvalidOptionError(
        "worker host: a client CA (--tls_client_ca) needs TLS (--tls_cert and --tls_key)");
  }
  if (options.tls_cert_pem.empty() && !IsLoopbackAddress(options.listen)) {
    std::fprintf(stderr,
                 "WARNING: concurry worker host listens on %s WITHOUT TLS: tokens and worker data "
                 "cross the network in plaintext. Give --tls_cert and --tls_key.\n",
                 options.listen.c_str());
  }
  auto host = std::make_unique<HostImpl>(options);
  host->Build(options);
  return host;
}

}  // namespace concurry::remote

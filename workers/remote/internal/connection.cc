#include "workers/remote/internal/connection.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/timer.h"
#include "grpcpp/grpcpp.h"
#include "workers/internal/actor.h"
#include "workers/remote/internal/channel.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/remote.pb.h"

namespace concurry::remote_internal {
namespace {

using remote::v1::ClientFrame;
using remote::v1::HostFrame;

// The context of the connection whose reader the calling thread is.
thread_local const void* reader_context = nullptr;

// How long a Stop that cancelled the stream waits for the reader to see it end.
constexpr absl::Duration kCancelWait = absl::Seconds(10);

absl::Status ToAbsl(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace

std::exception_ptr StreamEndedError(const std::string& worker, absl::StatusCode code,
                                    const std::string& message, const std::string& broken) {
  if (!broken.empty()) {
    return std::make_exception_ptr(CrashedError(absl::StrCat(
        "the remote ", worker, " is gone: ", broken, "; the calls it had not answered failed")));
  }
  const std::string text =
      absl::StrCat("the remote ", worker, " is gone: ", absl::StatusCodeToString(code), ": ",
                   message, "; the calls it had not answered failed");
  switch (code) {
    // The connection or the host failed: the worker crashed, as a process worker does.
    case absl::StatusCode::kOk:  // The host ended the stream without being asked to.
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    // Not asked for by this client (its own cancellations come with `stopping` set): the host
    // cancelled it, as one that shuts down does.
    case absl::StatusCode::kCancelled:
      return std::make_exception_ptr(CrashedError(text));
    // Anything else says why (RESOURCE_EXHAUSTED, UNAUTHENTICATED, PERMISSION_DENIED,
    // DEADLINE_EXCEEDED, ...): the code stays visible to the caller.
    default:
      return std::make_exception_ptr(StatusError(absl::Status(code, text)));
  }
}

bool OnReaderThreadOf(const void* context) {
  return context != nullptr && reader_context == context;
}

// What the connection shares with its reader thread, which may outlive it (detached when a
// reply's continuation on that thread never returns).
//
// Thread-safety: `target`, `class_name`, `context_tag`, `channel`, `stub` and `stream` are set in
// Open before any other thread sees the state and never change. `context` is used by the actor's
// thread and the reader, and TryCancel'led from any thread (which gRPC allows). The actor's thread
// writes to the stream (Open, Invoke, Flush, the destructor), a thread cancelling a call may write
// the cancellation, and the reader finishes it; all under `write_mu`.
struct StreamState {
  // A call sent and not answered yet.
  struct PendingCall {
    uint64_t id;
    Promise<std::string> promise;
    // The call's remote.call_timeout entry in Timer::Default() (sequence 0: none).
    Timer::Id timer;
    // The call's serialized size, counted in `unanswered_bytes` until its reply comes.
    int64_t bytes = 0;
    // The call's deadline passed: `promise` failed and was moved out, and the reply that may
    // still come for `id` is dropped. The entry stays so that replies keep matching their calls.
    bool timed_out = false;
  };

  // Sends a cancellation for call `id`: written at once by a thread that finds the stream free,
  // else queued for the actor's thread, which writes it at its next Flush. Any thread. A
  // reader thread never writes: a write may block until the host reads, and the reader blocked
  // that way could deadlock with a host waiting for the reader to take a reply.
  void Cancel(uint64_t id) ABSL_LOCKS_EXCLUDED(write_mu, mu);
  // Fails call `id` with TimeoutError if it is still waiting for its reply, and queues its
  // cancellation for the host. Called by the timer at the call's deadline.
  void TimeOut(uint64_t id, const std::string& method, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(write_mu, mu);
  // Writes the cancellations asked for meanwhile.
  void WriteCancelsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu) ABSL_LOCKS_EXCLUDED(mu);
  // Cancels the stream for a Stop past its deadline (any thread): what it had not answered, and
  // a Create in progress, fail with StoppedError.
  void CancelForStop() ABSL_LOCKS_EXCLUDED(mu);
  // A Stop was asked for (any thread): a call waiting for room in the host's queue gives up.
  void InterruptForStop() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    stop_asked = true;
  }
  // Whether a call of `bytes` fits in what the host said it queues (a call always fits when
  // none is unanswered).
  bool FitsLocked(int64_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (pending.empty()) return true;
    return (queue_bytes <= 0 || unanswered_bytes + bytes <= queue_bytes) &&
           (queue_calls <= 0 || static_cast<int64_t>(pending.size()) < queue_calls);
  }
  // "worker app::Counter on host 127.0.0.1:7000".
  std::string Describe() const { return absl::StrCat("worker ", class_name, " on host ", target); }

  std::string target;
  std::string class_name;
  const void* context_tag = nullptr;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<remote::v1::WorkerHost::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<ClientFrame, HostFrame>> stream;

  // Held while writing to the stream (one write at a time, as gRPC requires), and by the reader
  // while it finishes the stream.
  absl::Mutex write_mu ABSL_ACQUIRED_BEFORE(mu);
  uint64_t next_id ABSL_GUARDED_BY(write_mu) = 0;
  // Set once nothing may be written any more: the Stop was sent, or the reader finished the
  // stream (set before Finish, so no write follows it).
  bool writes_done ABSL_GUARDED_BY(write_mu) = false;

  absl::Mutex mu;
  std::vector<uint64_t> cancels ABSL_GUARDED_BY(mu);
  // Replies awaited, in call order (the host answers in that order).
  std::deque<PendingCall> pending ABSL_GUARDED_BY(mu);
  // The bytes of the calls in `pending`, and the host's queue bounds (Created; 0: not said).
  int64_t unanswered_bytes ABSL_GUARDED_BY(mu) = 0;
  int64_t queue_bytes ABSL_GUARDED_BY(mu) = 0;
  int64_t queue_calls ABSL_GUARDED_BY(mu) = 0;
  // A Stop was asked for: stop waiting for room.
  bool stop_asked ABSL_GUARDED_BY(mu) = false;
  // Set once the stream ended: what new calls fail with.
  std::exception_ptr dead ABSL_GUARDED_BY(mu);
  // Set before the Stop is sent: the end of the stream is expected from then on.
  bool stopping ABSL_GUARDED_BY(mu) = false;
  // The stream was cancelled because a Stop's deadline passed.
  bool cancelled_by_stop ABSL_GUARDED_BY(mu) = false;
  RemoteOwner* owner ABSL_GUARDED_BY(mu) = nullptr;
  std::function<void()> wake_writer ABSL_GUARDED_BY(mu);
  bool reader_done ABSL_GUARDED_BY(mu) = false;
};

void StreamState::Cancel(uint64_t id) {
  std::function<void()> wake;
  {
    absl::MutexLock lock(&mu);
    if (stopping || dead != nullptr) return;  // The Stop cancels it anyway.
    cancels.push_back(id);
    wake = wake_writer;
  }
  // A thread that finds the stream free writes the cancellation itself, so that it is on its way
  // before Cancel returns; a busy stream is the actor's, which writes it at its next Flush. Never
  // waits: Cancel must not block while the host pushes back (its queue full behind a long call).
  // A reader thread or a timer (both in a NonBlockingScope) never writes: a reader blocked in a
  // write could deadlock with a host waiting for it to take a reply. The host drops the call if
  // the cancellation reaches it before the call starts; one racing the start may come too late.
  if (!NonBlockingScope::Active() && write_mu.TryLock()) {
    WriteCancelsLocked();
    write_mu.Unlock();
    return;
  }
  if (wake) wake();
}

void StreamState::TimeOut(uint64_t id, const std::string& method, absl::Duration timeout) {
  std::optional<Promise<std::string>> promise;
  {
    absl::MutexLock lock(&mu);
    for (PendingCall& call : pending) {
      if (call.id != id) continue;
      if (!call.timed_out) {
        call.timed_out = true;
        promise.emplace(std::move(call.promise));
      }
      break;
    }
  }
  if (!promise.has_value()) return;  // Answered, or failed with the stream, meanwhile.
  // Queued before the caller sees the error, so that the host hears of it as early as possible.
  Cancel(id);
  promise->SetError(std::make_exception_ptr(TimeoutError(absl::StrCat(
      "the call of ", method, " on the remote ", Describe(), " did not finish within ",
      absl::FormatDuration(timeout),
      " (remote.call_timeout); if it had not started on the host it never will, if it had it runs "
      "to its end there"))));
}

void StreamState::CancelForStop() {
  {
    absl::MutexLock lock(&mu);
    if (dead != nullptr) return;  // Over already.
    stopping = true;
    cancelled_by_stop = true;
  }
  context.TryCancel();
}

void StreamState::WriteCancelsLocked() {
  std::vector<uint64_t> ids;
  {
    absl::MutexLock lock(&mu);
    ids.swap(cancels);
  }
  if (writes_done) return;
  for (uint64_t id : ids) {
    ClientFrame frame;
    frame.mutable_cancel()->set_id(id);
    if (!stream->Write(frame)) return;  // The reader sees the stream end.
  }
}

RemoteConnection::RemoteConnection(std::shared_ptr<StreamState> state) : state_(std::move(state)) {}

std::unique_ptr<RemoteConnection> RemoteConnection::Open(const workers_internal::EncodedClass& cls,
                                                         std::string ctor,
                                                         const ResolvedWorkerOptions& options,
                                                         size_t turn, RemoteOwner* owner,
                                                         const void* context) {
  const RemoteOptions& remote = options.remote;
  auto state = std::make_shared<StreamState>();
  state->class_name = std::string(cls.name);
  state->context_tag = context;
  // Placement (channel.h): the turn's host, or another that connects sooner.
  HostChoice host = PickHost(remote, turn);
  state->target = std::move(host.target);
  state->channel = std::move(host.channel);
  state->stub = remote::v1::WorkerHost::NewStub(state->channel);
  // The token travels as gRPC call credentials.
  state->context.set_credentials(TokenCredentials(ResolveToken(remote)));
  state->stream = state->stub->Connect(&state->context);
  // From here a Stop past its deadline can cancel the stream, and with it a constructor that does
  // not return or a host that does not answer.
  owner->Launched(
      [weak = std::weak_ptr<StreamState>(state)] {
        if (std::shared_ptr<StreamState> state = weak.lock()) state->CancelForStop();
      },
      [weak = std::weak_ptr<StreamState>(state)] {
        if (std::shared_ptr<StreamState> state = weak.lock()) state->InterruptForStop();
      });

  ClientFrame create;
  create.mutable_create()->set_class_name(std::string(cls.name));
  create.mutable_create()->set_constructor(std::move(ctor));
  create.mutable_create()->set_max_message_bytes(remote.max_message_bytes);
  HostFrame created;
  const bool answered = state->stream->Write(create) && state->stream->Read(&created);
  if (!answered || !created.has_created()) {
    if (answered) state->context.TryCancel();  // It answered something else: a broken host.
    state->stream->WritesDone();
    while (state->stream->Read(&created)) {
    }
    const grpc::Status status = state->stream->Finish();
    bool cancelled_by_stop;
    {
      absl::MutexLock lock(&state->mu);
      cancelled_by_stop = state->cancelled_by_stop;
    }
    if (cancelled_by_stop) {
      throw StoppedError(absl::StrCat("the remote ", state->Describe(),
                                      " was cancelled by Stop after its timeout, before its "
                                      "constructor returned on the host"));
    }
    const absl::Status error =
        status.ok() ? absl::DataLossError("the host ended the stream") : ToAbsl(status);
    throw StatusError(absl::Status(
        error.code(), absl::StrCat("creating the ", state->Describe(), " failed: ",
                                   absl::StatusCodeToString(error.code()), ": ", error.message())));
  }
  // The constructor's exception, rebuilt, ends the stream (the host ended it already).
  try {
    workers_internal::DecodeReply<void>(created.created().reply());
  } catch (...) {
    state->stream->WritesDone();
    state->stream->Finish();
    throw;
  }
  {
    absl::MutexLock lock(&state->mu);
    state->owner = owner;
    state->wake_writer = owner->MakeWaker();
  }
  std::unique_ptr<RemoteConnection> connection(new RemoteConnection(state));
  connection->owner_ = owner;
  connection->own_max_message_bytes_ = remote.max_message_bytes;
  connection->host_max_message_bytes_ = created.created().max_message_bytes();
  {
    absl::MutexLock lock(&state->mu);
    state->queue_bytes = created.created().queue_bytes();
    state->queue_calls = created.created().queue_calls();
  }
  connection->call_timeout_ = remote.call_timeout;
  // A host that does not say (0) is held to the client's limit only.
  connection->max_message_bytes_ =
      connection->host_max_message_bytes_ > 0
          ? std::min<int64_t>(remote.max_message_bytes, connection->host_max_message_bytes_)
          : remote.max_message_bytes;
  connection->reader_ = std::thread(&RemoteConnection::ReadReplies, state);
  return connection;
}

RemoteConnection::~RemoteConnection() {
  const absl::Time deadline = owner_->StopDeadline();
  owner_->Closed();
  std::vector<Future<std::string>> queued;
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    state_->owner = nullptr;
    state_->wake_writer = nullptr;
    // As in every mode, Stop lets the running call finish and cancels the calls queued behind it;
    // here those were sent ahead to the host, which cancels them too when it reads the Stop
    // (their promises stay in `pending`, to be matched with the host's replies).
    for (size_t i = 1; i < state_->pending.size(); ++i) {
      if (state_->pending[i].timed_out) continue;  // Failed already.
      queued.push_back(state_->pending[i].promise.GetFuture());
    }
  }
  for (const Future<std::string>& call : queued) call.Cancel();
  {
    absl::MutexLock write_lock(&state_->write_mu);
    if (!state_->writes_done) {
      state_->writes_done = true;
      ClientFrame stop;
      stop.mutable_stop();
      if (state_->stream->Write(stop)) state_->stream->WritesDone();
    }
  }
  const auto reader_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    return state_->reader_done;
  };
  bool done;
  {
    absl::MutexLock lock(&state_->mu);
    done = state_->mu.AwaitWithDeadline(absl::Condition(&reader_done), deadline);
    if (!done) state_->cancelled_by_stop = true;
  }
  if (!done) {
    // The host did not finish in time: the stream is cancelled, which the host sees as its
    // client gone (it drops the queued calls and destroys the object after the running one).
    state_->context.TryCancel();
    absl::MutexLock lock(&state_->mu);
    done = state_->mu.AwaitWithTimeout(absl::Condition(&reader_done), kCancelWait);
  }
  if (done) {
    reader_.join();
  } else {
    reader_.detach();  // A reply's continuation does not return; it owns `state_` too.
  }
}

Future<std::string> RemoteConnection::Invoke(absl::string_view method, std::string args) {
  ClientFrame frame;
  frame.mutable_call()->set_method(std::string(method));
  frame.mutable_call()->set_args(std::move(args));
  frame.mutable_call()->set_id(UINT64_MAX);  // The largest id: the size checked is the most.
  const bool has_timeout = call_timeout_ != absl::InfiniteDuration();
  if (has_timeout) {
    // Relative to the host's receipt, so that the two clocks need not agree; at least 1 us (0
    // means none).
    frame.mutable_call()->set_timeout_us(
        static_cast<uint64_t>(std::max<int64_t>(1, absl::ToInt64Microseconds(call_timeout_))));
  }
  // gRPC (this side's or the host's) would refuse it and end the stream, and the worker with it:
  // this call fails alone instead.
  if (const size_t size = frame.ByteSizeLong(); size > static_cast<size_t>(max_message_bytes_)) {
    return MakeFailedFuture<std::string>(
        std::make_exception_ptr(StatusError(absl::ResourceExhaustedError(absl::StrCat(
            "the call of ", method, " on the remote ", state_->Describe(), " is ", size,
            " bytes, more than the ", max_message_bytes_, " allowed (remote.max_message_bytes is ",
            own_max_message_bytes_,
            host_max_message_bytes_ > 0
                ? absl::StrCat(", the host's --max_message_bytes is ", host_max_message_bytes_)
                : std::string(),
            ")")))));
  }
  // The host's queue has room for it (Created's bounds): the host keeps reading, so a Stop or a
  // cancellation behind it reaches the host at once. Only the actor's thread calls Invoke, so
  // the room found stays until the call is added below.
  const int64_t bytes = static_cast<int64_t>(frame.call().ByteSizeLong());
  {
    absl::MutexLock lock(&state_->mu);
    const auto room_or_end = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
      return state_->FitsLocked(bytes) || state_->dead != nullptr || state_->stop_asked;
    };
    state_->mu.Await(absl::Condition(&room_or_end));
    if (state_->dead != nullptr) return MakeFailedFuture<std::string>(state_->dead);
    if (!state_->FitsLocked(bytes)) {
      return MakeFailedFuture<std::string>(std::make_exception_ptr(StoppedError(absl::StrCat(
          "the remote ", state_->Describe(),
          " was stopped before this call could be sent (the host's queue was full)"))));
    }
  }
  Promise<std::string> promise;
  Future<std::string> reply = promise.GetFuture();
  absl::MutexLock write_lock(&state_->write_mu);
  const uint64_t id = state_->next_id++;
  frame.mutable_call()->set_id(id);
  // Cancelling the reply withdraws the call, if the host has not started it.
  promise.OnCancel([weak = std::weak_ptr<StreamState>(state_), id] {
    if (std::shared_ptr<StreamState> state = weak.lock()) state->Cancel(id);
  });
  {
    absl::MutexLock lock(&state_->mu);
    if (state_->dead != nullptr) return MakeFailedFuture<std::string>(state_->dead);
    StreamState::PendingCall call{id, std::move(promise)};
    call.bytes = bytes;
    state_->unanswered_bytes += bytes;
    if (has_timeout) {
      // The shared timer (no thread per call). Scheduled under `mu`, so its callback, which takes
      // `mu`, finds the entry; the reader cancels it when the reply comes.
      call.timer = Timer::Default().ScheduleAfter(
          call_timeout_, [weak = std::weak_ptr<StreamState>(state_), id,
                          method = std::string(method), timeout = call_timeout_] {
            if (std::shared_ptr<StreamState> state = weak.lock()) {
              state->TimeOut(id, method, timeout);
            }
          });
    }
    state_->pending.push_back(std::move(call));
  }
  // Once the reader has finished the stream, nothing may be written (gRPC forbids a Write after
  // Finish); the reader fails the reply queued above with the reason the stream ended. A failed
  // write also means the stream is over, and the reader does the same.
  if (!state_->writes_done) state_->stream->Write(frame);
  // After the call: a cancellation of this very call (its future cancelled since OnCancel above)
  // must not reach the host before the call does.
  state_->WriteCancelsLocked();
  return reply;
}

void RemoteConnection::Flush() {
  absl::MutexLock lock(&state_->write_mu);
  state_->WriteCancelsLocked();
}

void RemoteConnection::ReadReplies(std::shared_ptr<StreamState> state) {
  reader_context = state->context_tag;
  // Continuations of replies run here: a bounded worker they call must not block this thread,
  // which is what completes this worker's calls.
  const NonBlockingScope non_blocking;
  HostFrame frame;
  std::string broken;
  while (state->stream->Read(&frame)) {
    if (!broken.empty()) continue;  // Cancelled already: Read fails soon.
    std::optional<Promise<std::string>> promise;
    bool late = false;  // The reply of a call that failed at its deadline: dropped.
    Timer::Id timer;
    {
      absl::MutexLock lock(&state->mu);
      if (!frame.has_reply()) {
        broken = "the host sent a message that is not a reply";
      } else if (state->pending.empty()) {
        broken = absl::StrCat("the host sent a reply to call ", frame.reply().id(),
                              ", but no call was waiting for one");
      } else if (frame.reply().id() != state->pending.front().id) {
        // A host bug or a proxy that reorders: handing this reply to the wrong future would be
        // silently wrong, so the stream is given up.
        broken = absl::StrCat("the host sent a reply to call ", frame.reply().id(),
                              " where the reply to call ", state->pending.front().id, " was due");
      } else if (state->pending.front().timed_out) {
        late = true;
        state->unanswered_bytes -= state->pending.front().bytes;
        state->pending.pop_front();
      } else {
        promise.emplace(std::move(state->pending.front().promise));
        timer = state->pending.front().timer;
        state->unanswered_bytes -= state->pending.front().bytes;
        state->pending.pop_front();
      }
    }
    if (late) continue;
    if (timer.sequence != 0) Timer::Default().Cancel(timer);
    if (!promise.has_value()) {
      state->context.TryCancel();
      continue;  // Read fails next.
    }
    promise->SetValue(std::move(*frame.mutable_reply()->mutable_reply()));
  }
  grpc::Status status;
  {
    // No write is in progress once this is held, and none starts after: writes_done is set
    // before Finish, and Invoke, Flush and the destructor check it under this lock.
    absl::MutexLock write_lock(&state->write_mu);
    state->writes_done = true;
    status = state->stream->Finish();
  }
  bool stopping, cancelled_by_stop;
  {
    absl::MutexLock lock(&state->mu);
    stopping = state->stopping;
    cancelled_by_stop = state->cancelled_by_stop;
  }
  std::exception_ptr error;
  if (stopping) {
    error = std::make_exception_ptr(StoppedError(
        absl::StrCat("the remote ", state->Describe(),
                     cancelled_by_stop ? " was cancelled by Stop after its timeout" : " stopped",
                     " before it answered this call")));
  } else {
    error =
        StreamEndedError(state->Describe(), ToAbsl(status).code(), status.error_message(), broken);
  }
  std::deque<StreamState::PendingCall> unanswered;
  RemoteOwner* owner;
  {
    absl::MutexLock lock(&state->mu);
    state->dead = error;
    unanswered.swap(state->pending);
    state->unanswered_bytes = 0;
    owner = stopping ? nullptr : state->owner;
  }
  // The worker stops accepting calls before any caller sees a failure: a call made after seeing
  // one never lands on the dead worker (a pool routes it to a live one).
  if (owner != nullptr) owner->Died(error);
  for (StreamState::PendingCall& call : unanswered) {
    if (call.timed_out) continue;  // Failed at its deadline already.
    if (call.timer.sequence != 0) Timer::Default().Cancel(call.timer);
    call.promise.SetError(error);
  }
  absl::MutexLock lock(&state->mu);
  state->reader_done = true;
}

}  // namespace concurry::remote_internal

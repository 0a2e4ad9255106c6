#include "workers/remote/internal/connection.h"

#include <chrono>
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
#include "grpcpp/grpcpp.h"
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

bool OnReaderThreadOf(const void* context) {
  return context != nullptr && reader_context == context;
}

// What the connection shares with its reader thread, which may outlive it (detached when a
// reply's continuation on that thread never returns).
struct StreamState {
  // Sends a cancellation for call `id`: at once when no write is in progress, else with the
  // actor's next Flush.
  void Cancel(uint64_t id) ABSL_LOCKS_EXCLUDED(write_mu, mu);
  // Writes the cancellations asked for meanwhile.
  void WriteCancelsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu) ABSL_LOCKS_EXCLUDED(mu);
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
  bool writes_done ABSL_GUARDED_BY(write_mu) = false;

  absl::Mutex mu;
  std::vector<uint64_t> cancels ABSL_GUARDED_BY(mu);
  // Replies awaited, in call order.
  std::deque<Promise<std::string>> pending ABSL_GUARDED_BY(mu);
  // Set once the stream ended: what new calls fail with.
  std::exception_ptr dead ABSL_GUARDED_BY(mu);
  // Set before the Stop is sent: the end of the stream is expected from then on.
  bool stopping ABSL_GUARDED_BY(mu) = false;
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
  if (write_mu.TryLock()) {
    WriteCancelsLocked();
    write_mu.Unlock();
  } else if (wake) {
    wake();  // The actor's thread is writing: it sends the cancellation at its next Flush.
  }
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

  ClientFrame create;
  create.mutable_create()->set_class_name(std::string(cls.name));
  create.mutable_create()->set_constructor(std::move(ctor));
  HostFrame created;
  const bool answered = state->stream->Write(create) && state->stream->Read(&created);
  if (!answered || !created.has_created()) {
    if (answered) state->context.TryCancel();  // It answered something else: a broken host.
    state->stream->WritesDone();
    while (state->stream->Read(&created)) {
    }
    const grpc::Status status = state->stream->Finish();
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
  connection->stop_timeout_ = options.stop_timeout;
  connection->max_message_bytes_ = remote.max_message_bytes;
  connection->reader_ = std::thread(&RemoteConnection::ReadReplies, state);
  return connection;
}

RemoteConnection::~RemoteConnection() {
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
      queued.push_back(state_->pending[i].GetFuture());
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
    done = state_->mu.AwaitWithTimeout(absl::Condition(&reader_done), stop_timeout_);
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
  // gRPC would refuse to send it and end the stream, and the worker with it: this call fails
  // alone instead.
  if (const size_t size = frame.ByteSizeLong(); size > static_cast<size_t>(max_message_bytes_)) {
    return MakeFailedFuture<std::string>(
        std::make_exception_ptr(StatusError(absl::ResourceExhaustedError(absl::StrCat(
            "the call of ", method, " on the remote ", state_->Describe(), " is ", size,
            " bytes, more than remote.max_message_bytes (", max_message_bytes_, ")")))));
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
    state_->pending.push_back(std::move(promise));
  }
  state_->WriteCancelsLocked();
  // A failed write means the stream is over: the reader fails the reply with the reason.
  state_->stream->Write(frame);
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
    std::optional<Promise<std::string>> promise;
    {
      absl::MutexLock lock(&state->mu);
      if (frame.has_reply() && !state->pending.empty()) {
        promise.emplace(std::move(state->pending.front()));
        state->pending.pop_front();
      }
    }
    if (!promise.has_value()) {
      broken = "the host sent a message that answers no call";
      state->context.TryCancel();
      continue;  // Read fails next.
    }
    promise->SetValue(std::move(*frame.mutable_reply()->mutable_reply()));
  }
  grpc::Status status;
  {
    // No write is in progress once this is held; none starts after `dead` is set below.
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
    error = std::make_exception_ptr(CrashedError(
        absl::StrCat("the remote ", state->Describe(), " is gone: ",
                     broken.empty() ? absl::StrCat(absl::StatusCodeToString(ToAbsl(status).code()),
                                                   ": ", status.error_message())
                                    : broken,
                     "; the calls it had not answered failed")));
  }
  std::deque<Promise<std::string>> unanswered;
  RemoteOwner* owner;
  {
    absl::MutexLock lock(&state->mu);
    state->dead = error;
    unanswered.swap(state->pending);
    owner = stopping ? nullptr : state->owner;
  }
  // The worker stops accepting calls before any caller sees a failure: a call made after seeing
  // one never lands on the dead worker (a pool routes it to a live one).
  if (owner != nullptr) owner->Died(error);
  for (Promise<std::string>& promise : unanswered) promise.SetError(error);
  absl::MutexLock lock(&state->mu);
  state->reader_done = true;
}

}  // namespace concurry::remote_internal

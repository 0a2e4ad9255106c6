#include "workers/remote/internal/connection.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
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
#include "grpc/support/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "workers/internal/actor.h"
#include "workers/remote/internal/channel.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/remote.pb.h"
#include "workers/thread/thread_actor.h"

namespace concurry::remote_internal {
namespace {

using remote::v1::ClientFrame;
using remote::v1::HostFrame;

// The context of the connection whose replies the calling thread completes.
thread_local const void* reader_context = nullptr;

// Marks the calling thread as completing the replies of the connection opened with `context`.
class ReaderScope {
 public:
  explicit ReaderScope(const void* context) : outer_(std::exchange(reader_context, context)) {}
  ~ReaderScope() { reader_context = outer_; }
  ReaderScope(const ReaderScope&) = delete;
  ReaderScope& operator=(const ReaderScope&) = delete;

 private:
  const void* const outer_;
};

// How long a Stop that cancelled the stream waits for the poller to see it end.
constexpr absl::Duration kCancelWait = absl::Seconds(10);
// How long a caller that sent a call itself polls for its reply before it sleeps and leaves the
// reply to the poller thread. A round trip on a LAN takes well under this; a longer method
// answers late either way.
constexpr absl::Duration kDriveWindow = absl::Milliseconds(1);
// How long the poller thread leaves polling to callers after a caller got its reply. A caller
// that calls again within it finds the stream to itself and needs no kick; a reply nobody drives
// meanwhile (a caller that sent a call and did not wait for it) waits this long at most.
constexpr absl::Duration kLinger = absl::Milliseconds(1);

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

bool OnAnyReaderThread() { return reader_context != nullptr; }

// What the connection shares with its poller thread, which may outlive it (detached when a
// reply's continuation on that thread never returns), and with the wait drivers it hands out.
//
// Thread-safety: `target`, `class_name`, `context_tag`, `channel`, `stub` and `stream` are set in
// Open before any other thread sees the state and never change. gRPC allows one read and one
// write (or WritesDone) in flight at a time, started from any thread, and TryCancel from any
// thread at any time; `mu` decides who starts the next one: the read is started again only by
// whoever handles the last read's completion, a write only by whoever sets `write_in_flight`, and
// Finish once, when the last read failed and no write is in flight. Completions are handled by
// the thread that polls `cq`: the poller thread, or one driving caller at a time.
struct StreamState {
  // What a completion-queue tag points to.
  enum class Op { kRead, kWrite, kFinish, kAlarm };
  struct Tag {
    Op op;
  };
  // An alarm that kicks the poller thread out of its poll; deleted by whoever takes it.
  struct AlarmTag : Tag {
    AlarmTag() : Tag{Op::kAlarm} {}
    grpc::Alarm alarm;
  };
  // A frame waiting to be written, or (writes_done) the end of the client's writes.
  struct Outgoing {
    ClientFrame frame;
    bool writes_done = false;
  };
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
  // A promise to complete once no lock is held (its continuations may run at once).
  struct Delivery {
    Promise<std::string> promise;
    std::string value;
    std::exception_ptr error;
    Timer::Id timer;
  };
  using Deliveries = std::vector<Delivery>;

  // Queues a cancellation for call `id` (never waits; any thread).
  void Cancel(uint64_t id) ABSL_LOCKS_EXCLUDED(mu);
  // Fails call `id` with TimeoutError if it is still waiting for its reply, and queues its
  // cancellation for the host. Called by the timer at the call's deadline.
  void TimeOut(uint64_t id, const std::string& method, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu);
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
  // Whether call `id` still waits for its reply (replies come in id order).
  bool AwaitsLocked(uint64_t id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return !pending.empty() && pending.front().id <= id && !read_failed;
  }
  // "worker app::Counter on host 127.0.0.1:7000".
  std::string Describe() const { return absl::StrCat("worker ", class_name, " on host ", target); }

  // Queues `out` to be written; returns the write to start outside `mu`, if any.
  Outgoing* QueueLocked(Outgoing out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  // The next queued write, if none is in flight and the stream still takes writes; marks it in
  // flight. Start it with StartWrite once `mu` is released.
  Outgoing* NextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void StartWrite(Outgoing* out);
  // Whether Finish may start now (the last read failed, no write in flight); marks it started.
  bool FinishDueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void StartFinish();

  // Handles one completion of `cq` (any polling thread, no lock held); what it completes goes to
  // `done`, for Deliver.
  void Handle(void* tag, bool ok, Deliveries& done) ABSL_LOCKS_EXCLUDED(mu);
  void HandleRead(bool ok, Deliveries& done) ABSL_LOCKS_EXCLUDED(mu);
  void HandleWrite(bool ok) ABSL_LOCKS_EXCLUDED(mu);
  void HandleFinish(Deliveries& done) ABSL_LOCKS_EXCLUDED(mu);
  // Completes what Handle collected (no lock held).
  static void Deliver(Deliveries& done);

  // The poller thread's loop; ends the completion queue once the stream is over.
  void Poll();
  // A caller's wait for call `id`, which it sent itself: polls `cq` until the reply is in, the
  // stream ends, or `deadline` (at most kDriveWindow from now).
  void DriveUntil(uint64_t id, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu);

  std::string target;
  std::string class_name;
  const void* context_tag = nullptr;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<remote::v1::WorkerHost::Stub> stub;
  grpc::ClientContext context;
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<ClientFrame, HostFrame>> stream;
  Tag read_tag{Op::kRead};
  Tag write_tag{Op::kWrite};
  Tag finish_tag{Op::kFinish};
  // The buffer of the read in flight: touched only by gRPC meanwhile, and by whoever handles that
  // read's completion.
  HostFrame incoming;
  // Filled by Finish, read by whoever handles its completion.
  grpc::Status status;

  absl::Mutex mu;
  uint64_t next_id ABSL_GUARDED_BY(mu) = 0;
  // Frames to write, in order; the front one is being written while write_in_flight.
  std::deque<Outgoing> out ABSL_GUARDED_BY(mu);
  bool write_in_flight ABSL_GUARDED_BY(mu) = false;
  // A write failed (the stream is over): nothing more is written.
  bool write_failed ABSL_GUARDED_BY(mu) = false;
  // The Stop and the end of the writes are queued: nothing more is queued.
  bool writes_closed ABSL_GUARDED_BY(mu) = false;
  // A read failed, or the stream was found broken: no more replies come.
  bool read_failed ABSL_GUARDED_BY(mu) = false;
  // Why the stream is broken, when a reply did not fit (empty: it is not).
  std::string broken ABSL_GUARDED_BY(mu);
  bool finish_started ABSL_GUARDED_BY(mu) = false;
  // Finish's completion was handled: the stream is over.
  bool finished ABSL_GUARDED_BY(mu) = false;
  // Operations started on `cq` and not completed yet (reads, writes, Finish, alarms).
  int ops ABSL_GUARDED_BY(mu) = 0;
  // The poller thread is inside cq.Next.
  bool poller_polling ABSL_GUARDED_BY(mu) = false;
  // A caller's thread polls `cq` (one at a time).
  bool driving ABSL_GUARDED_BY(mu) = false;
  // The poller thread polls again only after this (a caller got its reply), unless poll_now.
  absl::Time linger_until ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  // Something nobody drives is due (a call the actor's thread sent, a caller that gave up): the
  // poller thread polls at once.
  bool poll_now ABSL_GUARDED_BY(mu) = true;

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
  // The poller thread has finished: the completion queue is drained.
  bool poller_done ABSL_GUARDED_BY(mu) = false;
};

StreamState::Outgoing* StreamState::QueueLocked(Outgoing frame) {
  out.push_back(std::move(frame));
  return NextWriteLocked();
}

StreamState::Outgoing* StreamState::NextWriteLocked() {
  if (write_in_flight || write_failed || read_failed || out.empty()) return nullptr;
  write_in_flight = true;
  ++ops;
  // A deque's elements stay where they are while others are added: the frame lives until its
  // completion pops it.
  return &out.front();
}

void StreamState::StartWrite(Outgoing* frame) {
  if (frame->writes_done) {
    stream->WritesDone(&write_tag);
  } else {
    stream->Write(frame->frame, &write_tag);
  }
}

bool StreamState::FinishDueLocked() {
  if (!read_failed || write_in_flight || finish_started) return false;
  finish_started = true;
  ++ops;
  return true;
}

void StreamState::StartFinish() { stream->Finish(&status, &finish_tag); }

void StreamState::Cancel(uint64_t id) {
  Outgoing* start;
  {
    absl::MutexLock lock(&mu);
    if (stopping || writes_closed || dead != nullptr) return;  // The Stop cancels it anyway.
    Outgoing cancel;
    cancel.frame.mutable_cancel()->set_id(id);
    start = QueueLocked(std::move(cancel));
  }
  // The host drops the call if the cancellation reaches it before the call starts; a call that
  // runs sees it through concurry::this_call (if it asks).
  if (start != nullptr) StartWrite(start);
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
      "on there unless it asks this_call::CancelRequested()"))));
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

void StreamState::Handle(void* tag, bool ok, Deliveries& done) {
  Tag* what = static_cast<Tag*>(tag);
  switch (what->op) {
    case Op::kRead:
      HandleRead(ok, done);
      return;
    case Op::kWrite:
      HandleWrite(ok);
      return;
    case Op::kFinish:
      HandleFinish(done);
      return;
    case Op::kAlarm: {
      delete static_cast<AlarmTag*>(what);
      absl::MutexLock lock(&mu);
      --ops;
      return;
    }
  }
}

void StreamState::HandleRead(bool ok, Deliveries& done) {
  bool read_again = false;
  bool finish = false;
  bool cancel = false;
  {
    absl::MutexLock lock(&mu);
    --ops;
    if (!ok) {
      read_failed = true;
    } else if (!incoming.has_reply()) {
      broken = "the host sent a message that is not a reply";
    } else if (pending.empty()) {
      broken = absl::StrCat("the host sent a reply to call ", incoming.reply().id(),
                            ", but no call was waiting for one");
    } else if (incoming.reply().id() != pending.front().id) {
      // A host bug or a proxy that reorders: handing this reply to the wrong future would be
      // silently wrong, so the stream is given up.
      broken = absl::StrCat("the host sent a reply to call ", incoming.reply().id(),
                            " where the reply to call ", pending.front().id, " was due");
    } else {
      PendingCall call = std::move(pending.front());
      pending.pop_front();
      unanswered_bytes -= call.bytes;
      if (!call.timed_out) {  // The reply of a call that failed at its deadline is dropped.
        done.push_back(Delivery{std::move(call.promise),
                                std::move(*incoming.mutable_reply()->mutable_reply()), nullptr,
                                call.timer});
      }
      read_again = true;
      ++ops;
    }
    if (!broken.empty() && !read_failed) {
      read_failed = true;
      cancel = true;
    }
    finish = FinishDueLocked();
  }
  if (cancel) context.TryCancel();  // Outstanding writes fail at once.
  if (read_again) stream->Read(&incoming, &read_tag);
  if (finish) StartFinish();
}

void StreamState::HandleWrite(bool ok) {
  Outgoing* next = nullptr;
  bool finish;
  {
    absl::MutexLock lock(&mu);
    --ops;
    write_in_flight = false;
    out.pop_front();
    if (!ok) {
      // The stream is over (the read fails too, which ends it).
      write_failed = true;
      out.clear();
    }
    next = NextWriteLocked();
    finish = FinishDueLocked();
  }
  if (next != nullptr) StartWrite(next);
  if (finish) StartFinish();
}

void StreamState::HandleFinish(Deliveries& done) {
  std::exception_ptr error;
  std::deque<PendingCall> unanswered;
  RemoteOwner* told = nullptr;
  {
    absl::MutexLock lock(&mu);
    --ops;
    if (stopping) {
      error = std::make_exception_ptr(StoppedError(
          absl::StrCat("the remote ", Describe(),
                       cancelled_by_stop ? " was cancelled by Stop after its timeout" : " stopped",
                       " before it answered this call")));
    } else {
      error = StreamEndedError(Describe(), ToAbsl(status).code(), status.error_message(), broken);
    }
    dead = error;
    finished = true;
    unanswered.swap(pending);
    unanswered_bytes = 0;
    out.clear();
    told = stopping ? nullptr : owner;
  }
  // The worker stops accepting calls before any caller sees a failure: a call made after seeing
  // one never lands on the dead worker (a pool routes it to a live one).
  if (told != nullptr) told->Died(error);
  for (PendingCall& call : unanswered) {
    if (call.timed_out) continue;  // Failed at its deadline already.
    done.push_back(Delivery{std::move(call.promise), std::string(), error, call.timer});
  }
}

void StreamState::Deliver(Deliveries& done) {
  for (Delivery& delivery : done) {
    if (delivery.timer.sequence != 0) Timer::Default().Cancel(delivery.timer);
    if (delivery.error != nullptr) {
      delivery.promise.SetError(std::move(delivery.error));
    } else {
      delivery.promise.SetValue(std::move(delivery.value));
    }
  }
  done.clear();
}

void StreamState::Poll() {
  const ReaderScope reader(context_tag);
  // Continuations of replies run here: a bounded worker they call must not block this thread,
  // which is what completes this worker's calls.
  const NonBlockingScope non_blocking;
  Deliveries done;
  for (;;) {
    {
      absl::MutexLock lock(&mu);
      for (;;) {
        if (!driving && finished && ops == 0) break;
        const absl::Time now = absl::Now();
        // A linger never lasts longer than kLinger, even when the wall clock steps back.
        linger_until = std::min(linger_until, now + kLinger);
        if (!driving && (poll_now || finished || now >= linger_until)) {
          poll_now = false;
          poller_polling = true;
          break;
        }
        // A caller has the stream, or had it a moment ago: look again when the linger ends (while
        // a caller drives, a kLinger from now; a drive that ends does not wake this thread), or at
        // once when something nobody drives comes due.
        const auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
          return !driving && (poll_now || finished);
        };
        mu.AwaitWithDeadline(absl::Condition(&due), driving ? now + kLinger : linger_until);
      }
      if (!poller_polling) break;  // The stream is over and every operation completed.
    }
    void* tag = nullptr;
    bool ok = false;
    const bool got = cq.Next(&tag, &ok);  // Only Shutdown, below, ends the queue.
    if (got) Handle(tag, ok, done);
    {
      // Only now: a driver that waits for this thread to leave then finds its reply handled,
      // instead of polling for it in vain.
      absl::MutexLock lock(&mu);
      poller_polling = false;
    }
    Deliver(done);
  }
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
    if (static_cast<Tag*>(tag)->op == Op::kAlarm) delete static_cast<AlarmTag*>(tag);
  }
  absl::MutexLock lock(&mu);
  poller_done = true;
}

void StreamState::DriveUntil(uint64_t id, absl::Time deadline) {
  AlarmTag* kick = nullptr;
  {
    absl::MutexLock lock(&mu);
    if (driving || finished || !AwaitsLocked(id)) return;  // Another caller drives, or done.
    driving = true;
    if (poller_polling) {
      kick = new AlarmTag;
      ++ops;
    }
  }
  // The poller thread leaves its poll for the alarm (or another completion) and then waits while
  // this thread drives; only one thread polls at a time.
  if (kick != nullptr) kick->alarm.Set(&cq, gpr_now(GPR_CLOCK_MONOTONIC), kick);
  const absl::Time until = std::min(deadline, absl::Now() + kDriveWindow);
  Deliveries done;
  const ReaderScope reader(context_tag);
  const NonBlockingScope non_blocking;
  bool poll;
  {
    absl::MutexLock lock(&mu);
    const auto poller_out = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !poller_polling; };
    mu.AwaitWithDeadline(absl::Condition(&poller_out), until);
    // Still polling at `until`: the poller thread keeps the stream.
    poll = !poller_polling && AwaitsLocked(id);
  }
  while (poll) {
    void* tag = nullptr;
    bool ok = false;
    if (cq.AsyncNext(&tag, &ok, absl::ToChronoTime(until)) != grpc::CompletionQueue::GOT_EVENT) {
      break;  // Out of time (the queue is shut down only after every drive).
    }
    Handle(tag, ok, done);
    absl::MutexLock lock(&mu);
    // A stream that ends is the poller thread's to finish.
    poll = AwaitsLocked(id);
  }
  {
    absl::MutexLock lock(&mu);
    driving = false;
    // This thread got its reply and nothing else is awaited: the next call is likely to be
    // driven too. Otherwise (out of time, the stream ending, calls of other threads awaited,
    // whose callers may have found this thread driving) the poller thread takes over at once.
    if (!done.empty() && pending.empty()) {
      linger_until = absl::Now() + kLinger;
    } else {
      poll_now = true;
    }
  }
  Deliver(done);
}

namespace {

// The reply of a call the caller's thread sent itself (RemoteConnection::TakeWaitDriver): by its
// id, so that an offer never taken keeps neither the reply nor the connection alive.
class ReplyDriver final : public futures_internal::WaitDriver {
 public:
  ReplyDriver(std::weak_ptr<StreamState> state, uint64_t id) : state_(std::move(state)), id_(id) {}
  void Drive(absl::Time deadline) noexcept override {
    if (std::shared_ptr<StreamState> state = state_.lock()) state->DriveUntil(id_, deadline);
  }

 private:
  const std::weak_ptr<StreamState> state_;
  const uint64_t id_;
};

// Polls `state`'s queue on the calling thread until each of `tags` completed; returns whether
// all of them succeeded. For Open, before the poller thread starts.
bool AwaitOpening(StreamState& state, std::initializer_list<const void*> tags) {
  bool all_ok = true;
  size_t left = tags.size();
  while (left > 0) {
    void* tag = nullptr;
    bool ok = false;
    if (!state.cq.Next(&tag, &ok)) return false;
    for (const void* expected : tags) {
      if (tag == expected) {
        --left;
        all_ok = all_ok && ok;
      }
    }
  }
  return all_ok;
}

// Ends a stream that Open gives up on: cancels it if `cancel`, has Finish fetch the status, and
// drains the queue. Returns the status.
grpc::Status EndOpening(StreamState& state, bool cancel) {
  if (cancel) state.context.TryCancel();
  state.stream->Finish(&state.status, &state.finish_tag);
  AwaitOpening(state, {&state.finish_tag});
  state.cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (state.cq.Next(&tag, &ok)) {
  }
  return state.status;
}

}  // namespace

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
  // Compared by address only: Open takes its completion itself.
  StreamState::Tag start_tag{StreamState::Op::kWrite};
  state->stream = state->stub->PrepareAsyncConnect(&state->context, &state->cq);
  state->stream->StartCall(&start_tag);
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
  // The Create goes out and the Created is read with this thread polling (no poller thread yet).
  // The first write waits for the start, whose operation it shares.
  bool answered = AwaitOpening(*state, {&start_tag});
  if (answered) {
    state->stream->Write(create, &state->write_tag);
    state->stream->Read(&state->incoming, &state->read_tag);
    answered = AwaitOpening(*state, {&state->write_tag, &state->read_tag});
  }
  HostFrame created = std::move(state->incoming);
  if (!answered || !created.has_created()) {
    // A host that answered something else is broken: the stream is cancelled.
    const grpc::Status status = EndOpening(*state, answered);
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
    EndOpening(*state, false);
    throw;
  }
  {
    absl::MutexLock lock(&state->mu);
    state->queue_bytes = created.created().queue_bytes();
    state->queue_calls = created.created().queue_calls();
    // The read that watches for replies and for the stream's end, posted below.
    ++state->ops;
  }
  std::unique_ptr<RemoteConnection> connection(new RemoteConnection(state));
  connection->owner_ = owner;
  connection->own_max_message_bytes_ = remote.max_message_bytes;
  connection->host_max_message_bytes_ = created.created().max_message_bytes();
  connection->call_timeout_ = remote.call_timeout;
  // A host that does not say (0) is held to the client's limit only.
  connection->max_message_bytes_ =
      connection->host_max_message_bytes_ > 0
          ? std::min<int64_t>(remote.max_message_bytes, connection->host_max_message_bytes_)
          : remote.max_message_bytes;
  try {
    connection->poller_ = std::thread(&StreamState::Poll, state);
  } catch (...) {
    // No thread to poll (the process is out of threads): the stream is ended here.
    {
      absl::MutexLock lock(&state->mu);
      --state->ops;
    }
    EndOpening(*state, true);
    throw;
  }
  {
    absl::MutexLock lock(&state->mu);
    state->owner = owner;
  }
  state->stream->Read(&state->incoming, &state->read_tag);
  return connection;
}

RemoteConnection::~RemoteConnection() {
  if (!poller_.joinable()) return;  // Open failed after making it, and ended the stream itself.
  const absl::Time deadline = owner_->StopDeadline();
  owner_->Closed();
  std::vector<Future<std::string>> queued;
  StreamState::Outgoing* start = nullptr;
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    state_->owner = nullptr;
    // As in every mode, Stop lets the running call finish and cancels the calls queued behind it;
    // here those were sent ahead to the host, which cancels them too when it reads the Stop
    // (their promises stay in `pending`, to be matched with the host's replies).
    for (size_t i = 1; i < state_->pending.size(); ++i) {
      if (state_->pending[i].timed_out) continue;  // Failed already.
      queued.push_back(state_->pending[i].promise.GetFuture());
    }
    if (!state_->writes_closed) {
      state_->writes_closed = true;
      StreamState::Outgoing stop;
      stop.frame.mutable_stop();
      state_->out.push_back(std::move(stop));
      StreamState::Outgoing end;
      end.writes_done = true;
      start = state_->QueueLocked(std::move(end));
    }
    // Nobody drives from now on: the poller thread sees the stream to its end.
    state_->poll_now = true;
  }
  for (const Future<std::string>& call : queued) call.Cancel();
  if (start != nullptr) state_->StartWrite(start);
  const auto poller_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    return state_->poller_done;
  };
  bool done;
  {
    absl::MutexLock lock(&state_->mu);
    done = state_->mu.AwaitWithDeadline(absl::Condition(&poller_done), deadline);
    if (!done) state_->cancelled_by_stop = true;
  }
  if (!done) {
    // The host did not finish in time: the stream is cancelled, which the host sees as its
    // client gone (it drops the queued calls and destroys the object after the running one).
    state_->context.TryCancel();
    absl::MutexLock lock(&state_->mu);
    done = state_->mu.AwaitWithTimeout(absl::Condition(&poller_done), kCancelWait);
  }
  if (done) {
    poller_.join();
  } else {
    poller_.detach();  // A reply's continuation does not return; it owns `state_` too.
  }
}

Future<std::string> RemoteConnection::Invoke(absl::string_view method, std::string args) {
  last_sent_.reset();
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
  const int64_t bytes = static_cast<int64_t>(frame.call().ByteSizeLong());
  const bool send_now = workers_internal::SendNowScope::Active();
  Promise<std::string> promise;
  Future<std::string> reply = promise.GetFuture();
  StreamState::Outgoing* start = nullptr;
  uint64_t id;
  {
    absl::MutexLock lock(&state_->mu);
    // The host's queue has room for it (Created's bounds): the host keeps reading, so a Stop or a
    // cancellation behind it reaches the host at once. Only the actor's context calls Invoke, so
    // the room found stays until the call is added below.
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
    id = state_->next_id++;
    frame.mutable_call()->set_id(id);
    // Cancelling the reply withdraws the call, if the host has not started it. Only the caller of
    // Invoke can cancel it (the future is not handed out yet), so the callback does not run here,
    // under `mu`, and the cancellation is always queued after the call.
    promise.OnCancel([weak = std::weak_ptr<StreamState>(state_), id] {
      if (std::shared_ptr<StreamState> state = weak.lock()) state->Cancel(id);
    });
    StreamState::PendingCall call{id, std::move(promise)};
    call.bytes = bytes;
    state_->unanswered_bytes += bytes;
    if (has_timeout) {
      // The shared timer (no thread per call). Scheduled under `mu`, so its callback, which takes
      // `mu`, finds the entry; the reply's delivery cancels it.
      call.timer = Timer::Default().ScheduleAfter(
          call_timeout_, [weak = std::weak_ptr<StreamState>(state_), id,
                          method = std::string(method), timeout = call_timeout_] {
            if (std::shared_ptr<StreamState> state = weak.lock()) {
              state->TimeOut(id, method, timeout);
            }
          });
    }
    state_->pending.push_back(std::move(call));
    // A stream that is ending takes no more writes; its Finish fails the call queued above with
    // the reason it ended.
    StreamState::Outgoing outgoing;
    outgoing.frame = std::move(frame);
    start = state_->QueueLocked(std::move(outgoing));
    // A call the actor's thread sent has nobody to drive its reply.
    if (!send_now) state_->poll_now = true;
  }
  if (start != nullptr) state_->StartWrite(start);
  if (send_now) last_sent_ = id;
  return reply;
}

std::shared_ptr<futures_internal::WaitDriver> RemoteConnection::TakeWaitDriver() {
  if (!last_sent_.has_value()) return nullptr;
  auto driver = std::make_shared<ReplyDriver>(state_, *last_sent_);
  last_sent_.reset();
  return driver;
}

bool RemoteConnection::Idle() const {
  absl::MutexLock lock(&state_->mu);
  return state_->pending.empty();
}

}  // namespace concurry::remote_internal

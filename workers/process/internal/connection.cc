#include "workers/process/internal/connection.h"

#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "workers/codec.h"
#include "workers/process/internal/launch.h"
#include "workers/process/internal/limits_transfer.h"
#include "workers/registration.h"

namespace concurry::process_internal {
namespace {

// The context of the connection whose reader the calling thread is.
thread_local const void* reader_context = nullptr;

// How long a process gets between SIGTERM and SIGKILL.
constexpr absl::Duration kTermGrace = absl::Milliseconds(100);
// How long the reader waits for a dead process's status, for the error message.
constexpr absl::Duration kStatusWait = absl::Milliseconds(50);

}  // namespace

bool OnReaderThreadOf(const void* context) {
  return context != nullptr && reader_context == context;
}

// What the connection shares with its reader thread, which may outlive it (detached when a
// reply's continuation on that thread never returns).
struct ConnectionState {
  explicit ConnectionState(ChildProcess launched) : child(launched), writer(child.socket) {}
  ~ConnectionState() { Release(child); }

  // Sends a cancellation for call `number`: at once when the socket takes it without waiting,
  // else with the worker's next write (the actor's thread may be blocked writing right now).
  void Cancel(uint64_t number) ABSL_LOCKS_EXCLUDED(write_mu, mu);
  // Adds the cancellations asked for meanwhile to the writer's queue.
  void AppendCancelsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu) ABSL_LOCKS_EXCLUDED(mu);

  ChildProcess child;
  std::string class_name;
  const void* context = nullptr;

  // Held while writing: by the actor's thread, which sends the calls, and by a thread
  // cancelling a call (only if free at once).
  absl::Mutex write_mu ABSL_ACQUIRED_BEFORE(mu);
  FrameWriter writer ABSL_GUARDED_BY(write_mu);
  // The number of the next call frame.
  uint64_t next_call ABSL_GUARDED_BY(write_mu) = 0;

  absl::Mutex mu;
  // Cancellations that could not be written when asked for.
  std::vector<uint64_t> cancels ABSL_GUARDED_BY(mu);
  // Replies awaited, in the order of the frames sent.
  std::deque<Promise<std::string>> pending ABSL_GUARDED_BY(mu);
  // Set once the stream ended: what new calls fail with.
  std::exception_ptr dead ABSL_GUARDED_BY(mu);
  // Set before the stop frame is sent: the end of the stream is expected from then on.
  bool stopping ABSL_GUARDED_BY(mu) = false;
  // Whether Stop gave up waiting and terminated the process.
  bool terminated ABSL_GUARDED_BY(mu) = false;
  // Told when the process dies unexpectedly; set once the object is built.
  ConnectionOwner* owner ABSL_GUARDED_BY(mu) = nullptr;
  // Has the actor's thread flush (ConnectionOwner::MakeWaker); set with `owner`.
  std::function<void()> wake_writer ABSL_GUARDED_BY(mu);
  bool reader_done ABSL_GUARDED_BY(mu) = false;
};

void ConnectionState::Cancel(uint64_t number) {
  std::function<void()> wake;
  {
    absl::MutexLock lock(&mu);
    if (stopping || dead != nullptr) return;  // The stop cancels it anyway.
    cancels.push_back(number);
    wake = wake_writer;
  }
  bool sent = false;
  if (write_mu.TryLock()) {
    AppendCancelsLocked();
    writer.FlushNow();
    sent = writer.buffered() == 0;
    write_mu.Unlock();
  }
  // The writer is busy, or the socket is full: the actor's thread, which may block, sends it.
  if (!sent && wake) wake();
}

void ConnectionState::AppendCancelsLocked() {
  std::vector<uint64_t> numbers;
  {
    absl::MutexLock lock(&mu);
    numbers.swap(cancels);
  }
  for (uint64_t number : numbers) {
    writer.Append(FrameKind::kCancel,
                  absl::string_view(reinterpret_cast<const char*>(&number), sizeof(number)));
  }
}

ProcessConnection::ProcessConnection(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

std::unique_ptr<ProcessConnection> ProcessConnection::Open(
    const workers_internal::EncodedClass& cls, std::string ctor, const LimitPool& limits,
    ProcessStart start, ConnectionOwner* owner, const void* context) {
  // Before anything starts: limits that cannot cross fail here.
  const WorkerLimitsBlueprint blueprint = ExportWorkerLimits(limits);
  auto shared = std::make_shared<Shared>(Launch(start, cls));
  shared->class_name = std::string(cls.name);
  shared->context = context;
  std::unique_ptr<ProcessConnection> connection(new ProcessConnection(shared));
  owner->Launched(connection->killer());
  Future<std::string> built;
  {
    // Before the reader starts, so that a process dying at once fails it.
    absl::MutexLock lock(&shared->mu);
    Promise<std::string> promise;
    built = promise.GetFuture();
    shared->pending.push_back(std::move(promise));
  }
  connection->reader_ = std::thread(ReadReplies, shared);
  {
    // A failed send shows as the end of the stream, which fails `built`.
    absl::MutexLock lock(&shared->write_mu);
    shared->writer.SendWithFds(FrameKind::kConstruct,
                               Encode(std::string(cls.name), ctor, blueprint.blueprint),
                               blueprint.fds);
  }
  // The constructor's own exception, rebuilt, or CrashedError.
  workers_internal::DecodeReply<void>(built.Result());
  std::function<void()> wake = owner->MakeWaker();
  absl::MutexLock lock(&shared->mu);
  if (shared->dead != nullptr) std::rethrow_exception(shared->dead);
  shared->owner = owner;
  shared->wake_writer = std::move(wake);
  return connection;
}

ProcessConnection::~ProcessConnection() {
  ConnectionOwner* owner;
  std::vector<Future<std::string>> queued;
  {
    absl::MutexLock lock(&shared_->mu);
    shared_->stopping = true;
    owner = shared_->owner;
    // As in every mode, Stop lets the running call finish and cancels the calls queued behind
    // it; here those were sent ahead to the process, which cancels them too when it reads the
    // stop (their promises stay in `pending`, to be matched with the process's replies).
    for (size_t i = 1; i < shared_->pending.size(); ++i) {
      queued.push_back(shared_->pending[i].GetFuture());
    }
  }
  for (const Future<std::string>& call : queued) call.Cancel();
  // Taken before the stop is written, which may block.
  const absl::Time deadline =
      owner != nullptr ? owner->KillDeadline() : absl::Now() + absl::Seconds(30);
  if (owner != nullptr) owner->Closed();
  {
    absl::MutexLock lock(&shared_->write_mu);
    shared_->writer.Append(FrameKind::kStop, {});
    shared_->writer.Flush();
  }
  const auto reader_done = [this]() ABSL_SHARED_LOCKS_REQUIRED(shared_->mu) {
    return shared_->reader_done;
  };
  bool done;
  {
    absl::MutexLock lock(&shared_->mu);
    done = shared_->mu.AwaitWithDeadline(absl::Condition(&reader_done), deadline);
    if (!done) shared_->terminated = true;
  }
  if (!done) {
    Signal(shared_->child, SIGTERM);
    absl::MutexLock lock(&shared_->mu);
    done = shared_->mu.AwaitWithTimeout(absl::Condition(&reader_done), kTermGrace);
  }
  if (!done) {
    Signal(shared_->child, SIGKILL);
    absl::MutexLock lock(&shared_->mu);
    // The kernel closes a killed process's socket at once; what can still hold the reader is a
    // reply's continuation that does not return.
    done = shared_->mu.AwaitWithTimeout(absl::Condition(&reader_done), absl::Seconds(10));
  }
  if (done) {
    reader_.join();
  } else {
    reader_.detach();  // It owns `shared_` too, which reaps the process when it goes.
  }
}

Future<std::string> ProcessConnection::Send(FrameKind kind, absl::string_view a,
                                            absl::string_view b) {
  Promise<std::string> promise;
  Future<std::string> reply = promise.GetFuture();
  absl::MutexLock write_lock(&shared_->write_mu);
  if (kind == FrameKind::kCall) {
    // Cancelling the reply withdraws the call, if the process has not started it.
    promise.OnCancel([weak = std::weak_ptr<Shared>(shared_), number = shared_->next_call++] {
      if (std::shared_ptr<Shared> shared = weak.lock()) shared->Cancel(number);
    });
  }
  {
    absl::MutexLock lock(&shared_->mu);
    if (shared_->dead != nullptr) return MakeFailedFuture<std::string>(shared_->dead);
    shared_->pending.push_back(std::move(promise));
  }
  shared_->AppendCancelsLocked();
  // A broken socket (the process is gone, or the kernel refused the write): the stream ends
  // here, and the reader fails the reply.
  if (!shared_->writer.Append(kind, a, b)) shutdown(shared_->child.socket, SHUT_RDWR);
  return reply;
}

Future<std::string> ProcessConnection::Invoke(absl::string_view method, std::string args) {
  return Send(FrameKind::kCall, CallPrefix(method), args);
}

Future<std::string> ProcessConnection::SendFrameForTesting(FrameKind kind, std::string payload) {
  Future<std::string> reply = Send(kind, payload, {});
  Flush();
  return reply;
}

void ProcessConnection::Flush() {
  absl::MutexLock lock(&shared_->write_mu);
  shared_->AppendCancelsLocked();
  if (!shared_->writer.Flush()) shutdown(shared_->child.socket, SHUT_RDWR);
}

pid_t ProcessConnection::pid() const { return shared_->child.pid; }

ProcessKiller ProcessConnection::killer() const {
  ProcessKiller killer;
  killer.state_ = shared_;
  return killer;
}

void ProcessKiller::Kill(int signal) const {
  if (std::shared_ptr<ConnectionState> shared = state_.lock()) {
    {
      absl::MutexLock lock(&shared->mu);
      if (shared->reader_done) return;  // Ended already (its pid may be another's by now).
      shared->terminated = true;
    }
    Signal(shared->child, signal);
  }
}

void ProcessConnection::ReadReplies(std::shared_ptr<Shared> shared) {
  reader_context = shared->context;
  // Continuations of replies run here: a bounded worker they call must not block this thread,
  // which is what completes that worker's calls.
  const NonBlockingScope non_blocking;
  FrameReader reader(shared->child.socket, shared->child.pidfd);
  Frame frame;
  FrameReader::Status status;
  std::string broken;
  for (;;) {
    status = reader.Next(&frame);
    if (status != FrameReader::Status::kFrame) break;
    std::optional<Promise<std::string>> promise;
    {
      absl::MutexLock lock(&shared->mu);
      if (frame.kind == FrameKind::kReply && !shared->pending.empty()) {
        promise.emplace(std::move(shared->pending.front()));
        shared->pending.pop_front();
      }
    }
    if (!promise.has_value()) {
      broken = absl::StrCat("sent a frame of kind ", static_cast<uint32_t>(frame.kind),
                            " that answers no call");
      status = FrameReader::Status::kBroken;
      break;
    }
    promise->SetValue(std::move(frame.payload));
  }
  if (status == FrameReader::Status::kBroken && broken.empty()) broken = reader.error();
  for (int fd : reader.TakeFds()) close(fd);
  bool stopping, terminated;
  {
    absl::MutexLock lock(&shared->mu);
    terminated = shared->terminated;
    // Terminated by Stop, maybe before the actor's thread got to the stop: expected too.
    stopping = shared->stopping || terminated;
  }
  std::exception_ptr error;
  if (stopping) {
    error = std::make_exception_ptr(StoppedError(
        absl::StrCat("the worker process ", shared->child.pid, " (", shared->class_name, ") ",
                     terminated ? "was terminated by Stop after its timeout" : "stopped",
                     " before it answered this call")));
  } else {
    if (!broken.empty()) Signal(shared->child, SIGKILL);  // It cannot be talked to any more.
    error = std::make_exception_ptr(CrashedError(
        absl::StrCat("the worker process ", shared->child.pid, " (", shared->class_name, ") ",
                     DescribeEnd(shared->child, kStatusWait),
                     broken.empty() ? "" : absl::StrCat(" after its socket broke: ", broken),
                     "; the calls it had not answered failed")));
  }
  std::deque<Promise<std::string>> unanswered;
  ConnectionOwner* owner;
  {
    absl::MutexLock lock(&shared->mu);
    shared->dead = error;
    unanswered.swap(shared->pending);
    owner = stopping ? nullptr : shared->owner;
  }
  // The worker stops accepting calls before any caller sees a failure: a call made after seeing
  // one never lands on the dead worker (a pool routes it to a live one).
  if (owner != nullptr) owner->Died(error);
  for (Promise<std::string>& promise : unanswered) promise.SetError(error);
  absl::MutexLock lock(&shared->mu);
  shared->reader_done = true;
}

}  // namespace concurry::process_internal

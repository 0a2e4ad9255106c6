#include "workers/process/internal/connection.h"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
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
#include "workers/thread/thread_actor.h"

namespace concurry::process_internal {
namespace {

// The context of the connection whose reader the calling thread is.
thread_local const void* reader_context = nullptr;

// How long a process gets between SIGTERM and SIGKILL.
constexpr absl::Duration kTermGrace = absl::Milliseconds(100);
// How long the reader waits for a dead process's status, for the error message.
constexpr absl::Duration kStatusWait = absl::Milliseconds(50);
// How long a waiting caller reads the socket itself before it leaves the reply to the reader
// thread and sleeps (a cancellation or stop of its future does not interrupt that read).
constexpr absl::Duration kDriveWindow = absl::Milliseconds(1);
// Replies larger than this are left to the reader thread, which reads them straight into their
// string.
constexpr uint64_t kDriveMaxFrame = 64 << 10;
// The epoll data of the reader thread's descriptors: the socket, the pidfd, `look`.
constexpr uint64_t kSocketEvent = 0;
constexpr uint64_t kEndedEvent = 1;
constexpr uint64_t kLookEvent = 2;

}  // namespace

bool OnReaderThreadOf(const void* context) {
  return context != nullptr && reader_context == context;
}

bool OnAnyReaderThread() { return reader_context != nullptr; }

// What the connection shares with its reader thread, which may outlive it (detached when a
// reply's continuation on that thread never returns).
struct ConnectionState {
  explicit ConnectionState(ChildProcess launched)
      : child(launched), writer(child.socket), reader(child.socket, child.pidfd) {}
  ~ConnectionState() {
    if (epoll >= 0) close(epoll);
    if (look >= 0) close(look);
    Release(child);
  }

  // Sets up `epoll`, which the reader thread sleeps on: the socket, the pidfd and `look`.
  // Returns false when the system refuses.
  bool WatchForReader();
  // Whether the socket can be read, or the process has ended, right now.
  bool ReadableNow() const;
  // Matches a frame read with the oldest reply awaited and completes it (its continuations run
  // here). Returns false, leaving `broken` set, for a frame that answers nothing.
  bool DeliverLocked(Frame& frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu) ABSL_LOCKS_EXCLUDED(mu);
  // On a caller's thread waiting for reply number `reply` (of a call it sent to the idle process
  // itself): reads the socket until that reply is there, for up to kDriveWindow and never past
  // `deadline`; gives up at once when another thread reads, other calls are outstanding, the
  // reply is large or the stream ends (all of which the reader thread handles).
  void DriveUntil(uint64_t reply, absl::Time deadline) ABSL_LOCKS_EXCLUDED(read_mu, mu);

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

  // Held while reading the socket and completing replies: by the reader thread, and by a caller
  // that reads its own reply (DriveUntil).
  absl::Mutex read_mu ABSL_ACQUIRED_BEFORE(mu);
  FrameReader reader ABSL_GUARDED_BY(read_mu);
  // Why the stream is broken, when a caller reading its reply found out (the reader thread ends
  // the stream with it).
  std::string broken ABSL_GUARDED_BY(read_mu);
  // Where the reader thread sleeps until the socket or the pidfd is readable (-1: not set up). A
  // caller reading its own reply takes the socket out meanwhile, so that the reply does not wake
  // the reader thread too.
  int epoll = -1;
  // An eventfd in `epoll`: a caller that read its reply and left bytes of the next frame in
  // `reader` (the rest of it still coming, or bytes that are no frame) has the reader thread
  // look at them, since the socket may never become readable again.
  int look = -1;

  absl::Mutex mu;
  // Cancellations that could not be written when asked for.
  std::vector<uint64_t> cancels ABSL_GUARDED_BY(mu);
  // Replies awaited, in the order of the frames sent.
  std::deque<Promise<std::string>> pending ABSL_GUARDED_BY(mu);
  // How many replies were ever awaited (pushed to `pending`), and how many of them are over
  // (answered, or failed when the stream ended): reply i is over once answered > i, and
  // promised - answered replies are outstanding. Written under `mu`, also read without it
  // (ProcessConnection::Idle, DriveUntil): release stores, acquire loads.
  std::atomic<uint64_t> promised{0};
  std::atomic<uint64_t> answered{0};
  // How many replies are outstanding (a snapshot; `answered` first, so it never underflows).
  uint64_t Outstanding() const {
    const uint64_t over = answered.load(std::memory_order_acquire);
    return promised.load(std::memory_order_acquire) - over;
  }
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

bool ConnectionState::WatchForReader() {
  epoll = epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) return false;
  look = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (look < 0) return false;
  epoll_event look_event{};
  look_event.events = EPOLLIN;
  look_event.data.u64 = kLookEvent;
  if (epoll_ctl(epoll, EPOLL_CTL_ADD, look, &look_event) != 0) return false;
  epoll_event socket_event{};
  socket_event.events = EPOLLIN;
  socket_event.data.u64 = kSocketEvent;
  if (epoll_ctl(epoll, EPOLL_CTL_ADD, child.socket, &socket_event) != 0) return false;
  if (child.pidfd < 0) return true;
  epoll_event ended_event{};
  ended_event.events = EPOLLIN;
  ended_event.data.u64 = kEndedEvent;
  return epoll_ctl(epoll, EPOLL_CTL_ADD, child.pidfd, &ended_event) == 0;
}

bool ConnectionState::ReadableNow() const {
  pollfd fds[2] = {{child.socket, POLLIN, 0}, {child.pidfd, POLLIN, 0}};
  return poll(fds, child.pidfd >= 0 ? 2 : 1, 0) != 0;  // An error too: Next reports it.
}

bool ConnectionState::DeliverLocked(Frame& frame) {
  std::optional<Promise<std::string>> promise;
  {
    absl::MutexLock lock(&mu);
    if (frame.kind == FrameKind::kReply && !pending.empty()) {
      promise.emplace(std::move(pending.front()));
      pending.pop_front();
      answered.fetch_add(1, std::memory_order_release);
    }
  }
  if (!promise.has_value()) {
    broken = absl::StrCat("sent a frame of kind ", static_cast<uint32_t>(frame.kind),
                          " that answers no call");
    return false;
  }
  promise->SetValue(std::move(frame.payload));
  return true;
}

void ConnectionState::DriveUntil(uint64_t reply, absl::Time deadline) {
  // The reader thread is reading, or another caller: let it.
  if (epoll < 0 || !read_mu.TryLock()) return;
  const auto over = [this, reply] { return answered.load(std::memory_order_acquire) > reply; };
  // Completing replies here makes this thread one that completes this worker's replies: it must
  // not send inline, wait for the worker to stop, nor block on a full bounded worker meanwhile
  // (as on the reader thread).
  const void* const outer = std::exchange(reader_context, context);
  {
    const NonBlockingScope non_blocking;
    if (Outstanding() == 1 && !over() && broken.empty()) {
      epoll_event quiet{};
      quiet.data.u64 = kSocketEvent;
      const bool taken = epoll_ctl(epoll, EPOLL_CTL_MOD, child.socket, &quiet) == 0;
      const absl::Time until = std::min(deadline, absl::Now() + kDriveWindow);
      Frame frame;
      for (bool ok = taken; ok;) {
        // Only the frames up to this caller's reply: what comes after is the reader thread's.
        while (!over() && reader.HasFrame()) {
          if (reader.Next(&frame) != FrameReader::Status::kFrame || !DeliverLocked(frame)) {
            shutdown(child.socket, SHUT_RDWR);  // The reader thread ends the stream.
            ok = false;
            break;
          }
        }
        if (!ok || over() || reader.BufferedFrameLength() > kDriveMaxFrame) break;
        const absl::Duration left = until - absl::Now();
        if (left <= absl::ZeroDuration()) break;
        pollfd fds[2] = {{child.socket, POLLIN, 0}, {child.pidfd, POLLIN, 0}};
        const timespec timeout = absl::ToTimespec(left);
        const int ready = ppoll(fds, child.pidfd >= 0 ? 2 : 1, &timeout, nullptr);
        if (ready < 0 && errno == EINTR) continue;
        // Timed out, failed, or the process ended: the reader thread takes over.
        if (ready <= 0 || fds[0].revents == 0) break;
        // One read (what the socket holds, up to the buffer's room): the loop polls again if the
        // frame is not whole. False at the end of the stream, which the reader thread then
        // reads too (after the frames before it).
        ok = reader.ReadAvailable(/*limit=*/1);
      }
      // Bytes left in the buffer (frames after this caller's, a frame still arriving, bytes that
      // are no frame) are the reader thread's, and the socket may never wake it for them.
      if (broken.empty() && reader.buffered_bytes() > 0) {
        const uint64_t one = 1;
        if (write(look, &one, sizeof(one)) < 0) shutdown(child.socket, SHUT_RDWR);
      }
      if (taken) {
        epoll_event watch{};
        watch.events = EPOLLIN;
        watch.data.u64 = kSocketEvent;
        // Without the socket in its set the reader thread would never read again: end the
        // stream rather than leave calls unanswered.
        if (epoll_ctl(epoll, EPOLL_CTL_MOD, child.socket, &watch) != 0) {
          shutdown(child.socket, SHUT_RDWR);
        }
      }
    }
  }
  reader_context = outer;
  read_mu.Unlock();
}

namespace {

// The reply of a call the caller's thread sent itself (ProcessConnection::TakeWaitDriver): by its
// number, so that an offer never taken keeps neither the reply nor the connection alive.
class ReplyDriver final : public futures_internal::WaitDriver {
 public:
  ReplyDriver(std::weak_ptr<ConnectionState> state, uint64_t reply)
      : state_(std::move(state)), reply_(reply) {}
  void Drive(absl::Time deadline) noexcept override {
    if (std::shared_ptr<ConnectionState> state = state_.lock()) {
      state->DriveUntil(reply_, deadline);
    }
  }

 private:
  const std::weak_ptr<ConnectionState> state_;
  const uint64_t reply_;
};

}  // namespace

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
    shared->promised.store(1, std::memory_order_release);
  }
  // Without epoll the reader thread blocks on the socket itself, and no caller reads its reply.
  if (!shared->WatchForReader() && shared->epoll >= 0) {
    close(shared->epoll);
    shared->epoll = -1;
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
  last_sent_.reset();
  uint64_t number;  // Of the reply, among all replies awaited.
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
    number = shared_->promised.fetch_add(1, std::memory_order_release);
  }
  shared_->AppendCancelsLocked();
  // A broken socket (the process is gone, or the kernel refused the write): the stream ends
  // here, and the reader fails the reply.
  const bool send_now = workers_internal::SendNowScope::Active();
  if (send_now && kind == FrameKind::kCall) last_sent_ = number;
  if (!shared_->writer.Append(kind, a, b) || (send_now && !shared_->writer.FlushNow())) {
    shutdown(shared_->child.socket, SHUT_RDWR);
  } else if (send_now && shared_->writer.buffered() > 0) {
    // The socket is full: the actor's thread, which may block, sends the rest.
    std::function<void()> wake;
    {
      absl::MutexLock lock(&shared_->mu);
      wake = shared_->wake_writer;
    }
    if (wake) wake();
  }
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

std::shared_ptr<futures_internal::WaitDriver> ProcessConnection::TakeWaitDriver() {
  if (!last_sent_.has_value()) return nullptr;
  auto driver = std::make_shared<ReplyDriver>(shared_, *last_sent_);
  last_sent_.reset();
  return driver;
}

bool ProcessConnection::Idle() const { return shared_->Outstanding() == 0; }

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
  Frame frame;
  FrameReader::Status status = FrameReader::Status::kFrame;
  std::string broken;
  for (;;) {
    if (shared->epoll >= 0) {
      epoll_event events[3];
      const int ready = epoll_wait(shared->epoll, events, 3, -1);
      if (ready < 0) {
        if (errno == EINTR) continue;
        broken = absl::StrCat("waiting on the worker socket failed: ", std::strerror(errno));
        status = FrameReader::Status::kBroken;
        break;
      }
      for (int i = 0; i < ready; ++i) {
        uint64_t count;
        if (events[i].data.u64 == kLookEvent) (void)!read(shared->look, &count, sizeof(count));
      }
    }
    absl::MutexLock lock(&shared->read_mu);
    if (!shared->broken.empty()) {
      broken = shared->broken;
      status = FrameReader::Status::kBroken;
      break;
    }
    // A caller reading its own reply may have taken what woke this thread: Next would then
    // block, holding read_mu.
    if (shared->epoll >= 0 && shared->reader.buffered_bytes() == 0 && !shared->ReadableNow()) {
      continue;
    }
    // One frame (waiting for the rest of it), then those already buffered.
    do {
      status = shared->reader.Next(&frame);
      if (status == FrameReader::Status::kFrame && !shared->DeliverLocked(frame)) {
        broken = shared->broken;
        status = FrameReader::Status::kBroken;
      }
    } while (status == FrameReader::Status::kFrame && shared->reader.HasFrame());
    if (status != FrameReader::Status::kFrame) {
      if (status == FrameReader::Status::kBroken && broken.empty()) {
        broken = shared->reader.error();
      }
      break;
    }
  }
  {
    absl::MutexLock lock(&shared->read_mu);
    for (int fd : shared->reader.TakeFds()) close(fd);
  }
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
    shared->answered.store(shared->promised.load(std::memory_order_relaxed),
                           std::memory_order_release);
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

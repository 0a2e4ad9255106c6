#include "workers/process/internal/child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "limits/limit_pool.h"
#include "workers/codec.h"
#include "workers/internal/actor.h"
#include "workers/internal/cancel_signal.h"
#include "workers/process/internal/launch.h"
#include "workers/process/internal/limits_transfer.h"
#include "workers/process/internal/wire.h"
#include "workers/registration.h"

namespace concurry::process_internal {
namespace {

using workers_internal::EncodedClass;

// The fd a worker process serves on (the socket is moved there).
constexpr int kSocketFd = 3;

std::string ErrorReply(absl::string_view message) {
  return workers_internal::EncodeErrorReply(
      std::make_exception_ptr(StatusError(absl::DataLossError(message))));
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

// this_call::CancelRequested() in a worker process. Nothing reads the socket while a call runs,
// so asking reads what has arrived, without blocking, and looks for a cancellation of the running
// call among it: a method that never asks costs nothing.
class PeekingCancelSignal final : public workers_internal::CancelSignal {
 public:
  explicit PeekingCancelSignal(absl::FunctionRef<bool()> peek) : peek_(peek) {}
  bool CancelRequested() const noexcept override { return peek_(); }

 private:
  const absl::FunctionRef<bool()> peek_;
};

}  // namespace

int ServeWorker(int socket, const EncodedClass* known) {
  FrameReader reader(socket);
  FrameWriter writer(socket);
  Frame frame;
  if (reader.Next(&frame) != FrameReader::Status::kFrame) return 3;
  if (frame.kind != FrameKind::kConstruct) {
    writer.Append(FrameKind::kReply, ErrorReply("the first frame a worker process received was "
                                                "not its construction"));
    writer.Flush();
    return 4;
  }
  const std::vector<int> fds = reader.TakeFds();
  const EncodedClass* cls = nullptr;
  void* object = nullptr;
  // Lives until the process exits: CurrentWorkerLimits() hands out copies of it.
  static std::optional<LimitPool>* limits = new std::optional<LimitPool>();
  try {
    auto [name, ctor, blueprint] =
        DecodeTuple<std::string, std::string, std::string>(frame.payload);
    cls = known != nullptr ? known : workers_internal::FindEncodedClass(name);
    if (cls == nullptr) {
      throw InvalidOptionError(absl::StrCat(
          "the worker process does not know the worker class \"", name,
          "\": it is registered (CONCURRY_REGISTER_WORKER) only by code the fork server did not "
          "run; call concurry::StartForkServer() in main, not from a static initializer"));
    }
    limits->emplace(ImportWorkerLimits(blueprint, fds));
    CloseAll(fds);
    workers_internal::ActorCore::SetProcessLimits(&**limits);
    object = cls->construct(ctor);
  } catch (...) {
    CloseAll(fds);
    writer.Append(FrameKind::kReply, workers_internal::EncodeErrorReply(std::current_exception()));
    writer.Flush();
    return 0;
  }
  if (!writer.Append(FrameKind::kReply, workers_internal::EncodeReply())) return 5;
  // Frames read and not handled yet, with each call's number; the cancelled calls' numbers.
  struct Queued {
    uint64_t number;
    Frame frame;
  };
  std::deque<Queued> queue;
  absl::flat_hash_set<uint64_t> cancelled;
  uint64_t next_number = 0;
  // Calls below this number have been popped: a cancellation for them comes too late.
  uint64_t popped = 0;
  bool stop = false;  // A stop frame came: what is queued is cancelled.
  bool open = true;   // The stream goes on.
  // The number of the call running (UINT64_MAX: none), and whether a cancellation named it.
  uint64_t running = UINT64_MAX;
  bool running_cancelled = false;
  const auto take = [&](Frame frame) {
    if (frame.kind == FrameKind::kStop) {
      stop = true;
    } else if (frame.kind == FrameKind::kCancel) {
      uint64_t number = 0;
      if (frame.payload.size() == sizeof(number)) {
        std::memcpy(&number, frame.payload.data(), sizeof(number));
        if (number == running) {
          running_cancelled = true;
        } else if (number >= popped) {
          cancelled.insert(number);
        }
      }
    } else {
      const uint64_t number = frame.kind == FrameKind::kCall ? next_number++ : UINT64_MAX;
      queue.push_back({number, std::move(frame)});
    }
  };
  // Runs on this thread only (the signal is this thread's), between the main loop's reads. The
  // end of the stream is left for the main loop to find again (a closed socket stays readable).
  // Running out of memory queueing what arrived ends the process (CancelRequested is noexcept),
  // as it does in the main loop: the caller gets CrashedError, never a call silently lost.
  bool peer_ended = false;
  const auto peek = [&]() -> bool {
    if (running_cancelled || peer_ended || !open) return running_cancelled;
    peer_ended = !reader.ReadAvailable();
    Frame arrived;
    while (reader.HasFrame() && reader.Next(&arrived) == FrameReader::Status::kFrame) {
      take(std::move(arrived));
    }
    return running_cancelled;
  };
  const PeekingCancelSignal running_signal(peek);
  const std::string cancelled_reply = workers_internal::EncodeErrorReply(std::make_exception_ptr(
      CancelledError("the call was cancelled before it started in the worker process")));
  // Whether the last read was a blocking one that just returned: it took all the socket held, so
  // looking again before the call it brought would only cost a system call.
  bool fresh = false;
  while (open || !queue.empty()) {
    if (queue.empty()) {
      if (stop) break;
      // Replies go out in one batch once no further call is waiting (pipelined callers).
      if (!writer.Flush()) break;
      if (reader.Next(&frame) != FrameReader::Status::kFrame) break;  // The parent is gone.
      take(std::move(frame));
      fresh = true;
      continue;
    }
    // Before each call: whatever else has arrived, so that a cancellation or a stop sent while the
    // previous call ran applies to the calls behind it.
    if (open) {
      if (!std::exchange(fresh, false)) open = reader.ReadAvailable();
      while (reader.HasFrame() && reader.Next(&frame) == FrameReader::Status::kFrame) {
        take(std::move(frame));
      }
      if (!open && !stop) break;  // The parent is gone: nobody waits for these calls.
    }
    Queued next = std::move(queue.front());
    queue.pop_front();
    if (next.number != UINT64_MAX) popped = next.number + 1;
    std::string reply;
    absl::string_view method, args;
    if (next.frame.kind != FrameKind::kCall) {
      reply = ErrorReply(absl::StrCat("the worker process received a frame of unknown kind ",
                                      static_cast<uint32_t>(next.frame.kind)));
    } else if (stop || cancelled.erase(next.number) > 0) {
      reply = cancelled_reply;
    } else if (!ParseCallPayload(next.frame.payload, &method, &args)) {
      reply = ErrorReply(absl::StrCat("the worker process received a call frame of ",
                                      next.frame.payload.size(),
                                      " bytes whose method name does not fit in it"));
    } else {
      // The replies of the calls before go out before this one runs: a caller must not wait for
      // a finished call while the next one runs, nor lose its reply if the next one crashes.
      if (writer.buffered() > 0 && !writer.Flush()) break;
      running = next.number;
      running_cancelled = false;
      Future<std::string> result;
      {
        const workers_internal::ScopedCancelSignal scope(&running_signal);
        result = cls->invoke(object, method, args);
        result.Wait();
      }
      running = UINT64_MAX;
      if (std::exception_ptr error = result.Error()) {
        reply = workers_internal::EncodeErrorReply(error);
      } else {
        reply = std::move(result).Result();
      }
    }
    if (!writer.Append(FrameKind::kReply, reply)) break;
  }
  writer.Flush();
  cls->destroy(object);
  return 0;
}

void RunWorkerChild(int socket, const EncodedClass* known, pid_t parent) {
  // Die with the parent (the fork server, or the thread that forked us), even mid-call.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);  // The parent died before the line above.
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  if (socket != kSocketFd) {
    if (dup2(socket, kSocketFd) < 0) _exit(2);
  }
  // A program the worker runs (system(), exec) must not hold the socket open after it dies.
  fcntl(kSocketFd, F_SETFD, FD_CLOEXEC);
  // Nothing else of the parent's stays open here: a worker holding another worker's socket
  // would hide that worker's death from the parent.
  close_range(kSocketFd + 1, ~0U, 0);
  ForgetForkServerInChild();
  _exit(ServeWorker(kSocketFd, known));
}

}  // namespace concurry::process_internal

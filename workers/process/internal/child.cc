#include "workers/process/internal/child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "limits/limit_pool.h"
#include "workers/codec.h"
#include "workers/internal/actor.h"
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
  for (;;) {
    // Replies go out in one batch once no further call is buffered (pipelined callers).
    if (!reader.HasFrame() && !writer.Flush()) break;
    if (reader.Next(&frame) != FrameReader::Status::kFrame) break;  // The parent is gone.
    if (frame.kind == FrameKind::kStop) break;
    std::string reply;
    absl::string_view method, args;
    if (frame.kind != FrameKind::kCall) {
      reply = ErrorReply(absl::StrCat("the worker process received a frame of unknown kind ",
                                      static_cast<uint32_t>(frame.kind)));
    } else if (!ParseCallPayload(frame.payload, &method, &args)) {
      reply = ErrorReply(absl::StrCat("the worker process received a call frame of ",
                                      frame.payload.size(),
                                      " bytes whose method name does not fit in it"));
    } else {
      Future<std::string> result = cls->invoke(object, method, args);
      result.Wait();
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

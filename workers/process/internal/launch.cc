// The fork server and the two ways to start a worker process.

#include "workers/process/internal/launch.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "workers/process/fork_server.h"
#include "workers/process/internal/child.h"

namespace concurry {
namespace process_internal {
namespace {

// ---- The fork server's protocol: one fixed-size message each way (SOCK_SEQPACKET) ----------

enum Op : uint32_t {
  // Fork a worker process serving on the attached socket. Reply: its pid, or -errno.
  kSpawn = 1,
  // How did worker `pid` end? Waits up to `wait_ms` for it. Reply: found, and its wait status.
  kStatus = 2,
};

struct Request {
  uint32_t op = 0;
  int32_t pid = 0;
  int64_t wait_ms = 0;
};

struct Reply {
  int64_t value = 0;  // kSpawn: the pid or -errno. kStatus: 1 when found.
  int32_t status = 0;
  int32_t unused = 0;
};

// How many ended workers' statuses the server remembers for kStatus.
constexpr size_t kRememberedEnds = 1024;

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Receives one request and the descriptor attached to it (-1: none). Returns false at the end
// of the stream.
bool ReceiveRequest(int ctl, Request* request, int* fd) {
  *fd = -1;
  iovec iov{request, sizeof(*request)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t got;
  do {
    got = recvmsg(ctl, &message, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got <= 0) return false;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&message); cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&message, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      std::memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
    }
  }
  return got == sizeof(*request);
}

// The fork server's main loop. Never returns.
[[noreturn]] void ServeForkServer(int ctl, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);
  constexpr int kCtlFd = 3;
  if (ctl != kCtlFd && dup2(ctl, kCtlFd) < 0) _exit(1);
  close_range(kCtlFd + 1, ~0U, 0);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) _exit(1);
  std::map<pid_t, int> ended;
  std::deque<pid_t> ended_order;
  const auto reap = [&] {
    signalfd_siginfo info;
    while (read(sigfd, &info, sizeof(info)) > 0) {
    }
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      ended[pid] = status;
      ended_order.push_back(pid);
      if (ended_order.size() > kRememberedEnds) {
        ended.erase(ended_order.front());
        ended_order.pop_front();
      }
    }
  };
  for (;;) {
    pollfd fds[2] = {{kCtlFd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) _exit(1);
    if (fds[1].revents != 0) reap();
    if (fds[0].revents == 0) continue;
    Request request;
    int fd;
    if (!ReceiveRequest(kCtlFd, &request, &fd)) _exit(0);  // The program is gone.
    Reply reply;
    if (request.op == kSpawn) {
      if (fd < 0) {
        reply.value = -EINVAL;
      } else {
        const pid_t server = getpid();
        const pid_t pid = fork();
        if (pid == 0) {
          close(kCtlFd);
          close(sigfd);
          RunWorkerChild(fd, nullptr, server);
        }
        reply.value = pid < 0 ? -errno : pid;
        close(fd);
      }
    } else if (request.op == kStatus) {
      const absl::Time until = absl::Now() + absl::Milliseconds(request.wait_ms);
      for (;;) {
        reap();
        if (ended.count(request.pid) > 0) break;
        const int64_t left = absl::ToInt64Milliseconds(until - absl::Now());
        if (left <= 0) break;
        pollfd wait{sigfd, POLLIN, 0};
        poll(&wait, 1, static_cast<int>(left));
      }
      const auto it = ended.find(request.pid);
      if (it != ended.end()) {
        reply.value = 1;
        reply.status = it->second;
      }
    } else if (fd >= 0) {
      close(fd);
    }
    if (send(kCtlFd, &reply, sizeof(reply), MSG_NOSIGNAL) != sizeof(reply)) _exit(0);
  }
}

// The program's side of the fork server.
class ForkServer {
 public:
  static ForkServer& Get() { return *Current(); }

  // In a new worker process: the parent's client state (its mutex may have been held by another
  // thread at the fork) is dropped, so that the worker can start process workers of its own.
  static void ForgetInChild() { Current() = new ForkServer(); }

  void Start() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    StartLocked();
  }

  bool running() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return ctl_ >= 0;
  }

  // Starts a worker process serving on `socket` (which stays the caller's). Returns its pid.
  pid_t Spawn(int socket) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (ctl_ < 0) {
      if (!SingleThreaded()) {
        throw InvalidOptionError(
            "Mode::kProcess: a process worker starts from the fork server by default, and it "
            "was not started: call concurry::StartForkServer() at the top of main, before the "
            "program starts threads (workers/process/fork_server.h), or create the worker with "
            ".process_start = concurry::ProcessStart::kFork (see docs/process.md for when that "
            "is safe)");
      }
      StartLocked();
    }
    Request request{.op = kSpawn};
    Reply reply;
    if (!ExchangeLocked(request, socket, &reply)) {
      throw CrashedError(absl::StrCat("Mode::kProcess: the fork server (process ", pid_,
                                      ") is gone, so no worker process can start"));
    }
    if (reply.value < 0) {
      throw CrashedError(absl::StrCat("Mode::kProcess: the fork server could not fork a worker: ",
                                      std::strerror(static_cast<int>(-reply.value))));
    }
    return static_cast<pid_t>(reply.value);
  }

  // The wait status of a worker the server started, waiting up to `wait` for it to end.
  bool Status(pid_t pid, absl::Duration wait, int* status) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (ctl_ < 0) return false;
    Request request{.op = kStatus, .pid = pid, .wait_ms = absl::ToInt64Milliseconds(wait)};
    Reply reply;
    if (!ExchangeLocked(request, -1, &reply) || reply.value != 1) return false;
    *status = reply.status;
    return true;
  }

 private:
  void StartLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ctl_ >= 0) return;
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      throw CrashedError(
          absl::StrCat("StartForkServer: socketpair failed: ", std::strerror(errno)));
    }
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      const int error = errno;
      close(pair[0]);
      close(pair[1]);
      throw CrashedError(absl::StrCat("StartForkServer: fork failed: ", std::strerror(error)));
    }
    if (pid == 0) {
      close(pair[0]);
      ServeForkServer(pair[1], parent);
    }
    close(pair[1]);
    ctl_ = pair[0];
    pid_ = pid;
  }

  // Sends `request` (with `fd` attached unless -1) and reads the reply. On failure the server is
  // gone: forgets it (and reaps it), and returns false.
  bool ExchangeLocked(const Request& request, int fd, Reply* reply)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    iovec iov{const_cast<Request*>(&request), sizeof(request)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    if (fd >= 0) {
      std::memset(control, 0, sizeof(control));
      message.msg_control = control;
      message.msg_controllen = sizeof(control);
      cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    ssize_t done;
    do {
      done = sendmsg(ctl_, &message, MSG_NOSIGNAL);
    } while (done < 0 && errno == EINTR);
    if (done == sizeof(request)) {
      do {
        done = recv(ctl_, reply, sizeof(*reply), 0);
      } while (done < 0 && errno == EINTR);
      if (done == sizeof(*reply)) return true;
    }
    close(ctl_);
    ctl_ = -1;
    waitpid(pid_, nullptr, WNOHANG);
    return false;
  }

  static ForkServer*& Current() {
    static ForkServer* server = new ForkServer();
    return server;
  }

  absl::Mutex mu_;
  int ctl_ ABSL_GUARDED_BY(mu_) = -1;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = -1;
};

std::string DescribeStatus(int status) {
  if (WIFSIGNALED(status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  return "ended";
}

}  // namespace

void ForgetForkServerInChild() { ForkServer::ForgetInChild(); }

bool SingleThreaded() {
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return false;
  int count = 0;
  while (dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(tasks);
  return count == 1;
}

ChildProcess Launch(ProcessStart start, const workers_internal::EncodedClass& cls) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    throw CrashedError(absl::StrCat("Mode::kProcess: socketpair failed: ", std::strerror(errno)));
  }
  ChildProcess child;
  child.socket = pair[0];
  if (start == ProcessStart::kFork) {
    const pid_t parent = getpid();
    workers_internal::LockRegistriesForFork();
    const pid_t pid = fork();
    const int error = errno;
    workers_internal::UnlockRegistriesAfterFork();
    if (pid == 0) {
      // Other threads may have held absl's deadlock-detection graph, which every absl::Mutex
      // operation takes while detection is on: turn it off in this copy.
      absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
      close(pair[0]);
      RunWorkerChild(pair[1], &cls, parent);
    }
    close(pair[1]);
    if (pid < 0) {
      close(pair[0]);
      throw CrashedError(absl::StrCat("Mode::kProcess: fork failed: ", std::strerror(error)));
    }
    child.pid = pid;
    child.forked_here = true;
  } else {
    try {
      child.pid = ForkServer::Get().Spawn(pair[1]);
    } catch (...) {
      close(pair[0]);
      close(pair[1]);
      throw;
    }
    close(pair[1]);
  }
  child.pidfd = PidfdOpen(child.pid);
  return child;
}

void Signal(const ChildProcess& child, int signal) {
  if (child.pidfd >= 0) {
    syscall(SYS_pidfd_send_signal, child.pidfd, signal, nullptr, 0);
  } else if (child.pid > 0) {
    kill(child.pid, signal);
  }
}

bool WaitEnded(const ChildProcess& child, absl::Duration wait) {
  if (child.pidfd >= 0) {
    const absl::Time until = absl::Now() + wait;
    for (;;) {
      pollfd fd{child.pidfd, POLLIN, 0};
      const int64_t left = std::max<int64_t>(0, absl::ToInt64Milliseconds(until - absl::Now()));
      const int ready =
          poll(&fd, 1, wait == absl::InfiniteDuration() ? -1 : static_cast<int>(left));
      if (ready > 0) return true;
      if (ready == 0) return false;
      if (errno != EINTR) return false;
    }
  }
  // No pidfd (the process was gone before it could be opened, or an old kernel).
  const absl::Time until = absl::Now() + wait;
  do {
    if (kill(child.pid, 0) != 0 && errno == ESRCH) return true;
    if (child.forked_here) {
      siginfo_t info{};
      if (waitid(P_PID, child.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0) {
        return true;
      }
    }
    absl::SleepFor(absl::Milliseconds(1));
  } while (absl::Now() < until);
  return false;
}

std::string DescribeEnd(const ChildProcess& child, absl::Duration wait) {
  if (child.forked_here) {
    if (!WaitEnded(child, wait)) return "ended";
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) return DescribeStatus(status);
    return "ended";
  }
  int status = 0;
  if (ForkServer::Get().Status(child.pid, wait, &status)) return DescribeStatus(status);
  return "ended";
}

void Release(ChildProcess& child) {
  if (child.forked_here && child.pid > 0) {
    // Ended already, or about to (killed): reap it so that no zombie stays.
    if (WaitEnded(child, absl::Seconds(10))) waitpid(child.pid, nullptr, WNOHANG);
  }
  if (child.socket >= 0) close(child.socket);
  if (child.pidfd >= 0) close(child.pidfd);
  child.socket = child.pidfd = -1;
  child.pid = -1;
}

}  // namespace process_internal

void StartForkServer() { process_internal::ForkServer::Get().Start(); }

bool ForkServerRunning() { return process_internal::ForkServer::Get().running(); }

}  // namespace concurry

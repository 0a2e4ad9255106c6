#include "testing/redis_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace concurry {
namespace testkit {
namespace {

constexpr char kRedisServer[] = "/usr/bin/redis-server";
constexpr int kPortAttempts = 5;
// How often a start checks the log and the port while the server comes up.
constexpr absl::Duration kStartPoll = absl::Milliseconds(5);

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// A port that was free a moment ago: bind port 0 on 127.0.0.1, read it, close.
int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(absl::StrCat("socket(): ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int error = errno;
    close(fd);
    throw std::runtime_error(absl::StrCat("binding 127.0.0.1:0: ", std::strerror(error)));
  }
  close(fd);
  return ntohs(address.sin_port);
}

// Sends PING to 127.0.0.1:port and returns whether a Redis answered (+PONG, or -NOAUTH from a
// server with a password), waiting at most until `deadline`.
bool Ping(int port, absl::Time deadline) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    static constexpr char kPing[] = "*1\r\n$4\r\nPING\r\n";
    if (send(fd, kPing, sizeof(kPing) - 1, MSG_NOSIGNAL) == sizeof(kPing) - 1) {
      std::string answer;
      char buffer[256];
      while (answer.find("\r\n") == std::string::npos) {
        const absl::Duration left = deadline - absl::Now();
        pollfd pfd = {fd, POLLIN, 0};
        if (left <= absl::ZeroDuration() ||
            poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) {
          break;
        }
        const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
        if (n <= 0) break;
        answer.append(buffer, n);
      }
      ok = absl::StartsWith(answer, "+PONG") || absl::StartsWith(answer, "-NOAUTH");
    }
  }
  close(fd);
  return ok;
}

void RemoveTree(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* entry = readdir(d)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") unlink((dir + "/" + name).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

}  // namespace

bool RedisServer::Available(std::string* why_not) {
  if (access(kRedisServer, X_OK) == 0) return true;
  if (why_not != nullptr) {
    *why_not = absl::StrCat(kRedisServer,
                            " is not installed: install the Debian package redis-server "
                            "(tools/setup.sh does)");
  }
  return false;
}

RedisServer::RedisServer(RedisServerOptions options, std::string dir)
    : options_(std::move(options)), dir_(std::move(dir)), log_path_(dir_ + "/redis.log") {
  if (options_.unix_socket) unix_socket_path_ = dir_ + "/redis.sock";
}

std::unique_ptr<RedisServer> RedisServer::Start(RedisServerOptions options) {
  std::string why_not;
  if (!Available(&why_not)) throw std::runtime_error(why_not);
  // Under /tmp rather than TEST_TMPDIR: a unix socket path must fit in 108 bytes.
  char dir_template[] = "/tmp/concurry-redis-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    throw std::runtime_error(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  std::unique_ptr<RedisServer> server(new RedisServer(std::move(options), dir_template));
  for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
    server->port_ = PickFreePort();
    if (server->Launch()) return server;
  }
  throw std::runtime_error(absl::StrCat("redis-server found no free port in ", kPortAttempts,
                                        " attempts; log tail:\n", server->LogTail()));
}

RedisServer::~RedisServer() {
  if (getpid() != owner_pid_) return;  // A fork()ed child's copy: the server is the parent's.
  Stop();
  RemoveTree(dir_);
}

bool RedisServer::Launch() {
  std::vector<std::string> args = {kRedisServer,
                                   "--port",
                                   absl::StrCat(port_),
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--dir",
                                   dir_,
                                   "--logfile",
                                   ""};
  if (!unix_socket_path_.empty()) {
    args.insert(args.end(), {"--unixsocket", unix_socket_path_, "--unixsocketperm", "700"});
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    throw std::runtime_error(absl::StrCat("open ", log_path_, ": ", std::strerror(errno)));
  }
  const size_t log_start = ReadFile(log_path_).size();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(log_fd);
    throw std::runtime_error(absl::StrCat("fork: ", std::strerror(error)));
  }
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // The parent died before prctl took effect.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    syscall(SYS_close_range, 3u, ~0u, 0u);  // No inherited sockets of the test.
    execv(kRedisServer, argv.data());
    _exit(127);
  }
  close(log_fd);
  pid_ = pid;
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));

  const absl::Time deadline = absl::Now() + options_.start_timeout;
  while (true) {
    const std::string log = ReadFile(log_path_).substr(log_start);
    if (WaitExit(absl::Now())) {
      // Read again: the server may have logged why and exited after `log` was read.
      if (absl::StrContains(ReadFile(log_path_).substr(log_start), "Address already in use")) {
        return false;
      }
      throw std::runtime_error(absl::StrCat("redis-server on port ", port_,
                                            " exited while starting; log tail:\n", LogTail()));
    }
    // The log is this server's own, so its "Ready" line cannot come from another process that
    // happens to listen on the port; PING then checks that it answers.
    if (absl::StrContains(log, "Ready to accept connections") && Ping(port_, deadline)) {
      return true;
    }
    if (absl::Now() >= deadline) {
      Kill();
      throw std::runtime_error(
          absl::StrCat("redis-server on port ", port_, " did not answer PING within ",
                       absl::FormatDuration(options_.start_timeout), "; log tail:\n", LogTail()));
    }
    // Waits on the child's exit too (the pidfd), so a failed start is noticed at once.
    pollfd pfd = {pidfd_, POLLIN, 0};
    poll(&pfd, pidfd_ >= 0 ? 1 : 0, static_cast<int>(absl::ToInt64Milliseconds(kStartPoll)));
  }
}

bool RedisServer::WaitExit(absl::Time deadline) {
  if (pid_ <= 0) return true;
  while (true) {
    int status = 0;
    const pid_t reaped = waitpid(pid_, &status, WNOHANG);
    if (reaped == pid_ || (reaped < 0 && errno == ECHILD)) {
      pid_ = 0;
      if (pidfd_ >= 0) close(pidfd_);
      pidfd_ = -1;
      return true;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd pfd = {pidfd_, POLLIN, 0};
    const int timeout_ms =
        pidfd_ >= 0 ? static_cast<int>(absl::ToInt64Milliseconds(left)) + 1 : 5;  // No pidfd.
    poll(&pfd, pidfd_ >= 0 ? 1 : 0, timeout_ms);
  }
}

void RedisServer::Stop() {
  if (pid_ <= 0 || getpid() != owner_pid_) return;
  kill(pid_, SIGTERM);
  if (WaitExit(absl::Now() + options_.stop_timeout)) return;
  Kill();
}

void RedisServer::Kill() {
  if (pid_ <= 0 || getpid() != owner_pid_) return;
  kill(pid_, SIGKILL);
  WaitExit(absl::InfiniteFuture());
}

void RedisServer::Restart() {
  Stop();
  if (!Launch()) {
    throw std::runtime_error(absl::StrCat("redis-server could not restart on port ", port_,
                                          ": another process took it; log tail:\n", LogTail()));
  }
}

std::string RedisServer::LogTail(size_t bytes) const {
  const std::string log = ReadFile(log_path_);
  return log.size() <= bytes ? log : log.substr(log.size() - bytes);
}

}  // namespace testkit
}  // namespace concurry

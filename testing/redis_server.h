// RedisServer: a private redis-server (Debian's /usr/bin/redis-server) for tests and benchmarks,
// on a free loopback port, with no persistence, in a temporary directory of its own.
//
//   std::string why_not;
//   ASSERT_TRUE(testkit::RedisServer::Available(&why_not)) << why_not;
//   std::unique_ptr<testkit::RedisServer> redis = testkit::RedisServer::Start();
//   RedisOptions options{.port = redis->port()};
//   redis->Restart();  // same port, empty data set (tests of "Redis restarted mid-run")
//   redis->Kill();     // SIGKILL (a crash); Stop() is SIGTERM, then SIGKILL after a bound
//
// The server dies with the thread that started it (PR_SET_PDEATHSIG), so it never outlives the
// test: start it from a thread that lives as long as the server (the test's main thread).

#ifndef CONCURRY_TESTING_REDIS_SERVER_H_
#define CONCURRY_TESTING_REDIS_SERVER_H_

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace concurry {
namespace testkit {

struct RedisServerOptions {
  // Appended to redis-server's command line, e.g. {"--requirepass", "secret"}.
  std::vector<std::string> extra_args = {};
  // Also listen on the unix socket unix_socket_path() (<dir>/redis.sock).
  bool unix_socket = false;
  // Bound of a start (until the server answers PING) and of a graceful stop (SIGTERM).
  absl::Duration start_timeout = absl::Seconds(5);
  absl::Duration stop_timeout = absl::Seconds(5);
};

// One redis-server child process. Start() and Restart() throw std::runtime_error, with the tail
// of the server's log, when it does not come up in time. Not thread-safe; confine to one thread.
class RedisServer {
 public:
  // Whether /usr/bin/redis-server exists; if not and `why_not` is set, says what to install.
  static bool Available(std::string* why_not = nullptr);

  // Starts a server on a free loopback port and waits until it answers PING. Retries with
  // another port when the chosen one was taken in the meantime (a few times).
  static std::unique_ptr<RedisServer> Start(RedisServerOptions options = {});

  // Stops the server (Stop()) and removes its directory.
  ~RedisServer();

  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  // "<dir>/redis.sock" with options.unix_socket, else "".
  const std::string& unix_socket_path() const { return unix_socket_path_; }
  // The server's working directory (its log is <dir>/redis.log).
  const std::string& dir() const { return dir_; }
  // Whether the server process is running (it was started and not stopped or killed).
  bool running() const { return pid_ > 0; }
  // The server's process id, or 0 when it is not running.
  pid_t pid() const { return pid_; }

  // SIGTERM, then SIGKILL when it has not exited within options.stop_timeout. No-op when stopped,
  // and in a fork()ed child (as are Kill() and the destructor): the server is the parent's.
  void Stop();
  // SIGKILL (a crash: no shutdown work), and reaps the process. No-op when stopped.
  void Kill();
  // Stop() (when running), then starts again on the same port (and socket) and waits for PING.
  // The data set starts empty, as does the script cache.
  void Restart();

  // The last `bytes` of the server's log (every start of this server appends to it).
  std::string LogTail(size_t bytes = 2000) const;

 private:
  RedisServer(RedisServerOptions options, std::string dir);

  // Forks and execs redis-server on port_; returns false (and the log says why) when it exited
  // before answering PING because the port was in use. Throws on other failures.
  bool Launch();
  // Waits until the process exits or `deadline` passes; reaps it and returns true if it exited.
  bool WaitExit(absl::Time deadline);

  const RedisServerOptions options_;
  const std::string dir_;
  const std::string log_path_;
  std::string unix_socket_path_;
  int port_ = 0;
  pid_t pid_ = 0;
  int pidfd_ = -1;  // pidfd_open(pid_): a wait on the child's exit with a timeout.
  const pid_t owner_pid_ = getpid();  // The process that started the server.
};

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_REDIS_SERVER_H_

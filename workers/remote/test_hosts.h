// Worker host processes for tests: starts a host binary as a child process on 127.0.0.1 with a
// port of its choosing, and kills it when done (testonly).
//
//   TestHost host("workers/remote/test_host", "token");
//   ... RemoteOptions{.hosts = {host.address()}, .token = "token"} ...
//   host.Kill(SIGKILL);  // or let the destructor do it
//   TestHost tls("workers/remote/test_host", "token", {"--tls_cert=c.pem", "--tls_key=k.pem"});

#ifndef CONCURRY_WORKERS_REMOTE_TEST_HOSTS_H_
#define CONCURRY_WORKERS_REMOTE_TEST_HOSTS_H_

#include <sys/types.h>

#include <exception>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "futures/errors.h"

namespace concurry::remote_testing {

// Starts argv[0] (a path relative to the runfiles directory) with `argv` as a child process that
// dies with this one, and reads the first line it prints to its standard output into
// `first_line` (up to a newline, or all of it if it exits first). Returns its pid; the caller
// kills and reaps it. Aborts the test program if the process cannot be made.
pid_t SpawnAndReadFirstLine(std::vector<std::string> argv, std::string* first_line);

// One host process. Not thread-safe.
class TestHost {
 public:
  // Starts `binary` (a path relative to the test's runfiles directory) with a token file holding
  // `token` and `extra_flags`, and waits until it has written its port file. Aborts the test
  // program with a message if it cannot (a test without its host cannot do anything useful).
  TestHost(const std::string& binary, const std::string& token,
           std::vector<std::string> extra_flags = {});
  // Kills the host (SIGKILL) if it still runs, and reaps it.
  ~TestHost();
  TestHost(const TestHost&) = delete;
  TestHost& operator=(const TestHost&) = delete;

  // "127.0.0.1:<port>".
  std::string address() const;
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Sends `signal` and reaps the process; returns its wait status.
  int Kill(int signal);
  // Whether the process has been reaped.
  bool reaped() const { return pid_ == 0; }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
};

// The status of the error `fn` throws (OK when it throws none).
template <typename F>
absl::Status StatusThrownBy(F fn) {
  try {
    fn();
  } catch (...) {
    return StatusFromException(std::current_exception());
  }
  return absl::OkStatus();
}

}  // namespace concurry::remote_testing

#endif  // CONCURRY_WORKERS_REMOTE_TEST_HOSTS_H_

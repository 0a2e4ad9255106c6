// The main of //workers/remote:remote_conformance_test, which runs the worker conformance suite
// (//workers:worker_test.cc) in Mode::kRemote. Before anything else, while the binary has one
// thread and no gRPC state, it forks a worker host from itself: the host serves the suite's
// classes, and shares the memory the suite maps before main (its gates and counters), as a worker
// process does. Then it makes that host the default of remote mode, starts the fork server (the
// suite links process mode too) and runs the tests. The host dies with the test (SIGKILL).

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/options.h"
#include "workers/process/fork_server.h"
#include "workers/remote/host.h"

namespace {

constexpr char kToken[] = "conformance-token";

// Runs a host in a child process; returns its pid and port.
pid_t ForkHost(int* port) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    close(fds[0]);
    concurry::remote::HostOptions options;
    options.token = kToken;
    std::unique_ptr<concurry::remote::WorkerHost> host =
        concurry::remote::WorkerHost::Start(options);
    const int chosen = host->port();
    if (write(fds[1], &chosen, sizeof(chosen)) != sizeof(chosen)) _exit(2);
    close(fds[1]);
    host->Wait();
    _exit(0);
  }
  close(fds[1]);
  if (read(fds[0], port, sizeof(*port)) != sizeof(*port)) {
    std::fprintf(stderr, "remote_conformance_test: the host did not start\n");
    std::abort();
  }
  close(fds[0]);
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  const pid_t host = ForkHost(&port);
  concurry::StartForkServer();
  int status;
  {
    concurry::ScopedWorkerDefaults remote(concurry::Mode::kRemote,
                                          [&](concurry::WorkerDefaults& d) {
                                            d.remote.hosts = {absl::StrCat("127.0.0.1:", port)};
                                            d.remote.token = kToken;
                                          });
    testing::InitGoogleMock(&argc, argv);
    status = RUN_ALL_TESTS();
  }
  kill(host, SIGKILL);
  waitpid(host, nullptr, 0);
  return status;
}

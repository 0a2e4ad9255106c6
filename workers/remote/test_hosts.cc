#include "workers/remote/test_hosts.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace concurry::remote_testing {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "TestHost: %s\n", message.c_str());
  std::abort();
}

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

}  // namespace

pid_t SpawnAndReadFirstLine(std::vector<std::string> argv, std::string* first_line) {
  int out[2];
  if (pipe(out) != 0) Die("pipe failed");
  // Built before fork: the child of a threaded program may only make async-signal-safe calls.
  std::vector<char*> args;
  for (std::string& arg : argv) args.push_back(arg.data());
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) Die("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // No child outlives a crashed test.
    if (getppid() != parent) _exit(1);
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  char c;
  while (read(out[0], &c, 1) == 1 && c != '\n') first_line->push_back(c);
  close(out[0]);
  return pid;
}

TestHost::TestHost(const std::string& binary, const std::string& token,
                   std::vector<std::string> extra_flags) {
  static std::atomic<int> counter{0};
  const std::string stem = absl::StrCat(TempDir(), "/host_", getpid(), "_", counter.fetch_add(1));
  const std::string token_file = stem + ".token";
  const std::string port_file = stem + ".port";
  {
    std::ofstream out(token_file);
    out << token << "\n";
    if (!out) Die("cannot write " + token_file);
  }
  // The host prints one line when it serves (after writing its port file): reading it is how the
  // test waits for the host, without polling.
  std::vector<std::string> argv = {binary, "--listen=127.0.0.1:0", "--token_file=" + token_file,
                                   "--port_file=" + port_file};
  for (std::string& flag : extra_flags) argv.push_back(std::move(flag));
  std::string line;
  pid_ = SpawnAndReadFirstLine(std::move(argv), &line);
  std::ifstream in(port_file);
  std::string text;
  std::getline(in, text);
  if (!absl::SimpleAtoi(text, &port_) || port_ <= 0) {
    Kill(SIGKILL);
    Die(absl::StrCat("the host ", binary, " did not start (its output: \"", line, "\")"));
  }
  if (line != absl::StrCat("concurry worker host listening on port ", port_)) {
    Kill(SIGKILL);
    Die(absl::StrCat("the host printed \"", line, "\", expected its port ", port_));
  }
}

TestHost::~TestHost() {
  if (pid_ != 0) Kill(SIGKILL);
}

std::string TestHost::address() const { return absl::StrCat("127.0.0.1:", port_); }

int TestHost::Kill(int signal) {
  if (pid_ == 0) return 0;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = 0;
  return status;
}

}  // namespace concurry::remote_testing

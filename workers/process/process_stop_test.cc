// Mode::kProcess stopping: Stop lets the calls already sent to the process finish and cancels
// the rest; a Stop with a timeout terminates a process that does not finish; the handle's
// destructor stops it; and after many workers are created, used, crashed and stopped, no file
// descriptor, child process or zombie is left.

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/shared_gates.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace app {

class Slow {
 public:
  explicit Slow(int n) : n_(n) {}
  int Hold(int gate) {
    concurry::testkit::SharedGates::Get().Hold(gate);
    return ++n_;
  }
  int Add(int k) { return n_ += k; }
  int Pid() { return static_cast<int>(getpid()); }
  // Sleeps once past `gate` (which marks it entered; open it first to pass at once).
  void Sleep(int gate, int ms) {
    concurry::testkit::SharedGates::Get().Hold(gate);
    absl::SleepFor(absl::Milliseconds(ms));
  }

 private:
  int n_;
};

}  // namespace app

CONCURRY_REGISTER_WORKER(app::Slow, (int), Hold, Add, Pid, Sleep);

namespace concurry {
namespace {

using ::concurry::testkit::SharedGates;
using ::concurry::testkit::Watchdog;
using ::testing::HasSubstr;

// A pidfd of `pid`, to see when it ends (any process; not only our children).
int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Whether the process behind `pidfd` ended within `wait`.
bool Ended(int pidfd, absl::Duration wait) {
  pollfd fd{pidfd, POLLIN, 0};
  return poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(wait))) == 1;
}

// Waits (bounded) until `pid` is gone and reaped: kill(pid, 0) fails with ESRCH. The fork server
// reaps its workers when it hears SIGCHLD, which nothing reports to this process.
bool Reaped(pid_t pid) {
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!(kill(pid, 0) != 0 && errno == ESRCH)) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

class ProcessStopTest : public ::testing::TestWithParam<ProcessStart> {
 protected:
  WorkerOptions Options() const { return {.mode = Mode::kProcess, .process_start = GetParam()}; }
};

TEST_P(ProcessStopTest, StopLetsTheRunningCallFinishAndCancelsTheCallsSentBehindIt) {
  Watchdog watchdog(absl::Seconds(60), "Stop with calls queued");
  auto w = Worker<app::Slow>::Create(Options(), 0);
  const int gate = SharedGates::Get().Make();
  Future<int> running = w.Call(&app::Slow::Hold, gate);
  SharedGates::Get().WaitEntered(gate);
  std::vector<Future<int>> sent;
  for (int i = 0; i < 5; ++i) sent.push_back(w.Call(&app::Slow::Add, 1));
  // The actor writes them to the process as it drains them; wait (bounded) until it has.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (w.Stats().queued > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(w.Stats().queued, 0);
  // A call waiting for its input has not been sent.
  Promise<int> input;
  Future<int> unsent = w.Call(&app::Slow::Add, input.GetFuture());
  std::thread stopper([&] { EXPECT_TRUE(w.Stop(absl::Seconds(60))); });
  unsent.Wait();
  EXPECT_TRUE(unsent.Cancelled());
  EXPECT_TRUE(w.stopped());
  // The calls sent ahead wait behind the running one, in the process: Stop cancels them at once,
  // as in every mode, and the process answers them without running them.
  for (const Future<int>& f : sent) {
    f.Wait();
    EXPECT_TRUE(f.Cancelled());
  }
  EXPECT_FALSE(running.Done());
  SharedGates::Get().Release(gate);
  stopper.join();
  EXPECT_EQ(running.Result(), 1);  // The running call finished.
  EXPECT_THROW(w.Call(&app::Slow::Add, 1).Result(), StoppedError);
  EXPECT_TRUE(w.Stop());  // Idempotent.
  EXPECT_TRUE(w.Stop(absl::Seconds(1)));
  EXPECT_TRUE(w.StoppedFuture().Done());
}

TEST_P(ProcessStopTest, ACancelledCallSentAheadNeverRuns) {
  Watchdog watchdog(absl::Seconds(60), "cancel of a call sent ahead");
  auto w = Worker<app::Slow>::Create(Options(), 0);
  const int gate = SharedGates::Get().Make();
  Future<int> running = w.Call(&app::Slow::Hold, gate);
  SharedGates::Get().WaitEntered(gate);
  Future<int> second = w.Call(&app::Slow::Add, 100);
  Future<int> third = w.Call(&app::Slow::Add, 10);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (w.Stats().queued > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(w.Stats().queued, 0);  // Both were sent to the process.
  EXPECT_TRUE(second.Cancel());
  SharedGates::Get().Release(gate);
  EXPECT_EQ(running.Result(), 1);
  EXPECT_EQ(third.Result(), 11);  // The cancelled call never ran.
}

TEST_P(ProcessStopTest, StopWithATimeoutKillsAProcessThatDoesNotFinish) {
  Watchdog watchdog(absl::Seconds(60), "Stop(200ms) of a process sleeping 60 s");
  auto w = Worker<app::Slow>::Create(Options(), 0);
  const pid_t pid = w.Call(&app::Slow::Pid).Result();
  const int pidfd = PidfdOpen(pid);
  ASSERT_GE(pidfd, 0);
  const int gate = SharedGates::Get().Make();
  SharedGates::Get().Release(gate);
  Future<void> sleeping = w.Call(&app::Slow::Sleep, gate, 60'000);
  SharedGates::Get().WaitEntered(gate);  // It runs in the process.
  const absl::Time start = absl::Now();
  // (Returns false or true: the process dies about when Stop gives up waiting.)
  w.Stop(absl::Milliseconds(200));
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(1));
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_TRUE(Ended(pidfd, absl::Seconds(1)));
  close(pidfd);
  EXPECT_TRUE(Reaped(pid));
  try {
    sleeping.Result();
    FAIL() << "no error";
  } catch (const StoppedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("was terminated by Stop after its timeout"));
  }
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
}

TEST_P(ProcessStopTest, TheLastHandleStopsTheProcess) {
  Watchdog watchdog(absl::Seconds(60), "a dropped process worker");
  pid_t pid;
  int pidfd;
  Future<void> stopped;
  {
    auto w = Worker<app::Slow>::Create(Options(), 0);
    pid = w.Call(&app::Slow::Pid).Result();
    pidfd = PidfdOpen(pid);
    stopped = w.StoppedFuture();
    w.Call(&app::Slow::Add, 1);
  }
  EXPECT_TRUE(stopped.Wait(absl::Seconds(30)));
  ASSERT_GE(pidfd, 0);
  EXPECT_TRUE(Ended(pidfd, absl::Seconds(10)));
  close(pidfd);
  EXPECT_TRUE(Reaped(pid));
}

INSTANTIATE_TEST_SUITE_P(Starts, ProcessStopTest,
                         ::testing::Values(ProcessStart::kForkServer, ProcessStart::kFork),
                         [](const ::testing::TestParamInfo<ProcessStart>& info) {
                           return AbslUnparseFlag(info.param);
                         });

// ---- Leaks -------------------------------------------------------------------------------------

// What this process holds: open descriptors, processes below it (the fork server, workers),
// and zombies among them.
struct Holdings {
  int fds = 0;
  int descendants = 0;
  int zombies = 0;
  std::string ToString() const {
    return absl::StrCat(fds, " fds, ", descendants, " descendant processes, ", zombies, " zombies");
  }
  bool operator==(const Holdings&) const = default;
};

Holdings Count() {
  Holdings h;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++h.fds;
    }
    closedir(dir);
    --h.fds;  // The directory's own descriptor.
  }
  // pid -> (ppid, state), from /proc/<pid>/stat: "pid (comm) state ppid ...".
  std::map<pid_t, std::pair<pid_t, char>> procs;
  if (DIR* dir = opendir("/proc")) {
    while (dirent* entry = readdir(dir)) {
      int pid;
      if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
      FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
      if (f == nullptr) continue;
      char buffer[1024];
      const size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, f);
      std::fclose(f);
      buffer[n] = '\0';
      const char* close_paren = std::strrchr(buffer, ')');
      char state;
      int ppid;
      if (close_paren == nullptr || std::sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) {
        continue;
      }
      procs[pid] = {ppid, state};
    }
    closedir(dir);
  }
  std::vector<pid_t> frontier = {getpid()};
  while (!frontier.empty()) {
    const pid_t parent = frontier.back();
    frontier.pop_back();
    for (const auto& [pid, info] : procs) {
      if (info.first != parent) continue;
      ++h.descendants;
      if (info.second == 'Z') ++h.zombies;
      frontier.push_back(pid);
    }
  }
  return h;
}

// Waits (bounded) until Count() equals `want`: a stopped worker's last steps (its reader thread,
// the fork server's reaping) end shortly after its StoppedFuture, with no event to wait for.
Holdings CountUntil(const Holdings& want) {
  const absl::Time until = absl::Now() + absl::Seconds(10);
  Holdings now = Count();
  while (!(now == want) && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
    now = Count();
  }
  return now;
}

TEST(ProcessLeakTest, TwentyWorkersLeaveNoDescriptorProcessOrZombie) {
  Watchdog watchdog(absl::Seconds(240), "20 process workers, twice");
  // The first worker of each kind may set up what lives for the program (the fork server).
  for (ProcessStart start : {ProcessStart::kForkServer, ProcessStart::kFork}) {
    Worker<app::Slow>::Create({.mode = Mode::kProcess, .process_start = start}, 0).Stop();
  }
  const Holdings before = CountUntil(Count());
  EXPECT_EQ(before.zombies, 0);
  for (ProcessStart start : {ProcessStart::kForkServer, ProcessStart::kFork}) {
    SCOPED_TRACE(AbslUnparseFlag(start));
    std::vector<Worker<app::Slow>> workers;
    std::vector<Future<void>> stopped;
    for (int i = 0; i < 20; ++i) {
      workers.push_back(
          Worker<app::Slow>::Create({.mode = Mode::kProcess, .process_start = start}, i));
      stopped.push_back(workers.back().StoppedFuture());
    }
    std::vector<pid_t> pids;
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(workers[i].Call(&app::Slow::Add, 1).Result(), i + 1);
      pids.push_back(workers[i].Call(&app::Slow::Pid).Result());
    }
    EXPECT_EQ(Count().descendants, before.descendants + 20);
    // Five crash, five are killed by a Stop with a timeout, five stop normally, five are dropped.
    for (int i = 0; i < 5; ++i) {
      ASSERT_EQ(kill(pids[i], SIGKILL), 0);
      EXPECT_THROW(workers[i].Call(&app::Slow::Add, 1).Result(), Error);
    }
    const int open = SharedGates::Get().Make();
    SharedGates::Get().Release(open);
    for (int i = 5; i < 10; ++i) {
      workers[i].Call(&app::Slow::Sleep, open, 60'000);
      workers[i].Stop(absl::Milliseconds(50));
    }
    for (int i = 10; i < 15; ++i) EXPECT_TRUE(workers[i].Stop(absl::Seconds(30)));
    workers.clear();
    for (const Future<void>& f : stopped) EXPECT_TRUE(f.Wait(absl::Seconds(30)));
    const Holdings after = CountUntil(before);
    EXPECT_EQ(after, before) << "before: " << before.ToString() << "; after: " << after.ToString();
  }
}

// Set in a copy of this test program that makes workers, writes their pids there and aborts.
constexpr char kCrashEnv[] = "CONCURRY_PROCESS_TEST_CRASH_PIDS";

// The pids of the children of every thread of this process.
std::vector<pid_t> OwnChildren() {
  std::vector<pid_t> pids;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::ifstream in(absl::StrCat("/proc/self/task/", entry->d_name, "/children"));
      pid_t pid;
      while (in >> pid) pids.push_back(pid);
    }
    closedir(dir);
  }
  return pids;
}

TEST(ProcessLeakTest, NoProcessOutlivesAProgramThatCrashes) {
  if (const char* path = std::getenv(kCrashEnv)) {
    // The copy: workers of both kinds, in use, then a crash of the program.
    auto a = Worker<app::Slow>::Create({.mode = Mode::kProcess}, 0);
    auto b = Worker<app::Slow>::Create(
        {.mode = Mode::kProcess, .process_start = ProcessStart::kFork}, 0);
    std::vector<pid_t> pids = OwnChildren();  // The fork server and b's process.
    pids.push_back(a.Call(&app::Slow::Pid).Result());
    pids.push_back(b.Call(&app::Slow::Pid).Result());
    {
      std::ofstream out(path);
      for (pid_t pid : pids) out << pid << "\n";
    }
    std::abort();
  }
  Watchdog watchdog(absl::Seconds(120), "a program that crashes with process workers");
  // Orphans of the copy become this process's children, so that it can see them end and reap
  // them.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(dir != nullptr ? dir : "/tmp", "/crash_pids.", getpid());
  const std::string env = absl::StrCat(kCrashEnv, "=", path);
  std::string filter = "--gtest_filter=ProcessLeakTest.NoProcessOutlivesAProgramThatCrashes";
  char* argv[] = {const_cast<char*>("process_stop_test"), filter.data(), nullptr};
  char* envp[] = {const_cast<char*>(env.c_str()), nullptr};
  pid_t copy;
  ASSERT_EQ(posix_spawn(&copy, "/proc/self/exe", nullptr, nullptr, argv, envp), 0);
  int status = 0;
  ASSERT_EQ(waitpid(copy, &status, 0), copy);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) << "status " << status;
  std::vector<pid_t> pids;
  {
    std::ifstream in(path);
    pid_t pid;
    while (in >> pid) pids.push_back(pid);
  }
  EXPECT_EQ(pids.size(), 4) << "the fork server, two worker processes, and b's pid again";
  // Each ends (killed with its parent: PR_SET_PDEATHSIG) and is reaped here.
  for (pid_t pid : pids) {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    bool gone = false;
    while (!gone && absl::Now() < until) {
      waitpid(pid, nullptr, WNOHANG);
      gone = kill(pid, 0) != 0 && errno == ESRCH;
      if (!gone) absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_TRUE(gone) << "process " << pid << " outlived the program that started it";
  }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

}  // namespace
}  // namespace concurry

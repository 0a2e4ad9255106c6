// Mode::kRemote placement and failover against real host processes (//workers/remote:test_host):
// a host that never answers is passed over, a host restarted on its port is used again, a stopped
// (SIGSTOPped) host is noticed by keepalive, pools spread over hosts per pool, a pool keeps
// serving when a host dies mid-run, the token is not sent in plaintext off loopback, and dns:///
// targets resolve.

#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
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
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/remote/internal/channel.h"
#include "workers/remote/test_classes.h"
#include "workers/remote/test_hosts.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using remote_test::Counter;
using remote_testing::TestHost;
using ::testing::HasSubstr;

constexpr char kToken[] = "failover-token-5e0a7d1c";
constexpr char kHostBinary[] = "workers/remote/test_host";

WorkerOptions OptionsFor(std::vector<std::string> hosts) {
  return {.mode = Mode::kRemote,
          .remote = RemoteOptions{.hosts = std::move(hosts), .token = kToken}};
}

// The processes whose parent is this one (host processes not reaped yet included).
int CountChildren() {
  int count = 0;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return -1;
  const std::string me = absl::StrCat(getpid());
  while (dirent* entry = readdir(dir)) {
    int pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string line;
    if (!std::getline(stat, line)) continue;
    // "pid (comm) state ppid ...": the fields after the last ')'.
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(line.substr(paren + 2), ' ');
    if (fields.size() > 1 && fields[1] == me) ++count;
  }
  closedir(dir);
  return count;
}

// A TCP socket on 127.0.0.1 that listens and never accepts: the kernel completes the TCP
// handshake, and then nothing ever answers, as with a host that hangs or a blackholed link.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd_, 1) != 0 || getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::abort();
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { close(fd_); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class FailoverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { children_before_ = CountChildren(); }
  // No host process outlives the tests that started it.
  static void TearDownTestSuite() { EXPECT_EQ(CountChildren(), children_before_); }
  static int children_before_;
};

int FailoverTest::children_before_ = 0;

TEST_F(FailoverTest, AHostThatNeverAnswersIsPassedOverQuickly) {
  testkit::Watchdog watchdog(absl::Seconds(30), "placement past a silent host");
  SilentListener silent;
  TestHost live(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({silent.address(), live.address()});
  options.remote->connect_timeout = absl::Seconds(5);
  // Standalone workers take the hosts in turn: of two workers, one has the silent host's turn.
  for (int i = 0; i < 2; ++i) {
    const absl::Time start = absl::Now();
    auto w = Worker<Counter>::Create(options, 0);
    EXPECT_EQ(w.Call(&Counter::Pid).Result(), live.pid());
    // The silent host gets at most its slice (1 s), not the whole connect_timeout.
    EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "worker " << i;
    EXPECT_TRUE(w.Stop(absl::Seconds(5)));
  }
}

TEST_F(FailoverTest, OnlySilentHostsFailWithUnavailableAtTheConnectTimeout) {
  testkit::Watchdog watchdog(absl::Seconds(30), "placement on silent hosts");
  SilentListener a, b;
  WorkerOptions options = OptionsFor({a.address(), b.address()});
  options.remote->connect_timeout = absl::Milliseconds(1500);
  const absl::Time start = absl::Now();
  try {
    Worker<Counter>::Create(options, 0);
    FAIL() << "no error";
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status().code(), absl::StatusCode::kUnavailable) << e.what();
    EXPECT_THAT(e.what(), HasSubstr(a.address()));
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(1400));
  EXPECT_LT(took, absl::Seconds(3));
}

TEST_F(FailoverTest, AHostRestartedOnItsPortIsUsedAgainWithinSeconds) {
  testkit::Watchdog watchdog(absl::Seconds(30), "reconnecting to a restarted host");
  auto host = std::make_unique<TestHost>(kHostBinary, kToken);
  const int port = host->port();
  const WorkerOptions options = OptionsFor({host->address()});
  {
    auto w = Worker<Counter>::Create(options, 0);
    EXPECT_EQ(w.Call(&Counter::Pid).Result(), host->pid());
    host->Kill(SIGKILL);
    EXPECT_THROW(w.Call(&Counter::Get).Result(), Error);
  }
  // The channel saw the host go; a host started on the same port is found by the reconnect
  // backoff (at most remote.reconnect_backoff_max, 2 s).
  host = std::make_unique<TestHost>(
      kHostBinary, kToken, std::vector<std::string>{absl::StrCat("--listen=127.0.0.1:", port)});
  ASSERT_EQ(host->port(), port);
  const absl::Time start = absl::Now();
  auto w = Worker<Counter>::Create(options, 0);
  EXPECT_EQ(w.Call(&Counter::Pid).Result(), host->pid());
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_TRUE(w.Stop(absl::Seconds(5)));
}

TEST_F(FailoverTest, AStoppedHostFailsItsCallsWithinTheKeepaliveBound) {
  testkit::Watchdog watchdog(absl::Seconds(30), "calls on a SIGSTOPped host");
  TestHost host(kHostBinary, kToken);
  auto w = Worker<Counter>::Create(OptionsFor({host.address()}), 0);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 1);
  Future<void> sleeping = w.Call(&Counter::Sleep, 1'000);
  Future<int> queued = w.Call(&Counter::Add, 1);
  // The host keeps its connection open and answers nothing, not even pings.
  ASSERT_EQ(kill(host.pid(), SIGSTOP), 0);
  const absl::Time stopped = absl::Now();
  // Keepalive: a ping after 1 s, unanswered after 1 more: about 2 s, plus scheduling.
  ASSERT_TRUE(sleeping.Wait(absl::Seconds(4)));
  ASSERT_TRUE(queued.Wait(absl::Seconds(1)));
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(3.5));
  EXPECT_THROW(sleeping.Result(), CrashedError);
  EXPECT_THROW(queued.Result(), CrashedError);
  // A host that wakes up does not bring the calls (or the worker) back.
  ASSERT_EQ(kill(host.pid(), SIGCONT), 0);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_THROW(w.Call(&Counter::Get).Result(), Error);
  host.Kill(SIGKILL);
}

TEST_F(FailoverTest, TwoPoolsCreatedAtOnceEachSpreadOverTheHosts) {
  testkit::Watchdog watchdog(absl::Seconds(30), "two pools over three hosts");
  TestHost a(kHostBinary, kToken), b(kHostBinary, kToken), c(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({a.address(), b.address(), c.address()});
  options.max_workers = 3;
  std::optional<Worker<Counter>> pools[2];
  std::thread other([&] { pools[1].emplace(Worker<Counter>::Create(options, 0)); });
  pools[0].emplace(Worker<Counter>::Create(options, 0));
  other.join();
  const std::set<int> all = {a.pid(), b.pid(), c.pid()};
  for (auto& pool : pools) {
    std::set<int> pids;
    // The default balancer is round-robin: three calls reach the three workers.
    for (int i = 0; i < 3; ++i) pids.insert(pool->Call(&Counter::Pid).Result());
    EXPECT_EQ(pids, all);
  }
  for (auto& pool : pools) EXPECT_TRUE(pool->Stop(absl::Seconds(5)));
}

}  // namespace
}  // namespace concurry

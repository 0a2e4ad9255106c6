// Mode::kRemote placement and failover against real host processes (//workers/remote:test_host):
// a host that never answers is passed over, a host restarted on its port is used again, a stopped
// (SIGSTOPped) host is noticed by keepalive, pools spread over hosts per pool, a pool keeps
// serving when a host dies mid-run, the channel's retry policy retries what it should (against a
// flaky server in this process), the token is not sent in plaintext off loopback, and dns:///
// targets resolve.

#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <map>
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
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/remote/internal/channel.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/test_classes.h"
#include "workers/remote/test_hosts.h"
#include "workers/worker.h"

// LeakSanitizer (--config=asan-ubsan): resolving a name (the dns:/// test) through gRPC's c-ares
// resolver leaves one 10-byte allocation of libcares behind, which this code neither makes nor
// can free. With the fast unwinder, which stops at uninstrumented libraries, the report's stack
// shows only libcares.
extern "C" const char* __lsan_default_suppressions() { return "leak:libcares.so\n"; }

namespace concurry {
namespace {

using remote_test::Counter;
using remote_testing::TestHost;
using ::testing::Gt;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

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

  // A host started here may get the port of one an earlier test killed, whose channel (kept for
  // the life of the program) is still backing off, and placement would pass it over as down. A
  // worker made on each host alone waits until its channel is connected again.
  static void WaitUntilConnected(std::initializer_list<const TestHost*> hosts) {
    for (const TestHost* host : hosts) {
      auto w = Worker<Counter>::Create(OptionsFor({host->address()}), 0);
      EXPECT_TRUE(w.Stop(absl::Seconds(5)));
    }
  }
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
    // The silent host gets a short grace once the live host is ready (at most its 1 s slice),
    // not the whole connect_timeout.
    EXPECT_LT(absl::Now() - start, absl::Seconds(1.5)) << "worker " << i;
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

TEST_F(FailoverTest, AHostRestartedOnItsPortIsUsedAgainWithinTheReconnectBackoff) {
  testkit::Watchdog watchdog(absl::Seconds(30), "reconnecting to a restarted host");
  auto host = std::make_unique<TestHost>(kHostBinary, kToken);
  const int port = host->port();
  WorkerOptions options = OptionsFor({host->address()});
  // Reconnect attempts at most 300 ms apart. With gRPC's own backoff (1 s, growing 1.6 times
  // per attempt) the channel would next try about 2 s after the restart below.
  options.remote->reconnect_backoff_max = absl::Milliseconds(300);
  {
    auto w = Worker<Counter>::Create(options, 0);
    EXPECT_EQ(w.Call(&Counter::Pid).Result(), host->pid());
    host->Kill(SIGKILL);
    EXPECT_THROW(w.Call(&Counter::Get).Result(), Error);
  }
  // Down for 3 s, so that the backoff has grown to its cap; then back on the same port.
  absl::SleepFor(absl::Seconds(3));
  host = std::make_unique<TestHost>(
      kHostBinary, kToken, std::vector<std::string>{absl::StrCat("--listen=127.0.0.1:", port)});
  ASSERT_EQ(host->port(), port);
  const absl::Time start = absl::Now();
  auto w = Worker<Counter>::Create(options, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(w.Call(&Counter::Pid).Result(), host->pid());
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
  // With the default keepalive (500 ms / 500 ms) the client's ping starts at most 1 s after the
  // stop (gRPC's floor between two client pings; keepalive_time twice, when a flow-control ping
  // gRPC sent just after the stop restarted its clock), and goes unanswered 500 ms later: 1.5 s
  // at worst, about 1.1 s as a rule. The futures then fail on the client's poller thread. The
  // 2 s this checks is the documented bound; the 0.5 s left is for a loaded machine.
  ASSERT_TRUE(sleeping.Wait(absl::Seconds(4)));
  ASSERT_TRUE(queued.Wait(absl::Seconds(1)));
  const absl::Duration took = absl::Now() - stopped;
  EXPECT_LT(took, absl::Seconds(2));
  std::fprintf(stderr, "a stopped host's calls failed %s after SIGSTOP\n",
               absl::FormatDuration(took).c_str());
  EXPECT_THROW(sleeping.Result(), CrashedError);
  EXPECT_THROW(queued.Result(), CrashedError);
  // A host that wakes up does not bring the calls (or the worker) back.
  ASSERT_EQ(kill(host.pid(), SIGCONT), 0);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_THROW(w.Call(&Counter::Get).Result(), Error);
  host.Kill(SIGKILL);
}

// The short default keepalive must not cost a healthy connection: the host accepts the client's
// pings however often it sends them (no GOAWAY too_many_pings), and no ping is left unanswered
// within 500 ms on a healthy machine. Five seconds idle is about five of the client's pings.
TEST_F(FailoverTest, AnIdleWorkerOnAHealthyHostOutlivesTheKeepalivePings) {
  testkit::Watchdog watchdog(absl::Seconds(30), "an idle worker");
  TestHost host(kHostBinary, kToken);
  auto w = Worker<Counter>::Create(OptionsFor({host.address()}), 0);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 1);
  absl::SleepFor(absl::Seconds(5));
  // The same worker, state and all: its stream was never broken.
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 2);
  EXPECT_EQ(w.Call(&Counter::Pid).Result(), host.pid());
  EXPECT_TRUE(w.Stop(absl::Seconds(5)));
}

TEST_F(FailoverTest, TwoPoolsCreatedAtOnceEachSpreadOverTheHosts) {
  testkit::Watchdog watchdog(absl::Seconds(30), "two pools over three hosts");
  TestHost a(kHostBinary, kToken), b(kHostBinary, kToken), c(kHostBinary, kToken);
  WaitUntilConnected({&a, &b, &c});
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

// Every built-in balancer besides the default round-robin (tested above) works for a pool
// across hosts. The pool has one worker per host, so the hosts' pids count the balancer's picks.
TEST_F(FailoverTest, EveryBalancerSpreadsAPoolOverTheHosts) {
  testkit::Watchdog watchdog(absl::Seconds(30), "balancers over three hosts");
  TestHost a(kHostBinary, kToken), b(kHostBinary, kToken), c(kHostBinary, kToken);
  WaitUntilConnected({&a, &b, &c});
  const std::set<int> all = {a.pid(), b.pid(), c.pid()};
  const auto pool_with = [&](LoadBalancing balancing) {
    WorkerOptions options = OptionsFor({a.address(), b.address(), c.address()});
    options.max_workers = 3;
    options.load_balancing = balancing;
    return Worker<Counter>::Create(options, 0);
  };
  {
    // The fewest calls ever started: calls one after another go round the hosts evenly.
    auto pool = pool_with(LoadBalancing::kLeastTotalLoad);
    std::map<int, int> per_host;
    for (int i = 0; i < 9; ++i) ++per_host[pool.Call(&Counter::Pid).Result()];
    EXPECT_THAT(per_host,
                UnorderedElementsAre(Pair(a.pid(), 3), Pair(b.pid(), 3), Pair(c.pid(), 3)));
    EXPECT_TRUE(pool.Stop(absl::Seconds(5)));
  }
  {
    // The fewest calls in flight: three slow calls sent at once take one worker each, and the
    // three calls sent behind them queue one on each worker too.
    auto pool = pool_with(LoadBalancing::kLeastActiveLoad);
    std::vector<Future<void>> slow;
    for (int i = 0; i < 3; ++i) slow.push_back(pool.Call(&Counter::Sleep, 300));
    std::vector<Future<int>> pids;
    for (int i = 0; i < 3; ++i) pids.push_back(pool.Call(&Counter::Pid));
    std::set<int> used;
    for (Future<int>& pid : pids) used.insert(pid.Result());
    EXPECT_EQ(used, all);
    for (Future<void>& call : slow) call.Result();
    EXPECT_TRUE(pool.Stop(absl::Seconds(5)));
  }
  {
    // Uniformly random: 60 calls leave a given host out with probability (2/3)^60, about 2e-11.
    auto pool = pool_with(LoadBalancing::kRandom);
    std::map<int, int> per_host;
    for (int i = 0; i < 60; ++i) ++per_host[pool.Call(&Counter::Pid).Result()];
    EXPECT_THAT(per_host, UnorderedElementsAre(Pair(a.pid(), Gt(0)), Pair(b.pid(), Gt(0)),
                                               Pair(c.pid(), Gt(0))));
    std::fprintf(stderr, "random balancer over 3 hosts, 60 calls: %d, %d, %d\n", per_host[a.pid()],
                 per_host[b.pid()], per_host[c.pid()]);
    EXPECT_TRUE(pool.Stop(absl::Seconds(5)));
  }
}

TEST_F(FailoverTest, APoolAcrossThreeHostsKeepsServingWhenOneIsKilledMidRun) {
  testkit::Watchdog watchdog(absl::Seconds(40), "a 3-host pool losing a host mid-run");
  TestHost a(kHostBinary, kToken), b(kHostBinary, kToken), c(kHostBinary, kToken);
  WaitUntilConnected({&a, &b, &c});
  WorkerOptions options = OptionsFor({a.address(), b.address(), c.address()});
  options.max_workers = 6;
  auto pool = Worker<Counter>::Create(options, 0);
  std::vector<Future<int>> calls;
  for (int i = 0; i < 6; ++i) calls.push_back(pool.Call(&Counter::Pid));
  std::multiset<int> spread;
  for (Future<int>& call : calls) spread.insert(call.Result());
  EXPECT_EQ(spread.count(a.pid()), 2u);
  EXPECT_EQ(spread.count(b.pid()), 2u);
  EXPECT_EQ(spread.count(c.pid()), 2u);
  // A stream of calls, some of them slow, with b killed in the middle of it.
  calls.clear();
  std::vector<Future<void>> slow;
  for (int i = 0; i < 300; ++i) {
    if (i % 50 == 0) slow.push_back(pool.Call(&Counter::Sleep, 20));
    calls.push_back(pool.Call(&Counter::Add, 1));
    if (i == 150) b.Kill(SIGKILL);
  }
  // Every future resolves, with a value or an error, in bounded time.
  const absl::Time killed = absl::Now();
  int failed = 0;
  for (Future<int>& call : calls) {
    ASSERT_TRUE(call.Wait(absl::Seconds(5)));
    if (call.Error() != nullptr) ++failed;
  }
  for (Future<void>& call : slow) ASSERT_TRUE(call.Wait(absl::Seconds(5)));
  EXPECT_LT(absl::Now() - killed, absl::Seconds(5));
  EXPECT_LT(failed, 300);
  // For the log: how many calls the kill reached (about 50 to 100 in local runs).
  std::fprintf(stderr, "3-host pool: %d of 300 calls failed with the killed host\n", failed);
  // The pool replaced b's two workers on live hosts and serves every new call there.
  for (int i = 0; i < 60; ++i) {
    const int pid = pool.Call(&Counter::Pid).Result();
    EXPECT_TRUE(pid == a.pid() || pid == c.pid()) << pid;
  }
  EXPECT_EQ(pool.GetPoolStats().replaced_workers, 2);
  EXPECT_EQ(pool.GetPoolStats().total_workers, 6);
  EXPECT_TRUE(pool.Stop(absl::Seconds(10)));
}

// A gRPC server in this process whose health service says NOT_SERVING, and whose WorkerHost
// service answers every call with UNIMPLEMENTED.
class NotServingServer {
 public:
  NotServingServer() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    server_->GetHealthCheckService()->SetServingStatus(false);
  }
  ~NotServingServer() { server_->Shutdown(); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int port_ = 0;
  remote::v1::WorkerHost::Service service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(FailoverTest, AHostThatIsNotServingIsPassedOver) {
  testkit::Watchdog watchdog(absl::Seconds(30), "placement past a NOT_SERVING host");
  NotServingServer not_serving;
  TestHost live(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({not_serving.address(), live.address()});
  // Client-side health checking keeps the channel to the NOT_SERVING server out of READY, so
  // the worker whose turn it is lands on the live host (without it, Create would reach the
  // server and fail with UNIMPLEMENTED).
  for (int i = 0; i < 2; ++i) {
    auto w = Worker<Counter>::Create(options, 0);
    EXPECT_EQ(w.Call(&Counter::Pid).Result(), live.pid());
  }
}

// A WorkerHost service in this process that fails the first attempts of each RPC with a chosen
// code before answering anything, and counts every attempt: what the client's retry policy
// (channel.cc's service config) does is seen from the server's side.
class FlakyServer {
 public:
  struct Behaviour {
    // Attempts that fail with `code` before the host answers (a Trailers-Only response).
    int failures = 0;
    grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE;
    // Connect, once it answered (read the Create, wrote a frame): whether it then fails with
    // UNAVAILABLE, as a host that dies with a worker open would.
    bool fail_after_answer = false;
  };

  // Listens on `port` of 127.0.0.1, or on a free one when it is 0.
  explicit FlakyServer(Behaviour behaviour, int port = 0) : service_(behaviour) {
    grpc::EnableDefaultHealthCheckService(true);  // SERVING: the channel's health check passes.
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~FlakyServer() {
    if (server_ != nullptr) server_->Shutdown();
  }
  // Whether it listens (false when the port was taken).
  bool started() const { return server_ != nullptr; }
  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int stats_attempts() const { return service_.stats_attempts.load(); }
  int connect_attempts() const { return service_.connect_attempts.load(); }
  // Connect attempts that read a Create (and made a worker, on a host).
  int creates_read() const { return service_.creates_read.load(); }

 private:
  struct Service final : remote::v1::WorkerHost::Service {
    explicit Service(Behaviour b) : behaviour(b) {}
    grpc::Status Stats(grpc::ServerContext*, const remote::v1::StatsRequest*,
                       remote::v1::StatsReply* reply) override {
      if (++stats_attempts <= behaviour.failures) return {behaviour.code, "flaky Stats"};
      reply->set_workers(7);
      return grpc::Status::OK;
    }
    grpc::Status Connect(
        grpc::ServerContext*,
        grpc::ServerReaderWriter<remote::v1::HostFrame, remote::v1::ClientFrame>* stream) override {
      if (++connect_attempts <= behaviour.failures) return {behaviour.code, "flaky Connect"};
      remote::v1::ClientFrame create;
      if (!stream->Read(&create)) return {grpc::StatusCode::INTERNAL, "no Create"};
      ++creates_read;
      remote::v1::HostFrame created;
      created.mutable_created()->set_max_message_bytes(4 << 20);
      stream->Write(created);
      if (behaviour.fail_after_answer) return {grpc::StatusCode::UNAVAILABLE, "host gone"};
      while (stream->Read(&create)) {
      }
      return grpc::Status::OK;
    }

    const Behaviour behaviour;
    // Sequentially consistent: the test reads them after the client saw the RPC end, which the
    // handlers' increments precede (no attempt starts after its RPC's final status).
    std::atomic<int> stats_attempts{0};
    std::atomic<int> connect_attempts{0};
    std::atomic<int> creates_read{0};
  };

  Service service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// A stub on the channel a Mode::kRemote worker would use for `address` (its service config
// included), once that channel is connected, as a worker's would be (PickHost). The channel is
// the one kept for the target for the program's life: when a server got the port of an earlier
// one, it may still be backing off after "connection refused". gRPC counts a call attempt that
// fails in the client, with no connection to pick, as one of the retry policy's three (its retry
// trace says "exceeded 3 retry attempts" with the server having seen one or none), so the
// attempts a server counts are only exact on a connected channel.
std::unique_ptr<remote::v1::WorkerHost::Stub> ClientStubFor(const std::string& address) {
  const auto channel = remote_internal::ChannelFor(*OptionsFor({address}).remote, address);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
    ADD_FAILURE() << "no connection to " << address << " within 10 s";
  }
  return remote::v1::WorkerHost::NewStub(channel);
}

grpc::Status CallStats(const std::string& address, remote::v1::StatsReply* reply) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return ClientStubFor(address)->Stats(&context, remote::v1::StatsRequest(), reply);
}

TEST_F(FailoverTest, StatsIsRetriedOnUnavailableUpToThreeAttempts) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stats retries");
  {
    FlakyServer server({.failures = 2});
    remote::v1::StatsReply reply;
    const grpc::Status status = CallStats(server.address(), &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(reply.workers(), 7);
    EXPECT_EQ(server.stats_attempts(), 3);
  }
  {
    // maxAttempts 3: the third failure is the caller's.
    FlakyServer server({.failures = 3});
    remote::v1::StatsReply reply;
    EXPECT_EQ(CallStats(server.address(), &reply).error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(server.stats_attempts(), 3);
  }
  {
    // Only UNAVAILABLE is retried.
    FlakyServer server({.failures = 1, .code = grpc::StatusCode::INTERNAL});
    remote::v1::StatsReply reply;
    EXPECT_EQ(CallStats(server.address(), &reply).error_code(), grpc::StatusCode::INTERNAL);
    EXPECT_EQ(server.stats_attempts(), 1);
  }
}

// A server on the port an earlier server of this program had is reached through the channel kept
// for that target (channel.h), which may still be backing off after "connection refused" when the
// call starts. Every attempt of the retry policy reaches the new server all the same.
TEST_F(FailoverTest, StatsIsRetriedOnAServerThatTookAnEarlierServersPort) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stats on a reused port");
  int port = 0;
  std::string address;
  {
    FlakyServer earlier({});
    port = earlier.port();
    address = earlier.address();
    remote::v1::StatsReply reply;
    ASSERT_TRUE(CallStats(address, &reply).ok());
  }
  // The channel tries the closed port again, is refused, and backs off.
  const auto channel = remote_internal::ChannelFor(*OptionsFor({address}).remote, address);
  const auto deadline = absl::ToChronoTime(absl::Now() + absl::Seconds(10));
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_TRANSIENT_FAILURE) {
    ASSERT_TRUE(channel->WaitForStateChange(state, deadline)) << "state " << state;
    state = channel->GetState(/*try_to_connect=*/true);
  }
  FlakyServer server({.failures = 2}, port);
  if (!server.started()) GTEST_SKIP() << "port " << port << " was taken meanwhile";
  remote::v1::StatsReply reply;
  const grpc::Status status = CallStats(address, &reply);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(server.stats_attempts(), 3) << status.error_message();
}

// A worker's stream is never retried by the policy (channel.cc says why): a failure before the
// host answered reaches the client, which fails Create with UNAVAILABLE, as does one after.
TEST_F(FailoverTest, AWorkerStreamIsNotRetried) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Connect not retried");
  const auto open_worker = [](const FlakyServer& server, grpc::Status* end) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    auto stream = ClientStubFor(server.address())->Connect(&context);
    remote::v1::ClientFrame create;
    create.mutable_create()->set_class_name("remote_test::Counter");
    // Its result may be false when the host has already ended the stream: Read and Finish tell.
    stream->Write(create);
    remote::v1::HostFrame frame;
    const bool answered = stream->Read(&frame) && frame.has_created();
    stream->WritesDone();
    while (stream->Read(&frame)) {
    }
    *end = stream->Finish();
    return answered;
  };
  {
    FlakyServer server({.failures = 1});
    grpc::Status end;
    EXPECT_FALSE(open_worker(server, &end));
    EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE);
    // No attempt got the Create: no worker was made. (gRPC's transparent retry may, rarely, open
    // a second stream that finds the call already over.)
    EXPECT_EQ(server.creates_read(), 0);
  }
  {
    FlakyServer server({.fail_after_answer = true});
    grpc::Status end;
    EXPECT_TRUE(open_worker(server, &end));
    EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(server.connect_attempts(), 1);
    EXPECT_EQ(server.creates_read(), 1);
  }
}

// Through the client: a host whose Connect fails with UNAVAILABLE before it answered fails Create
// with that code at once, and makes no worker. Ten rounds, since the client's Write of the Create
// may or may not finish before the host ends the stream (with Connect retried, about half the
// rounds got a worker they could not use, or DATA_LOSS).
TEST_F(FailoverTest, CreateFailsWithUnavailableWhenTheHostRefusesWithIt) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Create refused with UNAVAILABLE");
  for (int round = 0; round < 10; ++round) {
    FlakyServer server({.failures = 1});
    const absl::Time start = absl::Now();
    const absl::Status status = remote_testing::StatusThrownBy(
        [&] { Worker<Counter>::Create(OptionsFor({server.address()}), 0); });
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << "round " << round << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr("flaky Connect")) << "round " << round;
    EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "round " << round;
    EXPECT_EQ(server.creates_read(), 0) << "round " << round;
  }
}

TEST_F(FailoverTest, ATargetWithTheDnsResolverWorks) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a dns:/// target");
  TestHost host(kHostBinary, kToken);
  // localhost may resolve to ::1 as well, where the host does not listen: round_robin uses the
  // address that connects.
  auto w = Worker<Counter>::Create(OptionsFor({absl::StrCat("dns:///localhost:", host.port())}), 0);
  EXPECT_EQ(w.Call(&Counter::Pid).Result(), host.pid());
  EXPECT_EQ(w.Call(&Counter::Add, 2).Result(), 2);
}

TEST_F(FailoverTest, TheTokenIsNotSentInPlaintextOffLoopback) {
  WorkerOptions options = OptionsFor({"127.0.0.1:1", "10.255.255.1:7000"});
  try {
    Worker<Counter>::Create(options, 0);
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("10.255.255.1:7000"));
    EXPECT_THAT(e.what(), HasSubstr("plaintext"));
    EXPECT_THAT(e.what(), HasSubstr("allow_insecure"));
  }
  // Allowed, the worker is created, or fails for what is (or is not) at that address: no
  // worker host there (which address answers what depends on the network the test runs in).
  options.remote->allow_insecure = true;
  options.remote->hosts = {"10.255.255.1:7000"};
  options.remote->connect_timeout = absl::Milliseconds(200);
  EXPECT_THROW(Worker<Counter>::Create(options, 0), StatusError);
  using remote_internal::IsLoopbackTarget;
  for (const char* target :
       {"127.0.0.1:7000", "127.3.2.1:7000", "[::1]:7000", "localhost:7000", "LOCALHOST",
        "dns:///localhost:7000", "ipv4:127.0.0.1:7000", "unix:/tmp/host.sock"}) {
    EXPECT_TRUE(IsLoopbackTarget(target)) << target;
  }
  for (const char* target :
       {"10.0.0.1:7000", "127.example.com:7000", "[::2]:7000", "dns:///workers.example:7000",
        "box:7000", "dns://8.8.8.8/localhost"}) {
    EXPECT_FALSE(IsLoopbackTarget(target)) << target;
  }
}

TEST_F(FailoverTest, TheTokenMayComeFromAFile) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a token from a file");
  TestHost host(kHostBinary, kToken);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/client_token");
  {
    std::ofstream out(path);
    out << "  " << kToken << "\n";  // As `base64 > token` writes it, and then some.
  }
  WorkerOptions options = OptionsFor({host.address()});
  options.remote->token.clear();
  options.remote->token_file = path;
  auto w = Worker<Counter>::Create(options, 0);
  EXPECT_EQ(w.Call(&Counter::Add, 3).Result(), 3);
  // Both, or a file that is not there or holds no token, are refused with the reason.
  options.remote->token = kToken;
  EXPECT_THROW(Worker<Counter>::Create(options, 0), InvalidOptionError);
  options.remote->token.clear();
  options.remote->token_file = path + ".missing";
  try {
    Worker<Counter>::Create(options, 0);
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot read"));
  }
  {
    std::ofstream out(path);
    out << " \n";
  }
  options.remote->token_file = path;
  EXPECT_THROW(Worker<Counter>::Create(options, 0), InvalidOptionError);
}

TEST_F(FailoverTest, AShortTokenIsWarnedAboutOnce) {
  WorkerOptions options = OptionsFor({"127.0.0.1:1"});
  options.remote->token = "short";
  options.remote->connect_timeout = absl::Milliseconds(50);
  std::string warnings[2];
  for (std::string& warning : warnings) {
    ::testing::internal::CaptureStderr();
    EXPECT_THROW(Worker<Counter>::Create(options, 0), StatusError);  // No host there.
    warning = ::testing::internal::GetCapturedStderr();
  }
  EXPECT_THAT(warnings[0], HasSubstr("the remote token is 5 bytes; use at least 16"));
  EXPECT_THAT(warnings[1], ::testing::Not(HasSubstr("remote token")));
}

TEST_F(FailoverTest, BadTimingSettingsAreRefused) {
  const auto error_for = [](auto change) -> std::string {
    WorkerOptions options = OptionsFor({"127.0.0.1:1"});
    change(*options.remote);
    try {
      Worker<Counter>::Create(options, 0);
    } catch (const InvalidOptionError& e) {
      return e.what();
    } catch (...) {
      return "another error";
    }
    return "no error";
  };
  EXPECT_THAT(error_for([](RemoteOptions& r) { r.keepalive_time = absl::Milliseconds(100); }),
              HasSubstr("remote.keepalive_time is 100ms; allowed: >= 500ms"));
  EXPECT_THAT(error_for([](RemoteOptions& r) { r.keepalive_timeout = absl::ZeroDuration(); }),
              HasSubstr("remote.keepalive_timeout is 0"));
  EXPECT_THAT(error_for([](RemoteOptions& r) { r.reconnect_backoff_max = absl::Milliseconds(50); }),
              HasSubstr("remote.reconnect_backoff_max is 50ms"));
  EXPECT_THAT(
      error_for([](RemoteOptions& r) { r.connect_attempt_timeout = absl::InfiniteDuration(); }),
      HasSubstr("remote.connect_attempt_timeout is inf"));
}

}  // namespace
}  // namespace concurry

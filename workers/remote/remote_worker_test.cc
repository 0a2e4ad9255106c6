// Mode::kRemote against real host processes (//workers/remote:test_host) started on 127.0.0.1 by
// the test: calls, errors, authentication, what a host refuses, a pool across hosts, and a host
// killed mid-call.

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "testing/watchdog.h"
#include "workers/codec.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/remote/internal/auth.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/test_classes.h"
#include "workers/remote/test_hosts.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

// LeakSanitizer (--config=asan): OpenSSL 3 keeps a random generator per thread that calls it
// (EVP_RAND_CTX_new), and never frees those of gRPC's TLS handshake threads. Not ours to free. With
// the fast unwinder, which stops at uninstrumented libraries, the report's stack shows only
// libcrypto, hence the second line; this code allocates nothing through libcrypto itself.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:EVP_RAND_CTX_new\nleak:libcrypto.so\n";
}

// Registered here only: the test hosts do not have it.
namespace remote_test {
class Stranger {
 public:
  int One() const { return 1; }
};
}  // namespace remote_test
CONCURRY_REGISTER_WORKER(remote_test::Stranger, (), One);

namespace concurry {
namespace {

using remote_test::Counter;
using remote_testing::StatusThrownBy;
using remote_testing::TestHost;
using ::testing::HasSubstr;

constexpr char kToken[] = "test-token-8c1f";
constexpr char kHostBinary[] = "workers/remote/test_host";

WorkerOptions OptionsFor(std::vector<std::string> hosts, std::string token = kToken) {
  return {.mode = Mode::kRemote,
          .remote = RemoteOptions{.hosts = std::move(hosts), .token = std::move(token)}};
}

class RemoteWorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { host_ = new TestHost(kHostBinary, kToken); }
  static void TearDownTestSuite() {
    delete host_;
    host_ = nullptr;
  }
  static WorkerOptions Options() { return OptionsFor({host_->address()}); }

  // A raw stub to the suite's host, for what the API never sends.
  static std::unique_ptr<remote::v1::WorkerHost::Stub> Stub() {
    return remote::v1::WorkerHost::NewStub(
        grpc::CreateChannel(host_->address(), grpc::InsecureChannelCredentials()));
  }
  static void Authorize(grpc::ClientContext& context) {
    context.AddMetadata(remote_internal::kAuthorizationKey, remote_internal::BearerValue(kToken));
  }
  static remote::v1::StatsReply HostStats() {
    grpc::ClientContext context;
    Authorize(context);
    remote::v1::StatsReply reply;
    grpc::Status status = Stub()->Stats(&context, remote::v1::StatsRequest(), &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return reply;
  }

  static TestHost* host_;
};

TestHost* RemoteWorkerTest::host_ = nullptr;

TEST_F(RemoteWorkerTest, RunsOnTheHostAndKeepsState) {
  auto w = Worker<Counter>::Create(Options(), 10);
  EXPECT_EQ(w.Call(&Counter::Pid).Result(), host_->pid());
  EXPECT_EQ(w.Call(&Counter::Add, 5).Result(), 15);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 16);
  EXPECT_EQ(w.Call(&Counter::Reflect, std::string("hi")).Result(), "hi");
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_F(RemoteWorkerTest, PipelinedCallsCompleteInOrder) {
  testkit::Watchdog watchdog(absl::Seconds(30), "1000 pipelined remote calls");
  auto w = Worker<Counter>::Create(Options(), 0);
  std::vector<Future<int>> sums;
  for (int i = 0; i < 1000; ++i) sums.push_back(w.Call(&Counter::Add, 1));
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(sums[i].Result(), i + 1);
}

TEST_F(RemoteWorkerTest, RebuildsTypedExceptions) {
  auto w = Worker<Counter>::Create(Options(), 0);
  try {
    w.Call(&Counter::Throw, std::string("out of here")).Result();
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "out of here");
  }
  // The worker goes on.
  EXPECT_EQ(w.Call(&Counter::Add, 2).Result(), 2);
}

TEST_F(RemoteWorkerTest, TheConstructorsErrorReachesCreate) {
  try {
    Worker<remote_test::Picky>::Create(Options(), true);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "Picky refuses to be built");
  }
  auto ok = Worker<remote_test::Picky>::Create(Options(), false);
  EXPECT_EQ(ok.Call(&remote_test::Picky::One).Result(), 1);
}

TEST_F(RemoteWorkerTest, TaskWorkerRunsRegisteredFunctions) {
  TaskWorker w = TaskWorker::Create(Options());
  EXPECT_EQ(w.Submit(&remote_test::Square, 7).Result(), 49);
}

TEST_F(RemoteWorkerTest, AWrongTokenIsUnauthenticated) {
  const absl::Status status =
      StatusThrownBy([] { Worker<Counter>::Create(OptionsFor({host_->address()}, "guess"), 0); });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
  EXPECT_THAT(status.message(), HasSubstr("wrong token"));
  EXPECT_THAT(status.message(), HasSubstr(host_->address()));
}

TEST_F(RemoteWorkerTest, NoTokenIsUnauthenticated) {
  // The API never sends a call without a token...
  EXPECT_THAT(StatusThrownBy([] {
                Worker<Counter>::Create(OptionsFor({host_->address()}, ""), 0);
              }).message(),
              HasSubstr("needs remote.token"));
  // ...and the host refuses one that comes without it.
  grpc::ClientContext context;
  remote::v1::StatsReply reply;
  grpc::Status status = Stub()->Stats(&context, remote::v1::StatsRequest(), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), HasSubstr("authorization: Bearer"));
  grpc::ClientContext stream_context;
  auto stream = Stub()->Connect(&stream_context);
  remote::v1::ClientFrame create;
  create.mutable_create()->set_class_name("remote_test::Counter");
  create.mutable_create()->set_constructor(workers_internal::EncodeConstructor<Counter>(0));
  stream->Write(create);
  remote::v1::HostFrame frame;
  EXPECT_FALSE(stream->Read(&frame));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(RemoteWorkerTest, AClassTheHostDoesNotHaveIsNotFound) {
  const absl::Status status =
      StatusThrownBy([] { Worker<remote_test::Stranger>::Create(Options()); });
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr("remote_test::Stranger"));
  // The host goes on serving.
  EXPECT_EQ(Worker<Counter>::Create(Options(), 3).Call(&Counter::Get).Result(), 3);
}

TEST_F(RemoteWorkerTest, UnknownMethodsAndGarbageGetErrorRepliesAndTheHostGoesOn) {
  grpc::ClientContext context;
  Authorize(context);
  auto stream = Stub()->Connect(&context);
  remote::v1::ClientFrame frame;
  frame.mutable_create()->set_class_name("remote_test::Counter");
  frame.mutable_create()->set_constructor(workers_internal::EncodeConstructor<Counter>(1));
  ASSERT_TRUE(stream->Write(frame));
  remote::v1::HostFrame reply;
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(reply.has_created());
  workers_internal::DecodeReply<void>(reply.created().reply());

  const auto call = [&](uint64_t id, std::string method, std::string args) {
    remote::v1::ClientFrame call;
    call.mutable_call()->set_id(id);
    call.mutable_call()->set_method(std::move(method));
    call.mutable_call()->set_args(std::move(args));
    EXPECT_TRUE(stream->Write(call));
    remote::v1::HostFrame answer;
    EXPECT_TRUE(stream->Read(&answer));
    EXPECT_EQ(answer.reply().id(), id);
    return answer.reply().reply();
  };
  const std::string unknown =
      call(0, "Launch", workers_internal::EncodeCall<Counter>(&Counter::Get));
  EXPECT_THAT(StatusThrownBy([&] { workers_internal::DecodeReply<int>(unknown); }).message(),
              HasSubstr("Launch"));
  const std::string garbage = call(1, "Add", std::string("\xff\x01garbage", 9));
  EXPECT_EQ(StatusThrownBy([&] { workers_internal::DecodeReply<int>(garbage); }).code(),
            absl::StatusCode::kDataLoss);
  // Garbage in place of a reply's bytes on the client side is an error too, not a crash.
  EXPECT_EQ(StatusThrownBy([] { workers_internal::DecodeReply<int>("\x01\x02\x03"); }).code(),
            absl::StatusCode::kDataLoss);
  const std::string added = call(2, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 4));
  EXPECT_EQ(workers_internal::DecodeReply<int>(added), 5);
  stream->WritesDone();
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(RemoteWorkerTest, StopEndsTheWorkerOnTheHost) {
  const int64_t before = HostStats().workers();
  auto w = Worker<Counter>::Create(Options(), 0);
  EXPECT_EQ(HostStats().workers(), before + 1);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
  EXPECT_EQ(HostStats().workers(), before);
  EXPECT_THROW(w.Call(&Counter::Get).Result(), StoppedError);
}

TEST_F(RemoteWorkerTest, BadOptionsAreRejectedAtCreate) {
  EXPECT_THAT(StatusThrownBy([] { Worker<Counter>::Create({.mode = Mode::kRemote}, 0); }).message(),
              HasSubstr("needs remote.hosts"));
  EXPECT_THAT(StatusThrownBy([] {
                Worker<Counter>::Create({.mode = Mode::kThread, .remote = RemoteOptions{}}, 0);
              }).message(),
              HasSubstr("remote is set for mode thread"));
  WorkerOptions options = Options();
  options.remote->tls_client_cert = "client.pem";
  EXPECT_THAT(StatusThrownBy([&] { Worker<Counter>::Create(options, 0); }).message(),
              HasSubstr("tls_client_key go together"));
  options = Options();
  options.remote->connect_timeout = absl::ZeroDuration();
  EXPECT_THAT(StatusThrownBy([&] { Worker<Counter>::Create(options, 0); }).message(),
              HasSubstr("connect_timeout"));
}

TEST_F(RemoteWorkerTest, NoHostAtTheAddressFailsWithinTheConnectTimeout) {
  testkit::Watchdog watchdog(absl::Seconds(20), "connecting to nothing");
  WorkerOptions options = OptionsFor({"127.0.0.1:1"});
  options.remote->connect_timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  const absl::Status status = StatusThrownBy([&] { Worker<Counter>::Create(options, 0); });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("127.0.0.1:1"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(RemotePoolTest, SpreadsItsWorkersAcrossHosts) {
  TestHost a(kHostBinary, kToken), b(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({a.address(), b.address()});
  options.max_workers = 4;
  auto pool = Worker<Counter>::Create(options, 0);
  std::multiset<int> pids;
  for (int i = 0; i < 4; ++i) pids.insert(pool.Call(&Counter::Pid).Result());
  EXPECT_EQ(pids.count(a.pid()), 2u);
  EXPECT_EQ(pids.count(b.pid()), 2u);
  EXPECT_TRUE(pool.Stop(absl::Seconds(10)));
}

TEST(RemoteLimitsTest, MessagesAboveTheLimitFailAloneAndFullHostsRefuse) {
  TestHost host(kHostBinary, kToken, {"--max_message_bytes=65536", "--max_workers=1"});
  WorkerOptions options = OptionsFor({host.address()});
  options.remote->max_message_bytes = 32768;
  auto w = Worker<Counter>::Create(options, 0);
  // Arguments above the client's limit: the call fails, the worker goes on.
  const absl::Status big_call =
      StatusThrownBy([&] { w.Call(&Counter::Reflect, std::string(40000, 'x')).Result(); });
  EXPECT_EQ(big_call.code(), absl::StatusCode::kResourceExhausted) << big_call;
  EXPECT_THAT(big_call.message(), HasSubstr("remote.max_message_bytes"));
  EXPECT_EQ(w.Call(&Counter::Reflect, std::string(1000, 'y')).Result(), std::string(1000, 'y'));
  // A reply above the host's limit: an error reply, and the worker goes on.
  const absl::Status big_reply =
      StatusThrownBy([&] { w.Call(&Counter::Repeat, std::string("z"), 100000).Result(); });
  EXPECT_EQ(big_reply.code(), absl::StatusCode::kResourceExhausted) << big_reply;
  EXPECT_THAT(big_reply.message(), HasSubstr("--max_message_bytes"));
  EXPECT_EQ(w.Call(&Counter::Add, 2).Result(), 2);
  // --max_workers=1: a second worker is refused while the first lives.
  const absl::Status full = StatusThrownBy([&] { Worker<Counter>::Create(options, 0); });
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(full.message(), HasSubstr("--max_workers"));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
  EXPECT_EQ(Worker<Counter>::Create(options, 7).Call(&Counter::Get).Result(), 7);
}

TEST(RemoteTlsTest, TalksTlsWithCertificatesMadeByTheTest) {
  testkit::Watchdog watchdog(absl::Seconds(60), "TLS host");
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  const std::string cert = dir + "/tls_host.pem";
  const std::string key = dir + "/tls_host.key";
  // A self-signed certificate for 127.0.0.1, which the client trusts as its root.
  const std::string command = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout ",
      key, " -out ", cert, " 2>/dev/null");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  TestHost host(kHostBinary, kToken, {"--tls_cert=" + cert, "--tls_key=" + key});

  WorkerOptions options = OptionsFor({host.address()});
  options.remote->tls_root_certs = cert;
  auto w = Worker<Counter>::Create(options, 1);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 2);
  EXPECT_EQ(w.Call(&Counter::Pid).Result(), host.pid());

  // A plaintext client gets nowhere with a TLS host.
  WorkerOptions plain = OptionsFor({host.address()});
  plain.remote->connect_timeout = absl::Milliseconds(500);
  EXPECT_FALSE(StatusThrownBy([&] { Worker<Counter>::Create(plain, 0); }).ok());
  // Nor does a root file that is not there.
  options.remote->tls_root_certs = dir + "/missing.pem";
  EXPECT_THAT(StatusThrownBy([&] { Worker<Counter>::Create(options, 0); }).message(),
              HasSubstr("cannot read"));
}

// A path under the test's temporary directory that does not exist yet (for
// remote_test::Slow::Sleep, which creates it once the call runs on the host).
std::string StartedFile(absl::string_view name) {
  static int count = 0;
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name, "_", getpid(), "_", ++count);
}

// Whether the file `path` exists within `wait`.
bool AppearsWithin(const std::string& path, absl::Duration wait) {
  const absl::Time until = absl::Now() + wait;
  while (access(path.c_str(), F_OK) != 0) {
    if (absl::Now() >= until) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST(RemoteCancelTest, ARunningCallSeesItsCancellationAndACancelledQueuedCallNeverRuns) {
  testkit::Watchdog watchdog(absl::Seconds(30), "cancel of a running remote call");
  TestHost host(kHostBinary, kToken);
  auto w = Worker<Counter>::Create(OptionsFor({host.address()}), 0);
  const std::string started = StartedFile("working");
  Future<void> running = w.Call(&Counter::WorkUntilCancelled, started);
  Future<int> queued = w.Call(&Counter::Add, 100);
  ASSERT_TRUE(AppearsWithin(started, absl::Seconds(10)));
  // The queued call's Cancel goes first: the host has it before the running call can return.
  EXPECT_TRUE(queued.Cancel());
  EXPECT_TRUE(running.Cancel());
  // The method saw the Cancel long before its own 10 s limit (which adds 1000), and the call
  // behind it never ran (which adds 100). Its reply, when it comes, is dropped.
  Future<int> next = w.Call(&Counter::Get);
  ASSERT_TRUE(next.Wait(absl::Seconds(5)));
  EXPECT_EQ(next.Result(), 1);
  EXPECT_TRUE(running.Cancelled());
  EXPECT_TRUE(queued.Cancelled());
  EXPECT_EQ(w.Call(&Counter::Add, 2).Result(), 3);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteCancelTest, ACallTimeoutReachesARunningCallThatAsks) {
  testkit::Watchdog watchdog(absl::Seconds(30), "call_timeout of a running remote call");
  TestHost host(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({host.address()});
  options.remote->call_timeout = absl::Milliseconds(300);
  auto w = Worker<Counter>::Create(options, 0);
  Future<void> running = w.Call(&Counter::WorkUntilCancelled, StartedFile("timed"));
  EXPECT_THROW(running.Result(), TimeoutError);
  // The deadline's Cancel reached the method on the host, which stopped (1, not 1000).
  Future<int> next = w.Call(&Counter::Get);
  ASSERT_TRUE(next.Wait(absl::Seconds(5)));
  EXPECT_EQ(next.Result(), 1);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteStopTest, AStopPastItsTimeoutCancelsTheStream) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stop of a busy remote worker");
  TestHost host(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({host.address()});
  options.stop_timeout = absl::Milliseconds(200);
  auto w = Worker<remote_test::Slow>::Create(options, 0);
  const std::string started = StartedFile("busy");
  Future<void> busy = w.Call(&remote_test::Slow::Sleep, started, 5'000);
  Future<void> behind = w.Call(&remote_test::Slow::Sleep, StartedFile("behind"), 0);
  // Stop must find `busy` running on the host (a call the host has not started when the Stop
  // arrives is cancelled, as in every mode), and `behind` sent behind it.
  ASSERT_TRUE(AppearsWithin(started, absl::Seconds(10)));
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (w.Stats().queued > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(w.Stats().queued, 0);
  const absl::Time start = absl::Now();
  EXPECT_TRUE(w.Stop(absl::Seconds(5)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_TRUE(busy.Done());
  ASSERT_TRUE(behind.Done());
  // The call queued behind is cancelled, as in every mode; the running one ends when the stream
  // is cancelled at stop_timeout.
  EXPECT_TRUE(behind.Cancelled());
  try {
    busy.Result();
    FAIL() << "no error";
  } catch (const StoppedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("was cancelled by Stop after its timeout"));
  }
}

TEST(RemoteStopTest, StopsTimeoutBoundsTheWaitForTheHost) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stop(200ms) of a busy remote worker");
  TestHost host(kHostBinary, kToken);
  // stop_timeout (30 s by default) is not what bounds this Stop: its own timeout is.
  auto w = Worker<remote_test::Slow>::Create(OptionsFor({host.address()}), 0);
  const std::string started = StartedFile("busy");
  Future<void> busy = w.Call(&remote_test::Slow::Sleep, started, 10'000);
  ASSERT_TRUE(AppearsWithin(started, absl::Seconds(10)));
  const absl::Time start = absl::Now();
  w.Stop(absl::Milliseconds(200));  // Returns false or true: the stream ends about then.
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Seconds(1));
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(1)));
  ASSERT_TRUE(busy.Wait(absl::Seconds(1)));
  EXPECT_THROW(busy.Result(), StoppedError);
}

TEST(RemoteCrashTest, APoolReplacesTheWorkerOfAKilledHostOnALiveOne) {
  testkit::Watchdog watchdog(absl::Seconds(60), "a pool losing a host");
  TestHost a(kHostBinary, kToken), b(kHostBinary, kToken);
  WorkerOptions options = OptionsFor({a.address(), b.address()});
  options.max_workers = 2;
  auto pool = Worker<Counter>::Create(options, 0);
  std::set<int> pids;
  for (int i = 0; i < 2; ++i) pids.insert(pool.Call(&Counter::Pid).Result());
  EXPECT_EQ(pids, (std::set<int>{a.pid(), b.pid()}));
  const int b_pid = b.pid();
  a.Kill(SIGKILL);
  // Every call resolves in bounded time: the ones that reach the dead worker fail, and once the
  // pool has replaced it (on b, the host that is up), every call succeeds.
  int successes = 0, failures = 0;
  for (int i = 0; successes < 20; ++i) {
    ASSERT_LT(i, 500) << successes << " successes, " << failures << " failures";
    Future<int> pid = pool.Call(&Counter::Pid);
    ASSERT_TRUE(pid.Wait(absl::Seconds(10)));
    if (pid.Error() == nullptr) {
      EXPECT_EQ(pid.Result(), b_pid);
      ++successes;
    } else {
      EXPECT_THROW(pid.Result(), Error);
      ++failures;
    }
  }
  EXPECT_EQ(pool.GetPoolStats().replaced_workers, 1);
  EXPECT_TRUE(pool.Stop(absl::Seconds(10)));
}

TEST(RemoteCrashTest, AHostKilledMidCallFailsItsCallsWithinTwoSeconds) {
  testkit::Watchdog watchdog(absl::Seconds(30), "calls on a killed host");
  TestHost host(kHostBinary, kToken);
  const pid_t pid = host.pid();
  auto w = Worker<Counter>::Create(OptionsFor({host.address()}), 0);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 1);
  Future<void> sleeping = w.Call(&Counter::Sleep, 20'000);
  Future<int> queued = w.Call(&Counter::Add, 1);
  const absl::Time killed = absl::Now();
  const int status = host.Kill(SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(sleeping.Wait(absl::Seconds(2)));
  EXPECT_TRUE(queued.Wait(absl::Seconds(2)));
  EXPECT_LT(absl::Now() - killed, absl::Seconds(2));
  try {
    sleeping.Result();
    FAIL() << "no error";
  } catch (const CrashedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("remote_test::Counter"));
    EXPECT_THAT(e.what(), HasSubstr(host.address()));
    EXPECT_THAT(e.what(), HasSubstr("UNAVAILABLE"));
  }
  EXPECT_THROW(queued.Result(), CrashedError);
  // The worker ended: later calls fail at once, and its stats say why.
  EXPECT_THROW(w.Call(&Counter::Get).Result(), Error);
  EXPECT_THAT(w.Stats().error, HasSubstr("remote_test::Counter"));
  // No host process is left: it was reaped.
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

}  // namespace
}  // namespace concurry

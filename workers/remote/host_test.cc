// The worker host's own defences, against real host processes (//workers/remote:test_host) on
// 127.0.0.1: bounded memory under pipelined large calls, garbage on the socket and large
// unauthenticated requests, the Create deadline, cancellations, health, SIGTERM with a call that
// never returns, client certificates, and the client lease.

#include "workers/remote/host.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "testing/watchdog.h"
#include "workers/codec.h"
#include "workers/options.h"
#include "workers/remote/internal/auth.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/test_classes.h"
#include "workers/remote/test_hosts.h"
#include "workers/worker.h"

// LeakSanitizer: OpenSSL 3 keeps a random generator per thread of gRPC's TLS handshakes and never
// frees it (see remote_worker_test.cc).
extern "C" const char* __lsan_default_suppressions() {
  return "leak:EVP_RAND_CTX_new\nleak:libcrypto.so\n";
}

namespace concurry {
namespace {

// Under AddressSanitizer, freed memory waits in a quarantine (256 MiB by default) before reuse,
// which the memory tests would count as the host's. A small one keeps the check meaningful; set
// before main, while the program has one thread, and inherited by the host processes.
[[maybe_unused]] const bool kSmallAsanQuarantine = [] {
  if (const char* options = std::getenv("ASAN_OPTIONS")) {
    setenv("ASAN_OPTIONS", absl::StrCat(options, ":quarantine_size_mb=8").c_str(), 1);
  }
  return true;
}();

using remote::IsLoopbackAddress;
using remote_test::Counter;
using remote_testing::TestHost;
using ::testing::HasSubstr;

constexpr char kToken[] = "host-test-token-5e2a";
constexpr char kHostBinary[] = "workers/remote/test_host";

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

WorkerOptions OptionsFor(const TestHost& host) {
  return {.mode = Mode::kRemote,
          .remote = RemoteOptions{.hosts = {host.address()}, .token = kToken}};
}

// The resident memory of process `pid`, in bytes: now (VmRSS in /proc/<pid>/status), or its peak
// so far (VmHWM).
int64_t ResidentBytes(pid_t pid, absl::string_view field = "VmRSS:") {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, field)) continue;
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, " kB");
    int64_t kb = 0;
    if (absl::SimpleAtoi(rest, &kb)) return kb * 1024;
  }
  ADD_FAILURE() << "no " << field << " for pid " << pid;
  return 0;
}

// Sends the Create of a Counter(base) on a raw stream and returns the host's answer (an empty
// frame when the stream broke first).
remote::v1::HostFrame CreateCounter(
    grpc::ClientReaderWriter<remote::v1::ClientFrame, remote::v1::HostFrame>& stream,
    int base = 1) {
  remote::v1::ClientFrame frame;
  frame.mutable_create()->set_class_name("remote_test::Counter");
  frame.mutable_create()->set_constructor(workers_internal::EncodeConstructor<Counter>(base));
  remote::v1::HostFrame created;
  if (!stream.Write(frame) || !stream.Read(&created)) return remote::v1::HostFrame();
  return created;
}

// Writes call 0 of `method` with `args` (EncodeCall bytes) on a raw stream.
bool WriteFirstCall(
    grpc::ClientReaderWriter<remote::v1::ClientFrame, remote::v1::HostFrame>& stream,
    const std::string& method, std::string args) {
  remote::v1::ClientFrame frame;
  frame.mutable_call()->set_id(0);
  frame.mutable_call()->set_method(method);
  frame.mutable_call()->set_args(std::move(args));
  return stream.Write(frame);
}

std::unique_ptr<remote::v1::WorkerHost::Stub> StubFor(const TestHost& host) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  return remote::v1::WorkerHost::NewStub(
      grpc::CreateCustomChannel(host.address(), grpc::InsecureChannelCredentials(), args));
}

void Authorize(grpc::ClientContext& context) {
  context.AddMetadata(remote_internal::kAuthorizationKey, remote_internal::BearerValue(kToken));
}

grpc::Status StatsOf(const TestHost& host, remote::v1::StatsReply* reply) {
  grpc::ClientContext context;
  Authorize(context);
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  return StubFor(host)->Stats(&context, remote::v1::StatsRequest(), reply);
}

remote::v1::StatsReply StatsOf(const TestHost& host) {
  remote::v1::StatsReply reply;
  const grpc::Status status = StatsOf(host, &reply);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return reply;
}

// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
template <typename F>
bool Eventually(F done, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

// The serving status that grpc.health.v1.Health/Check reports for the whole host (1 SERVING,
// 2 NOT_SERVING), or -1 when the check fails. Encoded by hand: the health proto is not linked.
int HealthOf(std::shared_ptr<grpc::Channel> channel) {
  grpc::GenericStub stub(std::move(channel));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  grpc::ByteBuffer request;  // An empty HealthCheckRequest: service "" (the whole server).
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  // HealthCheckResponse { ServingStatus status = 1; }: tag 0x08, then the value.
  if (bytes.size() != 2 || bytes[0] != 0x08) return bytes.empty() ? 0 : -1;
  return bytes[1];
}

TEST(IsLoopbackAddressTest, ParsesTheAddress) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:0"));
  EXPECT_TRUE(IsLoopbackAddress("127.3.2.1:7000"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:7000"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:7000"));
  EXPECT_TRUE(IsLoopbackAddress("unix:/tmp/host.sock"));
  EXPECT_FALSE(IsLoopbackAddress("127.example.com:7000"));
  EXPECT_FALSE(IsLoopbackAddress("localhost.example.com:7000"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0:7000"));
  EXPECT_FALSE(IsLoopbackAddress("[::]:7000"));
  EXPECT_FALSE(IsLoopbackAddress("10.1.2.3:7000"));
  EXPECT_FALSE(IsLoopbackAddress("[::ffff:10.0.0.1]:7000"));
  EXPECT_FALSE(IsLoopbackAddress("[::1:7000"));
  EXPECT_FALSE(IsLoopbackAddress(""));
}

TEST(HostOptionsTest, BadOptionsAreRefused) {
  remote::HostOptions options;
  options.token = kToken;
  options.create_timeout = absl::ZeroDuration();
  EXPECT_THROW(remote::WorkerHost::Start(options), InvalidOptionError);
  options = remote::HostOptions();
  options.token = kToken;
  options.tls_client_ca_pem = "not used without TLS";
  try {
    remote::WorkerHost::Start(options);
    FAIL() << "no exception";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--tls_client_ca"));
  }
  // Numbers out of range, huge ones included (the thread cap is 2 x max_workers + spares).
  const auto refused = [](void (*set)(remote::HostOptions&), const char* what) {
    remote::HostOptions options;
    options.token = kToken;
    set(options);
    try {
      remote::WorkerHost::Start(options);
      ADD_FAILURE() << "no exception for " << what;
    } catch (const InvalidOptionError& e) {
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  };
  refused([](remote::HostOptions& o) { o.max_workers = INT32_MAX; }, "--max_workers");
  refused([](remote::HostOptions& o) { o.max_workers = 0; }, "--max_workers");
  refused([](remote::HostOptions& o) { o.max_message_bytes = 100; }, "--max_message_bytes");
  refused([](remote::HostOptions& o) { o.max_grpc_memory_bytes = INT64_MAX; },
          "max_grpc_memory_bytes");
  refused([](remote::HostOptions& o) { o.max_grpc_memory_bytes = -1; }, "max_grpc_memory_bytes");
  refused([](remote::HostOptions& o) { o.max_queued_bytes = -1; }, "--max_queued_mb");
  refused(
      [](remote::HostOptions& o) {
        o.max_workers = 4;
        o.max_message_bytes = 1 << 20;
        o.max_queued_bytes = 3 << 20;  // Less than one message per worker.
      },
      "at least max_workers x max_message_bytes = 4194304");
  refused([](remote::HostOptions& o) { o.client_lease = absl::Milliseconds(100); },
          "--client_lease_ms");
  refused([](remote::HostOptions& o) { o.client_lease = absl::Hours(25); }, "--client_lease_ms");
  refused([](remote::HostOptions& o) { o.client_lease = -absl::InfiniteDuration(); },
          "--client_lease_ms");
}

// B1: a client pipelines far more large calls than the host may queue, behind a slow call. The
// host stops reading, gRPC's flow control makes the client wait, and the host's memory stays
// near its queue limit (2 x --max_message_bytes); every call completes.
TEST(HostMemoryTest, PipelinedLargeCallsBehindASlowOneKeepTheHostsMemoryBounded) {
  testkit::Watchdog watchdog(absl::Seconds(60), "pipelined large calls");
  constexpr int kMessageLimit = 2 << 20;
  TestHost host(kHostBinary, kToken, {absl::StrCat("--max_message_bytes=", kMessageLimit)});
  WorkerOptions options = OptionsFor(host);
  options.remote->max_message_bytes = kMessageLimit;
  auto w = Worker<Counter>::Create(options, 0);
  const std::string big(3 << 19, 'x');  // 1.5 MiB
  // Warm up: gRPC's buffers and the allocator reach their steady size.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(w.Call(&Counter::Reflect, big).Result().size(), big.size());
  const int64_t before = ResidentBytes(host.pid());

  constexpr int kCalls = 96;  // 144 MiB of arguments
  Future<void> slow = w.Call(&Counter::Sleep, 1500);
  std::vector<Future<std::string>> calls;
  for (int i = 0; i < kCalls; ++i) calls.push_back(w.Call(&Counter::Reflect, big));
  int64_t peak = before;
  for (Future<std::string>& call : calls) {
    while (!call.Wait(absl::Milliseconds(20))) {
      peak = std::max(peak, ResidentBytes(host.pid()));
    }
  }
  slow.Result();
  for (Future<std::string>& call : calls) EXPECT_EQ(call.Result().size(), big.size());
  // Unbounded, the host would hold all 144 MiB while the slow call runs (183 MB growth seen).
  std::printf("host RSS growth under 144 MiB of pipelined calls: %lld bytes\n",
              static_cast<long long>(peak - before));
  EXPECT_LT(peak - before, 40 << 20) << "host RSS grew from " << before << " to " << peak;
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

// A Cancel counts for a call the host has queued, or for one of the next few ids (a Cancel may
// overtake its call); others (far ahead, or already run) are ignored and nothing is kept for them.
// A frame of no known kind gets an error reply in its place.
TEST(HostCancelTest, OnlyQueuedCallsCanBeCancelled) {
  testkit::Watchdog watchdog(absl::Seconds(30), "cancels on a raw stream");
  TestHost host(kHostBinary, kToken);
  grpc::ClientContext context;
  Authorize(context);
  auto stream = StubFor(host)->Connect(&context);
  ASSERT_TRUE(CreateCounter(*stream).has_created());
  remote::v1::HostFrame reply;

  const auto send_call = [&](uint64_t id, std::string method, std::string args) {
    remote::v1::ClientFrame call;
    call.mutable_call()->set_id(id);
    call.mutable_call()->set_method(std::move(method));
    call.mutable_call()->set_args(std::move(args));
    EXPECT_TRUE(stream->Write(call));
  };
  const auto send_cancel = [&](uint64_t id) {
    remote::v1::ClientFrame cancel;
    cancel.mutable_cancel()->set_id(id);
    EXPECT_TRUE(stream->Write(cancel));
  };
  send_call(0, "Sleep", workers_internal::EncodeCall<Counter>(&Counter::Sleep, 1000));
  // Far ahead of the calls received: ignored, however many.
  for (uint64_t id = 100; id < 2100; ++id) send_cancel(id);
  send_cancel(1);  // Just ahead: kept until call 1 comes, which it cancels.
  send_call(1, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 1));
  send_call(2, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 10));
  send_call(3, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 100));
  send_cancel(3);                                         // Queued behind the sleep: cancelled.
  ASSERT_TRUE(stream->Write(remote::v1::ClientFrame()));  // No kind at all.
  send_call(100, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 1000));
  send_cancel(2);  // After later calls, but 2 still waits behind the sleep: cancelled.

  std::vector<remote::v1::Reply> replies;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(stream->Read(&reply));
    replies.push_back(reply.reply());
  }
  EXPECT_EQ(replies[0].id(), 0u);
  EXPECT_EQ(replies[1].id(), 1u);
  EXPECT_THROW(workers_internal::DecodeReply<int>(replies[1].reply()), CancelledError);
  EXPECT_EQ(replies[2].id(), 2u);
  EXPECT_THROW(workers_internal::DecodeReply<int>(replies[2].reply()), CancelledError);
  EXPECT_EQ(replies[3].id(), 3u);
  EXPECT_THROW(workers_internal::DecodeReply<int>(replies[3].reply()), CancelledError);
  EXPECT_EQ(replies[4].id(), UINT64_MAX);
  try {
    workers_internal::DecodeReply<void>(replies[4].reply());
    ADD_FAILURE() << "no error for a frame of no kind";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("neither a call"));
  }
  // The cancel of id 100, sent long before the call, was ignored: it ran.
  EXPECT_EQ(replies[5].id(), 100u);
  EXPECT_EQ(workers_internal::DecodeReply<int>(replies[5].reply()), 1001);
  stream->WritesDone();
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_TRUE(stream->Finish().ok());
}

// A call whose timeout_us passes while it waits in the queue is answered with a TimeoutError and
// never runs; calls without one, and calls still in time, run.
TEST(HostDeadlineTest, ACallPastItsDeadlineInTheQueueIsNotStarted) {
  testkit::Watchdog watchdog(absl::Seconds(30), "deadlines on a raw stream");
  TestHost host(kHostBinary, kToken);
  grpc::ClientContext context;
  Authorize(context);
  auto stream = StubFor(host)->Connect(&context);
  ASSERT_TRUE(CreateCounter(*stream).has_created());
  remote::v1::HostFrame reply;

  const auto send_call = [&](uint64_t id, std::string method, std::string args,
                             uint64_t timeout_us) {
    remote::v1::ClientFrame call;
    call.mutable_call()->set_id(id);
    call.mutable_call()->set_method(std::move(method));
    call.mutable_call()->set_args(std::move(args));
    call.mutable_call()->set_timeout_us(timeout_us);
    EXPECT_TRUE(stream->Write(call));
  };
  send_call(0, "Sleep", workers_internal::EncodeCall<Counter>(&Counter::Sleep, 600), 0);
  // 100 ms: passes while the sleep runs. No cancellation is sent: the host alone drops it.
  send_call(1, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 10), 100'000);
  // 30 s: still in time when the sleep ends.
  send_call(2, "Add", workers_internal::EncodeCall<Counter>(&Counter::Add, 100), 30'000'000);
  // The largest value: no overflow, it runs.
  send_call(3, "Get", workers_internal::EncodeCall<Counter>(&Counter::Get), UINT64_MAX);

  std::vector<remote::v1::Reply> replies;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(stream->Read(&reply));
    replies.push_back(reply.reply());
  }
  EXPECT_EQ(replies[0].id(), 0u);
  EXPECT_NO_THROW(workers_internal::DecodeReply<void>(replies[0].reply()));
  EXPECT_EQ(replies[1].id(), 1u);
  try {
    workers_internal::DecodeReply<int>(replies[1].reply());
    ADD_FAILURE() << "the call past its deadline ran";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Add"));
    EXPECT_THAT(e.what(), HasSubstr("waited in the worker host's queue past its deadline"));
    EXPECT_THAT(e.what(), HasSubstr("100ms"));
  }
  EXPECT_EQ(replies[2].id(), 2u);
  EXPECT_EQ(workers_internal::DecodeReply<int>(replies[2].reply()), 101);  // Add(10) never ran.
  EXPECT_EQ(replies[3].id(), 3u);
  EXPECT_EQ(workers_internal::DecodeReply<int>(replies[3].reply()), 101);
  stream->WritesDone();
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_TRUE(stream->Finish().ok());
}

// B2: garbage on the port, and large requests without the token: the host refuses them, its
// memory stays within its gRPC quota (here 32 MiB; gRPC 1.51 receives a whole request before it
// checks its size or the handler checks the token), and it goes on serving.
TEST(HostSocketTest, GarbageBytesAndLargeUnauthenticatedRequestsLeaveTheHostServing) {
  testkit::Watchdog watchdog(absl::Seconds(60), "garbage on the host's port");
  TestHost host(kHostBinary, kToken, {"--max_grpc_memory_mb=32"});
  EXPECT_EQ(StatsOf(host).workers(), 0);
  const int64_t before = ResidentBytes(host.pid());

  std::mt19937 random(16);
  std::string noise(1 << 20, '\0');
  for (char& c : noise) c = static_cast<char>(random());
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  for (const std::string& bytes : {noise, preface + noise, std::string(64 << 10, '\0')}) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(host.port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    // The host may close the connection before it has all: a short write is fine.
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    close(fd);
  }

  // Unauthenticated Stats requests padded with an unknown field: one just under the 4 MiB
  // default limit (refused for its missing token), and three of 100 MiB at once (refused for
  // their size, or reset by gRPC's quota).
  const auto unauthenticated_stats = [&](int64_t size) {
    remote::v1::StatsRequest request;
    request.GetReflection()->MutableUnknownFields(&request)->AddLengthDelimited(
        99, std::string(size, 'p'));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    remote::v1::StatsReply reply;
    return StubFor(host)->Stats(&context, request, &reply);
  };
  const grpc::Status small = unauthenticated_stats((4 << 20) - 4096);
  EXPECT_EQ(small.error_code(), grpc::StatusCode::UNAUTHENTICATED) << small.error_message();
  std::vector<grpc::Status> large(3);
  std::vector<std::thread> threads;
  for (grpc::Status& status : large) {
    threads.emplace_back([&] { status = unauthenticated_stats(int64_t{100} << 20); });
  }
  for (std::thread& thread : threads) thread.join();
  for (const grpc::Status& status : large) {
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                status.error_code() == grpc::StatusCode::INTERNAL)
        << status.error_code() << ": " << status.error_message();
  }
  // The peak, since a buffered request would be freed by now. With a 4 GiB quota the three made
  // it grow by about 265 MB; with 32 MiB, 50-80 MB was seen (gRPC enforces its quota by resetting
  // streams after the fact, not by refusing each allocation).
  const int64_t peak = ResidentBytes(host.pid(), "VmHWM:");
  std::printf("host peak RSS growth under 3 x 100 MiB unauthenticated requests: %lld bytes\n",
              static_cast<long long>(peak - before));
  EXPECT_LT(peak - before, 150 << 20) << "host RSS grew from " << before << " to " << peak;

  // Still serving: an authenticated call works, and so does a worker.
  remote::v1::StatsReply stats;
  const grpc::Status status = StatsOf(host, &stats);
  EXPECT_TRUE(status.ok()) << status.error_message();
  auto w = Worker<Counter>::Create(OptionsFor(host), 4);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 5);
}

// M2: a stream that never sends its Create is cancelled after --create_timeout_ms, and its slot
// is free again.
TEST(HostCreateTimeoutTest, AStreamWithoutCreateLosesItsSlot) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a stream without Create");
  TestHost host(kHostBinary, kToken, {"--create_timeout_ms=1000", "--max_workers=1"});
  grpc::ClientContext context;
  Authorize(context);
  auto stream = StubFor(host)->Connect(&context);
  EXPECT_TRUE(Eventually([&] { return StatsOf(host).workers() == 1; }, absl::Seconds(5)));
  const absl::Time start = absl::Now();
  remote::v1::HostFrame frame;
  EXPECT_FALSE(stream->Read(&frame));
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  EXPECT_FALSE(stream->Finish().ok());
  EXPECT_TRUE(Eventually([&] { return StatsOf(host).workers() == 0; }, absl::Seconds(5)));
  auto w = Worker<Counter>::Create(OptionsFor(host), 7);
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 7);
}

// R-M2: --max_queued_mb bounds the calls queued on all the host's workers together. Each worker
// queues up to its share, which Created announces (the client holds further calls back) and the
// host enforces by not reading past it; without the flag, twice the largest message.
TEST(HostQueueBudgetTest, EachWorkerQueuesItsShareOfTheBudget) {
  testkit::Watchdog watchdog(absl::Seconds(30), "the queue budget");
  const auto announced = [](const TestHost& host) -> int64_t {
    grpc::ClientContext context;
    Authorize(context);
    auto stream = StubFor(host)->Connect(&context);
    const remote::v1::HostFrame created = CreateCounter(*stream, 0);
    if (!created.has_created()) return -1;
    context.TryCancel();
    return created.created().queue_bytes();
  };
  TestHost budget(kHostBinary, kToken,
                  {"--max_workers=4", "--max_message_bytes=1048576", "--max_queued_mb=6"});
  EXPECT_EQ(announced(budget), (int64_t{6} << 20) / 4);
  TestHost plain(kHostBinary, kToken, {"--max_workers=4", "--max_message_bytes=1048576"});
  EXPECT_EQ(announced(plain), int64_t{2} << 20);
  // Calls of nearly a message each, pipelined far past the share: all complete.
  auto w = Worker<Counter>::Create(OptionsFor(budget), 0);
  const std::string big(900'000, 'x');
  std::vector<Future<std::string>> echoes;
  for (int i = 0; i < 8; ++i) echoes.push_back(w.Call(&Counter::Reflect, big));
  for (Future<std::string>& echo : echoes) EXPECT_EQ(echo.Result().size(), big.size());
  EXPECT_TRUE(w.Stop(absl::Seconds(5)));
}

// A client process (//workers/remote:lease_client) with one worker open on a host; it prints
// "ready" once the worker answered. Killed (SIGKILL) and reaped by the destructor.
class ClientProcess {
 public:
  ClientProcess(const std::string& binary, std::vector<std::string> args) {
    args.insert(args.begin(), binary);
    pid_ = remote_testing::SpawnAndReadFirstLine(std::move(args), &first_line_);
  }
  ~ClientProcess() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  const std::string& first_line() const { return first_line_; }

 private:
  pid_t pid_ = 0;
  std::string first_line_;
};

// The client lease (--client_lease_ms): a client that stops answering without closing its
// connection (SIGSTOP here; a hung process or a vanished machine alike) loses its workers on the
// host after about the lease, while an idle client that answers keeps them.
TEST(HostLeaseTest, AClientThatStopsAnsweringLosesItsWorkersAfterTheLease) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a stopped client's lease");
  TestHost host(kHostBinary, kToken, {"--client_lease_ms=1000"});
  ClientProcess client("workers/remote/lease_client", {host.address(), kToken});
  ASSERT_EQ(client.first_line(), "ready");
  EXPECT_EQ(StatsOf(host).workers(), 1);
  // Idle for more than the lease, but answering pings: the worker stays.
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(StatsOf(host).workers(), 1);
  ASSERT_EQ(kill(client.pid(), SIGSTOP), 0);
  const absl::Time stopped = absl::Now();
  ASSERT_TRUE(Eventually([&] { return StatsOf(host).workers() == 0; }, absl::Seconds(10)));
  const absl::Duration took = absl::Now() - stopped;
  std::fprintf(stderr, "a stopped client lost its worker %s after SIGSTOP (lease 1 s)\n",
               absl::FormatDuration(took).c_str());
  // The host pings after a third of the lease without traffic (333 ms; twice that at worst, when
  // a flow-control ping just after the stop restarted gRPC's clock) and drops the connection when
  // the ping is unanswered for the other two thirds (667 ms): between 667 ms and 1.33 s, plus the
  // Stats polls. A ping sent just before the stop and not answered yet may shorten the first by
  // those few milliseconds.
  EXPECT_GE(took, absl::Milliseconds(600));
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_EQ(StatsOf(host).orphans(), 0);
}

// M2: a client that goes away while its call runs leaves an orphan, counted by Stats until the
// call returns.
TEST(HostStatsTest, CountsOrphansUntilTheirCallReturns) {
  testkit::Watchdog watchdog(absl::Seconds(30), "an orphaned worker");
  TestHost host(kHostBinary, kToken);
  grpc::ClientContext context;
  Authorize(context);
  auto stream = StubFor(host)->Connect(&context);
  ASSERT_TRUE(CreateCounter(*stream, 0).has_created());
  ASSERT_TRUE(WriteFirstCall(*stream, "Sleep",
                             workers_internal::EncodeCall<Counter>(&Counter::Sleep, 1500)));
  absl::SleepFor(absl::Milliseconds(300));  // The call starts.
  context.TryCancel();
  EXPECT_TRUE(Eventually([&] { return StatsOf(host).orphans() == 1; }, absl::Seconds(2)));
  EXPECT_EQ(StatsOf(host).workers(), 1);
  EXPECT_TRUE(Eventually([&] { return StatsOf(host).workers() == 0; }, absl::Seconds(5)));
  EXPECT_EQ(StatsOf(host).orphans(), 0);
}

// An orphan whose method asks this_call::CancelRequested() hears that its client is gone, and
// stops long before its own limit (10 s).
TEST(HostStatsTest, AnOrphanThatAsksSeesItsClientGone) {
  testkit::Watchdog watchdog(absl::Seconds(30), "an orphan that asks");
  TestHost host(kHostBinary, kToken);
  grpc::ClientContext context;
  Authorize(context);
  auto stream = StubFor(host)->Connect(&context);
  ASSERT_TRUE(CreateCounter(*stream, 0).has_created());
  const std::string started = TempDir() + "/orphan_started";
  std::remove(started.c_str());
  ASSERT_TRUE(
      WriteFirstCall(*stream, "WorkUntilCancelled",
                     workers_internal::EncodeCall<Counter>(&Counter::WorkUntilCancelled, started)));
  ASSERT_TRUE(Eventually([&] { return std::ifstream(started).good(); }, absl::Seconds(5)));
  const absl::Time gone = absl::Now();
  context.TryCancel();
  // The host reads behind the running call after 2 to 4 ms, sees the stream end, flags the call;
  // the method returns and the worker is destroyed.
  EXPECT_TRUE(Eventually([&] { return StatsOf(host).workers() == 0; }, absl::Seconds(5)));
  EXPECT_LT(absl::Now() - gone, absl::Seconds(2));
  EXPECT_EQ(StatsOf(host).orphans(), 0);
}

// Shutdown turns health to NOT_SERVING first: a probe watching the host hears it before the
// streams are cancelled. (A host inside the test's process, through the library.)
TEST(HostHealthTest, NotServingOnceShutdownBegins) {
  testkit::Watchdog watchdog(absl::Seconds(30), "health during shutdown");
  remote::HostOptions options;
  options.token = kToken;
  std::unique_ptr<remote::WorkerHost> host = remote::WorkerHost::Start(options);
  grpc::GenericStub stub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", host->port()),
                                             grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::CompletionQueue queue;
  // Each step waits for its own completion, so tags only need to be non-null.
  const auto step = [&](const char* what) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(queue.Next(&tag, &ok)) << what;
    EXPECT_TRUE(ok) << what;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> watch =
      stub.PrepareCall(&context, "/grpc.health.v1.Health/Watch", &queue);
  int tag = 0;
  watch->StartCall(&tag);
  step("start");
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  watch->Write(request, &tag);
  step("write");
  watch->WritesDone(&tag);
  step("writes done");
  const auto next_status = [&] {
    grpc::ByteBuffer response;
    watch->Read(&response, &tag);
    step("read");
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : -1;
  };
  EXPECT_EQ(next_status(), 1);  // SERVING
  std::thread shutdown([&] { host->Shutdown(absl::Seconds(2)); });
  EXPECT_EQ(next_status(), 2);  // NOT_SERVING, while the grace runs
  shutdown.join();
  context.TryCancel();
  grpc::Status status;
  watch->Finish(&status, &tag);
  void* got = nullptr;
  bool ok = false;
  EXPECT_TRUE(queue.Next(&got, &ok));
  queue.Shutdown();
  while (queue.Next(&got, &ok)) {
  }
}

// M1: SIGTERM while a call never returns: the host exits shortly after its grace anyway.
TEST(HostShutdownTest, SigtermExitsAfterTheGraceEvenIfACallNeverReturns) {
  testkit::Watchdog watchdog(absl::Seconds(30), "SIGTERM of a busy host");
  TestHost host(kHostBinary, kToken, {"--shutdown_grace_ms=200"});
  auto w = Worker<Counter>::Create(OptionsFor(host), 0);
  Future<void> forever = w.Call(&Counter::Sleep, 600'000);
  EXPECT_TRUE(Eventually([&] { return StatsOf(host).workers() == 1; }, absl::Seconds(5)));
  absl::SleepFor(absl::Milliseconds(100));  // The call runs.
  const absl::Time start = absl::Now();
  const int status = host.Kill(SIGTERM);
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(6));
  EXPECT_GT(took, absl::Seconds(3));  // It did wait: grace (0.2 s) + 3 s.
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_TRUE(forever.Wait(absl::Seconds(5)));
  EXPECT_THROW(forever.Result(), Error);
}

// M1: SIGTERM on an idle host exits at once, with status 0.
TEST(HostShutdownTest, SigtermOnAnIdleHostExitsCleanly) {
  testkit::Watchdog watchdog(absl::Seconds(30), "SIGTERM of an idle host");
  TestHost host(kHostBinary, kToken);
  const absl::Time start = absl::Now();
  const int status = host.Kill(SIGTERM);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// M4a: with --tls_client_ca the host requires a client certificate signed by that CA; the token
// is checked before dispatch as well.
TEST(HostTlsTest, RequiresAClientCertificateSignedByItsCa) {
  testkit::Watchdog watchdog(absl::Seconds(60), "TLS with client certificates");
  const std::string dir = TempDir() + "/mtls";
  const std::string script = absl::StrCat(
      "set -e; mkdir -p ", dir, "; cd ", dir,
      "; printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > host.ext"
      "; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
      " -subj /CN=test-ca -keyout ca.key -out ca.pem"
      "; openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost"
      " -keyout host.key -out host.csr"
      "; openssl x509 -req -in host.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1"
      " -extfile host.ext -out host.pem"
      "; openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=client"
      " -keyout client.key -out client.csr"
      "; openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1"
      " -out client.pem");
  ASSERT_EQ(std::system(("(" + script + ") >/dev/null 2>&1").c_str()), 0) << script;
  TestHost host(kHostBinary, kToken,
                {"--tls_cert=" + dir + "/host.pem", "--tls_key=" + dir + "/host.key",
                 "--tls_client_ca=" + dir + "/ca.pem"});

  WorkerOptions options = OptionsFor(host);
  options.remote->tls_root_certs = dir + "/ca.pem";
  options.remote->tls_client_cert = dir + "/client.pem";
  options.remote->tls_client_key = dir + "/client.key";
  auto w = Worker<Counter>::Create(options, 1);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 2);

  // Without a client certificate: no connection.
  WorkerOptions no_cert = OptionsFor(host);
  no_cert.remote->tls_root_certs = dir + "/ca.pem";
  no_cert.remote->connect_timeout = absl::Milliseconds(500);
  try {
    Worker<Counter>::Create(no_cert, 0);
    FAIL() << "a client without a certificate was served";
  } catch (...) {
    EXPECT_EQ(StatusFromException(std::current_exception()).code(), absl::StatusCode::kUnavailable);
  }

  // With the certificate but no token: refused (before dispatch, by the token processor).
  grpc::SslCredentialsOptions ssl;
  const auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  ssl.pem_root_certs = read(dir + "/ca.pem");
  ssl.pem_cert_chain = read(dir + "/client.pem");
  ssl.pem_private_key = read(dir + "/client.key");
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(host.address(), grpc::SslCredentials(ssl));
  auto stub = remote::v1::WorkerHost::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  remote::v1::StatsReply reply;
  const grpc::Status status = stub->Stats(&context, remote::v1::StatsRequest(), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("before dispatch"));
  grpc::ClientContext authorized;
  Authorize(authorized);
  EXPECT_TRUE(stub->Stats(&authorized, remote::v1::StatsRequest(), &reply).ok());
  EXPECT_EQ(reply.workers(), 1);
  // The health service stays open without the token (documented).
  EXPECT_EQ(HealthOf(channel), 1);
}

}  // namespace
}  // namespace concurry

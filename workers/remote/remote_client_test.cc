// The client's end of a Mode::kRemote worker (internal/connection.cc, remote_backend.cc): a Stop
// past its timeout ends a constructor that never returns, message limits are the smaller of the
// two sides' in both directions, cancellations written by the actor's thread, per-call deadlines
// (remote.call_timeout), replies checked against the call they answer, and gRPC codes kept
// visible when a stream ends. Against real host processes (//workers/remote:test_host) and, for
// what a correct host never does, a misbehaving host served by the test itself.

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "testing/watchdog.h"
#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/internal/encoded_object.h"
#include "workers/internal/worker_impl.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/remote/internal/auth.h"
#include "workers/remote/internal/connection.h"
#include "workers/remote/remote.grpc.pb.h"
#include "workers/remote/remote.pb.h"
#include "workers/remote/test_classes.h"
#include "workers/remote/test_hosts.h"
#include "workers/worker.h"

// LeakSanitizer: see remote_worker_test.cc (OpenSSL's per-thread generators of gRPC's threads).
extern "C" const char* __lsan_default_suppressions() {
  return "leak:EVP_RAND_CTX_new\nleak:libcrypto.so\n";
}

namespace concurry {
namespace {

using remote::v1::ClientFrame;
using remote::v1::HostFrame;
using remote_test::Counter;
using remote_testing::StatusThrownBy;
using remote_testing::TestHost;
using ::testing::HasSubstr;

constexpr char kToken[] = "client-test-token-3e9a";
constexpr char kHostBinary[] = "workers/remote/test_host";

WorkerOptions OptionsFor(std::string host) {
  return {.mode = Mode::kRemote,
          .remote = RemoteOptions{.hosts = {std::move(host)}, .token = kToken}};
}

// Workers alive on `host` (its Stats), or -1 when it did not answer.
int64_t LiveWorkers(const TestHost& host) {
  auto stub = remote::v1::WorkerHost::NewStub(
      grpc::CreateChannel(host.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata(remote_internal::kAuthorizationKey, remote_internal::BearerValue(kToken));
  remote::v1::StatsReply reply;
  if (!stub->Stats(&context, remote::v1::StatsRequest(), &reply).ok()) return -1;
  return reply.workers();
}

// Calls `host` has answered since it started (its Stats), or -1 when it did not answer.
int64_t CallsAnswered(const TestHost& host) {
  auto stub = remote::v1::WorkerHost::NewStub(
      grpc::CreateChannel(host.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata(remote_internal::kAuthorizationKey, remote_internal::BearerValue(kToken));
  remote::v1::StatsReply reply;
  if (!stub->Stats(&context, remote::v1::StatsRequest(), &reply).ok()) return -1;
  return reply.calls();
}

// A worker host that misbehaves, served in the test's process on 127.0.0.1: it answers a
// worker's Create as a real host does, then runs `script` on the stream and ends the stream with
// the status the script returns. It checks no token.
class FakeHost {
 public:
  using Stream = grpc::ServerReaderWriter<HostFrame, ClientFrame>;
  using Script = std::function<grpc::Status(Stream&)>;

  explicit FakeHost(Script script) : service_(std::move(script)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (server_ == nullptr || port_ == 0) {
      ADD_FAILURE() << "the fake host could not listen";
    }
  }
  ~FakeHost() {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  class Service final : public remote::v1::WorkerHost::Service {
   public:
    explicit Service(Script script) : script_(std::move(script)) {}
    grpc::Status Connect(grpc::ServerContext* /*context*/, Stream* stream) override {
      ClientFrame create;
      if (!stream->Read(&create)) return grpc::Status::OK;
      HostFrame created;
      created.mutable_created()->set_reply(workers_internal::EncodeReply());
      if (!stream->Write(created)) return grpc::Status::OK;
      return script_(*stream);
    }

   private:
    Script script_;
  };

  Service service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Reads frames until the client ends the stream.
grpc::Status DrainUntilTheClientLeaves(FakeHost::Stream& stream) {
  ClientFrame frame;
  while (stream.Read(&frame)) {
  }
  return grpc::Status::OK;
}

TEST(RemoteClientStopTest, AStopPastItsTimeoutEndsAConstructorThatNeverReturns) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stop of a remote worker stuck in its constructor");
  TestHost host(kHostBinary, kToken);
  const ResolvedWorkerOptions options = ResolveWorkerOptions(OptionsFor(host.address()));
  const WorkerBackend& backend = WorkerBackendFor(Mode::kRemote);
  // What Worker<T>::CreateAsync does, keeping the actor: the API hands out a handle only once the
  // object exists, and this one never will (its constructor sleeps a minute on the host).
  std::shared_ptr<workers_internal::ActorCore> core = backend.MakeActor(options);
  Promise<void> constructed;
  Future<void> done = constructed.GetFuture();
  auto make = [&backend, actor = core.get(),
               bytes = workers_internal::EncodeConstructor<remote_test::Slow>(60'000)]() mutable {
    return backend
        .MakeEncodedObject(workers_internal::EncodedClassOf<remote_test::Slow>(), std::move(bytes),
                           *actor)
        .release();
  };
  core->Start(new workers_internal::ConstructNode<workers_internal::EncodedObject, decltype(make)>(
      core.get(), std::move(constructed), std::move(make)));
  // Wait (bounded) until the host runs the constructor.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (LiveWorkers(host) != 1 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(LiveWorkers(host), 1);

  const absl::Time start = absl::Now();
  EXPECT_FALSE(core->Stop(absl::Milliseconds(200)));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Seconds(1));
  ASSERT_TRUE(done.Wait(absl::Seconds(1)));
  try {
    done.Result();
    FAIL() << "no error";
  } catch (const StoppedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("remote_test::Slow"));
    EXPECT_THAT(e.what(), HasSubstr(host.address()));
    EXPECT_THAT(e.what(), HasSubstr("cancelled by Stop after its timeout"));
  }
  EXPECT_TRUE(core->stopped_future().Wait(absl::Seconds(1)));
}

// Stop(0), as pools and handle destructors stop, does not wait, but the host still gets only
// stop_timeout to finish: then the stream is cancelled and the running call fails.
TEST(RemoteClientStopTest, StopZeroStillHoldsTheHostToStopTimeout) {
  testkit::Watchdog watchdog(absl::Seconds(30), "Stop(0) of a remote worker in a long call");
  TestHost host(kHostBinary, kToken);
  WorkerOptions options = OptionsFor(host.address());
  options.stop_timeout = absl::Milliseconds(300);
  auto w = Worker<Counter>::Create(options, 0);
  Future<void> running = w.Call(&Counter::Sleep, 60'000);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (w.Stats().queued > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(w.Stats().queued, 0);  // Sent to the host.
  const absl::Time start = absl::Now();
  w.Stop(absl::ZeroDuration());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100));  // Did not wait.
  ASSERT_TRUE(w.StoppedFuture().Wait(absl::Seconds(5)));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_THROW(running.Result(), StoppedError);
}

// The client keeps its unanswered calls within the host's queue (Created says how much), so the
// host always reads on: a Stop behind many large calls reaches it at once, the calls queued there
// are cancelled instead of run, and a worker stuck in a call still stops at stop_timeout (the
// actor's thread never blocks in a gRPC write the host does not read).
TEST(RemoteClientStopTest, AStopIsNotHeldBehindCallsTheHostHasNoRoomFor) {
  testkit::Watchdog watchdog(absl::Seconds(60), "Stop behind calls the host has no room for");
  // Room for 256 KiB of queued calls: about four of the calls below.
  TestHost host(kHostBinary, kToken, {"--max_message_bytes=131072"});
  for (const bool stuck : {false, true}) {
    SCOPED_TRACE(stuck ? "a call that does not return" : "a call of 300 ms");
    WorkerOptions options = OptionsFor(host.address());
    options.stop_timeout = absl::Milliseconds(stuck ? 300 : 30'000);
    auto w = Worker<Counter>::Create(options, 0);
    Future<void> running = w.Call(&Counter::Sleep, stuck ? 60'000 : 300);
    std::vector<Future<std::string>> calls;
    for (int i = 0; i < 400; ++i)
      calls.push_back(w.Call(&Counter::Reflect, std::string(60'000, 'x')));
    absl::SleepFor(absl::Milliseconds(100));  // The first calls reach the host.
    const absl::Time start = absl::Now();
    w.Stop(absl::ZeroDuration());
    ASSERT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
    EXPECT_LT(absl::Now() - start, absl::Seconds(3));
    int ran = 0;
    for (Future<std::string>& call : calls) {
      ASSERT_TRUE(call.Wait(absl::Seconds(1)));  // Every future resolves.
      if (call.Error() == nullptr) ++ran;
    }
    EXPECT_EQ(ran, 0);  // The Stop came before any of them started.
    if (stuck) {
      EXPECT_THROW(running.Result(), StoppedError);
    } else {
      running.Result();  // The running call finishes.
    }
  }
}

// A host that runs its --max_workers refuses a new worker; the next host in turn takes it, and
// only when every host is full does Create fail (at once, with the host's reason).
TEST(RemoteClientPlacementTest, AFullHostIsPassedOver) {
  testkit::Watchdog watchdog(absl::Seconds(30), "placement past full hosts");
  TestHost a(kHostBinary, kToken, {"--max_workers=1"});
  TestHost b(kHostBinary, kToken, {"--max_workers=1"});
  WorkerOptions options = OptionsFor(a.address());
  options.remote->hosts.push_back(b.address());
  auto first = Worker<Counter>::Create(options, 0);
  auto second = Worker<Counter>::Create(options, 0);
  EXPECT_NE(first.Call(&Counter::Pid).Result(), second.Call(&Counter::Pid).Result());
  const absl::Time start = absl::Now();
  const absl::Status full = StatusThrownBy([&] { Worker<Counter>::Create(options, 0); });
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(full.message(), HasSubstr("--max_workers"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(first.Stop(absl::Seconds(10)));
  EXPECT_TRUE(second.Stop(absl::Seconds(10)));
}

TEST(RemoteClientLimitsTest, ACallAboveTheHostsSmallerLimitFailsAlone) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a call above the host's message limit");
  TestHost host(kHostBinary, kToken, {"--max_message_bytes=65536"});
  // The client's own limit (128 MiB) is far larger: the host's is the one that holds.
  auto w = Worker<Counter>::Create(OptionsFor(host.address()), 0);
  const absl::Status big =
      StatusThrownBy([&] { w.Call(&Counter::Reflect, std::string(100'000, 'x')).Result(); });
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted) << big;
  EXPECT_THAT(big.message(), HasSubstr("the host's --max_message_bytes is 65536"));
  // The worker goes on, its state kept.
  EXPECT_EQ(w.Call(&Counter::Add, 3).Result(), 3);
  EXPECT_EQ(w.Call(&Counter::Reflect, std::string(60'000, 'y')).Result(), std::string(60'000, 'y'));
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 4);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteClientLimitsTest, AReplyAboveTheClientsSmallerLimitFailsAlone) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a reply above the client's message limit");
  TestHost host(kHostBinary, kToken);  // --max_message_bytes: 128 MiB.
  WorkerOptions options = OptionsFor(host.address());
  options.remote->max_message_bytes = 32768;
  auto w = Worker<Counter>::Create(options, 0);
  const absl::Status big =
      StatusThrownBy([&] { w.Call(&Counter::Repeat, std::string("z"), 100'000).Result(); });
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted) << big;
  EXPECT_THAT(big.message(), HasSubstr("the client's remote.max_message_bytes is 32768"));
  EXPECT_EQ(w.Call(&Counter::Add, 5).Result(), 5);
  EXPECT_EQ(w.Call(&Counter::Repeat, std::string("z"), 30'000).Result(), std::string(30'000, 'z'));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteClientCancelTest, ACallCancelledFromAnotherThreadAfterItWasSentNeverRuns) {
  testkit::Watchdog watchdog(absl::Seconds(30), "cancel of a remote call sent ahead");
  TestHost host(kHostBinary, kToken);
  auto w = Worker<Counter>::Create(OptionsFor(host.address()), 0);
  Future<void> running = w.Call(&Counter::Sleep, 500);
  Future<int> second = w.Call(&Counter::Add, 100);
  Future<int> third = w.Call(&Counter::Add, 10);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (w.Stats().queued > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(w.Stats().queued, 0);  // All three were sent to the host.
  // Written by this thread when the stream is free, else by the actor's thread.
  EXPECT_TRUE(second.Cancel());
  running.Result();
  EXPECT_EQ(third.Result(), 10);  // The cancelled call never ran.
  EXPECT_TRUE(second.Cancelled());
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

// A call made to an idle worker is sent by the calling thread, which then polls for its reply
// itself (internal/connection.h). What nobody polls for must still complete: a reply the sender
// does not wait for, one another thread waits for, one that comes after the sender's window, and
// replies completed by callbacks.
TEST(RemoteClientPollingTest, RepliesNobodyPollsForStillComplete) {
  testkit::Watchdog watchdog(absl::Seconds(30), "replies nobody polls for");
  TestHost host(kHostBinary, kToken);
  auto w = Worker<Counter>::Create(OptionsFor(host.address()), 0);
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 1);  // Driven by this thread.

  // Sent by this thread, waited for by another one (which has no driver to run).
  Future<int> sent_here = w.Call(&Counter::Add, 2);
  Future<int> from_other;
  std::thread other([&] {
    const absl::Time start = absl::Now();
    EXPECT_EQ(sent_here.Result(absl::Seconds(5)), 3);
    EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  });
  other.join();

  // Sent and left alone for a while: the poller thread completes it; a callback sees it.
  absl::Notification called;
  Future<int> left = w.Call(&Counter::Add, 3);
  left.AddDoneCallback([&](const Future<int>&) { called.Notify(); });
  EXPECT_TRUE(called.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(left.Result(), 6);

  // A reply that comes long after the caller's polling window (1 ms): the caller sleeps and the
  // poller thread completes it.
  w.Call(&Counter::Sleep, 50).Result();
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 6);

  // Back to back, each waited for by its sender: all answered, in order.
  for (int i = 0; i < 200; ++i) ASSERT_EQ(w.Call(&Counter::Add, 1).Result(), 7 + i);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

// Several threads calling one worker at once: the first sends its call and polls, the others'
// calls go through the worker's thread; every reply reaches its own caller.
TEST(RemoteClientPollingTest, CallersOnManyThreadsEachGetTheirOwnReply) {
  testkit::Watchdog watchdog(absl::Seconds(60), "many callers of one remote worker");
  TestHost host(kHostBinary, kToken);
  auto w = Worker<Counter>::Create(OptionsFor(host.address()), 0);
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const std::string text = absl::StrCat("thread ", t, " call ", i);
        if (w.Call(&Counter::Reflect, text).Result() != text) wrong.fetch_add(1);
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteClientDeadlineTest, ASlowCallFailsAtItsDeadlineAndTheCallQueuedBehindNeverRuns) {
  testkit::Watchdog watchdog(absl::Seconds(30), "remote.call_timeout on a slow call");
  TestHost host(kHostBinary, kToken);
  WorkerOptions options = OptionsFor(host.address());
  options.remote->call_timeout = absl::Milliseconds(200);
  auto w = Worker<Counter>::Create(options, 0);
  // A fast call finishes well within its timeout.
  EXPECT_EQ(w.Call(&Counter::Add, 1).Result(), 1);

  const absl::Time start = absl::Now();
  Future<void> slow = w.Call(&Counter::Sleep, 1000);
  Future<int> behind = w.Call(&Counter::Add, 100);
  ASSERT_TRUE(slow.Wait(absl::Seconds(5)));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LE(took, absl::Milliseconds(1500));
  try {
    slow.Result();
    FAIL() << "no error";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(e.what(), HasSubstr("Sleep"));
    EXPECT_THAT(e.what(), HasSubstr(host.address()));
    EXPECT_THAT(e.what(), HasSubstr("200ms"));
    EXPECT_THAT(e.what(), HasSubstr("remote.call_timeout"));
  }
  ASSERT_TRUE(behind.Wait(absl::Seconds(5)));
  EXPECT_THROW(behind.Result(), TimeoutError);

  // The host answers the sleep when it returns, and the call behind it without running it
  // (cancelled, or past its deadline): three replies in all, both late ones dropped by the client.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (CallsAnswered(host) < 3 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(CallsAnswered(host), 3);
  // Add(100) never ran, and the replies still match their calls.
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 1);
  EXPECT_EQ(w.Call(&Counter::Add, 5).Result(), 6);
  EXPECT_EQ(w.Call(&Counter::Reflect, std::string("after")).Result(), "after");
  EXPECT_EQ(w.Call(&Counter::Get).Result(), 6);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteClientDeadlineTest, ManyFastCallsWithATimeoutSucceed) {
  testkit::Watchdog watchdog(absl::Seconds(30), "fast calls with remote.call_timeout");
  TestHost host(kHostBinary, kToken);
  WorkerOptions options = OptionsFor(host.address());
  options.remote->call_timeout = absl::Seconds(10);
  auto w = Worker<Counter>::Create(options, 0);
  std::vector<Future<int>> calls;
  for (int i = 0; i < 200; ++i) calls.push_back(w.Call(&Counter::Add, 1));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(calls[i].Result(), i + 1);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(RemoteClientDeadlineTest, BadCallTimeoutsAreRefused) {
  testkit::Watchdog watchdog(absl::Seconds(30), "bad remote.call_timeout values");
  // Checked before any connection is tried: no host is needed.
  for (absl::Duration bad :
       {absl::ZeroDuration(), absl::Milliseconds(-1), -absl::InfiniteDuration()}) {
    WorkerOptions options = OptionsFor("127.0.0.1:1");
    options.remote->call_timeout = bad;
    try {
      Worker<Counter>::Create(options, 0);
      ADD_FAILURE() << "accepted call_timeout " << bad;
    } catch (const InvalidOptionError& e) {
      EXPECT_THAT(e.what(), HasSubstr("remote.call_timeout"));
      EXPECT_THAT(e.what(), HasSubstr("allowed: > 0"));
    }
  }
}

TEST(RemoteClientProtocolTest, AReplyToTheWrongCallBreaksTheStream) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a host answering the wrong call");
  FakeHost host([](FakeHost::Stream& stream) {
    ClientFrame frame;
    if (!stream.Read(&frame) || !frame.has_call()) return grpc::Status::OK;
    HostFrame reply;
    reply.mutable_reply()->set_id(frame.call().id() + 7);
    reply.mutable_reply()->set_reply(workers_internal::EncodeReply());
    stream.Write(reply);
    return DrainUntilTheClientLeaves(stream);
  });
  auto w = Worker<Counter>::Create(OptionsFor(host.address()), 0);
  Future<int> call = w.Call(&Counter::Get);
  ASSERT_TRUE(call.Wait(absl::Seconds(10)));
  try {
    call.Result();
    FAIL() << "no error";
  } catch (const CrashedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("a reply to call 7 where the reply to call 0 was due"));
    EXPECT_THAT(e.what(), HasSubstr(host.address()));
  }
  // The worker ended: later calls fail at once.
  EXPECT_THROW(w.Call(&Counter::Get).Result(), Error);
}

TEST(RemoteClientProtocolTest, AGrpcCodeThatEndsTheStreamStaysVisible) {
  testkit::Watchdog watchdog(absl::Seconds(30), "a host ending a stream with PERMISSION_DENIED");
  FakeHost host([](FakeHost::Stream& stream) {
    ClientFrame frame;
    stream.Read(&frame);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the token was revoked");
  });
  auto w = Worker<Counter>::Create(OptionsFor(host.address()), 0);
  const absl::Status status = StatusThrownBy([&] { w.Call(&Counter::Get).Result(); });
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_THAT(status.message(), HasSubstr(host.address()));
  EXPECT_THAT(status.message(), HasSubstr("the token was revoked"));
  EXPECT_THAT(w.Stats().error, HasSubstr("PERMISSION_DENIED"));
}

TEST(RemoteClientProtocolTest, StreamEndsMapToCrashedOrToTheirCode) {
  const std::string worker = "worker app::Counter on host 10.0.0.1:7000";
  const auto status_of = [&](absl::StatusCode code, const std::string& broken = "") {
    return StatusFromException(
        remote_internal::StreamEndedError(worker, code, "what gRPC said", broken));
  };
  const auto is_crashed = [&](absl::StatusCode code, const std::string& broken = "") {
    try {
      std::rethrow_exception(
          remote_internal::StreamEndedError(worker, code, "what gRPC said", broken));
    } catch (const CrashedError& e) {
      EXPECT_THAT(e.what(), HasSubstr(worker));
      return true;
    } catch (...) {
    }
    return false;
  };
  // The host or the connection failed: the worker crashed.
  EXPECT_TRUE(is_crashed(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(is_crashed(absl::StatusCode::kInternal));
  EXPECT_TRUE(is_crashed(absl::StatusCode::kOk));
  EXPECT_TRUE(is_crashed(absl::StatusCode::kCancelled));  // A host that shuts down cancels it.
  EXPECT_TRUE(is_crashed(absl::StatusCode::kPermissionDenied, "a reply to no call"));
  // Anything else keeps its code.
  for (absl::StatusCode code :
       {absl::StatusCode::kResourceExhausted, absl::StatusCode::kUnauthenticated,
        absl::StatusCode::kPermissionDenied, absl::StatusCode::kDeadlineExceeded}) {
    EXPECT_FALSE(is_crashed(code)) << code;
    const absl::Status status = status_of(code);
    EXPECT_EQ(status.code(), code);
    EXPECT_THAT(status.message(), HasSubstr(worker));
    EXPECT_THAT(status.message(), HasSubstr("what gRPC said"));
  }
}

}  // namespace
}  // namespace concurry

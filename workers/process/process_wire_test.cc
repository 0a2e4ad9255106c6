// Mode::kProcess over its transport: payloads of hundreds of megabytes, frames the worker process
// cannot parse (each answered with an error, after which the process keeps serving), and a
// stream the process corrupts (the parent ends the connection and fails the calls).

#include <unistd.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits/limit_pool.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/process/internal/connection.h"
#include "workers/process/internal/wire.h"
#include "workers/registration.h"
#include "workers/worker.h"

namespace app {

class Echo {
 public:
  explicit Echo(int base) : base_(base) {}
  int Add(int k) { return base_ += k; }
  std::string Reflect(std::string s) { return s; }
  size_t Size(const std::string& s) { return s.size(); }
  // Writes a frame header that is not one to the worker's socket (fd 3 in a worker process).
  void Corrupt() {
    const char garbage[16] = "not a header!!!";
    if (write(3, garbage, sizeof(garbage)) != sizeof(garbage)) std::abort();
  }

 private:
  int base_;
};

}  // namespace app

CONCURRY_REGISTER_WORKER(app::Echo, (int), Add, Reflect, Size, Corrupt);

namespace concurry {
namespace {

using ::concurry::process_internal::ConnectionOwner;
using ::concurry::process_internal::FrameKind;
using ::concurry::process_internal::ProcessConnection;
using ::concurry::testkit::Watchdog;
using ::concurry::workers_internal::DecodeReply;
using ::concurry::workers_internal::EncodeCall;
using ::concurry::workers_internal::EncodeConstructor;
using ::concurry::workers_internal::EncodedClassOf;
using ::testing::HasSubstr;

class ProcessWireTest : public ::testing::TestWithParam<ProcessStart> {
 protected:
  WorkerOptions Options() const { return {.mode = Mode::kProcess, .process_start = GetParam()}; }
};

TEST_P(ProcessWireTest, A256MegabyteArgumentRoundTrips) {
  Watchdog watchdog(absl::Seconds(600), "a 256 MB payload");
  auto w = Worker<app::Echo>::Create(Options(), 0);
  std::string big(size_t{256} << 20, '\0');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i >> 12) % 26);
  big.back() = 'z';
  EXPECT_EQ(w.Call(&app::Echo::Size, big).Result(), big.size());
  const std::string back = w.Call(&app::Echo::Reflect, big).Result();
  ASSERT_EQ(back.size(), big.size());
  EXPECT_TRUE(back == big);
  // The stream is still in step after the big frames.
  EXPECT_EQ(w.Call(&app::Echo::Add, 2).Result(), 2);
}

TEST_P(ProcessWireTest, ACorruptStreamFromTheProcessEndsTheConnection) {
  Watchdog watchdog(absl::Seconds(60), "a worker process that corrupts its stream");
  auto w = Worker<app::Echo>::Create(Options(), 0);
  Future<void> corrupt = w.Call(&app::Echo::Corrupt);
  try {
    corrupt.Result();
    FAIL() << "no error";
  } catch (const CrashedError& e) {
    EXPECT_THAT(e.what(), HasSubstr("after its socket broke"));
    EXPECT_THAT(e.what(), HasSubstr("bad frame header"));
  }
  EXPECT_TRUE(w.StoppedFuture().Wait(absl::Seconds(10)));
  EXPECT_TRUE(w.stopped());
}

// The connection's owner, as a worker is: records a death.
class TestOwner final : public ConnectionOwner {
 public:
  absl::Time KillDeadline() const override { return absl::Now() + absl::Seconds(10); }
  void Died(std::exception_ptr error) override { died_ = error; }
  void Closed() override {}
  void Launched(process_internal::ProcessKiller) override {}
  // The test flushes itself (SendFrameForTesting).
  std::function<void()> MakeWaker() override { return nullptr; }
  std::exception_ptr died() const { return died_; }

 private:
  std::exception_ptr died_;  // Written by the reader thread; read after the connection is gone.
};

// The StatusError a reply decodes to; fails the test if it decodes to something else.
absl::Status ReplyStatus(const Future<std::string>& reply) {
  try {
    DecodeReply<int>(reply.Result());
  } catch (const StatusError& e) {
    return e.status();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a StatusError: " << e.what();
    return absl::UnknownError(e.what());
  }
  ADD_FAILURE() << "the reply decoded to a value";
  return absl::OkStatus();
}

TEST_P(ProcessWireTest, MalformedFramesGetErrorRepliesAndTheProcessKeepsServing) {
  Watchdog watchdog(absl::Seconds(60), "malformed frames");
  TestOwner owner;
  {
    std::unique_ptr<ProcessConnection> connection =
        ProcessConnection::Open(EncodedClassOf<app::Echo>(), EncodeConstructor<app::Echo>(10),
                                LimitPool(), GetParam(), &owner, &owner);
    const auto add = [&](int k) {
      Future<std::string> reply =
          connection->Invoke("Add", EncodeCall<app::Echo>(&app::Echo::Add, k));
      connection->Flush();
      return DecodeReply<int>(reply.Result());
    };
    EXPECT_EQ(add(1), 11);

    // A call frame too short for its method name's length.
    absl::Status status = ReplyStatus(connection->SendFrameForTesting(FrameKind::kCall, "\x01"));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(status.message(),
                HasSubstr("call frame of 1 bytes whose method name does not fit"));
    // A call frame whose name length claims more than the frame holds.
    status =
        ReplyStatus(connection->SendFrameForTesting(FrameKind::kCall, std::string("\xff\xff\xff\x7f"
                                                                                  "Add",
                                                                                  7)));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(status.message(), HasSubstr("method name does not fit"));
    // A frame of a kind the process does not know, and one it only accepts first.
    status = ReplyStatus(connection->SendFrameForTesting(static_cast<FrameKind>(99), "payload"));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(status.message(), HasSubstr("frame of unknown kind 99"));
    status = ReplyStatus(connection->SendFrameForTesting(FrameKind::kConstruct, "again"));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(status.message(), HasSubstr("unknown kind 1"));
    EXPECT_EQ(add(1), 12);

    // A known method with argument bytes that do not decode.
    // (An int takes four bytes; one is there.)
    Future<std::string> garbage = connection->Invoke("Add", std::string("\x01", 1));
    connection->Flush();
    status = ReplyStatus(garbage);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
    EXPECT_FALSE(status.message().empty());
    // An unknown method: the error names the class.
    Future<std::string> unknown =
        connection->Invoke("Nope", EncodeCall<app::Echo>(&app::Echo::Add, 1));
    connection->Flush();
    try {
      DecodeReply<int>(unknown.Result());
      FAIL() << "no error";
    } catch (const InvalidOptionError& e) {
      EXPECT_THAT(e.what(), HasSubstr("app::Echo"));
    }
    // None of them ran, and the process still serves.
    EXPECT_EQ(add(1), 13);
  }
  EXPECT_EQ(owner.died(), nullptr) << "the process never died";
}

INSTANTIATE_TEST_SUITE_P(Starts, ProcessWireTest,
                         ::testing::Values(ProcessStart::kForkServer, ProcessStart::kFork),
                         [](const ::testing::TestParamInfo<ProcessStart>& info) {
                           return AbslUnparseFlag(info.param);
                         });

}  // namespace
}  // namespace concurry

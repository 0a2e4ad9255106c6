#include "limits/redis/redis_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/redis/redis_options.h"
#include "testing/redis_server.h"

namespace concurry {
namespace redis_internal {
namespace {

using ::concurry::testkit::RedisServer;
using ::concurry::testkit::RedisServerOptions;

// Generous bounds for real-time checks under the sanitizers on a shared 2-core machine.
constexpr absl::Duration kSlack = absl::Seconds(2);

// The message of the RedisError thrown by `f`, or a failure when it throws nothing or another type.
template <typename F>
std::string RedisErrorOf(F f) {
  try {
    f();
  } catch (const RedisError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kUnavailable);
    return e.what();
  }
  ADD_FAILURE() << "no RedisError";
  return "";
}

// The message of the RedisConfigError thrown by `f`, or a failure when it throws nothing or another
// type.
template <typename F>
std::string RedisConfigErrorOf(F f) {
  try {
    f();
  } catch (const RedisConfigError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kFailedPrecondition);
    return e.what();
  } catch (const RedisError& e) {
    ADD_FAILURE() << "a RedisError that is not a RedisConfigError: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no RedisConfigError";
  return "";
}

// The value of `field` (e.g. "cmdstat_script|load:calls") in `info` (INFO's text), or -1.
int64_t InfoCount(const std::string& info, const std::string& field) {
  const size_t at = info.find(field + "=");
  if (at == std::string::npos) return -1;
  return std::strtoll(info.c_str() + at + field.size() + 1, nullptr, 10);
}

// Stops a redis-server with SIGSTOP (it accepts connections but answers nothing) until destroyed.
class Frozen {
 public:
  explicit Frozen(pid_t pid) : pid_(pid) { EXPECT_EQ(kill(pid_, SIGSTOP), 0); }
  ~Frozen() { kill(pid_, SIGCONT); }

 private:
  const pid_t pid_;
};

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why_not;
    ASSERT_TRUE(RedisServer::Available(&why_not)) << why_not;
  }

  void StartRedis(RedisServerOptions options = {}) {
    redis_ = RedisServer::Start(std::move(options));
  }

  RedisOptions Options() const { return {.port = redis_->port()}; }

  std::unique_ptr<RedisServer> redis_;
};

TEST(RedisOptionsTest, DefaultsAreValid) {
  const RedisOptions options;
  EXPECT_NO_THROW(options.Validate());
  EXPECT_EQ(options.Address(), "127.0.0.1:6379");
  EXPECT_EQ(RedisOptions{.unix_socket = "/run/redis.sock"}.Address(), "unix:/run/redis.sock");
  EXPECT_EQ((RedisOptions{.host = "::1", .port = 7000}.Address()), "[::1]:7000");
  EXPECT_EQ(options.failure, RedisFailure::kFailClosed);
}

TEST(RedisOptionsTest, RejectsEachBadFieldNamingValueAndRange) {
  struct Case {
    RedisOptions options;
    std::string expected;
  };
  const Case cases[] = {
      {{.host = ""}, "RedisOptions.host is empty"},
      {{.port = 0}, "RedisOptions.port = 0 is out of range; allowed: 1 to 65535"},
      {{.port = 70000}, "RedisOptions.port = 70000"},
      {{.unix_socket = std::string(200, 'x')}, "RedisOptions.unix_socket"},
      {{.user = "limits"}, "RedisOptions.user 'limits' needs a password"},
      {{.db = -1}, "RedisOptions.db = -1 is out of range"},
      {{.key_prefix = "app{1}:"}, "RedisOptions.key_prefix 'app{1}:' contains '{' or '}'"},
      {{.connect_timeout = absl::ZeroDuration()},
       "RedisOptions.connect_timeout = 0 is out of range"},
      {{.command_timeout = absl::InfiniteDuration()}, "RedisOptions.command_timeout = inf"},
      {{.pool_size = 0}, "RedisOptions.pool_size = 0 is out of range; allowed: 1 to 1024"},
      {{.lease_ttl = absl::Milliseconds(10)}, "RedisOptions.lease_ttl = 10ms is out of range"},
      {{.failure = static_cast<RedisFailure>(7)}, "RedisOptions.failure = 7"},
      {{.reconnect_backoff = absl::ZeroDuration()}, "RedisOptions.reconnect_backoff = 0"},
  };
  for (const Case& c : cases) {
    try {
      c.options.Validate();
      ADD_FAILURE() << "accepted; expected: " << c.expected;
    } catch (const InvalidOptionError& e) {
      EXPECT_TRUE(absl::StrContains(e.what(), c.expected)) << e.what();
    }
  }
  // A client validates its options too.
  EXPECT_THROW(RedisClient({.pool_size = 0}), InvalidOptionError);
  EXPECT_THROW(RedisSubscriber({.port = -1}), InvalidOptionError);
}

TEST(RedisOptionsTest, ParsesFailureModes) {
  RedisFailure failure = RedisFailure::kFailClosed;
  std::string error;
  EXPECT_TRUE(AbslParseFlag("open", &failure, &error));
  EXPECT_EQ(failure, RedisFailure::kFailOpen);
  EXPECT_TRUE(AbslParseFlag(" Fail_Closed ", &failure, &error));
  EXPECT_EQ(failure, RedisFailure::kFailClosed);
  EXPECT_FALSE(AbslParseFlag("sometimes", &failure, &error));
  EXPECT_TRUE(absl::StrContains(error, "fail_closed, closed, fail_open, open")) << error;
  EXPECT_EQ(AbslUnparseFlag(RedisFailure::kFailOpen), "fail_open");
}

TEST(RedisReplyTest, AnErrorReplyThatLastsIsAConfigurationErrorNotAnOutage) {
  const std::string nope = RedisConfigErrorOf(
      [] { RedisReply::Error("NOPERM this user has no permissions to run 'evalsha'").integer(); });
  EXPECT_TRUE(absl::StrContains(nope, "NOPERM")) << nope;
  RedisConfigErrorOf([] { RedisReply::Error("ERR user_script:1: boom").elements(); });
  // Transient refusals are outages.
  RedisErrorOf([] { RedisReply::Error("LOADING Redis is loading the dataset").integer(); });
  RedisErrorOf([] { RedisReply::Error("BUSY Redis is busy running a script").elements(); });
  RedisErrorOf([] { RedisReply::Integer(1).elements(); });
}

TEST(RedisReplyTest, AccessorsCheckTheType) {
  const RedisReply array = RedisReply::Array(
      {RedisReply::Integer(3), RedisReply::String(std::string("a\0b", 3)), RedisReply()});
  EXPECT_EQ(array.DebugString(), "[3, \"a\\000b\", nil]");
  EXPECT_EQ(array.elements()[0].integer(), 3);
  EXPECT_TRUE(absl::StrContains(RedisErrorOf([&] { array.integer(); }),
                                "expected an integer reply from Redis, got [3"));
  EXPECT_TRUE(absl::StrContains(RedisErrorOf([&] { RedisReply().str(); }), "got nil"));
  EXPECT_EQ(RedisReply::Status("OK").DebugString(), "+OK");
  EXPECT_EQ(RedisReply::Error("ERR x").DebugString(), "-ERR x");
}

TEST_F(RedisClientTest, RunsCommandsAndDecodesEveryReplyType) {
  StartRedis();
  RedisClient client(Options());
  EXPECT_EQ(client.Command({"PING"}).DebugString(), "+PONG");
  EXPECT_TRUE(client.Command({"GET", "missing"}).is_nil());
  EXPECT_EQ(client.Command({"SET", "k", "v"}).DebugString(), "+OK");
  EXPECT_EQ(client.Command({"GET", "k"}).str(), "v");
  EXPECT_EQ(client.Command({"INCRBY", "n", "41"}).integer(), 41);
  EXPECT_EQ(client.Command({"INCR", "n"}).integer(), 42);
  client.Command({"RPUSH", "list", "a", "b"});
  EXPECT_EQ(client.Command({"LRANGE", "list", "0", "-1"}).DebugString(), "[\"a\", \"b\"]");
  EXPECT_EQ(client.connects(), 1);  // One connection served every call.
  EXPECT_EQ(client.address(), absl::StrCat("127.0.0.1:", redis_->port()));
}

TEST_F(RedisClientTest, ArgumentsAreBinarySafe) {
  StartRedis();
  RedisClient client(Options());
  std::string value("\0\r\n$3\r\n*\xff", 9);
  const std::string key("key with spaces\0and nul", 23);
  client.Command({"SET", key, value});
  EXPECT_EQ(client.Command({"GET", key}).str(), value);
  EXPECT_EQ(client.Command({"STRLEN", key}).integer(), 9);
  const std::string big(1 << 20, 'x');  // Larger than a socket buffer: sent in pieces.
  client.Command({"SET", "big", big});
  EXPECT_EQ(client.Command({"GET", "big"}).str(), big);
}

TEST_F(RedisClientTest, ErrorRepliesAreReturnedNotThrown) {
  StartRedis();
  RedisClient client(Options());
  client.Command({"SET", "s", "text"});
  const RedisReply reply = client.Command({"INCR", "s"});
  ASSERT_TRUE(reply.is_error());
  EXPECT_TRUE(absl::StartsWith(reply.str(), "ERR value is not an integer")) << reply.str();
  EXPECT_TRUE(client.Command({"NO-SUCH-COMMAND"}).is_error());
  EXPECT_EQ(client.Command({"PING"}).str(), "PONG");  // The connection is still fine.
  EXPECT_EQ(client.connects(), 1);
  EXPECT_THROW(client.Command({}), InvalidOptionError);
}

TEST_F(RedisClientTest, EvalShaLoadsTheScriptOnceAndAgainAfterNoscript) {
  StartRedis();
  RedisClient client(Options());
  const auto loads = [&] {
    return InfoCount(client.Command({"INFO", "commandstats"}).str(), "cmdstat_script|load:calls");
  };
  const auto evalshas = [&] {
    return InfoCount(client.Command({"INFO", "commandstats"}).str(), "cmdstat_evalsha:calls");
  };
  static const RedisScript kScript(
      "concat", "return redis.call('INCRBY', KEYS[1], ARGV[1]) .. ':' .. ARGV[2]");
  EXPECT_EQ(client.EvalSha(kScript, {"n"}, {"5", "a\0b"}).str(), "5:a");
  EXPECT_EQ(client.EvalSha(kScript, {"n"}, {"5", "x"}).str(), "10:x");
  EXPECT_EQ(loads(), 1);
  EXPECT_EQ(evalshas(), 2);
  // The server forgets its scripts: EVALSHA answers NOSCRIPT, the client loads it again.
  EXPECT_EQ(client.Command({"SCRIPT", "FLUSH"}).str(), "OK");
  EXPECT_EQ(client.EvalSha(kScript, {"n"}, {"1", "y"}).str(), "11:y");
  EXPECT_EQ(loads(), 2);
  EXPECT_EQ(evalshas(), 4);  // The one that got NOSCRIPT, and its retry.
  redis_->Restart();
  EXPECT_EQ(client.EvalSha(kScript, {"n"}, {"1", "z"}).str(), "1:z");  // Empty data, no script.
  // A runtime error of the script is a reply; a script that does not compile throws.
  static const RedisScript kFails("fails", "return redis.call('INCR', KEYS[1])");
  client.Command({"SET", "s", "text"});
  EXPECT_TRUE(client.EvalSha(kFails, {"s"}, {}).is_error());
  // A script that does not load is a configuration error (fix the script), not an outage.
  static const RedisScript kBroken("broken", "return (");
  const std::string message = RedisConfigErrorOf([&] { client.EvalSha(kBroken, {}, {}); });
  EXPECT_TRUE(absl::StrContains(message, "SCRIPT LOAD broken failed")) << message;
}

TEST_F(RedisClientTest, AnAclUserWithoutScriptingGetsAConfigurationError) {
  StartRedis();
  RedisClient admin(Options());
  ASSERT_EQ(
      admin.Command({"ACL", "SETUSER", "plain", "on", ">pw", "~*", "+@all", "-@scripting"}).str(),
      "OK");
  RedisClient user({.port = redis_->port(), .user = "plain", .password = "pw"});
  static const RedisScript kScript("one", "return 1");
  const std::string message = RedisConfigErrorOf([&] { user.EvalSha(kScript, {}, {}); });
  EXPECT_TRUE(absl::StrContains(message, "SCRIPT LOAD one failed: -NOPERM")) << message;
  // With the script loaded by another user, EVALSHA itself is refused: an error reply.
  EXPECT_EQ(admin.EvalSha(kScript, {}, {}).integer(), 1);
  const RedisReply refused = user.EvalSha(kScript, {}, {});
  ASSERT_TRUE(refused.is_error());
  EXPECT_TRUE(absl::StartsWith(refused.str(), "NOPERM")) << refused.str();
  RedisConfigErrorOf([&] { refused.integer(); });
}

TEST_F(RedisClientTest, CommandTimesOutAndTheNextCallWorks) {
  StartRedis();
  RedisClient client({.port = redis_->port(), .command_timeout = absl::Milliseconds(200)});
  client.Command({"PING"});
  const absl::Time start = absl::Now();
  // BLPOP blocks on the server for 2 s: longer than the command timeout.
  const std::string message = RedisErrorOf([&] { client.Command({"BLPOP", "empty", "2"}); });
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LT(took, absl::Milliseconds(200) + kSlack);
  EXPECT_EQ(message,
            absl::StrCat("Redis 127.0.0.1:", redis_->port(), ": BLPOP timed out after 200ms"));
  // The timed-out connection is dropped (its reply would come later); a new one serves the call.
  EXPECT_EQ(client.Command({"PING"}).str(), "PONG");
  EXPECT_EQ(client.connects(), 2);
}

TEST_F(RedisClientTest, ACallerDeadlineCutsACommandShort) {
  StartRedis();
  RedisClient client({.port = redis_->port(), .command_timeout = absl::Seconds(1)});
  client.Command({"PING"});
  const absl::Time start = absl::Now();
  try {
    client.Command({"BLPOP", "empty", "2"}, start + absl::Milliseconds(150));
    ADD_FAILURE() << "no RedisDeadlineError";
  } catch (const RedisDeadlineError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "cut short at the caller's deadline")) << e.what();
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Milliseconds(150) + kSlack);
  // A deadline later than command_timeout changes nothing: a plain RedisError after 1 s.
  try {
    client.Command({"BLPOP", "empty", "2"}, absl::Now() + absl::Seconds(30));
    ADD_FAILURE() << "no RedisError";
  } catch (const RedisDeadlineError& e) {
    ADD_FAILURE() << e.what();
  } catch (const RedisError& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "timed out after 1s")) << e.what();
  }
  EXPECT_EQ(client.Command({"PING"}, absl::Now() + absl::Seconds(1)).str(), "PONG");
}

TEST_F(RedisClientTest, OneWayCallsRunInOrderAndFlushWaitsForThem) {
  StartRedis();
  RedisClient client(Options());
  static const RedisScript kAppend("append", "return redis.call('RPUSH', KEYS[1], ARGV[1])");
  absl::Mutex mu;
  std::vector<int64_t> lengths;
  for (int i = 0; i < 100; ++i) {  // The first runs by EVAL (SHA unknown), the others by SHA.
    client.EvalShaOneWay(kAppend, {"log"}, {absl::StrCat(i)},
                         [&](const RedisReply* reply, const RedisError* error) {
                           ASSERT_EQ(error, nullptr);
                           absl::MutexLock lock(&mu);
                           lengths.push_back(reply->integer());
                         });
  }
  EXPECT_TRUE(client.FlushOneWay(absl::Now() + kSlack));
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(lengths.size(), 100);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(lengths[i], i + 1);
  }
  const RedisReply log = client.Command({"LRANGE", "log", "0", "-1"});
  ASSERT_EQ(log.elements().size(), 100);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(log.elements()[i].str(), absl::StrCat(i));
  // After SCRIPT FLUSH the reader loads it again (NOSCRIPT).
  client.Command({"SCRIPT", "FLUSH"});
  std::atomic<int64_t> length{0};
  client.EvalShaOneWay(kAppend, {"log"}, {"x"}, [&](const RedisReply* reply, const RedisError*) {
    length = reply != nullptr ? reply->integer() : -1;
  });
  EXPECT_TRUE(client.FlushOneWay(absl::Now() + kSlack));
  EXPECT_EQ(length.load(), 101);
}

TEST_F(RedisClientTest, ManyThreadsSendOneWayCallsWhileOthersWaitForThem) {
  StartRedis();
  RedisClient client(Options());
  static const RedisScript kIncr("incr", "return redis.call('INCR', KEYS[1])");
  constexpr int kThreads = 4;
  constexpr int kCalls = 200;
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        client.EvalShaOneWay(kIncr, {"n"}, {}, [&](const RedisReply* reply, const RedisError*) {
          if (reply != nullptr && reply->is_integer()) ++done;
        });
        if (i % 50 == 0) {
          // What this thread sent is done once the flush returns.
          ASSERT_TRUE(client.FlushOneWay(absl::Now() + kSlack));
          if (t == 0) client.Command({"GET", "n"});
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(client.FlushOneWay(absl::Now() + kSlack));
  EXPECT_EQ(done.load(), kThreads * kCalls);
  EXPECT_EQ(client.Command({"GET", "n"}).str(), absl::StrCat(kThreads * kCalls));
}

TEST_F(RedisClientTest, OneWayCallsFailWhenTheServerGoesAwayAndDestructionFlushes) {
  StartRedis();
  std::atomic<int> failed{0};
  std::atomic<int> done{0};
  {
    RedisClient client({.port = redis_->port(), .command_timeout = absl::Milliseconds(300)});
    static const RedisScript kSleep("sleep", "return redis.call('PING')");
    client.EvalShaOneWay(kSleep, {}, {}, [&](const RedisReply*, const RedisError*) { ++done; });
    ASSERT_TRUE(client.FlushOneWay(absl::Now() + kSlack));
    ASSERT_EQ(done.load(), 1);
    // Paused: no reply within command_timeout; the destructor waits for the failure.
    RedisClient admin(Options());
    admin.Command({"CLIENT", "PAUSE", "1500"});
    for (int i = 0; i < 3; ++i) {
      client.EvalShaOneWay(kSleep, {}, {}, [&](const RedisReply* reply, const RedisError* error) {
        if (error != nullptr && reply == nullptr) ++failed;
        ++done;
      });
    }
  }
  EXPECT_EQ(done.load(), 4);
  EXPECT_EQ(failed.load(), 3);
}

TEST_F(RedisClientTest, ServerDownFailsFastNamingTheAddressThenBacksOff) {
  StartRedis();
  RedisClient client({.port = redis_->port(), .reconnect_backoff = absl::Seconds(30)});
  client.Command({"PING"});
  redis_->Stop();
  const absl::Time start = absl::Now();
  const std::string message = RedisErrorOf([&] { client.Command({"PING"}); });
  EXPECT_LT(absl::Now() - start, absl::Seconds(1) + kSlack);  // connect_timeout 1 s
  EXPECT_TRUE(absl::StrContains(
      message, absl::StrCat("Redis 127.0.0.1:", redis_->port(), ": cannot connect")))
      << message;
  EXPECT_TRUE(absl::StrContains(message, "Connection refused")) << message;
  // Within the backoff, calls fail at once with the same reason and no new attempt.
  const std::string again = RedisErrorOf([&] { client.Command({"PING"}); });
  EXPECT_TRUE(absl::StrContains(again, "Connection refused")) << again;
  EXPECT_TRUE(absl::StrContains(again, "next attempt in")) << again;
}

TEST_F(RedisClientTest, ConnectTimingOutAtCommandTimeoutStillStartsTheBackoff) {
  // A stopped server accepts the TCP connection but never answers AUTH: the connect times out at
  // command_timeout, which is not the caller's deadline (it has none), so the backoff applies and
  // the next call fails at once instead of waiting command_timeout again.
  StartRedis({.extra_args = {"--requirepass", "s3cret"}});
  RedisClient client({.port = redis_->port(),
                      .password = "s3cret",
                      .command_timeout = absl::Seconds(2),
                      .reconnect_backoff = absl::Seconds(30)});
  Frozen frozen(redis_->pid());
  const std::string first = RedisErrorOf([&] { client.Command({"PING"}); });
  const absl::Time start = absl::Now();
  const std::string again = RedisErrorOf([&] { client.Command({"PING"}); });
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));  // Not another command_timeout.
  EXPECT_TRUE(absl::StrContains(again, "next attempt in")) << again;
  // A caller's deadline that cuts the connect is the caller's, not the server's: a
  // RedisDeadlineError (tested on a fresh client, with no backoff pending).
  RedisClient cut(
      {.port = redis_->port(), .password = "s3cret", .reconnect_backoff = absl::Seconds(30)});
  EXPECT_THROW(cut.Command({"PING"}, absl::Now() + absl::Milliseconds(50)), RedisDeadlineError);
}

TEST_F(RedisClientTest, AConnectionOpenedForAFreedSlotGetsItsOwnBudget) {
  // The only slot is freed after 250 ms with its connection dropped (a command cut by its
  // caller's deadline) while the server is busy until 1.1 s: a waiter that got the slot must not
  // have to connect and AUTH within what is left of its 1 s pool wait, which ends at 1.02 s (a
  // plain RedisError on a healthy server: kFailOpen would grant); its own budget ends at 1.25 s
  // or later. (The pool wait leaves 770 ms for the busy thread to wake up late.)
  StartRedis({.extra_args = {"--requirepass", "s3cret", "--enable-debug-command", "yes"}});
  RedisClient client({.port = redis_->port(),
                      .password = "s3cret",
                      .command_timeout = absl::Seconds(1),
                      .pool_size = 1});
  ASSERT_EQ(client.Command({"PING"}).str(), "PONG");
  absl::Notification started;
  std::thread busy([&] {
    started.Notify();
    EXPECT_THROW(client.Command({"DEBUG", "SLEEP", "1.1"}, absl::Now() + absl::Milliseconds(250)),
                 RedisDeadlineError);
  });
  started.WaitForNotification();
  absl::SleepFor(absl::Milliseconds(20));  // The slot is taken.
  std::string pong;
  try {
    pong = client.Command({"PING"}).str();
  } catch (const RedisError& e) {
    ADD_FAILURE() << e.what();
  }
  busy.join();
  EXPECT_EQ(pong, "PONG");
}

TEST_F(RedisClientTest, ReconnectsWhenRedisComesBack) {
  StartRedis();
  RedisClient client({.port = redis_->port(), .reconnect_backoff = absl::Milliseconds(50)});
  client.Command({"SET", "k", "v"});
  // A restart while idle: the closed connection is noticed before use, so no call fails.
  redis_->Restart();
  EXPECT_TRUE(client.Command({"GET", "k"}).is_nil());
  EXPECT_EQ(client.connects(), 2);
  // Down for a while: calls fail; once it is back, a call after the backoff succeeds.
  redis_->Kill();
  EXPECT_THROW(client.Command({"PING"}), RedisError);
  redis_->Restart();
  const absl::Time deadline = absl::Now() + kSlack;
  std::string last_error;
  bool ok = false;
  while (!ok && absl::Now() < deadline) {
    try {
      ok = client.Command({"PING"}).str() == "PONG";
    } catch (const RedisError& e) {
      last_error = e.what();
      absl::SleepFor(absl::Milliseconds(50));  // The backoff: a real-time wait by design.
    }
  }
  EXPECT_TRUE(ok) << last_error;
}

TEST_F(RedisClientTest, AuthenticatesWithPasswordAndAclUser) {
  StartRedis({.extra_args = {"--requirepass", "s3cret"}});
  // Without a password, the server answers NOAUTH (a reply, not a connection failure).
  RedisClient anonymous(Options());
  const RedisReply refused = anonymous.Command({"GET", "k"});
  ASSERT_TRUE(refused.is_error());
  EXPECT_TRUE(absl::StartsWith(refused.str(), "NOAUTH")) << refused.str();

  // A wrong password is a configuration error, during the backoff as well.
  RedisClient wrong(
      {.port = redis_->port(), .password = "wrong", .reconnect_backoff = absl::Minutes(1)});
  const std::string message = RedisConfigErrorOf([&] { wrong.Command({"PING"}); });
  EXPECT_TRUE(absl::StrContains(message, "AUTH failed: WRONGPASS")) << message;
  EXPECT_FALSE(absl::StrContains(message, "wrong")) << "the password leaked: " << message;
  const std::string again = RedisConfigErrorOf([&] { wrong.Command({"PING"}); });
  EXPECT_TRUE(absl::StrContains(again, "next attempt in")) << again;

  RedisClient admin({.port = redis_->port(), .password = "s3cret"});
  EXPECT_EQ(admin.Command({"PING"}).str(), "PONG");
  EXPECT_EQ(admin.Command({"ACL", "SETUSER", "limits", "on", ">pw", "~app:*", "+@all"}).str(),
            "OK");
  RedisClient user({.port = redis_->port(), .user = "limits", .password = "pw"});
  EXPECT_EQ(user.Command({"SET", "app:k", "v"}).str(), "OK");
  EXPECT_TRUE(user.Command({"SET", "other", "v"}).is_error());  // Outside its key pattern.
  RedisClient bad_user({.port = redis_->port(), .user = "limits", .password = "nope"});
  RedisConfigErrorOf([&] { bad_user.Command({"PING"}); });
}

TEST_F(RedisClientTest, SelectsTheDatabase) {
  StartRedis();
  RedisClient db3({.port = redis_->port(), .db = 3});
  RedisClient db0(Options());
  db3.Command({"SET", "k", "three"});
  EXPECT_TRUE(db0.Command({"GET", "k"}).is_nil());
  EXPECT_EQ(db3.Command({"GET", "k"}).str(), "three");
  RedisClient db99({.port = redis_->port(), .db = 99});  // The server has 16 databases.
  const std::string message = RedisConfigErrorOf([&] { db99.Command({"PING"}); });
  EXPECT_TRUE(absl::StrContains(message, "SELECT 99 failed: ERR DB index is out of range"))
      << message;
}

TEST_F(RedisClientTest, ConnectsOverAUnixSocket) {
  StartRedis({.unix_socket = true});
  RedisClient client({.unix_socket = redis_->unix_socket_path()});
  EXPECT_EQ(client.Command({"PING"}).str(), "PONG");
  EXPECT_EQ(client.address(), absl::StrCat("unix:", redis_->unix_socket_path()));
}

TEST_F(RedisClientTest, PoolBoundsCommandsInFlight) {
  StartRedis();
  RedisClient client({.port = redis_->port(), .command_timeout = absl::Seconds(5), .pool_size = 2});
  // Four BLPOPs of 0.3 s on two connections take two rounds.
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] { EXPECT_TRUE(client.Command({"BLPOP", "none", "0.3"}).is_nil()); });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(600));
  EXPECT_EQ(client.connects(), 2);
}

TEST_F(RedisClientTest, ManyThreadsShareThePool) {
  StartRedis();
  // A thread may wait long for a slot on a loaded machine (the pool's lock is not fair).
  RedisClient client(
      {.port = redis_->port(), .command_timeout = absl::Seconds(10), .pool_size = 3});
  static const RedisScript kAdd("add", "return redis.call('INCRBY', KEYS[1], ARGV[1])");
  constexpr int kThreads = 8;
  constexpr int kCalls = 100;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        if (i % 2 == 0) {
          client.Command({"INCR", "n"});
        } else {
          client.EvalSha(kAdd, {"n"}, {"1"});
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(client.Command({"GET", "n"}).str(), absl::StrCat(kThreads * kCalls));
  EXPECT_LE(client.connects(), 3);
}

// Counts a subscription's calls; waits for a count.
class Calls {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  int count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }
  // Waits until at least `n` calls were made (bounded); returns whether they were.
  bool WaitFor(int n, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    struct Arg {
      int* count;
      int n;
    } arg{&count_, n};
    return mu_.AwaitWithTimeout(absl::Condition(
                                    +[](Arg* a) { return *a->count >= a->n; }, &arg),
                                timeout);
  }

 private:
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(RedisClientTest, SubscriberCallsOnConfirmationAndOnEveryMessage) {
  StartRedis();
  RedisClient client(Options());
  RedisSubscriber subscriber(Options());
  Calls calls;
  Calls barrier;
  const RedisSubscriber::Token token = subscriber.Subscribe("wake", [&] { calls.Add(); });
  subscriber.Subscribe("barrier", [&] { barrier.Add(); });
  ASSERT_TRUE(calls.WaitFor(1));  // Confirmed: messages from now on are delivered.
  ASSERT_TRUE(barrier.WaitFor(1));
  EXPECT_EQ(client.Command({"PUBLISH", "wake", "x"}).integer(), 1);
  EXPECT_EQ(client.Command({"PUBLISH", "wake", "y"}).integer(), 1);
  ASSERT_TRUE(calls.WaitFor(3));
  EXPECT_EQ(client.Command({"PUBLISH", "other", "z"}).integer(), 0);

  // After Unsubscribe returns, the callback is not called, even for a message already on its way.
  subscriber.Unsubscribe(token);
  client.Command({"PUBLISH", "wake", "late"});
  client.Command({"PUBLISH", "barrier", "b"});
  ASSERT_TRUE(barrier.WaitFor(2));  // Messages arrive in order: "late" was handled before.
  EXPECT_EQ(calls.count(), 3);
  subscriber.Unsubscribe(token);  // Ended tokens are ignored.
  EXPECT_EQ(subscriber.connects(), 1);
}

TEST_F(RedisClientTest, SecondSubscriptionToAConfirmedChannelIsCalledWithoutAMessage) {
  StartRedis();
  RedisSubscriber subscriber(Options());
  Calls first;
  Calls second;
  subscriber.Subscribe("ch", [&] { first.Add(); });
  ASSERT_TRUE(first.WaitFor(1));
  subscriber.Subscribe("ch", [&] { second.Add(); });
  ASSERT_TRUE(second.WaitFor(1));  // Active at once: called as if confirmed now.
  RedisClient client(Options());
  EXPECT_EQ(client.Command({"PUBLISH", "ch", "m"}).integer(), 1);  // One connection.
  ASSERT_TRUE(first.WaitFor(2));
  ASSERT_TRUE(second.WaitFor(2));
}

TEST_F(RedisClientTest, SubscriberResubscribesAfterARestartAndCallsEveryCallback) {
  StartRedis();
  RedisOptions options = Options();
  options.reconnect_backoff = absl::Milliseconds(20);
  RedisSubscriber subscriber(options);
  Calls a;
  Calls b;
  subscriber.Subscribe("a", [&] { a.Add(); });
  subscriber.Subscribe("b", [&] { b.Add(); });
  ASSERT_TRUE(a.WaitFor(1));
  ASSERT_TRUE(b.WaitFor(1));
  // A message published while Redis is down is lost; the resubscription calls every callback.
  redis_->Restart();
  ASSERT_TRUE(a.WaitFor(2));
  ASSERT_TRUE(b.WaitFor(2));
  EXPECT_GE(subscriber.connects(), 2);
  RedisClient client(Options());
  EXPECT_EQ(client.Command({"PUBLISH", "a", "m"}).integer(), 1);
  ASSERT_TRUE(a.WaitFor(3));
}

TEST_F(RedisClientTest, SubscriberAuthenticatesAndCallbacksMayUnsubscribe) {
  StartRedis({.extra_args = {"--requirepass", "s3cret"}});
  RedisOptions options = Options();
  options.password = "s3cret";
  RedisSubscriber subscriber(options);
  Calls calls;
  std::atomic<RedisSubscriber::Token> token{0};
  // The callback ends its own subscription on the first message after the confirmation.
  token = subscriber.Subscribe("once", [&] {
    calls.Add();
    if (calls.count() == 2) subscriber.Unsubscribe(token.load());
  });
  ASSERT_TRUE(calls.WaitFor(1));
  RedisClient client(options);
  client.Command({"PUBLISH", "once", "1"});
  ASSERT_TRUE(calls.WaitFor(2));
  // Its UNSUBSCRIBE reaches the server; later messages find no receiver.
  const absl::Time deadline = absl::Now() + kSlack;
  while (client.Command({"PUBLISH", "once", "2"}).integer() != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));  // Waits for the server-side state, not our code.
  }
  EXPECT_EQ(client.Command({"PUBLISH", "once", "3"}).integer(), 0);
  EXPECT_EQ(calls.count(), 2);
}

TEST_F(RedisClientTest, SubscriberStopsPromptlyWhileRedisIsDown) {
  StartRedis();
  const int port = redis_->port();
  redis_->Stop();
  const absl::Time start = absl::Now();
  {
    RedisSubscriber subscriber({.port = port, .reconnect_backoff = absl::Seconds(30)});
    subscriber.Subscribe("ch", [] {});
    absl::SleepFor(absl::Milliseconds(50));  // Let it fail once and sit in its backoff.
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(1) + kSlack);
}

TEST_F(RedisClientTest, UnsubscribeWaitsForTheRunningCallback) {
  StartRedis();
  RedisSubscriber subscriber(Options());
  absl::Notification entered;
  absl::Notification release;
  std::atomic<bool> returned{false};
  std::atomic<int> calls{0};
  const RedisSubscriber::Token token = subscriber.Subscribe("ch", [&] {
    if (calls.fetch_add(1) == 0) {  // The confirmation's call blocks until released.
      entered.Notify();
      release.WaitForNotification();
      EXPECT_FALSE(returned.load()) << "Unsubscribe returned while its callback ran";
    }
  });
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  std::thread unsubscriber([&] {
    subscriber.Unsubscribe(token);
    returned = true;
  });
  // Unsubscribe cannot return before the callback does, so this is no race with it.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(returned.load());
  const absl::Time released = absl::Now();
  release.Notify();
  unsubscriber.join();
  EXPECT_TRUE(returned.load());
  EXPECT_LT(absl::Now() - released, kSlack);
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(RedisClientTest, AStalledServerTimesOutAuthAndSubscribersStopPromptly) {
  StartRedis({.extra_args = {"--requirepass", "s3cret"}});
  RedisOptions options = Options();
  options.password = "s3cret";
  options.command_timeout = absl::Milliseconds(200);
  options.connect_timeout = absl::Milliseconds(200);
  {
    RedisClient warm(options);
    ASSERT_EQ(warm.Command({"PING"}).str(), "PONG");
  }
  const Frozen frozen(redis_->pid());
  // The kernel still accepts connections: connect succeeds, AUTH gets no answer.
  RedisClient client(options);
  absl::Time start = absl::Now();
  const std::string message = RedisErrorOf([&] { client.Command({"PING"}); });
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(200) + kSlack);
  EXPECT_EQ(message,
            absl::StrCat("Redis 127.0.0.1:", redis_->port(), ": AUTH timed out after 200ms"));
  // A subscriber waiting for its AUTH, and one waiting for its SUBSCRIBE to be confirmed, stop at
  // once (their waits are long: command_timeout 1 h).
  for (const bool with_password : {true, false}) {
    RedisOptions slow = options;
    slow.command_timeout = absl::Hours(1);
    if (!with_password) {
      slow.password.clear();  // Never confirmed either way: the server is stopped.
    }
    std::atomic<int> calls{0};
    start = absl::Now();
    {
      RedisSubscriber subscriber(slow);
      subscriber.Subscribe("ch", [&] { ++calls; });
      if (with_password) {
        absl::SleepFor(absl::Milliseconds(100));  // Let it connect and wait for AUTH's reply.
      } else {
        const absl::Time deadline = absl::Now() + kSlack;
        while (subscriber.connects() == 0 && absl::Now() < deadline) {
          absl::SleepFor(absl::Milliseconds(5));  // Connected: then it sends SUBSCRIBE and waits.
        }
        EXPECT_EQ(subscriber.connects(), 1);
      }
      start = absl::Now();
    }
    EXPECT_LT(absl::Now() - start, kSlack) << with_password;
    EXPECT_EQ(calls.load(), 0);
  }
}

TEST_F(RedisClientTest, AllConnectionsBusyFailsAfterTheCommandTimeout) {
  // A listening socket that never accepts, with a full backlog: connecting to it hangs (the SYN is
  // dropped), so a call holds the only pool slot for connect_timeout.
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 0), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  std::vector<int> fillers;
  for (int i = 0; i < 2; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
    fillers.push_back(fd);
  }
  RedisClient client({.port = ntohs(address.sin_port),
                      .connect_timeout = absl::Seconds(3),
                      .command_timeout = absl::Milliseconds(100),
                      .pool_size = 1,
                      .reconnect_backoff = absl::Milliseconds(1)});
  // Calls at once: one holds the slot while connecting (cut at command_timeout), the others wait
  // up to 100 ms for it. Which of them finds it still busy then depends on the scheduling: up to
  // five rounds until one does.
  std::string busy_message;
  absl::Duration busy_took;
  for (int round = 0; round < 5 && busy_message.empty(); ++round) {
    constexpr int kCalls = 3;
    std::string messages[kCalls];
    absl::Duration took[kCalls];
    std::vector<std::thread> threads;
    for (int i = 0; i < kCalls; ++i) {
      threads.emplace_back([&, i] {
        const absl::Time start = absl::Now();
        try {
          client.Command({"PING"});
          messages[i] = "answered";
        } catch (const RedisPoolBusyError& e) {
          messages[i] = e.what();
        } catch (const RedisError& e) {
          messages[i] = absl::StrCat("not busy: ", e.what());
        }
        took[i] = absl::Now() - start;
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int i = 0; i < kCalls; ++i) {
      if (!absl::StartsWith(messages[i], "not busy: ")) {
        busy_message = messages[i];
        busy_took = took[i];
      }
    }
  }
  EXPECT_EQ(busy_message, absl::StrCat("Redis 127.0.0.1:", ntohs(address.sin_port),
                                       ": PING: all 1 connections busy for 100ms"));
  EXPECT_GE(busy_took, absl::Milliseconds(100));
  EXPECT_LT(busy_took, absl::Milliseconds(100) + kSlack);
  for (const int fd : fillers) close(fd);
  close(listener);
}

TEST_F(RedisClientTest, SubscriberReportsARefusedPasswordAndBacksOff) {
  StartRedis({.extra_args = {"--requirepass", "s3cret"}});
  RedisOptions options = Options();
  options.password = "wrong";
  options.reconnect_backoff = absl::Milliseconds(10);
  RedisSubscriber subscriber(options);
  subscriber.Subscribe("ch", [] {});
  const absl::Time deadline = absl::Now() + kSlack;
  while (subscriber.last_error().empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));  // Waits for the thread's first attempt.
  }
  EXPECT_TRUE(absl::StrContains(subscriber.last_error(), "AUTH failed: WRONGPASS"))
      << subscriber.last_error();
  // Waits double after each refusal (10, 20, 40, 80, 160, 320 ms...): few AUTHs in a second.
  absl::SleepFor(absl::Seconds(1));
  RedisClient admin({.port = redis_->port(), .password = "s3cret"});
  const int64_t auths =
      InfoCount(admin.Command({"INFO", "commandstats"}).str(), "cmdstat_auth:calls");
  EXPECT_GE(auths, 3);
  EXPECT_LE(auths, 12);  // 1 s / 10 ms would be 100 without the backoff; 1 is admin's.
}

// A fork()ed child that uses its parent's client never shares a connection with the parent: both
// run many ECHOs at once, each checks every reply is its own.
TEST_F(RedisClientTest, AForkedChildUsesItsParentsClientWithoutCrossingReplies) {
  StartRedis();
  RedisClient client({.port = redis_->port(), .pool_size = 2});
  // Two idle connections in the pool, inherited by the child.
  std::thread other([&] { client.Command({"BLPOP", "none", "0.05"}); });
  EXPECT_TRUE(client.Command({"BLPOP", "none", "0.05"}).is_nil());
  other.join();
  const auto echoes = [&](const std::string& who) {
    int crossed = 0;
    for (int i = 0; i < 2000; ++i) {
      const std::string text = absl::StrCat(who, i);
      if (client.Command({"ECHO", text}).str() != text) ++crossed;
    }
    return crossed;
  };
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int crossed = -1;
    try {
      crossed = echoes("child");
    } catch (...) {
    }
    _exit(crossed == 0 ? 0 : 1);
  }
  EXPECT_EQ(echoes("parent"), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LE(client.connects(), 2);  // The parent kept its own.
}

// A fork()ed child that uses its parent's subscriber gets a thread and a connection of its own:
// a publish reaches the child's callback (a subscription made in the child, and one inherited),
// and the parent's subscriber still works.
TEST_F(RedisClientTest, AForkedChildUsesItsParentsSubscriber) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer runtimes do not support starting threads in the child of a "
                  "multi-threaded process (the parent has the subscriber's thread)";
#endif
  StartRedis();
  RedisSubscriber subscriber(Options());
  RedisClient client(Options());
  Calls inherited;
  subscriber.Subscribe("inherited", [&] { inherited.Add(); });
  ASSERT_TRUE(inherited.WaitFor(1));
  // fork() at a quiet moment (see redis_client.h): the subscriber's thread, done with the call,
  // is back in poll(), holding no lock that the child would inherit held.
  absl::SleepFor(absl::Milliseconds(100));
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(60);  // A hang in the child fails the test instead of timing it out.
    Calls mine;
    bool ok = false;
    try {
      subscriber.Subscribe("child", [&] { mine.Add(); });
      ok = mine.WaitFor(1) && inherited.WaitFor(2);  // Both confirmed on the child's connection.
      ok = ok && client.Command({"PUBLISH", "child", "m"}).integer() == 1 && mine.WaitFor(2);
      ok = ok && subscriber.connects() == 2;  // The parent's one, and the child's.
    } catch (...) {
      ok = false;
    }
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // The parent's subscriber still serves the parent.
  EXPECT_EQ(client.Command({"PUBLISH", "inherited", "m"}).integer(), 1);
  ASSERT_TRUE(inherited.WaitFor(2));
  EXPECT_EQ(inherited.count(), 2);
  // A child that only destroys an inherited subscriber neither waits for nor wakes the parent's.
  std::unique_ptr<RedisSubscriber> doomed = std::make_unique<RedisSubscriber>(Options());
  Calls doomed_calls;
  doomed->Subscribe("doomed", [&] { doomed_calls.Add(); });
  ASSERT_TRUE(doomed_calls.WaitFor(1));
  absl::SleepFor(absl::Milliseconds(100));  // A quiet moment, as above.
  const pid_t destroyer = fork();
  ASSERT_GE(destroyer, 0);
  if (destroyer == 0) {
    alarm(60);
    doomed.reset();
    _exit(0);
  }
  ASSERT_EQ(waitpid(destroyer, &status, 0), destroyer);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(client.Command({"PUBLISH", "doomed", "m"}).integer(), 1);
  ASSERT_TRUE(doomed_calls.WaitFor(2));
}

}  // namespace
}  // namespace redis_internal
}  // namespace concurry

#include "testing/redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace concurry {
namespace testkit {
namespace {

// Sends `command` (inline protocol) to 127.0.0.1:port, or to `unix_path` when set; returns the
// first reply line, or "" when the connection is refused.
std::string Ask(int port, const std::string& command, const std::string& unix_path = "") {
  int fd;
  int connected;
  if (unix_path.empty()) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    connected = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  } else {
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    unix_path.copy(address.sun_path, sizeof(address.sun_path) - 1);
    connected = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  }
  std::string reply;
  if (connected == 0) {
    const std::string line = command + "\r\n";
    if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size())) {
      char buffer[512];
      while (reply.find("\r\n") == std::string::npos) {
        const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
        if (n <= 0) break;
        reply.append(buffer, n);
      }
    }
  }
  close(fd);
  return reply.substr(0, reply.find("\r\n"));
}

class RedisServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why_not;
    ASSERT_TRUE(RedisServer::Available(&why_not)) << why_not;
  }
};

TEST_F(RedisServerTest, StartsOnAFreePortAndAnswersPing) {
  std::unique_ptr<RedisServer> redis = RedisServer::Start();
  ASSERT_TRUE(redis->running());
  EXPECT_GT(redis->port(), 0);
  EXPECT_EQ(Ask(redis->port(), "PING"), "+PONG");
  EXPECT_EQ(Ask(redis->port(), "SET k v"), "+OK");
  EXPECT_EQ(Ask(redis->port(), "CONFIG GET save").substr(0, 2), "*2");
  EXPECT_TRUE(absl::StrContains(redis->LogTail(), "Ready to accept connections"));
}

TEST_F(RedisServerTest, TwoServersGetDifferentPorts) {
  std::unique_ptr<RedisServer> a = RedisServer::Start();
  std::unique_ptr<RedisServer> b = RedisServer::Start();
  EXPECT_NE(a->port(), b->port());
  EXPECT_EQ(Ask(a->port(), "SET only-a 1"), "+OK");
  EXPECT_EQ(Ask(b->port(), "EXISTS only-a"), ":0");
}

TEST_F(RedisServerTest, RestartKeepsThePortAndEmptiesTheData) {
  std::unique_ptr<RedisServer> redis = RedisServer::Start();
  const int port = redis->port();
  const pid_t first = redis->pid();
  ASSERT_EQ(Ask(port, "SET k v"), "+OK");
  redis->Restart();
  EXPECT_EQ(redis->port(), port);
  EXPECT_NE(redis->pid(), first);
  EXPECT_EQ(Ask(port, "PING"), "+PONG");
  EXPECT_EQ(Ask(port, "EXISTS k"), ":0");  // No persistence.
}

TEST_F(RedisServerTest, StoppedServerRefusesConnections) {
  std::unique_ptr<RedisServer> redis = RedisServer::Start();
  const int port = redis->port();
  const pid_t pid = redis->pid();
  redis->Stop();
  EXPECT_FALSE(redis->running());
  EXPECT_EQ(Ask(port, "PING"), "");
  EXPECT_NE(kill(pid, 0), 0);  // Reaped: no such process.
  redis->Stop();               // A second stop is a no-op.
  redis->Restart();            // A stopped server starts again on its port.
  EXPECT_EQ(Ask(port, "PING"), "+PONG");
}

TEST_F(RedisServerTest, KillEndsTheProcessAtOnce) {
  std::unique_ptr<RedisServer> redis = RedisServer::Start();
  const int port = redis->port();
  redis->Kill();
  EXPECT_FALSE(redis->running());
  EXPECT_EQ(Ask(port, "PING"), "");
  redis->Restart();
  EXPECT_EQ(Ask(port, "PING"), "+PONG");
}

TEST_F(RedisServerTest, ExtraArgumentsAndUnixSocket) {
  std::unique_ptr<RedisServer> redis =
      RedisServer::Start({.extra_args = {"--requirepass", "s3cret"}, .unix_socket = true});
  EXPECT_TRUE(absl::StartsWith(Ask(redis->port(), "PING"), "-NOAUTH"));
  ASSERT_FALSE(redis->unix_socket_path().empty());
  EXPECT_EQ(Ask(0, "AUTH s3cret", redis->unix_socket_path()), "+OK");
}

TEST_F(RedisServerTest, BadArgumentsFailWithTheLog) {
  try {
    RedisServer::Start({.extra_args = {"--no-such-option", "1"}});
    FAIL() << "a server with a bad option started";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "exited while starting")) << e.what();
    EXPECT_TRUE(absl::StrContains(e.what(), "no-such-option")) << e.what();
  }
}

TEST_F(RedisServerTest, DestructorStopsTheServerAndRemovesItsDirectory) {
  std::unique_ptr<RedisServer> redis = RedisServer::Start();
  const pid_t pid = redis->pid();
  const std::string dir = redis->dir();
  redis.reset();
  EXPECT_NE(kill(pid, 0), 0);
  EXPECT_NE(access(dir.c_str(), F_OK), 0);
}

}  // namespace
}  // namespace testkit
}  // namespace concurry

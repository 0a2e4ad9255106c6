// Tests of handing process-shared limits to another process (limits/internal/process_transfer.h)
// as the forkserver's process workers get them: the child is forked at the start of each test,
// before the sets exist, so it can only reach them through what it is sent (the blueprint and
// the memfds, over a socketpair with SCM_RIGHTS).
//
// Children run short code (import, the sets' own calls, the socket, _exit()) and start no
// threads. Every child is reaped: by the test, or killed and reaped by ChildProcess's
// destructor; a child also dies with the test process (PR_SET_PDEATHSIG). Every wait on the
// other side has a deadline, and a Watchdog guards each test.

#include "limits/internal/process_transfer.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/internal/set_access.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

using limits_internal::ExportedLimits;
using limits_internal::ExportLimitPool;
using limits_internal::ImportLimitPool;

// Bound for anything one side waits for from the other.
constexpr absl::Duration kDeadline = absl::Seconds(20);
constexpr int kChildOk = 0;
constexpr int kChildFailed = 121;  // An exception, a lost message, a failed check.

// Reads exactly `size` bytes from `fd`, waiting at most until `deadline`.
bool ReadAll(int fd, void* data, size_t size, absl::Time deadline) {
  char* out = static_cast<char*>(data);
  while (size > 0) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms < 0) return false;
    pollfd entry{fd, POLLIN, 0};
    const int ready = poll(&entry, 1, static_cast<int>(left_ms) + 1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t got = read(fd, out, size);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out += got;
    size -= static_cast<size_t>(got);
  }
  return true;
}

bool WriteAll(int fd, const void* data, size_t size) {
  const char* in = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t put = write(fd, in, size);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    in += put;
    size -= static_cast<size_t>(put);
  }
  return true;
}

// Sends the blueprint's length and the fds (SCM_RIGHTS) in one message, then the blueprint.
bool SendLimits(int socket, const ExportedLimits& limits) {
  uint64_t sizes[2] = {limits.blueprint.size(), limits.fds.size()};
  iovec part{sizes, sizeof(sizes)};
  msghdr message{};
  message.msg_iov = &part;
  message.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (limits.fds.empty() ? 1 : limits.fds.size())));
  if (!limits.fds.empty()) {
    message.msg_control = control.data();
    message.msg_controllen = CMSG_SPACE(sizeof(int) * limits.fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * limits.fds.size());
    std::memcpy(CMSG_DATA(header), limits.fds.data(), sizeof(int) * limits.fds.size());
  }
  ssize_t sent;
  do {
    sent = sendmsg(socket, &message, 0);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(sizeof(sizes))) return false;
  return WriteAll(socket, limits.blueprint.data(), limits.blueprint.size());
}

// Receives what SendLimits() sent. The received fds belong to the caller.
bool ReceiveLimits(int socket, std::string* blueprint, std::vector<int>* fds) {
  const absl::Time deadline = absl::Now() + kDeadline;
  pollfd entry{socket, POLLIN, 0};
  if (poll(&entry, 1, static_cast<int>(absl::ToInt64Milliseconds(kDeadline))) != 1) return false;
  uint64_t sizes[2] = {0, 0};
  iovec part{sizes, sizeof(sizes)};
  constexpr size_t kMaxFds = 16;
  char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr message{};
  message.msg_iov = &part;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t got;
  do {
    got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got != static_cast<ssize_t>(sizeof(sizes))) return false;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const size_t start = fds->size();
    fds->resize(start + count);
    std::memcpy(fds->data() + start, CMSG_DATA(header), count * sizeof(int));
  }
  if (fds->size() != sizes[1]) return false;
  blueprint->resize(sizes[0]);
  return ReadAll(socket, blueprint->data(), blueprint->size(), deadline);
}

bool SendByte(int socket, char byte) { return WriteAll(socket, &byte, 1); }

// Returns the next byte from `socket`, or '\0' if none came before the deadline.
char ReceiveByte(int socket, absl::Duration timeout = kDeadline) {
  char byte = '\0';
  return ReadAll(socket, &byte, 1, absl::Now() + timeout) ? byte : '\0';
}

// A child forked at construction, before the test creates any set. It waits for limits on its
// end of a socketpair, imports them and runs `body(pool, socket)`, then _exit()s with the body's
// result (kChildFailed on an exception, printed to stderr). Killed and reaped on destruction if
// the test did not reap it.
class ChildProcess {
 public:
  explicit ChildProcess(std::function<int(LimitPool& pool, int socket)> body) {
    int sockets[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) return;
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      close(sockets[0]);
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // Die with the test process.
      if (getppid() != parent) _exit(kChildFailed);
      _exit(RunChild(sockets[1], body));
    }
    close(sockets[1]);
    socket_ = sockets[0];
  }
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      Reap();
    }
    if (socket_ >= 0) close(socket_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0 && socket_ >= 0; }
  int socket() const { return socket_; }

  bool Send(const ExportedLimits& limits) { return SendLimits(socket_, limits); }

  // Waits for the child to end; "" if it exited with kChildOk, else what happened.
  std::string ExpectExitOk() {
    const absl::Time deadline = absl::Now() + kDeadline;
    int status = 0;
    for (;;) {
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) break;
      if (done < 0 && errno != EINTR) return absl::StrCat("waitpid: ", std::strerror(errno));
      if (absl::Now() >= deadline) return "the child did not exit in time";
      absl::SleepFor(absl::Milliseconds(2));
    }
    pid_ = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == kChildOk) return "";
    if (WIFEXITED(status)) return absl::StrCat("the child exited with ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return absl::StrCat("the child died of signal ", WTERMSIG(status));
    return absl::StrCat("the child ended with status ", status);
  }

  // SIGKILLs the child and reaps it (so that it no longer counts as alive).
  void KillAndReap() {
    kill(pid_, SIGKILL);
    Reap();
  }

 private:
  static int RunChild(int socket, const std::function<int(LimitPool&, int)>& body) {
    try {
      std::string blueprint;
      std::vector<int> fds;
      if (!ReceiveLimits(socket, &blueprint, &fds)) {
        std::fprintf(stderr, "child: no limits received\n");
        return kChildFailed;
      }
      LimitPool pool = ImportLimitPool(blueprint, fds);
      for (int fd : fds) close(fd);  // The pool keeps duplicates.
      return body(pool, socket);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "child: exception: %s\n", error.what());
    }
    return kChildFailed;
  }

  void Reap() {
    int status;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  pid_t pid_ = -1;
  int socket_ = -1;
};

LimitSetOptions Shared(LimitConfig config = {}) {
  LimitSetOptions options;
  options.sharing = LimitSharing::kProcesses;
  options.lease_check_interval = absl::Milliseconds(20);
  options.config = std::move(config);
  return options;
}

TEST(ProcessTransferTest, AChildForkedBeforeTheSetSharesItsResourceUnits) {
  ChildProcess child([](LimitPool& pool, int socket) {
    std::optional<LimitAcquisition> two = pool[0].TryAcquire({{"slots", 2}});
    if (!two.has_value()) return 1;
    if (!SendByte(socket, 'H')) return kChildFailed;  // Holding 2.
    if (ReceiveByte(socket) != 'R') return kChildFailed;
    two.reset();
    return SendByte(socket, 'D') ? kChildOk : kChildFailed;  // Released.
  });
  ASSERT_TRUE(child.started());
  testkit::Watchdog watchdog(absl::Seconds(60), "resource sharing with a forkserver-like child");
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 3)}, Shared());
  ASSERT_TRUE(child.Send(ExportLimitPool(LimitPool::Create({set}))));
  ASSERT_EQ(ReceiveByte(child.socket()), 'H');

  EXPECT_EQ(set.Stats().at("slots").in_use, 2);
  EXPECT_EQ(set.Stats().holding, 1);
  EXPECT_FALSE(set.TryAcquire({{"slots", 2}}).has_value());
  std::optional<LimitAcquisition> one = set.TryAcquire({{"slots", 1}});
  EXPECT_TRUE(one.has_value());
  one.reset();

  ASSERT_TRUE(SendByte(child.socket(), 'R'));
  ASSERT_EQ(ReceiveByte(child.socket()), 'D');
  EXPECT_TRUE(set.TryAcquire({{"slots", 3}}).has_value());
  EXPECT_EQ(child.ExpectExitOk(), "");
}

// A blocked Acquire() in the parent is woken by the child's release (the futex word is shared).
TEST(ProcessTransferTest, TheChildsReleaseWakesABlockedAcquirerInTheParent) {
  ChildProcess child([](LimitPool& pool, int socket) {
    std::optional<LimitAcquisition> all = pool[0].TryAcquire({{"slots", 3}});
    if (!all.has_value()) return 1;
    if (!SendByte(socket, 'H')) return kChildFailed;
    // Released once the parent is seen blocked. The parent's wait has no event this process can
    // observe, so its count of waiters in the shared state is polled (with a deadline).
    const absl::Time deadline = absl::Now() + kDeadline;
    while (pool[0].Stats().waiting < 1) {
      if (absl::Now() >= deadline) return 2;
      absl::SleepFor(absl::Milliseconds(1));
    }
    all.reset();
    return kChildOk;
  });
  ASSERT_TRUE(child.started());
  testkit::Watchdog watchdog(absl::Seconds(60), "a blocked acquirer woken by another process");
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 3)}, Shared());
  ASSERT_TRUE(child.Send(ExportLimitPool(LimitPool::Create({set}))));
  ASSERT_EQ(ReceiveByte(child.socket()), 'H');
  const absl::Time start = absl::Now();
  LimitAcquisition acquired = set.Acquire({{"slots", 3}}, kDeadline);
  EXPECT_TRUE(acquired.held());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(child.ExpectExitOk(), "");
}

TEST(ProcessTransferTest, ARateLimitsStateIsShared) {
  ChildProcess child([](LimitPool& pool, int socket) {
    {
      std::optional<LimitAcquisition> taken = pool[0].TryAcquire({{"tokens", 30}});
      if (!taken.has_value()) return 1;
      taken->Update({{"tokens", 30}});
    }
    if (!SendByte(socket, 'U')) return kChildFailed;
    // The parent's use is seen here too.
    if (ReceiveByte(socket) != 'P') return kChildFailed;
    const LimitSetStats stats = pool[0].Stats();
    if (stats.at("tokens").in_use != 100 || stats.acquisitions != 2) return 2;
    return pool[0].TryAcquire({{"tokens", 1}}).has_value() ? 3 : kChildOk;
  });
  ASSERT_TRUE(child.started());
  testkit::Watchdog watchdog(absl::Seconds(60), "rate state shared with a child");
  // A sliding window of an hour: nothing expires during the test, so counts are exact.
  LimitSet set = LimitSet::Create(
      {RateLimit("tokens", 100, absl::Hours(1), RateLimitAlgorithm::kSlidingWindow)}, Shared());
  ASSERT_TRUE(child.Send(ExportLimitPool(LimitPool::Create({set}))));
  ASSERT_EQ(ReceiveByte(child.socket()), 'U');

  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.at("tokens").in_use, 30);
  EXPECT_EQ(stats.acquisitions, 1);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_FALSE(set.TryAcquire({{"tokens", 71}}).has_value());
  {
    std::optional<LimitAcquisition> rest = set.TryAcquire({{"tokens", 70}});
    ASSERT_TRUE(rest.has_value());
    rest->Update({{"tokens", 70}});
  }
  ASSERT_TRUE(SendByte(child.socket(), 'P'));
  EXPECT_EQ(child.ExpectExitOk(), "");
}

// GCRA is lock-free on a word in the shared block: the child's tokens are missing in the parent.
TEST(ProcessTransferTest, AGcraLimitsTokensAreShared) {
  ChildProcess child([](LimitPool& pool, int socket) {
    std::optional<LimitAcquisition> taken = pool[0].TryAcquire({{"tokens", 600}});
    if (!taken.has_value()) return 1;
    taken->Update({{"tokens", 600}});
    taken.reset();
    return SendByte(socket, 'U') ? kChildOk : kChildFailed;
  });
  ASSERT_TRUE(child.started());
  testkit::Watchdog watchdog(absl::Seconds(60), "GCRA state shared with a child");
  LimitSet set = LimitSet::Create(
      {RateLimit("tokens", 1000, absl::Hours(1), RateLimitAlgorithm::kGcra)}, Shared());
  ASSERT_TRUE(child.Send(ExportLimitPool(LimitPool::Create({set}))));
  ASSERT_EQ(ReceiveByte(child.socket()), 'U');
  // 1000 per hour refills about 0.28 per second: at least 599 are still missing.
  EXPECT_GE(set.Stats().at("tokens").in_use, 599);
  EXPECT_FALSE(set.TryAcquire({{"tokens", 402}}).has_value());
  EXPECT_EQ(child.ExpectExitOk(), "");
}

TEST(ProcessTransferTest, UnitsHeldByAKilledChildComeBack) {
  ChildProcess child([](LimitPool& pool, int socket) {
    std::optional<LimitAcquisition> two = pool[0].TryAcquire({{"slots", 2}});
    if (!two.has_value()) return 1;
    if (!SendByte(socket, 'H')) return kChildFailed;
    ReceiveByte(socket, absl::Minutes(5));  // Killed while holding.
    return kChildOk;
  });
  ASSERT_TRUE(child.started());
  testkit::Watchdog watchdog(absl::Seconds(60), "recovery from a killed importing child");
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 3)}, Shared());
  ASSERT_TRUE(child.Send(ExportLimitPool(LimitPool::Create({set}))));
  ASSERT_EQ(ReceiveByte(child.socket()), 'H');
  EXPECT_EQ(set.Stats().at("slots").in_use, 2);
  EXPECT_FALSE(set.TryAcquire({{"slots", 2}}).has_value());

  child.KillAndReap();
  LimitAcquisition all = set.Acquire({{"slots", 3}}, kDeadline);
  EXPECT_TRUE(all.held());
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.recovered_holders, 1);
  EXPECT_EQ(stats.holding, 1);
}

TEST(ProcessTransferTest, APoolKeepsItsSetOrderAndWorkerIndex) {
  ChildProcess child([](LimitPool& pool, int socket) {
    if (pool.size() != 2) return 1;
    if (pool.options().worker_index != 1) return 2;
    if (pool.options().balancing != LimitPoolBalancing::kRoundRobin) return 3;
    if (pool[0].config().at("account") != "a" || pool[1].config().at("account") != "b") return 4;
    if (pool[0].sharing() != LimitSharing::kProcesses) return 5;
    if (pool[0].fairness() != LimitFairness::kBarging || pool[1].fairness() != LimitFairness::kFifo)
      return 6;
    // Worker index 1 starts on set 1.
    std::optional<LimitAcquisition> first = pool.TryAcquire({{"slots", 1}});
    if (!first.has_value() || first->config().at("account") != "b") return 7;
    if (!SendByte(socket, 'H')) return kChildFailed;
    return ReceiveByte(socket) == 'Q' ? kChildOk : kChildFailed;
  });
  ASSERT_TRUE(child.started());
  testkit::Watchdog watchdog(absl::Seconds(60), "a pool handed to a child");
  LimitSetOptions first = Shared({{"account", "a"}});
  first.fairness = LimitFairness::kBarging;
  LimitSet a = LimitSet::Create({ResourceLimit("slots", 2)}, first);
  LimitSet b = LimitSet::Create({ResourceLimit("slots", 2)}, Shared({{"account", "b"}}));
  LimitPool pool = LimitPool::Create({a, b}, {.worker_index = 1});
  const ExportedLimits exported = ExportLimitPool(pool);
  EXPECT_EQ(exported.fds.size(), 2u);
  ASSERT_TRUE(child.Send(exported));
  ASSERT_EQ(ReceiveByte(child.socket()), 'H');
  EXPECT_EQ(a.Stats().at("slots").in_use, 0);
  EXPECT_EQ(b.Stats().at("slots").in_use, 1);
  ASSERT_TRUE(SendByte(child.socket(), 'Q'));
  EXPECT_EQ(child.ExpectExitOk(), "");
  EXPECT_EQ(b.Stats().at("slots").in_use, 0);
}

// Importing in the same process is allowed too (two handles on one state).
TEST(ProcessTransferTest, AnImportInTheSameProcessSharesTheState) {
  LimitSet set =
      LimitSet::Create({ResourceLimit("slots", 3),
                        RateLimit("tokens", 50, absl::Hours(1), RateLimitAlgorithm::kFixedWindow),
                        CallLimit(45, absl::Hours(1), RateLimitAlgorithm::kGcra, {.burst = 5})},
                       Shared({{"region", "eu"}}));
  const ExportedLimits exported =
      ExportLimitPool(LimitPool::Create({set}, {.balancing = LimitPoolBalancing::kRandom}));
  const LimitPool imported = ImportLimitPool(exported.blueprint, exported.fds);
  ASSERT_EQ(imported.size(), 1u);
  EXPECT_EQ(imported.options().balancing, LimitPoolBalancing::kRandom);
  const LimitSet& copy = imported[0];
  EXPECT_NE(copy, set);  // Another handle, the same state.
  ASSERT_EQ(copy.limits().size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(copy.limits()[i].DebugString(), set.limits()[i].DebugString());
    EXPECT_EQ(copy.limits()[i].window(), set.limits()[i].window());
  }
  EXPECT_EQ(copy.config().at("region"), "eu");
  EXPECT_EQ(copy.sharing(), LimitSharing::kProcesses);

  std::optional<LimitAcquisition> held = copy.TryAcquire({{"slots", 2}, {"tokens", 10}});
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(set.Stats().at("slots").in_use, 2);
  // GCRA refills continuously: one call is missing, less what came back since (one call per
  // 80 s: 0.1 of a call is 8 s, far beyond what a slow sanitizer build on a loaded machine takes
  // between the acquisition and this check).
  EXPECT_GT(set.Stats().at("call_count").in_use, 0.9);
  EXPECT_FALSE(set.TryAcquire({{"slots", 2}, {"tokens", 1}}).has_value());
  held->Update({{"tokens", 10}});
  held.reset();
  EXPECT_EQ(set.Stats().at("slots").in_use, 0);
  EXPECT_EQ(set.Stats().at("tokens").in_use, 10);
}

// Durations cross exactly: a window with a quarter nanosecond, an infinite lease interval.
TEST(ProcessTransferTest, DurationsRoundTripExactly) {
  const absl::Duration window = absl::Milliseconds(1500) + absl::Nanoseconds(0.25);
  LimitSetOptions options = Shared();
  options.lease_check_interval = absl::InfiniteDuration();
  options.max_holders = 7;
  LimitSet set = LimitSet::Create(
      {RateLimit("tokens", 10, window, RateLimitAlgorithm::kTokenBucket, {.burst = 2.5})}, options);
  const ExportedLimits exported = ExportLimitPool(LimitPool::Create({set}));
  const LimitPool imported = ImportLimitPool(exported.blueprint, exported.fds);
  const Limit& limit = imported[0].limits().at(0);
  EXPECT_EQ(limit.window(), window);
  EXPECT_EQ(limit.burst(), 2.5);
  EXPECT_TRUE(limit.explicit_burst());
  EXPECT_EQ(limit.algorithm(), RateLimitAlgorithm::kTokenBucket);
  const LimitSetOptions& copied = limits_internal::SetAccess::Options(imported[0]);
  EXPECT_EQ(copied.lease_check_interval, absl::InfiniteDuration());
  EXPECT_EQ(copied.max_holders, 7);
  EXPECT_EQ(copied.on_warning, nullptr);  // Warnings go to stderr.
}

TEST(ProcessTransferTest, AThreadsOnlySetCannotBeExported) {
  LimitSet threads = LimitSet::Create({ResourceLimit("slots", 3)}, {.config = {{"account", "x"}}});
  LimitSet shared = LimitSet::Create({ResourceLimit("slots", 3)}, Shared());
  try {
    ExportLimitPool(LimitPool::Create({shared, threads}));
    FAIL() << "no error";
  } catch (const InvalidOptionError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("set 1 (limits [slots], config {account: x})"), std::string::npos)
        << message;
    EXPECT_NE(message.find("LimitSharing::kThreads"), std::string::npos) << message;
    EXPECT_NE(message.find("LimitSharing::kProcesses"), std::string::npos) << message;
  }
}

TEST(ProcessTransferTest, ANoOpPoolExportsWithoutFdsAndImportsAsANoOpPool) {
  const ExportedLimits exported = ExportLimitPool(LimitPool());
  EXPECT_TRUE(exported.fds.empty());
  const LimitPool imported = ImportLimitPool(exported.blueprint, {});
  EXPECT_TRUE(imported.no_op());
  EXPECT_EQ(imported[0], LimitSet::NoOp());
  EXPECT_TRUE(imported.TryAcquire({{"anything", 5}}).has_value());

  // A no-op set with a config (a thread-only one, even) keeps its config.
  LimitSet with_config = LimitSet::Create({}, {.config = {{"account", "z"}}});
  const ExportedLimits second = ExportLimitPool(LimitPool::Create({with_config}));
  EXPECT_TRUE(second.fds.empty());
  const LimitPool again = ImportLimitPool(second.blueprint, {});
  EXPECT_TRUE(again.no_op());
  EXPECT_EQ(again[0].config().at("account"), "z");
}

void ExpectDataLoss(absl::string_view blueprint, absl::Span<const int> fds, absl::string_view why) {
  try {
    ImportLimitPool(blueprint, fds);
    ADD_FAILURE() << why << ": no error";
  } catch (const StatusError& error) {
    EXPECT_EQ(error.status().code(), absl::StatusCode::kDataLoss) << why;
    EXPECT_NE(std::string(error.what()).find("cannot be decoded"), std::string::npos)
        << error.what();
  } catch (const std::exception& error) {
    ADD_FAILURE() << why << ": wrong error: " << error.what();
  }
}

TEST(ProcessTransferTest, AGarbledBlueprintIsDataLoss) {
  LimitSet set = LimitSet::Create(
      {ResourceLimit("slots", 3), RateLimit("tokens", 50, absl::Hours(1))}, Shared());
  const ExportedLimits exported = ExportLimitPool(LimitPool::Create({set}));
  ExpectDataLoss("", exported.fds, "empty");
  ExpectDataLoss("garbage bytes, not a blueprint", exported.fds, "garbage");
  // Every truncation.
  for (size_t size = 0; size < exported.blueprint.size(); ++size) {
    ExpectDataLoss(absl::string_view(exported.blueprint).substr(0, size), exported.fds,
                   absl::StrCat("truncated to ", size));
  }
  ExpectDataLoss(exported.blueprint + "x", exported.fds, "a trailing byte");
  std::string wrong_magic = exported.blueprint;
  wrong_magic[0] ^= 0x20;
  ExpectDataLoss(wrong_magic, exported.fds, "another header");
  // A blueprint of version 3: an older build, whose process-shared state was laid out
  // differently (version 4 reordered the shared header's fields), is refused, and the error says
  // why.
  std::string version_3 = exported.blueprint;
  version_3[7] = 3;
  ExpectDataLoss(version_3, exported.fds, "version 3");
  try {
    ImportLimitPool(version_3, exported.fds);
    ADD_FAILURE() << "version 3: no error";
  } catch (const StatusError& error) {
    EXPECT_NE(std::string(error.what()).find("another format or"), std::string::npos)
        << error.what();
  }
  // Flipping any single byte never crashes: it is rejected (or, where the byte is free, such as
  // a name's letters, it decodes and the fd check judges it).
  for (size_t i = 0; i < exported.blueprint.size(); ++i) {
    std::string flipped = exported.blueprint;
    flipped[i] = static_cast<char>(flipped[i] ^ 0xff);
    try {
      ImportLimitPool(flipped, exported.fds);
    } catch (const StatusError&) {
    } catch (const InvalidOptionError&) {
    }
  }
}

void ExpectInvalid(absl::string_view blueprint, absl::Span<const int> fds,
                   absl::string_view expected) {
  try {
    ImportLimitPool(blueprint, fds);
    ADD_FAILURE() << "no error; expected: " << expected;
  } catch (const InvalidOptionError& error) {
    EXPECT_NE(std::string(error.what()).find(std::string(expected)), std::string::npos)
        << error.what();
  }
}

TEST(ProcessTransferTest, FdsThatDoNotMatchTheBlueprintAreRejected) {
  LimitSet set = LimitSet::Create(
      {RateLimit("tokens", 100, absl::Minutes(1), RateLimitAlgorithm::kGcra)}, Shared());
  const ExportedLimits exported = ExportLimitPool(LimitPool::Create({set}));
  ASSERT_EQ(exported.fds.size(), 1u);
  ExpectInvalid(exported.blueprint, {}, "1 process-shared sets, each needing its fd, but 0 fds");
  const int two[] = {exported.fds[0], exported.fds[0]};
  ExpectInvalid(exported.blueprint, two, "but 2 fds were given");
  const int closed[] = {-1};
  ExpectInvalid(exported.blueprint, closed, "cannot attach to fd -1");

  // The fd of a set of another size.
  LimitSet bigger =
      LimitSet::Create({RateLimit("tokens", 100, absl::Minutes(1), RateLimitAlgorithm::kGcra),
                        ResourceLimit("slots", 1)},
                       Shared());
  const int bigger_fd[] = {ExportLimitPool(LimitPool::Create({bigger})).fds[0]};
  ExpectInvalid(exported.blueprint, bigger_fd, "the fd belongs to another set");
  // Of the same size (GCRA's state does not grow with the capacity) but other parameters.
  LimitSet other = LimitSet::Create(
      {RateLimit("tokens", 200, absl::Minutes(1), RateLimitAlgorithm::kGcra)}, Shared());
  const int other_fd[] = {ExportLimitPool(LimitPool::Create({other})).fds[0]};
  ExpectInvalid(exported.blueprint, other_fd, "does not hold the state of RateLimit(key=tokens");
  // Not a memfd of a set at all.
  const int stdin_fd[] = {0};
  try {
    ImportLimitPool(exported.blueprint, stdin_fd);
    ADD_FAILURE() << "no error";
  } catch (const InvalidOptionError&) {
  }
}

// The fds stay the sets': importing twice, and closing the importer's copies, leaves the
// exporter's fds valid.
TEST(ProcessTransferTest, ImportingDuplicatesTheFds) {
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 2)}, Shared());
  const ExportedLimits exported = ExportLimitPool(LimitPool::Create({set}));
  {
    const LimitPool first = ImportLimitPool(exported.blueprint, exported.fds);
    std::optional<LimitAcquisition> one = first.TryAcquire({{"slots", 1}});
    ASSERT_TRUE(one.has_value());
    EXPECT_EQ(set.Stats().at("slots").in_use, 1);
  }
  const LimitPool second = ImportLimitPool(exported.blueprint, exported.fds);
  EXPECT_EQ(second[0].Stats().at("slots").in_use, 0);
  EXPECT_EQ(ExportLimitPool(LimitPool::Create({set})).fds, exported.fds);
}

}  // namespace
}  // namespace concurry

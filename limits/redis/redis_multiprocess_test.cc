// Several client processes, each with its own RedisLimitStore, sharing limits through one
// redis-server: the limits hold exactly across them (grants counted per window of the server's
// clock, resource holders counted in Redis itself), none starves, the units of a holder killed
// with SIGKILL come back when its lease expires, and a restart of Redis makes clients fail
// closed (RedisError) while it is down and succeed again once it is back.
//
// The parent forks its children while it is single-threaded (threads start only in the
// children: their stores, watchdogs), so this also runs under ThreadSanitizer. Children report
// through a page of shared memory and their exit codes; each has a watchdog, every wait of the
// parent has a deadline, and on any failure the parent kills and reaps every child it started.

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_limit_store.h"
#include "limits/redis/redis_options.h"
#include "testing/redis_server.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

constexpr int kClients = 4;
// Bounds every wait of the parent; a child's watchdog fires a little earlier.
constexpr absl::Duration kDeadline = absl::Seconds(60);
constexpr absl::Duration kChildWatchdog = absl::Seconds(50);

constexpr int kChildOk = 0;
constexpr int kChildFailed = 1;
constexpr int kChildThrew = 120;

// ---- Plumbing: shared memory, pipes, children ----

// A T in a MAP_SHARED anonymous mapping, made before fork() so that parent and children see the
// same object. T must be made of atomics and plain data.
template <typename T>
class SharedPage {
 public:
  SharedPage() {
    void* memory =
        mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory != MAP_FAILED) value_ = new (memory) T();
  }
  ~SharedPage() {
    if (value_ != nullptr) {
      value_->~T();
      munmap(value_, sizeof(T));
    }
  }
  SharedPage(const SharedPage&) = delete;
  SharedPage& operator=(const SharedPage&) = delete;

  bool ok() const { return value_ != nullptr; }
  T* operator->() { return value_; }
  T& operator*() { return *value_; }

 private:
  T* value_ = nullptr;
};

// A one-way byte channel between two processes.
class Pipe {
 public:
  Pipe() {
    if (pipe(fds_) != 0) fds_[0] = fds_[1] = -1;
  }
  ~Pipe() {
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  bool ok() const { return fds_[0] >= 0; }
  bool Send() {
    const char byte = 1;
    return write(fds_[1], &byte, 1) == 1;
  }
  // Whether a byte arrived within `timeout`.
  bool Receive(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd entry{fds_[0], POLLIN, 0};
      const int ready = poll(&entry, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      char byte;
      return read(fds_[0], &byte, 1) == 1;
    }
  }

 private:
  int fds_[2];
};

// The children a test forked. Destruction kills and reaps every child not yet reaped, so a
// failing test leaves no process behind.
class Children {
 public:
  Children() = default;
  ~Children() {
    for (const pid_t pid : running_) {
      kill(pid, SIGKILL);
      Reap(pid);
    }
  }
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;

  // Forks a child that runs `body` (returning its exit code) and _exit()s; -1 if fork() failed.
  // Call only while the process is single-threaded.
  template <typename Body>
  pid_t Start(Body body) {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // Never outlive the test.
      if (getppid() != parent) _exit(kChildThrew);
      int code = kChildThrew;
      try {
        code = body();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: uncaught exception: %s\n", getpid(), e.what());
      } catch (...) {
        std::fprintf(stderr, "child %d: uncaught exception\n", getpid());
      }
      std::fflush(stderr);
      _exit(code);
    }
    if (pid > 0) running_.push_back(pid);
    return pid;
  }

  // Waits up to `timeout` for `pid` to exit; "" if it exited with kChildOk, else what happened
  // (a child still running at the deadline is killed).
  std::string Finish(pid_t pid, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    int status = 0;
    for (;;) {
      const pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) break;
      if (done < 0 && errno != EINTR) return absl::StrCat("waitpid(", pid, ") failed");
      if (absl::Now() >= deadline) {
        kill(pid, SIGKILL);
        Reap(pid);
        Forget(pid);
        return absl::StrCat("child ", pid, " still ran after ", absl::FormatDuration(timeout));
      }
      // A child's end has no event this loop could wait on without a thread or a signal
      // handler (pidfd is not always allowed in the sandbox): look again shortly.
      absl::SleepFor(absl::Milliseconds(5));
    }
    Forget(pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == kChildOk) return "";
    if (WIFEXITED(status)) return absl::StrCat("child ", pid, " exited with ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
      return absl::StrCat("child ", pid, " died of signal ", WTERMSIG(status));
    }
    return absl::StrCat("child ", pid, " ended with status ", status);
  }

  // SIGKILLs `pid` and reaps it.
  void Kill(pid_t pid) {
    kill(pid, SIGKILL);
    Reap(pid);
    Forget(pid);
  }

 private:
  static void Reap(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  void Forget(pid_t pid) { std::erase(running_, pid); }

  std::vector<pid_t> running_;
};

// Polls `condition` (a counter children write to shared memory) until it holds or `timeout`
// passes.
template <typename Condition>
bool Eventually(Condition condition, absl::Duration timeout = kDeadline) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// A child's first failure, copied into shared memory for the parent's report.
struct FailureNote {
  std::atomic<bool> set{false};
  char text[512] = {};

  void Write(const std::string& message) {
    if (set.exchange(true)) return;
    std::snprintf(text, sizeof(text), "%s", message.c_str());
  }
};

// ---- Redis helpers ----

// A private redis-server for one test; the test fails with the reason when there is none.
std::unique_ptr<testkit::RedisServer> StartRedis() {
  std::string why_not;
  if (!testkit::RedisServer::Available(&why_not)) {
    ADD_FAILURE() << "no redis-server: " << why_not;
    return nullptr;
  }
  return testkit::RedisServer::Start();
}

RedisOptions ClientOptions(int port, absl::Duration lease_ttl = absl::Seconds(10)) {
  RedisOptions options;
  options.host = "127.0.0.1";
  options.port = port;
  options.key_prefix = "multiprocess:";
  options.lease_ttl = lease_ttl;
  return options;
}

// The options of the set `name` in `store`.
LimitSetOptions InStore(std::shared_ptr<RedisLimitStore> store, std::string name) {
  LimitSetOptions options;
  options.sharing = LimitSharing::kHosts;
  options.store = std::move(store);
  options.name = std::move(name);
  return options;
}

// The server's clock (TIME) in µs since the epoch.
int64_t ServerMicros(redis_internal::RedisClient& client) {
  const redis_internal::RedisReply reply = client.Command({"TIME"});
  return std::stoll(reply.elements().at(0).str()) * 1'000'000 +
         std::stoll(reply.elements().at(1).str());
}

// ---- 1. Four processes hammering one rate limit and one resource limit ----

constexpr int kRatePerSecond = 50;
constexpr int kSlots = 2;
constexpr absl::Duration kHammerFor = absl::Seconds(3);
constexpr int kMaxGrants = 4096;
constexpr absl::Duration kHoldFor = absl::Milliseconds(20);

struct HammerRecord {
  struct Grant {
    int32_t client;
    // The server's clock just before Acquire() and just after it returned: the grant happened
    // in between.
    int64_t before_us;
    int64_t after_us;
  };
  std::atomic<int32_t> grants_size{0};
  Grant grants[kMaxGrants];
  std::atomic<int64_t> per_client[kClients] = {};
  std::atomic<int64_t> max_holders{0};
  FailureNote failure[kClients];
};

// Takes 1 of the rate limit and 1 slot (implicit) over and over for kHammerFor, mostly with
// TryAcquire() (a grant whose server-time bracket is a few round trips wide) and every fourth
// time with Acquire(), which waits in the FIFO queue (a bracket as wide as the wait). While
// holding, it counts itself into a Redis counter of holders and notes the largest count seen.
int Hammer(int client, int port, HammerRecord& record) {
  testkit::Watchdog watchdog(kChildWatchdog, absl::StrCat("hammering client ", client));
  const std::shared_ptr<RedisLimitStore> store = RedisLimitStore::Connect(ClientOptions(port));
  redis_internal::RedisClient probe(ClientOptions(port));
  const LimitSet set = LimitSet::Create(
      {RateLimit("requests", kRatePerSecond, absl::Seconds(1), RateLimitAlgorithm::kFixedWindow),
       ResourceLimit("slots", kSlots)},
      InStore(store, "hammer"));
  const absl::Time end = absl::Now() + kHammerFor;
  for (int attempt = 0; absl::Now() < end; ++attempt) {
    const int64_t before = ServerMicros(probe);
    std::optional<LimitAcquisition> acquired;
    try {
      if (attempt % 4 == 3) {
        acquired = set.Acquire({{"requests", 1}}, absl::Seconds(10));
      } else {
        acquired = set.TryAcquire({{"requests", 1}});
      }
    } catch (const std::exception& e) {
      record.failure[client].Write(absl::StrCat("Acquire: ", e.what()));
      return kChildFailed;
    }
    if (!acquired.has_value()) {
      // Refused: try again shortly (pacing, so that four spinning clients leave the server and
      // the other tests' processes some CPU).
      absl::SleepFor(absl::Milliseconds(1));
      continue;
    }
    const int64_t after = ServerMicros(probe);
    const int32_t at = record.grants_size.fetch_add(1);
    if (at >= kMaxGrants) {
      record.failure[client].Write("more grants than the record holds");
      return kChildFailed;
    }
    record.grants[at] = {client, before, after};
    record.per_client[client].fetch_add(1);
    // Counted in Redis after the grant and uncounted before the release, so the counter never
    // exceeds the slots truly held.
    const int64_t holders = probe.Command({"INCR", "multiprocess:holders"}).integer();
    int64_t seen = record.max_holders.load();
    while (holders > seen && !record.max_holders.compare_exchange_weak(seen, holders)) {
    }
    // Hold the slot a while (the work it guards): 50 grants at a window's start then need the
    // slots for 0.5 s, so the slots are contended as well as the rate.
    absl::SleepFor(kHoldFor);
    probe.Command({"DECR", "multiprocess:holders"});
    acquired->Update({{"requests", 1}});
    acquired->Release();
  }
  return kChildOk;
}

// Whether the grants, each known only to lie within its bracket, can be placed in windows so
// that no window holds more than `capacity`. For brackets (intervals) that is so exactly when
// every run of consecutive windows [i, j] contains at most capacity * (j - i + 1) whole
// brackets; returns the first run that does not, or "".
std::string OverfullWindows(const std::vector<std::pair<int64_t, int64_t>>& brackets,
                            int64_t capacity) {
  if (brackets.empty()) return "";
  int64_t first = INT64_MAX;
  int64_t last = INT64_MIN;
  for (const auto& [from, to] : brackets) {
    first = std::min(first, from);
    last = std::max(last, to);
  }
  for (int64_t i = first; i <= last; ++i) {
    for (int64_t j = i; j <= last; ++j) {
      int64_t inside = 0;
      for (const auto& [from, to] : brackets) inside += (from >= i && to <= j) ? 1 : 0;
      if (inside > capacity * (j - i + 1)) {
        return absl::StrCat(inside, " grants within windows ", i, "..", j, " (", j - i + 1,
                            " windows of ", capacity, ")");
      }
    }
  }
  return "";
}

// The check itself: it finds one grant too many, in one window or spread over a run of them.
TEST(OverfullWindowsTest, FindsOneGrantTooMany) {
  std::vector<std::pair<int64_t, int64_t>> brackets(50, {7, 7});
  EXPECT_EQ(OverfullWindows(brackets, 50), "");
  brackets.push_back({7, 7});
  EXPECT_EQ(OverfullWindows(brackets, 50), "51 grants within windows 7..7 (1 windows of 50)");
  // 50 in window 7, 50 in window 8, and one that lies somewhere in 7..8: one too many.
  brackets.assign(50, {7, 7});
  brackets.insert(brackets.end(), 50, {8, 8});
  EXPECT_EQ(OverfullWindows(brackets, 50), "");
  brackets.push_back({7, 8});
  EXPECT_EQ(OverfullWindows(brackets, 50), "101 grants within windows 7..8 (2 windows of 50)");
  // One that may lie in window 9 fits.
  brackets.back() = {8, 9};
  EXPECT_EQ(OverfullWindows(brackets, 50), "");
}

TEST(RedisMultiprocessTest, FourClientsHoldTheLimitsExactlyAndNoneStarves) {
  const std::unique_ptr<testkit::RedisServer> server = StartRedis();
  ASSERT_NE(server, nullptr);
  SharedPage<HammerRecord> record;
  ASSERT_TRUE(record.ok());
  Children children;
  std::vector<pid_t> pids;
  for (int client = 0; client < kClients; ++client) {
    pids.push_back(children.Start([&, client] { return Hammer(client, server->port(), *record); }));
    ASSERT_GT(pids.back(), 0) << "fork failed";
  }
  for (int client = 0; client < kClients; ++client) {
    EXPECT_EQ(children.Finish(pids[client], kDeadline), "")
        << "client " << client << ": " << record->failure[client].text;
  }

  // Each grant as the range of 1 s windows (aligned to the epoch, as FixedWindow's) its bracket
  // of server time touches.
  const int32_t total = std::min(record->grants_size.load(), kMaxGrants);
  ASSERT_GT(total, 0);
  std::vector<std::pair<int64_t, int64_t>> brackets;
  int straddling = 0;
  for (int32_t i = 0; i < total; ++i) {
    const HammerRecord::Grant& grant = record->grants[i];
    brackets.emplace_back(grant.before_us / 1'000'000, grant.after_us / 1'000'000);
    if (brackets.back().first != brackets.back().second) ++straddling;
  }
  EXPECT_EQ(OverfullWindows(brackets, kRatePerSecond), "");
  // The brackets are narrow enough for that to mean something: most lie in one window.
  EXPECT_LE(straddling, total / 4);
  // The limit is the bottleneck (four clients ask far more than 50 a second), so the run gets
  // at least a full window's worth over its 3 s.
  EXPECT_GE(total, kRatePerSecond);
  // The slots were full at times, and never overfull.
  EXPECT_EQ(record->max_holders.load(), kSlots);
  std::vector<std::string> shares;
  for (int client = 0; client < kClients; ++client) {
    const int64_t got = record->per_client[client].load();
    shares.push_back(absl::StrCat(got));
    // Fair would be total / 4; starving is far below it.
    EXPECT_GE(got, total / (4 * kClients)) << "client " << client << " starved";
  }
  std::printf(
      "grants: %d, %d straddling a window boundary; per client: %s; most holders at "
      "once: %lld\n",
      total, straddling, absl::StrJoin(shares, ", ").c_str(),
      static_cast<long long>(record->max_holders.load()));
}

// ---- 2. A holder killed with SIGKILL ----

constexpr absl::Duration kLeaseTtl = absl::Seconds(2);
// How much later than the lease's expiry the units may come back (a waiter's retry, the
// sanitizers' slowness).
constexpr absl::Duration kLeaseSlack = absl::Seconds(3);

struct LeaseRecord {
  std::atomic<int64_t> waited_ms{-1};
  std::atomic<bool> refused_while_held{false};
  // The waiter's Stats().recovered_holders once it got the units (-1: not read).
  std::atomic<int64_t> recovered_holders{-1};
  FailureNote failure[2];
};

TEST(RedisMultiprocessTest, TheUnitsOfAKilledHolderComeBackWithinTheLeaseTtl) {
  const std::unique_ptr<testkit::RedisServer> server = StartRedis();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  SharedPage<LeaseRecord> record;
  ASSERT_TRUE(record.ok());
  Pipe holding;
  Pipe waiter_ready;
  Pipe holder_killed;
  ASSERT_TRUE(holding.ok() && waiter_ready.ok() && holder_killed.ok());
  const auto open_set = [](const std::shared_ptr<RedisLimitStore>& store) {
    return LimitSet::Create({ResourceLimit("slots", 2)}, InStore(store, "lease"));
  };

  Children children;
  // Holds both slots, then waits to be killed.
  const pid_t holder = children.Start([&] {
    testkit::Watchdog watchdog(kChildWatchdog, "the holder");
    const std::shared_ptr<RedisLimitStore> store =
        RedisLimitStore::Connect(ClientOptions(port, kLeaseTtl));
    const LimitSet set = open_set(store);
    LimitAcquisition both = set.Acquire({{"slots", 2}}, absl::Seconds(10));
    holding.Send();
    for (;;) pause();  // The parent SIGKILLs this process; the watchdog bounds the wait.
    return kChildOk;
  });
  ASSERT_GT(holder, 0);
  ASSERT_TRUE(holding.Receive(kDeadline)) << "the holder did not acquire";
  // Held for more than a lease: the renewals keep it.
  absl::SleepFor(kLeaseTtl + absl::Milliseconds(500));

  const pid_t waiter = children.Start([&] {
    testkit::Watchdog watchdog(kChildWatchdog, "the waiter");
    const std::shared_ptr<RedisLimitStore> store =
        RedisLimitStore::Connect(ClientOptions(port, kLeaseTtl));
    const LimitSet set = open_set(store);
    record->refused_while_held.store(!set.TryAcquire().has_value());
    waiter_ready.Send();
    if (!holder_killed.Receive(kDeadline)) {
      record->failure[1].Write("never told the holder was killed");
      return kChildFailed;
    }
    const absl::Time start = absl::Now();
    try {
      LimitAcquisition one = set.Acquire({}, absl::Seconds(20));
      record->waited_ms.store(absl::ToInt64Milliseconds(absl::Now() - start));
      // The reaped lease counts as one recovered holder (one acquisition of two units).
      record->recovered_holders.store(set.Stats().recovered_holders);
    } catch (const std::exception& e) {
      record->failure[1].Write(absl::StrCat("Acquire: ", e.what()));
      return kChildFailed;
    }
    return kChildOk;
  });
  ASSERT_GT(waiter, 0);
  ASSERT_TRUE(waiter_ready.Receive(kDeadline));
  EXPECT_TRUE(record->refused_while_held.load()) << "both slots should still be held";
  children.Kill(holder);
  ASSERT_TRUE(holder_killed.Send());
  EXPECT_EQ(children.Finish(waiter, kDeadline), "") << record->failure[1].text;
  const int64_t waited_ms = record->waited_ms.load();
  ASSERT_GE(waited_ms, 0);
  EXPECT_LE(waited_ms, absl::ToInt64Milliseconds(kLeaseTtl + kLeaseSlack));
  EXPECT_EQ(record->recovered_holders.load(), 1);
  std::printf("the killed holder's slot came back after %lld ms (lease TTL %s)\n",
              static_cast<long long>(waited_ms), absl::FormatDuration(kLeaseTtl).c_str());
}

// ---- 3. Redis restarted mid-run ----

// Phases the parent announces. kDown is stored after the server has stopped and left before it
// starts again, so a call that begins and ends in kDown ran entirely while Redis was down.
constexpr int kUp = 0;
constexpr int kDown = 1;
constexpr int kRestarting = 2;  // Restart() runs: Redis may be up already.
constexpr int kBackUp = 3;

struct RestartRecord {
  std::atomic<int> phase{kUp};
  struct PerClient {
    std::atomic<int64_t> granted_before{0};  // Granted before the outage.
    std::atomic<int64_t> granted_down{0};    // Acquire() began and returned while Redis was down.
    std::atomic<int64_t> granted_after{0};   // Acquire() began after Redis came back.
    std::atomic<int64_t> redis_errors{0};
    std::atomic<int64_t> redis_errors_down{0};
    std::atomic<int64_t> timeouts{0};
    std::atomic<int64_t> longest_call_ms{0};
  } clients[kClients];
  FailureNote failure[kClients];
};

// Whether the hammering clients have what the restart test waits for after the restart.
constexpr int kGrantsAfter = 5;
// A call while Redis is down ends within its timeout plus the client's command and connect
// timeouts (1 s each by default) and the sanitizers' slowness.
constexpr absl::Duration kCallTimeout = absl::Milliseconds(500);
constexpr absl::Duration kLongestCall = absl::Seconds(6);

int RideOutRestart(int client, int port, RestartRecord& record) {
  testkit::Watchdog watchdog(kChildWatchdog, absl::StrCat("restart client ", client));
  RestartRecord::PerClient& mine = record.clients[client];
  const std::shared_ptr<RedisLimitStore> store = RedisLimitStore::Connect(ClientOptions(port));
  LimitSetOptions options = InStore(store, "restart");
  options.on_warning = [](absl::string_view) {};  // Releases while Redis is down warn: expected.
  const LimitSet set =
      LimitSet::Create({RateLimit("requests", 1000, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                        ResourceLimit("slots", kSlots)},
                       std::move(options));
  const absl::Time give_up = absl::Now() + kChildWatchdog - absl::Seconds(5);
  while (mine.granted_after.load() < kGrantsAfter) {
    if (absl::Now() > give_up) {
      record.failure[client].Write(absl::StrCat(
          "gave up: granted ", mine.granted_before.load(), " before, ", mine.granted_after.load(),
          " after the restart, ", mine.redis_errors.load(), " RedisErrors"));
      return kChildFailed;
    }
    const int phase_before = record.phase.load();
    const absl::Time start = absl::Now();
    try {
      LimitAcquisition acquired = set.Acquire({{"requests", 1}}, kCallTimeout);
      const int phase_after = record.phase.load();
      if (phase_before == kUp) {
        mine.granted_before.fetch_add(1);
      } else if (phase_before == kDown && phase_after == kDown) {
        mine.granted_down.fetch_add(1);
      } else if (phase_before == kBackUp) {
        mine.granted_after.fetch_add(1);
      }
      acquired.Update({{"requests", 1}});
      acquired.Release();
    } catch (const RedisError&) {
      mine.redis_errors.fetch_add(1);
      if (phase_before == kDown && record.phase.load() == kDown) {
        mine.redis_errors_down.fetch_add(1);
      }
      // Calls fail at once while Redis is down: pace the retries, as a real client would.
      absl::SleepFor(absl::Milliseconds(1));
    } catch (const TimeoutError&) {
      mine.timeouts.fetch_add(1);
    } catch (const std::exception& e) {
      record.failure[client].Write(absl::StrCat("unexpected error: ", e.what()));
      return kChildFailed;
    }
    const int64_t took = absl::ToInt64Milliseconds(absl::Now() - start);
    int64_t longest = mine.longest_call_ms.load();
    while (took > longest && !mine.longest_call_ms.compare_exchange_weak(longest, took)) {
    }
  }
  return kChildOk;
}

TEST(RedisMultiprocessTest, ClientsFailClosedWhileRedisIsDownAndRecoverAfterItsRestart) {
  const std::unique_ptr<testkit::RedisServer> server = StartRedis();
  ASSERT_NE(server, nullptr);
  SharedPage<RestartRecord> record;
  ASSERT_TRUE(record.ok());
  Children children;
  std::vector<pid_t> pids;
  for (int client = 0; client < kClients; ++client) {
    pids.push_back(
        children.Start([&, client] { return RideOutRestart(client, server->port(), *record); }));
    ASSERT_GT(pids.back(), 0) << "fork failed";
  }
  // Forking is over: the parent may have threads now.
  testkit::Watchdog watchdog(kDeadline + absl::Seconds(30), "the restart test's parent");
  ASSERT_TRUE(Eventually([&] {
    for (const auto& client : record->clients) {
      if (client.granted_before.load() < 5) return false;
    }
    return true;
  })) << "the clients did not get going";

  server->Stop();
  record->phase.store(kDown);
  // Down until every client has seen the outage as a RedisError.
  const bool all_saw_it = Eventually(
      [&] {
        for (const auto& client : record->clients) {
          if (client.redis_errors_down.load() == 0) return false;
        }
        return true;
      },
      absl::Seconds(20));
  record->phase.store(kRestarting);
  server->Restart();
  record->phase.store(kBackUp);
  EXPECT_TRUE(all_saw_it) << "a client saw no RedisError while Redis was down";

  for (int client = 0; client < kClients; ++client) {
    SCOPED_TRACE(absl::StrCat("client ", client));
    EXPECT_EQ(children.Finish(pids[client], kDeadline), "") << record->failure[client].text;
    const RestartRecord::PerClient& c = record->clients[client];
    EXPECT_EQ(c.granted_down.load(), 0) << "granted while Redis was down: not fail-closed";
    EXPECT_GE(c.redis_errors.load(), 1);
    EXPECT_GE(c.granted_after.load(), kGrantsAfter);
    EXPECT_LE(c.longest_call_ms.load(), absl::ToInt64Milliseconds(kLongestCall));
    std::printf(
        "client %d: %lld granted before, %lld after, %lld RedisErrors, %lld timeouts, "
        "longest call %lld ms\n",
        client, static_cast<long long>(c.granted_before.load()),
        static_cast<long long>(c.granted_after.load()),
        static_cast<long long>(c.redis_errors.load()), static_cast<long long>(c.timeouts.load()),
        static_cast<long long>(c.longest_call_ms.load()));
  }
}

}  // namespace
}  // namespace concurry

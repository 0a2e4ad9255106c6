// Tests of LimitSharing::kProcesses with real fork()ed children: the state is shared, the
// algorithms keep their semantics across processes, blocked acquirers are woken by another
// process's release, and what a killed process held (or queued for) comes back.
//
// Children run short, simple code (the set's own calls, pipes, _exit()) and never start threads;
// the parent forks only while it is single-threaded. Every child is reaped by the test (its exit
// status checked) or, on any failure, killed and reaped by a Children guard; a child also dies
// with the test process (PR_SET_PDEATHSIG). Every wait has a deadline, so a bug fails a test
// instead of hanging it.

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "gtest/gtest.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_access.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

// Generous bound for anything a test waits for: a bug fails the test instead of hanging it.
constexpr absl::Duration kDeadline = absl::Seconds(20);

// Exit codes of children.
constexpr int kChildOk = 0;
constexpr int kChildException = 120;

// A pipe; both ends closed on destruction.
class Pipe {
 public:
  Pipe() {
    if (pipe(fds_) != 0) fds_[0] = fds_[1] = -1;
  }
  ~Pipe() {
    CloseRead();
    CloseWrite();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  bool ok() const { return fds_[0] >= 0; }
  void CloseRead() {
    if (fds_[0] >= 0) close(fds_[0]);
    fds_[0] = -1;
  }
  void CloseWrite() {
    if (fds_[1] >= 0) close(fds_[1]);
    fds_[1] = -1;
  }
  // Writes one byte; returns whether it was written.
  bool Signal() {
    const char byte = 1;
    return write(fds_[1], &byte, 1) == 1;
  }
  // Reads one byte, waiting up to `timeout`; false on timeout, end of file or error.
  bool Await(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (;;) {
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms < 0) return false;
      pollfd entry{fds_[0], POLLIN, 0};
      const int ready = poll(&entry, 1, static_cast<int>(left_ms));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      char byte;
      return read(fds_[0], &byte, 1) == 1;
    }
  }
  // Child side: blocks until a byte arrives or the writer closes (then returns false).
  bool AwaitForever() {
    char byte;
    ssize_t result;
    do {
      result = read(fds_[0], &byte, 1);
    } while (result < 0 && errno == EINTR);
    return result == 1;
  }

 private:
  int fds_[2];
};

// Counters in a MAP_SHARED page, written by children and read by the parent.
class SharedCounters {
 public:
  static constexpr int kCount = 64;
  SharedCounters() {
    void* memory =
        mmap(nullptr, sizeof(Block), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    block_ = memory == MAP_FAILED ? nullptr : new (memory) Block();
  }
  ~SharedCounters() {
    if (block_ != nullptr) munmap(block_, sizeof(Block));
  }
  SharedCounters(const SharedCounters&) = delete;
  SharedCounters& operator=(const SharedCounters&) = delete;

  bool ok() const { return block_ != nullptr; }
  std::atomic<int64_t>& operator[](int i) { return block_->counters[i]; }

 private:
  struct Block {
    std::atomic<int64_t> counters[kCount] = {};
  };
  Block* block_ = nullptr;
};

// The children of one test. Fork() runs a body in a child that then _exit()s with the body's
// result; every child not reaped by Wait() is killed and reaped on destruction.
class Children {
 public:
  Children() = default;
  ~Children() {
    for (pid_t pid : live_) {
      kill(pid, SIGKILL);
      int status;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;

  // Forks a child running `body()` (returning its exit code); -1 if fork() failed.
  template <typename Body>
  pid_t Fork(Body body) {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      // Die with the test process; it may have died before prctl().
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(kChildException);
      int code = kChildException;
      try {
        code = body();
      } catch (...) {
      }
      _exit(code);
    }
    if (pid > 0) live_.push_back(pid);
    return pid;
  }

  // Waits up to `timeout` for `pid` to end and returns its wait status, or nullopt on timeout
  // (the child is then killed and reaped).
  std::optional<int> Wait(pid_t pid, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    std::optional<int> result;
    for (;;) {
      int status = 0;
      const pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) {
        result = status;
        break;
      }
      if (done < 0 && errno != EINTR) break;
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      if (pidfd >= 0) {
        // Readable when the child ends.
        pollfd entry{pidfd, POLLIN, 0};
        poll(&entry, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      } else {
        // No pidfd (old kernel or filtered): check again shortly.
        absl::SleepFor(std::min(left, absl::Milliseconds(2)));
      }
    }
    if (pidfd >= 0) close(pidfd);
    if (!result.has_value()) Kill(pid);
    Forget(pid);
    return result;
  }

  // Waits for `pid` and returns "" if it exited with kChildOk, else a description.
  std::string ExpectExitOk(pid_t pid, absl::Duration timeout = kDeadline) {
    const std::optional<int> status = Wait(pid, timeout);
    if (!status.has_value()) return absl::StrCat("child ", pid, " did not exit in time");
    if (WIFEXITED(*status) && WEXITSTATUS(*status) == kChildOk) return "";
    if (WIFEXITED(*status)) return absl::StrCat("child exited with code ", WEXITSTATUS(*status));
    if (WIFSIGNALED(*status)) return absl::StrCat("child killed by signal ", WTERMSIG(*status));
    return absl::StrCat("child ended with status ", *status);
  }

  // Sends SIGKILL to `pid` without reaping it.
  static void KillOnly(pid_t pid) { kill(pid, SIGKILL); }

  // Kills and reaps `pid`; returns its wait status.
  int Kill(pid_t pid) {
    kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    Forget(pid);
    return status;
  }

 private:
  void Forget(pid_t pid) { std::erase(live_, pid); }

  std::vector<pid_t> live_;
};

// Polls `condition` until it holds or `timeout` passes. Only for states of another process that
// have no event to wait on (e.g. "the child is now blocked in Acquire()").
template <typename Condition>
bool Eventually(Condition condition, absl::Duration timeout = kDeadline) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

LimitSetOptions Shared(absl::Duration lease_check_interval = absl::Milliseconds(100)) {
  LimitSetOptions options;
  options.sharing = LimitSharing::kProcesses;
  options.lease_check_interval = lease_check_interval;
  options.on_warning = [](absl::string_view) {};
  return options;
}

double InUse(const LimitSet& set, int index) { return set.Stats().limits[index].in_use; }

// A child inherits copies of the parent's acquisitions; destroying them (as a child that returns
// normally does) must not release the parent's units a second time.
TEST(LimitSetProcessTest, AChildDestroyingItsCopyOfTheParentsAcquisitionReleasesNothing) {
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 2)}, Shared());
  std::optional<LimitAcquisition> parents = set.Acquire({}, kDeadline);
  Children children;
  const pid_t child = children.Fork([&] {
    parents.reset();  // The child's copy.
    const LimitSetStats stats = set.Stats();
    return stats.limits[0].in_use == 1 && stats.holding == 1 ? kChildOk : 1;
  });
  ASSERT_GT(child, 0);
  EXPECT_EQ(children.ExpectExitOk(child), "");
  LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 1);
  EXPECT_EQ(stats.holding, 1);
  parents.reset();
  stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 0);
  EXPECT_EQ(stats.holding, 0);
}

TEST(LimitSetProcessTest, ResourceUnitsHeldByChildrenAreUnavailableToEveryone) {
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 2)}, Shared());
  Children children;
  Pipe acquired;
  Pipe release;
  ASSERT_TRUE(acquired.ok() && release.ok());
  std::vector<pid_t> holders;
  for (int i = 0; i < 2; ++i) {
    holders.push_back(children.Fork([&] {
      LimitAcquisition held = set.Acquire({}, absl::Seconds(10));
      acquired.Signal();
      release.AwaitForever();
      held.Release();
      return kChildOk;
    }));
    ASSERT_GT(holders.back(), 0);
  }
  ASSERT_TRUE(acquired.Await(kDeadline));
  ASSERT_TRUE(acquired.Await(kDeadline));

  // Both units are held by the children: the parent and a third process see none.
  EXPECT_FALSE(set.TryAcquire().has_value());
  LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 2);
  EXPECT_EQ(stats.limits[0].available, 0);
  EXPECT_EQ(stats.holding, 2);
  const pid_t third = children.Fork([&] {
    if (set.TryAcquire().has_value()) return 1;
    try {
      set.Acquire({}, absl::Milliseconds(20));
      return 2;
    } catch (const TimeoutError&) {
      return kChildOk;
    }
  });
  ASSERT_GT(third, 0);
  EXPECT_EQ(children.ExpectExitOk(third), "");

  ASSERT_TRUE(release.Signal());
  ASSERT_TRUE(release.Signal());
  for (pid_t pid : holders) EXPECT_EQ(children.ExpectExitOk(pid), "");
  stats = set.Stats();
  EXPECT_EQ(stats.limits[0].in_use, 0);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.acquisitions, 2);
  EXPECT_EQ(stats.timeouts, 1);
  EXPECT_EQ(stats.recovered_holders, 0);
  std::optional<LimitAcquisition> both[2] = {set.TryAcquire(), set.TryAcquire()};
  EXPECT_TRUE(both[0].has_value());
  EXPECT_TRUE(both[1].has_value());
}

class ProcessRateTest : public ::testing::TestWithParam<RateLimitAlgorithm> {};

// Four children race TryAcquire() on one 100-per-minute limit: the total admitted is the
// capacity (plus what a refilling algorithm regains during the test).
TEST_P(ProcessRateTest, ChildrenTogetherGetExactlyTheCapacity) {
  constexpr int kChildren = 4;
  constexpr int kAttemptsEach = 500;
  const RateLimitAlgorithm algorithm = GetParam();
  const absl::Time start = absl::Now();
  LimitSet set =
      LimitSet::Create({RateLimit("tokens", 100, absl::Minutes(1), algorithm)}, Shared());
  SharedCounters admitted;
  ASSERT_TRUE(admitted.ok());
  Pipe go;
  ASSERT_TRUE(go.ok());
  Children children;
  std::vector<pid_t> pids;
  for (int i = 0; i < kChildren; ++i) {
    pids.push_back(children.Fork([&, i] {
      if (!go.AwaitForever()) return 1;
      for (int attempt = 0; attempt < kAttemptsEach; ++attempt) {
        if (std::optional<LimitAcquisition> taken = set.TryAcquire({{"tokens", 1}})) {
          taken->Update({{"tokens", 1}});
          admitted[i].fetch_add(1, std::memory_order_relaxed);
        }
      }
      return kChildOk;
    }));
    ASSERT_GT(pids.back(), 0);
  }
  for (int i = 0; i < kChildren; ++i) ASSERT_TRUE(go.Signal());
  for (pid_t pid : pids) EXPECT_EQ(children.ExpectExitOk(pid), "");
  const absl::Duration elapsed = absl::Now() - start;

  int64_t total = 0;
  for (int i = 0; i < kChildren; ++i) total += admitted[i].load(std::memory_order_relaxed);
  // GCRA and TokenBucket refill continuously (one token per 0.6 s); the window algorithms give
  // nothing back within the minute.
  const bool refills =
      algorithm == RateLimitAlgorithm::kGcra || algorithm == RateLimitAlgorithm::kTokenBucket;
  const int64_t refilled =
      refills ? static_cast<int64_t>(absl::ToDoubleSeconds(elapsed) * 100 / 60) : 0;
  EXPECT_GE(total, 100);
  EXPECT_LE(total, 100 + refilled) << "elapsed " << elapsed;
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.acquisitions, total);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.missing_updates, 0);
  // The parent shares the exhausted state.
  if (refilled == 0) {
    EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
  }
}

// An explicit burst is part of the shared state: four children racing for one token per hour
// with a burst of 5 get exactly 5 together, and the parent sees the bucket empty.
TEST_P(ProcessRateTest, ChildrenTogetherGetExactlyTheBurst) {
  const RateLimitAlgorithm algorithm = GetParam();
  if (algorithm == RateLimitAlgorithm::kSlidingWindow) GTEST_SKIP() << "takes no burst";
  constexpr int kChildren = 4;
  LimitSet set =
      LimitSet::Create({RateLimit("tokens", 1, absl::Hours(1), algorithm, {.burst = 5})}, Shared());
  SharedCounters admitted;
  ASSERT_TRUE(admitted.ok());
  Pipe go;
  ASSERT_TRUE(go.ok());
  Children children;
  std::vector<pid_t> pids;
  for (int i = 0; i < kChildren; ++i) {
    pids.push_back(children.Fork([&, i] {
      if (!go.AwaitForever()) return 1;
      for (int attempt = 0; attempt < 10; ++attempt) {
        if (std::optional<LimitAcquisition> taken = set.TryAcquire({{"tokens", 1}})) {
          taken->Update({{"tokens", 1}});
          admitted[i].fetch_add(1, std::memory_order_relaxed);
        }
      }
      return kChildOk;
    }));
    ASSERT_GT(pids.back(), 0);
  }
  for (int i = 0; i < kChildren; ++i) ASSERT_TRUE(go.Signal());
  for (pid_t pid : pids) EXPECT_EQ(children.ExpectExitOk(pid), "");
  int64_t total = 0;
  for (int i = 0; i < kChildren; ++i) total += admitted[i].load(std::memory_order_relaxed);
  EXPECT_EQ(total, 5);
  EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
  const LimitStats& stats = set.Stats().at("tokens");
  EXPECT_EQ(stats.burst, 5);
  EXPECT_NEAR(stats.in_use, 5, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, ProcessRateTest,
                         ::testing::Values(RateLimitAlgorithm::kSlidingWindow,
                                           RateLimitAlgorithm::kGcra,
                                           RateLimitAlgorithm::kTokenBucket,
                                           RateLimitAlgorithm::kLeakyBucket),
                         [](const ::testing::TestParamInfo<RateLimitAlgorithm>& info) {
                           std::string name(RateLimitAlgorithmName(info.param));
                           std::erase(name, '_');
                           return name;
                         });

class ProcessRefundTest : public ::testing::TestWithParam<RateLimitAlgorithm> {};

// A child takes the whole capacity and reports using 40: the parent gets the other 60.
TEST_P(ProcessRefundTest, ChildRefundIsVisibleToTheParent) {
  // One token per 36 s: no refill to speak of during the test.
  LimitSet set = LimitSet::Create({RateLimit("tokens", 100, absl::Hours(1), GetParam())}, Shared());
  Children children;
  Pipe acquired;
  Pipe update;
  ASSERT_TRUE(acquired.ok() && update.ok());
  const pid_t child = children.Fork([&] {
    LimitAcquisition taken = set.Acquire({{"tokens", 100}}, absl::Seconds(10));
    acquired.Signal();
    if (!update.AwaitForever()) return 1;
    taken.Update({{"tokens", 40}});
    taken.Release();
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(acquired.Await(kDeadline));
  EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
  EXPECT_NEAR(InUse(set, 0), 100, 0.1);

  ASSERT_TRUE(update.Signal());
  EXPECT_EQ(children.ExpectExitOk(child), "");
  EXPECT_NEAR(InUse(set, 0), 40, 0.1);
  std::optional<LimitAcquisition> rest = set.TryAcquire({{"tokens", 60}});
  ASSERT_TRUE(rest.has_value());
  rest->Update({{"tokens", 60}});
  EXPECT_FALSE(set.TryAcquire({{"tokens", 1}}).has_value());
}

INSTANTIATE_TEST_SUITE_P(RefundingAlgorithms, ProcessRefundTest,
                         ::testing::Values(RateLimitAlgorithm::kGcra,
                                           RateLimitAlgorithm::kTokenBucket),
                         [](const ::testing::TestParamInfo<RateLimitAlgorithm>& info) {
                           std::string name(RateLimitAlgorithmName(info.param));
                           std::erase(name, '_');
                           return name;
                         });

// Sliding-window entries recorded by a child expire for the parent a window later.
TEST(LimitSetProcessTest, ChildUsageExpiresForTheParentAfterTheWindow) {
  LimitSet set = LimitSet::Create(
      {RateLimit("tokens", 5, absl::Milliseconds(300), RateLimitAlgorithm::kSlidingWindow)},
      Shared());
  Children children;
  const pid_t child = children.Fork([&] {
    std::optional<LimitAcquisition> taken = set.TryAcquire({{"tokens", 5}});
    if (!taken.has_value()) return 1;
    taken->Update({{"tokens", 5}});
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  EXPECT_EQ(children.ExpectExitOk(child), "");
  const absl::Time after_child = absl::Now();
  if (std::optional<LimitAcquisition> early = set.TryAcquire({{"tokens", 1}})) {
    // Only possible when the test was descheduled for a whole window.
    EXPECT_GE(absl::Now() - after_child, absl::ZeroDuration());
    early->Update({{"tokens", 1}});
    GTEST_SKIP() << "the window passed before the parent checked";
  }
  // Blocks until the child's entry expires (event-driven: woken at the expiry time).
  LimitAcquisition later = set.Acquire({{"tokens", 5}}, kDeadline);
  later.Update({{"tokens", 5}});
  EXPECT_LE(absl::Now() - after_child, absl::Milliseconds(300) + absl::Seconds(2));
}

// Parent blocked in Acquire(): the child's release wakes it through the futex, not the lease
// check (set to an hour here).
TEST(LimitSetProcessTest, BlockedParentWakesWhenChildReleases) {
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 1)}, Shared(absl::Hours(1)));
  Children children;
  Pipe acquired;
  ASSERT_TRUE(acquired.ok());
  const pid_t child = children.Fork([&] {
    LimitAcquisition held = set.Acquire({}, absl::Seconds(10));
    acquired.Signal();
    // Release once the parent is blocked.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (set.Stats().waiting < 1) {
      if (absl::Now() >= deadline) return 1;
      absl::SleepFor(absl::Milliseconds(1));
    }
    held.Release();
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(acquired.Await(kDeadline));
  const absl::Time start = absl::Now();
  LimitAcquisition mine = set.Acquire({}, kDeadline);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(children.ExpectExitOk(child), "");
  EXPECT_EQ(set.Stats().waiting, 0);
}

// The other way round: a child blocked in Acquire() wakes when the parent releases.
TEST(LimitSetProcessTest, BlockedChildWakesWhenParentReleases) {
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 1)}, Shared(absl::Hours(1)));
  std::optional<LimitAcquisition> mine = set.TryAcquire();
  ASSERT_TRUE(mine.has_value());
  Children children;
  const pid_t child = children.Fork([&] {
    LimitAcquisition taken = set.Acquire({}, absl::Seconds(10));
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  mine.reset();
  EXPECT_EQ(children.ExpectExitOk(child, absl::Seconds(10)), "");
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.acquisitions, 2);
}

// A child killed while holding the only unit: the parent, blocked waiting for it, gets it within
// the lease check interval.
TEST(LimitSetProcessTest, UnitsOfKilledHolderComeBackWithinLeaseInterval) {
  constexpr absl::Duration kLease = absl::Milliseconds(50);
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 1)}, Shared(kLease));
  Children children;
  Pipe acquired;
  Pipe never;
  ASSERT_TRUE(acquired.ok() && never.ok());
  const pid_t child = children.Fork([&] {
    LimitAcquisition held = set.Acquire({}, absl::Seconds(10));
    acquired.Signal();
    never.AwaitForever();  // Until killed.
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(acquired.Await(kDeadline));
  EXPECT_FALSE(set.TryAcquire().has_value());

  // Kill the child once the parent is blocked in Acquire(); the parent forks no more after
  // starting this thread.
  std::atomic<int64_t> killed_at_ns{0};
  std::thread killer([&] {
    if (!Eventually([&] { return set.Stats().waiting == 1; })) return;
    killed_at_ns.store(absl::GetCurrentTimeNanos(), std::memory_order_release);
    Children::KillOnly(child);  // Reaped below: a zombie counts as dead.
  });
  std::optional<LimitAcquisition> recovered;
  try {
    recovered = set.Acquire({}, kDeadline);
  } catch (const TimeoutError&) {
  }
  const int64_t acquired_at_ns = absl::GetCurrentTimeNanos();
  killer.join();
  ASSERT_TRUE(recovered.has_value());
  ASSERT_NE(killed_at_ns.load(std::memory_order_acquire), 0);
  const absl::Duration latency =
      absl::Nanoseconds(acquired_at_ns - killed_at_ns.load(std::memory_order_acquire));
  EXPECT_LE(latency, kLease + absl::Seconds(1));
  const std::optional<int> status = children.Wait(child, kDeadline);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL);

  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.recovered_holders, 1);
  EXPECT_EQ(stats.holding, 1);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.limits[0].in_use, 1);
  recovered.reset();
  EXPECT_EQ(set.Stats().limits[0].in_use, 0);
  EXPECT_EQ(set.Stats().holding, 0);
}

// A killed process's units also come back at the next acquisition that finds them short, when
// nobody was waiting at the time.
TEST(LimitSetProcessTest, UnitsOfKilledHolderComeBackAtNextShortAcquisition) {
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 3)}, Shared(absl::Milliseconds(50)));
  Children children;
  Pipe acquired;
  Pipe never;
  ASSERT_TRUE(acquired.ok() && never.ok());
  const pid_t child = children.Fork([&] {
    LimitAcquisition held = set.Acquire({{"slots", 2}}, absl::Seconds(10));
    acquired.Signal();
    never.AwaitForever();
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(acquired.Await(kDeadline));
  const int status = children.Kill(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  LimitAcquisition all = set.Acquire({{"slots", 3}}, kDeadline);
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.recovered_holders, 1);
  EXPECT_EQ(stats.limits[0].in_use, 3);
  EXPECT_EQ(stats.holding, 1);
}

// A child killed while holding a rate-limit acquisition it never updated: the tokens stay
// charged (as for a release without Update()), and the set keeps working, its holder slot
// included (max_holders = 1: the dead child's slot must be taken back for anyone to acquire).
TEST(LimitSetProcessTest, KilledRateHolderBreaksNothing) {
  LimitSetOptions options = Shared(absl::Milliseconds(50));
  options.max_holders = 1;
  LimitSet set =
      LimitSet::Create({RateLimit("tokens", 100, absl::Hours(1), RateLimitAlgorithm::kGcra),
                        CallLimit(1000, "hour")},
                       options);
  {
    std::optional<LimitAcquisition> first = set.TryAcquire({{"tokens", 10}});
    ASSERT_TRUE(first.has_value());
    first->Update({{"tokens", 10}});
  }
  Children children;
  Pipe acquired;
  Pipe never;
  ASSERT_TRUE(acquired.ok() && never.ok());
  const pid_t child = children.Fork([&] {
    LimitAcquisition held = set.Acquire({{"tokens", 30}}, absl::Seconds(10));
    acquired.Signal();
    never.AwaitForever();
    return kChildOk;
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(acquired.Await(kDeadline));
  const int status = children.Kill(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  // The parent goes on (first call after the death: it needs the dead child's slot).
  {
    std::optional<LimitAcquisition> more = set.TryAcquire({{"tokens", 60}});
    ASSERT_TRUE(more.has_value());
    more->Update({{"tokens", 20}});
  }
  EXPECT_NEAR(InUse(set, 0), 60, 0.1);
  // A new child gets the dead child's holder slot.
  const pid_t next = children.Fork([&] {
    try {
      std::optional<LimitAcquisition> taken = set.TryAcquire({{"tokens", 5}});
      if (!taken.has_value()) return 1;
      taken->Update({{"tokens", 5}});
      return kChildOk;
    } catch (const CapacityError&) {
      return 2;
    }
  });
  ASSERT_GT(next, 0);
  EXPECT_EQ(children.ExpectExitOk(next), "");
  const LimitSetStats stats = set.Stats();
  EXPECT_EQ(stats.holding, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.recovered_holders, 1);
  EXPECT_NEAR(stats.limits[0].in_use, 65, 0.1);
  EXPECT_EQ(stats.limits[1].in_use, 4);
}

// Children killed at random points of a tight acquire/release loop (sometimes inside the set's
// lock): the robust mutex lets the parent go on every time.
TEST(LimitSetProcessTest, ChildrenKilledMidOperationLeaveTheSetUsable) {
  LimitSet set =
      LimitSet::Create({RateLimit("tokens", 1e9, absl::Seconds(1), RateLimitAlgorithm::kGcra),
                        ResourceLimit("slots", 100)},
                       Shared(absl::Milliseconds(20)));
  Children children;
  for (int round = 0; round < 20; ++round) {
    Pipe started;
    ASSERT_TRUE(started.ok());
    const pid_t child = children.Fork([&] {
      started.Signal();
      for (;;) {
        LimitAcquisition taken = set.Acquire({{"tokens", 1}}, absl::Seconds(10));
        taken.Update({{"tokens", 1}});
      }
      return kChildOk;
    });
    ASSERT_GT(child, 0);
    ASSERT_TRUE(started.Await(kDeadline));
    absl::SleepFor(absl::Microseconds(200 * (round % 5)));  // Vary the point of death.
    const int status = children.Kill(child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    LimitAcquisition mine = set.Acquire({{"tokens", 1}, {"slots", 50}}, absl::Seconds(5));
    mine.Update({{"tokens", 1}});
  }
  // A death inside the lock may leave at most one acquisition's counts per death behind.
  EXPECT_LE(set.Stats().limits[1].in_use, 20);
}

// A child killed while queued first in line (FIFO): the queue moves on, for Acquire() and
// TryAcquire() alike.
TEST(LimitSetProcessTest, ProcessDyingWhileQueuedDoesNotBlockTheQueue) {
  constexpr absl::Duration kLease = absl::Milliseconds(50);
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 1)}, Shared(kLease));
  ASSERT_EQ(set.fairness(), LimitFairness::kFifo);
  std::optional<LimitAcquisition> mine = set.TryAcquire();
  ASSERT_TRUE(mine.has_value());
  Children children;
  const pid_t queued = children.Fork([&] {
    LimitAcquisition taken = set.Acquire({}, absl::Seconds(30));
    return 1;  // Killed before.
  });
  ASSERT_GT(queued, 0);
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  const int status = children.Kill(queued);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  mine.reset();

  // TryAcquire() never waits, but the dead ticket is dropped within the lease interval.
  const absl::Time start = absl::Now();
  EXPECT_TRUE(Eventually([&] { return set.TryAcquire().has_value(); }, absl::Seconds(5)));
  EXPECT_LE(absl::Now() - start, kLease + absl::Seconds(1));
  EXPECT_EQ(set.Stats().waiting, 0);

  // And Acquire() with a queued dead process ahead.
  mine = set.TryAcquire();
  ASSERT_TRUE(mine.has_value());
  const pid_t queued_again = children.Fork([&] {
    LimitAcquisition taken = set.Acquire({}, absl::Seconds(30));
    return 1;
  });
  ASSERT_GT(queued_again, 0);
  ASSERT_TRUE(Eventually([&] { return set.Stats().waiting == 1; }));
  children.Kill(queued_again);
  mine.reset();
  const absl::Time again = absl::Now();
  LimitAcquisition taken = set.Acquire({}, absl::Seconds(5));
  EXPECT_LE(absl::Now() - again, kLease + absl::Seconds(1));
}

TEST(LimitSetProcessTest, ProcessesRejectAFakeClock) {
  testkit::FakeClock clock;
  LimitSetOptions options;
  options.sharing = LimitSharing::kProcesses;
  options.clock = &clock;
  EXPECT_THROW(LimitSet::Create({ResourceLimit("slots", 1)}, options), InvalidOptionError);
  // The real clock, given explicitly, is accepted.
  options.clock = &Clock::Real();
  LimitSet set = LimitSet::Create({ResourceLimit("slots", 1)}, options);
  EXPECT_EQ(set.sharing(), LimitSharing::kProcesses);
}

// An fd whose rate state has the right size and parameters but another layout (RateLimiter's
// RateLayout::kLockSlot, its algorithm state 16 bytes further on) is refused: the attacher would
// run the algorithm on the wrong bytes. With the packed layout back, it attaches.
TEST(LimitSetProcessTest, AttachRefusesARateStateLaidOutForALockSlot) {
  using limits_internal::RateLayout;
  using limits_internal::RateState;
  const std::vector<Limit> limits = {RateLimit("calls", 10, absl::Seconds(1))};
  const LimitSet set = LimitSet::Create(limits, Shared());
  const int fd = limits_internal::SetAccess::SharedFd(set);
  const size_t bytes = limits_internal::SetAccess::SharedBytes(set);
  ASSERT_GE(fd, 0);
  void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  char* const block = static_cast<char*>(mapped);

  // The same rate state built both ways, in zeroed memory as the set's (so padding agrees too).
  // They differ only in their headers (the first sizeof(RateState) bytes).
  const Limit& limit = limits[0];
  const int64_t window_ns = absl::ToInt64Nanoseconds(limit.window());
  alignas(limits_internal::kRateCacheLine) char packed_memory[1024] = {};
  alignas(limits_internal::kRateCacheLine) char slot_memory[1024] = {};
  ASSERT_LE(RateState::BytesFor(limit.algorithm(), limit.capacity(), RateLayout::kLockSlot),
            sizeof(slot_memory));
  RateState::Create(packed_memory, limit.algorithm(), limit.capacity(), window_ns, limit.burst(),
                    RateLayout::kPacked);
  RateState::Create(slot_memory, limit.algorithm(), limit.capacity(), window_ns, limit.burst(),
                    RateLayout::kLockSlot);
  const size_t header = sizeof(RateState);
  ASSERT_NE(std::memcmp(packed_memory, slot_memory, header), 0);

  // Find the set's rate state by its header; it is there once.
  const std::string packed_header(packed_memory, header);
  const std::string contents(block, bytes);
  const size_t at = contents.find(packed_header);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(contents.find(packed_header, at + 1), std::string::npos);

  std::memcpy(block + at, slot_memory, header);
  try {
    limits_internal::SetAccess::Attach(limits, Shared(), fd);
    ADD_FAILURE() << "Attach() accepted a rate state laid out for a lock slot";
  } catch (const InvalidOptionError& error) {
    EXPECT_NE(std::string(error.what()).find("does not hold the state of RateLimit(key=calls"),
              std::string::npos)
        << error.what();
  }

  std::memcpy(block + at, packed_memory, header);
  LimitSet attached = limits_internal::SetAccess::Attach(limits, Shared(), fd);
  EXPECT_TRUE(attached.TryAcquire({{"calls", 1}}).has_value());
  munmap(mapped, bytes);
}

}  // namespace
}  // namespace concurry

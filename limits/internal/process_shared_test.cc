#include "limits/internal/process_shared.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <new>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace concurry {
namespace limits_internal {
namespace {

// Forks a child that runs `body` and _exit()s with its result; returns the child's pid.
template <typename Body>
pid_t ForkChild(Body body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  return pid;
}

int Reap(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST(ProcessSharedTest, IdsAndStartTimes) {
  EXPECT_EQ(CurrentPid(), getpid());
  EXPECT_GT(CurrentTid(), 0);
  EXPECT_GT(ProcessStartTime(getpid()), 0u);
  EXPECT_EQ(CurrentProcessStartTime(), ProcessStartTime(getpid()));
  // A fork()ed child sees its own ids, not the cached ones of its parent.
  const pid_t parent = getpid();
  const pid_t child = ForkChild([parent] {
    return CurrentPid() == getpid() && CurrentPid() != parent && CurrentTid() == getpid() ? 0 : 1;
  });
  ASSERT_GT(child, 0);
  const int status = Reap(child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ProcessSharedTest, LivenessTellsDeadZombieAndReusedProcesses) {
  EXPECT_TRUE(ProcessAlive(getpid(), CurrentProcessStartTime()));
  EXPECT_TRUE(ProcessAlive(getpid(), 0));  // Start time unknown: the id alone decides.
  // A different start time means the id now belongs to another process.
  EXPECT_FALSE(ProcessAlive(getpid(), CurrentProcessStartTime() + 1));
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = ForkChild([&] {
    char byte;
    return read(pipe_fds[0], &byte, 1) == 1 ? 0 : 1;
  });
  ASSERT_GT(child, 0);
  const uint64_t start = ProcessStartTime(child);
  EXPECT_TRUE(ProcessAlive(child, start));
  ASSERT_EQ(write(pipe_fds[1], "x", 1), 1);
  // Exited but not reaped: a zombie holds nothing.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (ProcessAlive(child, start) && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(1));
  EXPECT_FALSE(ProcessAlive(child, start));
  Reap(child);
  EXPECT_FALSE(ProcessAlive(child, start));  // Reaped: no such process.
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

TEST(ProcessSharedTest, ARobustMutexReportsAHolderThatDied) {
  void* memory = MapShared(sizeof(RobustMutex));
  ASSERT_NE(memory, nullptr);
  auto* mutex = new (memory) RobustMutex();
  mutex->Init();
  const pid_t child = ForkChild([mutex] {
    mutex->Lock();
    return 0;  // Exits holding it.
  });
  ASSERT_GT(child, 0);
  Reap(child);
  EXPECT_TRUE(mutex->Lock());  // The holder died: the caller must repair.
  mutex->Unlock();
  EXPECT_FALSE(mutex->Lock());  // Consistent again.
  mutex->Unlock();
  UnmapShared(memory, sizeof(RobustMutex));
}

TEST(ProcessSharedTest, FutexWaitsAcrossProcessesAndTimesOut) {
  void* memory = MapShared(sizeof(std::atomic<uint32_t>));
  ASSERT_NE(memory, nullptr);
  auto* word = new (memory) std::atomic<uint32_t>(0);
  // A value that differs returns at once; a timeout returns after it.
  FutexWait(word, 1, absl::Seconds(30));
  const absl::Time before = absl::Now();
  FutexWait(word, 0, absl::Milliseconds(20));
  EXPECT_GE(absl::Now() - before, absl::Milliseconds(15));
  // A child's change and wake reaches a waiter in this process.
  const pid_t child = ForkChild([word] {
    absl::SleepFor(absl::Milliseconds(20));
    word->store(1);
    FutexWakeAll(word);
    return 0;
  });
  ASSERT_GT(child, 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (word->load() == 0 && absl::Now() < deadline) FutexWait(word, 0, absl::Seconds(1));
  EXPECT_EQ(word->load(), 1u);
  Reap(child);
  UnmapShared(memory, sizeof(std::atomic<uint32_t>));
}

}  // namespace
}  // namespace limits_internal
}  // namespace concurry

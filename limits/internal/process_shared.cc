#include "limits/internal/process_shared.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"

namespace concurry {
namespace limits_internal {

void* MapShared(size_t bytes) {
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return memory == MAP_FAILED ? nullptr : memory;
}

void* CreateShared(const char* name, size_t bytes, int* fd) {
  // Through syscall(): memfd_create() needs glibc 2.27, the system call Linux 3.17.
  const int memfd = static_cast<int>(syscall(SYS_memfd_create, name, MFD_CLOEXEC));
  if (memfd < 0) return nullptr;
  // A fresh memfd is empty; ftruncate() makes it `bytes` long, zero-filled.
  if (ftruncate(memfd, static_cast<off_t>(bytes)) != 0) {
    const int error = errno;
    close(memfd);
    errno = error;
    return nullptr;
  }
  void* memory = MapSharedFd(memfd, bytes);
  if (memory == nullptr) {
    const int error = errno;
    close(memfd);
    errno = error;
    return nullptr;
  }
  *fd = memfd;
  return memory;
}

void* MapSharedFd(int fd, size_t bytes) {
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return memory == MAP_FAILED ? nullptr : memory;
}

int64_t SharedFdBytes(int fd) {
  struct stat info;
  if (fstat(fd, &info) != 0) return -1;
  return static_cast<int64_t>(info.st_size);
}

void UnmapShared(void* memory, size_t bytes) { munmap(memory, bytes); }

void RobustMutex::Init() {
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&mutex_, &attributes);
  pthread_mutexattr_destroy(&attributes);
}

bool RobustMutex::Lock() {
  // Critical sections are a few hundred ns: spin on trylock briefly before sleeping in the
  // kernel, which costs microseconds per hand-over between processes.
  int result = EBUSY;
  for (int spin = 0; spin < 100 && result == EBUSY; ++spin) {
    result = pthread_mutex_trylock(&mutex_);
#if defined(__x86_64__) || defined(__i386__)
    if (result == EBUSY) __builtin_ia32_pause();
#endif
  }
  if (result == EBUSY) result = pthread_mutex_lock(&mutex_);
  if (result == EOWNERDEAD) {
    pthread_mutex_consistent(&mutex_);
    return true;
  }
  return false;
}

void RobustMutex::Unlock() { pthread_mutex_unlock(&mutex_); }

namespace {

// One FUTEX_WAIT. Returns whether it ended by timing out (not by a wake-up, a changed word or a
// signal).
bool FutexWaitOnce(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  timespec relative = absl::ToTimespec(timeout);
  timespec* relative_or_null = timeout == absl::InfiniteDuration() ? nullptr : &relative;
  // Not FUTEX_PRIVATE_FLAG: waiters and wakers are in different processes.
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected,
                 relative_or_null, nullptr, 0) != 0 &&
         errno == ETIMEDOUT;
}

}  // namespace

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return;
  if (timeout > Clock::kBlockingGrace && BlockingRegion::WouldCompensate()) {
    // Inside a compensating executor's task (a tbb-mode worker): as Clock::AwaitWithDeadline
    // does, a short wait first, then a BlockingRegion so that the executor adds a thread.
    if (!FutexWaitOnce(word, expected, Clock::kBlockingGrace)) return;
    BlockingRegion blocking;
    FutexWaitOnce(word, expected, timeout - Clock::kBlockingGrace);
    return;
  }
  FutexWaitOnce(word, expected, timeout);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

namespace {

// Reads /proc/<pid>/stat into `buffer`. Returns false, with `*missing` set when the process does
// not exist, or false alone on any other failure.
bool ReadStat(pid_t pid, char* buffer, size_t size, bool* missing) {
  *missing = false;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  FILE* file = std::fopen(path, "r");
  if (file == nullptr) {
    *missing = errno == ENOENT || errno == ESRCH;
    return false;
  }
  const size_t read = std::fread(buffer, 1, size - 1, file);
  std::fclose(file);
  buffer[read] = '\0';
  return read > 0;
}

// The fields after the command, which is in parentheses and may contain spaces: state first.
const char* AfterCommand(const char* stat) {
  const char* paren = std::strrchr(stat, ')');
  return paren == nullptr || paren[1] == '\0' ? nullptr : paren + 2;
}

// The start time (field 22) from a stat line, or 0.
uint64_t StartTimeOf(const char* stat) {
  const char* cursor = AfterCommand(stat);  // Field 3.
  for (int field = 3; field < 22 && cursor != nullptr; ++field) {
    cursor = std::strchr(cursor, ' ');
    if (cursor != nullptr) ++cursor;
  }
  return cursor == nullptr ? 0 : std::strtoull(cursor, nullptr, 10);
}

std::atomic<uint64_t> cached_start_time{0};

}  // namespace

uint64_t ProcessStartTime(pid_t pid) {
  char buffer[1024];
  bool missing = false;
  if (!ReadStat(pid, buffer, sizeof(buffer), &missing)) return 0;
  return StartTimeOf(buffer);
}

uint64_t CurrentProcessStartTime() {
  // Keyed by the pid it was read for, so a fork()ed child reads its own.
  static std::atomic<pid_t> cached_for{0};
  const pid_t pid = CurrentPid();
  if (cached_for.load(std::memory_order_acquire) != pid) {
    cached_start_time.store(ProcessStartTime(pid), std::memory_order_relaxed);
    cached_for.store(pid, std::memory_order_release);
  }
  return cached_start_time.load(std::memory_order_relaxed);
}

bool ProcessAlive(pid_t pid, uint64_t start_time) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  char buffer[1024];
  bool missing = false;
  if (!ReadStat(pid, buffer, sizeof(buffer), &missing)) return !missing;
  const char* fields = AfterCommand(buffer);
  if (fields != nullptr && fields[0] == 'Z') return false;  // A zombie holds nothing any more.
  const uint64_t now_start = StartTimeOf(buffer);
  return start_time == 0 || now_start == 0 || now_start == start_time;
}

}  // namespace limits_internal
}  // namespace concurry

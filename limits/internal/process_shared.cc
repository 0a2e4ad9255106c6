#include "limits/internal/process_shared.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "absl/time/time.h"

namespace concurry {
namespace limits_internal {
namespace {

std::atomic<pid_t> cached_pid{0};
thread_local pid_t cached_tid = 0;

void ResetIdsInChild() {
  cached_pid.store(0, std::memory_order_relaxed);
  cached_tid = 0;  // The forking thread; other threads do not exist in the child.
}

void RegisterForkHandler() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, &ResetIdsInChild); });
}

}  // namespace

void* MapShared(size_t bytes) {
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return memory == MAP_FAILED ? nullptr : memory;
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
  const int result = pthread_mutex_lock(&mutex_);
  if (result == EOWNERDEAD) {
    pthread_mutex_consistent(&mutex_);
    return true;
  }
  return false;
}

void RobustMutex::Unlock() { pthread_mutex_unlock(&mutex_); }

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return;
  timespec relative = absl::ToTimespec(timeout);
  timespec* relative_or_null = timeout == absl::InfiniteDuration() ? nullptr : &relative;
  // Not FUTEX_PRIVATE_FLAG: waiters and wakers are in different processes.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, relative_or_null,
          nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

pid_t CurrentPid() {
  pid_t pid = cached_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    RegisterForkHandler();
    pid = getpid();
    cached_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

pid_t CurrentTid() {
  if (cached_tid == 0) {
    RegisterForkHandler();
    cached_tid = static_cast<pid_t>(syscall(SYS_gettid));
  }
  return cached_tid;
}

uint64_t ProcessStartTime(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return 0;
  char buffer[1024];
  const size_t size = std::fread(buffer, 1, sizeof(buffer) - 1, file);
  std::fclose(file);
  buffer[size] = '\0';
  // Field 2 (the command) is in parentheses and may contain spaces: count fields after the last
  // ')'. The start time is field 22, the 20th after it.
  const char* cursor = std::strrchr(buffer, ')');
  if (cursor == nullptr) return 0;
  for (int field = 2; field < 22 && cursor != nullptr; ++field) {
    cursor = std::strchr(cursor + 1, ' ');
  }
  if (cursor == nullptr) return 0;
  return std::strtoull(cursor + 1, nullptr, 10);
}

bool ProcessAlive(pid_t pid, uint64_t start_time) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  // The id may have been reused by a new process, or belong to an unreaped zombie.
  const uint64_t now_start = ProcessStartTime(pid);
  if (now_start == 0) return false;
  if (start_time != 0 && now_start != start_time) return false;
  // A zombie (state Z) holds nothing any more.
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return false;
  char buffer[512];
  const size_t size = std::fread(buffer, 1, sizeof(buffer) - 1, file);
  std::fclose(file);
  buffer[size] = '\0';
  const char* paren = std::strrchr(buffer, ')');
  return paren == nullptr || paren[1] == '\0' || paren[2] != 'Z';
}

}  // namespace limits_internal
}  // namespace concurry

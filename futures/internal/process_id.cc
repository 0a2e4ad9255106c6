#include "futures/internal/process_id.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace concurry {
namespace internal {
namespace {

// Relaxed: the value is the same whichever thread stores it; only a fork()ed child changes it,
// in its atfork handler, before any other thread exists there.
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

}  // namespace internal
}  // namespace concurry

// The operating-system pieces of a process-shared LimitSet: shared memory backed by a memfd
// (inherited by fork()ed children, and mappable by any process the fd is handed to), a robust
// process-shared mutex (its next owner learns when a holder died), futex waits on a word in shared
// memory, and process identity and liveness checks.

#ifndef CONCURRY_LIMITS_INTERNAL_PROCESS_SHARED_H_
#define CONCURRY_LIMITS_INTERNAL_PROCESS_SHARED_H_

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "futures/internal/process_id.h"

namespace concurry {
namespace limits_internal {

// Maps `bytes` of zeroed anonymous memory shared with processes fork()ed later (only those).
// Returns null on failure.
void* MapShared(size_t bytes);
// Creates a memfd of `bytes` zeroed bytes (close-on-exec, named `name` for /proc/<pid>/fd) and
// maps it shared: processes fork()ed later share the mapping, and any process that gets the fd
// (SCM_RIGHTS, dup) can map the same memory with MapSharedFd(). Returns the mapping and sets
// `*fd`, or returns null (errno set, no fd left open) on failure. The caller closes `*fd`.
void* CreateShared(const char* name, size_t bytes, int* fd);
// Maps `bytes` of the memory behind `fd` shared. Returns null (errno set) on failure.
void* MapSharedFd(int fd, size_t bytes);
// The size of the file behind `fd` in bytes, or -1 (errno set) if it cannot be read.
int64_t SharedFdBytes(int fd);
void UnmapShared(void* memory, size_t bytes);

// A mutex in shared memory, usable from every process that maps it. Robust: if a holder dies,
// the next Lock() succeeds and returns true so the caller can repair what the dead holder left.
class ABSL_LOCKABLE RobustMutex {
 public:
  // Initializes the mutex in place (in shared memory, before any fork).
  void Init();
  // Returns true if the previous holder died while holding it.
  bool Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION();
  void Unlock() ABSL_UNLOCK_FUNCTION();

 private:
  pthread_mutex_t mutex_;
};

// Blocks while `*word` == `expected`, until FutexWakeAll(word) or `timeout` (real time) passes.
// May return spuriously.
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout);
// Wakes every process and thread blocked in FutexWait() on `word`.
void FutexWakeAll(std::atomic<uint32_t>* word);

using ::concurry::internal::CurrentPid;
using ::concurry::internal::CurrentTid;
// ProcessStartTime(CurrentPid()), cached (and refreshed in a fork()ed child).
uint64_t CurrentProcessStartTime();
// A number that changes when a process id is reused: the process's start time in clock ticks
// since boot (/proc/<pid>/stat), or 0 if it cannot be read.
uint64_t ProcessStartTime(pid_t pid);
// Whether process `pid`, started at `start_time` (from ProcessStartTime(); 0 if unknown), still
// runs. Dead only when the system says so (no such process, or /proc shows it as a zombie or as
// a newer process with the same id); any other failure to look counts as alive, so a live
// holder is never robbed. Allocates nothing.
bool ProcessAlive(pid_t pid, uint64_t start_time);

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_PROCESS_SHARED_H_

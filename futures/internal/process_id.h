// The calling process's and thread's ids, cached (getpid() and gettid() are system calls) and
// refreshed in a fork()ed child, for code that must tell processes apart: process-shared limits,
// and timers whose thread a fork()ed child does not inherit.

#ifndef CONCURRY_FUTURES_INTERNAL_PROCESS_ID_H_
#define CONCURRY_FUTURES_INTERNAL_PROCESS_ID_H_

#include <sys/types.h>

namespace concurry {
namespace internal {

// This process's id. Thread-safe; a relaxed load after the first call.
pid_t CurrentPid();
// This thread's id (unique across processes). A thread-local read after the first call.
pid_t CurrentTid();

}  // namespace internal
}  // namespace concurry

#endif  // CONCURRY_FUTURES_INTERNAL_PROCESS_ID_H_

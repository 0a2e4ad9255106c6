// The worker process's side: builds the object and serves its calls, one at a time in FIFO order.

#ifndef CONCURRY_WORKERS_PROCESS_INTERNAL_CHILD_H_
#define CONCURRY_WORKERS_PROCESS_INTERNAL_CHILD_H_

#include <sys/types.h>

#include "workers/registration.h"

namespace concurry::process_internal {

// Runs in a new child right after fork(): makes it a clean worker process (dies with `parent`,
// default signal dispositions, no descriptor but stdio and `socket`), serves the worker on
// `socket` and exits. `known` is the class when the child is a fork of its creator (kFork), else
// null: the class is then found by the name in the construction frame.
[[noreturn]] void RunWorkerChild(int socket, const workers_internal::EncodedClass* known,
                                 pid_t parent);

// Serves one worker on `socket`: reads the construction frame, builds the object, replies, then
// answers calls until a stop frame or the end of the stream, and destroys the object. Returns
// the process exit status.
int ServeWorker(int socket, const workers_internal::EncodedClass* known);

}  // namespace concurry::process_internal

#endif  // CONCURRY_WORKERS_PROCESS_INTERNAL_CHILD_H_

// Starting and ending worker processes: by fork() of the caller, or from the fork server
// (fork_server.h), and what the parent learns about their end.

#ifndef CONCURRY_WORKERS_PROCESS_INTERNAL_LAUNCH_H_
#define CONCURRY_WORKERS_PROCESS_INTERNAL_LAUNCH_H_

#include <sys/types.h>

#include <string>

#include "absl/time/time.h"
#include "workers/options.h"
#include "workers/registration.h"

namespace concurry::process_internal {

// A worker process as its parent sees it. Owns `socket` and `pidfd`.
struct ChildProcess {
  pid_t pid = -1;
  // The parent's end of the worker's socket.
  int socket = -1;
  // A pidfd of the process (poll()able when it ends; signals never hit a recycled pid), or -1
  // when the kernel has none.
  int pidfd = -1;
  // Started with kFork: the caller's child, which the caller reaps.
  bool forked_here = false;
};

// Starts a process that serves one worker (child.h) on a new socket pair. kFork forks the
// calling thread (the child builds `cls` directly); kForkServer asks the fork server, starting it
// first when the program has one thread. Throws InvalidOptionError when the fork server is needed
// but cannot be started safely, CrashedError when no process can be started.
ChildProcess Launch(ProcessStart start, const workers_internal::EncodedClass& cls);

// Sends `signal` to the process (through its pidfd when there is one).
void Signal(const ChildProcess& child, int signal);

// Whether the process has ended, waiting up to `wait` for it.
bool WaitEnded(const ChildProcess& child, absl::Duration wait);

// How the process ended, in words ("was killed by signal 9 (Killed)", "exited with status 3"),
// waiting up to `wait` for it to end; reaps a process forked here. "ended" when unknown.
std::string DescribeEnd(const ChildProcess& child, absl::Duration wait);

// Reaps a process forked here that has ended or is about to (no-op otherwise), and closes the
// descriptors.
void Release(ChildProcess& child);

// In a new worker process, before it serves: forgets the parent's fork server client.
void ForgetForkServerInChild();

// Whether the calling program has one thread now.
bool SingleThreaded();

}  // namespace concurry::process_internal

#endif  // CONCURRY_WORKERS_PROCESS_INTERNAL_LAUNCH_H_

// The fork server: where Mode::kProcess workers come from by default (ProcessStart::kForkServer).
//
// A process that has started threads cannot fork() safely: the child gets a copy of every lock
// the other threads held at that instant, and those threads are not there to release them. So
// concurry forks workers from a small process that has never run anything but this: the fork
// server, forked from the program while it still has one thread. Start it at the top of main:
//
//   int main(int argc, char** argv) {
//     concurry::StartForkServer();  // before anything starts a thread
//     ...
//   }
//
// Workers forked from it run the same program (same code, same registered classes and
// exceptions), fresh: the state the program built after StartForkServer() is not in them, and
// neither is anything the program mapped later (a process-shared LimitSet reaches them through
// the worker's limits, passed when the worker starts).
//
// Without the call, the first process worker starts the server itself if the program has one
// thread at that moment (safe); otherwise creating the worker fails with InvalidOptionError that
// says to call StartForkServer() or to choose ProcessStart::kFork (docs/process.md) — never a
// fork of a threaded program behind the caller's back.
//
// The server ends when the program does (it is killed with the program, and its workers with it:
// no process is left behind even when the program crashes).

#ifndef CONCURRY_WORKERS_PROCESS_FORK_SERVER_H_
#define CONCURRY_WORKERS_PROCESS_FORK_SERVER_H_

namespace concurry {

// Starts the fork server unless it runs already; call it from main, before the program starts
// any thread (not from a static initializer: worker classes registered by initializers that run
// later would be missing in the server). Thread-safe and idempotent. Throws CrashedError when
// the server cannot be started (fork failed: out of processes or memory).
void StartForkServer();

// Whether the fork server runs (StartForkServer() succeeded, or a process worker started it).
bool ForkServerRunning();

}  // namespace concurry

#endif  // CONCURRY_WORKERS_PROCESS_FORK_SERVER_H_

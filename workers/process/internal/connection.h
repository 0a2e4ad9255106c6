// The parent's end of one worker process: the actor's EncodedObject for Mode::kProcess. Calls
// are written to the process's socket in order (batched while the actor drains), and a reader
// thread completes their replies in the same order. When the process dies, every call sent and
// not answered fails with CrashedError saying how it ended, within the time the kernel takes to
// close its socket, and the owner hears of it.

#ifndef CONCURRY_WORKERS_PROCESS_INTERNAL_CONNECTION_H_
#define CONCURRY_WORKERS_PROCESS_INTERNAL_CONNECTION_H_

#include <sys/types.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/future.h"
#include "limits/limit_pool.h"
#include "workers/internal/encoded_object.h"
#include "workers/options.h"
#include "workers/process/internal/wire.h"
#include "workers/registration.h"

namespace concurry::process_internal {

// What a connection shares with its reader thread (connection.cc).
struct ConnectionState;

// Signals a worker process from any thread, for as long as its connection or the connection's
// reader lives (a no-op after): how Stop enforces its deadline when the actor's thread is blocked
// (writing to a process that does not read, or waiting for a constructor that does not return).
class ProcessKiller {
 public:
  ProcessKiller() = default;
  void Kill(int signal) const;

 private:
  friend class ProcessConnection;
  std::weak_ptr<ConnectionState> state_;
};

// What a connection needs from the worker that owns it.
class ConnectionOwner {
 public:
  // When stopping, the process may finish its calls until then; then it is terminated
  // (SIGTERM, and SIGKILL 100 ms later).
  virtual absl::Time KillDeadline() const = 0;
  // The process ended while not stopping. Called once, from the reader thread, before the calls
  // sent to it fail with `error`.
  virtual void Died(std::exception_ptr error) = 0;
  // The connection is being destroyed (on the thread that destroys it).
  virtual void Closed() = 0;
  // The process was started (before it builds the object): `killer` may signal it from now on.
  virtual void Launched(ProcessKiller killer) = 0;
  // Returns a function that has the actor's thread send what is queued soon (a Flush), safe to
  // call from any thread at any time (a no-op once the worker is gone).
  virtual std::function<void()> MakeWaker() = 0;

 protected:
  ~ConnectionOwner() = default;
};

// Whether the calling thread is the reader thread of a connection opened with `context`
// (completing a reply there): such a thread must not wait for that worker to stop.
bool OnReaderThreadOf(const void* context);
// Whether the calling thread is the reader thread of any connection.
bool OnAnyReaderThread();

class ProcessConnection final : public workers_internal::EncodedObject {
 public:
  // Starts a worker process (`start`), sends it `cls`, `ctor` and `limits`, and waits until the
  // object is built there. Throws InvalidOptionError (limits that cannot cross, no safe way to
  // start the process), CrashedError (the process could not start or died first) or the
  // constructor's exception, rebuilt. `owner` (not null) must outlive the connection.
  static std::unique_ptr<ProcessConnection> Open(const workers_internal::EncodedClass& cls,
                                                 std::string ctor, const LimitPool& limits,
                                                 ProcessStart start, ConnectionOwner* owner,
                                                 const void* context);

  // Stops the process: it finishes the calls already sent, destroys the object and exits. Waits
  // for that until the owner's KillDeadline(), then terminates it. Calls it did not answer fail
  // with StoppedError. No process is left behind, and no zombie.
  ~ProcessConnection() override;

  // See EncodedObject. Written to the socket at the next Flush (or once a batch is full). A
  // dead process fails the call with its CrashedError.
  Future<std::string> Invoke(absl::string_view method, std::string args) override;
  // Sends what Invoke queued.
  void Flush() override;
  // After an Invoke inside a SendNowScope: the calling thread, when it waits for that reply,
  // reads it from the socket itself for a moment rather than waking the reader thread.
  std::shared_ptr<futures_internal::WaitDriver> TakeWaitDriver() override;

  // Sends a frame of any kind and payload; its reply completes the future (tests: frames the
  // worker cannot parse).
  Future<std::string> SendFrameForTesting(FrameKind kind, std::string payload);

  pid_t pid() const;
  // Whether every call sent has been answered (a hint: another thread may send meanwhile).
  // Thread-safe.
  bool Idle() const;

  ProcessKiller killer() const;

 private:
  using Shared = ConnectionState;
  explicit ProcessConnection(std::shared_ptr<Shared> shared);
  // The reader thread: completes replies in order until the stream ends, then fails the rest.
  static void ReadReplies(std::shared_ptr<Shared> shared);
  // Queues a frame and its reply promise; a failed future once the process is gone.
  Future<std::string> Send(FrameKind kind, absl::string_view a, absl::string_view b);

  const std::shared_ptr<Shared> shared_;
  std::thread reader_;
  // The number of the reply of the call just sent inside a SendNowScope, until TakeWaitDriver or
  // the next send. Used in the actor's context only (Invoke and TakeWaitDriver, one drain at a
  // time).
  std::optional<uint64_t> last_sent_;
};

}  // namespace concurry::process_internal

#endif  // CONCURRY_WORKERS_PROCESS_INTERNAL_CONNECTION_H_

// The client's end of one remote worker: the actor's EncodedObject for Mode::kRemote. It holds one
// bidirectional gRPC stream to the worker's host (workers/remote/remote.proto): calls are written
// in order, and a reader thread completes their replies in the same order. When the stream
// fails (the host died, the network broke), every call sent and not answered fails with
// CrashedError naming the host and the gRPC status, and the owner hears of it.

#ifndef CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_
#define CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/future.h"
#include "workers/internal/encoded_object.h"
#include "workers/options.h"
#include "workers/registration.h"

namespace concurry::remote_internal {

// What a connection shares with its reader thread (connection.cc).
struct StreamState;

// What a connection needs from the worker that owns it.
class RemoteOwner {
 public:
  // The stream failed while not stopping. Called once, from the reader thread, before the calls
  // sent fail with `error`.
  virtual void Died(std::exception_ptr error) = 0;
  // Returns a function that has the actor's thread Flush soon, safe to call from any thread at
  // any time (a no-op once the worker is gone).
  virtual std::function<void()> MakeWaker() = 0;
  // The connection is being destroyed (on the thread that destroys it).
  virtual void Closed() = 0;

 protected:
  ~RemoteOwner() = default;
};

// Whether the calling thread is the reader thread of a connection opened with `context`: such a
// thread must not wait for that worker to stop (it is what completes the worker's replies).
bool OnReaderThreadOf(const void* context);

class RemoteConnection final : public workers_internal::EncodedObject {
 public:
  // Connects to host `turn` of options.remote.hosts (modulo their number), or to the next one
  // that can be reached when that host is down, sends the token, `cls` and `ctor`, and waits
  // until the host has built the object. Throws StatusError with the gRPC status's code for
  // what the host refused (kUnauthenticated: wrong token; kNotFound: a class the host does not
  // have; kResourceExhausted: the host is full), StatusError (kUnavailable) when no connection was
  // made to any host within options.remote.connect_timeout, CrashedError when the stream broke, or
  // the constructor's exception, rebuilt. `owner` must outlive the connection.
  static std::unique_ptr<RemoteConnection> Open(const workers_internal::EncodedClass& cls,
                                                std::string ctor,
                                                const ResolvedWorkerOptions& options, size_t turn,
                                                RemoteOwner* owner, const void* context);

  // Stops the remote worker: the host finishes the running call, answers the others with a
  // cancellation and destroys the object. Waits for that up to `stop_timeout` of the options,
  // then cancels the stream. Calls not answered fail with StoppedError.
  ~RemoteConnection() override;

  // See EncodedObject. Written to the stream at once; a dead stream fails the call with its
  // CrashedError, and a call larger than remote.max_message_bytes fails alone with StatusError
  // (kResourceExhausted).
  Future<std::string> Invoke(absl::string_view method, std::string args) override;
  // Sends the cancellations other threads could not write themselves.
  void Flush() override;

 private:
  explicit RemoteConnection(std::shared_ptr<StreamState> state);
  // The reader thread: completes replies in order until the stream ends, then fails the rest.
  static void ReadReplies(std::shared_ptr<StreamState> state);

  const std::shared_ptr<StreamState> state_;
  RemoteOwner* owner_ = nullptr;
  absl::Duration stop_timeout_;
  int max_message_bytes_ = 0;
  std::thread reader_;
};

}  // namespace concurry::remote_internal

#endif  // CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_

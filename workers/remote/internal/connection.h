// The client's end of one remote worker: the actor's EncodedObject for Mode::kRemote. It holds one
// bidirectional gRPC stream to the worker's host (workers/remote/remote.proto): calls are written
// in order, and a reader thread completes their replies in the same order. When the stream
// fails (the host died, the network broke), every call sent and not answered fails with
// CrashedError naming the host and the gRPC status (StatusError with the gRPC code for codes that
// are not a failure of the host or the network; see StreamEndedError), and the owner hears of it.

#ifndef CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_
#define CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
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
  // Returns a function that has the actor's thread drain and then Flush (a Poke), safe to call
  // from any thread at any time (a no-op once the worker is gone). Threads that may not write
  // to the stream themselves queue what they want sent and wake the actor's thread with this.
  virtual std::function<void()> MakeWaker() = 0;
  // The stream is open and the Create about to be sent (on the actor's thread): `cancel` cancels
  // the stream from any thread, at any time, so that a Stop past its deadline can end a
  // constructor or a host that does not answer. Calls and the Create then fail with StoppedError.
  // `interrupt` (any thread, any time) tells a call waiting for room in the host's queue that a
  // Stop was asked for: it fails with StoppedError instead of waiting.
  virtual void Launched(std::function<void()> cancel, std::function<void()> interrupt) = 0;
  // When the connection's destructor stops waiting for the host and cancels the stream: the
  // earliest deadline of the Stops asked for, or options.stop_timeout from now if sooner.
  virtual absl::Time StopDeadline() const = 0;
  // The connection is being destroyed (on the thread that destroys it).
  virtual void Closed() = 0;

 protected:
  ~RemoteOwner() = default;
};

// The error a worker's stream that ended while not stopping fails its calls with, for `status`
// (what gRPC ended it with) or `broken` (what the reader found wrong; empty: nothing). A lost
// connection, a host that failed (UNAVAILABLE, INTERNAL, UNKNOWN, a stream the host ended without
// an error) or a broken stream gives CrashedError; any other gRPC code (RESOURCE_EXHAUSTED,
// UNAUTHENTICATED, PERMISSION_DENIED, CANCELLED, DEADLINE_EXCEEDED, ...) gives StatusError with
// that code, so that callers can tell them apart. The message names `worker` ("worker
// app::Counter on host 127.0.0.1:7000").
std::exception_ptr StreamEndedError(const std::string& worker, absl::StatusCode code,
                                    const std::string& message, const std::string& broken);

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
  // cancellation and destroys the object. Waits for that until the owner's StopDeadline(), then
  // cancels the stream. Calls not answered fail with StoppedError.
  ~RemoteConnection() override;

  // See EncodedObject. Written to the stream at once; a dead stream fails the call with the error
  // it ended with. With a finite remote.call_timeout, the call fails with TimeoutError that long
  // after it was sent and a cancellation is queued for the host (a call the host has not started
  // never starts; one it runs runs to its end, its late reply dropped). A call larger than the
  // smaller of remote.max_message_bytes and the host's
  // --max_message_bytes fails alone with StatusError (kResourceExhausted), without being sent.
  // Actor's thread only.
  Future<std::string> Invoke(absl::string_view method, std::string args) override;
  // Sends the cancellations queued by other threads (a cancelled reply's future). Actor's thread
  // only.
  void Flush() override;

 private:
  explicit RemoteConnection(std::shared_ptr<StreamState> state);
  // The reader thread: completes replies in order until the stream ends, then fails the rest.
  static void ReadReplies(std::shared_ptr<StreamState> state);

  const std::shared_ptr<StreamState> state_;
  RemoteOwner* owner_ = nullptr;
  // The largest call sent: the smaller of this side's limit and the host's (when it said).
  int64_t max_message_bytes_ = 0;
  int64_t own_max_message_bytes_ = 0;
  int64_t host_max_message_bytes_ = 0;
  // remote.call_timeout: each call fails with TimeoutError this long after it was sent.
  absl::Duration call_timeout_ = absl::InfiniteDuration();
  std::thread reader_;
};

}  // namespace concurry::remote_internal

#endif  // CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_

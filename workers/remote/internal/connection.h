// The client's end of one remote worker: the actor's EncodedObject for Mode::kRemote. It holds one
// bidirectional gRPC stream to the worker's host (workers/remote/remote.proto), on gRPC's
// completion-queue API: calls are written in order without waiting for the network, and their
// replies complete in the same order. When the stream fails (the host died, the network broke),
// every call sent and not answered fails with CrashedError naming the host and the gRPC status
// (StatusError with the gRPC code for codes that are not a failure of the host or the network;
// see StreamEndedError), and the owner hears of it.
//
// Who waits for the network: a poller thread per connection, except while a caller drives it. A
// caller's thread that sent a call to an idle worker itself (a SendNowScope) and then waits for
// the reply polls the stream's completion queue itself for up to kDriveWindow (a WaitDriver), so
// the reply wakes the caller directly, as a synchronous gRPC call does. For that to work the
// caller must be the only thread polling: gRPC (epoll1) lets one thread of the process poll at a
// time, and a second thread touching the same HTTP/2 connection makes gRPC hand its work to an
// executor thread, which costs wake-ups. So the poller thread steps aside while a caller drives
// (kicked out of its poll by an alarm), and for kLinger after a caller got its reply, when the
// next call is likely to be driven too; a call sent by the actor's thread has the poller thread
// poll at once.

#ifndef CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_
#define CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
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

// What a connection shares with its poller thread and the callers that drive it (connection.cc).
struct StreamState;

// What a connection needs from the worker that owns it.
class RemoteOwner {
 public:
  // The stream failed while not stopping. Called once, from a thread completing the worker's
  // replies, before the calls sent fail with `error`.
  virtual void Died(std::exception_ptr error) = 0;
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

// Whether the calling thread is completing replies of a connection opened with `context` (its
// poller thread, or a caller driving it): such a thread must not wait for that worker to stop.
bool OnReaderThreadOf(const void* context);
// Whether the calling thread is completing replies of any connection.
bool OnAnyReaderThread();

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

  // See EncodedObject. Queued for the stream at once and never waits for the network (only for
  // room in the host's queue, see below); a dead stream fails the call with the error it ended
  // with. With a finite remote.call_timeout, the call fails with TimeoutError that long
  // after it was sent and a cancellation is queued for the host (a call the host has not started
  // never starts; one it runs runs on unless its method asks this_call::CancelRequested(), its
  // late reply dropped). A call larger than the
  // smaller of remote.max_message_bytes and the host's
  // --max_message_bytes fails alone with StatusError (kResourceExhausted), without being sent.
  // Actor's thread only.
  Future<std::string> Invoke(absl::string_view method, std::string args) override;
  // After an Invoke inside a SendNowScope: the calling thread, when it waits for that reply,
  // polls the stream itself for a moment (see the top of the file).
  std::shared_ptr<futures_internal::WaitDriver> TakeWaitDriver() override;
  // Whether every call sent has been answered (a hint: another thread may send meanwhile).
  // Thread-safe.
  bool Idle() const;

 private:
  explicit RemoteConnection(std::shared_ptr<StreamState> state);

  const std::shared_ptr<StreamState> state_;
  RemoteOwner* owner_ = nullptr;
  // The largest call sent: the smaller of this side's limit and the host's (when it said).
  int64_t max_message_bytes_ = 0;
  int64_t own_max_message_bytes_ = 0;
  int64_t host_max_message_bytes_ = 0;
  // remote.call_timeout: each call fails with TimeoutError this long after it was sent.
  absl::Duration call_timeout_ = absl::InfiniteDuration();
  // The id of the call just sent inside a SendNowScope, until TakeWaitDriver or the next Invoke.
  // Used in the actor's context only (one drain at a time).
  std::optional<uint64_t> last_sent_;
  // Polls the stream while no caller does (see the top of the file), and ends it.
  std::thread poller_;
};

}  // namespace concurry::remote_internal

#endif  // CONCURRY_WORKERS_REMOTE_INTERNAL_CONNECTION_H_

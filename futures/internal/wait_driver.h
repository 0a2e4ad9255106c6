// WaitDriver: work that the waiting thread itself can push forward instead of sleeping until
// another thread finishes it. A worker process's reply is the case: after a caller's thread sent a
// call to an idle process, the same thread waiting for the reply can read it from the socket
// itself, which saves waking the connection's reader thread and then the caller (a quarter of a
// small call's round trip).
//
// The thread that starts such work offers a driver for the future it will complete
// (OfferWaitDriver). If the same thread then waits for that future on the real clock, the wait
// first calls Drive; whatever Drive leaves undone, the wait sleeps for as usual. One offer per
// thread: a new one replaces the last; the wait that takes it, or any wait on another future,
// does not keep it.
//
// Thread-safe: offers are per thread.

#ifndef CONCURRY_FUTURES_INTERNAL_WAIT_DRIVER_H_
#define CONCURRY_FUTURES_INTERNAL_WAIT_DRIVER_H_

#include <memory>

#include "absl/time/time.h"

namespace concurry::futures_internal {

class StateBase;

class WaitDriver {
 public:
  virtual ~WaitDriver() = default;
  // Called on the offering thread, inside a wait for the offered future, before it sleeps. May
  // complete the future (or others), and must return by `deadline`; it should also return soon
  // (well under a millisecond) when its work is not progressing, since a cancellation or stop
  // of the future does not interrupt it. Must not throw.
  virtual void Drive(absl::Time deadline) noexcept = 0;
};

// Offers `driver` for the future whose state is `state` (compared, never dereferenced), on the
// calling thread.
void OfferWaitDriver(const StateBase* state, std::shared_ptr<WaitDriver> driver);
// Takes the calling thread's offer, if it is for `state`; clears the offer either way.
std::shared_ptr<WaitDriver> TakeWaitDriver(const StateBase* state);

}  // namespace concurry::futures_internal

#endif  // CONCURRY_FUTURES_INTERNAL_WAIT_DRIVER_H_

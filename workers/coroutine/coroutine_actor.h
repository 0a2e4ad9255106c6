// CoroutineActor: the actor of a Mode::kCoroutine worker. Plain calls drain on the worker's side
// thread (ThreadActor), one at a time, FIFO; calls of methods returning Coro<T> start on the
// worker's event loop (AsioLoop, a second thread), where up to max_in_flight_coroutines of them
// interleave at their co_awaits and the rest wait FIFO.
//
//   auto actor = std::make_shared<CoroutineActor>(options, backend);  // via the backend
//   actor->Start(construct);  // the object is built on the side thread
//
// Stop cancels every coroutine of the loop (each throws CancelledError at its current or next
// co_await, its destructors run), cancels the queued calls, and destroys the object on the loop
// once every coroutine has ended. A coroutine that never reaches another co_await keeps the
// object and both threads alive: Stop(timeout) then returns false and says so on stderr.

#ifndef CONCURRY_WORKERS_COROUTINE_COROUTINE_ACTOR_H_
#define CONCURRY_WORKERS_COROUTINE_COROUTINE_ACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/internal/coro_scheduler.h"
#include "workers/backend.h"
#include "workers/coroutine/asio_loop.h"
#include "workers/internal/actor.h"
#include "workers/options.h"
#include "workers/thread/thread_actor.h"

namespace concurry::workers_internal {

// Thread-safe.
class CoroutineActor final : public ThreadActor, private AsioLoop::Listener {
 public:
  CoroutineActor(const ResolvedWorkerOptions& options, const WorkerBackend& backend);
  ~CoroutineActor() override;

  // Cancels the loop's coroutines and the calls waiting for a slot, then stops as every actor
  // does (ActorCore::Stop). Reports on stderr, once, coroutines still running when a positive
  // timeout expires (Stop(0) only asks, so it reports nothing).
  bool Stop(absl::Duration timeout) override;
  WorkerStats Stats() override ABSL_LOCKS_EXCLUDED(mu_);
  // max_in_flight_coroutines (capped to int): how many of its calls may be in progress at once.
  int max_concurrency() const override;

 protected:
  void OnStart() override;
  bool Deliver(CallNode* node) override;
  void ObjectReady(void* object) noexcept override;
  void CloseObject(void* object, void (*destroy)(void*)) noexcept override;

 private:
  class LoopCall;

  // AsioLoop::Listener.
  void RootStarted(futures_internal::CoroControl& control) override ABSL_LOCKS_EXCLUDED(mu_);
  void RootFinished(futures_internal::CoroControl& control) override ABSL_LOCKS_EXCLUDED(mu_);
  void TimersChanged(int64_t delta) override ABSL_LOCKS_EXCLUDED(mu_);

  // On the loop: a delivered coroutine call arrives.
  void Arrive(CallNode* node) ABSL_LOCKS_EXCLUDED(mu_);
  // On the loop: starts waiting calls while slots are free and the object exists.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_);
  // Any thread: cancels every coroutine of the loop and the calls waiting for a slot; from now
  // on a new coroutine is cancelled as it starts. Idempotent.
  void CancelAll() ABSL_LOCKS_EXCLUDED(mu_);
  // On the loop: once closing and no coroutine is left, destroys the object and closes the loop
  // (LoopEnded then finishes the stop step this actor added).
  void MaybeFinishClose() ABSL_LOCKS_EXCLUDED(mu_);
  // On the loop thread, after Run returned: finishes the stop step once MaybeFinishClose closed
  // the loop (every handler queued before that has run).
  void LoopEnded() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the close can finish now.
  bool CloseDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closing_ && !close_finished_ && roots_.empty() && in_flight_ == 0;
  }

  const int64_t max_in_flight_;
  // Declared before the loop: the loop reports here until it is closed (AsioLoop::Close).
  mutable absl::Mutex mu_;
  std::deque<CallNode*> waiting_ ABSL_GUARDED_BY(mu_);
  // Coroutine calls started and not ended (call_roots_), plus one while a call is being started
  // (starting_call_: its root, if it makes one, is the RootStarted inside the node's
  // ScopedCoroCallStart).
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool starting_call_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<futures_internal::CoroControl*> call_roots_ ABSL_GUARDED_BY(mu_);
  // Every top-level coroutine of the loop (calls and what they started), alive.
  absl::flat_hash_set<futures_internal::CoroControl*> roots_ ABSL_GUARDED_BY(mu_);
  int64_t timers_ ABSL_GUARDED_BY(mu_) = 0;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;  // The object exists (ObjectReady ran on the loop).
  void* object_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancel_all_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool close_finished_ ABSL_GUARDED_BY(mu_) = false;
  void* close_object_ ABSL_GUARDED_BY(mu_) = nullptr;
  void (*close_destroy_)(void*) ABSL_GUARDED_BY(mu_) = nullptr;
  std::atomic<bool> reported_{false};
  // Shared with the coroutines started on it, which may outlive this actor (Close() cuts the
  // listener off first).
  std::shared_ptr<AsioLoop> loop_;
  std::thread loop_thread_;
};

// For coroutine_testing.h: while a watcher is registered (delta +1, later -1), every change of a
// coroutine worker's counters bumps a process-wide version; WaitForCoroutineStatsChange(seen)
// returns once the version is past `seen`, or at `deadline`. Thread-safe.
void AddCoroutineStatsWatcher(int delta);
uint64_t CoroutineStatsVersion();
void WaitForCoroutineStatsChange(uint64_t seen, absl::Time deadline);

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_COROUTINE_COROUTINE_ACTOR_H_

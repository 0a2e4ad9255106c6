// The engine behind a pool: many workers of one class behind one handle. Internal: pools are made
// by Worker<T>::Create and TaskWorker::Create when the options ask for one (docs/pools.md).
//
// A pool is itself an ActorCore: the handle's Worker<T>::Call, TaskWorker::Submit and Map post to
// it exactly as to one worker (unwrapping, retries, the producer tag and stop hooks work
// unchanged), and its Post routes each call to one of its workers' actors with PostRouted. The
// workers come from the mode's backend through a factory, so the pool never knows the mode. Every
// routed call reports to the pool once when it finishes (PoolHook::CallFinished): the per-worker
// in-flight counts, the balancer's completions and the shared queue hang off that.
//
// Two ways to route:
// - Balanced (Worker<T> pools, or TaskWorker pools with load_balancing set): the balancer picks
//   a worker at submission and the call waits in that worker's own queue, behind its
//   max_queued_tasks gate. Lock-free on this path.
// - Shared queue (TaskWorker pools by default, on-demand pools always): a worker holds at most
//   one routed call; a call that finds no idle worker waits in the pool's FIFO, and a worker that
//   finishes a call takes the oldest waiting one in its own context (no wake-up while busy). So
//   no call waits while a worker is idle: work-conserving. One mutex, held for a few pointer
//   moves.
//
// On demand: slots start empty; a call with no idle worker starts a worker in a free slot (up to
// max_workers), a worker whose call finished takes the next waiting call, or waits
// on_demand_keepalive for one (Timer on the options' clock), then stops and frees its slot.
//
// Deaths: a worker that stops while the pool is not stopping (it stopped itself, or its backend
// abandoned it with a CrashedError) is replaced in the same slot. The calls queued on it were
// cancelled or failed with the backend's error. A replacement whose constructor fails leaves the
// slot dead (its error in the stats); the other workers keep serving, and a pool with no live
// worker fails calls with CrashedError.
//
// Stop: the handle's Stop asks every worker to stop at once and waits for all of them against one
// deadline. Each worker's stopped-future callback holds the pool, so the pool outlives its
// workers, which report to it.

#ifndef CONCURRY_POOLS_INTERNAL_POOL_CORE_H_
#define CONCURRY_POOLS_INTERNAL_POOL_CORE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/future.h"
#include "futures/internal/spin_lock.h"
#include "futures/timer.h"
#include "pools/load_balancer.h"
#include "pools/pool_stats.h"
#include "workers/backend.h"
#include "workers/internal/actor.h"
#include "workers/options.h"

namespace concurry::workers_internal {

// A worker made for a pool: its actor, started, and the construction of its object.
struct StartedWorker {
  std::shared_ptr<ActorCore> actor;
  Future<void> constructed;
};
// Makes worker `index` with `options` (its limits already offset by the index), joins it to
// `pool` (ActorCore::JoinPool) and starts it. May throw.
using WorkerFactory =
    std::function<StartedWorker(int index, const ResolvedWorkerOptions& options, PoolHook* pool)>;

class PoolCore final : public ActorCore, public PoolHook {
 public:
  // `stateless`: the workers run independent tasks (a TaskWorker pool), so without
  // load_balancing the pool routes through the shared queue.
  PoolCore(const ResolvedWorkerOptions& options, const WorkerBackend& backend,
           WorkerFactory factory, bool stateless);
  ~PoolCore() override;

  // Starts the workers of a fixed-size pool (nothing for an on-demand pool). The future completes
  // when every worker is constructed; if a constructor throws, the pool stops and the future
  // fails with the error of the lowest-indexed worker that failed.
  Future<void> StartWorkers();

  bool Post(CallNode* node, bool may_block) override;
  // Stops every worker at once and waits up to `timeout` for all of them. Idempotent; from a
  // call of one of its workers it does not wait.
  bool Stop(absl::Duration timeout) override;
  // The sum over the workers; calls waiting in the shared queue count as deferred.
  WorkerStats Stats() override;
  Future<void> stopped_future() const override { return done_future_; }
  // max_workers (the fixed size or the on-demand cap), min'd with the executor's
  // max_concurrency() when the workers run on an executor that reports one.
  int max_concurrency() const override;

  PoolStats GetPoolStats() ABSL_LOCKS_EXCLUDED(mu_);
  // Throws InvalidOptionError for an index outside [0, max_workers).
  PoolWorkerStats GetWorkerStats(int index) ABSL_LOCKS_EXCLUDED(mu_);

  CallNode* CallFinished(int index, ActorCore* worker) noexcept override ABSL_LOCKS_EXCLUDED(mu_);
  void Reroute(int index, CallNode* node) noexcept override;

 protected:
  // The pool's own mailbox only ever holds its stop message: run it here.
  void Schedule() override { Drain(kNoBudget); }

 private:
  enum class SlotState {
    kEmpty,     // No worker (on demand, or between a death and its replacement).
    kStarting,  // Shared queue: a worker whose object is being built; idle once it is.
    kIdle,      // Shared queue: a worker with no call.
    kBusy,      // Shared queue: a worker with a call. Balanced pools keep their workers here.
    kRetiring,  // Asked to stop by the pool (on demand, idle too long or done).
    kDead,      // Its replacement's constructor failed: never used again.
  };
  // Aligned so that the counters of neighbouring slots do not share a cache line.
  struct alignas(64) Slot {
    // The current worker, for the lock-free balanced path; null when there is none. A balanced
    // pool never frees a worker it published here before the pool itself goes (retired_), so a
    // caller that read it may still post to it (and be refused once it stopped).
    std::atomic<ActorCore*> actor{nullptr};
    // Calls given to the slot, and those finished: written by the callers and by the worker, so
    // each on a cache line of its own (one shared counter would bounce between them every call).
    alignas(64) std::atomic<int64_t> started{0};
    alignas(64) std::atomic<int64_t> finished{0};
    // Calls in flight (read `finished` first, so that a snapshot never goes below zero).
    int64_t Active() const {
      const int64_t done = finished.load(std::memory_order_acquire);
      return std::max<int64_t>(0, started.load(std::memory_order_acquire) - done);
    }
    // Owns `actor`. Under mu_ from here on.
    std::shared_ptr<ActorCore> owner;
    Future<void> constructed;
    SlotState state = SlotState::kEmpty;
    int64_t restarts = 0;
    uint64_t idle_epoch = 0;  // Tells a keepalive expiry whether the slot was used since.
    Timer::Id keepalive;      // The pending keepalive expiry, if any.
    std::string error;
  };

  bool PostBalanced(CallNode* node, bool may_block);
  bool PostShared(CallNode* node, bool may_block) ABSL_LOCKS_EXCLUDED(mu_);
  // Counts `node` on slot `index` and posts it to `worker`, that slot's worker, which the caller
  // keeps alive. Returns false, with `node` still the caller's, if the worker refused it.
  bool Hand(int index, ActorCore* worker, CallNode* node, bool may_block);
  // Makes the worker of slot `index` (reserved by the caller: live_ counted, state set) and hands
  // it `first` if any. Returns false, with `first` still the caller's, when no worker was made:
  // the factory threw (`*error` says what; the slot is freed or dead) or the pool is stopping
  // (`*error` null).
  bool Launch(int index, CallNode* first, std::exception_ptr* error) ABSL_LOCKS_EXCLUDED(mu_);
  // Launch for a call; a call that gets no worker fails with why.
  void LaunchFor(int index, CallNode* first) ABSL_LOCKS_EXCLUDED(mu_);
  // On demand: starts workers for waiting calls while slots are free (after a worker stopped or a
  // launch failed). One at a time, so that repeated failures never recurse.
  void LaunchForWaiting() ABSL_LOCKS_EXCLUDED(mu_);
  // kBlock: whether the pool holds fewer than block_capacity_ calls (or is stopping).
  bool HasRoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // kBlock: waits until HasRoomLocked() may have changed to true.
  void WaitForRoom() ABSL_LOCKS_EXCLUDED(mu_, block_mu_);
  // Wakes the kBlock callers after room was made (a call finished or left the queue, a worker
  // stopped, the pool stopped). Call without holding mu_.
  void WakeBlocked() ABSL_LOCKS_EXCLUDED(mu_, block_mu_);
  // A fixed pool with no worker left fails the calls waiting for one.
  void FailWaitingIfNoWorker() ABSL_LOCKS_EXCLUDED(mu_);
  // Shared queue: a new worker's constructor finished.
  void Started(int index, ActorCore* worker, const Future<void>& constructed)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A worker of slot `index` stopped (its stopped future completed).
  void WorkerStopped(int index, const ActorCore* actor) ABSL_LOCKS_EXCLUDED(mu_);
  // Shared queue: slot `index` has no call; gives it the oldest waiting one (returned, not yet
  // counted) or marks it idle / retiring. Sets `*retire` when the caller must stop the worker.
  // Sets `*keepalive_epoch` when the caller must start the slot's keepalive (ScheduleKeepalive,
  // after unlocking).
  CallNode* NextForLocked(int index, bool* retire, uint64_t* keepalive_epoch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the keepalive of idle slot `index`, made idle at `epoch`. Without mu_.
  void ScheduleKeepalive(int index, uint64_t epoch) ABSL_LOCKS_EXCLUDED(mu_);
  // Moves slot `index` to `state`, keeping busy_, idle_ and the keepalive timer in step.
  void SetStateLocked(int index, SlotState state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveIdleLocked(int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An empty slot for an on-demand worker (live_ < size_ guarantees one).
  int ReserveEmptyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keepalive of slot `index` ran out.
  void Expire(int index, uint64_t epoch) ABSL_LOCKS_EXCLUDED(mu_);
  // Completes the stopped future once the pool is stopping and no worker is left.
  void MaybeFinishStop() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a Stop of this pool must not wait here: the calling thread runs one of its workers'
  // calls, or is inside this pool's (or one of its workers') stop, running cancellation callbacks.
  bool MustNotWaitForStop() const;
  // The balancer heard of a finished call; a user balancer that throws is reported, not fatal.
  void RecordComplete(int index) noexcept;
  // The pool cannot serve: every worker is dead.
  std::exception_ptr NoLiveWorkerError() ABSL_LOCKS_EXCLUDED(mu_);

  // max_concurrency(), fixed at construction: the executor may be gone once the pool stopped.
  const int max_concurrency_;
  const WorkerFactory factory_;
  const int size_;  // max_workers: the fixed size, or the on-demand cap.
  const bool on_demand_;
  const bool shared_;  // Shared-queue routing (else balanced).
  const absl::Duration keepalive_;
  // Shared queue under kBlock: calls accepted and unfinished (in flight + waiting) per pool.
  const int64_t block_capacity_;
  const std::unique_ptr<LoadBalancer> balancer_;  // Balanced routing only.
  const std::unique_ptr<Slot[]> slots_;
  // On-demand pools with a finite keepalive: the expiries. Shut down by Stop and, first thing,
  // by the destructor (an expiry uses the other members).
  const std::unique_ptr<Timer> timer_;
  std::atomic<bool> stopping_{false};

  // The shared queue and the slots' states. A spin lock: every call of a shared-queue pool takes
  // it twice (submission, completion) for a few pointer moves, where an absl::Mutex (with the
  // deadlock detection of Debian's Abseil) cost half the pool's throughput. Never held while
  // calling user code or waiting.
  internal::SpinLock mu_;
  std::deque<CallNode*> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<int> idle_ ABSL_GUARDED_BY(mu_);  // A stack: the most recently idle on top.
  int live_ ABSL_GUARDED_BY(mu_) = 0;           // Workers made and not yet stopped.
  int busy_ ABSL_GUARDED_BY(mu_) = 0;           // Slots in kBusy (shared queue).
  // kBlock on a shared queue: callers waiting for room, and the count of releases they wait for
  // (WakeBlocked). Lock order: block_mu_, then mu_.
  std::atomic<int64_t> blocked_{0};
  absl::Mutex block_mu_;
  uint64_t room_epoch_ ABSL_GUARDED_BY(block_mu_) = 0;
  // Balanced pools: dead workers a caller may still be posting to (see Slot::actor).
  std::vector<std::shared_ptr<ActorCore>> retired_ ABSL_GUARDED_BY(mu_);
  int64_t replaced_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_done_ ABSL_GUARDED_BY(mu_) = false;

  Promise<void> done_;
  Future<void> done_future_;
};

// Makes a pool (not started). Throws InvalidOptionError for a backend that runs calls in the
// caller's thread (kSync cannot pool).
std::shared_ptr<PoolCore> MakePool(const ResolvedWorkerOptions& options,
                                   const WorkerBackend& backend, WorkerFactory factory,
                                   bool stateless);

}  // namespace concurry::workers_internal

#endif  // CONCURRY_POOLS_INTERNAL_POOL_CORE_H_

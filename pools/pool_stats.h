// Statistics of a worker pool (concurry's get_pool_stats() and get_worker_stats(i)), returned by
// Worker<T>::GetPoolStats() / GetWorkerStats(i) and the same methods of TaskWorker. A snapshot:
// the numbers may change as soon as they are read.

#ifndef CONCURRY_POOLS_POOL_STATS_H_
#define CONCURRY_POOLS_POOL_STATS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "pools/load_balancer.h"
#include "workers/options.h"

namespace concurry {

// One worker slot of a pool. Slots are numbered 0 .. max_workers - 1; the number is the worker's
// index (its LimitPool offset). An on-demand slot is empty between its workers.
struct PoolWorkerStats {
  int index = 0;
  // A worker exists in the slot and has not been asked to stop.
  bool alive = false;
  // Calls the pool gave this slot and that have not finished (ran, failed or were cancelled).
  int64_t active_calls = 0;
  // Calls the pool ever gave this slot.
  int64_t total_calls = 0;
  // Times the slot's worker died and was replaced (or, on demand, workers started in the slot).
  int64_t restarts = 0;
  // The slot's worker queues (zero when the slot is empty).
  WorkerStats queues;
  // Why the slot has no worker for good: its replacement's constructor failed ("" otherwise).
  std::string error;
};

// The whole pool.
struct PoolStats {
  // Workers alive now.
  int total_workers = 0;
  // The pool's size, or an on-demand pool's cap.
  int max_workers = 0;
  // How many calls can run at once: max_workers, or fewer when the workers run on a
  // WorkerOptions::executor (tbb mode) whose max_concurrency() is smaller: then at most that many
  // of the pool's calls run at a time, whatever max_workers says.
  int effective_concurrency = 0;
  bool on_demand = false;
  // On-demand pools: workers alive now, busy or waiting for a call within their keepalive.
  int on_demand_active = 0;
  absl::Duration on_demand_keepalive = absl::ZeroDuration();
  // Which worker takes each call. Balanced pools: the balancer's own statistics. Pools that hand
  // calls to the next free worker from one queue (TaskWorker pools without load_balancing, and
  // on-demand pools) report the algorithm "SharedQueue" with total_dispatched and the per-worker
  // active_calls / total_calls.
  LoadBalancerStats load_balancer;
  // Calls waiting in the pool's shared queue for a free worker (shared-queue pools).
  int64_t queued_in_pool = 0;
  bool stopped = false;
  // The per-worker bound and what a call does when it is reached (WorkerOptions).
  int64_t max_queued_tasks = kUnbounded;
  QueueFullPolicy queue_full = QueueFullPolicy::kDefer;
  // Workers that died and were replaced, over the pool's life.
  int64_t replaced_workers = 0;
};

}  // namespace concurry

#endif  // CONCURRY_POOLS_POOL_STATS_H_

// Test helpers for Mode::kCoroutine workers: wait, without sleeping or polling, until a worker's
// coroutine counters (WorkerStats::coroutines, coroutines_waiting, coroutine_timers) say what a
// test needs.
//
//   concurry::testkit::BlockUntilCoroutineStats(worker, [](const concurry::WorkerStats& s) {
//     return s.coroutine_timers == 2;  // both coroutines sleep on the FakeClock now
//   });
//   fake.Advance(absl::Seconds(1));

#ifndef CONCURRY_WORKERS_COROUTINE_COROUTINE_TESTING_H_
#define CONCURRY_WORKERS_COROUTINE_COROUTINE_TESTING_H_

#include <cstdint>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "workers/coroutine/coroutine_actor.h"
#include "workers/options.h"

namespace concurry::testkit {

// Returns true once `predicate(worker.Stats())` holds, waking on each change of a coroutine
// worker's counters; false if it still does not hold after `limit` (real time). `worker` is
// anything with Stats() (Worker<T>, BlockingWorker<T>, TaskWorker). Thread-safe.
template <typename W, typename P>
bool BlockUntilCoroutineStats(const W& worker, P predicate,
                              absl::Duration limit = absl::Seconds(60)) {
  workers_internal::AddCoroutineStatsWatcher(1);
  const absl::Time deadline = absl::Now() + limit;
  bool held = false;
  for (;;) {
    // The version first: a change after it wakes the wait below at once.
    const uint64_t seen = workers_internal::CoroutineStatsVersion();
    if (predicate(worker.Stats())) {
      held = true;
      break;
    }
    if (absl::Now() >= deadline) break;
    workers_internal::WaitForCoroutineStatsChange(seen, deadline);
  }
  workers_internal::AddCoroutineStatsWatcher(-1);
  return held;
}

}  // namespace concurry::testkit

#endif  // CONCURRY_WORKERS_COROUTINE_COROUTINE_TESTING_H_

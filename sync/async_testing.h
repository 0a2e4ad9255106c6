// Test helpers for the sync/*_async tests: running a Coro the ways users do (SyncWait on the
// test's thread, Spawn on a thread pool) and making futures from promises. Test-only.

#ifndef CONCURRY_SYNC_ASYNC_TESTING_H_
#define CONCURRY_SYNC_ASYNC_TESTING_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/future.h"
#include "futures/thread_pool_executor.h"

namespace concurry {
namespace async_testing {

// How a test runs its coroutine.
enum class Runner {
  kSyncWait,    // SyncWait on the test's thread.
  kThreadPool,  // Spawn on a two-thread ThreadPoolExecutor, then Result().
};

inline std::string RunnerName(Runner runner) {
  return runner == Runner::kSyncWait ? "SyncWait" : "SpawnOnThreadPool";
}

// Runs `coro` to its end as `runner` says, on `clock`, and returns its value (or rethrows).
template <typename T>
T RunCoro(Runner runner, Coro<T> coro, Clock& clock = Clock::Real()) {
  if (runner == Runner::kSyncWait) return SyncWait(std::move(coro), clock);
  ThreadPoolExecutor pool(2);
  Future<T> future = Spawn(pool, std::move(coro), clock);
  return std::move(future).Result();
}

template <typename T>
std::vector<Future<T>> FuturesOf(std::vector<Promise<T>>& promises) {
  std::vector<Future<T>> futures;
  for (Promise<T>& p : promises) futures.push_back(p.GetFuture());
  return futures;
}

}  // namespace async_testing
}  // namespace concurry

#endif  // CONCURRY_SYNC_ASYNC_TESTING_H_

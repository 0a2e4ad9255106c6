// concurry.h: everything concurry-cpp offers, in one include (for users; the library's own code
// includes the fine-grained headers). Depend on //:concurry (or @concurry//:concurry).
//
//   #include "concurry.h"
//
//   concurry::TbbExecutor pool;
//   std::vector<concurry::Future<int>> futures;
//   for (int i = 0; i < 10; ++i) futures.push_back(concurry::Async(pool, [i] { return i * i; }));
//   std::vector<int> squares = concurry::Gather(std::move(futures));
//   auto counter = concurry::Worker<Counter>::Create({.mode = concurry::Mode::kThread}, 0);

#ifndef CONCURRY_CONCURRY_H_
#define CONCURRY_CONCURRY_H_

#include "futures/clock.h"                 // IWYU pragma: export
#include "futures/coro.h"                  // IWYU pragma: export
#include "futures/errors.h"                // IWYU pragma: export
#include "futures/executor.h"              // IWYU pragma: export
#include "futures/future.h"                // IWYU pragma: export
#include "futures/tbb_executor.h"          // IWYU pragma: export
#include "futures/thread_pool_executor.h"  // IWYU pragma: export
#include "futures/timer.h"                 // IWYU pragma: export
#include "limits/limit.h"                  // IWYU pragma: export
#include "limits/limit_pool.h"             // IWYU pragma: export
#include "limits/limit_set.h"              // IWYU pragma: export
#include "limits/rate_limiter.h"           // IWYU pragma: export
#include "limits/rate_window.h"            // IWYU pragma: export
#include "pools/load_balancer.h"           // IWYU pragma: export
#include "retry/policy.h"                  // IWYU pragma: export
#include "retry/retry.h"                   // IWYU pragma: export
#include "sync/as_completed.h"             // IWYU pragma: export
#include "sync/gather.h"                   // IWYU pragma: export
#include "sync/outcome.h"                  // IWYU pragma: export
#include "sync/progress.h"                 // IWYU pragma: export
#include "sync/stream.h"                   // IWYU pragma: export
#include "sync/wait.h"                     // IWYU pragma: export
#include "workers/codec.h"                 // IWYU pragma: export
#include "workers/exception_registry.h"    // IWYU pragma: export
#include "workers/options.h"               // IWYU pragma: export
#include "workers/process/fork_server.h"   // IWYU pragma: export
#include "workers/registration.h"          // IWYU pragma: export
#include "workers/task_worker.h"           // IWYU pragma: export
#include "workers/this_call.h"             // IWYU pragma: export
#include "workers/worker.h"                // IWYU pragma: export

#endif  // CONCURRY_CONCURRY_H_

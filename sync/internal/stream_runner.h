// The non-template helpers of a stream (sync/stream.cc): option checks, what runs its tasks as
// far as concurrency goes (StreamRunner) and the warning when max_in_flight exceeds it, and the
// errors a stream stops with. Internal: include sync/stream.h instead.
//
//   ValidateStreamOptions(options);  // Throws InvalidOptionError.
//   WarnIfOverConcurrency(options, ExecutorRunner(executor));

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_RUNNER_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_RUNNER_H_

#include <cstdint>
#include <exception>
#include <string>
#include <typeinfo>

#include "absl/time/time.h"
#include "futures/executor.h"

namespace concurry {
namespace sync_internal {

// Non-template helpers (stream.cc). Throws InvalidOptionError for bad options.
void ValidateStreamOptions(const StreamOptions& options);

// What runs a stream's tasks, as far as its concurrency goes: a stream compares it with
// max_in_flight (ResultStream::effective_concurrency() and a warning, see StreamOn).
struct StreamRunner {
  // How many tasks it runs at once; 0 when unknown (no check, no warning).
  int max_concurrency = 0;
  // Names it in the warning ("the worker"). Empty: named after `executor_type`, "the executor
  // (concurry::TbbExecutor, sized for CPU work)", built only when there is a warning to give.
  std::string description = {};
  const std::type_info* executor_type = nullptr;
  // What to do about it, ending the warning. Empty: use an executor with more threads.
  std::string advice = {};
  // The API named at the start of the warning.
  const char* api = "concurry::Stream";
  // Whether to warn at all; false: only ResultStream::effective_concurrency() tells (workers'
  // Map, where queueing items ahead of a worker is a normal way to keep it busy).
  bool warn = true;
  // Whether the stream may run several inputs in one task of its executor and let its consumer
  // run inputs (see "Batched tasks" in stream_core.h): only when the executor's own threads are
  // what runs the function, max_concurrency says how many, and its tasks may run on any thread
  // (Executor::tasks_may_run_on_any_thread(): TbbExecutor). Set by Stream().
  bool batch_tasks = false;
};

// The runner of a stream whose tasks run on `executor`: its max_concurrency() and type.
StreamRunner ExecutorRunner(const Executor& executor);

// The warning for `max_in_flight` above what `runner` runs at once, or "" when there is none
// (max_in_flight <= runner.max_concurrency, or the concurrency is unknown).
std::string OverConcurrencyMessage(int max_in_flight, const StreamRunner& runner);

// Reports OverConcurrencyMessage(), if any: to options.on_warning (each time), or else to stderr
// as "concurry: warning: <message>", once per process for each distinct message.
void WarnIfOverConcurrency(const StreamOptions& options, const StreamRunner& runner);
// The errors a stream stops with: the executor rejected or dropped a task (StoppedError),
// Cancel() (CancelledError), the timeout (TimeoutError).
std::exception_ptr StreamDroppedTaskError();
std::exception_ptr StreamCancelledError();
std::exception_ptr StreamTimeoutError(absl::Duration timeout, int64_t yielded);

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_RUNNER_H_

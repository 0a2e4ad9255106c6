#include "workers/task_worker.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "workers/backend.h"

namespace concurry {
namespace {

// An Executor task posted to the worker's queue.
class ExecutorTaskNode final : public workers_internal::CallNode {
 public:
  explicit ExecutorTaskNode(Executor::Task task) : task_(std::move(task)) {}

  void Run(void*) noexcept override { RunExecutorTask(task_, "TaskWorker"); }
  // Dropped (the worker stopped): destroyed without running, as the Executor contract allows.
  void Cancel() noexcept override { Executor::Task dropped = std::move(task_); }

 private:
  Executor::Task task_;
};

}  // namespace

TaskWorker TaskWorker::Create(WorkerOptions options) {
  const ResolvedWorkerOptions resolved = ResolveWorkerOptions(options);
  if (resolved.blocking) {
    throw InvalidOptionError(
        "TaskWorker::Create: blocking is true (set in the options or by ScopedWorkerDefaults), "
        "but TaskWorker returns futures; leave blocking unset or false and call Result() on "
        "them");
  }
  if (resolved.retry.worker_class() != nullptr) {
    throw InvalidOptionError(
        "TaskWorker::Create: per-method retry entries (WorkerRetry::For) are for worker classes; a "
        "TaskWorker's tasks use the policy for every call: .retry = RetryPolicy{...}");
  }
  options.blocking = false;
  // An executor that runs several tasks at once makes the worker a pool up to its concurrency,
  // unless the options say how many workers (max_workers = 1 keeps one serial worker).
  if (options.executor != nullptr && !options.max_workers.has_value() &&
      !options.on_demand.has_value() && !resolved.pooled()) {
    const int executor_concurrency = options.executor->max_concurrency();
    if (executor_concurrency > 1) {
      options.on_demand = true;
      options.max_workers = std::min(executor_concurrency, kMaxPoolWorkers);
    }
  }
  TaskWorker worker;
  worker.worker_ = Worker<workers_internal::TaskHost>::Create(std::move(options));
  return worker;
}

const std::shared_ptr<workers_internal::ActorCore>& TaskWorker::Core(const char* api) const {
  if (!worker_.valid()) {
    throw InvalidOptionError(
        absl::StrCat(api, ": the TaskWorker handle is empty (default-constructed or moved from)"));
  }
  return worker_.state_->core;
}

void TaskWorker::Submit(Task task) {
  const auto& core = Core("TaskWorker::Submit");
  if (!task) throw InvalidOptionError("TaskWorker::Submit: the Executor::Task is empty");
  if (core->encodes_calls()) {
    throw InvalidOptionError(absl::StrCat(
        "TaskWorker (as an Executor): mode ", AbslUnparseFlag(core->options().mode),
        " sends every call as bytes, and an Executor::Task (from Async, Then, Stream or a "
        "lambda) is a closure: lambdas and function objects cannot cross a process boundary. "
        "Register a free function with CONCURRY_REGISTER_FUNCTION and call "
        "worker.Submit(&fn, args...) or worker.Map(&fn, inputs), or use an in-process mode "
        "(sync, thread, tbb) for closures"));
  }
  auto node = std::make_unique<ExecutorTaskNode>(std::move(task));
  if (!core->Post(node.get())) {
    throw StoppedError("TaskWorker::Submit: the worker is stopped");
  }
  node.release();  // The worker owns it now.
}

bool TaskWorker::Stop(absl::Duration timeout) const {
  const auto& core = Core("TaskWorker::Stop");
  if (timeout < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat("TaskWorker::Stop: the timeout is ",
                                          absl::FormatDuration(timeout), "; allowed: >= 0"));
  }
  return core->Stop(timeout);
}

bool TaskWorker::Stop() const {
  const auto& core = Core("TaskWorker::Stop");
  return core->Stop(core->options().stop_timeout);
}

int TaskWorker::max_concurrency() const {
  return worker_.valid() ? worker_.state_->core->max_concurrency() : 0;
}

bool TaskWorker::stopped() const { return Core("TaskWorker::stopped")->stop_requested(); }

WorkerStats TaskWorker::Stats() const { return Core("TaskWorker::Stats")->Stats(); }

Future<void> TaskWorker::StoppedFuture() const {
  return Core("TaskWorker::StoppedFuture")->stopped_future();
}

const ResolvedWorkerOptions& TaskWorker::options() const {
  return Core("TaskWorker::options")->options();
}

StreamOptions TaskWorker::ToStreamOptions(MapOptions options, const char* api) {
  if (options.max_in_flight < 1 || options.max_in_flight > kMaxStreamInFlight) {
    throw InvalidOptionError(absl::StrCat(api, ": MapOptions::max_in_flight is ",
                                          options.max_in_flight, "; allowed: 1 to ",
                                          kMaxStreamInFlight));
  }
  if (options.timeout < absl::ZeroDuration()) {
    throw InvalidOptionError(
        absl::StrCat(api, ": MapOptions::timeout is ", absl::FormatDuration(options.timeout),
                     "; allowed: >= 0 (a limit per item), or absl::InfiniteDuration() for none"));
  }
  if (options.on_error != ErrorPolicy::kStopOnError && options.on_error != ErrorPolicy::kCollect) {
    throw InvalidOptionError(absl::StrCat(api, ": MapOptions::on_error: unknown value ",
                                          static_cast<int>(options.on_error),
                                          "; allowed: kStopOnError, kCollect"));
  }
  if (options.progress.miniters < 0) {
    throw InvalidOptionError(absl::StrCat(api, ": MapOptions::progress.miniters is ",
                                          options.progress.miniters,
                                          "; allowed: >= 0 (0 = automatic)"));
  }
  StreamOptions stream{
      .max_in_flight = options.max_in_flight,
      .order = Order::kInput,
      .on_error = options.on_error,
      .timeout = absl::InfiniteDuration(),  // The timeout is per item: MapFn's.
      .clock = options.clock,
      .progress = std::move(options.progress),
  };
  if (stream.progress.description.empty()) stream.progress.description = "Mapping";
  return stream;
}

TaskWorker MakeExecutor(WorkerOptions options) { return TaskWorker::Create(std::move(options)); }

namespace workers_internal {

std::exception_ptr UnsendableCallableError(const char* api, const ResolvedWorkerOptions& options,
                                           bool is_function_pointer) {
  const std::string mode = AbslUnparseFlag(options.mode);
  if (is_function_pointer) {
    return std::make_exception_ptr(InvalidOptionError(absl::StrCat(
        api,
        ": the function is not registered, so a worker whose calls cross a byte boundary "
        "(mode ",
        mode,
        ") cannot send it by name; add CONCURRY_REGISTER_FUNCTION(its::Name) at "
        "global namespace scope (CONCURRY_REGISTER_FUNCTION_AS for an overload)")));
  }
  return std::make_exception_ptr(InvalidOptionError(absl::StrCat(
      api, ": mode ", mode,
      " sends every call as bytes, and lambdas and function objects "
      "(including std::function) cannot cross a process boundary; register a free function "
      "with CONCURRY_REGISTER_FUNCTION and pass a pointer to it (worker.Submit(&app::Fn, "
      "args...))")));
}

bool MapGuard::Enter() {
  absl::MutexLock lock(&mu_);
  if (closed_) return false;
  ++running_;
  return true;
}

void MapGuard::Exit() {
  absl::MutexLock lock(&mu_);
  --running_;
}

void MapGuard::CloseAndWait() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  // Through the clock: a BlockingRegion, so a TbbExecutor task waiting here gets a thread added.
  Clock::Real().AwaitWithDeadline(&mu_, absl::Condition(&idle), absl::InfiniteFuture());
}

void ThrowMapClosed() {
  throw CancelledError("TaskWorker::Map: the map was destroyed before this item started");
}

std::exception_ptr MapItemTimeoutError(int64_t index, absl::Duration timeout) {
  return std::make_exception_ptr(TimeoutError(absl::StrCat(
      "TaskWorker::Map: item ", index, " did not complete within ", absl::FormatDuration(timeout),
      " of being dispatched to the worker (MapOptions::timeout is per item)")));
}

}  // namespace workers_internal
}  // namespace concurry

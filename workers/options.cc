#include "workers/options.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "futures/clock.h"
#include "futures/errors.h"

namespace concurry {
namespace {

using workers_internal::KnownMode;
constexpr absl::string_view kAllModes = workers_internal::kAllModeNames;

std::string ModeName(Mode mode) {
  return KnownMode(mode) ? AbslUnparseFlag(mode) : absl::StrCat(static_cast<int>(mode));
}

// Where a resolved field came from, for messages about combinations: "" when the caller set it
// explicitly, else a note naming the defaults it was taken from.
struct Sources {
  absl::string_view max_queued_tasks;
  absl::string_view queue_full;
};

void ValidateDefaults(Mode mode, const WorkerDefaults& d, absl::string_view where,
                      const Sources& sources = {}) {
  if (d.max_queued_tasks < 1) {
    throw InvalidOptionError(absl::StrCat(where, ": max_queued_tasks for mode ", ModeName(mode),
                                          " is ", d.max_queued_tasks,
                                          "; allowed: >= 1, or kUnbounded for no cap"));
  }
  if (d.queue_full != QueueFullPolicy::kDefer && d.queue_full != QueueFullPolicy::kBlock) {
    throw InvalidOptionError(absl::StrCat(where, ": queue_full: unknown value ",
                                          static_cast<int>(d.queue_full),
                                          "; allowed: kDefer, kBlock"));
  }
  if (d.queue_full == QueueFullPolicy::kBlock && d.max_queued_tasks == kUnbounded) {
    // kBlock bounds the queue by blocking callers; without a cap nothing would ever block, which
    // is kDefer in disguise and almost certainly a forgotten max_queued_tasks.
    throw InvalidOptionError(absl::StrCat(
        where, ": queue_full is kBlock", sources.queue_full, " for mode ", ModeName(mode),
        " but max_queued_tasks is kUnbounded", sources.max_queued_tasks,
        "; kBlock needs max_queued_tasks: set it to the cap (>= 1), or use kDefer"));
  }
  if (d.stop_timeout < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat(where, ": stop_timeout is ",
                                          absl::FormatDuration(d.stop_timeout),
                                          "; allowed: >= 0 (InfiniteDuration waits forever)"));
  }
  if (mode != Mode::kRemote && d.remote != RemoteOptions{}) {
    throw InvalidOptionError(absl::StrCat(where, ": remote is set for mode ", ModeName(mode),
                                          "; only remote mode reaches hosts"));
  }
  if (d.max_in_flight_coroutines != kUnbounded &&
      (d.max_in_flight_coroutines < 1 || d.max_in_flight_coroutines > kMaxInFlightCoroutines)) {
    throw InvalidOptionError(absl::StrCat(where, ": max_in_flight_coroutines for mode ",
                                          ModeName(mode), " is ", d.max_in_flight_coroutines,
                                          "; allowed: 1 to ", kMaxInFlightCoroutines,
                                          ", or kUnbounded for no cap"));
  }
  if (d.max_workers < 1 || d.max_workers > kMaxPoolWorkers) {
    throw InvalidOptionError(absl::StrCat(
        where, ": max_workers for mode ", ModeName(mode), " is ", d.max_workers, "; allowed: 1 to ",
        kMaxPoolWorkers, " (more than 1 makes a pool; 0 is allowed only with on_demand)"));
  }
}

// The fields one ScopedWorkerDefaults changed.
struct Delta {
  std::optional<bool> blocking;
  std::optional<int64_t> max_queued_tasks;
  std::optional<QueueFullPolicy> queue_full;
  std::optional<bool> unwrap_futures;
  std::optional<absl::Duration> stop_timeout;
  std::optional<int> max_workers;
  std::optional<int64_t> max_in_flight_coroutines;
  // The remote settings before and after the change: only the fields that differ are applied,
  // so a scope that sets remote.token alone keeps an outer scope's remote.hosts.
  std::optional<std::pair<RemoteOptions, RemoteOptions>> remote;
};

// Writes over `out` the fields of `after` that differ from `before`.
void ApplyRemoteChanges(const RemoteOptions& before, const RemoteOptions& after,
                        RemoteOptions& out) {
  const auto take = [&](auto RemoteOptions::*field) {
    if (after.*field != before.*field) out.*field = after.*field;
  };
  take(&RemoteOptions::hosts);
  take(&RemoteOptions::token);
  take(&RemoteOptions::token_file);
  take(&RemoteOptions::allow_insecure);
  take(&RemoteOptions::tls_root_certs);
  take(&RemoteOptions::tls_client_cert);
  take(&RemoteOptions::tls_client_key);
  take(&RemoteOptions::connect_timeout);
  take(&RemoteOptions::connect_attempt_timeout);
  take(&RemoteOptions::reconnect_backoff_initial);
  take(&RemoteOptions::reconnect_backoff_max);
  take(&RemoteOptions::keepalive_time);
  take(&RemoteOptions::keepalive_timeout);
  take(&RemoteOptions::max_message_bytes);
  take(&RemoteOptions::call_timeout);
}

Delta Diff(const WorkerDefaults& before, const WorkerDefaults& after) {
  Delta d;
  if (after.blocking != before.blocking) d.blocking = after.blocking;
  if (after.max_queued_tasks != before.max_queued_tasks)
    d.max_queued_tasks = after.max_queued_tasks;
  if (after.queue_full != before.queue_full) d.queue_full = after.queue_full;
  if (after.unwrap_futures != before.unwrap_futures) d.unwrap_futures = after.unwrap_futures;
  if (after.stop_timeout != before.stop_timeout) d.stop_timeout = after.stop_timeout;
  if (after.max_workers != before.max_workers) d.max_workers = after.max_workers;
  if (after.max_in_flight_coroutines != before.max_in_flight_coroutines) {
    d.max_in_flight_coroutines = after.max_in_flight_coroutines;
  }
  if (after.remote != before.remote) d.remote.emplace(before.remote, after.remote);
  return d;
}

void Apply(const Delta& d, WorkerDefaults& out) {
  if (d.blocking) out.blocking = *d.blocking;
  if (d.max_queued_tasks) out.max_queued_tasks = *d.max_queued_tasks;
  if (d.queue_full) out.queue_full = *d.queue_full;
  if (d.unwrap_futures) out.unwrap_futures = *d.unwrap_futures;
  if (d.stop_timeout) out.stop_timeout = *d.stop_timeout;
  if (d.max_workers) out.max_workers = *d.max_workers;
  if (d.max_in_flight_coroutines) out.max_in_flight_coroutines = *d.max_in_flight_coroutines;
  if (d.remote) ApplyRemoteChanges(d.remote->first, d.remote->second, out.remote);
}

// The built-in defaults plus the live scopes' changes, applied in creation order. Removing a
// scope recomputes from the layers that remain, so scopes may end in any order (on different
// threads, say) without leaving their changes behind.
class DefaultsTable {
 public:
  WorkerDefaults Get(Mode mode) ABSL_LOCKS_EXCLUDED(mu_) {
    // A `change` of Add runs with mu_ held by this thread and may read the defaults.
    if (in_change_) return ComputeHeld(mode);
    absl::MutexLock lock(&mu_);
    return ComputeLocked(mode);
  }
  // Runs `change` on the current defaults of `mode` and adds a layer with the fields it changed,
  // all under one lock so that no scope can end in between. Returns the layer's id.
  uint64_t Add(Mode mode, absl::FunctionRef<void(WorkerDefaults&)> change)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    const WorkerDefaults before = ComputeLocked(mode);
    WorkerDefaults after = before;
    {
      struct InChange {
        InChange() { in_change_ = true; }
        ~InChange() { in_change_ = false; }
      } in_change;
      change(after);
    }
    ValidateDefaults(mode, after, "ScopedWorkerDefaults");
    const uint64_t id = next_id_++;
    layers_.push_back({id, mode, Diff(before, after)});
    return id;
  }
  void Remove(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    for (auto it = layers_.begin(); it != layers_.end(); ++it) {
      if (it->id == id) {
        layers_.erase(it);
        return;
      }
    }
  }

 private:
  struct Layer {
    uint64_t id;
    Mode mode;
    Delta delta;
  };

  WorkerDefaults ComputeLocked(Mode mode) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    WorkerDefaults d;
    for (const Layer& layer : layers_) {
      if (layer.mode == mode) Apply(layer.delta, d);
    }
    return d;
  }
  // Only while this thread holds mu_ inside Add (the analysis cannot see that).
  WorkerDefaults ComputeHeld(Mode mode) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return ComputeLocked(mode);
  }

  // Whether this thread is running a `change` inside Add (and so holds mu_).
  static thread_local bool in_change_;

  absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<Layer> layers_ ABSL_GUARDED_BY(mu_);
};

thread_local bool DefaultsTable::in_change_ = false;

DefaultsTable& Table() {
  static DefaultsTable* const table = new DefaultsTable();
  return *table;
}

}  // namespace

bool AbslParseFlag(absl::string_view text, Mode* mode, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "sync" || lower == "synchronous") {
    *mode = Mode::kSync;
  } else if (lower == "thread" || lower == "threads") {
    *mode = Mode::kThread;
  } else if (lower == "tbb") {
    *mode = Mode::kTbb;
  } else if (lower == "loopback") {
    *mode = Mode::kLoopback;
  } else if (lower == "process" || lower == "processes" || lower == "proc" || lower == "procs") {
    *mode = Mode::kProcess;
  } else if (lower == "coroutine" || lower == "asyncio" || lower == "async" ||
             lower == "asynchronous") {
    *mode = Mode::kCoroutine;
  } else if (lower == "remote" || lower == "ray") {
    *mode = Mode::kRemote;
  } else {
    *error = absl::StrCat("unknown mode \"", text,
                          "\"; expected sync, thread (threads), tbb, loopback, process (proc), "
                          "coroutine (asyncio) or remote (ray)");
    return false;
  }
  return true;
}

bool AbslParseFlag(absl::string_view text, ProcessStart* start, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "forkserver" || lower == "fork_server") {
    *start = ProcessStart::kForkServer;
  } else if (lower == "fork") {
    *start = ProcessStart::kFork;
  } else {
    *error = absl::StrCat("unknown process start \"", text, "\"; expected forkserver or fork");
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(ProcessStart start) {
  switch (start) {
    case ProcessStart::kForkServer:
      return "forkserver";
    case ProcessStart::kFork:
      return "fork";
  }
  return absl::StrCat(static_cast<int>(start));
}

std::string AbslUnparseFlag(Mode mode) {
  switch (mode) {
    case Mode::kSync:
      return "sync";
    case Mode::kThread:
      return "thread";
    case Mode::kTbb:
      return "tbb";
    case Mode::kLoopback:
      return "loopback";
    case Mode::kProcess:
      return "process";
    case Mode::kCoroutine:
      return "coroutine";
    case Mode::kRemote:
      return "remote";
  }
  return absl::StrCat(static_cast<int>(mode));
}

bool AbslParseFlag(absl::string_view text, QueueFullPolicy* policy, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "defer" || lower == "park") {
    *policy = QueueFullPolicy::kDefer;
  } else if (lower == "block") {
    *policy = QueueFullPolicy::kBlock;
  } else {
    *error =
        absl::StrCat("unknown queue_full policy \"", text, "\"; expected defer (park) or block");
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(QueueFullPolicy policy) {
  switch (policy) {
    case QueueFullPolicy::kDefer:
      return "defer";
    case QueueFullPolicy::kBlock:
      return "block";
  }
  return absl::StrCat(static_cast<int>(policy));
}

WorkerDefaults GetWorkerDefaults(Mode mode) {
  if (!KnownMode(mode)) {
    throw InvalidOptionError(absl::StrCat("GetWorkerDefaults: mode: unknown value ",
                                          static_cast<int>(mode), "; allowed: ", kAllModes));
  }
  return Table().Get(mode);
}

ScopedWorkerDefaults::ScopedWorkerDefaults(Mode mode,
                                           absl::FunctionRef<void(WorkerDefaults&)> change) {
  if (!KnownMode(mode)) {
    throw InvalidOptionError(absl::StrCat("ScopedWorkerDefaults: mode: unknown value ",
                                          static_cast<int>(mode), "; allowed: ", kAllModes));
  }
  id_ = Table().Add(mode, change);
}

ScopedWorkerDefaults::~ScopedWorkerDefaults() { Table().Remove(id_); }

ResolvedWorkerOptions ResolveWorkerOptions(const WorkerOptions& options) {
  const Mode mode = options.mode;
  if (!KnownMode(mode)) {
    throw InvalidOptionError(absl::StrCat("worker options: mode: unknown value ",
                                          static_cast<int>(mode), "; allowed: ", kAllModes));
  }
  WorkerDefaults d = Table().Get(mode);
  if (options.blocking) d.blocking = *options.blocking;
  if (options.max_queued_tasks) d.max_queued_tasks = *options.max_queued_tasks;
  if (options.queue_full) d.queue_full = *options.queue_full;
  if (options.unwrap_futures) d.unwrap_futures = *options.unwrap_futures;
  if (options.stop_timeout) d.stop_timeout = *options.stop_timeout;
  if (options.max_in_flight_coroutines.has_value() && mode != Mode::kCoroutine) {
    throw InvalidOptionError(absl::StrCat(
        "worker options: max_in_flight_coroutines is set for mode ", ModeName(mode),
        "; only coroutine mode interleaves calls (other modes run one call at a time)"));
  }
  if (options.max_in_flight_coroutines) {
    d.max_in_flight_coroutines = *options.max_in_flight_coroutines;
  }
  const bool on_demand = options.on_demand.value_or(false);
  if (options.max_workers) d.max_workers = *options.max_workers;
  if (on_demand && (!options.max_workers || *options.max_workers == 0)) {
    d.max_workers = kDefaultOnDemandWorkers;
  }
  if (options.on_demand_keepalive && !on_demand) {
    throw InvalidOptionError(
        "worker options: on_demand_keepalive is set but on_demand is not; it is how long an idle "
        "on-demand worker waits for the next call");
  }
  if (options.on_demand_keepalive && *options.on_demand_keepalive < absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat("worker options: on_demand_keepalive is ",
                                          absl::FormatDuration(*options.on_demand_keepalive),
                                          "; allowed: >= 0"));
  }
  if (options.make_balancer && options.load_balancing) {
    throw InvalidOptionError(
        "worker options: both load_balancing and make_balancer are set; set one (make_balancer "
        "supplies a balancer of your own instead of a built-in algorithm)");
  }
  if (options.make_balancer && (on_demand || d.max_workers <= 1)) {
    throw InvalidOptionError(absl::StrCat(
        "worker options: make_balancer is set on ",
        on_demand ? "an on-demand pool, which gives every call an idle worker or a new one"
                  : "one worker (max_workers is 1)",
        "; a balancer chooses among the workers of a pool with max_workers > 1"));
  }
  if (options.load_balancing && !on_demand && d.max_workers <= 1) {
    throw InvalidOptionError(absl::StrCat(
        "worker options: load_balancing is set but max_workers is ", d.max_workers,
        ", which makes one worker; it chooses among the workers of a pool (max_workers > 1)"));
  }
  if (options.load_balancing) {
    const LoadBalancing b = *options.load_balancing;
    if (b != LoadBalancing::kRoundRobin && b != LoadBalancing::kLeastActiveLoad &&
        b != LoadBalancing::kLeastTotalLoad && b != LoadBalancing::kRandom) {
      throw InvalidOptionError(
          absl::StrCat("worker options: load_balancing: unknown value ", static_cast<int>(b),
                       "; allowed: kRoundRobin, kLeastActiveLoad, kLeastTotalLoad, kRandom"));
    }
    if (on_demand) {
      throw InvalidOptionError(
          "worker options: load_balancing is set on an on-demand pool, which gives every call "
          "an idle worker or a new one from one shared queue; load balancing applies to pools "
          "with a fixed set of workers (max_workers > 1 without on_demand)");
    }
  }
  constexpr absl::string_view kFromDefaults = " (from the mode's defaults)";
  ValidateDefaults(mode, d, "worker options",
                   {.max_queued_tasks = options.max_queued_tasks ? "" : kFromDefaults,
                    .queue_full = options.queue_full ? "" : kFromDefaults});
  if (options.executor != nullptr && mode != Mode::kTbb) {
    throw InvalidOptionError(absl::StrCat("worker options: executor is set for mode ",
                                          ModeName(mode), "; only tbb mode runs on an executor"));
  }
  if (options.process_start.has_value()) {
    if (mode != Mode::kProcess) {
      throw InvalidOptionError(absl::StrCat("worker options: process_start is set for mode ",
                                            ModeName(mode),
                                            "; only process mode starts processes"));
    }
    if (*options.process_start != ProcessStart::kForkServer &&
        *options.process_start != ProcessStart::kFork) {
      throw InvalidOptionError(absl::StrCat("worker options: process_start: unknown value ",
                                            static_cast<int>(*options.process_start),
                                            "; allowed: kForkServer, kFork"));
    }
  }
  if (options.remote.has_value() && mode != Mode::kRemote) {
    throw InvalidOptionError(absl::StrCat("worker options: remote is set for mode ", ModeName(mode),
                                          "; only remote mode reaches hosts"));
  }
  ResolvedWorkerOptions r;
  r.mode = mode;
  r.blocking = d.blocking;
  r.max_queued_tasks = d.max_queued_tasks;
  r.queue_full = d.queue_full;
  r.unwrap_futures = d.unwrap_futures;
  r.stop_timeout = d.stop_timeout;
  r.max_workers = d.max_workers;
  r.on_demand = on_demand;
  r.on_demand_keepalive = options.on_demand_keepalive.value_or(absl::ZeroDuration());
  r.load_balancing = options.load_balancing;
  r.make_balancer = options.make_balancer;
  r.clock = options.clock;
  r.executor = options.executor;
  r.max_in_flight_coroutines = d.max_in_flight_coroutines;
  r.process_start = options.process_start.value_or(ProcessStart::kForkServer);
  r.remote = options.remote.has_value() ? *options.remote : d.remote;
  r.limits = options.limits.Resolve(mode, options.clock);
  for (const RetryPolicy* policy : options.retry.policies()) {
    try {
      ValidateRetryPolicy(*policy);
    } catch (const InvalidOptionError& error) {
      throw InvalidOptionError(absl::StrCat("worker options: retry: ", error.what()));
    }
  }
  r.retry = options.retry;
  return r;
}

std::vector<const RetryPolicy*> WorkerRetry::policies() const {
  std::vector<const RetryPolicy*> all;
  if (default_ != nullptr) all.push_back(default_.get());
  for (const Entry& entry : entries_) all.push_back(entry.policy.get());
  return all;
}

LimitPool WorkerLimits::Resolve(Mode mode, Clock* clock) const {
  const bool other_process = mode == Mode::kProcess || mode == Mode::kRemote;
  const auto check = [&](const LimitSet& set) {
    // As ExportLimitPool() will find it, but now, at configuration time. (A set without limits
    // goes over as the no-op set, whatever its sharing.)
    if (other_process && !set.no_op() && set.sharing() == LimitSharing::kHosts) {
      throw InvalidOptionError(absl::StrCat(
          "worker options: limits: a LimitSet shared across hosts through a LimitStore "
          "(LimitSharing::kHosts) cannot be handed to a worker in mode ",
          ModeName(mode),
          " yet; open the same set in the worker's process instead (the same store options "
          "and LimitSetOptions::name share the same state)"));
    }
    if (other_process && !set.no_op() && set.sharing() == LimitSharing::kThreads) {
      throw InvalidOptionError(absl::StrCat(
          "worker options: limits: a LimitSet shared by threads (LimitSharing::kThreads) is not "
          "compatible with worker mode ",
          ModeName(mode), "; create it with LimitSharing::kProcesses"));
    }
  };
  if (pool_.has_value()) {
    for (const LimitSet& set : pool_->sets()) check(set);
    return *pool_;
  }
  if (!sets_.empty()) {
    for (const LimitSet& set : sets_) check(set);
    return LimitPool::Create(sets_);
  }
  if (limits_.empty()) return LimitPool();
  if (other_process) {
    // The worker (each worker of a pool) runs in a process of its own: the limits must be one
    // state that all of them share, i.e. a process-shared set, handed to each worker process.
    // Such a set runs on the real clock, the only time every process agrees on.
    if (clock != nullptr && clock != &Clock::Real()) {
      throw InvalidOptionError(absl::StrCat(
          "worker options: limits: a worker in mode ", ModeName(mode),
          " runs in another process, so its limits become a LimitSet shared by processes "
          "(LimitSharing::kProcesses), which runs on the real clock; WorkerOptions::clock must "
          "be null or Clock::Real() when limits are given as a list of Limits"));
    }
    return LimitPool::Create({LimitSet::Create(limits_, {.sharing = LimitSharing::kProcesses})});
  }
  // Private to this worker (or pool of workers).
  return LimitPool::Create({LimitSet::Create(limits_, {.clock = clock})});
}

}  // namespace concurry

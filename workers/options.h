// Worker options: the execution mode and the per-worker settings of concurry's `options()`, the
// process-wide defaults per mode, and a scoped override of those defaults (concurry's
// `global_config` and `temp_config`).
//
//   auto w = Worker<Counter>::Create({.mode = Mode::kTbb, .max_queued_tasks = 100}, 0);
//   {
//     ScopedWorkerDefaults scope(Mode::kThread, [](WorkerDefaults& d) { d.unwrap_futures = false;
//     }); auto t = Worker<Counter>::Create({.mode = Mode::kThread}, 0);  // unwrap_futures == false
//   }  // the previous defaults are back
//
// Resolution order for every field: the explicit option > the innermost scoped override > the
// built-in defaults of the mode.

#ifndef CONCURRY_WORKERS_OPTIONS_H_
#define CONCURRY_WORKERS_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"
#include "pools/load_balancer.h"
#include "retry/policy.h"

namespace concurry {

// Where a worker's methods run. Parses from concurry's strings and aliases, case-insensitively:
// "sync" / "synchronous", "thread" / "threads", "tbb", "loopback", "process" / "processes" /
// "proc" / "procs", "coroutine" / "asyncio" / "async", "remote" / "ray".
enum class Mode {
  // Inline in the caller's thread at call time; the returned future is already done.
  kSync,
  // One dedicated thread per worker; calls run one at a time in FIFO order.
  kThread,
  // A lightweight actor on a shared oneTBB arena: one call at a time per worker (FIFO), different
  // workers in parallel. Costs a few hundred bytes per idle worker.
  kTbb,
  // Like kThread, but every call, argument, result and error is encoded to bytes and decoded again,
  // as process and remote modes will do. Needs CONCURRY_REGISTER_WORKER; use it to check that a
  // worker is ready to leave the process.
  kLoopback,
  // Each worker in a child process of its own, one call at a time in FIFO order; calls,
  // results and errors cross a socket as bytes. Needs CONCURRY_REGISTER_WORKER and
  // @concurry//workers/process; a crash of the process fails its calls with CrashedError
  // (calls made after that fail with StoppedError, whose message says how the process ended).
  // Workers start from a fork server by default (ProcessStart; docs/process.md).
  kProcess,
  // One event-loop thread per worker runs the methods that return Coro<T> (futures/coro.h); they
  // interleave at every co_await, up to max_in_flight_coroutines at a time (the rest wait FIFO).
  // Plain methods run one at a time, FIFO, on the worker's second (side) thread, as in kThread.
  // Needs @concurry//workers/coroutine (docs/coroutines.md).
  kCoroutine,
  // Each worker in a host process on another machine (or this one), reached over gRPC; calls,
  // results and errors cross as bytes. Needs CONCURRY_REGISTER_WORKER, a host built with the
  // class (concurry_worker_host), WorkerOptions::remote and @concurry//workers/remote
  // (docs/remote.md). A host that dies fails its calls with CrashedError.
  kRemote,
};

namespace workers_internal {
// The number of Mode values, whether `mode` is one of them, and their names for messages.
inline constexpr int kNumModes = static_cast<int>(Mode::kRemote) + 1;
inline constexpr bool KnownMode(Mode mode) {
  return static_cast<int>(mode) >= 0 && static_cast<int>(mode) < kNumModes;
}
inline constexpr absl::string_view kAllModeNames =
    "kSync, kThread, kTbb, kLoopback, kProcess, kCoroutine, kRemote";
}  // namespace workers_internal

bool AbslParseFlag(absl::string_view text, Mode* mode, std::string* error);
std::string AbslUnparseFlag(Mode mode);

// What a call does when `max_queued_tasks` calls are already forwarded to the worker.
// Parses from "defer" / "park" and "block".
enum class QueueFullPolicy {
  // concurry's behaviour: the call returns its future at once and waits, on the caller's side, in
  // a FIFO until a forwarded call finishes.
  kDefer,
  // Strict bound: the call blocks the calling thread until there is room (or the worker stops).
  // Needs a cap: kBlock with max_queued_tasks == kUnbounded is rejected (InvalidOptionError).
  kBlock,
};

bool AbslParseFlag(absl::string_view text, QueueFullPolicy* policy, std::string* error);
std::string AbslUnparseFlag(QueueFullPolicy policy);

// How a Mode::kProcess worker's process starts (docs/process.md).
enum class ProcessStart {
  // Default. Forked by a small fork server process that the program started while it had one
  // thread: concurry::StartForkServer() at the top of main (workers/process/fork_server.h). A
  // program that did not call it gets one started at its first process worker if it still has
  // one thread then; otherwise creating the worker fails with InvalidOptionError saying so.
  kForkServer,
  // fork() of the calling process. Starts without a fork server, and a child shares whatever
  // process-shared memory the parent mapped before, but it inherits a copy of a program whose
  // other threads vanish in the child: a lock one of them held (in malloc-free code, a logging
  // library, oneTBB, a mutex of yours) stays locked there forever, so the worker's constructor
  // or methods may deadlock. Safe when the program has one thread, or the worker's code takes
  // no lock another thread might hold.
  kFork,
};

bool AbslParseFlag(absl::string_view text, ProcessStart* start, std::string* error);
std::string AbslUnparseFlag(ProcessStart start);

// Where and how a Mode::kRemote worker reaches its host (docs/remote.md). Every field is checked
// when the worker is created: a missing host or token, or a TLS file that cannot be read, throws
// InvalidOptionError saying which.
struct RemoteOptions {
  // The hosts, as gRPC targets: "host:port" ("127.0.0.1:7000", "[::1]:7000", "box:7000") or a
  // target with a resolver, such as "dns:///workers.example:7000", whose addresses gRPC spreads
  // workers over (round-robin). At least one; workers are placed on them round-robin.
  std::vector<std::string> hosts;
  // The hosts' shared secret (the contents of their --token_file), sent with every call as
  // "authorization: Bearer <token>". Required (this or token_file): hosts refuse calls without
  // it. A token shorter than 16 bytes is accepted with a warning (once per program).
  std::string token;
  // A file holding the token, read when the worker is created; surrounding whitespace (the
  // newline `base64 > token` writes) is stripped, as the host does with its --token_file. Set
  // this or `token`, not both.
  std::string token_file;
  // Whether the token may travel in plaintext to a host that is not on loopback. By default a
  // plaintext channel (tls_root_certs empty) is refused for any other address, since whoever
  // sees the traffic could reuse the token; set this for a network you trust.
  bool allow_insecure = false;
  // PEM file of the root certificates that signed the hosts' certificates: set, the channel uses
  // TLS; empty, plaintext (for loopback or a network you trust).
  std::string tls_root_certs;
  // PEM files of a client certificate and its key, for hosts that ask for one (TLS only; both or
  // neither).
  std::string tls_client_cert;
  std::string tls_client_key;
  // How long Create waits for a connection to a host before it fails (> 0). The host whose turn
  // it is gets 250 ms to connect once another host is ready (min(connect_timeout / hosts, 1 s)
  // while none is; none when it is known to be down), then a ready host is taken instead: one
  // unreachable host does not use connect_timeout up.
  absl::Duration connect_timeout = absl::Seconds(5);
  // How long one connection attempt may take before it counts as failed (gRPC's
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS; >= 100 ms): a host that drops packets is marked down
  // after this instead of gRPC's 20 s.
  absl::Duration connect_attempt_timeout = absl::Seconds(1);
  // The wait before reconnecting to a host whose connection failed, growing from the first to
  // the second (gRPC's initial and max reconnect backoff; each >= 100 ms, first <= max). A host
  // that comes back is used again within about reconnect_backoff_max.
  absl::Duration reconnect_backoff_initial = absl::Milliseconds(100);
  absl::Duration reconnect_backoff_max = absl::Seconds(2);
  // HTTP/2 keepalive while workers are open on a host: a ping after keepalive_time without
  // traffic, and the connection (with every worker on it) counts as dead when the ping is not
  // answered within keepalive_timeout. A host that vanished without closing its connections
  // (power loss, a cable, SIGSTOP) is noticed within max(2 x keepalive_time, 1 s) +
  // keepalive_timeout, 1.5 s with the defaults: gRPC's client leaves at least 1 s between two of
  // its pings, and a flow-control ping it sends just after the host stopped restarts the
  // keepalive clock once. Through a proxy or load balancer that limits pings (Envoy and many
  // ingresses answer frequent pings with GOAWAY "too_many_pings"), and on networks with long stalls
  // or round trips near keepalive_timeout, raise both (e.g. 30 s / 10 s): a dead host is then
  // noticed later. Both > 0; keepalive_time >= 500 ms (worker hosts never refuse pings that far
  // apart).
  absl::Duration keepalive_time = absl::Milliseconds(500);
  absl::Duration keepalive_timeout = absl::Milliseconds(500);
  // The largest message sent or accepted, in bytes (>= 4096): bounds a call's arguments and reply.
  int max_message_bytes = 128 << 20;
  // How long each call may take, from when the client sends it (> 0; InfiniteDuration(): no
  // limit). Past it the call's future fails with TimeoutError, and a call still queued on the
  // host is never started there (the host drops a call whose deadline passed while it waited,
  // and the client sends a cancellation). A call already running on the host runs on (C++ cannot
  // interrupt it) unless its method returns early on this_call::CancelRequested(), which that
  // cancellation turns true. Result(timeout) bounds only the caller's wait, as in every mode.
  absl::Duration call_timeout = absl::InfiniteDuration();

  bool operator==(const RemoteOptions&) const = default;
};

// `max_queued_tasks` value meaning "no cap".
inline constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max();

// The largest finite `max_in_flight_coroutines`.
inline constexpr int64_t kMaxInFlightCoroutines = int64_t{1} << 20;

// The largest `max_workers`.
inline constexpr int kMaxPoolWorkers = 65536;
// The cap of an on-demand pool whose max_workers is unset or 0.
inline constexpr int kDefaultOnDemandWorkers = 32;

// The `limits` of a worker, in any of concurry's forms (reference §5.6):
// - nothing, or an empty list: no limits (a no-op set, so code that acquires still runs);
// - a list of Limits: a LimitSet private to this worker, created with it on the worker's
//   WorkerOptions::clock (so a FakeClock drives its rate limits in tests); for a process worker,
//   a process-shared set on the real clock;
// - a LimitSet: shared with every worker (and anything else) given the same set;
// - a list of LimitSets: a round-robin LimitPool over them;
// - a LimitPool: used as is.
// Inside the worker's methods, CurrentWorkerLimits() returns them as a LimitPool.
// A pool of workers (max_workers > 1) resolves its limits once, so a list of Limits becomes one
// LimitSet shared by all its workers, and gives worker i LimitPool::WithWorkerIndex(i) over the
// sets, so that its workers start on different sets (docs/pools.md).
class WorkerLimits {
 public:
  WorkerLimits() = default;
  WorkerLimits(std::initializer_list<Limit> limits) : limits_(limits) {}   // NOLINT: implicit.
  WorkerLimits(std::vector<Limit> limits) : limits_(std::move(limits)) {}  // NOLINT
  WorkerLimits(LimitSet set) : sets_{std::move(set)} {}                    // NOLINT
  WorkerLimits(std::vector<LimitSet> sets) : sets_(std::move(sets)) {}     // NOLINT
  WorkerLimits(LimitPool pool) : pool_(std::move(pool)) {}                 // NOLINT

  // Returns the pool a worker in `mode` uses: for a list of Limits, a new private set on `clock`
  // (null: Clock::Real()), process-shared for kProcess and kRemote (which need the real clock).
  // Throws InvalidOptionError for a set that cannot serve `mode` (a kThreads set cannot be shared
  // with a worker in another process: kProcess and kRemote need a process-shared or remote set),
  // or a clock other than the real one for a process-shared set. Sets given ready-made keep their
  // own clocks.
  LimitPool Resolve(Mode mode, Clock* clock = nullptr) const;

 private:
  std::vector<Limit> limits_;
  std::vector<LimitSet> sets_;
  std::optional<LimitPool> pool_;
};

// The retry policies of a worker's calls (retry/policy.h): one for every method and TaskWorker
// task, and per-method ones. Retries run inside the worker, between the call's dispatch and its
// result: the call counts once for max_queued_tasks, every attempt runs on that worker, and the
// worker is busy during the back-off waits (as in concurry). A method that calls another method
// of its own class directly is not retried again (C++ calls bypass the worker).
//
//   .retry = concurry::WorkerRetry({.num_retries = 2})
//                .For<Client>(&Client::Ask, {.num_retries = 5, .wait = absl::Seconds(1)})
//
// Attempts get copies of the call's arguments; a call whose arguments cannot be copied (a
// std::unique_ptr) runs once, unretried. A method returning a Future is retried only when it
// throws before returning it.
class WorkerRetry {
 public:
  // No retries.
  WorkerRetry() = default;
  // `policy` for every method and task.
  WorkerRetry(RetryPolicy policy)  // NOLINT: implicit, for `.retry = RetryPolicy{...}`.
      : default_(std::make_shared<const RetryPolicy>(std::move(policy))) {}

  // `policy` for `method` of workers of class T (instead of the policy for every method). A method
  // that is not T's or a base's does not compile; a worker of another class rejects the entry.
  template <typename T, typename M>
  requires std::is_member_function_pointer_v<M> WorkerRetry& For(M method, RetryPolicy policy) {
    static_assert(std::is_base_of_v<typename MethodClass<M>::type, T>,
                  "WorkerRetry::For<T>: the method is not a method of T or of a base of T");
    if (worker_class_ != nullptr && *worker_class_ != typeid(T)) {
      throw InvalidOptionError(
          "WorkerRetry::For: every per-method entry must be for the same worker class");
    }
    worker_class_ = &typeid(T);
    entries_.push_back(Entry{&typeid(M), std::make_shared<const M>(method),
                             std::make_shared<const RetryPolicy>(std::move(policy))});
    return *this;
  }

  // The policy for calls of `method` (null: not retried).
  template <typename M>
  const RetryPolicy* Find(const M& method) const {
    for (const Entry& entry : entries_) {
      if (*entry.method_type == typeid(M) && *static_cast<const M*>(entry.method.get()) == method) {
        return entry.policy.get();
      }
    }
    return default_.get();
  }
  // The policy for every method and task (null: none).
  const RetryPolicy* default_policy() const { return default_.get(); }
  // The worker class the per-method entries are for (null: none).
  const std::type_info* worker_class() const { return worker_class_; }
  bool empty() const { return default_ == nullptr && entries_.empty(); }
  // Every policy, for validation.
  std::vector<const RetryPolicy*> policies() const;

 private:
  template <typename M>
  struct MethodClass {};
  template <typename F, typename C>
  struct MethodClass<F C::*> {
    using type = C;
  };
  struct Entry {
    const std::type_info* method_type;
    std::shared_ptr<const void> method;  // An M, compared with == (never by its bytes).
    std::shared_ptr<const RetryPolicy> policy;
  };

  std::shared_ptr<const RetryPolicy> default_;
  std::vector<Entry> entries_;
  const std::type_info* worker_class_ = nullptr;
};

// Options of one worker. Plain struct filled with designated initializers; a field left empty
// takes the default of the mode (see WorkerDefaults).
struct WorkerOptions {
  Mode mode = Mode::kThread;
  // Calls return values instead of futures. The handle type decides this, so that it stays
  // type-checked: BlockingWorker<T> sets it; Worker<T> rejects `true`.
  std::optional<bool> blocking = std::nullopt;
  // Cap on calls forwarded to the worker and not yet finished: >= 1, or kUnbounded. Calls beyond
  // it wait as `queue_full` says (QueueFullPolicy::kBlock needs a cap). Ignored in kSync mode (a
  // call there finishes before it returns).
  std::optional<int64_t> max_queued_tasks = std::nullopt;
  std::optional<QueueFullPolicy> queue_full = std::nullopt;
  // Replace Future arguments (also inside vectors, maps, tuples, pairs, optionals) by their values
  // before the method runs; the call is dispatched when they are ready.
  std::optional<bool> unwrap_futures = std::nullopt;
  // How long Stop() without an argument, and the last handle's destructor, wait for a running call:
  // >= 0; absl::InfiniteDuration() waits forever. (Abseil turns absl::Seconds(NaN) into
  // InfiniteDuration() and absl::Seconds(-NaN) into -InfiniteDuration(), which is rejected: check
  // a computed double for NaN before converting it.)
  std::optional<absl::Duration> stop_timeout = std::nullopt;
  // Number of workers: 1 (the default) is one worker; more makes a pool of that many workers
  // behind the one handle (docs/pools.md), in [1, kMaxPoolWorkers]. With on_demand, the cap on
  // workers alive at once; 0 or unset there means kDefaultOnDemandWorkers.
  std::optional<int> max_workers = std::nullopt;
  // A pool whose workers are created for calls and stopped when idle (after
  // on_demand_keepalive), at most max_workers at a time; calls beyond that wait in the pool's
  // queue and go to the next worker that frees up.
  std::optional<bool> on_demand = std::nullopt;
  // Pools only: how long an on-demand worker with nothing to do stays alive for the next call
  // (>= 0; 0 stops it as soon as its call finishes, as concurry does).
  std::optional<absl::Duration> on_demand_keepalive = std::nullopt;
  // Pools only: which worker takes each call (pools/load_balancer.h). Unset: kRoundRobin for a
  // pool of Worker<T>; a TaskWorker pool then hands each task to the next free worker from one
  // shared queue instead (work-conserving), and an on-demand pool always does. Setting it on a
  // TaskWorker pool binds each task to a worker at submission, as concurry does.
  std::optional<LoadBalancing> load_balancing = std::nullopt;
  // Pools only, instead of load_balancing: makes the pool's balancer, a LoadBalancer of your own
  // (pools/load_balancer.h), given the number of workers. Called once per pool; the balancer must
  // report that num_workers() and pick indexes in [0, num_workers). Same rules as load_balancing
  // (a TaskWorker pool given one binds tasks to workers at submission).
  std::function<std::unique_ptr<LoadBalancer>(int num_workers)> make_balancer = nullptr;
  // The worker's clock (a FakeClock in tests); null means Clock::Real(). Must outlive the worker.
  // It times an on-demand pool's on_demand_keepalive, and the rate limits of `limits` given as a
  // list of Limits (the LimitSet the worker builds uses it; a ready LimitSet keeps its own).
  Clock* clock = nullptr;
  // kTbb only: the executor that runs this worker's calls instead of the shared oneTBB arena (for
  // example a ManualExecutor in tests). Must outlive the worker.
  Executor* executor = nullptr;
  // kCoroutine only: how many coroutine calls (methods returning Coro<T>) interleave on the
  // worker's loop at once; later ones wait, FIFO, until one ends. In [1, kMaxInFlightCoroutines],
  // or kUnbounded. Unset takes the mode's default (WorkerDefaults::max_in_flight_coroutines).
  std::optional<int64_t> max_in_flight_coroutines = std::nullopt;
  // kProcess only: how the worker's process starts; unset means ProcessStart::kForkServer.
  std::optional<ProcessStart> process_start = std::nullopt;
  // kRemote only: the hosts and credentials (required in that mode; unset takes the mode's
  // defaults, WorkerDefaults::remote).
  std::optional<RemoteOptions> remote = std::nullopt;
  // Limits the worker's methods acquire through CurrentWorkerLimits(); none by default.
  WorkerLimits limits;
  // Retries of the worker's calls; none by default.
  WorkerRetry retry;
};

// Defaults of one mode.
struct WorkerDefaults {
  bool blocking = false;
  int64_t max_queued_tasks = kUnbounded;
  QueueFullPolicy queue_full = QueueFullPolicy::kDefer;
  bool unwrap_futures = true;
  absl::Duration stop_timeout = absl::Seconds(30);
  int max_workers = 1;
  // kCoroutine: coroutine calls interleaved at once (WorkerOptions::max_in_flight_coroutines).
  // Other modes ignore it.
  int64_t max_in_flight_coroutines = 1024;
  // kRemote: the hosts and credentials of workers whose WorkerOptions::remote is unset.
  RemoteOptions remote;
};

// Returns the current defaults of `mode`: the innermost scoped override, else the built-in ones.
// Thread-safe.
WorkerDefaults GetWorkerDefaults(Mode mode);

// Changes the defaults of one mode for its lifetime. The change is process-wide (workers are
// created from any thread) and validated like WorkerOptions (InvalidOptionError). `change` gets
// the current defaults; the fields it changes are what the scope overrides, on top of the scopes
// created before it; the resulting defaults must be valid on their own (so kBlock needs a
// max_queued_tasks cap in the same defaults). Scopes nest and may end in any order: the defaults
// are always the built-in ones plus the changes of the scopes still alive, in creation order (when
// an ending scope leaves an invalid combination behind, such as kBlock from an inner scope without
// the cap of an outer one, ResolveWorkerOptions rejects it). (A field set to the value
// it already had is not an override.) `change` runs under the table's lock: it may read the
// defaults (GetWorkerDefaults, creating workers) but must not create or end scopes or wait for
// other threads that do. Thread-safe; not copyable or movable.
class ScopedWorkerDefaults {
 public:
  ScopedWorkerDefaults(Mode mode, absl::FunctionRef<void(WorkerDefaults&)> change);
  ~ScopedWorkerDefaults();

  ScopedWorkerDefaults(const ScopedWorkerDefaults&) = delete;
  ScopedWorkerDefaults& operator=(const ScopedWorkerDefaults&) = delete;

 private:
  uint64_t id_ = 0;
};

// A snapshot of one worker's queues, for monitoring. The numbers may change as soon as they are
// read.
struct WorkerStats {
  // Calls forwarded to the worker and not started yet (the internal stop message counts as one
  // while a stop is pending).
  int64_t queued = 0;
  // Calls kept on the callers' side by max_queued_tasks (QueueFullPolicy::kDefer, or calls that
  // may not block).
  int64_t deferred = 0;
  // Threads blocked in a call by QueueFullPolicy::kBlock.
  int64_t blocked_callers = 0;
  // Mode::kCoroutine (0 in other modes): coroutine calls started on the loop and not ended yet
  // (suspended or running), those waiting for a max_in_flight_coroutines slot, and the timers
  // (SleepFor, SleepUntil) the worker's coroutines wait for.
  int64_t coroutines = 0;
  int64_t coroutines_waiting = 0;
  int64_t coroutine_timers = 0;
  // Why the worker ended by itself, "" otherwise: the CrashedError message when its process
  // died (Mode::kProcess), or its constructor's error. Such a worker is stopped().
  std::string error;
};

// Options after resolution and validation. Actors with interchangeable options share one copy
// (workers/internal/actor.cc): a new field must be added to that comparison too.
struct ResolvedWorkerOptions {
  Mode mode = Mode::kThread;
  bool blocking = false;
  int64_t max_queued_tasks = kUnbounded;
  QueueFullPolicy queue_full = QueueFullPolicy::kDefer;
  bool unwrap_futures = true;
  absl::Duration stop_timeout = absl::Seconds(30);
  // 1 for one worker; the pool's size, or the on-demand cap (0 resolved to
  // kDefaultOnDemandWorkers).
  int max_workers = 1;
  bool on_demand = false;
  absl::Duration on_demand_keepalive = absl::ZeroDuration();
  std::optional<LoadBalancing> load_balancing;
  std::function<std::unique_ptr<LoadBalancer>(int num_workers)> make_balancer;
  Clock* clock = nullptr;
  Executor* executor = nullptr;
  // kCoroutine: the cap on interleaved coroutine calls (kUnbounded: none).
  int64_t max_in_flight_coroutines = 1024;
  ProcessStart process_start = ProcessStart::kForkServer;
  // kRemote: WorkerOptions::remote (empty otherwise).
  RemoteOptions remote;
  LimitPool limits;
  WorkerRetry retry;

  // Whether these options make a pool.
  bool pooled() const { return on_demand || max_workers > 1; }
};

// Fills the empty fields of `options` from the defaults of its mode and validates the result.
// Throws InvalidOptionError, naming the field, the value and what is allowed, for:
// max_workers outside [1, kMaxPoolWorkers] (0 is allowed with on_demand), max_queued_tasks < 1,
// QueueFullPolicy::kBlock with max_queued_tasks == kUnbounded (also when either comes from the
// defaults), a negative stop_timeout, an executor outside kTbb mode, remote outside kRemote mode,
// max_in_flight_coroutines outside kCoroutine mode or outside [1, kMaxInFlightCoroutines] (or
// kUnbounded),
// an unknown enum value ("mode: unknown value 42; allowed: ..."), limits that cannot serve the
// mode, an invalid retry policy. (Whether the mode's backend is linked is checked when the worker
// is created: WorkerBackendFor in workers/backend.h.)
ResolvedWorkerOptions ResolveWorkerOptions(const WorkerOptions& options);

}  // namespace concurry

#endif  // CONCURRY_WORKERS_OPTIONS_H_

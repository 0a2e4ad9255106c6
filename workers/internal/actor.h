// The engine behind every worker: a mailbox of calls run one at a time, in FIFO order, on an
// object that lives inside the actor. How the mailbox gets a thread is the only difference between
// the modes: each backend (workers/backend.h) derives its actor from ActorCore and implements
// Schedule.
//
// Mailbox: an intrusive FIFO under a spin lock (critical sections are a few pointer updates; see
// internal::SpinLock for why not absl::Mutex), plus `scheduled_`, true while a drain is
// scheduled or running (or while a synchronous Create builds the object on its caller's thread). A
// push that finds it false schedules a drain; the drain pops one call at a time and clears it when
// it finds the mailbox empty. Popping one at a time lets Stop take the calls still queued, and
// cancel them at once, while a call runs.

#ifndef CONCURRY_WORKERS_INTERNAL_ACTOR_H_
#define CONCURRY_WORKERS_INTERNAL_ACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <new>
#include <typeinfo>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/internal/spin_lock.h"
#include "workers/backend.h"
#include "workers/options.h"

namespace concurry::workers_internal {

// One queued message. Exactly one of Run and Cancel is called, once, and then the node is deleted
// by the actor.
class SubmissionGate;

// Where call nodes get their memory: the C++ allocator unless a backend installs another one with
// SetCallNodeAllocator (//workers/tbb installs oneTBB's scalable allocator, whose per-thread pools
// take the frees of nodes made by callers on the actor's thread cheaply).
struct CallNodeAllocator {
  // Returns null when out of memory; the block must be aligned for std::max_align_t (nodes of
  // over-aligned types bypass the allocator).
  void* (*allocate)(size_t size);
  void (*free)(void* p);
};
// Nodes allocated from now on come from `allocator` (static storage duration); nodes allocated
// before are still returned to the allocator they came from. Thread-safe.
void SetCallNodeAllocator(const CallNodeAllocator* allocator);

class CallNode;

// One block for a call node and the future state it completes (AllocateCallBlock): a call then
// costs one allocation, and its result is written into the block its caller made. The state's
// reference count owns the block: the node holds one reference, dropped when the node is deleted
// (its memory is not freed then), and the state's operator delete frees the whole block.
struct CallBlock {
  void* state;  // sizeof-state bytes, aligned for std::max_align_t.
  void* node;   // For a CallNode built with placement new; BindNodeToState before deleting it.
};
// Allocates a block for a state of `state_size` bytes and a node of `node_size` bytes (neither
// over-aligned), from the current CallNodeAllocator: one allocation there per call, as before the
// state joined the node, and the caller, who mostly drops the last reference (its future), mostly
// frees the block on the thread that made it. Throws std::bad_alloc.
CallBlock AllocateCallBlock(size_t state_size, size_t node_size);
// Makes deleting the node at `block.node` drop one reference of `state` (at `block.state`)
// instead of freeing memory.
void BindNodeToState(const CallBlock& block, futures_internal::StateBase* state) noexcept;
// For the destructor of a node in a CallBlock whose promise still holds `state`: whether the node
// may hand that promise's reference to its block (futures_internal::DetachState), which then
// drops both references of the node with one atomic operation. False for a node outside a
// CallBlock, or for another state.
bool BlockTakesPromiseRef(CallNode* node, const futures_internal::StateBase* state) noexcept;
// Frees the block whose state is at `state` (the state's operator delete: its last reference is
// gone, so its node was deleted before).
void FreeCallBlock(void* state) noexcept;

// Marks, on the calling thread, the start of a coroutine call's own top-level coroutine: a call
// node holds it just around starting that root on a coroutine backend's loop, so the backend's
// RootStarted (in the scope, on this thread) knows the root is the call's, not one that the
// method's own code started while making its Coro. Scopes nest. Not copyable.
class ScopedCoroCallStart {
 public:
  ScopedCoroCallStart() noexcept : outer_(std::exchange(active_, true)) {}
  ~ScopedCoroCallStart() { active_ = outer_; }
  ScopedCoroCallStart(const ScopedCoroCallStart&) = delete;
  ScopedCoroCallStart& operator=(const ScopedCoroCallStart&) = delete;

  // Whether the calling thread is inside such a scope. Reading it ends it: only the first root
  // started in the scope is the call's.
  static bool Take() noexcept { return std::exchange(active_, false); }

 private:
  static inline thread_local bool active_ = false;
  const bool outer_;
};

class CallNode {
 public:
  virtual ~CallNode() = default;

  // Through the current CallNodeAllocator; every node remembers its own.
  static void* operator new(size_t size);
  static void operator delete(void* p) noexcept;
  // A node holding an over-aligned argument (alignas(64)): the C++ aligned allocator.
  static void* operator new(size_t size, std::align_val_t alignment);
  static void operator delete(void* p, std::align_val_t alignment) noexcept;

  // Runs the call on the actor's object (null before the object exists or if construction
  // failed). Must not throw.
  virtual void Run(void* object) noexcept = 0;
  // Completes the call as cancelled without running it. Must not throw.
  virtual void Cancel() noexcept = 0;
  // Completes the call with `error` without running it (its worker crashed, or its constructor
  // failed). Calls without a future to fail are cancelled instead.
  virtual void Fail(std::exception_ptr /*error*/) noexcept { Cancel(); }
  // The call now waits in the mailbox of the actor `worker` (a pool routed it there): waiting for
  // it inside that actor's own calls is a deadlock until it starts. Calls without a future ignore
  // it.
  virtual void SetProducer(const void* /*worker*/) noexcept {}
  // Whether Run returns without waiting for anything (it only hands the call on, as a call sent
  // to a worker process does), so that any thread may run it: a caller's thread may then drain
  // it itself (DrainOneOnCaller).
  virtual bool RunsWithoutWaiting() const noexcept { return false; }
  // Whether the call runs a method that returns Coro<T> (futures/coro.h): a coroutine backend
  // starts it on its event loop instead of queuing it in the mailbox (ActorCore::Deliver).
  virtual bool IsCoroutine() const noexcept { return false; }

 protected:
  // For a call whose work goes on elsewhere after Run returns (a call sent to a worker process,
  // which runs it later): Run calls DeferFinish(), and once the call is over, some thread calls
  // FinishDeferred() exactly once (it may do so before Run returns). Until then the call counts as
  // running: it keeps its max_queued_tasks slot, and a pool counts it among its worker's active
  // calls. FinishDeferred() deletes the node.
  void DeferFinish() noexcept { deferred_ = true; }
  void FinishDeferred() noexcept;
  // Whether Run was called by ActorCore::RunOutsideMailbox (a coroutine backend's event loop)
  // rather than by a drain.
  bool runs_outside_mailbox() const noexcept { return outside_mailbox_; }

 private:
  friend class ActorCore;
  friend class SubmissionGate;
  // A deferred call's progress: whichever of Run's return (kReturned) and FinishDeferred
  // (kOver) comes second finishes the call.
  enum DeferState : int { kRunning = 0, kReturned = 1, kOver = 2 };
  // The actor that ran the call (set before Run), and for a deferred call, a reference that keeps
  // it alive until the call retires (FinishDeferred may run on any thread, after Stop).
  ActorCore* runner_ = nullptr;
  std::shared_ptr<ActorCore> runner_alive_;
  bool deferred_ = false;
  bool outside_mailbox_ = false;
  std::atomic<int> defer_state_{kRunning};
  CallNode* next_ = nullptr;
  bool gated_ = false;
  // Routed by a pool (ActorCore::PostRouted): the pool hears when it finishes.
  bool routed_ = false;
};

// The pool side of a pooled actor (pools/internal/pool_core.h).
class PoolHook {
 public:
  // A call the pool routed to `worker`, its worker `index`, finished: it ran, was cancelled or
  // failed. Runs in whichever thread finished it, often the worker's own. Returns the next call
  // for that worker (already counted and marked as routed), which the actor queues, or null.
  virtual CallNode* CallFinished(int index, ActorCore* worker) noexcept = 0;
  // The call CallFinished returned could not be queued (the worker closed meanwhile): the pool
  // takes it back and routes it again.
  virtual void Reroute(int index, CallNode* node) noexcept = 0;

 protected:
  ~PoolHook() = default;
};

// The calls a worker has accepted beyond `max_queued_tasks`, and the count of forwarded ones.
// Deferred calls and blocked callers wait in one FIFO, so each freed slot goes to the oldest
// (a worker that keeps calling itself cannot starve a blocked caller).
class SubmissionGate {
 public:
  enum class Admission {
    kForward,   // The caller pushes the node to the mailbox now.
    kDeferred,  // The gate keeps the node; a later Release hands it out.
    kClosed,    // The worker stopped; the node is still the caller's.
  };

  SubmissionGate(int64_t capacity, QueueFullPolicy policy) : capacity_(capacity), policy_(policy) {}

  // Takes a slot for `node`, or queues it. Under kBlock, and when `may_block`, waits for a slot
  // instead of deferring; calls made from inside any worker's context never wait (a worker
  // thread or a oneTBB thread blocked on a full worker could be the one that must drain it).
  Admission Admit(CallNode* node, bool may_block) ABSL_LOCKS_EXCLUDED(mu_);
  // A forwarded call finished: frees its slot and returns the next deferred node to forward, or
  // null (none, or the slot went to a blocked caller, who forwards its own call).
  CallNode* Release() ABSL_LOCKS_EXCLUDED(mu_);
  struct Counts {
    int64_t deferred = 0;
    int64_t blocked = 0;
  };
  Counts GetCounts() ABSL_LOCKS_EXCLUDED(mu_);
  // Closes the gate: returns the deferred nodes (for the caller to cancel) and wakes blocked
  // callers (whose Admit returns kClosed).
  [[nodiscard]] std::deque<CallNode*> Close() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    CallNode* node;
    bool* admitted;  // Non-null for a blocked caller: set when Release gives it the slot.
  };

  const int64_t capacity_;
  const QueueFullPolicy policy_;
  absl::Mutex mu_;
  int64_t forwarded_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Entry> waiting_ ABSL_GUARDED_BY(mu_);
};

// The mode-independent actor. Owned through shared_ptr by the handles and by scheduled drains.
// A backend derives from it and implements OnStart and Schedule; workers/backend.h states the
// whole contract.
class ActorCore : public std::enable_shared_from_this<ActorCore> {
  friend class CallNode;  // A deferred call retires itself (CallNode::FinishDeferred).

 public:
  ActorCore(const ResolvedWorkerOptions& options, const WorkerBackend& backend);
  virtual ~ActorCore();

  ActorCore(const ActorCore&) = delete;
  ActorCore& operator=(const ActorCore&) = delete;

  // Starts the actor with `construct` as its first message (it calls SetObject on success).
  // `on_caller` (WorkerBackend::constructs_on_caller, for a synchronous Create): runs it now, on
  // the calling thread, in the actor's context; the mailbox counts as draining meanwhile, so calls
  // the constructor queues (to its own worker, through CurrentWorker) wait behind it and run on
  // the actor's own context afterwards.
  void Start(CallNode* construct, bool on_caller = false);

  // Submits a call, through the submission gate when bounded (`may_block`: see
  // SubmissionGate::Admit). Returns false, leaving `node` to the caller (who fails its future with
  // StoppedError and deletes it), once Stop was called. A pool (the only override) routes the
  // call to one of its workers instead.
  virtual bool Post(CallNode* node, bool may_block = true);

  // Makes this actor worker `index` of `pool`, before Start: calls posted with PostRouted report
  // to the pool when they finish.
  void JoinPool(PoolHook* pool, int index) {
    pool_ = pool;
    pool_index_ = index;
  }
  PoolHook* pool() const { return pool_; }
  // This actor's index in its pool (0 when not in one); a replacement takes the index of the
  // worker it replaces.
  int pool_index() const { return pool_index_; }
  // Posts a call the pool routed here: as Post, and the pool hears when it finishes.
  bool PostRouted(CallNode* node, bool may_block) {
    node->routed_ = true;
    if (ActorCore::Post(node, may_block)) return true;
    node->routed_ = false;
    return false;
  }
  // Marks a call the pool hands out from CallFinished, or takes the mark back (Reroute).
  static void MarkRouted(CallNode* node, bool routed = true) { node->routed_ = routed; }
  // The actor whose Stop is cancelling calls on this thread (running their callbacks), or null.
  static const ActorCore* Stopping();

  // Stops accepting calls, cancels the queued and deferred ones at once, lets the running call
  // finish and then destroys the object in the actor's context. Waits up to `timeout` for all of
  // that and returns whether it completed. Idempotent; from inside one of the actor's own calls it
  // does not wait (returns false unless already complete).
  virtual bool Stop(absl::Duration timeout);
  // Stop(0), with the calls still queued failed with `error` instead of cancelled (the
  // constructor threw `error`).
  void StopWithError(std::exception_ptr error);
  // The error a call posted after the stop fails with: StoppedError, whose message also says
  // why the worker ended when it ended by itself (a dead process or host, the constructor's
  // exception), as Stats().error does.
  std::exception_ptr RejectionError() ABSL_LOCKS_EXCLUDED(lock_);

  bool stop_requested() const { return stop_requested_.load(std::memory_order_acquire); }
  // Completes when the actor has fully stopped (object destroyed).
  virtual Future<void> stopped_future() const { return stopped_future_; }
  const ResolvedWorkerOptions& options() const { return *options_; }
  // The backend's encodes_calls(), read on every call.
  bool encodes_calls() const { return encodes_calls_; }

  // Called by the construction message, in the actor's context. Tells the backend
  // (ObjectReady).
  void SetObject(void* object, void (*destroy)(void*)) {
    object_ = object;
    destroy_ = destroy;
    ObjectReady(object);
  }

  // Registers a call that waits for its input futures: Stop cancels `call`. Returns an id for
  // RemoveStopHook; if Stop already ran, cancels `call` at once and returns 0.
  uint64_t AddStopHook(AnyFuture call) ABSL_LOCKS_EXCLUDED(lock_);
  void RemoveStopHook(uint64_t id) ABSL_LOCKS_EXCLUDED(lock_);

  // A snapshot of the queues (see WorkerStats).
  virtual WorkerStats Stats() ABSL_LOCKS_EXCLUDED(lock_);

  // How many of the calls posted here can run at the same time: 1 for one worker (its calls run
  // one at a time); a pool overrides it with its size, min'd with its executor's
  // max_concurrency() when the workers run on a WorkerOptions::executor that knows it. Callers
  // that bound their own concurrency (TaskWorker::Map, a Stream over a worker) read it here.
  virtual int max_concurrency() const { return 1; }

  // Whether the calling thread is running one of this actor's calls right now.
  bool InActorContext() const;
  // Whether the calling thread is running a call of any actor.
  static bool InAnyActorContext();
  // The actor whose call the calling thread runs, or null.
  static ActorCore* Current();
  // The type of the actor's object (set by the creator before Start), or null.
  const std::type_info* object_type() const { return object_type_; }
  void set_object_type(const std::type_info& type) { object_type_ = &type; }
  // The limits of the actor whose call the calling thread runs; outside any actor, those of the
  // worker this process serves (SetProcessLimits), or null.
  static const LimitPool* CurrentLimits();
  // In a worker process (Mode::kProcess): makes `limits` (static storage, or alive until the
  // process exits) what CurrentLimits() returns on every thread outside an actor.
  static void SetProcessLimits(const LimitPool* limits);

 protected:
  // Drain's budget for a drain that may run until the mailbox is empty.
  static constexpr int64_t kNoBudget = INT64_MAX;

  // Called by Start before the first message is pushed.
  virtual void OnStart() {}
  // Arranges for Drain() to run (the mailbox went from idle to non-empty).
  virtual void Schedule() = 0;
  // Runs queued calls until the mailbox is empty or closed, or until `budget` calls ran (then it
  // reschedules itself). Returns false once the actor is closed.
  bool Drain(int64_t budget) ABSL_LOCKS_EXCLUDED(lock_) { return Drain(budget, false); }
  // From Schedule, on the thread that queued a call: runs the first queued call if it
  // RunsWithoutWaiting() and no stop was requested, and schedules (Schedule) whatever it does not
  // run. The caller must make that nested Schedule hand the drain to the actor's own context.
  void DrainOneOnCaller() ABSL_LOCKS_EXCLUDED(lock_) { Drain(1, true); }
  // Closes the mailbox from outside the actor's context when it can never drain again (the
  // executor rejected the drain, or the process running it died): cancels every queued call, or
  // fails it with `error` when one is given (a CrashedError), and destroys the object.
  void Abandon(std::exception_ptr error = nullptr) noexcept ABSL_LOCKS_EXCLUDED(lock_);

  // Hooks for a backend that runs some calls outside the mailbox (Mode::kCoroutine runs
  // coroutine calls on an event loop while plain calls drain on its side thread):
  //
  // Hands a posted call on (from Post, and for the calls a freed max_queued_tasks slot or a pool
  // passes on). The default queues it in the mailbox (Push). Returns false, leaving `node` to
  // the caller, once the actor no longer takes calls.
  virtual bool Deliver(CallNode* node) { return Push(node); }
  // Queues `node` in the mailbox; false once the mailbox is closed.
  bool Push(CallNode* node) ABSL_LOCKS_EXCLUDED(lock_);
  // Runs (or, once a stop was requested, cancels) a delivered call on `object` on the calling
  // thread, outside the mailbox, then retires it as a drain would (its gate slot, its pool
  // report; a deferred call when it is over). The caller provides the actor's context.
  void RunOutsideMailbox(CallNode* node, void* object) noexcept {
    node->outside_mailbox_ = true;
    FinishOn(node, !stop_requested(), object);
  }
  // Cancels (or fails, see Abandon) a delivered call that will never run, and retires it.
  void Drop(CallNode* node) noexcept { FinishOn(node, /*run=*/false, nullptr); }
  // The object exists now (SetObject, in the actor's context, before any call runs on it).
  virtual void ObjectReady(void* /*object*/) noexcept {}
  // Called once when the actor closes (its StopNode runs, or Abandon), in the actor's context,
  // after the queued calls were cancelled: destroys `object` (null when construction failed or
  // never ran) with `destroy`. A backend may do it later elsewhere (after its own running calls);
  // with AddStopStep it then calls FinishStopStep() once that is done.
  virtual void CloseObject(void* object, void (*destroy)(void*)) noexcept {
    if (object != nullptr && destroy != nullptr) destroy(object);
  }
  // Adds one step that must finish (FinishStopStep) before stopped_future() completes. Call
  // before Start.
  void AddStopStep() noexcept { stop_steps_.fetch_add(1, std::memory_order_relaxed); }
  // One of the steps of stopping (Close, the cancellation pass of Stop or Abandon, and those
  // added by AddStopStep); the last completes stopped_future().
  void FinishStopStep() noexcept;

 private:
  class StopNode;
  friend class StopNode;

  // `on_caller`: see DrainOneOnCaller.
  bool Drain(int64_t budget, bool on_caller) ABSL_LOCKS_EXCLUDED(lock_);
  // Queued calls fail with `error` from now on instead of being cancelled (Abandon,
  // StopWithError); null changes nothing.
  void SetAbortError(std::exception_ptr error) noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Takes every queued node out of the mailbox (FIFO chain).
  CallNode* TakeAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Runs in the actor's context (from StopNode, or Abandon when no drain can run).
  void Close() noexcept ABSL_LOCKS_EXCLUDED(lock_);
  // Cancels and deletes the nodes of a FIFO chain.
  void CancelChain(CallNode* chain) noexcept;
  // Abandon's cancellation pass: the deferred calls and those waiting for inputs.
  void CancelWaiting() noexcept;
  // Cancels or runs one node, deletes it and frees its gate slot (for a deferred call, once it is
  // over: CallNode::FinishDeferred).
  // (object_ is read only to run: cancelling happens on any thread.)
  void Finish(CallNode* node, bool run) noexcept { FinishOn(node, run, run ? object_ : nullptr); }
  // Finish, running the node on `object`.
  void FinishOn(CallNode* node, bool run, void* object) noexcept;
  // Deletes a finished node and hands its gate slot and its pool report on.
  void Retire(CallNode* node) noexcept;

  // Shared with other actors whose options are interchangeable (SharedOptions in actor.cc): a
  // copy is ~540 bytes, more than the rest of a tbb-mode actor, and 10^5 workers created with the
  // same options are the normal case.
  const std::shared_ptr<const ResolvedWorkerOptions> options_;
  const bool encodes_calls_;
  // How long a hot actor's drain waits for the next call before going idle (the backend's
  // drain_linger(); 0: never). See Drain.
  const int64_t linger_nanos_;
  // Steady-clock nanoseconds when the last drain went idle (0: never), and whether the actor was
  // scheduled again within a few microseconds of that: calls arrive back to back.
  int64_t idle_since_ ABSL_GUARDED_BY(lock_) = 0;
  bool hot_ ABSL_GUARDED_BY(lock_) = false;
  // Set once by JoinPool, before Start.
  PoolHook* pool_ = nullptr;
  int pool_index_ = 0;
  // Set by Abandon(error) or StopWithError: queued calls fail with it instead of being cancelled.
  std::exception_ptr abort_error_ ABSL_GUARDED_BY(lock_);
  const std::type_info* object_type_ = nullptr;
  internal::SpinLock lock_;
  CallNode* first_ ABSL_GUARDED_BY(lock_) = nullptr;
  CallNode* last_ ABSL_GUARDED_BY(lock_) = nullptr;
  bool scheduled_ ABSL_GUARDED_BY(lock_) = false;
  // Nodes in the mailbox. Written under lock_; atomic so that a lingering drain can watch it
  // without taking the lock.
  std::atomic<int64_t> queued_{0};
  bool mailbox_closed_ ABSL_GUARDED_BY(lock_) = false;
  // Set by Stop: drains cancel what they pop instead of running it.
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> stop_posted_{false};
  std::atomic<int> stop_steps_{2};  // See FinishStopStep and AddStopStep.
  // Used only in the actor's context; drains are ordered by lock_. A construction on the creator's
  // thread (Start with on_caller) writes it before releasing lock_, which publishes it.
  void* object_ = nullptr;
  void (*destroy_)(void*) = nullptr;
  bool closed_ = false;
  // Allocated up front so that Stop cannot fail half-way.
  CallNode* stop_node_;
  // Only for bounded workers: an absl::Mutex per worker is costly with Debian's deadlock
  // detection (every live mutex is a node in a global graph), and 10^5 tbb workers are normal.
  const std::unique_ptr<SubmissionGate> gate_;
  Promise<void> stopped_;
  Future<void> stopped_future_;
  bool hooks_closed_ ABSL_GUARDED_BY(lock_) = false;
  uint64_t next_hook_ ABSL_GUARDED_BY(lock_) = 1;
  absl::flat_hash_map<uint64_t, AnyFuture> hooks_ ABSL_GUARDED_BY(lock_);
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_INTERNAL_ACTOR_H_

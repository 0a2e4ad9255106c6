#include "workers/internal/actor.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <new>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/internal/task_context.h"

namespace concurry::workers_internal {
namespace {

// The actor whose drain the calling thread is running, if any: the thread's serial context (only
// actors set one).
const ActorCore* CurrentActor() {
  return static_cast<const ActorCore*>(futures_internal::CurrentSerialContext());
}
// The flag of the drain the calling thread is running, for a nested drain request (see
// ActorCore::Drain).
thread_local bool* current_redrain = nullptr;
// The actor whose Stop is cancelling calls on this thread, if any: a Stop nested in one of those
// cancellation callbacks must not wait for the pass it is part of.
thread_local const ActorCore* stopping_actor = nullptr;

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A node is preceded by a header holding the allocator it came from, so that installing an
// allocator while nodes are alive is safe. 16 bytes keep the node max_align_t-aligned.
constexpr CallNodeAllocator kDefaultAllocator = {
    .allocate = [](size_t size) -> void* { return ::operator new(size, std::nothrow); },
    .free = [](void* p) { ::operator delete(p); },
};
constexpr size_t kNodeHeader = 16;
// A node's header holds its allocator and, in a CallBlock, the word BindNodeToState() writes.
static_assert(kNodeHeader >= sizeof(const CallNodeAllocator*) + sizeof(uintptr_t) &&
              kNodeHeader % alignof(std::max_align_t) == 0);
constinit std::atomic<const CallNodeAllocator*> node_allocator{&kDefaultAllocator};

// The "allocator" of a node inside a CallBlock: freeing it drops the reference it holds on its
// state, stored in the second word of its header, and its promise's one too when the low bit of
// that word is set (BlockTakesPromiseRef; states are aligned, so the bit is free).
constexpr CallNodeAllocator kStateOwnedNode = {
    .allocate = nullptr,
    .free =
        [](void* header) {
          const uintptr_t word = static_cast<uintptr_t*>(header)[1];
          reinterpret_cast<futures_internal::StateBase*>(word & ~uintptr_t{1})
              ->Unref(1 + static_cast<int32_t>(word & 1));
        },
};
// A CallBlock: [header: its allocator][state, rounded up to kNodeHeader][node header][node].
constexpr size_t RoundUpToHeader(size_t size) {
  return (size + kNodeHeader - 1) / kNodeHeader * kNodeHeader;
}

constexpr size_t kComparedOptionsSize = 544;

// Whether an actor made with `a` behaves exactly as one made with `b` and reports the same
// options. Fields that cannot be compared (a make_balancer, retry policies, limits other than the
// default no-op pool) count as different.
bool Interchangeable(const ResolvedWorkerOptions& a, const ResolvedWorkerOptions& b) {
  // A new field must be compared below (or make options with it unshareable): otherwise a worker
  // would be handed another worker's value of it. The size of the fields compared here, on the
  // platform CI builds; a new field changes it.
#if defined(__x86_64__) && defined(__GLIBCXX__)
  static_assert(sizeof(ResolvedWorkerOptions) == kComparedOptionsSize,
                "ResolvedWorkerOptions changed: compare the new field in Interchangeable "
                "(workers/internal/actor.cc), then update kComparedOptionsSize");
#endif
  const auto default_limits = [](const LimitPool& limits) {
    return limits.no_op() && limits.options().worker_index == 0 &&
           limits.options().balancing == LimitPoolBalancing::kRoundRobin;
  };
  return a.mode == b.mode && a.blocking == b.blocking && a.max_queued_tasks == b.max_queued_tasks &&
         a.queue_full == b.queue_full && a.unwrap_futures == b.unwrap_futures &&
         a.stop_timeout == b.stop_timeout && a.max_workers == b.max_workers &&
         a.on_demand == b.on_demand && a.on_demand_keepalive == b.on_demand_keepalive &&
         a.load_balancing == b.load_balancing && !a.make_balancer && !b.make_balancer &&
         a.clock == b.clock && a.executor == b.executor &&
         a.max_in_flight_coroutines == b.max_in_flight_coroutines &&
         a.process_start == b.process_start && a.remote == b.remote &&
         // The default pool's copies share one state (LimitPool()).
         &a.limits.sets() == &b.limits.sets() && default_limits(a.limits) &&
         default_limits(b.limits) && a.retry.empty() && b.retry.empty();
}

// The options of the last plain actor made in the process. Weak: the cache never keeps options
// (a remote token among them) alive longer than some actor that uses them. Never destroyed, so
// that a worker created during static destruction still finds it.
struct SharedOptionsCache {
  internal::SpinLock lock;
  std::weak_ptr<const ResolvedWorkerOptions> last ABSL_GUARDED_BY(lock);
};

// The options for a new actor: those of the last plain actor made when interchangeable, else a
// copy. Many workers created alike (10^5 tbb workers) share one copy of ~540 bytes.
std::shared_ptr<const ResolvedWorkerOptions> SharedOptions(const ResolvedWorkerOptions& options) {
  static SharedOptionsCache* const cache = new SharedOptionsCache;
  if (!Interchangeable(options, options)) {
    return std::make_shared<const ResolvedWorkerOptions>(options);
  }
  {
    internal::SpinLockHolder hold(&cache->lock);
    std::shared_ptr<const ResolvedWorkerOptions> last = cache->last.lock();
    if (last != nullptr && Interchangeable(*last, options)) return last;
  }
  auto copy = std::make_shared<const ResolvedWorkerOptions>(options);
  internal::SpinLockHolder hold(&cache->lock);
  cache->last = copy;
  return copy;
}

}  // namespace

void SetCallNodeAllocator(const CallNodeAllocator* allocator) {
  node_allocator.store(allocator != nullptr ? allocator : &kDefaultAllocator,
                       std::memory_order_release);
}

CallBlock AllocateCallBlock(size_t state_size, size_t node_size) {
  const size_t state_span = RoundUpToHeader(state_size);
  const CallNodeAllocator* allocator = node_allocator.load(std::memory_order_acquire);
  char* const block =
      static_cast<char*>(allocator->allocate(kNodeHeader + state_span + kNodeHeader + node_size));
  if (block == nullptr) throw std::bad_alloc();
  *reinterpret_cast<const CallNodeAllocator**>(block) = allocator;
  char* const state = block + kNodeHeader;
  char* const node_header = state + state_span;
  *reinterpret_cast<const CallNodeAllocator**>(node_header) = &kStateOwnedNode;
  return CallBlock{.state = state, .node = node_header + kNodeHeader};
}

void BindNodeToState(const CallBlock& block, futures_internal::StateBase* state) noexcept {
  // Written and read (BlockTakesPromiseRef) as an integer: its low bit is a tag.
  reinterpret_cast<uintptr_t*>(static_cast<char*>(block.node) - kNodeHeader)[1] =
      reinterpret_cast<uintptr_t>(state);
}

bool BlockTakesPromiseRef(CallNode* node, const futures_internal::StateBase* state) noexcept {
  char* const header = reinterpret_cast<char*>(node) - kNodeHeader;
  if (*reinterpret_cast<const CallNodeAllocator**>(header) != &kStateOwnedNode) return false;
  uintptr_t& word = reinterpret_cast<uintptr_t*>(header)[1];
  if (word != reinterpret_cast<uintptr_t>(state)) return false;
  word |= 1;
  return true;
}

void FreeCallBlock(void* state) noexcept {
  void* block = static_cast<char*>(state) - kNodeHeader;
  (*static_cast<const CallNodeAllocator**>(block))->free(block);
}

void* CallNode::operator new(size_t size) {
  const CallNodeAllocator* allocator = node_allocator.load(std::memory_order_acquire);
  void* block = allocator->allocate(size + kNodeHeader);
  if (block == nullptr) throw std::bad_alloc();
  *static_cast<const CallNodeAllocator**>(block) = allocator;
  return static_cast<char*>(block) + kNodeHeader;
}

void CallNode::operator delete(void* p) noexcept {
  if (p == nullptr) return;
  void* block = static_cast<char*>(p) - kNodeHeader;
  (*static_cast<const CallNodeAllocator**>(block))->free(block);
}

void* CallNode::operator new(size_t size, std::align_val_t alignment) {
  return ::operator new(size, alignment);
}

void CallNode::operator delete(void* p, std::align_val_t alignment) noexcept {
  ::operator delete(p, alignment);
}

// --- SubmissionGate ------------------------------------------------------------------------------

SubmissionGate::Admission SubmissionGate::Admit(CallNode* node, bool may_block) {
  absl::MutexLock lock(&mu_);
  if (closed_) return Admission::kClosed;
  if (forwarded_ < capacity_ && waiting_.empty()) {
    ++forwarded_;
    node->gated_ = true;
    return Admission::kForward;
  }
  if (policy_ != QueueFullPolicy::kBlock || !may_block || CurrentActor() != nullptr ||
      NonBlockingScope::Active()) {
    node->gated_ = true;
    waiting_.push_back({node, nullptr});
    return Admission::kDeferred;
  }
  bool admitted = false;
  waiting_.push_back({node, &admitted});
  auto done = [this, &admitted]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return admitted || closed_; };
  // A BlockingRegion (through the clock): a caller running in a TbbExecutor task gets a thread
  // added meanwhile.
  Clock::Real().AwaitWithDeadline(&mu_, absl::Condition(&done), absl::InfiniteFuture());
  if (!admitted) return Admission::kClosed;  // Close removed the entry.
  node->gated_ = true;
  return Admission::kForward;
}

CallNode* SubmissionGate::Release() {
  absl::MutexLock lock(&mu_);
  --forwarded_;
  if (closed_ || waiting_.empty()) return nullptr;
  const Entry next = waiting_.front();
  waiting_.pop_front();
  ++forwarded_;
  if (next.admitted != nullptr) {
    *next.admitted = true;  // The blocked caller wakes and forwards its own call.
    return nullptr;
  }
  return next.node;
}

SubmissionGate::Counts SubmissionGate::GetCounts() {
  absl::MutexLock lock(&mu_);
  Counts counts;
  for (const Entry& entry : waiting_) {
    ++(entry.admitted == nullptr ? counts.deferred : counts.blocked);
  }
  return counts;
}

std::deque<CallNode*> SubmissionGate::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
  std::deque<CallNode*> deferred;
  for (const Entry& entry : waiting_) {
    if (entry.admitted != nullptr) continue;  // A blocked caller: its Admit returns kClosed.
    entry.node->gated_ = false;               // It never held a slot.
    deferred.push_back(entry.node);
  }
  waiting_.clear();
  return deferred;
}

// --- ActorCore -----------------------------------------------------------------------------------

class ActorCore::StopNode final : public CallNode {
 public:
  explicit StopNode(ActorCore* core) : core_(core) {}
  void Run(void*) noexcept override { core_->Close(); }
  void Cancel() noexcept override { core_->Close(); }

 private:
  ActorCore* core_;
};

bool ActorCore::InAnyActorContext() { return CurrentActor() != nullptr; }

ActorCore* ActorCore::Current() { return const_cast<ActorCore*>(CurrentActor()); }

const ActorCore* ActorCore::Stopping() { return stopping_actor; }

namespace {
// The limits of the worker a worker process serves (Mode::kProcess), or null.
std::atomic<const LimitPool*> process_limits{nullptr};
}  // namespace

const LimitPool* ActorCore::CurrentLimits() {
  const ActorCore* actor = CurrentActor();
  if (actor == nullptr) return process_limits.load(std::memory_order_acquire);
  return &actor->options_->limits;
}

void ActorCore::SetProcessLimits(const LimitPool* limits) {
  process_limits.store(limits, std::memory_order_release);
}

WorkerStats ActorCore::Stats() {
  WorkerStats stats;
  std::exception_ptr ended_by;
  {
    internal::SpinLockHolder hold(&lock_);
    stats.queued = queued_.load(std::memory_order_relaxed);
    ended_by = abort_error_;
  }
  if (ended_by != nullptr) stats.error = ExceptionMessage(ended_by);
  if (gate_ != nullptr) {
    const SubmissionGate::Counts counts = gate_->GetCounts();
    stats.deferred = counts.deferred;
    stats.blocked_callers = counts.blocked;
  }
  return stats;
}

ActorCore::ActorCore(const ResolvedWorkerOptions& options, const WorkerBackend& backend)
    : options_(SharedOptions(options)),
      encodes_calls_(backend.encodes_calls()),
      // An inline drain runs in the caller's thread: waiting there would only delay the caller.
      linger_nanos_(backend.runs_calls_inline()
                        ? 0
                        : absl::ToInt64Nanoseconds(backend.drain_linger(options))),
      stop_node_(new StopNode(this)),
      // A sync worker's calls finish before Call returns: nothing to bound.
      gate_(options.max_queued_tasks == kUnbounded || backend.runs_calls_inline()
                ? nullptr
                : std::make_unique<SubmissionGate>(options.max_queued_tasks, options.queue_full)),
      stopped_future_(stopped_.GetFuture()) {}

ActorCore::~ActorCore() {
  // Only reachable once no drain holds a reference. A mailbox that never closed (the actor was
  // never started, or was dropped without Stop) may still hold calls.
  CallNode* chain;
  {
    internal::SpinLockHolder hold(&lock_);
    mailbox_closed_ = true;
    chain = TakeAllLocked();
  }
  CancelChain(chain);
  delete stop_node_;  // Null once Stop queued it.
  if (object_ != nullptr && destroy_ != nullptr) destroy_(object_);
}

void ActorCore::Start(CallNode* construct, bool on_caller) {
  try {
    OnStart();
  } catch (...) {
    Finish(construct, /*run=*/false);
    throw;
  }
  if (!on_caller) {
    if (!Push(construct)) Finish(construct, /*run=*/false);
    return;
  }
  {
    // As if a drain were running: a push made meanwhile queues without scheduling one, so nothing
    // runs on the arena before the object exists (FIFO behind the construction).
    internal::SpinLockHolder hold(&lock_);
    scheduled_ = true;
  }
  {
    const futures_internal::ScopedSerialContext context(this);
    // Not part of any drain the calling thread may be nested in (see Drain).
    struct Redrain {
      bool* outer;
      ~Redrain() { current_redrain = outer; }
    } restore{std::exchange(current_redrain, nullptr)};
    Finish(construct, /*run=*/true);
  }
  bool schedule;
  {
    // lock_ also publishes object_ to the drain that a later push schedules.
    internal::SpinLockHolder hold(&lock_);
    schedule = first_ != nullptr;
    if (!schedule) scheduled_ = false;
  }
  // Calls queued during construction, or the StopNode of a constructor that threw (StopWithError)
  // or stopped its own worker: the actor's context runs them from now on. The executor's Submit
  // also publishes object_ to that drain.
  if (schedule) Schedule();
}

bool ActorCore::InActorContext() const { return CurrentActor() == this; }

CallNode* ActorCore::TakeAllLocked() {
  CallNode* chain = first_;
  first_ = last_ = nullptr;
  queued_.store(0, std::memory_order_relaxed);
  return chain;
}

bool ActorCore::Push(CallNode* node) {
  node->next_ = nullptr;
  bool schedule;
  {
    internal::SpinLockHolder hold(&lock_);
    if (mailbox_closed_) return false;
    if (last_ == nullptr) {
      first_ = node;
    } else {
      last_->next_ = node;
    }
    last_ = node;
    queued_.store(queued_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    schedule = !scheduled_;
    scheduled_ = true;
    if (schedule && linger_nanos_ > 0) {
      // Woken again soon after its last drain went idle: calls arrive back to back, so the next
      // drain waits a little for more before going idle (see Drain).
      hot_ = idle_since_ != 0 && NowNanos() - idle_since_ < 2 * linger_nanos_;
    }
  }
  if (schedule) Schedule();
  return true;
}

bool ActorCore::Post(CallNode* node, bool may_block) {
  if (stop_requested()) return false;
  if (gate_ != nullptr) {
    switch (gate_->Admit(node, may_block)) {
      case SubmissionGate::Admission::kForward:
        break;
      case SubmissionGate::Admission::kDeferred:
        return true;  // Forwarded by a later Release.
      case SubmissionGate::Admission::kClosed:
        node->gated_ = false;
        return false;
    }
  }
  if (Deliver(node)) return true;
  if (node->gated_) {
    // The mailbox closed after the slot was taken: give the slot back (the gate is closed too,
    // so nothing is forwarded).
    node->gated_ = false;
    CallNode* next = gate_->Release();  // The gate is closed too: always null.
    if (next != nullptr) Finish(next, /*run=*/false);
  }
  return false;
}

void CallNode::FinishDeferred() noexcept {
  // acq_rel: whoever finishes sees everything the other side did.
  if (defer_state_.exchange(kOver, std::memory_order_acq_rel) == kReturned) {
    const std::shared_ptr<ActorCore> runner = std::move(runner_alive_);  // Retire deletes us.
    runner->Retire(this);
  }
}

void ActorCore::FinishOn(CallNode* node, bool run, void* object) noexcept {
  if (run) {
    node->runner_ = this;
    node->Run(object);
    if (node->deferred_) {
      // Written before the exchange below publishes it to FinishDeferred.
      node->runner_alive_ = shared_from_this();
      if (node->defer_state_.exchange(CallNode::kReturned, std::memory_order_acq_rel) !=
          CallNode::kOver) {
        return;  // Still going on elsewhere: FinishDeferred retires it.
      }
      node->runner_alive_.reset();
    }
  } else {
    std::exception_ptr error;
    {
      internal::SpinLockHolder hold(&lock_);
      error = abort_error_;
    }
    if (error != nullptr) {
      node->Fail(std::move(error));
    } else {
      node->Cancel();
    }
  }
  Retire(node);
}

void ActorCore::Retire(CallNode* node) noexcept {
  const bool gated = node->gated_;
  const bool routed = node->routed_;
  delete node;
  if (gated) {
    if (CallNode* next = gate_->Release()) {
      if (!Deliver(next)) Finish(next, /*run=*/false);
    }
  }
  if (routed) {
    if (CallNode* next = pool_->CallFinished(pool_index_, this)) {
      if (!Deliver(next)) pool_->Reroute(pool_index_, next);
    }
  }
}

void ActorCore::CancelChain(CallNode* chain) noexcept {
  while (chain != nullptr) {
    CallNode* next = chain->next_;
    Finish(chain, /*run=*/false);
    chain = next;
  }
}

bool ActorCore::Drain(int64_t budget, bool on_caller) {
  if (CurrentActor() == this && current_redrain != nullptr) {
    // Scheduled from this drain through an executor that ran the task inline: let the outer
    // drain, on this thread, continue rather than recursing (which would grow the stack per
    // budget).
    *current_redrain = true;
    return true;
  }
  bool redrain = false;
  // Nested in another actor's call (an executor ran this drain inline): never linger there.
  const bool may_linger = linger_nanos_ > 0 && CurrentActor() == nullptr;
  const futures_internal::ScopedSerialContext context(this);
  struct Redrain {
    bool* outer;
    ~Redrain() { current_redrain = outer; }
  } restore{std::exchange(current_redrain, &redrain)};
  // Keeps the actor alive through the drain even if the last handle goes away meanwhile.
  const std::shared_ptr<ActorCore> self = shared_from_this();
  int64_t linger_until = 0;  // While lingering: when to stop.
  for (int64_t ran = 0;; ++ran) {
    CallNode* node;
    bool linger = false;
    bool hand_off = false;  // On a caller's thread: leave the call to the actor's context.
    {
      internal::SpinLockHolder hold(&lock_);
      node = first_;
      if (node == nullptr) {
        // A hot actor (see Push) that ran calls waits up to linger_nanos_ for the next one
        // instead of going idle at once, when its backend says rescheduling costs more than that
        // (a oneTBB task and often a wake-up): a pool's workers, each getting every n-th call,
        // would otherwise go idle and be scheduled again on every call.
        const int64_t now = linger_nanos_ > 0 ? NowNanos() : 0;
        if (may_linger && hot_ && ran > 0 && !mailbox_closed_ &&
            (linger_until == 0 || now < linger_until)) {
          if (linger_until == 0) linger_until = now + linger_nanos_;
          linger = true;
        } else {
          scheduled_ = false;
          if (linger_nanos_ > 0) idle_since_ = now;
          return !mailbox_closed_;
        }
      } else if (on_caller && (stop_requested() || !node->RunsWithoutWaiting())) {
        // Checked under lock_, which Stop takes after requesting the stop to queue its StopNode:
        // a stop (which destroys the object and waits) never runs on a caller's thread.
        hand_off = true;
      } else if (ran < budget) {
        linger_until = 0;
        first_ = node->next_;
        queued_.store(queued_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
        if (first_ == nullptr) last_ = nullptr;
      }
    }
    if (linger) {
      // Watches the count without the lock, so that the callers' pushes do not contend with it.
      for (int i = 0; i < 16 && queued_.load(std::memory_order_relaxed) == 0; ++i) {
        internal::CpuRelax();
      }
      --ran;
      continue;
    }
    if (hand_off || ran >= budget) {
      Schedule();  // Let other actors run; scheduled_ stays true, so no push schedules.
      if (!redrain) return true;
      redrain = false;  // The executor ran the drain inline: carry on here.
      ran = -1;
      continue;
    }
    // After Stop, calls popped here are cancelled; the StopNode's Cancel closes the actor.
    Finish(node, /*run=*/!stop_requested());
    if (closed_) return false;
  }
}

void ActorCore::Close() noexcept {
  if (closed_) return;  // Abandon's Close cancels the StopNode, whose Cancel closes again.
  closed_ = true;
  // Normally already closed by Stop or Abandon; this covers any call deferred since.
  std::deque<CallNode*> deferred;
  if (gate_ != nullptr) deferred = gate_->Close();
  for (CallNode* node : deferred) Finish(node, /*run=*/false);
  CallNode* chain;
  {
    internal::SpinLockHolder hold(&lock_);
    mailbox_closed_ = true;
    chain = TakeAllLocked();
  }
  CancelChain(chain);
  // A throwing destructor terminates, as it would anywhere else.
  CloseObject(std::exchange(object_, nullptr), destroy_);
  FinishStopStep();
}

void ActorCore::FinishStopStep() noexcept {
  // acq_rel: the second step sees everything the first did before the future completes.
  if (stop_steps_.fetch_sub(1, std::memory_order_acq_rel) == 1) stopped_.SetValue();
}

void ActorCore::SetAbortError(std::exception_ptr error) noexcept {
  if (error == nullptr) return;
  internal::SpinLockHolder hold(&lock_);
  if (abort_error_ == nullptr) abort_error_ = std::move(error);  // The first error stays.
}

void ActorCore::Abandon(std::exception_ptr error) noexcept {
  SetAbortError(std::move(error));
  stop_requested_.store(true, std::memory_order_release);
  // Inside Stop (its Schedule failed), Stop finishes its own step of the stop latch.
  const bool own_step = !stop_posted_.exchange(true, std::memory_order_acq_rel);
  {
    const futures_internal::ScopedSerialContext context(this);
    Close();
  }
  if (own_step) {
    CancelWaiting();
    FinishStopStep();
  }
}

void ActorCore::CancelWaiting() noexcept {
  std::deque<CallNode*> deferred;
  if (gate_ != nullptr) deferred = gate_->Close();
  absl::flat_hash_map<uint64_t, AnyFuture> waiting;
  {
    internal::SpinLockHolder hold(&lock_);
    hooks_closed_ = true;
    waiting.swap(hooks_);
  }
  for (auto& [id, call] : waiting) call.Cancel();
  for (CallNode* node : deferred) Finish(node, /*run=*/false);
}

uint64_t ActorCore::AddStopHook(AnyFuture call) {
  {
    internal::SpinLockHolder hold(&lock_);
    if (!hooks_closed_) {
      const uint64_t id = next_hook_++;
      hooks_.emplace(id, std::move(call));
      return id;
    }
  }
  call.Cancel();
  return 0;
}

void ActorCore::RemoveStopHook(uint64_t id) {
  if (id == 0) return;
  absl::flat_hash_map<uint64_t, AnyFuture>::node_type removed;  // Destroyed after unlocking.
  internal::SpinLockHolder hold(&lock_);
  removed = hooks_.extract(id);
}

std::exception_ptr ActorCore::RejectionError() {
  std::exception_ptr ended_by;
  {
    internal::SpinLockHolder hold(&lock_);
    ended_by = abort_error_;
  }
  if (ended_by == nullptr) {
    return std::make_exception_ptr(StoppedError("Worker: the worker is stopped"));
  }
  return std::make_exception_ptr(
      StoppedError(absl::StrCat("Worker: the worker is stopped: ", ExceptionMessage(ended_by))));
}

void ActorCore::StopWithError(std::exception_ptr error) {
  SetAbortError(std::move(error));
  ActorCore::Stop(absl::ZeroDuration());
}

bool ActorCore::Stop(absl::Duration timeout) {
  // A cancellation callback below may drop the last handle; keep this actor alive meanwhile.
  const std::shared_ptr<ActorCore> self = shared_from_this();
  if (!stop_posted_.exchange(true, std::memory_order_acq_rel)) {
    stop_requested_.store(true, std::memory_order_release);
    std::deque<CallNode*> deferred;
    if (gate_ != nullptr) deferred = gate_->Close();
    absl::flat_hash_map<uint64_t, AnyFuture> waiting;
    CallNode* queued = nullptr;
    bool schedule = false;
    {
      internal::SpinLockHolder hold(&lock_);
      hooks_closed_ = true;
      waiting.swap(hooks_);
      if (!mailbox_closed_) {
        // Take the queued calls and leave only the StopNode, which runs after the running call.
        queued = TakeAllLocked();
        first_ = last_ = std::exchange(stop_node_, nullptr);
        queued_.store(1, std::memory_order_relaxed);
        schedule = !scheduled_;
        scheduled_ = true;
      }
    }
    if (schedule) Schedule();
    // Cancelling runs user callbacks; the StopNode is queued first, so a Stop nested in one of
    // them can complete. The stopped future completes only after both this pass and the
    // StopNode's Close (stop_steps_), so whoever sees it done sees every call done.
    {
      struct Stopping {
        const ActorCore* outer;
        ~Stopping() { stopping_actor = outer; }
      } stopping{std::exchange(stopping_actor, this)};
      for (auto& [id, call] : waiting) call.Cancel();
      for (CallNode* node : deferred) Finish(node, /*run=*/false);
      CancelChain(queued);
    }
    FinishStopStep();
  }
  if (InActorContext() || stopping_actor == this) return stopped_future_.Done();
  return stopped_future_.Wait(timeout);
}

}  // namespace concurry::workers_internal

#include "pools/internal/pool_core.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/executor.h"

namespace concurry::workers_internal {
namespace {

// The options of worker `index` of a pool with `pool` options: one worker, its LimitPool offset
// by its index (the pool's sets are shared by every worker). Shared-queue workers hold one routed
// call at a time, so the pool, not a gate per worker, bounds submission.
ResolvedWorkerOptions WorkerOptionsFor(const ResolvedWorkerOptions& pool, int index, bool shared) {
  ResolvedWorkerOptions options = pool;
  options.max_workers = 1;
  options.on_demand = false;
  options.on_demand_keepalive = absl::ZeroDuration();
  options.load_balancing.reset();
  options.limits = pool.limits.WithWorkerIndex(index);
  if (shared) {
    options.max_queued_tasks = kUnbounded;
    options.queue_full = QueueFullPolicy::kDefer;
  }
  return options;
}

int64_t BlockCapacity(const ResolvedWorkerOptions& options) {
  if (options.queue_full != QueueFullPolicy::kBlock || options.max_queued_tasks == kUnbounded) {
    return kUnbounded;
  }
  const int64_t n = options.max_workers;
  return options.max_queued_tasks > kUnbounded / n ? kUnbounded : options.max_queued_tasks * n;
}

// The balancer of a balanced pool: the user's, checked, or a built-in one.
std::unique_ptr<LoadBalancer> MakeBalancer(const ResolvedWorkerOptions& options) {
  if (!options.make_balancer) {
    return MakeLoadBalancer(options.load_balancing.value_or(LoadBalancing::kRoundRobin),
                            options.max_workers);
  }
  std::unique_ptr<LoadBalancer> balancer = options.make_balancer(options.max_workers);
  if (balancer == nullptr) {
    throw InvalidOptionError("worker options: make_balancer returned no balancer");
  }
  if (balancer->num_workers() != options.max_workers) {
    throw InvalidOptionError(absl::StrCat("worker options: make_balancer made a balancer over ",
                                          balancer->num_workers(), " workers for a pool of ",
                                          options.max_workers));
  }
  return balancer;
}

// A user balancer's pick, checked: an index outside the pool is a bug in the balancer, reported
// to the caller rather than read out of bounds.
int CheckedPick(LoadBalancer& balancer, int size) {
  const int index = balancer.Pick();
  if (index < 0 || index >= size) {
    throw InvalidOptionError(absl::StrCat("worker pool: the load balancer picked worker ", index,
                                          "; allowed: 0 to ", size - 1));
  }
  return index;
}

// What a pool of `size` workers on the options' executor runs at once.
int PoolConcurrency(const ResolvedWorkerOptions& options, int size) {
  const Executor* executor = options.executor;
  const int executor_concurrency = executor != nullptr ? executor->max_concurrency() : 0;
  return executor_concurrency > 0 ? std::min(size, executor_concurrency) : size;
}

}  // namespace

PoolCore::PoolCore(const ResolvedWorkerOptions& options, const WorkerBackend& backend,
                   WorkerFactory factory, bool stateless)
    : ActorCore(options, backend),
      max_concurrency_(PoolConcurrency(options, options.max_workers)),
      factory_(std::move(factory)),
      size_(options.max_workers),
      on_demand_(options.on_demand),
      shared_(options.on_demand ||
              (stateless && !options.load_balancing.has_value() && !options.make_balancer)),
      keepalive_(options.on_demand_keepalive),
      block_capacity_(BlockCapacity(options)),
      balancer_(shared_ ? nullptr : MakeBalancer(options)),
      slots_(new Slot[static_cast<size_t>(size_)]),
      timer_(
          on_demand_ && keepalive_ > absl::ZeroDuration() && keepalive_ != absl::InfiniteDuration()
              ? std::make_unique<Timer>(options.clock != nullptr ? *options.clock : Clock::Real())
              : nullptr),
      done_future_(done_.GetFuture()) {}

PoolCore::~PoolCore() {
  // First: waits for a running expiry, which uses the members destroyed before the timer.
  if (timer_ != nullptr) timer_->Shutdown();
  std::deque<CallNode*> waiting;
  {
    internal::SpinLockHolder lock(&mu_);
    waiting.swap(waiting_);
  }
  for (CallNode* node : waiting) {
    node->Cancel();
    delete node;
  }
}

std::shared_ptr<PoolCore> MakePool(const ResolvedWorkerOptions& options,
                                   const WorkerBackend& backend, WorkerFactory factory,
                                   bool stateless) {
  if (backend.runs_calls_inline()) {
    throw InvalidOptionError(absl::StrCat(
        "worker options: mode ", AbslUnparseFlag(options.mode),
        " runs every call in the caller's thread, so it cannot form a pool (max_workers is ",
        options.max_workers, options.on_demand ? ", on_demand is true" : "",
        "); use max_workers = 1, or a mode with threads of its own such as kThread or kTbb"));
  }
  return std::make_shared<PoolCore>(options, backend, std::move(factory), stateless);
}

namespace {
// The pool whose Stop is cancelling calls and stopping workers on this thread: a Stop nested in
// one of those callbacks must not wait for the stop it is part of.
thread_local const PoolCore* stopping_pool = nullptr;
// The pool whose LaunchForWaiting loop runs on this thread.
thread_local const PoolCore* launching_for_waiting = nullptr;

// Sets one of those thread-locals for a scope and restores the outer value after it.
class ScopedPool {
 public:
  ScopedPool(const PoolCore*& slot, const PoolCore* pool)
      : slot_(slot), outer_(std::exchange(slot, pool)) {}
  ~ScopedPool() { slot_ = outer_; }
  ScopedPool(const ScopedPool&) = delete;
  ScopedPool& operator=(const ScopedPool&) = delete;

 private:
  const PoolCore*& slot_;
  const PoolCore* const outer_;
};

std::exception_ptr StoppedPoolError() {
  return std::make_exception_ptr(StoppedError("worker pool: the pool is stopped"));
}
}  // namespace

Future<void> PoolCore::StartWorkers() {
  if (on_demand_) return MakeReadyFuture();
  std::vector<Future<void>> constructed;
  constructed.reserve(static_cast<size_t>(size_));
  for (int i = 0; i < size_; ++i) {
    {
      internal::SpinLockHolder lock(&mu_);
      ++live_;
    }
    std::exception_ptr error;
    if (!Launch(i, nullptr, &error)) {
      Stop(absl::ZeroDuration());
      return MakeFailedFuture<void>(error != nullptr ? error : StoppedPoolError());
    }
    internal::SpinLockHolder lock(&mu_);
    constructed.push_back(slots_[i].constructed);
  }
  // Completes when every worker is constructed, with the lowest-indexed constructor error if any.
  struct Join {
    std::vector<Future<void>> constructed;
    std::atomic<int> remaining;
    Promise<void> done;
    std::shared_ptr<PoolCore> pool;
  };
  auto join = std::make_shared<Join>();
  join->constructed = std::move(constructed);
  join->remaining.store(size_, std::memory_order_relaxed);
  join->pool = std::static_pointer_cast<PoolCore>(shared_from_this());
  Future<void> all = join->done.GetFuture();
  for (const Future<void>& one : join->constructed) {
    one.AddDoneCallback([join] {
      if (join->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
      for (const Future<void>& f : join->constructed) {
        if (std::exception_ptr error = f.Error()) {
          join->pool->Stop(absl::ZeroDuration());
          join->done.SetError(std::move(error));
          return;
        }
      }
      join->done.SetValue();
    });
  }
  return all;
}

bool PoolCore::Launch(int index, CallNode* first, std::exception_ptr* error) {
  StartedWorker worker;
  try {
    worker = factory_(index, WorkerOptionsFor(options(), index, shared_), this);
  } catch (...) {
    *error = std::current_exception();
    std::string message = on_demand_ ? "" : ExceptionMessage(*error);  // Not under the spin lock.
    {
      internal::SpinLockHolder lock(&mu_);
      --live_;
      SetStateLocked(index, on_demand_ ? SlotState::kEmpty : SlotState::kDead);
      slots_[index].error = std::move(message);
    }
    FailWaitingIfNoWorker();
    WakeBlocked();
    MaybeFinishStop();
    return false;
  }
  ActorCore* const actor = worker.actor.get();
  bool stopping;
  {
    internal::SpinLockHolder lock(&mu_);
    Slot& slot = slots_[index];
    slot.owner = worker.actor;
    slot.constructed = worker.constructed;
    slot.actor.store(actor, std::memory_order_release);
    stopping = stopping_.load(std::memory_order_acquire);
    if (!stopping) {
      // A shared-queue worker takes calls once its object exists (Started); one made for a call
      // has it queued behind the construction.
      SetStateLocked(index, shared_ && first == nullptr ? SlotState::kStarting : SlotState::kBusy);
    }
  }
  // Watches for its end (at once if it already stopped). The callback keeps the pool alive while
  // the worker lives: the worker reports to it.
  const auto self = std::static_pointer_cast<PoolCore>(shared_from_this());
  AnyFuture(actor->stopped_future()).AddDoneCallback([self, index, actor] {
    self->WorkerStopped(index, actor);
  });
  if (stopping) {
    actor->Stop(absl::ZeroDuration());
    *error = nullptr;
    return false;
  }
  if (first == nullptr) {
    if (shared_) {
      worker.constructed.AddDoneCallback([self, index, actor, constructed = worker.constructed] {
        self->Started(index, actor, constructed);
      });
    }
    return true;
  }
  // `worker.actor` keeps it alive here, whatever happens to the slot meanwhile.
  if (Hand(index, actor, first, /*may_block=*/false)) return true;
  // It stopped already: its constructor failed at once. The call fails with that error.
  std::exception_ptr why = worker.constructed.Done() ? worker.constructed.Error() : nullptr;
  first->Fail(why != nullptr ? why : StoppedPoolError());
  delete first;
  return true;
}

void PoolCore::LaunchFor(int index, CallNode* first) {
  std::exception_ptr error;
  if (Launch(index, first, &error)) return;
  first->Fail(error != nullptr ? error : StoppedPoolError());
  delete first;
  if (error != nullptr) LaunchForWaiting();  // The slot is free again.
}

void PoolCore::LaunchForWaiting() {
  // A launch whose worker stops at once (its constructor threw, run inline) reports the stop on
  // this thread, which calls this again: the outer loop carries on instead of recursing.
  if (launching_for_waiting == this) return;
  const ScopedPool scope(launching_for_waiting, this);
  while (true) {
    int index;
    CallNode* first;
    {
      internal::SpinLockHolder lock(&mu_);
      if (!on_demand_ || stopping_.load(std::memory_order_acquire) || waiting_.empty() ||
          live_ >= size_) {
        return;
      }
      index = ReserveEmptyLocked();
      first = waiting_.front();
      waiting_.pop_front();
    }
    std::exception_ptr error;
    if (!Launch(index, first, &error)) {
      first->Fail(error != nullptr ? error : StoppedPoolError());
      delete first;
    }
  }
}

void PoolCore::FailWaitingIfNoWorker() {
  std::deque<CallNode*> orphans;
  {
    internal::SpinLockHolder lock(&mu_);
    if (on_demand_ || stopping_.load(std::memory_order_acquire) || live_ > 0) return;
    orphans.swap(waiting_);
  }
  if (orphans.empty()) return;
  const std::exception_ptr error = NoLiveWorkerError();
  for (CallNode* node : orphans) {
    node->Fail(error);
    delete node;
  }
}

void PoolCore::Started(int index, ActorCore* worker, const Future<void>& constructed) {
  if (constructed.Error() != nullptr) return;  // Its stop follows: WorkerStopped takes over.
  CallNode* next = nullptr;
  bool retire = false;
  uint64_t keepalive_epoch = 0;
  std::shared_ptr<ActorCore> owner;
  {
    internal::SpinLockHolder lock(&mu_);
    Slot& slot = slots_[index];
    if (stopping_.load(std::memory_order_acquire) || slot.owner.get() != worker ||
        slot.state != SlotState::kStarting) {
      return;
    }
    owner = slot.owner;
    next = NextForLocked(index, &retire, &keepalive_epoch);
  }
  if (keepalive_epoch != 0) ScheduleKeepalive(index, keepalive_epoch);
  if (retire) owner->Stop(absl::ZeroDuration());
  if (next != nullptr && !Hand(index, owner.get(), next, /*may_block=*/false)) {
    // It stopped meanwhile: another worker takes the call.
    if (!PostShared(next, /*may_block=*/false)) {
      next->Fail(StoppedPoolError());
      delete next;
    }
  }
}

bool PoolCore::Hand(int index, ActorCore* worker, CallNode* node, bool may_block) {
  Slot& slot = slots_[index];
  slot.started.fetch_add(1, std::memory_order_relaxed);
  node->SetProducer(worker);
  if (worker->PostRouted(node, may_block)) return true;
  node->SetProducer(this);
  slot.started.fetch_sub(1, std::memory_order_relaxed);
  return false;
}

bool PoolCore::Post(CallNode* node, bool may_block) {
  return shared_ ? PostShared(node, may_block) : PostBalanced(node, may_block);
}

bool PoolCore::PostBalanced(CallNode* node, bool may_block) {
  // A pick may land on a worker that is dying and not replaced yet, or on a dead slot: try the
  // balancer a bounded number of times, then any live worker.
  for (int attempt = 0; attempt <= size_; ++attempt) {
    if (stopping_.load(std::memory_order_acquire)) return false;
    int index;
    try {
      index = CheckedPick(*balancer_, size_);
    } catch (...) {
      node->Fail(std::current_exception());  // A user balancer failed: so does the call.
      delete node;
      return true;
    }
    ActorCore* const worker = slots_[index].actor.load(std::memory_order_acquire);
    if (worker != nullptr && Hand(index, worker, node, may_block)) return true;
    bool dead;
    {
      internal::SpinLockHolder lock(&mu_);
      dead = slots_[index].state == SlotState::kDead;
    }
    // A dead slot keeps the pick counted, so that load-based balancers stop choosing it.
    if (!dead) RecordComplete(index);
  }
  for (int index = 0; index < size_; ++index) {
    ActorCore* const worker = slots_[index].actor.load(std::memory_order_acquire);
    if (worker != nullptr && !worker->stop_requested() && Hand(index, worker, node, may_block)) {
      return true;  // Its completion reaches the balancer too; counts there floor at zero.
    }
  }
  if (stopping_.load(std::memory_order_acquire)) return false;
  node->Fail(NoLiveWorkerError());
  delete node;
  return true;
}

bool PoolCore::PostShared(CallNode* node, bool may_block) {
  // Under kBlock, a caller that may block and finds the pool full (it holds block_capacity_
  // calls) waits for room: registered in blocked_ and holding block_mu_ across its last check,
  // so that a release (WakeBlocked) between that check and the wait cannot be missed.
  const bool bounded = block_capacity_ != kUnbounded && may_block && !InAnyActorContext() &&
                       !NonBlockingScope::Active();
  while (true) {
    int index = -1;
    std::shared_ptr<ActorCore> worker;
    bool launch = false;
    bool no_worker = false;
    {
      internal::SpinLockHolder lock(&mu_);
      if (stopping_.load(std::memory_order_acquire)) return false;
      if (bounded && !HasRoomLocked()) {
        // Full: wait below, then decide again.
      } else if (!idle_.empty()) {
        index = idle_.back();
        worker = slots_[index].owner;
        SetStateLocked(index, SlotState::kBusy);
      } else if (on_demand_ && live_ < size_) {
        index = ReserveEmptyLocked();
        launch = true;
      } else if (!on_demand_ && live_ == 0) {
        no_worker = true;
      } else {
        waiting_.push_back(node);
        return true;
      }
    }
    if (no_worker) {
      node->Fail(NoLiveWorkerError());
      delete node;
      return true;
    }
    if (launch) {
      LaunchFor(index, node);
      return true;
    }
    if (index < 0) {
      WaitForRoom();
      continue;
    }
    if (Hand(index, worker.get(), node, /*may_block=*/false)) return true;
    // That idle worker stopped just now (its WorkerStopped frees the slot): route again.
  }
}

bool PoolCore::HasRoomLocked() const {
  return stopping_.load(std::memory_order_acquire) ||
         busy_ + static_cast<int64_t>(waiting_.size()) < block_capacity_;
}

void PoolCore::WaitForRoom() {
  absl::MutexLock block_lock(&block_mu_);
  blocked_.fetch_add(1, std::memory_order_seq_cst);
  struct Unregister {
    std::atomic<int64_t>* blocked;
    ~Unregister() { blocked->fetch_sub(1, std::memory_order_seq_cst); }
  } unregister{&blocked_};
  while (true) {
    {
      internal::SpinLockHolder lock(&mu_);
      if (HasRoomLocked()) return;
    }
    const uint64_t epoch = room_epoch_;
    auto changed = [this, epoch]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(block_mu_) { return room_epoch_ != epoch; };
    // A BlockingRegion (through the clock): a caller on a TbbExecutor thread gets a thread added
    // meanwhile.
    Clock::Real().AwaitWithDeadline(&block_mu_, absl::Condition(&changed), absl::InfiniteFuture());
  }
}

void PoolCore::WakeBlocked() {
  if (blocked_.load(std::memory_order_seq_cst) == 0) return;
  absl::MutexLock lock(&block_mu_);
  ++room_epoch_;
}

void PoolCore::SetStateLocked(int index, SlotState state) {
  Slot& slot = slots_[index];
  if (slot.state == SlotState::kBusy) --busy_;
  if (slot.state == SlotState::kIdle) {
    RemoveIdleLocked(index);
    if (slot.keepalive.sequence != 0) {
      timer_->Cancel(slot.keepalive);  // Short; destroys the callback outside its own lock.
      slot.keepalive = {};
    }
  }
  slot.state = state;
  if (state == SlotState::kBusy) ++busy_;
  if (state == SlotState::kIdle) idle_.push_back(index);
}

void PoolCore::RemoveIdleLocked(int index) {
  // Usually the top of the stack (taken for a call); an expiry removes an older one.
  const auto it = std::find(idle_.rbegin(), idle_.rend(), index);
  if (it != idle_.rend()) idle_.erase(std::next(it).base());
}

int PoolCore::ReserveEmptyLocked() {
  for (int i = 0; i < size_; ++i) {
    if (slots_[i].state == SlotState::kEmpty) {
      ++live_;
      ++slots_[i].restarts;
      SetStateLocked(i, SlotState::kBusy);
      return i;
    }
  }
  return -1;  // Unreachable while live_ < size_: every live worker holds a slot.
}

CallNode* PoolCore::NextForLocked(int index, bool* retire, uint64_t* keepalive_epoch) {
  if (!waiting_.empty()) {
    CallNode* node = waiting_.front();
    waiting_.pop_front();
    SetStateLocked(index, SlotState::kBusy);
    return node;
  }
  if (on_demand_ && keepalive_ == absl::ZeroDuration()) {
    SetStateLocked(index, SlotState::kRetiring);
    *retire = true;
    return nullptr;
  }
  SetStateLocked(index, SlotState::kIdle);
  if (timer_ != nullptr) *keepalive_epoch = ++slots_[index].idle_epoch;
  return nullptr;
}

void PoolCore::ScheduleKeepalive(int index, uint64_t epoch) {
  // Outside mu_: the first Schedule starts the timer's thread, and the clock is the user's.
  Timer::Id id;
  bool scheduled = false;
  try {
    id = timer_->Schedule(timer_->clock().Now() + keepalive_,
                          [this, index, epoch] { Expire(index, epoch); });
    scheduled = true;
  } catch (...) {
    // No timer (stopped, or out of threads): the worker is retired now instead.
  }
  bool keep = false;
  {
    internal::SpinLockHolder lock(&mu_);
    Slot& slot = slots_[index];
    if (scheduled && slot.state == SlotState::kIdle && slot.idle_epoch == epoch) {
      slot.keepalive = id;
      keep = true;
    }
  }
  if (keep) return;
  if (scheduled) timer_->Cancel(id);  // Used again meanwhile: that expiry is moot.
  if (!scheduled) Expire(index, epoch);
}

CallNode* PoolCore::CallFinished(int index, ActorCore* worker) noexcept {
  Slot& slot = slots_[index];
  slot.finished.fetch_add(1, std::memory_order_relaxed);
  if (!shared_) {
    RecordComplete(index);
    return nullptr;
  }
  CallNode* next = nullptr;
  bool retire = false;
  uint64_t keepalive_epoch = 0;
  {
    internal::SpinLockHolder lock(&mu_);
    if (stopping_.load(std::memory_order_acquire) || slot.owner.get() != worker ||
        worker->stop_requested() || slot.state != SlotState::kBusy) {
      return nullptr;
    }
    next = NextForLocked(index, &retire, &keepalive_epoch);
    if (next != nullptr) {
      slot.started.fetch_add(1, std::memory_order_relaxed);
      MarkRouted(next);
      next->SetProducer(worker);
    }
  }
  WakeBlocked();  // A waiting call left the queue, or the worker is free.
  if (keepalive_epoch != 0) ScheduleKeepalive(index, keepalive_epoch);
  if (retire) {
    try {
      worker->Stop(absl::ZeroDuration());  // In its own context: does not wait.
    } catch (...) {
      // Stop(0) cannot fail for a live actor.
    }
  }
  return next;
}

void PoolCore::Reroute(int index, CallNode* node) noexcept {
  Slot& slot = slots_[index];
  slot.started.fetch_sub(1, std::memory_order_relaxed);
  MarkRouted(node, false);
  node->SetProducer(this);
  bool posted = false;
  try {
    posted = PostShared(node, /*may_block=*/false);
  } catch (...) {
    // Out of memory queueing it: fail it below.
  }
  if (!posted) {
    node->Fail(StoppedPoolError());
    delete node;
  }
}

void PoolCore::RecordComplete(int index) noexcept {
  try {
    balancer_->RecordComplete(index);
  } catch (const std::exception& e) {
    // Only a user balancer can throw here, and the call is over: report it.
    std::fprintf(stderr,
                 "concurry: worker pool: the load balancer's RecordComplete(%d) threw: %s\n", index,
                 e.what());
  } catch (...) {
    std::fprintf(stderr, "concurry: worker pool: the load balancer's RecordComplete(%d) threw\n",
                 index);
  }
}

void PoolCore::Expire(int index, uint64_t epoch) {
  std::shared_ptr<ActorCore> actor;
  {
    internal::SpinLockHolder lock(&mu_);
    Slot& slot = slots_[index];
    if (stopping_.load(std::memory_order_acquire) || slot.state != SlotState::kIdle ||
        slot.idle_epoch != epoch) {
      return;  // Used since, or the pool is stopping.
    }
    slot.keepalive = {};  // Running now: nothing to cancel.
    SetStateLocked(index, SlotState::kRetiring);
    actor = slot.owner;
  }
  if (actor != nullptr) actor->Stop(absl::ZeroDuration());
}

void PoolCore::WorkerStopped(int index, const ActorCore* actor) {
  std::shared_ptr<ActorCore> old;  // Released outside the lock.
  Future<void> failed_construction;
  bool replace = false;
  {
    internal::SpinLockHolder lock(&mu_);
    --live_;
    Slot& slot = slots_[index];
    if (slot.owner.get() == actor) {
      const bool constructed = slot.constructed.valid() && slot.constructed.Done() &&
                               slot.constructed.Error() == nullptr;
      old = std::move(slot.owner);
      slot.actor.store(nullptr, std::memory_order_release);
      if (!shared_) retired_.push_back(old);  // A caller may still post to it (Slot::actor).
      SetStateLocked(index, SlotState::kEmpty);
      if (stopping_.load(std::memory_order_acquire) || on_demand_) {
        // Nothing to replace: the pool stops, or an on-demand slot is free for the next call.
      } else if (!constructed) {
        slot.state = SlotState::kDead;
        failed_construction = slot.constructed;
      } else {
        // Died while the pool serves: a new worker takes the slot.
        ++replaced_;
        ++slot.restarts;
        ++live_;
        replace = true;
      }
    }
  }
  WakeBlocked();  // Its slot no longer counts as busy.
  if (failed_construction.valid()) {
    // Described outside the spin lock (rethrows the error, runs its what()).
    std::string message = ExceptionMessage(failed_construction.Error());
    internal::SpinLockHolder lock(&mu_);
    slots_[index].error = std::move(message);
  }
  if (replace) {
    std::exception_ptr error;
    Launch(index, nullptr, &error);  // A failure leaves the slot dead (Launch says so).
  }
  LaunchForWaiting();
  FailWaitingIfNoWorker();
  MaybeFinishStop();
}

void PoolCore::MaybeFinishStop() {
  {
    internal::SpinLockHolder lock(&mu_);
    if (!stopping_.load(std::memory_order_acquire) || live_ > 0 || stop_done_) return;
    stop_done_ = true;
  }
  done_.SetValue();
}

bool PoolCore::Stop(absl::Duration timeout) {
  if (timeout < absl::ZeroDuration()) {
    throw InvalidOptionError("worker pool: Stop: the timeout is negative; allowed: >= 0");
  }
  // Keeps the pool alive through a cancellation callback that drops the last handle.
  const std::shared_ptr<ActorCore> self = shared_from_this();
  if (!stopping_.exchange(true, std::memory_order_acq_rel)) {
    const ScopedPool scope(stopping_pool, this);
    // The pool's own stop: calls still waiting for their input futures are cancelled.
    ActorCore::Stop(absl::ZeroDuration());
    std::deque<CallNode*> waiting;
    std::vector<std::shared_ptr<ActorCore>> workers;
    {
      internal::SpinLockHolder lock(&mu_);
      waiting.swap(waiting_);
      for (int i = 0; i < size_; ++i) {
        if (slots_[i].owner != nullptr) workers.push_back(slots_[i].owner);
        slots_[i].keepalive = {};
      }
    }
    // No keepalive expiry from here on (an expiry running now finds the pool stopping).
    if (timer_ != nullptr) timer_->Shutdown();
    WakeBlocked();  // Blocked callers see the stop.
    for (CallNode* node : waiting) {
      node->Cancel();
      delete node;
    }
    // All at once: each posts its stop message and returns; the wait below has one deadline.
    for (const std::shared_ptr<ActorCore>& worker : workers) worker->Stop(absl::ZeroDuration());
    MaybeFinishStop();
  }
  if (MustNotWaitForStop()) return done_future_.Done();
  return done_future_.Wait(timeout);
}

bool PoolCore::MustNotWaitForStop() const {
  if (stopping_pool == this) return true;
  const ActorCore* current = ActorCore::Current();
  if (current != nullptr && current->pool() == this) return true;
  const ActorCore* stopping = ActorCore::Stopping();
  return stopping != nullptr && (stopping == this || stopping->pool() == this);
}

WorkerStats PoolCore::Stats() {
  std::vector<std::shared_ptr<ActorCore>> workers;
  WorkerStats total;
  {
    internal::SpinLockHolder lock(&mu_);
    for (int i = 0; i < size_; ++i) {
      if (slots_[i].owner != nullptr) workers.push_back(slots_[i].owner);
    }
    total.deferred = static_cast<int64_t>(waiting_.size());
    total.blocked_callers = blocked_.load(std::memory_order_relaxed);
  }
  for (const std::shared_ptr<ActorCore>& worker : workers) {
    const WorkerStats one = worker->Stats();
    total.queued += one.queued;
    total.deferred += one.deferred;
    total.blocked_callers += one.blocked_callers;
    total.coroutines += one.coroutines;
    total.coroutines_waiting += one.coroutines_waiting;
    total.coroutine_timers += one.coroutine_timers;
  }
  return total;
}

int PoolCore::max_concurrency() const { return max_concurrency_; }

PoolStats PoolCore::GetPoolStats() {
  PoolStats stats;
  stats.max_workers = size_;
  stats.effective_concurrency = max_concurrency();
  stats.on_demand = on_demand_;
  stats.on_demand_keepalive = keepalive_;
  stats.stopped = stop_requested();
  stats.max_queued_tasks = options().max_queued_tasks;
  stats.queue_full = options().queue_full;
  LoadBalancerStats& lb = stats.load_balancer;
  if (balancer_ != nullptr) {
    lb = balancer_->Stats();
  } else {
    lb.algorithm = "SharedQueue";  // total_dispatched: the sum of the slots' calls, below.
  }
  const bool fill_active = lb.active_calls.empty();
  const bool fill_total = lb.total_calls.empty();
  for (int i = 0; i < size_; ++i) {
    if (fill_active) {
      lb.active_calls.push_back(slots_[i].Active());
      lb.total_active += lb.active_calls.back();
    }
    if (fill_total) {
      lb.total_calls.push_back(slots_[i].started.load(std::memory_order_relaxed));
      lb.sum_total_calls += lb.total_calls.back();
    }
  }
  if (balancer_ == nullptr) lb.total_dispatched = lb.sum_total_calls;
  internal::SpinLockHolder lock(&mu_);
  for (int i = 0; i < size_; ++i) {
    if (slots_[i].owner != nullptr && !slots_[i].owner->stop_requested()) ++stats.total_workers;
  }
  stats.on_demand_active = on_demand_ ? live_ : 0;
  stats.queued_in_pool = static_cast<int64_t>(waiting_.size());
  stats.replaced_workers = replaced_;
  return stats;
}

PoolWorkerStats PoolCore::GetWorkerStats(int index) {
  if (index < 0 || index >= size_) {
    throw InvalidOptionError(absl::StrCat("worker pool: GetWorkerStats: worker index ", index,
                                          " is out of range; allowed: 0 to ", size_ - 1,
                                          " (max_workers is ", size_, ")"));
  }
  PoolWorkerStats stats;
  stats.index = index;
  Slot& slot = slots_[index];
  stats.active_calls = slot.Active();
  stats.total_calls = slot.started.load(std::memory_order_relaxed);
  std::shared_ptr<ActorCore> worker;
  {
    internal::SpinLockHolder lock(&mu_);
    worker = slot.owner;
    stats.restarts = slot.restarts;
    stats.error = slot.error;
  }
  if (worker != nullptr) {
    stats.alive = !worker->stop_requested();
    stats.queues = worker->Stats();
  }
  return stats;
}

std::exception_ptr PoolCore::NoLiveWorkerError() {
  std::string errors;
  {
    internal::SpinLockHolder lock(&mu_);
    for (int i = 0; i < size_; ++i) {
      if (!slots_[i].error.empty()) {
        absl::StrAppend(&errors, errors.empty() ? "" : "; ", "worker ", i, ": ", slots_[i].error);
      }
    }
  }
  return std::make_exception_ptr(CrashedError(absl::StrCat(
      "worker pool: no live worker to take the call (workers die when they stop by themselves or "
      "crash; a replacement whose constructor fails is not retried)",
      errors.empty() ? "" : ": ", errors)));
}

}  // namespace concurry::workers_internal

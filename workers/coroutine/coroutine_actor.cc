#include "workers/coroutine/coroutine_actor.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "futures/clock.h"
#include "futures/errors.h"

namespace concurry::workers_internal {
namespace {

// The process-wide change counter behind WaitForCoroutineStatsChange (tests only; free when
// nobody watches).
struct StatsChanges {
  std::atomic<int> watchers{0};
  absl::Mutex mu;
  uint64_t version ABSL_GUARDED_BY(mu) = 0;
};

StatsChanges& Changes() {
  static StatsChanges* const changes = new StatsChanges();
  return *changes;
}

void NotifyStatsChanged() {
  StatsChanges& changes = Changes();
  // seq_cst, paired with AddCoroutineStatsWatcher: a watcher registered before the change sees
  // its bump.
  if (changes.watchers.load() == 0) return;
  absl::MutexLock lock(&changes.mu);
  ++changes.version;
}

}  // namespace

void AddCoroutineStatsWatcher(int delta) { Changes().watchers.fetch_add(delta); }

uint64_t CoroutineStatsVersion() {
  absl::MutexLock lock(&Changes().mu);
  return Changes().version;
}

void WaitForCoroutineStatsChange(uint64_t seen, absl::Time deadline) {
  StatsChanges& changes = Changes();
  absl::MutexLock lock(&changes.mu);
  auto changed = [&changes, seen]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(changes.mu) { return changes.version > seen; };
  changes.mu.AwaitWithDeadline(absl::Condition(&changed), deadline);
}

// A coroutine call on its way to the loop. One destroyed without having run (the loop closed
// first) cancels its call. Move-only.
class CoroutineActor::LoopCall {
 public:
  LoopCall(std::shared_ptr<CoroutineActor> actor, CallNode* node)
      : actor_(std::move(actor)), node_(node) {}
  LoopCall(LoopCall&& other) noexcept
      : actor_(std::move(other.actor_)), node_(std::exchange(other.node_, nullptr)) {}
  LoopCall& operator=(LoopCall&&) = delete;
  ~LoopCall() {
    if (node_ != nullptr) actor_->Drop(node_);
  }
  void operator()() { actor_->Arrive(std::exchange(node_, nullptr)); }
  // Gives the node back (it was not posted).
  void Release() { node_ = nullptr; }

 private:
  std::shared_ptr<CoroutineActor> actor_;
  CallNode* node_;
};

CoroutineActor::CoroutineActor(const ResolvedWorkerOptions& options, const WorkerBackend& backend)
    : ThreadActor(options, backend),
      max_in_flight_(options.max_in_flight_coroutines),
      loop_(std::make_shared<AsioLoop>(options.clock != nullptr ? *options.clock : Clock::Real(),
                                       static_cast<AsioLoop::Listener&>(*this))) {
  // The object is destroyed on the loop once its coroutines have ended (CloseObject).
  AddStopStep();
}

CoroutineActor::~CoroutineActor() {
  // The loop thread holds a reference until Run and LoopEnded have returned: this runs on it
  // (which cannot join itself) or after it left them.
  if (loop_thread_.joinable()) {
    if (loop_thread_.get_id() == std::this_thread::get_id()) {
      loop_thread_.detach();
    } else {
      loop_thread_.join();
    }
  }
  // The loop may outlive this actor (coroutines started on it own it): it must not call back.
  loop_->Close();
  loop_.reset();
}

void CoroutineActor::OnStart() {
  loop_thread_ = std::thread(
      [self = std::static_pointer_cast<CoroutineActor>(shared_from_this()), loop = loop_] {
        loop->Run(static_cast<ActorCore*>(self.get()));
        self->LoopEnded();
      });
  try {
    ThreadActor::OnStart();
  } catch (...) {
    loop_->Close();  // The loop thread ends and lets go of this actor.
    throw;
  }
}

int CoroutineActor::max_concurrency() const {
  return static_cast<int>(std::min<int64_t>(max_in_flight_, INT_MAX));
}

bool CoroutineActor::Deliver(CallNode* node) {
  if (!node->IsCoroutine()) return Push(node);
  if (stop_requested()) return false;
  LoopCall call(std::static_pointer_cast<CoroutineActor>(shared_from_this()), node);
  if (loop_->Post(std::move(call))) return true;
  // Closed meanwhile: the node goes back to the caller, who fails it.
  call.Release();
  return false;
}

void CoroutineActor::Arrive(CallNode* node) {
  bool drop;
  {
    absl::MutexLock lock(&mu_);
    drop = cancel_all_ || closing_;
    if (!drop) waiting_.push_back(node);
  }
  if (drop) {
    Drop(node);
    return;
  }
  NotifyStatsChanged();
  Pump();
}

void CoroutineActor::Pump() {
  for (;;) {
    CallNode* node;
    void* object;
    {
      absl::MutexLock lock(&mu_);
      if (!ready_ || cancel_all_ || waiting_.empty() || in_flight_ >= max_in_flight_) return;
      node = waiting_.front();
      waiting_.pop_front();
      ++in_flight_;
      starting_call_ = true;
      object = object_;
    }
    RunOutsideMailbox(node, object);
    {
      absl::MutexLock lock(&mu_);
      if (starting_call_) {
        // No coroutine started (the call was cancelled, its method threw): its slot is free.
        starting_call_ = false;
        --in_flight_;
      }
    }
    NotifyStatsChanged();
  }
}

void CoroutineActor::RootStarted(futures_internal::CoroControl& control) {
  bool cancel;
  {
    absl::MutexLock lock(&mu_);
    roots_.insert(&control);
    // Only the call's own root (the node marks it); not one its method started on the way.
    if (starting_call_ && ScopedCoroCallStart::Take()) {
      starting_call_ = false;
      call_roots_.insert(&control);
    }
    cancel = cancel_all_;
  }
  // Started while the worker stops: it ends as the others do.
  if (cancel) control.Cancel();
}

void CoroutineActor::RootFinished(futures_internal::CoroControl& control) {
  bool pump;
  bool close;
  {
    absl::MutexLock lock(&mu_);
    roots_.erase(&control);
    if (call_roots_.erase(&control) > 0) --in_flight_;
    pump = ready_ && !cancel_all_ && !waiting_.empty() && in_flight_ < max_in_flight_;
    close = CloseDueLocked();
  }
  NotifyStatsChanged();
  // Not from here: this runs inside the coroutine's last step.
  if (pump) loop_->Post([this] { Pump(); });
  if (close) loop_->Post([this] { MaybeFinishClose(); });
}

void CoroutineActor::TimersChanged(int64_t delta) {
  {
    absl::MutexLock lock(&mu_);
    timers_ += delta;
  }
  NotifyStatsChanged();
}

void CoroutineActor::ObjectReady(void* object) noexcept {
  // The loop reads the object under mu_ from now on, which publishes it there.
  {
    absl::MutexLock lock(&mu_);
    object_ = object;
  }
  loop_->Post([this] {
    {
      absl::MutexLock lock(&mu_);
      ready_ = true;
    }
    Pump();
  });
}

void CoroutineActor::CancelAll() {
  std::vector<std::shared_ptr<futures_internal::CoroControl>> roots;
  std::deque<CallNode*> waiting;
  {
    absl::MutexLock lock(&mu_);
    cancel_all_ = true;
    waiting.swap(waiting_);
    // Listed controls are alive: a root leaves the list (under mu_) before its control can go.
    roots.reserve(roots_.size());
    for (futures_internal::CoroControl* root : roots_) roots.push_back(root->shared_from_this());
  }
  // CoroControl::Cancel may be called from any thread: the resumption goes through the loop.
  for (const auto& root : roots) root->Cancel();
  for (CallNode* node : waiting) Drop(node);
  NotifyStatsChanged();
}

void CoroutineActor::CloseObject(void* object, void (*destroy)(void*)) noexcept {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    close_object_ = object;
    close_destroy_ = destroy;
  }
  CancelAll();
  // The loop destroys the object once its coroutines have ended (they may use it until then).
  loop_->Post([this] { MaybeFinishClose(); });
}

void CoroutineActor::MaybeFinishClose() {
  void* object;
  void (*destroy)(void*);
  {
    absl::MutexLock lock(&mu_);
    if (!CloseDueLocked()) return;
    close_finished_ = true;
    object = std::exchange(close_object_, nullptr);
    destroy = close_destroy_;
    object_ = nullptr;
  }
  // A throwing destructor terminates, as it would anywhere else (here through noexcept: escaping
  // into the loop's Run, which reports and goes on, it would leave the loop open and the stop
  // unfinished).
  if (object != nullptr && destroy != nullptr) [&]() noexcept { destroy(object); }();
  // The stop step finishes once the loop has run what was queued before this (LoopEnded): a call
  // that passed Deliver's stop check just before the stop was posted to the loop, and is dropped
  // there, so whoever sees the worker stopped sees that call ended too.
  loop_->Close();
}

void CoroutineActor::LoopEnded() {
  bool closed;
  {
    absl::MutexLock lock(&mu_);
    closed = close_finished_;
  }
  // Not closed by MaybeFinishClose: OnStart failed, and no stop step waits for the loop.
  if (closed) FinishStopStep();
}

bool CoroutineActor::Stop(absl::Duration timeout) {
  // Keeps this actor alive while the cancellations run user callbacks.
  const std::shared_ptr<ActorCore> self = shared_from_this();
  CancelAll();
  const bool stopped = ActorCore::Stop(timeout);
  // Stop(0) asks for the stop without waiting: nothing to report yet.
  if (stopped || timeout <= absl::ZeroDuration() || InActorContext() ||
      ActorCore::Stopping() == this) {
    return stopped;
  }
  int64_t running;
  {
    absl::MutexLock lock(&mu_);
    running = static_cast<int64_t>(roots_.size());
  }
  if (running > 0 && !reported_.exchange(true, std::memory_order_relaxed)) {
    const std::string type = object_type() != nullptr ? TypeName(*object_type()) : "T";
    std::fprintf(stderr,
                 "concurry: Worker<%s>::Stop: %lld coroutine(s) did not end within %s after "
                 "cancellation; the object and the worker's two threads stay until they end\n",
                 type.c_str(), static_cast<long long>(running),
                 absl::FormatDuration(timeout).c_str());
  }
  return false;
}

WorkerStats CoroutineActor::Stats() {
  WorkerStats stats = ActorCore::Stats();
  absl::MutexLock lock(&mu_);
  stats.coroutines = in_flight_;
  stats.coroutines_waiting = static_cast<int64_t>(waiting_.size());
  stats.coroutine_timers = timers_;
  return stats;
}

}  // namespace concurry::workers_internal

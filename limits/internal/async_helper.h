// The loop of a LimitSet engine's AcquireAsync() helper thread, shared by the in-process engine
// (limits/internal/set_async.cc) and the Redis engine (limits/redis/internal/redis_set_async.cc).
// Each engine keeps its own queue and request types and its own ServeAsync() round.
//
//   void MyEngine::RunAsync(std::shared_ptr<AsyncQueue> queue) {
//     limits_internal::RunAsyncHelper(
//         queue, [](MyEngine& set, AsyncQueue& q) { return set.ServeAsync(q); });
//   }

#ifndef CONCURRY_LIMITS_INTERNAL_ASYNC_HELPER_H_
#define CONCURRY_LIMITS_INTERNAL_ASYNC_HELPER_H_

#include <sys/types.h>

#include <atomic>
#include <exception>
#include <memory>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "futures/future.h"

namespace concurry {
namespace limits_internal {

// The futures one round of a helper ended (`Acquisition` is LimitAcquisition), completed with no
// lock held; continuations run on the helper thread.
template <typename Acquisition>
class AsyncCompletions {
 public:
  struct Completion {
    Promise<Acquisition> promise;
    Acquisition acquisition;  // Held, or empty with `error` set.
    std::exception_ptr error;
  };
  // Gives back, unused, a held acquisition whose future was cancelled before it completed.
  using GiveBack = void (*)(Acquisition&);

  explicit AsyncCompletions(GiveBack give_back) : give_back_(give_back) {}

  Completion& Add() { return list_.emplace_back(); }
  // Adds `promise`, to be failed with `error`.
  void Fail(Promise<Acquisition> promise, std::exception_ptr error) {
    Completion& completion = Add();
    completion.promise = std::move(promise);
    completion.error = std::move(error);
  }
  // Completes them all, and forgets them.
  void operator()() {
    for (Completion& completion : list_) {
      if (completion.error != nullptr) {
        completion.promise.SetError(completion.error);
      } else if (!completion.promise.SetValue(std::move(completion.acquisition))) {
        give_back_(completion.acquisition);  // Cancelled at the last moment.
      }
    }
    list_.clear();
  }

 private:
  GiveBack give_back_;
  std::vector<Completion> list_;
};

// The error of an AcquireAsync() request whose time ran out, in every engine.
inline std::exception_ptr AcquireAsyncTimeout() {
  return std::make_exception_ptr(
      TimeoutError("LimitSet::AcquireAsync: failed to acquire all limits in time"));
}

// The queue of this process's helper thread: `*slot`, or, on first use and in a fork()ed child
// (whose `*slot` is the parent's), a new one whose thread runs `run(queue)`. Call it holding the
// lock that guards `*slot`. The new queue is started before it replaces `*slot`, so a failed
// start leaves nothing behind; an inherited one is left alone (its thread is the parent's).
template <typename Queue, typename Run>
std::shared_ptr<Queue> HelperQueueLocked(std::shared_ptr<Queue>* slot, pid_t pid, Run run) {
  if (*slot == nullptr || (*slot)->pid != pid) {
    auto fresh = std::make_shared<Queue>();
    fresh->pid = pid;
    fresh->thread = std::thread(run, fresh);
    if (*slot != nullptr) static_cast<void>(new std::shared_ptr<Queue>(std::move(*slot)));
    *slot = std::move(fresh);
  }
  return *slot;
}

// Runs until `queue` is shut down with nothing pending. `Queue` has `absl::Mutex mu`, a deque
// `incoming` and a bool `shutdown` guarded by it, `std::atomic<bool> interrupt` and a list
// `pending` of the helper's own; each request carries `set`, a std::shared_ptr to its engine.
// Each round moves the arrived requests to `pending` and calls `serve(set, *queue)`, which serves
// what it can and, if requests are left, completes the futures it ended and waits until something
// changes (a request, a cancellation raising `interrupt`, capacity coming back, a deadline). If
// none are left it returns the futures it ended instead, uncompleted, as a callable that completes
// them: the helper calls it after letting go of the set.
//
// Lifetime: while requests are pending the helper holds the set (taken over from the first
// request that brought it, so it is never the last reference a request drops); when nothing is
// pending it lets go, which may destroy the set (whose destructor then detaches this thread),
// and only then completes the last futures. So a caller that saw all its futures complete and
// dropped its handles has destroyed the set on its own thread: the set's destruction (and the
// warnings it may deliver) never runs here behind the caller's back. `queue` stays valid through
// the shared_ptr.
template <typename Queue, typename Serve>
void RunAsyncHelper(const std::shared_ptr<Queue>& queue, Serve serve) {
  decltype(queue->incoming.front().set) set;
  for (;;) {
    // Cleared before looking: a request or cancellation after this raises it again.
    queue->interrupt.store(false, std::memory_order_seq_cst);
    {
      absl::MutexLock lock(&queue->mu);
      if (queue->pending.empty()) {
        const auto ready = [&queue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue->mu) {
          return queue->shutdown || !queue->incoming.empty();
        };
        queue->mu.Await(absl::Condition(&ready));
        if (queue->incoming.empty()) return;  // Shut down with nothing left.
      }
      while (!queue->incoming.empty()) {
        auto& arrived = queue->incoming.front();
        if (set == nullptr) {
          set = std::move(arrived.set);
        } else {
          arrived.set.reset();
        }
        queue->pending.push_back(std::move(arrived));
        queue->incoming.pop_front();
      }
    }
    // Never null here: every request brings the set, and the helper lets go only when nothing
    // is pending.
    auto complete_the_last = serve(*set, *queue);
    if (queue->pending.empty()) set.reset();
    complete_the_last();
  }
}

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_ASYNC_HELPER_H_

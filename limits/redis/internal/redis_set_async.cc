// RedisSetBackend::AcquireAsync(): the per-set helper thread (RunAsync, ServeAsync) that serves
// the waiting asynchronous requests in order.
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "limits/internal/async_helper.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/redis/internal/redis_set_backend.h"
#include "limits/redis/internal/scripts.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace limits_internal {
namespace redis {

namespace {

using ::concurry::redis_internal::RedisDeadlineError;
using ::concurry::redis_internal::RedisPoolBusyError;

}  // namespace

// ---- AcquireAsync ----

Future<LimitAcquisition> RedisSetBackend::AcquireAsync(Request request, absl::Time deadline) {
  std::shared_ptr<RedisSetBackend> self = self_.lock();
  const bool exempt = options().fairness != LimitFairness::kFifo || request.nested;
  if (!no_op()) {
    // Served at once when possible (and nobody queues ahead). The acquisition does not make the
    // calling thread skip the queue later: it may be used anywhere.
    try {
      // Ends by the request's deadline (a slow or hung Redis), or a short grace after it for a
      // request whose deadline has come already (as a last try).
      const absl::Time command_deadline = std::max(
          deadline, absl::Now() + std::min(kLastTryGrace, core_->options().command_timeout));
      const TakeResult taken =
          TakeOnce(request.items, exempt, 0, TakeMode::kTryOnce, command_deadline);
      if (taken.granted) {
        LimitAcquisition acquired;
        ItemsOf(acquired) = std::move(request.items);
        Grant(self, taken.lease, /*fail_open=*/false, /*exempting=*/false, acquired);
        return MakeReadyFuture(std::move(acquired));
      }
    } catch (const RedisDeadlineError&) {
      Leave(0, /*timed_out=*/true);  // Counts the timeout.
      return MakeFailedFuture<LimitAcquisition>(AcquireAsyncTimeout());
    } catch (const RedisPoolBusyError&) {
      // Reachable, only busy: queued below like a request that must wait.
    } catch (const InvalidOptionError&) {
      return MakeFailedFuture<LimitAcquisition>(std::current_exception());
    } catch (const RedisError& error) {
      if (!Outage(error) || !FailOpen(error, "acquiring")) {
        return MakeFailedFuture<LimitAcquisition>(std::current_exception());
      }
      LimitAcquisition acquired;
      ItemsOf(acquired) = std::move(request.items);
      Grant(self, /*lease=*/0, /*fail_open=*/true, /*exempting=*/false, acquired);
      return MakeReadyFuture(std::move(acquired));
    }
  } else {
    LimitAcquisition acquired;
    Bind(acquired, this, self);
    return MakeReadyFuture(std::move(acquired));
  }
  AsyncRequest pending;
  pending.request = std::move(request);
  pending.deadline = deadline;
  pending.cancelled = std::make_shared<std::atomic<bool>>(false);
  pending.set = self;
  Future<LimitAcquisition> future = pending.promise.GetFuture();
  std::shared_ptr<AsyncQueue> queue;
  {
    absl::MutexLock lock(&async_mu_);
    queue = HelperQueueLocked(&async_, getpid(), &RedisSetBackend::RunAsync);
  }
  pending.promise.OnCancel(
      [wake = wake_, weak_queue = std::weak_ptr<AsyncQueue>(queue), cancelled = pending.cancelled] {
        cancelled->store(true, std::memory_order_release);
        if (std::shared_ptr<AsyncQueue> live = weak_queue.lock()) wake->Interrupt(&live->interrupt);
      });
  {
    absl::MutexLock lock(&queue->mu);
    queue->incoming.push_back(std::move(pending));
  }
  wake_->Interrupt(&queue->interrupt);
  return future;
}

void RedisSetBackend::RunAsync(std::shared_ptr<AsyncQueue> queue) {
  // The helper holds the set while requests wait: a pending AcquireAsync() keeps it alive.
  RunAsyncHelper(queue,
                 [](RedisSetBackend& set, AsyncQueue& pending) { return set.ServeAsync(pending); });
}

RedisSetBackend::AsyncCompletions RedisSetBackend::ServeAsync(AsyncQueue& queue) {
  AsyncCompletions done(&GiveBackUnused);
  const uint64_t seen = wake_->generation();
  absl::Time wake = absl::InfiniteFuture();
  std::shared_ptr<RedisSetBackend> self = self_.lock();
  const bool fifo = options().fairness == LimitFairness::kFifo;
  // First the requests that are cancelled or past their deadline: no take for them.
  const absl::Time start = absl::Now();
  for (auto it = queue.pending.begin(); it != queue.pending.end();) {
    AsyncRequest& request = *it;
    if (request.cancelled->load(std::memory_order_acquire)) {
      if (request.ticket != 0) Leave(request.ticket, /*timed_out=*/false);
      it = queue.pending.erase(it);
      continue;
    }
    if (start >= request.deadline) {
      Leave(request.ticket, /*timed_out=*/true);
      done.Fail(std::move(request.promise), AcquireAsyncTimeout());
      it = queue.pending.erase(it);
      continue;
    }
    ++it;
  }
  // Before any take, which may hang as long as command_timeout; with none left, once the helper
  // let go of the set.
  if (queue.pending.empty()) return done;
  done();
  // The earliest deadline left: every take of the round ends by it, and the round stops once it
  // passed, so that a slow or hung Redis never holds a request past its deadline while the
  // others take their turns (the next round ends it first).
  absl::Time earliest = absl::InfiniteFuture();
  for (const AsyncRequest& request : queue.pending) earliest = std::min(earliest, request.deadline);
  for (auto it = queue.pending.begin(); it != queue.pending.end();) {
    AsyncRequest& request = *it;
    const absl::Time now = absl::Now();
    if (now >= earliest) {
      wake = absl::InfinitePast();
      break;
    }
    try {
      const TakeResult taken = TakeOnce(request.request.items, !fifo || request.request.nested,
                                        request.ticket, TakeMode::kMayWait, earliest);
      if (taken.granted) {
        AsyncCompletions::Completion& completion = done.Add();
        ItemsOf(completion.acquisition) = std::move(request.request.items);
        Grant(self, taken.lease, /*fail_open=*/false, /*exempting=*/false, completion.acquisition);
        completion.promise = std::move(request.promise);
        it = queue.pending.erase(it);
        continue;
      }
      request.ticket = taken.ticket;
      absl::Time retry = std::min(request.deadline, now + renew_period_);
      if (taken.wait_us > 0) retry = std::min(retry, now + absl::Microseconds(taken.wait_us));
      wake = std::min(wake, retry);
      ++it;
    } catch (const RedisDeadlineError&) {
      if (absl::Now() < request.deadline) {
        // Cut short at another request's deadline: this one stays (if this was its first take,
        // the ticket it may have got is unknown and expires after lease_ttl).
        wake = absl::InfinitePast();
        break;
      }
      // Cut short at the request's deadline: not granted.
      Leave(request.ticket, /*timed_out=*/true);
      done.Fail(std::move(request.promise), AcquireAsyncTimeout());
      it = queue.pending.erase(it);
    } catch (const RedisPoolBusyError&) {
      // Reachable, only busy: tried again in the next round (the pool wait was the pause).
      wake = absl::InfinitePast();
      ++it;
    } catch (const RedisError& error) {
      if (request.ticket != 0) Leave(request.ticket, /*timed_out=*/false);
      AsyncCompletions::Completion& completion = done.Add();
      completion.promise = std::move(request.promise);
      if (Outage(error) && FailOpen(error, "acquiring")) {
        ItemsOf(completion.acquisition) = std::move(request.request.items);
        Grant(self, /*lease=*/0, /*fail_open=*/true, /*exempting=*/false, completion.acquisition);
      } else {
        completion.error = std::current_exception();
      }
      it = queue.pending.erase(it);
    } catch (...) {
      if (request.ticket != 0) Leave(request.ticket, /*timed_out=*/false);
      done.Fail(std::move(request.promise), std::current_exception());
      it = queue.pending.erase(it);
    }
  }
  if (queue.pending.empty()) return done;  // Completed once the helper let go of the set.
  done();
  wake_->Wait(seen, wake, &queue.interrupt);
  return done;  // Empty.
}

void RedisSetBackend::GiveBackUnused(LimitAcquisition& acquisition) {
  for (Item& item : ItemsOf(acquisition)) {
    item.updated = true;
    item.used = 0;
  }
}

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry

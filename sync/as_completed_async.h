// AsCompletedAsync: AsCompleted for coroutines (concurry's async gather(iter=True)). C++20 has no
// `for co_await`; `co_await completions.Next()` gives the next completion, or nullopt at the end:
//
//   concurry::Coro<void> Drain(std::vector<concurry::Future<int>> futures) {
//     auto completions = concurry::AsCompletedAsync(std::move(futures), {.timeout = kNineSec});
//     for (;;) {
//       std::optional<concurry::Completion<size_t, int>> item = co_await completions.Next();
//       if (!item) break;
//       if (item->outcome.ok()) Use(item->key, item->outcome.value());  // key: index or map key
//     }
//   }
//
// Each Next() suspends the coroutine, holding no thread, until the next future completes, and
// resumes it on its own scheduler. Same inputs, options and items as AsCompleted
// (sync/as_completed.h). With no `options.clock` the timeout runs on the clock of the coroutine's
// scheduler (read when AsCompletedAsync is called inside a coroutine's step, else at the first
// Next()); the timeout counts from then. A timeout leaves the pending futures running unless
// `options.cancel_pending_on_timeout` is set. Cancelling the coroutine while it waits in Next()
// ends that wait with CancelledError and leaves the futures alone; destroying the
// AsyncCompletions removes every callback it registered. Braced options are fine here, as in the
// example: AsCompletedAsync is not called inside a co_await expression (GCC 12, wait_async.h).

#ifndef CONCURRY_SYNC_AS_COMPLETED_ASYNC_H_
#define CONCURRY_SYNC_AS_COMPLETED_ASYNC_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/coro.h"
#include "futures/future.h"
#include "futures/internal/coro_scheduler.h"
#include "sync/as_completed.h"
#include "sync/internal/async_watch.h"
#include "sync/internal/containers.h"
#include "sync/outcome.h"

namespace concurry {
namespace sync_internal {

// The state of one AsCompletedAsync iteration. Heap-allocated and never moved: the AsyncWatch
// refers to `any_`. Not thread-safe; confine to one coroutine.
template <typename Key, typename T>
class AsyncCompletionsState {
 public:
  // `futures` are valid; `keys[i]` names `futures[i]`.
  AsyncCompletionsState(std::vector<Key> keys, std::vector<Future<T>> futures,
                        const AsCompletedOptions& options)
      : keys_(std::move(keys)),
        futures_(std::move(futures)),
        any_(futures_.begin(), futures_.end()),
        clock_(options.clock),
        timeout_(options.timeout),
        cancel_pending_on_timeout_(options.cancel_pending_on_timeout),
        watch_(any_) {
    if (clock_ == nullptr && futures_internal::CurrentCoroScheduler() != nullptr) {
      clock_ = &SchedulerClockOrReal();
    }
    if (clock_ != nullptr) deadline_ = DeadlineAfter(*clock_, timeout_);
  }

  size_t size() const { return futures_.size(); }
  size_t remaining() const { return futures_.size() - yielded_; }

  // The next completion, or nullopt after the last; TimeoutError once the deadline passed.
  static Coro<std::optional<Completion<Key, T>>> Next(AsyncCompletionsState* self) {
    if (self->yielded_ == self->futures_.size()) co_return std::nullopt;
    if (self->clock_ == nullptr) {
      // Created outside a coroutine's step: the timeout starts with the first Next().
      self->clock_ = &SchedulerClockOrReal();
      self->deadline_ = DeadlineAfter(*self->clock_, self->timeout_);
    }
    if (self->yielded_ == self->snapshot_.completed.size()) {
      const bool met =
          co_await self->watch_.Await(self->yielded_ + 1, /*or_failure=*/false, *self->clock_,
                                      self->deadline_, &self->snapshot_);
      if (!met) self->TimedOut();
    }
    const size_t index = self->snapshot_.completed[self->yielded_];
    ++self->yielded_;
    co_return Completion<Key, T>{std::move(self->keys_[index]),
                                 OutcomeOf(std::move(self->futures_[index]))};
  }

 private:
  [[noreturn]] void TimedOut() {
    if (cancel_pending_on_timeout_) {
      for (const AnyFuture& future : any_) future.Cancel();  // A no-op on done ones.
    }
    ThrowAsCompletedTimeout("AsCompletedAsync", timeout_, yielded_, futures_.size());
  }

  std::vector<Key> keys_;
  std::vector<Future<T>> futures_;
  const std::vector<AnyFuture> any_;  // What the watch watches.
  Clock* clock_;                      // Null until known (see AsCompletedAsync).
  const absl::Duration timeout_;
  const bool cancel_pending_on_timeout_;
  absl::Time deadline_ = absl::InfiniteFuture();
  AsyncWatch watch_;  // Declared after `any_`: its destructor removes callbacks from them.
  Snapshot snapshot_;
  size_t yielded_ = 0;
};

}  // namespace sync_internal

// The completions of AsCompletedAsync, one per Next(), in completion order (futures already done
// at the AsCompletedAsync call first, in input order). Owns the futures. Move-only; a moved-from
// AsyncCompletions must not be used, and it must outlive the Next() being awaited.
//
// Not thread-safe; confine to one coroutine (the futures may complete on any thread).
template <typename Key, typename T>
class AsyncCompletions {
  using State = sync_internal::AsyncCompletionsState<Key, T>;

 public:
  // Internal: use AsCompletedAsync().
  explicit AsyncCompletions(std::unique_ptr<State> state) : state_(std::move(state)) {}
  AsyncCompletions(AsyncCompletions&&) noexcept = default;
  AsyncCompletions& operator=(AsyncCompletions&&) noexcept = default;

  // Returns a Coro that gives the next completion, suspending until there is one, or nullopt
  // after size() items. Throws TimeoutError once the timeout passed with nothing left to give
  // (then cancels the pending futures if `cancel_pending_on_timeout`); awaiting Next() again
  // still gives what completed meanwhile. Await each Next() before calling the next one.
  Coro<std::optional<Completion<Key, T>>> Next() { return State::Next(state_.get()); }

  // Returns the number of futures (items given in total).
  size_t size() const { return state_->size(); }
  // Returns the number of items not given yet.
  size_t remaining() const { return state_->remaining(); }

 private:
  std::unique_ptr<State> state_;
};

// Returns the completions of `futures` in completion order, each {index, outcome}. Throws
// InvalidOptionError for a negative timeout or an invalid future (naming its index). Values are
// moved out of futures that no other handle shares (copied otherwise).
template <typename T>
AsyncCompletions<size_t, T> AsCompletedAsync(std::vector<Future<T>> futures,
                                             const AsCompletedOptions& options) {
  constexpr char kOperation[] = "AsCompletedAsync";
  sync_internal::CheckTimeout(kOperation, options.timeout);
  std::vector<size_t> indices(futures.size());
  for (size_t i = 0; i < futures.size(); ++i) {
    if (!futures[i].valid()) {
      sync_internal::ThrowInvalidFuture(kOperation, sync_internal::NameIndex(i));
    }
    indices[i] = i;
  }
  return AsyncCompletions<size_t, T>(
      std::make_unique<sync_internal::AsyncCompletionsState<size_t, T>>(
          std::move(indices), std::move(futures), options));
}

// As above for a map of futures (std::map, absl::flat_hash_map, ...), each {key, outcome}.
template <sync_internal::FutureMap M>
AsyncCompletions<typename M::key_type, sync_internal::MapValueT<M>> AsCompletedAsync(
    M futures, const AsCompletedOptions& options) {
  using Key = typename M::key_type;
  using T = sync_internal::MapValueT<M>;
  sync_internal::CheckTimeout("AsCompletedAsync", options.timeout);
  sync_internal::CheckValid("AsCompletedAsync", futures);
  std::vector<Key> keys;
  keys.reserve(futures.size());
  for (const auto& entry : futures) keys.push_back(entry.first);
  return AsyncCompletions<Key, T>(std::make_unique<sync_internal::AsyncCompletionsState<Key, T>>(
      std::move(keys), sync_internal::TakeFutures(futures), options));
}

// The overloads without options pass AsCompletedOptions() (no default arguments, as in
// gather_async.h).
template <typename T>
AsyncCompletions<size_t, T> AsCompletedAsync(std::vector<Future<T>> futures) {
  return AsCompletedAsync(std::move(futures), AsCompletedOptions());
}
template <sync_internal::FutureMap M>
AsyncCompletions<typename M::key_type, sync_internal::MapValueT<M>> AsCompletedAsync(M futures) {
  return AsCompletedAsync(std::move(futures), AsCompletedOptions());
}

// Anything else (a vector of plain values: nothing to wait for) fails to compile with this one
// message.
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto AsCompletedAsync(
    Input&&, const AsCompletedOptions& = AsCompletedOptions()) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::AsCompletedAsync: expects futures (a std::vector<Future<T>> or a map of "
                "Key -> Future<T>); this argument holds no futures");
  return AsCompletedAsync(std::vector<Future<int>>(), AsCompletedOptions());
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_AS_COMPLETED_ASYNC_H_

// Template machinery for sync/as_completed.h. Internal: include as_completed.h instead.

#ifndef CONCURRY_SYNC_INTERNAL_AS_COMPLETED_IMPL_H_
#define CONCURRY_SYNC_INTERNAL_AS_COMPLETED_IMPL_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "sync/as_completed.h"
#include "sync/internal/containers.h"
#include "sync/internal/watch.h"
#include "sync/outcome.h"

namespace concurry {
namespace sync_internal {

// Throws TimeoutError "<operation>: timed out after <timeout>; yielded <yielded> of <total>"
// (operation: "AsCompleted" or "AsCompletedAsync").
[[noreturn]] void ThrowAsCompletedTimeout(const char* operation, absl::Duration timeout,
                                          size_t yielded, size_t total);

// The state of one AsCompleted iteration. Heap-allocated and never moved: the Watch refers to
// `any_`. Not thread-safe; confine to one thread.
template <typename Key, typename T>
class AsCompletedState {
 public:
  // `futures` are valid; `keys[i]` names `futures[i]`.
  AsCompletedState(std::vector<Key> keys, std::vector<Future<T>> futures, Clock& clock,
                   absl::Duration timeout, bool cancel_pending_on_timeout)
      : keys_(std::move(keys)),
        futures_(std::move(futures)),
        any_(futures_.begin(), futures_.end()),
        clock_(clock),
        timeout_(timeout),
        cancel_pending_on_timeout_(cancel_pending_on_timeout),
        deadline_(DeadlineAfter(clock, timeout)),
        watch_(any_, "AsCompleted") {}

  size_t size() const { return futures_.size(); }
  bool finished() const { return started_ && !current_.has_value(); }
  Completion<Key, T>& current() { return *current_; }

  // Yields the first item on the first call; does nothing on later calls.
  void Start() {
    if (started_) return;
    started_ = true;
    Advance();
  }

  // Replaces the current item by the next completion, blocking until there is one, or ends the
  // iteration after the last. Throws TimeoutError when the deadline passes first (cancelling
  // the futures still pending if asked to).
  void Advance() {
    current_.reset();
    if (yielded_ == futures_.size()) return;
    if (yielded_ == snapshot_.completed.size() &&
        !watch_.Await(yielded_ + 1, /*or_failure=*/false, clock_, deadline_, &snapshot_)) {
      if (cancel_pending_on_timeout_) {
        for (const AnyFuture& future : any_) future.Cancel();  // A no-op on done ones.
      }
      ThrowAsCompletedTimeout("AsCompleted", timeout_, yielded_, futures_.size());
    }
    const size_t index = snapshot_.completed[yielded_];
    current_.emplace(
        Completion<Key, T>{std::move(keys_[index]), OutcomeOf(std::move(futures_[index]))});
    ++yielded_;
  }

 private:
  std::vector<Key> keys_;
  std::vector<Future<T>> futures_;
  const std::vector<AnyFuture> any_;  // What the Watch watches.
  Clock& clock_;
  const absl::Duration timeout_;
  const bool cancel_pending_on_timeout_;
  const absl::Time deadline_;
  Watch watch_;  // Declared after `any_`: its destructor removes callbacks from them.
  Snapshot snapshot_;
  size_t yielded_ = 0;
  bool started_ = false;
  std::optional<Completion<Key, T>> current_;
};

}  // namespace sync_internal

template <typename T>
AsCompletedRange<size_t, T> AsCompleted(std::vector<Future<T>> futures,
                                        const AsCompletedOptions& options) {
  constexpr char kOperation[] = "AsCompleted";
  sync_internal::CheckTimeout(kOperation, options.timeout);
  std::vector<size_t> indices(futures.size());
  for (size_t i = 0; i < futures.size(); ++i) {
    if (!futures[i].valid()) {
      sync_internal::ThrowInvalidFuture(kOperation, sync_internal::NameIndex(i));
    }
    indices[i] = i;
  }
  return AsCompletedRange<size_t, T>(std::make_unique<sync_internal::AsCompletedState<size_t, T>>(
      std::move(indices), std::move(futures), sync_internal::ClockOrReal(options.clock),
      options.timeout, options.cancel_pending_on_timeout));
}

template <sync_internal::FutureMap M>
AsCompletedRange<typename M::key_type, sync_internal::MapValueT<M>> AsCompleted(
    M futures, const AsCompletedOptions& options) {
  using Key = typename M::key_type;
  using T = sync_internal::MapValueT<M>;
  sync_internal::CheckTimeout("AsCompleted", options.timeout);
  sync_internal::CheckValid("AsCompleted", futures);
  std::vector<Key> keys;
  keys.reserve(futures.size());
  for (const auto& entry : futures) keys.push_back(entry.first);
  return AsCompletedRange<Key, T>(std::make_unique<sync_internal::AsCompletedState<Key, T>>(
      std::move(keys), sync_internal::TakeFutures(futures),
      sync_internal::ClockOrReal(options.clock), options.timeout,
      options.cancel_pending_on_timeout));
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_AS_COMPLETED_IMPL_H_

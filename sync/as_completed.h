// AsCompleted: iterates over futures in the order they complete (concurry's gather(iter=True)),
// yielding each one's index (or key, for a map) with its Outcome as soon as it is done.
//
//   for (auto& [index, outcome] : concurry::AsCompleted(std::move(futures),
//                                                       {.timeout = absl::Seconds(10)})) {
//     if (outcome.ok()) Use(index, outcome.value());  // value() rethrows the original error
//   }
//
// Event-driven: completions are queued by callbacks and a blocked iterator uses no CPU. Leaving
// the loop early is fine: destroying the range removes every callback it registered.

#ifndef CONCURRY_SYNC_AS_COMPLETED_H_
#define CONCURRY_SYNC_AS_COMPLETED_H_

#include <cstddef>
#include <iterator>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "sync/internal/containers.h"
#include "sync/outcome.h"

namespace concurry {
namespace sync_internal {
template <typename Key, typename T>
class AsCompletedState;
}  // namespace sync_internal

// Options of AsCompleted. Plain struct: `{.timeout = absl::Seconds(10)}`.
struct AsCompletedOptions {
  // Bounds the whole iteration, from the AsCompleted call: once it passes, the iterator still
  // yields what has completed, then throws TimeoutError "... yielded k of n" instead of blocking.
  // Must be >= 0.
  absl::Duration timeout = absl::InfiniteDuration();
  // Times the timeout; null means Clock::Real(). Must outlive the range.
  Clock* clock = nullptr;
  // On a timeout, cancels the futures that have not completed yet before throwing TimeoutError
  // (iterating on yields them as cancelled). By default a timeout leaves them running, as
  // concurry does.
  bool cancel_pending_on_timeout = false;
};

// One completed future: its position in the input (index for a vector, key for a map) and its
// outcome. Iterators yield it by reference; move the outcome out freely.
template <typename Key, typename T>
struct Completion {
  Key key;
  Outcome<T> outcome;
};

// The single-pass range returned by AsCompleted: each future once, in completion order (futures
// already done at the AsCompleted call first, in input order). begin() and operator++ block until
// the next completion; iteration ends after size() items. Owns the futures; a moved-from range
// must not be used.
//
// Not thread-safe; confine to one thread (the futures may complete on any thread).
template <typename Key, typename T>
class AsCompletedRange {
  using State = sync_internal::AsCompletedState<Key, T>;

 public:
  class Iterator {
   public:
    using value_type = Completion<Key, T>;
    using difference_type = std::ptrdiff_t;

    Iterator() = default;
    value_type& operator*() const { return state_->current(); }
    value_type* operator->() const { return &state_->current(); }
    // Blocks until the next future completes; throws TimeoutError after the deadline.
    Iterator& operator++() {
      state_->Advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const Iterator& it, std::default_sentinel_t) {
      return it.state_->finished();
    }

   private:
    friend class AsCompletedRange;
    explicit Iterator(State* state) : state_(state) {}
    State* state_ = nullptr;
  };

  // Internal: use AsCompleted().
  explicit AsCompletedRange(std::unique_ptr<State> state) : state_(std::move(state)) {}

  // Returns an iterator at the current item; the first call blocks until the first completion.
  Iterator begin() {
    state_->Start();
    return Iterator(state_.get());
  }
  std::default_sentinel_t end() const { return {}; }
  // Returns the number of futures (items the iteration yields in total).
  size_t size() const { return state_->size(); }

 private:
  std::unique_ptr<State> state_;
};

// Returns a range over `futures` in completion order, yielding {index, outcome}. Throws
// InvalidOptionError for a negative timeout or an invalid future (naming its index). Values are
// moved out of futures that no other handle shares (copied otherwise).
template <typename T>
AsCompletedRange<size_t, T> AsCompleted(std::vector<Future<T>> futures,
                                        const AsCompletedOptions& options = {});

// As above for a map of futures (std::map, absl::flat_hash_map, ...), yielding {key, outcome}.
template <sync_internal::FutureMap M>
AsCompletedRange<typename M::key_type, sync_internal::MapValueT<M>> AsCompleted(
    M futures, const AsCompletedOptions& options = {});

// Anything else (a vector of plain values: nothing to wait for) fails to compile with this one
// message. (The deduced return type makes the assertion fire at the call.)
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto AsCompleted(
    Input&&, const AsCompletedOptions& = {}) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::AsCompleted: expects futures (a std::vector<Future<T>> or a map of Key "
                "-> Future<T>); this argument holds no futures");
  return AsCompleted(std::vector<Future<int>>());
}

}  // namespace concurry

#include "sync/internal/as_completed_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_SYNC_AS_COMPLETED_H_

// Wait: blocks until all, the first, or the first failing of many futures is done (concurry's
// wait()). Event-driven: a blocked Wait uses no CPU and wakes on the completion that satisfies it.
//
//   concurry::WaitResult r = concurry::Wait(futures, {.timeout = absl::Seconds(5),
//                                                     .return_when = ReturnWhen::kFirstCompleted});
//   for (size_t i : r.done) Use(futures[i].Result());
//   if (r.timed_out) LOG(WARNING) << r.not_done.size() << " still pending";
//   concurry::Wait({int_future, string_future});  // futures of different types
//
// Unlike concurry, a timeout does not throw: Wait returns what is done with `timed_out` set.

#ifndef CONCURRY_SYNC_WAIT_H_
#define CONCURRY_SYNC_WAIT_H_

#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "sync/internal/containers.h"
#include "sync/progress.h"

namespace concurry {

// When Wait returns (concurry's ReturnWhen). Parses from concurry's strings, case-insensitively:
// "all_completed" / "all", "first_completed" / "first", "first_exception" / "exception".
enum class ReturnWhen {
  // Every future is done.
  kAllCompleted,
  // At least one future is done.
  kFirstCompleted,
  // One future failed (error or cancellation), or every future is done without failing.
  kFirstException,
};

// Flag support (absl::ParseFlag / absl::UnparseFlag): parses the strings listed at ReturnWhen;
// unparses to "all_completed", "first_completed" or "first_exception".
bool AbslParseFlag(absl::string_view text, ReturnWhen* return_when, std::string* error);
std::string AbslUnparseFlag(ReturnWhen return_when);

// Options of Wait. Plain struct: `{.timeout = absl::Seconds(1), .return_when = ...}`.
struct WaitOptions {
  // How long to wait before returning with `timed_out` set. Must be >= 0 (0 checks and returns).
  absl::Duration timeout = absl::InfiniteDuration();
  ReturnWhen return_when = ReturnWhen::kAllCompleted;
  // Times the timeout and the progress report; null means Clock::Real(). Must outlive the call.
  Clock* clock = nullptr;
  // Progress bar and/or callback over the futures; the default description is "Waiting".
  ProgressOptions progress = {};
  // On a timeout, cancels the futures that are still pending (they are listed in `not_done`).
  // By default a timeout leaves them running, as concurry does.
  bool cancel_pending_on_timeout = false;
};

// What Wait found, by position in the input sequence.
struct WaitResult {
  std::vector<size_t> done;      // Indices of the futures that are done, ascending.
  std::vector<size_t> not_done;  // Indices of the others, ascending.
  bool timed_out = false;        // Whether the timeout passed before `return_when` held.
};

// What Wait found in a map of futures, by key (in the map's iteration order).
template <typename Key>
struct WaitResultKeyed {
  std::vector<Key> done;
  std::vector<Key> not_done;
  bool timed_out = false;
};

// Blocks until `options.return_when` holds for `futures` or the timeout passes, and returns which
// futures are done at that moment (then cancels the others if `cancel_pending_on_timeout`). Returns
// at once for an empty input. Throws InvalidOptionError, before waiting, for a negative timeout, an
// unknown return_when, or an invalid future (naming its index). A progress callback that throws
// propagates its exception. Thread-safe.
WaitResult Wait(std::span<const AnyFuture> futures, const WaitOptions& options = {});

// As above for a braced list of futures of any value types: `Wait({f1, f2, f3}, options)`.
inline WaitResult Wait(std::initializer_list<AnyFuture> futures, const WaitOptions& options = {}) {
  return Wait(std::span<const AnyFuture>(futures.begin(), futures.size()), options);
}

// As above for a vector of futures.
template <typename T>
WaitResult Wait(const std::vector<Future<T>>& futures, const WaitOptions& options = {}) {
  const std::vector<AnyFuture> any(futures.begin(), futures.end());
  return Wait(std::span<const AnyFuture>(any), options);
}

// As above for a map of futures (std::map, absl::flat_hash_map, ... of Key -> Future<T>): the
// result names keys, and an invalid future is reported with its key.
template <sync_internal::FutureMap M>
WaitResultKeyed<typename M::key_type> Wait(const M& futures, const WaitOptions& options = {}) {
  sync_internal::CheckValid("Wait", futures);
  std::vector<AnyFuture> any;
  std::vector<const typename M::key_type*> keys;
  any.reserve(futures.size());
  keys.reserve(futures.size());
  for (const auto& [key, future] : futures) {
    keys.push_back(&key);
    any.push_back(future);
  }
  WaitResult by_index = Wait(std::span<const AnyFuture>(any), options);
  WaitResultKeyed<typename M::key_type> result;
  result.timed_out = by_index.timed_out;
  for (size_t i : by_index.done) result.done.push_back(*keys[i]);
  for (size_t i : by_index.not_done) result.not_done.push_back(*keys[i]);
  return result;
}

namespace sync_internal {
// Throws InvalidOptionError naming `operation` for a negative timeout, an unknown return_when or
// an invalid future (naming its index): Wait's checks, shared with WaitAsync.
void CheckWaitInput(const char* operation, std::span<const AnyFuture> futures,
                    const WaitOptions& options);
}  // namespace sync_internal

// Anything else (a vector of plain values: nothing to wait for) fails to compile with this one
// message. (The deduced return type makes the assertion fire at the call.)
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto Wait(
    Input&&, const WaitOptions& = {}) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::Wait: expects futures (a std::vector<Future<T>>, a map of Key -> "
                "Future<T>, a span or braced list of AnyFuture); this argument holds no futures");
  return WaitResult();
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_WAIT_H_

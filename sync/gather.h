// Gather: waits for every future and returns their values in input order (concurry's gather());
// GatherSettled returns each outcome instead of throwing (concurry's return_exceptions=True).
//
//   std::vector<int> values = concurry::Gather(std::move(futures));      // rethrows the first
//   error auto [n, name] = concurry::Gather(int_future, string_future);        // std::tuple<int,
//   string> std::map<std::string, int> by_key = concurry::Gather(std::move(future_map)); for
//   (concurry::Outcome<int>& o : concurry::GatherSettled(futures)) if (!o.ok()) Log(o.status());
//
// Inputs: a vector, a map (Key -> Future<T>: std::map, absl::flat_hash_map...; the result is the
// same map type with the same keys), a tuple, or futures as arguments (heterogeneous types).

#ifndef CONCURRY_SYNC_GATHER_H_
#define CONCURRY_SYNC_GATHER_H_

#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "sync/internal/containers.h"
#include "sync/outcome.h"
#include "sync/progress.h"

namespace concurry {

// Options of Gather and GatherSettled. Plain struct: `{.timeout = absl::Seconds(1)}`.
struct GatherOptions {
  // How long to wait for all futures; then TimeoutError "... 3 of 5 futures completed". Must be
  // >= 0.
  absl::Duration timeout = absl::InfiniteDuration();
  // Times the timeout and the progress report; null means Clock::Real(). Must outlive the call.
  Clock* clock = nullptr;
  // Progress bar and/or callback over the futures; the default description is "Gathering".
  ProgressOptions progress = {};
  // On a timeout, cancels the futures that are still pending before throwing TimeoutError. By
  // default a timeout leaves them running (issue 19: nothing is cancelled unless asked). That is
  // what concurry's gather does, but NOT its async_gather, which cancels the pending tasks on a
  // timeout: set this to true to get that behaviour from GatherAsync / GatherSettledAsync.
  bool cancel_pending_on_timeout = false;
};

namespace sync_internal {
// A slot of a gathered tuple: the value, or std::monostate for a Future<void>.
template <typename T>
using GatherValueT = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
// `Container`, or void when T is void.
template <typename T, typename Container>
using VoidOr = std::conditional_t<std::is_void_v<T>, void, Container>;
}  // namespace sync_internal

// Gather (every overload): waits until every future is done, then returns the values in input
// order, moved out of futures that no other handle shares (copied otherwise). When futures failed,
// rethrows the error of the first failed one in input order (iteration order for maps) with its
// original type, CancelledError for a cancelled one. Throws TimeoutError when `options.timeout`
// passes first (after cancelling the pending futures if `options.cancel_pending_on_timeout`), and
// InvalidOptionError, before waiting, for a negative timeout or an invalid future (naming its index
// or key). Empty input gives an empty result at once. Thread-safe.
//
// Futures of void give void (vector and map inputs: Gather only waits and rethrows) and
// std::monostate in tuples.
template <typename T>
sync_internal::VoidOr<T, std::vector<T>> Gather(std::vector<Future<T>> futures,
                                                const GatherOptions& options = {});
template <sync_internal::FutureMap M>
sync_internal::VoidOr<sync_internal::MapValueT<M>,
                      sync_internal::RebindMapped<M, sync_internal::MapValueT<M>>>
Gather(M futures, const GatherOptions& options = {});
template <typename... Ts>
std::tuple<sync_internal::GatherValueT<Ts>...> Gather(std::tuple<Future<Ts>...> futures,
                                                      const GatherOptions& options = {});
template <typename... Ts>
std::tuple<sync_internal::GatherValueT<Ts>...> Gather(Future<Ts>... futures);

// GatherSettled (every overload): as Gather, but each future's value or error becomes an
// Outcome<T> in its slot, so nothing thrown by the futures escapes; `outcome.value()` rethrows the
// original exception later. Still throws TimeoutError and InvalidOptionError as Gather does.
template <typename T>
std::vector<Outcome<T>> GatherSettled(std::vector<Future<T>> futures,
                                      const GatherOptions& options = {});
template <sync_internal::FutureMap M>
sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>> GatherSettled(
    M futures, const GatherOptions& options = {});
template <typename... Ts>
std::tuple<Outcome<Ts>...> GatherSettled(std::tuple<Future<Ts>...> futures,
                                         const GatherOptions& options = {});
template <typename... Ts>
std::tuple<Outcome<Ts>...> GatherSettled(Future<Ts>... futures);

// Gather and GatherSettled of anything else (a vector of plain values: nothing to wait for) fail
// to compile with this one message. (The deduced return type makes the assertion fire at the
// call, before any error in code using the result.)
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto Gather(
    Input&&, const GatherOptions& = {}) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::Gather: expects futures (a std::vector<Future<T>>, a map of Key -> "
                "Future<T>, a std::tuple<Future<Ts>...>, or Future<Ts>... as arguments); this "
                "argument holds no futures");
  return std::vector<int>();
}
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto GatherSettled(
    Input&&, const GatherOptions& = {}) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::GatherSettled: expects futures (a std::vector<Future<T>>, a map of Key "
                "-> Future<T>, a std::tuple<Future<Ts>...>, or Future<Ts>... as arguments); this "
                "argument holds no futures");
  return std::vector<Outcome<int>>();
}

}  // namespace concurry

#include "sync/internal/gather_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_SYNC_GATHER_H_

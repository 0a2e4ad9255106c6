// GatherAsync and GatherSettledAsync: Gather for coroutines (concurry's async_gather). `co_await`
// them inside a Coro: the coroutine suspends, holding no thread, until every future is done, and
// resumes on its own scheduler with the values in input order.
//
//   concurry::Coro<int> Sum(std::vector<concurry::Future<int>> parts, concurry::Future<int> a,
//                           concurry::Future<std::string> b) {
//     std::vector<int> values = co_await concurry::GatherAsync(std::move(parts));  // rethrows
//     auto [n, name] = co_await concurry::GatherAsync(a, b);  // a tuple of mixed types
//     const concurry::GatherOptions soon{.timeout = absl::Seconds(1)};
//     std::tuple<concurry::Outcome<int>> settled =
//         co_await concurry::GatherSettledAsync(std::make_tuple(a), soon);  // errors as values
//     co_return std::accumulate(values.begin(), values.end(), n);
//   }
//
// Same inputs, options, results and errors as Gather / GatherSettled (sync/gather.h): a vector, a
// map (the result is the same map type with the same keys), a tuple, or futures as arguments.
// Differences: the timeout counts from the coroutine's first step (when the Coro is awaited), and
// with no `options.clock` it runs on the clock of the awaiting coroutine's scheduler. A timeout
// (TimeoutError) leaves the pending futures running unless `options.cancel_pending_on_timeout` is
// set. This default differs from concurry's async_gather, which cancels them on a timeout (issue
// 19 asks for no cancellation unless asked): pass `cancel_pending_on_timeout = true` for
// concurry's behaviour. Cancelling the awaiting coroutine ends the wait with CancelledError and
// leaves the futures alone.
//
// With GCC 12, name the options and braced inputs before the co_await (see wait_async.h): braced
// temporaries inside a co_await expression, typed ones such as `GatherOptions{.timeout = t}`
// included, are miscompiled (silent heap corruption without ASan) or rejected; `GatherOptions()`,
// a named variable or a function's return value are fine.

#ifndef CONCURRY_SYNC_GATHER_ASYNC_H_
#define CONCURRY_SYNC_GATHER_ASYNC_H_

#include <concepts>
#include <cstddef>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/future.h"
#include "sync/gather.h"
#include "sync/internal/async_watch.h"
#include "sync/internal/containers.h"
#include "sync/outcome.h"

namespace concurry {
namespace sync_internal {

// Throws InvalidOptionError for a negative timeout or an invalid future (naming its index).
template <typename F>  // Future<T> or AnyFuture.
void CheckGatherInput(const char* operation, std::span<const F> futures,
                      const GatherOptions& options) {
  CheckTimeout(operation, options.timeout);
  for (size_t i = 0; i < futures.size(); ++i) {
    if (!futures[i].valid()) ThrowInvalidFuture(operation, NameIndex(i));
  }
}

// The coroutines behind the overloads below; the input was checked. `Out` is the result type
// (void for futures of void given to GatherAsync as a vector or map: it only waits and rethrows).
template <typename Out, typename T, typename Take>
Coro<Out> GatherVectorAsync(const char* operation, std::vector<Future<T>> futures,
                            GatherOptions options, Take take) {
  Coro<void> wait = AwaitAllAsync(operation, std::vector<AnyFuture>(futures.begin(), futures.end()),
                                  std::move(options));
  co_await std::move(wait);
  if constexpr (std::is_void_v<Out>) {
    ThrowFirstError(futures);
  } else {
    co_return TakeAll(futures, take);
  }
}

template <typename Out, FutureMap M, typename Take>
Coro<Out> GatherMapAsync(const char* operation, M futures, GatherOptions options, Take take) {
  std::vector<typename M::mapped_type> taken = TakeFutures(futures);
  Coro<void> wait = AwaitAllAsync(operation, std::vector<AnyFuture>(taken.begin(), taken.end()),
                                  std::move(options));
  co_await std::move(wait);
  if constexpr (std::is_void_v<Out>) {
    ThrowFirstError(taken);
  } else {
    co_return TakeAllByKey<Out>(futures, taken, take);
  }
}

template <typename Out, typename... Ts, typename Take>
Coro<Out> GatherTupleAsync(const char* operation, std::tuple<Future<Ts>...> futures,
                           GatherOptions options, Take take) {
  std::vector<AnyFuture> any =
      std::apply([](const auto&... f) { return std::vector<AnyFuture>{AnyFuture(f)...}; }, futures);
  Coro<void> wait = AwaitAllAsync(operation, std::move(any), std::move(options));
  co_await std::move(wait);
  co_return TakeAllInTuple(futures, take);
}

// Checks a tuple's futures (naming the index of an invalid one) and the options.
template <typename... Ts>
void CheckGatherTuple(const char* operation, const std::tuple<Future<Ts>...>& futures,
                      const GatherOptions& options) {
  const std::vector<AnyFuture> any =
      std::apply([](const auto&... f) { return std::vector<AnyFuture>{AnyFuture(f)...}; }, futures);
  CheckGatherInput(operation, std::span<const AnyFuture>(any), options);
}

}  // namespace sync_internal

// GatherAsync (every overload): returns a Coro that waits until every future is done and gives
// their values in input order (moved out of futures no other handle shares), or rethrows the
// error of the first failed one in input order with its original type (CancelledError for a
// cancelled one). Throws TimeoutError when `options.timeout` passes first, and
// InvalidOptionError at the call, before anything waits, for a negative timeout or an invalid
// future (naming its index or key). Empty input completes at once. Futures of void give void
// (vector and map) and std::monostate in tuples.
template <typename T>
Coro<sync_internal::VoidOr<T, std::vector<T>>> GatherAsync(std::vector<Future<T>> futures,
                                                           GatherOptions options) {
  sync_internal::CheckGatherInput("GatherAsync", std::span<const Future<T>>(futures), options);
  return sync_internal::GatherVectorAsync<sync_internal::VoidOr<T, std::vector<T>>>(
      "GatherAsync", std::move(futures), std::move(options), sync_internal::TakeValue());
}

template <sync_internal::FutureMap M>
Coro<sync_internal::VoidOr<sync_internal::MapValueT<M>,
                           sync_internal::RebindMapped<M, sync_internal::MapValueT<M>>>>
GatherAsync(M futures, GatherOptions options) {
  using T = sync_internal::MapValueT<M>;
  sync_internal::CheckTimeout("GatherAsync", options.timeout);
  sync_internal::CheckValid("GatherAsync", futures);
  return sync_internal::GatherMapAsync<sync_internal::VoidOr<T, sync_internal::RebindMapped<M, T>>>(
      "GatherAsync", std::move(futures), std::move(options), sync_internal::TakeValue());
}

template <typename... Ts>
Coro<std::tuple<sync_internal::GatherValueT<Ts>...>> GatherAsync(std::tuple<Future<Ts>...> futures,
                                                                 GatherOptions options) {
  sync_internal::CheckGatherTuple("GatherAsync", futures, options);
  return sync_internal::GatherTupleAsync<std::tuple<sync_internal::GatherValueT<Ts>...>>(
      "GatherAsync", std::move(futures), std::move(options), sync_internal::TakeValue());
}

// The overloads without options pass GatherOptions() (no default arguments: GCC 12 miscompiles a
// default options temporary inside a co_await expression, see wait_async.h).
template <typename T>
Coro<sync_internal::VoidOr<T, std::vector<T>>> GatherAsync(std::vector<Future<T>> futures) {
  return GatherAsync(std::move(futures), GatherOptions());
}
template <sync_internal::FutureMap M>
Coro<sync_internal::VoidOr<sync_internal::MapValueT<M>,
                           sync_internal::RebindMapped<M, sync_internal::MapValueT<M>>>>
GatherAsync(M futures) {
  return GatherAsync(std::move(futures), GatherOptions());
}
template <typename... Ts>
Coro<std::tuple<sync_internal::GatherValueT<Ts>...>> GatherAsync(
    std::tuple<Future<Ts>...> futures) {
  return GatherAsync(std::move(futures), GatherOptions());
}
template <typename... Ts>
Coro<std::tuple<sync_internal::GatherValueT<Ts>...>> GatherAsync(Future<Ts>... futures) {
  return GatherAsync(std::tuple<Future<Ts>...>(std::move(futures)...), GatherOptions());
}

// GatherSettledAsync (every overload): as GatherAsync, but each future's value or error becomes
// an Outcome<T> in its slot (errors as values), so nothing the futures hold is thrown. Still
// throws TimeoutError and InvalidOptionError as GatherAsync does.
template <typename T>
Coro<std::vector<Outcome<T>>> GatherSettledAsync(std::vector<Future<T>> futures,
                                                 GatherOptions options) {
  sync_internal::CheckGatherInput("GatherSettledAsync", std::span<const Future<T>>(futures),
                                  options);
  return sync_internal::GatherVectorAsync<std::vector<Outcome<T>>>(
      "GatherSettledAsync", std::move(futures), std::move(options), sync_internal::TakeOutcome());
}

template <sync_internal::FutureMap M>
Coro<sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>>> GatherSettledAsync(
    M futures, GatherOptions options) {
  sync_internal::CheckTimeout("GatherSettledAsync", options.timeout);
  sync_internal::CheckValid("GatherSettledAsync", futures);
  return sync_internal::GatherMapAsync<
      sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>>>(
      "GatherSettledAsync", std::move(futures), std::move(options), sync_internal::TakeOutcome());
}

template <typename... Ts>
Coro<std::tuple<Outcome<Ts>...>> GatherSettledAsync(std::tuple<Future<Ts>...> futures,
                                                    GatherOptions options) {
  sync_internal::CheckGatherTuple("GatherSettledAsync", futures, options);
  return sync_internal::GatherTupleAsync<std::tuple<Outcome<Ts>...>>(
      "GatherSettledAsync", std::move(futures), std::move(options), sync_internal::TakeOutcome());
}

template <typename T>
Coro<std::vector<Outcome<T>>> GatherSettledAsync(std::vector<Future<T>> futures) {
  return GatherSettledAsync(std::move(futures), GatherOptions());
}
template <sync_internal::FutureMap M>
Coro<sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>>> GatherSettledAsync(
    M futures) {
  return GatherSettledAsync(std::move(futures), GatherOptions());
}
template <typename... Ts>
Coro<std::tuple<Outcome<Ts>...>> GatherSettledAsync(std::tuple<Future<Ts>...> futures) {
  return GatherSettledAsync(std::move(futures), GatherOptions());
}
template <typename... Ts>
Coro<std::tuple<Outcome<Ts>...>> GatherSettledAsync(Future<Ts>... futures) {
  return GatherSettledAsync(std::tuple<Future<Ts>...>(std::move(futures)...), GatherOptions());
}

// GatherAsync and GatherSettledAsync with only a timeout, as an argument: `co_await
// GatherAsync(futures, absl::Seconds(5))`. Safe to write inside a co_await expression with GCC 12
// (no braced temporary). The timeout's type is deduced (it must be absl::Duration exactly) so
// that a braced second argument, `GatherAsync(futures, {})` or `{.timeout = t}`, always means
// GatherOptions and is never ambiguous with these.
namespace sync_internal {
inline GatherOptions WithTimeout(absl::Duration timeout) {
  GatherOptions options;
  options.timeout = timeout;
  return options;
}
}  // namespace sync_internal
template <typename T, std::same_as<absl::Duration> D>
Coro<sync_internal::VoidOr<T, std::vector<T>>> GatherAsync(std::vector<Future<T>> futures,
                                                           D timeout) {
  return GatherAsync(std::move(futures), sync_internal::WithTimeout(timeout));
}
template <sync_internal::FutureMap M, std::same_as<absl::Duration> D>
Coro<sync_internal::VoidOr<sync_internal::MapValueT<M>,
                           sync_internal::RebindMapped<M, sync_internal::MapValueT<M>>>>
GatherAsync(M futures, D timeout) {
  return GatherAsync(std::move(futures), sync_internal::WithTimeout(timeout));
}
template <typename... Ts, std::same_as<absl::Duration> D>
Coro<std::tuple<sync_internal::GatherValueT<Ts>...>> GatherAsync(std::tuple<Future<Ts>...> futures,
                                                                 D timeout) {
  return GatherAsync(std::move(futures), sync_internal::WithTimeout(timeout));
}
template <typename T, std::same_as<absl::Duration> D>
Coro<std::vector<Outcome<T>>> GatherSettledAsync(std::vector<Future<T>> futures, D timeout) {
  return GatherSettledAsync(std::move(futures), sync_internal::WithTimeout(timeout));
}
template <sync_internal::FutureMap M, std::same_as<absl::Duration> D>
Coro<sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>>> GatherSettledAsync(
    M futures, D timeout) {
  return GatherSettledAsync(std::move(futures), sync_internal::WithTimeout(timeout));
}
template <typename... Ts, std::same_as<absl::Duration> D>
Coro<std::tuple<Outcome<Ts>...>> GatherSettledAsync(std::tuple<Future<Ts>...> futures, D timeout) {
  return GatherSettledAsync(std::move(futures), sync_internal::WithTimeout(timeout));
}

// GatherAsync and GatherSettledAsync of anything else (a vector of plain values: nothing to wait
// for) fail to compile with this one message.
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto GatherAsync(
    Input&&, const GatherOptions& = GatherOptions()) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::GatherAsync: expects futures (a std::vector<Future<T>>, a map of Key -> "
                "Future<T>, a std::tuple<Future<Ts>...>, or Future<Ts>... as arguments); this "
                "argument holds no futures");
  return Coro<std::vector<int>>();
}
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto GatherSettledAsync(
    Input&&, const GatherOptions& = GatherOptions()) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::GatherSettledAsync: expects futures (a std::vector<Future<T>>, a map of "
                "Key -> Future<T>, a std::tuple<Future<Ts>...>, or Future<Ts>... as arguments); "
                "this argument holds no futures");
  return Coro<std::vector<Outcome<int>>>();
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_GATHER_ASYNC_H_

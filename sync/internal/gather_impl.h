// Template machinery for sync/gather.h. Internal: include gather.h instead.

#ifndef CONCURRY_SYNC_INTERNAL_GATHER_IMPL_H_
#define CONCURRY_SYNC_INTERNAL_GATHER_IMPL_H_

#include <array>
#include <cstddef>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "futures/future.h"
#include "sync/gather.h"
#include "sync/internal/containers.h"
#include "sync/internal/watch.h"
#include "sync/outcome.h"

namespace concurry {
namespace sync_internal {

// Blocks until every future in `futures` is done; throws TimeoutError "<operation>: timed out
// after <timeout>; <d> of <n> futures completed". The futures are valid and the timeout checked.
void AwaitAllSlow(const char* operation, std::span<const AnyFuture> futures,
                  const GatherOptions& options);

// Checks the options and that every future is valid (naming its index), then blocks until all are
// done. Without a progress report, ready futures cost one check each and no allocation.
template <typename F>  // Future<T> or AnyFuture.
void AwaitAll(const char* operation, std::span<const F> futures, const GatherOptions& options) {
  CheckTimeout(operation, options.timeout);
  bool all_done = true;
  for (size_t i = 0; i < futures.size(); ++i) {
    if (!futures[i].valid()) ThrowInvalidFuture(operation, NameIndex(i));
    all_done = all_done && futures[i].Done();
  }
  if (all_done && !options.progress.enabled && !options.progress.callback) return;
  if constexpr (std::is_same_v<F, AnyFuture>) {
    AwaitAllSlow(operation, futures, options);
  } else {
    const std::vector<AnyFuture> any(futures.begin(), futures.end());
    AwaitAllSlow(operation, any, options);
  }
}

// As above for a map: an invalid future is named by its key. Returns the futures moved out of
// `futures`, in iteration order.
template <FutureMap M>
std::vector<typename M::mapped_type> AwaitAllInMap(const char* operation, M& futures,
                                                   const GatherOptions& options) {
  CheckValid(operation, futures);
  std::vector<typename M::mapped_type> taken = TakeFutures(futures);
  AwaitAll(operation, std::span<const typename M::mapped_type>(taken), options);
  return taken;
}

// As above for a tuple of futures.
template <typename... Ts>
void AwaitAllInTuple(const char* operation, const std::tuple<Future<Ts>...>& futures,
                     const GatherOptions& options) {
  const auto any = std::apply(
      [](const auto&... f) { return std::array<AnyFuture, sizeof...(Ts)>{AnyFuture(f)...}; },
      futures);
  AwaitAll(operation, std::span<const AnyFuture>(any), options);
}

// Returns the value of a done future (rethrowing its error), moved out when it is the only handle.
struct TakeValue {
  template <typename T>
  GatherValueT<T> operator()(Future<T>& future) const {
    if constexpr (std::is_void_v<T>) {
      std::move(future).Result();
      return {};
    } else {
      return std::move(future).Result();
    }
  }
};

// Returns the outcome of a done future.
struct TakeOutcome {
  template <typename T>
  Outcome<T> operator()(Future<T>& future) const {
    return OutcomeOf(std::move(future));
  }
};

// Applies `take` to each future in input order (so the first failure in input order throws).
template <typename T, typename Take>
auto TakeAll(std::vector<Future<T>>& futures, Take take) {
  std::vector<decltype(take(futures.front()))> taken;
  taken.reserve(futures.size());
  for (Future<T>& future : futures) taken.push_back(take(future));
  return taken;
}

// Rethrows the error of the first failed future, in input order.
inline void ThrowFirstError(std::span<Future<void>> futures) {
  for (Future<void>& future : futures) std::move(future).Result();
}

// Returns a map with the keys of `keys` (iteration order) and `take` applied to `futures`.
template <typename Out, FutureMap M, typename Take>
Out TakeAllByKey(const M& keys, std::vector<typename M::mapped_type>& futures, Take take) {
  Out out;
  size_t i = 0;
  for (const auto& entry : keys) out.emplace(entry.first, take(futures[i++]));
  return out;
}

// Returns `take` applied to each future of the tuple, in order.
template <typename... Ts, typename Take>
auto TakeAllInTuple(std::tuple<Future<Ts>...>& futures, Take take) {
  // Braced initialization evaluates left to right: the first failure in input order throws.
  return std::apply([&](auto&... f) { return std::tuple<decltype(take(f))...>{take(f)...}; },
                    futures);
}

}  // namespace sync_internal

template <typename T>
sync_internal::VoidOr<T, std::vector<T>> Gather(std::vector<Future<T>> futures,
                                                const GatherOptions& options) {
  sync_internal::AwaitAll("Gather", std::span<const Future<T>>(futures), options);
  if constexpr (std::is_void_v<T>) {
    sync_internal::ThrowFirstError(futures);
  } else {
    return sync_internal::TakeAll(futures, sync_internal::TakeValue());
  }
}

template <sync_internal::FutureMap M>
sync_internal::VoidOr<sync_internal::MapValueT<M>,
                      sync_internal::RebindMapped<M, sync_internal::MapValueT<M>>>
Gather(M futures, const GatherOptions& options) {
  using T = sync_internal::MapValueT<M>;
  auto taken = sync_internal::AwaitAllInMap("Gather", futures, options);
  if constexpr (std::is_void_v<T>) {
    sync_internal::ThrowFirstError(taken);
  } else {
    return sync_internal::TakeAllByKey<sync_internal::RebindMapped<M, T>>(
        futures, taken, sync_internal::TakeValue());
  }
}

template <typename... Ts>
std::tuple<sync_internal::GatherValueT<Ts>...> Gather(std::tuple<Future<Ts>...> futures,
                                                      const GatherOptions& options) {
  sync_internal::AwaitAllInTuple("Gather", futures, options);
  return sync_internal::TakeAllInTuple(futures, sync_internal::TakeValue());
}

template <typename... Ts>
std::tuple<sync_internal::GatherValueT<Ts>...> Gather(Future<Ts>... futures) {
  return Gather(std::tuple<Future<Ts>...>(std::move(futures)...));
}

template <typename T>
std::vector<Outcome<T>> GatherSettled(std::vector<Future<T>> futures,
                                      const GatherOptions& options) {
  sync_internal::AwaitAll("GatherSettled", std::span<const Future<T>>(futures), options);
  return sync_internal::TakeAll(futures, sync_internal::TakeOutcome());
}

template <sync_internal::FutureMap M>
sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>> GatherSettled(
    M futures, const GatherOptions& options) {
  auto taken = sync_internal::AwaitAllInMap("GatherSettled", futures, options);
  return sync_internal::TakeAllByKey<
      sync_internal::RebindMapped<M, Outcome<sync_internal::MapValueT<M>>>>(
      futures, taken, sync_internal::TakeOutcome());
}

template <typename... Ts>
std::tuple<Outcome<Ts>...> GatherSettled(std::tuple<Future<Ts>...> futures,
                                         const GatherOptions& options) {
  sync_internal::AwaitAllInTuple("GatherSettled", futures, options);
  return sync_internal::TakeAllInTuple(futures, sync_internal::TakeOutcome());
}

template <typename... Ts>
std::tuple<Outcome<Ts>...> GatherSettled(Future<Ts>... futures) {
  return GatherSettled(std::tuple<Future<Ts>...>(std::move(futures)...));
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_GATHER_IMPL_H_

// Future unwrapping for worker calls: which argument types contain futures, the type each
// argument becomes once its futures are replaced by their values, how to collect those futures
// and how to build the unwrapped value. Supported containers: std::vector, std::map,
// absl::flat_hash_map (values only; keys are untouched), std::tuple, std::pair, std::optional —
// nested to any depth.

#ifndef CONCURRY_WORKERS_INTERNAL_UNWRAP_H_
#define CONCURRY_WORKERS_INTERNAL_UNWRAP_H_

#include <map>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "futures/future.h"

namespace concurry::workers_internal {

// Unwrapped<A>::type is A with every Future<U> inside replaced by U; kHas says whether there was
// one.
template <typename A>
struct Unwrapped {
  using type = A;
  static constexpr bool kHas = false;
};
template <typename U>
struct Unwrapped<Future<U>> {
  static_assert(!std::is_void_v<U>,
                "a Future<void> argument has no value to unwrap; pass it with "
                "unwrap_futures = false, or wait for it before the call");
  using type = U;
  static constexpr bool kHas = true;
};
template <typename E, typename Alloc>
struct Unwrapped<std::vector<E, Alloc>> {
  using type = std::vector<typename Unwrapped<E>::type>;
  static constexpr bool kHas = Unwrapped<E>::kHas;
};
template <typename K, typename V, typename Cmp, typename Alloc>
struct Unwrapped<std::map<K, V, Cmp, Alloc>> {
  using type = std::map<K, typename Unwrapped<V>::type, Cmp>;
  static constexpr bool kHas = Unwrapped<V>::kHas;
};
template <typename K, typename V, typename Hash, typename Eq, typename Alloc>
struct Unwrapped<absl::flat_hash_map<K, V, Hash, Eq, Alloc>> {
  using type = absl::flat_hash_map<K, typename Unwrapped<V>::type, Hash, Eq>;
  static constexpr bool kHas = Unwrapped<V>::kHas;
};
template <typename... E>
struct Unwrapped<std::tuple<E...>> {
  using type = std::tuple<typename Unwrapped<E>::type...>;
  static constexpr bool kHas = (Unwrapped<E>::kHas || ...);
};
template <typename A, typename B>
struct Unwrapped<std::pair<A, B>> {
  using type = std::pair<typename Unwrapped<A>::type, typename Unwrapped<B>::type>;
  static constexpr bool kHas = Unwrapped<A>::kHas || Unwrapped<B>::kHas;
};
template <typename E>
struct Unwrapped<std::optional<E>> {
  using type = std::optional<typename Unwrapped<E>::type>;
  static constexpr bool kHas = Unwrapped<E>::kHas;
};

template <typename A>
using UnwrappedT = typename Unwrapped<A>::type;
template <typename... A>
inline constexpr bool kHasFutures = (Unwrapped<A>::kHas || ...);

// Appends every future inside `value` to `out`, in a fixed traversal order (the order in which
// an input's failure is reported: the first failed future found wins).
template <typename A>
void CollectFutures(const A& value, std::vector<AnyFuture>& out) {
  if constexpr (!Unwrapped<A>::kHas) {
    return;
  } else if constexpr (futures_internal::kIsFuture<A>) {
    if (!value.valid()) {
      throw InvalidOptionError(
          "Worker call: an argument is an invalid (default-constructed) Future");
    }
    out.push_back(value);
  } else if constexpr (requires { std::tuple_size<A>::value; }) {
    std::apply([&](const auto&... e) { (CollectFutures(e, out), ...); }, value);
  } else if constexpr (requires { value.has_value(); }) {
    if (value.has_value()) CollectFutures(*value, out);
  } else if constexpr (requires { typename A::mapped_type; }) {
    for (const auto& [key, v] : value) CollectFutures(v, out);
  } else {
    for (const auto& e : value) CollectFutures(e, out);
  }
}

// Builds the unwrapped value; every future inside must be done with a value.
template <typename A>
UnwrappedT<A> TakeUnwrapped(A&& value) {
  if constexpr (!Unwrapped<A>::kHas) {
    return std::move(value);
  } else if constexpr (futures_internal::kIsFuture<A>) {
    return std::move(value).Result();
  } else if constexpr (requires { std::tuple_size<A>::value; }) {
    return std::apply([](auto&&... e) { return UnwrappedT<A>(TakeUnwrapped(std::move(e))...); },
                      value);
  } else if constexpr (requires { value.has_value(); }) {
    if (!value.has_value()) return std::nullopt;
    return UnwrappedT<A>(TakeUnwrapped(std::move(*value)));
  } else if constexpr (requires { typename A::mapped_type; }) {
    UnwrappedT<A> out;
    for (auto& [key, v] : value) out.emplace(key, TakeUnwrapped(std::move(v)));
    return out;
  } else {
    UnwrappedT<A> out;
    out.reserve(value.size());
    for (auto& e : value) out.push_back(TakeUnwrapped(std::move(e)));
    return out;
  }
}

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_INTERNAL_UNWRAP_H_

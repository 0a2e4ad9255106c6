// Container helpers shared by Wait, Gather and AsCompleted: which inputs are maps of futures, how
// to name a key in an error message, and the result map type. Internal: use the sync/ headers.

#ifndef CONCURRY_SYNC_INTERNAL_CONTAINERS_H_
#define CONCURRY_SYNC_INTERNAL_CONTAINERS_H_

#include <cstddef>
#include <memory>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "futures/future.h"
#include "sync/internal/watch.h"

namespace concurry {
namespace sync_internal {

template <typename F>
inline constexpr bool kIsFuture = false;
template <typename T>
inline constexpr bool kIsFuture<Future<T>> = true;

// An associative container of Key -> Future<T> (std::map, std::unordered_map,
// absl::flat_hash_map, absl::btree_map...).
template <typename M>
concept FutureMap = requires {
  typename M::key_type;
  typename M::mapped_type;
}
&&kIsFuture<typename M::mapped_type>;

template <FutureMap M>
using MapValueT = typename M::mapped_type::value_type;

template <typename X>
inline constexpr bool kIsFutureVector = false;
template <typename T>
inline constexpr bool kIsFutureVector<std::vector<Future<T>>> = true;
template <typename X>
inline constexpr bool kIsFutureTuple = false;
template <typename... Ts>
inline constexpr bool kIsFutureTuple<std::tuple<Future<Ts>...>> = true;

// The input forms of Wait, Gather, GatherSettled and AsCompleted (each takes some of them): a
// future, a vector, map or tuple of futures, or a sequence of AnyFuture. Anything else given to
// them (a vector of plain values) picks their diagnostic overload, which fails to compile with one
// message instead of a list of candidates.
template <typename X>
concept FutureInput = kIsFuture<X> || kIsFutureVector<X> || kIsFutureTuple<X> || FutureMap<X> ||
    std::is_convertible_v<X, std::span<const AnyFuture>>;

// False, but only once `X` is known: for a static_assert in a diagnostic overload.
template <typename X>
inline constexpr bool kNotFutures = false;

// Returns how an error message names the future under `key`, the `position`-th in iteration
// order: key "a" (strings), key 7 (numbers), key <operator<< output>, else key #position.
template <typename Key>
std::string NameKey(const Key& key, size_t position) {
  if constexpr (std::is_convertible_v<const Key&, absl::string_view>) {
    return absl::StrCat("key \"", absl::string_view(key), "\"");
  } else if constexpr (std::is_constructible_v<absl::AlphaNum, const Key&>) {
    return absl::StrCat("key ", key);
  } else if constexpr (requires(std::ostream & os) { os << key; }) {
    std::ostringstream os;
    os << key;
    return absl::StrCat("key ", os.str());
  } else {
    return absl::StrCat("key #", position);
  }
}

// Throws InvalidOptionError naming the key of the first invalid future in `futures` (a map).
template <FutureMap M>
void CheckValid(const char* operation, const M& futures) {
  size_t position = 0;
  for (const auto& [key, future] : futures) {
    if (!future.valid()) ThrowInvalidFuture(operation, NameKey(key, position));
    ++position;
  }
}

// Returns the futures of the map `futures` in iteration order, moved out of it (keys stay).
template <FutureMap M>
std::vector<typename M::mapped_type> TakeFutures(M& futures) {
  std::vector<typename M::mapped_type> taken;
  taken.reserve(futures.size());
  for (auto& entry : futures) taken.push_back(std::move(entry.second));
  return taken;
}

// Rebinds the mapped type of a map type: RebindMapped<std::map<K, Future<T>>, U> is
// std::map<K, U>; comparators and hashers are kept, allocators are rebound.
template <typename Arg, typename From, typename To>
struct RebindArg {
  using type = Arg;
};
template <template <typename> class Allocator, typename From, typename To>
struct RebindArg<Allocator<From>, From, To> {
  using type = Allocator<To>;
};

template <typename M, typename U>
struct RebindMappedImpl;
template <template <typename...> class Map, typename K, typename V, typename... Rest, typename U>
struct RebindMappedImpl<Map<K, V, Rest...>, U> {
  using type =
      Map<K, U, typename RebindArg<Rest, std::pair<const K, V>, std::pair<const K, U>>::type...>;
};
template <typename M, typename U>
using RebindMapped = typename RebindMappedImpl<M, U>::type;

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_CONTAINERS_H_

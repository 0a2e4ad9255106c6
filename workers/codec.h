// Encode / Decode: the bytes in which worker arguments, results and errors cross a process or host
// boundary (cereal's portable binary format, read back by a checked reader: truncated, garbled or
// trailing bytes throw StatusError with an absl::DataLossError status saying what was wrong).
//
//   std::string bytes = concurry::Encode(42, std::string("x"), std::vector<int>{1, 2});
//   auto [n, s, v] = concurry::DecodeTuple<int, std::string, std::vector<int>>(bytes);
//   struct Point {
//     int x = 0;
//     double y = 0;
//     template <class Archive> void serialize(Archive& archive) { archive(x, y); }
//   };
//   Point p = concurry::Decode<Point>(concurry::Encode(Point{1, 2.5}));

#ifndef CONCURRY_WORKERS_CODEC_H_
#define CONCURRY_WORKERS_CODEC_H_

#include <string>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "cereal/cereal.hpp"
#include "cereal/types/array.hpp"
#include "cereal/types/bitset.hpp"
#include "cereal/types/chrono.hpp"
#include "cereal/types/complex.hpp"
#include "cereal/types/deque.hpp"
#include "cereal/types/forward_list.hpp"
#include "cereal/types/list.hpp"
#include "cereal/types/map.hpp"
#include "cereal/types/memory.hpp"
#include "cereal/types/optional.hpp"
#include "cereal/types/queue.hpp"
#include "cereal/types/set.hpp"
#include "cereal/types/stack.hpp"
#include "cereal/types/string.hpp"
#include "cereal/types/tuple.hpp"
#include "cereal/types/unordered_map.hpp"
#include "cereal/types/unordered_set.hpp"
#include "cereal/types/utility.hpp"
#include "cereal/types/variant.hpp"
#include "cereal/types/vector.hpp"
#include "futures/errors.h"

namespace concurry {

// Supported types: arithmetic types, enums, strings, the standard containers, pair, tuple,
// optional, variant, unique_ptr / shared_ptr, chrono durations and time points, bitset, complex,
// absl::flat_hash_map and absl::flat_hash_set, and any user type with a `serialize(Archive&)`
// member or free function (or save / load pairs; see cereal's documentation). Decoded types must
// be default-constructible. Encode(a, b) writes the same bytes as Encode(std::make_tuple(a, b)),
// and Encode() is the encoding of the empty tuple. For portability across hosts use fixed-size
// types (int32_t, int64_t, uint64_t rather than long or size_t; long double is rejected). A
// container or string may hold at most as many elements as there are bytes after its count, so
// containers of zero-byte elements (std::vector<std::tuple<>>) are limited in size. Not checked:
// the ids cereal uses to share shared_ptr targets, so garbled bytes could alias two shared_ptrs of
// different types when one value holds several. The functions share no state: thread-safe.

// Returns the encoding of `values`, in order. A type without serialization support fails to
// compile with a message that says so; cereal errors while saving (such as an unregistered
// polymorphic type) throw StatusError with an absl::InvalidArgumentError status.
template <typename... Ts>
std::string Encode(const Ts&... values);

// Returns the values encoded in `bytes` by Encode<Ts...>. Throws StatusError with an
// absl::DataLossError status naming the types and what was wrong when the bytes are truncated,
// garbled or followed by extra bytes. Exceptions thrown by a type's own load code pass through.
template <typename... Ts>
std::tuple<Ts...> DecodeTuple(absl::string_view bytes);

// Returns the single value encoded in `bytes` by Encode<T>; errors as DecodeTuple.
template <typename T>
T Decode(absl::string_view bytes);

}  // namespace concurry

#include "workers/internal/codec_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_WORKERS_CODEC_H_

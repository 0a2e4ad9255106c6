// The checked cereal archives behind workers/codec.h and the template bodies of Encode / Decode.
// Internal: include workers/codec.h instead.
//
// Wire format: cereal's portable binary format. One header byte (1 = little-endian payload, 0 =
// big-endian payload; the encoder always writes 1), then every arithmetic value in fixed width,
// every container or string as a uint64 element count followed by its elements. Bytes written by
// cereal::PortableBinaryOutputArchive decode here and the other way round.

#ifndef CONCURRY_WORKERS_INTERNAL_CODEC_IMPL_H_
#define CONCURRY_WORKERS_INTERNAL_CODEC_IMPL_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "cereal/cereal.hpp"
#include "cereal/details/traits.hpp"
#include "futures/errors.h"

namespace concurry {
namespace workers_internal {

// Returns the demangled names of Ts joined with ", " (for error messages).
template <typename... Ts>
std::string TypeNames() {
  std::string names;
  ((names += (names.empty() ? "" : ", ") + TypeName(typeid(Ts))), ...);
  return names;
}

// Throws StatusError(DataLossError("<operation>: <detail>")).
[[noreturn]] void ThrowDecodeError(absl::string_view operation, absl::string_view detail);
// Throws StatusError(InvalidArgumentError("<operation>: <detail>")).
[[noreturn]] void ThrowEncodeError(absl::string_view operation, absl::string_view detail);

// A cereal output archive that appends the portable binary format to a string.
// Not thread-safe; confine to one thread.
class WireOutputArchive
    : public cereal::OutputArchive<WireOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  // Appends the header byte to `out` (which must outlive the archive).
  explicit WireOutputArchive(std::string& out);
  WireOutputArchive(const WireOutputArchive&) = delete;
  WireOutputArchive& operator=(const WireOutputArchive&) = delete;

  // Appends `count` elements of `element_size` bytes each, every element little-endian.
  void WriteElements(const void* data, size_t count, size_t element_size);

 private:
  std::string& out_;
};

// A cereal input archive that reads the portable binary format from a byte view and checks every
// read: running out of bytes, a bool byte other than 0 or 1, and an element count larger than
// the bytes left all throw cereal::Exception (which Decode turns into a DataLoss StatusError), so
// garbled input never reads out of bounds, never makes an invalid bool and never allocates more
// than a small multiple of the input size.
// Not thread-safe; confine to one thread.
class WireInputArchive
    : public cereal::InputArchive<WireInputArchive, cereal::AllowEmptyClassElision> {
 public:
  // Reads and checks the header byte of `bytes` (which must outlive the archive).
  explicit WireInputArchive(absl::string_view bytes);
  WireInputArchive(const WireInputArchive&) = delete;
  WireInputArchive& operator=(const WireInputArchive&) = delete;

  // Reads `count` elements of `element_size` bytes each into `data`.
  void ReadElements(void* data, size_t count, size_t element_size);
  // Reads `count` bools, one byte each, rejecting bytes other than 0 and 1.
  void ReadBools(bool* data, size_t count);
  // Reads a container or string element count; rejects counts larger than the bytes left.
  void ReadSize(uint64_t& size);
  // Throws when bytes are left over.
  void ExpectEnd() const;

  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }

 private:
  // Throws unless `count` elements of `element_size` bytes remain.
  void Need(size_t count, size_t element_size) const;

  absl::string_view bytes_;
  size_t offset_ = 0;
  bool swap_ = false;  // The payload's byte order differs from the host's.
};

// ---- cereal hooks for the two archives (found by argument-dependent lookup)
// ----------------------

template <typename T>
inline constexpr bool kIsWireArithmetic =
    std::is_arithmetic_v<T> && !std::is_same_v<T, long double> &&
    (!std::is_floating_point_v<T> || std::numeric_limits<T>::is_iec559);

template <typename T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(WireOutputArchive& archive,
                                                                    const T& value) {
  static_assert(kIsWireArithmetic<T>,
                "concurry codec: long double and non-IEEE-754 floating point types have no "
                "portable encoding; convert to double");
  archive.WriteElements(std::addressof(value), 1, sizeof(T));
}

template <typename T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(WireInputArchive& archive,
                                                                    T& value) {
  static_assert(kIsWireArithmetic<T>,
                "concurry codec: long double and non-IEEE-754 floating point types have no "
                "portable encoding; convert to double");
  if constexpr (std::is_same_v<T, bool>) {
    archive.ReadBools(&value, 1);
  } else {
    archive.ReadElements(std::addressof(value), 1, sizeof(T));
  }
}

template <typename Archive, typename T>
std::enable_if_t<std::is_same_v<Archive, WireOutputArchive> ||
                 std::is_same_v<Archive, WireInputArchive>>
CEREAL_SERIALIZE_FUNCTION_NAME(Archive& archive, cereal::NameValuePair<T>& pair) {
  archive(pair.value);
}

template <typename T>
void CEREAL_SAVE_FUNCTION_NAME(WireOutputArchive& archive, const cereal::SizeTag<T>& tag) {
  archive(static_cast<uint64_t>(tag.size));
}

template <typename T>
void CEREAL_LOAD_FUNCTION_NAME(WireInputArchive& archive, cereal::SizeTag<T>& tag) {
  uint64_t size = 0;
  archive.ReadSize(size);
  tag.size = static_cast<std::remove_reference_t<decltype(tag.size)>>(size);
}

template <typename P>
using BinaryElement = std::remove_cv_t<std::remove_pointer_t<P>>;

template <typename P>
constexpr size_t BinaryElementSize() {
  if constexpr (std::is_void_v<BinaryElement<P>>) {
    return 1;
  } else {
    return sizeof(BinaryElement<P>);
  }
}

template <typename P>
void CEREAL_SAVE_FUNCTION_NAME(WireOutputArchive& archive, const cereal::BinaryData<P>& data) {
  static_assert(std::is_void_v<BinaryElement<P>> || kIsWireArithmetic<BinaryElement<P>>,
                "concurry codec: binary data must be of a portable arithmetic type");
  constexpr size_t kSize = BinaryElementSize<P>();
  archive.WriteElements(data.data, static_cast<size_t>(data.size) / kSize, kSize);
}

template <typename P>
void CEREAL_LOAD_FUNCTION_NAME(WireInputArchive& archive, cereal::BinaryData<P>& data) {
  static_assert(std::is_void_v<BinaryElement<P>> || kIsWireArithmetic<BinaryElement<P>>,
                "concurry codec: binary data must be of a portable arithmetic type");
  constexpr size_t kSize = BinaryElementSize<P>();
  if constexpr (std::is_same_v<BinaryElement<P>, bool>) {
    archive.ReadBools(static_cast<bool*>(data.data), static_cast<size_t>(data.size));
  } else {
    archive.ReadElements(data.data, static_cast<size_t>(data.size) / kSize, kSize);
  }
}

// ---- Encode / Decode helpers --------------------------------------------------------------------

template <typename T>
constexpr bool CheckEncodable() {
  static_assert(
      cereal::traits::is_output_serializable<T, WireOutputArchive>::value,
      "concurry::Encode: this type is not serializable (or has more than one serialize/save "
      "function): include the cereal/types/ header for it, or give it a `template <class "
      "Archive> void serialize(Archive&)` member (see workers/codec.h)");
  return true;
}

template <typename T>
constexpr bool CheckDecodable() {
  static_assert(
      cereal::traits::is_input_serializable<T, WireInputArchive>::value,
      "concurry::Decode: this type is not serializable (or has more than one serialize/load "
      "function): include the cereal/types/ header for it, or give it a `template <class "
      "Archive> void serialize(Archive&)` member (see workers/codec.h)");
  static_assert(std::is_default_constructible_v<T>,
                "concurry::Decode: decoded types must be default-constructible (the value is "
                "built first, then loaded)");
  return true;
}

// Runs `write(archive)` on a fresh archive appending to a string and returns it; cereal errors
// become StatusError(InvalidArgumentError) naming `operation()` (only called then).
template <typename Operation, typename Write>
std::string EncodeWith(Operation&& operation, Write&& write) {
  std::string out;
  try {
    WireOutputArchive archive(out);
    std::forward<Write>(write)(archive);
  } catch (const cereal::Exception& e) {
    ThrowEncodeError(std::forward<Operation>(operation)(), e.what());
  }
  return out;
}

// Runs `read(archive)` over `bytes` and checks that every byte was read; truncated, garbled or
// trailing bytes become StatusError(DataLossError) naming `operation()` (only called then).
template <typename Operation, typename Read>
void DecodeWith(absl::string_view bytes, Operation&& operation, Read&& read) {
  try {
    WireInputArchive archive(bytes);
    std::forward<Read>(read)(archive);
    archive.ExpectEnd();
  } catch (const cereal::Exception& e) {
    ThrowDecodeError(std::forward<Operation>(operation)(), e.what());
  }
}

}  // namespace workers_internal

template <typename... Ts>
std::string Encode(const Ts&... values) {
  static_assert((workers_internal::CheckEncodable<Ts>() && ...));
  return workers_internal::EncodeWith(
      [] { return "concurry::Encode<" + workers_internal::TypeNames<Ts...>() + ">"; },
      [&](workers_internal::WireOutputArchive& archive) {
        if constexpr (sizeof...(Ts) > 0) archive(values...);
      });
}

template <typename... Ts>
std::tuple<Ts...> DecodeTuple(absl::string_view bytes) {
  static_assert((workers_internal::CheckDecodable<Ts>() && ...));
  std::tuple<Ts...> values;
  workers_internal::DecodeWith(
      bytes, [] { return "concurry::DecodeTuple<" + workers_internal::TypeNames<Ts...>() + ">"; },
      [&values](workers_internal::WireInputArchive& archive) {
        std::apply(
            [&archive](auto&... value) {
              if constexpr (sizeof...(value) > 0) archive(value...);
            },
            values);
      });
  return values;
}

template <typename T>
T Decode(absl::string_view bytes) {
  static_assert(workers_internal::CheckDecodable<T>());
  T value;
  workers_internal::DecodeWith(
      bytes, [] { return "concurry::Decode<" + workers_internal::TypeNames<T>() + ">"; },
      [&value](workers_internal::WireInputArchive& archive) { archive(value); });
  return value;
}

}  // namespace concurry

// ---- absl::flat_hash_map / flat_hash_set: element count, then the elements ---------------------

namespace cereal {

template <typename Archive, typename K, typename V, typename H, typename E, typename A>
void CEREAL_SAVE_FUNCTION_NAME(Archive& archive, const absl::flat_hash_map<K, V, H, E, A>& map) {
  archive(make_size_tag(static_cast<size_type>(map.size())));
  for (const auto& [key, value] : map) archive(make_map_item(key, value));
}

template <typename Archive, typename K, typename V, typename H, typename E, typename A>
void CEREAL_LOAD_FUNCTION_NAME(Archive& archive, absl::flat_hash_map<K, V, H, E, A>& map) {
  size_type size = 0;
  archive(make_size_tag(size));
  map.clear();
  map.reserve(static_cast<size_t>(size));
  for (size_type i = 0; i < size; ++i) {
    K key{};
    V value{};
    archive(make_map_item(key, value));
    map.insert_or_assign(std::move(key), std::move(value));
  }
}

template <typename Archive, typename K, typename H, typename E, typename A>
void CEREAL_SAVE_FUNCTION_NAME(Archive& archive, const absl::flat_hash_set<K, H, E, A>& set) {
  archive(make_size_tag(static_cast<size_type>(set.size())));
  for (const auto& key : set) archive(key);
}

template <typename Archive, typename K, typename H, typename E, typename A>
void CEREAL_LOAD_FUNCTION_NAME(Archive& archive, absl::flat_hash_set<K, H, E, A>& set) {
  size_type size = 0;
  archive(make_size_tag(size));
  set.clear();
  set.reserve(static_cast<size_t>(size));
  for (size_type i = 0; i < size; ++i) {
    K key{};
    archive(key);
    set.insert(std::move(key));
  }
}

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(concurry::workers_internal::WireOutputArchive)
CEREAL_REGISTER_ARCHIVE(concurry::workers_internal::WireInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(concurry::workers_internal::WireInputArchive,
                            concurry::workers_internal::WireOutputArchive)

#endif  // CONCURRY_WORKERS_INTERNAL_CODEC_IMPL_H_

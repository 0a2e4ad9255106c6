#include "workers/codec.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "futures/errors.h"

namespace concurry {
namespace workers_internal {
namespace {

constexpr bool kHostIsLittleEndian = std::endian::native == std::endian::little;

// Copies `count` elements of `element_size` bytes from `from` to `to`, reversing the bytes of
// each element when `swap`.
void CopyElements(const char* from, char* to, size_t count, size_t element_size, bool swap) {
  if (count == 0 || element_size == 0) return;  // `from` / `to` may be null (empty containers).
  if (!swap || element_size == 1) {
    std::memcpy(to, from, count * element_size);
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    std::reverse_copy(from + i * element_size, from + (i + 1) * element_size,
                      to + i * element_size);
  }
}

}  // namespace

void ThrowDecodeError(absl::string_view operation, absl::string_view detail) {
  throw StatusError(absl::DataLossError(absl::StrCat(operation, ": ", detail)));
}

void ThrowEncodeError(absl::string_view operation, absl::string_view detail) {
  throw StatusError(absl::InvalidArgumentError(absl::StrCat(operation, ": ", detail)));
}

WireOutputArchive::WireOutputArchive(std::string& out)
    : cereal::OutputArchive<WireOutputArchive, cereal::AllowEmptyClassElision>(this), out_(out) {
  out_.push_back(static_cast<char>(1));  // The payload is little-endian.
}

void WireOutputArchive::WriteElements(const void* data, size_t count, size_t element_size) {
  const size_t start = out_.size();
  out_.resize(start + count * element_size);
  CopyElements(static_cast<const char*>(data), out_.data() + start, count, element_size,
               /*swap=*/!kHostIsLittleEndian);
}

WireInputArchive::WireInputArchive(absl::string_view bytes)
    : cereal::InputArchive<WireInputArchive, cereal::AllowEmptyClassElision>(this), bytes_(bytes) {
  if (bytes_.empty()) {
    throw cereal::Exception("empty input: expected at least the 1-byte header");
  }
  const auto header = static_cast<unsigned char>(bytes_[0]);
  if (header > 1) {
    throw cereal::Exception(absl::StrFormat(
        "bad header byte 0x%02x (expected 0x01 or 0x00): not bytes made by concurry::Encode",
        header));
  }
  const bool payload_little_endian = header == 1;
  swap_ = payload_little_endian != kHostIsLittleEndian;
  offset_ = 1;
}

void WireInputArchive::Need(size_t count, size_t element_size) const {
  if (element_size != 0 && count > remaining() / element_size) {
    const std::string needed = count == 1 || element_size == 1
                                   ? absl::StrCat(count * element_size, " bytes")
                                   : absl::StrCat(count, " x ", element_size, " bytes");
    throw cereal::Exception(
        absl::StrFormat("truncated input: needs %s at offset %d but only %d of %d bytes remain",
                        needed, offset_, remaining(), bytes_.size()));
  }
}

void WireInputArchive::ReadElements(void* data, size_t count, size_t element_size) {
  Need(count, element_size);
  CopyElements(bytes_.data() + offset_, static_cast<char*>(data), count, element_size, swap_);
  offset_ += count * element_size;
}

void WireInputArchive::ReadBools(bool* data, size_t count) {
  Need(count, 1);
  for (size_t i = 0; i < count; ++i) {
    const auto byte = static_cast<unsigned char>(bytes_[offset_ + i]);
    if (byte > 1) {
      throw cereal::Exception(absl::StrFormat(
          "garbled input: byte 0x%02x at offset %d is not a bool (0 or 1)", byte, offset_ + i));
    }
    data[i] = byte == 1;
  }
  offset_ += count;
}

void WireInputArchive::ReadSize(uint64_t& size) {
  const size_t at = offset_;
  ReadElements(&size, 1, sizeof(size));
  if (size > remaining()) {
    throw cereal::Exception(absl::StrFormat(
        "garbled input: the element count %d at offset %d exceeds the %d bytes that follow", size,
        at, remaining()));
  }
}

void WireInputArchive::ExpectEnd() const {
  if (remaining() != 0) {
    throw cereal::Exception(
        absl::StrFormat("%d trailing bytes after the encoded values (which end at offset %d of %d)",
                        remaining(), offset_, bytes_.size()));
  }
}

}  // namespace workers_internal
}  // namespace concurry

#include "workers/codec.h"

#include <array>
#include <bitset>
#include <chrono>
#include <complex>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "cereal/archives/portable_binary.hpp"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace user {

// A user type with a serialize member.
struct Point {
  int32_t x = 0;
  double y = 0;
  std::string label;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(x, y, label);
  }
  friend bool operator==(const Point&, const Point&) = default;
};

// A user type with a free serialize function.
struct Pixel {
  uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Pixel&, const Pixel&) = default;
};
template <class Archive>
void serialize(Archive& archive, Pixel& pixel) {
  archive(pixel.r, pixel.g, pixel.b);
}

// A user type with split save / load members and a private representation.
class Temperature {
 public:
  Temperature() = default;
  explicit Temperature(double celsius)
      : millikelvin_(static_cast<int64_t>(celsius * 1000) + 273150) {}
  int64_t millikelvin() const { return millikelvin_; }

  template <class Archive>
  void save(Archive& archive) const {
    archive(millikelvin_);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(millikelvin_);
    if (millikelvin_ < 0) throw std::domain_error("below absolute zero");
  }

 private:
  int64_t millikelvin_ = 0;
};

// A type whose save fails inside cereal.
struct Unsavable {
  template <class Archive>
  void save(Archive&) const {
    throw cereal::Exception("this value refuses to be saved");
  }
  template <class Archive>
  void load(Archive&) {}
};

}  // namespace user

namespace concurry {
namespace {

using ::testing::HasSubstr;

template <typename T>
T RoundTrip(const T& value) {
  return Decode<T>(Encode(value));
}

// Returns the status of the StatusError thrown by `fn`, or an OK status when nothing was thrown.
template <typename F>
absl::Status StatusThrownBy(F&& fn) {
  try {
    fn();
  } catch (const StatusError& e) {
    return e.status();
  }
  return absl::OkStatus();
}

TEST(CodecTest, RoundTripsScalars) {
  EXPECT_EQ(RoundTrip<int8_t>(-8), -8);
  EXPECT_EQ(RoundTrip<uint8_t>(200), 200);
  EXPECT_EQ(RoundTrip<int16_t>(-30000), -30000);
  EXPECT_EQ(RoundTrip<uint16_t>(60000), 60000);
  EXPECT_EQ(RoundTrip<int32_t>(-2000000000), -2000000000);
  EXPECT_EQ(RoundTrip<uint32_t>(4000000000u), 4000000000u);
  EXPECT_EQ(RoundTrip<int64_t>(INT64_MIN), INT64_MIN);
  EXPECT_EQ(RoundTrip<uint64_t>(UINT64_MAX), UINT64_MAX);
  EXPECT_EQ(RoundTrip<float>(1.5f), 1.5f);
  EXPECT_EQ(RoundTrip<double>(-2.25), -2.25);
  EXPECT_EQ(RoundTrip<char>('z'), 'z');
  EXPECT_TRUE(RoundTrip<bool>(true));
  EXPECT_FALSE(RoundTrip<bool>(false));
}

TEST(CodecTest, WritesFixedWidthLittleEndianAfterAHeaderByte) {
  EXPECT_EQ(Encode(int32_t{0x01020304}), std::string("\x01\x04\x03\x02\x01", 5));
  EXPECT_EQ(Encode(std::string("ab")), std::string("\x01\x02\0\0\0\0\0\0\0ab", 11));
}

TEST(CodecTest, RoundTripsStringsAndSequences) {
  EXPECT_EQ(RoundTrip(std::string()), "");
  EXPECT_EQ(RoundTrip(std::string("hello\0world", 11)), std::string("hello\0world", 11));
  const std::string big(100000, 'q');
  EXPECT_EQ(RoundTrip(big), big);
  EXPECT_EQ(RoundTrip(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(RoundTrip(std::vector<std::string>{"a", "", "c"}),
            (std::vector<std::string>{"a", "", "c"}));
  EXPECT_EQ(RoundTrip(std::vector<bool>{true, false, true}),
            (std::vector<bool>{true, false, true}));
  EXPECT_EQ(RoundTrip(std::deque<double>{1.5, 2.5}), (std::deque<double>{1.5, 2.5}));
  EXPECT_EQ(RoundTrip(std::list<int>{4, 5}), (std::list<int>{4, 5}));
  EXPECT_EQ(RoundTrip(std::array<int, 3>{7, 8, 9}), (std::array<int, 3>{7, 8, 9}));
  EXPECT_EQ(RoundTrip(std::array<bool, 2>{true, false}), (std::array<bool, 2>{true, false}));
}

TEST(CodecTest, RoundTripsAssociativeContainers) {
  const std::map<std::string, int> map = {{"a", 1}, {"b", 2}};
  EXPECT_EQ(RoundTrip(map), map);
  const std::unordered_map<int, std::string> unordered = {{1, "x"}, {2, "y"}};
  EXPECT_EQ(RoundTrip(unordered), unordered);
  const std::set<int> set = {3, 1, 2};
  EXPECT_EQ(RoundTrip(set), set);
  const absl::flat_hash_map<std::string, std::vector<int>> flat = {{"k", {1, 2}}, {"e", {}}};
  EXPECT_EQ(RoundTrip(flat), flat);
  const absl::flat_hash_set<int64_t> flat_set = {10, 20, 30};
  EXPECT_EQ(RoundTrip(flat_set), flat_set);
}

TEST(CodecTest, RoundTripsUtilityTypes) {
  EXPECT_EQ(RoundTrip(std::make_pair(1, std::string("one"))),
            std::make_pair(1, std::string("one")));
  EXPECT_EQ(RoundTrip(std::make_tuple(1, 2.5, std::string("t"))),
            std::make_tuple(1, 2.5, std::string("t")));
  EXPECT_EQ(RoundTrip(std::optional<int>()), std::nullopt);
  EXPECT_EQ(RoundTrip(std::optional<int>(5)), 5);
  using V = std::variant<int, std::string, std::monostate>;
  EXPECT_EQ(RoundTrip(V(std::string("s"))), V(std::string("s")));
  EXPECT_EQ(RoundTrip(V(3)), V(3));
  EXPECT_EQ(RoundTrip(V(std::monostate())), V(std::monostate()));
  EXPECT_EQ(RoundTrip(std::chrono::milliseconds(1500)), std::chrono::milliseconds(1500));
  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(RoundTrip(now), now);
  EXPECT_EQ(RoundTrip(std::bitset<10>(0b1010011)), std::bitset<10>(0b1010011));
  EXPECT_EQ(RoundTrip(std::complex<double>(1, -2)), std::complex<double>(1, -2));
}

TEST(CodecTest, RoundTripsSmartPointersIncludingMoveOnly) {
  std::unique_ptr<int> p = Decode<std::unique_ptr<int>>(Encode(std::make_unique<int>(7)));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 7);
  EXPECT_EQ(Decode<std::unique_ptr<int>>(Encode(std::unique_ptr<int>())), nullptr);
  auto shared = std::make_shared<std::string>("shared");
  auto [a, b] = DecodeTuple<std::shared_ptr<std::string>, std::shared_ptr<std::string>>(
      Encode(shared, shared));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(*a, "shared");
  EXPECT_EQ(a, b);  // Sharing is preserved within one encoding.
}

TEST(CodecTest, RoundTripsUserTypes) {
  const user::Point point{.x = 3, .y = 4.5, .label = "p"};
  EXPECT_EQ(RoundTrip(point), point);
  EXPECT_EQ(RoundTrip(user::Pixel{1, 2, 3}), (user::Pixel{1, 2, 3}));
  EXPECT_EQ(RoundTrip(user::Temperature(20)).millikelvin(), 293150);
  const std::vector<user::Point> points = {point, {}, {.x = -1, .y = 0, .label = ""}};
  EXPECT_EQ(RoundTrip(points), points);
  const std::map<std::string, user::Pixel> pixels = {{"red", {255, 0, 0}}};
  EXPECT_EQ(RoundTrip(pixels), pixels);
}

TEST(CodecTest, EncodesSeveralValuesAsTheirTuple) {
  EXPECT_EQ(Encode(1, std::string("two"), 3.0),
            Encode(std::make_tuple(1, std::string("two"), 3.0)));
  auto [n, s, d] = DecodeTuple<int, std::string, double>(Encode(1, std::string("two"), 3.0));
  EXPECT_EQ(n, 1);
  EXPECT_EQ(s, "two");
  EXPECT_EQ(d, 3.0);
  using Pair = std::tuple<int, std::string>;
  EXPECT_EQ(Decode<Pair>(Encode(4, std::string("x"))), Pair(4, "x"));
}

TEST(CodecTest, EncodesNoValuesAsTheEmptyTuple) {
  EXPECT_EQ(Encode(), Encode(std::tuple<>()));
  EXPECT_EQ(Encode(), std::string("\x01", 1));
  EXPECT_EQ(DecodeTuple<>(Encode()), std::tuple<>());
  EXPECT_EQ(Decode<std::tuple<>>(Encode()), std::tuple<>());
}

TEST(CodecTest, IsCompatibleWithCerealPortableBinaryArchives) {
  using Map = std::map<std::string, std::vector<int32_t>>;
  const Map value = {{"a", {1, -2}}, {"bc", {}}};
  std::ostringstream out;
  {
    cereal::PortableBinaryOutputArchive archive(
        out, cereal::PortableBinaryOutputArchive::Options::LittleEndian());
    archive(value, true, 2.5);
  }
  EXPECT_EQ(out.str(), Encode(value, true, 2.5));
  EXPECT_EQ((DecodeTuple<Map, bool, double>(out.str())), std::make_tuple(value, true, 2.5));

  std::ostringstream big_endian;
  {
    cereal::PortableBinaryOutputArchive archive(
        big_endian, cereal::PortableBinaryOutputArchive::Options::BigEndian());
    archive(value, int64_t{-3}, 0.125f);
  }
  auto decoded = DecodeTuple<Map, int64_t, float>(big_endian.str());
  EXPECT_EQ(decoded, std::make_tuple(value, int64_t{-3}, 0.125f));

  std::istringstream in(Encode(value, uint16_t{513}));
  cereal::PortableBinaryInputArchive archive(in);
  std::map<std::string, std::vector<int32_t>> read;
  uint16_t number = 0;
  archive(read, number);
  EXPECT_EQ(read, value);
  EXPECT_EQ(number, 513);
}

TEST(CodecTest, RejectsEveryTruncation) {
  const std::string bytes = Encode(std::string("text"), std::vector<int64_t>{1, 2},
                                   std::optional<user::Point>(user::Point{}));
  for (size_t size = 0; size < bytes.size(); ++size) {
    absl::Status status = StatusThrownBy([&] {
      DecodeTuple<std::string, std::vector<int64_t>, std::optional<user::Point>>(
          absl::string_view(bytes).substr(0, size));
    });
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << "prefix of " << size << " bytes";
    EXPECT_THAT(std::string(status.message()), HasSubstr("concurry::DecodeTuple<"));
  }
}

TEST(CodecTest, TruncationSaysWhatWasMissing) {
  const std::string bytes = Encode(int64_t{5});
  absl::Status status = StatusThrownBy([&] { Decode<int64_t>(bytes.substr(0, 4)); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("concurry::Decode<long>"));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("truncated input: needs 8 bytes at offset 1 but only 3 of 4 bytes remain"));
}

TEST(CodecTest, RejectsTrailingBytes) {
  absl::Status status = StatusThrownBy([] { Decode<int32_t>(Encode(int32_t{1}) + "x"); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("1 trailing bytes"));
  // Decoding fewer values than were encoded is trailing bytes too.
  status = StatusThrownBy([] { Decode<int32_t>(Encode(int32_t{1}, int32_t{2})); });
  EXPECT_THAT(std::string(status.message()), HasSubstr("4 trailing bytes"));
}

TEST(CodecTest, RejectsEmptyInputAndABadHeader) {
  absl::Status status = StatusThrownBy([] { DecodeTuple<>(""); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("empty input"));
  status = StatusThrownBy([] { Decode<std::string>("hello"); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("bad header byte 0x68"));
}

TEST(CodecTest, RejectsABoolByteOtherThanZeroOrOne) {
  std::string bytes = Encode(true);
  bytes[1] = 2;
  absl::Status status = StatusThrownBy([&] { Decode<bool>(bytes); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("byte 0x02 at offset 1 is not a bool"));
  bytes = Encode(std::array<bool, 3>{true, false, true});
  bytes[2] = 7;
  EXPECT_EQ(StatusThrownBy([&] { Decode<std::array<bool, 3>>(bytes); }).code(),
            absl::StatusCode::kDataLoss);
}

TEST(CodecTest, RejectsAnElementCountLargerThanTheInput) {
  std::string bytes = Encode(std::vector<user::Point>{{}});
  bytes[8] = '\x7f';  // Top byte of the little-endian count: about 9e18 elements.
  absl::Status status = StatusThrownBy([&] { Decode<std::vector<user::Point>>(bytes); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("element count"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("exceeds the 20 bytes that follow"));
  bytes = Encode(std::string("abc"));
  bytes[1] = 4;
  EXPECT_EQ(StatusThrownBy([&] { Decode<std::string>(bytes); }).code(),
            absl::StatusCode::kDataLoss);
}

TEST(CodecTest, RejectsABadVariantIndex) {
  std::string bytes = Encode(std::variant<int, double>(1));
  bytes[1] = 5;
  absl::Status status = StatusThrownBy([&] { Decode<std::variant<int, double>>(bytes); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("variant"));
  bytes[1] = bytes[2] = bytes[3] = bytes[4] = '\xff';  // Index -1.
  EXPECT_EQ(StatusThrownBy([&] { Decode<std::variant<int, double>>(bytes); }).code(),
            absl::StatusCode::kDataLoss);
}

TEST(CodecTest, DecodingTheWrongTypesFailsCleanly) {
  absl::Status status =
      StatusThrownBy([] { Decode<std::vector<std::string>>(Encode(std::string("abc"))); });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
}

TEST(CodecTest, GarbledBytesNeverCrash) {
  using Value = std::tuple<std::map<std::string, std::vector<int32_t>>, std::optional<user::Point>,
                           std::variant<int, std::string>, std::unique_ptr<std::string>,
                           std::vector<bool>, absl::flat_hash_map<int, std::string>>;
  Value value;
  std::get<0>(value) = {{"a", {1, 2}}, {"bcd", {}}};
  std::get<1>(value) = user::Point{.x = 1, .y = 2, .label = "lbl"};
  std::get<2>(value) = "var";
  std::get<3>(value) = std::make_unique<std::string>("ptr");
  std::get<4>(value) = {true, false};
  std::get<5>(value) = {{1, "one"}};
  const std::string bytes = Encode(value);
  std::mt19937 random(12345);
  int failures = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string garbled = bytes;
    const int flips = 1 + static_cast<int>(random() % 3);
    for (int i = 0; i < flips; ++i) {
      garbled[random() % garbled.size()] = static_cast<char>(random() % 256);
    }
    try {
      Decode<Value>(garbled);
    } catch (const StatusError& e) {
      ASSERT_EQ(e.code(), absl::StatusCode::kDataLoss) << e.what();
      ++failures;
    }
  }
  EXPECT_GT(failures, 0);
}

TEST(CodecTest, UserLoadErrorsPassThroughUnchanged) {
  std::string bytes = Encode(int64_t{-1});
  EXPECT_THROW(Decode<user::Temperature>(bytes), std::domain_error);
}

TEST(CodecTest, CerealSaveErrorsBecomeInvalidArgument) {
  absl::Status status = StatusThrownBy([] { Encode(user::Unsavable()); });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("concurry::Encode<user::Unsavable>"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("this value refuses to be saved"));
}

}  // namespace
}  // namespace concurry

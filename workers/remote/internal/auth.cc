#include "workers/remote/internal/auth.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace concurry::remote_internal {
namespace {
constexpr absl::string_view kBearer = "Bearer ";
}  // namespace

std::string BearerValue(absl::string_view token) { return absl::StrCat(kBearer, token); }

bool BearerTokenMatches(absl::string_view value, absl::string_view token) {
  // Every byte of the expected value is compared, and the differences are OR-ed together with no
  // early exit; `volatile` keeps the compiler from turning the loop into one that stops early.
  const std::string expected = BearerValue(token);
  volatile unsigned char diff = value.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char got = i < value.size() ? static_cast<unsigned char>(value[i]) : 0;
    diff = diff | (got ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

}  // namespace concurry::remote_internal

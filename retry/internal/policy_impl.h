// Template bodies of retry/policy.h: rendering results and building validators.

#ifndef CONCURRY_RETRY_INTERNAL_POLICY_IMPL_H_
#define CONCURRY_RETRY_INTERNAL_POLICY_IMPL_H_

#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "futures/errors.h"
#include "retry/policy.h"

namespace concurry {
namespace retry_internal {

template <typename T, typename = void>
inline constexpr bool kStreamable = false;
template <typename T>
inline constexpr bool kStreamable<
    T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>> = true;

// Turns a validator function's answer into nullopt (acceptable) or a failure description
// ("returned false", "failed: <message>"); the caller prefixes the validator's name.
template <typename V>
std::optional<std::string> Verdict(V&& verdict) {
  using D = std::decay_t<V>;
  if constexpr (std::is_same_v<D, absl::Status>) {
    if (verdict.ok()) return std::nullopt;
    return absl::StrCat("failed: ", verdict.message());
  } else if constexpr (std::is_convertible_v<D, std::optional<std::string>> &&
                       !std::is_same_v<D, bool>) {
    std::optional<std::string> message = std::forward<V>(verdict);
    if (!message.has_value()) return std::nullopt;
    return absl::StrCat("failed: ", *message);
  } else {
    static_assert(std::is_convertible_v<D, bool>,
                  "concurry::Validate<T>: a validator must return bool, absl::Status or "
                  "std::optional<std::string>");
    if constexpr (std::is_convertible_v<D, bool>) {
      if (static_cast<bool>(verdict)) return std::nullopt;
    }
    return std::string("returned false");
  }
}

}  // namespace retry_internal

template <typename T>
std::string RetryResult::Render(const T& value) {
  if constexpr (std::is_convertible_v<const T&, absl::string_view>) {
    return std::string(absl::string_view(value));
  } else if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_arithmetic_v<T>) {
    return absl::StrCat(value);
  } else if constexpr (retry_internal::kStreamable<T>) {
    std::ostringstream out;
    out << value;
    return out.str();
  } else {
    return absl::StrCat("<", TypeName(typeid(T)), ">");
  }
}

template <typename T, typename F>
RetryValidator Validate(std::string name, F fn) {
  constexpr bool kWithContext = std::is_invocable_v<const F&, const T&, const RetryContext&>;
  constexpr bool kValueOnly = std::is_invocable_v<const F&, const T&>;
  static_assert(kWithContext || kValueOnly,
                "concurry::Validate<T>: a validator must be callable as (const T&) or (const T&, "
                "const concurry::RetryContext&), returning bool, absl::Status or "
                "std::optional<std::string>");
  return RetryValidator{
      .name = std::move(name),
      .check = [fn = std::move(fn)](const RetryResult& result,
                                    const RetryContext& context) -> std::optional<std::string> {
        const T* value = result.get<T>();
        if (value == nullptr) {
          return absl::StrCat("expects ", TypeName(typeid(T)), " but the result is ",
                              TypeName(result.type()));
        }
        if constexpr (kWithContext) {
          return retry_internal::Verdict(fn(*value, context));
        } else if constexpr (kValueOnly) {
          return retry_internal::Verdict(fn(*value));
        } else {
          return std::nullopt;  // Not reached: the static_assert above fails.
        }
      }};
}

}  // namespace concurry

#endif  // CONCURRY_RETRY_INTERNAL_POLICY_IMPL_H_

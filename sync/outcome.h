// Outcome<T>: the settled result of one future — a value or the original exception — as a plain
// value that can be stored, inspected without throwing, and rethrown later with its original type.
// GatherSettled and AsCompleted yield Outcomes (concurry's return_exceptions=True).
//
//   concurry::Outcome<int> outcome = concurry::OutcomeOf(std::move(future));  // waits
//   if (outcome.ok()) Use(outcome.value());
//   else LOG(WARNING) << outcome.status();  // no-throw view: kCancelled, kDeadlineExceeded...
//   std::string why = outcome.error_message();  // what(): "7 is unlucky" ("" when ok)
//   int v = outcome.value();                // rethrows the original exception when !ok()

#ifndef CONCURRY_SYNC_OUTCOME_H_
#define CONCURRY_SYNC_OUTCOME_H_

#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "futures/errors.h"
#include "futures/future.h"

namespace concurry {

// Either a value of type T (nothing for T = void) or a non-null std::exception_ptr.
//
// A plain value: concurrent const access is thread-safe; mutation needs external synchronization.
template <typename T>
class Outcome {
 public:
  // Holds a value built from `args` (no arguments for Outcome<void>).
  template <typename... Args>
  explicit Outcome(std::in_place_t, Args&&... args)
      : result_(std::in_place_index<0>, std::forward<Args>(args)...) {}
  // Holds `error`. A null `error` is rejected with InvalidOptionError.
  explicit Outcome(std::exception_ptr error) : result_(std::in_place_index<1>, std::move(error)) {
    if (!std::get<1>(result_)) throw InvalidOptionError("Outcome: the exception_ptr is null");
  }

  // Returns whether this holds a value.
  bool ok() const noexcept { return result_.index() == 0; }

  // Returns the value; rethrows the held exception, with its original type, when !ok().
  std::add_lvalue_reference_t<T> value() & { return Get(*this); }
  std::add_lvalue_reference_t<const T> value() const& { return Get(*this); }
  std::add_rvalue_reference_t<T> value() && { return Get(std::move(*this)); }

  // Returns the held exception, or null when ok().
  std::exception_ptr error() const noexcept { return ok() ? nullptr : std::get<1>(result_); }

  // Returns the no-throw view: OkStatus() or StatusFromException(error()).
  absl::Status status() const { return StatusFromException(error()); }

  // Returns the held exception's message, what() ("7 is unlucky", without the type or status
  // code that status() adds), or "" when ok(). For an exception not derived from std::exception:
  // "(exception not derived from std::exception)".
  std::string error_message() const { return ok() ? std::string() : ExceptionMessage(error()); }

 private:
  using Stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

  template <typename Self>
  static decltype(auto) Get(Self&& self) {
    if (!self.ok()) std::rethrow_exception(std::get<1>(self.result_));
    if constexpr (!std::is_void_v<T>) return std::get<0>(std::forward<Self>(self).result_);
  }

  std::variant<Stored, std::exception_ptr> result_;
};

// Blocks until `future` is done and returns its outcome (CancelledError when it was cancelled).
// Moves the value out when `future` is the only handle to it, copies it otherwise. Throws
// InvalidOptionError for an invalid future.
template <typename T>
Outcome<T> OutcomeOf(Future<T> future) {
  std::exception_ptr error = future.Error();
  if (error) return Outcome<T>(std::move(error));
  if constexpr (std::is_void_v<T>) {
    return Outcome<T>(std::in_place);
  } else {
    return Outcome<T>(std::in_place, std::move(future).Result());
  }
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_OUTCOME_H_

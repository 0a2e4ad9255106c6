// The exception registry: how an exception crosses a process or host boundary. The sending side
// turns it into an ErrorRecord (type name, message, status code), which the codec can encode; the
// receiving side rebuilds the same C++ type with the same message when that type is registered,
// and a concurry::RemoteError carrying the original type name and message otherwise.
//
//   struct QuotaError : std::runtime_error { using std::runtime_error::runtime_error; };
//   CONCURRY_REGISTER_EXCEPTION(QuotaError);  // at namespace scope, in a .cc file
//
//   concurry::ErrorRecord record = concurry::RecordFromException(std::current_exception());
//   std::string bytes = concurry::Encode(record);                     // ... across the wire ...
//   std::rethrow_exception(concurry::ExceptionFromRecord(concurry::Decode<ErrorRecord>(bytes)));

#ifndef CONCURRY_WORKERS_EXCEPTION_REGISTRY_H_
#define CONCURRY_WORKERS_EXCEPTION_REGISTRY_H_

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <type_traits>
#include <typeindex>
#include <typeinfo>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "futures/errors.h"

namespace concurry {

// An exception in transit: plain data that the codec (workers/codec.h) can encode.
// Thread-compatible (a plain value).
struct ErrorRecord {
  // The demangled dynamic type name ("std::out_of_range"); for a RemoteError, the original one.
  std::string type_name;
  // what() of the exception (for a RemoteError, without the "type_name: " prefix it adds).
  std::string message;
  // The absl::StatusCode of StatusFromException for the exception.
  int32_t status_code = static_cast<int32_t>(absl::StatusCode::kUnknown);

  template <class Archive>
  void serialize(Archive& archive) {
    archive(type_name, message, status_code);
  }
  friend bool operator==(const ErrorRecord&, const ErrorRecord&) = default;
};

// Builds the exception that rebuilds a record of a registered type.
using ExceptionFactory = std::function<std::exception_ptr(const ErrorRecord&)>;

// Returns the record describing `error`. Works for any thrown value: `throw 42` gives type name
// "int" and a placeholder message. A null `error` throws InvalidOptionError. Thread-safe.
ErrorRecord RecordFromException(const std::exception_ptr& error);

// Returns the exception that `record` describes: the registered type named record.type_name
// built from record.message, else a RemoteError(record.type_name, record.message). Never null.
// If the registered factory itself throws, returns that exception. Thread-safe.
//
// Pre-registered: std::runtime_error, std::logic_error and their standard subclasses
// (invalid_argument, domain_error, length_error, out_of_range, range_error, overflow_error,
// underflow_error), std::bad_alloc and the other message-less std::bad_* types (rebuilt with
// their default message), and every concurry error of futures/errors.h (StatusError and Error keep
// their status code). A plain std::exception has no message constructor and arrives as a
// RemoteError. Types are matched by demangled name, so both sides must spell it the same way.
std::exception_ptr ExceptionFromRecord(const ErrorRecord& record);

// Registers E, built from what() as E(std::string) or E(const char*), so that ExceptionFromRecord
// rebuilds it as E. E must derive from std::exception and E(e.what()) must rebuild an
// equivalent exception (otherwise pass a factory). Registering the same type again does nothing;
// registering a different type whose demangled name is already taken throws InvalidOptionError.
// Thread-safe.
template <typename E>
void RegisterException();

// Registers E with a factory that rebuilds it from a record (for types without a message
// constructor, or whose constructor does not take what() back). Otherwise as above.
template <typename E>
void RegisterException(ExceptionFactory factory);

// Returns whether a type with this demangled name is registered.
bool IsExceptionRegistered(absl::string_view type_name);

namespace workers_internal {

// Registers `factory` for `type` under its demangled name `type_name` (see RegisterException).
void RegisterExceptionFactory(std::type_index type, std::string type_name,
                              ExceptionFactory factory);

}  // namespace workers_internal

template <typename E>
void RegisterException(ExceptionFactory factory) {
  static_assert(std::is_class_v<E> && std::is_base_of_v<std::exception, E>,
                "RegisterException<E>: E must be a class derived from std::exception");
  static_assert(!std::is_abstract_v<E> && std::is_copy_constructible_v<E>,
                "RegisterException<E>: E must be a concrete, copyable exception type");
  workers_internal::RegisterExceptionFactory(typeid(E), TypeName(typeid(E)), std::move(factory));
}

template <typename E>
void RegisterException() {
  if constexpr (std::is_constructible_v<E, const std::string&>) {
    RegisterException<E>(
        [](const ErrorRecord& record) { return std::make_exception_ptr(E(record.message)); });
  } else {
    static_assert(std::is_constructible_v<E, const char*>,
                  "RegisterException<E>(): E needs a constructor taking std::string or const "
                  "char* (the message); otherwise use RegisterException<E>(factory)");
    RegisterException<E>([](const ErrorRecord& record) {
      return std::make_exception_ptr(E(record.message.c_str()));
    });
  }
}

}  // namespace concurry

// Registers an exception type at static-initialization time (see RegisterException). Use once per
// type at namespace scope in a .cc file; a library holding only registrations needs
// `alwayslink = True` so the linker keeps it. A registration conflict at that point terminates
// the program with the InvalidOptionError's message.
#define CONCURRY_REGISTER_EXCEPTION(...) \
  CONCURRY_INTERNAL_REGISTER_EXCEPTION_AT(__COUNTER__, __VA_ARGS__)
#define CONCURRY_INTERNAL_REGISTER_EXCEPTION_AT(counter, ...) \
  CONCURRY_INTERNAL_REGISTER_EXCEPTION_NAMED(counter, __VA_ARGS__)
#define CONCURRY_INTERNAL_REGISTER_EXCEPTION_NAMED(counter, ...)                        \
  [[maybe_unused]] static const bool concurry_internal_registered_exception_##counter = \
      (::concurry::RegisterException<__VA_ARGS__>(), true)

#endif  // CONCURRY_WORKERS_EXCEPTION_REGISTRY_H_

// The exception registry: how an exception crosses a process or host boundary. The sending side
// turns it into an ErrorRecord (type name, message, status code), which the codec can encode; the
// receiving side rebuilds the same C++ type with the same message when that type is registered,
// and a concurry::RemoteError carrying the original type name and message otherwise.
//
//   struct QuotaError : std::runtime_error { using std::runtime_error::runtime_error; };
//   CONCURRY_REGISTER_EXCEPTION(QuotaError);  // at namespace scope, in a .cc file
//   CONCURRY_REGISTER_EXCEPTION_AS(Other, "billing.Other");  // a name of your choice
//
//   concurry::ErrorRecord record = concurry::RecordFromException(std::current_exception());
//   std::string bytes = concurry::Encode(record);                     // ... across the wire ...
//   std::rethrow_exception(concurry::ExceptionFromRecord(concurry::Decode<ErrorRecord>(bytes)));

#ifndef CONCURRY_WORKERS_EXCEPTION_REGISTRY_H_
#define CONCURRY_WORKERS_EXCEPTION_REGISTRY_H_

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <source_location>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "futures/errors.h"

namespace concurry {

// An exception in transit: plain data that the codec (workers/codec.h) can encode.
// Thread-compatible (a plain value).
struct ErrorRecord {
  // The dynamic type's registered name: the demangled name ("std::out_of_range") unless the type
  // was registered under another (RegisterExceptionAs). For a RemoteError, the original one.
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
// "int" and a placeholder message. A type registered with RegisterExceptionAs is sent under that
// name. A null `error` throws InvalidOptionError. Thread-safe.
ErrorRecord RecordFromException(const std::exception_ptr& error);

// Returns the exception that `record` describes: the registered type named record.type_name
// built from record.message, else a RemoteError(record.type_name, record.message). Never null.
// If the registered factory itself throws, returns that exception. A name that two types claimed
// at static initialization (see CONCURRY_REGISTER_EXCEPTION) rebuilds neither: it gives a
// RemoteError whose message ends with a note naming both registrations and the fix. Thread-safe.
//
// Pre-registered: std::runtime_error, std::logic_error and their standard subclasses
// (invalid_argument, domain_error, length_error, out_of_range, range_error, overflow_error,
// underflow_error), std::bad_alloc and the other message-less std::bad_* types (rebuilt with
// their default message), and every concurry error of futures/errors.h (StatusError and Error keep
// their status code). A plain std::exception has no message constructor and arrives as a
// RemoteError. Types are matched by name (the demangled name, or the one given to
// RegisterExceptionAs), so both sides must register them the same way.
std::exception_ptr ExceptionFromRecord(const ErrorRecord& record);

// Registers E, built from what() as E(std::string) or E(const char*), so that ExceptionFromRecord
// rebuilds it as E, under E's demangled name. E must derive from std::exception and E(e.what())
// must rebuild an equivalent exception (otherwise pass a factory). Registering the same type again
// under the same name does nothing. Throws InvalidOptionError, naming both registration sites and
// the fix, when a different type already has that name (two types in anonymous namespaces of two
// .cc files, say: use RegisterExceptionAs for one of them) or E is already registered under
// another name. `site` is recorded for such messages. Thread-safe.
template <typename E>
void RegisterException(std::source_location site = std::source_location::current());

// Registers E with a factory that rebuilds it from a record (for types without a message
// constructor, or whose constructor does not take what() back). Otherwise as above.
template <typename E>
void RegisterException(ExceptionFactory factory,
                       std::source_location site = std::source_location::current());

// As RegisterException, under `name` (not empty) instead of E's demangled name: for types whose
// demangled names clash, or to keep the wire name stable when the type is renamed. A type has one
// name: RecordFromException sends `name` for exceptions of type E (exactly E, not a derived type),
// so every process must register E under the same name.
template <typename E>
void RegisterExceptionAs(std::string name,
                         std::source_location site = std::source_location::current());
template <typename E>
void RegisterExceptionAs(std::string name, ExceptionFactory factory,
                         std::source_location site = std::source_location::current());

// Returns whether a type registered under this name is rebuilt by ExceptionFromRecord (false for
// a name that two types claimed at static initialization).
bool IsExceptionRegistered(absl::string_view type_name);

// Returns OK, or a kFailedPrecondition status describing every registration that
// CONCURRY_REGISTER_EXCEPTION(_AS) could not make at static initialization (where it cannot
// throw): two types under one name, with both sites and the fix. Call it from main() or a test
// (`EXPECT_TRUE(concurry::CheckExceptionRegistry().ok())`) to fail early. Thread-safe.
absl::Status CheckExceptionRegistry();

namespace workers_internal {
// Take and give back the registry's lock around a fork() by concurry (a process worker started
// with ProcessStart::kFork), so that the child, whose other threads are gone, never finds it held.
void LockExceptionRegistryForFork();
void UnlockExceptionRegistryAfterFork();

// Registers `factory` for `type` under `name`, or under its demangled name when `name` is nullopt
// (see RegisterException); `api` names the caller in messages. Throws InvalidOptionError.
void RegisterExceptionFactory(const std::type_info& type, std::optional<std::string> name,
                              ExceptionFactory factory, std::source_location site,
                              absl::string_view api);

// For CONCURRY_REGISTER_EXCEPTION(_AS), at static initialization: as RegisterExceptionFactory
// (`name` null: the demangled name), with the factory `make_factory()`, but never throws. A
// problem is printed to stderr and kept for CheckExceptionRegistry(); when two types claim one
// name, neither is rebuilt under it (which one registered first depends on the link order).
// Returns true.
bool RegisterExceptionAtStartup(const std::type_info& type, const char* name,
                                ExceptionFactory (*make_factory)(),
                                std::source_location site) noexcept;

template <typename E>
constexpr void CheckRegistrableException() {
  static_assert(std::is_class_v<E> && std::is_base_of_v<std::exception, E>,
                "RegisterException<E>: E must be a class derived from std::exception");
  static_assert(!std::is_abstract_v<E> && std::is_copy_constructible_v<E>,
                "RegisterException<E>: E must be a concrete, copyable exception type");
}

// The factory of RegisterException<E>() without one: E(message).
template <typename E>
ExceptionFactory MessageFactory() {
  if constexpr (std::is_constructible_v<E, const std::string&>) {
    return [](const ErrorRecord& record) { return std::make_exception_ptr(E(record.message)); };
  } else {
    static_assert(std::is_constructible_v<E, const char*>,
                  "RegisterException<E>(): E needs a constructor taking std::string or const "
                  "char* (the message); otherwise use RegisterException<E>(factory)");
    return [](const ErrorRecord& record) {
      return std::make_exception_ptr(E(record.message.c_str()));
    };
  }
}

// What CONCURRY_REGISTER_EXCEPTION(_AS) runs: `name` is null for E's demangled name.
template <typename E>
bool RegisterExceptionAtStartup(const char* name, std::source_location site) noexcept {
  CheckRegistrableException<E>();
  return RegisterExceptionAtStartup(typeid(E), name, &MessageFactory<E>, site);
}

}  // namespace workers_internal

template <typename E>
void RegisterException(ExceptionFactory factory, std::source_location site) {
  workers_internal::CheckRegistrableException<E>();
  workers_internal::RegisterExceptionFactory(typeid(E), std::nullopt, std::move(factory), site,
                                             "RegisterException");
}

template <typename E>
void RegisterException(std::source_location site) {
  RegisterException<E>(workers_internal::MessageFactory<E>(), site);
}

template <typename E>
void RegisterExceptionAs(std::string name, ExceptionFactory factory, std::source_location site) {
  workers_internal::CheckRegistrableException<E>();
  workers_internal::RegisterExceptionFactory(typeid(E), std::move(name), std::move(factory), site,
                                             "RegisterExceptionAs");
}

template <typename E>
void RegisterExceptionAs(std::string name, std::source_location site) {
  RegisterExceptionAs<E>(std::move(name), workers_internal::MessageFactory<E>(), site);
}

}  // namespace concurry

// Registers an exception type at static-initialization time (see RegisterException), under its
// demangled name. Use once per type at namespace scope in a .cc file; a library holding only
// registrations needs `alwayslink = True` so the linker keeps it. Types with the same demangled
// name (two types in anonymous namespaces of different .cc files, or the same qualified name in
// two libraries) cannot both be registered that way: register one (or both) with
// CONCURRY_REGISTER_EXCEPTION_AS. If two do claim one name, the program still starts: a message
// naming both sites and the fix is printed to stderr, CheckExceptionRegistry() reports it, and
// records of that name arrive as RemoteError with the same note.
#define CONCURRY_REGISTER_EXCEPTION(...) \
  CONCURRY_INTERNAL_REGISTER_EXCEPTION_AT(__COUNTER__, nullptr, __VA_ARGS__)

// As CONCURRY_REGISTER_EXCEPTION, under `name` (a string literal, the same in every process)
// instead of the demangled name: CONCURRY_REGISTER_EXCEPTION_AS(QuotaError, "billing.QuotaError").
// For a template type with commas, use an alias.
#define CONCURRY_REGISTER_EXCEPTION_AS(Type, name) \
  CONCURRY_INTERNAL_REGISTER_EXCEPTION_AT(__COUNTER__, name, Type)

#define CONCURRY_INTERNAL_REGISTER_EXCEPTION_AT(counter, name, ...) \
  CONCURRY_INTERNAL_REGISTER_EXCEPTION_NAMED(counter, name, __VA_ARGS__)
#define CONCURRY_INTERNAL_REGISTER_EXCEPTION_NAMED(counter, name, ...)                  \
  [[maybe_unused]] static const bool concurry_internal_registered_exception_##counter = \
      ::concurry::workers_internal::RegisterExceptionAtStartup<__VA_ARGS__>(            \
          name, ::std::source_location::current())

#endif  // CONCURRY_WORKERS_EXCEPTION_REGISTRY_H_

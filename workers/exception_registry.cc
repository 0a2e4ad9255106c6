#include "workers/exception_registry.h"

#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <utility>
#include <variant>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"

namespace concurry {
namespace {

// The registered types by demangled name. Thread-safe.
class ExceptionRegistry {
 public:
  ExceptionRegistry() { RegisterBuiltins(); }

  void Register(std::type_index type, std::string name, ExceptionFactory factory)
      ABSL_LOCKS_EXCLUDED(mu_) {
    if (!factory) {
      throw InvalidOptionError(absl::StrCat("RegisterException<", name, ">: the factory is empty"));
    }
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      if (it->second.type == type) return;
      throw InvalidOptionError(absl::StrCat(
          "RegisterException<", name,
          ">: another type with the same name is already "
          "registered (types are matched by demangled name across processes, so two types in "
          "anonymous namespaces or with the same qualified name in different libraries cannot "
          "both be registered); rename one of them"));
    }
    entries_.emplace(std::move(name),
                     Entry{type, std::make_shared<const ExceptionFactory>(std::move(factory))});
  }

  // Returns the factory registered for `name`, or null.
  std::shared_ptr<const ExceptionFactory> Find(absl::string_view name) const
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : it->second.factory;
  }

 private:
  struct Entry {
    std::type_index type;
    std::shared_ptr<const ExceptionFactory> factory;
  };

  template <typename E>
  void RegisterWithMessage() {
    Register(typeid(E), TypeName(typeid(E)),
             [](const ErrorRecord& record) { return std::make_exception_ptr(E(record.message)); });
  }
  template <typename E>
  void RegisterWithoutMessage() {
    Register(typeid(E), TypeName(typeid(E)),
             [](const ErrorRecord&) { return std::make_exception_ptr(E()); });
  }

  void RegisterBuiltins() {
    RegisterWithMessage<std::runtime_error>();
    RegisterWithMessage<std::range_error>();
    RegisterWithMessage<std::overflow_error>();
    RegisterWithMessage<std::underflow_error>();
    RegisterWithMessage<std::logic_error>();
    RegisterWithMessage<std::invalid_argument>();
    RegisterWithMessage<std::domain_error>();
    RegisterWithMessage<std::length_error>();
    RegisterWithMessage<std::out_of_range>();
    RegisterWithoutMessage<std::bad_alloc>();
    RegisterWithoutMessage<std::bad_array_new_length>();
    RegisterWithoutMessage<std::bad_cast>();
    RegisterWithoutMessage<std::bad_typeid>();
    RegisterWithoutMessage<std::bad_exception>();
    RegisterWithoutMessage<std::bad_optional_access>();
    RegisterWithoutMessage<std::bad_variant_access>();
    RegisterWithoutMessage<std::bad_function_call>();
    RegisterWithoutMessage<std::bad_weak_ptr>();

    RegisterWithMessage<TimeoutError>();
    RegisterWithMessage<CancelledError>();
    RegisterWithMessage<StoppedError>();
    RegisterWithMessage<CrashedError>();
    RegisterWithMessage<InvalidOptionError>();
    RegisterWithMessage<CapacityError>();
    RegisterWithMessage<RetryValidationError>();
    RegisterWithoutMessage<BrokenPromiseError>();
    Register(typeid(StatusError), TypeName(typeid(StatusError)), [](const ErrorRecord& record) {
      return std::make_exception_ptr(
          StatusError(absl::Status(ValidCode(record.status_code), record.message)));
    });
    // A plain concurry::Error (no subclass) keeps its code too.
    Register(typeid(Error), TypeName(typeid(Error)), [](const ErrorRecord& record) {
      return std::make_exception_ptr(Error(ValidCode(record.status_code), record.message));
    });
  }

  // Returns `code` as a status code; codes absl does not define become kUnknown.
  static absl::StatusCode ValidCode(int32_t code) {
    if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
      return absl::StatusCode::kUnknown;
    }
    return static_cast<absl::StatusCode>(code);
  }

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

ExceptionRegistry& Registry() {
  // Never destroyed: registrations and lookups may run during static initialization and
  // destruction of other objects.
  static ExceptionRegistry* const registry = new ExceptionRegistry();
  return *registry;
}

}  // namespace

ErrorRecord RecordFromException(const std::exception_ptr& error) {
  if (!error) throw InvalidOptionError("RecordFromException: the exception_ptr is null");
  ErrorRecord record;
  record.type_name = ExceptionTypeName(error);
  record.message = ExceptionMessage(error);
  record.status_code = static_cast<int32_t>(StatusFromException(error).code());
  try {
    std::rethrow_exception(error);
  } catch (const RemoteError& remote) {
    // Forwarded again: keep the original type, and the message without RemoteError's prefix.
    const std::string prefix = absl::StrCat(remote.type_name(), ": ");
    record.type_name = remote.type_name();
    if (absl::StartsWith(record.message, prefix)) record.message.erase(0, prefix.size());
  } catch (...) {
  }
  return record;
}

std::exception_ptr ExceptionFromRecord(const ErrorRecord& record) {
  const std::string& type_name = record.type_name.empty() ? "unknown" : record.type_name;
  std::shared_ptr<const ExceptionFactory> factory = Registry().Find(type_name);
  if (factory == nullptr) {
    return std::make_exception_ptr(RemoteError(type_name, record.message));
  }
  try {
    std::exception_ptr error = (*factory)(record);
    if (error) return error;
    return std::make_exception_ptr(RemoteError(
        type_name, absl::StrCat(record.message, " (the registered factory returned null)")));
  } catch (...) {
    return std::current_exception();
  }
}

bool IsExceptionRegistered(absl::string_view type_name) {
  return Registry().Find(type_name) != nullptr;
}

namespace workers_internal {

void RegisterExceptionFactory(std::type_index type, std::string type_name,
                              ExceptionFactory factory) {
  Registry().Register(type, std::move(type_name), std::move(factory));
}

}  // namespace workers_internal
}  // namespace concurry

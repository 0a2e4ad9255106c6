#include "workers/exception_registry.h"

#include <cxxabi.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"

namespace concurry {
namespace {

constexpr absl::string_view kBuiltIn = "concurry (built in)";

// Where and what a registration was, for messages.
struct Registration {
  std::type_index type;
  std::string type_name;  // Demangled.
  std::string site;       // "file:line", or kBuiltIn.
};

std::string SiteOf(const std::source_location& site) {
  return absl::StrCat(site.file_name(), ":", site.line());
}

std::string Describe(const Registration& r) { return absl::StrCat(r.type_name, " at ", r.site); }

// The registered types by name, and the name of each registered type. Thread-safe.
class ExceptionRegistry {
 public:
  ExceptionRegistry() { RegisterBuiltins(); }

  // Registers `factory` for `added` under `name`. Returns "" on success (or when this type is
  // already registered under this name), else what went wrong and how to fix it. A conflict
  // leaves the registry unchanged unless `at_startup`: then two user types claiming one name make
  // it ambiguous (neither is rebuilt under it).
  std::string Register(const Registration& added, const std::string& name, ExceptionFactory factory,
                       bool at_startup) ABSL_LOCKS_EXCLUDED(mu_) {
    if (name.empty()) {
      return "the name is empty; pass a name that no other registered exception type has (the "
             "same in every process)";
    }
    if (!factory) return "the factory is empty";
    absl::MutexLock lock(&mu_);
    if (auto named = name_of_type_.find(added.type);
        named != name_of_type_.end() && named->second != name) {
      const Entry& entry = entries_.at(named->second);
      return absl::StrCat(added.type_name, " is already registered under the name '", named->second,
                          "' (", Describe(FindRegistrationLocked(entry, added.type)),
                          "), so it cannot also be '", name, "' (at ", added.site,
                          "): a type has one name on the wire; keep one of the two registrations");
    }
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      entries_.emplace(
          name, Entry{.first = added,
                      .factory = std::make_shared<const ExceptionFactory>(std::move(factory))});
      name_of_type_.emplace(added.type, name);
      return "";
    }
    Entry& entry = it->second;
    if (entry.first.type == added.type) return "";
    for (const Registration& other : entry.others) {
      if (other.type == added.type) return "";
    }
    constexpr absl::string_view kAs =
        "CONCURRY_REGISTER_EXCEPTION_AS(Type, \"unique.name\") (or "
        "RegisterExceptionAs<Type>(\"unique.name\")), the same in every process";
    const bool built_in = entry.first.site == kBuiltIn;
    std::string message =
        absl::StrCat("the exception name '", name,
                     "' is claimed by two different types: ", Describe(entry.first), " and ",
                     Describe(added), ". ");
    if (built_in) {
      absl::StrAppend(&message, "The name belongs to a type concurry registers itself: register ",
                      added.type_name, " under another name with ", kAs);
    } else {
      absl::StrAppend(&message,
                      "Types are matched by this name across processes, and types in anonymous "
                      "namespaces of different .cc files, or with the same qualified name in "
                      "different libraries, have the same demangled name. Register one of them "
                      "under a distinct name with ",
                      kAs);
    }
    if (!at_startup) return message;
    if (built_in) {
      message += "; it was not registered";
    } else {
      // Which registration ran first depends on the link order: rebuild neither.
      entry.factory = nullptr;
      entry.others.push_back(added);
      entry.conflict = message;
      name_of_type_.emplace(added.type, name);
      message += "; until then, exceptions of that name arrive as RemoteError";
    }
    return message;
  }

  // What ExceptionFromRecord needs for `name`: the factory (null if none), or the conflict that
  // made the name ambiguous.
  struct Lookup {
    std::shared_ptr<const ExceptionFactory> factory;
    std::string conflict;
  };
  Lookup Find(absl::string_view name) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return {};
    return {it->second.factory, it->second.conflict};
  }

  // Returns the name `type` is registered under, or nullopt.
  std::optional<std::string> NameOf(const std::type_info& type) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = name_of_type_.find(std::type_index(type));
    if (it == name_of_type_.end()) return std::nullopt;
    return it->second;
  }

  // Keeps a registration problem met at static initialization, for CheckExceptionRegistry().
  void AddProblem(std::string message) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    problems_.push_back(std::move(message));
  }
  std::vector<std::string> Problems() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return problems_;
  }

  // Held across a fork() (LockRegistriesForFork), so that the child never inherits it locked.
  void LockForFork() ABSL_EXCLUSIVE_LOCK_FUNCTION(mu_) { mu_.Lock(); }
  void UnlockAfterFork() ABSL_UNLOCK_FUNCTION(mu_) { mu_.Unlock(); }

 private:
  struct Entry {
    Registration first;
    // Null when the name is ambiguous.
    std::shared_ptr<const ExceptionFactory> factory;
    // Other types that claimed the name at startup, and the message saying so.
    std::vector<Registration> others = {};
    std::string conflict = {};
  };

  static const Registration& FindRegistrationLocked(const Entry& entry, std::type_index type) {
    for (const Registration& other : entry.others) {
      if (other.type == type) return other;
    }
    return entry.first;
  }

  template <typename E>
  void RegisterBuiltin(ExceptionFactory factory) {
    const Registration builtin{typeid(E), TypeName(typeid(E)), std::string(kBuiltIn)};
    Register(builtin, builtin.type_name, std::move(factory), /*at_startup=*/false);
  }
  template <typename E>
  void RegisterWithMessage() {
    RegisterBuiltin<E>(
        [](const ErrorRecord& record) { return std::make_exception_ptr(E(record.message)); });
  }
  template <typename E>
  void RegisterWithoutMessage() {
    RegisterBuiltin<E>([](const ErrorRecord&) { return std::make_exception_ptr(E()); });
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
    RegisterWithMessage<DeadlockError>();
    RegisterWithMessage<RetryValidationError>();
    RegisterWithoutMessage<BrokenPromiseError>();
    RegisterBuiltin<StatusError>([](const ErrorRecord& record) {
      return std::make_exception_ptr(
          StatusError(absl::Status(ValidCode(record.status_code), record.message)));
    });
    // A plain concurry::Error (no subclass) keeps its code too.
    RegisterBuiltin<Error>([](const ErrorRecord& record) {
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
  absl::flat_hash_map<std::type_index, std::string, std::hash<std::type_index>> name_of_type_
      ABSL_GUARDED_BY(mu_);
  // Registrations that failed at static initialization, for CheckExceptionRegistry().
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
};

ExceptionRegistry& Registry() {
  // Never destroyed: registrations and lookups may run during static initialization and
  // destruction of other objects.
  static ExceptionRegistry* const registry = new ExceptionRegistry();
  return *registry;
}

}  // namespace

namespace workers_internal {
void LockExceptionRegistryForFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { Registry().LockForFork(); }
void UnlockExceptionRegistryAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Registry().UnlockAfterFork();
}
}  // namespace workers_internal

namespace {

// The dynamic type of the exception in `error` (not null), or null if unknown.
const std::type_info* DynamicType(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (...) {
    return abi::__cxa_current_exception_type();
  }
}

}  // namespace

ErrorRecord RecordFromException(const std::exception_ptr& error) {
  if (!error) throw InvalidOptionError("RecordFromException: the exception_ptr is null");
  ErrorRecord record;
  const std::type_info* type = DynamicType(error);
  std::optional<std::string> registered_name;
  if (type != nullptr) registered_name = Registry().NameOf(*type);
  record.type_name = registered_name ? *std::move(registered_name) : ExceptionTypeName(error);
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
  const ExceptionRegistry::Lookup found = Registry().Find(type_name);
  if (found.factory == nullptr) {
    if (!found.conflict.empty()) {
      return std::make_exception_ptr(RemoteError(
          type_name, absl::StrCat(record.message, " (concurry: not rebuilt as a registered type: ",
                                  found.conflict, ")")));
    }
    return std::make_exception_ptr(RemoteError(type_name, record.message));
  }
  try {
    std::exception_ptr error = (*found.factory)(record);
    if (error) return error;
    return std::make_exception_ptr(RemoteError(
        type_name, absl::StrCat(record.message, " (the registered factory returned null)")));
  } catch (...) {
    return std::current_exception();
  }
}

bool IsExceptionRegistered(absl::string_view type_name) {
  return Registry().Find(type_name).factory != nullptr;
}

absl::Status CheckExceptionRegistry() {
  const std::vector<std::string> problems = Registry().Problems();
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(problems.size(), " exception registration(s) at static initialization failed: ",
                   absl::StrJoin(problems, "; also ")));
}

namespace workers_internal {

void RegisterExceptionFactory(const std::type_info& type, std::optional<std::string> name,
                              ExceptionFactory factory, std::source_location site,
                              absl::string_view api) {
  const Registration added{type, TypeName(type), SiteOf(site)};
  const std::string& used = name ? *name : added.type_name;
  const std::string error =
      Registry().Register(added, used, std::move(factory), /*at_startup=*/false);
  if (!error.empty()) {
    throw InvalidOptionError(absl::StrCat(api, "<", added.type_name, ">",
                                          name ? absl::StrCat("(\"", *name, "\")") : "", " at ",
                                          added.site, ": ", error));
  }
}

bool RegisterExceptionAtStartup(const std::type_info& type, const char* name,
                                ExceptionFactory (*make_factory)(),
                                std::source_location site) noexcept {
  std::string error;
  try {
    const Registration added{type, TypeName(type), SiteOf(site)};
    error = Registry().Register(added, name != nullptr ? std::string(name) : added.type_name,
                                make_factory(), /*at_startup=*/true);
    if (!error.empty()) {
      error = absl::StrCat(
          name != nullptr ? "CONCURRY_REGISTER_EXCEPTION_AS(" : "CONCURRY_REGISTER_EXCEPTION(",
          added.type_name, ") at ", added.site, ": ", error);
    }
  } catch (...) {
    error = absl::StrCat("CONCURRY_REGISTER_EXCEPTION at ", site.file_name(), ":", site.line(),
                         " failed: ", ExceptionTypeName(std::current_exception()), ": ",
                         ExceptionMessage(std::current_exception()));
  }
  if (error.empty()) return true;
  // No exception can be reported from a static initializer: say it now, and again to
  // CheckExceptionRegistry() and whoever receives an exception of that name.
  std::fprintf(stderr, "concurry: %s\n", error.c_str());
  try {
    Registry().AddProblem(std::move(error));
  } catch (...) {
    // Out of memory at startup: the line on stderr is all there is.
  }
  return true;
}

}  // namespace workers_internal
}  // namespace concurry

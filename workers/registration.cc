#include "workers/registration.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "workers/codec.h"
#include "workers/exception_registry.h"

namespace concurry {
namespace workers_internal {

std::string EncodeReply() { return Encode(true); }

std::string EncodeErrorReply(const std::exception_ptr& error) {
  if (!error) throw InvalidOptionError("EncodeErrorReply: the exception_ptr is null");
  return Encode(false, RecordFromException(error));
}

namespace {

// Classes by name. Filled at start-up; read by worker processes (and by later registrations).
struct ClassTable {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, const EncodedClass*> by_name ABSL_GUARDED_BY(mu);
};

ClassTable& Classes() {
  static ClassTable* const table = new ClassTable();
  return *table;
}

}  // namespace

bool RegisterEncodedClass(const EncodedClass& cls) {
  ClassTable& table = Classes();
  absl::MutexLock lock(&table.mu);
  const auto [it, inserted] = table.by_name.try_emplace(std::string(cls.name), &cls);
  // The same class seen from several files: one EncodedClassOf<T>() object, or (when a
  // shared library holds another copy) the same name with the same functions.
  if (!inserted && it->second != &cls && it->second->construct != cls.construct) {
    std::fprintf(stderr,
                 "concurry: two different worker classes are registered under the name \"%s\"; "
                 "worker processes build the first one\n",
                 it->first.c_str());
  }
  return true;
}

const EncodedClass* FindEncodedClass(absl::string_view name) {
  ClassTable& table = Classes();
  absl::MutexLock lock(&table.mu);
  const auto it = table.by_name.find(name);
  return it == table.by_name.end() ? nullptr : it->second;
}

namespace {

// A registered function with its own copy of its name.
struct FunctionEntry {
  explicit FunctionEntry(const EncodedFunction& fn) : name(fn.name), function(fn) {
    function.name = name;
  }
  const std::string name;
  EncodedFunction function;  // Its name views `name`.
};

// Registered free functions, by name and by address. Filled at start-up; entries are never
// removed or freed, so their names stay valid (the views FunctionNameOf returns point into them).
struct FunctionTable {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, const FunctionEntry*> by_name ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<uintptr_t, const FunctionEntry*> by_address ABSL_GUARDED_BY(mu);
};

FunctionTable& Functions() {
  static FunctionTable* const table = new FunctionTable();
  return *table;
}

uintptr_t AddressKey(void (*address)()) { return reinterpret_cast<uintptr_t>(address); }

}  // namespace

bool RegisterEncodedFunction(const EncodedFunction& fn) {
  FunctionTable& table = Functions();
  absl::MutexLock lock(&table.mu);
  const auto it = table.by_name.find(fn.name);
  if (it != table.by_name.end()) {
    // The same function seen from several files is a no-op.
    if (it->second->function.address != fn.address && it->second->function.invoke != fn.invoke) {
      std::fprintf(stderr,
                   "concurry: two different functions are registered under the name \"%s\"; "
                   "TaskWorker calls by that name run the first one\n",
                   it->first.c_str());
    }
    return true;
  }
  // Never freed: the name must outlive every call by it.
  const auto* entry = new FunctionEntry(fn);
  table.by_name.emplace(entry->name, entry);
  table.by_address.try_emplace(AddressKey(fn.address), entry);
  return true;
}

const EncodedFunction* FindEncodedFunction(absl::string_view name) {
  FunctionTable& table = Functions();
  absl::MutexLock lock(&table.mu);
  const auto it = table.by_name.find(name);
  return it == table.by_name.end() ? nullptr : &it->second->function;
}

std::optional<absl::string_view> FunctionNameOf(void (*address)()) {
  FunctionTable& table = Functions();
  absl::MutexLock lock(&table.mu);
  const auto it = table.by_address.find(AddressKey(address));
  if (it == table.by_address.end()) return std::nullopt;
  return it->second->name;
}

std::vector<std::string> RegisteredFunctionNames() {
  std::vector<std::string> names;
  {
    FunctionTable& table = Functions();
    absl::MutexLock lock(&table.mu);
    names.reserve(table.by_name.size());
    for (const auto& [name, entry] : table.by_name) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

// The object of a task host: nothing (the functions it runs are free functions).
struct TaskHostObject {};

Future<std::string> InvokeRegisteredFunction(void* /*object*/, absl::string_view name,
                                             absl::string_view args) {
  const EncodedFunction* fn = FindEncodedFunction(name);
  if (fn == nullptr) {
    const std::vector<std::string> known = RegisteredFunctionNames();
    return MakeFailedFuture<std::string>(InvalidOptionError(absl::StrCat(
        "TaskWorker: no function is registered under the name \"", name,
        "\" in the worker's program; register it with CONCURRY_REGISTER_FUNCTION. Registered "
        "functions: ",
        known.empty() ? "none" : absl::StrJoin(known, ", "))));
  }
  return fn->invoke(fn->name, args);
}

}  // namespace

const EncodedClass& TaskHostClass() {
  static constexpr EncodedClass kClass = {
      .name = kTaskHostClassName,
      .construct = [](absl::string_view /*ctor*/) -> void* { return new TaskHostObject(); },
      .invoke = &InvokeRegisteredFunction,
      .destroy = [](void* object) { delete static_cast<TaskHostObject*>(object); },
  };
  return kClass;
}

namespace {
// Worker processes find the task host by name, like any registered class.
[[maybe_unused]] const bool task_host_registered = RegisterEncodedClass(TaskHostClass());
}  // namespace

void LockRegistriesForFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Classes().mu.Lock();
  Functions().mu.Lock();
  LockExceptionRegistryForFork();
}

void UnlockRegistriesAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  UnlockExceptionRegistryAfterFork();
  Functions().mu.Unlock();
  Classes().mu.Unlock();
}

}  // namespace workers_internal
}  // namespace concurry

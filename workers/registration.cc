#include "workers/registration.h"

#include <cstdio>
#include <exception>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
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

}  // namespace workers_internal
}  // namespace concurry

#include "workers/backend.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "futures/errors.h"

namespace concurry {
namespace {

using workers_internal::KnownMode;
using workers_internal::kNumModes;

// One slot per mode. Constant-initialized, so registrations from static initializers in any order
// (and lookups from them) are safe.
constinit std::atomic<const WorkerBackend*> backends[kNumModes] = {};

// The package of each mode's backend, in enum order, and whether this version of concurry has
// that backend at all.
struct BackendPackage {
  const char* package;
  bool exists;
};
constexpr BackendPackage kPackages[kNumModes] = {
    {"inline", true},  {"thread", true},    {"tbb", true},    {"loopback", true},
    {"process", true}, {"coroutine", true}, {"remote", true},
};

// "Mode::kTbb".
std::string EnumName(Mode mode) {
  std::string name = AbslUnparseFlag(mode);
  name[0] = absl::ascii_toupper(static_cast<unsigned char>(name[0]));
  return "Mode::k" + name;
}

std::string LinkedList() {
  std::vector<std::string> names;
  for (Mode mode : LinkedWorkerModes()) names.push_back(AbslUnparseFlag(mode));
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

}  // namespace

std::unique_ptr<workers_internal::EncodedObject> WorkerBackend::MakeEncodedObject(
    const workers_internal::EncodedClass& cls, std::string ctor,
    workers_internal::ActorCore& /*actor*/) const {
  return std::make_unique<workers_internal::LocalEncodedObject>(cls, ctor);
}

bool RegisterWorkerBackend(const WorkerBackend& backend) {
  const Mode mode = backend.mode();
  if (!KnownMode(mode)) {
    std::fprintf(stderr, "concurry: a worker backend for unknown mode %d was not registered\n",
                 static_cast<int>(mode));
    return true;
  }
  const WorkerBackend* expected = nullptr;
  if (!backends[static_cast<int>(mode)].compare_exchange_strong(expected, &backend,
                                                                std::memory_order_acq_rel)) {
    std::fprintf(stderr,
                 "concurry: a second worker backend for %s was linked and ignored; the first "
                 "one registered stays\n",
                 EnumName(mode).c_str());
  }
  return true;
}

const WorkerBackend* FindWorkerBackend(Mode mode) {
  if (!KnownMode(mode)) return nullptr;
  return backends[static_cast<int>(mode)].load(std::memory_order_acquire);
}

const WorkerBackend& WorkerBackendFor(Mode mode) {
  if (const WorkerBackend* backend = FindWorkerBackend(mode)) return *backend;
  if (!KnownMode(mode)) {
    // ResolveWorkerOptions rejects these first; kept for direct callers.
    throw InvalidOptionError(absl::StrCat("worker options: mode: unknown value ",
                                          static_cast<int>(mode),
                                          "; allowed: ", workers_internal::kAllModeNames));
  }
  const BackendPackage& package = kPackages[static_cast<int>(mode)];
  const std::string target = absl::StrCat("@concurry//workers/", package.package);
  if (!package.exists) {
    throw InvalidOptionError(
        absl::StrCat("worker options: ", EnumName(mode),
                     " is not available in this version of concurry (its backend will be ", target,
                     "); backends linked into this binary: ", LinkedList()));
  }
  throw InvalidOptionError(absl::StrCat(
      "worker options: ", EnumName(mode), " needs ", target,
      " in deps: its backend is not linked into this binary (linked: ", LinkedList(),
      mode == Mode::kRemote ? "); it is not part of @concurry//workers, so that programs without "
                              "remote workers link no gRPC"
                            : "); @concurry//workers and @concurry//:concurry link every backend"));
}

std::vector<Mode> LinkedWorkerModes() {
  std::vector<Mode> modes;
  for (int i = 0; i < kNumModes; ++i) {
    if (backends[i].load(std::memory_order_acquire) != nullptr) modes.push_back(Mode(i));
  }
  return modes;
}

}  // namespace concurry

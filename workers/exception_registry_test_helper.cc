// A second translation unit for exception_registry_test: types whose demangled names equal types
// in the test file, to check what the registry does with two types under one name.

#include <exception>
#include <stdexcept>
#include <string>

#include "workers/exception_registry.h"

namespace concurry {
namespace {

struct SameNameError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Registered by the macro in both files: the names clash at static initialization.
struct StartupTwinError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Registered in both files too, but this one under a name of its own.
struct RenamedTwinError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

// The test checks that messages name this line.
static constexpr int kOtherSameNameErrorLine = __LINE__ + 1;
void RegisterOtherSameNameError() { RegisterException<SameNameError>(); }
int OtherSameNameErrorLine() { return kOtherSameNameErrorLine; }

std::exception_ptr MakeHelperStartupTwin(const std::string& message) {
  return std::make_exception_ptr(StartupTwinError(message));
}

std::exception_ptr MakeHelperRenamedTwin(const std::string& message) {
  return std::make_exception_ptr(RenamedTwinError(message));
}

bool IsHelperRenamedTwin(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const RenamedTwinError&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace concurry

// The test checks that messages name this line.
static constexpr int kHelperStartupTwinLine = __LINE__ + 1;
CONCURRY_REGISTER_EXCEPTION(concurry::StartupTwinError);
CONCURRY_REGISTER_EXCEPTION_AS(concurry::RenamedTwinError, "helper.RenamedTwinError");

namespace concurry {
int HelperStartupTwinLine() { return kHelperStartupTwinLine; }
}  // namespace concurry

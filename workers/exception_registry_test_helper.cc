// A second translation unit for exception_registry_test: a type whose demangled name equals one in
// the test file, to check that the registry rejects two types under one name.

#include <stdexcept>

#include "workers/exception_registry.h"

namespace concurry {
namespace {

struct SameNameError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

void RegisterOtherSameNameError() { RegisterException<SameNameError>(); }

}  // namespace concurry

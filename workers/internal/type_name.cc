#include "workers/internal/type_name.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace concurry {
namespace workers_internal {

std::string DemangledTypeName(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name != nullptr ? std::string(name.get()) : std::string(type.name());
}

}  // namespace workers_internal
}  // namespace concurry

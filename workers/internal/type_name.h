// Demangled C++ type names for error messages and registries. Internal to workers/.

#ifndef CONCURRY_WORKERS_INTERNAL_TYPE_NAME_H_
#define CONCURRY_WORKERS_INTERNAL_TYPE_NAME_H_

#include <string>
#include <typeinfo>

namespace concurry {
namespace workers_internal {

// Returns the demangled name of `type` ("std::vector<int, std::allocator<int> >"), the same
// spelling concurry::ExceptionTypeName gives for an exception of that type; the mangled name when
// demangling fails.
std::string DemangledTypeName(const std::type_info& type);

// Returns the demangled names of Ts joined with ", ".
template <typename... Ts>
std::string TypeNames() {
  std::string names;
  ((names += (names.empty() ? "" : ", ") + DemangledTypeName(typeid(Ts))), ...);
  return names;
}

}  // namespace workers_internal
}  // namespace concurry

#endif  // CONCURRY_WORKERS_INTERNAL_TYPE_NAME_H_

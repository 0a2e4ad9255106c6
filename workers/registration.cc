#include "workers/registration.h"

#include <exception>
#include <string>

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

}  // namespace workers_internal
}  // namespace concurry

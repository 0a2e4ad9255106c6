#include "sync/as_completed.h"

#include "absl/strings/str_cat.h"
#include "futures/errors.h"

namespace concurry {
namespace sync_internal {

void ThrowAsCompletedTimeout(const char* operation, absl::Duration timeout, size_t yielded,
                             size_t total) {
  throw TimeoutError(absl::StrCat(operation, ": timed out after ", absl::FormatDuration(timeout),
                                  "; yielded ", yielded, " of ", total));
}

}  // namespace sync_internal
}  // namespace concurry

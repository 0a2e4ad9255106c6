#include "sync/wait_async.h"

#include <utility>
#include <vector>

#include "sync/internal/async_watch.h"

namespace concurry {

Coro<WaitResult> WaitAsync(std::vector<AnyFuture> futures, WaitOptions options) {
  sync_internal::CheckWaitInput("WaitAsync", futures, options);
  return sync_internal::WaitAsyncUnchecked(std::move(futures), std::move(options));
}

}  // namespace concurry

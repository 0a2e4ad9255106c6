// AsCompletedAsync on a vector of plain values (not futures).
// EXPECT-ERROR: static assertion failed: concurry::AsCompletedAsync: expects futures
// MAX-ERRORS: 1
#include <vector>

#include "sync/as_completed_async.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  auto completions = concurry::AsCompletedAsync(values);
#endif
}

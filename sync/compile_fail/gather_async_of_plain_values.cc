// GatherAsync on a vector of plain values (not futures).
// EXPECT-ERROR: static assertion failed: concurry::GatherAsync: expects futures
// MAX-ERRORS: 1
#include <vector>

#include "sync/gather_async.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  auto gather = concurry::GatherAsync(values);
#endif
}

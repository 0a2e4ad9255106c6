// WaitAsync on a vector of plain values (not futures).
// EXPECT-ERROR: static assertion failed: concurry::WaitAsync: expects futures
// MAX-ERRORS: 1
#include <vector>

#include "sync/wait_async.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  concurry::Coro<concurry::WaitResult> wait = concurry::WaitAsync(values);
#endif
}

// Wait on a vector of plain values (not futures).
// EXPECT-ERROR: static assertion failed: concurry::Wait: expects futures
// MAX-ERRORS: 1
#include <vector>

#include "sync/wait.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  concurry::WaitResult result = concurry::Wait(values);
#endif
}

// Gather of a vector of plain values (not futures): one static_assert naming what it expects,
// not a list of candidate overloads.
// EXPECT-ERROR: static assertion failed: concurry::Gather: expects futures
// MAX-ERRORS: 1
#include <vector>

#include "sync/gather.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  std::vector<int> gathered = concurry::Gather(values);
  (void)gathered;
#endif
}

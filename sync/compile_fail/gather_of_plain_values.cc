// Gather of a vector of plain values (not futures).
// EXPECT-ERROR: .
// MAX-ERRORS: 100
#include <vector>

#include "sync/gather.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  concurry::Gather(values);
#endif
}

// AsCompleted over a vector of plain values (not futures).
// EXPECT-ERROR: static assertion failed: concurry::AsCompleted: expects futures
// MAX-ERRORS: 1
#include <vector>

#include "sync/as_completed.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::vector<int> values = {1, 2, 3};
  for (auto& [index, outcome] : concurry::AsCompleted(values)) {
    (void)index;
  }
#endif
}

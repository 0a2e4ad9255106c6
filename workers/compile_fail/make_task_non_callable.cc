// MakeTask with something that is not a function.
// EXPECT-ERROR: Task / MakeTask: the function must be callable
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  auto task = concurry::MakeTask(5);
#endif
}

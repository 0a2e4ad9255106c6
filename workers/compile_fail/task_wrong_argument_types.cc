// A Task called with arguments its function does not take.
// EXPECT-ERROR: Task: the bound function cannot be called with these arguments
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  auto task = concurry::MakeTask(Twice);
  task(std::string("one"));
#endif
}

// Task::Map with an input that is not a range.
// EXPECT-ERROR: Task::Map: every argument .* must be an input range
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  auto task = concurry::MakeTask(Twice);
  task.Map(5);
#endif
}

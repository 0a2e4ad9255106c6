// TaskWorker::Map with an input that is not a range.
// EXPECT-ERROR: TaskWorker::Map: every argument after the function must be an input range
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  concurry::TaskWorker w;
  w.Map(Twice, 5);
#endif
}

// TaskWorker::Submit with a non-callable first argument.
// EXPECT-ERROR: TaskWorker::Submit: the first argument must be callable
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  concurry::TaskWorker w;
  w.Submit(5);
#endif
}

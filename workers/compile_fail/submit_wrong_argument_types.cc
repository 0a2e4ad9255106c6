// TaskWorker::Submit with arguments the function does not take.
// EXPECT-ERROR: TaskWorker::Submit: the function cannot be called with the remaining arguments
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  concurry::TaskWorker w;
  w.Submit(Twice, std::string("one"));
#endif
}

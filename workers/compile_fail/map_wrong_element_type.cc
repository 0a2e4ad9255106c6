// TaskWorker::Map over elements the function does not take.
// EXPECT-ERROR: TaskWorker::Map: the function cannot be called with one element of each input
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  concurry::TaskWorker w;
  std::vector<std::string> inputs = {"a"};
  w.Map(Twice, inputs);
#endif
}

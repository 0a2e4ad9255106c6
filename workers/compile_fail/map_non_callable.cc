// TaskWorker::Map with a non-callable function.
// EXPECT-ERROR: TaskWorker::Map: the first argument .* must be callable
// MAX-ERRORS: 1
#include <string>
#include <vector>

#include "workers/task_worker.h"

int Twice(int x) { return 2 * x; }

void Use() {
#ifdef CONCURRY_MISUSE
  concurry::TaskWorker w;
  std::vector<int> inputs = {1, 2};
  w.Map({.max_in_flight = 2}, 5, inputs);
#endif
}

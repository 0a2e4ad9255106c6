// Worker<T>::Call with a lambda instead of a method.
// EXPECT-ERROR: Worker<T>::Call: the first argument must be a pointer to a method of T
// MAX-ERRORS: 1
#include <string>

#include "workers/worker.h"

class Counter {
 public:
  int Add(int k) { return n_ += k; }

 private:
  int n_ = 0;
};
class Other {
 public:
  int Add(int k) { return k; }
};

concurry::Worker<Counter> MakeCounter() { return {}; }

void Use() {
#ifdef CONCURRY_MISUSE
  MakeCounter().Call([](int k) { return k; }, 1);
#endif
}

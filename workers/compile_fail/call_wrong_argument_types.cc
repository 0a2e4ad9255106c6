// Worker<T>::Call with an argument the method does not take.
// EXPECT-ERROR: Worker<T>::Call: the method cannot be called with these arguments
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
  MakeCounter().Call(&Counter::Add, std::string("one"));
#endif
}

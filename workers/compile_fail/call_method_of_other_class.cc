// Worker<T>::Call with a method of another class.
// EXPECT-ERROR: Worker<T>::Call: the method belongs to a class that is not T or a base of T
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
  MakeCounter().Call(&Other::Add, 1);
#endif
}

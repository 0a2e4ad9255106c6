// Worker classes and functions served by the test hosts of //workers/remote (testonly).

#ifndef CONCURRY_WORKERS_REMOTE_TEST_CLASSES_H_
#define CONCURRY_WORKERS_REMOTE_TEST_CLASSES_H_

#include <string>

#include "workers/registration.h"

namespace remote_test {

class Counter {
 public:
  explicit Counter(int base);
  int Add(int k);
  int Get() const;
  // The process the object lives in.
  int Pid() const;
  std::string Reflect(std::string s) const;
  // Throws std::out_of_range(message).
  void Throw(std::string message) const;
  void Sleep(int ms) const;
  // `s` repeated `times` times.
  std::string Repeat(std::string s, int times) const;
  // Creates the file `started`, then works until this_call::CancelRequested(), for at most 10 s.
  // Adds 1 to the value when it saw the cancellation, 1000 when it gave up.
  void WorkUntilCancelled(std::string started);

 private:
  int value_;
};

// Throws std::invalid_argument from the constructor when `fail`.
class Picky {
 public:
  explicit Picky(bool fail);
  int One() const { return 1; }
};

// Sleeps `ms` milliseconds in its constructor (one that does not return, for Stop), and in Sleep
// once it has created the file `started` (a test waits for that file to know that the call runs
// on the host, not merely that it was sent).
class Slow {
 public:
  explicit Slow(int ms);
  void Sleep(std::string started, int ms) const;
};

int Square(int x);

}  // namespace remote_test

CONCURRY_REGISTER_WORKER(remote_test::Counter, (int), Add, Get, Pid, Reflect, Throw, Sleep, Repeat,
                         WorkUntilCancelled);
CONCURRY_REGISTER_WORKER(remote_test::Picky, (bool), One);
CONCURRY_REGISTER_WORKER(remote_test::Slow, (int), Sleep);

#endif  // CONCURRY_WORKERS_REMOTE_TEST_CLASSES_H_

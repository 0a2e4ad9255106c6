// A binary that links the worker core and the thread backend only: a stateful worker on its own
// thread, and what happens when the code asks for a mode this binary does not link.
// Exits 0 when everything behaves as documented.

#include <iostream>
#include <string>

#include "futures/errors.h"
#include "workers/worker.h"

class Tally {
 public:
  int Add(int k) { return total_ += k; }

 private:
  int total_ = 0;
};

int main() {
  auto tally = concurry::Worker<Tally>::Create({.mode = concurry::Mode::kThread});
  tally.Call(&Tally::Add, 2);
  const int total = tally.Call(&Tally::Add, 40).Result();
  std::cout << "thread worker total: " << total << "\n";

  std::string error;
  try {
    concurry::Worker<Tally>::Create({.mode = concurry::Mode::kTbb});
  } catch (const concurry::InvalidOptionError& e) {
    error = e.what();
  }
  std::cout << "tbb mode here -> " << error << "\n";
  return total == 42 && error.find("@concurry//workers/tbb") != std::string::npos ? 0 : 1;
}

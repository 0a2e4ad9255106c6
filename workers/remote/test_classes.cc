#include "workers/remote/test_classes.h"

#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "workers/this_call.h"

namespace remote_test {

Counter::Counter(int base) : value_(base) {}
int Counter::Add(int k) { return value_ += k; }
int Counter::Get() const { return value_; }
int Counter::Pid() const { return static_cast<int>(getpid()); }
std::string Counter::Reflect(std::string s) const { return s; }
void Counter::Throw(std::string message) const { throw std::out_of_range(message); }
void Counter::Sleep(int ms) const { absl::SleepFor(absl::Milliseconds(ms)); }
std::string Counter::Repeat(std::string s, int times) const {
  std::string out;
  for (int i = 0; i < times; ++i) out += s;
  return out;
}

void Counter::WorkUntilCancelled(std::string started) {
  std::ofstream(started).put('1');
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!concurry::this_call::CancelRequested()) {
    if (absl::Now() >= give_up) {
      value_ += 1000;
      return;
    }
    std::this_thread::yield();  // A slice of work.
  }
  value_ += 1;
}

Picky::Picky(bool fail) {
  if (fail) throw std::invalid_argument("Picky refuses to be built");
}

Slow::Slow(int ms) { absl::SleepFor(absl::Milliseconds(ms)); }
void Slow::Sleep(std::string started, int ms) const {
  std::ofstream(started).put('1');
  absl::SleepFor(absl::Milliseconds(ms));
}

int Square(int x) { return x * x; }

}  // namespace remote_test

CONCURRY_REGISTER_FUNCTION(remote_test::Square);

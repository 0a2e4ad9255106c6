// InvalidOptionMessage(f): the message of the InvalidOptionError that f() throws, or "no error",
// for tests that compare the exact wording of an error.
//
//   EXPECT_EQ(concurry::testkit::InvalidOptionMessage([] { MakeLoadBalancer(kRandom, 0); }),
//             "MakeLoadBalancer: num_workers is 0; num_workers must be positive (>= 1)");

#ifndef CONCURRY_TESTING_ERROR_MESSAGE_H_
#define CONCURRY_TESTING_ERROR_MESSAGE_H_

#include <string>

#include "futures/errors.h"

namespace concurry::testkit {

// Other exceptions propagate, so the test fails on them.
template <typename F>
std::string InvalidOptionMessage(F&& f) {
  try {
    f();
  } catch (const InvalidOptionError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace concurry::testkit

#endif  // CONCURRY_TESTING_ERROR_MESSAGE_H_

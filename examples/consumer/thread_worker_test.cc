// Built from only @concurry//workers:core and @concurry//workers/thread (see BUILD.bazel).

#include <cstdio>
#include <exception>
#include <string>

#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace {

using ::concurry::InvalidOptionError;
using ::concurry::Mode;
using ::concurry::Worker;
using ::testing::ElementsAre;

class Tally {
 public:
  int Add(int k) { return total_ += k; }

 private:
  int total_ = 0;
};

template <typename F>
std::string InvalidOptionMessage(F f) {
  try {
    f();
  } catch (const InvalidOptionError& e) {
    return e.what();
  }
  return "no error";
}

// A worker made by a namespace-scope initializer, before main. This test is linked statically, as
// binaries are, so this file's initializers run before those of the libraries linked after it:
// the backend must have registered earlier than any ordinary initializer.
const int kMadeBeforeMain = [] {
  try {
    return Worker<Tally>::Create({.mode = Mode::kThread}).Call(&Tally::Add, 5).Result();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "creating a worker before main: %s\n", e.what());
    return -1;
  }
}();

TEST(ThreadOnlyTest, AWorkerCreatedBeforeMainFindsItsBackend) { EXPECT_EQ(kMadeBeforeMain, 5); }

TEST(ThreadOnlyTest, ThreadWorkersWork) {
  EXPECT_THAT(concurry::LinkedWorkerModes(), ElementsAre(Mode::kThread));
  auto tally = Worker<Tally>::Create({.mode = Mode::kThread});
  tally.Call(&Tally::Add, 2);
  EXPECT_EQ(tally.Call(&Tally::Add, 40).Result(), 42);
  auto tasks = concurry::TaskWorker::Create({.mode = Mode::kThread});
  EXPECT_EQ(tasks.Submit([] { return 7; }).Result(), 7);
}

TEST(ThreadOnlyTest, AModeThatIsNotLinkedFailsAtCreateNamingTheTarget) {
  EXPECT_EQ(InvalidOptionMessage([] { Worker<Tally>::Create({.mode = Mode::kTbb}); }),
            "worker options: Mode::kTbb needs @concurry//workers/tbb in deps: its backend is not "
            "linked into this binary (linked: thread); @concurry//workers and "
            "@concurry//:concurry link every backend");
  EXPECT_THAT(InvalidOptionMessage([] { Worker<Tally>::Create({.mode = Mode::kSync}); }),
              ::testing::HasSubstr("Mode::kSync needs @concurry//workers/inline in deps"));
  EXPECT_THAT(InvalidOptionMessage([] { concurry::TaskWorker::Create({.mode = Mode::kTbb}); }),
              ::testing::HasSubstr("Mode::kTbb needs @concurry//workers/tbb in deps"));
}

}  // namespace

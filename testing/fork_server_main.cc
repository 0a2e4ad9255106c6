// The main of tests that create Mode::kProcess workers: starts the fork server while the test
// binary has one thread, as a program's main should (workers/process/fork_server.h), then runs
// the tests. Use it instead of @com_google_googletest//:gtest_main.

#include "gtest/gtest.h"
#include "workers/process/fork_server.h"

int main(int argc, char** argv) {
  concurry::StartForkServer();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

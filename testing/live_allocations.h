// testkit::LiveAllocations(): how many heap allocations of the test binary are live, to check that
// an operation (a timed-out or cancelled wait, say) leaves nothing behind. Linking
// //testing:live_allocations replaces the binary's global operator new and delete with counting
// ones (malloc and free underneath). Test-only.
//
//   const int64_t before = testkit::LiveAllocations();
//   for (int i = 0; i < 50; ++i) RunAndCancelOneWait();
//   EXPECT_LE(testkit::LiveAllocations(), before);

#ifndef CONCURRY_TESTING_LIVE_ALLOCATIONS_H_
#define CONCURRY_TESTING_LIVE_ALLOCATIONS_H_

#include <cstdint>

namespace concurry::testkit {

// Returns the number of allocations made by operator new and not yet deleted, in the whole
// binary. Compare two readings taken with the same objects alive; a thread an earlier test left
// behind may free memory in between, so check for growth rather than equality unless the test
// owns every thread. Thread-safe.
int64_t LiveAllocations();

}  // namespace concurry::testkit

#endif  // CONCURRY_TESTING_LIVE_ALLOCATIONS_H_

// TestConcurrent: a stress-test driver that runs a few operations at the same time, many times
// over, so races (complete vs. cancel, callback vs. completion, wait vs. advance) get a chance to
// interleave differently on each iteration. Run such tests under --config=tsan.
//
//   std::unique_ptr<Queue> queue;
//   concurry::testkit::TestConcurrent(
//       /*iterations=*/1000,
//       /*before=*/[&] { queue = std::make_unique<Queue>(); },
//       /*after=*/[&] { EXPECT_EQ(queue->size(), 1); },
//       {[&] { queue->Push(1); }, [&] { queue->Push(2); }, [&] { queue->Pop(); }});

#ifndef CONCURRY_TESTING_TEST_CONCURRENT_H_
#define CONCURRY_TESTING_TEST_CONCURRENT_H_

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace concurry {
namespace testkit {

// Runs `iterations` iterations of: `before()` on the calling thread; then `body(i)` on each of
// `num_threads` threads (i = 0 .. num_threads - 1) at once; then, once every body has returned,
// `after()` on the calling thread. The threads are created once and reused across iterations. At
// each iteration they are released together and rendezvous once more before calling `body`, so
// the bodies start nearly together when there are enough cores (no sleeps anywhere).
//
// `before()` happens before every body of its iteration, and every body happens before `after()`.
// If a body throws, the rest still run to the end of the iteration, `after()` is skipped and the
// first exception is rethrown on the calling thread. Throws InvalidOptionError if
// `num_threads` < 1 or `iterations` < 0. Thread-safe (each call uses its own threads).
void TestConcurrent(int num_threads, int iterations, absl::FunctionRef<void()> before,
                    absl::FunctionRef<void(int thread_index)> body,
                    absl::FunctionRef<void()> after);

// As above with nothing to do before or after each iteration.
void TestConcurrent(int num_threads, int iterations,
                    absl::FunctionRef<void(int thread_index)> body);

// As above with one thread per entry of `bodies`, thread i running `bodies[i]()`: distinct
// operations racing each other (one completes, one cancels, one adds a callback...). Also throws
// InvalidOptionError if `bodies` is empty.
void TestConcurrent(int iterations, absl::FunctionRef<void()> before,
                    absl::FunctionRef<void()> after,
                    absl::Span<const absl::FunctionRef<void()>> bodies);

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_TEST_CONCURRENT_H_

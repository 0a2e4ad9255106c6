#include "testing/test_concurrent.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "gtest/gtest.h"

namespace concurry {
namespace testkit {
namespace {

TEST(TestConcurrentTest, RunsEveryThreadIndexOncePerIteration) {
  constexpr int kThreads = 4;
  constexpr int kIterations = 100;
  std::vector<std::atomic<int>> runs(kThreads);
  TestConcurrent(kThreads, kIterations,
                 [&](int i) { runs[i].fetch_add(1, std::memory_order_relaxed); });
  for (int i = 0; i < kThreads; ++i) EXPECT_EQ(runs[i].load(), kIterations) << "thread " << i;
}

TEST(TestConcurrentTest, RunsBeforeAndAfterAroundEachIteration) {
  constexpr int kThreads = 3;
  constexpr int kIterations = 50;
  std::vector<std::string> log;  // Written on the calling thread only.
  std::atomic<int> bodies{0};
  TestConcurrent(
      kThreads, kIterations,
      [&] {
        EXPECT_EQ(bodies.load(), 0);
        log.push_back("before");
      },
      [&](int) { bodies.fetch_add(1, std::memory_order_relaxed); },
      [&] {
        EXPECT_EQ(bodies.exchange(0), kThreads);
        log.push_back("after");
      });
  ASSERT_EQ(log.size(), 2u * kIterations);
  for (int i = 0; i < kIterations; ++i) {
    EXPECT_EQ(log[2 * i], "before");
    EXPECT_EQ(log[2 * i + 1], "after");
  }
}

// Each body waits until all bodies of its iteration have started: this can only finish if they
// really run at the same time.
TEST(TestConcurrentTest, RunsBodiesAtTheSameTime) {
  constexpr int kThreads = 4;
  absl::Mutex mu;
  int arrived = 0;  // Guarded by mu.
  TestConcurrent(
      kThreads, /*iterations=*/50,
      [&] {
        absl::MutexLock lock(&mu);
        arrived = 0;
      },
      [&](int) {
        absl::MutexLock lock(&mu);
        ++arrived;
        auto all_arrived = [&] { return arrived == kThreads; };
        mu.Await(absl::Condition(&all_arrived));
      },
      [] {});
}

TEST(TestConcurrentTest, RunsEachDistinctBodyOncePerIteration) {
  constexpr int kIterations = 100;
  std::atomic<int> completes{0};
  std::atomic<int> cancels{0};
  std::atomic<int> callbacks{0};
  int afters = 0;
  TestConcurrent(
      kIterations, [] {},
      [&] {
        ++afters;
        EXPECT_EQ(completes.load(), afters);
        EXPECT_EQ(cancels.load(), afters);
        EXPECT_EQ(callbacks.load(), afters);
      },
      {[&] { completes.fetch_add(1); }, [&] { cancels.fetch_add(1); },
       [&] { callbacks.fetch_add(1); }});
  EXPECT_EQ(afters, kIterations);
}

TEST(TestConcurrentTest, RethrowsBodyExceptionAfterTheIterationAndStops) {
  constexpr int kThreads = 3;
  int iteration = -1;  // Written by before() only; bodies read it after.
  std::atomic<int> bodies{0};
  int afters = 0;
  try {
    TestConcurrent(
        kThreads, /*iterations=*/10, [&] { ++iteration; },
        [&](int i) {
          bodies.fetch_add(1);
          if (iteration == 2 && i == 1) throw std::runtime_error("body 1 failed");
        },
        [&] { ++afters; });
    FAIL() << "TestConcurrent did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "body 1 failed");
  }
  EXPECT_EQ(iteration, 2);
  EXPECT_EQ(bodies.load(), 3 * kThreads);  // The other bodies of iteration 2 still ran.
  EXPECT_EQ(afters, 2);                    // after() of iteration 2 did not.
}

TEST(TestConcurrentTest, ExceptionFromBeforeStopsTheThreads) {
  std::atomic<int> bodies{0};
  int iteration = 0;
  EXPECT_THROW(TestConcurrent(
                   2, /*iterations=*/10,
                   [&] {
                     if (++iteration == 3) throw std::logic_error("setup failed");
                   },
                   [&](int) { bodies.fetch_add(1); }, [] {}),
               std::logic_error);
  EXPECT_EQ(bodies.load(), 2 * 2);
}

TEST(TestConcurrentTest, ZeroIterationsRunNothing) {
  bool ran = false;
  TestConcurrent(
      4, /*iterations=*/0, [&] { ran = true; }, [&](int) { ran = true; }, [&] { ran = true; });
  EXPECT_FALSE(ran);
}

TEST(TestConcurrentTest, RejectsInvalidArguments) {
  auto body = [](int) {};
  EXPECT_THROW(TestConcurrent(0, 1, body), InvalidOptionError);
  EXPECT_THROW(TestConcurrent(1, -1, body), InvalidOptionError);
  EXPECT_THROW(TestConcurrent(
                   1, [] {}, [] {}, {}),
               InvalidOptionError);
  try {
    TestConcurrent(-2, 1, body);
  } catch (const InvalidOptionError& e) {
    EXPECT_STREQ(e.what(), "TestConcurrent: num_threads must be >= 1, got -2");
  }
}

}  // namespace
}  // namespace testkit
}  // namespace concurry

// Stress tests for a call's single block (workers/internal/actor.h, CallBlock): the node and the
// future's state of a call share one allocation, freed by whichever of the worker (deleting the
// node) and the caller (dropping its future) comes last. Calls race dropped, cancelled, waited and
// kept futures, and Stop. Run under --config=tsan and --config=asan-ubsan in CI (tag "stress").

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "testing/test_concurrent.h"
#include "workers/options.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using testkit::TestConcurrent;

constexpr int kThreads = 4;
constexpr int kWorkers = 8;
constexpr int kCallsPerThread = 20'000;

// Its results own heap memory, so that a result destroyed with the wrong block shows up under
// ASan.
class Echo {
 public:
  std::string Repeat(int n) {
    ++calls_;
    return std::string(static_cast<size_t>(16 + n % 16), 'x');
  }
  int64_t Calls() const { return calls_; }

 private:
  int64_t calls_ = 0;
};

TEST(CallBlockStressTest, EveryFutureEndsRightWhicheverSideLetsGoLast) {
  std::vector<Worker<Echo>> workers;
  for (int i = 0; i < kWorkers; ++i) workers.push_back(Worker<Echo>::Create({.mode = Mode::kTbb}));
  std::atomic<int64_t> cancelled{0};
  TestConcurrent(kThreads, /*iterations=*/1, [&](int thread) {
    std::vector<Future<std::string>> kept;
    for (int i = 0; i < kCallsPerThread; ++i) {
      Future<std::string> future = workers[(i + thread) % kWorkers].Call(&Echo::Repeat, i);
      switch (i % 4) {
        case 0:  // Dropped at once: the worker usually frees the block.
          break;
        case 1:  // Cancelled, maybe while it runs.
          if (future.Cancel()) cancelled.fetch_add(1, std::memory_order_relaxed);
          break;
        case 2:  // Waited for: the caller frees the block.
          ASSERT_EQ(future.Result().size(), static_cast<size_t>(16 + i % 16));
          break;
        default:  // Kept past the end of the worker's run.
          kept.push_back(std::move(future));
      }
    }
    for (Future<std::string>& future : kept) EXPECT_GE(future.Result().size(), 16u);
  });
  int64_t ran = 0;
  for (Worker<Echo>& worker : workers) ran += worker.Call(&Echo::Calls).Result();
  // A cancelled call may still have run (cancelled while running); the others all ran once.
  EXPECT_GE(ran, int64_t{kThreads} * kCallsPerThread - cancelled.load());
  EXPECT_LE(ran, int64_t{kThreads} * kCallsPerThread);
}

TEST(CallBlockStressTest, CallsRacingStopEndWithAValueOrAnError) {
  constexpr int kIterations = 200;
  constexpr int kCalls = 200;
  Worker<Echo> worker;
  std::atomic<int> ended{0};
  TestConcurrent(
      kThreads, kIterations, /*before=*/
      [&] {
        worker = Worker<Echo>::Create({.mode = Mode::kTbb});
        ended = 0;
      },
      [&](int thread) {
        if (thread == 0) {
          worker.Stop(absl::Seconds(30));
          return;
        }
        for (int i = 0; i < kCalls; ++i) {
          Future<std::string> future = worker.Call(&Echo::Repeat, i);
          if (i % 2 == 0) continue;  // Dropped: the node alone keeps the block.
          try {
            EXPECT_EQ(future.Result(absl::Seconds(30)).size(), static_cast<size_t>(16 + i % 16));
          } catch (const CancelledError&) {
          } catch (const StoppedError&) {
          }
          ended.fetch_add(1, std::memory_order_relaxed);
        }
      },
      /*after=*/
      [&] {
        EXPECT_EQ(ended.load(), (kThreads - 1) * kCalls / 2);
        EXPECT_TRUE(worker.StoppedFuture().Wait(absl::Seconds(30)));
      });
}

}  // namespace
}  // namespace concurry

// Races between waiters and completions on other threads, run many times. Run under
// --config=tsan as well: a missed wake-up hangs the test, a data race is reported by TSan.

#include <cstddef>
#include <optional>
#include <vector>

#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/as_completed.h"
#include "sync/gather.h"
#include "sync/wait.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

constexpr int kIterations = 2000;

TEST(WaitStressTest, AllCompletedNeverMissesAWakeUpFromTwoThreads) {
  std::optional<Promise<int>> a;
  std::optional<Promise<int>> b;
  std::vector<Future<int>> futures;
  WaitResult result;
  testkit::TestConcurrent(
      kIterations,
      /*before=*/
      [&] {
        a.emplace();
        b.emplace();
        futures = {a->GetFuture(), b->GetFuture()};
      },
      /*after=*/
      [&] {
        EXPECT_THAT(result.done, ElementsAre(0, 1));
        EXPECT_FALSE(result.timed_out);
      },
      {[&] { result = Wait(futures); }, [&] { a->SetValue(1); }, [&] { b->SetValue(2); }});
}

TEST(WaitStressTest, FirstExceptionNeverMissesAWakeUpFromTwoThreads) {
  std::optional<Promise<int>> a;
  std::optional<Promise<int>> b;
  std::vector<Future<int>> futures;
  WaitResult result;
  testkit::TestConcurrent(
      kIterations,
      [&] {
        a.emplace();
        b.emplace();
        futures = {a->GetFuture(), b->GetFuture()};
      },
      [&] {
        EXPECT_FALSE(result.timed_out);
        EXPECT_FALSE(result.done.empty());
      },
      {[&] { result = Wait(futures, {.return_when = ReturnWhen::kFirstException}); },
       [&] { a->SetValue(1); }, [&] { futures[1].Cancel(); }});
}

TEST(WaitStressTest, GatherAndAsCompletedSeeEveryCompletionFromTwoThreads) {
  std::optional<Promise<int>> a;
  std::optional<Promise<int>> b;
  std::vector<Future<int>> futures;
  std::vector<int> gathered;
  std::vector<size_t> yielded;
  testkit::TestConcurrent(
      kIterations,
      [&] {
        a.emplace();
        b.emplace();
        futures = {a->GetFuture(), b->GetFuture()};
        yielded.clear();
      },
      [&] {
        EXPECT_THAT(gathered, ElementsAre(1, 2));
        EXPECT_THAT(yielded, UnorderedElementsAre(0, 1));
      },
      {[&] { gathered = Gather(futures); },
       [&] {
         for (auto& item : AsCompleted(futures)) yielded.push_back(item.key);
       },
       [&] { a->SetValue(1); }, [&] { b->SetValue(2); }});
}

}  // namespace
}  // namespace concurry

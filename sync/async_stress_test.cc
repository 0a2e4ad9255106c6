// Stress: threads complete the futures that coroutines wait on in WaitAsync, GatherAsync and
// AsCompletedAsync while another thread cancels the coroutines and short timeouts expire, so the
// three wakers (a completion, the timer, a cancellation) race for each suspended await. Run under
// --config=tsan and --config=asan-ubsan.

#include <atomic>
#include <cstddef>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/thread_pool_executor.h"
#include "gtest/gtest.h"
#include "sync/as_completed_async.h"
#include "sync/gather_async.h"
#include "sync/wait_async.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

constexpr int kFutures = 8;
constexpr int kCompleters = 2;

Coro<size_t> DrainCount(AsyncCompletions<size_t, int> completions) {
  size_t seen = 0;
  while (true) {
    std::optional<Completion<size_t, int>> item = co_await completions.Next();
    if (!item.has_value()) break;
    EXPECT_EQ(item->outcome.value(), static_cast<int>(item->key));
    ++seen;
  }
  co_return seen;
}

// Returns whether `future` ended as `ok` says or with one of the errors a race may give.
template <typename T, typename Check>
void ExpectValueOrRaceError(Future<T>& future, Check ok) {
  try {
    ok(std::move(future).Result());
  } catch (const CancelledError&) {
  } catch (const TimeoutError&) {
  }
}

TEST(AsyncSyncStressTest, CompletionsTimeoutsAndCancellationsRaceForEveryAwait) {
  ThreadPoolExecutor pool(2);
  std::vector<Promise<int>> promises;
  std::optional<Future<WaitResult>> waited;
  std::optional<Future<std::vector<int>>> gathered;
  std::optional<Future<size_t>> drained;
  std::atomic<int> refused{0};
  int iteration = 0;
  testkit::TestConcurrent(
      /*iterations=*/1000,
      /*before=*/
      [&] {
        ++iteration;
        promises = std::vector<Promise<int>>(kFutures);
        std::vector<Future<int>> futures;
        for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
        // Every third iteration has a timeout short enough to race the completions.
        const absl::Duration timeout =
            iteration % 3 == 0 ? absl::Microseconds(50) : absl::InfiniteDuration();
        waited = Spawn(pool, WaitAsync(futures, {.timeout = timeout}));
        gathered = Spawn(pool, GatherAsync(futures, {.timeout = timeout}));
        drained = Spawn(pool, DrainCount(AsCompletedAsync(futures, {.timeout = timeout})));
      },
      /*after=*/
      [&] {
        ExpectValueOrRaceError(*waited, [](const WaitResult& r) {
          if (!r.timed_out) {
            EXPECT_EQ(r.done.size(), static_cast<size_t>(kFutures));
          }
        });
        ExpectValueOrRaceError(*gathered, [](const std::vector<int>& values) {
          ASSERT_EQ(values.size(), static_cast<size_t>(kFutures));
          for (int i = 0; i < kFutures; ++i) EXPECT_EQ(values[i], i);
        });
        ExpectValueOrRaceError(*drained, [](size_t n) { EXPECT_EQ(n, size_t{kFutures}); });
        // Neither cancelling the coroutines nor their timeouts cancelled an input future.
        EXPECT_EQ(refused.exchange(0), 0);
      },
      {[&] {
         for (int i = 0; i < kFutures; i += kCompleters) {
           if (!promises[i].SetValue(i)) refused.fetch_add(1);
         }
       },
       [&] {
         for (int i = 1; i < kFutures; i += kCompleters) {
           if (!promises[i].SetValue(i)) refused.fetch_add(1);
         }
       },
       [&] {
         if (iteration % 2 == 0) {
           waited->Cancel();
           gathered->Cancel();
           drained->Cancel();
         }
       }});
}

TEST(AsyncSyncStressTest, ManyCoroutinesWaitOnSharedFuturesWhileThreadsCompleteThem) {
  ThreadPoolExecutor pool(2);
  constexpr int kWaiters = 16;
  std::vector<Promise<int>> promises;
  std::vector<Future<std::vector<int>>> outs;
  std::vector<char> cancelled(kWaiters, 0);
  testkit::TestConcurrent(
      /*iterations=*/300,
      /*before=*/
      [&] {
        promises = std::vector<Promise<int>>(kFutures);
        std::vector<Future<int>> futures;
        for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
        outs.clear();
        cancelled.assign(kWaiters, 0);
        for (int w = 0; w < kWaiters; ++w) outs.push_back(Spawn(pool, GatherAsync(futures)));
      },
      /*after=*/
      [&] {
        for (int w = 0; w < kWaiters; ++w) {
          if (cancelled[w]) {
            EXPECT_THROW(outs[w].Result(), CancelledError);
          } else {
            EXPECT_EQ(outs[w].Result().size(), static_cast<size_t>(kFutures));
          }
        }
      },
      {[&] {
         for (int i = 0; i < kFutures; i += 2) promises[i].SetValue(i);
       },
       [&] {
         for (int i = 1; i < kFutures; i += 2) promises[i].SetValue(i);
       },
       [&] {
         // A cancellation that wins ends the coroutine with CancelledError; one that comes
         // after the gather ended changes nothing.
         for (int w = 0; w < kWaiters; w += 4) cancelled[w] = outs[w].Cancel() ? 1 : 0;
       }});
}

}  // namespace
}  // namespace concurry

// Races of the coroutine wake protocol: completions of awaited futures, cancellations of the
// coroutine and its steps running on a multi-threaded executor, all at once. Run under TSan.

#include <atomic>
#include <memory>
#include <optional>
#include <utility>

#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/thread_pool_executor.h"
#include "gtest/gtest.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

using ::concurry::testkit::TestConcurrent;

// A coroutine parameter that completes `*gone` when the frame holding it is destroyed, whether the
// coroutine ran or was dropped before its first step. The deleter owns the promise.
std::shared_ptr<void> FrameGone(Future<void>* gone) {
  auto done = std::make_shared<Promise<void>>();
  *gone = done->GetFuture();
  return std::shared_ptr<void>(nullptr, [done](void*) { done->SetValue(); });
}

Coro<int> Leaf(Future<int> in) {
  const int v = co_await std::move(in);
  co_return v;
}

Coro<int> TwoAwaits(Future<int> first, Future<int> second, std::shared_ptr<void> frame_gone) {
  const int a = co_await Leaf(std::move(first));
  co_await Yield();
  const int b = co_await std::move(second);
  co_return a + b;
}

TEST(CoroStressTest, CompletionsRaceCancellationOnAThreadPool) {
  ThreadPoolExecutor pool(2);
  std::optional<Promise<int>> first;
  std::optional<Promise<int>> second;
  Future<void> frame_gone;
  Future<int> out;
  int values = 0;
  int cancels = 0;
  TestConcurrent(
      /*iterations=*/2000,
      /*before=*/
      [&] {
        first.emplace();
        second.emplace();
        out =
            Spawn(pool, TwoAwaits(first->GetFuture(), second->GetFuture(), FrameGone(&frame_gone)));
      },
      /*after=*/
      [&] {
        // Every coroutine ends, whichever won, and its frame is destroyed.
        frame_gone.Result();
        try {
          EXPECT_EQ(out.Result(), 3);
          ++values;
        } catch (const CancelledError&) {
          ++cancels;
        }
      },
      {[&] { first->SetValue(1); }, [&] { second->SetValue(2); }, [&] { out.Cancel(); }});
  EXPECT_EQ(values + cancels, 2000);
}

TEST(CoroStressTest, SleepsRaceCancellation) {
  ThreadPoolExecutor pool(2);
  Future<void> frame_gone;
  Future<void> out;
  TestConcurrent(
      /*iterations=*/500,
      /*before=*/
      [&] {
        auto coro = [](std::shared_ptr<void> gone) -> Coro<void> {
          co_await SleepFor(absl::Microseconds(50));
          co_await SleepFor(absl::Hours(1));  // Only cancellation ends this one.
        };
        out = Spawn(pool, coro(FrameGone(&frame_gone)));
      },
      /*after=*/
      [&] {
        frame_gone.Result();
        EXPECT_THROW(out.Result(), CancelledError);
      },
      {[&] { out.Cancel(); }, [&] { out.Cancel(); }});
}

}  // namespace
}  // namespace concurry

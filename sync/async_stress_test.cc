// Stress: threads complete the futures that coroutines wait on in WaitAsync, GatherAsync and
// AsCompletedAsync while another thread cancels the coroutines and short timeouts expire, so the
// three wakers (a completion, the timer, a cancellation) race for each suspended await. In most
// iterations some inputs never complete, so the cancel or the timer is the only way out: a lost
// wake leaves a coroutine suspended (caught by counting frame ends with a bound), a double wake
// resumes a finished frame (caught by ASan / TSan). Live heap allocations are counted across the
// iterations: a callback left on a future or a timer entry left behind shows up. Run under
// --config=tsan and --config=asan-ubsan.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/thread_pool_executor.h"
#include "futures/timer.h"
#include "gtest/gtest.h"
#include "sync/as_completed_async.h"
#include "sync/async_testing.h"
#include "sync/gather_async.h"
#include "sync/wait_async.h"
#include "testing/live_allocations.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

constexpr int kFresh = 6;    // Futures completed by the completer threads in every iteration.
constexpr int kNever = 2;    // Futures that never complete, shared by every iteration.
constexpr int kWaiters = 3;  // WaitAsync, GatherAsync, AsCompletedAsync.

// Counts coroutine frames that ended; waits, with a bound, until enough have.
class FrameEnds {
 public:
  void Add() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ++ended_;
  }
  // Returns whether `count` frames ended within `bound`.
  bool AwaitAtLeast(int64_t count, absl::Duration bound) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_ >= count; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), bound);
  }

 private:
  absl::Mutex mu_;
  int64_t ended_ ABSL_GUARDED_BY(mu_) = 0;
};

// A coroutine parameter that counts its frame's end (whichever way the frame goes: run to the
// end, unwound by a cancellation, or destroyed before its first step). Move-only.
class EndGuard {
 public:
  explicit EndGuard(FrameEnds* ends) : ends_(ends) {}
  EndGuard(EndGuard&& other) noexcept : ends_(std::exchange(other.ends_, nullptr)) {}
  EndGuard& operator=(EndGuard&&) = delete;
  ~EndGuard() {
    if (ends_ != nullptr) ends_->Add();
  }

 private:
  FrameEnds* ends_;
};

template <typename T>
Coro<T> Guarded(EndGuard guard, Coro<T> inner) {
  co_return co_await std::move(inner);
}

// Drains the completions; the fresh futures hold their index as their value.
Coro<size_t> DrainCount(AsyncCompletions<size_t, int> completions, EndGuard guard) {
  size_t seen = 0;
  while (true) {
    std::optional<Completion<size_t, int>> item = co_await completions.Next();
    if (!item.has_value()) break;
    EXPECT_LT(item->key, size_t{kFresh});
    EXPECT_EQ(item->outcome.value(), static_cast<int>(item->key));
    ++seen;
  }
  co_return seen;
}

// One iteration's plan.
struct Plan {
  bool partial = false;  // The never-completing futures are part of the input.
  absl::Duration timeout = absl::InfiniteDuration();
  bool cancel = false;  // A thread cancels the three coroutines.
  bool short_timeout() const { return timeout < absl::Hours(1); }
};

Plan PlanFor(int iteration) {
  const absl::Duration short_timeout = absl::Microseconds(20 + (iteration * 7) % 60);
  switch (iteration % 7) {
    case 0:  // Completions only.
      return {};
    case 1:
      return {.timeout = short_timeout, .cancel = true};
    case 2:  // Only the cancel ends it.
      return {.partial = true, .cancel = true};
    case 3:  // Only the timer ends it.
      return {.partial = true, .timeout = short_timeout};
    case 4:  // Only the cancel ends it; the timer entry must go with the wait.
      return {.partial = true, .timeout = absl::Hours(1), .cancel = true};
    case 5:
      return {.partial = true, .timeout = short_timeout, .cancel = true};
    default:
      return {.cancel = true};
  }
}

// Checks how one coroutine ended: CancelledError exactly when its Cancel() won; else its value
// (checked by `ok`), or TimeoutError only when a short timeout was set; a partial input cannot
// give a value.
template <typename T, typename Check>
void ExpectEnd(const Plan& plan, bool cancel_won, Future<T>& future, Check ok) {
  if (cancel_won) {
    EXPECT_THROW(future.Result(), CancelledError);
    return;
  }
  try {
    ok(future.Result());
  } catch (const TimeoutError&) {
    EXPECT_TRUE(plan.short_timeout()) << "TimeoutError with no short timeout";
  } catch (const CancelledError&) {
    ADD_FAILURE() << "CancelledError though no cancel won";
  }
}

// Runs `iterations` iterations on a pool of its own; returns once every thread it used has ended.
void RunIterations(int iterations, const std::vector<Future<int>>& never, FrameEnds& ends,
                   int64_t& expected_ends) {
  ThreadPoolExecutor pool(2);
  std::vector<Promise<int>> promises;
  std::optional<Future<WaitResult>> waited;
  std::optional<Future<std::vector<int>>> gathered;
  std::optional<Future<size_t>> drained;
  bool cancel_won[kWaiters] = {false, false, false};
  std::atomic<int> refused{0};
  Plan plan;
  int iteration = 0;
  bool broken = false;  // A frame never ended: nothing more can be checked.
  testkit::TestConcurrent(
      iterations,
      /*before=*/
      [&] {
        if (broken) return;
        plan = PlanFor(iteration++);
        promises = std::vector<Promise<int>>(kFresh);
        std::vector<Future<int>> futures;
        for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
        if (plan.partial) futures.insert(futures.end(), never.begin(), never.end());
        WaitOptions wait_options;
        wait_options.timeout = plan.timeout;
        GatherOptions gather_options;
        gather_options.timeout = plan.timeout;
        AsCompletedOptions as_completed_options;
        as_completed_options.timeout = plan.timeout;
        waited = Spawn(pool, Guarded(EndGuard(&ends), WaitAsync(futures, wait_options)));
        gathered = Spawn(pool, Guarded(EndGuard(&ends), GatherAsync(futures, gather_options)));
        drained = Spawn(
            pool, DrainCount(AsCompletedAsync(futures, as_completed_options), EndGuard(&ends)));
        expected_ends += kWaiters;
        for (bool& won : cancel_won) won = false;
      },
      /*after=*/
      [&] {
        if (broken) return;
        if (!ends.AwaitAtLeast(expected_ends, absl::Seconds(30))) {
          broken = true;
          ADD_FAILURE() << "a coroutine never ended (lost wake) at iteration " << iteration - 1;
          return;
        }
        const bool must_fail = plan.partial;
        ExpectEnd(plan, cancel_won[0], *waited, [&](const WaitResult& r) {
          if (must_fail || r.timed_out) {
            EXPECT_TRUE(r.timed_out);
            EXPECT_TRUE(plan.short_timeout());
            for (size_t i : r.done) EXPECT_LT(i, size_t{kFresh});
          } else {
            EXPECT_EQ(r.done.size(), size_t{kFresh});
          }
        });
        ExpectEnd(plan, cancel_won[1], *gathered, [&](const std::vector<int>& values) {
          EXPECT_FALSE(must_fail);
          ASSERT_EQ(values.size(), size_t{kFresh});
          for (int i = 0; i < kFresh; ++i) EXPECT_EQ(values[i], i);
        });
        ExpectEnd(plan, cancel_won[2], *drained, [&](size_t n) {
          EXPECT_FALSE(must_fail);
          EXPECT_EQ(n, size_t{kFresh});
        });
        // Neither the cancellations nor the timeouts cancelled an input future.
        EXPECT_EQ(refused.exchange(0), 0);
        if (plan.partial && !plan.short_timeout()) {
          EXPECT_TRUE(cancel_won[0] && cancel_won[1] && cancel_won[2]) << "nothing else ends it";
        }
        waited.reset();
        gathered.reset();
        drained.reset();
        promises.clear();
      },
      {[&] {
         if (broken) return;
         for (int i = 0; i < kFresh; i += 2) {
           if (!promises[i].SetValue(i)) refused.fetch_add(1);
         }
       },
       [&] {
         if (broken) return;
         for (int i = 1; i < kFresh; i += 2) {
           if (!promises[i].SetValue(i)) refused.fetch_add(1);
         }
       },
       [&] {
         if (broken || !plan.cancel) return;
         cancel_won[0] = waited->Cancel();
         cancel_won[1] = gathered->Cancel();
         cancel_won[2] = drained->Cancel();
       }});
}

// Returns once the process-wide timer ran every callback due before now (a fired timeout's
// callback may still hold its coroutine's control for a moment after the coroutine ended): it
// runs them one at a time in deadline order and destroys each before the next. Twice, so that
// the first flush's own callback is gone too.
void FlushRealTimer() {
  for (int round = 0; round < 2; ++round) {
    absl::Notification flushed;
    Timer& timer = Timer::Default();
    timer.Schedule(timer.clock().Now(), [&flushed] { flushed.Notify(); });
    flushed.WaitForNotification();
  }
}

TEST(AsyncSyncStressTest, EveryAwaitEndsOnceByItsOnlyWayOutAndLeavesNothingBehind) {
  std::vector<Promise<int>> never_promises(kNever);
  std::vector<Future<int>> never;
  for (Promise<int>& p : never_promises) never.push_back(p.GetFuture());
  FrameEnds ends;
  int64_t expected_ends = 0;
  // Warm-up: the real clock's timer and its thread, and other state made on first use.
  RunIterations(/*iterations=*/14, never, ends, expected_ends);
  FlushRealTimer();
  const int64_t before = testkit::LiveAllocations();
  RunIterations(/*iterations=*/1000, never, ends, expected_ends);
  FlushRealTimer();
  // Every callback registered on the never-completing futures and every timer entry is gone.
  // Only growth counts (a thread of the warm-up may still free its state); a leak adds one per
  // iteration or more.
  EXPECT_LE(testkit::LiveAllocations(), before);
  for (Promise<int>& p : never_promises) EXPECT_FALSE(p.IsCancelled());
}

TEST(AsyncSyncStressTest, ManyCoroutinesWaitOnSharedFuturesWhileThreadsCompleteThem) {
  ThreadPoolExecutor pool(2);
  constexpr int kManyWaiters = 16;
  std::vector<Promise<int>> promises;
  std::vector<Future<std::vector<int>>> outs;
  std::vector<char> cancelled(kManyWaiters, 0);
  testkit::TestConcurrent(
      /*iterations=*/300,
      /*before=*/
      [&] {
        promises = std::vector<Promise<int>>(kFresh);
        std::vector<Future<int>> futures;
        for (Promise<int>& p : promises) futures.push_back(p.GetFuture());
        outs.clear();
        cancelled.assign(kManyWaiters, 0);
        for (int w = 0; w < kManyWaiters; ++w) outs.push_back(Spawn(pool, GatherAsync(futures)));
      },
      /*after=*/
      [&] {
        for (int w = 0; w < kManyWaiters; ++w) {
          if (cancelled[w]) {
            EXPECT_THROW(outs[w].Result(), CancelledError);
          } else {
            EXPECT_EQ(outs[w].Result().size(), static_cast<size_t>(kFresh));
          }
        }
      },
      {[&] {
         for (int i = 0; i < kFresh; i += 2) promises[i].SetValue(i);
       },
       [&] {
         for (int i = 1; i < kFresh; i += 2) promises[i].SetValue(i);
       },
       [&] {
         // A cancellation that wins ends the coroutine with CancelledError; one that comes
         // after the gather ended changes nothing.
         for (int w = 0; w < kManyWaiters; w += 4) cancelled[w] = outs[w].Cancel() ? 1 : 0;
       }});
}

}  // namespace
}  // namespace concurry

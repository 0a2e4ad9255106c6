// Stress tests for Future<T> / Promise<T>: completion, cancellation, callbacks and waits racing
// each other, and a million futures handed from a producer thread to a consumer thread. Run under
// --config=tsan in CI (tag "stress").

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

using testkit::TestConcurrent;

// Iterations of each race below; about 1 s each, also under TSan.
constexpr int kRaceIterations = 20'000;

// A million futures in total, in batches handed from one thread to another.
constexpr int kHandoffBatch = 1'000;
constexpr int kHandoffBatches = 1'000;

TEST(FutureStressTest, ExactlyOneOfSetValueAndCancelWinsAndEveryCallbackRunsOnce) {
  std::unique_ptr<Promise<int>> promise;
  Future<int> future;
  std::atomic<bool> set_won{false};
  std::atomic<bool> cancel_won{false};
  std::atomic<int> done_callbacks{0};
  std::atomic<int> cancel_callbacks{0};
  std::atomic<bool> waiter_saw_done{false};
  std::atomic<bool> timed_waiter_consistent{false};
  int iteration = 0;

  TestConcurrent(
      kRaceIterations,
      /*before=*/
      [&] {
        promise = std::make_unique<Promise<int>>();
        future = promise->GetFuture();
        promise->OnCancel([&] { cancel_callbacks.fetch_add(1, std::memory_order_relaxed); });
        set_won = false;
        cancel_won = false;
        done_callbacks = 0;
        cancel_callbacks = 0;
        waiter_saw_done = false;
        timed_waiter_consistent = false;
        ++iteration;
      },
      /*after=*/
      [&] {
        ASSERT_NE(set_won.load(), cancel_won.load()) << "iteration " << iteration;
        EXPECT_EQ(done_callbacks.load(), 2);
        EXPECT_EQ(cancel_callbacks.load(), cancel_won.load() ? 1 : 0);
        EXPECT_TRUE(waiter_saw_done.load());
        EXPECT_TRUE(timed_waiter_consistent.load());
        EXPECT_EQ(future.Cancelled(), cancel_won.load());
        if (set_won) {
          EXPECT_EQ(future.Result(), 1);
        } else {
          EXPECT_THROW(future.Result(), CancelledError);
        }
      },
      {
          [&] { set_won = promise->SetValue(1); },
          [&] { cancel_won = future.Cancel(); },
          [&] {
            future.AddDoneCallback([&] { done_callbacks.fetch_add(1); });
            future.AddDoneCallback([&](const Future<int>& f) {
              if (f.Done()) done_callbacks.fetch_add(1);
            });
          },
          [&] { waiter_saw_done = future.Wait() && future.Done(); },
          [&] {
            const bool done = future.Wait(absl::Microseconds(iteration % 20));
            timed_waiter_consistent = !done || future.Done();
          },
      });
}

TEST(FutureStressTest, RemovedCallbackRunsNeverAndKeptCallbackRunsOnce) {
  std::unique_ptr<Promise<int>> promise;
  AnyFuture future;
  std::atomic<int> calls{0};
  bool registered = false;
  bool removed = false;

  TestConcurrent(
      kRaceIterations,
      /*before=*/
      [&] {
        promise = std::make_unique<Promise<int>>();
        future = promise->GetFuture();
        calls = 0;
      },
      /*after=*/
      [&] {
        // Not registered (already done): never called. Removed: never called. Else: once.
        EXPECT_EQ(calls.load(), registered && !removed ? 1 : 0);
      },
      {
          [&] { promise->SetValue(1); },
          [&] {
            AnyFuture::CallbackHandle handle = future.AddCallbackIfPending([&] { ++calls; });
            registered = handle != nullptr;
            removed = registered && future.RemoveCallback(handle);
          },
      });
}

TEST(FutureStressTest, ThenRacingCompletionOrCancelRunsOnceWithTheWinner) {
  std::unique_ptr<Promise<int>> promise;
  Future<int> future;
  Future<int> derived;
  std::atomic<int> continuation_calls{0};
  std::atomic<bool> set_won{false};
  int iteration = 0;

  TestConcurrent(
      kRaceIterations,
      /*before=*/
      [&] {
        promise = std::make_unique<Promise<int>>();
        future = promise->GetFuture();
        derived = Future<int>();
        continuation_calls = 0;
        ++iteration;
      },
      /*after=*/
      [&] {
        if (set_won) {
          EXPECT_EQ(derived.Result(), iteration + 1);
          EXPECT_EQ(continuation_calls.load(), 1);
        } else {
          EXPECT_THROW(derived.Result(), CancelledError);
          EXPECT_EQ(continuation_calls.load(), 0);
        }
      },
      {
          [&] { set_won = promise->SetValue(iteration); },
          [&] { future.Cancel(); },
          [&] {
            derived = future.Then([&](int x) {
              continuation_calls.fetch_add(1);
              return x + 1;
            });
          },
      });
}

TEST(FutureStressTest, EveryWaiterWakesWhenTheFutureCompletes) {
  constexpr int kWaiters = 3;
  std::unique_ptr<Promise<void>> promise;
  Future<void> future;
  std::atomic<int> woke{0};

  TestConcurrent(
      /*num_threads=*/kWaiters + 1, kRaceIterations,
      /*before=*/
      [&] {
        promise = std::make_unique<Promise<void>>();
        future = promise->GetFuture();
        woke = 0;
      },
      /*body=*/
      [&](int thread) {
        if (thread == 0) {
          promise->SetValue();
        } else if (future.Wait()) {
          woke.fetch_add(1);
        }
      },
      /*after=*/[&] { EXPECT_EQ(woke.load(), kWaiters); });
}

TEST(FutureStressTest, TimedWaitsOnAFakeClockNeverMissCompletionOrDeadline) {
  std::unique_ptr<testkit::FakeClock> clock;
  std::unique_ptr<Promise<int>> promise;
  Future<int> future;
  std::atomic<bool> waited_consistently{false};
  std::atomic<bool> result_consistently{false};

  TestConcurrent(
      kRaceIterations,
      /*before=*/
      [&] {
        future = Future<int>();
        clock = std::make_unique<testkit::FakeClock>();
        promise = std::make_unique<Promise<int>>();
        future = promise->GetFuture();
        waited_consistently = false;
        result_consistently = false;
      },
      /*after=*/
      [&] {
        // Every wait returned (else the test would hang): by value or by deadline.
        EXPECT_TRUE(waited_consistently.load());
        EXPECT_TRUE(result_consistently.load());
        EXPECT_EQ(clock->NumWaiters(), 0);
      },
      {
          [&] { promise->SetValue(5); },
          [&] { clock->Advance(absl::Milliseconds(10)); },
          [&] {
            const bool done = future.Wait(absl::Milliseconds(10), *clock);
            waited_consistently = !done || future.Done();
          },
          [&] {
            try {
              result_consistently = future.Result(absl::Milliseconds(10), *clock) == 5;
            } catch (const TimeoutError&) {
              result_consistently = true;
            }
          },
      });
}

TEST(FutureStressTest, ProducerHandsAMillionFuturesToAConsumer) {
  std::vector<Promise<int>> promises;
  std::vector<Future<int>> futures;
  // Slot i is written once: by the consumer, or by a callback on whichever thread completes
  // future i. Every body has returned (callbacks included) before after() reads the slots.
  std::vector<int> received;
  std::atomic<int> callbacks{0};
  int batches = 0;

  TestConcurrent(
      kHandoffBatches,
      /*before=*/
      [&] {
        promises.clear();
        futures.clear();
        promises.resize(kHandoffBatch);
        futures.reserve(kHandoffBatch);
        for (const Promise<int>& p : promises) futures.push_back(p.GetFuture());
        received.assign(kHandoffBatch, -1);
        callbacks = 0;
      },
      /*after=*/
      [&] {
        int64_t sum = 0;
        for (int i = 0; i < kHandoffBatch; ++i) {
          ASSERT_EQ(received[i], i);
          sum += received[i];
        }
        EXPECT_EQ(sum, int64_t{kHandoffBatch} * (kHandoffBatch - 1) / 2);
        EXPECT_EQ(callbacks.load(), kHandoffBatch / 2);
        ++batches;
      },
      {
          [&] {
            for (int i = 0; i < kHandoffBatch; ++i) promises[i].SetValue(i);
          },
          [&] {
            for (int i = 0; i < kHandoffBatch; ++i) {
              if (i % 2 == 0) {
                received[i] = std::move(futures[i]).Result();
              } else {
                int* slot = &received[i];
                futures[i].AddDoneCallback([slot, &callbacks](const Future<int>& f) {
                  *slot = f.Result();
                  callbacks.fetch_add(1, std::memory_order_relaxed);
                });
              }
            }
          },
      });
  EXPECT_EQ(batches, kHandoffBatches);
}

}  // namespace
}  // namespace concurry

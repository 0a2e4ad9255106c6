// Stress tests of Stream: random windows, orders, follow-ups, errors, early breaks, and Cancel /
// Add racing the consumer and the tasks. Tagged "stress"; meant for --config=tsan.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <random>
#include <ranges>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/tbb_executor.h"
#include "gtest/gtest.h"
#include "sync/stream.h"
#include "testing/test_concurrent.h"

namespace concurry {
namespace {

TEST(StreamStressTest, RandomScenariosYieldEveryResultExactlyOnce) {
  TbbExecutor executor(4);
  std::mt19937 random(12345);
  for (int round = 0; round < 300; ++round) {
    const int n = std::uniform_int_distribution<int>(0, 400)(random);
    const int max_in_flight = std::uniform_int_distribution<int>(1, 12)(random);
    const Order order = random() % 2 == 0 ? Order::kCompletion : Order::kInput;
    const bool follow_ups = random() % 2 == 0;
    const int fail_at = random() % 3 == 0 ? std::uniform_int_distribution<int>(0, n)(random) : -1;
    const bool collect = random() % 2 == 0;
    const int break_at = random() % 4 == 0 ? std::uniform_int_distribution<int>(0, n)(random) : -1;
    SCOPED_TRACE(::testing::Message()
                 << "round " << round << " n=" << n << " window=" << max_in_flight
                 << " ordered=" << (order == Order::kInput) << " follow_ups=" << follow_ups
                 << " fail_at=" << fail_at << " collect=" << collect << " break_at=" << break_at);
    // Inputs >= 1000000 are follow-ups of input - 1000000.
    auto fn = [follow_ups, fail_at](int x, StreamContext<int>& context) {
      if (x == fail_at) throw std::domain_error("planned");
      if (follow_ups && x < 1000000 && x % 3 == 0) context.Enqueue(x + 1000000);
      return x;
    };
    std::multiset<int> seen;
    int errors = 0;
    bool threw = false;
    int64_t last_index = -1;
    try {
      for (auto& item :
           Stream(executor, std::views::iota(0, n), fn,
                  {.max_in_flight = max_in_flight,
                  .order = order,
                  .on_error = collect ? ErrorPolicy::kCollect : ErrorPolicy::kStopOnError})) {
        if (order == Order::kInput) {
          ASSERT_EQ(item.index, last_index + 1);
        }
        last_index = item.index;
        if (item.ok()) {
          seen.insert(item.value());
        } else {
          ++errors;
          EXPECT_THROW(item.value(), std::domain_error);
        }
        if (static_cast<int>(seen.size()) + errors == break_at) break;
      }
    } catch (const std::domain_error&) {
      threw = true;
    }
    const bool broke = break_at >= 0 && static_cast<int>(seen.size()) + errors == break_at;
    if (fail_at >= 0 && fail_at < n && !collect && !broke) {
      EXPECT_TRUE(threw);
    }
    if (threw || broke) continue;
    std::multiset<int> expected;
    for (int x = 0; x < n; ++x) {
      if (x == fail_at) continue;
      expected.insert(x);
      if (follow_ups && x % 3 == 0) expected.insert(x + 1000000);
    }
    EXPECT_EQ(seen, expected);
    EXPECT_EQ(errors, fail_at >= 0 && fail_at < n ? 1 : 0);
  }
}

// Long runs of short inputs, so that drainers and the consumer take queued inputs in groups,
// mixed with inputs that block in a BlockingRegion (their group gives back what it holds) or run
// long enough to end their group, follow-ups added from the function and from the loop, and a
// failure: every result still comes exactly once, in input order under Order::kInput.
TEST(StreamStressTest, RunGroupsYieldEveryResultExactlyOnce) {
  TbbExecutor executor(2);
  std::mt19937 random(2024);
  for (int round = 0; round < 40; ++round) {
    const int n = std::uniform_int_distribution<int>(500, 3000)(random);
    const int max_in_flight = std::array<int, 4>{8, 17, 32, 64}[random() % 4];
    const Order order = random() % 2 == 0 ? Order::kCompletion : Order::kInput;
    const int fail_at = random() % 3 == 0 ? std::uniform_int_distribution<int>(0, n)(random) : -1;
    const bool collect = random() % 2 == 0;
    const bool stops = fail_at >= 0 && fail_at < n && !collect;
    SCOPED_TRACE(::testing::Message()
                 << "round " << round << " n=" << n << " window=" << max_in_flight << " ordered="
                 << (order == Order::kInput) << " fail_at=" << fail_at << " collect=" << collect);
    // Inputs >= 1000000 are follow-ups (of input - 1000000 from the function, of input - 2000000
    // from the loop).
    // Some inputs wait, without a BlockingRegion, for the next input to start (unless a stop may
    // skip it): the groups must let another thread run it. Not on the consumer's thread (when it
    // helps): there it would hold the consumer, who may have to make room for the next input.
    std::vector<std::atomic<bool>> began(n + 1);
    std::atomic<int> stuck{0};
    const std::thread::id consumer = std::this_thread::get_id();
    auto fn = [fail_at, n, stops, consumer, &began, &stuck](int x, StreamContext<int>& context) {
      if (x < n) began[x].store(true);
      if (!stops && x % 173 == 11 && x + 1 < n && std::this_thread::get_id() != consumer) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!began[x + 1].load()) {
          if (std::chrono::steady_clock::now() > until) {
            ++stuck;
            break;
          }
          std::this_thread::yield();
        }
      }
      if (x == fail_at) throw std::domain_error("planned");
      if (x < 1000000 && x % 97 == 0) context.Enqueue(x + 1000000);
      if (x % 211 == 5) {
        BlockingRegion region;
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      } else if (x % 151 == 7) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(40);
        while (std::chrono::steady_clock::now() < until) {
        }
      }
      return x;
    };
    std::multiset<int> seen;
    int errors = 0;
    bool threw = false;
    int64_t last_index = -1;
    try {
      auto stream =
          Stream(executor, std::views::iota(0, n), fn,
                 {.max_in_flight = max_in_flight,
                  .order = order,
                  .on_error = collect ? ErrorPolicy::kCollect : ErrorPolicy::kStopOnError});
      for (auto& item : stream) {
        if (order == Order::kInput) {
          ASSERT_EQ(item.index, last_index + 1);
        }
        last_index = item.index;
        if (!item.ok()) {
          ++errors;
          continue;
        }
        const int x = item.value();
        seen.insert(x);
        if (x < 1000000 && x % 89 == 0) {
          const bool added = stream.Add(x + 2000000);
          if (!stops) {
            EXPECT_TRUE(added);  // Refused once the failure stopped the stream.
          }
        }
      }
    } catch (const std::domain_error&) {
      threw = true;
    }
    EXPECT_EQ(stuck.load(), 0);
    std::multiset<int> expected;
    for (int x = 0; x < n; ++x) {
      if (x % 89 == 0 && x != fail_at) expected.insert(x + 2000000);
      if (x == fail_at) continue;
      expected.insert(x);
      if (x % 97 == 0) expected.insert(x + 1000000);
    }
    if (stops) {
      // What came before the stop is valid and came once.
      EXPECT_TRUE(threw);
      for (int x : seen) {
        EXPECT_EQ(seen.count(x), 1u) << x;
        EXPECT_EQ(expected.count(x), 1u) << x;
      }
      continue;
    }
    EXPECT_EQ(seen, expected);
    EXPECT_EQ(errors, fail_at >= 0 && fail_at < n ? 1 : 0);
  }
}

TEST(StreamStressTest, CancelAndAddRaceTheConsumerAndTheTasks) {
  TbbExecutor executor(3);
  std::mt19937 random(777);
  std::optional<ResultStream<int, int>> stream;
  std::optional<absl::Notification> reached;  // The consumer reached `cancel_at` items (or ended).
  int cancel_at = 0;
  std::atomic<int> consumed{0};
  std::atomic<int> added{0};
  std::atomic<bool> cancelled_error{false};
  std::atomic<bool> other_error{false};
  int completed_runs = 0;
  int cancelled_runs = 0;
  testkit::TestConcurrent(
      /*iterations=*/300,
      /*before=*/
      [&] {
        consumed = 0;
        added = 0;
        cancelled_error = false;
        cancel_at = std::uniform_int_distribution<int>(0, 260)(random);
        reached.emplace();
        stream.emplace(Stream(executor, std::views::iota(0, 200), [](int x) { return x; },
                              {.max_in_flight = 5}));
      },
      /*after=*/
      [&] {
        EXPECT_FALSE(other_error.load());
        if (cancelled_error.load()) {
          ++cancelled_runs;
        } else {
          // Cancel came after the end: every input and accepted follow-up was yielded.
          EXPECT_EQ(consumed.load(), 200 + added.load());
          ++completed_runs;
        }
        stream.reset();
      },
      {[&] {
         try {
           for (auto& item : *stream) {
             item.value();
             if (consumed.fetch_add(1) + 1 == cancel_at) reached->Notify();
           }
         } catch (const CancelledError&) {
           cancelled_error = true;
         } catch (...) {
           other_error = true;
         }
         if (!reached->HasBeenNotified()) reached->Notify();
       },
       [&] {
         reached->WaitForNotification();
         stream->Cancel();
       },
       [&] {
         for (int i = 0; i < 20; ++i) {
           if (stream->Add(1000 + i)) added.fetch_add(1);
         }
       }});
  EXPECT_GT(completed_runs, 0);
  EXPECT_GT(cancelled_runs, 0);
}

// The promises behind the futures a stream function returned, for a completing thread.
class PromiseQueue {
 public:
  void Push(int input, Promise<int> promise) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    queue_.emplace_back(input, std::move(promise));
  }
  // Blocks for the next promise; nullopt once Finish() was called.
  std::optional<std::pair<int, Promise<int>>> Pop() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &PromiseQueue::ReadyLocked));
    if (finished_) return std::nullopt;
    std::pair<int, Promise<int>> next = std::move(queue_.front());
    queue_.pop_front();
    return next;
  }
  // Makes Pop() return nullopt and returns the promises it did not return.
  std::vector<Promise<int>> Finish() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    std::vector<Promise<int>> rest;
    for (auto& [input, promise] : queue_) rest.push_back(std::move(promise));
    queue_.clear();
    return rest;
  }

 private:
  bool ReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finished_ || !queue_.empty();
  }

  absl::Mutex mu_;
  std::deque<std::pair<int, Promise<int>>> queue_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(StreamStressTest, StopsCancelPendingFuturesWhileOthersCompleteConcurrently) {
  TbbExecutor executor(3);
  std::mt19937 random(4242);
  enum Mode { kToTheEnd, kBreak, kCancel, kError };
  for (int round = 0; round < 200; ++round) {
    const int n = std::uniform_int_distribution<int>(1, 120)(random);
    const int max_in_flight = std::uniform_int_distribution<int>(1, 12)(random);
    const Order order = random() % 2 == 0 ? Order::kCompletion : Order::kInput;
    const Mode mode = static_cast<Mode>(random() % 4);
    // Inputs below `trigger` complete; the trigger's promise breaks out, cancels or fails the
    // stream; the promises of later inputs are never completed: the stop must cancel them.
    const int trigger =
        mode == kToTheEnd ? n : std::uniform_int_distribution<int>(0, n - 1)(random);
    SCOPED_TRACE(::testing::Message()
                 << "round " << round << " n=" << n << " window=" << max_in_flight << " ordered="
                 << (order == Order::kInput) << " mode=" << mode << " trigger=" << trigger);
    PromiseQueue queue;
    absl::Notification cancel_returned;
    std::optional<ResultStream<int, int>> stream;
    stream.emplace(Stream(executor, std::views::iota(0, n),
                          [&queue](int x) {
                            Promise<int> promise;
                            Future<int> future = promise.GetFuture();
                            queue.Push(x, std::move(promise));
                            return future;
                          },
                          {.max_in_flight = max_in_flight, .order = order}));
    std::vector<Promise<int>> held;
    std::thread completer([&] {
      while (auto next = queue.Pop()) {
        auto& [x, promise] = *next;
        if (x < trigger || (x == trigger && mode == kBreak)) {
          promise.SetValue(x);
        } else if (x == trigger && mode == kError) {
          promise.SetError(std::make_exception_ptr(std::domain_error("planned")));
        } else {
          if (x == trigger && mode == kCancel) {
            stream->Cancel();
            cancel_returned.Notify();
          }
          held.push_back(std::move(promise));
        }
      }
    });
    std::set<int> seen;
    bool cancelled = false;
    bool failed = false;
    try {
      for (auto& item : *stream) {
        seen.insert(item.value());
        if (mode == kBreak && item.value() == trigger) break;
      }
    } catch (const CancelledError&) {
      cancelled = true;
    } catch (const std::domain_error&) {
      failed = true;
    }
    if (mode == kCancel) cancel_returned.WaitForNotification();
    stream.reset();  // After a break, cancels the pending futures.
    std::vector<Promise<int>> rest = queue.Finish();
    completer.join();
    EXPECT_EQ(cancelled, mode == kCancel);
    EXPECT_EQ(failed, mode == kError);
    if (mode == kToTheEnd) {
      EXPECT_EQ(static_cast<int>(seen.size()), n);
    }
    if (mode == kBreak) {
      EXPECT_EQ(seen.count(trigger), 1u);
    }
    for (auto& promise : held) EXPECT_TRUE(promise.IsCancelled());
    for (auto& promise : rest) EXPECT_TRUE(promise.IsCancelled());
  }
}

// The source is pulled outside the stream's lock by one thread at a time (the starter), while
// completing tasks, follow-ups from tasks and Add() from another thread all top the window up.
TEST(StreamStressTest, PullSourceIsNeverCalledConcurrentlyAndEveryInputRunsOnce) {
  TbbExecutor executor(4);
  for (int round = 0; round < 200; ++round) {
    const int n = 50 + round % 150;
    const int max_in_flight = 1 + round % 9;
    const Order order = round % 2 == 0 ? Order::kCompletion : Order::kInput;
    SCOPED_TRACE(::testing::Message() << "round " << round << " window=" << max_in_flight);
    std::atomic<bool> pulling{false};
    std::atomic<int> overlaps{0};
    int next = 0;  // Touched by the source only: one pull at a time.
    auto source = [&]() -> std::optional<int> {
      if (pulling.exchange(true, std::memory_order_acquire)) overlaps.fetch_add(1);
      std::optional<int> input;
      if (next < n) input = next++;
      pulling.store(false, std::memory_order_release);
      return input;
    };
    // Inputs >= 1000000 are follow-ups (of a task, or added from outside).
    auto fn = [](int x, StreamContext<int>& context) {
      if (x < 1000000 && x % 4 == 0) context.Enqueue(x + 1000000);
      return x;
    };
    auto stream = Stream(executor, source, fn, {.max_in_flight = max_in_flight, .order = order});
    stream.Start();
    std::atomic<int> added{0};
    std::thread adder([&] {
      for (int i = 0; i < 20; ++i) {
        if (stream.Add(2000000 + i)) added.fetch_add(1);
      }
    });
    std::multiset<int> seen;
    int64_t last_index = -1;
    std::vector<int64_t> indices;
    while (auto* item = stream.Next()) {
      if (order == Order::kInput) {
        ASSERT_EQ(item->index, last_index + 1);
      }
      last_index = item->index;
      indices.push_back(item->index);
      seen.insert(item->value());
    }
    adder.join();
    EXPECT_EQ(overlaps.load(), 0);
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(seen.count(i), 1u) << i;
      if (i % 4 == 0) {
        EXPECT_EQ(seen.count(i + 1000000), 1u) << i;
      }
    }
    EXPECT_EQ(static_cast<int>(seen.size()), n + (n + 3) / 4 + added.load());
    std::sort(indices.begin(), indices.end());
    for (size_t i = 0; i < indices.size(); ++i) ASSERT_EQ(indices[i], static_cast<int64_t>(i));
  }
}

// A consumer that sleeps with a deadline races the tasks that wake it: the timeout must either
// win (TimeoutError, after the running tasks finished) or lose to a wake-up, never hang or crash.
TEST(StreamStressTest, TimeoutRacesTheWakeUpOfTheConsumer) {
  TbbExecutor executor(2);
  for (int round = 0; round < 200; ++round) {
    const absl::Duration timeout = absl::Microseconds(50 + 25 * (round % 20));
    int yielded = 0;
    bool timed_out = false;
    try {
      for (auto& item :
           Stream(executor, std::views::iota(0, 64),
                  [](int x) {
                    std::this_thread::sleep_for(std::chrono::microseconds(5 * (x % 7)));
                    return x;
                  },
                  {.max_in_flight = 4, .timeout = timeout})) {
        yielded += item.value() >= 0 ? 1 : 0;
      }
    } catch (const TimeoutError&) {
      timed_out = true;
    }
    EXPECT_TRUE(timed_out || yielded == 64) << "round " << round;
  }
}

}  // namespace
}  // namespace concurry

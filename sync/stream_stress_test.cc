// Stress tests of Stream: random windows, orders, follow-ups, errors, early breaks, and Cancel /
// Add racing the consumer and the tasks. Tagged "stress"; meant for --config=tsan.

#include <atomic>
#include <cstdint>
#include <exception>
#include <optional>
#include <random>
#include <ranges>
#include <set>
#include <stdexcept>
#include <vector>

#include "absl/synchronization/notification.h"
#include "futures/errors.h"
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
  testing::TestConcurrent(
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

}  // namespace
}  // namespace concurry

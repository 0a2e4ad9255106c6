// Run groups of batched tasks (see "Run groups" in sync/internal/stream_core.h): a drainer or the
// helping consumer takes several queued inputs at once, yet an input that waits for a later one
// without a BlockingRegion still gets it run by another thread, and short results never wait for
// a slow input that one thread runs. Each test has a watchdog: a hang fails it instead.

#include <atomic>
#include <chrono>
#include <future>
#include <ranges>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/tbb_executor.h"
#include "gtest/gtest.h"
#include "sync/stream.h"
#include "testing/watchdog.h"

namespace concurry {
namespace {

using testkit::Watchdog;

using Clock = std::chrono::steady_clock;

// Input i (i % 500 == 250) waits through a std::shared_future (no BlockingRegion) for input i + 1,
// which sets it. Once groups grew, both may be taken by one thread; the other threads (or the
// consumer) must still run i + 1. A wait that times out counts (and later ones do not wait).
int PairTimeouts(int threads) {
  TbbExecutor tbb(threads);
  constexpr int kInputs = 20000;
  constexpr int kEvery = 500;
  std::vector<std::promise<void>> promises(kInputs / kEvery);
  std::vector<std::shared_future<void>> futures;
  for (auto& p : promises) futures.push_back(p.get_future().share());
  std::atomic<int> timeouts{0};
  int yielded = 0;
  for (auto& item :
       Stream(tbb, std::views::iota(0, kInputs),
              [&](int x) {
                if (x % kEvery == kEvery / 2) {
                  const auto wait = timeouts.load() > 0 ? std::chrono::milliseconds(0)
                                                        : std::chrono::milliseconds(5000);
                  if (futures[x / kEvery].wait_for(wait) == std::future_status::timeout) ++timeouts;
                } else if (x % kEvery == kEvery / 2 + 1) {
                  promises[x / kEvery].set_value();
                }
                return x;
              },
              {.max_in_flight = 64})) {
    item.value();
    ++yielded;
  }
  EXPECT_EQ(yielded, kInputs);
  return timeouts.load();
}

TEST(StreamRunGroups, InputsWaitingForALaterOneThroughAStdFutureOneThread) {
  Watchdog watchdog(absl::Seconds(120));
  EXPECT_EQ(PairTimeouts(1), 0);
}

TEST(StreamRunGroups, InputsWaitingForALaterOneThroughAStdFutureTwoThreads) {
  Watchdog watchdog(absl::Seconds(120));
  EXPECT_EQ(PairTimeouts(2), 0);
}

TEST(StreamRunGroups, InputsWaitingForALaterOneThroughAStdFutureFourThreads) {
  Watchdog watchdog(absl::Seconds(120));
  EXPECT_EQ(PairTimeouts(4), 0);
}

// Two neighbouring inputs meet in a spin (as at a std::barrier), with no BlockingRegion.
TEST(StreamRunGroups, NeighboursMeetingInASpinRendezvous) {
  Watchdog watchdog(absl::Seconds(120));
  for (int threads : {1, 2, 4}) {
    TbbExecutor tbb(threads);
    constexpr int kInputs = 5000;
    std::atomic<int> arrived{0};
    std::atomic<bool> stuck{false};
    for (auto& item : Stream(tbb, std::views::iota(0, kInputs),
                             [&](int x) {
                               if (x == 4000 || x == 4001) {
                                 arrived.fetch_add(1);
                                 const auto until = Clock::now() + std::chrono::seconds(5);
                                 while (arrived.load() < 2) {
                                   if (Clock::now() > until) {
                                     stuck = true;
                                     break;
                                   }
                                   std::this_thread::yield();
                                 }
                               }
                               return x;
                             },
                             {.max_in_flight = 64})) {
      item.value();
    }
    EXPECT_FALSE(stuck.load()) << "threads=" << threads;
  }
}

// Every pair of inputs (2m, 2m + 1) meets in a spin (no BlockingRegion), so whichever thread starts
// one of them needs another thread to start its partner. With one thread per input (as without
// groups) each free thread runs the oldest queued input, the partner; a group's unstarted inputs
// must be just as reachable, even when every thread is inside an input whose partner another
// thread's group took. A wait gives up after 3 s (and later ones do not wait): counted as stuck.
// One wait no thread can end is not made: under Order::kInput, an input that the consumer runs
// itself and whose partner is past the window (max_in_flight places after the oldest result not
// yet taken) waits for room that only the consumer makes, by yielding; with or without groups.
int StuckPairs(int threads, int window, Order order) {
  TbbExecutor tbb(threads);
  constexpr int kInputs = 20000;
  std::vector<std::atomic<int>> arrived(kInputs / 2);
  std::atomic<bool> gave_up{false};
  std::atomic<int> stuck{0};
  // Input order: the results the consumer has taken (the oldest one not taken is this index).
  std::atomic<int> taken{0};
  const std::thread::id consumer = std::this_thread::get_id();
  int yielded = 0;
  for (auto& item : Stream(tbb, std::views::iota(0, kInputs),
                           [&](int x) {
                             std::atomic<int>& pair = arrived[x / 2];
                             pair.fetch_add(1);
                             const int partner = x ^ 1;
                             if (order == Order::kInput && std::this_thread::get_id() == consumer &&
                                 partner >= taken.load() + window) {
                               return x;  // The partner waits for this one instead.
                             }
                             const auto until = Clock::now() + std::chrono::seconds(3);
                             while (pair.load() < 2 && !gave_up.load()) {
                               if (Clock::now() > until) {
                                 gave_up = true;
                                 ++stuck;
                                 break;
                               }
                               std::this_thread::yield();
                             }
                             return x;
                           },
                           {.max_in_flight = window, .order = order})) {
    item.value();
    ++yielded;
    taken.store(yielded);
  }
  EXPECT_EQ(yielded, kInputs);
  return stuck.load();
}

TEST(StreamRunGroups, AllPairsMeetingInASpinOneThread) {
  Watchdog watchdog(absl::Seconds(120));
  for (int window : {16, 64}) {
    for (Order order : {Order::kInput, Order::kCompletion}) {
      EXPECT_EQ(StuckPairs(1, window, order), 0)
          << "window=" << window << " completion order=" << (order == Order::kCompletion);
    }
  }
}

TEST(StreamRunGroups, AllPairsMeetingInASpinTwoThreads) {
  Watchdog watchdog(absl::Seconds(120));
  for (int window : {16, 64}) {
    for (Order order : {Order::kInput, Order::kCompletion}) {
      EXPECT_EQ(StuckPairs(2, window, order), 0)
          << "window=" << window << " completion order=" << (order == Order::kCompletion);
    }
  }
}

// The last input a thread ran for ShortResultsDoNotWaitForASlowInput, and in which round.
struct LastRun {
  int round = 0;
  int input = -1;
};
thread_local LastRun last_run;

// The results a slow input (no BlockingRegion) does not wait for reach the consumer while it
// runs, whichever thread took them: under Order::kCompletion every other result (and the slow one
// comes last), under Order::kInput those of the inputs before it. The slow input is the first one
// from 2500 on that an executor thread runs right after the input before it (likely from the same
// group, which then holds that one's result); not the consumer's thread, where it would hold the
// consumer itself. It waits at a gate that the consumer opens once it has those results: had a
// queued input or a recorded result been held behind the slow input, the gate would never open,
// and the slow input gives up after 60 s, which fails the test. No bound on how fast the results
// come.
void ResultsDoNotWaitForASlowInput(Order order) {
  constexpr int kInputs = 3000;
  // The results the consumer needs before it opens the gate of slow input `x`.
  const auto needed = [order](int x) { return order == Order::kInput ? x : kInputs - 1; };
  int rounds = 0;
  for (int threads : {1, 2}) {
    TbbExecutor tbb(threads);
    int measured = 0;
    for (int round = 0; round < 8 && measured < 2; ++round) {
      const int round_id = ++rounds;
      std::atomic<int> slow{-1};
      absl::Notification gate;
      std::atomic<bool> gate_was_closed{false};  // The slow input waited at the gate.
      std::atomic<int> received{0};              // Results the consumer has.
      std::atomic<int> received_at_give_up{-1};
      const std::thread::id consumer = std::this_thread::get_id();
      int last = -1;
      bool in_order = true;
      for (auto& item :
           Stream(tbb, std::views::iota(0, kInputs),
                  [&](int x) {
                    // Whether this thread's previous input (in this round) was x - 1.
                    const bool after_own = last_run.round == round_id && last_run.input == x - 1;
                    last_run = {round_id, x};
                    int none = -1;
                    if (x >= 2500 && after_own && std::this_thread::get_id() != consumer &&
                        slow.compare_exchange_strong(none, x)) {
                      // seq_cst, as the consumer's count and check: either it sees `slow` or
                      // this sees its count.
                      if (received.load() < needed(x)) {
                        gate_was_closed = true;
                        if (!gate.WaitForNotificationWithTimeout(absl::Seconds(60))) {
                          received_at_give_up = received.load();
                        }
                      }
                    }
                    return x;
                  },
                  {.max_in_flight = 64, .order = order})) {
        const int value = item.value();
        if (order == Order::kInput && value != last + 1) in_order = false;
        last = value;
        const int count = received.fetch_add(1) + 1;
        const int s = slow.load();
        if (s >= 0 && count >= needed(s) && !gate.HasBeenNotified()) gate.Notify();
        if (s < 0) {
          // A busy consumer, so that the executor's threads run inputs too.
          const auto until = Clock::now() + std::chrono::microseconds(10);
          while (Clock::now() < until) {
          }
        }
      }
      EXPECT_EQ(received.load(), kInputs) << "threads=" << threads;
      EXPECT_TRUE(in_order) << "threads=" << threads;
      ASSERT_EQ(received_at_give_up.load(), -1)
          << "threads=" << threads << ": the slow input " << slow.load()
          << " gave up after 60 s at its gate, when the consumer had " << received_at_give_up.load()
          << " of the " << needed(slow.load()) << " results it needed: they were held behind it";
      // Not measured: the consumer ran them all, or it had what it needed already.
      if (!gate_was_closed.load()) continue;
      ++measured;
      if (order == Order::kCompletion) {
        EXPECT_EQ(last, slow.load()) << "threads=" << threads;
      }
    }
    EXPECT_GT(measured, 0) << "threads=" << threads;
  }
}

TEST(StreamRunGroups, ShortResultsDoNotWaitForASlowInput) {
  Watchdog watchdog(absl::Seconds(240));  // Within the test size's 300 s.
  ResultsDoNotWaitForASlowInput(Order::kCompletion);
}

TEST(StreamRunGroups, EarlierResultsInInputOrderDoNotWaitForASlowInput) {
  Watchdog watchdog(absl::Seconds(240));
  ResultsDoNotWaitForASlowInput(Order::kInput);
}

}  // namespace
}  // namespace concurry

// Run groups of batched tasks (see "Run groups" in sync/internal/stream_core.h): a drainer or the
// helping consumer takes several queued inputs at once, yet an input that waits for a later one
// without a BlockingRegion still gets it run by another thread, and short results never wait for
// a slow input that one thread runs. Each test has a watchdog: a hang fails it instead.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/tbb_executor.h"
#include "gtest/gtest.h"
#include "sync/stream.h"

namespace concurry {
namespace {

std::vector<int> Iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

// Ends the process with a message when the test is still running after `limit`.
class Watchdog {
 public:
  explicit Watchdog(absl::Duration limit)
      : thread_([this, limit] {
          absl::MutexLock lock(&mu_);
          if (!mu_.AwaitWithTimeout(absl::Condition(&done_), limit)) {
            std::fprintf(stderr, "Watchdog: the test hangs\n");
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    thread_.join();
  }

 private:
  absl::Mutex mu_;
  bool done_ = false;
  std::thread thread_;
};

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
       Stream(tbb, Iota(kInputs),
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
    for (auto& item : Stream(tbb, Iota(kInputs),
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
int StuckPairs(int threads, int window, Order order) {
  TbbExecutor tbb(threads);
  constexpr int kInputs = 20000;
  std::vector<std::atomic<int>> arrived(kInputs / 2);
  std::atomic<bool> gave_up{false};
  std::atomic<int> stuck{0};
  int yielded = 0;
  for (auto& item : Stream(tbb, Iota(kInputs),
                           [&](int x) {
                             std::atomic<int>& pair = arrived[x / 2];
                             pair.fetch_add(1);
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

// Under Order::kCompletion, the short inputs queued with a slow one (2 s, a plain sleep: no
// BlockingRegion) all reach the consumer long before the slow one ends, whichever thread took
// them, and the slow result comes last. The slow input is the first one from 2500 on that an
// executor thread runs: on the consumer's own thread (it helps) it would hold the consumer itself.
TEST(StreamRunGroups, ShortResultsDoNotWaitForASlowInput) {
  Watchdog watchdog(absl::Seconds(200));
  for (int threads : {1, 2}) {
    TbbExecutor tbb(threads);
    int measured = 0;
    for (int round = 0; round < 8 && measured < 2; ++round) {
      constexpr int kInputs = 3000;
      std::atomic<int> slow{-1};
      std::atomic<int64_t> slow_began{0};  // Clock ticks since the epoch.
      const std::thread::id consumer = std::this_thread::get_id();
      Clock::time_point last_short{};
      int last = -1;
      for (auto& item : Stream(tbb, Iota(kInputs),
                               [&](int x) {
                                 int none = -1;
                                 if (x >= 2500 && std::this_thread::get_id() != consumer &&
                                     slow.compare_exchange_strong(none, x)) {
                                   slow_began = Clock::now().time_since_epoch().count();
                                   std::this_thread::sleep_for(std::chrono::seconds(2));
                                 }
                                 return x;
                               },
                               {.max_in_flight = 64, .order = Order::kCompletion})) {
        last = item.value();
        if (last != slow.load()) last_short = Clock::now();
        if (slow.load() < 0) {
          // A busy consumer, so that the executor's threads run inputs too.
          const auto until = Clock::now() + std::chrono::microseconds(10);
          while (Clock::now() < until) {
          }
        }
      }
      if (slow.load() < 0) continue;  // The consumer ran them all: nothing to measure.
      ++measured;
      EXPECT_EQ(last, slow.load()) << "threads=" << threads;
      const Clock::time_point began{Clock::duration(slow_began.load())};
      const double held = std::chrono::duration<double>(last_short - began).count();
      EXPECT_LT(held, 1.0) << "threads=" << threads << ": the last short result came " << held
                           << " s after the slow input began";
    }
    EXPECT_GT(measured, 0) << "threads=" << threads;
  }
}

}  // namespace
}  // namespace concurry

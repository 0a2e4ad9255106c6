// Stream over executors with different thread rules: which ones get batched tasks and the
// consumer's help (only those whose tasks may run on any thread), and how batched tasks keep
// TbbExecutor's added threads, the timeout and a rejecting executor working.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/tbb_executor.h"
#include "futures/thread_pool_executor.h"
#include "gtest/gtest.h"
#include "sync/stream.h"
#include "testing/fake_clock.h"

namespace concurry {
namespace {

std::vector<int> Iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

// Runs tasks one at a time, in order, on `threads` threads of its own, and says so through
// max_concurrency(). Submit() throws StoppedError once `accept` tasks were taken. Unless
// `any_thread`, it keeps the default: its tasks must run on its threads.
class QueueExecutor final : public Executor {
 public:
  QueueExecutor(int threads, bool any_thread, int64_t accept = INT64_MAX)
      : threads_(threads), any_thread_(any_thread), accept_(accept) {
    for (int i = 0; i < threads; ++i) pool_.emplace_back([this] { Loop(); });
  }
  ~QueueExecutor() override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    for (std::thread& t : pool_) t.join();
  }
  void Submit(Task task) override {
    absl::MutexLock lock(&mu_);
    if (accept_-- <= 0) throw StoppedError("QueueExecutor: rejected");
    tasks_.push_back(std::move(task));
  }
  int max_concurrency() const override { return threads_; }
  bool tasks_may_run_on_any_thread() const override { return any_thread_; }
  bool OnOwnThread() const {
    for (const std::thread& t : pool_) {
      if (t.get_id() == std::this_thread::get_id()) return true;
    }
    return false;
  }

 private:
  void Loop() {
    for (;;) {
      Task task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](QueueExecutor* e)
                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) { return e->done_ || !e->tasks_.empty(); },
            this));
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      std::move(task)();
    }
  }

  const int threads_;
  const bool any_thread_;
  absl::Mutex mu_;
  int64_t accept_ ABSL_GUARDED_BY(mu_);
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> pool_;
};

TEST(StreamExecutorsTest, SerialExecutorRunsOneCallAtATimeOnItsOwnThread) {
  QueueExecutor serial(1, /*any_thread=*/false);
  std::atomic<int> running{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> off_thread{0};
  int64_t count = 0;
  for (auto& item : Stream(serial, Iota(2000),
                           [&](int x) {
                             if (running.fetch_add(1) != 0) overlaps.fetch_add(1);
                             if (!serial.OnOwnThread()) off_thread.fetch_add(1);
                             running.fetch_sub(1);
                             return x;
                           },
                           {.max_in_flight = 16, .on_warning = [](auto) {}})) {
    item.value();
    ++count;
  }
  EXPECT_EQ(count, 2000);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(off_thread.load(), 0);
}

thread_local bool initialized = false;

TEST(StreamExecutorsTest, ThreadPoolInitializerStateIsSeenByEveryCall) {
  ThreadPoolExecutor pool({.max_workers = 2, .initializer = [] { initialized = true; }});
  std::atomic<int> missing{0};
  int64_t count = 0;
  for (auto& item : Stream(pool, Iota(2000),
                           [&](int x) {
                             if (!initialized) missing.fetch_add(1);
                             return x;
                           },
                           {.max_in_flight = 16, .on_warning = [](auto) {}})) {
    item.value();
    ++count;
  }
  EXPECT_EQ(count, 2000);
  EXPECT_EQ(missing.load(), 0);
}

// Inputs that block in a BlockingRegion get TbbExecutor's added threads, as one task per input
// did: 16 inputs of 50 ms on one thread take about 50 ms, not 16 x 50 ms.
TEST(StreamExecutorsTest, BlockedInputsOnTbbExecutorGetAddedThreads) {
  TbbExecutor tbb(1);
  const absl::Time start = absl::Now();
  int64_t count = 0;
  for (auto& item : Stream(tbb, Iota(16),
                           [](int x) {
                             BlockingRegion region;
                             absl::SleepFor(absl::Milliseconds(50));
                             return x;
                           },
                           {.max_in_flight = 16, .on_warning = [](auto) {}})) {
    item.value();
    ++count;
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(count, 16);
  // One input at a time: 800 ms; without a drainer per added thread: about 400 ms.
  EXPECT_LT(took, absl::Milliseconds(250)) << took;
}

// Inputs that must meet (each waits until all have arrived) all run at once.
TEST(StreamExecutorsTest, InputsThatMeetAtARendezvousOnTbbExecutorAllRun) {
  TbbExecutor tbb(1);
  constexpr int kInputs = 4;
  absl::Mutex mu;
  int arrived = 0;
  int met = 0;
  for (auto& item : Stream(tbb, Iota(kInputs),
                           [&](int x) {
                             absl::MutexLock lock(&mu);
                             ++arrived;
                             BlockingRegion region;
                             // The watchdog: a stream that cannot run them together fails, not
                             // hangs.
                             const bool all = mu.AwaitWithTimeout(
                                 absl::Condition(
                                     +[](int* n) { return *n == kInputs; }, &arrived),
                                 absl::Seconds(5));
                             if (all) ++met;
                             return x;
                           },
                           {.max_in_flight = 16, .on_warning = [](auto) {}})) {
    item.value();
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(met, kInputs);
}

// The same with one input that returns at once ahead of the ones that meet, and a window just
// large enough: the first completion frees a slot while the run queue holds more inputs than
// the drainers can take, so the stream may leave it free to start a group later. As each other
// input blocks, the drainer added for it takes one more from the queue until the queue is empty
// and nothing completes: that slot must still start the last input that the others wait for.
TEST(StreamExecutorsTest, ADeferredStartStillRunsTheInputThatOthersWaitFor) {
  TbbExecutor tbb(1);
  constexpr int kMeet = 8;
  absl::Mutex mu;
  int arrived = 0;
  int met = 0;
  for (auto& item : Stream(tbb, Iota(kMeet + 1),
                           [&](int x) {
                             if (x == 0) return x;
                             absl::MutexLock lock(&mu);
                             ++arrived;
                             BlockingRegion region;
                             // The watchdog: a stream that leaves the last input unstarted
                             // fails, not hangs.
                             const bool all = mu.AwaitWithTimeout(
                                 absl::Condition(
                                     +[](int* n) { return *n == kMeet; }, &arrived),
                                 absl::Seconds(3));
                             if (all) ++met;
                             return x;
                           },
                           {.max_in_flight = kMeet, .on_warning = [](auto) {}})) {
    item.value();
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(met, kMeet);
}

// Inputs that meet at a rendezvous after a long run of short ones, which let the threads take
// queued inputs in groups: the thread whose input blocks first (in a BlockingRegion) may hold the
// others in its group, and must give them back. The executor's one thread is held (without a
// BlockingRegion) by the first input it runs until the consumer has run 100 inputs itself, so
// the consumer's groups have grown by then, and it takes the rendezvous inputs more often than
// not (a drainer takes them otherwise, and must give them back alike). It checks the outcome, not
// the path: it passes with one input per task too, and without that give-back, as the next
// thread that takes work takes the held inputs back as well (see "Run groups" in
// sync/internal/stream_core.h); rounds_meeting_on_consumer only records how often the consumer's
// own group met the blocking.
constexpr int kMeetAfterShort = 4;

TEST(StreamExecutorsTest, InputsThatMeetAfterShortOnesAreGivenBackByTheirGroup) {
  constexpr int kInputs = 400;
  constexpr int kMeet = kMeetAfterShort;
  int runs_meeting_on_consumer = 0;
  for (int round = 0; round < 5; ++round) {
    TbbExecutor tbb(1);
    const std::thread::id consumer = std::this_thread::get_id();
    absl::Mutex mu;
    int consumer_runs = 0;
    bool held = false;
    int arrived = 0;
    int arrived_on_consumer = 0;
    int met = 0;
    for (auto& item :
         Stream(tbb, Iota(kInputs),
                [&](int x) {
                  const bool on_consumer = std::this_thread::get_id() == consumer;
                  absl::MutexLock lock(&mu);
                  if (x >= kInputs - kMeet) {
                    ++arrived;
                    if (on_consumer) ++arrived_on_consumer;
                    BlockingRegion region;
                    // The watchdog: inputs held by a blocked one fail the test, not hang it.
                    if (mu.AwaitWithTimeout(
                            absl::Condition(
                                +[](int* n) { return *n == kMeetAfterShort; }, &arrived),
                            absl::Seconds(5))) {
                      ++met;
                    }
                  } else if (on_consumer) {
                    ++consumer_runs;
                  } else if (!std::exchange(held, true)) {
                    mu.AwaitWithTimeout(absl::Condition(
                                            +[](int* n) { return *n >= 100; }, &consumer_runs),
                                        absl::Seconds(5));
                  }
                  return x;
                },
                {.max_in_flight = 64})) {
      item.value();
    }
    absl::MutexLock lock(&mu);
    EXPECT_EQ(met, kMeet) << "round " << round;
    EXPECT_GE(consumer_runs, 100) << "round " << round;
    if (arrived_on_consumer > 0) ++runs_meeting_on_consumer;
  }
  // For the record: how often the consumer's own group met the blocking.
  RecordProperty("rounds_meeting_on_consumer", runs_meeting_on_consumer);
}

// A source that waits for the result of the stream's own input `lag` places back (as a crawler
// whose next URL comes from an earlier page). Whoever pulls it must not hold a started input that
// it has not run: neither one it took from the queue before pulling, nor one claimed for it while
// it blocks in the source (with lag = window - 1, the input it waits for is often the next queued
// one), and what a commit queued must start before the next pull. The lag is at least 16: a
// starter fills every slot it reserved (up to 16) before it starts them. Every wait has a
// watchdog: a stalled stream ends its source and fails, not hangs.
void RunSourceFedByItsOwnResults(int threads) {
  constexpr int kInputs = 96;
  for (const int window : {17, 24}) {
    for (const int lag : {16, window - 1}) {
      SCOPED_TRACE(testing::Message()
                   << "threads " << threads << ", lag " << lag << ", window " << window);
      TbbExecutor tbb(threads);
      absl::Mutex mu;
      std::deque<bool> done(kInputs, false);  // Unlike std::vector<bool>, holds real bools.
      int stalls = 0;
      int next = 0;  // Only the starter pulls the source.
      auto source = [&]() -> std::optional<int> {
        if (next == kInputs) return std::nullopt;
        const int i = next++;
        if (i >= lag) {
          BlockingRegion region;
          absl::MutexLock lock(&mu);
          const bool ready = mu.AwaitWithTimeout(absl::Condition(&done[i - lag]), absl::Seconds(3));
          if (!ready) {
            ++stalls;
            return std::nullopt;
          }
        }
        return i;
      };
      int yielded = 0;
      for (auto& item : Stream(tbb, source,
                               [&](int x) {
                                 absl::MutexLock lock(&mu);
                                 done[x] = true;
                                 return x;
                               },
                               {.max_in_flight = window, .on_warning = [](auto) {}})) {
        item.value();
        ++yielded;
      }
      EXPECT_EQ(yielded, kInputs);
      absl::MutexLock lock(&mu);
      EXPECT_EQ(stalls, 0);
    }
  }
}

TEST(StreamExecutorsTest, ASourceFedByItsOwnResultsNeverWaitsOnItselfOneThread) {
  RunSourceFedByItsOwnResults(1);
}

TEST(StreamExecutorsTest, ASourceFedByItsOwnResultsNeverWaitsOnItselfTwoThreads) {
  RunSourceFedByItsOwnResults(2);
}

// The consumer that runs queued inputs itself still times out. The executor's one thread is held
// for a second of real time by its first input, so the consumer runs the rest itself; on a fake
// clock each of those takes 30 ms and the timeout is 100 ms: it runs inputs at 30, 60, 90 and
// 120 ms, then throws (without the check it ran on through the whole input).
TEST(StreamExecutorsTest, TimeoutHoldsWhileTheConsumerRunsQueuedInputs) {
  testkit::FakeClock clock;
  QueueExecutor executor(1, /*any_thread=*/true);
  std::atomic<int> by_consumer{0};
  EXPECT_THROW(
      {
        for (auto& item : Stream(executor, Iota(100),
                                 [&](int x) {
                                   if (executor.OnOwnThread()) {
                                     absl::SleepFor(absl::Seconds(1));
                                     return x;
                                   }
                                   by_consumer.fetch_add(1);
                                   clock.Advance(absl::Milliseconds(30));
                                   return x;
                                 },
                                 {.max_in_flight = 8,
                                 .timeout = absl::Milliseconds(100),
                                 .clock = &clock,
                                 .on_warning = [](auto) {}})) {
          item.value();
        }
      },
      TimeoutError);
  EXPECT_EQ(by_consumer.load(), 4);
}

// The same on a real executor: 20 ms inputs on TbbExecutor(1), a 100 ms timeout.
TEST(StreamExecutorsTest, TimeoutHoldsOnTbbExecutor) {
  TbbExecutor tbb(1);
  const absl::Time start = absl::Now();
  EXPECT_THROW(
      {
        for (auto& item : Stream(tbb, Iota(50),
                                 [](int x) {
                                   std::this_thread::sleep_for(std::chrono::milliseconds(20));
                                   return x;
                                 },
                                 {.max_in_flight = 16,
                                 .timeout = absl::Milliseconds(100),
                                 .on_warning = [](auto) {}})) {
          item.value();
        }
      },
      TimeoutError);
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Milliseconds(500)) << took;  // All 50 inputs: 1 s or more.
}

// Drainers rejected when they hand over (after 64 inputs each), on two threads at once: the
// inputs still queued are completed as skipped, and the stream ends with StoppedError.
TEST(StreamExecutorsTest, RejectedDrainersStrandNoQueuedInputs) {
  int stopped = 0;
  for (int round = 0; round < 50; ++round) {
    QueueExecutor executor(2, /*any_thread=*/true, /*accept=*/2 + round % 3);
    std::exception_ptr error;
    try {
      for (auto& item : Stream(executor, Iota(1000), [](int x) { return x; },
                               {.max_in_flight = 32, .on_warning = [](auto) {}})) {
        item.value();
      }
    } catch (...) {
      error = std::current_exception();
    }
    if (error == nullptr) continue;  // The consumer ran what the rejected drainers left.
    ++stopped;
    EXPECT_THROW(std::rethrow_exception(error), StoppedError);
  }
  EXPECT_GT(stopped, 0);
}

}  // namespace
}  // namespace concurry

// TaskWorker, Task and MakeExecutor, for every mode that can carry arbitrary callables.

#include "workers/task_worker.h"

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/progress.h"
#include "sync/stream.h"
#include "testing/error_message.h"
#include "testing/fake_clock.h"
#include "workers/backend.h"
#include "workers/options.h"

namespace concurry {
namespace {

using ::concurry::testkit::InvalidOptionMessage;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// --- Compile-time contract ----------------------------------------------------------------------

// A misuse selects the overload that fails with a message (workers_internal::CallRejected).
template <typename R>
concept Accepted = !std::is_same_v<R, workers_internal::CallRejected>;

template <typename W, typename... A>
concept CanSubmit = requires(W w, A... a) {
  { w.Submit(a...) } -> Accepted;
};

int Twice(int x) { return 2 * x; }

// A non-callable `fn`, or arguments it does not take, do not compile (concurry: a runtime
// TypeError).
static_assert(CanSubmit<const TaskWorker&, int (*)(int), int>);
static_assert(!CanSubmit<const TaskWorker&, int>);
static_assert(!CanSubmit<TaskWorker&, int>);
static_assert(!CanSubmit<const TaskWorker&, int (*)(int), std::string>);
static_assert(!CanSubmit<const TaskWorker&, int (*)(int)>);
// A lambda selects the template on const and non-const handles; an Executor::Task on a
// non-const handle selects the Executor override.
static_assert(std::is_same_v<decltype(std::declval<TaskWorker&>().Submit([] {})), Future<void>>);
static_assert(
    std::is_same_v<decltype(std::declval<const TaskWorker&>().Submit([] {})), Future<void>>);
static_assert(std::is_same_v<
              decltype(std::declval<TaskWorker&>().Submit(std::declval<Executor::Task>())), void>);
// Results are flattened like Worker calls.
static_assert(std::is_same_v<decltype(std::declval<TaskWorker&>().Submit([] {
                               return absl::StatusOr<int>(1);
                             })),
                             Future<int>>);
static_assert(std::is_same_v<decltype(std::declval<TaskWorker&>().Submit([] {
                               return MakeReadyFuture(std::string());
                             })),
                             Future<std::string>>);

template <typename W, typename... A>
concept CanMap = requires(W w, A... a) {
  { w.Map(a...) } -> Accepted;
};
static_assert(CanMap<const TaskWorker&, int (*)(int), std::vector<int>>);
static_assert(CanMap<const TaskWorker&, MapOptions, int (*)(int), std::vector<int>>);
static_assert(!CanMap<const TaskWorker&, int, std::vector<int>>);
static_assert(!CanMap<const TaskWorker&, int (*)(int), std::vector<std::string>>);
static_assert(!CanMap<const TaskWorker&, int (*)(int)>);

// --- Helpers ------------------------------------------------------------------------------------

// Holds one call until the test releases it.
class Gate {
 public:
  void Hold() {
    entered_.Notify();
    release_.WaitForNotification();
  }
  void WaitEntered() { entered_.WaitForNotification(); }
  void Release() { release_.Notify(); }

 private:
  absl::Notification entered_;
  absl::Notification release_;
};

struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Returns the message of the InvalidOptionError that `fn` throws, or "no error".
void RaiseMax(std::atomic<int>& max, int value) {
  int seen = max.load();
  while (seen < value && !max.compare_exchange_weak(seen, value)) {
  }
}

class TaskWorkerTest : public ::testing::TestWithParam<Mode> {
 protected:
  WorkerOptions Options() const { return {.mode = GetParam()}; }
  TaskWorker Make() const { return TaskWorker::Create(Options()); }
};

// --- Submit -------------------------------------------------------------------------------------

TEST_P(TaskWorkerTest, SubmitRunsCallablesWithArguments) {
  TaskWorker w = Make();
  EXPECT_EQ(w.Submit([](int a, const std::string& s) { return s + std::to_string(a); }, 4,
                     std::string("x"))
                .Result(),
            "x4");
  EXPECT_EQ(w.Submit(Twice, 21).Result(), 42);
  EXPECT_EQ(
      w.Submit([](std::unique_ptr<int> p) { return *p + 1; }, std::make_unique<int>(6)).Result(),
      7);
  int counter = 0;
  auto bump = [&counter] { ++counter; };
  w.Submit(bump).Result();
  w.Submit([n = 10]() mutable { return ++n; }).Result();
  EXPECT_EQ(counter, 1);
  EXPECT_EQ(w.options().mode, GetParam());
}

TEST_P(TaskWorkerTest, SubmitUnwrapsFutureArguments) {
  TaskWorker w = Make();
  auto add = [](int a, int b) { return a + b; };
  EXPECT_EQ(w.Submit(add, 1, MakeReadyFuture(2)).Result(), 3);

  Promise<int> later;
  Future<int> pending = w.Submit(add, later.GetFuture(), 40);
  EXPECT_FALSE(pending.Done());  // Dispatched once the input is ready; the caller did not block.
  later.SetValue(2);
  EXPECT_EQ(pending.Result(), 42);

  std::vector<Future<int>> parts = {MakeReadyFuture(1), MakeReadyFuture(2), MakeReadyFuture(3)};
  auto sum = [](const std::vector<int>& v) { return v[0] + v[1] + v[2]; };
  EXPECT_EQ(w.Submit(sum, parts).Result(), 6);

  Future<int> failed = w.Submit(add, MakeFailedFuture<int>(CustomError("input")), 1);
  EXPECT_THROW(failed.Result(), CustomError);
}

TEST_P(TaskWorkerTest, SubmitFlattensStatusStatusOrAndFutureResults) {
  TaskWorker w = Make();
  Future<void> ok = w.Submit([] { return absl::OkStatus(); });
  EXPECT_TRUE(ok.Status().ok());
  Future<void> bad = w.Submit([] { return absl::NotFoundError("nope"); });
  EXPECT_EQ(bad.Status(), absl::NotFoundError("nope"));
  Future<int> value = w.Submit([] { return absl::StatusOr<int>(5); });
  EXPECT_EQ(value.Result(), 5);
  Future<int> error = w.Submit([] { return absl::StatusOr<int>(absl::InternalError("x")); });
  EXPECT_EQ(error.Status(), absl::InternalError("x"));
  Future<std::string> inner = w.Submit([] { return MakeReadyFuture(std::string("in")); });
  EXPECT_EQ(inner.Result(), "in");
}

TEST_P(TaskWorkerTest, ExceptionsKeepTheirType) {
  TaskWorker w = Make();
  Future<int> f = w.Submit([]() -> int { throw CustomError("boom"); });
  try {
    f.Result();
    FAIL() << "no exception";
  } catch (const CustomError& e) {
    EXPECT_STREQ(e.what(), "boom");
  }
  EXPECT_THROW(w.Submit([] { throw std::out_of_range("r"); }).Result(), std::out_of_range);
  EXPECT_EQ(w.Submit([] { return 1; }).Result(), 1);  // The worker goes on.
}

TEST_P(TaskWorkerTest, CallsRunOneAtATimeInFifoOrderAlsoThroughTheExecutor) {
  TaskWorker w = Make();
  Executor& executor = w;
  std::vector<int> order;  // Unsynchronized on purpose: the worker runs one call at a time.
  std::vector<Future<void>> done;
  for (int i = 0; i < 100; ++i) {
    if (i % 2 == 0) {
      done.push_back(w.Submit([&order, i] { order.push_back(i); }));
    } else {
      executor.Submit([&order, i] { order.push_back(i); });
    }
  }
  w.Submit([] {}).Result();  // After everything above.
  for (auto& f : done) f.Result();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

// --- As an Executor -----------------------------------------------------------------------------

TEST_P(TaskWorkerTest, WorksAsAnExecutorForAsyncThenAndStream) {
  TaskWorker w = Make();
  Executor& executor = w;
  EXPECT_EQ(Async(
                executor, [](int x) { return x + 1; }, 41)
                .Result(),
            42);
  if (GetParam() == Mode::kThread) {
    const std::thread::id id = Async(executor, [] { return std::this_thread::get_id(); }).Result();
    EXPECT_NE(id, std::this_thread::get_id());
  }
  EXPECT_EQ(MakeReadyFuture(20).Then(w, [](int x) { return 2 * x; }).Result(), 40);

  std::vector<int> got;
  for (auto& item : Stream(executor, std::vector<int>{1, 2, 3}, [](int x) { return 3 * x; },
                           {.order = Order::kInput})) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ElementsAre(3, 6, 9));
}

TEST_P(TaskWorkerTest, ExecutorSubmitThrowsStoppedErrorAfterStop) {
  TaskWorker w = Make();
  Executor& executor = w;
  EXPECT_TRUE(w.Stop());
  EXPECT_THROW(executor.Submit([] {}), StoppedError);
  EXPECT_THROW(Async(executor, [] { return 1; }).Result(), StoppedError);
  EXPECT_THROW(w.Submit([] { return 1; }).Result(), StoppedError);
}

// --- Lifecycle ----------------------------------------------------------------------------------

TEST_P(TaskWorkerTest, StopCancelsQueuedTasksAndLetsTheRunningOneFinish) {
  TaskWorker w = Make();
  Gate gate;
  Future<int> first;
  // A sync worker runs the call in the submitting thread: submit it from a helper thread.
  std::thread submitter([&] {
    first = w.Submit([&gate] {
      gate.Hold();
      return 1;
    });
  });
  gate.WaitEntered();
  if (GetParam() != Mode::kSync) submitter.join();

  std::vector<Future<int>> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(w.Submit([i] { return i; }));
  std::atomic<bool> dropped_task_ran{false};
  Executor& executor = w;
  executor.Submit([&] { dropped_task_ran = true; });

  EXPECT_FALSE(w.Stop(absl::ZeroDuration()));  // The running call holds the stop up.
  EXPECT_TRUE(w.stopped());
  for (Future<int>& f : queued) {
    EXPECT_TRUE(f.Cancelled());
    EXPECT_THROW(f.Result(), CancelledError);
  }
  EXPECT_THROW(w.Submit([] { return 0; }).Result(), StoppedError);
  EXPECT_THROW(executor.Submit([] {}), StoppedError);

  gate.Release();
  if (GetParam() == Mode::kSync) submitter.join();
  EXPECT_EQ(first.Result(), 1);
  EXPECT_TRUE(w.Stop());
  EXPECT_FALSE(dropped_task_ran.load());
}

TEST_P(TaskWorkerTest, CopiesShareTheWorkerAndTheLastCopyStopsIt) {
  Future<void> stopped;
  {
    TaskWorker a = Make();
    stopped = a.StoppedFuture();
    TaskWorker b = a;
    {
      TaskWorker c = std::move(a);
      EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checks the moved-from state.
      EXPECT_EQ(c.Submit([] { return 1; }).Result(), 1);
    }
    EXPECT_FALSE(stopped.Done());
    EXPECT_EQ(b.Submit([] { return 2; }).Result(), 2);
  }
  EXPECT_TRUE(stopped.Wait(absl::Seconds(60)));
}

// --- Map ----------------------------------------------------------------------------------------

TEST_P(TaskWorkerTest, MapYieldsResultsInInputOrder) {
  TaskWorker w = Make();
  std::vector<int> inputs;
  for (int i = 0; i < 50; ++i) inputs.push_back(i);
  int expected = 0;
  for (auto& item : w.Map([](int x) { return x * x; }, inputs)) {
    EXPECT_EQ(item.index, expected);
    EXPECT_EQ(item.value(), expected * expected);
    ++expected;
  }
  EXPECT_EQ(expected, 50);

  // Futures among the inputs are unwrapped, like Submit's arguments.
  std::vector<Future<int>> futures = {MakeReadyFuture(1), MakeReadyFuture(2)};
  std::vector<int> got;
  for (auto& item : w.Map([](int x) { return x + 10; }, futures)) got.push_back(item.value());
  EXPECT_THAT(got, ElementsAre(11, 12));
}

TEST_P(TaskWorkerTest, MapZipsInputsAndTheShortestWins) {
  TaskWorker w = Make();
  std::vector<int> numbers = {1, 2, 3, 4};
  const std::vector<std::string> letters = {"a", "b", "c"};
  int64_t total = -2;
  MapOptions options;
  options.progress.callback = [&total](int64_t, int64_t t, absl::Duration) { total = t; };
  std::vector<std::string> got;
  for (auto& item : w.Map(
           std::move(options), [](int n, const std::string&s) { return s + std::to_string(n); },
           numbers, letters)) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ElementsAre("a1", "b2", "c3"));
  EXPECT_EQ(total, 3);                            // Sized inputs: the total is known.
  EXPECT_THAT(numbers, ElementsAre(1, 2, 3, 4));  // Lvalue inputs are copied from, not moved.
}

TEST_P(TaskWorkerTest, MapMovesElementsOutOfRvalueContainers) {
  TaskWorker w = Make();
  std::vector<std::unique_ptr<int>> owned;
  owned.push_back(std::make_unique<int>(1));
  owned.push_back(std::make_unique<int>(2));
  std::vector<int> got;
  for (auto& item : w.Map([](std::unique_ptr<int> p) { return *p; }, std::move(owned))) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ElementsAre(1, 2));

  std::vector<std::unique_ptr<int>> left;
  left.push_back(std::make_unique<int>(10));
  left.push_back(std::make_unique<int>(20));
  got.clear();
  for (auto& item : w.Map([](std::unique_ptr<int> p, int k) { return *p + k; }, std::move(left),
                          std::views::iota(1))) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ElementsAre(11, 22));
}

TEST_P(TaskWorkerTest, MapPullsAnInfiniteGeneratorLazily) {
  TaskWorker w = Make();
  std::atomic<int> pulled{0};
  auto naturals = std::views::iota(0) | std::views::transform([&pulled](int i) {
                    ++pulled;
                    return i;
                  });
  int seen = 0;
  for (auto& item : w.Map(
           {.max_in_flight = 4}, [](int i) { return 2 * i; }, naturals)) {
    EXPECT_EQ(item.value(), 2 * seen);
    if (++seen == 10) break;
  }
  // Items 0..9 were yielded; at most max_in_flight beyond the last released one were pulled.
  EXPECT_LE(pulled.load(), 9 + 4);

  std::vector<int> got;
  auto below_five = std::views::iota(0) | std::views::take_while([](int i) { return i < 5; });
  for (auto& item : w.Map([](int i) { return i * 10; }, below_five)) got.push_back(item.value());
  EXPECT_THAT(got, ElementsAre(0, 10, 20, 30, 40));
}

TEST_P(TaskWorkerTest, MapKeepsAtMostMaxInFlightItemsDispatched) {
  TaskWorker w = Make();
  const bool gated = GetParam() != Mode::kSync;  // A sync item would block the test's thread.
  Gate gate;
  // In flight: pulled for dispatch and not finished. The input counts up, the function down.
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  std::atomic<int> pulled{0};
  auto inputs = std::views::iota(0, 40) | std::views::transform([&](int i) {
                  ++pulled;
                  RaiseMax(max_in_flight, ++in_flight);
                  return i;
                });
  auto results = w.Map(
      {.max_in_flight = 4},
      [&](int i) {
        if (gated && i == 0) gate.Hold();
        --in_flight;
        return i;
      },
      inputs);
  if (gated) {
    results.Start();
    gate.WaitEntered();
    // Item 0 blocks the worker: items 1..3 are queued behind it, and nothing more is pulled.
    EXPECT_EQ(pulled.load(), 4);
    gate.Release();
  }
  int expected = 0;
  for (auto& item : results) EXPECT_EQ(item.value(), expected++);
  EXPECT_EQ(expected, 40);
  EXPECT_EQ(max_in_flight.load(), 4);
}

TEST_P(TaskWorkerTest, MapReportsProgress) {
  TaskWorker w = Make();
  absl::Mutex mu;
  std::vector<std::pair<int64_t, int64_t>> calls;
  MapOptions options;
  options.progress.miniters = 1;
  options.progress.callback = [&](int64_t done, int64_t total, absl::Duration) {
    absl::MutexLock lock(&mu);
    calls.emplace_back(done, total);
  };
  for (auto& item : w.Map(std::move(options), Twice, std::vector<int>{1, 2, 3, 4, 5})) {
    item.value();
  }
  absl::MutexLock lock(&mu);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), (std::pair<int64_t, int64_t>(5, 5)));
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);
}

TEST_P(TaskWorkerTest, MapCollectsErrorsAsItems) {
  TaskWorker w = Make();
  auto fn = [](int x) {
    if (x == 2) throw CustomError("two");
    return x;
  };
  std::vector<bool> ok;
  for (auto& item : w.Map({.on_error = ErrorPolicy::kCollect}, fn, std::vector<int>{0, 1, 2, 3})) {
    ok.push_back(item.ok());
    if (!item.ok()) {
      EXPECT_THROW(item.value(), CustomError);
    }
  }
  EXPECT_THAT(ok, ElementsAre(true, true, false, true));
}

TEST_P(TaskWorkerTest, MapStopsAtTheFirstErrorWithItsType) {
  TaskWorker w = Make();
  auto fn = [](int x) {
    if (x == 2) throw CustomError("two");
    return x;
  };
  std::vector<int> got;
  EXPECT_THROW(
      {
        for (auto& item : w.Map(fn, std::vector<int>{0, 1, 2, 3, 4})) got.push_back(item.value());
      },
      CustomError);
  EXPECT_THAT(got, ElementsAre(0, 1));
  EXPECT_EQ(w.Submit([] { return 7; }).Result(), 7);  // The worker is fine.
}

TEST_P(TaskWorkerTest, MapItemTimesOutExactlyAtItsDeadline) {
  // Errors read here are kept until the end (after the map's timer thread is joined): libstdc++
  // is not TSan-instrumented, so an exception freed on another thread after this one read it is
  // reported as a race (see tools/tsan_suppressions.txt).
  std::vector<std::exception_ptr> errors;
  testkit::FakeClock clock;
  TaskWorker w = Make();
  Gate gate;
  const absl::Duration timeout = absl::Milliseconds(10);
  auto results = w.Map(
      {.timeout = timeout, .on_error = ErrorPolicy::kCollect, .clock = &clock},
      [&gate](int x) {
        gate.Hold();
        return x;
      },
      std::vector<int>{7});
  // Dispatches the item (a sync worker runs it right there, in `starter`).
  std::thread starter([&results] { results.Start(); });
  gate.WaitEntered();
  clock.BlockUntilWaiters(1);  // The timer waits for dispatch + 10ms (it waits on the clock only
                               // while an item is pending).
  clock.Advance(timeout - absl::Nanoseconds(1));
  EXPECT_EQ(clock.NumWaiters(), 1);  // Not due at deadline - 1ns: the timer still waits.
  clock.Advance(absl::Nanoseconds(1));
  EXPECT_EQ(clock.NumWaiters(), 0);  // Due at the deadline: the timer woke.

  if (GetParam() != Mode::kSync) {
    starter.join();
    // The item failed at its deadline, while its call still runs.
    auto it = results.begin();
    ASSERT_TRUE(it != results.end());
    EXPECT_FALSE(it->ok());
    errors.push_back(it->outcome.error());
    try {
      it->value();
      ADD_FAILURE() << "no TimeoutError";
    } catch (const TimeoutError& e) {
      EXPECT_THAT(e.what(), HasSubstr("item 0 did not complete within 10ms"));
    }
    gate.Release();
    ++it;
    EXPECT_TRUE(it == results.end());
  } else {
    gate.Release();
    starter.join();
    std::vector<bool> timed_out;
    for (auto& item : results) {
      timed_out.push_back(!item.ok());
      errors.push_back(item.outcome.error());
      EXPECT_THROW(item.value(), TimeoutError);
    }
    EXPECT_THAT(timed_out, ElementsAre(true));
  }
}

TEST_P(TaskWorkerTest, MapTimeoutDropsItemsStillQueued) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync items run as they are dispatched";
  // Errors read here are kept until the end (after the map's timer thread is joined): libstdc++
  // is not TSan-instrumented, so an exception freed on another thread after this one read it is
  // reported as a race (see tools/tsan_suppressions.txt).
  std::vector<std::exception_ptr> errors;
  testkit::FakeClock clock;
  TaskWorker w = Make();
  Gate gate;
  std::atomic<int> runs{0};
  auto results = w.Map(
      {.max_in_flight = 3,
       .timeout = absl::Milliseconds(10),
       .on_error = ErrorPolicy::kCollect,
       .clock = &clock},
      [&](int x) {
        ++runs;
        if (x == 0) gate.Hold();
        return x;
      },
      std::vector<int>{0, 1, 2});
  results.Start();  // All three are dispatched now: item 0 runs, items 1 and 2 wait behind it.
  gate.WaitEntered();
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Milliseconds(10));
  int items = 0;
  for (auto& item : results) {
    ++items;
    errors.push_back(item.outcome.error());
    EXPECT_THROW(item.value(), TimeoutError);
  }
  EXPECT_EQ(items, 3);
  gate.Release();
  w.Submit([] {}).Result();   // Everything queued before it has run or was dropped.
  EXPECT_EQ(runs.load(), 1);  // Items 1 and 2 never ran.
}

TEST_P(TaskWorkerTest, MapAndSubmitHonourTheWorkersQueueCap) {
  // concurry's TaskWorker bypassed max_queued_tasks; here calls beyond it wait (kDefer) or block
  // the submitting thread (kBlock), and a Map wider than the cap still completes.
  for (QueueFullPolicy policy : {QueueFullPolicy::kDefer, QueueFullPolicy::kBlock}) {
    TaskWorker w =
        TaskWorker::Create({.mode = GetParam(), .max_queued_tasks = 2, .queue_full = policy});
    std::vector<int> got;
    for (auto& item :
         w.Map({.max_in_flight = 8, .timeout = absl::Hours(1)}, Twice, std::views::iota(0, 30))) {
      got.push_back(item.value());
    }
    ASSERT_EQ(got.size(), 30u);
    for (int i = 0; i < 30; ++i) EXPECT_EQ(got[i], 2 * i);
    std::vector<Future<int>> futures;
    for (int i = 0; i < 10; ++i) futures.push_back(w.Submit(Twice, i));
    for (int i = 0; i < 10; ++i) EXPECT_EQ(futures[i].Result(), 2 * i);
  }
}

TEST_P(TaskWorkerTest, MapItemsWithinTheirTimeoutSucceed) {
  TaskWorker w = Make();
  std::vector<int> got;
  for (auto& item : w.Map(
           {.max_in_flight = 3, .timeout = absl::Hours(1)}, [](int x) { return x + 1; },
           std::views::iota(0, 20))) {
    got.push_back(item.value());
  }
  ASSERT_EQ(got.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(got[i], i + 1);
}

TEST_P(TaskWorkerTest, LeavingAMapEarlyWaitsForTheItemRunningItsFunction) {
  if (GetParam() == Mode::kSync) GTEST_SKIP() << "sync items run in the consumer's thread";
  TaskWorker w = Make();
  Gate gate;
  std::atomic<bool> finished{false};
  auto fn = [&](int x) {
    if (x == 0) {
      gate.Hold();
      finished = true;
    }
    return x;
  };
  std::vector<int> inputs = {0, 1, 2, 3};
  auto results = std::make_unique<decltype(w.Map(fn, inputs))>(w.Map(fn, inputs));
  results->Start();
  gate.WaitEntered();
  std::thread destroyer([&] {
    results.reset();  // Cancels the items and waits for item 0, which captured `gate`.
    EXPECT_TRUE(finished.load());
  });
  gate.Release();
  destroyer.join();
  EXPECT_EQ(w.Submit([] { return 3; }).Result(), 3);
}

// --- Task and MakeExecutor ----------------------------------------------------------------------

TEST_P(TaskWorkerTest, TaskBindsAFunctionToItsWorker) {
  auto add = MakeTask([](int a, int b) { return a + b; }, Options());
  EXPECT_EQ(add(2, 3).Result(), 5);
  EXPECT_EQ(add.Submit(4, MakeReadyFuture(5)).Result(), 9);
  std::vector<int> got;
  for (auto& item : add.Map(std::vector<int>{1, 2, 3}, std::vector<int>{10, 20, 30, 40})) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ElementsAre(11, 22, 33));
  got.clear();
  for (auto& item : add.Map({.max_in_flight = 1}, std::views::iota(0, 3), std::views::iota(0))) {
    got.push_back(item.value());
  }
  EXPECT_THAT(got, ElementsAre(0, 2, 4));
  EXPECT_EQ(add.worker().options().mode, GetParam());
  EXPECT_TRUE(add.Stop());
  EXPECT_TRUE(add.stopped());
  EXPECT_THROW(add(1, 1).Result(), StoppedError);
}

TEST_P(TaskWorkerTest, TaskKeepsOneFunctionObjectAcrossCalls) {
  auto next = MakeTask([n = 0]() mutable { return ++n; }, Options());
  next();
  next.Submit();
  EXPECT_EQ(next().Result(), 3);
}

TEST_P(TaskWorkerTest, TaskPassesCallableArgumentsAsData) {
  // concurry treated a callable first argument as a replacement function; here the bound
  // function is always the function.
  auto apply = MakeTask([](std::function<int(int)> g, int x) { return g(x); }, Options());
  EXPECT_EQ(apply([](int x) { return x * 10; }, 4).Result(), 40);
}

TEST_P(TaskWorkerTest, TasksCanShareOneWorker) {
  TaskWorker w = Make();
  std::vector<int> order;
  Task first([&order](int x) { order.push_back(x); }, w);
  Task second([&order](int x) { order.push_back(-x); }, w);
  first(1);
  second(2);
  first(3).Result();
  EXPECT_THAT(order, ElementsAre(1, -2, 3));
}

TEST_P(TaskWorkerTest, MakeExecutorReturnsATaskWorker) {
  TaskWorker executor = MakeExecutor(Options());
  EXPECT_EQ(executor.Submit(Twice, 4).Result(), 8);
  std::vector<int> got;
  for (auto& item : executor.Map(Twice, std::vector<int>{1, 2})) got.push_back(item.value());
  EXPECT_THAT(got, ElementsAre(2, 4));
  EXPECT_EQ(Async(executor, [] { return 5; }).Result(), 5);
  EXPECT_TRUE(executor.Stop());
}

// Every linked backend that runs callables in the process (loopback encodes calls, which
// arbitrary callables cannot survive).
std::vector<Mode> InProcessModes() {
  std::vector<Mode> modes;
  for (Mode mode : LinkedWorkerModes()) {
    if (!FindWorkerBackend(mode)->encodes_calls()) modes.push_back(mode);
  }
  return modes;
}

TEST(TaskWorkerModesTest, RunsOnEveryInProcessBackend) {
  EXPECT_THAT(InProcessModes(),
              ElementsAre(Mode::kSync, Mode::kThread, Mode::kTbb, Mode::kCoroutine));
}

INSTANTIATE_TEST_SUITE_P(Modes, TaskWorkerTest, ::testing::ValuesIn(InProcessModes()),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return AbslUnparseFlag(info.param);
                         });

// --- Bad input ----------------------------------------------------------------------------------

// Loopback mode sends calls as bytes: only registered free functions go (see
// //workers:task_worker_process_test); closures and unregistered functions fail their future.
TEST(TaskWorkerOptionsTest, LoopbackModeRefusesClosures) {
  TaskWorker w = TaskWorker::Create({.mode = Mode::kLoopback});
  Future<int> lambda = w.Submit([](int x) { return x; }, 1);
  EXPECT_THAT(InvalidOptionMessage([&] { lambda.Result(); }),
              HasSubstr("TaskWorker::Submit: mode loopback sends every call as bytes, and lambdas "
                        "and function objects (including std::function) cannot cross a process "
                        "boundary"));
  auto twice = MakeTask(Twice, {.mode = Mode::kLoopback});
  Future<int> unregistered = twice(2);
  EXPECT_THAT(InvalidOptionMessage([&] { unregistered.Result(); }),
              HasSubstr("Task::Submit: the function is not registered"));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(TaskWorkerOptionsTest, CreateRejectsBlocking) {
  EXPECT_THAT(InvalidOptionMessage([] { TaskWorker::Create({.blocking = true}); }),
              HasSubstr("TaskWorker::Create: blocking is true"));
}

TEST(TaskWorkerOptionsTest, MapRejectsBadOptions) {
  TaskWorker w = TaskWorker::Create({.mode = Mode::kSync});
  std::vector<int> inputs = {1};
  EXPECT_THAT(InvalidOptionMessage([&] { w.Map({.max_in_flight = 0}, Twice, inputs); }),
              HasSubstr("TaskWorker::Map: MapOptions::max_in_flight is 0; allowed: 1 to 1048576"));
  EXPECT_THAT(InvalidOptionMessage([&] { w.Map({.timeout = absl::Seconds(-1)}, Twice, inputs); }),
              HasSubstr("TaskWorker::Map: MapOptions::timeout is -1s; allowed: >= 0"));
  MapOptions bad_progress;
  bad_progress.progress.miniters = -1;
  EXPECT_THAT(InvalidOptionMessage([&] { w.Map(bad_progress, Twice, inputs); }),
              HasSubstr("progress.miniters is -1"));
  Task twice(Twice, w);
  EXPECT_THAT(InvalidOptionMessage([&] { twice.Map({.max_in_flight = -3}, inputs); }),
              HasSubstr("Task::Map: MapOptions::max_in_flight is -3"));
}

TEST(TaskWorkerOptionsTest, StopRejectsANegativeTimeout) {
  TaskWorker w = TaskWorker::Create({.mode = Mode::kSync});
  EXPECT_THAT(InvalidOptionMessage([&] { w.Stop(absl::Seconds(-2)); }),
              HasSubstr("TaskWorker::Stop: the timeout is -2s; allowed: >= 0"));
}

TEST(TaskWorkerOptionsTest, EmptyHandleThrows) {
  TaskWorker empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_THAT(InvalidOptionMessage([&] { empty.Submit([] {}); }),
              HasSubstr("TaskWorker::Submit: the TaskWorker handle is empty"));
  Executor& executor = empty;
  EXPECT_THAT(InvalidOptionMessage([&] { executor.Submit([] {}); }), HasSubstr("empty"));
  EXPECT_THAT(InvalidOptionMessage([&] { Task(Twice, TaskWorker()); }),
              HasSubstr("the TaskWorker handle is empty"));
}

}  // namespace
}  // namespace concurry

#include "sync/stream.h"

#include <algorithm>
#include <atomic>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/tbb_executor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"
#include "testing/mem_stream.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

std::vector<int> Iota(int n) {
  std::vector<int> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// A pull source over 0 .. n-1 that counts its calls (including the final nullopt).
struct CountingSource {
  int n;
  std::shared_ptr<std::atomic<int>> pulls = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<int> next = std::make_shared<int>(0);

  std::optional<int> operator()() const {
    pulls->fetch_add(1);
    if (*next >= n) return std::nullopt;
    return (*next)++;
  }
};

// Futures the test completes by hand: fn(input) returns bank.Make(input).
class PromiseBank {
 public:
  Future<int> Make(int input) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ++calls_;
    return promises_[input].GetFuture();
  }
  // Completes the future of `input` with `value` (outside the lock: callbacks run inline).
  void Complete(int input, int value) ABSL_LOCKS_EXCLUDED(mu_) {
    Promise<int> promise;
    {
      absl::MutexLock lock(&mu_);
      auto it = promises_.find(input);
      ASSERT_NE(it, promises_.end()) << "input " << input << " was not started";
      promise = std::move(it->second);
      promises_.erase(it);
    }
    promise.SetValue(value);
  }
  // Fails the future of `input` with `error`.
  void Fail(int input, std::exception_ptr error) ABSL_LOCKS_EXCLUDED(mu_) {
    Promise<int> promise;
    {
      absl::MutexLock lock(&mu_);
      auto it = promises_.find(input);
      ASSERT_NE(it, promises_.end()) << "input " << input << " was not started";
      promise = std::move(it->second);
      promises_.erase(it);
    }
    promise.SetError(std::move(error));
  }
  void CompleteAll(int value) ABSL_LOCKS_EXCLUDED(mu_) {
    std::map<int, Promise<int>> promises;
    {
      absl::MutexLock lock(&mu_);
      promises.swap(promises_);
    }
    for (auto& [input, promise] : promises) promise.SetValue(value);
  }
  void WaitForCalls(int n) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    wanted_ = n;
    mu_.Await(absl::Condition(this, &PromiseBank::EnoughCallsLocked));
  }
  int calls() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // Returns how many of the futures not completed by hand were cancelled.
  int cancelled() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const auto& [input, promise] : promises_) n += promise.IsCancelled() ? 1 : 0;
    return n;
  }

 private:
  bool EnoughCallsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_ >= wanted_; }

  absl::Mutex mu_;
  std::map<int, Promise<int>> promises_ ABSL_GUARDED_BY(mu_);
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  int wanted_ ABSL_GUARDED_BY(mu_) = 0;
};

// Collects items on a consumer thread.
template <typename Stream>
class Consumer {
 public:
  explicit Consumer(Stream& stream)
      : thread_([this, &stream] {
          try {
            for (auto& item : stream) {
              absl::MutexLock lock(&mu_);
              items_.emplace_back(item.index, item.value());
            }
          } catch (...) {
            error_ = std::current_exception();
          }
        }) {}
  // Joins and returns (index, value) pairs in yield order.
  std::vector<std::pair<int64_t, int>> Join() {
    thread_.join();
    absl::MutexLock lock(&mu_);
    return items_;
  }
  std::exception_ptr error() const { return error_; }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<int64_t, int>> items_ ABSL_GUARDED_BY(mu_);
  std::exception_ptr error_;
  std::thread thread_;
};

TEST(StreamTest, RejectsInvalidOptions) {
  std::vector<int> inputs = Iota(3);
  auto fn = [](int x) { return x; };
  try {
    Stream(InlineExecutor(), inputs, fn, {.max_in_flight = 0});
    FAIL() << "max_in_flight = 0 was accepted";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("max_in_flight must be in [1, "));
    EXPECT_THAT(e.what(), HasSubstr("got 0"));
  }
  EXPECT_THROW(Stream(InlineExecutor(), inputs, fn, {.max_in_flight = -4}), InvalidOptionError);
  EXPECT_THROW(Stream(InlineExecutor(), inputs, fn, {.timeout = absl::Seconds(-1)}),
               InvalidOptionError);
}

TEST(StreamTest, RejectsUnknownOrderAndErrorPolicyValues) {
  std::vector<int> inputs = Iota(3);
  int calls = 0;
  auto fn = [&](int x) {
    ++calls;
    return x;
  };
  const auto error_of = [&](StreamOptions options) -> std::string {
    try {
      Stream(InlineExecutor(), inputs, fn, std::move(options));
    } catch (const InvalidOptionError& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error_of({.order = static_cast<Order>(5)}),
            "StreamOptions::order: unknown value 5; allowed: kCompletion, kInput");
  EXPECT_EQ(error_of({.order = static_cast<Order>(-1)}),
            "StreamOptions::order: unknown value -1; allowed: kCompletion, kInput");
  EXPECT_EQ(error_of({.on_error = static_cast<ErrorPolicy>(2)}),
            "StreamOptions::on_error: unknown value 2; allowed: kStopOnError, kCollect");
  // A bad progress style fails Stream() itself, not the first Next() (where a caught error would
  // leave a stream that looks finished with no items).
  EXPECT_EQ(error_of({.progress = {.style = static_cast<ProgressOptions::Style>(9)}}),
            "StreamOptions::progress.style: unknown value 9; allowed: kAuto, kInPlace, kLines");
  // Rejected when the stream is created, before anything runs; the pull-source overload too.
  EXPECT_THROW(Stream(InlineExecutor(), []() -> std::optional<int> { return std::nullopt; }, fn,
                      {.on_error = static_cast<ErrorPolicy>(7)}),
               InvalidOptionError);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(error_of({.order = Order::kInput, .on_error = ErrorPolicy::kCollect}), "no error");
}

TEST(StreamTest, YieldsEveryResultOnInlineExecutor) {
  std::vector<int> inputs = Iota(100);
  std::vector<int64_t> indices;
  std::vector<int> values;
  for (auto& item : Stream(InlineExecutor(), inputs, [](int x) { return 2 * x; })) {
    indices.push_back(item.index);
    values.push_back(item.value());
  }
  std::vector<int> expected_values;
  std::vector<int64_t> expected_indices;
  for (int i = 0; i < 100; ++i) {
    expected_values.push_back(2 * i);
    expected_indices.push_back(i);
  }
  // Inline tasks complete in start order.
  EXPECT_EQ(indices, expected_indices);
  EXPECT_EQ(values, expected_values);
}

TEST(StreamTest, EmptyInputEndsAtOnce) {
  std::vector<int> inputs;
  auto stream = Stream(InlineExecutor(), inputs, [](int x) { return x; });
  EXPECT_EQ(stream.Next(), nullptr);
  EXPECT_EQ(stream.Next(), nullptr);
  EXPECT_FALSE(stream.Add(1));  // Ended: follow-ups are refused.
}

TEST(StreamTest, KeepsExactlyMaxInFlightSubmittedAndTopsUpOnEachCompletion) {
  testkit::ManualExecutor executor;
  CountingSource source{.n = 10};
  int max_outstanding = 0;
  int ran = 0;
  auto stream = Stream(executor, source,
                       [&](int x) {
                         // Submitted and not finished: the queued tasks plus this one.
                         max_outstanding =
                             std::max(max_outstanding, static_cast<int>(executor.pending()) + 1);
                         ++ran;
                         return x * 10;
                       },
                       {.max_in_flight = 3});
  EXPECT_EQ(*source.pulls, 0) << "nothing starts before the first begin/Next/Start";
  stream.Start();
  EXPECT_EQ(executor.pending(), 3u);
  EXPECT_EQ(*source.pulls, 3);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(executor.RunOne());
    EXPECT_EQ(executor.pending(), 3u) << "each completion tops up by one";
    EXPECT_EQ(*source.pulls, 3 + i);
  }
  // 3 running + 3 unconsumed results = 2 * max_in_flight: no more top-ups until consumed.
  ASSERT_TRUE(executor.RunOne());
  EXPECT_EQ(executor.pending(), 2u);
  EXPECT_EQ(*source.pulls, 6);

  Consumer consumer(stream);
  while (ran < 10) {
    executor.BlockUntilPending(1);
    ASSERT_TRUE(executor.RunOne());
  }
  auto items = consumer.Join();
  ASSERT_EQ(consumer.error(), nullptr);
  EXPECT_EQ(max_outstanding, 3);
  EXPECT_EQ(*source.pulls, 11);  // 10 inputs and the final nullopt.
  std::vector<std::pair<int64_t, int>> expected;
  for (int i = 0; i < 10; ++i) expected.emplace_back(i, i * 10);
  EXPECT_THAT(items, UnorderedElementsAreArray(expected));
}

TEST(StreamTest, PullsARangeLazily) {
  testkit::ManualExecutor executor;
  int computed = 0;
  auto inputs = std::views::iota(0, 1000) | std::views::transform([&](int i) {
                  ++computed;
                  return i;
                });
  auto stream = Stream(executor, inputs, [](int x) { return x; }, {.max_in_flight = 4});
  stream.Start();
  EXPECT_EQ(computed, 4);
  EXPECT_EQ(executor.pending(), 4u);
  ASSERT_TRUE(executor.RunOne());
  EXPECT_EQ(computed, 5);
  auto* item = stream.Next();
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->index, 0);
  EXPECT_EQ(computed, 5);
  executor.RunAll();  // Tops up to 8 outstanding (4 running + 4 unconsumed) as they complete.
  EXPECT_LE(computed, 13);
}

// A minimal single-pass coroutine generator with a move-only iterator.
template <typename T>
class Generator {
 public:
  struct promise_type {
    T value;
    Generator get_return_object() { return Generator(Handle::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    std::suspend_always yield_value(T v) {
      value = std::move(v);
      return {};
    }
    void return_void() {}
    void unhandled_exception() { throw; }
  };
  using Handle = std::coroutine_handle<promise_type>;

  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(Handle handle) : handle_(handle) {}
    iterator(iterator&&) = default;
    iterator& operator=(iterator&&) = default;
    const T& operator*() const { return handle_.promise().value; }
    iterator& operator++() {
      handle_.resume();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !handle_ || handle_.done(); }

   private:
    Handle handle_;
  };

  explicit Generator(Handle handle) : handle_(handle) {}
  Generator(Generator&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  ~Generator() {
    if (handle_) handle_.destroy();
  }
  iterator begin() {
    handle_.resume();
    return iterator(handle_);
  }
  std::default_sentinel_t end() { return {}; }

 private:
  Handle handle_;
};

Generator<int> Numbers(int n, int* produced) {
  for (int i = 0; i < n; ++i) {
    ++*produced;
    co_yield i;
  }
}

TEST(StreamTest, PullsAGeneratorLazily) {
  static_assert(std::ranges::input_range<Generator<int>>);
  testkit::ManualExecutor executor;
  int produced = 0;
  auto stream =
      Stream(executor, Numbers(1000, &produced), [](int x) { return x * 2; }, {.max_in_flight = 4});
  EXPECT_EQ(produced, 0);
  stream.Start();
  EXPECT_EQ(produced, 4);
  ASSERT_TRUE(executor.RunOne());
  EXPECT_EQ(produced, 5);
  auto* item = stream.Next();
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->value(), 0);
  EXPECT_EQ(produced, 5);
  executor.RunAll();  // Leaves nothing in flight for the destructor.
}

TEST(StreamTest, InputOrderYieldsByIndexAndBoundsTheWindow) {
  PromiseBank bank;
  auto stream = Stream(InlineExecutor(), Iota(6), [&](int x) { return bank.Make(x); },
                       {.max_in_flight = 3, .order = Order::kInput});
  stream.Start();
  EXPECT_EQ(bank.calls(), 3);
  bank.Complete(2, 20);
  bank.Complete(1, 10);
  EXPECT_EQ(bank.calls(), 3) << "input 3 must not start before result 0 was yielded";
  bank.Complete(0, 0);
  EXPECT_EQ(bank.calls(), 3);
  std::vector<std::pair<int64_t, int>> items;
  for (int i = 0; i < 3; ++i) {
    auto* item = stream.Next();  // Ready: does not block.
    ASSERT_NE(item, nullptr);
    items.emplace_back(item->index, item->value());
  }
  EXPECT_THAT(items, ElementsAre(std::pair<int64_t, int>{0, 0}, std::pair<int64_t, int>{1, 10},
                                 std::pair<int64_t, int>{2, 20}));
  Consumer consumer(stream);
  bank.WaitForCalls(6);  // Yielding 0..2 freed the window for 3..5.
  bank.Complete(5, 50);
  bank.Complete(3, 30);
  bank.Complete(4, 40);
  EXPECT_THAT(consumer.Join(),
              ElementsAre(std::pair<int64_t, int>{3, 30}, std::pair<int64_t, int>{4, 40},
                          std::pair<int64_t, int>{5, 50}));
}

TEST(StreamTest, CompletionOrderYieldsFastestFirst) {
  PromiseBank bank;
  auto stream =
      Stream(InlineExecutor(), Iota(3), [&](int x) { return bank.Make(x); }, {.max_in_flight = 3});
  stream.Start();
  bank.Complete(2, 20);
  bank.Complete(0, 0);
  bank.Complete(1, 10);
  std::vector<int64_t> order;
  for (auto& item : stream) order.push_back(item.index);
  EXPECT_THAT(order, ElementsAre(2, 0, 1));
}

struct Page {
  std::string table;
  int number;
};

TEST(StreamTest, FollowUpTasksFromTheFunctionRunAPaginatedScan) {
  const std::map<std::string, int> pages = {{"a", 3}, {"b", 1}, {"c", 5}};
  TbbExecutor executor(2);
  std::vector<Page> first;
  for (const auto& [table, count] : pages) first.push_back({table, 0});
  std::multiset<std::string> rows;
  for (auto& item : Stream(executor, first,
                           [&](Page page, StreamContext<Page>&context) {
                             if (page.number + 1 < pages.at(page.table)) {
                               EXPECT_TRUE(context.Enqueue({page.table, page.number + 1}));
                             }
                             return absl::StrCat(page.table, page.number);
                           },
                           {.max_in_flight = 2})) {
    rows.insert(item.value());
  }
  EXPECT_THAT(rows,
              UnorderedElementsAreArray({"a0", "a1", "a2", "b0", "c0", "c1", "c2", "c3", "c4"}));
}

TEST(StreamTest, FollowUpTasksFromTheConsumer) {
  TbbExecutor executor(2);
  std::vector<int> first = {0, 100};
  auto stream = Stream(executor, first, [](int token) {
    // Returns (row, next token or -1).
    return std::pair<int, int>(token, token % 100 < 4 ? token + 1 : -1);
  });
  std::vector<int> rows;
  for (auto& item : stream) {
    auto [row, next] = item.value();
    rows.push_back(row);
    if (next >= 0) {
      EXPECT_TRUE(stream.Add(next));
    }
  }
  EXPECT_THAT(rows, UnorderedElementsAreArray({0, 1, 2, 3, 4, 100, 101, 102, 103, 104}));
}

TEST(StreamTest, StopOnErrorSkipsUnstartedWorkAndRethrowsTheOriginalType) {
  testkit::ManualExecutor executor;
  CountingSource source{.n = 10};
  std::vector<int> called;
  auto stream = Stream(executor, source,
                       [&](int x) {
                         called.push_back(x);
                         if (x == 1) throw std::out_of_range("page 1 is gone");
                         return x;
                       },
                       {.max_in_flight = 2});
  stream.Start();
  ASSERT_TRUE(executor.RunOne());  // 0 succeeds; 2 starts.
  ASSERT_TRUE(executor.RunOne());  // 1 fails: nothing more is pulled.
  EXPECT_EQ(*source.pulls, 3);
  EXPECT_EQ(executor.pending(), 1u);
  ASSERT_TRUE(executor.RunOne());  // 2 was queued, not started: skipped.
  EXPECT_THAT(called, ElementsAre(0, 1));
  auto* item = stream.Next();
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(item->value(), 0);
  try {
    stream.Next();
    FAIL() << "the error was not rethrown";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "page 1 is gone");
  }
  EXPECT_THROW(stream.Next(), std::out_of_range);  // Sticky.
  EXPECT_FALSE(stream.Add(7));
  EXPECT_EQ(*source.pulls, 3);
  EXPECT_EQ(executor.pending(), 0u);
}

TEST(StreamTest, StopOnErrorCancelsPendingFuturesAndRethrowsTheOriginalError) {
  for (const Order order : {Order::kCompletion, Order::kInput}) {
    SCOPED_TRACE(AbslUnparseFlag(order));
    PromiseBank bank;
    auto stream = Stream(InlineExecutor(), Iota(100), [&](int x) { return bank.Make(x); },
                         {.max_in_flight = 4, .order = order});
    Consumer consumer(stream);
    bank.WaitForCalls(4);
    // Cancels the futures of 0, 1 and 3, which are never completed otherwise. In input order the
    // consumer reaches 0 first, yet rethrows the original error, not a CancelledError.
    bank.Fail(2, std::make_exception_ptr(std::invalid_argument("bad input 2")));
    consumer.Join();
    ASSERT_NE(consumer.error(), nullptr);
    EXPECT_THROW(std::rethrow_exception(consumer.error()), std::invalid_argument);
    EXPECT_EQ(bank.calls(), 4);
    EXPECT_EQ(bank.cancelled(), 3);
  }
}

TEST(StreamTest, CollectYieldsErrorsAsItems) {
  std::vector<int> inputs = Iota(10);
  int errors = 0;
  int sum = 0;
  for (auto& item : Stream(InlineExecutor(), inputs,
                           [](int x) {
                             if (x % 2 == 1) throw std::runtime_error(absl::StrCat("odd ", x));
                             return x;
                           },
                           {.on_error = ErrorPolicy::kCollect})) {
    if (item.ok()) {
      sum += item.value();
    } else {
      ++errors;
      EXPECT_THROW(item.value(), std::runtime_error);
      EXPECT_EQ(item.outcome.status().code(), absl::StatusCode::kUnknown);
    }
  }
  EXPECT_EQ(errors, 5);
  EXPECT_EQ(sum, 0 + 2 + 4 + 6 + 8);
}

TEST(StreamTest, FlattensStatusOrAndStatusResults) {
  std::vector<int> inputs = Iota(4);
  std::vector<absl::Status> statuses;
  for (auto& item : Stream(InlineExecutor(), inputs,
                           [](int x) -> absl::StatusOr<std::string> {
                             if (x == 2) return absl::NotFoundError("no 2");
                             return absl::StrCat(x);
                           },
                           {.on_error = ErrorPolicy::kCollect})) {
    statuses.push_back(item.outcome.status());
    if (item.ok()) {
      EXPECT_EQ(item.value(), absl::StrCat(item.index));
    }
  }
  EXPECT_THAT(statuses, ElementsAre(absl::OkStatus(), absl::OkStatus(), absl::NotFoundError("no 2"),
                                    absl::OkStatus()));

  int count = 0;
  for (auto& item : Stream(InlineExecutor(), inputs, [](int) { return absl::OkStatus(); })) {
    static_assert(std::is_same_v<std::decay_t<decltype(item)>, StreamItem<void>>);
    item.value();
    ++count;
  }
  EXPECT_EQ(count, 4);
}

TEST(StreamTest, AcceptsIteratorPairsPullSourcesAndMoveOnlyInputs) {
  std::vector<int> inputs = Iota(5);
  int sum = 0;
  for (auto& item :
       Stream(InlineExecutor(), inputs.begin() + 1, inputs.end(), [](int x) { return x; })) {
    sum += item.value();
  }
  EXPECT_EQ(sum, 1 + 2 + 3 + 4);

  int next = 0;
  std::function<std::optional<int>()> source = [&]() -> std::optional<int> {
    if (next == 3) return std::nullopt;
    return next++;
  };
  sum = 0;
  for (auto& item : Stream(InlineExecutor(), source, [](int x) { return x * 100; })) {
    sum += item.value();
  }
  EXPECT_EQ(sum, 300);

  std::vector<std::unique_ptr<int>> owned;
  for (int i = 0; i < 4; ++i) owned.push_back(std::make_unique<int>(i));
  sum = 0;
  for (auto& item :
       Stream(InlineExecutor(), std::move(owned), [](std::unique_ptr<int> p) { return p; })) {
    sum += *item.value();
  }
  EXPECT_EQ(sum, 6);
}

TEST(StreamTest, EarlyBreakStopsPullingAndWaitsForRunningTasks) {
  TbbExecutor executor(2);
  CountingSource source{.n = 1000000};
  std::atomic<int> running{0};
  std::atomic<int> finished{0};
  {
    auto stream = Stream(executor, source,
                         [&](int x) {
                           running.fetch_add(1);
                           auto value = std::make_unique<int>(x);  // Leaks would show under ASan.
                           finished.fetch_add(1);
                           running.fetch_sub(1);
                           return value;
                         },
                         {.max_in_flight = 8});
    int seen = 0;
    for (auto& item : stream) {
      EXPECT_NE(item.value(), nullptr);
      if (++seen == 20) break;
    }
  }
  EXPECT_EQ(running.load(), 0) << "the destructor returned with tasks still running";
  EXPECT_LE(*source.pulls, 20 + 2 * 8 + 1);
}

TEST(StreamTest, ManyItemsOnTbbExecutor) {
  TbbExecutor executor(2);
  constexpr int kN = 200000;
  std::vector<char> seen(kN, 0);
  int64_t sum = 0;
  for (auto& item : Stream(executor, std::views::iota(0, kN),
                           [](int x) { return static_cast<int64_t>(x) * 3; })) {
    ASSERT_EQ(seen[item.index], 0);
    seen[item.index] = 1;
    sum += item.value();
  }
  EXPECT_EQ(sum, 3 * (static_cast<int64_t>(kN) * (kN - 1) / 2));
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), kN);
}

TEST(StreamTest, ManyItemsInlineDoNotRecurse) {
  int64_t sum = 0;
  for (auto& item : Stream(InlineExecutor(), std::views::iota(0, 300000), [](int x) { return x; },
                           {.max_in_flight = 16})) {
    sum += item.value();
  }
  EXPECT_EQ(sum, static_cast<int64_t>(300000) * 299999 / 2);
}

TEST(StreamTest, InputOrderOnTbbExecutor) {
  TbbExecutor executor(2);
  int64_t expected = 0;
  for (auto& item : Stream(executor, std::views::iota(0, 50000), [](int x) { return x; },
                           {.max_in_flight = 7, .order = Order::kInput})) {
    ASSERT_EQ(item.index, expected);
    ASSERT_EQ(item.value(), expected);
    ++expected;
  }
  EXPECT_EQ(expected, 50000);
}

TEST(StreamTest, CancelFromAnotherThreadCancelsPendingFuturesAndThrowsCancelledError) {
  PromiseBank bank;
  auto stream = Stream(InlineExecutor(), Iota(100), [&](int x) { return bank.Make(x); },
                       {.max_in_flight = 4});
  Consumer consumer(stream);
  bank.WaitForCalls(4);
  stream.Cancel();  // The futures of 0..3 are never completed otherwise.
  consumer.Join();
  ASSERT_NE(consumer.error(), nullptr);
  EXPECT_THROW(std::rethrow_exception(consumer.error()), CancelledError);
  EXPECT_EQ(bank.calls(), 4);
  EXPECT_EQ(bank.cancelled(), 4);
}

TEST(StreamTest, BreakingOutCancelsPendingFutures) {
  PromiseBank bank;
  {
    auto stream = Stream(InlineExecutor(), Iota(100), [&](int x) { return bank.Make(x); },
                         {.max_in_flight = 4});
    stream.Start();
    bank.Complete(0, 0);  // 4 starts.
    for (auto& item : stream) {
      EXPECT_EQ(item.index, 0);
      break;  // The destructor cancels the futures of 1..4, never completed otherwise.
    }
  }
  EXPECT_EQ(bank.calls(), 5);
  EXPECT_EQ(bank.cancelled(), 4);
}

TEST(StreamTest, AFutureReturnedAfterTheStreamStoppedIsCancelled) {
  PromiseBank bank;
  std::optional<ResultStream<int, int>> stream;
  stream.emplace(Stream(InlineExecutor(), Iota(10),
                        [&](int x) {
                          stream->Cancel();
                          return bank.Make(x);
                        },
                        {.max_in_flight = 1}));
  EXPECT_THROW(stream->Next(), CancelledError);
  EXPECT_EQ(bank.calls(), 1);
  EXPECT_EQ(bank.cancelled(), 1);
}

TEST(StreamTest, TimeoutOnFakeClock) {
  testkit::FakeClock clock;
  PromiseBank bank;
  auto stream = Stream(InlineExecutor(), Iota(10), [&](int x) { return bank.Make(x); },
                       {.max_in_flight = 2, .timeout = absl::Seconds(5), .clock = &clock});
  Consumer consumer(stream);
  clock.BlockUntilWaiters(1);  // The consumer waits for a result.
  clock.Advance(absl::Seconds(4));
  bank.Complete(0, 0);  // Yielded; 2 starts.
  bank.WaitForCalls(3);
  clock.BlockUntilWaiters(1);       // It waits again, with the same deadline.
  clock.Advance(absl::Seconds(1));  // Times out: cancels the futures of 1 and 2, then throws.
  auto items = consumer.Join();
  EXPECT_EQ(bank.calls(), 3);
  EXPECT_EQ(bank.cancelled(), 2);
  EXPECT_THAT(items, ElementsAre(std::pair<int64_t, int>{0, 0}));
  ASSERT_NE(consumer.error(), nullptr);
  try {
    std::rethrow_exception(consumer.error());
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Stream timed out after 5s; yielded 1 results"));
  }
}

TEST(StreamTest, ExecutorThatRejectsTasksStopsTheStream) {
  TbbExecutor executor(1);
  executor.Shutdown();
  CountingSource source{.n = 100};
  auto stream = Stream(executor, source, [](int x) { return x; },
                       {.max_in_flight = 4, .on_error = ErrorPolicy::kCollect});
  EXPECT_THROW(stream.Next(), StoppedError);
  EXPECT_THROW(stream.Next(), StoppedError);
  EXPECT_LE(*source.pulls, 4);
}

TEST(StreamTest, ExecutorThatDropsTasksStopsTheStream) {
  CountingSource source{.n = 100};
  std::optional<testkit::ManualExecutor> executor(std::in_place);
  auto stream = Stream(*executor, source, [](int x) { return x; }, {.max_in_flight = 3});
  stream.Start();
  ASSERT_TRUE(executor->RunOne());  // 0 completes; 3 starts.
  executor.reset();                 // Destroys the queued tasks of 1, 2 and 3 without running them.
  EXPECT_THROW(stream.Next(), StoppedError);  // At once, like a cancellation.
  EXPECT_EQ(*source.pulls, 4);
}

// An executor that says it runs `concurrency` tasks at once but runs them only when the test says
// (RunAll), and drops the rest when destroyed. Not thread-safe; confine to the test's thread.
class SizedManualExecutor final : public Executor {
 public:
  explicit SizedManualExecutor(int concurrency) : concurrency_(concurrency) {}
  void Submit(Task task) override { tasks_.push_back(std::move(task)); }
  int max_concurrency() const override { return concurrency_; }
  bool tasks_may_run_on_any_thread() const override { return true; }
  int pending() const { return static_cast<int>(tasks_.size()); }
  // Runs the queued tasks, and those they queue, until none is left; returns how many ran.
  int RunAll() {
    int ran = 0;
    while (!tasks_.empty()) {
      Task task = std::move(tasks_.front());
      tasks_.erase(tasks_.begin());
      std::move(task)();
      ++ran;
    }
    return ran;
  }

 private:
  const int concurrency_;
  std::vector<Task> tasks_;
};

TEST(StreamTest, RunsInputsInAtMostMaxConcurrencyExecutorTasks) {
  SizedManualExecutor executor(2);
  std::vector<int> seen;
  auto stream = Stream(executor, Iota(100),
                       [&](int x) {
                         seen.push_back(x);
                         return x;
                       },
                       {.max_in_flight = 8});
  stream.Start();
  EXPECT_EQ(executor.pending(), 2);  // Two drainers for 8 started inputs, not 8 tasks.
  const int ran = executor.RunAll();
  EXPECT_LE(ran, 2);
  // Completion order holds 2 * max_in_flight results and inputs at most: then it waits.
  EXPECT_EQ(seen.size(), 16u);
  int64_t count = 0;
  for (auto& item : stream) {
    EXPECT_EQ(item.value(), item.index);
    ++count;
    executor.RunAll();
  }
  EXPECT_EQ(count, 100);
}

TEST(StreamTest, ConsumerRunsWaitingInputsItselfInsteadOfSleeping) {
  SizedManualExecutor executor(2);  // Nobody runs its tasks while the loop runs.
  const std::thread::id consumer = std::this_thread::get_id();
  std::vector<int> values;
  {
    auto stream = Stream(executor, Iota(5),
                         [&](int x) {
                           EXPECT_EQ(std::this_thread::get_id(), consumer);
                           return x * 10;
                         },
                         {.max_in_flight = 2, .order = Order::kInput});
    for (auto& item : stream) values.push_back(item.value());
    EXPECT_GE(executor.pending(), 1);
    executor.RunAll();  // The drainers find nothing left and leave; then the stream may go.
  }
  EXPECT_THAT(values, ElementsAre(0, 10, 20, 30, 40));
}

TEST(StreamTest, ExecutorThatDropsBatchedTasksStopsTheStream) {
  CountingSource source{.n = 100};
  std::optional<SizedManualExecutor> executor(std::in_place, 2);
  auto stream = Stream(*executor, source, [](int x) { return x; }, {.max_in_flight = 3});
  stream.Start();
  EXPECT_EQ(executor->pending(), 2);
  executor.reset();  // Destroys both drainers without running them: nobody runs inputs 0 to 2.
  EXPECT_THROW(stream.Next(), StoppedError);
  EXPECT_THROW(stream.Next(), StoppedError);
  EXPECT_EQ(*source.pulls, 3);
}

TEST(StreamTest, SourceErrorStopsTheStream) {
  int next = 0;
  auto source = [&]() -> std::optional<int> {
    if (next == 3) throw std::length_error("source broke");
    return next++;
  };
  int seen = 0;
  try {
    for (auto& item :
         Stream(InlineExecutor(), source, [](int x) { return x; }, {.max_in_flight = 1})) {
      item.value();
      ++seen;
    }
    FAIL() << "the source error was not rethrown";
  } catch (const std::length_error& e) {
    EXPECT_STREQ(e.what(), "source broke");
  }
  EXPECT_LE(seen, 3);
}

TEST(StreamTest, DropsQueuedFollowUpsOutsideTheLock) {
  testkit::ManualExecutor executor;
  std::optional<ResultStream<Promise<int>, int>> stream;
  stream.emplace(Stream(
      executor,
      [n = 0]() mutable -> std::optional<Promise<int>> {
        if (n == 2) return std::nullopt;
        ++n;
        return Promise<int>();
      },
      [](Promise<int> promise) {
        promise.SetValue(1);
        return 1;
      },
      {.max_in_flight = 1}));
  stream->Start();
  Promise<int> follow_up;
  bool reentered = false;
  // Runs when the stream drops the follow-up (its promise breaks), and calls back into the stream.
  follow_up.GetFuture().AddDoneCallback([&] {
    EXPECT_FALSE(stream->Add(Promise<int>()));
    stream->Cancel();
    reentered = true;
  });
  EXPECT_TRUE(stream->Add(std::move(follow_up)));  // The window is full: queued.
  stream->Cancel();
  EXPECT_TRUE(reentered);
  executor.RunAll();  // The task that had not started skips.
  EXPECT_THROW(stream->Next(), CancelledError);
}

// A range of 0 .. n-1 that calls `on_destroy` when destroyed (not when moved from).
class CallbackRange {
 public:
  CallbackRange(int n, std::function<void()> on_destroy)
      : n_(n), on_destroy_(std::move(on_destroy)) {}
  CallbackRange(CallbackRange&& other) noexcept
      : n_(other.n_), on_destroy_(std::exchange(other.on_destroy_, nullptr)) {}
  CallbackRange& operator=(CallbackRange&&) = delete;
  ~CallbackRange() {
    if (on_destroy_) on_destroy_();
  }

  auto begin() const { return std::views::iota(0, n_).begin(); }
  auto end() const { return std::views::iota(0, n_).end(); }

 private:
  int n_;
  std::function<void()> on_destroy_;
};

TEST(StreamTest, DestroysASpentSourceOutsideTheLock) {
  testkit::ManualExecutor executor;
  std::optional<ResultStream<int, int>> stream;
  bool added = false;
  stream.emplace(Stream(executor, CallbackRange(1, [&] { added = stream->Add(100); }),
                        [](int x) { return x; }, {.max_in_flight = 1}));
  stream->Start();
  // 0 completes and finds the source exhausted: the task destroys the owned range, whose
  // destructor adds a follow-up, which starts at once.
  ASSERT_TRUE(executor.RunOne());
  EXPECT_TRUE(added);
  EXPECT_EQ(executor.pending(), 1u);
  executor.RunAll();
  std::vector<int> values;
  for (auto& item : *stream) values.push_back(item.value());
  EXPECT_THAT(values, ElementsAre(0, 100));
}

// Set while FlaggingInlineExecutor runs a task on this thread.
thread_local bool t_in_task = false;

// Runs each task at once on the submitting thread, like InlineExecutor(), with t_in_task set.
class FlaggingInlineExecutor final : public Executor {
 public:
  void Submit(Task task) override {
    const bool outer = std::exchange(t_in_task, true);
    std::move(task)();
    t_in_task = outer;
  }
};

// An input whose move constructor throws for value 1 inside a task.
struct FragileInput {
  explicit FragileInput(int v) : value(v) {}
  FragileInput(FragileInput&& other) : value(other.value) {
    if (t_in_task && value == 1) throw std::length_error("cannot move input 1");
  }
  FragileInput& operator=(FragileInput&&) = default;

  int value;
};

TEST(StreamTest, AFailureOutsideTheFunctionStopsTheStreamAndStillCompletesTheTask) {
  FlaggingInlineExecutor executor;
  std::vector<int> values;
  auto stream = Stream(
      executor,
      [n = 0]() mutable -> std::optional<FragileInput> {
        if (n == 3) return std::nullopt;
        return FragileInput(n++);
      },
      [](FragileInput input) { return input.value; }, {.max_in_flight = 4});
  // All three inputs start (outside any task); the task of 1 fails to move its input out.
  try {
    for (auto& item : stream) values.push_back(item.value());
    FAIL() << "the error was not rethrown";
  } catch (const std::length_error& e) {
    EXPECT_STREQ(e.what(), "cannot move input 1");
  }
  EXPECT_THROW(stream.Next(), std::length_error);
  EXPECT_THAT(values, ::testing::IsEmpty());  // A fatal error is thrown before ready results.
}

TEST(StreamTest, ReportsProgressToTheCallback) {
  testkit::FakeClock clock;
  std::vector<std::tuple<int64_t, int64_t, absl::Duration>> calls;
  std::vector<int> inputs = Iota(4);
  auto stream =
      Stream(InlineExecutor(), inputs, [](int x) { return x; },
             {.clock = &clock,
              .progress = {.callback = [&](int64_t n, int64_t total, absl::Duration elapsed) {
                calls.emplace_back(n, total, elapsed);
              }}});
  int count = 0;
  for (auto& item : stream) {
    item.value();
    if (++count == 2) {
      clock.Advance(absl::Seconds(1));
      EXPECT_TRUE(stream.Add(10));  // A follow-up grows the total.
    }
  }
  // After the loop body's Add(), more could be added at any time until the end: the callback
  // sees -1 (no final total) until the stream ended, and then the final total once more. The
  // total is refreshed per batch of results: 3 and 4 were ready with 2, before the Add().
  using Call = std::tuple<int64_t, int64_t, absl::Duration>;
  EXPECT_THAT(calls, ElementsAre(Call{1, 4, absl::ZeroDuration()}, Call{2, 4, absl::ZeroDuration()},
                                 Call{3, 4, absl::Seconds(1)}, Call{4, 4, absl::Seconds(1)},
                                 Call{5, -1, absl::Seconds(1)}, Call{5, 5, absl::Seconds(1)}));
}

TEST(StreamTest, DrawsAProgressBar) {
  char* buffer = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buffer, &size);
  testkit::FakeClock clock;
  {
    std::vector<int> inputs = Iota(3);
    for (auto& item :
         Stream(InlineExecutor(), inputs, [](int x) { return x; },
                {.clock = &clock, .progress = {.enabled = true, .force = true, .stream = out}})) {
      item.value();
    }
  }
  std::fflush(out);
  const std::string text(buffer, size);
  std::fclose(out);
  std::free(buffer);
  EXPECT_THAT(text, HasSubstr("Streaming:   0%|"));
  EXPECT_THAT(text, HasSubstr("[Done] Streaming: 100%|####################| 3/3"));
}

using testkit::MemStream;

// A paginated walk: each page but the last discovers the next one. While it may, the total is a
// lower bound ("known so far", no percentage or ETA); once the source is exhausted and nothing is
// left to run, the bar is a normal one.
TEST(StreamTest, ProgressOfDiscoveredWorkShowsNoPercentUntilTheTotalIsFinal) {
  testkit::ManualExecutor executor;
  testkit::FakeClock clock;
  MemStream out;
  std::vector<int> first_pages = {0};
  {
    auto stream = Stream(executor, first_pages,
                         [](int page, StreamContext<int>& context) {
                           if (page < 3) context.Enqueue(page + 1);
                           return page;
                         },
                         {.max_in_flight = 1,
                          .clock = &clock,
                          .progress = {.enabled = true,
                                       .description = "Walking",
                                       .miniters = 1,
                                       .force = true,
                                       .stream = out.file(),
                                       .style = ProgressOptions::Style::kLines}});
    stream.Start();
    std::vector<int> pages;
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(executor.RunOne());  // Runs page i, which enqueues page i + 1 (but the last).
      if (i > 0) clock.Advance(absl::Seconds(1));
      StreamItem<int>* item = stream.Next();
      ASSERT_NE(item, nullptr);
      pages.push_back(item->value());
    }
    EXPECT_EQ(stream.Next(), nullptr);
    EXPECT_THAT(pages, ElementsAre(0, 1, 2, 3));
  }
  EXPECT_EQ(out.Contents(),
            "Walking: 0 done / 2+ known so far [00:00, ? it/s]\n"
            "Walking: 2 done / 3+ known so far [00:01, 2.00 it/s]\n"
            "Walking: 3 done / 4+ known so far [00:02, 1.50 it/s]\n"
            "Walking: 100%|####################| 4/4 [00:03<00:00, 1.33 it/s]\n"
            "[Done] Walking: 100%|####################| 4/4 [00:03<00:00, 1.33 it/s]\n");
}

TEST(StreamTest, ProgressTotalOfAFunctionWithoutFollowUpsIsFinalFromTheStart) {
  testkit::FakeClock clock;
  std::vector<std::tuple<int64_t, int64_t>> calls;
  std::vector<int> inputs = Iota(3);
  for (auto& item : Stream(InlineExecutor(), inputs, [](int x) { return x; },
                           {.clock = &clock,
                           .progress = {.callback = [&](int64_t n, int64_t total, absl::Duration) {
                             calls.emplace_back(n, total);
                           }}})) {
    item.value();
  }
  using Call = std::tuple<int64_t, int64_t>;
  EXPECT_THAT(calls, ElementsAre(Call{1, 3}, Call{2, 3}, Call{3, 3}));
}

// Runs tasks inline and says it runs `n` at once.
class FixedConcurrencyExecutor final : public Executor {
 public:
  explicit FixedConcurrencyExecutor(int n) : n_(n) {}
  void Submit(Task task) override { std::move(task)(); }
  int max_concurrency() const override { return n_; }

 private:
  int n_;
};

TEST(StreamTest, WarnsOnceWhenMaxInFlightExceedsTheExecutorsConcurrency) {
  FixedConcurrencyExecutor executor(2);
  std::vector<std::string> warnings;
  std::vector<int> inputs = Iota(5);
  auto stream = Stream(executor, inputs, [](int x) { return x; },
                       {.max_in_flight = 16, .on_warning = [&](absl::string_view message) {
                          warnings.emplace_back(message);
                        }});
  EXPECT_THAT(warnings,
              ElementsAre("concurry::Stream: max_in_flight = 16 but the executor "
                          "(concurry::(anonymous namespace)::FixedConcurrencyExecutor) runs at "
                          "most 2 tasks at once; for blocking I/O use a ThreadPoolExecutor "
                          "(futures/thread_pool_executor.h) with max_workers >= 16"));
  EXPECT_EQ(stream.max_in_flight(), 16);
  EXPECT_EQ(stream.max_concurrency(), 2);
  EXPECT_EQ(stream.effective_concurrency(), 2);
  EXPECT_THAT(stream.Collect(), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_EQ(warnings.size(), 1u);  // Once, at creation: not per task.
}

TEST(StreamTest, NamesTbbExecutorAsSizedForCpuWork) {
  TbbExecutor executor(2);
  std::vector<std::string> warnings;
  std::vector<int> inputs = Iota(3);
  auto stream = Stream(executor, inputs, [](int x) { return x; },
                       {.max_in_flight = 8, .on_warning = [&](absl::string_view message) {
                          warnings.emplace_back(message);
                        }});
  EXPECT_THAT(warnings, ElementsAre(HasSubstr("max_in_flight = 8 but the executor "
                                              "(concurry::TbbExecutor, sized for CPU work) runs "
                                              "at most 2 tasks at once")));
  EXPECT_EQ(stream.effective_concurrency(), 2);
}

TEST(StreamTest, DoesNotWarnWithinTheConcurrencyOrWhenItIsUnknown) {
  std::vector<std::string> warnings;
  auto sink = [&](absl::string_view message) { warnings.emplace_back(message); };
  std::vector<int> inputs = Iota(3);
  FixedConcurrencyExecutor two(2);
  auto within =
      Stream(two, inputs, [](int x) { return x; }, {.max_in_flight = 2, .on_warning = sink});
  EXPECT_EQ(within.max_concurrency(), 2);
  EXPECT_EQ(within.effective_concurrency(), 2);
  FixedConcurrencyExecutor unknown(0);
  auto unknown_stream =
      Stream(unknown, inputs, [](int x) { return x; }, {.max_in_flight = 16, .on_warning = sink});
  EXPECT_EQ(unknown_stream.max_concurrency(), 0);
  EXPECT_EQ(unknown_stream.effective_concurrency(), 16);
  auto inline_stream = Stream(InlineExecutor(), inputs, [](int x) { return x; },
                              {.max_in_flight = 16, .on_warning = sink});
  EXPECT_EQ(inline_stream.effective_concurrency(), 16);
  // A function returning futures: a task stays in flight after the executor ran it, so the
  // executor's threads do not bound the tasks in flight.
  auto futures = Stream(two, inputs, [](int x) { return MakeReadyFuture(x); },
                        {.max_in_flight = 16, .on_warning = sink});
  EXPECT_EQ(futures.max_concurrency(), 0);
  EXPECT_EQ(futures.effective_concurrency(), 16);
  // The default max_in_flight (64) is not a request for concurrency: a CPU-bound stream on a
  // 2-thread executor keeps it busy without a warning; the accessors still tell.
  StreamOptions defaults;
  defaults.on_warning = sink;
  auto cpu = Stream(
      two, inputs, [](int x) { return x; }, defaults);
  EXPECT_EQ(cpu.max_in_flight(), 64);
  EXPECT_EQ(cpu.effective_concurrency(), 2);
  EXPECT_THAT(warnings, ::testing::IsEmpty());
}

TEST(StreamTest, WarnsOnStderrOncePerDistinctMessage) {
  FixedConcurrencyExecutor executor(3);
  std::vector<int> inputs = Iota(2);
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) {  // The same call site three times: one line.
    auto stream = Stream(executor, inputs, [](int x) { return x; }, {.max_in_flight = 37});
  }
  auto other = Stream(executor, inputs, [](int x) { return x; }, {.max_in_flight = 38});
  const std::string text = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(text,
            "concurry: warning: concurry::Stream: max_in_flight = 37 but the executor "
            "(concurry::(anonymous namespace)::FixedConcurrencyExecutor) runs at most 3 tasks at "
            "once; for blocking I/O use a ThreadPoolExecutor (futures/thread_pool_executor.h) "
            "with max_workers >= 37\n"
            "concurry: warning: concurry::Stream: max_in_flight = 38 but the executor "
            "(concurry::(anonymous namespace)::FixedConcurrencyExecutor) runs at most 3 tasks at "
            "once; for blocking I/O use a ThreadPoolExecutor (futures/thread_pool_executor.h) "
            "with max_workers >= 38\n");
}

TEST(StreamTest, StreamOnTakesTheRunnersConcurrencyFromTheCaller) {
  std::vector<std::string> warnings;
  std::vector<int> inputs = Iota(4);
  auto stream = sync_internal::StreamOn(
      InlineExecutor(), inputs, [](int x) { return MakeReadyFuture(x * 2); },
      {.max_in_flight = 8,
       .on_warning = [&](absl::string_view message) { warnings.emplace_back(message); }},
      {.max_concurrency = 1,
       .description = "the worker (thread mode)",
       .advice = "start it with more workers",
       .api = "concurry::Map"});
  EXPECT_THAT(warnings, ElementsAre("concurry::Map: max_in_flight = 8 but the worker (thread "
                                    "mode) runs at most 1 task at once; start it with more "
                                    "workers"));
  EXPECT_EQ(stream.max_concurrency(), 1);
  EXPECT_EQ(stream.effective_concurrency(), 1);
  EXPECT_THAT(stream.Collect(), ElementsAre(0, 2, 4, 6));
}

TEST(StreamTest, CollectReturnsTheValuesInInputOrderUnderOrderInput) {
  PromiseBank bank;
  std::vector<int> inputs = Iota(3);
  auto stream = Stream(InlineExecutor(), inputs, [&](int x) { return bank.Make(x); },
                       {.max_in_flight = 3, .order = Order::kInput});
  stream.Start();
  bank.Complete(2, 20);  // Completes last to first.
  bank.Complete(1, 10);
  bank.Complete(0, 0);
  EXPECT_THAT(stream.Collect(), ElementsAre(0, 10, 20));
}

TEST(StreamTest, CollectReturnsTheValuesInCompletionOrderByDefault) {
  PromiseBank bank;
  std::vector<int> inputs = Iota(3);
  auto stream =
      Stream(InlineExecutor(), inputs, [&](int x) { return bank.Make(x); }, {.max_in_flight = 3});
  stream.Start();
  bank.Complete(2, 20);
  bank.Complete(0, 0);
  bank.Complete(1, 10);
  EXPECT_THAT(stream.Collect(), ElementsAre(20, 0, 10));
}

TEST(StreamTest, CollectRethrowsTheFirstFailure) {
  std::vector<int> inputs = Iota(10);
  auto fn = [](int x) {
    if (x == 7) throw std::runtime_error("7 is unlucky");
    return x;
  };
  auto stopping = Stream(InlineExecutor(), inputs, fn, {.max_in_flight = 1});
  EXPECT_THROW(
      {
        try {
          stopping.Collect();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "7 is unlucky");
          throw;
        }
      },
      std::runtime_error);
  // Under kCollect too: a failed item has no value. The rest stays in the stream.
  auto collecting =
      Stream(InlineExecutor(), inputs, fn, {.max_in_flight = 1, .on_error = ErrorPolicy::kCollect});
  EXPECT_THROW(collecting.Collect(), std::runtime_error);
  EXPECT_THAT(collecting.Collect(), ElementsAre(8, 9));
}

TEST(StreamTest, CollectOutcomesKeepsFailuresWithTheirMessages) {
  std::vector<int> inputs = Iota(10);
  auto outcomes =
      Stream(InlineExecutor(), inputs,
             [](int x) {
               if (x == 7) throw std::runtime_error("7 is unlucky");
               return x;
             },
             {.max_in_flight = 2, .order = Order::kInput, .on_error = ErrorPolicy::kCollect})
          .CollectOutcomes();
  ASSERT_EQ(outcomes.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(outcomes[i].ok(), i != 7) << i;
    if (i != 7) {
      EXPECT_EQ(outcomes[i].value(), i);
    }
  }
  EXPECT_EQ(outcomes[7].error_message(), "7 is unlucky");
  EXPECT_EQ(outcomes[6].error_message(), "");
  // A void stream has outcomes too.
  auto voids = Stream(InlineExecutor(), inputs, [](int) {}).CollectOutcomes();
  EXPECT_EQ(voids.size(), 10u);
}

TEST(StreamTest, AFailedItemGivesItsExceptionMessage) {
  std::vector<int> inputs = Iota(8);
  std::vector<std::string> messages;
  for (auto& item : Stream(InlineExecutor(), inputs,
                           [](int x) {
                             if (x == 7) throw std::runtime_error("7 is unlucky");
                             return x;
                           },
                           {.order = Order::kInput, .on_error = ErrorPolicy::kCollect})) {
    if (item.ok()) {
      EXPECT_EQ(item.error_message(), "");
    } else {
      messages.push_back(absl::StrCat(item.index, ": ", item.error_message()));
    }
  }
  // Not the status formatting ("UNKNOWN: std::runtime_error: 7 is unlucky").
  EXPECT_THAT(messages, ElementsAre("7: 7 is unlucky"));
}

TEST(StreamTest, ParsesFlags) {
  Order order;
  ErrorPolicy policy;
  std::string error;
  EXPECT_TRUE(AbslParseFlag("Input", &order, &error));
  EXPECT_EQ(order, Order::kInput);
  EXPECT_TRUE(AbslParseFlag("completion", &order, &error));
  EXPECT_EQ(order, Order::kCompletion);
  EXPECT_FALSE(AbslParseFlag("random", &order, &error));
  EXPECT_THAT(error, HasSubstr("allowed: completion"));
  EXPECT_TRUE(AbslParseFlag("collect", &policy, &error));
  EXPECT_EQ(policy, ErrorPolicy::kCollect);
  EXPECT_TRUE(AbslParseFlag("stop", &policy, &error));
  EXPECT_EQ(policy, ErrorPolicy::kStopOnError);
  EXPECT_EQ(AbslUnparseFlag(Order::kInput), "input");
  EXPECT_EQ(AbslUnparseFlag(ErrorPolicy::kCollect), "collect");
  EXPECT_EQ(AbslUnparseFlag(Order::kCompletion), "completion");
  EXPECT_EQ(AbslUnparseFlag(ErrorPolicy::kStopOnError), "stop_on_error");
  // Out-of-range values are shown as numbers (as for Mode and ReturnWhen), not as a valid name.
  EXPECT_EQ(AbslUnparseFlag(static_cast<Order>(5)), "5");
  EXPECT_EQ(AbslUnparseFlag(static_cast<ErrorPolicy>(-1)), "-1");
}

TEST(StreamTest, IsAnInputRange) {
  using S = ResultStream<int, int>;
  static_assert(std::input_iterator<S::iterator>);
  static_assert(std::ranges::input_range<S>);
}

}  // namespace
}  // namespace concurry

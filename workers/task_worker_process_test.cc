// TaskWorker in the modes that send calls as bytes (Mode::kLoopback, Mode::kProcess): registered
// free functions run by name, and closures are refused with a clear error.

#include <unistd.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retry/policy.h"
#include "sync/stream.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/registration.h"
#include "workers/task_worker.h"

namespace app {

int Add(int a, int b) { return a + b; }
std::string Greet(const std::string& name) { return "hello " + name; }
int Pid() { return static_cast<int>(getpid()); }
int Square(int x) { return x * x; }
void ThrowOutOfRange(std::string message) { throw std::out_of_range(message); }
absl::Status CheckPositive(int x) {
  if (x > 0) return absl::OkStatus();
  return absl::InvalidArgumentError("not positive: " + std::to_string(x));
}
absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::FailedPreconditionError("odd: " + std::to_string(x));
  return x / 2;
}
concurry::Future<int> Later(int x) { return concurry::MakeReadyFuture(x + 1); }
int Scale(int x) { return 2 * x; }
double Scale(double x) { return 0.5 * x; }
int NotRegistered(int x) { return x; }
// Fails two attempts out of three: the counter lives where the function runs (this process in
// loopback mode, the worker's process in process mode) and is a multiple of 3 between calls that
// are retried to success.
int FlakyThird() {
  static int attempts = 0;  // Calls of one worker never overlap.
  if (++attempts % 3 != 0) throw std::runtime_error("flaky");
  return attempts;
}

}  // namespace app

CONCURRY_REGISTER_FUNCTION(app::Add);
CONCURRY_REGISTER_FUNCTION(app::Greet);
CONCURRY_REGISTER_FUNCTION(app::Pid);
CONCURRY_REGISTER_FUNCTION(app::Square);
CONCURRY_REGISTER_FUNCTION(app::ThrowOutOfRange);
CONCURRY_REGISTER_FUNCTION(app::CheckPositive);
CONCURRY_REGISTER_FUNCTION(app::Half);
CONCURRY_REGISTER_FUNCTION(app::Later);
CONCURRY_REGISTER_FUNCTION(app::FlakyThird);
CONCURRY_REGISTER_FUNCTION_AS(app::ScaleInt, static_cast<int (*)(int)>(&app::Scale));
CONCURRY_REGISTER_FUNCTION_AS(app::ScaleDouble, static_cast<double (*)(double)>(&app::Scale));
// Registered twice (as a header would be seen by several files): a no-op.
CONCURRY_REGISTER_FUNCTION(app::Square);

namespace concurry {
namespace {

using ::testing::HasSubstr;

// The message of the InvalidOptionError `future` failed with ("" if it did not).
template <typename T>
std::string InvalidOptionText(const Future<T>& future) {
  try {
    future.Wait();
    std::rethrow_exception(future.Error());
  } catch (const InvalidOptionError& error) {
    return error.what();
  } catch (...) {
  }
  return "";
}

class TaskWorkerEncodedTest : public ::testing::TestWithParam<Mode> {
 protected:
  WorkerOptions Options() { return {.mode = GetParam()}; }
  bool InProcess() const { return GetParam() == Mode::kLoopback; }
};

TEST_P(TaskWorkerEncodedTest, SubmitsRegisteredFunctionsByName) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  TaskWorker w = TaskWorker::Create(Options());
  EXPECT_EQ(w.Submit(&app::Add, 2, 3).Result(), 5);
  EXPECT_EQ(w.Submit(app::Add, 40, 2).Result(), 42);  // A function, not a pointer: the same.
  EXPECT_EQ(w.Submit(&app::Greet, std::string("bob")).Result(), "hello bob");
  EXPECT_EQ(w.Submit(&app::Greet, "ann").Result(), "hello ann");  // Converted to std::string.
  EXPECT_EQ(w.Submit(&app::Later, 6).Result(), 7);                // Future<int> flattened.
  // Future arguments are replaced by their values before the call is encoded.
  EXPECT_EQ(w.Submit(&app::Square, MakeReadyFuture(9)).Result(), 81);
  const int pid = w.Submit(&app::Pid).Result();
  if (InProcess()) {
    EXPECT_EQ(pid, getpid());
  } else {
    EXPECT_NE(pid, getpid());
  }
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(TaskWorkerEncodedTest, RebuildsExceptionsAndStatuses) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  TaskWorker w = TaskWorker::Create(Options());
  Future<void> thrown = w.Submit(&app::ThrowOutOfRange, std::string("too far"));
  EXPECT_THROW(
      {
        try {
          thrown.Result();
        } catch (const std::out_of_range& error) {
          EXPECT_STREQ(error.what(), "too far");
          throw;
        }
      },
      std::out_of_range);

  EXPECT_NO_THROW(w.Submit(&app::CheckPositive, 3).Result());
  Future<void> negative = w.Submit(&app::CheckPositive, -1);
  negative.Wait();
  EXPECT_EQ(negative.Status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(negative.Status().message()), HasSubstr("not positive: -1"));

  EXPECT_EQ(w.Submit(&app::Half, 10).Result(), 5);
  Future<int> odd = w.Submit(&app::Half, 3);
  odd.Wait();
  EXPECT_EQ(odd.Status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THROW(odd.Result(), StatusError);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(TaskWorkerEncodedTest, OverloadsRegisteredUnderExplicitNames) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  TaskWorker w = TaskWorker::Create(Options());
  EXPECT_EQ(w.Submit(static_cast<int (*)(int)>(&app::Scale), 21).Result(), 42);
  EXPECT_DOUBLE_EQ(w.Submit(static_cast<double (*)(double)>(&app::Scale), 3.0).Result(), 1.5);
  EXPECT_EQ(workers_internal::FunctionNameOf(
                reinterpret_cast<void (*)()>(static_cast<int (*)(int)>(&app::Scale))),
            "app::ScaleInt");
  EXPECT_EQ(workers_internal::FunctionNameOf(reinterpret_cast<void (*)()>(&app::Add)), "app::Add");
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(TaskWorkerEncodedTest, MapsAndTasks) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  TaskWorker w = TaskWorker::Create(Options());
  std::vector<int> inputs = {1, 2, 3, 4};
  std::vector<int> squares;
  for (auto& item : w.Map(&app::Square, inputs)) squares.push_back(item.value());
  EXPECT_EQ(squares, (std::vector<int>{1, 4, 9, 16}));
  // Two zipped inputs.
  std::vector<int> sums;
  for (auto& item : w.Map(&app::Add, inputs, std::vector<int>{10, 20, 30})) {
    sums.push_back(item.value());
  }
  EXPECT_EQ(sums, (std::vector<int>{11, 22, 33}));
  // With a per-item timeout (the timed path) and collected errors.
  std::vector<bool> ok;
  for (auto& item : w.Map({.timeout = absl::Seconds(30), .on_error = ErrorPolicy::kCollect},
                          &app::Half, std::vector<int>{2, 3, 4})) {
    ok.push_back(item.ok());
  }
  EXPECT_EQ(ok, (std::vector<bool>{true, false, true}));

  auto square = MakeTask(&app::Square, Options());
  EXPECT_EQ(square(7).Result(), 49);
  std::vector<int> mapped;
  for (auto& item : square.Map(std::vector<int>{2, 3})) mapped.push_back(item.value());
  EXPECT_EQ(mapped, (std::vector<int>{4, 9}));
  EXPECT_TRUE(square.Stop(absl::Seconds(10)));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(TaskWorkerEncodedTest, RetriesByTheWorkersPolicy) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  WorkerOptions options = Options();
  options.retry = RetryPolicy{.num_retries = 2, .wait = absl::ZeroDuration(), .jitter = 0};
  TaskWorker w = TaskWorker::Create(options);
  const int first = w.Submit(&app::FlakyThird).Result();  // Two failures, then success.
  EXPECT_EQ(first % 3, 0);
  EXPECT_EQ(w.Submit(&app::FlakyThird).Result(), first + 3);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(TaskWorkerEncodedTest, StreamsRegisteredFunctions) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  TaskWorker w = TaskWorker::Create(Options());
  std::vector<int> keys = {1, 2, 3, 4, 5};
  std::vector<int> squares =
      Stream(w, keys, &app::Square, {.max_in_flight = 4, .order = Order::kInput}).Collect();
  EXPECT_EQ(squares, (std::vector<int>{1, 4, 9, 16, 25}));
  // By function name, not pointer; completion order, so compare the sum.
  int64_t total = 0;
  for (auto& item : Stream(w, keys, app::Square)) total += item.value();
  EXPECT_EQ(total, 55);
  // A closure cannot be streamed to this worker.
  try {
    auto stream = Stream(w, keys, [](int x) { return x; });
    ADD_FAILURE() << "Stream of a lambda did not throw";
  } catch (const InvalidOptionError& error) {
    EXPECT_THAT(error.what(), HasSubstr("concurry::Stream: mode"));
    EXPECT_THAT(error.what(), HasSubstr("cannot cross a process boundary"));
  }
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST(TaskWorkerStreamTest, ThreadModeStillRunsClosures) {
  TaskWorker w = TaskWorker::Create({.mode = Mode::kThread});
  std::vector<int> keys = {1, 2, 3};
  int offset = 10;
  std::vector<int> out =
      Stream(w, keys, [offset](int x) { return x + offset; }, {.order = Order::kInput}).Collect();
  EXPECT_EQ(out, (std::vector<int>{11, 12, 13}));
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

TEST_P(TaskWorkerEncodedTest, RefusesClosuresAndUnregisteredFunctions) {
  testkit::Watchdog watchdog(absl::Seconds(60));
  TaskWorker w = TaskWorker::Create(Options());
  const std::string closure_error =
      "lambdas and function objects (including std::function) "
      "cannot cross a process boundary; register a free function "
      "with CONCURRY_REGISTER_FUNCTION";
  int captured = 3;
  EXPECT_THAT(InvalidOptionText(w.Submit([captured](int x) { return x + captured; }, 1)),
              HasSubstr(closure_error));
  EXPECT_THAT(InvalidOptionText(w.Submit([](int x) { return x; }, 1)), HasSubstr(closure_error));
  std::function<int(int)> function = &app::Square;
  EXPECT_THAT(InvalidOptionText(w.Submit(function, 2)), HasSubstr(closure_error));
  struct Functor {
    int operator()(int x) const { return x; }
  };
  EXPECT_THAT(InvalidOptionText(w.Submit(Functor{}, 2)), HasSubstr(closure_error));
  EXPECT_THAT(InvalidOptionText(w.Submit(&app::NotRegistered, 2)),
              HasSubstr("TaskWorker::Submit: the function is not registered, so a worker whose "
                        "calls cross a byte boundary"));
  EXPECT_THAT(InvalidOptionText(w.Submit(&app::NotRegistered, 2)),
              HasSubstr("add CONCURRY_REGISTER_FUNCTION"));

  // Map refuses at once.
  const std::vector<int> inputs = {1, 2};
  try {
    auto stream = w.Map([](int x) { return x; }, inputs);
    ADD_FAILURE() << "Map of a lambda did not throw";
  } catch (const InvalidOptionError& error) {
    EXPECT_THAT(error.what(), HasSubstr("TaskWorker::Map: mode"));
    EXPECT_THAT(error.what(), HasSubstr(closure_error));
  }
  try {
    auto stream = w.Map(&app::NotRegistered, inputs);
    ADD_FAILURE() << "Map of an unregistered function did not throw";
  } catch (const InvalidOptionError& error) {
    EXPECT_THAT(error.what(), HasSubstr("TaskWorker::Map: the function is not registered"));
  }
  // A Task of a lambda fails per call.
  Task<int (*)(int)> unregistered(&app::NotRegistered, w);
  EXPECT_THAT(InvalidOptionText(unregistered(1)),
              HasSubstr("Task::Submit: the function is not registered"));

  // The Executor interface: a closure, refused; Async reports it in its future.
  const std::string executor_error =
      "an Executor::Task (from Async, Then, Stream or a lambda) is "
      "a closure: lambdas and function objects cannot cross a "
      "process boundary";
  try {
    w.Submit(Executor::Task([] {}));
    ADD_FAILURE() << "Submit(Executor::Task) did not throw";
  } catch (const InvalidOptionError& error) {
    EXPECT_THAT(error.what(), HasSubstr(executor_error));
  }
  EXPECT_THAT(InvalidOptionText(Async(w, [] { return 1; })), HasSubstr(executor_error));

  // The worker is still fine.
  EXPECT_EQ(w.Submit(&app::Add, 1, 1).Result(), 2);
  EXPECT_TRUE(w.Stop(absl::Seconds(10)));
}

INSTANTIATE_TEST_SUITE_P(EncodedModes, TaskWorkerEncodedTest,
                         ::testing::Values(Mode::kLoopback, Mode::kProcess),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return AbslUnparseFlag(info.param);
                         });

TEST(TaskWorkerProcessTest, PoolOfTwoMapsHundredItems) {
  testkit::Watchdog watchdog(absl::Seconds(120));
  TaskWorker pool = TaskWorker::Create({.mode = Mode::kProcess, .max_workers = 2});
  ASSERT_TRUE(pool.is_pool());
  EXPECT_EQ(pool.max_concurrency(), 2);
  std::vector<int> inputs;
  for (int i = 0; i < 100; ++i) inputs.push_back(i);
  std::vector<int> results;
  for (auto& item : pool.Map({.max_in_flight = 8}, &app::Square, inputs)) {
    EXPECT_EQ(item.index, static_cast<int64_t>(results.size()));
    results.push_back(item.value());
  }
  ASSERT_EQ(results.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(results[i], i * i);
  // Submits spread over both processes, none of them this one.
  std::vector<Future<int>> pids;
  for (int i = 0; i < 20; ++i) pids.push_back(pool.Submit(&app::Pid));
  for (auto& pid : pids) EXPECT_NE(pid.Result(), getpid());
  EXPECT_TRUE(pool.Stop(absl::Seconds(10)));
}

TEST(TaskWorkerProcessTest, RegistryLookups) {
  EXPECT_NE(workers_internal::FindEncodedClass(workers_internal::kTaskHostClassName), nullptr);
  EXPECT_NE(workers_internal::FindEncodedFunction("app::Add"), nullptr);
  EXPECT_EQ(workers_internal::FindEncodedFunction("app::NotRegistered"), nullptr);
  EXPECT_EQ(workers_internal::FunctionNameOf(reinterpret_cast<void (*)()>(&app::NotRegistered)),
            std::nullopt);
  // Calling the task host by an unknown name fails with the list of known functions.
  const workers_internal::EncodedClass& host = workers_internal::TaskHostClass();
  void* object = host.construct("");
  Future<std::string> reply = host.invoke(object, "app::Missing", "");
  EXPECT_THAT(InvalidOptionText(reply),
              HasSubstr("no function is registered under the name \"app::Missing\""));
  EXPECT_THAT(InvalidOptionText(reply), HasSubstr("app::Add"));
  host.destroy(object);
}

}  // namespace
}  // namespace concurry

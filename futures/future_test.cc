// Conformance suite for the Future<T> / Promise<T> / AnyFuture contract, instantiated for every
// executor backend (inline, oneTBB, manual), plus backend-independent tests (ready and failed
// futures, ids) and exact timeout tests on testkit::FakeClock.

#include "futures/future.h"

#include <atomic>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/tbb_executor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/manual_executor.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A user exception type that must reach the consumer unchanged.
class CustomError : public std::runtime_error {
 public:
  explicit CustomError(int code)
      : std::runtime_error(absl::StrCat("custom error ", code)), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// Returns the code of the CustomError that `fn` throws, or -1 (with a test failure) otherwise.
template <typename F>
int CustomErrorCode(F&& fn) {
  try {
    fn();
  } catch (const CustomError& e) {
    return e.code();
  } catch (...) {
    ADD_FAILURE() << "threw " << ExceptionTypeName(std::current_exception());
    return -1;
  }
  ADD_FAILURE() << "did not throw";
  return -1;
}

// Expects `fn` to throw InvalidOptionError whose message names `operation` and the problem.
template <typename F>
void ExpectInvalidHandle(F&& fn, absl::string_view operation) {
  try {
    fn();
    ADD_FAILURE() << operation << " did not throw";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr(std::string(operation)));
    EXPECT_THAT(e.what(), HasSubstr("invalid handle"));
  }
}

absl::Status StatusWithPayload() {
  absl::Status status = absl::NotFoundError("no row 7");
  status.SetPayload("type.googleapis.com/concurry.test", absl::Cord("details"));
  return status;
}

// A list of events recorded from any thread.
class Log {
 public:
  void Add(int event) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
  }
  std::vector<int> events() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int> events_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------------
// Conformance suite: futures produced with Async(executor, fn) and with a Promise completed by a
// task on the executor behave the same on every backend.
// ---------------------------------------------------------------------------------------------

enum class Backend { kInline, kTbb, kManual };

class FutureConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  static constexpr int kTbbConcurrency = 2;

  FutureConformanceTest() {
    if (GetParam() == Backend::kTbb) tbb_ = std::make_unique<TbbExecutor>(kTbbConcurrency);
  }

  Executor& executor() {
    switch (GetParam()) {
      case Backend::kInline:
        return InlineExecutor();
      case Backend::kTbb:
        return *tbb_;
      case Backend::kManual:
        break;
    }
    return manual_;
  }

  // Runs the tasks queued on the manual executor (including those they queue); the other
  // backends run tasks by themselves.
  void Drive() {
    if (GetParam() == Backend::kManual) manual_.RunAll();
  }

  // Returns once every task submitted so far has finished, callbacks included.
  void Quiesce() {
    Drive();
    if (GetParam() == Backend::kTbb) {
      tbb_->Shutdown();
      tbb_ = std::make_unique<TbbExecutor>(kTbbConcurrency);
    }
  }

  template <typename F, typename... Args>
  auto Start(F&& fn, Args&&... args) {
    return Async(executor(), std::forward<F>(fn), std::forward<Args>(args)...);
  }

  // Returns a future from Async that stays pending until `gate` is completed.
  Future<int> StartGated(const Promise<int>& gate) {
    return Start([g = gate.GetFuture()] { return g; });
  }

  // Completes `promise` with a value built from `args`, from a task on the backend.
  template <typename T, typename... Args>
  void CompleteOnBackend(Promise<T> promise, Args... args) {
    executor().Submit([p = std::move(promise), ... args = std::move(args)]() mutable {
      p.SetValue(std::move(args)...);
    });
    Drive();
  }

  // Fails `promise` with `error`, from a task on the backend.
  template <typename T>
  void FailOnBackend(Promise<T> promise, std::exception_ptr error) {
    executor().Submit([p = std::move(promise), error]() mutable { p.SetError(error); });
    Drive();
  }

 private:
  testkit::ManualExecutor manual_;
  std::unique_ptr<TbbExecutor> tbb_;
};

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::kInline:
      return "Inline";
    case Backend::kTbb:
      return "Tbb";
    case Backend::kManual:
      return "Manual";
  }
  return "Unknown";
}

INSTANTIATE_TEST_SUITE_P(Backends, FutureConformanceTest,
                         ::testing::Values(Backend::kInline, Backend::kTbb, Backend::kManual),
                         BackendName);

// ---- Values -----------------------------------------------------------------------------------

TEST_P(FutureConformanceTest, AsyncDeliversTheValue) {
  Future<int> f = Start([] { return 6 * 7; });
  Drive();
  EXPECT_EQ(f.Result(), 42);
  EXPECT_TRUE(f.Done());
  EXPECT_FALSE(f.Cancelled());
  EXPECT_EQ(f.Error(), nullptr);
  EXPECT_TRUE(f.Status().ok());
}

TEST_P(FutureConformanceTest, AsyncPassesDecayCopiedArguments) {
  std::string text = "ab";
  Future<std::string> f = Start(
      [](const std::string& s, int n, std::unique_ptr<int> p) { return absl::StrCat(s, n, *p); },
      text, 3, std::make_unique<int>(4));
  text = "changed";
  Drive();
  EXPECT_EQ(f.Result(), "ab34");
}

TEST_P(FutureConformanceTest, PromiseCompletedOnTheBackendDeliversTheValue) {
  Promise<std::string> p;
  Future<std::string> f = p.GetFuture();
  EXPECT_FALSE(f.Done());
  CompleteOnBackend(std::move(p), std::string("done"));
  EXPECT_EQ(f.Result(), "done");
  EXPECT_TRUE(f.Done());
}

TEST_P(FutureConformanceTest, VoidFutureCompletesAfterTheSideEffect) {
  bool ran = false;  // Written by the task before it completes the future.
  Future<void> f = Start([&ran] { ran = true; });
  Drive();
  f.Result();
  EXPECT_TRUE(ran);

  Promise<void> p;
  Future<void> g = p.GetFuture();
  CompleteOnBackend(std::move(p));
  EXPECT_NO_THROW(g.Result());
  EXPECT_TRUE(g.Status().ok());
}

TEST_P(FutureConformanceTest, MoveOnlyValueIsReadInPlaceOrMovedOutOfAnRvalue) {
  Future<std::unique_ptr<int>> f = Start([] { return std::make_unique<int>(7); });
  Drive();
  EXPECT_EQ(*f.Result(), 7);  // Lvalue: a const reference, value stays.
  std::unique_ptr<int> taken = std::move(f).Result();
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(*taken, 7);
  EXPECT_FALSE(f.valid());  // NOLINT(bugprone-use-after-move): documented state.

  Promise<std::unique_ptr<int>> p;
  Future<std::unique_ptr<int>> g = p.GetFuture();
  CompleteOnBackend(std::move(p), std::make_unique<int>(8));
  EXPECT_EQ(*std::move(g).Result(), 8);
}

TEST_P(FutureConformanceTest, LvalueResultReferencesTheValueSharedByCopies) {
  Future<std::string> f = Start([] { return std::string("shared"); });
  Future<std::string> copy = f;
  Drive();
  EXPECT_EQ(&f.Result(), &copy.Result());
  EXPECT_TRUE(f == copy);
  EXPECT_EQ(copy.Result(), "shared");
}

TEST_P(FutureConformanceTest, RvalueResultCopiesWhileOtherHandlesShareTheValue) {
  Future<std::string> f = Start([] { return std::string("kept"); });
  Future<std::string> copy = f;
  Drive();
  EXPECT_EQ(std::move(f).Result(), "kept");
  EXPECT_EQ(copy.Result(), "kept");
  EXPECT_EQ(std::move(copy).Result(), "kept");  // Last handle: moved out.
}

// ---- Errors -----------------------------------------------------------------------------------

TEST_P(FutureConformanceTest, ResultRethrowsTheOriginalExceptionType) {
  Future<int> f = Start([]() -> int { throw CustomError(7); });
  Drive();
  EXPECT_EQ(CustomErrorCode([&] { f.Result(); }), 7);
  EXPECT_EQ(CustomErrorCode([&] { f.Result(); }), 7);  // Every call, every handle.
  EXPECT_EQ(CustomErrorCode([&] { std::rethrow_exception(f.Error()); }), 7);
  EXPECT_TRUE(f.Done());
  EXPECT_FALSE(f.Cancelled());

  Promise<void> p;
  Future<void> g = p.GetFuture();
  FailOnBackend(std::move(p), std::make_exception_ptr(CustomError(8)));
  EXPECT_EQ(CustomErrorCode([&] { g.Result(); }), 8);
}

TEST_P(FutureConformanceTest, NonStandardExceptionTypesPassThrough) {
  Future<int> f = Start([]() -> int { throw 42; });
  Drive();
  EXPECT_THROW(f.Result(), int);
  EXPECT_EQ(f.Status().code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(std::string(f.Status().message()), HasSubstr("int"));
}

TEST_P(FutureConformanceTest, StatusOfAUserExceptionNamesItsType) {
  Future<int> f = Start([]() -> int { throw CustomError(3); });
  Drive();
  const absl::Status status = f.Status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(std::string(status.message()), HasSubstr("CustomError"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("custom error 3"));
}

// ---- Timeouts (real clock; a pending future never completes by itself) -------------------------

TEST_P(FutureConformanceTest, ResultWithTimeoutOnAPendingFutureThrowsTimeoutError) {
  Promise<int> gate;
  Future<int> f = StartGated(gate);
  Drive();
  EXPECT_THROW(f.Result(absl::ZeroDuration()), TimeoutError);
  try {
    f.Result(absl::Milliseconds(1));
    ADD_FAILURE() << "no timeout";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(e.what(), HasSubstr("timed out"));
  }
  EXPECT_THROW(f.Error(absl::Milliseconds(1)), TimeoutError);
  EXPECT_FALSE(f.Done());  // A timeout leaves the future pending.

  gate.SetValue(5);
  EXPECT_EQ(f.Result(absl::Hours(1)), 5);
}

TEST_P(FutureConformanceTest, WaitReturnsFalseOnTimeoutAndTrueOnceDone) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  EXPECT_FALSE(f.Wait(absl::ZeroDuration()));
  EXPECT_FALSE(f.Wait(absl::Milliseconds(1)));
  CompleteOnBackend(std::move(p), 1);
  EXPECT_TRUE(f.Wait());
  EXPECT_TRUE(f.Wait(absl::ZeroDuration()));
}

TEST_P(FutureConformanceTest, NegativeTimeoutIsRejected) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  const absl::Duration negative = -absl::Milliseconds(1);
  try {
    f.Wait(negative);
    ADD_FAILURE() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("timeout must be >= 0"));
  }
  EXPECT_THROW(f.Result(negative), InvalidOptionError);
  EXPECT_THROW(std::move(f).Result(-absl::Nanoseconds(1)), InvalidOptionError);
  EXPECT_THROW(f.Error(negative), InvalidOptionError);
  EXPECT_EQ(f.Status(negative).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.StatusOr(negative).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THROW(AnyFuture(f).Wait(negative), InvalidOptionError);
  EXPECT_EQ(AnyFuture(f).Status(negative).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(FutureConformanceTest, NegativeTimeoutIsRejectedEvenWhenDone) {
  Future<int> f = Start([] { return 1; });
  Drive();
  ASSERT_EQ(f.Result(), 1);
  const absl::Duration negative = -absl::Milliseconds(1);
  EXPECT_THROW(f.Wait(negative), InvalidOptionError);
  EXPECT_THROW(f.Result(negative), InvalidOptionError);
  EXPECT_THROW(f.Error(negative), InvalidOptionError);
  EXPECT_EQ(f.Status(negative).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THROW(AnyFuture(f).Wait(negative), InvalidOptionError);
}

// ---- Invalid handles --------------------------------------------------------------------------

TEST_P(FutureConformanceTest, InvalidHandlesThrowInvalidOptionErrorWithAMessage) {
  Future<int> source = Start([] { return 1; });
  Future<int> taken = std::move(source);
  Drive();
  ASSERT_EQ(taken.Result(), 1);

  Future<int> default_constructed;
  for (Future<int>* f : {&default_constructed, &source}) {
    EXPECT_FALSE(f->valid());
    ExpectInvalidHandle([&] { f->Done(); }, "Future::Done");
    ExpectInvalidHandle([&] { f->Cancelled(); }, "Future::Cancelled");
    ExpectInvalidHandle([&] { f->Cancel(); }, "Future::Cancel");
    ExpectInvalidHandle([&] { f->Wait(); }, "Future::Wait");
    ExpectInvalidHandle([&] { f->Result(); }, "Future::Result");
    ExpectInvalidHandle([&] { Future<int>(*f).Result(); }, "Future::Result");
    ExpectInvalidHandle([&] { f->Error(); }, "Future::Error");
    ExpectInvalidHandle([&] { f->Then([](int x) { return x; }); }, "Future::Then");
    ExpectInvalidHandle([&] { f->AddDoneCallback([] {}); }, "Future::AddDoneCallback");
    ExpectInvalidHandle([&] { f->id(); }, "Future::id");
    EXPECT_EQ(f->Status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(f->Status().message()), HasSubstr("invalid handle"));
    EXPECT_EQ(f->StatusOr().status().code(), absl::StatusCode::kInvalidArgument);
  }

  AnyFuture any;
  EXPECT_FALSE(any.valid());
  ExpectInvalidHandle([&] { any.Done(); }, "AnyFuture::Done");
  ExpectInvalidHandle([&] { any.Wait(); }, "AnyFuture::Wait");
  ExpectInvalidHandle([&] { any.AddDoneCallback([] {}); }, "AnyFuture::AddDoneCallback");
  ExpectInvalidHandle([&] { any.AddCallbackIfPending([] {}); }, "AnyFuture::AddCallbackIfPending");
  EXPECT_EQ(any.Status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(AnyFuture(Future<int>()).valid());

  Promise<int> promise;
  Promise<int> moved = std::move(promise);
  EXPECT_FALSE(promise.valid());  // NOLINT(bugprone-use-after-move): documented state.
  EXPECT_TRUE(moved.valid());
  ExpectInvalidHandle([&] { promise.GetFuture(); }, "Promise::GetFuture");
  ExpectInvalidHandle([&] { promise.SetValue(1); }, "Promise::SetValue");
  ExpectInvalidHandle([&] { promise.IsCancelled(); }, "Promise::IsCancelled");
}

// ---- Cancellation -----------------------------------------------------------------------------

TEST_P(FutureConformanceTest, CancelledFutureThrowsCancelledErrorAndTellsTheProducer) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  Future<int> copy = f;
  EXPECT_FALSE(p.IsCancelled());
  EXPECT_TRUE(f.Cancel());
  EXPECT_TRUE(f.Done());
  EXPECT_TRUE(f.Cancelled());
  EXPECT_TRUE(copy.Cancelled());
  EXPECT_TRUE(p.IsCancelled());
  EXPECT_THROW(f.Result(), CancelledError);
  EXPECT_THROW(std::rethrow_exception(copy.Error()), CancelledError);
  EXPECT_EQ(f.Status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(f.Cancel());     // Already done.
  EXPECT_FALSE(copy.Cancel());  // Same state.
  CompleteOnBackend(std::move(p), 1);
  Quiesce();
  EXPECT_THROW(f.Result(), CancelledError);  // A later value is ignored.
}

TEST_P(FutureConformanceTest, CancelReturnsFalseOnceDone) {
  Future<int> value = Start([] { return 1; });
  Future<int> error = Start([]() -> int { throw CustomError(1); });
  Drive();
  value.Wait();
  error.Wait();
  EXPECT_FALSE(value.Cancel());
  EXPECT_FALSE(error.Cancel());
  EXPECT_FALSE(value.Cancelled());
  EXPECT_FALSE(error.Cancelled());
  EXPECT_EQ(value.Result(), 1);
  EXPECT_EQ(CustomErrorCode([&] { error.Result(); }), 1);
}

TEST_P(FutureConformanceTest, CancelledAsyncFutureIgnoresTheLaterResult) {
  Promise<int> gate;
  Future<int> f = StartGated(gate);
  EXPECT_TRUE(f.Cancel());
  Drive();
  gate.SetValue(1);
  Quiesce();
  EXPECT_TRUE(f.Cancelled());
  EXPECT_THROW(f.Result(), CancelledError);
}

TEST_P(FutureConformanceTest, OnCancelFiresExactlyOnce) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  std::atomic<int> first{0};
  std::atomic<int> second{0};
  p.OnCancel([&] { ++first; });
  p.OnCancel([&] { ++second; });
  EXPECT_EQ(first.load(), 0);
  EXPECT_TRUE(f.Cancel());
  EXPECT_FALSE(f.Cancel());
  EXPECT_EQ(first.load(), 1);
  EXPECT_EQ(second.load(), 1);

  int late = 0;
  p.OnCancel([&] { ++late; });  // Already cancelled: runs now.
  EXPECT_EQ(late, 1);
  EXPECT_FALSE(p.SetValue(2));
  EXPECT_EQ(first.load(), 1);
}

TEST_P(FutureConformanceTest, OnCancelNeverFiresAfterAValue) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  std::atomic<int> fired{0};
  p.OnCancel([&] { ++fired; });
  Promise<int>* raw = &p;
  executor().Submit([raw] { raw->SetValue(1); });
  Drive();
  EXPECT_EQ(f.Result(), 1);
  EXPECT_FALSE(f.Cancel());
  p.OnCancel([&] { ++fired; });
  Quiesce();
  EXPECT_EQ(fired.load(), 0);
}

TEST_P(FutureConformanceTest, PromiseSetAfterCancelReturnsFalse) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  ASSERT_TRUE(f.Cancel());
  EXPECT_FALSE(p.SetValue(1));
  EXPECT_FALSE(p.SetError(std::make_exception_ptr(CustomError(1))));
  EXPECT_FALSE(p.SetError(absl::InternalError("late")));
  EXPECT_THROW(f.Result(), CancelledError);
}

TEST_P(FutureConformanceTest, SettingTwiceReturnsFalseAndKeepsTheFirstOutcome) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  EXPECT_TRUE(p.SetValue(1));
  EXPECT_FALSE(p.SetValue(2));
  EXPECT_FALSE(p.SetError(std::make_exception_ptr(CustomError(3))));
  EXPECT_EQ(f.Result(), 1);

  Promise<int> q;
  Future<int> g = q.GetFuture();
  EXPECT_TRUE(q.SetError(std::make_exception_ptr(CustomError(4))));
  EXPECT_FALSE(q.SetValue(5));
  EXPECT_EQ(CustomErrorCode([&] { g.Result(); }), 4);
}

TEST_P(FutureConformanceTest, DestroyedPromiseBreaksItsFuture) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  executor().Submit([dropped = std::move(p)] {});
  Drive();
  try {
    f.Result();
    ADD_FAILURE() << "no error";
  } catch (const BrokenPromiseError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kInternal);
  }
  EXPECT_EQ(f.Status().code(), absl::StatusCode::kInternal);

  Promise<int> q;
  Future<int> g = q.GetFuture();
  q = Promise<int>();  // Assigning over a pending promise abandons it.
  EXPECT_THROW(g.Result(), BrokenPromiseError);
  EXPECT_FALSE(q.GetFuture().Done());
}

TEST_P(FutureConformanceTest, AsyncCancelledBeforeItRunsDoesNotCallFn) {
  if (GetParam() == Backend::kInline) GTEST_SKIP() << "inline tasks run before Async returns";
  // On TBB, a one-thread executor busy with a blocked task keeps the next task queued.
  std::unique_ptr<TbbExecutor> serial;
  Executor* target = &executor();
  absl::Notification blocker_started;
  absl::Notification release_blocker;
  if (GetParam() == Backend::kTbb) {
    serial = std::make_unique<TbbExecutor>(1);
    target = serial.get();
    serial->Submit([&] {
      blocker_started.Notify();
      release_blocker.WaitForNotification();
    });
    blocker_started.WaitForNotification();
  }
  std::atomic<bool> called{false};
  Future<int> f = Async(*target, [&called] {
    called = true;
    return 1;
  });
  EXPECT_FALSE(f.Done());
  EXPECT_TRUE(f.Cancel());
  release_blocker.Notify();
  Drive();
  if (serial != nullptr) serial->Shutdown();
  EXPECT_FALSE(called.load());
  EXPECT_THROW(f.Result(), CancelledError);
}

// ---- Done-callbacks ---------------------------------------------------------------------------

TEST_P(FutureConformanceTest, DoneCallbacksRunOnceInRegistrationOrder) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  Log log;
  std::atomic<int> seen_value{0};
  f.AddDoneCallback([&](const Future<int>& done) {
    seen_value = done.Result();
    EXPECT_TRUE(done == f);
    log.Add(1);
  });
  f.AddDoneCallback([&] { log.Add(2); });
  AnyFuture(f).AddDoneCallback([&] { log.Add(3); });
  f.AddDoneCallback([&] { log.Add(4); });
  EXPECT_TRUE(log.events().empty());
  CompleteOnBackend(std::move(p), 9);
  Quiesce();
  EXPECT_THAT(log.events(), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(seen_value.load(), 9);
}

TEST_P(FutureConformanceTest, DoneCallbacksOnAsyncFutureRunOnce) {
  Promise<int> gate;
  Future<int> f = StartGated(gate);
  std::atomic<int> calls{0};
  f.AddDoneCallback([&] { ++calls; });
  Drive();
  gate.SetValue(1);
  Quiesce();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(f.Result(), 1);
}

TEST_P(FutureConformanceTest, CallbackOnADoneFutureRunsImmediatelyOnTheCallingThread) {
  Future<int> f = Start([] { return 5; });
  Drive();
  f.Wait();
  std::thread::id ran_on;
  int value = 0;
  f.AddDoneCallback([&](const Future<int>& done) {
    ran_on = std::this_thread::get_id();
    value = done.Result();
  });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(value, 5);

  int calls = 0;
  AnyFuture(f).AddDoneCallback([&] { ++calls; });
  EXPECT_EQ(calls, 1);
}

TEST_P(FutureConformanceTest, CallbacksSeeErrorsAndCancellation) {
  Future<int> failed = Start([]() -> int { throw CustomError(2); });
  std::atomic<int> error_code{0};
  failed.AddDoneCallback(
      [&](const Future<int>& done) { error_code = CustomErrorCode([&] { done.Result(); }); });
  Drive();
  Promise<int> p;
  Future<int> cancelled = p.GetFuture();
  bool saw_cancel = false;
  cancelled.AddDoneCallback([&](const Future<int>& done) { saw_cancel = done.Cancelled(); });
  cancelled.Cancel();
  Quiesce();
  EXPECT_EQ(error_code.load(), 2);
  EXPECT_TRUE(saw_cancel);
}

TEST_P(FutureConformanceTest, ThrowingCallbackDoesNotStopTheOthers) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  std::atomic<int> calls{0};
  f.AddDoneCallback([&] {
    ++calls;
    throw CustomError(1);
  });
  f.AddDoneCallback([&] { ++calls; });
  CompleteOnBackend(std::move(p), 1);
  Quiesce();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(f.Result(), 1);

  // On a done future the callback runs now; its exception is still contained.
  EXPECT_NO_THROW(f.AddDoneCallback([&] {
    ++calls;
    throw CustomError(2);
  }));
  EXPECT_NO_THROW(AnyFuture(f).AddDoneCallback([&] {
    ++calls;
    throw CustomError(3);
  }));
  EXPECT_EQ(calls.load(), 4);
}

// ---- Then -------------------------------------------------------------------------------------

TEST_P(FutureConformanceTest, ThenTransformsTheValue) {
  Future<std::string> f =
      Start([] { return 21; }).Then([](int x) { return x * 2; }).Then([](int x) {
        return absl::StrCat("=", x);
      });
  Drive();
  EXPECT_EQ(f.Result(), "=42");
}

TEST_P(FutureConformanceTest, ThenChainsVoidFutures) {
  std::atomic<int> steps{0};
  Future<void> v = Start([&] { ++steps; });
  Future<int> from_void = v.Then([&] { return ++steps; });
  Future<void> to_void = from_void.Then([&](int) { ++steps; });
  Drive();
  to_void.Result();
  EXPECT_EQ(from_void.Result(), 2);
  EXPECT_EQ(steps.load(), 3);
}

TEST_P(FutureConformanceTest, ThenFlattensAReturnedFuture) {
  Future<int> f =
      Start([] { return 1; }).Then([this](int x) { return Start([x] { return x + 10; }); });
  static_assert(std::is_same_v<decltype(f), Future<int>>);
  Future<int> failed = Start([] { return 1; }).Then([this](int) {
    return Start([]() -> int { throw CustomError(5); });
  });
  Future<int> invalid = Start([] { return 1; }).Then([](int) { return Future<int>(); });
  Drive();
  EXPECT_EQ(f.Result(), 11);
  EXPECT_EQ(CustomErrorCode([&] { failed.Result(); }), 5);
  EXPECT_THROW(invalid.Result(), InvalidOptionError);
}

TEST_P(FutureConformanceTest, ThenFlattensAbslStatus) {
  Future<void> ok = Start([] { return 1; }).Then([](int) { return absl::OkStatus(); });
  Future<void> bad = Start([] { return 1; }).Then([](int) { return StatusWithPayload(); });
  static_assert(std::is_same_v<decltype(bad), Future<void>>);
  Drive();
  EXPECT_NO_THROW(ok.Result());
  EXPECT_TRUE(ok.Status().ok());
  EXPECT_EQ(bad.Status(), StatusWithPayload());  // Code, message and payload.
  try {
    bad.Result();
    ADD_FAILURE() << "no error";
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status(), StatusWithPayload());
  }
}

TEST_P(FutureConformanceTest, ThenFlattensAbslStatusOr) {
  Future<int> ok = Start([] { return 1; }).Then([](int x) -> absl::StatusOr<int> { return x + 1; });
  Future<int> bad =
      Start([] { return 1; }).Then([](int) -> absl::StatusOr<int> { return StatusWithPayload(); });
  Future<std::unique_ptr<int>> move_only =
      Start([] { return 3; }).Then([](int x) -> absl::StatusOr<std::unique_ptr<int>> {
        return std::make_unique<int>(x);
      });
  Drive();
  EXPECT_EQ(ok.Result(), 2);
  EXPECT_EQ(bad.Status(), StatusWithPayload());
  EXPECT_EQ(bad.StatusOr().status(), StatusWithPayload());
  EXPECT_THROW(bad.Result(), StatusError);
  EXPECT_EQ(*move_only.Result(), 3);
}

TEST_P(FutureConformanceTest, ThenPassesAThrownExceptionOn) {
  Future<int> f = Start([] { return 1; }).Then([](int) -> int { throw CustomError(6); });
  Drive();
  EXPECT_EQ(CustomErrorCode([&] { f.Result(); }), 6);
}

TEST_P(FutureConformanceTest, ThenSkipsFnOnErrorAndCancellation) {
  std::atomic<int> calls{0};
  Future<int> failed = Start([]() -> int { throw CustomError(7); }).Then([&](int x) {
    ++calls;
    return x;
  });
  Promise<int> p;
  Future<int> cancelled_source = p.GetFuture();
  Future<int> after_cancel = cancelled_source.Then([&](int x) {
    ++calls;
    return x;
  });
  cancelled_source.Cancel();
  Drive();
  EXPECT_EQ(CustomErrorCode([&] { failed.Result(); }), 7);
  EXPECT_THROW(after_cancel.Result(), CancelledError);
  EXPECT_EQ(after_cancel.Status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(after_cancel.Cancelled());
  EXPECT_FALSE(failed.Cancelled());
  EXPECT_EQ(calls.load(), 0);
}

TEST_P(FutureConformanceTest, ThenOnPendingFutureRunsOnCompletion) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  Future<int> g = f.Then([](int x) { return x + 1; });
  EXPECT_FALSE(g.Done());
  CompleteOnBackend(std::move(p), 1);
  EXPECT_EQ(g.Result(), 2);
}

TEST_P(FutureConformanceTest, ThenOnTheBackendExecutor) {
  Future<int> f = Start([] { return 2; }).Then(executor(), [](int x) { return x * 3; });
  Future<void> v = MakeReadyFuture().Then(executor(), [] {});
  Drive();
  EXPECT_EQ(f.Result(), 6);
  EXPECT_NO_THROW(v.Result());
}

TEST_P(FutureConformanceTest, ThenOnAManualExecutorRunsOnlyWhenItRunsTasks) {
  testkit::ManualExecutor hop;
  std::atomic<bool> ran{false};
  Future<int> source = Start([] { return 4; });
  Future<int> g = source.Then(hop, [&ran](int x) {
    ran = true;
    return x + 1;
  });
  Drive();
  hop.BlockUntilPending(1);  // The backend completes `source` on its own thread.
  EXPECT_EQ(hop.pending(), 1u);
  EXPECT_FALSE(ran.load());
  EXPECT_FALSE(g.Done());
  EXPECT_TRUE(hop.RunOne());
  EXPECT_TRUE(ran.load());
  EXPECT_TRUE(g.Done());
  EXPECT_EQ(g.Result(), 5);
  EXPECT_FALSE(hop.RunOne());
}

TEST_P(FutureConformanceTest, RvalueThenMovesAMoveOnlyValue) {
  Future<std::unique_ptr<int>> f = Start([] { return std::make_unique<int>(5); });
  Future<int> read = f.Then([](const std::unique_ptr<int>& p) { return *p; });  // Lvalue: const&.
  Drive();
  EXPECT_EQ(read.Result(), 5);
  Future<std::unique_ptr<int>> moved =
      std::move(f).Then([](std::unique_ptr<int> p) { return std::make_unique<int>(*p + 1); });
  EXPECT_FALSE(f.valid());  // NOLINT(bugprone-use-after-move): documented state.
  Drive();
  EXPECT_EQ(*std::move(moved).Result(), 6);
}

TEST_P(FutureConformanceTest, RvalueThenCopiesWhileOtherHandlesShareTheValue) {
  Future<std::string> f = Start([] { return std::string("abc"); });
  Future<std::string> copy = f;
  Future<std::string> g = std::move(f).Then([](std::string s) { return s + "d"; });
  Drive();
  EXPECT_EQ(g.Result(), "abcd");
  EXPECT_EQ(copy.Result(), "abc");
}

// ---- No-throw views ---------------------------------------------------------------------------

TEST_P(FutureConformanceTest, StatusAndStatusOrAreNoThrowViews) {
  Future<int> value = Start([] { return 5; });
  Future<int> user_error = Start([]() -> int { throw CustomError(1); });
  Future<int> status_error = Start([]() -> absl::StatusOr<int> { return StatusWithPayload(); });
  Promise<int> pending;
  Future<int> timed_out = pending.GetFuture();
  Promise<int> to_cancel;
  Future<int> cancelled = to_cancel.GetFuture();
  cancelled.Cancel();
  Drive();
  const absl::Duration timeout = absl::InfiniteDuration();
  Clock& clock = Clock::Real();
  static_assert(noexcept(value.Status(timeout, clock)));
  static_assert(noexcept(value.StatusOr(timeout, clock)));

  EXPECT_TRUE(value.Status().ok());
  EXPECT_EQ(*value.StatusOr(), 5);
  EXPECT_EQ(*Future<int>(value).StatusOr(), 5);
  EXPECT_EQ(user_error.StatusOr().status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(status_error.Status(), StatusWithPayload());
  EXPECT_EQ(status_error.StatusOr().status(), StatusWithPayload());
  EXPECT_EQ(timed_out.Status(absl::ZeroDuration()).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(timed_out.StatusOr(absl::Milliseconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(cancelled.Status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Future<int>().Status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(FutureConformanceTest, RvalueStatusOrMovesAMoveOnlyValue) {
  Future<std::unique_ptr<int>> f = Start([] { return std::make_unique<int>(9); });
  Drive();
  absl::StatusOr<std::unique_ptr<int>> taken = std::move(f).StatusOr();
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(**taken, 9);
}

// ---- Ids and AnyFuture ------------------------------------------------------------------------

TEST_P(FutureConformanceTest, IdsAreUniqueAndEqualForCopies) {
  Future<int> a = Start([] { return 1; });
  Future<int> b = Start([] { return 1; });
  Future<int> a_copy = a;
  Drive();
  EXPECT_EQ(a.id(), a_copy.id());
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(AnyFuture(a).id(), a.id());
  EXPECT_TRUE(a == a_copy);
  EXPECT_FALSE(a == b);
  EXPECT_TRUE(AnyFuture(a) == AnyFuture(a_copy));
}

TEST_P(FutureConformanceTest, AnyFutureErasesTheValueType) {
  Promise<std::string> p;
  Future<std::string> text = p.GetFuture();
  Future<void> nothing = Start([] {});
  Future<std::unique_ptr<int>> move_only = Start([] { return std::make_unique<int>(1); });
  Future<int> failed = Start([]() -> int { throw CustomError(3); });
  std::vector<AnyFuture> all = {text, nothing, move_only, failed};
  Drive();
  EXPECT_FALSE(all[0].Done());
  EXPECT_FALSE(all[0].Wait(absl::ZeroDuration()));
  EXPECT_EQ(all[0].Status(absl::ZeroDuration()).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THROW(all[0].Error(absl::ZeroDuration()), TimeoutError);
  CompleteOnBackend(std::move(p), std::string("x"));
  for (const AnyFuture& any : all) EXPECT_TRUE(any.Wait());
  EXPECT_TRUE(all[0].Status().ok());
  EXPECT_TRUE(all[1].Status().ok());
  EXPECT_TRUE(all[2].Status().ok());
  EXPECT_EQ(all[0].Error(), nullptr);
  EXPECT_EQ(CustomErrorCode([&] { std::rethrow_exception(all[3].Error()); }), 3);
  EXPECT_EQ(all[3].Status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(text.Result(), "x");
  EXPECT_EQ(*move_only.Result(), 1);  // AnyFuture handles are not consumers.
  EXPECT_EQ(*std::move(move_only).Result(), 1);
}

TEST_P(FutureConformanceTest, AnyFutureCancelCancelsTheFuture) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  AnyFuture any = f;
  EXPECT_FALSE(any.Cancelled());
  EXPECT_TRUE(any.Cancel());
  EXPECT_FALSE(any.Cancel());
  EXPECT_TRUE(any.Cancelled());
  EXPECT_TRUE(f.Cancelled());
  EXPECT_TRUE(p.IsCancelled());
  EXPECT_EQ(any.Status().code(), absl::StatusCode::kCancelled);
}

TEST_P(FutureConformanceTest, AddCallbackIfPendingRegistersOnlyWhilePending) {
  Future<int> done = Start([] { return 1; });
  Drive();
  done.Wait();
  bool called = false;
  EXPECT_EQ(AnyFuture(done).AddCallbackIfPending([&] { called = true; }), nullptr);
  EXPECT_FALSE(called);

  Promise<int> p;
  AnyFuture pending = p.GetFuture();
  std::atomic<int> calls{0};
  AnyFuture::CallbackHandle handle = pending.AddCallbackIfPending([&] { ++calls; });
  EXPECT_NE(handle, nullptr);
  CompleteOnBackend(std::move(p), 1);
  Quiesce();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_FALSE(pending.RemoveCallback(handle));  // Already ran.
  EXPECT_EQ(calls.load(), 1);
}

TEST_P(FutureConformanceTest, RemovedCallbackNeverRuns) {
  Promise<int> p;
  AnyFuture any = p.GetFuture();
  std::atomic<int> removed_calls{0};
  std::atomic<int> kept_calls{0};
  AnyFuture::CallbackHandle removed = any.AddCallbackIfPending([&] { ++removed_calls; });
  AnyFuture::CallbackHandle kept = any.AddCallbackIfPending([&] { ++kept_calls; });
  ASSERT_NE(removed, nullptr);
  ASSERT_NE(kept, nullptr);
  EXPECT_TRUE(any.RemoveCallback(removed));
  EXPECT_FALSE(any.RemoveCallback(nullptr));
  CompleteOnBackend(std::move(p), 1);
  Quiesce();
  EXPECT_EQ(removed_calls.load(), 0);
  EXPECT_EQ(kept_calls.load(), 1);
}

// ---- Coroutines -------------------------------------------------------------------------------

Future<int> Twice(Future<int> in) { co_return 2 * co_await std::move(in); }

Future<void> Store(Future<void> in, std::atomic<int>* out) {
  co_await in;
  *out = 1;
}

Future<int> Sum(Future<int> a, Future<int> b) {
  const int x = co_await a;
  const int y = co_await b;
  co_return x + y;
}

Future<int> CatchCustomError(Future<int> in) {
  try {
    co_return co_await in;
  } catch (const CustomError& e) {
    co_return -e.code();
  }
}

Future<int> ThrowsBeforeAwaiting() {
  throw CustomError(11);
  co_return 0;
}

TEST_P(FutureConformanceTest, CoAwaitResumesWhenTheBackendCompletesTheFuture) {
  Promise<int> p;
  Future<int> out = Twice(p.GetFuture());
  EXPECT_FALSE(out.Done());
  CompleteOnBackend(std::move(p), 21);
  EXPECT_EQ(out.Result(), 42);

  Future<int> from_async = Twice(Start([] { return 5; }));
  Drive();
  EXPECT_EQ(from_async.Result(), 10);
}

TEST_P(FutureConformanceTest, CoAwaitOnVoidFuture) {
  Promise<void> p;
  std::atomic<int> stored{0};
  Future<void> out = Store(p.GetFuture(), &stored);
  EXPECT_FALSE(out.Done());
  CompleteOnBackend(std::move(p));
  out.Result();
  EXPECT_EQ(stored.load(), 1);
}

TEST_P(FutureConformanceTest, CoAwaitSequencesSeveralFutures) {
  Promise<int> a;
  Promise<int> b;
  Future<int> out = Sum(a.GetFuture(), b.GetFuture());
  CompleteOnBackend(std::move(b), 2);
  EXPECT_FALSE(out.Done());
  CompleteOnBackend(std::move(a), 1);
  EXPECT_EQ(out.Result(), 3);
}

TEST_P(FutureConformanceTest, ExceptionsPropagateThroughCoAwait) {
  Promise<int> p;
  Future<int> out = Twice(p.GetFuture());
  FailOnBackend(std::move(p), std::make_exception_ptr(CustomError(4)));
  EXPECT_EQ(CustomErrorCode([&] { out.Result(); }), 4);

  Future<int> caught = CatchCustomError(Start([]() -> int { throw CustomError(9); }));
  Drive();
  EXPECT_EQ(caught.Result(), -9);

  Promise<int> q;
  Future<int> cancelled = Twice(q.GetFuture());
  q.GetFuture().Cancel();
  EXPECT_THROW(cancelled.Result(), CancelledError);

  EXPECT_EQ(CustomErrorCode([] { ThrowsBeforeAwaiting().Result(); }), 11);
}

TEST_P(FutureConformanceTest, CoAwaitOnADoneFutureDoesNotSuspend) {
  Future<int> out = Twice(MakeReadyFuture(4));
  EXPECT_TRUE(out.Done());
  EXPECT_EQ(out.Result(), 8);
}

TEST_P(FutureConformanceTest, CoAwaitInACoroResumesOnTheCorosExecutor) {
  Promise<int> p;
  auto coro = [](Future<int> in) -> Coro<bool> {
    Executor* before = &CurrentCoroutineExecutor();
    const int v = co_await std::move(in);
    co_return v == 5 && &CurrentCoroutineExecutor() == before;
  };
  Future<bool> out = Start(coro, p.GetFuture());
  Drive();
  std::thread completer([&p] { p.SetValue(5); });
  completer.join();
  Drive();
  EXPECT_TRUE(out.Result());
}

TEST_P(FutureConformanceTest, CoAwaitInACoroRethrowsAsResultDoes) {
  Promise<int> p;
  auto coro = [](Future<int> in) -> Coro<int> {
    const int v = co_await std::move(in);
    co_return v;
  };
  Future<int> out = Start(coro, p.GetFuture());
  Drive();
  FailOnBackend(std::move(p), std::make_exception_ptr(std::range_error("r")));
  Drive();
  EXPECT_THROW(out.Result(), std::range_error);
}

TEST(FutureCoroutineTest, CoAwaitResumesOnTheCompletingThread) {
  Promise<int> p;
  std::thread::id resumed_on;
  auto coroutine = [](Future<int> in, std::thread::id* on) -> Future<int> {
    const int x = co_await std::move(in);
    *on = std::this_thread::get_id();
    co_return x + 1;
  };
  Future<int> out = coroutine(p.GetFuture(), &resumed_on);
  std::thread completer([&p] { p.SetValue(1); });
  EXPECT_EQ(out.Result(), 2);
  const std::thread::id completer_id = completer.get_id();
  completer.join();
  EXPECT_EQ(resumed_on, completer_id);
}

TEST(FutureCoroutineTest, CoAwaitOnAnInvalidFutureFailsTheCoroutine) {
  auto coroutine = []() -> Future<int> { co_return co_await Future<int>(); };
  EXPECT_THROW(coroutine().Result(), InvalidOptionError);
}

// ---------------------------------------------------------------------------------------------
// Backend-independent behaviour.
// ---------------------------------------------------------------------------------------------

TEST(MakeReadyFutureTest, HoldsTheValue) {
  Future<int> f = MakeReadyFuture(3);
  EXPECT_TRUE(f.Done());
  EXPECT_EQ(f.Result(), 3);
  EXPECT_EQ(*MakeReadyFuture(std::make_unique<int>(4)).Result(), 4);
  Future<std::string> s = MakeReadyFuture(std::string("s"));
  EXPECT_EQ(std::move(s).Result(), "s");
  Future<void> v = MakeReadyFuture();
  EXPECT_TRUE(v.Done());
  EXPECT_TRUE(v.Status().ok());
}

TEST(WrapFutureTest, ReturnsAFutureAsItselfAndWrapsAnyOtherValue) {
  Promise<int> promise;
  const Future<int> pending = promise.GetFuture();
  Future<int> same = WrapFuture(pending);  // lvalue: shares the state, not Future<Future<int>>
  static_assert(std::is_same_v<decltype(WrapFuture(pending)), Future<int>>);
  EXPECT_TRUE(same == pending);
  EXPECT_FALSE(same.Done());
  Future<int> copy = pending;
  Future<int> moved = WrapFuture(std::move(copy));  // rvalue: the same state again
  EXPECT_TRUE(moved == pending);
  promise.SetValue(7);
  EXPECT_EQ(same.Result(), 7);

  Future<int> ready = WrapFuture(42);
  EXPECT_TRUE(ready.Done());
  EXPECT_EQ(ready.Result(), 42);
  const std::string text = "text";
  static_assert(std::is_same_v<decltype(WrapFuture(text)), Future<std::string>>);
  EXPECT_EQ(WrapFuture(text).Result(), "text");
  EXPECT_EQ(*WrapFuture(std::make_unique<int>(5)).Result(), 5);
  // Idempotent: wrapping twice is wrapping once.
  Future<int> twice = WrapFuture(WrapFuture(3));
  EXPECT_EQ(twice.Result(), 3);
  // MakeReadyFuture, by contrast, holds the future as a value.
  static_assert(std::is_same_v<decltype(MakeReadyFuture(pending)), Future<Future<int>>>);
  EXPECT_FALSE(WrapFuture(Future<int>()).valid());
}

TEST(MakeFailedFutureTest, FromAnExceptionPtrKeepsTheType) {
  Future<int> f = MakeFailedFuture<int>(std::make_exception_ptr(CustomError(1)));
  EXPECT_TRUE(f.Done());
  EXPECT_EQ(CustomErrorCode([&] { f.Result(); }), 1);
}

TEST(MakeFailedFutureTest, FromAnExceptionObjectKeepsTheType) {
  Future<void> f = MakeFailedFuture<void>(std::out_of_range("index 3"));
  EXPECT_THROW(f.Result(), std::out_of_range);
  EXPECT_EQ(f.Status(), absl::OutOfRangeError("index 3"));
  EXPECT_EQ(CustomErrorCode([] { MakeFailedFuture<int>(CustomError(2)).Result(); }), 2);
}

TEST(MakeFailedFutureTest, FromAStatusKeepsTheStatusExactly) {
  Future<int> f = MakeFailedFuture<int>(StatusWithPayload());
  EXPECT_EQ(f.Status(), StatusWithPayload());
  EXPECT_EQ(f.StatusOr().status(), StatusWithPayload());
  EXPECT_THROW(f.Result(), StatusError);
}

TEST(MakeFailedFutureTest, RejectsNullErrorAndOkStatus) {
  EXPECT_THROW(MakeFailedFuture<int>(std::exception_ptr()), InvalidOptionError);
  EXPECT_THROW(MakeFailedFuture<int>(absl::OkStatus()), InvalidOptionError);
}

TEST(PromiseTest, SetErrorRejectsNullAndOkStatusForAValueType) {
  Promise<int> p;
  EXPECT_THROW(p.SetError(std::exception_ptr()), InvalidOptionError);
  EXPECT_THROW(p.SetError(absl::OkStatus()), InvalidOptionError);
  EXPECT_FALSE(p.GetFuture().Done());
  EXPECT_TRUE(p.SetError(StatusWithPayload()));
  EXPECT_EQ(p.GetFuture().Status(), StatusWithPayload());
}

TEST(PromiseTest, OkStatusCompletesAVoidPromise) {
  Promise<void> p;
  EXPECT_TRUE(p.SetError(absl::OkStatus()));
  EXPECT_TRUE(p.GetFuture().Status().ok());
}

TEST(PromiseTest, GetFutureMayBeCalledRepeatedly) {
  Promise<int> p;
  Future<int> a = p.GetFuture();
  Future<int> b = p.GetFuture();
  EXPECT_TRUE(a == b);
  p.SetValue(1);
  EXPECT_EQ(b.Result(), 1);
}

TEST(PromiseTest, ADoneCallbackMayDestroyThePromiseThatCompletesIt) {
  // An operation object owning its promise, freed when its future completes.
  struct Operation {
    Promise<int> promise;
  };
  auto* op = new Operation();
  int calls = 0;
  int seen = 0;
  {
    Future<int> f = op->promise.GetFuture();
    f.AddDoneCallback([op, &calls] {
      ++calls;
      delete op;  // Drops the last reference other than the completing call's.
    });
    f.AddDoneCallback([&](const Future<int>& done) {
      ++calls;
      seen = done.Result();
    });
  }
  op->promise.SetValue(3);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(seen, 3);
}

TEST(FutureIdTest, IdsAreUniqueAcrossManyFutures) {
  std::unordered_set<uint64_t> ids;
  std::vector<Future<int>> futures;
  for (int i = 0; i < 1000; ++i) {
    futures.push_back(MakeReadyFuture(i));
    EXPECT_TRUE(ids.insert(futures.back().id()).second);
  }
  EXPECT_EQ(futures[10].id(), Future<int>(futures[10]).id());
}

TEST(AsyncTest, TaskDroppedWithoutRunningBreaksTheFuture) {
  Future<int> f;
  {
    testkit::ManualExecutor executor;
    f = Async(executor, [] { return 1; });
    EXPECT_FALSE(f.Done());
  }
  EXPECT_THROW(f.Result(), BrokenPromiseError);
}

TEST(AsyncTest, OnAShutDownTbbExecutorReturnsAFailedFutureWithStoppedError) {
  TbbExecutor executor(2);
  executor.Shutdown();
  bool called = false;
  Future<int> f = Async(executor, [&called] {
    called = true;
    return 1;
  });
  EXPECT_TRUE(f.Done());
  EXPECT_THROW(f.Result(), StoppedError);
  EXPECT_EQ(f.Status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(called);
}

TEST(ThenTest, OnAnExecutorThatRejectsTheTaskFailsTheFuture) {
  TbbExecutor executor(2);
  executor.Shutdown();
  Future<int> f = MakeReadyFuture(1).Then(executor, [](int x) { return x; });
  EXPECT_THROW(f.Result(), StoppedError);
}

// ---------------------------------------------------------------------------------------------
// Timeouts on a FakeClock: exact deadlines, no sleeping.
// ---------------------------------------------------------------------------------------------

class FutureTimeoutTest : public ::testing::Test {
 protected:
  testkit::FakeClock clock_;
};

TEST_F(FutureTimeoutTest, ResultTimesOutExactlyAtTheDeadline) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  std::atomic<bool> returned{false};
  std::exception_ptr error;
  std::thread waiter([&] {
    try {
      f.Result(absl::Milliseconds(10), clock_);
    } catch (...) {
      error = std::current_exception();
    }
    returned = true;
  });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(9));
  EXPECT_EQ(clock_.NumWaiters(), 1);  // Not due: still blocked.
  EXPECT_FALSE(returned.load());
  clock_.Advance(absl::Milliseconds(1));
  waiter.join();
  EXPECT_THROW(std::rethrow_exception(error), TimeoutError);
  EXPECT_THAT(ExceptionMessage(error), HasSubstr("10ms"));
  EXPECT_FALSE(f.Done());
}

TEST_F(FutureTimeoutTest, CompletionBeforeTheDeadlineReturnsTheValue) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  int result = 0;
  std::thread waiter([&] { result = f.Result(absl::Milliseconds(10), clock_); });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(9));
  p.SetValue(7);
  waiter.join();
  EXPECT_EQ(result, 7);
  EXPECT_EQ(clock_.NumWaiters(), 0);
}

TEST_F(FutureTimeoutTest, WaitReturnsFalseAtTheDeadline) {
  Promise<void> p;
  Future<void> f = p.GetFuture();
  bool done = true;
  std::thread waiter([&] { done = f.Wait(absl::Seconds(2), clock_); });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(clock_.NumWaiters(), 1);
  clock_.Advance(absl::Seconds(1));
  waiter.join();
  EXPECT_FALSE(done);
}

TEST_F(FutureTimeoutTest, StatusTimesOutWithDeadlineExceeded) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  absl::Status status;
  absl::StatusOr<int> status_or;
  std::thread waiter([&] {
    status = f.Status(absl::Milliseconds(5), clock_);
    status_or = f.StatusOr(absl::Milliseconds(5), clock_);
  });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(5));
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(5));
  waiter.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(status_or.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(FutureTimeoutTest, AnyFutureWaitTimesOutOnTheClock) {
  Promise<int> p;
  AnyFuture any = p.GetFuture();
  bool done = true;
  std::thread waiter([&] { done = any.Wait(absl::Milliseconds(3), clock_); });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(3));
  waiter.join();
  EXPECT_FALSE(done);
}

TEST_F(FutureTimeoutTest, ZeroTimeoutDoesNotBlock) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  EXPECT_FALSE(f.Wait(absl::ZeroDuration(), clock_));
  EXPECT_THROW(f.Result(absl::ZeroDuration(), clock_), TimeoutError);
  EXPECT_EQ(clock_.NumWaiters(), 0);
}

TEST_F(FutureTimeoutTest, InfiniteTimeoutIgnoresTheClock) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  int result = 0;
  std::thread waiter([&] { result = f.Result(absl::InfiniteDuration(), clock_); });
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Hours(24 * 365));
  EXPECT_EQ(clock_.NumWaiters(), 1);
  p.SetValue(3);
  waiter.join();
  EXPECT_EQ(result, 3);
}

TEST_F(FutureTimeoutTest, CancelWakesAWaiter) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  absl::Status status;
  std::thread waiter([&] { status = f.Status(absl::Seconds(1), clock_); });
  clock_.BlockUntilWaiters(1);
  f.Cancel();
  waiter.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
}

TEST(PromiseTest, ProducerCancelCompletesTheFutureAsCancelled) {
  Promise<int> p;
  Future<int> f = p.GetFuture();
  int cancel_callbacks = 0;
  p.OnCancel([&] { ++cancel_callbacks; });
  EXPECT_TRUE(p.Cancel());
  EXPECT_TRUE(f.Cancelled());
  EXPECT_THROW(f.Result(), CancelledError);
  EXPECT_EQ(cancel_callbacks, 1);
  EXPECT_FALSE(p.Cancel());
  EXPECT_FALSE(p.SetValue(1));
}

TEST(FutureTest, FlattenedCancelledFutureCancelsTheOuterFuture) {
  Promise<int> inner;
  Future<int> outer = MakeReadyFuture(1).Then([&](int) { return inner.GetFuture(); });
  inner.GetFuture().Cancel();
  EXPECT_TRUE(outer.Cancelled());
}

// ---- Moving the value out: only when no other reader exists ---------------------------------

TEST(FutureValueSharingTest, TwoRvalueThensOnCopiesBothSeeTheValue) {
  Promise<std::string> p;
  Future<std::string> f = p.GetFuture();
  Future<std::string> f2 = f;
  Future<size_t> a = std::move(f).Then([](std::string s) { return s.size(); });
  Future<size_t> b = std::move(f2).Then([](std::string s) { return s.size(); });
  p.SetValue(std::string(100, 'x'));
  EXPECT_EQ(a.Result(), 100u);
  EXPECT_EQ(b.Result(), 100u);
}

TEST(FutureValueSharingTest, PendingLvalueThenOnAnExecutorKeepsTheValueFromRvalueResult) {
  testkit::ManualExecutor executor;
  Promise<std::string> p;
  Future<std::string> f = p.GetFuture();
  Future<size_t> g = f.Then(executor, [](const std::string& s) { return s.size(); });
  p.SetValue(std::string(100, 'x'));
  const std::string v = std::move(f).Result();  // The queued continuation still needs the value.
  executor.RunAll();
  EXPECT_EQ(v.size(), 100u);
  EXPECT_EQ(g.Result(), 100u);
}

TEST(FutureValueSharingTest, RvalueResultOfTheOnlyHandleMovesTheValueOut) {
  Promise<std::vector<int>> p;
  Future<std::vector<int>> f = p.GetFuture();
  p.SetValue(std::vector<int>(1000, 1));
  const int* data = f.Result().data();
  std::vector<int> v = std::move(f).Result();
  EXPECT_EQ(v.data(), data);  // Moved, not copied.
}

TEST(FutureValueSharingTest, HandleMadeAfterTheValueWasTakenRefusesToReadIt) {
  Promise<std::string> p;
  Future<std::string> f = p.GetFuture();
  p.SetValue("value");
  EXPECT_EQ(std::move(f).Result(), "value");
  Future<std::string> late = p.GetFuture();
  EXPECT_TRUE(late.Done());
  try {
    late.Result();
    FAIL() << "reading a taken value must throw";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("already moved out"));
  }
}

TEST(FutureValueSharingTest, MoveOnlyValueTakenOnceOtherCopiesThrow) {
  Promise<std::unique_ptr<int>> p;
  Future<std::unique_ptr<int>> f = p.GetFuture();
  Future<std::unique_ptr<int>> copy = f;
  p.SetValue(std::make_unique<int>(4));
  EXPECT_EQ(*std::move(f).Result(), 4);
  EXPECT_THROW(copy.Result(), InvalidOptionError);
  EXPECT_EQ(copy.Status().code(), absl::StatusCode::kOk);  // The outcome itself was a value.
}

struct ThrowingCopy {
  ThrowingCopy() = default;
  ThrowingCopy(ThrowingCopy&&) = default;
  ThrowingCopy(const ThrowingCopy&) { throw std::runtime_error("copy failed"); }
};

TEST(FutureValueSharingTest, ThrowingCopyInAnRvalueThenFailsTheFutureInsteadOfTerminating) {
  Promise<ThrowingCopy> p;
  Future<ThrowingCopy> f = p.GetFuture();
  Future<ThrowingCopy> other = f;  // Forces a copy for the continuation.
  Future<int> g = std::move(f).Then([](ThrowingCopy) { return 1; });
  p.SetValue(ThrowingCopy());
  EXPECT_THROW(g.Result(), std::runtime_error);
}

TEST(FutureValueSharingTest, FlattenedInnerFutureValueIsMovedThrough) {
  Promise<std::unique_ptr<int>> inner;
  Future<std::unique_ptr<int>> outer =
      MakeReadyFuture(1).Then([&](int) { return inner.GetFuture(); });
  inner.SetValue(std::make_unique<int>(9));
  EXPECT_EQ(*std::move(outer).Result(), 9);
}

}  // namespace
}  // namespace concurry

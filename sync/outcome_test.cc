#include "sync/outcome.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;

struct CustomError : std::runtime_error {
  CustomError() : std::runtime_error("custom") {}
};

TEST(OutcomeTest, HoldsAValue) {
  Outcome<std::string> outcome(std::in_place, "abc");
  EXPECT_TRUE(outcome.ok());
  EXPECT_EQ(outcome.value(), "abc");
  EXPECT_EQ(outcome.error(), nullptr);
  EXPECT_TRUE(outcome.status().ok());
}

TEST(OutcomeTest, ValueRethrowsTheOriginalExceptionType) {
  const Outcome<int> outcome(std::make_exception_ptr(CustomError()));
  EXPECT_FALSE(outcome.ok());
  EXPECT_THROW(outcome.value(), CustomError);
  EXPECT_THROW(std::rethrow_exception(outcome.error()), CustomError);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kUnknown);
}

TEST(OutcomeTest, StatusMapsStandardAndLibraryErrors) {
  EXPECT_EQ(Outcome<int>(std::make_exception_ptr(std::invalid_argument("x"))).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Outcome<int>(std::make_exception_ptr(CancelledError())).status().code(),
            absl::StatusCode::kCancelled);
  const absl::Status status = absl::NotFoundError("gone");
  EXPECT_EQ(Outcome<int>(ExceptionFromStatus(status)).status(), status);
}

TEST(OutcomeTest, VoidOutcome) {
  Outcome<void> ok(std::in_place);
  EXPECT_TRUE(ok.ok());
  ok.value();  // Does not throw.
  Outcome<void> failed(std::make_exception_ptr(CustomError()));
  EXPECT_THROW(failed.value(), CustomError);
}

TEST(OutcomeTest, MovesMoveOnlyValuesOut) {
  Outcome<std::unique_ptr<int>> outcome(std::in_place, std::make_unique<int>(5));
  std::unique_ptr<int> value = std::move(outcome).value();
  EXPECT_EQ(*value, 5);
}

TEST(OutcomeTest, RejectsANullError) {
  try {
    Outcome<int> outcome{std::exception_ptr()};
    FAIL() << "accepted a null exception_ptr";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("null"));
  }
}

TEST(OutcomeOfTest, WaitsForTheFuture) {
  Promise<int> promise;
  std::thread producer([&] { promise.SetValue(7); });
  EXPECT_EQ(OutcomeOf(promise.GetFuture()).value(), 7);
  producer.join();
}

TEST(OutcomeTest, ErrorMessageIsTheExceptionsWhatWithoutStatusFormatting) {
  Outcome<int> failed(std::make_exception_ptr(std::runtime_error("7 is unlucky")));
  EXPECT_EQ(failed.error_message(), "7 is unlucky");
  EXPECT_NE(failed.status().ToString(), "7 is unlucky");  // status() adds code and type.
  EXPECT_EQ(Outcome<int>(std::in_place, 7).error_message(), "");
  EXPECT_EQ(Outcome<void>(std::in_place).error_message(), "");
  EXPECT_EQ(Outcome<void>(std::make_exception_ptr(42)).error_message(),
            "(exception not derived from std::exception)");
}

TEST(OutcomeOfTest, MovesTheValueOutOfTheOnlyHandle) {
  Promise<std::unique_ptr<int>> promise;
  Future<std::unique_ptr<int>> future = promise.GetFuture();
  promise.SetValue(std::make_unique<int>(3));
  Outcome<std::unique_ptr<int>> outcome = OutcomeOf(std::move(future));
  EXPECT_EQ(*outcome.value(), 3);
}

TEST(OutcomeOfTest, CopiesTheValueOfASharedFuture) {
  Future<std::string> future = MakeReadyFuture(std::string("shared"));
  EXPECT_EQ(OutcomeOf(future).value(), "shared");
  EXPECT_EQ(future.Result(), "shared");
}

TEST(OutcomeOfTest, KeepsErrorsAndCancellation) {
  EXPECT_THROW(OutcomeOf(MakeFailedFuture<int>(CustomError())).value(), CustomError);
  Promise<void> promise;
  Future<void> future = promise.GetFuture();
  future.Cancel();
  EXPECT_THROW(OutcomeOf(future).value(), CancelledError);
}

TEST(OutcomeOfTest, RejectsAnInvalidFuture) {
  EXPECT_THROW(OutcomeOf(Future<int>()), InvalidOptionError);
}

}  // namespace
}  // namespace concurry

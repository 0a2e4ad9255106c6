#include "futures/errors.h"

#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace concurry {
namespace {

using ::testing::HasSubstr;

class UserError : public std::runtime_error {
 public:
  UserError() : std::runtime_error("user says no") {}
};

class UserInvalidArgument : public std::invalid_argument {
 public:
  UserInvalidArgument() : std::invalid_argument("derived bad arg") {}
};

template <typename E>
std::exception_ptr Ptr(E e) {
  return std::make_exception_ptr(std::move(e));
}

TEST(ErrorsTest, EachLibraryErrorHasItsStatusCode) {
  EXPECT_EQ(TimeoutError("t").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(CancelledError().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(CancelledError("c").code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(StoppedError("s").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CrashedError("c").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(RemoteError("MyType", "m").code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(InvalidOptionError("i").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CapacityError("c").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryValidationError("r").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(BrokenPromiseError().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(StatusError(absl::NotFoundError("n")).code(), absl::StatusCode::kNotFound);
}

TEST(ErrorsTest, LibraryErrorsDeriveFromErrorAndRuntimeError) {
  const TimeoutError timeout("late");
  const Error& as_error = timeout;
  const std::runtime_error& as_runtime = timeout;
  EXPECT_EQ(as_error.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_STREQ(as_runtime.what(), "late");
  EXPECT_THROW(throw StoppedError("x"), Error);
  EXPECT_THROW(throw BrokenPromiseError(), std::runtime_error);
}

TEST(ErrorsTest, RetryValidationErrorCarriesAttemptsResultsAndMessages) {
  const RetryValidationError e(2, {"a", "b"}, {"attempt 1: x", "attempt 2: y"}, "parse");
  EXPECT_EQ(e.attempts(), 2);
  EXPECT_EQ(e.results(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(e.validation_errors(), (std::vector<std::string>{"attempt 1: x", "attempt 2: y"}));
  EXPECT_EQ(e.method_name(), "parse");
  EXPECT_EQ(std::string(e.what()),
            "Validation failed for method 'parse' after 2 attempts.\n"
            "Validation errors: [attempt 1: x; attempt 2: y]\n"
            "Results from all attempts:\nAttempt 1:\na\nAttempt 2:\nb");
  const RetryValidationError copy = e;  // Copies share the details.
  EXPECT_EQ(&copy.results(), &e.results());
  EXPECT_THAT(RetryValidationError(1, {"r"}, {"m"}).what(),
              HasSubstr("Validation failed after 1 attempt.\n"));
  // Built from a message alone (as rebuilt across processes): no details.
  const RetryValidationError plain("remote says no");
  EXPECT_EQ(plain.attempts(), 0);
  EXPECT_TRUE(plain.results().empty());
  EXPECT_TRUE(plain.validation_errors().empty());
  EXPECT_EQ(plain.method_name(), "");
  EXPECT_STREQ(plain.what(), "remote says no");
}

TEST(ErrorsTest, ToStatusCarriesCodeAndMessage) {
  EXPECT_EQ(TimeoutError("waited 1s").ToStatus(), absl::DeadlineExceededError("waited 1s"));
  EXPECT_EQ(CancelledError().ToStatus().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(std::string(CancelledError().ToStatus().message()), HasSubstr("cancelled"));
  EXPECT_THAT(std::string(BrokenPromiseError().what()), HasSubstr("broken promise"));
}

TEST(ErrorsTest, RemoteErrorKeepsTypeNameAndMessage) {
  const RemoteError error("my::Type", "went wrong");
  EXPECT_EQ(error.type_name(), "my::Type");
  EXPECT_THAT(std::string(error.what()), HasSubstr("my::Type"));
  EXPECT_THAT(std::string(error.what()), HasSubstr("went wrong"));
  EXPECT_EQ(error.ToStatus().code(), absl::StatusCode::kUnknown);
}

TEST(ErrorsTest, StatusErrorFromOkStatusBecomesUnknown) {
  const StatusError error(absl::OkStatus());
  EXPECT_EQ(error.code(), absl::StatusCode::kUnknown);
  EXPECT_FALSE(error.status().ok());
}

TEST(ErrorsTest, StatusFromExceptionOfNullIsOk) {
  EXPECT_EQ(StatusFromException(nullptr), absl::OkStatus());
}

TEST(ErrorsTest, StatusFromExceptionMapsLibraryErrorsToTheirOwnStatus) {
  EXPECT_EQ(StatusFromException(Ptr(TimeoutError("late"))), absl::DeadlineExceededError("late"));
  EXPECT_EQ(StatusFromException(Ptr(CancelledError("gone"))), absl::CancelledError("gone"));
  EXPECT_EQ(StatusFromException(Ptr(StoppedError("off"))), absl::FailedPreconditionError("off"));
  EXPECT_EQ(StatusFromException(Ptr(CrashedError("dead"))), absl::UnavailableError("dead"));
  EXPECT_EQ(StatusFromException(Ptr(InvalidOptionError("bad"))), absl::InvalidArgumentError("bad"));
  EXPECT_EQ(StatusFromException(Ptr(CapacityError("full"))), absl::ResourceExhaustedError("full"));
  EXPECT_EQ(StatusFromException(Ptr(RetryValidationError("nope"))), absl::AbortedError("nope"));
  EXPECT_EQ(StatusFromException(Ptr(BrokenPromiseError())).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(StatusFromException(Ptr(RemoteError("T", "m"))).code(), absl::StatusCode::kUnknown);
}

TEST(ErrorsTest, StatusFromExceptionMapsStandardExceptions) {
  EXPECT_EQ(StatusFromException(Ptr(std::invalid_argument("bad arg"))),
            absl::InvalidArgumentError("bad arg"));
  EXPECT_EQ(StatusFromException(Ptr(UserInvalidArgument())),
            absl::InvalidArgumentError("derived bad arg"));
  EXPECT_EQ(StatusFromException(Ptr(std::domain_error("dom"))), absl::InvalidArgumentError("dom"));
  EXPECT_EQ(StatusFromException(Ptr(std::out_of_range("idx 7"))), absl::OutOfRangeError("idx 7"));
  EXPECT_EQ(StatusFromException(Ptr(std::bad_alloc())).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(ErrorsTest, StatusFromExceptionOfUnknownTypeNamesTheDemangledType) {
  const absl::Status runtime = StatusFromException(Ptr(std::runtime_error("boom")));
  EXPECT_EQ(runtime.code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(std::string(runtime.message()), HasSubstr("std::runtime_error"));
  EXPECT_THAT(std::string(runtime.message()), HasSubstr("boom"));

  const absl::Status user = StatusFromException(Ptr(UserError()));
  EXPECT_EQ(user.code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(std::string(user.message()), HasSubstr("concurry::(anonymous namespace)::UserError"));
  EXPECT_THAT(std::string(user.message()), HasSubstr("user says no"));

  const absl::Status non_std = StatusFromException(Ptr(42));
  EXPECT_EQ(non_std.code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(std::string(non_std.message()), HasSubstr("int"));
}

TEST(ErrorsTest, StatusErrorRoundTripKeepsStatusExactly) {
  absl::Status status = absl::NotFoundError("no such key: k");
  status.SetPayload("type.googleapis.com/concurry.Test", absl::Cord("payload bytes"));

  const std::exception_ptr error = ExceptionFromStatus(status);
  EXPECT_EQ(StatusFromException(error), status);
  EXPECT_EQ(StatusFromException(error).GetPayload("type.googleapis.com/concurry.Test"),
            absl::Cord("payload bytes"));
  try {
    std::rethrow_exception(error);
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status(), status);
    EXPECT_EQ(e.ToStatus(), status);
    EXPECT_EQ(e.code(), absl::StatusCode::kNotFound);
    EXPECT_STREQ(e.what(), "no such key: k");
  }
}

TEST(ErrorsTest, ExceptionTypeNameIsDemangled) {
  EXPECT_EQ(ExceptionTypeName(nullptr), "unknown");
  EXPECT_EQ(ExceptionTypeName(Ptr(std::runtime_error("x"))), "std::runtime_error");
  EXPECT_EQ(ExceptionTypeName(Ptr(std::out_of_range("x"))), "std::out_of_range");
  EXPECT_EQ(ExceptionTypeName(Ptr(TimeoutError("x"))), "concurry::TimeoutError");
  EXPECT_EQ(ExceptionTypeName(Ptr(UserError())), "concurry::(anonymous namespace)::UserError");
  EXPECT_EQ(ExceptionTypeName(Ptr(42)), "int");
}

TEST(ErrorsTest, ExceptionMessageIsWhatOrAPlaceholder) {
  EXPECT_EQ(ExceptionMessage(nullptr), "");
  EXPECT_EQ(ExceptionMessage(Ptr(std::runtime_error("boom"))), "boom");
  EXPECT_FALSE(ExceptionMessage(Ptr(42)).empty());
}

}  // namespace
}  // namespace concurry

// The library's error types and their mapping to absl::Status.
//
// Every error the library raises derives from concurry::Error and carries an absl::StatusCode, so
// callers can catch one type, or ask any future for a no-throw absl::Status view:
//
//   try {
//     int v = future.Result(absl::Seconds(1));
//   } catch (const concurry::TimeoutError& e) {  // e.code() == absl::StatusCode::kDeadlineExceeded
//   }
//   absl::Status s = concurry::StatusFromException(std::current_exception());
//
// Exceptions thrown by user code are never wrapped inside one process: they reach the caller with
// their original type. The table of codes is in README.md.

#ifndef CONCURRY_FUTURES_ERRORS_H_
#define CONCURRY_FUTURES_ERRORS_H_

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace concurry {

// Base of every library error. Thread-safe (immutable).
class Error : public std::runtime_error {
 public:
  Error(absl::StatusCode code, const std::string& message);

  // Returns the status code that this error maps to.
  absl::StatusCode code() const noexcept { return code_; }
  // Returns this error as a status: code() and what().
  virtual absl::Status ToStatus() const;

 private:
  absl::StatusCode code_;
};

// A wait (result, gather, wait, stop) ran out of time. kDeadlineExceeded.
class TimeoutError : public Error {
 public:
  explicit TimeoutError(const std::string& message);
};

// The future was cancelled before it completed. kCancelled.
class CancelledError : public Error {
 public:
  explicit CancelledError(const std::string& message = "the future was cancelled");
};

// A call was made to a stopped worker, pool or executor. kFailedPrecondition.
class StoppedError : public Error {
 public:
  explicit StoppedError(const std::string& message);
};

// The process or host running a task died before it answered. kUnavailable.
class CrashedError : public Error {
 public:
  explicit CrashedError(const std::string& message);
};

// An exception of a type that could not be rebuilt after crossing a process or host boundary.
// kUnknown. Keeps the original type name and message.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, const std::string& message);

  // Returns the demangled type name of the original exception.
  const std::string& type_name() const noexcept { return type_name_; }

 private:
  std::string type_name_;
};

// An option or argument was rejected; the message says which and what is allowed.
// kInvalidArgument.
class InvalidOptionError : public Error {
 public:
  explicit InvalidOptionError(const std::string& message);
};

// A bounded queue, limit or pool had no room and the caller asked not to wait.
// kResourceExhausted.
class CapacityError : public Error {
 public:
  explicit CapacityError(const std::string& message);
};

// A wait that could never end was refused: a worker's call waiting for the result of another call
// to the same worker, which is queued behind the waiting one. kFailedPrecondition.
class DeadlockError : public Error {
 public:
  explicit DeadlockError(const std::string& message);
};

// Every retry attempt returned an output that failed validation (retry/retry.h). kAborted.
// Carries the number of attempts, every attempt's result rendered as a string and each validation
// failure message; an error rebuilt from a message alone (across processes) has 0 attempts and
// empty lists. Copies share the details. Thread-safe (immutable).
class RetryValidationError : public Error {
 public:
  explicit RetryValidationError(const std::string& message);
  // Builds the error with concurry's message: "Validation failed for method '<m>' after <n>
  // attempts." (without the method part when `method_name` is empty), the validation errors and
  // the result of every attempt.
  RetryValidationError(int attempts, std::vector<std::string> results,
                       std::vector<std::string> validation_errors, std::string method_name = "");

  // Returns the number of attempts made (0 when built from a message alone).
  int attempts() const noexcept;
  // Returns each attempt's result rendered as a string, attempt 1 first.
  const std::vector<std::string>& results() const noexcept;
  // Returns each validation failure message ("attempt 2: validator 'json' returned false").
  const std::vector<std::string>& validation_errors() const noexcept;
  // Returns the name of the retried method, or "" when unknown.
  const std::string& method_name() const noexcept;

 private:
  struct Details {
    int attempts = 0;
    std::vector<std::string> results;
    std::vector<std::string> validation_errors;
    std::string method_name;
  };
  static const Details& NoDetails();

  std::shared_ptr<const Details> details_;
};

// The promise was destroyed without a value or an error. kInternal.
class BrokenPromiseError : public Error {
 public:
  BrokenPromiseError();
};

// User code returned a non-OK absl::Status (directly or in an absl::StatusOr). Keeps the status
// exactly, so the no-throw view of the future returns it unchanged.
class StatusError : public Error {
 public:
  explicit StatusError(absl::Status status);

  const absl::Status& status() const noexcept { return status_; }
  absl::Status ToStatus() const override { return status_; }

 private:
  absl::Status status_;
};

// Returns the status that describes `error`: a library error's own status, kInvalidArgument for
// std::invalid_argument and std::domain_error, kOutOfRange for std::out_of_range,
// kResourceExhausted for std::bad_alloc and kUnknown (with the type name) for anything else.
// A null pointer gives OkStatus().
absl::Status StatusFromException(const std::exception_ptr& error);

// Returns an exception that carries `status` unchanged (a StatusError). `status` must not be OK.
std::exception_ptr ExceptionFromStatus(absl::Status status);

// Returns the demangled name of `type` ("std::vector<int, std::allocator<int> >"), or the mangled
// name when demangling fails.
std::string TypeName(const std::type_info& type);

// Returns the demangled dynamic type name of the exception in `error` ("std::runtime_error"), or
// "unknown" when it cannot be determined.
std::string ExceptionTypeName(const std::exception_ptr& error);

// Returns what() of the exception in `error`, or a placeholder for non-std exceptions.
std::string ExceptionMessage(const std::exception_ptr& error);

}  // namespace concurry

#endif  // CONCURRY_FUTURES_ERRORS_H_

#include "futures/errors.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <new>
#include <typeinfo>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace concurry {

Error::Error(absl::StatusCode code, const std::string& message)
    : std::runtime_error(message), code_(code) {}

absl::Status Error::ToStatus() const { return absl::Status(code_, what()); }

TimeoutError::TimeoutError(const std::string& message)
    : Error(absl::StatusCode::kDeadlineExceeded, message) {}

CancelledError::CancelledError(const std::string& message)
    : Error(absl::StatusCode::kCancelled, message) {}

StoppedError::StoppedError(const std::string& message)
    : Error(absl::StatusCode::kFailedPrecondition, message) {}

CrashedError::CrashedError(const std::string& message)
    : Error(absl::StatusCode::kUnavailable, message) {}

RemoteError::RemoteError(std::string type_name, const std::string& message)
    : Error(absl::StatusCode::kUnknown, absl::StrCat(type_name, ": ", message)),
      type_name_(std::move(type_name)) {}

InvalidOptionError::InvalidOptionError(const std::string& message)
    : Error(absl::StatusCode::kInvalidArgument, message) {}

CapacityError::CapacityError(const std::string& message)
    : Error(absl::StatusCode::kResourceExhausted, message) {}

DeadlockError::DeadlockError(const std::string& message)
    : Error(absl::StatusCode::kFailedPrecondition, message) {}

RetryValidationError::RetryValidationError(const std::string& message)
    : Error(absl::StatusCode::kAborted, message) {}

namespace {
std::string RetryValidationMessage(int attempts, const std::vector<std::string>& results,
                                   const std::vector<std::string>& validation_errors,
                                   const std::string& method_name) {
  std::string message = "Validation failed";
  if (!method_name.empty()) absl::StrAppend(&message, " for method '", method_name, "'");
  absl::StrAppend(&message, " after ", attempts, attempts == 1 ? " attempt." : " attempts.",
                  "\nValidation errors: [", absl::StrJoin(validation_errors, "; "), "]",
                  "\nResults from all attempts:");
  for (size_t i = 0; i < results.size(); ++i) {
    absl::StrAppend(&message, "\nAttempt ", i + 1, ":\n", results[i]);
  }
  return message;
}
}  // namespace

RetryValidationError::RetryValidationError(int attempts, std::vector<std::string> results,
                                           std::vector<std::string> validation_errors,
                                           std::string method_name)
    : Error(absl::StatusCode::kAborted,
            RetryValidationMessage(attempts, results, validation_errors, method_name)),
      details_(std::make_shared<const Details>(Details{
          attempts, std::move(results), std::move(validation_errors), std::move(method_name)})) {}

const RetryValidationError::Details& RetryValidationError::NoDetails() {
  static const Details* const kNone = new Details();
  return *kNone;
}

int RetryValidationError::attempts() const noexcept { return details_ ? details_->attempts : 0; }
const std::vector<std::string>& RetryValidationError::results() const noexcept {
  return (details_ ? *details_ : NoDetails()).results;
}
const std::vector<std::string>& RetryValidationError::validation_errors() const noexcept {
  return (details_ ? *details_ : NoDetails()).validation_errors;
}
const std::string& RetryValidationError::method_name() const noexcept {
  return (details_ ? *details_ : NoDetails()).method_name;
}

BrokenPromiseError::BrokenPromiseError()
    : Error(absl::StatusCode::kInternal,
            "broken promise: the promise was destroyed without a value or an error") {}

namespace {
absl::Status NonOkOrUnknown(absl::Status status) {
  if (status.ok()) {
    return absl::UnknownError("StatusError built from an OK status");
  }
  return status;
}
}  // namespace

StatusError::StatusError(absl::Status status)
    : Error(NonOkOrUnknown(status).code(), std::string(NonOkOrUnknown(status).message())),
      status_(NonOkOrUnknown(std::move(status))) {}

std::string TypeName(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name != nullptr ? std::string(name.get()) : std::string(type.name());
}

std::string ExceptionTypeName(const std::exception_ptr& error) {
  if (!error) return "unknown";
  try {
    std::rethrow_exception(error);
  } catch (...) {
    const std::type_info* type = abi::__cxa_current_exception_type();
    return type == nullptr ? "unknown" : TypeName(*type);
  }
}

std::string ExceptionMessage(const std::exception_ptr& error) {
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "(exception not derived from std::exception)";
  }
}

absl::Status StatusFromException(const std::exception_ptr& error) {
  if (!error) return absl::OkStatus();
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.ToStatus();
  } catch (const std::invalid_argument& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const std::domain_error& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const std::out_of_range& e) {
    return absl::OutOfRangeError(e.what());
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(e.what());
  } catch (...) {
    return absl::UnknownError(
        absl::StrCat(ExceptionTypeName(error), ": ", ExceptionMessage(error)));
  }
}

std::exception_ptr ExceptionFromStatus(absl::Status status) {
  return std::make_exception_ptr(StatusError(std::move(status)));
}

}  // namespace concurry

#include "workers/exception_registry.h"

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <variant>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_concurrent.h"
#include "workers/codec.h"

namespace app {

// A user error registered with the macro below.
class QuotaError : public std::runtime_error {
 public:
  explicit QuotaError(const std::string& message) : std::runtime_error(message) {}
};

// A user error constructible only from const char*.
class LegacyError : public std::exception {
 public:
  explicit LegacyError(const char* message) : message_(message) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// A user error never registered.
class UnregisteredError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// A user error with extra state, registered with a factory.
class HttpError : public std::runtime_error {
 public:
  HttpError(int code, const std::string& message)
      : std::runtime_error(absl::StrCat("HTTP ", code, ": ", message)), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

}  // namespace app

CONCURRY_REGISTER_EXCEPTION(app::QuotaError);
CONCURRY_REGISTER_EXCEPTION(app::LegacyError);

namespace concurry {
namespace {

// Types with the same demangled names as types of exception_registry_test_helper.cc.
struct StartupTwinError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RenamedTwinError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Registered at startup under the name of a built-in type.
struct ImpostorError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace
}  // namespace concurry

// Both files register a StartupTwinError with the macro: the program must still start.
static constexpr int kStartupTwinLine = __LINE__ + 1;
CONCURRY_REGISTER_EXCEPTION(concurry::StartupTwinError);
// The helper's RenamedTwinError is registered as "helper.RenamedTwinError": no clash.
CONCURRY_REGISTER_EXCEPTION(concurry::RenamedTwinError);
static constexpr int kImpostorLine = __LINE__ + 1;
CONCURRY_REGISTER_EXCEPTION_AS(concurry::ImpostorError, "std::out_of_range");

namespace concurry {

// Defined in exception_registry_test_helper.cc: registers a type that has the same demangled name
// as `(anonymous namespace)::SameNameError` below but is a different type, at the line
// OtherSameNameErrorLine() of that file.
void RegisterOtherSameNameError();
int OtherSameNameErrorLine();
// The helper's StartupTwinError (registered with the macro at HelperStartupTwinLine()) and
// RenamedTwinError.
std::exception_ptr MakeHelperStartupTwin(const std::string& message);
std::exception_ptr MakeHelperRenamedTwin(const std::string& message);
bool IsHelperRenamedTwin(const std::exception_ptr& error);
int HelperStartupTwinLine();

namespace {

using ::testing::HasSubstr;

struct SameNameError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Rebuilds `error` the way it crosses a process: record, encode, decode, rebuild.
std::exception_ptr CrossProcess(const std::exception_ptr& error) {
  ErrorRecord record = RecordFromException(error);
  return ExceptionFromRecord(Decode<ErrorRecord>(Encode(record)));
}

template <typename E>
std::exception_ptr CrossProcess(const E& error) {
  return CrossProcess(std::make_exception_ptr(error));
}

// Returns the message of the InvalidOptionError that `f` throws, or "no error".
template <typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const InvalidOptionError& e) {
    return e.what();
  }
  return "no error";
}

// Returns the demangled dynamic type of the exception in `error`.
std::string TypeOf(const std::exception_ptr& error) { return ExceptionTypeName(error); }

template <typename E>
void ExpectRebuiltWithMessage(const std::string& type_name) {
  SCOPED_TRACE(type_name);
  std::exception_ptr rebuilt = CrossProcess(E("it failed: detail"));
  EXPECT_EQ(TypeOf(rebuilt), type_name);
  try {
    std::rethrow_exception(rebuilt);
  } catch (const E& e) {
    EXPECT_STREQ(e.what(), "it failed: detail");
    EXPECT_EQ(typeid(e), typeid(E));
  } catch (...) {
    ADD_FAILURE() << "rebuilt as " << TypeOf(std::current_exception());
  }
}

TEST(ExceptionRegistryTest, RebuildsStandardExceptionsWithTheirMessage) {
  ExpectRebuiltWithMessage<std::runtime_error>("std::runtime_error");
  ExpectRebuiltWithMessage<std::logic_error>("std::logic_error");
  ExpectRebuiltWithMessage<std::invalid_argument>("std::invalid_argument");
  ExpectRebuiltWithMessage<std::domain_error>("std::domain_error");
  ExpectRebuiltWithMessage<std::length_error>("std::length_error");
  ExpectRebuiltWithMessage<std::out_of_range>("std::out_of_range");
  ExpectRebuiltWithMessage<std::range_error>("std::range_error");
  ExpectRebuiltWithMessage<std::overflow_error>("std::overflow_error");
  ExpectRebuiltWithMessage<std::underflow_error>("std::underflow_error");
}

TEST(ExceptionRegistryTest, RebuildsMessagelessStandardExceptions) {
  EXPECT_EQ(TypeOf(CrossProcess(std::bad_alloc())), "std::bad_alloc");
  EXPECT_THROW(std::rethrow_exception(CrossProcess(std::bad_alloc())), std::bad_alloc);
  EXPECT_THROW(std::rethrow_exception(CrossProcess(std::bad_optional_access())),
               std::bad_optional_access);
  EXPECT_THROW(std::rethrow_exception(CrossProcess(std::bad_variant_access())),
               std::bad_variant_access);
  EXPECT_THROW(std::rethrow_exception(CrossProcess(std::bad_function_call())),
               std::bad_function_call);
}

TEST(ExceptionRegistryTest, RebuildsConcurryErrorsWithTheirMessageAndCode) {
  ExpectRebuiltWithMessage<TimeoutError>("concurry::TimeoutError");
  ExpectRebuiltWithMessage<CancelledError>("concurry::CancelledError");
  ExpectRebuiltWithMessage<StoppedError>("concurry::StoppedError");
  ExpectRebuiltWithMessage<CrashedError>("concurry::CrashedError");
  ExpectRebuiltWithMessage<InvalidOptionError>("concurry::InvalidOptionError");
  ExpectRebuiltWithMessage<CapacityError>("concurry::CapacityError");
  ExpectRebuiltWithMessage<DeadlockError>("concurry::DeadlockError");
  ExpectRebuiltWithMessage<RetryValidationError>("concurry::RetryValidationError");
  EXPECT_EQ(StatusFromException(CrossProcess(TimeoutError("t"))), absl::DeadlineExceededError("t"));
  EXPECT_EQ(StatusFromException(CrossProcess(CapacityError("full"))),
            absl::ResourceExhaustedError("full"));
  EXPECT_EQ(StatusFromException(CrossProcess(DeadlockError("own call"))),
            absl::FailedPreconditionError("own call"));

  std::exception_ptr broken = CrossProcess(BrokenPromiseError());
  EXPECT_EQ(TypeOf(broken), "concurry::BrokenPromiseError");
  EXPECT_EQ(StatusFromException(broken), BrokenPromiseError().ToStatus());

  std::exception_ptr plain = CrossProcess(Error(absl::StatusCode::kAborted, "plain"));
  EXPECT_EQ(TypeOf(plain), "concurry::Error");
  EXPECT_EQ(StatusFromException(plain), absl::AbortedError("plain"));
}

TEST(ExceptionRegistryTest, StatusErrorKeepsItsCodeAndMessage) {
  std::exception_ptr rebuilt = CrossProcess(StatusError(absl::NotFoundError("no such key: k")));
  EXPECT_EQ(TypeOf(rebuilt), "concurry::StatusError");
  try {
    std::rethrow_exception(rebuilt);
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status(), absl::NotFoundError("no such key: k"));
    EXPECT_EQ(e.code(), absl::StatusCode::kNotFound);
  }
  // Equal to what ExceptionFromStatus gives for the same status.
  EXPECT_EQ(StatusFromException(rebuilt),
            StatusFromException(ExceptionFromStatus(absl::NotFoundError("no such key: k"))));
}

TEST(ExceptionRegistryTest, AnUndefinedStatusCodeBecomesUnknown) {
  ErrorRecord record{.type_name = "concurry::StatusError", .message = "odd", .status_code = 99};
  EXPECT_EQ(StatusFromException(ExceptionFromRecord(record)), absl::UnknownError("odd"));
  record.status_code = 0;  // OK is not an error either.
  EXPECT_EQ(StatusFromException(ExceptionFromRecord(record)).code(), absl::StatusCode::kUnknown);
}

TEST(ExceptionRegistryTest, RecordsTypeNameMessageAndStatusCode) {
  ErrorRecord record = RecordFromException(std::make_exception_ptr(std::out_of_range("idx 9")));
  EXPECT_EQ(record, (ErrorRecord{.type_name = "std::out_of_range",
                                 .message = "idx 9",
                                 .status_code = static_cast<int>(absl::StatusCode::kOutOfRange)}));
  record = RecordFromException(std::make_exception_ptr(app::QuotaError("over")));
  EXPECT_EQ(record.type_name, "app::QuotaError");
  EXPECT_EQ(record.status_code, static_cast<int>(absl::StatusCode::kUnknown));
}

TEST(ExceptionRegistryTest, RebuildsUserTypesRegisteredWithTheMacro) {
  ExpectRebuiltWithMessage<app::QuotaError>("app::QuotaError");
  ExpectRebuiltWithMessage<app::LegacyError>("app::LegacyError");
  EXPECT_TRUE(IsExceptionRegistered("app::QuotaError"));
}

TEST(ExceptionRegistryTest, RebuildsUserTypesRegisteredWithAFactory) {
  RegisterException<app::HttpError>([](const ErrorRecord& record) {
    // "HTTP <code>: <message>"
    const size_t colon = record.message.find(':');
    const int code = std::stoi(record.message.substr(5, colon - 5));
    return std::make_exception_ptr(app::HttpError(code, record.message.substr(colon + 2)));
  });
  try {
    std::rethrow_exception(CrossProcess(app::HttpError(503, "busy")));
  } catch (const app::HttpError& e) {
    EXPECT_EQ(e.code(), 503);
    EXPECT_STREQ(e.what(), "HTTP 503: busy");
  }
}

TEST(ExceptionRegistryTest, UnregisteredTypesArriveAsRemoteError) {
  std::exception_ptr rebuilt = CrossProcess(app::UnregisteredError("bad state"));
  try {
    std::rethrow_exception(rebuilt);
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "app::UnregisteredError");
    EXPECT_STREQ(e.what(), "app::UnregisteredError: bad state");
    EXPECT_EQ(e.code(), absl::StatusCode::kUnknown);
  }
  EXPECT_EQ(TypeOf(rebuilt), "concurry::RemoteError");
}

TEST(ExceptionRegistryTest, PlainStdExceptionArrivesAsRemoteError) {
  try {
    std::rethrow_exception(CrossProcess(std::exception()));
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "std::exception");
  }
}

TEST(ExceptionRegistryTest, NonExceptionThrownValuesArriveAsRemoteError) {
  std::exception_ptr thrown;
  try {
    throw 42;
  } catch (...) {
    thrown = std::current_exception();
  }
  ErrorRecord record = RecordFromException(thrown);
  EXPECT_EQ(record.type_name, "int");
  EXPECT_EQ(record.status_code, static_cast<int>(absl::StatusCode::kUnknown));
  try {
    std::rethrow_exception(CrossProcess(thrown));
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "int");
    EXPECT_THAT(e.what(), HasSubstr("not derived from std::exception"));
  }
}

TEST(ExceptionRegistryTest, ForwardingARemoteErrorKeepsTheOriginalTypeAndMessage) {
  std::exception_ptr once = CrossProcess(app::UnregisteredError("deep"));
  ErrorRecord record = RecordFromException(once);
  EXPECT_EQ(record.type_name, "app::UnregisteredError");
  EXPECT_EQ(record.message, "deep");
  try {
    std::rethrow_exception(CrossProcess(once));
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "app::UnregisteredError");
    EXPECT_STREQ(e.what(), "app::UnregisteredError: deep");
  }
  // A RemoteError about a type that this side knows is rebuilt as that type.
  EXPECT_THROW(std::rethrow_exception(CrossProcess(RemoteError("std::length_error", "long"))),
               std::length_error);
}

TEST(ExceptionRegistryTest, AnEmptyTypeNameArrivesAsRemoteErrorOfUnknownType) {
  try {
    std::rethrow_exception(ExceptionFromRecord(ErrorRecord{.type_name = "", .message = "m"}));
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "unknown");
  }
}

TEST(ExceptionRegistryTest, RegisteringTheSameTypeTwiceIsANoOp) {
  RegisterException<app::QuotaError>();
  RegisterException<std::runtime_error>();
  ExpectRebuiltWithMessage<app::QuotaError>("app::QuotaError");
}

std::string Site(const char* file, int line) { return absl::StrCat(file, ":", line); }
std::string TestSite(int line) { return Site("workers/exception_registry_test.cc", line); }
std::string HelperSite(int line) { return Site("workers/exception_registry_test_helper.cc", line); }

TEST(ExceptionRegistryTest, RegisteringADifferentTypeUnderATakenNameFailsNamingBothSites) {
  const std::source_location here = std::source_location::current();
  RegisterException<SameNameError>(here);
  EXPECT_EQ(TypeOf(CrossProcess(SameNameError("x"))),
            "concurry::(anonymous namespace)::SameNameError");
  try {
    RegisterOtherSameNameError();
    ADD_FAILURE() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& e) {
    EXPECT_EQ(
        std::string(e.what()),
        absl::StrCat(
            "RegisterException<concurry::(anonymous namespace)::SameNameError> at ",
            HelperSite(OtherSameNameErrorLine()),
            ": the exception name 'concurry::(anonymous namespace)::SameNameError' is claimed by "
            "two different types: concurry::(anonymous namespace)::SameNameError at ",
            TestSite(here.line()), " and concurry::(anonymous namespace)::SameNameError at ",
            HelperSite(OtherSameNameErrorLine()),
            ". Types are matched by this name across processes, and types in anonymous "
            "namespaces of different .cc files, or with the same qualified name in different "
            "libraries, have the same demangled name. Register one of them under a distinct name "
            "with CONCURRY_REGISTER_EXCEPTION_AS(Type, \"unique.name\") (or "
            "RegisterExceptionAs<Type>(\"unique.name\")), the same in every process"));
  }
  // The first registration stays.
  ExpectRebuiltWithMessage<SameNameError>("concurry::(anonymous namespace)::SameNameError");
}

TEST(ExceptionRegistryTest, TwoMacroRegistrationsUnderOneNameKeepTheProcessAliveAndAreReported) {
  // Reaching this test means static initialization did not terminate the program.
  const std::string name = "concurry::(anonymous namespace)::StartupTwinError";
  const absl::Status check = CheckExceptionRegistry();
  EXPECT_EQ(check.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(check.message(), HasSubstr(absl::StrCat("the exception name '", name,
                                                      "' is claimed by two different types")));
  EXPECT_THAT(check.message(), HasSubstr(TestSite(kStartupTwinLine)));
  EXPECT_THAT(check.message(), HasSubstr(HelperSite(HelperStartupTwinLine())));
  EXPECT_THAT(check.message(), HasSubstr("CONCURRY_REGISTER_EXCEPTION_AS(Type, \"unique.name\")"));
  EXPECT_THAT(check.message(),
              HasSubstr("until then, exceptions of that name arrive as RemoteError"));
  // Neither type is rebuilt (which one registered first depends on the link order); the receiver
  // is told why.
  EXPECT_FALSE(IsExceptionRegistered(name));
  for (const std::exception_ptr& sent :
       {std::make_exception_ptr(StartupTwinError("quota")), MakeHelperStartupTwin("quota")}) {
    EXPECT_EQ(RecordFromException(sent).type_name, name);
    try {
      std::rethrow_exception(CrossProcess(sent));
    } catch (const RemoteError& e) {
      EXPECT_EQ(e.type_name(), name);
      EXPECT_THAT(e.what(), HasSubstr(absl::StrCat(name,
                                                   ": quota (concurry: not rebuilt as a registered "
                                                   "type: the exception name '")));
      EXPECT_THAT(e.what(), HasSubstr(TestSite(kStartupTwinLine)));
      EXPECT_THAT(e.what(), HasSubstr(HelperSite(HelperStartupTwinLine())));
    } catch (...) {
      ADD_FAILURE() << "rebuilt as " << TypeOf(std::current_exception());
    }
  }
  // Registering one of them again changes nothing.
  EXPECT_NO_THROW(RegisterException<StartupTwinError>());
  EXPECT_FALSE(IsExceptionRegistered(name));
}

TEST(ExceptionRegistryTest, AStartupRegistrationUnderABuiltInNameIsReportedAndIgnored) {
  const absl::Status check = CheckExceptionRegistry();
  EXPECT_THAT(check.message(),
              HasSubstr(absl::StrCat(
                  "CONCURRY_REGISTER_EXCEPTION_AS(concurry::(anonymous namespace)::ImpostorError) "
                  "at ",
                  TestSite(kImpostorLine),
                  ": the exception name 'std::out_of_range' is claimed by two different types: "
                  "std::out_of_range at concurry (built in) and")));
  EXPECT_THAT(check.message(),
              HasSubstr("The name belongs to a type concurry registers itself: register "
                        "concurry::(anonymous namespace)::ImpostorError under another name with "
                        "CONCURRY_REGISTER_EXCEPTION_AS(Type, \"unique.name\")"));
  EXPECT_THAT(check.message(), HasSubstr("; it was not registered"));
  ExpectRebuiltWithMessage<std::out_of_range>("std::out_of_range");
  EXPECT_EQ(RecordFromException(std::make_exception_ptr(ImpostorError("i"))).type_name,
            "concurry::(anonymous namespace)::ImpostorError");
}

TEST(ExceptionRegistryTest, TheAsMacroGivesClashingTypesDistinctNames) {
  EXPECT_EQ(RecordFromException(MakeHelperRenamedTwin("h")).type_name, "helper.RenamedTwinError");
  EXPECT_TRUE(IsExceptionRegistered("helper.RenamedTwinError"));
  const std::exception_ptr helper = CrossProcess(MakeHelperRenamedTwin("from helper"));
  EXPECT_TRUE(IsHelperRenamedTwin(helper));
  EXPECT_EQ(ExceptionMessage(helper), "from helper");
  // This file's type keeps its demangled name and is rebuilt as itself.
  ExpectRebuiltWithMessage<RenamedTwinError>("concurry::(anonymous namespace)::RenamedTwinError");
  EXPECT_FALSE(IsHelperRenamedTwin(CrossProcess(RenamedTwinError("here"))));
}

struct AliasError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct DerivedAliasError : AliasError {
  using AliasError::AliasError;
};
struct OtherAliasError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TEST(ExceptionRegistryTest, RegisterExceptionAsSendsAndRebuildsUnderTheGivenName) {
  const std::source_location here = std::source_location::current();
  RegisterExceptionAs<AliasError>("app.Alias", here);
  EXPECT_EQ(RecordFromException(std::make_exception_ptr(AliasError("a"))).type_name, "app.Alias");
  ExpectRebuiltWithMessage<AliasError>("concurry::(anonymous namespace)::AliasError");
  EXPECT_THROW(
      std::rethrow_exception(ExceptionFromRecord({.type_name = "app.Alias", .message = "m"})),
      AliasError);
  // Only the exact type has that name; the demangled name is not registered.
  EXPECT_EQ(RecordFromException(std::make_exception_ptr(DerivedAliasError("d"))).type_name,
            "concurry::(anonymous namespace)::DerivedAliasError");
  EXPECT_FALSE(IsExceptionRegistered("concurry::(anonymous namespace)::AliasError"));
  // Again under the same name: nothing happens. Under another name, or another type under this
  // name: rejected, naming both sites.
  EXPECT_NO_THROW(RegisterExceptionAs<AliasError>("app.Alias"));
  try {
    RegisterException<AliasError>();
    ADD_FAILURE() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("concurry::(anonymous namespace)::AliasError is already registered "
                          "under the name 'app.Alias' (concurry::(anonymous namespace)::AliasError "
                          "at " +
                          TestSite(here.line()) + "), so it cannot also be "));
    EXPECT_THAT(e.what(), HasSubstr("a type has one name on the wire"));
  }
  try {
    RegisterExceptionAs<OtherAliasError>("app.Alias");
    ADD_FAILURE() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), HasSubstr("RegisterExceptionAs<concurry::(anonymous "
                                    "namespace)::OtherAliasError>(\"app.Alias\") at "));
    EXPECT_THAT(e.what(), HasSubstr("the exception name 'app.Alias' is claimed by two different "
                                    "types: concurry::(anonymous namespace)::AliasError at " +
                                    TestSite(here.line())));
  }
  EXPECT_THAT(ErrorOf([] { RegisterExceptionAs<OtherAliasError>(""); }),
              HasSubstr("the name is empty"));
  EXPECT_THAT(ErrorOf([] { RegisterExceptionAs<OtherAliasError>("std::logic_error"); }),
              HasSubstr("std::logic_error at concurry (built in) and "
                        "concurry::(anonymous namespace)::OtherAliasError at "));
  ExpectRebuiltWithMessage<std::logic_error>("std::logic_error");
  // With a factory.
  RegisterExceptionAs<OtherAliasError>("app.OtherAlias", [](const ErrorRecord& record) {
    return std::make_exception_ptr(OtherAliasError("rebuilt: " + record.message));
  });
  EXPECT_EQ(ExceptionMessage(CrossProcess(OtherAliasError("o"))), "rebuilt: o");
}

TEST(ExceptionRegistryTest, RejectsANullExceptionAndAnEmptyFactory) {
  EXPECT_THROW(RecordFromException(nullptr), InvalidOptionError);
  struct EmptyFactoryError : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  EXPECT_THROW(RegisterException<EmptyFactoryError>(ExceptionFactory()), InvalidOptionError);
}

TEST(ExceptionRegistryTest, AFactoryThatThrowsGivesItsException) {
  struct ThrowingFactoryError : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  RegisterException<ThrowingFactoryError>(
      [](const ErrorRecord&) -> std::exception_ptr { throw std::length_error("factory broke"); });
  EXPECT_THROW(std::rethrow_exception(CrossProcess(ThrowingFactoryError("x"))), std::length_error);
}

struct RacingErrorA : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RacingErrorB : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TEST(ExceptionRegistryTest, RegistrationAndLookupAreThreadSafe) {
  testkit::TestConcurrent(/*num_threads=*/4, /*iterations=*/200, [](int thread) {
    if (thread == 0) RegisterException<RacingErrorA>();
    if (thread == 1) RegisterException<RacingErrorB>();
    std::exception_ptr rebuilt = CrossProcess(std::out_of_range("r"));
    EXPECT_EQ(TypeOf(rebuilt), "std::out_of_range");
    CrossProcess(RacingErrorA("a"));
  });
  ExpectRebuiltWithMessage<RacingErrorA>("concurry::(anonymous namespace)::RacingErrorA");
  ExpectRebuiltWithMessage<RacingErrorB>("concurry::(anonymous namespace)::RacingErrorB");
}

}  // namespace
}  // namespace concurry

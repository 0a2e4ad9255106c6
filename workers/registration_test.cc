#include "workers/registration.h"

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "workers/codec.h"

namespace app {

// A base class whose method is registered for the derived worker.
class Named {
 public:
  std::string Name() const { return "counter"; }
};

struct UnregisteredError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A Counter-like worker exercising every kind of method.
class Counter : public Named {
 public:
  explicit Counter(int start, std::string label = "") : value_(start), label_(std::move(label)) {}

  int Add(int n) { return value_ += n; }
  int Get() const { return value_; }
  void Reset() { value_ = 0; }
  int AddAll(const std::vector<int>& values) {
    for (int v : values) value_ += v;
    return value_;
  }
  int Take(std::unique_ptr<int> boxed) { return value_ += *boxed; }
  std::unique_ptr<int> Box() const { return std::make_unique<int>(value_); }
  absl::Status Check(int limit) const {
    if (value_ > limit) return absl::FailedPreconditionError("value above limit");
    return absl::OkStatus();
  }
  absl::StatusOr<int> Half() const {
    if (value_ % 2 != 0) return absl::InvalidArgumentError("odd value");
    return value_ / 2;
  }
  // Completes when the test completes `pending_`.
  concurry::Future<int> Later() {
    pending_ = concurry::Promise<int>();
    return pending_.GetFuture();
  }
  concurry::Future<void> LaterVoid() { return concurry::MakeReadyFuture(); }
  int At(int index) const {
    if (index != 0) throw std::out_of_range("index " + std::to_string(index) + " out of range");
    return value_;
  }
  void Explode() { throw UnregisteredError("boom"); }
  int Quiet() const noexcept { return 7; }
  std::string Label(const std::string& prefix) const { return prefix + label_; }
  std::pair<int, int> Pair() const { return {value_, -value_}; }

  int Scale(int factor) { return value_ *= factor; }
  double Scale(double factor) { return value_ * factor; }

  concurry::Promise<int>& pending() { return pending_; }

 private:
  int value_;
  std::string label_;
  concurry::Promise<int> pending_;
};

// A worker with a default constructor, in a namespace.
class Greeter {
 public:
  std::string Greet(const std::string& name) const { return "hello " + name; }
};

class NotAWorker {};

}  // namespace app

CONCURRY_REGISTER_WORKER(
    app::Counter, (int, const std::string&), Add, Get, Reset, AddAll, Take, Box, Check, Half, Later,
    LaterVoid, At, Explode, Quiet, Label, Name,
    CONCURRY_METHOD(ScaleInt, static_cast<int (app::Counter::*)(int)>(&app::Counter::Scale)),
    CONCURRY_METHOD(ScaleDouble,
                    static_cast<double (app::Counter::*)(double)>(&app::Counter::Scale)),
    CONCURRY_METHOD(PairOfValues, static_cast<std::pair<int, int> (app::Counter::*)() const>(
                                      &app::Counter::Pair)));

CONCURRY_REGISTER_WORKER(app::Greeter, (), Greet);

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using workers_internal::ConstructFromBytes;
using workers_internal::DecodeReply;
using workers_internal::EncodeCall;
using workers_internal::EncodeConstructor;
using workers_internal::EncodeErrorReply;
using workers_internal::EncodeReply;
using workers_internal::InvokeFromBytes;
using workers_internal::MethodName;
using workers_internal::MethodNames;
using workers_internal::MethodReplyT;
using workers_internal::WorkerName;

static_assert(kIsRegisteredWorker<app::Counter>);
static_assert(kIsRegisteredWorker<const app::Greeter>);
static_assert(!kIsRegisteredWorker<app::NotAWorker>);
static_assert(!kIsRegisteredWorker<int>);
static_assert(WorkerName<app::Counter>() == "app::Counter");
static_assert(std::is_same_v<MethodReplyT<decltype(&app::Counter::Check)>, void>);
static_assert(std::is_same_v<MethodReplyT<decltype(&app::Counter::Later)>, int>);

// Calls `method` on `object` the way a remote worker does: by name with encoded arguments, and
// returns the decoded reply (or throws the rebuilt error).
template <typename T, typename M, typename... Args>
MethodReplyT<M> Call(T& object, M method, Args&&... args) {
  std::optional<absl::string_view> name = MethodName<T>(method);
  if (!name) throw std::logic_error("method not registered");
  Future<std::string> reply =
      InvokeFromBytes(object, *name, EncodeCall<T>(method, std::forward<Args>(args)...));
  return DecodeReply<MethodReplyT<M>>(reply.Result(absl::Seconds(10)));
}

std::unique_ptr<app::Counter> MakeCounter(int start) {
  return ConstructFromBytes<app::Counter>(EncodeConstructor<app::Counter>(start, "c"));
}

TEST(RegistrationTest, NamesTheClassAndItsMethods) {
  EXPECT_EQ(WorkerName<app::Greeter>(), "app::Greeter");
  EXPECT_THAT(MethodNames<app::Greeter>(), ElementsAre("Greet"));
  EXPECT_THAT(MethodNames<app::Counter>(),
              ElementsAre("Add", "Get", "Reset", "AddAll", "Take", "Box", "Check", "Half", "Later",
                          "LaterVoid", "At", "Explode", "Quiet", "Label", "Name", "ScaleInt",
                          "ScaleDouble", "PairOfValues"));
}

TEST(RegistrationTest, LooksUpMethodNamesByMemberPointer) {
  EXPECT_THAT(MethodName<app::Counter>(&app::Counter::Add), Optional(absl::string_view("Add")));
  EXPECT_THAT(MethodName<app::Counter>(&app::Counter::Get), Optional(absl::string_view("Get")));
  EXPECT_THAT(
      MethodName<app::Counter>(static_cast<double (app::Counter::*)(double)>(&app::Counter::Scale)),
      Optional(absl::string_view("ScaleDouble")));
  EXPECT_THAT(
      MethodName<app::Counter>(static_cast<int (app::Counter::*)(int)>(&app::Counter::Scale)),
      Optional(absl::string_view("ScaleInt")));
  EXPECT_THAT(MethodName<app::Counter>(&app::Counter::Name), Optional(absl::string_view("Name")));
  EXPECT_EQ(MethodName<app::Counter>(&app::Counter::Quiet), "Quiet");
  EXPECT_EQ(MethodName<app::Counter>(&app::Counter::pending), std::nullopt);
}

TEST(RegistrationTest, ConstructsFromEncodedConstructorArguments) {
  std::unique_ptr<app::Counter> counter = MakeCounter(5);
  EXPECT_EQ(counter->Get(), 5);
  EXPECT_EQ(counter->Label("label "), "label c");
  // Arguments convert as in a direct call: short -> int, const char* -> std::string.
  short start = 3;
  counter = ConstructFromBytes<app::Counter>(EncodeConstructor<app::Counter>(start, "x"));
  EXPECT_EQ(counter->Get(), 3);
  EXPECT_EQ(EncodeConstructor<app::Counter>(start, "x"), Encode(3, std::string("x")));

  std::unique_ptr<app::Greeter> greeter =
      ConstructFromBytes<app::Greeter>(EncodeConstructor<app::Greeter>());
  EXPECT_EQ(Call(*greeter, &app::Greeter::Greet, "bob"), "hello bob");
}

TEST(RegistrationTest, RejectsUndecodableConstructorArguments) {
  try {
    ConstructFromBytes<app::Counter>(Encode(1));
    ADD_FAILURE() << "expected StatusError";
  } catch (const StatusError& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(e.what(), HasSubstr("the constructor arguments of app::Counter"));
    EXPECT_THAT(e.what(), HasSubstr("truncated input"));
  }
}

TEST(RegistrationTest, CallsValueVoidAndConstMethodsByName) {
  auto counter = MakeCounter(5);
  EXPECT_EQ(Call(*counter, &app::Counter::Add, 3), 8);
  EXPECT_EQ(Call(*counter, &app::Counter::Get), 8);
  Call(*counter, &app::Counter::Reset);
  EXPECT_EQ(counter->Get(), 0);
  EXPECT_EQ(Call(*counter, &app::Counter::AddAll, std::vector<int>{1, 2, 3}), 6);
  EXPECT_EQ(Call(*counter, &app::Counter::Quiet), 7);
  EXPECT_EQ(Call(*counter, &app::Counter::Label, "n="), "n=c");
  EXPECT_EQ(Call(*counter, &app::Counter::Name), "counter");
  EXPECT_EQ(Call(*counter,
                 static_cast<std::pair<int, int> (app::Counter::*)() const>(&app::Counter::Pair)),
            std::make_pair(6, -6));
}

TEST(RegistrationTest, CallsOverloadsRegisteredUnderDistinctNames) {
  auto counter = MakeCounter(2);
  EXPECT_EQ(Call(*counter, static_cast<int (app::Counter::*)(int)>(&app::Counter::Scale), 5), 10);
  EXPECT_EQ(
      Call(*counter, static_cast<double (app::Counter::*)(double)>(&app::Counter::Scale), 0.5),
      5.0);
  // The encoded argument has the parameter's type: int 5 becomes double 5.0.
  EXPECT_EQ(EncodeCall<app::Counter>(
                static_cast<double (app::Counter::*)(double)>(&app::Counter::Scale), 5),
            Encode(5.0));
}

TEST(RegistrationTest, MovesMoveOnlyArgumentsAndResults) {
  auto counter = MakeCounter(1);
  EXPECT_EQ(Call(*counter, &app::Counter::Take, std::make_unique<int>(41)), 42);
  std::unique_ptr<int> boxed = Call(*counter, &app::Counter::Box);
  ASSERT_NE(boxed, nullptr);
  EXPECT_EQ(*boxed, 42);
}

TEST(RegistrationTest, FlattensStatusResults) {
  auto counter = MakeCounter(4);
  Call(*counter, &app::Counter::Check, 10);  // OK: returns normally.
  try {
    Call(*counter, &app::Counter::Check, 1);
    ADD_FAILURE() << "expected StatusError";
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status(), absl::FailedPreconditionError("value above limit"));
  }
  EXPECT_EQ(Call(*counter, &app::Counter::Half), 2);
  Call(*counter, &app::Counter::Add, 1);
  try {
    Call(*counter, &app::Counter::Half);
    ADD_FAILURE() << "expected StatusError";
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status(), absl::InvalidArgumentError("odd value"));
  }
}

TEST(RegistrationTest, RepliesWhenAReturnedFutureCompletes) {
  auto counter = MakeCounter(0);
  Future<std::string> reply =
      InvokeFromBytes(*counter, "Later", EncodeCall<app::Counter>(&app::Counter::Later));
  EXPECT_FALSE(reply.Done());
  counter->pending().SetValue(99);
  ASSERT_TRUE(reply.Done());
  EXPECT_EQ(DecodeReply<int>(reply.Result()), 99);

  Call(*counter, &app::Counter::LaterVoid);
}

TEST(RegistrationTest, ACancelledReturnedFutureRepliesCancelledError) {
  auto counter = MakeCounter(0);
  Future<std::string> reply = InvokeFromBytes(*counter, "Later", Encode());
  counter->pending().Cancel();
  ASSERT_TRUE(reply.Done());
  EXPECT_THROW(DecodeReply<int>(reply.Result()), CancelledError);
}

TEST(RegistrationTest, ExceptionsKeepTheirTypeAndMessage) {
  auto counter = MakeCounter(0);
  try {
    Call(*counter, &app::Counter::At, 3);
    ADD_FAILURE() << "expected std::out_of_range";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 3 out of range");
  }
  try {
    Call(*counter, &app::Counter::Explode);
    ADD_FAILURE() << "expected RemoteError";
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "app::UnregisteredError");
    EXPECT_STREQ(e.what(), "app::UnregisteredError: boom");
  }
}

TEST(RegistrationTest, AnUnknownMethodFailsWithTheRegisteredNames) {
  app::Greeter greeter;
  Future<std::string> reply = InvokeFromBytes(greeter, "Wave", Encode());
  try {
    reply.Result();
    ADD_FAILURE() << "expected InvalidOptionError";
  } catch (const InvalidOptionError& e) {
    EXPECT_STREQ(e.what(),
                 "app::Greeter has no registered method \"Wave\"; registered methods: Greet");
  }
  auto counter = MakeCounter(0);
  EXPECT_THAT(InvokeFromBytes(*counter, "add", Encode(1)).Status().message(),
              HasSubstr("registered methods: Add, Get, Reset, AddAll"));
}

TEST(RegistrationTest, UndecodableArgumentsFailTheInvocation) {
  auto counter = MakeCounter(0);
  absl::Status status = InvokeFromBytes(*counter, "Add", Encode(std::string("x"))).Status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("the arguments of app::Counter::Add"));
  status = InvokeFromBytes(*counter, "Add", Encode(1, 2)).Status();
  EXPECT_THAT(status.message(), HasSubstr("4 trailing bytes"));
  EXPECT_EQ(counter->Get(), 0);  // Never called.
}

TEST(RegistrationTest, RepliesRoundTripDirectly) {
  EXPECT_EQ(DecodeReply<std::string>(EncodeReply(std::string("v"))), "v");
  DecodeReply<void>(EncodeReply());
  EXPECT_THROW(DecodeReply<int>(EncodeErrorReply(std::make_exception_ptr(TimeoutError("late")))),
               TimeoutError);
  try {
    DecodeReply<void>(EncodeErrorReply(ExceptionFromStatus(absl::NotFoundError("gone"))));
  } catch (const StatusError& e) {
    EXPECT_EQ(e.status(), absl::NotFoundError("gone"));
  }
  EXPECT_THROW(EncodeErrorReply(nullptr), InvalidOptionError);
}

TEST(RegistrationTest, RejectsGarbledReplies) {
  std::string reply = EncodeReply(5);
  for (size_t size = 0; size < reply.size(); ++size) {
    try {
      DecodeReply<int>(reply.substr(0, size));
      ADD_FAILURE() << "decoded a truncated reply of " << size << " bytes";
    } catch (const StatusError& e) {
      EXPECT_EQ(e.code(), absl::StatusCode::kDataLoss);
      EXPECT_THAT(e.what(), HasSubstr("DecodeReply<int>"));
    }
  }
  // A value reply decoded as void has trailing bytes.
  EXPECT_THROW(DecodeReply<void>(reply), StatusError);
}

}  // namespace
}  // namespace concurry

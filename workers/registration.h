// Worker registration: makes a class's constructor and methods (and free functions, for
// TaskWorker) addressable by name, with arguments and results that cross a byte boundary, for
// workers running in another process or on another host (in-process modes need no registration).
// At global scope, after the class:
//
//   CONCURRY_REGISTER_WORKER(
//       Counter, (int), Add, Get,  // Counter(int); methods by name
//       CONCURRY_METHOD(ScaleInt, static_cast<int (Counter::*)(int)>(&Counter::Scale)),
//       CONCURRY_METHOD(ScaleDbl, static_cast<double (Counter::*)(double)>(&Counter::Scale)));
//
//   std::string ctor = EncodeConstructor<Counter>(5);                      // caller
//   std::unique_ptr<Counter> counter = ConstructFromBytes<Counter>(ctor);  // server
//   std::string args = EncodeCall<Counter>(&Counter::Add, 3);              // caller
//   Future<std::string> reply = InvokeFromBytes(*counter, "Add", args);    // server
//   int sum = DecodeReply<int>(reply.Result());                            // caller: 8
//
//   CONCURRY_REGISTER_FUNCTION(app::Fetch);  // then TaskWorker::Submit(&app::Fetch, url) in
//                                            // Mode::kProcess sends the call as "app::Fetch"

#ifndef CONCURRY_WORKERS_REGISTRATION_H_
#define CONCURRY_WORKERS_REGISTRATION_H_

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"
#include "futures/future.h"

namespace concurry {

// Describes a worker class registered with CONCURRY_REGISTER_WORKER, which specializes it with:
// kRegistered = true, Constructor (the function type `void(params...)`), kName (the class name as
// written in the macro) and kMethods (a tuple of workers_internal::MethodEntry). Thread-safe
// (compile-time constants only).
template <typename T>
struct WorkerRegistration {
  static constexpr bool kRegistered = false;
};

// Whether T is registered with CONCURRY_REGISTER_WORKER.
template <typename T>
inline constexpr bool kIsRegisteredWorker = WorkerRegistration<std::remove_cv_t<T>>::kRegistered;

// The wire protocol for workers outside the process. These functions keep no state: thread-safe.
namespace workers_internal {

// The return type, class and parameter types of member function pointer type M (impl header).
template <typename M>
struct MethodTraits;

// One registered method: its wire name and member function pointer.
template <typename M>
struct MethodEntry {
  const char* name;
  M method;
};

// The result type a caller receives from member function pointer type M (UnwrapT of its return
// type: void for absl::Status, U for absl::StatusOr<U> and Future<U>).
template <typename M>
using MethodReplyT = UnwrapT<typename MethodTraits<M>::Result>;

// Returns the name of registered worker class T, as written in CONCURRY_REGISTER_WORKER.
template <typename T>
constexpr absl::string_view WorkerName();

// Returns the wire names of T's registered methods, in registration order.
template <typename T>
std::vector<absl::string_view> MethodNames();

// Returns the wire name under which `method` is registered for T (the first one when it is
// registered twice), or nullopt when it is not registered. `method` must be a member function
// pointer; it matches an entry of the same type that compares equal.
template <typename T, typename M>
std::optional<absl::string_view> MethodName(M method);

// Returns the encoding of `args` converted (implicitly, as for a direct call) to the decayed
// parameter types of `method`, so that the serving side decodes exactly those types. A wrong
// number of arguments or an argument that does not convert fails to compile.
template <typename T, typename M, typename... Args>
std::string EncodeCall(M method, Args&&... args);

// Returns the encoding of `args` converted to the decayed parameter types of T's registered
// constructor signature.
template <typename T, typename... Args>
std::string EncodeConstructor(Args&&... args);

// Returns a T built from constructor arguments encoded by EncodeConstructor<T>. Undecodable bytes
// throw StatusError (kDataLoss); an exception thrown by the constructor passes through.
template <typename T>
std::unique_ptr<T> ConstructFromBytes(absl::string_view bytes);

// Decodes `arg_bytes` (from EncodeCall) as the arguments of T's method `method_name`, invokes it
// on `object` on the calling thread and returns a future for its reply (EncodeReply /
// EncodeErrorReply): once the method's result is known, which for a method returning a pending
// Future<U> is when that future completes. The method's own errors and cancellation are encoded
// in the reply. Dispatch failures fail the returned future instead: an unknown method name with
// InvalidOptionError naming the class and listing its registered methods, undecodable arguments
// with StatusError (kDataLoss). Calls on one object must not overlap unless its methods allow it.
template <typename T>
Future<std::string> InvokeFromBytes(T& object, absl::string_view method_name,
                                    absl::string_view arg_bytes);

// Returns the reply for a method that succeeded with no value (void or OK absl::Status).
std::string EncodeReply();
// Returns the reply for a method that succeeded with `value`.
template <typename V>
std::string EncodeReply(const V& value);
// Returns the reply for a method that failed with `error` (not null), as an ErrorRecord.
std::string EncodeErrorReply(const std::exception_ptr& error);

// A registered worker class with its type erased: what a serving side (a loopback worker, a worker
// process) needs to build objects of it and run their calls by name. One constant instance per
// class (EncodedClassOf<T>()).
struct EncodedClass {
  // WorkerRegistration<T>::kName: how a serving side in another process finds the class.
  absl::string_view name;
  // Returns a new object built from EncodeConstructor bytes; throws what decoding or the
  // constructor threw.
  void* (*construct)(absl::string_view ctor_bytes);
  // InvokeFromBytes on the object.
  Future<std::string> (*invoke)(void* object, absl::string_view method, absl::string_view args);
  // Deletes the object.
  void (*destroy)(void* object);
};

// The EncodedClass of registered worker class T.
template <typename T>
const EncodedClass& EncodedClassOf();

// Registers `cls` by name for serving sides in other processes of this program (a worker
// process finds its class by the name its creator sends). CONCURRY_REGISTER_WORKER calls it at
// start-up, so every registered class is known before main. Registering the same class twice
// (the macro in a header seen by many files) is a no-op; two different classes under one name are
// reported on stderr and the first stays. Returns true. Thread-safe.
bool RegisterEncodedClass(const EncodedClass& cls);
// The class registered under `name`, or null. Thread-safe.
const EncodedClass* FindEncodedClass(absl::string_view name);

// Take and give back the locks of the class, function and exception registries around a fork()
// by concurry (ProcessStart::kFork), which a worker process then uses: the child, whose other
// threads are gone, never finds one held.
void LockRegistriesForFork();
void UnlockRegistriesAfterFork();

// ---- Free functions (TaskWorker in kLoopback and kProcess modes) ----

// The return type and parameter types of function pointer type F (impl header).
template <typename F>
struct FunctionTraits;

// A free function registered with CONCURRY_REGISTER_FUNCTION, with its type erased: what a serving
// side needs to run it by name.
struct EncodedFunction {
  // The wire name: the function as written in the macro (`app::Fetch`), or the explicit name.
  absl::string_view name;
  // The function's address, for finding its name from a pointer on the calling side.
  void (*address)();
  // Decodes `args` (EncodeFunctionCall bytes) as the function's parameters, calls it on the calling
  // thread and returns a future for its reply, as InvokeFromBytes does for a method: the
  // function's own errors are in the reply; undecodable arguments fail the future (StatusError,
  // kDataLoss).
  // (`name` is this entry's name, for error messages.)
  Future<std::string> (*invoke)(absl::string_view name, absl::string_view args);
};

// Registers the function `Fn` under `name` at start-up (CONCURRY_REGISTER_FUNCTION calls it).
// The same function under the same name again (the macro in a header seen by many files) is a
// no-op; two different functions under one name are reported on stderr and the first stays. One
// function under two names answers to both; its pointer finds the first. Returns true.
// Thread-safe.
bool RegisterEncodedFunction(const EncodedFunction& fn);
// The function registered under `name`, or null. Thread-safe.
const EncodedFunction* FindEncodedFunction(absl::string_view name);
// The wire name of the function at `address` (the first one registered for it), or nullopt when
// it is not registered. The view stays valid for the life of the program. Thread-safe.
std::optional<absl::string_view> FunctionNameOf(void (*address)());
// The names of every registered function, sorted (for error messages). Thread-safe.
std::vector<std::string> RegisteredFunctionNames();

// The registered class that runs registered functions: what a TaskWorker's actor holds in the
// modes that encode calls. Registered by the library under a reserved name (kTaskHostClassName);
// its "methods" are the registered functions, by name, and it ignores its constructor bytes.
inline constexpr absl::string_view kTaskHostClassName = "concurry.TaskHost";
const EncodedClass& TaskHostClass();

// Returns the encoding of `args` converted to the decayed parameter types of function pointer
// type F, as EncodeCall does for a method.
template <typename F, typename... Args>
std::string EncodeFunctionCall(Args&&... args);

// Whether function pointer type F could be registered: its parameter and result types are
// serializable and default-constructible, and it takes no non-const lvalue reference (impl
// header). False for anything that is not a function pointer.
template <typename F>
constexpr bool IsEncodableFunction();

// Returns the value of a reply (nothing for R = void; R may be move-only), or throws the error it
// carries as rebuilt by ExceptionFromRecord: a std::out_of_range as std::out_of_range with the same
// message, an absl::Status error as the StatusError that ExceptionFromStatus gives. Undecodable
// bytes throw StatusError (kDataLoss).
template <typename R>
R DecodeReply(absl::string_view bytes);

}  // namespace workers_internal
}  // namespace concurry

// Registers a worker class. Use at global namespace scope after the class, in the class's header
// so that the calling and the serving side both see it, followed by `;`. Takes:
//  - the class, qualified (`app::Counter`; use an alias for a template with commas);
//  - the constructor's parameter types in parentheses: `(int, const std::string&)`, or `()`;
//  - up to 32 methods, each a plain method name or CONCURRY_METHOD(wire_name, member_pointer)
//    (for an overloaded method, or another wire name). Wire names must be unique.
// Methods may be const, noexcept or inherited from a base class, and may return void, a value,
// absl::Status, absl::StatusOr<U> or Future<U>, flattened exactly as for in-process calls; an
// exception they throw is rebuilt on the calling side (workers/exception_registry.h). Every
// parameter and result type must be serializable (workers/codec.h), with its serialization code
// declared before the macro, and default-constructible; non-const lvalue reference parameters are
// rejected, since changes to them could not travel back. Each rule is checked at compile time with
// a static_assert that says what is wrong. The macro also registers the class by name at start-up,
// for worker processes (Mode::kProcess) that build it from the name their creator sends.
#define CONCURRY_REGISTER_WORKER(Class, constructor_params, ...)                            \
  template <>                                                                               \
  struct concurry::WorkerRegistration<Class> {                                              \
    static constexpr bool kRegistered = true;                                               \
    using Constructor = void constructor_params;                                            \
    static constexpr ::absl::string_view kName = #Class;                                    \
    static constexpr auto kMethods = ::std::make_tuple(__VA_OPT__(                          \
        CONCURRY_INTERNAL_FOR_EACH(CONCURRY_INTERNAL_METHOD_ENTRY, Class, __VA_ARGS__)));   \
  };                                                                                        \
  static_assert(::concurry::workers_internal::CheckRegistration<Class>());                  \
  namespace {                                                                               \
  [[maybe_unused]] const bool CONCURRY_INTERNAL_CAT(concurry_encoded_class_, __COUNTER__) = \
      ::concurry::workers_internal::RegisterEncodedClass(                                   \
          ::concurry::workers_internal::EncodedClassOf<Class>());                           \
  }                                                                                         \
  static_assert(true)

// Registers a free function for TaskWorker in the modes that send calls as bytes (Mode::kLoopback,
// Mode::kProcess), where a call travels by name: `worker.Submit(&app::Fetch, url)`. Use at global
// namespace scope, after the function's declaration, followed by `;`. Takes the function as
// written, qualified (`app::Fetch`), which is also its wire name. Put it in a .cc file linked into
// the program (or in the function's header): a worker process finds the function by that name in
// its own copy of the program. The rules are those of a registered method: parameter and result
// types serializable (workers/codec.h) and default-constructible, no non-const lvalue reference
// parameters; results may be void, a value, absl::Status, absl::StatusOr<U> or Future<U>, flattened
// as for any call; the function's exceptions are rebuilt on the calling side. Each rule is checked
// by a static_assert. Lambdas and function objects cannot be registered: what they capture cannot
// cross a process boundary.
#define CONCURRY_REGISTER_FUNCTION(fn) CONCURRY_REGISTER_FUNCTION_AS(fn, &fn)

// Registers the function pointer expression `...` under the wire name `name` (written like a
// function name, `app::FetchText`, and turned into a string): for an overloaded function,
// `CONCURRY_REGISTER_FUNCTION_AS(app::ScaleInt, static_cast<int (*)(int)>(&app::Scale))`, or to
// give a function another name. Wire names must be unique in the program.
#define CONCURRY_REGISTER_FUNCTION_AS(name, ...)                                               \
  static_assert(::concurry::workers_internal::CheckFunction<decltype(__VA_ARGS__)>());         \
  namespace {                                                                                  \
  [[maybe_unused]] const bool CONCURRY_INTERNAL_CAT(concurry_encoded_function_, __COUNTER__) = \
      ::concurry::workers_internal::RegisterEncodedFunction(                                   \
          ::concurry::workers_internal::EncodedFunctionOf<__VA_ARGS__>(#name));                \
  }                                                                                            \
  static_assert(true)

// An explicit method entry for CONCURRY_REGISTER_WORKER: registers the member function pointer
// expression `...` under the wire name `name` (an identifier).
#define CONCURRY_METHOD(name, ...) (name, __VA_ARGS__)

#include "workers/internal/registration_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_WORKERS_REGISTRATION_H_

// Template bodies and macro machinery for workers/registration.h. Internal: include that header.

#ifndef CONCURRY_WORKERS_INTERNAL_REGISTRATION_IMPL_H_
#define CONCURRY_WORKERS_INTERNAL_REGISTRATION_IMPL_H_

#include <array>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "workers/codec.h"
#include "workers/exception_registry.h"
#include "workers/registration.h"

namespace concurry {
namespace workers_internal {

// ---- Member function pointer traits ------------------------------------------------------------

template <typename M>
struct MethodTraits {
  static constexpr bool kIsMethod = false;
};

template <typename R, typename C, bool kRvalue, typename... A>
struct MethodTraitsBase {
  static constexpr bool kIsMethod = true;
  // Whether the method is &&-qualified (it can not be called on a worker's object).
  static constexpr bool kRvalueQualified = kRvalue;
  using Result = R;
  using Class = C;
  using Params = std::tuple<A...>;
};

#define CONCURRY_INTERNAL_METHOD_TRAITS(qualifiers, rvalue) \
  template <typename R, typename C, typename... A>          \
  struct MethodTraits<R (C::*)(A...) qualifiers> : MethodTraitsBase<R, C, rvalue, A...> {};
CONCURRY_INTERNAL_METHOD_TRAITS(, false)
CONCURRY_INTERNAL_METHOD_TRAITS(const, false)
CONCURRY_INTERNAL_METHOD_TRAITS(&, false)
CONCURRY_INTERNAL_METHOD_TRAITS(const&, false)
CONCURRY_INTERNAL_METHOD_TRAITS(&&, true)
CONCURRY_INTERNAL_METHOD_TRAITS(const&&, true)
CONCURRY_INTERNAL_METHOD_TRAITS(noexcept, false)
CONCURRY_INTERNAL_METHOD_TRAITS(const noexcept, false)
CONCURRY_INTERNAL_METHOD_TRAITS(&noexcept, false)
CONCURRY_INTERNAL_METHOD_TRAITS(const& noexcept, false)
CONCURRY_INTERNAL_METHOD_TRAITS(&&noexcept, true)
CONCURRY_INTERNAL_METHOD_TRAITS(const&& noexcept, true)
#undef CONCURRY_INTERNAL_METHOD_TRAITS

// std::tuple<std::decay_t<P>...> for Tuple = std::tuple<P...>.
template <typename Tuple>
struct DecayedTuple;
template <typename... P>
struct DecayedTuple<std::tuple<P...>> {
  using type = std::tuple<std::decay_t<P>...>;
};

// The parameter types of a function type `void(A...)` as std::tuple<A...>.
template <typename Signature>
struct SignatureParams;
template <typename... A>
struct SignatureParams<void(A...)> {
  using type = std::tuple<A...>;
};

template <typename M>
constexpr MethodEntry<M> MakeMethod(const char* name, M method) {
  return MethodEntry<M>{name, method};
}

// ---- Function pointer traits -------------------------------------------------------------------

template <typename F>
struct FunctionTraits {
  static constexpr bool kIsFunction = false;
};
template <typename R, typename... A>
struct FunctionTraits<R (*)(A...)> {
  static constexpr bool kIsFunction = true;
  using Result = R;
  using Params = std::tuple<A...>;
};
template <typename R, typename... A>
struct FunctionTraits<R (*)(A...) noexcept> : FunctionTraits<R (*)(A...)> {};

// The result type a caller receives from function pointer type F (flattened like a method's).
template <typename F>
using FunctionReplyT = UnwrapT<typename FunctionTraits<F>::Result>;

// ---- Compile-time checks of a registration -----------------------------------------------------

template <typename T>
constexpr void CheckRegistered() {
  static_assert(kIsRegisteredWorker<T>,
                "this class is not registered for workers outside the process: add "
                "CONCURRY_REGISTER_WORKER(Class, (constructor params), Method, ...) at global "
                "namespace scope after the class (see workers/registration.h)");
}

// Whether a value of T can cross the wire both ways (encoded and decoded).
template <typename T>
inline constexpr bool kIsWireSerializable =
    (cereal::traits::is_output_serializable<T, WireOutputArchive>::value) &&
    (cereal::traits::is_input_serializable<T, WireInputArchive>::value);

template <typename P>
inline constexpr bool kIsMutableLvalueRef =
    std::is_lvalue_reference_v<P> && !std::is_const_v<std::remove_reference_t<P>>;

template <typename P>
constexpr bool CheckParam() {
  static_assert(!kIsMutableLvalueRef<P>,
                "a registered method or constructor takes a non-const lvalue reference: changes "
                "to it could not travel back across a process boundary; take it by value or by "
                "const reference");
  using D = std::decay_t<P>;
  static_assert(kIsWireSerializable<D>,
                "a parameter type of a registered method or constructor is not serializable: "
                "include its cereal/types/ header or give it a serialize() (see "
                "workers/codec.h)");
  static_assert(std::is_default_constructible_v<D>,
                "a parameter type of a registered method or constructor is not "
                "default-constructible, which decoding needs");
  return true;
}

template <typename R>
constexpr bool CheckResult() {
  if constexpr (!std::is_void_v<R>) {
    static_assert(kIsWireSerializable<R>,
                  "the result type of a registered method is not serializable: include its "
                  "cereal/types/ header or give it a serialize() (see workers/codec.h)");
    static_assert(std::is_default_constructible_v<R>,
                  "the result type of a registered method is not default-constructible, which "
                  "decoding needs");
  }
  return true;
}

template <typename T, typename M>
constexpr bool CheckMethod() {
  using Traits = MethodTraits<M>;
  static_assert(Traits::kIsMethod,
                "CONCURRY_REGISTER_WORKER: every method must be a non-static member function "
                "(an overloaded method needs CONCURRY_METHOD(name, static_cast<...>(&C::M)))");
  if constexpr (Traits::kIsMethod) {
    static_assert(std::is_base_of_v<typename Traits::Class, T>,
                  "CONCURRY_REGISTER_WORKER: a method belongs to a class that is not the "
                  "registered class or one of its bases");
    static_assert(!Traits::kRvalueQualified,
                  "CONCURRY_REGISTER_WORKER: &&-qualified methods can not be called on a worker");
    []<typename... A>(std::tuple<A...>*) {
      static_assert((CheckParam<A>() && ...));
    }(static_cast<typename Traits::Params*>(nullptr));
    static_assert(CheckResult<MethodReplyT<M>>());
  }
  return true;
}

constexpr bool SameName(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) {
    ++a;
    ++b;
  }
  return *a == *b;
}

template <typename Tuple>
constexpr bool HasUniqueNames(const Tuple& methods) {
  return std::apply(
      [](const auto&... entry) {
        const std::array<const char*, sizeof...(entry)> names = {entry.name...};
        for (size_t i = 0; i < names.size(); ++i) {
          for (size_t j = i + 1; j < names.size(); ++j) {
            if (SameName(names[i], names[j])) return false;
          }
        }
        return true;
      },
      methods);
}

template <typename T>
constexpr bool CheckRegistration() {
  using Registration = WorkerRegistration<T>;
  using CtorParams = typename SignatureParams<typename Registration::Constructor>::type;
  []<typename... A>(std::tuple<A...>*) {
    static_assert((CheckParam<A>() && ...));
    static_assert(std::is_constructible_v<T, std::decay_t<A>&&...>,
                  "CONCURRY_REGISTER_WORKER: the class has no constructor taking the registered "
                  "constructor parameter types");
  }(static_cast<CtorParams*>(nullptr));
  []<typename... M>(std::tuple<MethodEntry<M>...>*) {
    static_assert((CheckMethod<T, M>() && ...));
  }(static_cast<std::remove_cvref_t<decltype(Registration::kMethods)>*>(nullptr));
  static_assert(HasUniqueNames(Registration::kMethods),
                "CONCURRY_REGISTER_WORKER: two methods have the same name; register overloads "
                "under distinct names with CONCURRY_METHOD(name, static_cast<...>(&C::M))");
  return true;
}

// The same rules as CheckParam / CheckResult, without failing: whether a call of F could be
// encoded (TaskWorker decides at compile time whether to look a function up).
template <typename P>
constexpr bool EncodableParam() {
  using D = std::decay_t<P>;
  return !kIsMutableLvalueRef<P> && kIsWireSerializable<D> && std::is_default_constructible_v<D>;
}

template <typename F>
constexpr bool IsEncodableFunction() {
  using Traits = FunctionTraits<F>;
  if constexpr (!Traits::kIsFunction) {
    return false;
  } else {
    using R = FunctionReplyT<F>;
    constexpr bool kResultOk =
        std::is_void_v<R> || (kIsWireSerializable<R> && std::is_default_constructible_v<R>);
    return kResultOk && []<typename... A>(std::tuple<A...>*) {
      return (EncodableParam<A>() && ...);
    }(static_cast<typename Traits::Params*>(nullptr));
  }
}

// The compile-time checks of CONCURRY_REGISTER_FUNCTION, each with its own message.
template <typename P>
constexpr bool CheckFunctionParam() {
  static_assert(!kIsMutableLvalueRef<P>,
                "CONCURRY_REGISTER_FUNCTION: the function takes a non-const lvalue reference: "
                "changes to it could not travel back across a process boundary; take it by value "
                "or by const reference");
  using D = std::decay_t<P>;
  static_assert(kIsWireSerializable<D>,
                "CONCURRY_REGISTER_FUNCTION: a parameter type of the function is not "
                "serializable: include its cereal/types/ header or give it a serialize() (see "
                "workers/codec.h)");
  static_assert(std::is_default_constructible_v<D>,
                "CONCURRY_REGISTER_FUNCTION: a parameter type of the function is not "
                "default-constructible, which decoding needs");
  return true;
}

template <typename F>
constexpr bool CheckFunction() {
  using Traits = FunctionTraits<F>;
  static_assert(Traits::kIsFunction,
                "CONCURRY_REGISTER_FUNCTION: register a free function (or a static member "
                "function), as `app::Fetch` or, for an overload, with "
                "CONCURRY_REGISTER_FUNCTION_AS(name, static_cast<R (*)(A)>(&app::F)); lambdas "
                "and function objects cannot be registered");
  if constexpr (Traits::kIsFunction) {
    []<typename... A>(std::tuple<A...>*) {
      static_assert((CheckFunctionParam<A>() && ...));
    }(static_cast<typename Traits::Params*>(nullptr));
    using R = FunctionReplyT<F>;
    if constexpr (!std::is_void_v<R>) {
      static_assert(kIsWireSerializable<R>,
                    "CONCURRY_REGISTER_FUNCTION: the result type of the function is not "
                    "serializable: include its cereal/types/ header or give it a serialize() "
                    "(see workers/codec.h)");
      static_assert(std::is_default_constructible_v<R>,
                    "CONCURRY_REGISTER_FUNCTION: the result type of the function is not "
                    "default-constructible, which decoding needs");
    }
  }
  return true;
}

// ---- Encoding calls ----------------------------------------------------------------------------

// Returns `arg` as a P (implicitly converted when it is not one already).
template <typename P, typename A>
decltype(auto) AsParam(A&& arg) {
  if constexpr (std::is_same_v<std::decay_t<A>, P>) {
    return static_cast<const P&>(arg);
  } else {
    P converted = std::forward<A>(arg);
    return converted;
  }
}

template <typename... P, typename... Args>
std::string EncodeAsParams(std::tuple<P...>*, Args&&... args) {
  static_assert(sizeof...(P) == sizeof...(Args),
                "EncodeCall / EncodeConstructor: wrong number of arguments for the method or "
                "registered constructor");
  if constexpr (sizeof...(P) == sizeof...(Args)) {
    static_assert((std::is_convertible_v<Args&&, std::decay_t<P>> && ...),
                  "EncodeCall / EncodeConstructor: an argument does not convert implicitly to "
                  "its parameter type");
    static_assert((!kIsMutableLvalueRef<P> && ...),
                  "EncodeCall: the method takes a non-const lvalue reference, which can not "
                  "cross a process boundary");
    return Encode<std::decay_t<P>...>(AsParam<std::decay_t<P>>(std::forward<Args>(args))...);
  } else {
    return {};
  }
}

// Decodes `bytes` as the decayed types of Params; errors name `what` (lazily computed).
template <typename... P, typename What>
std::tuple<std::decay_t<P>...> DecodeAsParams(std::tuple<P...>*, absl::string_view bytes,
                                              What&& what) {
  std::tuple<std::decay_t<P>...> values;
  DecodeWith(bytes, std::forward<What>(what), [&values](WireInputArchive& archive) {
    std::apply(
        [&archive](auto&... value) {
          if constexpr (sizeof...(value) > 0) archive(value...);
        },
        values);
  });
  return values;
}

// Returns the encoded reply for the completed future `done`.
template <typename U>
std::string ReplyFromFuture(const Future<U>& done) {
  std::exception_ptr error = done.Error();  // CancelledError when cancelled.
  if (error) return EncodeErrorReply(error);
  try {
    if constexpr (std::is_void_v<U>) {
      return EncodeReply();
    } else {
      return EncodeReply(done.Result());
    }
  } catch (...) {
    return EncodeErrorReply(std::current_exception());
  }
}

// Decodes the arguments of `entry`, invokes it on `object` and returns the future reply.
template <typename T, typename M>
Future<std::string> InvokeEntry(T& object, const MethodEntry<M>& entry,
                                absl::string_view arg_bytes) {
  using Traits = MethodTraits<M>;
  using U = MethodReplyT<M>;
  using Params = typename Traits::Params;
  std::optional<typename DecayedTuple<Params>::type> args;
  try {
    args.emplace(DecodeAsParams(static_cast<Params*>(nullptr), arg_bytes, [&entry] {
      return absl::StrCat("InvokeFromBytes: the arguments of ", WorkerRegistration<T>::kName,
                          "::", entry.name);
    }));
  } catch (...) {
    return MakeFailedFuture<std::string>(std::current_exception());
  }
  Promise<U> promise;
  Future<U> done = promise.GetFuture();
  std::apply(
      [&](auto&... arg) {
        futures_internal::CompleteWithInvoke(promise, entry.method, object, std::move(arg)...);
      },
      *args);
  Promise<std::string> reply;
  Future<std::string> result = reply.GetFuture();
  done.AddDoneCallback([reply = std::move(reply)](const Future<U>& completed) mutable {
    reply.SetValue(ReplyFromFuture(completed));
  });
  return result;
}

// Decodes the arguments of registered function `Fn`, calls it and returns the future reply.
template <auto Fn>
Future<std::string> InvokeFunctionFromBytes(absl::string_view name, absl::string_view arg_bytes) {
  using F = decltype(Fn);
  if constexpr (!IsEncodableFunction<F>()) {
    // CheckFunction has already failed the build with its message; no further errors.
    return MakeFailedFuture<std::string>(InvalidOptionError("TaskWorker: unsendable function"));
  } else {
    using U = FunctionReplyT<F>;
    using Params = typename FunctionTraits<F>::Params;
    std::optional<typename DecayedTuple<Params>::type> args;
    try {
      args.emplace(DecodeAsParams(static_cast<Params*>(nullptr), arg_bytes, [name] {
        return absl::StrCat("TaskWorker: the arguments of function ", name);
      }));
    } catch (...) {
      return MakeFailedFuture<std::string>(std::current_exception());
    }
    Promise<U> promise;
    Future<U> done = promise.GetFuture();
    std::apply(
        [&](auto&... arg) { futures_internal::CompleteWithInvoke(promise, Fn, std::move(arg)...); },
        *args);
    Promise<std::string> reply;
    Future<std::string> result = reply.GetFuture();
    done.AddDoneCallback([reply = std::move(reply)](const Future<U>& completed) mutable {
      reply.SetValue(ReplyFromFuture(completed));
    });
    return result;
  }
}

// The EncodedFunction of `Fn` under `name` (a string literal: it must live for the program).
template <auto Fn>
EncodedFunction EncodedFunctionOf(const char* name) {
  if constexpr (!FunctionTraits<decltype(Fn)>::kIsFunction) {
    return EncodedFunction{.name = name};  // CheckFunction has already failed the build.
  } else {
    return EncodedFunction{
        .name = name,
        .address = reinterpret_cast<void (*)()>(Fn),
        .invoke = &InvokeFunctionFromBytes<Fn>,
    };
  }
}

}  // namespace workers_internal

// ---- Public template bodies ---------------------------------------------------------------------

namespace workers_internal {

template <typename T>
constexpr absl::string_view WorkerName() {
  CheckRegistered<T>();
  return WorkerRegistration<T>::kName;
}

template <typename T>
std::vector<absl::string_view> MethodNames() {
  CheckRegistered<T>();
  return std::apply(
      [](const auto&... entry) { return std::vector<absl::string_view>{entry.name...}; },
      WorkerRegistration<T>::kMethods);
}

template <typename T, typename M>
std::optional<absl::string_view> MethodName(M method) {
  CheckRegistered<T>();
  static_assert(MethodTraits<M>::kIsMethod, "MethodName: pass a member function pointer");
  std::optional<absl::string_view> found;
  std::apply(
      [&](const auto&... entry) {
        auto match = [&](const auto& candidate) {
          if constexpr (std::is_same_v<std::decay_t<decltype(candidate.method)>, M>) {
            if (!found && candidate.method == method) found = candidate.name;
          }
        };
        (match(entry), ...);
      },
      WorkerRegistration<T>::kMethods);
  return found;
}

template <typename T, typename M, typename... Args>
std::string EncodeCall(M method, Args&&... args) {
  using Traits = MethodTraits<std::decay_t<M>>;
  static_assert(Traits::kIsMethod, "EncodeCall: pass a member function pointer");
  static_assert(std::is_base_of_v<typename Traits::Class, T>,
                "EncodeCall: the method is not a member of T or of one of its bases");
  (void)method;
  return EncodeAsParams(static_cast<typename Traits::Params*>(nullptr),
                        std::forward<Args>(args)...);
}

template <typename T, typename... Args>
std::string EncodeConstructor(Args&&... args) {
  CheckRegistered<T>();
  using Params = typename SignatureParams<typename WorkerRegistration<T>::Constructor>::type;
  return EncodeAsParams(static_cast<Params*>(nullptr), std::forward<Args>(args)...);
}

template <typename T>
std::unique_ptr<T> ConstructFromBytes(absl::string_view bytes) {
  CheckRegistered<T>();
  using Params = typename SignatureParams<typename WorkerRegistration<T>::Constructor>::type;
  auto args = DecodeAsParams(static_cast<Params*>(nullptr), bytes, [] {
    return absl::StrCat("ConstructFromBytes: the constructor arguments of ",
                        WorkerRegistration<T>::kName);
  });
  return std::apply([](auto&... arg) { return std::make_unique<T>(std::move(arg)...); }, args);
}

template <typename T>
Future<std::string> InvokeFromBytes(T& object, absl::string_view method_name,
                                    absl::string_view arg_bytes) {
  CheckRegistered<T>();
  std::optional<Future<std::string>> reply;
  std::apply(
      [&](const auto&... entry) {
        ((!reply && method_name == entry.name ? (reply = InvokeEntry(object, entry, arg_bytes), 0)
                                              : 0),
         ...);
      },
      WorkerRegistration<T>::kMethods);
  if (reply) return *std::move(reply);
  return MakeFailedFuture<std::string>(InvalidOptionError(
      absl::StrCat(WorkerRegistration<T>::kName, " has no registered method \"", method_name,
                   "\"; registered methods: ", absl::StrJoin(MethodNames<T>(), ", "))));
}

template <typename T>
const EncodedClass& EncodedClassOf() {
  CheckRegistered<T>();
  static constexpr EncodedClass kClass = {
      .name = WorkerRegistration<T>::kName,
      .construct = [](absl::string_view bytes) -> void* {
        return ConstructFromBytes<T>(bytes).release();
      },
      .invoke = [](void* object, absl::string_view method,
                   absl::string_view args) -> Future<std::string> {
        return InvokeFromBytes(*static_cast<T*>(object), method, args);
      },
      .destroy = [](void* object) { delete static_cast<T*>(object); },
  };
  return kClass;
}

template <typename F, typename... Args>
std::string EncodeFunctionCall(Args&&... args) {
  static_assert(FunctionTraits<F>::kIsFunction, "EncodeFunctionCall: F must be a function pointer");
  return EncodeAsParams(static_cast<typename FunctionTraits<F>::Params*>(nullptr),
                        std::forward<Args>(args)...);
}

template <typename V>
std::string EncodeReply(const V& value) {
  return Encode(true, value);
}

template <typename R>
R DecodeReply(absl::string_view bytes) {
  bool ok = false;
  ErrorRecord record;
  std::conditional_t<std::is_void_v<R>, std::tuple<>, R> value{};
  DecodeWith(
      bytes, [] { return absl::StrCat("DecodeReply<", TypeNames<R>(), ">"); },
      [&](WireInputArchive& archive) {
        archive(ok);
        if (!ok) {
          archive(record);
        } else if constexpr (!std::is_void_v<R>) {
          archive(value);
        }
      });
  if (!ok) std::rethrow_exception(ExceptionFromRecord(record));
  if constexpr (!std::is_void_v<R>) return value;
}

}  // namespace workers_internal
}  // namespace concurry

// ---- Macro machinery for CONCURRY_REGISTER_WORKER ----------------------------------------------

#define CONCURRY_INTERNAL_CAT(a, b) CONCURRY_INTERNAL_CAT_(a, b)
#define CONCURRY_INTERNAL_CAT_(a, b) a##b

// Expands to 1 when `x` is parenthesized (a CONCURRY_METHOD entry), else to 0.
#define CONCURRY_INTERNAL_IS_PAREN(x) CONCURRY_INTERNAL_IS_PAREN_(CONCURRY_INTERNAL_PAREN_PROBE x)
#define CONCURRY_INTERNAL_IS_PAREN_(...) CONCURRY_INTERNAL_SECOND(__VA_ARGS__, 0, ~)
#define CONCURRY_INTERNAL_PAREN_PROBE(...) ~, 1
#define CONCURRY_INTERNAL_SECOND(a, b, ...) b

// One entry of WorkerRegistration<Class>::kMethods.
#define CONCURRY_INTERNAL_METHOD_ENTRY(Class, entry)                                        \
  CONCURRY_INTERNAL_CAT(CONCURRY_INTERNAL_METHOD_ENTRY_, CONCURRY_INTERNAL_IS_PAREN(entry)) \
  (Class, entry)
#define CONCURRY_INTERNAL_METHOD_ENTRY_0(Class, method) \
  ::concurry::workers_internal::MakeMethod(#method, &Class::method)
#define CONCURRY_INTERNAL_METHOD_ENTRY_1(Class, named) CONCURRY_INTERNAL_METHOD_ENTRY_NAMED named
#define CONCURRY_INTERNAL_METHOD_ENTRY_NAMED(name, ...) \
  ::concurry::workers_internal::MakeMethod(#name, __VA_ARGS__)

#define CONCURRY_INTERNAL_FOR_EACH(macro, context, ...)                                    \
  CONCURRY_INTERNAL_CAT(CONCURRY_INTERNAL_FOR_EACH_, CONCURRY_INTERNAL_COUNT(__VA_ARGS__)) \
  (macro, context, __VA_ARGS__)
#define CONCURRY_INTERNAL_COUNT(...)                                                            \
  CONCURRY_INTERNAL_COUNT_(__VA_ARGS__, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, \
                           18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define CONCURRY_INTERNAL_COUNT_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, \
                                 _16, _17, _18, _19, _20, _21, _22, _23, _24, _25, _26, _27, _28,  \
                                 _29, _30, _31, _32, count, ...)                                   \
  count
#define CONCURRY_INTERNAL_FOR_EACH_1(m, c, x) m(c, x)
#define CONCURRY_INTERNAL_FOR_EACH_2(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_1(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_3(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_2(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_4(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_3(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_5(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_4(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_6(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_5(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_7(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_6(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_8(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_7(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_9(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_8(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_10(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_9(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_11(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_10(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_12(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_11(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_13(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_12(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_14(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_13(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_15(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_14(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_16(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_15(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_17(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_16(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_18(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_17(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_19(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_18(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_20(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_19(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_21(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_20(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_22(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_21(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_23(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_22(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_24(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_23(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_25(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_24(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_26(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_25(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_27(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_26(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_28(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_27(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_29(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_28(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_30(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_29(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_31(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_30(m, c, __VA_ARGS__)
#define CONCURRY_INTERNAL_FOR_EACH_32(m, c, x, ...) \
  m(c, x), CONCURRY_INTERNAL_FOR_EACH_31(m, c, __VA_ARGS__)

#endif  // CONCURRY_WORKERS_INTERNAL_REGISTRATION_IMPL_H_

// The inputs of a stream: which callables count as pull sources, how a range is pulled one
// element at a time (RangeSource), and how the stream function is called (StreamCall). Internal:
// include sync/stream.h instead.
//
//   RangeSource<std::vector<int>> source(std::move(ids));  // Owns the vector, moves elements out.
//   while (std::optional<int> id = source()) Use(*id);

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_SOURCE_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_SOURCE_H_

#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>

#include "futures/future.h"

namespace concurry {
namespace sync_internal {

template <typename T>
inline constexpr bool kIsOptional = false;
template <typename T>
inline constexpr bool kIsOptional<std::optional<T>> = true;

template <typename S, typename = void>
inline constexpr bool kIsPullSource = false;
template <typename S>
inline constexpr bool kIsPullSource<S, std::void_t<std::invoke_result_t<std::decay_t<S>&>>> =
    kIsOptional<std::invoke_result_t<std::decay_t<S>&>>;

// A callable taking no arguments and returning std::optional<In>.
template <typename S>
concept StreamPullSource = kIsPullSource<S>;

// An input range that is not also a pull source.
template <typename R>
concept StreamInputRange = std::ranges::input_range<R> && !kIsPullSource<R>;

template <typename S>
using PullValueT = typename std::invoke_result_t<std::decay_t<S>&>::value_type;

// How a stream calls `F` on an input: with or without a StreamContext, and what it returns.
template <typename F, typename In>
struct StreamCall {
  static constexpr bool kWithContext = std::is_invocable_v<F&, In&&, StreamContext<In>&>;
  static_assert(kWithContext || std::is_invocable_v<F&, In&&>,
                "a stream function must be callable as fn(In&&) or "
                "fn(In&&, concurry::StreamContext<In>&)");
  using Raw =
      typename std::conditional_t<kWithContext, std::invoke_result<F&, In&&, StreamContext<In>&>,
                                  std::invoke_result<F&, In&&>>::type;
  using Result = UnwrapT<Raw>;
};

// Pulls the elements of a range one by one: the element after the one returned last is only
// computed (the iterator incremented) when asked for, so a generator runs no further than needed.
// An rvalue range is owned (on the heap, so its iterators stay valid when this moves); an owned
// container's elements are moved out.
template <typename Range>
class RangeSource {
  static constexpr bool kOwned = !std::is_lvalue_reference_v<Range>;
  using Stored = std::remove_reference_t<Range>;
  using Value = std::ranges::range_value_t<Range>;
  static constexpr bool kMoveElements = kOwned && !std::ranges::view<std::remove_cv_t<Stored>>;

 public:
  explicit RangeSource(Range&& range) {
    if constexpr (kOwned) {
      owned_ = std::make_unique<Stored>(std::move(range));
      range_ = owned_.get();
    } else {
      range_ = &range;
    }
  }

  std::optional<Value> operator()() {
    if (!it_.has_value()) {
      it_.emplace(std::ranges::begin(*range_));
      end_.emplace(std::ranges::end(*range_));
    } else {
      ++*it_;
    }
    if (*it_ == *end_) return std::nullopt;
    if constexpr (kMoveElements) {
      return Value(std::ranges::iter_move(*it_));
    } else {
      return Value(**it_);
    }
  }

 private:
  std::unique_ptr<Stored> owned_;
  Stored* range_ = nullptr;
  std::optional<std::ranges::iterator_t<Stored>> it_;
  std::optional<std::ranges::sentinel_t<Stored>> end_;
};

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_SOURCE_H_

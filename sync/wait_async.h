// WaitAsync: Wait for coroutines (concurry's async_wait). `co_await` it inside a Coro: the
// coroutine suspends, holding no thread, until all, the first, or the first failing of many
// futures is done, and resumes on its own scheduler.
//
//   concurry::Coro<void> Crawl(std::vector<concurry::Future<Page>> pages) {
//     const concurry::WaitOptions first{.timeout = absl::Seconds(5),
//                                       .return_when = concurry::ReturnWhen::kFirstCompleted};
//     concurry::WaitResult r = co_await concurry::WaitAsync(pages, first);
//     for (size_t i : r.done) Use(pages[i].Result());  // done: Result() does not block
//   }
//
// Same inputs, options and results as Wait (sync/wait.h). Differences: the timeout counts from
// the coroutine's first step (when the Coro is awaited), and with no `options.clock` it runs on
// the clock of the awaiting coroutine's scheduler (SyncWait's or Spawn's clock, a coroutine
// worker's), not Clock::Real(). A timeout leaves the pending futures running unless
// `options.cancel_pending_on_timeout` is set. Cancelling the awaiting coroutine ends the wait
// with CancelledError and leaves the futures alone; so does a stopped one (its executor rejected
// or dropped the step that would resume it), with StoppedError.
//
// GCC 12 (Debian 12's compiler) miscompiles a braced temporary passed by value inside a co_await
// expression. Affected: `co_await WaitAsync(f, {.timeout = t})`, and typed ones as well,
// `WaitOptions{.timeout = t}` or `GatherOptions{}`: the temporary is copied into the coroutine
// frame bitwise, so its std::string member (progress.description) still points into the old copy
// and is freed at a wrong address. ASan reports "attempting free on address which was not
// malloc()-ed"; without ASan there is no diagnostic, just heap corruption (or a glibc abort far
// from the cause). Fine: `WaitOptions()` (value-initialized), a named variable (as above), a
// function's return value, and every form outside a co_await expression. A braced list of futures
// inside a co_await does not compile at all. So: name the options and the list
// (`std::vector<AnyFuture> any = {a, b};`), or make the Coro first (`auto wait = WaitAsync({a, b},
// options); co_await std::move(wait);`). That is also why the overloads without options are
// separate functions, not default arguments. The smallest program that shows it, with no concurry
// code (g++-12 -std=c++20 -fsanitize=address; fine when `o` is named first):
//
//   struct Opts { int a = 0; std::string s; };
//   struct Aw { bool await_ready() { return false; }
//               void await_suspend(std::coroutine_handle<> h) { h.resume(); }
//               int await_resume() { return 1; } };
//   Aw Make(Opts o) { return {}; }
//   Task T() { int x = co_await Make({.a = 1}); }  // Task: any eager coroutine type

#ifndef CONCURRY_SYNC_WAIT_ASYNC_H_
#define CONCURRY_SYNC_WAIT_ASYNC_H_

#include <concepts>
#include <initializer_list>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/future.h"
#include "sync/internal/async_watch.h"
#include "sync/internal/containers.h"
#include "sync/wait.h"

namespace concurry {

// Returns a Coro that waits until `options.return_when` holds for `futures` or the timeout passes
// and gives which futures are done at that moment (WaitResult, as Wait). Throws
// InvalidOptionError at the call, before anything waits, for a negative timeout, an unknown
// return_when, or an invalid future (naming its index). Empty input completes at once. The futures
// are copied into the coroutine. Thread-safe to call; await the result once.
Coro<WaitResult> WaitAsync(std::vector<AnyFuture> futures, WaitOptions options);
inline Coro<WaitResult> WaitAsync(std::vector<AnyFuture> futures) {
  return WaitAsync(std::move(futures), WaitOptions());
}

// As above for a braced list of futures of any value types: `auto wait = WaitAsync({f1, f2});`
// then `co_await std::move(wait)` (GCC 12 rejects the list inside a co_await expression).
inline Coro<WaitResult> WaitAsync(std::initializer_list<AnyFuture> futures, WaitOptions options) {
  return WaitAsync(std::vector<AnyFuture>(futures), std::move(options));
}
inline Coro<WaitResult> WaitAsync(std::initializer_list<AnyFuture> futures) {
  return WaitAsync(std::vector<AnyFuture>(futures), WaitOptions());
}

// As above for a span of AnyFuture (an array).
inline Coro<WaitResult> WaitAsync(std::span<const AnyFuture> futures, WaitOptions options) {
  return WaitAsync(std::vector<AnyFuture>(futures.begin(), futures.end()), std::move(options));
}
inline Coro<WaitResult> WaitAsync(std::span<const AnyFuture> futures) {
  return WaitAsync(futures, WaitOptions());
}

// As above for a vector of futures.
template <typename T>
Coro<WaitResult> WaitAsync(const std::vector<Future<T>>& futures, WaitOptions options) {
  return WaitAsync(std::vector<AnyFuture>(futures.begin(), futures.end()), std::move(options));
}
template <typename T>
Coro<WaitResult> WaitAsync(const std::vector<Future<T>>& futures) {
  return WaitAsync(futures, WaitOptions());
}

namespace sync_internal {
// The coroutine behind the map overloads: waits by index, then names keys. The input was checked.
template <typename Key>
Coro<WaitResultKeyed<Key>> WaitAsyncByKey(std::vector<Key> keys, std::vector<AnyFuture> futures,
                                          WaitOptions options) {
  Coro<WaitResult> wait = WaitAsyncUnchecked(std::move(futures), std::move(options));
  WaitResult by_index = co_await std::move(wait);
  WaitResultKeyed<Key> result;
  result.timed_out = by_index.timed_out;
  for (size_t i : by_index.done) result.done.push_back(keys[i]);
  for (size_t i : by_index.not_done) result.not_done.push_back(keys[i]);
  co_return result;
}
}  // namespace sync_internal

// As above for a map of futures (std::map, absl::flat_hash_map, ... of Key -> Future<T>): the
// result names keys, and an invalid future is reported with its key.
template <sync_internal::FutureMap M>
Coro<WaitResultKeyed<typename M::key_type>> WaitAsync(const M& futures, WaitOptions options) {
  sync_internal::CheckValid("WaitAsync", futures);
  std::vector<typename M::key_type> keys;
  std::vector<AnyFuture> any;
  keys.reserve(futures.size());
  any.reserve(futures.size());
  for (const auto& [key, future] : futures) {
    keys.push_back(key);
    any.push_back(future);
  }
  sync_internal::CheckWaitInput("WaitAsync", any, options);
  return sync_internal::WaitAsyncByKey(std::move(keys), std::move(any), std::move(options));
}
template <sync_internal::FutureMap M>
Coro<WaitResultKeyed<typename M::key_type>> WaitAsync(const M& futures) {
  return WaitAsync(futures, WaitOptions());
}

// As above with `return_when` and `timeout` as arguments (concurry's async_wait signature):
// `co_await WaitAsync(futures, ReturnWhen::kFirstCompleted, absl::Seconds(5))`. Safe to write
// inside a co_await expression with GCC 12 (no braced temporary). The type of `return_when` is
// deduced (it must be ReturnWhen exactly) so that a braced second argument, `WaitAsync(futures,
// {})` or `{.timeout = t}`, always means WaitOptions.
template <std::same_as<ReturnWhen> R>
Coro<WaitResult> WaitAsync(std::vector<AnyFuture> futures, R return_when,
                           absl::Duration timeout = absl::InfiniteDuration()) {
  WaitOptions options;
  options.return_when = return_when;
  options.timeout = timeout;
  return WaitAsync(std::move(futures), std::move(options));
}
template <typename T, std::same_as<ReturnWhen> R>
Coro<WaitResult> WaitAsync(const std::vector<Future<T>>& futures, R return_when,
                           absl::Duration timeout = absl::InfiniteDuration()) {
  return WaitAsync(std::vector<AnyFuture>(futures.begin(), futures.end()), return_when, timeout);
}
template <sync_internal::FutureMap M, std::same_as<ReturnWhen> R>
Coro<WaitResultKeyed<typename M::key_type>> WaitAsync(
    const M& futures, R return_when, absl::Duration timeout = absl::InfiniteDuration()) {
  WaitOptions options;
  options.return_when = return_when;
  options.timeout = timeout;
  return WaitAsync(futures, std::move(options));
}

// Anything else (a vector of plain values: nothing to wait for) fails to compile with this one
// message.
template <typename Input>
requires(!sync_internal::FutureInput<std::remove_cvref_t<Input>>) auto WaitAsync(
    Input&&, const WaitOptions& = WaitOptions()) {
  static_assert(sync_internal::kNotFutures<Input>,
                "concurry::WaitAsync: expects futures (a std::vector<Future<T>>, a map of Key -> "
                "Future<T>, a span or braced list of AnyFuture); this argument holds no futures");
  return Coro<WaitResult>();
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_WAIT_ASYNC_H_

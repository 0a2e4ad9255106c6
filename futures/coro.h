// Coro<T>: a lazy C++20 coroutine task (concurry's `async def`), and the ways to run one.
//
//   concurry::Coro<int> Fetch(concurry::Future<int> reply) {
//     co_await concurry::SleepFor(absl::Milliseconds(5));  // on the scheduler's clock
//     int v = co_await std::move(reply);                     // resumes on the coroutine's executor
//     co_return v + 1;
//   }
//   int a = concurry::SyncWait(Fetch(promise.GetFuture()));                  // asyncio.run
//   concurry::Future<int> b = concurry::Spawn(pool, Fetch(other.GetFuture()));  // steps on `pool`
//
// A Coro does nothing until it is awaited (`co_await`), spawned or waited on; it runs as steps
// posted to a scheduler (an executor, a coroutine worker's loop, SyncWait's thread). Inside a
// Coro, `co_await` accepts another Coro, a Future<T> (resumed through the scheduler, never on the
// completing thread), SleepFor / SleepUntil and Yield(). Cancelling the future of a spawned Coro
// makes it throw CancelledError at its current or next co_await (RAII destructors run). After
// that, every co_await of the coroutine throws again (a catch block included): cleanup that must
// await something goes in a separate root (Spawn it; its future is not cancelled with this one).

#ifndef CONCURRY_FUTURES_CORO_H_
#define CONCURRY_FUTURES_CORO_H_

#include <coroutine>
#include <type_traits>
#include <utility>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "futures/internal/coro_scheduler.h"

namespace concurry {
namespace futures_internal {
template <typename T>
class CoroPromise;
struct CoroAccess;
}  // namespace futures_internal

// A lazy, move-only coroutine task returning T. Await it once (`co_await std::move(coro)` or
// `co_await Make()`), or hand it to Spawn / SyncWait / Async. Exceptions leave it with their type.
// A default-constructed or moved-from Coro is invalid: awaiting it throws InvalidOptionError.
// Destroying a Coro that has not finished destroys its frame (locals' destructors run).
//
// Nested awaits do not use symmetric transfer (GCC 12 turns it into recursion below -O2): a child
// that finishes without suspending hands control back through a flag, so loops of 10^6 ready
// children use constant stack.
//
// Not thread-safe; a Coro runs one step at a time, posted to its scheduler.
template <typename T = void>
class [[nodiscard]] Coro {
  static_assert(!std::is_reference_v<T>, "Coro<T&> is not supported; use Coro<T*>");

 public:
  using value_type = T;
  using promise_type = futures_internal::CoroPromise<T>;

  Coro() = default;
  Coro(Coro&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Coro& operator=(Coro&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  ~Coro() { Reset(); }

  // Returns whether this Coro holds a coroutine that has not been handed on.
  bool valid() const noexcept { return static_cast<bool>(handle_); }

  // Awaiter interface: runs the child on the awaiting coroutine's thread until it suspends or
  // ends; the parent continues when it ends.
  bool await_ready() const noexcept { return !handle_ || handle_.done(); }
  template <typename P>
  bool await_suspend(std::coroutine_handle<P> parent);
  T await_resume();

 private:
  friend struct futures_internal::CoroAccess;
  friend class futures_internal::CoroPromise<T>;
  explicit Coro(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  void Reset() noexcept {
    if (handle_) std::exchange(handle_, {}).destroy();
  }

  std::coroutine_handle<promise_type> handle_;
};

// Runs `coro` as steps submitted to `executor` and returns a future for its outcome. Cancelling
// the future cancels the coroutine at its next suspension point. SleepFor inside uses `clock`.
// If the executor rejects the first step, the future holds that error; if it rejects or drops a
// later one (a shutdown), the coroutine stops: that step runs on the rejecting or dropping thread,
// where the await it resumes, and every later one, throws StoppedError (destructors and catch
// blocks run as for any exception; the future then fails with StoppedError unless the coroutine
// returns a value). `executor` and `clock` must outlive the coroutine. On InlineExecutor() each
// step runs on the thread that wakes the coroutine (a completer, a timer, a canceller), one after
// another, never nested. When `executor` is a coroutine scheduler's own (CurrentCoroutineExecutor()
// inside SyncWait or a coroutine worker), the coroutine becomes one of that scheduler's roots: it
// uses the scheduler's clock (not `clock`), keeps the scheduler alive, and SyncWait cancels and
// drains it as it does its other roots.
template <typename T>
Future<T> Spawn(Executor& executor, Coro<T> coro, Clock& clock = Clock::Real());

// Runs `coro` to its end on the calling thread (asyncio.run) and returns its value or rethrows its
// error. Its steps run here; the thread waits for posted steps inside a BlockingRegion. SleepFor
// inside uses `clock`. Coroutines that its steps start as roots run here too: a coroutine Then
// without an executor, and Spawn, Async or Then(executor, ...) on CurrentCoroutineExecutor(); when
// `coro` ends, those still running are cancelled and run until they end before SyncWait returns.
// A Future-coroutine started in a step (or in a plain task of the loop) and still waiting then
// resumes on the thread that wakes it; the loop's executor rejects later tasks with StoppedError.
// Never call SyncWait inside a coroutine's step: it would hold that step's thread (and with it,
// on a one-thread scheduler, every other coroutine there) until `coro` ends; co_await it instead.
template <typename T>
T SyncWait(Coro<T> coro, Clock& clock = Clock::Real());

// `co_await SleepFor(d)` / `co_await SleepUntil(t)` resume the coroutine after `d` / at `t` on
// its scheduler's clock (a FakeClock in tests), without holding a thread. Cancellation ends the
// wait with CancelledError. A duration <= 0 or a deadline already passed does not suspend (it is
// not a yield: use Yield() for that). (Function objects, so that an unqualified call is never
// ambiguous with absl::SleepFor, which argument-dependent lookup would find.)
class [[nodiscard]] SleepAwaitable;
struct SleepForFn {
  [[nodiscard]] SleepAwaitable operator()(absl::Duration duration) const;
};
struct SleepUntilFn {
  [[nodiscard]] SleepAwaitable operator()(absl::Time deadline) const;
};
inline constexpr SleepForFn SleepFor{};
inline constexpr SleepUntilFn SleepUntil{};

// Awaitable that posts the coroutine behind the work already queued on its scheduler.
class [[nodiscard]] YieldAwaitable;
[[nodiscard]] YieldAwaitable Yield();

// Returns the executor whose step the calling thread runs (a coroutine's). Throws
// InvalidOptionError outside one.
Executor& CurrentCoroutineExecutor();

}  // namespace concurry

#include "futures/internal/coro_impl.h"  // IWYU pragma: export

#endif  // CONCURRY_FUTURES_CORO_H_

// Stream: runs a function over a lazy input sequence on an Executor with at most max_in_flight
// tasks in flight, topping up as each one completes, and yields the results as they complete (or
// in input order) to a range-for. The concurrent.futures pattern "keep the pool topped up, and
// schedule follow-up work", without materializing the input; memory does not grow with its length.
//
//   concurry::ThreadPoolExecutor pool(16);  // Blocking I/O: one thread per call in flight.
//   for (auto& item : concurry::Stream(pool, urls, Fetch, {.max_in_flight = 16})) {
//     Save(item.index, item.value());  // The first failed Fetch is rethrown from the loop.
//   }
//   // A paginated scan: fetching a page may enqueue the next one.
//   for (auto& page : concurry::Stream(pool, first_tokens,
//                                      [](Token t, concurry::StreamContext<Token>& context) {
//                                        Page p = Scan(t);
//                                        if (p.next) context.Enqueue(*p.next);
//                                        return p.rows;
//                                      })) { ... }
//   // All results at once (input order with Order::kInput):
//   std::vector<Row> rows = concurry::Stream(pool, ids, Load, {.order = concurry::Order::kInput})
//                               .Collect();
//
// Inputs: any input range (containers, views, generators; an lvalue is referenced, an rvalue is
// moved into the stream), an iterator pair, or a pull source (a callable returning
// std::optional<In>, nullopt meaning "no more"). The source is pulled only as slots free up, by one
// thread at a time, outside the stream's lock.

#ifndef CONCURRY_SYNC_STREAM_H_
#define CONCURRY_SYNC_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "sync/outcome.h"
#include "sync/progress.h"

namespace concurry {

// The order in which a Stream yields results. Parses from "completion" / "input" (also
// "completed" / "ordered").
enum class Order {
  // As tasks complete: the fastest result first.
  kCompletion,
  // In input (start) order. A slow input holds back later ones: input i + max_in_flight does not
  // start before result i was yielded, so memory stays bounded.
  kInput,
};

// What a Stream does when a task fails. Parses from "stop_on_error" / "stop" and "collect".
enum class ErrorPolicy {
  // At the first error, stop pulling inputs, drop queued follow-ups and tasks that have not
  // started, cancel pending futures returned by the function, wait for the running tasks, and
  // rethrow the original exception from the iterator when it reaches the failed item (or an
  // input that was dropped or cancelled). Results yielded before stay valid.
  kStopOnError,
  // Yield errors as items (item.ok() == false; item.error_message() is the exception's what())
  // and keep going.
  kCollect,
};

// Flag support (absl::ParseFlag / absl::UnparseFlag) for Order and ErrorPolicy.
bool AbslParseFlag(absl::string_view text, Order* order, std::string* error);
std::string AbslUnparseFlag(Order order);
bool AbslParseFlag(absl::string_view text, ErrorPolicy* policy, std::string* error);
std::string AbslUnparseFlag(ErrorPolicy policy);

// The largest max_in_flight a stream accepts (it bounds the memory of the in-flight window).
inline constexpr int kMaxStreamInFlight = 1 << 20;

// Options of Stream. Plain struct: `{.max_in_flight = 16, .order = Order::kInput}`.
struct StreamOptions {
  // Tasks submitted and not finished at any time, in [1, kMaxStreamInFlight]. In completion order
  // at most 2 * max_in_flight inputs and results are held at once (running or waiting to be
  // consumed); in input order at most max_in_flight.
  int max_in_flight = 64;
  Order order = Order::kCompletion;
  ErrorPolicy on_error = ErrorPolicy::kStopOnError;
  // For the whole stream, from the first begin() / Next() / Start(). When it passes while the
  // consumer waits (sleeping, or between the inputs it runs itself on a TbbExecutor), the stream
  // stops as on Cancel() and the iterator throws TimeoutError, after the tasks still running
  // `fn` returned (see ResultStream): so at most one input's time late. >= 0.
  absl::Duration timeout = absl::InfiniteDuration();
  // Times the timeout and the progress report; null means Clock::Real(). Must outlive the stream.
  Clock* clock = nullptr;
  // Progress over the yielded results; the default description is "Streaming". The total is known
  // for sized ranges, and for any input once the source is exhausted, plus the follow-ups added
  // so far. While more follow-ups may come (the function takes a StreamContext and the source is
  // not exhausted or tasks are still queued or running, or ResultStream::Add was called and the
  // stream has not ended), the total is a lower bound: the bar shows "n done / m+ known so far"
  // and the rate, without a percentage or ETA, and the callback sees -1. A stream of a sized range
  // whose function takes no StreamContext reports its total as final until the loop first calls
  // ResultStream::Add (which it cannot foresee); from then on the total is a lower bound again.
  ProgressOptions progress = {};
  // Receives the warning a stream gives when max_in_flight exceeds what its executor runs at once
  // (see ResultStream::effective_concurrency()), once per stream. The default max_in_flight (64)
  // is not a request for concurrency (a CPU-bound stream keeps its executor busy with it), so it
  // never warns; only a value set to something else does. Null: the warning goes to
  // stderr as "concurry: warning: ...", once per process for each distinct message. An exception
  // it throws propagates from Stream().
  std::function<void(absl::string_view message)> on_warning = {};
};

// One result of a Stream: the input's index and its outcome.
template <typename R>
struct StreamItem {
  // The position of the input in start order: inputs are numbered 0, 1, 2... in the order the
  // stream starts them (queued follow-ups first, then the source). Without follow-ups this is the
  // position in the input sequence.
  int64_t index;
  // The value, or the exception (with its original type) under ErrorPolicy::kCollect.
  Outcome<R> outcome;

  // Returns whether the task succeeded (always true under kStopOnError).
  bool ok() const noexcept { return outcome.ok(); }
  // Returns the failed task's exception message (what(), as Outcome::error_message()), or "".
  std::string error_message() const { return outcome.error_message(); }
  // Returns the value; rethrows the task's exception when !ok().
  decltype(auto) value() & { return outcome.value(); }
  decltype(auto) value() const& { return outcome.value(); }
  decltype(auto) value() && { return std::move(outcome).value(); }
};

template <typename In, typename R>
class ResultStream;

namespace sync_internal {
template <typename In, typename R, typename F>
class StreamCoreImpl;

// Receives follow-up inputs: the stream's core.
template <typename In>
class StreamInputSink {
 public:
  virtual bool Add(In input) = 0;

 protected:
  ~StreamInputSink() = default;
};
}  // namespace sync_internal

// Passed to a stream function that takes it as its second parameter,
// `R fn(In input, StreamContext<In>& context)`, to add follow-up inputs (the next page of a
// paginated scan). Valid only during that call. Thread-safe.
template <typename In>
class StreamContext {
 public:
  StreamContext(const StreamContext&) = delete;
  StreamContext& operator=(const StreamContext&) = delete;

  // Returns the index of the input being processed.
  int64_t index() const { return index_; }
  // Adds `input` to the stream; it starts before any further source input, as soon as a slot is
  // free. Returns false, dropping `input`, when the stream is stopping (error, cancel, timeout,
  // destruction).
  bool Enqueue(In input) { return sink_->Add(std::move(input)); }

 private:
  template <typename, typename, typename>
  friend class sync_internal::StreamCoreImpl;
  StreamContext(sync_internal::StreamInputSink<In>* sink, int64_t index)
      : sink_(sink), index_(index) {}

  sync_internal::StreamInputSink<In>* sink_;
  int64_t index_;
};

}  // namespace concurry

#include "sync/internal/stream_impl.h"  // IWYU pragma: export

namespace concurry {

// The results of a bounded stream, consumed with a range-for (or Next()). Created by Stream().
//
// Nothing starts until the first begin(), Next() or Start(). Then up to `max_in_flight` inputs are
// pulled and submitted; each completing task tops the window up (from the completing thread), and
// the consumer takes completed results in batches. The stream ends when the source is exhausted,
// no follow-up is queued and nothing is in flight. `fn` is called concurrently from the
// executor's threads (and from the consumer's: see "Where `fn` runs" below).
//
// In flight: a task is in flight from its submission until `fn` returns or, when `fn` returns a
// Future<U>, until that future completes.
//
// Stopping. Destroying the stream early (a `break`), Cancel(), the first error under
// kStopOnError, a timeout, or an executor that rejects or drops a task stop the stream: it stops
// pulling inputs, drops queued follow-ups and tasks that have not started, and cancels the pending
// futures returned by `fn` (they complete as cancelled and free their slots; one still running
// `fn` is cancelled when it returns). Destruction, and the consumer after a stop, then wait for
// the tasks still running `fn`, which reference the stream: a task that never returns blocks
// them forever. The same holds for a task that cannot run: consuming (or destroying) a stream
// from a task of a one-thread executor, or on a ManualExecutor that nobody drains, waits for
// itself. The executor must outlive the stream.
//
// The source and the stream's lock. The source is pulled from the consumer's thread or a
// completing task's thread (on a TbbExecutor, also from a thread that ran an input), one pull at
// a time (by the thread that tops the window up), so it need not be thread-safe. No user code
// runs under the stream's lock: the source is called, inputs are moved, inputs, the source and
// the results are destroyed, and futures cancelled, outside it, so the source, their destructors
// and callbacks may call Add() or Cancel() (an Add() from inside the source is queued, not
// started by that call).
//
// Where `fn` runs. On an executor whose tasks may run on any thread
// (Executor::tasks_may_run_on_any_thread(): TbbExecutor, for CPU work) and with a function that
// does not return futures, the stream runs its inputs in at most min(max_in_flight,
// max_concurrency()) executor tasks, each running inputs one after the other (a few dozen, then
// it queues a new task behind the executor's other work); while one of them blocks in a
// BlockingRegion (any library wait), TbbExecutor adds a thread and the stream one more such task.
// And a consumer waiting for a result while inputs wait for an executor thread runs some of them
// itself, on its own thread, instead of sleeping: there `fn` sees the consumer's thread_locals and
// held locks (and, while it runs inputs that it took two or more at a time, even once other threads
// took back the rest, BlockingRegion::WouldCompensate() is true there, so library waits inside
// `fn` take their blocking path). Short inputs (a microsecond or two) are taken a group at a time
// (up to 16) and their results handed over together when the group ends, yet as on one input at a
// time: whenever a thread takes inputs, it first takes back the inputs that other groups have not
// started (oldest first), so an input that waits for a later one (with or without a
// BlockingRegion) has it run by the next thread that takes work, and a consumer with nothing to
// yield takes the results a group has recorded and its unstarted inputs rather than sleep. So a
// short result is not held behind a slow input that another thread runs, and inputs that wait for
// each other need no more threads than with one input per task. But under Order::kInput, an input
// that the consumer runs itself must not wait for an input max_in_flight or more places after the
// oldest result not yet taken: that one starts only once the consumer yields (with or without
// groups). On every other executor (ThreadPoolExecutor, whose initializer sets up its threads, a
// TaskWorker or pool, InlineExecutor, a ManualExecutor, your own unless it opts in) each input is
// one executor task, and `fn` runs on the executor's threads only, as that executor runs tasks (one
// at a time on a serial one).
//
// Thread-safe for Add(), Cancel() and Start() from any thread (including from tasks); iteration
// (begin(), Next(), the iterators) and destruction must be confined to one thread at a time.
template <typename In, typename R>
class ResultStream {
 public:
  using Item = StreamItem<R>;

  // An input iterator over the items; ++ blocks until the next result (or the end).
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using iterator_concept = std::input_iterator_tag;
    using value_type = Item;
    using difference_type = std::ptrdiff_t;
    using reference = Item&;
    using pointer = Item*;

    iterator() = default;
    Item& operator*() const { return *item_; }
    Item* operator->() const { return item_; }
    iterator& operator++() {
      item_ = core_->Next();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return it.item_ == nullptr;
    }

   private:
    friend class ResultStream;
    iterator(sync_internal::StreamCore<In, R>* core, Item* item) : core_(core), item_(item) {}

    sync_internal::StreamCore<In, R>* core_ = nullptr;
    Item* item_ = nullptr;
  };

  // A moved-from stream may only be destroyed or assigned to. Assigning over a stream, like
  // destroying it, stops it and waits for its running tasks.
  ResultStream(ResultStream&&) noexcept = default;
  ResultStream& operator=(ResultStream&&) noexcept = default;
  ~ResultStream() = default;  // The core's destructor stops and drains the stream.

  // Starts the stream if needed and blocks for the first item. Call once, like any input range.
  iterator begin() { return iterator(core_.get(), core_->Next()); }
  std::default_sentinel_t end() const { return std::default_sentinel; }

  // Blocks until the next item and returns it, or returns null at the end. The item stays valid
  // until the next call. Throws, each time after the running tasks finished, and again on later
  // calls: a task's error when reaching its item (kStopOnError); and, at the next call,
  // CancelledError after Cancel(), TimeoutError after the timeout, the source's exception,
  // StoppedError when the executor rejected or dropped a task (it was shut down), or what
  // prevented starting, running or completing a task other than `fn` (std::bad_alloc, a throwing
  // move of an input).
  Item* Next() { return core_->Next(); }

  // Starts pulling inputs and submitting tasks now, without waiting for a result. Idempotent.
  void Start() { core_->Start(); }

  // Adds a follow-up input (like StreamContext::Enqueue), for instance from the loop body after
  // inspecting a result. Returns false, dropping `input`, once the stream is stopping or has
  // ended. After a call the progress total stays a lower bound until the stream ends (more may
  // be added at any time).
  bool Add(In input) { return core_->AddFromOutside(std::move(input)); }

  // Consumes the rest of the stream and returns the values in the order it yields them: input
  // order under Order::kInput, completion order otherwise (item indices give the input order).
  // Throws what Next() throws: under kStopOnError the first failed task's exception, after the
  // running tasks finished. Under kCollect a failed item has no value: Collect() rethrows its
  // exception on reaching it, leaving the rest in the stream (destroying it stops it); use
  // CollectOutcomes() to keep failures. Not for R = void (use CollectOutcomes()).
  std::vector<R> Collect() requires(!std::is_void_v<R>) {
    std::vector<R> values;
    while (Item* item = Next()) values.push_back(std::move(*item).value());
    return values;
  }

  // Consumes the rest of the stream and returns every item's outcome, in the order it yields
  // them (as Collect()). Under kCollect failures are outcomes with !ok(); under kStopOnError the
  // first failure is thrown as by Next(), and the outcomes collected so far are lost.
  std::vector<Outcome<R>> CollectOutcomes() {
    std::vector<Outcome<R>> outcomes;
    while (Item* item = Next()) outcomes.push_back(std::move(item->outcome));
    return outcomes;
  }

  // Returns the requested StreamOptions::max_in_flight.
  int max_in_flight() const { return core_->max_in_flight(); }
  // Returns how many tasks the stream's executor runs at once (Executor::max_concurrency()), or
  // 0 when unknown: an executor that cannot say (InlineExecutor), or a function returning
  // futures (a task then stays in flight after the executor ran it, so the executor's threads do
  // not bound the tasks in flight).
  int max_concurrency() const { return core_->runner_concurrency(); }
  // Returns how many tasks can really be in flight at once: min(max_in_flight(),
  // max_concurrency()), or max_in_flight() when the concurrency is unknown. When it is below
  // max_in_flight() the stream warned at creation (StreamOptions::on_warning or stderr): a
  // blocking-I/O stream with max_in_flight = 16 on a 2-thread TbbExecutor runs 2 at a time (3
  // while the consumer, waiting, runs one itself; more while inputs block in a BlockingRegion:
  // see "Where `fn` runs").
  int effective_concurrency() const {
    const int concurrency = max_concurrency();
    return concurrency > 0 && concurrency < max_in_flight() ? concurrency : max_in_flight();
  }

  // Stops the stream from any thread (see "Stopping" above): no more inputs start, pending
  // futures returned by `fn` are cancelled (from this call), and the consumer's next step throws
  // CancelledError once the running tasks finished. No-op once the stream stopped or ended.
  void Cancel() { core_->Cancel(); }

 private:
  template <typename In2, typename R2, typename F, typename Source>
  friend ResultStream<In2, R2> sync_internal::MakeStream(Executor&, Source, F&&, StreamOptions,
                                                         int64_t,
                                                         const sync_internal::StreamRunner&);
  explicit ResultStream(std::unique_ptr<sync_internal::StreamCore<In, R>> core)
      : core_(std::move(core)) {}

  std::unique_ptr<sync_internal::StreamCore<In, R>> core_;
};

// The result type of a stream function `fn` over inputs of type In: the return type of
// fn(In&&) or fn(In&&, StreamContext<In>&), flattened like Async (Future<U>, absl::StatusOr<U>
// give U; absl::Status gives void).
template <typename F, typename In>
using StreamResultT = typename sync_internal::StreamCall<std::decay_t<F>, In>::Result;

namespace sync_internal {

// Stream over an input range whose tasks' concurrency is `runner` rather than the executor's:
// for callers whose function hands each input to something else that bounds the concurrency
// (workers' Map runs the stream on InlineExecutor() with a function posting to a worker, and
// passes the worker's concurrency). Otherwise exactly Stream(executor, inputs, fn, options),
// including the warning when options.max_in_flight > runner.max_concurrency > 0 (unless
// runner.warn is false).
template <StreamInputRange Range, typename F>
ResultStream<std::ranges::range_value_t<Range>, StreamResultT<F, std::ranges::range_value_t<Range>>>
StreamOn(Executor& executor, Range&& inputs, F&& fn, StreamOptions options,
         const StreamRunner& runner) {
  using In = std::ranges::range_value_t<Range>;
  int64_t total = ProgressReporter::kUnknownTotal;
  if constexpr (std::ranges::sized_range<Range>) {
    total = static_cast<int64_t>(std::ranges::size(inputs));
  }
  return MakeStream<In, StreamResultT<F, In>>(
      executor, RangeSource<Range>(std::forward<Range>(inputs)), std::forward<F>(fn),
      std::move(options), total, runner);
}

}  // namespace sync_internal

// Stream (every overload): returns a lazily started ResultStream applying `fn` to each input on
// `executor`, with at most `options.max_in_flight` tasks in flight. Throws InvalidOptionError for
// max_in_flight outside [1, kMaxStreamInFlight], a negative timeout, or an `order` or `on_error`
// that is not one of the enumerators ("StreamOptions::order: unknown value 5; allowed: ...").
//
// Effective concurrency: when max_in_flight exceeds executor.max_concurrency() (and `fn` does
// not return futures), only max_concurrency() tasks run at once, and a stream whose max_in_flight
// was set (not the default) says so once, at creation, through StreamOptions::on_warning or on
// stderr:
//   concurry: warning: concurry::Stream: max_in_flight = 16 but the executor
//   (concurry::TbbExecutor, sized for CPU work) runs at most 2 tasks at once; for blocking I/O
//   use a ThreadPoolExecutor (futures/thread_pool_executor.h) with max_workers >= 16
// (one line). See ResultStream::effective_concurrency().
//
// Over an input range; an lvalue range must outlive the stream, an rvalue one is moved into it.
template <sync_internal::StreamInputRange Range, typename F>
ResultStream<std::ranges::range_value_t<Range>, StreamResultT<F, std::ranges::range_value_t<Range>>>
Stream(Executor& executor, Range&& inputs, F&& fn, StreamOptions options = {}) {
  using In = std::ranges::range_value_t<Range>;
  const sync_internal::StreamRunner runner = sync_internal::DefaultStreamRunner<F, In>(executor);
  return sync_internal::StreamOn(executor, std::forward<Range>(inputs), std::forward<F>(fn),
                                 std::move(options), runner);
}

// Over an iterator pair [first, last), which must stay valid while the stream runs.
template <std::input_iterator It, std::sentinel_for<It> Sentinel, typename F>
ResultStream<std::iter_value_t<It>, StreamResultT<F, std::iter_value_t<It>>> Stream(
    Executor& executor, It first, Sentinel last, F&& fn, StreamOptions options = {}) {
  return Stream(executor, std::ranges::subrange<It, Sentinel>(std::move(first), std::move(last)),
                std::forward<F>(fn), std::move(options));
}

// Over a pull source: `source()` returns the next input, or std::nullopt when there is no more
// (it is not called again after that). It is called by one thread at a time, outside the
// stream's lock; it is destroyed outside the lock once exhausted or stopped.
template <sync_internal::StreamPullSource Source, typename F>
ResultStream<sync_internal::PullValueT<Source>, StreamResultT<F, sync_internal::PullValueT<Source>>>
Stream(Executor& executor, Source&& source, F&& fn, StreamOptions options = {}) {
  using In = sync_internal::PullValueT<Source>;
  return sync_internal::MakeStream<In, StreamResultT<F, In>>(
      executor, std::forward<Source>(source), std::forward<F>(fn), std::move(options),
      ProgressReporter::kUnknownTotal, sync_internal::DefaultStreamRunner<F, In>(executor));
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_STREAM_H_

// Template machinery behind sync/stream.h: the core with the user function (StreamCoreImpl) and
// its construction (MakeStream). Internal: include sync/stream.h instead.
//
//   ResultStream<int, int> s = MakeStream<int, int>(executor, RangeSource<R>(range), fn, options,
//                                                   total, ExecutorRunner(executor));
//
// The pieces, one concept per file: stream_source.h (inputs and how fn is called),
// stream_runner.h (option checks, concurrency warnings, stop errors), stream_core.h (the state of
// a stream; its file comment explains the design), stream_tasks.h (starting, running and
// completing inputs) and stream_consumer.h (Next() and the consumer's wait).

#ifndef CONCURRY_SYNC_INTERNAL_STREAM_IMPL_H_
#define CONCURRY_SYNC_INTERNAL_STREAM_IMPL_H_

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "sync/internal/stream_consumer.h"
#include "sync/internal/stream_core.h"
#include "sync/internal/stream_runner.h"
#include "sync/internal/stream_source.h"
#include "sync/internal/stream_tasks.h"
#include "sync/outcome.h"

namespace concurry {
namespace sync_internal {

// The core with the user function.
template <typename In, typename R, typename F>
class StreamCoreImpl final : public StreamCore<In, R> {
  using Call = StreamCall<F, In>;
  using Raw = std::decay_t<typename Call::Raw>;

 public:
  template <typename G>
  StreamCoreImpl(Executor& executor, absl::AnyInvocable<std::optional<In>()> source, G&& fn,
                 StreamOptions options, int64_t known_total, int runner_concurrency,
                 bool batch_tasks)
      : StreamCore<In, R>(executor, std::move(source), std::move(options), known_total,
                          Call::kWithContext, runner_concurrency, batch_tasks),
        fn_(std::forward<G>(fn)) {}

  // Tasks reference fn_: drain them before it is destroyed.
  ~StreamCoreImpl() override { this->Shutdown(); }

 protected:
  void Invoke(uint32_t s) noexcept override {
    auto& entry = this->slot(s);
    const int64_t index = entry.index;
    std::optional<In> input;
    try {
      input.emplace(std::move(*entry.input));
    } catch (...) {
      // In's move threw: not the function's error but the stream's.
      entry.input.reset();
      this->Complete(s, std::current_exception());
      return;
    }
    entry.input.reset();
    if constexpr (futures_internal::kIsFuture<Raw>) {
      Raw inner;
      try {
        inner = CallFn(std::move(*input), index);
        if (!inner.valid()) {
          throw InvalidOptionError("Stream: the function returned an invalid Future");
        }
      } catch (...) {
        entry.item.emplace(index, Outcome<R>(std::current_exception()));
        this->Complete(s);
        return;
      }
      // Tracked before the callback is added: until the callback runs, the slot is ours. When
      // the stream is already stopping, cancelled at once (the callback then skips the slot).
      if (!this->TrackInner(s, inner)) this->CancelQuietly(inner);
      try {
        inner.AddDoneCallback([this, s](const Raw& done) {
          auto& completed = this->slot(s);
          try {
            // Cancelled by a stop (see CancelInnerFutures): skipped like a task that did not
            // start, so the consumer reports the stop's error, not this cancellation. The stop
            // happened-before the cancellation, so the hint is exact here.
            if (!done.Cancelled() || !this->StoppingHint()) {
              completed.item.emplace(completed.index, OutcomeOf(done));
            }
          } catch (...) {
            completed.item.emplace(completed.index, Outcome<R>(std::current_exception()));
          }
          this->Complete(s);
        });
      } catch (...) {
        // Out of memory: no callback was added, so nothing else will complete the slot.
        this->CancelQuietly(inner);
        this->Complete(s, std::current_exception());
      }
    } else {
      try {
        if constexpr (std::is_void_v<Raw>) {
          CallFn(std::move(*input), index);
          entry.item.emplace(index, Outcome<R>(std::in_place));
        } else if constexpr (std::is_same_v<Raw, absl::Status>) {
          absl::Status status = CallFn(std::move(*input), index);
          if (status.ok()) {
            entry.item.emplace(index, Outcome<R>(std::in_place));
          } else {
            entry.item.emplace(index, Outcome<R>(ExceptionFromStatus(std::move(status))));
          }
        } else if constexpr (futures_internal::kIsStatusOr<Raw>) {
          Raw result = CallFn(std::move(*input), index);
          if (result.ok()) {
            entry.item.emplace(index, Outcome<R>(std::in_place, *std::move(result)));
          } else {
            entry.item.emplace(index, Outcome<R>(ExceptionFromStatus(std::move(result).status())));
          }
        } else {
          entry.item.emplace(index, Outcome<R>(std::in_place, CallFn(std::move(*input), index)));
        }
      } catch (...) {
        entry.item.emplace(index, Outcome<R>(std::current_exception()));
      }
      // Destroyed before the completion, which may be the stream's last: an input whose
      // destructor blocks reports it to the drainer's observer, which needs the stream alive.
      input.reset();
      this->Complete(s);
    }
  }

 private:
  decltype(auto) CallFn(In&& input, int64_t index) {
    if constexpr (Call::kWithContext) {
      StreamContext<In> context(this, index);
      return std::invoke(fn_, std::move(input), context);
    } else {
      return std::invoke(fn_, std::move(input));
    }
  }

  F fn_;
};

// Whether a stream function returns a Future: then a task stays in flight after the executor
// ran it, so the executor's concurrency does not bound the tasks in flight.
template <typename F, typename In>
inline constexpr bool kStreamFnReturnsFuture =
    futures_internal::kIsFuture<std::decay_t<typename StreamCall<std::decay_t<F>, In>::Raw>>;

// The runner of Stream(executor, ...): the executor, unless `fn` returns futures (then unknown).
template <typename F, typename In>
StreamRunner DefaultStreamRunner(const Executor& executor) {
  if constexpr (kStreamFnReturnsFuture<F, In>) {
    return StreamRunner{};
  } else {
    StreamRunner runner = ExecutorRunner(executor);
    // Only where an input may run on any thread: batching moves inputs between tasks, and the
    // waiting consumer runs some on its own thread (a serial or set-up executor forbids both).
    runner.batch_tasks = executor.tasks_may_run_on_any_thread();
    return runner;
  }
}

template <typename In, typename R, typename F, typename Source>
ResultStream<In, R> MakeStream(Executor& executor, Source source, F&& fn, StreamOptions options,
                               int64_t total, const StreamRunner& runner) {
  ValidateStreamOptions(options);
  WarnIfOverConcurrency(options, runner);
  const int runner_concurrency = std::max(0, runner.max_concurrency);
  std::unique_ptr<StreamCore<In, R>> core =
      std::make_unique<StreamCoreImpl<In, R, std::decay_t<F>>>(
          executor, absl::AnyInvocable<std::optional<In>()>(std::move(source)), std::forward<F>(fn),
          std::move(options), total, runner_concurrency,
          runner.batch_tasks && !kStreamFnReturnsFuture<F, In>);
  return ResultStream<In, R>(std::move(core));
}

}  // namespace sync_internal
}  // namespace concurry

#endif  // CONCURRY_SYNC_INTERNAL_STREAM_IMPL_H_

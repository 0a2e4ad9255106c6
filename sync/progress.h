// Progress reporting for wait, gather and streams: a terminal bar on stderr (concurry's
// progress=True) and/or a user callback (concurry's callable progress).
//
//   concurry::ProgressReporter progress(options.progress, /*total=*/futures.size(), "Gathering");
//   for (...) progress.Advance();             // once per completed item (or Advance(n))
//   progress.Success();                       // or Failure("..."), Stop("Timeout")
//   // stderr: "[Done] Gathering: 100%|####################| 100/100 [00:02<00:00, 50.00 it/s]"
//
// A total that may still grow (a stream whose tasks add follow-up work) is set as a lower bound,
// `SetTotal(n, /*final=*/false)`: the line then shows counts and rate without a percentage or
// ETA, "Walking: 1234 done / 1300+ known so far [00:22, 56.20 it/s]", until the total is final.
//
// Components that take progress options hold a `ProgressOptions progress;` member in their own
// options struct and create one ProgressReporter per call. A reporter with neither a bar nor a
// callback is a no-op whose Advance costs one branch.

#ifndef CONCURRY_SYNC_PROGRESS_H_
#define CONCURRY_SYNC_PROGRESS_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/clock.h"

namespace concurry {

// How an operation reports progress. Plain options: fill with designated initializers,
// `{.enabled = true, .description = "Downloading"}`. The default reports nothing.
struct ProgressOptions {
  // How the bar is drawn (see `style`).
  enum class Style {
    // In place on a terminal (or with `force`), as lines elsewhere.
    kAuto,
    // Rewritten in place with '\r' every kRedrawInterval at most (a live bar).
    kInPlace,
    // One line ending in '\n' per redraw, every kLineInterval at most (logs, pipes, CI).
    kLines,
  };

  // Draws a progress bar (concurry's progress=True): a live bar redrawn in place when `stream`
  // is a terminal (isatty), periodic lines otherwise (logs, pipes, CI); see `style`.
  bool enabled = false;
  // The bar's label. Empty means the operation's default ("Waiting", "Gathering", "Streaming").
  std::string description = {};
  // Minimum number of completed items between two redraws (and two callback calls).
  // 0 means max(1, total / 100) for the bar (1 when the total is unknown) and 1 for the
  // callback. Negative values are rejected with InvalidOptionError.
  int64_t miniters = 0;
  // With Style::kAuto, redraws in place even when `stream` is not a terminal (a test capturing
  // the live bar), as Style::kInPlace does.
  bool force = false;
  // Called with (completed, total, elapsed) after every `miniters` completed items and once more
  // at the end if items, or the final total, were not yet reported (concurry's callable
  // progress). `total` is -1 while unknown or not final (a lower bound is never passed as a
  // total); a total that was final can become a lower bound again only through
  // ResultStream::Add, which adds work the stream could not foresee. Used whether or not `enabled`
  // is set. Calls are serialized and `completed` never
  // decreases; the callback must not call back into the reporter. An exception it throws propagates
  // from the reporter method that called it (the destructor prints it to stderr instead).
  std::function<void(int64_t completed, int64_t total, absl::Duration elapsed)> callback = {};
  // Where the bar is drawn. Null means stderr.
  FILE* stream = nullptr;
  // In place ('\r') or as lines; kAuto chooses in place when `stream` is a terminal or `force`
  // is set.
  Style style = Style::kAuto;
};

// Tracks the completed items of one operation and reports them as configured by ProgressOptions.
//
// The bar line is "<description>: <pct>%|<bar>| <n>/<total> [<elapsed><<eta>, <rate> it/s]".
// Without a percentage, bar or ETA (like tqdm without a total) when the total is unknown,
// "<description>: <n> [<elapsed>, <rate> it/s]", or only a lower bound, "<description>: <n> done /
// <total>+ known so far [<elapsed>, <rate> it/s]".
//
// Drawing. In place (Style::kInPlace, or kAuto on a terminal: a live bar) the line is rewritten
// with '\r' when at least `miniters` items completed since the last draw and at least
// kRedrawInterval passed on the clock, so at most about ten times a second. As lines (kLines, or
// kAuto on a file or pipe) each draw is a line of its own ending in '\n', at most every
// kLineInterval. Success(), Failure() and Stop() draw the final line, prefixed with the
// state ("[Done] ", "[Failed] ", "[Stopped] " or the given message), and end it with a newline;
// the first of them wins and later calls, and later Advance calls, are ignored. The destructor
// finishes an unfinished reporter the same way without a state prefix.
//
// Thread-safe: any thread may call any method; bar output and callback calls are serialized.
class ProgressReporter {
 public:
  // Pass as `total` when the number of items is not known in advance (streams).
  static constexpr int64_t kUnknownTotal = -1;
  // The minimum clock time between two redraws of the bar (the final line is always drawn).
  static constexpr absl::Duration kRedrawInterval = absl::Milliseconds(100);
  // The minimum clock time between two lines when drawing as lines (the final line always comes).
  static constexpr absl::Duration kLineInterval = absl::Seconds(1);
  // The width of the bar between the '|' characters, in characters.
  static constexpr int kBarWidth = 20;

  // Starts reporting an operation over `total` items (or kUnknownTotal; a lower bound when
  // `total_final` is false) and draws the initial line when drawing. `default_description` is
  // used when `options.description` is empty. `clock` times the rate, ETA and redraw throttling,
  // and must outlive the reporter. Throws InvalidOptionError for negative `options.miniters`, a
  // `total` below kUnknownTotal, or a `style` that is not an enumerator.
  ProgressReporter(const ProgressOptions& options, int64_t total,
                   absl::string_view default_description, Clock& clock = Clock::Real(),
                   bool total_final = true);
  ~ProgressReporter();

  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  // Returns whether this reporter draws a bar or calls a callback. When false every method is a
  // cheap no-op, so callers need not check.
  bool active() const { return drawing_ || has_callback_; }
  // Returns whether this reporter draws a bar (options.enabled).
  bool drawing() const { return drawing_; }
  // Returns whether the bar is rewritten in place (false: written as lines, or not drawn).
  bool in_place() const { return in_place_; }

  // Records `n` more completed items and redraws / calls back when due.
  void Advance(int64_t n = 1) ABSL_LOCKS_EXCLUDED(mu_) {
    if (active()) AdvanceSlow(n);
  }
  // Sets the total, for example once a stream's input is exhausted (kUnknownTotal to unset).
  // With `final` false the total is a lower bound: more items may still be discovered (follow-up
  // work), so no percentage or ETA is shown and the callback sees -1. Throws InvalidOptionError
  // for a `total` below kUnknownTotal.
  void SetTotal(int64_t total, bool final = true) ABSL_LOCKS_EXCLUDED(mu_);

  // Finishes successfully: draws the final line prefixed with "[<message>] ".
  void Success(absl::string_view message = "Done") ABSL_LOCKS_EXCLUDED(mu_);
  // Finishes with an error (concurry's failure()), prefixed with "[<message>] ".
  void Failure(absl::string_view message = "Failed") ABSL_LOCKS_EXCLUDED(mu_);
  // Finishes early, for example on a timeout: Stop("Timeout"), prefixed with "[<message>] ".
  void Stop(absl::string_view message = "Stopped") ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the number of items recorded so far.
  int64_t completed() const ABSL_LOCKS_EXCLUDED(mu_);

  // Returns the bar line for the given state, without '\r', padding or newline; `total_final`
  // false makes `total` a lower bound. Exposed for tests.
  static std::string FormatLine(absl::string_view description, int64_t completed, int64_t total,
                                absl::Duration elapsed, bool total_final = true);

 private:
  void AdvanceSlow(int64_t n) ABSL_LOCKS_EXCLUDED(mu_);
  void Finish(absl::string_view prefix) ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the current line over the previous one; `final` appends a newline.
  void DrawLocked(absl::Time now, absl::string_view prefix, bool final)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CallBackLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The total the callback sees: -1 while it is unknown or a lower bound.
  int64_t CallbackTotalLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return total_final_ ? total_ : kUnknownTotal;
  }

  Clock& clock_;
  const bool drawing_;
  const bool in_place_;
  const bool has_callback_;
  const std::string description_;
  FILE* const stream_;
  const int64_t option_miniters_;
  const std::function<void(int64_t, int64_t, absl::Duration)> callback_;
  const absl::Time start_;

  mutable absl::Mutex mu_;
  int64_t total_ ABSL_GUARDED_BY(mu_);
  // False while total_ is a lower bound.
  bool total_final_ ABSL_GUARDED_BY(mu_);
  int64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  // Redraw threshold for the bar: max(1, total / 100) unless set by the options.
  int64_t bar_miniters_ ABSL_GUARDED_BY(mu_);
  int64_t drawn_completed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time drawn_time_ ABSL_GUARDED_BY(mu_);
  size_t drawn_length_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reported_completed_ ABSL_GUARDED_BY(mu_) = 0;
  // The total passed to the callback's last call (before any: the initial one).
  int64_t reported_total_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace concurry

#endif  // CONCURRY_SYNC_PROGRESS_H_

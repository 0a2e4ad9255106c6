#include "sync/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "absl/numeric/int128.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "futures/errors.h"

namespace concurry {
namespace {

// Formats a duration like tqdm: "MM:SS", or "H:MM:SS" from one hour on.
std::string FormatInterval(absl::Duration d) {
  int64_t seconds = absl::ToInt64Seconds(d);
  if (seconds < 0) seconds = 0;
  const int64_t hours = seconds / 3600;
  const int64_t minutes = seconds / 60 % 60;
  seconds %= 60;
  if (hours > 0) return absl::StrFormat("%d:%02d:%02d", hours, minutes, seconds);
  return absl::StrFormat("%02d:%02d", minutes, seconds);
}

// Returns shown * scale / total, rounded down, for 0 <= shown <= total and total > 0, without
// overflowing int64 (totals up to INT64_MAX are allowed).
int ScaledShare(int64_t shown, int64_t total, int scale) {
  return static_cast<int>(absl::uint128(static_cast<uint64_t>(shown)) *
                          static_cast<uint64_t>(scale) / static_cast<uint64_t>(total));
}

int64_t DefaultBarMiniters(int64_t total) {
  return total > 0 ? std::max<int64_t>(1, total / 100) : 1;
}

bool IsTerminal(FILE* stream) {
  const int fd = fileno(stream);
  return fd >= 0 && isatty(fd) == 1;
}

}  // namespace

ProgressReporter::ProgressReporter(const ProgressOptions& options, int64_t total,
                                   absl::string_view default_description, Clock& clock,
                                   bool total_final)
    : clock_(clock),
      drawing_(options.enabled),
      // isatty() only for a bar: a reporter that draws nothing costs no system call.
      in_place_(
          options.enabled &&
          (options.style == ProgressOptions::Style::kInPlace ||
           (options.style == ProgressOptions::Style::kAuto &&
            (options.force || IsTerminal(options.stream != nullptr ? options.stream : stderr))))),
      has_callback_(static_cast<bool>(options.callback)),
      description_(options.description.empty() ? std::string(default_description)
                                               : options.description),
      stream_(options.stream != nullptr ? options.stream : stderr),
      option_miniters_(options.miniters),
      callback_(options.callback),
      start_(clock.Now()),
      total_(total),
      total_final_(total_final),
      bar_miniters_(options.miniters > 0 ? options.miniters : DefaultBarMiniters(total)),
      drawn_time_(start_),
      reported_total_(total_final ? total : kUnknownTotal) {
  if (options.miniters < 0) {
    throw InvalidOptionError(absl::StrCat(
        "ProgressOptions::miniters must be >= 0 (0 = automatic), got ", options.miniters));
  }
  if (total < kUnknownTotal) {
    throw InvalidOptionError(
        absl::StrCat("ProgressReporter: total must be >= 0 or kUnknownTotal (-1), got ", total));
  }
  if (options.style != ProgressOptions::Style::kAuto &&
      options.style != ProgressOptions::Style::kInPlace &&
      options.style != ProgressOptions::Style::kLines) {
    throw InvalidOptionError(absl::StrCat("ProgressOptions::style: unknown value ",
                                          static_cast<int>(options.style),
                                          "; allowed: kAuto, kInPlace, kLines"));
  }
  if (drawing_) {
    absl::MutexLock lock(&mu_);
    DrawLocked(start_, "", /*final=*/false);
  }
}

ProgressReporter::~ProgressReporter() {
  try {
    Finish("");
  } catch (...) {
    absl::FPrintF(stderr, "concurry::ProgressReporter: the progress callback threw %s: %s\n",
                  ExceptionTypeName(std::current_exception()),
                  ExceptionMessage(std::current_exception()));
  }
}

void ProgressReporter::AdvanceSlow(int64_t n) {
  if (n < 0) {
    throw InvalidOptionError(absl::StrCat("ProgressReporter::Advance: n must be >= 0, got ", n));
  }
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  // Saturates: a count past INT64_MAX stays there instead of overflowing.
  completed_ = n > std::numeric_limits<int64_t>::max() - completed_
                   ? std::numeric_limits<int64_t>::max()
                   : completed_ + n;
  const bool callback_due =
      has_callback_ && completed_ - reported_completed_ >= std::max<int64_t>(1, option_miniters_);
  const bool draw_due = drawing_ && completed_ - drawn_completed_ >= bar_miniters_;
  if (!callback_due && !draw_due) return;
  const absl::Time now = clock_.Now();
  if (draw_due && now - drawn_time_ >= (in_place_ ? kRedrawInterval : kLineInterval)) {
    DrawLocked(now, "", /*final=*/false);
  }
  if (callback_due) CallBackLocked(now);
}

void ProgressReporter::SetTotal(int64_t total, bool final) {
  if (total < kUnknownTotal) {
    throw InvalidOptionError(absl::StrCat(
        "ProgressReporter::SetTotal: total must be >= 0 or kUnknownTotal (-1), got ", total));
  }
  absl::MutexLock lock(&mu_);
  total_ = total;
  total_final_ = final;
  if (option_miniters_ == 0) bar_miniters_ = DefaultBarMiniters(total);
}

void ProgressReporter::Success(absl::string_view message) {
  Finish(absl::StrCat("[", message, "] "));
}

void ProgressReporter::Failure(absl::string_view message) {
  Finish(absl::StrCat("[", message, "] "));
}

void ProgressReporter::Stop(absl::string_view message) { Finish(absl::StrCat("[", message, "] ")); }

int64_t ProgressReporter::completed() const {
  absl::MutexLock lock(&mu_);
  return completed_;
}

void ProgressReporter::Finish(absl::string_view prefix) {
  if (!active()) return;
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  const absl::Time now = clock_.Now();
  if (drawing_) DrawLocked(now, prefix, /*final=*/true);
  // Also when only the total changed (it became final), so the callback sees the final total.
  if (has_callback_ &&
      (completed_ != reported_completed_ || CallbackTotalLocked() != reported_total_)) {
    CallBackLocked(now);
  }
}

std::string ProgressReporter::FormatLine(absl::string_view description, int64_t completed,
                                         int64_t total, absl::Duration elapsed, bool total_final) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  const double rate = seconds > 0 ? static_cast<double>(completed) / seconds : 0;
  const std::string rate_text = seconds > 0 ? absl::StrFormat("%.2f", rate) : "?";
  if (total < 0) {
    return absl::StrFormat("%s: %d [%s, %s it/s]", description, completed, FormatInterval(elapsed),
                           rate_text);
  }
  if (!total_final) {
    // A lower bound (more work may be discovered): a percentage or ETA would be false.
    return absl::StrFormat("%s: %d done / %d+ known so far [%s, %s it/s]", description, completed,
                           std::max(completed, total), FormatInterval(elapsed), rate_text);
  }
  const int64_t shown = std::min(completed, total);
  const int percent = total > 0 ? ScaledShare(shown, total, 100) : 100;
  const int filled = total > 0 ? ScaledShare(shown, total, kBarWidth) : kBarWidth;
  std::string bar(filled, '#');
  bar.resize(kBarWidth, ' ');
  std::string eta = "?";
  if (shown >= total) {
    eta = FormatInterval(absl::ZeroDuration());
  } else if (rate > 0) {
    eta = FormatInterval(absl::Seconds(static_cast<double>(total - shown) / rate));
  }
  return absl::StrFormat("%s: %3d%%|%s| %d/%d [%s<%s, %s it/s]", description, percent, bar,
                         completed, total, FormatInterval(elapsed), eta, rate_text);
}

void ProgressReporter::DrawLocked(absl::Time now, absl::string_view prefix, bool final) {
  std::string line = absl::StrCat(
      prefix, FormatLine(description_, completed_, total_, now - start_, total_final_));
  if (!in_place_) {
    absl::FPrintF(stream_, "%s\n", line);
    std::fflush(stream_);
    drawn_completed_ = completed_;
    drawn_time_ = now;
    return;
  }
  const size_t length = line.size();
  // Blank out what is left of a longer previous line.
  if (length < drawn_length_) line.append(drawn_length_ - length, ' ');
  absl::FPrintF(stream_, "\r%s%s", line, final ? "\n" : "");
  std::fflush(stream_);
  drawn_length_ = length;
  drawn_completed_ = completed_;
  drawn_time_ = now;
}

void ProgressReporter::CallBackLocked(absl::Time now) {
  reported_completed_ = completed_;
  reported_total_ = CallbackTotalLocked();
  callback_(completed_, reported_total_, now - start_);
}

}  // namespace concurry

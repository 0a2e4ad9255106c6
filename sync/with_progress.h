// WithProgress: a progress bar over any range, counted as its items are consumed (concurry's
// ProgressBar(iterable)).
//
//   for (const Row& row : concurry::WithProgress(rows, {.description = "Saving"})) Save(row);
//   // stderr: "[Done] Saving: 100%|####################| 1000/1000 [00:04<00:00, 250.00 it/s]"
//
// The total is the range's size when it is a sized range (containers, sized views), unknown
// otherwise (generators, filtered views): then the bar shows the count and rate. Reaching the end
// finishes the bar with "[Done]"; leaving the loop early finishes it with "[Stopped]", or
// "[Failed]" when an exception leaves the loop.

#ifndef CONCURRY_SYNC_WITH_PROGRESS_H_
#define CONCURRY_SYNC_WITH_PROGRESS_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/time/time.h"
#include "futures/clock.h"
#include "sync/progress.h"

namespace concurry {

// Options of WithProgress. Plain struct: `{.description = "Saving"}`. Unlike ProgressOptions, the
// bar is on by default: wrapping a range is the request for one.
struct WithProgressOptions {
  // The bar's label.
  std::string description = "Processing";
  // Draws the bar. False: only the callback, if any.
  bool enabled = true;
  // As ProgressOptions: redraw threshold (0: automatic, >= 0), in place on a non-terminal, the
  // callback (completed, total, elapsed), the output stream (null: stderr) and the style (a live
  // bar on a terminal, periodic lines elsewhere).
  int64_t miniters = 0;
  bool force = false;
  std::function<void(int64_t completed, int64_t total, absl::Duration elapsed)> callback = {};
  FILE* stream = nullptr;
  ProgressOptions::Style style = ProgressOptions::Style::kAuto;
  // Times the rate and ETA; null means Clock::Real(). Must outlive the iteration.
  Clock* clock = nullptr;
};

// A range that reports its consumption to a ProgressReporter. Made by WithProgress().
//
// The bar starts at begin() (call it once, as a range-for does). An item counts once the iterator
// moves past it (the loop body finished with it); the bar finishes at the end, or when the
// ProgressRange is destroyed before it (see the file comment). Holds the wrapped range by
// reference when given an lvalue (it must outlive the loop), by value when given an rvalue.
//
// Not thread-safe; confine to one thread (the reporter's callback runs on it).
template <typename Range>
class ProgressRange {
  using Stored = std::remove_reference_t<Range>;
  using BaseIterator = std::ranges::iterator_t<Stored>;
  using BaseSentinel = std::ranges::sentinel_t<Stored>;

 public:
  class iterator {
   public:
    using iterator_concept = std::input_iterator_tag;
    using iterator_category = std::input_iterator_tag;
    using value_type = std::ranges::range_value_t<Stored>;
    using difference_type = std::ranges::range_difference_t<Stored>;
    using reference = std::ranges::range_reference_t<Stored>;

    iterator() = default;
    reference operator*() const { return *base_; }
    iterator& operator++() {
      ++base_;
      owner_->Consumed(base_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.AtEnd(); }

   private:
    friend class ProgressRange;
    iterator(ProgressRange* owner, BaseIterator base) : owner_(owner), base_(std::move(base)) {}
    bool AtEnd() const { return base_ == *owner_->end_; }

    ProgressRange* owner_ = nullptr;
    BaseIterator base_{};
  };

  ProgressRange(Range&& range, WithProgressOptions options)
      : options_(std::move(options)), exceptions_(std::uncaught_exceptions()) {
    if constexpr (std::is_lvalue_reference_v<Range>) {
      range_ = &range;
    } else {
      owned_ = std::make_unique<Stored>(std::move(range));
      range_ = owned_.get();
    }
  }
  ProgressRange(const ProgressRange&) = delete;
  ProgressRange& operator=(const ProgressRange&) = delete;

  // Finishes an unfinished bar: "[Failed]" while an exception unwinds (thrown after the range
  // was made), else "[Stopped]".
  ~ProgressRange() {
    if (progress_ == nullptr || finished_) return;
    if (std::uncaught_exceptions() > exceptions_) {
      progress_->Failure();
    } else {
      progress_->Stop();
    }
  }

  // Starts the bar (its clock starts now) and returns the first position. Throws
  // InvalidOptionError for a negative `miniters` or an unknown `style`.
  iterator begin() {
    int64_t total = ProgressReporter::kUnknownTotal;
    if constexpr (std::ranges::sized_range<Stored>) {
      total = static_cast<int64_t>(std::ranges::size(*range_));
    }
    progress_ = std::make_unique<ProgressReporter>(
        ProgressOptions{.enabled = options_.enabled,
                        .description = options_.description,
                        .miniters = options_.miniters,
                        .force = options_.force,
                        .callback = options_.callback,
                        .stream = options_.stream,
                        .style = options_.style},
        total, "Processing", options_.clock != nullptr ? *options_.clock : Clock::Real());
    end_.emplace(std::ranges::end(*range_));
    iterator it(this, std::ranges::begin(*range_));
    Consumed(it.base_, /*advance=*/false);
    return it;
  }
  std::default_sentinel_t end() const { return std::default_sentinel; }

  // Returns the items counted so far (0 before begin()).
  int64_t completed() const { return progress_ == nullptr ? 0 : progress_->completed(); }

 private:
  // Counts the item just left (unless at begin()) and finishes the bar at the end.
  void Consumed(const BaseIterator& position, bool advance = true) {
    if (advance) progress_->Advance();
    if (position == *end_) {
      finished_ = true;
      progress_->Success();
    }
  }

  WithProgressOptions options_;
  const int exceptions_;
  std::unique_ptr<Stored> owned_;
  Stored* range_ = nullptr;
  std::optional<BaseSentinel> end_;
  std::unique_ptr<ProgressReporter> progress_;
  bool finished_ = false;
};

// Returns `range` wrapped to draw a progress bar as its items are consumed (see the file comment
// and ProgressRange). An lvalue range must outlive the loop; an rvalue one is moved in.
template <std::ranges::input_range Range>
ProgressRange<Range> WithProgress(Range&& range, WithProgressOptions options = {}) {
  return ProgressRange<Range>(std::forward<Range>(range), std::move(options));
}

}  // namespace concurry

#endif  // CONCURRY_SYNC_WITH_PROGRESS_H_

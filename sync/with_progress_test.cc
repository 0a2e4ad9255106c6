#include "sync/with_progress.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "absl/time/time.h"
#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_clock.h"
#include "testing/mem_stream.h"

namespace concurry {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

using testkit::MemStream;

using Call = std::tuple<int64_t, int64_t, absl::Duration>;

TEST(WithProgressTest, CountsItemsAsTheyAreConsumedWithTheSizeAsTotal) {
  testkit::FakeClock clock;
  MemStream out;
  std::vector<Call> calls;
  std::vector<int> values = {1, 2, 3, 4};
  std::vector<int> seen;
  for (int& v : WithProgress(values, {.description = "Saving",
                                     .force = true,
                                     .callback =
                                          [&](int64_t n, int64_t total, absl::Duration elapsed) {
                                            calls.emplace_back(n, total, elapsed);
                                          },
                                     .stream = out.file(),
                                     .style = ProgressOptions::Style::kLines,
                                     .clock = &clock})) {
    seen.push_back(v);
    v *= 10;  // The wrapped range's own references.
    clock.Advance(absl::Seconds(1));
  }
  EXPECT_THAT(seen, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(values, ElementsAre(10, 20, 30, 40));
  EXPECT_THAT(calls, ElementsAre(Call{1, 4, absl::Seconds(1)}, Call{2, 4, absl::Seconds(2)},
                                 Call{3, 4, absl::Seconds(3)}, Call{4, 4, absl::Seconds(4)}));
  // Lines at most every second (kLineInterval), then the final state.
  EXPECT_EQ(out.Contents(),
            "Saving:   0%|                    | 0/4 [00:00<?, ? it/s]\n"
            "Saving:  25%|#####               | 1/4 [00:01<00:03, 1.00 it/s]\n"
            "Saving:  50%|##########          | 2/4 [00:02<00:02, 1.00 it/s]\n"
            "Saving:  75%|###############     | 3/4 [00:03<00:01, 1.00 it/s]\n"
            "Saving: 100%|####################| 4/4 [00:04<00:00, 1.00 it/s]\n"
            "[Done] Saving: 100%|####################| 4/4 [00:04<00:00, 1.00 it/s]\n");
}

TEST(WithProgressTest, AnUnsizedRangeHasNoTotal) {
  testkit::FakeClock clock;
  std::vector<Call> calls;
  auto evens = std::views::iota(0, 10) | std::views::filter([](int x) { return x % 2 == 0; });
  int sum = 0;
  for (int x : WithProgress(evens, {.callback =
                                        [&](int64_t n, int64_t total, absl::Duration elapsed) {
                                          calls.emplace_back(n, total, elapsed);
                                        },
                                   .clock = &clock})) {
    sum += x;
  }
  EXPECT_EQ(sum, 20);
  ASSERT_EQ(calls.size(), 5u);
  EXPECT_EQ(calls.back(), (Call{5, -1, absl::ZeroDuration()}));
}

TEST(WithProgressTest, OwnsAnRvalueRangeAndFinishesAnEmptyOneAtOnce) {
  testkit::FakeClock clock;
  MemStream out;
  int count = 0;
  for (const std::string& s : WithProgress(std::vector<std::string>{"a", "b"}, {.clock = &clock})) {
    EXPECT_FALSE(s.empty());
    ++count;
  }
  EXPECT_EQ(count, 2);
  for (int x : WithProgress(std::list<int>{}, {.description = "Empty",
                                              .force = true,
                                              .stream = out.file(),
                                              .style = ProgressOptions::Style::kLines,
                                              .clock = &clock})) {
    ADD_FAILURE() << x;
  }
  EXPECT_EQ(out.Contents(),
            "Empty: 100%|####################| 0/0 [00:00<00:00, ? it/s]\n"
            "[Done] Empty: 100%|####################| 0/0 [00:00<00:00, ? it/s]\n");
}

TEST(WithProgressTest, StopsOnBreakAndFailsOnException) {
  testkit::FakeClock clock;
  MemStream out;
  std::vector<int> values = {1, 2, 3, 4};
  const WithProgressOptions options = {.description = "W",
                                       .miniters = 1,
                                       .force = true,
                                       .stream = out.file(),
                                       .style = ProgressOptions::Style::kLines,
                                       .clock = &clock};
  for (int v : WithProgress(values, options)) {
    if (v == 3) break;  // 1 and 2 were consumed.
  }
  EXPECT_THAT(
      out.Contents(),
      ::testing::EndsWith("[Stopped] W:  50%|##########          | 2/4 [00:00<?, ? it/s]\n"));
  MemStream failed_out;
  WithProgressOptions failing = options;
  failing.stream = failed_out.file();
  try {
    for (int v : WithProgress(values, failing)) {
      if (v == 2) throw std::runtime_error("2 is bad");
    }
  } catch (const std::runtime_error&) {
  }
  EXPECT_THAT(
      failed_out.Contents(),
      ::testing::EndsWith("[Failed] W:  25%|#####               | 1/4 [00:00<?, ? it/s]\n"));
}

TEST(WithProgressTest, DisabledDrawsNothing) {
  MemStream out;
  std::vector<int> values = {1, 2};
  auto wrapped = WithProgress(values, {.enabled = false, .force = true, .stream = out.file()});
  int count = 0;
  for (int v : wrapped) count += v;
  EXPECT_EQ(count, 3);
  EXPECT_EQ(wrapped.completed(), 0);  // Inactive: nothing counted.
  EXPECT_THAT(out.Contents(), IsEmpty());
}

TEST(WithProgressTest, RejectsNegativeMiniters) {
  std::vector<int> values = {1};
  auto wrapped = WithProgress(values, {.miniters = -1});
  EXPECT_THROW(wrapped.begin(), InvalidOptionError);
}

TEST(WithProgressTest, IsAnInputRange) {
  using Wrapped = ProgressRange<std::vector<int>&>;
  static_assert(std::input_iterator<Wrapped::iterator>);
  static_assert(std::ranges::input_range<Wrapped>);
}

}  // namespace
}  // namespace concurry

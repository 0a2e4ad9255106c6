#include "sync/progress.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
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

constexpr ProgressOptions::Style kInPlace = ProgressOptions::Style::kInPlace;
constexpr ProgressOptions::Style kLines = ProgressOptions::Style::kLines;

TEST(ProgressFormatTest, FormatsKnownTotalWithPercentBarRateAndEta) {
  EXPECT_EQ(ProgressReporter::FormatLine("Gathering", 42, 100, absl::Milliseconds(1200)),
            "Gathering:  42%|########            | 42/100 [00:01<00:01, 35.00 it/s]");
  EXPECT_EQ(ProgressReporter::FormatLine("Waiting", 100, 100, absl::Seconds(4)),
            "Waiting: 100%|####################| 100/100 [00:04<00:00, 25.00 it/s]");
}

TEST(ProgressFormatTest, FormatsUnknownRateAndEtaAtTimeZero) {
  EXPECT_EQ(ProgressReporter::FormatLine("Waiting", 0, 10, absl::ZeroDuration()),
            "Waiting:   0%|                    | 0/10 [00:00<?, ? it/s]");
}

TEST(ProgressFormatTest, FormatsUnknownTotalWithoutBar) {
  EXPECT_EQ(ProgressReporter::FormatLine("Streaming", 42, ProgressReporter::kUnknownTotal,
                                         absl::Seconds(2)),
            "Streaming: 42 [00:02, 21.00 it/s]");
}

TEST(ProgressFormatTest, FormatsHoursAndEmptyTotal) {
  EXPECT_EQ(ProgressReporter::FormatLine("W", 1, 2, absl::Seconds(3725)),
            "W:  50%|##########          | 1/2 [1:02:05<1:02:05, 0.00 it/s]");
  EXPECT_EQ(ProgressReporter::FormatLine("W", 0, 0, absl::Seconds(1)),
            "W: 100%|####################| 0/0 [00:01<00:00, 0.00 it/s]");
}

TEST(ProgressFormatTest, HugeTotalsDoNotOverflow) {
  // shown * 100 and shown * kBarWidth overflowed int64 for totals above INT64_MAX / 100.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(ProgressReporter::FormatLine("W", kMax - 1, kMax, absl::ZeroDuration()),
              ::testing::StartsWith("W:  99%|################### | 9223372036854775806/"
                                    "9223372036854775807 [00:00<?, ? it/s]"));
  EXPECT_THAT(ProgressReporter::FormatLine("W", kMax / 2, kMax, absl::ZeroDuration()),
              ::testing::StartsWith("W:  49%|#########           |"));
  EXPECT_THAT(ProgressReporter::FormatLine("W", kMax, kMax, absl::InfiniteDuration()),
              ::testing::StartsWith("W: 100%|####################|"));
}

TEST(ProgressReporterTest, TheCountSaturatesInsteadOfOverflowing) {
  testkit::FakeClock clock;
  std::vector<int64_t> seen;
  ProgressReporter progress(
      {.callback = [&](int64_t completed, int64_t, absl::Duration) { seen.push_back(completed); }},
      ProgressReporter::kUnknownTotal, "T", clock);
  progress.Advance(std::numeric_limits<int64_t>::max() - 1);
  progress.Advance(5);
  progress.Advance(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(progress.completed(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(seen, (std::vector<int64_t>{std::numeric_limits<int64_t>::max() - 1,
                                        std::numeric_limits<int64_t>::max()}));
}

TEST(ProgressReporterTest, DisabledReporterIsInactiveAndWritesNothing) {
  MemStream out;
  testkit::FakeClock clock;
  {
    ProgressReporter progress({.stream = out.file()}, 10, "Waiting", clock);
    EXPECT_FALSE(progress.active());
    progress.Advance(3);
    progress.Success();
  }
  EXPECT_THAT(out.Contents(), IsEmpty());
}

TEST(ProgressReporterTest, DrawsInitialLineAndFinalStateLine) {
  MemStream out;
  testkit::FakeClock clock;
  ProgressReporter progress({.enabled = true, .force = true, .stream = out.file()}, 4, "Gathering",
                            clock);
  EXPECT_TRUE(progress.drawing());
  const std::string initial = "Gathering:   0%|                    | 0/4 [00:00<?, ? it/s]";
  EXPECT_EQ(out.Contents(), "\r" + initial);
  clock.Advance(absl::Seconds(2));
  progress.Advance(4);  // Due by count and time: redrawn.
  const std::string full = "Gathering: 100%|####################| 4/4 [00:02<00:00, 2.00 it/s]";
  EXPECT_EQ(out.Contents(), "\r" + initial + "\r" + full);
  progress.Success();
  EXPECT_EQ(out.Contents(), "\r" + initial + "\r" + full + "\r[Done] " + full + "\n");
  progress.Failure();  // The first final state wins.
  progress.Advance();
  EXPECT_EQ(progress.completed(), 4);
  EXPECT_EQ(out.Contents(), "\r" + initial + "\r" + full + "\r[Done] " + full + "\n");
}

TEST(ProgressReporterTest, RedrawsAtMostEveryMinitersItemsAndEveryRedrawInterval) {
  MemStream out;
  testkit::FakeClock clock;
  // total 1000 → miniters = 10.
  ProgressReporter progress({.enabled = true, .force = true, .stream = out.file()}, 1000, "T",
                            clock);
  std::string expected = "\r" + ProgressReporter::FormatLine("T", 0, 1000, absl::ZeroDuration());
  ASSERT_EQ(out.Contents(), expected);

  progress.Advance(5);
  progress.Advance(5);  // 10 items, but no time has passed.
  EXPECT_EQ(out.Contents(), expected);

  clock.Advance(absl::Milliseconds(99));
  progress.Advance(1);  // 11 items, 99 ms: still too early.
  EXPECT_EQ(out.Contents(), expected);

  clock.Advance(absl::Milliseconds(1));
  progress.Advance(0);  // 11 items, 100 ms: due.
  const std::string line11 = ProgressReporter::FormatLine("T", 11, 1000, absl::Milliseconds(100));
  expected += "\r" + line11;
  EXPECT_EQ(out.Contents(), expected);

  clock.Advance(absl::Seconds(1));
  progress.Advance(9);  // 9 items since the last draw: below miniters.
  EXPECT_EQ(out.Contents(), expected);
  progress.Advance(1);
  const std::string line = ProgressReporter::FormatLine("T", 21, 1000, absl::Milliseconds(1100));
  // "19.09 it/s" is one character shorter than "110.00 it/s": padded with one space.
  ASSERT_EQ(line.size() + 1, line11.size());
  expected += "\r" + line + " ";
  EXPECT_EQ(out.Contents(), expected);

  progress.Stop("Timeout");
  expected += "\r[Timeout] " + line + "\n";
  EXPECT_EQ(out.Contents(), expected);
}

TEST(ProgressReporterTest, PadsShorterLinesAndFinishesOnDestruction) {
  MemStream out;
  testkit::FakeClock clock;
  const std::string long_line =
      ProgressReporter::FormatLine("S", 0, ProgressReporter::kUnknownTotal, absl::ZeroDuration());
  {
    ProgressReporter progress({.enabled = true, .miniters = 1, .force = true, .stream = out.file()},
                              ProgressReporter::kUnknownTotal, "S", clock);
    clock.Advance(absl::Seconds(1));
    progress.Advance();
  }
  const std::string short_line =
      ProgressReporter::FormatLine("S", 1, ProgressReporter::kUnknownTotal, absl::Seconds(1));
  ASSERT_EQ(long_line, "S: 0 [00:00, ? it/s]");
  ASSERT_EQ(short_line, "S: 1 [00:01, 1.00 it/s]");
  EXPECT_EQ(out.Contents(), "\r" + long_line + "\r" + short_line + "\r" + short_line + "\n");
}

TEST(ProgressReporterTest, PadsOverTheRestOfALongerLine) {
  MemStream out;
  testkit::FakeClock clock;
  ProgressReporter progress({.enabled = true, .force = true, .stream = out.file()}, 10, "S", clock);
  progress.Failure("A much longer failure message");
  const std::string first = ProgressReporter::FormatLine("S", 0, 10, absl::ZeroDuration());
  const std::string last = "[A much longer failure message] " + first;
  EXPECT_EQ(out.Contents(), "\r" + first + "\r" + last + "\n");
}

TEST(ProgressReporterTest, UsesOptionDescriptionOverDefault) {
  MemStream out;
  testkit::FakeClock clock;
  ProgressReporter progress({.enabled = true,
                             .description = "Downloading",
                             .force = true,
                             .stream = out.file(),
                             .style = kInPlace},
                            1, "Waiting", clock);
  EXPECT_EQ(out.Contents(),
            "\r" + ProgressReporter::FormatLine("Downloading", 0, 1, absl::ZeroDuration()));
}

TEST(ProgressReporterTest, SetTotalChangesTheLineAndDefaultMiniters) {
  MemStream out;
  testkit::FakeClock clock;
  ProgressReporter progress({.enabled = true, .force = true, .stream = out.file()},
                            ProgressReporter::kUnknownTotal, "S", clock);
  progress.SetTotal(400);  // miniters becomes 4.
  clock.Advance(absl::Seconds(1));
  progress.Advance(3);
  const std::string before = out.Contents();
  progress.Advance(1);
  EXPECT_EQ(out.Contents(),
            before + "\r" + ProgressReporter::FormatLine("S", 4, 400, absl::Seconds(1)));
}

TEST(ProgressFormatTest, FormatsALowerBoundWithoutPercentOrEta) {
  EXPECT_EQ(ProgressReporter::FormatLine("Walking", 1234, 1300, absl::Seconds(22),
                                         /*total_final=*/false),
            "Walking: 1234 done / 1300+ known so far [00:22, 56.09 it/s]");
  // Never below what is done.
  EXPECT_EQ(ProgressReporter::FormatLine("W", 7, 5, absl::Seconds(1), /*total_final=*/false),
            "W: 7 done / 7+ known so far [00:01, 7.00 it/s]");
  EXPECT_EQ(ProgressReporter::FormatLine("W", 0, 0, absl::ZeroDuration(), /*total_final=*/false),
            "W: 0 done / 0+ known so far [00:00, ? it/s]");
}

// A walk that discovers its pages as it goes: the bar shows counts and rate while the total may
// still grow, and the percentage and ETA only once it is final.
TEST(ProgressReporterTest, AGrowingTotalShowsNoPercentOrEtaUntilFinal) {
  MemStream out;
  testkit::FakeClock clock;
  std::vector<Call> calls;
  ProgressReporter progress(
      {.enabled = true,
       .miniters = 1,
       .force = true,
       .callback = [&](int64_t n, int64_t total,
                       absl::Duration elapsed) { calls.emplace_back(n, total, elapsed); },
       .stream = out.file(),
       .style = kInPlace},
      /*total=*/1, "Walking", clock, /*total_final=*/false);
  std::string expected = "\rWalking: 0 done / 1+ known so far [00:00, ? it/s]";
  ASSERT_EQ(out.Contents(), expected);
  clock.Advance(absl::Seconds(1));
  progress.SetTotal(3, /*final=*/false);
  progress.Advance();
  expected += "\rWalking: 1 done / 3+ known so far [00:01, 1.00 it/s]";
  EXPECT_EQ(out.Contents(), expected);
  clock.Advance(absl::Seconds(1));
  progress.SetTotal(4, /*final=*/false);
  progress.Advance();
  expected += "\rWalking: 2 done / 4+ known so far [00:02, 1.00 it/s]";
  EXPECT_EQ(out.Contents(), expected);
  clock.Advance(absl::Seconds(2));
  progress.SetTotal(5);  // Nothing more can be discovered.
  progress.Advance();
  // "3/5 [00:04<00:02, 0.75 it/s]" is shorter than the previous line: padded.
  const std::string final_line = "Walking:  60%|############        | 3/5 [00:04<00:02, 0.75 it/s]";
  expected += "\r" + final_line;
  EXPECT_EQ(out.Contents(), expected);
  clock.Advance(absl::Seconds(1));
  progress.Advance(2);
  progress.Success();
  expected += "\rWalking: 100%|####################| 5/5 [00:05<00:00, 1.00 it/s]" +
              std::string(
                  "\r[Done] Walking: 100%|####################| 5/5 [00:05<00:00, 1.00 "
                  "it/s]\n");
  EXPECT_EQ(out.Contents(), expected);
  // The callback never sees a lower bound as a total.
  EXPECT_THAT(calls, ElementsAre(Call{1, -1, absl::Seconds(1)}, Call{2, -1, absl::Seconds(2)},
                                 Call{3, 5, absl::Seconds(4)}, Call{5, 5, absl::Seconds(5)}));
}

TEST(ProgressReporterTest, TheCallbackSeesTheTotalOnceItBecomesFinal) {
  testkit::FakeClock clock;
  std::vector<Call> calls;
  ProgressReporter progress(
      {.callback = [&](int64_t n, int64_t total,
                       absl::Duration elapsed) { calls.emplace_back(n, total, elapsed); }},
      2, "Walking", clock, /*total_final=*/false);
  progress.Advance(2);
  progress.SetTotal(2);  // Final, with nothing left to count.
  progress.Success();
  EXPECT_THAT(calls,
              ElementsAre(Call{2, -1, absl::ZeroDuration()}, Call{2, 2, absl::ZeroDuration()}));
}

TEST(ProgressReporterTest, WritesPeriodicLinesWhenNotInPlace) {
  MemStream out;
  testkit::FakeClock clock;
  ProgressReporter progress(
      {.enabled = true, .miniters = 1, .force = true, .stream = out.file(), .style = kLines}, 10,
      "Saving", clock);
  EXPECT_FALSE(progress.in_place());
  std::string expected = "Saving:   0%|                    | 0/10 [00:00<?, ? it/s]\n";
  ASSERT_EQ(out.Contents(), expected);
  clock.Advance(absl::Milliseconds(500));
  progress.Advance();  // Due by count, but lines come at most every kLineInterval.
  EXPECT_EQ(out.Contents(), expected);
  clock.Advance(absl::Milliseconds(500));
  progress.Advance();
  expected += "Saving:  20%|####                | 2/10 [00:01<00:04, 2.00 it/s]\n";
  EXPECT_EQ(out.Contents(), expected);
  progress.Stop();
  expected += "[Stopped] Saving:  20%|####                | 2/10 [00:01<00:04, 2.00 it/s]\n";
  EXPECT_EQ(out.Contents(), expected);
}

// A file or pipe (logs, CI) gets periodic lines rather than '\r' redraws.
TEST(ProgressReporterTest, AutoStyleWritesLinesToANonTerminal) {
  MemStream out;
  testkit::FakeClock clock;
  {
    ProgressReporter progress({.enabled = true, .stream = out.file()}, 2, "S", clock);
    EXPECT_TRUE(progress.drawing());
    EXPECT_FALSE(progress.in_place());
    progress.Advance(2);
  }
  EXPECT_EQ(out.Contents(),
            "S:   0%|                    | 0/2 [00:00<?, ? it/s]\n"
            "S: 100%|####################| 2/2 [00:00<00:00, ? it/s]\n");
}

TEST(ProgressReporterTest, ForceRedrawsInPlaceOnANonTerminal) {
  MemStream out;
  testkit::FakeClock clock;
  ProgressReporter progress({.enabled = true, .force = true, .stream = out.file()}, 2, "S", clock);
  EXPECT_TRUE(progress.in_place());
  ProgressReporter lines({.enabled = true, .force = true, .stream = out.file(), .style = kLines}, 2,
                         "S", clock);
  EXPECT_FALSE(lines.in_place());  // An explicit style wins.
}

TEST(ProgressReporterTest, AutoStyleRedrawsInPlaceOnATerminal) {
  // A pseudo-terminal stands in for an interactive stderr.
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  ASSERT_GE(master, 0);
  ASSERT_EQ(grantpt(master), 0);
  ASSERT_EQ(unlockpt(master), 0);
  FILE* terminal = std::fopen(ptsname(master), "w");
  ASSERT_NE(terminal, nullptr);
  testkit::FakeClock clock;
  {
    ProgressReporter progress({.enabled = true, .stream = terminal}, 2, "S", clock);
    EXPECT_TRUE(progress.drawing());
    EXPECT_TRUE(progress.in_place());
  }
  std::fclose(terminal);
  close(master);
}

TEST(ProgressReporterTest, RejectsAnUnknownStyle) {
  try {
    ProgressReporter progress({.style = static_cast<ProgressOptions::Style>(7)}, 1, "S");
    FAIL() << "no error";
  } catch (const InvalidOptionError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(
                              "ProgressOptions::style: unknown value 7; allowed: kAuto, kInPlace, "
                              "kLines"));
  }
}

TEST(ProgressReporterTest, CallbackRunsOnEveryAdvanceByDefault) {
  testkit::FakeClock clock;
  std::vector<Call> calls;
  ProgressReporter progress(
      {.callback = [&](int64_t n, int64_t total,
                       absl::Duration elapsed) { calls.emplace_back(n, total, elapsed); }},
      3, "Waiting", clock);
  EXPECT_TRUE(progress.active());
  EXPECT_FALSE(progress.drawing());
  progress.Advance();
  clock.Advance(absl::Seconds(1));
  progress.Advance(2);
  progress.Success();  // Nothing left to report.
  EXPECT_THAT(calls, ElementsAre(Call{1, 3, absl::ZeroDuration()}, Call{3, 3, absl::Seconds(1)}));
}

TEST(ProgressReporterTest, CallbackIsBatchedByMinitersAndFlushedAtTheEnd) {
  testkit::FakeClock clock;
  std::vector<Call> calls;
  ProgressReporter progress(
      {.miniters = 3,
       .callback = [&](int64_t n, int64_t total,
                       absl::Duration elapsed) { calls.emplace_back(n, total, elapsed); }},
      ProgressReporter::kUnknownTotal, "Streaming", clock);
  for (int i = 0; i < 7; ++i) progress.Advance();
  clock.Advance(absl::Seconds(2));
  progress.Stop();
  EXPECT_THAT(calls, ElementsAre(Call{3, -1, absl::ZeroDuration()},
                                 Call{6, -1, absl::ZeroDuration()}, Call{7, -1, absl::Seconds(2)}));
}

TEST(ProgressReporterTest, RejectsNegativeMinitersAndTotals) {
  EXPECT_THROW(ProgressReporter({.miniters = -1}, 10, "W"), InvalidOptionError);
  EXPECT_THROW(ProgressReporter({}, -2, "W"), InvalidOptionError);
  ProgressReporter progress({.callback = [](int64_t, int64_t, absl::Duration) {}}, 10, "W");
  EXPECT_THROW(progress.Advance(-1), InvalidOptionError);
  EXPECT_THROW(progress.SetTotal(-5), InvalidOptionError);
}

TEST(ProgressReporterTest, CountsAdvancesFromManyThreads) {
  MemStream out;
  int64_t last = 0;
  bool monotonic = true;
  {
    ProgressReporter progress({.enabled = true,
                               .force = true,
                               .callback =
                                   [&](int64_t n, int64_t, absl::Duration) {
                                     monotonic = monotonic && n >= last;
                                     last = n;
                                   },
                               .stream = out.file(),
                               .style = kInPlace},
                              4000, "W");
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) progress.Advance();
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(progress.completed(), 4000);
    progress.Success();
  }
  EXPECT_EQ(last, 4000);
  EXPECT_TRUE(monotonic);
  EXPECT_NE(out.Contents().find("[Done] W: 100%"), std::string::npos);
}

}  // namespace
}  // namespace concurry

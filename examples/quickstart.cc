// Quick start: CPU work on a oneTBB executor (futures, Then, Gather), and a bounded stream with a
// live progress bar that keeps going past a failed item and feeds a stateful worker.
// Run: bazel run //examples:quickstart  (the bar is drawn when stderr is a terminal)
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "concurry.h"

namespace {

int Square(int x) {
  if (x == 7) throw std::runtime_error("7 is unlucky");
  return x * x;
}

// A worker: its methods run one at a time, in call order, on its own thread; no lock needed.
class Tally {
 public:
  void Add(int x) {
    sum_ += x;
    ++count_;
  }
  std::string Summary() const { return absl::StrCat(count_, " values, sum ", sum_); }

 private:
  long long sum_ = 0;
  int count_ = 0;
};

}  // namespace

int main() {
  // CPU work: one thread per core, scheduled by oneTBB. (Blocking I/O belongs on an executor of
  // OS threads sized for it; see the README's first program.)
  concurry::TbbExecutor cpu;

  // 1. Submit work, get futures; a continuation runs when the value is ready.
  std::vector<concurry::Future<int>> futures;
  for (int i = 0; i < 5; ++i) futures.push_back(concurry::Async(cpu, Square, i));
  concurry::Future<std::string> text =
      futures[3].Then([](int nine) { return absl::StrCat("3 squared is ", nine); });
  std::printf("%s\n", text.Result().c_str());

  // 2. Gather: results in input order; the first failure is rethrown with its original type.
  std::vector<int> squares = concurry::Gather(futures);
  std::printf("squares: %d %d %d %d %d\n", squares[0], squares[1], squares[2], squares[3],
              squares[4]);
  try {
    concurry::Gather(std::vector{concurry::Async(cpu, Square, 7)});
  } catch (const std::runtime_error& e) {
    std::printf("Gather rethrew: %s\n", e.what());
  }

  // 3. A stream over a lazy input (never materialized) with at most 8 tasks in flight and a
  // progress bar; kCollect yields a failure as an item instead of stopping. Each value goes to
  // the worker.
  auto tally = concurry::Worker<Tally>::Create({.mode = concurry::Mode::kThread});
  int next = 0;
  auto source = [&next]() -> std::optional<int> {
    if (next == 1000) return std::nullopt;
    return next++;
  };
  const concurry::StreamOptions options = {
      .max_in_flight = 8,
      .on_error = concurry::ErrorPolicy::kCollect,
      .progress = {.enabled = true, .description = "Squaring"},
  };
  for (auto& item : concurry::Stream(cpu, source, Square, options)) {
    if (item.ok()) {
      tally.Call(&Tally::Add, item.value());
    } else {
      std::printf("input %d failed: %s\n", static_cast<int>(item.index),
                  item.error_message().c_str());
    }
  }
  // Calls to one worker run in order: Summary() sees every Add() above.
  std::printf("tally: %s\n", tally.Call(&Tally::Summary).Result().c_str());
  return 0;
}

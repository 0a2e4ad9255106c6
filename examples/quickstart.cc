// Quick start: futures on a oneTBB executor, waited on with Wait, Gather and AsCompleted, and a
// bounded stream over a lazy input. Run: bazel run //examples:quickstart
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

}  // namespace

int main() {
  concurry::TbbExecutor pool(/*max_concurrency=*/2);

  // 1. Submit work, get futures; a continuation runs when the value is ready.
  std::vector<concurry::Future<int>> futures;
  for (int i = 0; i < 5; ++i) futures.push_back(concurry::Async(pool, Square, i));
  concurry::Future<std::string> text =
      futures[3].Then([](int nine) { return absl::StrCat("3 squared is ", nine); });
  std::printf("%s\n", text.Result().c_str());

  // 2. Gather: results in input order; the first failure is rethrown with its original type.
  std::vector<int> squares = concurry::Gather(futures);
  std::printf("squares: %d %d %d %d %d\n", squares[0], squares[1], squares[2], squares[3],
              squares[4]);
  try {
    concurry::Gather(std::vector{concurry::Async(pool, Square, 7)});
  } catch (const std::runtime_error& e) {
    std::printf("Gather rethrew: %s\n", e.what());
  }

  // 3. Wait with a timeout returns what is done instead of throwing.
  concurry::Promise<int> never;
  concurry::WaitResult waited =
      concurry::Wait({futures[0], never.GetFuture()}, {.timeout = absl::Milliseconds(20)});
  std::printf("Wait: %zu done, %zu not done, timed out: %s\n", waited.done.size(),
              waited.not_done.size(), waited.timed_out ? "yes" : "no");
  never.SetValue(0);

  // 4. AsCompleted: (index, outcome) in completion order; errors arrive as values.
  std::vector<concurry::Future<int>> more;
  for (int i = 5; i < 9; ++i) more.push_back(concurry::Async(pool, Square, i));
  for (auto& [index, outcome] : concurry::AsCompleted(std::move(more))) {
    if (outcome.ok()) {
      std::printf("input %zu -> %d\n", index + 5, outcome.value());
    } else {
      std::printf("input %zu failed: %s\n", index + 5, outcome.status().ToString().c_str());
    }
  }

  // 5. Stream over a lazy input with at most 4 tasks in flight; the input is never materialized.
  int next = 0;
  auto source = [&next]() -> std::optional<int> {
    if (next == 1000) return std::nullopt;
    return next++;
  };
  long long sum = 0;
  for (auto& item :
       concurry::Stream(pool, source, [](int x) { return 2 * x; }, {.max_in_flight = 4})) {
    sum += item.value();
  }
  std::printf("streamed 1000 inputs, sum of doubles: %lld\n", sum);
  return 0;
}

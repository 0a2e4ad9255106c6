// Builds against concurry from another Bazel workspace (see WORKSPACE): futures completed from
// another thread, gathered in input order, and a timeout seen through the no-throw status view.
// Exits 0 when everything behaves as documented.

#include <iostream>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "futures/future.h"
#include "sync/gather.h"

int main() {
  std::vector<concurry::Promise<int>> promises(3);
  std::vector<concurry::Future<int>> futures;
  for (auto& promise : promises) futures.push_back(promise.GetFuture());
  std::thread producer([&] {
    for (int i = 0; i < 3; ++i) promises[i].SetValue(i * 10);
  });
  const std::vector<int> values = concurry::Gather(futures);
  producer.join();
  std::cout << "gathered " << values[0] << " " << values[1] << " " << values[2] << "\n";

  concurry::Promise<int> never;
  const absl::Status status = never.GetFuture().Status(absl::Milliseconds(10));
  std::cout << "pending future after 10ms -> " << status << "\n";
  return values == std::vector<int>{0, 10, 20} &&
                 status.code() == absl::StatusCode::kDeadlineExceeded
             ? 0
             : 1;
}

// Builds against concurry from another Bazel workspace (see WORKSPACE). Prints a library error
// as an absl::Status and exits 0 when its status code is the documented one.

#include <iostream>

#include "absl/status/status.h"
#include "futures/errors.h"

int main() {
  const concurry::TimeoutError error("waited 1s for a result");
  std::cout << "concurry::TimeoutError -> " << error.ToStatus() << "\n";
  return error.code() == absl::StatusCode::kDeadlineExceeded ? 0 : 1;
}

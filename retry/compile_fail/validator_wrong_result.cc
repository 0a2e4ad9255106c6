// A validator returning something that is not a verdict: one message naming the accepted results.
// EXPECT-ERROR: static assertion failed: concurry::Validate<T>: a validator must return bool,
// absl::Status or std::optional<std::string> MAX-ERRORS: 1
#include <vector>

#include "retry/policy.h"

void Use() {
  concurry::RetryPolicy policy{
      .retry_until = {concurry::Validate<int>([](int value) { return value > 0; })}};
#ifdef CONCURRY_MISUSE
  policy.retry_until = {concurry::Validate<int>([](int value) { return std::vector<int>{value}; })};
#endif
  (void)policy;
}

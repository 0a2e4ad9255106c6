// A validator whose parameter is not the validated type: one message naming the accepted forms.
// EXPECT-ERROR: static assertion failed: concurry::Validate<T>: a validator must be callable as
// \(const T&\) or \(const T&, const concurry::RetryContext&\) MAX-ERRORS: 1
#include <string>

#include "retry/policy.h"

void Use() {
  concurry::RetryPolicy policy{
      .retry_until = {concurry::Validate<int>([](int value) { return value > 0; })}};
#ifdef CONCURRY_MISUSE
  policy.retry_until = {concurry::Validate<int>([](const std::string& s) { return !s.empty(); })};
#endif
  (void)policy;
}

// A retry_on predicate that takes the exception object instead of (std::exception_ptr,
// RetryContext): one message naming the accepted forms.
// EXPECT-ERROR: static assertion failed: concurry::RetryFilter: a retry_on entry must be
// concurry::RetryOn<E>\(\) or a predicate callable as bool\(const std::exception_ptr&, const
// concurry::RetryContext&\) MAX-ERRORS: 1
#include <stdexcept>

#include "retry/policy.h"

void Use() {
  concurry::RetryPolicy policy{.retry_on = {concurry::RetryOn<std::runtime_error>()}};
#ifdef CONCURRY_MISUSE
  policy.retry_on = {[](const std::exception&) { return true; }};
#endif
  (void)policy;
}

// A delay hook returning seconds as an int instead of std::optional<absl::Duration>: one message
// naming the accepted forms.
// EXPECT-ERROR: static assertion failed: concurry::RetryDelayHook: a delay_hook must be callable as
// std::optional<absl::Duration>\(const concurry::RetryFailure&, const concurry::RetryContext&\) or
// std::optional<absl::Duration>\(const concurry::RetryFailure&\) MAX-ERRORS: 1
#include <optional>

#include "absl/time/time.h"
#include "retry/policy.h"

void Use() {
  concurry::RetryPolicy policy{
      .delay_hook = [](const concurry::RetryFailure&) -> std::optional<absl::Duration> {
        return absl::Seconds(1);
      }};
#ifdef CONCURRY_MISUSE
  policy.delay_hook = [](const concurry::RetryFailure&, const concurry::RetryContext&) {
    return 5;
  };
#endif
  (void)policy;
}

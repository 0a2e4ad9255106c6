// CONCURRY_REGISTER_FUNCTION_AS of a lambda.
// EXPECT-ERROR: CONCURRY_REGISTER_FUNCTION: register a free function
// MAX-ERRORS: 1
#include "workers/registration.h"

namespace app {
inline constexpr auto kTwice = [](int x) { return 2 * x; };
}  // namespace app

#ifdef CONCURRY_MISUSE
CONCURRY_REGISTER_FUNCTION_AS(app::Twice, app::kTwice);
#endif

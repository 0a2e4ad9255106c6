// CONCURRY_REGISTER_FUNCTION of a function taking a non-const lvalue reference.
// EXPECT-ERROR: CONCURRY_REGISTER_FUNCTION: the function takes a non-const lvalue reference
// MAX-ERRORS: 1
#include <vector>

#include "workers/registration.h"

namespace app {
void Fill(std::vector<int>& out) { out.push_back(1); }
}  // namespace app

#ifdef CONCURRY_MISUSE
CONCURRY_REGISTER_FUNCTION(app::Fill);
#endif

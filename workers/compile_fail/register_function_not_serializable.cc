// CONCURRY_REGISTER_FUNCTION of a function whose parameter type has no serialization.
// EXPECT-ERROR: CONCURRY_REGISTER_FUNCTION: a parameter type of the function is not serializable
// MAX-ERRORS: 1
#include "workers/registration.h"

namespace app {
struct Opaque {
  int x = 0;
};
int Read(Opaque o) { return o.x; }
}  // namespace app

#ifdef CONCURRY_MISUSE
CONCURRY_REGISTER_FUNCTION(app::Read);
#endif

// GatherSettled of a map of plain values (not futures).
// EXPECT-ERROR: static assertion failed: concurry::GatherSettled: expects futures
// MAX-ERRORS: 1
#include <map>
#include <string>

#include "sync/gather.h"

void Use() {
#ifdef CONCURRY_MISUSE
  std::map<std::string, int> values = {{"a", 1}};
  auto outcomes = concurry::GatherSettled(values);
#endif
}

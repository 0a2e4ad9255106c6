#include "limits/internal/rate_lock.h"

#include <atomic>
#include <thread>

namespace concurry {
namespace limits_internal {
namespace {

// Tells the CPU the thread is spinning (x86 `pause`).
inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

void RateLock::LockSlow() {
  int backoff = kFirstBackoff;
  int looks_at_last = 0;
  for (;;) {
    for (int i = 0; i < backoff; ++i) Pause();
    if (locked_.load(std::memory_order_relaxed) == 0 &&
        locked_.exchange(1, std::memory_order_acquire) == 0) {
      return;
    }
    if (backoff < kLastBackoff) {
      backoff *= 2;
    } else if (++looks_at_last >= kYieldAfter) {
      std::this_thread::yield();
    }
  }
}

}  // namespace limits_internal
}  // namespace concurry

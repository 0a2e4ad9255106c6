#include "limits/internal/backoff_lock.h"

#include <atomic>
#include <cstdint>
#include <thread>

namespace concurry {
namespace limits_internal {
namespace {

// Tells the CPU the thread is spinning, and takes some time doing so without touching memory: x86
// `pause` (about 20 ns here), aarch64 `isb` (tens of ns; its `yield` is a no-op on most cores).
// Elsewhere a relaxed look at `word`, so that the backoff stays a real wait and does not compile
// to nothing (which would leave a waiter yielding its CPU on every look).
inline void Pause(const std::atomic<uint32_t>& word) {
#if defined(__x86_64__) || defined(__i386__)
  static_cast<void>(word);
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  static_cast<void>(word);
  asm volatile("isb" ::: "memory");
#else
  static_cast<void>(word.load(std::memory_order_relaxed));
#endif
}

}  // namespace

void BackoffLock::LockSlow() {
  int backoff = kFirstBackoff;
  int looks_at_last = 0;
  for (;;) {
    for (int i = 0; i < backoff; ++i) Pause(locked_);
    if (locked_.load(std::memory_order_relaxed) == 0 &&
        locked_.exchange(1, std::memory_order_acquire) == 0) {
      return;
    }
    if (backoff < kLastBackoff) {
      backoff *= 2;
    } else if (looks_at_last >= kYieldAfter || ++looks_at_last >= kYieldAfter) {
      // The count stops at kYieldAfter, so a wait of any length cannot overflow it.
      std::this_thread::yield();
    }
  }
}

}  // namespace limits_internal
}  // namespace concurry

#include "testing/shared_gates.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace concurry {
namespace testkit {
namespace {

static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

// Sleeps while *word == 0. Not FUTEX_PRIVATE: the word is shared with other processes.
void WaitNonZero(std::atomic<uint32_t>& word) {
  while (word.load(std::memory_order_acquire) == 0) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, 0, nullptr, nullptr, 0);
  }
}

void SetAndWake(std::atomic<uint32_t>& word) {
  word.store(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace

void* MapShared(size_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("testkit::MapShared: mmap");
    std::abort();
  }
  return p;
}

SharedGates& SharedGates::Get() {
  static SharedGates* gates = NewShared<SharedGates>();
  return *gates;
}

namespace {
// Maps the gates before main, whether or not a test touches them before then.
[[maybe_unused]] SharedGates& mapped_before_main = SharedGates::Get();
}  // namespace

int SharedGates::Make() {
  const int id = next_.fetch_add(1, std::memory_order_relaxed);
  if (id >= kMaxGates) {
    std::fprintf(stderr, "testkit::SharedGates: more than %d gates\n", kMaxGates);
    std::abort();
  }
  return id;
}

SharedGates::Gate& SharedGates::At(int id) {
  if (id < 0 || id >= next_.load(std::memory_order_relaxed)) {
    std::fprintf(stderr, "testkit::SharedGates: no gate %d\n", id);
    std::abort();
  }
  return gates_[id];
}

void SharedGates::Hold(int id) {
  Gate& gate = At(id);
  SetAndWake(gate.entered);
  WaitNonZero(gate.released);
}

void SharedGates::WaitEntered(int id) { WaitNonZero(At(id).entered); }

void SharedGates::Release(int id) { SetAndWake(At(id).released); }

}  // namespace testkit
}  // namespace concurry

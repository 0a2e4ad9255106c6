// An in-process LimitSet whose construction fails on an allocation made once its memory block
// exists, at each such allocation in turn, frees the block: ~SetImpl does not run then.
//
// Only allocations after the block's are failed: the constructor's earlier work includes an
// absl::flat_hash_set, and absl's containers do not promise to survive a failed allocation.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <new>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_set.h"

namespace {

// Armed by the test thread: the aligned allocation (counting from 1) that is the set's block
// (the first is the SetImpl itself, which is aligned to 64), after which allocations count;
// then the plain allocations, after that one, before one throws bad_alloc (0: none throws).
constexpr int kBlockAllocation = 2;
thread_local bool armed = false;
thread_local int aligned_seen = 0;
thread_local int64_t allocations_before_failure = 0;
// Live aligned allocations.
std::atomic<int64_t> live_aligned{0};

}  // namespace

void* operator new(std::size_t size) {
  if (armed && aligned_seen >= kBlockAllocation && allocations_before_failure > 0 &&
      --allocations_before_failure == 0) {
    throw std::bad_alloc();
  }
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

void* operator new(std::size_t size, std::align_val_t align) {
  const size_t alignment = static_cast<size_t>(align);
  void* p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  if (p == nullptr) throw std::bad_alloc();
  if (armed) ++aligned_seen;
  live_aligned.fetch_add(1, std::memory_order_relaxed);
  return p;
}
void operator delete(void* p, std::align_val_t) noexcept {
  if (p == nullptr) return;
  live_aligned.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t align) noexcept {
  operator delete(p, align);
}

namespace concurry {
namespace {

std::vector<Limit> Limits() {
  return {ResourceLimit("slots", 3), RateLimit("calls", 10, absl::Seconds(1)),
          RateLimit("tokens", 50, absl::Seconds(1), RateLimitAlgorithm::kGcra)};
}

// Creates the set with the n-th allocation after its block failing, for n = 1, 2, ... until
// it is created with none failing; after each failed run, the aligned allocations are as before.
// The set created is destroyed with nothing armed. Returns the number of failed runs.
int FailEachAllocationAfterTheBlock() {
  for (int n = 1;; ++n) {
    const int64_t aligned_before = live_aligned.load();
    std::vector<Limit> limits = Limits();
    bool failed = false;
    bool injected = false;
    aligned_seen = 0;
    allocations_before_failure = n;
    armed = true;
    try {
      LimitSet set = LimitSet::Create(std::move(limits));
      armed = false;
      injected = allocations_before_failure == 0;
    } catch (const std::exception&) {
      armed = false;
      failed = true;
      injected = allocations_before_failure == 0;
    }
    allocations_before_failure = 0;
    EXPECT_GE(aligned_seen, kBlockAllocation) << "allocation " << n;
    EXPECT_EQ(failed, injected) << "allocation " << n;
    EXPECT_EQ(live_aligned.load(), aligned_before) << "allocation " << n;
    if (!injected || testing::Test::HasFailure()) return n - 1;
  }
}

TEST(LimitSetAllocFailureTest, AnInProcessSetFreesItsBlockWhenItsConstructionFails) {
  // The set's info, its rate states' pointers, its shortcut's items and its handle's control
  // block are allocated after the block.
  EXPECT_GE(FailEachAllocationAfterTheBlock(), 3);
}

}  // namespace
}  // namespace concurry

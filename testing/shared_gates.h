// Test helpers that work across processes: objects in memory shared with every process forked
// after they are made (Mode::kProcess workers, forked from the fork server or from the test), and
// gates a test holds a worker's call on. Make them before main (a namespace-scope variable), so
// that the fork server, started at the top of main, and so every worker process, maps them too.
//
//   std::atomic<int>& live = *testkit::NewShared<std::atomic<int>>(0);  // before main
//   testkit::SharedGates& gates = testkit::SharedGates::Get();  // mapped before main anyway
//   const int gate = gates.Make();
//   Future<int> call = worker.Call(&Counter::Hold, gate);  // the method calls gates.Hold(gate)
//   gates.WaitEntered(gate);
//   gates.Release(gate);

#ifndef CONCURRY_TESTING_SHARED_GATES_H_
#define CONCURRY_TESTING_SHARED_GATES_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

namespace concurry {
namespace testkit {

// Returns `size` zeroed bytes in a shared anonymous mapping (never unmapped). Aborts when the
// kernel refuses the mapping (a test cannot go on without it).
void* MapShared(size_t size);

// Builds a T in shared memory (never destroyed). T must work across processes as it is: an
// address-free atomic, a plain struct.
template <typename T, typename... Args>
T* NewShared(Args&&... args) {
  return new (MapShared(sizeof(T))) T(std::forward<Args>(args)...);
}

// Gates addressed by id, in shared memory: a worker's method (in any process) holds on a gate
// until the test releases it; the test waits until the method got there. Waits sleep in the
// kernel (a futex on the shared word), so they cost nothing while they wait. Thread-safe and
// process-safe.
//
// Memory ordering: Release and the entry mark are release stores, the waits acquire loads, so
// what one side wrote before is visible to the other after the wait.
class SharedGates {
 public:
  static constexpr int kMaxGates = 4096;

  // The program's gates, mapped before main (by a static initializer of this library), so
  // that every worker process shares them.
  static SharedGates& Get();

  // A new closed gate's id. Aborts past kMaxGates gates (a test bug).
  int Make();
  // Called by the worker: marks the gate entered, then waits until it is released.
  void Hold(int id);
  // Waits until a call is holding on the gate (or has passed it).
  void WaitEntered(int id);
  // Opens the gate: the holder (now or later) goes on.
  void Release(int id);

 private:
  struct Gate {
    std::atomic<uint32_t> entered{0};
    std::atomic<uint32_t> released{0};
  };
  Gate& At(int id);

  std::atomic<int> next_{0};
  Gate gates_[kMaxGates];
};

}  // namespace testkit
}  // namespace concurry

#endif  // CONCURRY_TESTING_SHARED_GATES_H_

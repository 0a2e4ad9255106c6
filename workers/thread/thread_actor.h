// ThreadActor: an actor that drains its mailbox on a dedicated OS thread (Mode::kThread, and the
// local end of Mode::kLoopback).

#ifndef CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_
#define CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_

#include <atomic>
#include <cstdint>
#include <thread>

#include "workers/internal/actor.h"

namespace concurry::workers_internal {

// Drains on a dedicated thread that sleeps when the mailbox is empty. A backend may derive from
// it (Mode::kProcess does) to act after each drain.
class ThreadActor : public ActorCore {
 public:
  using ActorCore::ActorCore;
  ~ThreadActor() override;

 protected:
  void OnStart() override;
  void Schedule() override;
  // Runs on the actor's thread after each drain (the mailbox was found empty, or closed), and
  // after each Poke.
  virtual void AfterDrain() {}
  // Has the actor's thread run AfterDrain soon, without a drain (which another thread may be
  // running: a backend whose Schedule drains inline). Thread-safe; never waits.
  void Poke();

 private:
  void Loop();
  // What the thread is asked to do: bits kDrain (set by Schedule) and kPoke, taken together by
  // the thread. The thread spins on it briefly, then sleeps on it (futex).
  static constexpr uint32_t kDrain = 1;
  static constexpr uint32_t kPoke = 2;
  std::atomic<uint32_t> work_{0};
  std::thread thread_;
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_

// ThreadActor: an actor that drains its mailbox on a dedicated OS thread (Mode::kThread, and the
// local end of Mode::kLoopback).

#ifndef CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_
#define CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_

#include <atomic>
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
  // Runs on the actor's thread after each drain (the mailbox was found empty, or closed).
  virtual void AfterDrain() {}

 private:
  void Loop();
  // A binary semaphore: set by Schedule, taken by the thread before each drain. The thread spins
  // on it briefly, then sleeps on it (futex).
  std::atomic<bool> work_{false};
  std::thread thread_;
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_

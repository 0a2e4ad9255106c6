// ThreadActor: an actor that drains its mailbox on a dedicated OS thread (Mode::kThread, and the
// local end of Mode::kLoopback).

#ifndef CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_
#define CONCURRY_WORKERS_THREAD_THREAD_ACTOR_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <utility>

#include "workers/internal/actor.h"

namespace concurry::workers_internal {

// While alive, the calling thread is draining, itself, the one call it queued to an idle worker
// (ThreadActor::SendsOnCaller): the backend writes that call out at once and may offer the thread a
// way to fetch the reply itself (EncodedObject::TakeWaitDriver). Scopes nest. Not copyable.
class SendNowScope {
 public:
  SendNowScope() : outer_(std::exchange(active_, true)) {}
  ~SendNowScope() { active_ = outer_; }
  SendNowScope(const SendNowScope&) = delete;
  SendNowScope& operator=(const SendNowScope&) = delete;

  // Whether a scope is alive on the calling thread.
  static bool Active() { return active_; }

 private:
  static inline thread_local bool active_ = false;
  bool outer_;
};

// Drains on a dedicated thread that sleeps when the mailbox is empty. A backend may derive from
// it (Mode::kProcess and Mode::kRemote do) to act after each drain, and to have a caller's thread
// send a call to an idle worker itself (SendsOnCaller).
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
  // Whether a call queued while the worker is idle may be drained by the thread that queued it,
  // inside a SendNowScope, instead of waking the actor's thread (a wake-up costs about a quarter
  // of a small call's round trip to a worker process). For backends whose calls only hand bytes
  // on (CallNode::RunsWithoutWaiting); the default is no. Asked from Schedule only, that is by
  // the drain's owner, and only when the thread is not already sending (SendNowScope), running a
  // worker's call, in a NonBlockingScope (a timer thread), or stopping the worker.
  virtual bool SendsOnCaller() const { return false; }

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

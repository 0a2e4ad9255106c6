// What the calling thread is running, as executors and waits need to know it: the executor task
// whose blocking it reports (BlockingObserver, behind concurry::BlockingRegion) and the serial
// context (an actor) whose call it runs. Internal: executors and workers set these; waits read
// them.

#ifndef CONCURRY_FUTURES_INTERNAL_TASK_CONTEXT_H_
#define CONCURRY_FUTURES_INTERNAL_TASK_CONTEXT_H_

namespace concurry {
namespace futures_internal {

// Implemented by an executor that keeps its concurrency while some of its tasks block (it adds a
// thread per blocked task). Calls come from the blocked task's own thread, in pairs.
class BlockingObserver {
 public:
  // The calling thread, which runs one of this executor's tasks, is about to block. Must not
  // throw; may start a thread.
  virtual void BlockingBegan() noexcept = 0;
  // The calling thread stopped blocking. Must not throw or block; may run under the caller's
  // locks.
  virtual void BlockingEnded() noexcept = 0;

 protected:
  ~BlockingObserver() = default;
};

// Returns the observer of the executor task the calling thread runs (null outside one, or when its
// executor adds no threads): a task that runs work of its own may install an observer that
// forwards to it.
BlockingObserver* CurrentBlockingObserver() noexcept;

// Makes `observer` the calling thread's for the scope (an executor wraps each task it runs in
// one), outside any blocking region. Not copyable.
class ScopedBlockingObserver {
 public:
  explicit ScopedBlockingObserver(BlockingObserver* observer) noexcept;
  ~ScopedBlockingObserver();
  ScopedBlockingObserver(const ScopedBlockingObserver&) = delete;
  ScopedBlockingObserver& operator=(const ScopedBlockingObserver&) = delete;

 private:
  BlockingObserver* outer_observer_;
  int outer_depth_;
};

// Returns the serial context (an actor: a queue of calls that run one at a time) whose call the
// calling thread runs, or null. A wait in that context for a future that the same context must
// produce can never end (see StateBase::set_producer).
const void* CurrentSerialContext() noexcept;

// Makes `context` the calling thread's serial context for the scope. Not copyable.
class ScopedSerialContext {
 public:
  explicit ScopedSerialContext(const void* context) noexcept;
  ~ScopedSerialContext();
  ScopedSerialContext(const ScopedSerialContext&) = delete;
  ScopedSerialContext& operator=(const ScopedSerialContext&) = delete;

 private:
  const void* outer_;
};

}  // namespace futures_internal
}  // namespace concurry

#endif  // CONCURRY_FUTURES_INTERNAL_TASK_CONTEXT_H_

// The hook behind concurry::this_call::CancelRequested() (workers/this_call.h): whatever runs a
// worker method (a call node, a worker process, a worker host) makes a CancelSignal the calling
// thread's for the duration of the method.
//
//   class MyNode : private CancelSignal {
//     bool CancelRequested() const noexcept override { return cancelled_.load(...); }
//     void Run() { const ScopedCancelSignal running(this); method_(); }
//   };

#ifndef CONCURRY_WORKERS_INTERNAL_CANCEL_SIGNAL_H_
#define CONCURRY_WORKERS_INTERNAL_CANCEL_SIGNAL_H_

namespace concurry::workers_internal {

// Says whether one running call was cancelled. Asked only by the thread that runs the call,
// while it runs it; the cancelling side is any thread, so implementations read an atomic.
class CancelSignal {
 public:
  virtual bool CancelRequested() const noexcept = 0;

 protected:
  ~CancelSignal() = default;
};

// Makes `signal` the calling thread's for the scope, and restores the outer one after (a method
// may run a sync-mode worker's call inline). `signal` must outlive the scope. Not copyable.
class ScopedCancelSignal {
 public:
  explicit ScopedCancelSignal(const CancelSignal* signal) noexcept;
  ~ScopedCancelSignal();
  ScopedCancelSignal(const ScopedCancelSignal&) = delete;
  ScopedCancelSignal& operator=(const ScopedCancelSignal&) = delete;

 private:
  const CancelSignal* const outer_;
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_INTERNAL_CANCEL_SIGNAL_H_

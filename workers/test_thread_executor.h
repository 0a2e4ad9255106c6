// Test helpers for concurrency through an executor: ThreadsExecutor, an Executor of its own
// threads that reports how many it has, and ConcurrencyProbe, which counts the calls running at
// once and can hold them until the test lets them go. Testonly.
//
//   concurry::workers_test::ThreadsExecutor io(8);
//   concurry::workers_test::ConcurrencyProbe probe;
//   auto w = concurry::TaskWorker::Create({.mode = concurry::Mode::kTbb, .executor = &io});
//   ... calls that run probe.Run() ...; probe.WaitRunning(8); probe.Release();
//   EXPECT_EQ(probe.peak(), 8);

#ifndef CONCURRY_WORKERS_TEST_THREAD_EXECUTOR_H_
#define CONCURRY_WORKERS_TEST_THREAD_EXECUTOR_H_

#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "futures/executor.h"

namespace concurry::workers_test {

// Runs tasks on `n` threads of its own, in FIFO order; max_concurrency() is `n`. The destructor
// runs the tasks still queued, then joins the threads. Thread-safe.
class ThreadsExecutor final : public Executor {
 public:
  explicit ThreadsExecutor(int n) : n_(n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~ThreadsExecutor() override {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    for (std::thread& thread : threads_) thread.join();
  }
  ThreadsExecutor(const ThreadsExecutor&) = delete;
  ThreadsExecutor& operator=(const ThreadsExecutor&) = delete;

  void Submit(Task task) override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }
  int max_concurrency() const override { return n_; }

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_) {
    while (true) {
      Task task;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]()
                         ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_ || !tasks_.empty(); };
        mu_.Await(absl::Condition(&ready));
        if (tasks_.empty()) return;  // done_ and nothing left.
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      RunExecutorTask(task, "ThreadsExecutor");
    }
  }

  const int n_;
  absl::Mutex mu_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Counts the calls inside Run() and the most at once; holds them until Release(). Thread-safe.
class ConcurrencyProbe {
 public:
  // Counts the caller in, waits until Release() (at once after it), counts it out.
  void Run() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ++running_;
    if (running_ > peak_) peak_ = running_;
    mu_.Await(absl::Condition(&released_));
    --running_;
  }
  // Waits until `n` calls are inside Run() at once (a Watchdog bounds it in tests).
  void WaitRunning(int n) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ >= n; };
    mu_.Await(absl::Condition(&reached));
  }
  // Lets every held and later call through.
  void Release() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  int peak() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return peak_;
  }

 private:
  absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_ ABSL_GUARDED_BY(mu_) = 0;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace concurry::workers_test

#endif  // CONCURRY_WORKERS_TEST_THREAD_EXECUTOR_H_

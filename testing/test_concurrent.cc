#include "testing/test_concurrent.h"

#include <atomic>
#include <cstdint>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"

namespace concurry {
namespace testkit {
namespace {

// A fixed set of threads that run `body(i)` once per Iterate(). The destructor stops and joins
// them, also when an exception leaves the caller early. Not thread-safe: Iterate() and the
// destructor are called by the owning thread only.
//
// Memory ordering: the generation counter and the exception slot are guarded by `mu_`, which
// orders before() ahead of the bodies and the bodies ahead of after(). `started_` only aligns the
// start of the bodies: each thread increments it (relaxed would do for counting, but acq_rel keeps
// TSan's view simple) and spins with yield until all threads have arrived. The owner resets it
// while every thread is parked on `mu_`, so that reset happens before the next increments.
class ThreadGang {
 public:
  ThreadGang(int num_threads, absl::FunctionRef<void(int)> body)
      : num_threads_(num_threads), body_(body) {
    threads_.reserve(num_threads);
    for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this, i] { Run(i); });
  }

  ~ThreadGang() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }

  // Runs one iteration: releases every thread and returns once all bodies have returned.
  // Rethrows the first exception a body threw.
  void Iterate() ABSL_LOCKS_EXCLUDED(mu_) {
    started_.store(0, std::memory_order_relaxed);  // Threads are parked: see class comment.
    std::exception_ptr error;
    {
      absl::MutexLock lock(&mu_);
      ++generation_;
      running_ = num_threads_;
      auto all_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
      mu_.Await(absl::Condition(&all_done));
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  void Run(int index) ABSL_LOCKS_EXCLUDED(mu_) {
    uint64_t seen = 0;
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        auto released = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || generation_ != seen;
        };
        mu_.Await(absl::Condition(&released));
        if (stop_) return;
        seen = generation_;
      }
      // Rendezvous so the bodies start together (the wake-ups above are staggered).
      started_.fetch_add(1, std::memory_order_acq_rel);
      while (started_.load(std::memory_order_acquire) < num_threads_) std::this_thread::yield();

      std::exception_ptr error;
      try {
        body_(index);
      } catch (...) {
        error = std::current_exception();
      }

      absl::MutexLock lock(&mu_);
      if (error && !error_) error_ = std::move(error);
      --running_;
    }
  }

  const int num_threads_;
  const absl::FunctionRef<void(int)> body_;
  std::atomic<int> started_{0};
  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::exception_ptr error_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;  // Last: the threads start once the members above exist.
};

}  // namespace

void TestConcurrent(int num_threads, int iterations, absl::FunctionRef<void()> before,
                    absl::FunctionRef<void(int thread_index)> body,
                    absl::FunctionRef<void()> after) {
  if (num_threads < 1) {
    throw InvalidOptionError(
        absl::StrCat("TestConcurrent: num_threads must be >= 1, got ", num_threads));
  }
  if (iterations < 0) {
    throw InvalidOptionError(
        absl::StrCat("TestConcurrent: iterations must be >= 0, got ", iterations));
  }
  if (iterations == 0) return;
  ThreadGang gang(num_threads, body);
  for (int i = 0; i < iterations; ++i) {
    before();
    gang.Iterate();
    after();
  }
}

void TestConcurrent(int num_threads, int iterations,
                    absl::FunctionRef<void(int thread_index)> body) {
  TestConcurrent(
      num_threads, iterations, [] {}, body, [] {});
}

void TestConcurrent(int iterations, absl::FunctionRef<void()> before,
                    absl::FunctionRef<void()> after,
                    absl::Span<const absl::FunctionRef<void()>> bodies) {
  if (bodies.empty()) {
    throw InvalidOptionError("TestConcurrent: bodies must hold at least one function, got none");
  }
  TestConcurrent(
      static_cast<int>(bodies.size()), iterations, before,
      [bodies](int thread_index) { bodies[thread_index](); }, after);
}

}  // namespace testkit
}  // namespace concurry

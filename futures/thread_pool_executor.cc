#include "futures/thread_pool_executor.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <exception>
#include <list>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "futures/internal/task_context.h"

namespace concurry {

// Threads. Each thread is a std::thread in `workers`, holding a shared_ptr to the Impl so the Impl
// outlives the executor when the executor is destroyed from one of its own tasks. A thread that
// exits moves its std::thread to `exited` and joins the ones already there (threads that exited
// before it: never itself), so at most a few exited threads wait to be joined; Shutdown(wait)
// joins the rest. Submit never joins: joining waits for the thread's thread_local destructors,
// which may be slow or may themselves call Submit (from the very thread being joined). After a
// non-waiting destruction every std::thread is detached instead. `joining` counts the handles
// taken out of `exited` and not yet joined, so Shutdown(wait) returns only once all are joined.
//
// Counting: `takers` are the alive threads not running a task (idle or starting): each will take
// a queued task without another thread being started. So `queue.size() - takers` tasks wait for
// a thread, and Submit starts a thread when that would be positive and fewer than max_workers
// threads are alive.
struct ThreadPoolExecutor::Impl {
  explicit Impl(ThreadPoolExecutorOptions opts)
      : options(std::move(opts)),
        clock(options.clock != nullptr ? *options.clock : Clock::Real()) {}

  ~Impl() {
    // Only reached once every thread has exited; those not joined were detached.
    for (std::thread& thread : exited) {
      if (thread.joinable()) thread.detach();
    }
  }

  // Threads alive: each has its element in `workers` from its start until it exits.
  int ThreadsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return static_cast<int>(workers.size());
  }

  // How many more tasks may be queued before one would wait beyond max_queued.
  bool HasRoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (options.max_queued == 0) return true;
    return static_cast<int64_t>(queue.size()) < static_cast<int64_t>(takers) +
                                                    (options.max_workers - ThreadsLocked()) +
                                                    options.max_queued;
  }

  // The thread's loop. `self` stays valid until the thread moves itself to `exited`.
  void Run(std::list<std::thread>::iterator self, std::shared_ptr<Impl> keep, int index)
      ABSL_LOCKS_EXCLUDED(mu);

  // Names the calling thread "<thread_name>-<index>", cut to 15 characters.
  void NameThread(int index) const {
    if (options.thread_name.empty()) return;
    const std::string suffix = absl::StrCat("-", index);
    std::string name = options.thread_name.substr(
        0, suffix.size() >= 15 ? 0 : std::min(options.thread_name.size(), 15 - suffix.size()));
    name += suffix;
    name.resize(std::min<size_t>(name.size(), 15));
    pthread_setname_np(pthread_self(), name.c_str());
  }

  // Starts a thread (counted as a taker). Throws what std::thread or the allocation throws
  // (std::system_error, std::bad_alloc), or what the test hook throws; then nothing changed.
  void StartThreadLocked(const std::shared_ptr<Impl>& self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Joins `handles` (taken from `exited`, counted in `joining`) with `mu` released, then uncounts
  // them. The calling thread's own handle is detached instead (a thread cannot join itself).
  void JoinExitedUnlocked(std::vector<std::thread> handles) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Moves `exited` out, counting the handles in `joining`.
  std::vector<std::thread> TakeExitedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<std::thread> handles;
    handles.swap(exited);
    joining += static_cast<int>(handles.size());
    return handles;
  }

  // Moves the queued tasks out (they are destroyed outside the lock: destroying an Async task
  // completes its future, which runs callbacks).
  std::deque<Executor::Task> DropQueueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::deque<Executor::Task> dropped_tasks;
    dropped_tasks.swap(queue);
    dropped += static_cast<int64_t>(dropped_tasks.size());
    return dropped_tasks;
  }

  std::string StoppedMessage(const char* operation) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (broken) {
      return absl::StrCat("ThreadPoolExecutor::", operation,
                          ": the executor is broken: the initializer of a new thread threw ",
                          broken_reason, "; its queued tasks were dropped");
    }
    return absl::StrCat("ThreadPoolExecutor::", operation, ": the executor was shut down");
  }

  const ThreadPoolExecutorOptions options;
  Clock& clock;

  mutable absl::Mutex mu;
  std::deque<Executor::Task> queue ABSL_GUARDED_BY(mu);
  // One per thread alive. Its elements are guarded too: a thread reads its own element through an
  // iterator (which the analysis does not follow), under `mu` only.
  std::list<std::thread> workers ABSL_GUARDED_BY(mu);
  std::vector<std::thread> exited ABSL_GUARDED_BY(mu);
  int joining ABSL_GUARDED_BY(mu) = 0;
  int takers ABSL_GUARDED_BY(mu) = 0;
  int peak_threads ABSL_GUARDED_BY(mu) = 0;
  int64_t completed ABSL_GUARDED_BY(mu) = 0;
  int64_t threads_started ABSL_GUARDED_BY(mu) = 0;
  int64_t threads_retired ABSL_GUARDED_BY(mu) = 0;
  int64_t rejected ABSL_GUARDED_BY(mu) = 0;
  int64_t blocked_submits ABSL_GUARDED_BY(mu) = 0;
  int64_t overflowed ABSL_GUARDED_BY(mu) = 0;
  int64_t dropped ABSL_GUARDED_BY(mu) = 0;
  int64_t initializer_failures ABSL_GUARDED_BY(mu) = 0;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
  bool broken ABSL_GUARDED_BY(mu) = false;
  // Set when the executor was destroyed without waiting: exiting threads detach themselves.
  bool detached ABSL_GUARDED_BY(mu) = false;
  std::string broken_reason ABSL_GUARDED_BY(mu);
};

namespace {

// The executor whose task the calling thread runs (or whose thread it is), if any.
thread_local const void* current_pool = nullptr;

int64_t ToInt64(size_t n) { return static_cast<int64_t>(n); }

// See futures_internal::SetThreadPoolStartHookForTesting.
std::atomic<void (*)()> thread_start_hook{nullptr};

}  // namespace

namespace futures_internal {
void SetThreadPoolStartHookForTesting(void (*hook)()) {
  thread_start_hook.store(hook, std::memory_order_release);
}
}  // namespace futures_internal

void ThreadPoolExecutor::Impl::StartThreadLocked(const std::shared_ptr<Impl>& self) {
  if (void (*hook)() = thread_start_hook.load(std::memory_order_acquire); hook != nullptr) hook();
  const int index = static_cast<int>(threads_started + 1);
  auto it = workers.emplace(workers.end());
  try {
    *it =
        std::thread([this, it, keep = self, index]() mutable { Run(it, std::move(keep), index); });
  } catch (...) {
    workers.erase(it);
    throw;
  }
  ++threads_started;
  ++takers;
  peak_threads = std::max(peak_threads, ThreadsLocked());
}

void ThreadPoolExecutor::Impl::JoinExitedUnlocked(std::vector<std::thread> handles) {
  if (handles.empty()) return;
  mu.Unlock();
  for (std::thread& handle : handles) {
    if (!handle.joinable()) continue;
    // A thread_local destructor of an exited thread that shuts down or destroys the executor.
    if (handle.get_id() == std::this_thread::get_id()) {
      handle.detach();
    } else {
      handle.join();
    }
  }
  mu.Lock();
  joining -= static_cast<int>(handles.size());
}

void ThreadPoolExecutor::Impl::Run(std::list<std::thread>::iterator self,
                                   std::shared_ptr<Impl> keep, int index) {
  current_pool = this;
  // A thread of a compensating executor's task never hands its observer to ours.
  futures_internal::ScopedBlockingObserver no_observer(nullptr);
  NameThread(index);
  std::deque<Executor::Task> to_drop;
  bool ok = true;
  if (options.initializer) {
    try {
      options.initializer();
    } catch (...) {
      ok = false;
      const std::exception_ptr error = std::current_exception();
      const std::string reason =
          absl::StrCat(ExceptionTypeName(error), ": ", ExceptionMessage(error));
      absl::MutexLock lock(&mu);
      ++initializer_failures;
      if (!broken) {
        broken = true;
        broken_reason = reason;
        to_drop = DropQueueLocked();
      }
    }
  }
  to_drop.clear();  // Outside the lock.
  mu.Lock();
  if (ok) {
    const auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return !queue.empty() || shut_down || broken;
    };
    for (;;) {
      // Idle (a taker) here.
      const absl::Time deadline = options.keep_alive == absl::InfiniteDuration()
                                      ? absl::InfiniteFuture()
                                      : clock.Now() + options.keep_alive;
      clock.AwaitWithDeadline(&mu, absl::Condition(&has_work), deadline);
      if (!queue.empty() && !broken) {
        Executor::Task task = std::move(queue.front());
        queue.pop_front();
        --takers;
        mu.Unlock();
        RunExecutorTask(task, "ThreadPoolExecutor");
        task = nullptr;  // Destroyed outside the lock.
        mu.Lock();
        ++takers;
        ++completed;
        continue;
      }
      if (clock.Now() >= deadline) {
        ++threads_retired;  // Idle for keep_alive (even if a shutdown came at that moment).
      } else if (!shut_down && !broken) {
        continue;  // Woken with nothing to do (cannot happen).
      }
      break;
    }
  }
  --takers;
  // The threads that exited before this one; this one is joined by the next (or by Shutdown).
  std::vector<std::thread> earlier = TakeExitedLocked();
  if (detached) {
    if (self->joinable()) self->detach();
  } else {
    exited.push_back(std::move(*self));
  }
  workers.erase(self);
  JoinExitedUnlocked(std::move(earlier));
  mu.Unlock();
  // current_pool stays set: this thread's thread_local destructors, which run after Run returns,
  // count as the executor's own code (Shutdown and the destructor do not wait for this thread,
  // and Submit does not block on a full queue).
  // `keep` is released last: it may destroy the Impl (after a non-waiting destruction), once the
  // lock above is released.
}

namespace {

ThreadPoolExecutorOptions Validated(ThreadPoolExecutorOptions options) {
  if (options.max_workers < 1 || options.max_workers > ThreadPoolExecutor::kMaxWorkers) {
    throw InvalidOptionError(absl::StrCat(
        "ThreadPoolExecutor: max_workers must be between 1 and ", ThreadPoolExecutor::kMaxWorkers,
        ", got ", options.max_workers, "; the default is min(32, hardware threads + 4) (",
        ThreadPoolExecutor::DefaultMaxWorkers(), " here)"));
  }
  if (options.keep_alive <= absl::ZeroDuration()) {
    throw InvalidOptionError(
        absl::StrCat("ThreadPoolExecutor: keep_alive must be > 0 (or absl::InfiniteDuration()), "
                     "got ",
                     absl::FormatDuration(options.keep_alive)));
  }
  if (options.max_queued < 0) {
    throw InvalidOptionError(absl::StrCat(
        "ThreadPoolExecutor: max_queued must be >= 0 (0: unbounded), got ", options.max_queued));
  }
  if (options.queue_full != ThreadPoolQueueFull::kBlock &&
      options.queue_full != ThreadPoolQueueFull::kReject) {
    throw InvalidOptionError(
        absl::StrCat("ThreadPoolExecutor: queue_full must be kBlock or kReject, got ",
                     static_cast<int>(options.queue_full)));
  }
  return options;
}

}  // namespace

int ThreadPoolExecutor::DefaultMaxWorkers() {
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return std::min(32, cores + 4);
}

ThreadPoolExecutor::ThreadPoolExecutor() : ThreadPoolExecutor(ThreadPoolExecutorOptions()) {}

ThreadPoolExecutor::ThreadPoolExecutor(int max_workers)
    : ThreadPoolExecutor(ThreadPoolExecutorOptions{.max_workers = max_workers}) {}

ThreadPoolExecutor::ThreadPoolExecutor(ThreadPoolExecutorOptions options)
    : impl_(std::make_shared<Impl>(Validated(std::move(options)))) {}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  if (current_pool != impl_.get()) {
    Shutdown(/*wait=*/true);
    return;
  }
  // Destroyed from one of its own tasks: stop accepting, and leave the threads (which hold the
  // Impl) to finish the queued tasks and exit on their own.
  Shutdown(/*wait=*/false);
  std::vector<std::thread> to_detach;
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->detached = true;
    for (std::thread& thread : impl_->workers) to_detach.push_back(std::move(thread));
    for (std::thread& thread : impl_->exited) to_detach.push_back(std::move(thread));
    impl_->exited.clear();
  }
  // A thread that exits meanwhile finds its std::thread moved out (not joinable): nothing to do.
  for (std::thread& thread : to_detach) {
    if (thread.joinable()) thread.detach();
  }
}

void ThreadPoolExecutor::Submit(Task task) {
  if (!task) throw InvalidOptionError("ThreadPoolExecutor::Submit: the task is empty");
  Impl& impl = *impl_;
  absl::MutexLock lock(&impl.mu);
  if (impl.shut_down || impl.broken) throw StoppedError(impl.StoppedMessage("Submit"));
  if (!impl.HasRoomLocked()) {
    if (impl.options.queue_full == ThreadPoolQueueFull::kReject) {
      ++impl.rejected;
      throw CapacityError(absl::StrCat(
          "ThreadPoolExecutor::Submit: the queue is full (max_queued = ", impl.options.max_queued,
          " tasks waiting, ", impl.ThreadsLocked(), " threads busy) and queue_full is kReject"));
    }
    if (current_pool == &impl || NonBlockingScope::Active()) {
      ++impl.overflowed;
    } else {
      ++impl.blocked_submits;
      const auto can_go = [&impl]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl.mu) {
        return impl.HasRoomLocked() || impl.shut_down || impl.broken;
      };
      // No deadline; on the executor's clock so a test can see the submitter blocked
      // (FakeClock::NumWaiters). A BlockingRegion for a submitter in a TbbExecutor task.
      impl.clock.AwaitWithDeadline(&impl.mu, absl::Condition(&can_go), absl::InfiniteFuture());
      if (impl.shut_down || impl.broken) throw StoppedError(impl.StoppedMessage("Submit"));
    }
  }
  impl.queue.push_back(std::move(task));
  if (ToInt64(impl.queue.size()) > impl.takers && impl.ThreadsLocked() < impl.options.max_workers) {
    try {
      impl.StartThreadLocked(impl_);
    } catch (...) {
      // No idle or starting thread will take the task, and the busy ones might be waiting for it
      // (a pool task that fans out and waits): leaving it queued could hang. Take it back; the
      // caller sees the error (Async: a failed future). `task` is destroyed after the lock.
      task = std::move(impl.queue.back());
      impl.queue.pop_back();
      throw;
    }
  }
}

int ThreadPoolExecutor::max_concurrency() const { return impl_->options.max_workers; }

void ThreadPoolExecutor::Shutdown(bool wait, bool cancel_pending) {
  Impl& impl = *impl_;
  std::deque<Executor::Task> to_drop;
  {
    absl::MutexLock lock(&impl.mu);
    impl.shut_down = true;
    if (cancel_pending) to_drop = impl.DropQueueLocked();
  }
  to_drop.clear();
  if (!wait || current_pool == &impl) return;
  absl::MutexLock lock(&impl.mu);
  // Every thread has exited Run and no exiting thread (nor another Shutdown) is still joining;
  // then join those left in `exited`. The threads are gone once this returns.
  const auto settled = [&impl]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl.mu) {
    return impl.ThreadsLocked() == 0 && (impl.joining == 0 || !impl.exited.empty());
  };
  for (;;) {
    Clock::Real().AwaitWithDeadline(&impl.mu, absl::Condition(&settled), absl::InfiniteFuture());
    if (impl.exited.empty()) break;
    impl.JoinExitedUnlocked(impl.TakeExitedLocked());
  }
}

ThreadPoolExecutorStats ThreadPoolExecutor::Stats() const {
  const Impl& impl = *impl_;
  absl::MutexLock lock(&impl.mu);
  return ThreadPoolExecutorStats{
      .max_workers = impl.options.max_workers,
      .threads = impl.ThreadsLocked(),
      .peak_threads = impl.peak_threads,
      .idle = impl.takers,
      .running = impl.ThreadsLocked() - impl.takers,
      .queued = ToInt64(impl.queue.size()),
      .completed = impl.completed,
      .threads_started = impl.threads_started,
      .threads_retired = impl.threads_retired,
      .rejected = impl.rejected,
      .blocked_submits = impl.blocked_submits,
      .overflowed = impl.overflowed,
      .dropped = impl.dropped,
      .initializer_failures = impl.initializer_failures,
      .shut_down = impl.shut_down,
      .broken = impl.broken,
  };
}

bool AbslParseFlag(absl::string_view text, ThreadPoolQueueFull* policy, std::string* error) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "block") {
    *policy = ThreadPoolQueueFull::kBlock;
    return true;
  }
  if (lower == "reject") {
    *policy = ThreadPoolQueueFull::kReject;
    return true;
  }
  *error = absl::StrCat("unknown queue_full '", text, "'; expected 'block' or 'reject'");
  return false;
}

std::string AbslUnparseFlag(ThreadPoolQueueFull policy) {
  return policy == ThreadPoolQueueFull::kReject ? "reject" : "block";
}

}  // namespace concurry

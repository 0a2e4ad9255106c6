#include "futures/tbb_executor.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <list>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "futures/errors.h"
#include "futures/internal/task_context.h"
#include "oneapi/tbb/task_arena.h"
#include "oneapi/tbb/task_group.h"

namespace concurry {
namespace {

// The executor whose task the calling thread is running, if any (lets Shutdown and the destructor
// tell that they run inside one of their own tasks).
thread_local const void* running_executor = nullptr;

}  // namespace

int HardwareConcurrency() {
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Threads. The arena has only slots reserved for external threads, so oneTBB's own workers never
// join it: every thread in it is a runner of this executor, which enters with
// task_arena::execute and waits there on a task group of its own ("stay") that has one deferred,
// never-run task; oneTBB has such a waiting thread run the arena's tasks. Destroying the
// deferred task lets the runner leave after the task it is running.
//
// max_concurrency core runners stay until shutdown. Spare runners are added while tasks block
// (BlockingBegan): one per blocked task, up to max_spare_threads, so max_concurrency tasks keep
// running; when a task unblocks, one spare is released (it leaves after its current task) and
// waits, idle, to be needed again, or exits after spare_keep_alive. A runner holds an arena slot
// from when it is wanted until it has left, and at most as many runners as the arena has slots
// ever hold one: a runner that found no slot would make oneTBB run its wait as a task instead.
struct TbbExecutor::Impl final : futures_internal::BlockingObserver {
  enum class State {
    kIdle,     // A spare waiting to be needed (holds no slot).
    kWanted,   // Entering or in the arena.
    kLeaving,  // Released: leaves after its current task.
  };
  struct Runner {
    bool spare = false;
    State state = State::kIdle;
    // While wanted and inside (or about to enter) the arena: destroying it lets the runner leave.
    tbb::task_handle stay;
    absl::Time idle_since;
    std::thread thread;
  };

  // A submitted task. oneTBB stores task functors as const; the task runs exactly once, so
  // calling the mutable AnyInvocable through a const wrapper is sound. A task must not throw
  // (Async never lets user code's exceptions out); one that does would cancel the task group and
  // with it every task queued behind it, so the error is printed and contained instead.
  struct Task {
    Impl* owner;
    mutable Executor::Task task;
    void operator()() const {
      struct Restore {
        const void* outer;
        ~Restore() { running_executor = outer; }
      } restore{std::exchange(running_executor, owner)};
      futures_internal::ScopedBlockingObserver observer(owner);
      RunExecutorTask(task, "TbbExecutor");
    }
  };

  explicit Impl(const TbbExecutorOptions& options)
      : max_concurrency(options.max_concurrency),
        max_spares(options.max_spare_threads),
        keep_alive(options.spare_keep_alive),
        clock(options.clock != nullptr ? *options.clock : Clock::Real()),
        // One slot more than ever used: oneTBB gives an arena with a single reserved slot and no
        // workers a worker of its own for enqueued tasks.
        arena(max_concurrency + max_spares + 1, max_concurrency + max_spares + 1) {
    arena.initialize();
    try {
      for (int i = 0; i < max_concurrency; ++i) {
        absl::MutexLock lock(&mu);
        StartRunnerLocked(/*spare=*/false);
      }
    } catch (...) {
      Close();
      throw;
    }
  }

  // Requires Finish() to have run.
  ~Impl() = default;

  void BlockingBegan() noexcept override {
    std::vector<std::thread> exited;
    {
      absl::MutexLock lock(&mu);
      ++blocked;
      AddSparesLocked();
      if (static_cast<int>(active.size()) < blocked) {
        ++uncompensated;
        if (!warned && blocked > max_spares) {
          warned = true;
          std::fprintf(stderr,
                       "concurry: TbbExecutor: %d tasks are blocked at once, more than "
                       "max_spare_threads (%d); further blocked tasks keep their threads, and "
                       "the executor runs fewer tasks at once meanwhile\n",
                       blocked, max_spares);
        }
      }
      exited.swap(retired);
    }
    for (std::thread& thread : exited) thread.join();  // Threads that are returning.
  }

  void BlockingEnded() noexcept override {
    absl::MutexLock lock(&mu);
    --blocked;
    while (static_cast<int>(active.size()) > blocked) {
      Runner* runner = active.back();
      active.pop_back();
      if (runner->stay) {
        runner->state = State::kLeaving;
        runner->stay = tbb::task_handle();  // Lets it leave after its current task.
      } else {
        // Woken but not in the arena yet: it goes back to waiting.
        runner->state = State::kIdle;
        runner->idle_since = clock.Now();
        idle.push_back(runner);
        --occupied;
      }
    }
  }

  // Starts a runner thread (core or spare), wanted at once. Throws std::system_error when the
  // system refuses a thread.
  Runner* StartRunnerLocked(bool spare) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Runner& runner = runners.emplace_back();
    runner.spare = spare;
    runner.state = State::kWanted;
    try {
      runner.thread = std::thread([this, &runner] { Run(&runner); });
    } catch (...) {
      runners.pop_back();
      throw;
    }
    ++occupied;
    if (spare) ++spare_count;
    return &runner;
  }

  // Adds spares until every blocked task has one (up to max_spares and the arena's slots).
  void AddSparesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int wanted = std::min(blocked, max_spares);
    while (!closing && static_cast<int>(active.size()) < wanted &&
           occupied < max_concurrency + max_spares) {
      Runner* runner;
      if (!idle.empty()) {
        runner = idle.back();
        idle.pop_back();
        runner->state = State::kWanted;
        ++occupied;
      } else {
        try {
          runner = StartRunnerLocked(/*spare=*/true);
        } catch (const std::system_error& e) {
          std::fprintf(stderr,
                       "concurry: TbbExecutor could not add a thread for a blocked task: %s\n",
                       e.what());
          return;
        }
      }
      active.push_back(runner);
    }
  }

  // A spare's wait to be needed. Returns false when the spare should exit: shutdown, or idle
  // past spare_keep_alive (then it has removed itself, and must not touch `runner` again).
  bool AwaitWantedLocked(Runner* runner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const auto wanted = [this, runner]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return runner->state == State::kWanted || closing;
    };
    while (!wanted()) {
      if (clock.AwaitWithDeadline(&mu, absl::Condition(&wanted), runner->idle_since + keep_alive)) {
        break;
      }
      if (closing || runner->state != State::kIdle) break;
      // Idle for spare_keep_alive: exit; Close or the next BlockingBegan joins the thread.
      idle.erase(std::find(idle.begin(), idle.end(), runner));
      --spare_count;
      retired.push_back(std::move(runner->thread));
      runners.remove_if([runner](const Runner& r) { return &r == runner; });
      return false;
    }
    return !closing;
  }

  // A runner thread's life.
  void Run(Runner* runner) ABSL_LOCKS_EXCLUDED(mu) {
    for (;;) {
      tbb::task_group stay;
      {
        absl::MutexLock lock(&mu);
        if (runner->spare && !AwaitWantedLocked(runner)) return;
        if (closing) {
          if (runner->state == State::kWanted) --occupied;
          return;
        }
        runner->stay = stay.defer([] {});
      }
      arena.execute([&stay] { stay.wait(); });
      absl::MutexLock lock(&mu);
      --occupied;
      if (closing || !runner->spare) return;  // A core runner leaves only at shutdown.
      runner->state = State::kIdle;
      runner->idle_since = clock.Now();
      idle.push_back(runner);
      // The slot it left may be one a blocked task is waiting for (maybe this runner again).
      AddSparesLocked();
    }
  }

  // Stops accepting tasks.
  void StopAccepting() {
    stopped.store(true);
    // Wait for Submit calls that got in before `stopped` was set; no later one can add a task. They
    // are between an increment and a decrement around one non-blocking enqueue, so this wait is a
    // few hundred nanoseconds; a wake-up would have to touch Impl after the decrement.
    while (submitting.load() != 0) std::this_thread::yield();
  }

  // Waits for every task, then lets the runners go and joins them. Requires StopAccepting().
  void Finish() ABSL_LOCKS_EXCLUDED(mu, finish_mu) {
    absl::MutexLock finishing(&finish_mu);  // task_group::wait is not for concurrent callers.
    {
      // A runner of another executor waiting here gets a thread added in its place.
      BlockingRegion blocking;
      group.wait();
    }
    Close();
  }

  // Lets every runner go and joins them.
  void Close() ABSL_LOCKS_EXCLUDED(mu) {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu);
      closing = true;
      for (Runner& runner : runners) {
        runner.stay = tbb::task_handle();
        if (runner.thread.joinable()) threads.push_back(std::move(runner.thread));
      }
      for (std::thread& thread : retired) threads.push_back(std::move(thread));
      retired.clear();
    }
    for (std::thread& thread : threads) thread.join();
  }

  const int max_concurrency;
  const int max_spares;
  const absl::Duration keep_alive;
  Clock& clock;
  tbb::task_arena arena;
  // Counts the submitted tasks that have not finished (Finish waits for them).
  tbb::task_group group;
  // Submit calls in progress, and whether Shutdown began. A mutex would do, but Debian's
  // absl::Mutex (deadlock detection on) costs more than the enqueue itself on this hot path.
  // Memory ordering: both are seq_cst, so a Submit either sees `stopped` and backs out, or its
  // increment is seen by StopAccepting, which then waits for the matching decrement. A Submit's
  // decrement is its last access to Impl, so Shutdown (and the destructor) may proceed after it.
  std::atomic<int> submitting{0};
  std::atomic<bool> stopped{false};

  absl::Mutex finish_mu;
  mutable absl::Mutex mu;
  std::list<Runner> runners ABSL_GUARDED_BY(mu);    // Stable addresses for the runner threads.
  std::vector<Runner*> idle ABSL_GUARDED_BY(mu);    // Spares in kIdle, most recent last.
  std::vector<Runner*> active ABSL_GUARDED_BY(mu);  // Spares in kWanted, most recent last.
  int blocked ABSL_GUARDED_BY(mu) = 0;              // Tasks in a BlockingRegion.
  int occupied ABSL_GUARDED_BY(mu) = 0;  // Runners that hold, or are about to take, a slot.
  int spare_count ABSL_GUARDED_BY(mu) = 0;
  int64_t uncompensated ABSL_GUARDED_BY(mu) = 0;
  bool warned ABSL_GUARDED_BY(mu) = false;
  bool closing ABSL_GUARDED_BY(mu) = false;
  std::vector<std::thread> retired ABSL_GUARDED_BY(mu);  // Spares that exited, to be joined.
};

namespace {

TbbExecutorOptions Validated(const TbbExecutorOptions& options) {
  if (options.max_concurrency < 1 || options.max_concurrency > TbbExecutor::kMaxConcurrency) {
    throw InvalidOptionError(absl::StrCat(
        "TbbExecutor: max_concurrency must be between 1 and ", TbbExecutor::kMaxConcurrency,
        ", got ", options.max_concurrency, "; TbbExecutor() runs one thread per hardware thread (",
        HardwareConcurrency(), " here)"));
  }
  if (options.max_spare_threads < 0 || options.max_spare_threads > TbbExecutor::kMaxSpareThreads) {
    throw InvalidOptionError(absl::StrCat("TbbExecutor: max_spare_threads must be between 0 and ",
                                          TbbExecutor::kMaxSpareThreads, ", got ",
                                          options.max_spare_threads));
  }
  if (options.spare_keep_alive <= absl::ZeroDuration()) {
    throw InvalidOptionError(absl::StrCat(
        "TbbExecutor: spare_keep_alive must be > 0 (or absl::InfiniteDuration()), got ",
        absl::FormatDuration(options.spare_keep_alive)));
  }
  return options;
}

}  // namespace

TbbExecutor::TbbExecutor() : TbbExecutor(TbbExecutorOptions()) {}

TbbExecutor::TbbExecutor(int max_concurrency)
    : TbbExecutor(TbbExecutorOptions{.max_concurrency = max_concurrency}) {}

TbbExecutor::TbbExecutor(const TbbExecutorOptions& options)
    : impl_(std::make_unique<Impl>(Validated(options))) {}

TbbExecutor::~TbbExecutor() {
  if (impl_ == nullptr) return;
  if (running_executor != impl_.get()) {
    Shutdown();
    return;
  }
  // Destroyed from one of its own tasks, which cannot wait for itself: stop accepting, and let a
  // thread of its own wait for the remaining tasks (this one included) and free the executor.
  impl_->StopAccepting();
  Impl* impl = impl_.release();
  try {
    std::thread([impl] {
      impl->Finish();
      delete impl;
    }).detach();
  } catch (const std::system_error& e) {
    // Without a thread nobody can wait for the tasks: leave the executor to them (a leak, not a
    // deadlock or a crash).
    std::fprintf(stderr,
                 "concurry: TbbExecutor destroyed from its own task could not start a thread to "
                 "finish it (%s); its threads are left running\n",
                 e.what());
  }
}

void TbbExecutor::Submit(Task task) {
  Impl& impl = *impl_;
  struct Leave {
    std::atomic<int>& submitting;
    ~Leave() { submitting.fetch_sub(1); }  // The last access to Impl (see Impl).
  };
  impl.submitting.fetch_add(1);
  Leave leave{impl.submitting};
  if (impl.stopped.load()) throw StoppedError("TbbExecutor::Submit: the executor was shut down");
  impl.arena.enqueue(impl.group.defer(Impl::Task{&impl, std::move(task)}));
}

void TbbExecutor::Shutdown() {
  if (running_executor == impl_.get()) {
    throw InvalidOptionError(
        "TbbExecutor::Shutdown called from one of the executor's own tasks: it would wait for "
        "itself forever; shut down from outside the executor (destroying it from a task is "
        "allowed and does not wait)");
  }
  impl_->StopAccepting();
  impl_->Finish();
}

int TbbExecutor::max_concurrency() const { return impl_->max_concurrency; }

TbbExecutorStats TbbExecutor::Stats() const {
  absl::MutexLock lock(&impl_->mu);
  return TbbExecutorStats{
      .max_concurrency = impl_->max_concurrency,
      .blocked = impl_->blocked,
      .active_spare_threads = static_cast<int>(impl_->active.size()),
      .spare_threads = impl_->spare_count,
      .uncompensated = impl_->uncompensated,
  };
}

}  // namespace concurry

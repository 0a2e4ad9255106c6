// Mode::kTbb specifics: a synchronous Create builds the object on the calling thread, in the
// worker's context; CreateAsync builds it on the arena. Actors with alike options share one copy.

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/executor.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "workers/options.h"
#include "workers/worker.h"

namespace concurry {
namespace {

// Records where it was built and the order in which its calls ran.
class Recorder {
 public:
  explicit Recorder(bool call_self = false, bool stop_self = false, bool fail = false)
      : built_on_(std::this_thread::get_id()) {
    if (fail) throw std::invalid_argument("bad recorder");
    // Only inside the worker's context does CurrentWorker find it.
    Worker<Recorder> self = CurrentWorker<Recorder>();
    if (call_self) self.Call(&Recorder::Append, 1);  // Must run after this constructor.
    if (stop_self) self.Stop(absl::ZeroDuration());
    built_ = true;
  }

  void Append(int value) {
    if (!built_) throw std::logic_error("a call ran before the constructor finished");
    log_.push_back(value);
  }
  std::vector<int> Log() const { return log_; }
  std::thread::id BuiltOn() const { return built_on_; }

 private:
  const std::thread::id built_on_;
  bool built_ = false;
  std::vector<int> log_;
};

TEST(TbbBackendTest, CreateBuildsOnTheCallingThreadInTheWorkersContext) {
  auto worker = Worker<Recorder>::Create({.mode = Mode::kTbb});
  EXPECT_EQ(worker.Call(&Recorder::BuiltOn).Result(), std::this_thread::get_id());
  auto blocking = BlockingWorker<Recorder>::Create({.mode = Mode::kTbb});
  EXPECT_EQ(blocking.Call(&Recorder::BuiltOn), std::this_thread::get_id());
}

TEST(TbbBackendTest, CreateAsyncBuildsOnTheArena) {
  auto worker = Worker<Recorder>::CreateAsync({.mode = Mode::kTbb}).Result();
  EXPECT_NE(worker.Call(&Recorder::BuiltOn).Result(), std::this_thread::get_id());
}

TEST(TbbBackendTest, CallsTheConstructorMakesToItsWorkerRunAfterIt) {
  auto worker = Worker<Recorder>::Create({.mode = Mode::kTbb}, /*call_self=*/true);
  worker.Call(&Recorder::Append, 2).Result();
  EXPECT_EQ(worker.Call(&Recorder::Log).Result(), (std::vector<int>{1, 2}));
}

TEST(TbbBackendTest, ConstructorErrorReachesCreateWithItsType) {
  EXPECT_THROW(Worker<Recorder>::Create({.mode = Mode::kTbb}, false, false, /*fail=*/true),
               std::invalid_argument);
  EXPECT_THROW(BlockingWorker<Recorder>::Create({.mode = Mode::kTbb}, false, false, true),
               std::invalid_argument);
}

TEST(TbbBackendTest, ConstructorThatStopsItsWorkerLeavesAStoppedHandle) {
  auto worker = Worker<Recorder>::Create({.mode = Mode::kTbb}, /*call_self=*/true,
                                         /*stop_self=*/true);
  EXPECT_TRUE(worker.StoppedFuture().Wait(absl::Seconds(30)));
  EXPECT_THROW(worker.Call(&Recorder::Log).Result(), StoppedError);
}

TEST(TbbBackendTest, UserExecutorKeepsConstructionOnTheExecutor) {
  // A user's executor may promise where its tasks run: Create leaves the constructor to it.
  std::atomic<int> submitted{0};
  class CountingExecutor final : public Executor {
   public:
    explicit CountingExecutor(std::atomic<int>* submitted) : submitted_(submitted) {}
    ~CountingExecutor() override {
      for (std::thread& thread : threads_) thread.join();
    }
    // Called by the worker's drains one at a time (a worker has one drain at a time); the threads
    // are joined once the worker has stopped.
    void Submit(absl::AnyInvocable<void()> task) override {
      submitted_->fetch_add(1, std::memory_order_relaxed);
      absl::MutexLock lock(&mu_);
      threads_.emplace_back(std::move(task));
    }

   private:
    std::atomic<int>* submitted_;
    absl::Mutex mu_;
    std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  } executor(&submitted);
  {
    auto worker = Worker<Recorder>::Create({.mode = Mode::kTbb, .executor = &executor});
    EXPECT_NE(worker.Call(&Recorder::BuiltOn).Result(), std::this_thread::get_id());
    EXPECT_TRUE(worker.Stop(absl::Seconds(30)));
  }
  EXPECT_GE(submitted.load(), 1);
}

TEST(TbbBackendTest, WorkersWithAlikeOptionsShareThemAndOthersKeepTheirOwn) {
  auto a = Worker<Recorder>::Create({.mode = Mode::kTbb});
  auto b = Worker<Recorder>::Create({.mode = Mode::kTbb});
  EXPECT_EQ(&a.options(), &b.options());
  auto slow = Worker<Recorder>::Create({.mode = Mode::kTbb, .stop_timeout = absl::Seconds(7)});
  EXPECT_EQ(slow.options().stop_timeout, absl::Seconds(7));
  EXPECT_EQ(a.options().stop_timeout, absl::Seconds(30));
  auto limited =
      Worker<Recorder>::Create({.mode = Mode::kTbb, .limits = {ResourceLimit("slots", 3)}});
  EXPECT_FALSE(limited.options().limits.no_op());
  EXPECT_TRUE(a.options().limits.no_op());
  auto c = Worker<Recorder>::Create({.mode = Mode::kTbb});
  EXPECT_TRUE(c.options().limits.no_op());
}

// Synchronous Creates from several threads at once, each worker called right away (TSan: the
// object built on one thread is published to the arena thread that runs its calls).
TEST(TbbBackendTest, ManyThreadsCreateAndCallAtOnce) {
  constexpr int kThreads = 4;
  constexpr int kWorkersPerThread = 200;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ok] {
      std::vector<Worker<Recorder>> workers;
      std::vector<Future<void>> calls;
      for (int i = 0; i < kWorkersPerThread; ++i) {
        workers.push_back(Worker<Recorder>::Create({.mode = Mode::kTbb}, i % 2 == 0));
        calls.push_back(workers.back().Call(&Recorder::Append, 2));
      }
      for (int i = 0; i < kWorkersPerThread; ++i) {
        calls[i].Result();
        const std::vector<int> expected = i % 2 == 0 ? std::vector<int>{1, 2} : std::vector<int>{2};
        if (workers[i].Call(&Recorder::Log).Result() == expected) ok.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), kThreads * kWorkersPerThread);
}

}  // namespace
}  // namespace concurry

// The backend registry, in a binary that links the thread backend only (see BUILD.bazel), plus a
// backend defined here, for Mode::kCoroutine, that plugs in the way the future modes will.

#include "workers/backend.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "futures/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/error_message.h"
#include "workers/internal/actor.h"
#include "workers/options.h"
#include "workers/task_worker.h"
#include "workers/worker.h"

namespace concurry {
namespace {

using ::concurry::testkit::InvalidOptionMessage;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class Counter {
 public:
  int Add(int k) { return n_ += k; }

 private:
  int n_ = 0;
};

// A backend outside workers/: drains in the thread that schedules, counting the drains.
std::atomic<int> test_drains{0};

class CountingActor final : public workers_internal::ActorCore {
 public:
  using ActorCore::ActorCore;

 protected:
  void Schedule() override {
    ++test_drains;
    Drain(kNoBudget);
  }
};

class CountingBackend final : public WorkerBackend {
 public:
  Mode mode() const override { return Mode::kCoroutine; }
  void Validate(const ResolvedWorkerOptions& options) const override {
    if (options.max_queued_tasks != kUnbounded) {
      throw InvalidOptionError("CountingBackend: max_queued_tasks is not supported");
    }
  }
  std::shared_ptr<workers_internal::ActorCore> MakeActor(
      const ResolvedWorkerOptions& options) const override {
    return std::make_shared<CountingActor>(options, *this);
  }
};

}  // namespace
}  // namespace concurry

CONCURRY_REGISTER_WORKER_BACKEND(::concurry::CountingBackend)

namespace concurry {
namespace {

TEST(WorkerBackendTest, OnlyTheLinkedBackendsAreRegistered) {
  EXPECT_THAT(LinkedWorkerModes(), ElementsAre(Mode::kThread, Mode::kCoroutine));
  ASSERT_NE(FindWorkerBackend(Mode::kThread), nullptr);
  EXPECT_EQ(FindWorkerBackend(Mode::kThread)->mode(), Mode::kThread);
  EXPECT_EQ(FindWorkerBackend(Mode::kTbb), nullptr);
  EXPECT_EQ(FindWorkerBackend(static_cast<Mode>(42)), nullptr);
  EXPECT_EQ(Worker<Counter>::Create({.mode = Mode::kThread}).Call(&Counter::Add, 2).Result(), 2);
}

TEST(WorkerBackendTest, AModeWhoseBackendIsNotLinkedNamesTheTargetToAdd) {
  EXPECT_EQ(InvalidOptionMessage([] { Worker<Counter>::Create({.mode = Mode::kTbb}); }),
            "worker options: Mode::kTbb needs @concurry//workers/tbb in deps: its backend is not "
            "linked into this binary (linked: thread, coroutine); @concurry//workers and "
            "@concurry//:concurry link every backend");
  EXPECT_THAT(InvalidOptionMessage([] { Worker<Counter>::Create({.mode = Mode::kSync}); }),
              HasSubstr("Mode::kSync needs @concurry//workers/inline in deps"));
  EXPECT_THAT(InvalidOptionMessage([] { Worker<Counter>::Create({.mode = Mode::kLoopback}); }),
              HasSubstr("Mode::kLoopback needs @concurry//workers/loopback in deps"));
  // Every way to create a worker goes through the same check.
  EXPECT_THAT(InvalidOptionMessage([] { BlockingWorker<Counter>::Create({.mode = Mode::kTbb}); }),
              HasSubstr("Mode::kTbb needs @concurry//workers/tbb in deps"));
  EXPECT_THAT(InvalidOptionMessage([] { TaskWorker::Create({.mode = Mode::kTbb}); }),
              HasSubstr("Mode::kTbb needs @concurry//workers/tbb in deps"));
  EXPECT_THAT(InvalidOptionMessage([] { MakeExecutor({.mode = Mode::kSync}); }),
              HasSubstr("Mode::kSync needs @concurry//workers/inline in deps"));
}

TEST(WorkerBackendTest, RemoteModeNamesItsOwnTarget) {
  // Remote mode is not part of @concurry//workers (it links gRPC): the message says so.
  EXPECT_EQ(InvalidOptionMessage([] { Worker<Counter>::Create({.mode = Mode::kRemote}); }),
            "worker options: Mode::kRemote needs @concurry//workers/remote in deps: its backend is "
            "not linked into this binary (linked: thread, coroutine); it is not part of "
            "@concurry//workers, so that programs without remote workers link no gRPC");
  // A mode that exists but is not linked here names its target instead.
  EXPECT_THAT(InvalidOptionMessage([] { Worker<Counter>::Create({.mode = Mode::kProcess}); }),
              HasSubstr("Mode::kProcess needs @concurry//workers/process in deps"));
}

TEST(WorkerBackendTest, BadOptionsAreStillReportedFirst) {
  // An invalid option is the more specific error: it is reported whatever the mode.
  EXPECT_THAT(InvalidOptionMessage(
                  [] { Worker<Counter>::Create({.mode = Mode::kTbb, .max_queued_tasks = 0}); }),
              HasSubstr("max_queued_tasks for mode tbb is 0"));
  EXPECT_THAT(InvalidOptionMessage([] { Worker<Counter>::Create({.mode = static_cast<Mode>(9)}); }),
              HasSubstr("mode: unknown value 9"));
}

TEST(WorkerBackendTest, ABackendDefinedOutsideWorkersPlugsInWithoutChangesToTheCore) {
  const int before = test_drains.load();
  Worker<Counter> w = Worker<Counter>::Create({.mode = Mode::kCoroutine});
  EXPECT_EQ(w.Call(&Counter::Add, 3).Result(), 3);
  EXPECT_EQ(w.Call(&Counter::Add, 4).Result(), 7);
  EXPECT_GE(test_drains.load() - before, 3);  // The construction and both calls.
  EXPECT_EQ(w.Stats().queued, 0);
  EXPECT_TRUE(w.Stop());
  EXPECT_THROW(w.Call(&Counter::Add, 1).Result(), StoppedError);
  // The backend's own check runs at Create.
  EXPECT_EQ(InvalidOptionMessage(
                [] { Worker<Counter>::Create({.mode = Mode::kCoroutine, .max_queued_tasks = 4}); }),
            "CountingBackend: max_queued_tasks is not supported");
}

TEST(WorkerBackendTest, ASecondBackendForAModeIsIgnored) {
  static const CountingBackend second;
  const WorkerBackend* first = FindWorkerBackend(Mode::kCoroutine);
  EXPECT_TRUE(RegisterWorkerBackend(second));
  EXPECT_EQ(FindWorkerBackend(Mode::kCoroutine), first);
}

}  // namespace
}  // namespace concurry

// Races on a Mode::kCoroutine worker: threads completing the futures its coroutines await, callers
// cancelling the calls, new calls arriving and Stop, all at once. Run under --config=tsan.

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "futures/coro.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "gtest/gtest.h"
#include "testing/test_concurrent.h"
#include "testing/watchdog.h"
#include "workers/options.h"
#include "workers/worker.h"

namespace concurry::coroutine_stress_test {
namespace {

class Relay {
 public:
  Coro<int> Await(Future<int> input) {
    const int value = co_await std::move(input);
    co_await Yield();
    co_return value;
  }
  int Plain(int x) { return x; }
};

// Why `call` did not end as a call to a worker that may be cancelled or stopped can, or "" when
// it did: with `value`, cancelled (before it started), or failed with CancelledError (a coroutine
// cancelled at its await) or StoppedError (posted after the stop).
std::string HowItEndedWrong(Future<int>& call, int value) {
  if (!call.Done()) return "not done";
  if (call.Cancelled()) return "";
  if (std::exception_ptr error = call.Error()) {
    try {
      std::rethrow_exception(error);
    } catch (const StoppedError&) {
      return "";
    } catch (const CancelledError&) {
      return "";
    } catch (const std::exception& e) {
      return absl::StrCat("failed with ", e.what());
    } catch (...) {
      return "failed with a non-std exception";
    }
  }
  const int result = call.Result();
  return result == value ? "" : absl::StrCat("returned ", result);
}

TEST(CoroutineStressTest, CompletionsCancelsCallsAndStopRace) {
  testkit::Watchdog watchdog(absl::Seconds(240), "the coroutine stress test");
  constexpr int kCalls = 16;
  std::optional<Worker<Relay>> w;
  std::vector<Promise<int>> inputs;
  std::vector<Future<int>> calls;
  std::vector<Future<int>> late;
  testkit::TestConcurrent(
      /*iterations=*/200,
      /*before=*/
      [&] {
        w.emplace(Worker<Relay>::Create(
            {.mode = Mode::kCoroutine, .unwrap_futures = false, .max_in_flight_coroutines = 4}));
        inputs = std::vector<Promise<int>>(kCalls);
        calls.clear();
        late.clear();
        for (int i = 0; i < kCalls; ++i)
          calls.push_back(w->Call(&Relay::Await, inputs[i].GetFuture()));
      },
      /*after=*/
      [&] {
        EXPECT_TRUE(w->Stop(absl::Seconds(30)));
        for (int i = 0; i < kCalls; ++i) EXPECT_EQ(HowItEndedWrong(calls[i], i), "") << i;
        for (size_t i = 0; i < late.size(); ++i) {
          EXPECT_EQ(HowItEndedWrong(late[i], static_cast<int>(i)), "") << i;
        }
        w.reset();
      },
      {
          [&] {
            for (int i = 0; i < kCalls; ++i) inputs[i].SetValue(i);
          },
          [&] {
            for (int i = 0; i < kCalls; i += 3) calls[i].Cancel();
          },
          [&] {
            for (int i = 0; i < 8; ++i) {
              late.push_back(w->Call(&Relay::Await, MakeReadyFuture(i)));
              if (i % 2 == 0) (void)w->Call(&Relay::Plain, i);
            }
          },
          [&] { w->Stop(absl::ZeroDuration()); },
      });
}

}  // namespace
}  // namespace concurry::coroutine_stress_test

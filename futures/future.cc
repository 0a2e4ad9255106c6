#include "futures/future.h"

#include <memory>
#include <utility>

namespace concurry {

bool AnyFuture::Wait(absl::Duration timeout, Clock& clock) const {
  futures_internal::StateBase* state = Checked("Wait");
  futures_internal::CheckTimeout(timeout, "AnyFuture::Wait");
  if (state->done()) return true;
  return state->WaitUntil(clock, futures_internal::DeadlineAfter(clock, timeout, "AnyFuture::Wait"),
                          "AnyFuture::Wait");
}

std::exception_ptr AnyFuture::Error(absl::Duration timeout, Clock& clock) const {
  futures_internal::StateBase* state = Checked("Error");
  if (!Wait(timeout, clock)) futures_internal::ThrowTimeout("AnyFuture::Error", timeout);
  return state->error();
}

absl::Status AnyFuture::Status(absl::Duration timeout, Clock& clock) const noexcept {
  try {
    return futures_internal::WaitStatus(Checked("Status"), "AnyFuture::Status", timeout, clock);
  } catch (...) {
    return StatusFromException(std::current_exception());
  }
}

namespace {
futures_internal::CallbackNode* NewCallbackNode(absl::AnyInvocable<void()> callback) {
  return new futures_internal::CallbackNode{
      [cb = std::move(callback)](futures_internal::StateBase&) mutable { cb(); }};
}
}  // namespace

void AnyFuture::AddDoneCallback(absl::AnyInvocable<void()> callback) const {
  Checked("AddDoneCallback")->AddOrRunCallback(NewCallbackNode(std::move(callback)));
}

AnyFuture::CallbackHandle AnyFuture::AddCallbackIfPending(
    absl::AnyInvocable<void()> callback) const {
  futures_internal::StateBase* state = Checked("AddCallbackIfPending");
  std::unique_ptr<futures_internal::CallbackNode> node(NewCallbackNode(std::move(callback)));
  if (!state->AddCallback(node.get())) return nullptr;
  return node.release();
}

bool AnyFuture::RemoveCallback(CallbackHandle handle) const {
  if (handle == nullptr) return false;
  return Checked("RemoveCallback")->RemoveCallback(handle);
}

bool AnyFuture::WaitWouldSelfDeadlock() const {
  return Checked("WaitWouldSelfDeadlock")->WaitWouldSelfDeadlock();
}

namespace {
class InlineExecutorImpl final : public Executor {
 public:
  void Submit(Task task) override { task(); }
};
}  // namespace

Executor& InlineExecutor() {
  static InlineExecutorImpl* const executor = new InlineExecutorImpl();
  return *executor;
}

}  // namespace concurry

// The object of a worker whose calls cross a byte boundary (WorkerBackend::encodes_calls():
// Mode::kLoopback, Mode::kProcess). The actor holds an EncodedObject instead of a T: calls reach
// it as a registered method name and EncodeCall bytes, and come back as reply bytes. Where the T
// really lives is the backend's business: in this process (LocalEncodedObject, the default of
// WorkerBackend::MakeEncodedObject), in a child process, on another host.

#ifndef CONCURRY_WORKERS_INTERNAL_ENCODED_OBJECT_H_
#define CONCURRY_WORKERS_INTERNAL_ENCODED_OBJECT_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "futures/future.h"
#include "workers/registration.h"

namespace concurry::workers_internal {

class EncodedObject {
 public:
  virtual ~EncodedObject() = default;

  // Sends one call of the registered method `method` with `args` (EncodeCall bytes). Returns a
  // future for the reply bytes (EncodeReply / EncodeErrorReply), which fails instead when no
  // reply can come (the worker's process died: CrashedError). Called in the actor's context, one
  // call at a time in FIFO order; the calls may be pipelined (the next one is sent before the
  // previous reply arrives), and replies complete in the order of the calls.
  virtual Future<std::string> Invoke(absl::string_view method, std::string args) = 0;
  // Sends the calls Invoke has queued, for a backend that batches them (the actor's context
  // flushes after each drain, and before waiting for a reply).
  virtual void Flush() {}
  // Right after Invoke, on the same thread: something that thread can run, if it waits for the
  // reply, to fetch the reply itself (futures/internal/wait_driver.h), or null.
  virtual std::shared_ptr<futures_internal::WaitDriver> TakeWaitDriver() { return nullptr; }
};

// An object of a registered class that lives in this process: the calls still go through bytes
// (Mode::kLoopback), so the class is checked for other processes.
class LocalEncodedObject final : public EncodedObject {
 public:
  // Builds the object from `ctor` (EncodeConstructor bytes); throws what the constructor threw.
  LocalEncodedObject(const EncodedClass& cls, absl::string_view ctor)
      : cls_(cls), object_(cls.construct(ctor)) {}
  ~LocalEncodedObject() override { cls_.destroy(object_); }
  LocalEncodedObject(const LocalEncodedObject&) = delete;
  LocalEncodedObject& operator=(const LocalEncodedObject&) = delete;

  Future<std::string> Invoke(absl::string_view method, std::string args) override {
    return cls_.invoke(object_, method, args);
  }

 private:
  const EncodedClass& cls_;
  void* const object_;
};

}  // namespace concurry::workers_internal

#endif  // CONCURRY_WORKERS_INTERNAL_ENCODED_OBJECT_H_

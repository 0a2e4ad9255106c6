// What a worker method can ask about the call it is running. C++ cannot stop a running function
// from outside, so cancelling a call that has started is cooperative: Future::Cancel() asks, and a
// long method that wants to honour it looks now and then, as with std::stop_token.
//
//   int Crunch(int rounds) {
//     for (int i = 0; i < rounds; ++i) {
//       if (concurry::this_call::CancelRequested()) return -1;  // The caller no longer waits.
//       Step(i);
//     }
//     return rounds;
//   }

#ifndef CONCURRY_WORKERS_THIS_CALL_H_
#define CONCURRY_WORKERS_THIS_CALL_H_

namespace concurry::this_call {

// Returns whether the worker call that the calling thread runs was cancelled after it started:
// its future was cancelled (Future::Cancel(), or Mode::kRemote's call_timeout, which cancels the
// call on the host). A call cancelled before it started never runs. The method decides what to
// do; whatever it returns is dropped, because the caller's future is cancelled already.
//
// Holds in every mode: sync, thread, tbb and loopback calls see the caller's future; calls in a
// worker process (Mode::kProcess) and on a worker host (Mode::kRemote) see the cancellation the
// caller's side sends once it arrives. In a method returning Coro<T> on a Mode::kCoroutine worker
// it holds in every step of the coroutine (after each co_await too), and is also true once the
// worker's Stop cancelled the coroutine; a top-level coroutine that the method starts on the
// worker's loop (Spawn on CurrentCoroutineExecutor()) sees its own cancellation the same way (its
// future cancelled, or the worker's Stop), not the call's. Returns false outside a worker call, in
// threads the method starts itself, and in coroutine steps that run on another executor.
//
// Thread-safe; cheap (a thread-local read and one atomic load), so it can be asked often.
bool CancelRequested() noexcept;

}  // namespace concurry::this_call

#endif  // CONCURRY_WORKERS_THIS_CALL_H_

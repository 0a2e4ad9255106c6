// Built-in ThreadSanitizer suppressions for tests that use absl::Mutex (linked in by
// //testing:tsan_suppressions; inert without -fsanitize=thread).
//
//   cc_test(name = "my_stress_test", deps = ["//testing:tsan_suppressions", ...])
//
// Abseil 20220623's Mutex hides its internal synchronization from TSan, so when a thread's
// per-thread semaphore is created (inside its first blocking Mutex call) and another thread later
// posts to it to wake it, TSan reports a race between the two that cannot happen
// (google/sanitizers#953, abseil/abseil-cpp#217). Only races with a stack through that semaphore
// post are suppressed: it touches Abseil's per-thread state, never user memory.

#if defined(__SANITIZE_THREAD__)
#define CONCURRY_TESTING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONCURRY_TESTING_TSAN 1
#endif
#endif

#ifdef CONCURRY_TESTING_TSAN
// TSan reads this (weak in the runtime) once at start-up; the TSAN_OPTIONS `suppressions=` file,
// if any, is applied as well.
extern "C" const char* __tsan_default_suppressions() {
  return "race:synchronization_internal::Waiter::Post\n";
}
#endif

// The in-process engine behind LimitSet (limits/limit_set.h) for LimitSharing::kThreads and
// kProcesses: one LimitSetBackend whose memory block lives on the heap or in a memfd. Split by
// concept: the set's state, lock and wake-ups (set_state.cc), taking and giving back units
// (set_acquire.cc) and AcquireAsync()'s helper thread (set_async.cc); validation is the base
// class's (limit_set_backend.cc). Internal to //limits:limit_set.
//
//   std::shared_ptr<LimitSetBackend> impl = SetImpl::Make(limits, options);
//   LimitAcquisition acquired =
//       impl->Acquire(impl, {{"tokens", 10}}, absl::InfiniteDuration(), /*try_once=*/false);

#ifndef CONCURRY_LIMITS_INTERNAL_SET_IMPL_H_
#define CONCURRY_LIMITS_INTERNAL_SET_IMPL_H_

#include <sys/types.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "limits/internal/async_helper.h"
#include "limits/internal/backoff_lock.h"
#include "limits/internal/process_shared.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_validation.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/limit_set_backend.h"

namespace concurry {
namespace limits_internal {

// Layout::hot_offsets of a limit without a hot word.
inline constexpr size_t kNoHotWord = static_cast<size_t>(-1);

// "No time helps": a wait that only a release or a new queue head can end.
inline constexpr int64_t kNoTime = std::numeric_limits<int64_t>::max();

// The state every process (or thread) of a set shares, in its memory block (at its start for
// kProcesses; see ComputeLayout() for kThreads). The atomics are read without the set's lock;
// every other field is guarded by it (SetImpl::lock_).
//
// The kThreads lock comes first, and the fields an acquisition reads or changes (generation,
// waiters, queued, holding, acquisitions, references) follow it in the first 40 bytes
// (kHotHeaderBytes, asserted below). A kThreads set puts them at the
// end of the block's first cache line, after the hot words (up to 3 GCRA words and resource
// counts, see ComputeLayout()), so that a contended acquisition moves one line between cores for
// all of them. The kProcesses mutex, which a kThreads set never touches, goes last.
struct Header {
  // kThreads: the set's lock.
  BackoffLock spin;
  std::atomic<uint32_t> generation{0};  // Bumped (and futex-woken) when waiters should re-check.
  int32_t waiters = 0;                  // Acquirers blocked now.
  int32_t queued = 0;                   // FIFO tickets in the queue.
  int64_t holding = 0;
  int64_t acquisitions = 0;  // Under the lock (the hot path's counter), unlike the rare ones below.
  // kThreads: the acquisitions that keep the set alive by being counted here (see
  // LimitAcquisition::set_), from their take to their destruction.
  int64_t references = 0;
  // Not written by an uncontended acquisition from here on.
  uint64_t next_ticket = 1;
  int64_t last_recovery_ns = 0;
  std::atomic<int64_t> timeouts{0};
  std::atomic<int64_t> missing_updates{0};
  std::atomic<int64_t> overuse_reports{0};
  std::atomic<int64_t> recovered{0};
  RobustMutex mutex;  // kProcesses: the set's lock.
};
// The bytes of Header an uncontended acquisition writes (spin to references).
inline constexpr size_t kHotHeaderBytes = 40;
// The hot words a kThreads set keeps in front of its header, in the same cache line.
inline constexpr size_t kHotWords = (64 - kHotHeaderBytes) / 8;
// What ComputeLayout() relies on: the header placed after kHotWords words (8-aligned) keeps the
// fields from the lock to `references` in the block's first cache line, and the cold ones after.
static_assert(std::is_standard_layout_v<Header>, "offsetof below needs a standard layout");
static_assert(alignof(Header) <= 8, "the header is placed at an 8-aligned offset");
static_assert(offsetof(Header, spin) == 0);
static_assert(offsetof(Header, references) + sizeof(Header::references) == kHotHeaderBytes,
              "the fields an uncontended acquisition writes end at kHotHeaderBytes");
static_assert(offsetof(Header, next_ticket) == kHotHeaderBytes,
              "the first field after the hot ones starts the cold part");
static_assert(kHotWords * 8 + kHotHeaderBytes == 64, "hot words and hot header fill one line");

// A thread that holds (or held) acquisitions. Followed by one double per resource limit: the
// units it holds. Guarded by the set's lock.
struct Holder {
  pid_t pid = 0;  // 0: never used.
  pid_t tid = 0;
  uint64_t start_time = 0;  // Of process `pid`, to tell a reused id.
  int64_t acquisitions = 0;
  // Of `acquisitions`, those made by this thread with Acquire()/TryAcquire(): while it has any,
  // it skips the FIFO queue (see LimitFairness::kFifo).
  int64_t exempting = 0;
  int32_t waiting = 0;  // Its part of Header::waiters, taken back if the process dies.
};

// A waiting acquirer's place in the FIFO queue. Guarded by the set's lock.
struct Ticket {
  uint64_t number = 0;
  pid_t pid = 0;
  uint64_t start_time = 0;
};

// The in-process engine behind LimitSet handles and acquisitions (kThreads and kProcesses sets,
// and the no-op set). Thread-safe (and, for kProcesses, process-safe): every method locks what it
// touches.
//
// Lifetime: handles (LimitSet, AcquireAsync()'s requests and helper) share a std::shared_ptr
// whose deleter is OnLastHandle(); acquisitions of a kThreads set with limits are counted in
// Header::references instead, under the set's lock. The set is destroyed when the last handle is
// gone and the count is 0, by whichever of the two sees that under the lock.
//
// Aligned to a cache line so that the fields every acquisition reads do not share a line with
// whatever is allocated next to it.
class alignas(64) SetImpl final : public LimitSetBackend,
                                  public std::enable_shared_from_this<SetImpl> {
 public:
  // A new set behind a handle (see the class comment for its lifetime); the arguments are the
  // constructor's.
  static std::shared_ptr<SetImpl> Make(std::vector<Limit> limits, LimitSetOptions options,
                                       int attach_fd = -1);

  // A new set. With `attach_fd` >= 0 (a kProcesses set with limits only), a set running on the
  // state another process created behind that memfd instead: nothing is initialized, the fd is
  // duplicated (the caller keeps its own). InvalidOptionError when the fd's memory does not fit
  // `limits` and `options` (its size, the rate states' parameters).
  SetImpl(std::vector<Limit> limits, LimitSetOptions options, int attach_fd = -1);
  ~SetImpl() override;

  SetImpl(const SetImpl&) = delete;
  SetImpl& operator=(const SetImpl&) = delete;

  // SetAccess::HasHotWord(): whether limit `index`'s TAT or resource count shares the cache line
  // of the set's lock.
  bool HasHotWord(size_t index) const {
    const LimitInfo& info = info_[index];
    const void* word = info.tat != nullptr ? static_cast<const void*>(info.tat)
                                           : static_cast<const void*>(info.in_use);
    return word != nullptr && reinterpret_cast<uintptr_t>(word) / 64 ==
                                  reinterpret_cast<uintptr_t>(&header_->spin) / 64;
  }
  // Takes the request's items and returns the acquisition, waiting until `deadline` on the
  // clock; InfinitePast() means "try once" (no timeout counted). Returns an empty acquisition
  // (not held()) if it could not. `exempt_when_holding`: a thread holding an acquisition of the
  // set made with Acquire()/TryAcquire() skips the FIFO queue.
  LimitAcquisition Take(const Request& request, absl::Time deadline, bool exempt_when_holding);
  // The blocking and trying entry points of LimitSet: validates `request` straight into the
  // acquisition (no copy of the items) and takes it, waiting up to `timeout` (`try_once`: no
  // wait). `self` is this set's handle, copied into the acquisition.
  LimitAcquisition Acquire(const std::shared_ptr<LimitSetBackend>& self,
                           absl::Span<const LimitAmount> request, absl::Duration timeout,
                           bool try_once) override;

  // Acquire() of a prepared request (checked by CheckPrepared()).
  LimitAcquisition AcquirePrepared(const std::shared_ptr<LimitSetBackend>& self,
                                   const PreparedLimitRequest& request, absl::Duration timeout,
                                   bool try_once) override;
  // Gives back what `acquisition` holds. With `drop`, also lets go of the reference a counted
  // acquisition holds (see LimitAcquisition::set_), after its own last use of the set; returns
  // whether that was the set's last one (then the caller deletes the set). The
  // caller must not use the set after a `drop` unless this returned true: another thread may
  // destroy it at once.
  bool Release(LimitAcquisition& acquisition, bool drop) noexcept override;
  // Lets go of the reference a counted acquisition held after its release; destroys the set if
  // it was the last one and no handle is left.
  void DropReference() noexcept override;
  // Charges the over-use of usages recorded by Update() (see LimitSetBackend::RecordUsage()).
  void RecordUsage(Item* const* targets, const double* amounts, size_t count) override;

  // Wakes every blocked acquirer so it re-checks (capacity came back, the queue head changed,
  // an interrupt was raised).
  void Notify();

  LimitSetStats Stats() override;

  Future<LimitAcquisition> AcquireAsync(Request request, absl::Time deadline) override;

  Clock& clock() const override { return clock_; }
  // kProcesses: the memfd behind the shared state (owned by the set), else -1.
  int fd() const { return block_.fd; }
  size_t block_bytes() const { return block_.bytes; }
  // The bytes of the memory block of a kProcesses set of `limits` with `max_holders`.
  static size_t LayoutBytes(const std::vector<Limit>& limits, int max_holders) {
    return ComputeLayout(limits, max_holders, /*line_per_holder=*/false).bytes;
  }
  void CountMissingUpdate() noexcept override {
    header_->missing_updates.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  // The helper thread of AcquireAsync() and its queue; shared with the thread so that it outlives
  // the set when the set is destroyed on that thread.
  struct AsyncRequest {
    Request request;
    absl::Time deadline;
    Promise<LimitAcquisition> promise;
    std::shared_ptr<std::atomic<bool>> cancelled;
    uint64_t ticket = 0;  // Its place in the FIFO queue, kept until it is served or leaves.
    // Keeps the set alive from AcquireAsync() until the helper thread's own reference takes over
    // (RunAsync()): acquisitions counted in the set do not, so the caller's handle may be the
    // last one.
    std::shared_ptr<SetImpl> set;
  };
  struct AsyncQueue {
    absl::Mutex mu;
    std::deque<AsyncRequest> incoming ABSL_GUARDED_BY(mu);
    bool shutdown ABSL_GUARDED_BY(mu) = false;
    // Raised (followed by Notify()) by a new request or a cancellation, so that a waiting helper
    // looks at its requests again.
    std::atomic<bool> interrupt{false};
    std::thread thread;
    pid_t pid = 0;  // Process that started `thread`.
    // Used by the helper thread only: the requests it waits for, and whether it is counted in
    // Header::waiters (it is, once, while it has any).
    std::list<AsyncRequest> pending;
    bool registered = false;
    int32_t slot = -1;
  };
  using AsyncCompletions = limits_internal::AsyncCompletions<LimitAcquisition>;
  // Gives back everything `acquisition` holds, unused (its future was cancelled).
  static void GiveBackUnused(LimitAcquisition& acquisition);
  static void RunAsync(std::shared_ptr<AsyncQueue> queue);
  // One round of the helper: tries every pending request in order (each keeps its FIFO ticket)
  // and ends the served, expired and withdrawn ones. If requests are left, completes the ended
  // ones and waits until something changes; otherwise returns them for RunAsyncHelper() to
  // complete after it let go of the set.
  AsyncCompletions ServeAsync(AsyncQueue& queue);

  // The set's lock: a spin lock in-process (inline: it is taken twice per acquisition), the
  // robust mutex in shared memory.
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION(lock_) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!shared_) {
      header_->spin.Lock();
    } else {
      LockShared();
    }
  }
  void Unlock() ABSL_UNLOCK_FUNCTION(lock_) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!shared_) {
      header_->spin.Unlock();
    } else {
      header_->mutex.Unlock();
    }
  }
  // Lock() of a kProcesses set: also repairs what a process that died holding it left.
  void LockShared() ABSL_NO_THREAD_SAFETY_ANALYSIS;
  class ABSL_SCOPED_LOCKABLE Locked {
   public:
    explicit Locked(SetImpl* set) ABSL_EXCLUSIVE_LOCK_FUNCTION(set->lock_) : set_(set) {
      set_->Lock();
    }
    ~Locked() ABSL_UNLOCK_FUNCTION() { set_->Unlock(); }

   private:
    SetImpl* set_;
  };

  // The clock, without the virtual call for the real one (the hot path reads it once or twice).
  absl::Time Now() const { return real_clock_ ? absl::Now() : clock_.Now(); }
  // In ns since the epoch, for the rate algorithms. The real clock's reading as it comes: no
  // round trip through absl::Time (a division and an out-of-line conversion per read).
  int64_t NowNs() const {
    return real_clock_ ? absl::GetCurrentTimeNanos() : absl::ToUnixNanos(clock_.Now());
  }
  // Reads the clock once as both absl::Time (deadlines) and ns (the algorithms).
  void ReadClock(absl::Time* time, int64_t* ns) const {
    if (real_clock_) {
      *ns = absl::GetCurrentTimeNanos();
      *time = absl::FromUnixNanos(*ns);
    } else {
      *time = clock_.Now();
      *ns = absl::ToUnixNanos(*time);
    }
  }
  // Takes the request's items (already in `result`) as Take() does; clears them if it could not.
  void TakeInto(const std::shared_ptr<LimitSetBackend>& self, bool nested, absl::Time deadline,
                bool exempt_when_holding, LimitAcquisition& result);
  Holder& holder(int32_t slot) const {
    return *reinterpret_cast<Holder*>(holders_ + static_cast<size_t>(slot) * holder_stride_);
  }
  double* held(int32_t slot) const { return reinterpret_cast<double*>(&holder(slot) + 1); }

  // Returns this thread's holder slot, claiming one; -1 if all are in use.
  int32_t HolderSlotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // HolderSlotLocked() past its cache: finds this thread's slot or claims one.
  ABSL_ATTRIBUTE_NOINLINE int32_t ClaimHolderSlotLocked(pid_t pid, pid_t tid)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // One attempt for holder `slot`, in FIFO order through `*ticket` (0: not queued; `exempt`
  // skips the queue): takes `items` and returns 0, or returns the ns until a retry could succeed
  // (kNoTime when only a release or a new queue head helps). With `enqueue`, a request that could
  // not go takes a ticket. Sets `*notify` when waiters should look again.
  int64_t AttemptLocked(int64_t now, const Items& items, int32_t slot, bool exempt,
                        uint64_t* ticket, bool enqueue, bool* notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Gives up `*ticket` (if any), setting `*notify` if others wait.
  void LeaveQueueLocked(uint64_t* ticket, bool* notify) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Takes `items` now and returns 0, or returns the ns until they could all be taken (kNoTime
  // when some resource is short: only a release helps). `*resource_short` tells which. Defined
  // inline in set_acquire.cc: callable only there.
  int64_t TryTakeLocked(int64_t now, const Items& items, int32_t slot, bool* resource_short)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  uint64_t AddTicketLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void RemoveTicketLocked(uint64_t ticket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  uint64_t HeadTicketLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // kProcesses: gives back what dead processes held and drops their tickets. Returns whether
  // anything changed. `stamp`: this counts as the periodic check (see lease_check_interval).
  bool RecoverDeadLocked(bool stamp = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // kProcesses, after a process died inside the lock: recomputes the totals (resource units in
  // use, acquisitions held, waiters) from the holder slots, which a half-done change cannot
  // have made inconsistent with themselves.
  void RebuildTotalsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // Blocks until the generation moves past `generation`, `*interrupt`, or `wake`.
  void Wait(uint32_t generation, absl::Time wake, const std::atomic<bool>* interrupt);

  // Where each part of the memory block starts, from the limits, max_holders and sharing alone, so
  // that every process that attaches computes the creator's layout.
  struct Layout {
    size_t header_offset = 0;          // kThreads: after the hot words (kHotWords).
    std::vector<size_t> rate_offsets;  // Per limit; 0 for resources.
    // kThreads, per limit: the offset of its hot word (a GCRA limit's TAT or a resource's
    // count), or kNoHotWord.
    std::vector<size_t> hot_offsets;
    size_t in_use_offset = 0;
    size_t holders_offset = 0;
    size_t holder_stride = 0;
    size_t holder_count = 0;
    size_t tickets_offset = 0;
    size_t bytes = 0;
  };
  // `line_per_holder`: each holder slot starts a cache line (kThreads).
  static Layout ComputeLayout(const std::vector<Limit>& limits, int max_holders,
                              bool line_per_holder);
  // The attach path of the constructor: maps `fd` (duplicated) and points into it.
  void Attach(const Layout& layout, int fd);
  Clock& clock_;
  const bool real_clock_;  // `clock_` is Clock::Real(): Now() calls absl::Now() directly.
  const bool shared_;
  const int64_t lease_ns_;  // options_.lease_check_interval in ns.
  // Acquisitions made by Acquire() and TryAcquire() are counted in Header::references rather
  // than holding a handle: a kThreads set with limits.
  const bool counts_references_;
  bool orphaned_ ABSL_GUARDED_BY(lock_) = false;  // The last handle is gone.
  std::vector<int32_t> resource_index_;  // Per limit: index among the resource limits, or -1.
  int32_t num_resources_ = 0;

  // The hot TAT of `info` (whose `tat` is set) and the units held of a resource `info`: the
  // annotated way to them, since LimitInfo's pointers (LimitSetBackend::info_, filled by
  // BuildInfo(): into the memory block, so guarded by the set's lock like rates_) cannot name the
  // set's lock.
  int64_t& TatLocked(const LimitInfo& info) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return *info.tat;
  }
  double& InUseLocked(const LimitInfo& info) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    return *info.in_use;
  }
  // The deleter of the handles' shared_ptr: destroys the set unless counted acquisitions remain.
  static void OnLastHandle(SetImpl* set);
  // Lets go of a counted acquisition's reference; returns whether the set is to be destroyed
  // (the count is 0 and no handle is left).
  bool DropReferenceGetLast() ABSL_LOCKS_EXCLUDED(lock_);
  // Fills info_'s engine pointers once the rate states exist, then the cost caches.
  void BuildInfo(const Layout& layout);
  // The rate state of limit `index` (one with a hot TAT word, `info_[index].tat`), its own
  // unused word set to the hot one's value, for what the hot path does not do itself (statistics,
  // over-use charges) with no allocation under the lock. A caller that changes the state copies
  // the TAT back with CopyBackHotTatLocked().
  RateState* HotRateStateLocked(size_t index) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    const LimitInfo& info = info_[index];
    info.gcra->SetExclusive(TatLocked(info));
    return info.rate;
  }
  void CopyBackHotTatLocked(size_t index) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    const LimitInfo& info = info_[index];
    TatLocked(info) = info.gcra->TatExclusive();
  }
  // The memory block (header, rate states, resource counts, holders, tickets) and, for
  // kProcesses, the memfd behind it. Its own destructor frees them, so that a constructor that
  // throws once it has them (~SetImpl does not run then) does not leak them either.
  struct OwnedBlock {
    OwnedBlock() = default;
    OwnedBlock(const OwnedBlock&) = delete;
    OwnedBlock& operator=(const OwnedBlock&) = delete;
    ~OwnedBlock();

    void* memory = nullptr;  // Null until allocated (or mapped).
    size_t bytes = 0;
    int fd = -1;
    // Whether `memory` is mapped shared memory (kProcesses), else from ::operator new aligned to
    // 64.
    bool shared = false;
  };
  OwnedBlock block_;
  // Atomics are read without the lock; the other fields are guarded by it.
  Header* header_ = nullptr;
  std::vector<RateState*> rates_ ABSL_PT_GUARDED_BY(lock_);  // Per limit; null for resources.
  double* in_use_ ABSL_PT_GUARDED_BY(lock_) = nullptr;       // Per limit: resource units held.
  char* holders_ ABSL_PT_GUARDED_BY(lock_) = nullptr;
  size_t holder_stride_ = 0;
  Ticket* tickets_ ABSL_PT_GUARDED_BY(lock_) = nullptr;

  // Names the set's lock for the annotations: Lock() takes the header's spin lock or its mutex.
  class ABSL_LOCKABLE LockName {};
  LockName lock_;
  // kThreads: the mutex blocked acquirers wait with on the clock.
  absl::Mutex wait_mu_;

  absl::Mutex async_mu_;
  std::shared_ptr<AsyncQueue> async_ ABSL_GUARDED_BY(async_mu_);
};

}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_SET_IMPL_H_

#include "limits/limit_set.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <list>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "futures/internal/future_state.h"
#include "futures/internal/spin_lock.h"
#include "limits/internal/process_shared.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_access.h"
#include "limits/rate_window.h"

namespace concurry {

LimitUsageError::LimitUsageError(const std::string& message)
    : Error(absl::StatusCode::kFailedPrecondition, message) {}

namespace limits_internal {
namespace {

constexpr int64_t kNoTime = std::numeric_limits<int64_t>::max();

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The state every process (or thread) of a set shares, at the start of its memory block. The
// atomics are read without the set's lock; every other field is guarded by it (SetImpl::lock_).
struct Header {
  RobustMutex mutex;  // kProcesses.
  // kThreads: the set's lock, beside the counters it guards, so that a contended acquisition
  // moves one cache line fewer between cores.
  internal::SpinLock spin;
  std::atomic<uint32_t> generation{0};  // Bumped (and futex-woken) when waiters should re-check.
  int32_t waiters = 0;                  // Acquirers blocked now.
  int32_t queued = 0;                   // FIFO tickets in the queue.
  uint64_t next_ticket = 1;
  int64_t holding = 0;
  int64_t last_recovery_ns = 0;
  int64_t acquisitions = 0;  // Under the lock (the hot path's counter), unlike the rare ones below.
  std::atomic<int64_t> timeouts{0};
  std::atomic<int64_t> missing_updates{0};
  std::atomic<int64_t> overuse_reports{0};
  std::atomic<int64_t> recovered{0};
};

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

void WriteWarning(absl::string_view message) {
  std::fprintf(stderr, "concurry: warning: %.*s\n", static_cast<int>(message.size()),
               message.data());
}

std::atomic<uint64_t> next_set_id{1};

struct HolderCache {
  uint64_t set_id = 0;
  int32_t slot = -1;
};
thread_local HolderCache holder_cache;

}  // namespace

// The shared implementation behind LimitSet handles and acquisitions.
class SetImpl : public std::enable_shared_from_this<SetImpl> {
 public:
  using Item = LimitAcquisition::Item;
  using Items = absl::InlinedVector<Item, 4>;

  // A new set. With `attach_fd` >= 0 (a kProcesses set with limits only), a set running on the
  // state another process created behind that memfd instead: nothing is initialized, the fd is
  // duplicated (the caller keeps its own). InvalidOptionError when the fd's memory does not fit
  // `limits` and `options` (its size, the rate states' parameters).
  SetImpl(std::vector<Limit> limits, LimitSetOptions options, int attach_fd = -1);
  ~SetImpl();

  SetImpl(const SetImpl&) = delete;
  SetImpl& operator=(const SetImpl&) = delete;

  bool no_op() const { return limits_.empty(); }
  const std::vector<Limit>& limits() const { return limits_; }
  const LimitSetOptions& options() const { return options_; }

  // A validated request: the items to take, in limit order.
  struct Request {
    Items items;
    // The request named a limit with amount 0, i.e. it nests inside an acquisition that holds
    // that limit: it skips the FIFO queue, whose head may be waiting for what it holds.
    bool nested = false;
  };
  // Validates `request`.
  Request Prepare(absl::Span<const LimitAmount> request) const;
  // Validates `request` into `*items` (empty on entry) and returns whether it is nested (see
  // Request::nested).
  bool PrepareInto(absl::Span<const LimitAmount> request, Items* items) const;
  // Throws InvalidOptionError unless `amount` (> 0, finite) fits limit `index`: at most its
  // capacity, and whole (at most kMaxWholeUnits) for a limit that counts whole units. `implicit`:
  // the 1 taken for an unnamed CallLimit or ResourceLimit.
  void CheckAmount(size_t index, double amount, bool implicit) const;

  // Takes the request's items and returns the acquisition, waiting until `deadline` on the
  // clock; InfinitePast() means "try once" (no timeout counted). Returns an empty acquisition
  // (not held()) if it could not. `exempt_when_holding`: a thread holding an acquisition of the
  // set made with Acquire()/TryAcquire() skips the FIFO queue.
  LimitAcquisition Take(const Request& request, absl::Time deadline, bool exempt_when_holding);
  // The blocking and trying entry points of LimitSet: validates `request` straight into the
  // acquisition (no copy of the items) and takes it, waiting up to `timeout` (`try_once`: no
  // wait). `self` is this set's handle, copied into the acquisition.
  static LimitAcquisition Acquire(const std::shared_ptr<SetImpl>& self,
                                  absl::Span<const LimitAmount> request, absl::Duration timeout,
                                  bool try_once);

  // Applies `usage` to `acquisition` (validated first).
  void Update(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage);
  // Gives back what `acquisition` holds.
  void Release(LimitAcquisition& acquisition);

  void Warn(absl::string_view message) const {
    if (options_.on_warning) {
      options_.on_warning(message);
    } else {
      WriteWarning(message);
    }
  }

  // Wakes every blocked acquirer so it re-checks (capacity came back, the queue head changed,
  // an interrupt was raised).
  void Notify();

  LimitSetStats Stats();

  Future<LimitAcquisition> AcquireAsync(Request request, absl::Time deadline);

  Clock& clock() const { return clock_; }
  // kProcesses: the memfd behind the shared state (owned by the set), else -1.
  int fd() const { return fd_; }
  size_t block_bytes() const { return block_bytes_; }
  // The bytes of the memory block of a set of `limits` with `max_holders`.
  static size_t LayoutBytes(const std::vector<Limit>& limits, int max_holders) {
    return ComputeLayout(limits, max_holders).bytes;
  }
  void CountMissingUpdate() { header_->missing_updates.fetch_add(1, std::memory_order_relaxed); }

 private:
  // The helper thread of AcquireAsync() and its queue; shared with the thread so that it outlives
  // the set when the set is destroyed on that thread.
  struct AsyncRequest {
    Request request;
    absl::Time deadline;
    Promise<LimitAcquisition> promise;
    std::shared_ptr<std::atomic<bool>> cancelled;
    uint64_t ticket = 0;  // Its place in the FIFO queue, kept until it is served or leaves.
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
  static void RunAsync(std::weak_ptr<SetImpl> weak, std::shared_ptr<AsyncQueue> queue);
  // One round of the helper: tries every pending request in order (each keeps its FIFO ticket),
  // completes the served, expired and withdrawn ones, then waits until something changes.
  void ServeAsync(AsyncQueue& queue);

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
  void TakeInto(const std::shared_ptr<SetImpl>& self, bool nested, absl::Time deadline,
                bool exempt_when_holding, LimitAcquisition& result);
  Holder& holder(int32_t slot) const {
    return *reinterpret_cast<Holder*>(holders_ + static_cast<size_t>(slot) * holder_stride_);
  }
  double* held(int32_t slot) const { return reinterpret_cast<double*>(&holder(slot) + 1); }

  // Returns this thread's holder slot, claiming one; -1 if all are in use.
  int32_t HolderSlotLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
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
  // when some resource is short: only a release helps). `*resource_short` tells which.
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

  // Where each part of the memory block starts, from the limits and max_holders alone, so that
  // every process that attaches computes the creator's layout.
  struct Layout {
    std::vector<size_t> rate_offsets;  // Per limit; 0 for resources.
    size_t in_use_offset = 0;
    size_t holders_offset = 0;
    size_t holder_stride = 0;
    size_t holder_count = 0;
    size_t tickets_offset = 0;
    size_t bytes = 0;
  };
  static Layout ComputeLayout(const std::vector<Limit>& limits, int max_holders);
  // The attach path of the constructor: maps `fd` (duplicated) and points into it.
  void Attach(const Layout& layout, int fd);
  // "[key, ...]", for messages.
  std::string LimitKeys() const;

  const std::vector<Limit> limits_;
  const LimitSetOptions options_;
  Clock& clock_;
  const bool real_clock_;  // `clock_` is Clock::Real(): Now() calls absl::Now() directly.
  const bool shared_;
  const int64_t lease_ns_;  // options_.lease_check_interval in ns.
  const uint64_t id_;
  std::vector<int32_t> resource_index_;  // Per limit: index among the resource limits, or -1.
  int32_t num_resources_ = 0;

  // Per limit, what validation and the hot path need, in one flat array (rather than a walk
  // through Limit, RateState and resource_index_ per item): profiles showed the per-item lookups
  // and re-validation as a large share of an uncontended acquisition.
  struct LimitInfo {
    absl::string_view key;  // Into limits_.
    LimitKind kind = LimitKind::kRate;
    bool whole = false;        // Amounts must be whole units (resources, the window algorithms).
    bool implicit_ok = false;  // The implicit 1 passes CheckAmount().
    double burst = 0;          // Amounts above it are rejected.
    double capacity = 0;
    // Into the memory block, so guarded by the set's lock like rates_: the rate state (null for
    // a resource) and its GCRA word when it can be driven with plain stores under the lock.
    RateState* rate = nullptr;
    AtomicGcra* gcra = nullptr;
  };
  std::vector<LimitInfo> info_;
  // GCRA costs of the whole amounts 0..kCachedCosts per limit (row `index`, 0 unused): usual
  // requests and usages are small whole numbers, and their cost is then a load instead of a
  // division on every acquisition and every Update().
  static constexpr int kCachedCosts = 64;
  std::vector<int64_t> cached_costs_;
  // The GCRA cost of `amount` (> 0) for limit `index` (whose `gcra` is set).
  int64_t CostOf(size_t index, double amount) const {
    if (amount <= kCachedCosts && amount == std::floor(amount)) {
      return cached_costs_[index * (kCachedCosts + 1) + static_cast<size_t>(amount)];
    }
    return info_[index].rate->Cost(amount);
  }
  // Fills info_ once the rate states exist.
  void BuildInfo();

  // The memory block: header, rate states, resource counts, holders, tickets.
  void* block_ = nullptr;
  size_t block_bytes_ = 0;
  int fd_ = -1;  // kProcesses: the memfd behind `block_`, closed with the set.
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

SetImpl::SetImpl(std::vector<Limit> limits, LimitSetOptions options, int attach_fd)
    : limits_(std::move(limits)),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : Clock::Real()),
      real_clock_(&clock_ == &Clock::Real()),
      shared_(options_.sharing == LimitSharing::kProcesses),
      lease_ns_(absl::ToInt64Nanoseconds(options_.lease_check_interval)),
      id_(next_set_id.fetch_add(1, std::memory_order_relaxed)) {
  if (options_.fairness != LimitFairness::kFifo && options_.fairness != LimitFairness::kBarging) {
    throw InvalidOptionError(absl::StrCat("LimitSetOptions::fairness: unknown value ",
                                          static_cast<int>(options_.fairness),
                                          "; allowed: kFifo, kBarging"));
  }
  if (options_.sharing != LimitSharing::kThreads && options_.sharing != LimitSharing::kProcesses) {
    throw InvalidOptionError(absl::StrCat("LimitSetOptions::sharing: unknown value ",
                                          static_cast<int>(options_.sharing),
                                          "; allowed: kThreads, kProcesses"));
  }
  if (options_.max_holders < 1) {
    throw InvalidOptionError(
        absl::StrCat("LimitSet max_holders must be >= 1, got ", options_.max_holders));
  }
  if (shared_ && options_.clock != nullptr && options_.clock != &Clock::Real()) {
    throw InvalidOptionError(
        "LimitSet with LimitSharing::kProcesses uses the real clock (time must be the same in "
        "every process); leave LimitSetOptions::clock null");
  }
  if (options_.lease_check_interval <= absl::ZeroDuration()) {
    throw InvalidOptionError("LimitSet lease_check_interval must be positive");
  }
  absl::flat_hash_set<absl::string_view> keys;
  for (const Limit& limit : limits_) {
    if (!keys.insert(limit.key()).second) {
      throw InvalidOptionError(absl::StrCat("Duplicate limit key: '", limit.key(), "'"));
    }
  }
  for (const Limit& limit : limits_) {
    resource_index_.push_back(limit.kind() == LimitKind::kResource ? num_resources_++ : -1);
  }
  const Layout layout = ComputeLayout(limits_, options_.max_holders);
  holder_stride_ = layout.holder_stride;
  block_bytes_ = layout.bytes;

  if (attach_fd >= 0) {
    Attach(layout, attach_fd);
    BuildInfo();
    return;
  }
  if (shared_) {
    // A memfd rather than anonymous memory: besides the processes fork()ed from now on, a
    // process the fd is handed to can map the same state (ImportLimitPool).
    block_ = CreateShared("concurry-limit-set", block_bytes_, &fd_);
    if (block_ == nullptr) {
      throw CapacityError(absl::StrCat("LimitSet: could not create ", block_bytes_,
                                       " bytes of shared memory: ", std::strerror(errno)));
    }
  } else {
    block_ = ::operator new(block_bytes_, std::align_val_t(64));
    std::memset(block_, 0, block_bytes_);
  }
  char* base = static_cast<char*>(block_);
  header_ = new (base) Header();
  if (shared_) header_->mutex.Init();
  rates_.assign(limits_.size(), nullptr);
  for (size_t i = 0; i < limits_.size(); ++i) {
    if (limits_[i].kind() == LimitKind::kResource) continue;
    rates_[i] = RateState::Create(
        base + layout.rate_offsets[i], limits_[i].algorithm(), limits_[i].capacity(),
        absl::ToInt64Nanoseconds(limits_[i].window()), limits_[i].burst());
  }
  in_use_ = reinterpret_cast<double*>(base + layout.in_use_offset);
  holders_ = base + layout.holders_offset;
  for (size_t i = 0; i < layout.holder_count; ++i) new (holders_ + i * holder_stride_) Holder();
  tickets_ = reinterpret_cast<Ticket*>(base + layout.tickets_offset);
  BuildInfo();
}

void SetImpl::BuildInfo() {
  info_.resize(limits_.size());
  for (size_t i = 0; i < limits_.size(); ++i) {
    const Limit& limit = limits_[i];
    LimitInfo& info = info_[i];
    info.key = limit.key();
    info.kind = limit.kind();
    info.burst = limit.burst();
    info.capacity = limit.capacity();
    info.rate = rates_[i];
    info.gcra = info.rate != nullptr ? info.rate->exclusive_gcra() : nullptr;
    if (info.gcra != nullptr) {
      cached_costs_.resize(limits_.size() * (kCachedCosts + 1));
      for (int amount = 1; amount <= kCachedCosts; ++amount) {
        cached_costs_[i * (kCachedCosts + 1) + amount] = info.rate->Cost(amount);
      }
    }
    info.whole = info.rate == nullptr || info.rate->whole_amounts();
    info.implicit_ok = !(1 > limit.burst());
  }
}

SetImpl::Layout SetImpl::ComputeLayout(const std::vector<Limit>& limits, int max_holders) {
  Layout layout;
  size_t offset = RoundUp(sizeof(Header), 8);
  size_t num_resources = 0;
  layout.rate_offsets.assign(limits.size(), 0);
  for (size_t i = 0; i < limits.size(); ++i) {
    const Limit& limit = limits[i];
    if (limit.kind() == LimitKind::kResource) {
      ++num_resources;
      continue;
    }
    layout.rate_offsets[i] = offset;
    offset += RoundUp(RateState::BytesFor(limit.algorithm(), limit.capacity()), 8);
  }
  layout.in_use_offset = offset;
  offset += limits.size() * sizeof(double);
  layout.holders_offset = RoundUp(offset, 8);
  layout.holder_stride = RoundUp(sizeof(Holder) + num_resources * sizeof(double), 8);
  layout.holder_count = limits.empty() ? 0 : static_cast<size_t>(max_holders);
  offset = layout.holders_offset + layout.holder_count * layout.holder_stride;
  layout.tickets_offset = RoundUp(offset, 8);
  layout.bytes = layout.tickets_offset + layout.holder_count * sizeof(Ticket);
  return layout;
}

void SetImpl::Attach(const Layout& layout, int fd) {
  if (!shared_ || no_op()) {
    throw InvalidOptionError(
        "LimitSet: only a process-shared set with limits (LimitSharing::kProcesses) can attach "
        "to shared state");
  }
  const int64_t size = SharedFdBytes(fd);
  if (size < 0) {
    throw InvalidOptionError(
        absl::StrCat("LimitSet: cannot attach to fd ", fd, ": ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(size) != block_bytes_) {
    throw InvalidOptionError(absl::StrCat("LimitSet: the shared state behind fd ", fd, " has ",
                                          size, " bytes, but limits ", LimitKeys(),
                                          " with max_holders ", options_.max_holders, " need ",
                                          block_bytes_, "; the fd belongs to another set"));
  }
  // The caller keeps its fd; this set owns a duplicate for its lifetime, as a created set owns
  // its memfd.
  fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (fd_ < 0) {
    throw CapacityError(
        absl::StrCat("LimitSet: cannot duplicate fd ", fd, ": ", std::strerror(errno)));
  }
  block_ = MapSharedFd(fd_, block_bytes_);
  if (block_ == nullptr) {
    const int error = errno;
    close(fd_);
    fd_ = -1;
    throw CapacityError(absl::StrCat("LimitSet: could not map ", block_bytes_,
                                     " bytes of shared memory: ", std::strerror(error)));
  }
  // Pointers into the mapping only: the creator initialized everything (mutex, rate states,
  // holders), and the state holds no absolute addresses (RateState keeps offsets), so it is
  // valid at whatever address this process maps it.
  char* base = static_cast<char*>(block_);
  header_ = reinterpret_cast<Header*>(base);
  rates_.assign(limits_.size(), nullptr);
  for (size_t i = 0; i < limits_.size(); ++i) {
    if (limits_[i].kind() == LimitKind::kResource) continue;
    rates_[i] = reinterpret_cast<RateState*>(base + layout.rate_offsets[i]);
  }
  in_use_ = reinterpret_cast<double*>(base + layout.in_use_offset);
  holders_ = base + layout.holders_offset;
  tickets_ = reinterpret_cast<Ticket*>(base + layout.tickets_offset);
  // The parameters each rate state was created with must be this set's: a same-sized block of
  // another set would otherwise run with the wrong algorithm.
  for (size_t i = 0; i < limits_.size(); ++i) {
    const RateState* rate = rates_[i];
    if (rate == nullptr) continue;
    const Limit& limit = limits_[i];
    if (rate->algorithm() != limit.algorithm() || rate->capacity() != limit.capacity() ||
        rate->window_ns() != absl::ToInt64Nanoseconds(limit.window()) ||
        rate->burst() != limit.burst()) {
      UnmapShared(block_, block_bytes_);
      close(fd_);
      block_ = nullptr;
      fd_ = -1;
      throw InvalidOptionError(absl::StrCat("LimitSet: the shared state behind fd ", fd,
                                            " does not hold the state of ", limit.DebugString(),
                                            "; the fd belongs to another set"));
    }
  }
}

std::string SetImpl::LimitKeys() const {
  std::vector<absl::string_view> keys;
  for (const Limit& limit : limits_) keys.push_back(limit.key());
  return absl::StrCat("[", absl::StrJoin(keys, ", "), "]");
}

SetImpl::~SetImpl() {
  std::shared_ptr<AsyncQueue> queue;
  {
    absl::MutexLock lock(&async_mu_);
    queue = std::move(async_);
  }
  if (queue != nullptr) {
    if (queue->pid != CurrentPid()) {
      // A fork()ed child: the helper thread lives only in the parent. Leave its object alone.
      static_cast<void>(new std::shared_ptr<AsyncQueue>(std::move(queue)));
    } else {
      {
        absl::MutexLock lock(&queue->mu);
        queue->shutdown = true;
      }
      if (queue->thread.get_id() == std::this_thread::get_id()) {
        queue->thread.detach();  // The helper dropped the last reference; it exits on its own.
      } else {
        queue->thread.join();
      }
    }
  }
  if (shared_) {
    UnmapShared(block_, block_bytes_);
    close(fd_);
  } else {
    ::operator delete(block_, std::align_val_t(64));
  }
}

void SetImpl::LockShared() {
  if (header_->mutex.Lock()) {
    // A process died inside the lock. Take back what dead processes held (the dying one may not
    // look dead yet: then the next periodic check does it, so this one is not stamped), and
    // recompute the totals its half-done change may have left wrong.
    RecoverDeadLocked(/*stamp=*/false);
    RebuildTotalsLocked();
  }
}

void SetImpl::Notify() {
  if (shared_) {
    header_->generation.fetch_add(1, std::memory_order_seq_cst);
    FutexWakeAll(&header_->generation);
    return;
  }
  absl::MutexLock lock(&wait_mu_);
  header_->generation.fetch_add(1, std::memory_order_seq_cst);
}

void SetImpl::Wait(uint32_t generation, absl::Time wake, const std::atomic<bool>* interrupt) {
  if (shared_) {
    const absl::Duration timeout =
        wake == absl::InfiniteFuture() ? absl::InfiniteDuration() : wake - absl::Now();
    if (interrupt != nullptr && interrupt->load(std::memory_order_acquire)) return;
    FutexWait(&header_->generation, generation, timeout);
    return;
  }
  absl::MutexLock lock(&wait_mu_);
  const auto changed = [this, generation, interrupt]() {
    return header_->generation.load(std::memory_order_seq_cst) != generation ||
           (interrupt != nullptr && interrupt->load(std::memory_order_acquire));
  };
  clock_.AwaitWithDeadline(&wait_mu_, absl::Condition(&changed), wake);
}

void SetImpl::CheckAmount(size_t index, double amount, bool implicit) const {
  const Limit& limit = limits_[index];
  if (amount > limit.burst()) {
    throw InvalidOptionError(absl::StrCat(
        "Requested amount (", FormatNumber(amount), ") exceeds ",
        limit.explicit_burst() ? absl::StrCat("the burst (", FormatNumber(limit.burst()),
                                              ", capacity ", FormatNumber(limit.capacity()), ")")
                               : absl::StrCat("capacity (", FormatNumber(limit.capacity()), ")"),
        " for limit '", limit.key(), "'",
        implicit ? " (taken with 1 because the request does not name it)" : "",
        ". This request can never be fulfilled."));
  }
  if (implicit) return;  // 1 is whole.
  const bool resource = limit.kind() == LimitKind::kResource;
  if (!resource && !rates_[index]->whole_amounts()) return;
  const bool fraction = amount != std::floor(amount);
  if (fraction || amount > kMaxWhole) {
    throw InvalidOptionError(absl::StrCat(
        "LimitSet::Acquire: limit '", limit.key(), "' (",
        resource ? "a ResourceLimit" : RateLimitAlgorithmName(limit.algorithm()),
        ") counts whole units", fraction ? "" : absl::StrCat(", at most ", kMaxWholeUnits),
        ", got ", FormatNumber(amount),
        resource || !fraction ? "" : "; use TokenBucket or GCRA for fractions"));
  }
}

SetImpl::Request SetImpl::Prepare(absl::Span<const LimitAmount> request) const {
  Request result;
  result.nested = PrepareInto(request, &result.items);
  return result;
}

namespace {

ABSL_ATTRIBUTE_NOINLINE ABSL_ATTRIBUTE_NORETURN void ThrowBadRequestAmount(
    const LimitAmount& entry) {
  throw InvalidOptionError(absl::StrCat("LimitSet::Acquire: amount for '", entry.key,
                                        "' must be >= 0 and finite (0 leaves the limit out), got ",
                                        FormatNumber(entry.amount)));
}

}  // namespace

bool SetImpl::PrepareInto(absl::Span<const LimitAmount> request, Items* items) const {
  const auto check_finite = [](const LimitAmount& entry) {
    if (ABSL_PREDICT_FALSE(!(entry.amount >= 0) || !std::isfinite(entry.amount))) {
      ThrowBadRequestAmount(entry);
    }
  };
  if (no_op()) {
    for (const LimitAmount& entry : request) check_finite(entry);
    return false;
  }
  bool nested = false;
  const size_t count = info_.size();
  // Per limit, the amount the request names, or -1. Items are then built in limit order.
  absl::InlinedVector<double, 8> named(count, -1);
  for (const LimitAmount& entry : request) {
    size_t index = 0;
    while (index < count && info_[index].key != entry.key) ++index;
    if (index == count) {
      std::vector<absl::string_view> keys;
      for (const LimitInfo& known : info_) keys.push_back(known.key);
      throw InvalidOptionError(absl::StrCat("LimitSet::Acquire: unknown limit key '", entry.key,
                                            "'; the set has: ", absl::StrJoin(keys, ", ")));
    }
    if (named[index] >= 0) {
      throw InvalidOptionError(
          absl::StrCat("LimitSet::Acquire: key '", entry.key, "' appears twice in the request"));
    }
    check_finite(entry);
    named[index] = entry.amount;
    if (entry.amount == 0) {
      nested = true;  // Named to leave it out: a held connection when nesting.
      continue;
    }
    // The common case answered inline; CheckAmount() builds the message (and throws).
    const LimitInfo& info = info_[index];
    if (ABSL_PREDICT_FALSE(entry.amount > info.burst ||
                           (info.whole && (entry.amount != std::floor(entry.amount) ||
                                           entry.amount > kMaxWhole)))) {
      CheckAmount(index, entry.amount, /*implicit=*/false);
    }
  }
  for (size_t i = 0; i < count; ++i) {
    const LimitInfo& info = info_[i];
    double requested = 1;
    if (named[i] > 0) {
      requested = named[i];
    } else if (named[i] == 0) {
      continue;
    } else if (info.kind == LimitKind::kRate) {
      if (request.empty()) {
        throw InvalidOptionError(absl::StrCat(
            "Must specify requested amount for RateLimit '", info.key,
            "'. RateLimits require explicit token amounts: Acquire({{\"", info.key, "\", n}})"));
      }
      continue;  // Not named: not taken.
    } else if (ABSL_PREDICT_FALSE(!info.implicit_ok)) {
      // The implicit 1 of a CallLimit or ResourceLimit passes the same check as a named amount
      // (Limit's constructors already make it fit; nothing may wait for the impossible).
      CheckAmount(i, requested, /*implicit=*/true);
    }
    // Filled in place: a copy of a stack temporary made this loop slow (a partial store
    // forwarded to a wide load).
    Item& item = items->emplace_back();
    item.index = static_cast<int32_t>(i);
    item.requested = requested;
    item.implicit = named[i] < 0;
    if (info.gcra != nullptr) {
      item.cost = CostOf(i, requested);
    }
  }
  return nested;
}

int32_t SetImpl::HolderSlotLocked() {
  const pid_t pid = CurrentPid();
  const pid_t tid = CurrentTid();
  const int32_t count = options_.max_holders;
  if (holder_cache.set_id == id_ && holder_cache.slot >= 0 && holder_cache.slot < count) {
    const Holder& cached = holder(holder_cache.slot);
    if (cached.tid == tid && cached.pid == pid) return holder_cache.slot;
  }
  int32_t unused = -1;
  int32_t idle = -1;
  for (int32_t slot = 0; slot < count; ++slot) {
    const Holder& candidate = holder(slot);
    if (candidate.tid == tid && candidate.pid == pid) {
      holder_cache = {id_, slot};
      return slot;
    }
    if (candidate.pid == 0) {
      if (unused < 0) unused = slot;
    } else if (candidate.acquisitions == 0 && candidate.waiting == 0 && idle < 0) {
      idle = slot;
    }
  }
  const int32_t slot = unused >= 0 ? unused : idle;
  if (slot < 0) return -1;
  Holder& claimed = holder(slot);
  claimed.pid = pid;
  claimed.tid = tid;
  claimed.start_time = shared_ ? CurrentProcessStartTime() : 0;
  claimed.acquisitions = 0;
  std::fill(held(slot), held(slot) + num_resources_, 0.0);
  holder_cache = {id_, slot};
  return slot;
}

int64_t SetImpl::TryTakeLocked(int64_t now, const Items& items, int32_t slot,
                               bool* resource_short) {
  int64_t wait = 0;
  *resource_short = false;
  for (const Item& item : items) {
    const LimitInfo& info = info_[item.index];
    if (info.gcra != nullptr) {
      wait = std::max(wait, info.gcra->WaitNsExclusive(info.rate->ClampNow(now), item.cost));
    } else if (info.rate == nullptr) {
      if (in_use_[item.index] + item.requested > info.capacity) {
        *resource_short = true;
        wait = kNoTime;
      }
    } else {
      wait = std::max(wait, info.rate->WaitNs(now, item.requested));
    }
  }
  if (wait > 0) return wait;
  double* holding = held(slot);
  for (const Item& item : items) {
    const LimitInfo& info = info_[item.index];
    // Cannot fail: checked above under the same lock, at the same `now`.
    if (info.gcra != nullptr) {
      // Under the lock, so plain stores: no compare-exchange per limit.
      info.gcra->TakeExclusive(info.rate->ClampNow(now), item.cost);
    } else if (info.rate == nullptr) {
      in_use_[item.index] += item.requested;
      holding[resource_index_[item.index]] += item.requested;
    } else {
      info.rate->TryAcquire(now, item.requested);
    }
  }
  ++holder(slot).acquisitions;
  ++header_->holding;
  return 0;
}

uint64_t SetImpl::AddTicketLocked() {
  if (header_->queued >= options_.max_holders) return 0;  // Full: wait outside the queue.
  const uint64_t number = header_->next_ticket++;
  tickets_[header_->queued++] =
      Ticket{number, CurrentPid(), shared_ ? CurrentProcessStartTime() : 0};
  return number;
}

void SetImpl::RemoveTicketLocked(uint64_t ticket) {
  for (int32_t i = 0; i < header_->queued; ++i) {
    if (tickets_[i].number == ticket) {
      tickets_[i] = tickets_[--header_->queued];
      return;
    }
  }
}

uint64_t SetImpl::HeadTicketLocked() const {
  uint64_t head = 0;
  for (int32_t i = 0; i < header_->queued; ++i) {
    if (head == 0 || tickets_[i].number < head) head = tickets_[i].number;
  }
  return head;
}

bool SetImpl::RecoverDeadLocked(bool stamp) {
  if (!shared_) return false;
  if (stamp) header_->last_recovery_ns = absl::ToUnixNanos(absl::Now());
  const pid_t self = CurrentPid();
  bool changed = false;
  for (int32_t slot = 0; slot < options_.max_holders; ++slot) {
    Holder& dead = holder(slot);
    if (dead.pid == 0 || dead.pid == self) continue;
    if (ProcessAlive(dead.pid, dead.start_time)) continue;
    if (dead.acquisitions > 0) header_->recovered.fetch_add(1, std::memory_order_relaxed);
    dead = Holder();
    std::fill(held(slot), held(slot) + num_resources_, 0.0);
    changed = true;
  }
  // The totals are the sums of the live slots: a dead slot's share leaves with it.
  if (changed) RebuildTotalsLocked();
  for (int32_t i = 0; i < header_->queued;) {
    if (tickets_[i].pid != self && !ProcessAlive(tickets_[i].pid, tickets_[i].start_time)) {
      tickets_[i] = tickets_[--header_->queued];
      changed = true;
    } else {
      ++i;
    }
  }
  return changed;
}

void SetImpl::RebuildTotalsLocked() {
  std::fill(in_use_, in_use_ + limits_.size(), 0.0);
  header_->holding = 0;
  header_->waiters = 0;
  for (int32_t slot = 0; slot < options_.max_holders; ++slot) {
    const Holder& owner = holder(slot);
    if (owner.pid == 0) continue;
    const double* holding = held(slot);
    for (size_t i = 0; i < limits_.size(); ++i) {
      if (resource_index_[i] >= 0) in_use_[i] += holding[resource_index_[i]];
    }
    header_->holding += owner.acquisitions;
    header_->waiters += owner.waiting;
  }
}

void SetImpl::LeaveQueueLocked(uint64_t* ticket, bool* notify) {
  if (*ticket == 0) return;
  RemoveTicketLocked(*ticket);
  *ticket = 0;
  *notify = *notify || header_->waiters > 0;  // It may have been the head: the next one goes.
}

int64_t SetImpl::AttemptLocked(int64_t now, const Items& items, int32_t slot, bool exempt,
                               uint64_t* ticket, bool enqueue, bool* notify) {
  const bool fifo = options_.fairness == LimitFairness::kFifo;
  const int64_t lease_ns = lease_ns_;
  const bool recovery_due = shared_ && now - header_->last_recovery_ns >= lease_ns;
  if (recovery_due && !exempt && header_->queued > 0 &&
      (*ticket == 0 || *ticket != HeadTicketLocked()) && RecoverDeadLocked()) {
    *notify = *notify || header_->waiters > 0;  // A dead process may have held a place ahead.
  }
  const bool may_try =
      exempt || (*ticket == 0 ? header_->queued == 0 : *ticket == HeadTicketLocked());
  int64_t wait = kNoTime;
  if (may_try) {
    bool resource_short = false;
    wait = TryTakeLocked(now, items, slot, &resource_short);
    if (wait > 0 && resource_short && shared_ && now - header_->last_recovery_ns >= lease_ns &&
        RecoverDeadLocked()) {
      *notify = *notify || header_->waiters > 0;
      wait = TryTakeLocked(now, items, slot, &resource_short);
    }
    if (wait == 0) {
      LeaveQueueLocked(ticket, notify);
      ++header_->acquisitions;
      return 0;
    }
  }
  if (enqueue && fifo && !exempt && *ticket == 0) *ticket = AddTicketLocked();
  return wait;
}

LimitAcquisition SetImpl::Take(const Request& request, absl::Time deadline,
                               bool exempt_when_holding) {
  LimitAcquisition result;        // The only object returned, so it is built in place.
  result.items_ = request.items;  // Before locking: it may allocate.
  TakeInto(shared_from_this(), request.nested, deadline, exempt_when_holding, result);
  return result;
}

LimitAcquisition SetImpl::Acquire(const std::shared_ptr<SetImpl>& self,
                                  absl::Span<const LimitAmount> request, absl::Duration timeout,
                                  bool try_once) {
  LimitAcquisition result;  // The only object returned, so it is built in place.
  const bool nested = self->PrepareInto(request, &result.items_);
  // A zero timeout tries once and, failing, counts a timeout. No clock read for the usual
  // infinite timeout.
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : self->Now() + timeout;
  self->TakeInto(self, nested, deadline, /*exempt_when_holding=*/true, result);
  return result;
}

void SetImpl::TakeInto(const std::shared_ptr<SetImpl>& self, bool nested, absl::Time deadline,
                       bool exempt_when_holding, LimitAcquisition& result) {
  if (no_op()) {
    result.set_ = self;
    return;
  }
  const bool fifo = options_.fairness == LimitFairness::kFifo;
  const absl::Duration lease = options_.lease_check_interval;
  uint64_t ticket = 0;
  bool notify = false;
  bool locked = false;
  bool registered = false;  // Counted in Header::waiters and the slot's `waiting`.
  bool taken = false;
  int32_t slot = -1;
  try {
    // The clock is read before taking the lock (a little early is harmless: it can only delay a
    // refill), which keeps the critical section short under contention.
    absl::Time now_time;
    int64_t now = 0;
    ReadClock(&now_time, &now);
    Lock();
    locked = true;
    for (;;) {
      slot = HolderSlotLocked();
      if (slot < 0 && shared_ && RecoverDeadLocked()) slot = HolderSlotLocked();
      if (slot < 0) {
        throw CapacityError(absl::StrCat(
            "LimitSet: more than max_holders (", options_.max_holders,
            ") threads hold acquisitions at once; raise LimitSetOptions::max_holders"));
      }
      const bool exempt = !fifo || nested || (exempt_when_holding && holder(slot).exempting > 0);
      const bool may_wait = deadline != absl::InfinitePast() && now_time < deadline;
      const int64_t wait =
          AttemptLocked(now, result.items_, slot, exempt, &ticket, may_wait, &notify);
      if (wait == 0) {
        taken = true;
        result.holder_ = slot;
        result.taken_ns_ = now;
        result.exempting_ = exempt_when_holding;
        if (exempt_when_holding) ++holder(slot).exempting;
        break;
      }
      if (!may_wait) {
        LeaveQueueLocked(&ticket, &notify);
        if (deadline != absl::InfinitePast()) {
          header_->timeouts.fetch_add(1, std::memory_order_relaxed);
        }
        result.items_.clear();
        break;
      }
      absl::Time wake = deadline;
      if (wait != kNoTime) wake = std::min(wake, now_time + absl::Nanoseconds(wait));
      if (shared_) wake = std::min(wake, now_time + lease);  // Look for dead holders and tickets.
      ++header_->waiters;
      ++holder(slot).waiting;
      registered = true;
      const uint32_t generation = header_->generation.load(std::memory_order_seq_cst);
      Unlock();
      locked = false;
      if (notify) {
        notify = false;
        Notify();
      }
      Wait(generation, wake, nullptr);
      ReadClock(&now_time, &now);
      Lock();
      locked = true;
      --header_->waiters;
      --holder(slot).waiting;
      registered = false;
      if (shared_ &&
          absl::ToUnixNanos(absl::Now()) - header_->last_recovery_ns >=
              absl::ToInt64Nanoseconds(lease) &&
          RecoverDeadLocked()) {
        notify = notify || header_->waiters > 0;
      }
    }
  } catch (...) {
    // Leave no trace: not counted as waiting, no place in the queue, the lock released.
    if (!locked) Lock();
    if (registered) {
      --header_->waiters;
      --holder(slot).waiting;
    }
    LeaveQueueLocked(&ticket, &notify);
    Unlock();
    Notify();
    throw;
  }
  Unlock();
  // After the lock: a copy of the caller's handle is one atomic increment (shared_from_this()
  // would be a compare-exchange loop on the weak count), and it need not lengthen the critical
  // section. Nothing between here and the lock can throw, so the items never leak.
  if (taken) result.set_ = self;
  if (notify) Notify();
}

void SetImpl::Update(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage) {
  if (no_op()) {
    for (const LimitAmount& entry : usage) {
      if (!(entry.amount >= 0) || !std::isfinite(entry.amount)) {
        throw InvalidOptionError(absl::StrCat("LimitAcquisition::Update: usage of '", entry.key,
                                              "' must be >= 0 and finite, got ",
                                              FormatNumber(entry.amount)));
      }
    }
    return;
  }
  // Validate everything first: nothing is recorded if anything is wrong.
  absl::InlinedVector<Item*, 4> targets;
  for (const LimitAmount& entry : usage) {
    Item* target = nullptr;
    for (Item& item : acquisition.items_) {
      if (info_[item.index].key == entry.key) {
        target = &item;
        break;
      }
    }
    if (target == nullptr) {
      throw InvalidOptionError(absl::StrCat("LimitAcquisition::Update: '", entry.key,
                                            "' is not part of this acquisition"));
    }
    if (std::find(targets.begin(), targets.end(), target) != targets.end()) {
      throw InvalidOptionError(
          absl::StrCat("LimitAcquisition::Update: key '", entry.key, "' appears twice"));
    }
    const LimitInfo& limit = info_[target->index];
    if (!(entry.amount >= 0) || !std::isfinite(entry.amount)) {
      throw InvalidOptionError(absl::StrCat("LimitAcquisition::Update: usage of '", entry.key,
                                            "' must be >= 0 and finite, got ",
                                            FormatNumber(entry.amount)));
    }
    if (limit.kind == LimitKind::kCall && target->requested == 1 && entry.amount != 1) {
      throw InvalidOptionError(absl::StrCat(
          "LimitAcquisition::Update: CallLimit usage must be 1 for a call request of 1 (",
          target->implicit ? "an implicit acquisition, taken without naming 'call_count'"
                           : "{\"call_count\", 1}, which counts one call like the implicit one",
          "), got ", FormatNumber(entry.amount),
          "; to report a number of calls, request it: {\"call_count\", n}"));
    }
    const bool fraction = entry.amount != std::floor(entry.amount);
    if (limit.kind != LimitKind::kResource && limit.whole &&
        (fraction || entry.amount > kMaxWhole)) {
      throw InvalidOptionError(absl::StrCat(
          "LimitAcquisition::Update: '", entry.key, "' (",
          RateLimitAlgorithmName(limits_[target->index].algorithm()), ") counts whole units",
          fraction ? "" : absl::StrCat(", at most ", kMaxWholeUnits), ", got ",
          FormatNumber(entry.amount)));
    }
    targets.push_back(target);
  }
  std::string overuse;
  bool charge = false;
  for (size_t i = 0; i < usage.size(); ++i) {
    Item& item = *targets[i];
    item.updated = true;
    item.used = usage[i].amount;
    const LimitInfo& info = info_[item.index];
    item.refund_cost = info.gcra != nullptr && item.used < item.requested
                           ? CostOf(item.index, item.requested - item.used)
                           : 0;
    // Reported (and charged) once per new excess: repeating a report charges nothing more.
    if (item.used - item.requested > item.charged_extra &&
        info_[item.index].kind != LimitKind::kResource) {
      absl::StrAppend(&overuse, overuse.empty() ? "" : "; ", "'", usage[i].key, "' used ",
                      FormatNumber(item.used), " of ", FormatNumber(item.requested), " requested");
      charge = true;
    }
  }
  if (!charge) return;
  {
    Locked locked(this);
    const int64_t now = NowNs();
    for (Item* item : targets) {
      const double extra = std::max(0.0, item->used - item->requested) - item->charged_extra;
      if (extra > 0 && rates_[item->index] != nullptr) {
        rates_[item->index]->Charge(now, extra);
        item->charged_extra += extra;
      }
    }
  }
  header_->overuse_reports.fetch_add(1, std::memory_order_relaxed);
  Warn(absl::StrCat("LimitAcquisition::Update: usage above the request, charged in full: ",
                    overuse));
}

void SetImpl::Release(LimitAcquisition& acquisition) {
  if (no_op()) return;
  bool notify = false;
  // No clock read: a refund at the time the units were taken leaves the same state from now on
  // as one at the current time. A refund sets TAT' = max(t, TAT - cost) (or keeps TAT <= t),
  // and every later decision at u >= now looks only at max(TAT', u), which is the same for any
  // t <= u: the bucket is full from max(t, TAT - cost) on either way. That makes one clock
  // read per acquisition, not two.
  const int64_t now = acquisition.taken_ns_;
  {
    Locked locked(this);
    Holder& owner = holder(acquisition.holder_);
    // A fork()ed child destroying its copy of the parent's acquisition: the parent releases it.
    if (shared_ && owner.pid != CurrentPid()) return;
    double* holding = held(acquisition.holder_);
    for (Item& item : acquisition.items_) {
      const LimitInfo& info = info_[item.index];
      RateState* rate = info.rate;
      if (rate == nullptr) {
        in_use_[item.index] = std::max(0.0, in_use_[item.index] - item.requested);
        holding[resource_index_[item.index]] -= item.requested;
        item.refunded = item.requested;
        notify = true;
      } else if (item.updated && item.used < item.requested && rate->supports_refund()) {
        const double unused = item.requested - item.used;
        if (info.gcra != nullptr) {
          // Cost() is at least 1, so 0 means Update() did not compute it (an acquisition whose
          // usage was set directly, as a cancelled AcquireAsync() does).
          info.gcra->RefundExclusive(rate->ClampNow(now),
                                     item.refund_cost > 0 ? item.refund_cost : rate->Cost(unused));
        } else {
          rate->Refund(now, unused);
        }
        item.refunded = unused;
        notify = true;
      }
    }
    if (owner.acquisitions > 0) --owner.acquisitions;
    if (acquisition.exempting_ && owner.exempting > 0) --owner.exempting;
    --header_->holding;
    notify = notify && header_->waiters > 0;
  }
  if (notify) Notify();
}

LimitSetStats SetImpl::Stats() {
  LimitSetStats stats;
  Locked locked(this);
  const int64_t now = NowNs();
  if (shared_ && absl::ToUnixNanos(absl::Now()) - header_->last_recovery_ns >=
                     absl::ToInt64Nanoseconds(options_.lease_check_interval)) {
    RecoverDeadLocked();  // Report neither holders nor waiters that are dead.
  }
  for (size_t i = 0; i < limits_.size(); ++i) {
    const Limit& limit = limits_[i];
    LimitStats entry;
    entry.key = limit.key();
    entry.kind = limit.kind();
    entry.capacity = limit.capacity();
    entry.window = limit.window();
    entry.algorithm = limit.algorithm();
    entry.burst = limit.burst();
    if (rates_[i] == nullptr) {
      entry.in_use = in_use_[i];
    } else {
      entry.rate = rates_[i]->Snapshot(now, &entry.in_use);
    }
    entry.available = std::max(0.0, entry.burst - entry.in_use);
    entry.utilization = std::isinf(entry.burst) ? 0 : entry.in_use / entry.burst;
    stats.limits.push_back(std::move(entry));
  }
  if (no_op()) return stats;
  stats.acquisitions = header_->acquisitions;
  stats.timeouts = header_->timeouts.load(std::memory_order_relaxed);
  stats.waiting = header_->waiters;
  stats.holding = header_->holding;
  stats.missing_updates = header_->missing_updates.load(std::memory_order_relaxed);
  stats.overuse_reports = header_->overuse_reports.load(std::memory_order_relaxed);
  stats.recovered_holders = header_->recovered.load(std::memory_order_relaxed);
  return stats;
}

Future<LimitAcquisition> SetImpl::AcquireAsync(Request request, absl::Time deadline) {
  // Served at once when possible (and when nobody queues ahead). The acquisition does not make
  // the calling thread skip the queue later: it may be used anywhere.
  if (LimitAcquisition now = Take(request, absl::InfinitePast(), /*exempt_when_holding=*/false);
      now.held()) {
    return MakeReadyFuture(std::move(now));
  }
  AsyncRequest pending;
  pending.request = std::move(request);
  pending.deadline = deadline;
  pending.cancelled = std::make_shared<std::atomic<bool>>(false);
  Future<LimitAcquisition> future = pending.promise.GetFuture();
  std::shared_ptr<AsyncQueue> queue;
  {
    absl::MutexLock lock(&async_mu_);
    if (async_ == nullptr || async_->pid != CurrentPid()) {
      // Built and started before it replaces `async_`, so a failed start leaves nothing behind.
      auto fresh = std::make_shared<AsyncQueue>();
      fresh->pid = CurrentPid();
      fresh->thread = std::thread(&SetImpl::RunAsync, weak_from_this(), fresh);
      if (async_ != nullptr) {
        // Inherited through fork(): the thread is the parent's. Leave its object alone.
        static_cast<void>(new std::shared_ptr<AsyncQueue>(std::move(async_)));
      }
      async_ = std::move(fresh);
    }
    queue = async_;
  }
  pending.promise.OnCancel([weak = weak_from_this(), weak_queue = std::weak_ptr<AsyncQueue>(queue),
                            cancelled = pending.cancelled] {
    cancelled->store(true, std::memory_order_release);
    if (std::shared_ptr<AsyncQueue> queue = weak_queue.lock()) {
      queue->interrupt.store(true, std::memory_order_release);
    }
    if (std::shared_ptr<SetImpl> set = weak.lock()) set->Notify();
  });
  {
    absl::MutexLock lock(&queue->mu);
    queue->incoming.push_back(std::move(pending));
    queue->interrupt.store(true, std::memory_order_release);
  }
  Notify();
  return future;
}

void SetImpl::RunAsync(std::weak_ptr<SetImpl> weak, std::shared_ptr<AsyncQueue> queue) {
  for (;;) {
    // Cleared before looking: a request or cancellation after this raises it again.
    queue->interrupt.store(false, std::memory_order_seq_cst);
    {
      absl::MutexLock lock(&queue->mu);
      if (queue->pending.empty()) {
        const auto ready = [&queue]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue->mu) {
          return queue->shutdown || !queue->incoming.empty();
        };
        queue->mu.Await(absl::Condition(&ready));
        if (queue->incoming.empty()) return;  // Shut down with nothing left.
      }
      while (!queue->incoming.empty()) {
        queue->pending.push_back(std::move(queue->incoming.front()));
        queue->incoming.pop_front();
      }
    }
    // Held while requests wait: a pending AcquireAsync() keeps the set alive.
    std::shared_ptr<SetImpl> set = weak.lock();
    if (set == nullptr) {
      for (AsyncRequest& request : queue->pending) {
        request.promise.SetError(
            std::make_exception_ptr(StoppedError("LimitSet::AcquireAsync: the set was destroyed")));
      }
      queue->pending.clear();
      continue;
    }
    set->ServeAsync(*queue);
    // May destroy the set (and detach this thread); `queue` stays valid.
    set.reset();
  }
}

void SetImpl::ServeAsync(AsyncQueue& queue) {
  struct Completion {
    Promise<LimitAcquisition> promise;
    LimitAcquisition acquisition;  // Held, or empty with `error` set.
    std::exception_ptr error;
  };
  std::vector<Completion> done;
  bool notify = false;
  absl::Time wake = absl::InfiniteFuture();
  uint32_t generation = 0;
  {
    Locked locked(this);
    generation = header_->generation.load(std::memory_order_seq_cst);
    const absl::Time now_time = clock_.Now();
    const int64_t now = absl::ToUnixNanos(now_time);
    int32_t& slot = queue.slot;
    if (slot < 0 || holder(slot).tid != CurrentTid()) slot = HolderSlotLocked();
    if (slot < 0 && shared_ && RecoverDeadLocked()) slot = HolderSlotLocked();
    const bool fifo = options_.fairness == LimitFairness::kFifo;
    for (auto it = queue.pending.begin(); it != queue.pending.end();) {
      AsyncRequest& request = *it;
      std::exception_ptr error;
      if (request.cancelled->load(std::memory_order_acquire)) {
        LeaveQueueLocked(&request.ticket, &notify);  // Withdrawn: its future is cancelled.
      } else if (slot < 0) {
        LeaveQueueLocked(&request.ticket, &notify);
        error = std::make_exception_ptr(CapacityError(absl::StrCat(
            "LimitSet: more than max_holders (", options_.max_holders,
            ") threads hold acquisitions at once; raise LimitSetOptions::max_holders")));
      } else if (now_time >= request.deadline) {
        LeaveQueueLocked(&request.ticket, &notify);
        header_->timeouts.fetch_add(1, std::memory_order_relaxed);
        error = std::make_exception_ptr(
            TimeoutError("LimitSet::AcquireAsync: failed to acquire all limits in time"));
      } else {
        const int64_t wait =
            AttemptLocked(now, request.request.items, slot, !fifo || request.request.nested,
                          &request.ticket, /*enqueue=*/true, &notify);
        if (wait != 0) {
          wake = std::min(wake, request.deadline);
          if (wait != kNoTime) wake = std::min(wake, now_time + absl::Nanoseconds(wait));
          ++it;
          continue;
        }
        Completion& completion = done.emplace_back();
        completion.acquisition.set_ = shared_from_this();
        completion.acquisition.items_ = std::move(request.request.items);
        completion.acquisition.holder_ = slot;
        completion.acquisition.taken_ns_ = now;
        completion.promise = std::move(request.promise);
        it = queue.pending.erase(it);
        continue;
      }
      if (error != nullptr) {
        Completion& completion = done.emplace_back();
        completion.promise = std::move(request.promise);
        completion.error = error;
      }
      it = queue.pending.erase(it);
    }
    // Counted once in the waiters while requests wait, so releases notify.
    if (!queue.pending.empty() && !queue.registered && slot >= 0) {
      ++header_->waiters;
      ++holder(slot).waiting;
      queue.registered = true;
    } else if (queue.pending.empty() && queue.registered) {
      --header_->waiters;
      if (slot >= 0) --holder(slot).waiting;
      queue.registered = false;
    }
    if (shared_ && !queue.pending.empty())
      wake = std::min(wake, now_time + options_.lease_check_interval);
  }
  if (notify) Notify();
  // Completed outside the lock: continuations run here, on the helper thread.
  for (Completion& completion : done) {
    if (completion.error != nullptr) {
      completion.promise.SetError(completion.error);
    } else if (!completion.promise.SetValue(std::move(completion.acquisition))) {
      // Cancelled at the last moment: give everything back unused.
      for (LimitAcquisition::Item& item : completion.acquisition.items_) {
        item.updated = true;
        item.used = 0;
      }
      completion.acquisition.ReleaseAndListMissing(/*warn=*/false);
    }
  }
  if (!queue.pending.empty()) Wait(generation, wake, &queue.interrupt);
}

int SetAccess::SharedFd(const LimitSet& set) { return set.impl_->fd(); }

size_t SetAccess::SharedBytes(const LimitSet& set) {
  return set.impl_->options().sharing == LimitSharing::kProcesses ? set.impl_->block_bytes() : 0;
}

size_t SetAccess::SharedBytesFor(const std::vector<Limit>& limits, int max_holders) {
  return SetImpl::LayoutBytes(limits, max_holders);
}

const LimitSetOptions& SetAccess::Options(const LimitSet& set) { return set.impl_->options(); }

LimitSet SetAccess::Attach(std::vector<Limit> limits, LimitSetOptions options, int fd) {
  if (fd < 0) throw InvalidOptionError(absl::StrCat("LimitSet: cannot attach to fd ", fd));
  return LimitSet(std::make_shared<SetImpl>(std::move(limits), std::move(options), fd));
}

}  // namespace limits_internal

// ---- LimitAcquisition ----

LimitAcquisition::LimitAcquisition(LimitAcquisition&& other) noexcept
    : set_(std::move(other.set_)),
      released_(other.released_),
      items_(std::move(other.items_)),
      holder_(other.holder_),
      exempting_(other.exempting_),
      taken_ns_(other.taken_ns_) {
  other.set_ = nullptr;
  other.released_ = false;
  other.items_.clear();
}

LimitAcquisition& LimitAcquisition::operator=(LimitAcquisition&& other) noexcept {
  if (this != &other) {
    ReleaseAndListMissing(/*warn=*/true);
    set_ = std::move(other.set_);
    released_ = other.released_;
    items_ = std::move(other.items_);
    holder_ = other.holder_;
    exempting_ = other.exempting_;
    taken_ns_ = other.taken_ns_;
    other.set_ = nullptr;
    other.released_ = false;
    other.items_.clear();
  }
  return *this;
}

LimitAcquisition::~LimitAcquisition() { ReleaseAndListMissing(/*warn=*/true); }

double LimitAcquisition::requested(absl::string_view key) const {
  if (!held()) return 0;
  for (const Item& item : items_) {
    if (set_->limits()[item.index].key() == key) return item.requested;
  }
  return 0;
}

std::vector<LimitAmount> LimitAcquisition::amounts() const {
  std::vector<LimitAmount> result;
  if (!held()) return result;
  for (const Item& item : items_) {
    result.push_back({set_->limits()[item.index].key(), item.requested});
  }
  return result;
}

std::vector<LimitCharge> LimitAcquisition::charges() const {
  std::vector<LimitCharge> result;
  if (set_ == nullptr) return result;
  result.reserve(items_.size());
  for (const Item& item : items_) {
    const Limit& limit = set_->limits()[item.index];
    LimitCharge& charge = result.emplace_back();
    charge.key = limit.key();
    charge.kind = limit.kind();
    charge.requested = item.requested;
    charge.updated = item.updated;
    charge.used = item.updated ? item.used : item.requested;
    charge.refunded = item.refunded;
    if (limit.kind() == LimitKind::kResource) {
      charge.charged = released_ ? 0 : item.requested;
    } else {
      charge.charged = item.requested + item.charged_extra - item.refunded;
    }
  }
  return result;
}

std::optional<LimitCharge> LimitAcquisition::charge(absl::string_view key) const {
  for (LimitCharge& entry : charges()) {
    if (entry.key == key) return std::move(entry);
  }
  return std::nullopt;
}

const LimitConfig& LimitAcquisition::config() const {
  static const LimitConfig* const kEmpty = new LimitConfig();
  return !held() ? *kEmpty : set_->options().config;
}

void LimitAcquisition::Update(absl::Span<const LimitAmount> usage) {
  if (!held()) {
    throw InvalidOptionError("LimitAcquisition::Update: the acquisition was already released");
  }
  set_->Update(*this, usage);
}

std::string LimitAcquisition::ReleaseAndListMissing(bool warn) {
  if (!held()) return "";
  released_ = true;
  limits_internal::SetImpl* const set = set_.get();
  std::vector<absl::string_view> missing;
  for (const Item& item : items_) {
    const Limit& limit = set->limits()[item.index];
    const bool needs_update = limit.kind() == LimitKind::kRate ||
                              (limit.kind() == LimitKind::kCall && item.requested > 1);
    if (needs_update && !item.updated) missing.push_back(limit.key());
  }
  set->Release(*this);
  if (missing.empty()) return "";
  set->CountMissingUpdate();
  std::string message = absl::StrCat(
      "Not all limits in the LimitSet were updated. Missing: [", absl::StrJoin(missing, ", "),
      "]. The acquisition was released and the requested amounts charged in full; call "
      "Update() with the usage before release");
  if (warn) {
    try {
      set->Warn(message);
    } catch (...) {
      // A warning sink that throws cannot make a destructor throw; the count above remains.
    }
  }
  return message;
}

void LimitAcquisition::Release() {
  std::string missing = ReleaseAndListMissing(/*warn=*/false);
  if (!missing.empty()) throw LimitUsageError(missing);
}

// ---- LimitSet ----

LimitSet LimitSet::Create(std::vector<Limit> limits, LimitSetOptions options) {
  return LimitSet(
      std::make_shared<limits_internal::SetImpl>(std::move(limits), std::move(options)));
}

LimitSet LimitSet::NoOp() {
  static const LimitSet* const kNoOp = new LimitSet(Create({}));
  return *kNoOp;
}

LimitSet::LimitSet() : LimitSet(NoOp()) {}

LimitAcquisition LimitSet::Acquire(absl::Span<const LimitAmount> request,
                                   absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitSet::Acquire");
  LimitAcquisition acquired =
      limits_internal::SetImpl::Acquire(impl_, request, timeout, /*try_once=*/false);
  if (ABSL_PREDICT_FALSE(!acquired.held())) {
    throw TimeoutError(absl::StrCat("LimitSet::Acquire: failed to acquire all limits within ",
                                    absl::FormatDuration(timeout)));
  }
  return acquired;
}

std::optional<LimitAcquisition> LimitSet::TryAcquire(absl::Span<const LimitAmount> request) const {
  LimitAcquisition acquired = limits_internal::SetImpl::Acquire(
      impl_, request, absl::InfiniteDuration(), /*try_once=*/true);
  if (!acquired.held()) return std::nullopt;
  return acquired;
}

Future<LimitAcquisition> LimitSet::AcquireAsync(std::vector<LimitAmount> request,
                                                absl::Duration timeout) const {
  futures_internal::CheckTimeout(timeout, "LimitSet::AcquireAsync");
  limits_internal::SetImpl::Request prepared = impl_->Prepare(request);
  return impl_->AcquireAsync(std::move(prepared), impl_->clock().Now() + timeout);
}

const Limit* LimitSet::Find(absl::string_view key) const {
  for (const Limit& limit : impl_->limits()) {
    if (limit.key() == key) return &limit;
  }
  return nullptr;
}

const Limit& LimitSet::operator[](absl::string_view key) const {
  if (const Limit* limit = Find(key)) return *limit;
  std::vector<absl::string_view> keys;
  for (const Limit& limit : impl_->limits()) keys.push_back(limit.key());
  throw InvalidOptionError(
      absl::StrCat("LimitSet has no limit '", key, "'; it has: [", absl::StrJoin(keys, ", "), "]"));
}

const std::vector<Limit>& LimitSet::limits() const { return impl_->limits(); }
bool LimitSet::no_op() const { return impl_->no_op(); }
LimitSharing LimitSet::sharing() const { return impl_->options().sharing; }
LimitFairness LimitSet::fairness() const { return impl_->options().fairness; }
const LimitConfig& LimitSet::config() const { return impl_->options().config; }
LimitSetStats LimitSet::Stats() const { return impl_->Stats(); }

const LimitStats* LimitSetStats::Find(absl::string_view key) const {
  for (const LimitStats& entry : limits) {
    if (entry.key == key) return &entry;
  }
  return nullptr;
}

LimitStats LimitSetStats::at(absl::string_view key) && {
  return std::move(const_cast<LimitStats&>(static_cast<const LimitSetStats&>(*this).at(key)));
}

const LimitStats& LimitSetStats::at(absl::string_view key) const& {
  if (const LimitStats* entry = Find(key)) return *entry;
  std::vector<absl::string_view> keys;
  for (const LimitStats& entry : limits) keys.push_back(entry.key);
  throw InvalidOptionError(
      absl::StrCat("LimitSetStats::at: no limit with key '", key, "'; ",
                   keys.empty() ? std::string("the set has no limits")
                                : absl::StrCat("the set has: ", absl::StrJoin(keys, ", "))));
}

}  // namespace concurry

// SetImpl's state: the memory block (on the heap, or shared memory for kProcesses) and its
// layout, attaching to another process's block, the lock, wake-ups, recovering what dead
// processes held, statistics, and SetAccess.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "limits/internal/process_shared.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_access.h"
#include "limits/internal/set_impl.h"
#include "limits/limit_set.h"

namespace concurry {
namespace limits_internal {
namespace {

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

SetImpl::SetImpl(std::vector<Limit> limits, LimitSetOptions options, int attach_fd)
    : LimitSetBackend(std::move(limits), std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : Clock::Real()),
      real_clock_(&clock_ == &Clock::Real()),
      shared_(options_.sharing == LimitSharing::kProcesses),
      lease_ns_(absl::ToInt64Nanoseconds(options_.lease_check_interval)),
      counts_references_(!shared_ && !limits_.empty()) {
  CheckFairness(options_.fairness);
  if (options_.sharing != LimitSharing::kThreads && options_.sharing != LimitSharing::kProcesses) {
    throw InvalidOptionError(absl::StrCat("LimitSetOptions::sharing: unknown value ",
                                          static_cast<int>(options_.sharing),
                                          "; allowed: kThreads, kProcesses, kHosts"));
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
  CheckUniqueKeys(limits_);
  for (const Limit& limit : limits_) {
    resource_index_.push_back(limit.kind() == LimitKind::kResource ? num_resources_++ : -1);
  }
  const Layout layout = ComputeLayout(limits_, options_.max_holders, /*line_per_holder=*/!shared_);
  holder_stride_ = layout.holder_stride;
  block_.bytes = layout.bytes;
  block_.shared = shared_;

  if (attach_fd >= 0) {
    Attach(layout, attach_fd);
    BuildInfo(layout);
    return;
  }
  if (shared_) {
    // A memfd rather than anonymous memory: besides the processes fork()ed from now on, a
    // process the fd is handed to can map the same state (ImportLimitPool).
    block_.memory = CreateShared("concurry-limit-set", block_.bytes, &block_.fd);
    if (block_.memory == nullptr) {
      throw CapacityError(absl::StrCat("LimitSet: could not create ", block_.bytes,
                                       " bytes of shared memory: ", std::strerror(errno)));
    }
  } else {
    block_.memory = ::operator new(block_.bytes, std::align_val_t(64));
    std::memset(block_.memory, 0, block_.bytes);
  }
  char* base = static_cast<char*>(block_.memory);
  header_ = new (base + layout.header_offset) Header();
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
  BuildInfo(layout);
  // The hot TATs start as a new rate state's word does; no other thread sees them yet. (Only on
  // creation: an attached set runs on what the creator wrote.)
  for (const LimitInfo& info : info_) {
    if (info.tat != nullptr) *info.tat = kGcraInitialTat;
  }
}

void SetImpl::BuildInfo(const Layout& layout) {
  char* const base = static_cast<char*>(block_.memory);
  for (size_t i = 0; i < limits_.size(); ++i) {
    LimitInfo& info = info_[i];
    info.rate = rates_[i];
    info.gcra = info.rate != nullptr ? info.rate->exclusive_gcra() : nullptr;
    const size_t hot = layout.hot_offsets.empty() ? kNoHotWord : layout.hot_offsets[i];
    if (info.rate == nullptr) {
      info.in_use = hot != kNoHotWord ? reinterpret_cast<double*>(base + hot) : &in_use_[i];
    } else if (info.gcra != nullptr && hot != kNoHotWord) {
      info.tat = reinterpret_cast<int64_t*>(base + hot);
      info.tolerance_ns = info.rate->tolerance_ns();
    }
  }
  IndexCosts();
}

SetImpl::Layout SetImpl::ComputeLayout(const std::vector<Limit>& limits, int max_holders,
                                       bool line_per_holder) {
  Layout layout;
  layout.rate_offsets.assign(limits.size(), 0);
  layout.hot_offsets.assign(limits.size(), kNoHotWord);
  // kThreads: an acquisition writes the lock and the header's counters, each GCRA word and each
  // resource count, under the lock, at its take and at its release; with two threads, each line
  // written there moves to the other core and back. The block's first line therefore holds the
  // first kHotWords of those words (in limit order) and then the header's first kHotHeaderBytes:
  // one line for a set of up to 3 GCRA (or TokenBucket) and resource limits. A GCRA word there
  // replaces its rate state's (whose own word is used only by HotRateStateLocked()), because a
  // rate state's word sits at its end, after 56 bytes of parameters (sizeof(RateState)), so two
  // could never share a line. kProcesses keeps its packed layout: there the block's size is what
  // tells an fd of another set apart when a process attaches, and one more limit must change it.
  if (line_per_holder && !limits.empty()) {
    size_t used = 0;
    for (size_t i = 0; i < limits.size() && used < kHotWords; ++i) {
      if (limits[i].kind() == LimitKind::kResource ||
          HasExclusiveGcra(limits[i].algorithm(), limits[i].capacity())) {
        layout.hot_offsets[i] = used++ * 8;
      }
    }
    layout.header_offset = kHotWords * 8;
  }
  size_t offset = layout.header_offset + RoundUp(sizeof(Header), 8);
  size_t num_resources = 0;
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
  // kThreads: each holder on its own cache lines (the block is line-aligned), since two threads
  // acquiring at once each write their own slot, and slots 48 bytes apart made them share a
  // line. kProcesses keeps them packed.
  const size_t align = line_per_holder ? 64 : 8;
  layout.holders_offset = RoundUp(offset, align);
  layout.holder_stride = RoundUp(sizeof(Holder) + num_resources * sizeof(double), align);
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
  if (static_cast<uint64_t>(size) != block_.bytes) {
    throw InvalidOptionError(absl::StrCat("LimitSet: the shared state behind fd ", fd, " has ",
                                          size, " bytes, but limits ", LimitKeys(),
                                          " with max_holders ", options_.max_holders, " need ",
                                          block_.bytes, "; the fd belongs to another set"));
  }
  // The caller keeps its fd; this set owns a duplicate for its lifetime, as a created set owns
  // its memfd. From here on, block_ closes it (and unmaps the block) if the constructor throws.
  block_.fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (block_.fd < 0) {
    throw CapacityError(
        absl::StrCat("LimitSet: cannot duplicate fd ", fd, ": ", std::strerror(errno)));
  }
  block_.memory = MapSharedFd(block_.fd, block_.bytes);
  if (block_.memory == nullptr) {
    const int error = errno;
    throw CapacityError(absl::StrCat("LimitSet: could not map ", block_.bytes,
                                     " bytes of shared memory: ", std::strerror(error)));
  }
  // Pointers into the mapping only: the creator initialized everything (mutex, rate states,
  // holders), and the state holds no absolute addresses (RateState keeps offsets), so it is
  // valid at whatever address this process maps it.
  char* base = static_cast<char*>(block_.memory);
  header_ = reinterpret_cast<Header*>(base + layout.header_offset);
  rates_.assign(limits_.size(), nullptr);
  for (size_t i = 0; i < limits_.size(); ++i) {
    if (limits_[i].kind() == LimitKind::kResource) continue;
    rates_[i] = reinterpret_cast<RateState*>(base + layout.rate_offsets[i]);
  }
  in_use_ = reinterpret_cast<double*>(base + layout.in_use_offset);
  holders_ = base + layout.holders_offset;
  tickets_ = reinterpret_cast<Ticket*>(base + layout.tickets_offset);
  // The parameters each rate state was created with must be this set's: a same-sized block of
  // another set would otherwise run with the wrong algorithm. Its layout too: every RateState
  // call finds the algorithm's state through the offset stored in the block.
  for (size_t i = 0; i < limits_.size(); ++i) {
    const RateState* rate = rates_[i];
    if (rate == nullptr) continue;
    const Limit& limit = limits_[i];
    if (rate->algorithm() != limit.algorithm() || rate->capacity() != limit.capacity() ||
        rate->window_ns() != absl::ToInt64Nanoseconds(limit.window()) ||
        rate->burst() != limit.burst() || !rate->HasLayout(limits_internal::RateLayout::kPacked)) {
      throw InvalidOptionError(absl::StrCat("LimitSet: the shared state behind fd ", fd,
                                            " does not hold the state of ", limit.DebugString(),
                                            "; the fd belongs to another set"));
    }
  }
}

std::shared_ptr<SetImpl> SetImpl::Make(std::vector<Limit> limits, LimitSetOptions options,
                                       int attach_fd) {
  // If the shared_ptr cannot allocate its control block, it calls the deleter, which destroys
  // the set (nothing counted yet).
  return std::shared_ptr<SetImpl>(new SetImpl(std::move(limits), std::move(options), attach_fd),
                                  &SetImpl::OnLastHandle);
}

void SetImpl::OnLastHandle(SetImpl* set) {
  if (set->counts_references_) {
    bool last;
    {
      Locked locked(set);
      set->orphaned_ = true;
      last = set->header_->references == 0;
    }
    if (!last) return;  // The last counted acquisition destroys it (DropReference, Release).
  }
  delete set;
}

bool SetImpl::DropReferenceGetLast() {
  Locked locked(this);
  return --header_->references == 0 && orphaned_;
}

void SetImpl::DropReference() noexcept {
  if (DropReferenceGetLast()) delete this;
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
  // block_'s destructor frees the memory block (after this body, once the helper has stopped).
}

SetImpl::OwnedBlock::~OwnedBlock() {
  if (shared) {
    if (memory != nullptr) UnmapShared(memory, bytes);
    if (fd >= 0) close(fd);
  } else if (memory != nullptr) {
    ::operator delete(memory, std::align_val_t(64));
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
  for (size_t i = 0; i < limits_.size(); ++i) {
    if (resource_index_[i] >= 0) InUseLocked(info_[i]) = 0;
  }
  header_->holding = 0;
  header_->waiters = 0;
  for (int32_t slot = 0; slot < options_.max_holders; ++slot) {
    const Holder& owner = holder(slot);
    if (owner.pid == 0) continue;
    const double* holding = held(slot);
    for (size_t i = 0; i < limits_.size(); ++i) {
      if (resource_index_[i] >= 0) InUseLocked(info_[i]) += holding[resource_index_[i]];
    }
    header_->holding += owner.acquisitions;
    header_->waiters += owner.waiting;
  }
}

LimitSetStats SetImpl::Stats() {
  // What the limits say, outside the lock: the keys and the vector allocate.
  LimitSetStats stats = DefinitionStats();
  Locked locked(this);
  const int64_t now = NowNs();
  if (shared_ && absl::ToUnixNanos(absl::Now()) - header_->last_recovery_ns >=
                     absl::ToInt64Nanoseconds(options_.lease_check_interval)) {
    RecoverDeadLocked();  // Report neither holders nor waiters that are dead.
  }
  for (size_t i = 0; i < limits_.size(); ++i) {
    LimitStats& entry = stats.limits[i];
    if (rates_[i] == nullptr) {
      entry.in_use = InUseLocked(info_[i]);
    } else if (info_[i].tat != nullptr) {
      entry.rate = HotRateStateLocked(i)->Snapshot(now, &entry.in_use);
      CopyBackHotTatLocked(i);
    } else {
      entry.rate = rates_[i]->Snapshot(now, &entry.in_use);
    }
    entry.available = std::max(0.0, entry.burst - entry.in_use);
    entry.utilization = std::isinf(entry.burst) ? 0 : entry.in_use / entry.burst;
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

namespace {

// The in-process engine behind `set`, or null for another engine (a kHosts set's), which has no
// shared memory to hand over.
const SetImpl* EngineOf(const LimitSetBackend* set) { return dynamic_cast<const SetImpl*>(set); }

}  // namespace

int SetAccess::SharedFd(const LimitSet& set) {
  const SetImpl* engine = EngineOf(set.impl_.get());
  return engine != nullptr ? engine->fd() : -1;
}

bool SetAccess::HasHotWord(const LimitSet& set, size_t index) {
  const SetImpl* engine = EngineOf(set.impl_.get());
  return engine != nullptr && engine->HasHotWord(index);
}

size_t SetAccess::SharedBytes(const LimitSet& set) {
  const SetImpl* engine = EngineOf(set.impl_.get());
  return engine != nullptr && engine->options().sharing == LimitSharing::kProcesses
             ? engine->block_bytes()
             : 0;
}

size_t SetAccess::SharedBytesFor(const std::vector<Limit>& limits, int max_holders) {
  return SetImpl::LayoutBytes(limits, max_holders);
}

const LimitSetOptions& SetAccess::Options(const LimitSet& set) { return set.impl_->options(); }

LimitSet SetAccess::Attach(std::vector<Limit> limits, LimitSetOptions options, int fd) {
  if (fd < 0) throw InvalidOptionError(absl::StrCat("LimitSet: cannot attach to fd ", fd));
  return LimitSet(SetImpl::Make(std::move(limits), std::move(options), fd));
}

}  // namespace limits_internal
}  // namespace concurry

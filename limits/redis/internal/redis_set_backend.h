// The Redis engine of LimitSet (LimitSharing::kHosts with a RedisLimitStore): the set's state
// lives in Redis keys and every acquisition, release, over-use charge and statistics read is one
// Lua script (limits/redis/internal/scripts.h), so that many hosts share the limits with the
// algorithms of an in-process set and time from the Redis server's clock. Internal to
// //limits/redis; users reach it through RedisLimitStore::OpenSet() (LimitSet::Create()).
//
//   auto core = std::make_shared<StoreCore>(options);
//   auto backend = RedisSetBackend::Open(core, limits, set_options);  // Checks the definition.
//   LimitAcquisition a = backend->Acquire(backend, {{"tokens", 10}}, timeout, /*try_once=*/false);

#ifndef CONCURRY_LIMITS_REDIS_INTERNAL_REDIS_SET_BACKEND_H_
#define CONCURRY_LIMITS_REDIS_INTERNAL_REDIS_SET_BACKEND_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "limits/internal/async_helper.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/limit_set_backend.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace limits_internal {
namespace redis {

using ::concurry::redis_internal::RedisClient;
using ::concurry::redis_internal::RedisReply;
using ::concurry::redis_internal::RedisSubscriber;

// A counter raised when a set's wake-up channel gets a message: the waiters of the set in this
// process re-try when it moves. Thread-safe.
class WakeSignal {
 public:
  void Raise() ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t generation() ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until the generation moves past `seen`, `*interrupt` (if given) is set, or `deadline`
  // (real clock).
  void Wait(uint64_t seen, absl::Time deadline, const std::atomic<bool>* interrupt)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Sets `*flag` and wakes every waiter so that it looks at its interrupt flag.
  void Interrupt(std::atomic<bool>* flag) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

// What a RedisLimitStore and the sets it opened share: the options, the client (a connection
// pool), the subscriber of the sets' wake-up channels and the thread that renews the leases of
// live acquisitions every lease_ttl / 3. Kept alive by the store and by every set it opened.
// Thread-safe.
class StoreCore {
 public:
  // `options` must be valid (RedisOptions::Validate()). Connects nothing yet: the client connects
  // on its first command, the subscriber with the first set.
  explicit StoreCore(RedisOptions options);
  ~StoreCore();

  StoreCore(const StoreCore&) = delete;
  StoreCore& operator=(const StoreCore&) = delete;

  const RedisOptions& options() const { return options_; }
  RedisClient& client() { return client_; }
  // "host:port" or the unix socket, for messages.
  const std::string& address() const { return address_; }

  // Calls `on_message` on every message to `channel` (and once when the subscription is
  // confirmed, again after a reconnect) until Unsubscribe(); the subscriber connects on first use.
  RedisSubscriber::Token Subscribe(const std::string& channel, std::function<void()> on_message)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Unsubscribe(RedisSubscriber::Token token) ABSL_LOCKS_EXCLUDED(mu_);

  // Registers lease `lease` of the set whose keys start with `base` for renewal (starting the
  // renewal thread in this process on first use).
  void AddLease(const std::string& base, int64_t lease) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops renewing it; returns false when this process did not register it (a fork()ed child
  // destroying its copy of the parent's acquisition), which must then not release it.
  bool RemoveLease(const std::string& base, int64_t lease) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void RunRenewal() ABSL_LOCKS_EXCLUDED(mu_);
  // Starts the renewal thread unless this process has one.
  void StartRenewalLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RedisOptions options_;
  const std::string address_;
  RedisClient client_;
  // The renewal thread's own connection: a busy pool never makes a renewal wait or fail.
  RedisClient renewal_client_;

  absl::Mutex mu_;
  std::unique_ptr<RedisSubscriber> subscriber_ ABSL_GUARDED_BY(mu_);
  // Per set (key prefix): the leases of live acquisitions, each with whether it is still renewed
  // (false once Redis said it expired: renewing it could not bring it back).
  absl::flat_hash_map<std::string, absl::flat_hash_map<int64_t, bool>> leases_ ABSL_GUARDED_BY(mu_);
  pid_t leases_pid_ ABSL_GUARDED_BY(mu_) = 0;  // The process the registered leases belong to.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread renewal_ ABSL_GUARDED_BY(mu_);
  pid_t renewal_pid_ ABSL_GUARDED_BY(mu_) = 0;
};

// The Redis engine of one LimitSet. Thread-safe.
//
// Acquisitions: one take script. Those holding resource units get a lease (LeaseOf() is its id in
// Redis), renewed by the store; the others get a local id (kLocalLease), and their release calls
// Redis only to refund unused TokenBucket/GCRA tokens. Releases (and leaves of the FIFO queue) are
// one-way calls of the client: the caller does not wait for their reply, which the client's
// reader thread hands to FinishRelease(); a last try (TryAcquire(), the take at a deadline) and
// Stats() first wait for this process's one-way calls sent before, and the destructor for all.
// The commands of a timed request end by its deadline (RedisDeadlineError: not granted). FIFO
// exemption (a thread holding an acquisition made with Acquire()/TryAcquire()) is tracked here, by
// thread id. Waiting: a request that cannot be served sleeps until the retry-after the take script
// computed, its deadline, or a message on the set's wake-up channel (a release, a refund, the queue
// head leaving), and at most lease_ttl / 3 (each take renews its FIFO ticket), then takes again.
// AcquireAsync(): one helper thread per set serves the waiting requests in order, the same way.
// Redis unavailable: with RedisFailure::kFailClosed the RedisError reaches the caller of
// Acquire()/TryAcquire() (AcquireAsync(): its future); with kFailOpen the request is granted
// without holding anything in Redis, with one warning per outage. A release that cannot reach
// Redis warns; the lease then expires after lease_ttl.
class RedisSetBackend final : public LimitSetBackend {
 public:
  // Opens the set `options.name` in `core`: writes its definition (the limits' keys and
  // ParamsSignature()s) unless one exists, and throws InvalidOptionError naming both when a
  // different one does. RedisError when Redis cannot be reached (kFailOpen: a warning instead,
  // and the definition is checked at the first acquisition that reaches Redis).
  static std::shared_ptr<RedisSetBackend> Open(std::shared_ptr<StoreCore> core,
                                               std::vector<Limit> limits, LimitSetOptions options);
  ~RedisSetBackend() override;

  LimitAcquisition Acquire(const std::shared_ptr<LimitSetBackend>& self,
                           absl::Span<const LimitAmount> request, absl::Duration timeout,
                           bool try_once) override;
  LimitAcquisition AcquirePrepared(const std::shared_ptr<LimitSetBackend>& self,
                                   const PreparedLimitRequest& request, absl::Duration timeout,
                                   bool try_once) override;
  Future<LimitAcquisition> AcquireAsync(Request request, absl::Time deadline) override;
  void RecordUsage(Item* const* targets, const double* amounts, size_t count) override;
  bool Release(LimitAcquisition& acquisition, bool drop) noexcept override;
  void DropReference() noexcept override {}
  LimitSetStats Stats() override;
  void CountMissingUpdate() noexcept override;
  Clock& clock() const override { return Clock::Real(); }

  // The prefix of the set's keys: "<key_prefix>{<name>}:".
  const std::string& base() const { return base_; }

 private:
  struct AsyncRequest {
    Request request;
    absl::Time deadline;
    Promise<LimitAcquisition> promise;
    std::shared_ptr<std::atomic<bool>> cancelled;
    int64_t ticket = 0;
    absl::Time retry = absl::InfinitePast();  // When to take again without a wake-up.
    // Keeps the set alive until the helper thread's own reference takes over.
    std::shared_ptr<RedisSetBackend> set;
  };
  struct AsyncQueue {
    absl::Mutex mu;
    std::deque<AsyncRequest> incoming ABSL_GUARDED_BY(mu);
    bool shutdown ABSL_GUARDED_BY(mu) = false;
    // Set (through WakeSignal::Interrupt()) by a new request or a cancellation.
    std::atomic<bool> interrupt{false};
    std::thread thread;
    pid_t pid = 0;
    std::list<AsyncRequest> pending;  // The helper thread's own.
  };
  // The outcome of one take script call.
  struct TakeResult {
    bool granted = false;
    int64_t lease = 0;
    int64_t wait_us = 0;  // > 0: µs until a retry can succeed; -1: only a release helps.
    int64_t ticket = 0;
  };
  enum class TakeMode { kMayWait = 0, kTryOnce = 1, kLastTry = 2 };
  // The bit that marks a lease id as local (an acquisition without a lease in Redis: it holds no
  // resource units, or it was granted without Redis); Redis's ids (INCR) stay below it. With
  // kFailOpenLease too: granted without Redis.
  static constexpr uint64_t kLocalLease = uint64_t{1} << 63;
  static constexpr uint64_t kFailOpenLease = uint64_t{1} << 62;

  RedisSetBackend(std::shared_ptr<StoreCore> core, std::vector<Limit> limits,
                  LimitSetOptions options);

  // Writes or compares the definition (see Open()).
  void CheckDefinition();
  // Takes `result`'s items (validated) for `self`, waiting until `deadline` (InfinitePast():
  // try once); clears them if it could not.
  void TakeInto(const std::shared_ptr<LimitSetBackend>& self, bool nested, absl::Time deadline,
                bool exempt_when_holding, LimitAcquisition& result);
  // One call of the take script, ended by `deadline` (RedisDeadlineError).
  TakeResult TakeOnce(const Items& items, bool exempt, int64_t ticket, TakeMode mode,
                      absl::Time deadline);
  // Drops `ticket` (0: none; it then only counts a timeout if `timed_out`), one-way (best effort:
  // errors are ignored, the ticket then expires).
  void Leave(int64_t ticket, bool timed_out) noexcept;
  // Handles the outcome of a one-way release (`missing`: the missing updates it carried).
  void FinishRelease(const RedisReply* reply, const RedisError* error,
                     const std::string& missing) noexcept;
  // Binds a granted acquisition (its items in place) to the set: `lease` from the take script
  // (0 when it holds no resource units, or when granted without Redis: `fail_open`), which then
  // gets a local id. `exempting`: made by Acquire()/TryAcquire(), it lets its thread skip the FIFO
  // queue while held.
  void Grant(const std::shared_ptr<LimitSetBackend>& self, int64_t lease, bool fail_open,
             bool exempting, LimitAcquisition& result) ABSL_LOCKS_EXCLUDED(holders_mu_);
  // Throws InvalidOptionError naming the definition `in_redis` and this set's.
  [[noreturn]] void ThrowDefinitionMismatch(const std::string& in_redis) const;
  // Whether `error` may be an outage (which kFailOpen rides out): not a RedisConfigError (Redis
  // refuses what is asked), a RedisPoolBusyError (reachable, the pool is busy) or a
  // RedisDeadlineError (the caller's deadline).
  static bool Outage(const RedisError& error);
  // With kFailOpen: warns (once per outage) and returns true; with kFailClosed returns false.
  bool FailOpen(const std::exception& error, absl::string_view what);
  // Clears the outage flag after a successful call.
  void Reachable() { outage_.store(false, std::memory_order_relaxed); }
  // Warns about `error` once per outage.
  void WarnOutage(absl::string_view what, const std::exception& error);
  // The message of WarnOutage().
  std::string OutageMessage(absl::string_view what, const std::exception& error) const;
  // Queues `message` for DeliverWarnings(). The outcome of a one-way release is handled on the
  // client's reader thread, which must never run on_warning: a callback that dropped the last
  // handle of the set or the store there would destroy them on the thread their destructors wait
  // for.
  void DeferWarning(std::string message) ABSL_LOCKS_EXCLUDED(deferred_mu_);
  // Reports the queued warnings (on a user's thread: the next take, Stats(), or the destructor).
  void DeliverWarnings() noexcept ABSL_LOCKS_EXCLUDED(deferred_mu_);

  // The ARGV fields of `items` (items of unlimited rate limits are left out), with `amount(item)`
  // as each one's amount; returns how many were added.
  template <typename AmountOf>
  int AppendItems(const Items& items, AmountOf amount, std::vector<std::string>* args) const;
  // The ARGV fields of every limit (stats), amount 0.
  int AppendAllLimits(std::vector<std::string>* args) const;
  // Missing updates not yet counted in Redis, as a string (and zeroed); a call that could not
  // send them gives them back with RestoreMissingUpdates().
  std::string TakeMissingUpdates();
  void RestoreMissingUpdates(const std::string& count);

  // Whether the calling thread holds an exempting acquisition of this set.
  bool ThreadExempt() ABSL_LOCKS_EXCLUDED(holders_mu_);

  using AsyncCompletions = ::concurry::limits_internal::AsyncCompletions<LimitAcquisition>;
  // Marks everything `acquisition` holds as unused (its future was cancelled): its destructor
  // gives it back.
  static void GiveBackUnused(LimitAcquisition& acquisition);
  static void RunAsync(std::shared_ptr<AsyncQueue> queue);
  // One round of the helper thread over its pending requests. If requests are left, completes
  // the ended ones and waits until something changes; otherwise returns them for
  // RunAsyncHelper() to complete after it let go of the set.
  AsyncCompletions ServeAsync(AsyncQueue& queue);

  const std::shared_ptr<StoreCore> core_;
  std::weak_ptr<RedisSetBackend> self_;  // Set by Open().
  const std::string base_;
  const std::string channel_;
  const pid_t pid_;  // The process that opened the set: only its acquisitions are released.
  std::shared_ptr<WakeSignal> wake_;
  RedisSubscriber::Token subscription_ = 0;
  // Per limit: the ARGV fields before the amount (index, code, capacity, window µs, burst, tau
  // µs); empty for an unlimited rate limit.
  std::vector<std::vector<std::string>> fields_;
  std::vector<bool> gcra_;  // Per limit: TokenBucket or GCRA (refunds).
  std::string signature_;
  std::atomic<bool> definition_checked_{false};
  std::atomic<bool> outage_{false};
  std::atomic<int64_t> missing_updates_{0};  // Not yet counted in Redis.
  // The renewal period of tickets: lease_ttl / 3.
  absl::Duration renew_period_;

  absl::Mutex deferred_mu_;
  std::vector<std::string> deferred_warnings_ ABSL_GUARDED_BY(deferred_mu_);

  absl::Mutex holders_mu_;
  // Per thread id: its acquisitions made with Acquire()/TryAcquire() still held.
  absl::flat_hash_map<pid_t, int64_t> exempting_ ABSL_GUARDED_BY(holders_mu_);
  // Those acquisitions, by lease id: the thread that made each.
  absl::flat_hash_map<uint64_t, pid_t> exempt_leases_ ABSL_GUARDED_BY(holders_mu_);
  // Ids of acquisitions without a lease: kLocalLease | a count.
  uint64_t local_leases_ ABSL_GUARDED_BY(holders_mu_) = 0;
  // Those held now (Stats().holding adds them to the leases of every host).
  std::atomic<int64_t> local_holding_{0};

  absl::Mutex async_mu_;
  std::shared_ptr<AsyncQueue> async_ ABSL_GUARDED_BY(async_mu_);
};

// ---- Shared by the engine's files (redis_set_backend.cc, store_core.cc, redis_set_async.cc) ----

// How long the last take at a timed acquisition's deadline (which also drops its ticket and counts
// the timeout) may run past that deadline, at most.
inline constexpr absl::Duration kLastTryGrace = absl::Milliseconds(50);

// The lease renewal script.
const redis_internal::RedisScript& Renew();

// Runs `script` on the keys of the set at `base` and returns its reply; throws RedisError for an
// unreachable server or a transient refusal, RedisConfigError for any other error reply.
RedisReply Run(RedisClient& client, const redis_internal::RedisScript& script,
               const std::string& base, const std::vector<std::string>& args,
               absl::Time deadline = absl::InfiniteFuture());

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_INTERNAL_REDIS_SET_BACKEND_H_

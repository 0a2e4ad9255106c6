// LimitSet: several limits acquired together, all or nothing, by many threads, by forked
// processes, or by processes on several hosts (LimitSharing::kHosts, through a LimitStore). An
// acquisition is an RAII object: report the usage of rate limits with Update(), and its destruction
// (or Release()) gives back what was held and refunds unused tokens.
//
//   concurry::LimitSet limits = concurry::LimitSet::Create({
//       concurry::RateLimit("tokens", 10'000, "minute", concurry::RateLimitAlgorithm::kGcra),
//       concurry::CallLimit(100, "second"),
//       concurry::ResourceLimit("connections", 4),
//   });
//   {
//     concurry::LimitAcquisition acquired = limits.Acquire({{"tokens", 500}});  // + 1 call, 1 conn
//     int used = CallModel(...);
//     acquired.Update({{"tokens", used}});
//   }  // Connection back, 500 - used tokens refunded.
//
// Differences from concurry (reference §5.4-5.5, §11.2, §11.5, §11.16), on purpose:
// - Waiting is event-driven (woken when capacity comes back, or at the exact time a rate limit
//   can admit the request), not a 10 ms sleep loop; waiters are served first come, first served
//   by default (LimitFairness), so a large request is not starved by a stream of small ones.
// - A rate limit left without Update() is still released (charged in full) and reported;
//   concurry keeps it held and masks the body's exception. Over-use is charged.
// - A failed TryAcquire() returns no acquisition, so nothing can be released twice.
// - Unknown keys in a request or update are errors (concurry warns and ignores them), except on
//   the no-op set, which accepts any key so that the same code runs with and without limits.
//   Amounts are checked everywhere, the no-op set included: negative, infinite and NaN amounts
//   are errors.
// - A process-shared set runs the same algorithms as an in-process one (concurry falls back to a
//   sliding-window sum) at in-process cost, and recovers what a killed process held.

#ifndef CONCURRY_LIMITS_LIMIT_SET_H_
#define CONCURRY_LIMITS_LIMIT_SET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/clock.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "limits/limit.h"

namespace concurry {

class LimitSet;
class LimitSetBackend;  // limits/limit_set_backend.h: the engine behind a set.
class LimitStore;       // limits/limit_set_backend.h: where kHosts sets live.
class PreparedLimitRequest;

namespace limits_internal {
class SetImpl;
struct SetAccess;  // limits/internal/set_access.h: handing a set to another process.
}  // namespace limits_internal

// A key and an amount: one entry of a request (Acquire) or of a usage report (Update). Any number
// type converts, so `{"tokens", used}` works with an int `used` (no narrowing error).
struct LimitAmount {
  template <
      typename Number,
      std::enable_if_t<std::is_arithmetic_v<Number> && !std::is_same_v<Number, bool>, int> = 0>
  constexpr LimitAmount(absl::string_view key, Number amount)  // NOLINT: braced lists.
      : key(key), amount(static_cast<double>(amount)) {}

  absl::string_view key;
  double amount;
};

// A limit of one LimitSet, resolved from its key by LimitSet::Handle(), for
// LimitAcquisition::Update(handle, used). Copyable; an empty one (default-constructed) belongs to
// no set.
class LimitHandle {
 public:
  LimitHandle() = default;

 private:
  friend class LimitSetBackend;
  friend class LimitSet;
  uint64_t set_id_ = 0;
  int32_t index_ = -1;
};

// Metadata attached to a LimitSet and visible on each of its acquisitions, e.g. the account or
// region a LimitPool picked: {"account": "a-17", "region": "eu"}.
using LimitConfig = std::map<std::string, std::string, std::less<>>;

// Who goes first when acquirers wait.
enum class LimitFairness {
  // Default. Acquirers that had to wait are served in arrival order: while one waits, later
  // acquirers (and TryAcquire()) queue behind it even if what they ask for is available. A thread
  // that already holds an acquisition of the set made with Acquire() or TryAcquire() is exempt,
  // and so is a request that names a limit with amount 0 (it nests inside an acquisition holding
  // that limit), so nested acquisitions cannot deadlock behind a waiter that needs what they
  // hold. AcquireAsync() requests keep their place in the queue while they wait.
  kFifo,
  // Whoever finds the capacity takes it (concurry's behaviour): more throughput under contention,
  // but a large request can starve behind a stream of small ones.
  kBarging,
};

// Where the set's state lives.
enum class LimitSharing {
  // Default. Shared by the threads (workers, pools) of this process.
  kThreads,
  // In shared memory, shared with processes fork()ed after Create(), and with any process of the
  // same program it is handed to (process workers, started by a forkserver long before the set
  // existed, receive it over a socket: docs/process.md). Every process runs the same algorithms
  // on the same state, at in-process cost. Uses the real clock. A process that dies
  // holding resource units gives them back within `lease_check_interval` while another process
  // waits for them, or at the next acquisition that finds them short.
  kProcesses,
  // In a LimitStore (LimitSetOptions::store, e.g. a RedisLimitStore): shared with every process
  // on every host that opens a set of the same `name` in the same store. Uses the store's clock
  // (LimitSetOptions::clock must be null). The same API and behaviour, at the cost of the store's
  // round trips.
  kHosts,
};

struct LimitSetOptions {
  LimitFairness fairness = LimitFairness::kFifo;
  LimitSharing sharing = LimitSharing::kThreads;
  // Copied into the set; every acquisition exposes it (LimitAcquisition::config()).
  LimitConfig config;
  // Time source for the rate algorithms and waits; null means Clock::Real(). Must outlive the
  // set. kProcesses sets accept only the real clock (time must be the same in every process).
  // kHosts sets run on the store's clock: null (or Clock::Real(), taken as null).
  Clock* clock = nullptr;
  // How many threads (over all processes) may hold acquisitions of the set at once: >= 1.
  // Acquiring beyond it fails with CapacityError. Not used by kHosts sets.
  int max_holders = 1024;
  // kProcesses: how often a blocked acquirer checks for dead processes holding resource units.
  // Not used by kHosts sets (their store has its own leases).
  absl::Duration lease_check_interval = absl::Milliseconds(100);
  // Receives warnings (over-use reported by Update(), a rate limit released without Update());
  // null writes them to stderr. Called without locks held, from the thread that caused them;
  // kHosts: also store failures, and a release that failed after it was sent is reported later,
  // by the set's next Acquire(), TryAcquire() or Stats(), or by its destruction.
  std::function<void(absl::string_view)> on_warning;
  // kHosts: the store that keeps the set's state and creates its engine (required; with
  // kThreads or kProcesses it must be null).
  std::shared_ptr<LimitStore> store;
  // kHosts: the set's name in the store (required: 1 to 256 bytes of printable ASCII, 0x21-0x7e,
  // without '{' or '}'; must be empty with kThreads and kProcesses). Sets of the same name in
  // the same store share their state and must define the same limits.
  std::string name;
};

// One limit's state in a LimitSet::Stats() snapshot.
struct LimitStats {
  std::string key;
  LimitKind kind = LimitKind::kRate;
  double capacity = 0;
  absl::Duration window;
  RateLimitAlgorithm algorithm = kDefaultRateLimitAlgorithm;
  // The most units admitted at once: Limit::burst() (the capacity unless set; a ResourceLimit's
  // capacity).
  double burst = 0;
  // Units counted against the burst now (held resource units; for rate limits as in
  // RateLimiterStats: tokens missing from the bucket, the leaky bucket's level, units admitted
  // in the window) and burst - in_use; utilization = in_use / burst (0 when unlimited). With the
  // default burst, the burst is the capacity.
  double in_use = 0;
  double available = 0;
  double utilization = 0;
  // Rate and call limits: the algorithm's own state (GCRA's TAT and tolerance, a bucket's tokens
  // or level, a window's start and count); defaults for a ResourceLimit.
  RateAlgorithmStats rate;
};

struct LimitSetStats {
  // The entry of the limit with `key`, or null. The pointer lives as long as this object.
  const LimitStats* Find(absl::string_view key) const;
  // The entry of the limit with `key`; throws InvalidOptionError naming `key` and the keys
  // present if there is none. On a temporary (`set.Stats().at("tokens")`) it returns a copy, so
  // `const LimitStats& s = set.Stats().at("tokens");` does not dangle.
  const LimitStats& at(absl::string_view key) const&;
  LimitStats at(absl::string_view key) &&;

  std::vector<LimitStats> limits;  // In the order given to Create().
  int64_t acquisitions = 0;        // Successful acquisitions so far.
  int64_t timeouts = 0;            // Acquire() calls that timed out.
  int64_t waiting = 0;             // Acquirers blocked now.
  int64_t holding = 0;             // Acquisitions alive now.
  int64_t missing_updates = 0;     // Releases of a rate limit that was never updated.
  int64_t overuse_reports = 0;     // Updates that reported more than was requested.
  int64_t recovered_holders = 0;   // Dead processes whose resource units were taken back.
};

// What an acquisition took, used and was charged for one limit (LimitAcquisition::charges()).
struct LimitCharge {
  std::string key;
  LimitKind kind = LimitKind::kRate;
  // The amount taken at acquisition (1 for a CallLimit or ResourceLimit the request did not name).
  double requested = 0;
  // Whether Update() reported a usage for this limit.
  bool updated = false;
  // The usage reported by the last Update(), or, without one, the default: the requested amount
  // (what is charged for a rate limit left without Update(), and what a call request of 1 or a
  // ResourceLimit always counts).
  double used = 0;
  // Rate and call limits: the units counted against the limit for this acquisition, i.e.
  // requested + the over-use charged by Update() - refunded. ResourceLimit: the units held,
  // requested until release and 0 after.
  double charged = 0;
  // Given back at release: requested - used for an updated TokenBucket or GCRA limit used below
  // its request (the other algorithms cannot refund, so they keep the whole request charged),
  // and a ResourceLimit's units. 0 while held.
  double refunded = 0;
};

// The result of acquiring from a LimitSet: holds the units until destroyed or released. Move-only.
// Not thread-safe (one owner at a time), but it may move between threads.
class LimitAcquisition {
 public:
  // An empty acquisition (holds nothing).
  LimitAcquisition() = default;
  LimitAcquisition(LimitAcquisition&& other) noexcept;
  LimitAcquisition& operator=(LimitAcquisition&& other) noexcept;
  // Releases (see Release()), reporting a missing Update() as a warning instead of throwing.
  ~LimitAcquisition();

  // Whether the acquisition still holds its units (not released, not moved from).
  bool held() const { return set_ != nullptr && !released_; }
  // The amount taken for `key`, 0 if the acquisition does not include it.
  double requested(absl::string_view key) const;
  // The keys and amounts taken, in the set's order.
  std::vector<LimitAmount> amounts() const;
  // The set's metadata. Empty for an empty acquisition.
  const LimitConfig& config() const;
  // Per limit taken, in the set's order: requested, used and charged amounts (LimitCharge). Also
  // after release (then with the final charges and refunds); empty for an empty or moved-from
  // acquisition. A released acquisition keeps its set's definitions alive until destroyed.
  std::vector<LimitCharge> charges() const;
  // The entry of charges() for `key`, or nullopt if the acquisition did not take that limit.
  std::optional<LimitCharge> charge(absl::string_view key) const;
  // Whether Release() (or the destructor's release) has run; false for an empty acquisition.
  bool released() const { return released_; }

  // Records what was actually used of each listed limit. Each key must be part of the
  // acquisition and each amount >= 0 and finite (whole, at most kMaxWholeUnits, for limits whose
  // algorithm counts whole units); InvalidOptionError otherwise, and nothing is recorded. Using
  // more than requested is charged (the extra is taken even beyond the capacity) and reported as a
  // warning. A CallLimit taken with 1, implicitly or as {"call_count", 1}, counts exactly one call
  // and may only be updated with 1 (InvalidOptionError otherwise, as in concurry). May be called
  // more than once; the last report wins, but charged extra is never given back. Throws
  // InvalidOptionError after release.
  void Update(absl::Span<const LimitAmount> usage);
  // As Update({{key, used}}) for the limit `limit` resolved by LimitSet::Handle() (no key
  // lookup): the same checks, and InvalidOptionError when `limit` belongs to another set or is
  // not part of the acquisition.
  void Update(const LimitHandle& limit, double used);

  // Gives back resource units and refunds requested - used for updated TokenBucket and GCRA
  // limits, waking waiters. A RateLimit (or a CallLimit taken with more than 1) without Update()
  // is charged in full; after releasing everything, Release() then throws LimitUsageError naming
  // those keys. Idempotent: releasing again does nothing. charges() then reports the final
  // figures.
  void Release();

 private:
  // The engine behind the set builds acquisitions (LimitSetBackend's protected accessors); the
  // in-process engine also reads and writes its own fields below (holder_ to taken_ns_).
  friend class LimitSetBackend;
  friend class limits_internal::SetImpl;
  friend class PreparedLimitRequest;
  struct Item {
    int32_t index = 0;  // Limit index in the set.
    bool implicit = false;
    bool updated = false;
    // A release without Update() is charged in full and reported (a RateLimit, or a CallLimit
    // taken with more than 1). Decided once when the request is validated, so the release does
    // not go back to the Limit objects.
    bool needs_update = false;
    double requested = 0;
    double used = 0;
    double charged_extra = 0;
    double refunded = 0;  // Set by the release.
    // TokenBucket and GCRA: the cost of `requested` in ns, computed once when the request is
    // validated rather than at every check of the acquisition.
    int64_t cost = 0;
    // TokenBucket and GCRA: the cost of requested - used, given back at release; computed by
    // Update() so that the release's critical section does no division.
    int64_t refund_cost = 0;
  };
  // Releases; returns the message naming the limits that missed an Update() ("" if none) and,
  // if `warn`, also reports it through the set's warning sink. `drop`: also lets go of the set
  // (the destructor's release).
  std::string ReleaseAndListMissing(bool warn, bool drop);
  // Releases what is held and lets go of the set: the destructor and move assignment.
  void Drop() noexcept;

  // The set; kept after release (for the keys charges() reports, with items_). An acquisition of
  // an in-process set with limits taken by the calling thread (Acquire(), TryAcquire(), and an
  // AcquireAsync() served at once) keeps it alive by being counted in it, under the lock its take
  // and release hold anyway: with two threads, a shared reference count was one more cache line
  // moving between the cores twice per acquisition. The others (the no-op set, kProcesses sets,
  // an AcquireAsync() served by the helper thread after waiting, every acquisition of another
  // engine, e.g. a kHosts set's) hold `owner_`.
  LimitSetBackend* set_ = nullptr;
  std::shared_ptr<LimitSetBackend> owner_;
  bool released_ = false;
  absl::InlinedVector<Item, 4> items_;
  int32_t holder_ = -1;     // Holder slot in the set, -1 for the no-op set.
  bool exempting_ = false;  // Lets its thread skip the FIFO queue (Acquire()/TryAcquire()).
  // The clock reading the units were taken at (ns since the epoch); the release refunds with it.
  int64_t taken_ns_ = 0;
  // Engine-defined: the Redis engine's lease id; unused in-process.
  uint64_t lease_ = 0;
};

// A request validated once against one set (LimitSet::Prepare()), to acquire many times without
// looking its keys up and checking its amounts again. Copyable and cheap to copy; usable only with
// the set that prepared it (any handle of it), otherwise InvalidOptionError. Not thread-safe to
// modify, but a const one may be shared by any number of threads.
//
//   const concurry::PreparedLimitRequest ten_tokens = limits.Prepare({{"tokens", 10}});
//   const concurry::LimitHandle tokens = limits.Handle("tokens");
//   concurry::LimitAcquisition acquired = limits.Acquire(ten_tokens);
//   acquired.Update(tokens, used);
class PreparedLimitRequest {
 public:
  // Copies only (a move copies too), so that no moved-from request is left to acquire with. No
  // default constructor: `set.Acquire({}, timeout)` stays the empty request.
  PreparedLimitRequest(const PreparedLimitRequest&) = default;
  PreparedLimitRequest& operator=(const PreparedLimitRequest&) = default;

 private:
  friend class LimitSetBackend;
  explicit PreparedLimitRequest(uint64_t set_id) : set_id_(set_id) {}
  uint64_t set_id_ = 0;  // The set's identity (never reused in a process).
  bool nested_ = false;  // It names a limit with amount 0 (see LimitFairness::kFifo).
  absl::InlinedVector<LimitAcquisition::Item, 4> items_;
};

// Thrown by LimitAcquisition::Release() when a rate limit was released without Update().
// kFailedPrecondition.
class LimitUsageError : public Error {
 public:
  explicit LimitUsageError(const std::string& message);
};

// A set of limits acquired atomically. A copyable handle: copies share one set (so passing a
// LimitSet to several workers shares it); it lives while a handle or an acquisition does.
// Thread-safe.
class LimitSet {
 public:
  // Builds a set. Keys must be unique (InvalidOptionError "Duplicate limit key: 'k'"). No limits
  // gives a no-op set. InvalidOptionError also for bad options (an unknown fairness or sharing
  // value, a clock with kProcesses or kHosts, max_holders < 1, a store with kThreads or
  // kProcesses, kHosts without a store or with a bad name). kProcesses maps the state into shared
  // memory (CapacityError if that fails); kHosts opens the set in options.store (its errors).
  static LimitSet Create(std::vector<Limit> limits, LimitSetOptions options = {});
  // A set with no limits: every acquisition succeeds at once and Update() accepts any key. Amounts
  // are still checked: >= 0 and finite (InvalidOptionError for negative, infinite or NaN ones).
  static LimitSet NoOp();
  // The no-op set.
  LimitSet();

  // Takes every requested amount at once, waiting up to `timeout` (on the set's clock; zero tries
  // once) until all are available together; throws TimeoutError when it expires first, and
  // InvalidOptionError at once for a negative timeout. The request names keys
  // and amounts; every CallLimit and ResourceLimit not named is taken with 1; a RateLimit must be
  // named (an empty request on a set with one is an error). Amount 0 leaves a limit out: a
  // nested acquisition that already holds the connection asks {{"tokens", n}, {"connections",
  // 0}}. InvalidOptionError, at once, for an unknown or repeated key, a negative or non-finite
  // (NaN) amount, a fractional amount (or one above kMaxWholeUnits) for a limit that counts whole
  // units, or an amount above a limit's capacity, or its burst when set ("can never be
  // fulfilled"); the 1 taken for an
  // unnamed CallLimit or ResourceLimit is checked the same way.
  LimitAcquisition Acquire(absl::Span<const LimitAmount> request = {},
                           absl::Duration timeout = absl::InfiniteDuration()) const;
  // As Acquire() but never waits: the acquisition, or nullopt if some amount is not available
  // now (or, with kFifo, if others are waiting).
  std::optional<LimitAcquisition> TryAcquire(absl::Span<const LimitAmount> request = {}) const;
  // As Acquire() but returns at once: the future completes with the acquisition (or
  // TimeoutError) and may be awaited from a coroutine. Bad requests and negative timeouts throw
  // InvalidOptionError at once. Requests that must wait are watched by one
  // helper thread per set, started on first use, which tries all of them (in queue order)
  // whenever capacity may have come back; their futures complete on that thread, so continuations
  // that block should move to an executor (Then(executor, ...)). Cancelling the future withdraws
  // the request: it is never granted, and the helper gives up its place in the FIFO queue
  // promptly, on its own thread (so not always before Cancel() returns). A waiting request keeps
  // the set alive; once all its futures have completed, the helper holds no reference, so the set
  // ends with the caller's last handle or acquisition, on that thread (and so does its
  // on_warning); dropping that last handle waits for a continuation still running on the helper.
  Future<LimitAcquisition> AcquireAsync(std::vector<LimitAmount> request = {},
                                        absl::Duration timeout = absl::InfiniteDuration()) const;

  // Validates `request` as Acquire() does (the same errors, thrown here) and returns it resolved
  // against this set: Acquire(), TryAcquire() and AcquireAsync() then take it without looking up
  // its keys or checking its amounts again. For a request made many times.
  PreparedLimitRequest Prepare(absl::Span<const LimitAmount> request = {}) const;
  // Acquire(), TryAcquire() and AcquireAsync() of a prepared request: the same behaviour, and
  // InvalidOptionError when `request` was prepared by another set (or default-constructed).
  LimitAcquisition Acquire(const PreparedLimitRequest& request,
                           absl::Duration timeout = absl::InfiniteDuration()) const;
  std::optional<LimitAcquisition> TryAcquire(const PreparedLimitRequest& request) const;
  Future<LimitAcquisition> AcquireAsync(const PreparedLimitRequest& request,
                                        absl::Duration timeout = absl::InfiniteDuration()) const;
  // The limit with `key`, resolved for LimitAcquisition::Update(handle, used); InvalidOptionError
  // naming the known keys if there is none (the no-op set has no limits, so none).
  LimitHandle Handle(absl::string_view key) const;

  // The limit with `key`, or null.
  const Limit* Find(absl::string_view key) const;
  // The limit with `key`; throws InvalidOptionError naming the known keys if there is none.
  const Limit& operator[](absl::string_view key) const;
  // The limits, in the order given to Create().
  const std::vector<Limit>& limits() const;
  bool no_op() const;
  LimitSharing sharing() const;
  LimitFairness fairness() const;
  const LimitConfig& config() const;

  LimitSetStats Stats() const;

  // Handles compare equal when they share one set.
  friend bool operator==(const LimitSet& a, const LimitSet& b) { return a.impl_ == b.impl_; }
  friend bool operator!=(const LimitSet& a, const LimitSet& b) { return a.impl_ != b.impl_; }

 private:
  friend struct limits_internal::SetAccess;
  explicit LimitSet(std::shared_ptr<LimitSetBackend> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<LimitSetBackend> impl_;
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_LIMIT_SET_H_

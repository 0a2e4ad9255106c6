// LimitSetBackend: the engine behind a LimitSet, and LimitStore: where LimitSharing::kHosts sets
// keep their state. Users only pick a store; engines implement these classes. The base class
// validates requests and usage reports the same way for every engine; the engine takes, waits,
// charges and gives back.
//
//   class MyStore : public concurry::LimitStore {
//     std::shared_ptr<concurry::LimitSetBackend> OpenSet(std::vector<concurry::Limit> limits,
//                                                        concurry::LimitSetOptions options)
//                                                        override;
//   };
//   concurry::LimitSet set = concurry::LimitSet::Create(
//       limits, {.sharing = concurry::LimitSharing::kHosts, .store = store, .name = "api"});

#ifndef CONCURRY_LIMITS_LIMIT_SET_BACKEND_H_
#define CONCURRY_LIMITS_LIMIT_SET_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/clock.h"
#include "futures/future.h"
#include "limits/limit.h"
#include "limits/limit_set.h"

namespace concurry {

namespace limits_internal {
class RateState;
class AtomicGcra;
class SetImpl;
}  // namespace limits_internal

// The engine of one LimitSet: the state of its limits and the acquisitions taken from it.
//
// The non-virtual part is common to every engine: the limits and options, validating requests
// (Prepare()) and usage reports (Update()), and warnings. The virtual part is the engine: taking
// (Acquire(), AcquirePrepared(), AcquireAsync()), charging over-use (RecordUsage()), giving back
// (Release()) and statistics. LimitSet and LimitAcquisition call the engine; an engine builds the
// acquisitions it returns through the protected accessors.
//
// An engine is created by LimitSet::Create() (kThreads and kProcesses: the in-process one) or by
// LimitStore::OpenSet() (kHosts), and is owned by a std::shared_ptr that every LimitSet handle
// copies; a held acquisition binds it (Bind()) with an owner that keeps it alive (the in-process
// engine's counted acquisitions have no owner: the engine counts them instead).
//
// Thread-safe: an engine's methods are called from any thread at once (except on one
// acquisition, which has one owner at a time).
class LimitSetBackend {
 public:
  using Item = LimitAcquisition::Item;
  using Items = absl::InlinedVector<Item, 4>;

  // A validated request: the items to take, in limit order.
  struct Request {
    Items items;
    // The request named a limit with amount 0, i.e. it nests inside an acquisition that holds
    // that limit: it skips the FIFO queue, whose head may be waiting for what it holds.
    bool nested = false;
  };

  virtual ~LimitSetBackend();
  LimitSetBackend(const LimitSetBackend&) = delete;
  LimitSetBackend& operator=(const LimitSetBackend&) = delete;

  // ---- Common (non-virtual) ----

  const std::vector<Limit>& limits() const { return limits_; }
  const LimitSetOptions& options() const { return options_; }
  bool no_op() const { return limits_.empty(); }
  // The set's identity, never reused in a process (handles and prepared requests carry it).
  uint64_t id() const { return id_; }

  // Validates `request` (LimitSet::Acquire()'s errors) into the items to take. Item::cost (and
  // later Item::refund_cost) are set only for limits whose engine runs them on a GCRA word here
  // (LimitInfo::gcra); 0 otherwise.
  Request Prepare(absl::Span<const LimitAmount> request) const;
  // LimitSet::Prepare(): `request` validated into a PreparedLimitRequest of this set.
  PreparedLimitRequest PrepareRequest(absl::Span<const LimitAmount> request) const;
  // Returns `prepared`; InvalidOptionError naming `caller` if it was not prepared by this set.
  const PreparedLimitRequest& CheckPrepared(const PreparedLimitRequest& prepared,
                                            const char* caller) const;
  // The Request of a prepared request (checked by CheckPrepared()).
  static Request ToRequest(const PreparedLimitRequest& request) {
    return Request{request.items_, request.nested_};
  }
  // LimitSet::Handle().
  LimitHandle HandleOf(absl::string_view key) const;
  // LimitAcquisition::Update(): validates `usage` (nothing is recorded if anything is wrong),
  // records it into the acquisition's items and, when some usage exceeds its request by more
  // than was charged so far, calls RecordUsage().
  void Update(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage);
  // As above for the usage `used` of limit `limit`.
  void Update(LimitAcquisition& acquisition, const LimitHandle& limit, double used);
  // Reports `message` through options().on_warning, or to stderr. Throws what on_warning throws.
  void Warn(absl::string_view message) const;

  // InvalidOptionError for an unknown fairness value; for duplicate keys ("Duplicate limit
  // key: 'k'"). LimitSet::Create() checks kHosts sets with them before opening them.
  static void CheckFairness(LimitFairness fairness);
  static void CheckUniqueKeys(const std::vector<Limit>& limits);

  // ---- The engine (virtual) ----

  // LimitSet::Acquire() (`try_once`: TryAcquire()): validates `request` and takes it, waiting up
  // to `timeout` on the engine's clock. Returns the held acquisition, or an empty one when the
  // time ran out or the try failed (LimitSet then throws TimeoutError or returns nullopt); a
  // timeout counts in Stats().timeouts. `self` is this engine's owner (self.get() == this).
  virtual LimitAcquisition Acquire(const std::shared_ptr<LimitSetBackend>& self,
                                   absl::Span<const LimitAmount> request, absl::Duration timeout,
                                   bool try_once) = 0;
  // As Acquire() for a request checked by CheckPrepared() (PreparedItems(), PreparedNested()).
  virtual LimitAcquisition AcquirePrepared(const std::shared_ptr<LimitSetBackend>& self,
                                           const PreparedLimitRequest& request,
                                           absl::Duration timeout, bool try_once) = 0;
  // LimitSet::AcquireAsync(): a future of the acquisition of the validated `request`, or of
  // TimeoutError at `deadline` (on clock()). Cancelling the future withdraws the request. (An
  // engine that binds acquisitions here, without a `self`, keeps a way to its own owner, e.g.
  // std::enable_shared_from_this.)
  virtual Future<LimitAcquisition> AcquireAsync(Request request, absl::Time deadline) = 0;
  // Called by Update() once `amounts[i]` are validated and recorded into `*targets[i]` (each
  // item once; Item::updated and Item::used set), only when some rate or call item has a new
  // excess (NewExcess() > 0): builds OveruseMessage(), charges each new excess to its limit
  // (even beyond the capacity) and adds it to charged_extra, counts the report
  // (Stats().overuse_reports) and Warn()s the message.
  //
  // May throw (to the caller of Update()): e.g. the store cannot be reached, or on_warning
  // throws. The usages stay recorded either way; an excess whose charge did not happen keeps
  // its old charged_extra, so that a later Update() of that item charges it again.
  virtual void RecordUsage(Item* const* targets, const double* amounts, size_t count) = 0;
  // Gives back what the held `acquisition` holds (ResourceLimit units, and requested - used of
  // updated TokenBucket and GCRA limits), setting Item::refunded of what it gave back, and wakes
  // waiters. The caller has marked it released. `drop` and the result serve the in-process
  // engine's counted acquisitions (see LimitAcquisition::set_): another engine ignores `drop`
  // and returns false.
  //
  // Must not throw: called from LimitAcquisition's destructor (noexcept). Report failures
  // through Warn() (catching what it throws) and give back what can be given back later (e.g.
  // by a lease that expires).
  virtual bool Release(LimitAcquisition& acquisition, bool drop) noexcept = 0;
  // Lets go of the reference a counted acquisition of the in-process engine holds after its
  // release (never called for an acquisition bound with an owner). Must not throw (called from
  // LimitAcquisition's destructor).
  virtual void DropReference() noexcept = 0;
  // LimitSet::Stats().
  virtual LimitSetStats Stats() = 0;
  // Counts a release of a rate limit that was never updated (Stats().missing_updates). Must not
  // throw (called from LimitAcquisition's destructor); the caller gives the warning.
  virtual void CountMissingUpdate() noexcept = 0;
  // The clock of timeouts (LimitSet::AcquireAsync()'s deadline).
  virtual Clock& clock() const = 0;

 protected:
  // Keeps `limits` and `options` and prepares their validation (without engine state: every
  // Item::cost 0 until an engine sets LimitInfo::gcra and calls IndexCosts()). Checks nothing:
  // the engine or LimitSet::Create() validates the options.
  LimitSetBackend(std::vector<Limit> limits, LimitSetOptions options);

  // ---- Building and reading acquisitions ----

  // Makes `acquisition` (built empty by the engine) held by this set, kept alive by `owner`
  // (null only for the in-process engine's counted acquisitions).
  static void Bind(LimitAcquisition& acquisition, LimitSetBackend* set,
                   std::shared_ptr<LimitSetBackend> owner) {
    acquisition.set_ = set;
    acquisition.owner_ = std::move(owner);
  }
  static Items& ItemsOf(LimitAcquisition& acquisition) { return acquisition.items_; }
  static const Items& ItemsOf(const LimitAcquisition& acquisition) { return acquisition.items_; }
  // LimitAcquisition's engine-defined word (moved with it): the Redis engine's lease id.
  static uint64_t& LeaseOf(LimitAcquisition& acquisition) { return acquisition.lease_; }
  static uint64_t LeaseOf(const LimitAcquisition& acquisition) { return acquisition.lease_; }
  static const Items& PreparedItems(const PreparedLimitRequest& request) { return request.items_; }
  static bool PreparedNested(const PreparedLimitRequest& request) { return request.nested_; }

  // ---- Over-use (RecordUsage()) ----

  // The part of `item`'s recorded usage above its request that is not charged yet
  // (used - requested - charged_extra), or 0 when there is none or `kind` is kResource (a
  // resource is held, not consumed: using more of it than requested charges nothing).
  static double NewExcess(const Item& item, LimitKind kind) {
    const double excess = item.used - item.requested - item.charged_extra;
    return kind != LimitKind::kResource && excess > 0 ? excess : 0;
  }
  // The message of an over-use warning for the recorded usages of `*targets[0..count)`: lists
  // the items with a NewExcess(), so build it before charging.
  std::string OveruseMessage(const Item* const* targets, size_t count) const;
  // A Stats() result with what the limits define filled in (key, kind, capacity, window,
  // algorithm, burst) and everything the engine measures at 0, for the engine to complete.
  LimitSetStats DefinitionStats() const;

 private:
  // The in-process engine reads and fills the validation state below on its hot path, inline
  // (no call per acquisition). Other engines use only what is above.
  friend class limits_internal::SetImpl;

  // ---- Validation state ----

  // Validates `request` into `*items` (empty on entry) and returns whether it is nested (see
  // Request::nested). Defined inline in limits/internal/set_validation.h, for the in-process
  // engine's hot path; other engines call Prepare().
  inline bool PrepareInto(absl::Span<const LimitAmount> request, Items* items) const;
  // PrepareInto() past its shortcut (PrepareCommonInto()): every case, and the error messages.
  bool PrepareFullInto(absl::Span<const LimitAmount> request, Items* items) const;
  // The items of a request that names every rate limit and nothing else (see
  // PrepareCommonInto()) and the GCRA cost cache, from info_: call after setting
  // LimitInfo::rate and ::gcra (the constructor calls it without them).
  void IndexCosts();
  // "[key, ...]", for messages.
  std::string LimitKeys() const;

  // Per limit, what validation and the in-process hot path need, in one flat array (rather than a
  // walk through Limit and the engine's state per item): profiles showed the per-item lookups and
  // re-validation as a large share of an uncontended acquisition.
  struct LimitInfo {
    absl::string_view key;  // Into limits_.
    LimitKind kind = LimitKind::kRate;
    bool whole = false;        // Amounts must be whole units (resources, the window algorithms).
    bool implicit_ok = false;  // The implicit 1 passes CheckAmount().
    double burst = 0;          // Amounts above it are rejected.
    double capacity = 0;
    // The in-process engine's, null for other engines. Into its memory block, so guarded by its
    // lock: the rate state (null for a resource) and its GCRA word when it can be driven with
    // plain stores under the lock (then Item::cost and refund_cost are computed).
    limits_internal::RateState* rate = nullptr;
    limits_internal::AtomicGcra* gcra = nullptr;
    // For a limit with `gcra` that got a hot word: the TAT it runs on instead of the rate state's
    // word; else null.
    int64_t* tat = nullptr;
    int64_t tolerance_ns = 0;  // With `tat`: the rate state's tolerance.
    // Resources: the units held (a hot word or an entry of the engine's array).
    double* in_use = nullptr;
  };
  // The index of the limit with `key`, or the number of limits. Inline in set_validation.h.
  inline size_t IndexOf(absl::string_view key) const;
  // The GCRA cost of `amount` (> 0) for limit `index` (whose `gcra` is set). Inline in
  // set_validation.h.
  inline int64_t CostOf(size_t index, double amount) const;
  // Throws InvalidOptionError unless `amount` (> 0, finite) fits limit `index`: at most its
  // burst, and whole (at most kMaxWholeUnits) for a limit that counts whole units. `implicit`:
  // the 1 taken for an unnamed CallLimit or ResourceLimit.
  void CheckAmount(size_t index, double amount, bool implicit) const;
  // Throws InvalidOptionError unless `amount` is a valid usage of `item` (`key`: for messages).
  void CheckUsage(const Item& item, absl::string_view key, double amount) const;

  const std::vector<Limit> limits_;
  const LimitSetOptions options_;
  const uint64_t id_;
  std::vector<LimitInfo> info_;

  // GCRA costs of the whole amounts 0..kCachedCosts per limit (row `index`, 0 unused): usual
  // requests and usages are small whole numbers, and their cost is then a load instead of a
  // division on every acquisition and every Update().
  static constexpr int kCachedCosts = 64;
  std::vector<int64_t> cached_costs_;
  // The items of a request that names every rate limit and nothing else: one per limit, in limit
  // order, each CallLimit and ResourceLimit with the implicit 1 (rate limits are filled in).
  // Validation starts from a copy and changes the named items, instead of building each item
  // through per-limit branches. Empty when the shortcut does not apply (more than 64 limits, an
  // implicit 1 that does not fit).
  Items template_items_;
  uint64_t rate_mask_ = 0;  // Bit i: limit i is a RateLimit.
  // The shortcut of PrepareInto(): true when it validated `request` (it names every rate limit,
  // no limit twice, only known keys and amounts > 0 that fit); false leaves `*items` empty for
  // the full path, which also builds the error messages. Inline in set_validation.h.
  inline bool PrepareCommonInto(absl::Span<const LimitAmount> request, Items* items) const;
  // Records `used` for `item` and returns true when it is a valid usage within the request (the
  // usual report: nothing to check further, nothing to charge); else returns false, recording
  // nothing. Inline in set_validation.h: it is most of an Update().
  inline bool RecordWithinRequest(Item& item, double used) const;
  // Update() beyond its shortcut: validates every entry, then records them. Out of line, so that
  // the shortcut does not pay for its frame.
  void UpdateChecked(LimitAcquisition& acquisition, absl::Span<const LimitAmount> usage);
  // Records validated usages: `amounts[i]` for `*targets[i]`, each item once; calls
  // RecordUsage() for over-use.
  void Record(Item* const* targets, const double* amounts, size_t count);
};

// Where LimitSharing::kHosts sets keep their state (e.g. RedisLimitStore). Thread-safe.
class LimitStore {
 public:
  virtual ~LimitStore() = default;
  // The engine of the set `options.name` with `limits` (validated by LimitSet::Create(): unique
  // keys, a known fairness, kHosts, a valid name, `options.clock` null; `options.store` is this
  // store). The engine keeps `limits` and `options` as given (LimitSet reads its limits and
  // sharing from the engine; Create() throws std::logic_error naming the store otherwise).
  // Throws InvalidOptionError when the store's set of that name defines other limits.
  virtual std::shared_ptr<LimitSetBackend> OpenSet(std::vector<Limit> limits,
                                                   LimitSetOptions options) = 0;
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_LIMIT_SET_BACKEND_H_

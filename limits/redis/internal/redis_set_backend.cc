#include "limits/redis/internal/redis_set_backend.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "futures/errors.h"
#include "futures/future.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/redis/internal/scripts.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace limits_internal {
namespace redis {
namespace {

using ::concurry::redis_internal::RedisDeadlineError;
using ::concurry::redis_internal::RedisPoolBusyError;
using ::concurry::redis_internal::RedisScript;

// This process's id and this thread's, refreshed in a fork()ed child (whose thread-local copy
// still names the parent's thread).
struct ThreadIds {
  pid_t pid = 0;
  pid_t tid = 0;
};
thread_local ThreadIds thread_ids;

pid_t CurrentTid() {
  const pid_t pid = getpid();
  if (thread_ids.pid != pid) {
    thread_ids.pid = pid;
    thread_ids.tid = static_cast<pid_t>(syscall(SYS_gettid));
  }
  return thread_ids.tid;
}

// A number as the scripts read it back exactly (Lua's tonumber() is strtod()).
std::string Number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 9e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrFormat("%.17g", value);
}

char AlgorithmCode(const Limit& limit) {
  if (limit.kind() == LimitKind::kResource) return kResourceCode;
  switch (limit.algorithm()) {
    case RateLimitAlgorithm::kTokenBucket:
    case RateLimitAlgorithm::kGcra:
      return kGcraCode;
    case RateLimitAlgorithm::kLeakyBucket:
      return kLeakyCode;
    case RateLimitAlgorithm::kSlidingWindow:
      return kSlidingCode;
    case RateLimitAlgorithm::kFixedWindow:
      return kFixedCode;
  }
  return kSlidingCode;
}

// GCRA's tolerance tau in µs, as GcraToleranceNs() computes it in ns: the window for the default
// burst, else burst emission intervals rounded down to whole µs, at least 1.
double ToleranceMicros(const Limit& limit) {
  const double window_us = absl::ToDoubleMicroseconds(limit.window());
  if (!limit.explicit_burst()) return window_us;
  const double interval = std::max(1.0, std::floor(window_us / limit.capacity()));
  return std::max(1.0, std::floor(limit.burst() * interval));
}

// The definition stored under "<base>def": every limit's key and parameters.
std::string Signature(const std::vector<Limit>& limits) {
  std::vector<std::string> parts;
  parts.reserve(limits.size());
  for (const Limit& limit : limits) {
    parts.push_back(absl::StrCat(limit.key(), "=", limit.ParamsSignature()));
  }
  return absl::StrJoin(parts, ";");
}

// Reply accessors: the scripts return integers, strings and arrays of them.
int64_t IntegerOf(const RedisReply& reply) {
  if (reply.type() == RedisReply::Type::kInteger) return reply.integer();
  int64_t value = 0;
  if (!absl::SimpleAtoi(reply.str(), &value)) {
    throw RedisError(absl::StrCat("Redis LimitSet: unexpected reply '", reply.str(),
                                  "' where a number was expected"));
  }
  return value;
}

double DoubleOf(const RedisReply& reply) {
  if (reply.type() == RedisReply::Type::kInteger) return static_cast<double>(reply.integer());
  double value = 0;
  if (!absl::SimpleAtod(reply.str(), &value)) {
    throw RedisError(absl::StrCat("Redis LimitSet: unexpected reply '", reply.str(),
                                  "' where a number was expected"));
  }
  return value;
}

const std::vector<RedisReply>& ArrayOf(const RedisReply& reply, size_t at_least) {
  if (reply.type() != RedisReply::Type::kArray || reply.elements().size() < at_least) {
    throw RedisError(
        absl::StrCat("Redis LimitSet: unexpected reply from a script (", reply.DebugString(), ")"));
  }
  return reply.elements();
}

// The scripts, built once (each learns its SHA on first use).
template <const std::string& (*kText)()>
const RedisScript& Script(const char* name) {
  static const RedisScript* const script = new RedisScript(name, kText());
  return *script;
}
const RedisScript& Take() { return Script<TakeScript>("take"); }
const RedisScript& ReleaseOf() { return Script<ReleaseScript>("release"); }
const RedisScript& ChargeOf() { return Script<ChargeScript>("charge"); }
const RedisScript& LeaveOf() { return Script<LeaveScript>("leave"); }
const RedisScript& StatsOf() { return Script<StatsScript>("stats"); }

// Whether an error reply says "not now" (loading, busy with a script, cluster or replication not
// ready): an outage that passes. Any other error reply of a script (WRONGTYPE on a key written by
// something else, NOPERM, OOM with a maxmemory policy) comes back on every call.
bool TransientReply(absl::string_view error) {
  for (const absl::string_view prefix :
       {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}) {
    if (absl::StartsWith(error, prefix)) return true;
  }
  return false;
}

// Throws for a script that failed on the server (a Redis error reply): RedisError for a transient
// refusal, like an unreachable server; otherwise RedisConfigError, which is never an outage
// (RedisFailure::kFailOpen does not grant on it).
[[noreturn]] void ThrowScriptFailed(RedisClient& client, const RedisScript& script,
                                    const RedisReply& reply) {
  const std::string message = absl::StrCat("Redis at ", client.address(), ": script ",
                                           script.name(), " failed: ", reply.str());
  if (TransientReply(reply.str())) throw RedisError(message);
  throw RedisConfigError(message);
}

// The take script's code for "the set's definition in Redis differs from this one's" (its
// second field is the definition in Redis).
constexpr int64_t kDefinitionMismatch = -3;

}  // namespace

// The scripts the engine's other files use too (declared in redis_set_backend.h).
const RedisScript& Renew() { return Script<RenewScript>("renew"); }

RedisReply Run(RedisClient& client, const RedisScript& script, const std::string& base,
               const std::vector<std::string>& args, absl::Time deadline) {
  RedisReply reply = client.EvalSha(script, {base}, args, deadline);
  if (reply.is_error()) ThrowScriptFailed(client, script, reply);
  return reply;
}

// ---- RedisSetBackend ----

RedisSetBackend::RedisSetBackend(std::shared_ptr<StoreCore> core, std::vector<Limit> limits,
                                 LimitSetOptions options)
    : LimitSetBackend(std::move(limits), std::move(options)),
      core_(std::move(core)),
      base_(absl::StrCat(core_->options().key_prefix, "{", this->options().name, "}:")),
      channel_(base_ + "wake"),
      pid_(getpid()),
      renew_period_(core_->options().lease_ttl / 3) {
  const std::vector<Limit>& all = this->limits();
  fields_.resize(all.size());
  gcra_.resize(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const Limit& limit = all[i];
    const char code = AlgorithmCode(limit);
    if (code != kResourceCode && !std::isinf(limit.capacity()) &&
        limit.window() < absl::Microseconds(1)) {
      // The scripts keep time in whole µs: such a window could never admit (GCRA) or align.
      throw InvalidOptionError(absl::StrCat(
          "LimitSet '", this->options().name, "': limit '", limit.key(), "' has a window of ",
          absl::FormatDuration(limit.window()),
          "; a set on Redis (LimitSharing::kHosts) keeps time in whole microseconds, so its "
          "windows must be at least 1us"));
    }
    gcra_[i] = code == kGcraCode;
    if (limit.kind() != LimitKind::kResource && std::isinf(limit.capacity())) continue;
    const bool resource = code == kResourceCode;
    fields_[i] = {absl::StrCat(i),
                  std::string(1, code),
                  Number(limit.capacity()),
                  resource ? "0" : Number(absl::ToDoubleMicroseconds(limit.window())),
                  Number(limit.burst()),
                  code == kGcraCode ? Number(ToleranceMicros(limit)) : "0"};
  }
  signature_ = Signature(all);
  wake_ = std::make_shared<WakeSignal>();
  subscription_ = core_->Subscribe(channel_, [wake = wake_] { wake->Raise(); });
}

RedisSetBackend::~RedisSetBackend() {
  // Their callbacks use this set: wait for the releases (and leaves) still in flight. Each ends
  // within command_timeout of its send.
  if (getpid() == pid_) core_->client().FlushOneWay(absl::InfiniteFuture());
  DeliverWarnings();  // Those of the releases just flushed.
  std::shared_ptr<AsyncQueue> queue;
  {
    absl::MutexLock lock(&async_mu_);
    queue = std::move(async_);
  }
  if (queue != nullptr) {
    {
      absl::MutexLock lock(&queue->mu);
      queue->shutdown = true;
    }
    if (queue->pid != getpid()) {
      queue->thread.detach();  // Inherited through fork().
    } else if (queue->thread.get_id() == std::this_thread::get_id()) {
      queue->thread.detach();  // The helper let go of the last handle: it ends by itself.
    } else {
      queue->thread.join();
    }
  }
  core_->Unsubscribe(subscription_);
}

std::shared_ptr<RedisSetBackend> RedisSetBackend::Open(std::shared_ptr<StoreCore> core,
                                                       std::vector<Limit> limits,
                                                       LimitSetOptions options) {
  std::shared_ptr<RedisSetBackend> backend(
      new RedisSetBackend(std::move(core), std::move(limits), std::move(options)));
  backend->self_ = backend;
  try {
    backend->CheckDefinition();
  } catch (const RedisConfigError&) {
    throw;  // Never an outage.
  } catch (const RedisPoolBusyError&) {
    throw;  // Reachable, only busy.
  } catch (const RedisError& error) {
    if (!backend->FailOpen(error, "opening the set")) throw;
  }
  return backend;
}

void RedisSetBackend::CheckDefinition() {
  const std::string key = base_ + "def";
  // Sets the definition unless one exists; otherwise reads it (SET NX GET in one command needs
  // Redis 7).
  RedisReply reply = core_->client().Command({"SET", key, signature_, "NX"});
  if (reply.is_nil()) reply = core_->client().Command({"GET", key});
  Reachable();
  if (reply.is_error()) {
    const std::string message = absl::StrCat("Redis at ", core_->address(), ": writing or reading ",
                                             key, " failed: ", reply.str());
    if (TransientReply(reply.str())) throw RedisError(message);
    throw RedisConfigError(message);
  }
  if (reply.is_string() && reply.str() != signature_) ThrowDefinitionMismatch(reply.str());
  definition_checked_.store(true, std::memory_order_release);
}

void RedisSetBackend::ThrowDefinitionMismatch(const std::string& in_redis) const {
  throw InvalidOptionError(absl::StrCat(
      "LimitSet '", options().name, "': Redis at ", core_->address(), " (key ", base_,
      "def) already defines this set as [", in_redis, "], but this process defines it as [",
      signature_,
      "]; sets sharing a name must have the same limits (use another name, or delete the "
      "key once no host uses the old definition)"));
}

bool RedisSetBackend::Outage(const RedisError& error) {
  return dynamic_cast<const RedisConfigError*>(&error) == nullptr &&
         dynamic_cast<const RedisPoolBusyError*>(&error) == nullptr &&
         dynamic_cast<const RedisDeadlineError*>(&error) == nullptr;
}

bool RedisSetBackend::FailOpen(const std::exception& error, absl::string_view what) {
  if (core_->options().failure != RedisFailure::kFailOpen) return false;
  WarnOutage(absl::StrCat(what, ": granting without limits (RedisFailure::kFailOpen)"), error);
  return true;
}

void RedisSetBackend::WarnOutage(absl::string_view what, const std::exception& error) {
  if (outage_.exchange(true, std::memory_order_relaxed)) return;
  Warn(OutageMessage(what, error));
}

std::string RedisSetBackend::OutageMessage(absl::string_view what,
                                           const std::exception& error) const {
  return absl::StrCat("LimitSet '", options().name, "': Redis at ", core_->address(),
                      " is unavailable (", error.what(), "); ", what,
                      ". Further failures are not reported until Redis answers again.");
}

void RedisSetBackend::DeferWarning(std::string message) {
  absl::MutexLock lock(&deferred_mu_);
  deferred_warnings_.push_back(std::move(message));
}

void RedisSetBackend::DeliverWarnings() noexcept {
  std::vector<std::string> messages;
  {
    absl::MutexLock lock(&deferred_mu_);
    if (deferred_warnings_.empty()) return;
    messages.swap(deferred_warnings_);
  }
  for (const std::string& message : messages) {
    try {
      Warn(message);
    } catch (...) {
      // A warning sink that throws must not get out (callers may be noexcept).
    }
  }
}

template <typename AmountOf>
int RedisSetBackend::AppendItems(const Items& items, AmountOf amount,
                                 std::vector<std::string>* args) const {
  int count = 0;
  for (const Item& item : items) {
    const std::vector<std::string>& fields = fields_[item.index];
    if (fields.empty()) continue;  // Unlimited.
    const double value = amount(item);
    if (value < 0) continue;  // Left out.
    args->insert(args->end(), fields.begin(), fields.end());
    args->push_back(Number(value));
    ++count;
  }
  return count;
}

int RedisSetBackend::AppendAllLimits(std::vector<std::string>* args) const {
  int count = 0;
  for (const std::vector<std::string>& fields : fields_) {
    if (fields.empty()) continue;
    args->insert(args->end(), fields.begin(), fields.end());
    args->push_back("0");
    ++count;
  }
  return count;
}

std::string RedisSetBackend::TakeMissingUpdates() {
  return absl::StrCat(missing_updates_.exchange(0, std::memory_order_relaxed));
}

void RedisSetBackend::RestoreMissingUpdates(const std::string& count) {
  int64_t value = 0;
  if (absl::SimpleAtoi(count, &value) && value > 0) {
    missing_updates_.fetch_add(value, std::memory_order_relaxed);
  }
}

bool RedisSetBackend::ThreadExempt() {
  const pid_t tid = CurrentTid();
  absl::MutexLock lock(&holders_mu_);
  auto it = exempting_.find(tid);
  return it != exempting_.end() && it->second > 0;
}

RedisSetBackend::TakeResult RedisSetBackend::TakeOnce(const Items& items, bool exempt,
                                                      int64_t ticket, TakeMode mode,
                                                      absl::Time deadline) {
  if (!definition_checked_.load(std::memory_order_acquire)) CheckDefinition();
  std::vector<std::string> args = {
      absl::StrCat(absl::ToInt64Microseconds(core_->options().lease_ttl)),
      options().fairness == LimitFairness::kFifo ? "1" : "0",
      exempt ? "1" : "0",
      absl::StrCat(ticket),
      absl::StrCat(static_cast<int>(mode)),
      ""};
  args.reserve(args.size() + items.size() * (kItemFields) + 1);
  args[5] = absl::StrCat(AppendItems(
      items, [](const Item& item) { return item.requested; }, &args));
  // The definition, which the script writes back when Redis lost it (a restart without
  // persistence) and compares otherwise.
  args.push_back(signature_);
  const RedisReply reply = Run(core_->client(), Take(), base_, args, deadline);
  Reachable();
  const std::vector<RedisReply>& parts = ArrayOf(reply, 2);
  TakeResult result;
  const int64_t code = IntegerOf(parts[0]);
  if (code == kDefinitionMismatch) ThrowDefinitionMismatch(parts[1].str());
  if (code == 0) {
    result.granted = true;
    result.lease = IntegerOf(parts[1]);
  } else {
    result.wait_us = code;
    result.ticket = IntegerOf(parts[1]);
  }
  return result;
}

void RedisSetBackend::Leave(int64_t ticket, bool timed_out) noexcept {
  try {
    // One-way: a caller whose deadline passed does not wait for it.
    core_->client().EvalShaOneWay(LeaveOf(), {base_}, {absl::StrCat(ticket), timed_out ? "1" : "0"},
                                  [](const RedisReply*, const RedisError*) {});
  } catch (const std::exception&) {
    // The ticket expires after lease_ttl.
  }
}

void RedisSetBackend::Grant(const std::shared_ptr<LimitSetBackend>& self, int64_t lease,
                            bool fail_open, bool exempting, LimitAcquisition& result) {
  uint64_t id = static_cast<uint64_t>(lease);
  if (lease != 0) core_->AddLease(base_, lease);
  if (exempting || lease == 0) {
    absl::MutexLock lock(&holders_mu_);
    if (lease == 0) id = kLocalLease | (fail_open ? kFailOpenLease : 0) | ++local_leases_;
    if (exempting) {
      const pid_t tid = CurrentTid();
      ++exempting_[tid];
      exempt_leases_[id] = tid;
    }
  }
  if (lease == 0) local_holding_.fetch_add(1, std::memory_order_relaxed);
  LeaseOf(result) = id;
  Bind(result, this, self);
}

LimitAcquisition RedisSetBackend::Acquire(const std::shared_ptr<LimitSetBackend>& self,
                                          absl::Span<const LimitAmount> request,
                                          absl::Duration timeout, bool try_once) {
  LimitAcquisition result;
  Request prepared = Prepare(request);
  ItemsOf(result) = std::move(prepared.items);
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : absl::Now() + timeout;
  TakeInto(self, prepared.nested, deadline, /*exempt_when_holding=*/true, result);
  return result;
}

LimitAcquisition RedisSetBackend::AcquirePrepared(const std::shared_ptr<LimitSetBackend>& self,
                                                  const PreparedLimitRequest& request,
                                                  absl::Duration timeout, bool try_once) {
  LimitAcquisition result;
  Request prepared = ToRequest(request);
  ItemsOf(result) = std::move(prepared.items);
  const absl::Time deadline = try_once                              ? absl::InfinitePast()
                              : timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                    : absl::Now() + timeout;
  TakeInto(self, prepared.nested, deadline, /*exempt_when_holding=*/true, result);
  return result;
}

void RedisSetBackend::TakeInto(const std::shared_ptr<LimitSetBackend>& self, bool nested,
                               absl::Time deadline, bool exempt_when_holding,
                               LimitAcquisition& result) {
  if (no_op()) {
    Bind(result, this, self);
    return;
  }
  DeliverWarnings();
  int64_t ticket = 0;
  try {
    for (;;) {
      // Decided again at every try, as the in-process engine does: another thread may have
      // released this thread's exempting acquisition meanwhile.
      const bool exempt = options().fairness != LimitFairness::kFifo || nested ||
                          (exempt_when_holding && ThreadExempt());
      // Read before the take: a release published after it moves the generation.
      const uint64_t seen = wake_->generation();
      const absl::Time now = absl::Now();
      const TakeMode mode = deadline == absl::InfinitePast() ? TakeMode::kTryOnce
                            : now >= deadline                ? TakeMode::kLastTry
                                                             : TakeMode::kMayWait;
      absl::Time command_deadline = deadline;  // The caller's (kMayWait).
      if (mode != TakeMode::kMayWait) {
        // A last try decides at once, with no wake-up to come: it must see this process's
        // releases sent before it (one-way, on another connection) applied.
        // The last try, after the caller's deadline, gets min(command_timeout, 50 ms) for the
        // flush and the take together.
        const absl::Duration grace = std::min(kLastTryGrace, core_->options().command_timeout);
        core_->client().FlushOneWay(
            now + (mode == TakeMode::kTryOnce ? core_->options().command_timeout : grace));
        DeliverWarnings();
        command_deadline = mode == TakeMode::kTryOnce ? absl::InfiniteFuture() : now + grace;
      }
      TakeResult taken;
      try {
        taken = TakeOnce(ItemsOf(result), exempt, ticket, mode, command_deadline);
      } catch (const RedisPoolBusyError&) {
        // Redis is reachable; this process's pool was busy for command_timeout (the wait was the
        // pause). A waiter tries again until its deadline; a last try fails with the error.
        if (mode != TakeMode::kMayWait || absl::Now() >= deadline) throw;
        continue;
      }
      if (taken.granted) {
        ticket = 0;  // Dropped by the take.
        Grant(self, taken.lease, /*fail_open=*/false, exempt_when_holding, result);
        return;
      }
      if (mode != TakeMode::kMayWait) {
        ItemsOf(result).clear();
        return;
      }
      ticket = taken.ticket;
      // Each take renews the ticket: wake at least every lease_ttl / 3.
      absl::Time wake = std::min(deadline, now + renew_period_);
      if (taken.wait_us > 0) wake = std::min(wake, now + absl::Microseconds(taken.wait_us));
      wake_->Wait(seen, wake, nullptr);
    }
  } catch (const RedisDeadlineError&) {
    // Cut short at the caller's deadline: not granted (see redis_limit_store.h). The caller gets
    // a TimeoutError, whatever the failure option.
    Leave(ticket, /*timed_out=*/true);
    ItemsOf(result).clear();
  } catch (const RedisConfigError&) {
    // Not an outage: never granted without limits.
    if (ticket != 0) Leave(ticket, /*timed_out=*/false);
    throw;
  } catch (const RedisPoolBusyError&) {
    if (ticket != 0) Leave(ticket, /*timed_out=*/false);
    throw;
  } catch (const RedisError& error) {
    if (ticket != 0) Leave(ticket, /*timed_out=*/false);
    if (!FailOpen(error, "acquiring")) throw;
    Grant(self, /*lease=*/0, /*fail_open=*/true, exempt_when_holding, result);
  } catch (...) {
    if (ticket != 0) Leave(ticket, /*timed_out=*/false);
    throw;
  }
}

void RedisSetBackend::RecordUsage(Item* const* targets, const double* amounts, size_t count) {
  static_cast<void>(amounts);  // Recorded into the items by the caller.
  const std::string overuse = OveruseMessage(targets, count);
  std::vector<std::string> args = {TakeMissingUpdates(), ""};
  int sent = 0;
  for (size_t i = 0; i < count; ++i) {
    Item& item = *targets[i];
    const double extra = std::max(0.0, item.used - item.requested) - item.charged_extra;
    if (extra <= 0 || limits()[item.index].kind() == LimitKind::kResource) continue;
    const std::vector<std::string>& fields = fields_[item.index];
    if (!fields.empty()) {
      args.insert(args.end(), fields.begin(), fields.end());
      args.push_back(Number(extra));
      ++sent;
    }
  }
  args[1] = absl::StrCat(sent);
  try {
    Run(core_->client(), ChargeOf(), base_, args);
    Reachable();
    for (size_t i = 0; i < count; ++i) {
      Item& item = *targets[i];
      const double extra = std::max(0.0, item.used - item.requested) - item.charged_extra;
      if (extra > 0 && limits()[item.index].kind() != LimitKind::kResource) {
        item.charged_extra += extra;
      }
    }
  } catch (const RedisError& error) {
    RestoreMissingUpdates(args[0]);
    WarnOutage("an over-use could not be charged (a later Update() charges it again)", error);
  }
  Warn(overuse);
}

bool RedisSetBackend::Release(LimitAcquisition& acquisition, bool /*drop*/) noexcept {
  if (no_op()) return false;
  const uint64_t id = LeaseOf(acquisition);
  {
    absl::MutexLock lock(&holders_mu_);
    if (auto exempt = exempt_leases_.find(id); exempt != exempt_leases_.end()) {
      auto it = exempting_.find(exempt->second);
      if (it != exempting_.end() && --it->second <= 0) exempting_.erase(it);
      exempt_leases_.erase(exempt);
    }
  }
  Items& items = ItemsOf(acquisition);
  for (Item& item : items) {
    if (limits()[item.index].kind() == LimitKind::kResource) {
      item.refunded = item.requested;
    } else if (gcra_[item.index] && item.updated && item.used < item.requested) {
      item.refunded = item.requested - item.used;
    }
  }
  // An acquisition of the parent's copied into a fork()ed child: the parent releases it.
  if (getpid() != pid_) return false;
  bool refunds = false;
  for (const Item& item : items) refunds |= gcra_[item.index] && item.refunded > 0;
  int64_t lease = 0;
  if ((id & kLocalLease) != 0) {
    // No lease: no resource units, or granted while Redis was unreachable (kFailOpen: nothing to
    // give back there). Only refunds need Redis.
    local_holding_.fetch_sub(1, std::memory_order_relaxed);
    if ((id & kFailOpenLease) != 0 || !refunds) return false;
  } else {
    lease = static_cast<int64_t>(id);
    if (!core_->RemoveLease(base_, lease)) return false;
  }
  std::vector<std::string> args = {absl::StrCat(lease), TakeMissingUpdates(), "0", ""};
  args[3] = absl::StrCat(AppendItems(
      items,
      [this](const Item& item) {
        return gcra_[item.index] && item.refunded > 0 ? item.refunded : -1.0;
      },
      &args));
  // Sent one-way: the caller does not wait for the reply, which FinishRelease() handles on the
  // client's reader thread (this set outlives it: its destructor flushes). Its warnings wait for
  // a user's thread (DeliverWarnings()).
  try {
    core_->client().EvalShaOneWay(
        ReleaseOf(), {base_}, args,
        [this, missing = args[1]](const RedisReply* reply, const RedisError* error) {
          FinishRelease(reply, error, missing);
        });
  } catch (const RedisError& error) {
    FinishRelease(nullptr, &error, args[1]);
    DeliverWarnings();  // On the releasing thread, as the failure is.
  } catch (...) {
    // Called from LimitAcquisition's destructor: nothing may get out (out of memory).
  }
  return false;
}

void RedisSetBackend::FinishRelease(const RedisReply* reply, const RedisError* error,
                                    const std::string& missing) noexcept {
  // A warning sink that throws must not get out.
  try {
    bool live = true;
    try {
      if (error != nullptr) throw *error;
      if (reply->is_error()) ThrowScriptFailed(core_->client(), ReleaseOf(), *reply);
      Reachable();
      live = IntegerOf(*reply) == 1;
    } catch (const RedisError& failure) {
      RestoreMissingUpdates(missing);
      if (!outage_.exchange(true, std::memory_order_relaxed)) {
        DeferWarning(OutageMessage(
            "a release could not reach it: its resource units come back when its lease "
            "expires (lease_ttl)",
            failure));
      }
    }
    if (!live) {
      DeferWarning(absl::StrCat(
          "LimitSet '", options().name, "': the lease of an acquisition released now ",
          "had expired (its process could not renew it for lease_ttl, or Redis ",
          "restarted and lost it): its resource units were given back before its ", "release"));
    }
  } catch (...) {
  }
}

void RedisSetBackend::CountMissingUpdate() noexcept {
  missing_updates_.fetch_add(1, std::memory_order_relaxed);
}

LimitSetStats RedisSetBackend::Stats() {
  LimitSetStats stats = DefinitionStats();
  const std::vector<Limit>& all = limits();
  for (size_t i = 0; i < all.size(); ++i) {
    const Limit& limit = all[i];
    LimitStats& entry = stats.limits[i];
    entry.available = entry.burst;
    if (limit.kind() != LimitKind::kResource) {
      entry.rate.burst = limit.burst();
      entry.rate.max_rate = limit.capacity() / absl::ToDoubleSeconds(limit.window());
    }
  }
  if (no_op()) return stats;
  // Counts this process's releases sent before (one-way, on another connection).
  core_->client().FlushOneWay(absl::Now() + core_->options().command_timeout);
  DeliverWarnings();  // Also those of the releases just flushed.
  std::vector<std::string> args = {TakeMissingUpdates(), ""};
  args[1] = absl::StrCat(AppendAllLimits(&args));
  RedisReply reply;
  try {
    reply = Run(core_->client(), StatsOf(), base_, args);
    Reachable();
  } catch (const RedisError& error) {
    RestoreMissingUpdates(args[0]);
    if (!Outage(error) || !FailOpen(error, "reading statistics")) throw;
    return stats;
  }
  const std::vector<RedisReply>& parts = ArrayOf(reply, 8);
  const double now_us = DoubleOf(parts[0]);
  stats.acquisitions = IntegerOf(parts[1]);
  stats.timeouts = IntegerOf(parts[2]);
  stats.missing_updates = IntegerOf(parts[3]);
  stats.overuse_reports = IntegerOf(parts[4]);
  stats.recovered_holders = IntegerOf(parts[5]);
  stats.waiting = IntegerOf(parts[6]);
  // Resource holders of every host (their leases), and the other acquisitions of this process.
  stats.holding = IntegerOf(parts[7]) + local_holding_.load(std::memory_order_relaxed);
  size_t at = 8;
  const absl::Time now = absl::UnixEpoch() + absl::Microseconds(now_us);
  for (size_t i = 0; i < all.size(); ++i) {
    if (fields_[i].empty()) continue;  // Unlimited: nothing in use.
    if (parts.size() < at + 3) throw RedisError("Redis LimitSet: short statistics reply");
    const Limit& limit = all[i];
    LimitStats& entry = stats.limits[i];
    entry.in_use = DoubleOf(parts[at]);
    // The algorithm's own figures (see StatsScript()): "" when there is none.
    const RedisReply& first = parts[at + 1];
    const bool has_first = !first.str().empty();
    at += 3;
    entry.available = std::max(0.0, entry.burst - entry.in_use);
    entry.utilization = entry.in_use / entry.burst;
    if (limit.kind() == LimitKind::kResource) continue;
    RateAlgorithmStats& rate = entry.rate;
    const double window_ns = absl::ToDoubleNanoseconds(limit.window());
    switch (limit.algorithm()) {
      case RateLimitAlgorithm::kTokenBucket:
      case RateLimitAlgorithm::kGcra:
        rate.emission_interval = absl::Nanoseconds(window_ns / limit.capacity());
        rate.tolerance =
            limit.explicit_burst() ? absl::Microseconds(ToleranceMicros(limit)) : limit.window();
        if (has_first) {
          rate.theoretical_arrival = absl::UnixEpoch() + absl::Microseconds(DoubleOf(first));
        }
        rate.tokens = entry.burst - entry.in_use;
        break;
      case RateLimitAlgorithm::kLeakyBucket:
        rate.emission_interval = absl::Nanoseconds(window_ns / limit.capacity());
        rate.level = entry.in_use;
        break;
      case RateLimitAlgorithm::kSlidingWindow:
        rate.window_start = now - limit.window();
        rate.window_count = entry.in_use;
        break;
      case RateLimitAlgorithm::kFixedWindow:
        if (has_first) rate.window_start = absl::UnixEpoch() + absl::Microseconds(DoubleOf(first));
        rate.window_count = entry.in_use;
        break;
    }
  }
  return stats;
}

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry

// RedisLimitStore: keeps LimitSet state in Redis, so that processes on many hosts share limits
// (LimitSharing::kHosts) with the algorithms, all-or-nothing acquisition, FIFO fairness, refunds
// and over-use charges of an in-process LimitSet. Time comes from the Redis server's clock, so
// hosts with skewed clocks agree.
//
//   std::shared_ptr<concurry::RedisLimitStore> redis = concurry::RedisLimitStore::Connect({
//       .host = "127.0.0.1", .port = 6379, .key_prefix = "billing:"});
//   concurry::LimitSet limits = concurry::LimitSet::Create(
//       {concurry::RateLimit("tokens", 10'000, "minute"), concurry::ResourceLimit("conns", 4)},
//       {.sharing = concurry::LimitSharing::kHosts, .store = redis, .name = "openai"});
//   concurry::LimitAcquisition a = limits.Acquire({{"tokens", 500}});
//
// How it works (docs/limits.md, "Limits across hosts on Redis"):
// - Every acquisition, release, over-use charge and Stats() is one Lua script run atomically on the
//   server (loaded once, called by SHA; reloaded after a Redis restart). An acquisition costs one
//   round trip; its release sends one script when it gives back resource units or refunds unused
//   TokenBucket/GCRA tokens, none otherwise. Update() within the request costs none.
// - Release() returns once the release is sent: it is written at once on a connection kept for
//   releases, and its reply is read in the background by the store's thread. A release that fails
//   there warns through LimitSetOptions::on_warning, like one made while Redis is down, but never
//   on that thread: the warning is reported from the set's next Acquire(), TryAcquire() or
//   Stats(), or its destruction, on the calling thread (so on_warning may drop the last handle of
//   the set or the store). This process's TryAcquire() and Stats() first wait for its releases
//   sent before (at most command_timeout), so they see them applied. Its Acquire() with a timeout
//   does not while it may still wait: its request may reach Redis before the release and then waits
//   for the release's wake-up message, which comes once the release is applied (correct, a little
//   later); only its last try at the deadline waits for them, within that try's 50 ms (below).
//   Other hosts see the release when it is applied, as before. Destroying a set (or the store)
//   waits until its releases in flight are done (each within command_timeout of its send).
// - The keys of set `name` are "<key_prefix>{<name>}:..." (one cluster slot per set). Sets with the
//   same name in one Redis share their state; their definitions (keys and parameters) must match,
//   otherwise OpenSet() throws InvalidOptionError naming both.
// - An acquisition that holds resource units is a lease in Redis that expires after
//   RedisOptions::lease_ttl unless renewed; a thread per store renews the live ones every
//   lease_ttl / 3. A process killed while holding resource units gives them back within
//   lease_ttl (a waiter for them tries again when the first lease expires).
// - A request that must wait sleeps until the retry-after computed by the server or a wake-up
//   message on the set's pub/sub channel (a release, a refund, the queue head leaving), never
//   polling. FIFO fairness (LimitFairness::kFifo) holds across hosts through a queue of tickets in
//   Redis; a waiter renews its ticket every lease_ttl / 3, and a ticket whose owner died expires
//   after lease_ttl (the bound on how long a dead waiter can hold up the queue).
// - Redis unreachable: RedisOptions::failure. kFailClosed (default): Acquire(), TryAcquire() and
//   AcquireAsync()'s future fail with RedisError after at most the command timeout; kFailOpen:
//   they grant at once without limits, with one warning per outage through
//   LimitSetOptions::on_warning. Never on a RedisConfigError (Redis answers but refuses: AUTH,
//   ACL, a script's lasting error reply such as WRONGTYPE), nor when every pooled connection of
//   this process stayed busy for command_timeout (RedisError "all N connections busy": size
//   RedisOptions::pool_size for the threads that call at once; a waiting Acquire() tries again
//   until its deadline): those reach the caller whatever the option. The lease renewals use a
//   connection of their own.
// - A Redis restart without persistence also loses the set's definition: the next acquisition
//   writes it back, and one made under a different definition (another host opened the name with
//   other limits meanwhile) throws InvalidOptionError naming both.
// - The caller's timeout bounds the commands: a command of Acquire(request, timeout) or
//   AcquireAsync() ends by min(command_timeout, the caller's deadline); the last try at the
//   deadline (the wait for this process's releases in flight and the take together) may run up
//   to min(command_timeout, 50 ms) past it. A command cut short at the caller's
//   deadline drops its connection (its reply state is unknown) and counts as "not granted": the
//   caller gets TimeoutError (whatever RedisOptions::failure says), not RedisError. If Redis did
//   run that take, what it took is not given back at once: the rate units are spent, and resource
//   units stay held by a lease that nobody renews, so they come back after lease_ttl; a take that
//   could not go left a FIFO ticket that nobody renews, which holds the queue up for at most
//   lease_ttl (as a waiter that died would). So keep timeouts well above the round trip to Redis. A
//   release that cannot reach Redis warns; the units then come back when the lease expires. The
//   store reconnects by itself when Redis returns (and loads the scripts again after a restart). A
//   holder cut off from Redis for longer than lease_ttl loses its lease (its units go back early),
//   and a Redis that restarts without persistence forgets every set's state (the limits start over,
//   full); the release of such an acquisition warns.
// - Keys: the rate state expires a second after it stops mattering; the definition, counters
//   and sequences of a set stay (a few bytes) until deleted by hand.
// - Differences from the in-process engine: LimitSetOptions::max_holders does not apply (there is
//   no holder table); Stats().waiting counts the waiting requests of every host (AcquireAsync()
//   requests each count), Stats().holding the acquisitions holding resource units on every host
//   plus this set's other acquisitions in this process; Stats().recovered_holders counts the
//   leases reaped after lease_ttl without renewal: one per acquisition (not per process), and a
//   live holder cut off from Redis for longer than lease_ttl counts too; times are kept in µs, so
//   a GCRA cost is at least 1 µs (at most a million admissions per second per limit) and a rate
//   window under 1 µs is refused (InvalidOptionError); LimitCharge::refunded (and charged) tell
//   what the release asked Redis to give back: the release is one-way, so a release that failed
//   (it warns) still shows its refund.
// Connect() validates the options and contacts nobody: the first LimitSet opened on the store
// connects (and, with kFailClosed, throws RedisError if Redis is unreachable then).

#ifndef CONCURRY_LIMITS_REDIS_REDIS_LIMIT_STORE_H_
#define CONCURRY_LIMITS_REDIS_REDIS_LIMIT_STORE_H_

#include <memory>
#include <vector>

#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/limit_set_backend.h"
#include "limits/redis/redis_options.h"

namespace concurry {

namespace limits_internal {
namespace redis {
class StoreCore;
}  // namespace redis
}  // namespace limits_internal

// A LimitStore on one Redis server (or one logical database of it). Share one per process and
// Redis: it owns a connection pool (RedisOptions::pool_size), one subscriber connection and the
// lease renewal thread. Sets opened on it keep what they need alive after the store handle is
// gone. Not fork-safe: a fork()ed child connects a store of its own and opens its sets on it (an
// acquisition it inherited from its parent is released by the parent, not by the child).
// Thread-safe.
class RedisLimitStore final : public LimitStore {
 public:
  // Validates `options` (InvalidOptionError naming the field, its value and the allowed range).
  static std::shared_ptr<RedisLimitStore> Connect(RedisOptions options);

  ~RedisLimitStore() override;

  // LimitStore: the engine of LimitSet::Create() with LimitSharing::kHosts and this store.
  // `options.name` names the set in Redis. InvalidOptionError for a bad name or a definition that
  // differs from the one in Redis; RedisError when Redis cannot be reached (with kFailOpen, a
  // warning instead).
  std::shared_ptr<LimitSetBackend> OpenSet(std::vector<Limit> limits,
                                           LimitSetOptions options) override;

  const RedisOptions& options() const;

 private:
  explicit RedisLimitStore(std::shared_ptr<limits_internal::redis::StoreCore> core);
  std::shared_ptr<limits_internal::redis::StoreCore> core_;
};

}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_REDIS_LIMIT_STORE_H_

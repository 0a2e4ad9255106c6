// The Lua scripts of the Redis LimitSet engine (limits/redis/internal/redis_set_backend.h): one
// per operation, each run atomically on the server, so that a multi-limit acquisition checks and
// takes every limit in one step. They implement the algorithms of limits/internal/rate_algorithms.h
// on state kept in Redis keys, with time from the server's TIME in microseconds.
//
//   const std::string& take = limits_internal::redis::TakeScript();
//   client.EvalSha(take, {"concurry:{openai}:"}, {"10000000", "1", "0", "0", "0", ...});
//
// Keys of a set (KEYS[1] is their common prefix, "<key_prefix>{<name>}:", whose hash tag keeps them
// in one cluster slot):
//   rate:<i>      hash: the state of rate limit i (GCRA: t = TAT; LeakyBucket: l, o, k = level,
//                 origin, leaked; FixedWindow: i, n = window index, count; SlidingWindow: n, s =
//                 count, last µs of the newest entry's slice)
//   rate:<i>:log  list (SlidingWindow): "<time> <amount>" entries, oldest first
//   use           hash: resource index -> units held (the sum of the live leases)
//   leases        zset: lease id -> expiry (µs); lease:<id> hash: resource index -> units
//   queue         zset: FIFO ticket -> ticket (the head is the lowest)
//   qexp          zset: ticket -> expiry (µs); every waiter has one, queued (FIFO) or not
//   seq           counter for tickets and lease ids
//   stats         hash: a = acquisitions, to = timeouts, mu = missing updates, ou = over-use
//                 reports, rh = leases reaped with units (holders that died)
//   wake          pub/sub channel: a message when waiters should try again
//
// Every limit of a request is passed in ARGV as kItemFields fields: index, algorithm code (see
// AlgorithmCode()), capacity, window (µs), burst, GCRA tolerance tau (µs), amount. Unlimited rate
// limits (infinite capacity) are not passed: they admit everything and keep no state.

#ifndef CONCURRY_LIMITS_REDIS_INTERNAL_SCRIPTS_H_
#define CONCURRY_LIMITS_REDIS_INTERNAL_SCRIPTS_H_

#include <string>

namespace concurry {
namespace limits_internal {
namespace redis {

// Fields per limit in ARGV (see the file comment).
inline constexpr int kItemFields = 7;

// The algorithm codes of the scripts.
inline constexpr char kGcraCode = 'g';      // TokenBucket and GCRA.
inline constexpr char kLeakyCode = 'l';     // LeakyBucket.
inline constexpr char kSlidingCode = 's';   // SlidingWindow.
inline constexpr char kFixedCode = 'f';     // FixedWindow.
inline constexpr char kResourceCode = 'r';  // ResourceLimit.

// take: all or nothing over the items.
//   ARGV: ttl_us, fifo (0/1), exempt (0/1), ticket (0 = none), mode, n, items (amount: requested).
//   mode 0: may wait: on failure the caller gets (or keeps) a ticket, whose expiry is renewed;
//   1: last try, not counted as a timeout (TryAcquire); 2: last try, counted as a timeout on
//   failure. A last try drops the ticket it came with.
//   Returns {0, lease id, now} when granted (every grant is a lease, also without resources), or
//   {wait, ticket, now}: wait > 0 is the µs until a retry can succeed, -1 means only a release or
//   a new queue head helps; ticket is the caller's (0 after a last try).
const std::string& TakeScript();
// release: ARGV: lease, missing updates to count, n, items (amount: to refund, 0 for none; only
// GCRA items are refunded). Gives back the lease's units (if it is still live), refunds, deletes
// the lease, wakes waiters. Returns {1 if the lease was live else 0, now}.
const std::string& ReleaseScript();
// charge: ARGV: missing updates to count, n, items (amount: the over-use to charge). Charges
// beyond the capacity and counts one over-use report. Returns now.
const std::string& ChargeScript();
// renew: ARGV: ttl_us, then ids "L<lease>" or "T<ticket>". Extends the live ones; returns the ids
// that were no longer live.
const std::string& RenewScript();
// leave: ARGV: ticket, timed out (0/1). Drops the ticket (counting a timeout if asked) and wakes
// waiters if others wait. Returns 1 if the ticket was there.
const std::string& LeaveScript();
// stats: ARGV: missing updates to count, n, items (amount unused). Returns {now, acquisitions,
// timeouts, missing updates, over-use reports, recovered holders, waiting, holding, then per item
// in_use, a, b} with numbers as strings; a, b per algorithm: GCRA: TAT ("" if untouched), "";
// LeakyBucket: level, ""; SlidingWindow: window start, count; FixedWindow: window start, count;
// resource: "", "".
const std::string& StatsScript();

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_INTERNAL_SCRIPTS_H_

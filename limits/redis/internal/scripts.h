// The Lua scripts of the Redis LimitSet engine (limits/redis/internal/redis_set_backend.h): one
// per operation, each run atomically on the server, so that a multi-limit acquisition checks and
// takes every limit in one step. They implement the algorithms of limits/internal/rate_algorithms.h
// on state kept in Redis keys, with time from the server's TIME in microseconds.
//
//   static const redis_internal::RedisScript take("take", limits_internal::redis::TakeScript());
//   // 10 s leases, FIFO, not exempt, no ticket, may wait, one item: 500 of GCRA limit 0
//   // (10000 per minute).
//   client.EvalSha(take, {"concurry:{openai}:"}, {"10000000", "1", "0", "0", "0", "1", "0", "g",
//                                                "10000", "60000000", "10000", "60000000", "500"});
//
// Keys of a set (KEYS[1] is their common prefix, "<key_prefix>{<name>}:", whose hash tag keeps them
// in one cluster slot):
//   rate:<i>      the state of rate limit i: GCRA (and TokenBucket): a string, the TAT; the others
//                 a hash: LeakyBucket: l, o, k = level, origin, leaked; FixedWindow: i, n = window
//                 index, count; SlidingWindow: n, s = count, last µs of the newest entry's slice
//   rate:<i>:log  list (SlidingWindow): "<time> <amount>" entries, oldest first
//   use           hash: resource index -> units held (the sum of the live leases)
//   leases        zset: lease id -> expiry (µs) of the acquisitions holding resource units;
//                 lease:<id> hash: resource index -> units
//   queue         zset: FIFO ticket -> ticket (the head is the lowest)
//   qexp          zset: ticket -> expiry (µs); every waiter has one, queued (FIFO) or not
//   acq           counts the acquisitions; its value is the lease id of those that hold resource
//                 units (it starts at the server time in µs: ids never repeat after Redis lost
//                 its data)
//   seq           counter of ticket ids (the same way)
//   stats         hash: a0 = acq when created - 1 (acquisitions = acq - a0), to = timeouts, mu =
//                 missing updates, ou = over-use reports, rh = leases reaped with units (holders
//                 that died)
//   wake          pub/sub channel: a message when waiters should try again
//
// Every limit of a request is passed in ARGV as kItemFields fields: index, algorithm code (below),
// capacity, window (µs), burst, GCRA tolerance tau (µs), amount; numbers in a form strtod() reads
// back exactly. Unlimited rate limits (infinite capacity) are not passed: they admit everything
// and keep no state. The scripts write numbers with string.format ('%d' or '%.17g'), never with
// Lua's own conversion, which keeps 14 digits (a time in µs has 16).

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
//   ARGV: ttl_us, fifo (0/1), exempt (0/1), ticket (0 = none), mode, n, items (amount: requested),
//   then the set's definition ("<base>def"; "" or absent: not checked): written when the key is
//   missing (Redis lost it), and a different one refuses the take with {-3, the one in Redis, 0}.
//   mode 0: may wait: on failure the caller gets (or keeps) a ticket, whose expiry is renewed;
//   1: last try, not counted as a timeout (TryAcquire); 2: last try, counted as a timeout on
//   failure. A last try drops the ticket it came with. Expired leases and tickets are reaped (at
//   most 100 of each) when the request cannot go at once, and then it is checked again.
//   Returns {0, lease id, now} when granted (lease id "0" when the request takes no resource
//   units: only those are leases), or
//   {wait, ticket, now}: wait > 0 is the µs until a retry can succeed (for a request that waits
//   for a release or a new queue head: until the first lease or ticket expires, which may bring
//   one), -1 means only a release or a new queue head helps; ticket is the caller's (0 after a
//   last try).
const std::string& TakeScript();
// release: ARGV: lease ("0": none), missing updates to count, unused, n, items (GCRA items with
// the amount to refund). Deletes the lease and gives back its units if it is still live, refunds,
// wakes waiters. Returns 0 if the lease had expired (and was reaped), else 1. An acquisition
// without a lease and without refunds needs no release.
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
// stats: ARGV: missing updates to count, n, items (amount unused). Reaps expired leases and
// tickets first (at most 100 of each). Returns {now, acquisitions,
// timeouts, missing updates, over-use reports, recovered holders, waiting, holding, then per item
// in_use, a, b} with numbers as strings; a, b per algorithm: GCRA: TAT ("" if untouched), "";
// LeakyBucket: level, ""; SlidingWindow: window start, count; FixedWindow: window start, count;
// resource: "", "".
const std::string& StatsScript();

// For tests only: `script`, one of the scripts above other than RenewScript(), on a clock the
// caller sets, so that a test can run the algorithms at times of its choosing (a differential test
// against limits/internal/rate_algorithms.h). The time, in µs since the epoch, is one more ARGV
// after the script's own arguments (which they count from the front). Key expiry follows that
// clock too: the expiry a script sets is recorded in the hash "<KEYS[1]>test:expiry" instead of
// being given to Redis, and each call first deletes the keys whose recorded expiry has passed
// (as Redis expires keys before a script runs), so that state dropped by expiry is dropped at the
// test's time, not the real time. Throws std::invalid_argument for a script not from this file.
std::string WithTestClock(const std::string& script);

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_INTERNAL_SCRIPTS_H_

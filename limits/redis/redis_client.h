// The Redis client under the LimitSet store on Redis (internal): a pool of connections that runs
// commands and Lua scripts with bounded waits, and a subscriber that calls back on pub/sub
// messages. Built on hiredis 0.14.1 (formatting and parsing only; the socket I/O is concurry's, so
// every wait has a deadline and a dead server never raises SIGPIPE).
//
//   RedisClient client({.port = 6380, .command_timeout = absl::Milliseconds(200)});
//   RedisReply pong = client.Command({"PING"});                  // pong.str() == "PONG"
//   static const RedisScript kIncr("incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])");
//   int64_t n = client.EvalSha(kIncr, {"counter"}, {"5"}).integer();
//   RedisSubscriber subscriber(options);
//   auto token = subscriber.Subscribe("wake", [&] { wakeups.fetch_add(1); });  // maybe many calls
//
// fork(): a child may use its parent's client and subscriber. They never use a connection of the
// parent there (see the classes). As with any mutex, fork() while another thread is inside a call
// of the same client or subscriber can leave the child blocked on its lock; fork from a quiet
// moment, or make a client in the child.

#ifndef CONCURRY_LIMITS_REDIS_REDIS_CLIENT_H_
#define CONCURRY_LIMITS_REDIS_REDIS_CLIENT_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace redis_internal {

// One decoded reply, owning its data: nil, integer, (bulk) string, status ("OK"), error
// ("ERR ...", "NOSCRIPT ...") or an array of replies. Strings are binary-safe. hiredis 0.14.1
// rejects arrays nested more than 7 deep as a protocol error (the connection is dropped, a
// RedisError): keep script replies flat. Thread-compatible.
class RedisReply {
 public:
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };

  RedisReply() = default;  // Nil.
  static RedisReply Integer(int64_t value);
  static RedisReply String(std::string value);
  static RedisReply Status(std::string value);
  static RedisReply Error(std::string message);
  static RedisReply Array(std::vector<RedisReply> elements);

  Type type() const { return type_; }
  bool is_nil() const { return type_ == Type::kNil; }
  bool is_integer() const { return type_ == Type::kInteger; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_status() const { return type_ == Type::kStatus; }
  bool is_error() const { return type_ == Type::kError; }
  bool is_array() const { return type_ == Type::kArray; }

  // The value of an integer reply; throws RedisError (naming the reply) for any other type:
  // RedisConfigError for an error reply that lasts (NOPERM, NOAUTH, a script's error; not
  // LOADING, BUSY, ...), as str() and elements() do.
  int64_t integer() const;
  // The bytes of a string, status or error reply; throws RedisError for any other type.
  const std::string& str() const;
  // The elements of an array reply; throws RedisError for any other type.
  const std::vector<RedisReply>& elements() const;

  // Renders the reply for messages and tests: nil, 42, "text" (escaped), +OK, -ERR x, [a, b].
  std::string DebugString() const;

 private:
  [[noreturn]] void ThrowUnexpected(absl::string_view expected) const;

  Type type_ = Type::kNil;
  int64_t integer_ = 0;
  std::string str_;
  std::vector<RedisReply> elements_;
};

// A Lua script run by its SHA1 (EVALSHA). The SHA is learnt from SCRIPT LOAD on first use and the
// script is loaded again when the server answers NOSCRIPT (it restarted or ran SCRIPT FLUSH).
// Make one per script, e.g. a function-local static. Thread-safe.
class RedisScript {
 public:
  // `name` appears in error messages ("EVALSHA take: timed out after 1s").
  RedisScript(std::string name, std::string source);

  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }

 private:
  friend class RedisClient;

  // The SHA1 from the last SCRIPT LOAD, or "" before the first.
  std::string sha() const ABSL_LOCKS_EXCLUDED(mu_);
  void set_sha(std::string sha) const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string name_;
  const std::string source_;
  const std::string eval_label_;  // "EVALSHA <name>"
  const std::string load_label_;  // "SCRIPT LOAD <name>"
  mutable absl::Mutex mu_;
  mutable std::string sha_ ABSL_GUARDED_BY(mu_);
};

// Thrown instead of a plain RedisError when a call was cut short at the caller's deadline (one
// earlier than command_timeout allows). Its connection was dropped, since its reply state is
// unknown: the server may or may not have run the command.
class RedisDeadlineError : public RedisError {
 public:
  using RedisError::RedisError;
};

// Thrown instead of a plain RedisError when every pooled connection stayed busy with other calls
// for command_timeout: Redis is reachable, the pool is too small for the load. Not an outage
// (RedisFailure::kFailOpen does not grant on it). Size options.pool_size for the threads that
// call at once.
class RedisPoolBusyError : public RedisError {
 public:
  using RedisError::RedisError;
};

class RedisConnection;  // One connection (internal/redis_connection.h).
struct Waker;           // The subscriber thread's wake-up (internal/redis_connection.h).

// A pool of options.pool_size connections to one Redis server, opened on demand. Every connection
// authenticates (AUTH [user] password) and selects options.db when it opens. A connection that
// fails (I/O error, timeout, protocol error) is closed and replaced on a later call; one that the
// server closed while idle (a restart) is noticed before use and replaced, so the call succeeds.
// After a failed connection attempt, calls fail at once with that error until
// options.reconnect_backoff has passed; then the next call tries again.
//
// Errors: RedisConfigError when the server refuses the connection's setup (AUTH, SELECT) or a
// SCRIPT LOAD (see redis_options.h); RedisError for an outage (refused or broken connection,
// timeout). A command's own error reply (NOPERM included) is returned, not thrown.
//
// Bounds: a call waits at most command_timeout for a free connection ("all N connections busy",
// RedisPoolBusyError; the command then has its own command_timeout),
// at most connect_timeout (plus command_timeout for AUTH and SELECT) to open one, and at most
// command_timeout for sending the command and receiving its reply. Connection failures and
// timeouts throw RedisError naming options.Address() and the command; a reply that is a Redis
// error (WRONGTYPE, a script error) is returned as a kError reply, not thrown. A call given a
// `deadline` also ends by then (every bound above is cut to it): it throws RedisDeadlineError when
// it failed and the deadline has passed.
//
// One-way calls (EvalShaOneWay()) are written at once, in call order, on one more connection kept
// for them, and return without waiting; a thread of the client (started on first use) reads their
// replies in the background and calls each one's `done` in call order. FlushOneWay() waits until
// the one-way calls made so far are done; the destructor flushes them all (each is bounded by
// command_timeout from its send).
//
// Thread-safe. Destroy only when no call is in flight.
class RedisClient {
 public:
  // Validates `options` (InvalidOptionError); does not connect.
  explicit RedisClient(RedisOptions options);
  ~RedisClient();

  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Called with the reply of a one-way call (`error` null), or with why it failed (`reply` null):
  // its connection broke or it got no reply within command_timeout.
  using OneWayDone = std::function<void(const RedisReply* reply, const RedisError* error)>;

  // Runs one command: args[0] is its name, every argument binary-safe. `args` must not be empty.
  // Ends by `deadline` (see the class comment).
  RedisReply Command(const std::vector<std::string>& args,
                     absl::Time deadline = absl::InfiniteFuture()) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `script` with `keys` (KEYS[1..]) and `args` (ARGV[1..]) by EVALSHA; loads the script
  // (SCRIPT LOAD) first when its SHA is not known yet and again after a NOSCRIPT reply (once per
  // call). A script error comes back as a kError reply; a failing SCRIPT LOAD throws RedisError.
  // Ends by `deadline` (see the class comment).
  RedisReply EvalSha(const RedisScript& script, const std::vector<std::string>& keys,
                     const std::vector<std::string>& args,
                     absl::Time deadline = absl::InfiniteFuture()) ABSL_LOCKS_EXCLUDED(mu_);

  // Sends EVALSHA of `script` on the one-way connection and returns once it is written; `done`
  // runs later on the client's reader thread (a NOSCRIPT reply is retried there, synchronously).
  // Throws RedisError, without calling `done`, when it cannot be sent (no connection within
  // connect_timeout, or the write failed or took longer than command_timeout). In a fork()ed child
  // the call runs synchronously and `done` runs before it returns.
  void EvalShaOneWay(const RedisScript& script, const std::vector<std::string>& keys,
                     const std::vector<std::string>& args, OneWayDone done)
      ABSL_LOCKS_EXCLUDED(mu_, one_way_mu_);

  // Waits until every one-way call made before this one is done (its `done` returned), or until
  // `deadline`; returns whether they all are. Must not be called from a `done` callback.
  bool FlushOneWay(absl::Time deadline) ABSL_LOCKS_EXCLUDED(one_way_mu_);

  const RedisOptions& options() const { return options_; }
  // options().Address(): "host:port" or "unix:<path>".
  const std::string& address() const { return address_; }

  // Connections opened so far (for tests: a restart shows up as new connections).
  int64_t connects() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct OneWayCall {
    const RedisScript* script;
    std::vector<std::string> command;  // EVALSHA sha n keys... args..., for a NOSCRIPT retry.
    absl::Time deadline;               // For its reply.
    std::shared_ptr<RedisConnection> connection;  // The one it was written on.
    OneWayDone done;
  };

  // Takes a free pool slot (waiting at most until `slot_deadline`) with its idle connection,
  // opening a new one when the slot has none or the server closed it. The new one gets its own
  // budget (connect_timeout, then command_timeout for AUTH and SELECT), cut only by
  // `caller_deadline`: time spent waiting for the slot does not shorten it.
  std::unique_ptr<RedisConnection> Checkout(absl::string_view command, absl::Time slot_deadline,
                                            absl::Time caller_deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives the slot back, with `connection` for reuse, or null when it failed.
  void Checkin(std::unique_ptr<RedisConnection> connection) ABSL_LOCKS_EXCLUDED(mu_);
  // Opens a connection (by the caller's `deadline`) unless the last attempt failed within
  // reconnect_backoff. A failure sets that backoff unless `deadline` cut it.
  std::unique_ptr<RedisConnection> Connect(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `args` on a pooled connection, by min(now + command_timeout, caller_deadline).
  RedisReply Run(const std::vector<std::string>& args, absl::string_view what,
                 absl::Time caller_deadline) ABSL_LOCKS_EXCLUDED(mu_);
  std::string LoadScript(const RedisScript& script, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // The reader thread of one-way calls.
  void RunOneWayReader() ABSL_LOCKS_EXCLUDED(one_way_mu_);
  // Fails the pending one-way calls written on `connection` and forgets it; returns them.
  std::vector<OneWayCall> FailOneWayLocked(const RedisConnection* connection)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(one_way_mu_);
  // Runs the `done` callbacks of `calls` with `error`, then counts them done.
  void FinishOneWay(std::vector<OneWayCall>& calls, const RedisError& error)
      ABSL_LOCKS_EXCLUDED(one_way_mu_);
  // In a fork()ed child's first call: closes the connections inherited from the parent, unused.
  void DropInheritedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Throws RedisConfigError, or RedisError for a transient refusal, for a failed SCRIPT LOAD.
  [[noreturn]] void ThrowLoadFailed(const RedisScript& script, const RedisReply& reply) const;

  const RedisOptions options_;
  const std::string address_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<RedisConnection>> idle_ ABSL_GUARDED_BY(mu_);
  int free_slots_ ABSL_GUARDED_BY(mu_);
  // After a failed attempt: no new attempt before next_connect_; calls fail with connect_error_.
  absl::Time next_connect_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string connect_error_ ABSL_GUARDED_BY(mu_);
  bool connect_error_config_ ABSL_GUARDED_BY(mu_) = false;  // connect_error_ is a refusal.
  // The process whose connections idle_ holds (0 before the first call).
  pid_t pool_pid_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t connects_ ABSL_GUARDED_BY(mu_) = 0;

  const pid_t pid_;  // The process that made the client: one-way calls are its own.
  absl::Mutex one_way_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::shared_ptr<RedisConnection> one_way_connection_ ABSL_GUARDED_BY(one_way_mu_);
  std::deque<OneWayCall> one_way_pending_ ABSL_GUARDED_BY(one_way_mu_);
  uint64_t one_way_sent_ ABSL_GUARDED_BY(one_way_mu_) = 0;
  uint64_t one_way_done_ ABSL_GUARDED_BY(one_way_mu_) = 0;
  bool one_way_stop_ ABSL_GUARDED_BY(one_way_mu_) = false;
  std::thread one_way_reader_;  // Started by the first one-way call, under one_way_mu_.
};

// Calls back on messages published to channels, over one dedicated connection served by a thread
// of its own. A subscription's callback runs once when the server confirms the subscription, once
// more each time it is confirmed again after a reconnect (Redis restarted: a message published
// while the connection was down is lost, and this call stands in for it), and once per message.
// So a waiter that subscribes, then checks its condition, then sleeps until called back, misses
// no wake-up. While Redis is down, the thread retries every options.reconnect_backoff.
//
// Callbacks run on the subscriber's thread, one at a time, with no lock held; they must be quick
// (signal a waiter) and may call Subscribe and Unsubscribe, but must not destroy the subscriber.
// The destructor wakes the thread and joins it; it waits at most connect_timeout when the thread
// is opening a connection.
//
// fork(): a child inherits the subscriptions but not the thread. Its first Subscribe() starts a
// thread and a connection of the child's own, which then serves every subscription of the child
// (the inherited ones too); until then, and if it never subscribes, nothing is called back in the
// child. The parent's connection and wake-up are never used in the child (its copies of their
// fds are closed), and destroying the subscriber in a child never waits for the parent's thread.
//
// When the server refuses the connection's setup (RedisConfigError: a wrong password, an ACL
// user it does not know), the thread keeps retrying, but waits twice as long after each refusal
// (up to 64 reconnect_backoff), reports each new refusal on stderr, and last_error() returns it.
//
// Thread-safe.
class RedisSubscriber {
 public:
  using Token = uint64_t;

  // Validates `options` (InvalidOptionError) and starts the thread, which connects.
  explicit RedisSubscriber(RedisOptions options);
  ~RedisSubscriber();

  RedisSubscriber(const RedisSubscriber&) = delete;
  RedisSubscriber& operator=(const RedisSubscriber&) = delete;

  // Calls `on_message` on every message to `channel` (a full channel name: add the key prefix
  // yourself) until Unsubscribe(token). Several subscriptions may share a channel.
  Token Subscribe(std::string channel, std::function<void()> on_message) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends a subscription. After it returns, its callback is not running and will not run again
  // (unless called from that callback itself). Unknown or ended tokens are ignored.
  void Unsubscribe(Token token) ABSL_LOCKS_EXCLUDED(mu_);

  // Connections opened so far (for tests).
  int64_t connects() const ABSL_LOCKS_EXCLUDED(mu_);

  // Why the last connection attempt failed, or "" once a connection is set up.
  std::string last_error() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Channel {
    std::map<Token, std::shared_ptr<const std::function<void()>>> callbacks;
    bool requested = false;  // SUBSCRIBE sent on the current connection.
    bool confirmed = false;  // And confirmed by the server.
  };
  using Callbacks = std::vector<std::shared_ptr<const std::function<void()>>>;

  // The thread: connect, serve, and after a failure wait reconnect_backoff; until stopped.
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  // One connection's life: subscribe, deliver, until it fails (RedisError) or the subscriber
  // stops (Stopped).
  void Serve(RedisConnection& connection, const Waker& waker) ABSL_LOCKS_EXCLUDED(mu_);
  // Sends SUBSCRIBE / UNSUBSCRIBE for the channels whose wanted state changed.
  void SyncChannels(RedisConnection& connection, const Waker& waker) ABSL_LOCKS_EXCLUDED(mu_);
  // Calls the new subscriptions of channels that were already confirmed.
  void RunFirstCalls() ABSL_LOCKS_EXCLUDED(mu_);
  // Calls the callbacks of `channel`.
  void Dispatch(const std::string& channel) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `callbacks` on this thread without the lock, then ends the run (dispatch_seq_ even).
  void Call(const Callbacks& callbacks) ABSL_LOCKS_EXCLUDED(mu_);
  // Sleeps `duration`, or less when the subscriber stops.
  void Pause(absl::Duration duration) ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes the thread from poll().
  void Wake();
  // In a fork()ed child (first call there): closes the parent's fds and starts a thread of this
  // process. Throws std::system_error when it cannot.
  void AdoptLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether this process runs the thread (false in a fork()ed child before AdoptLocked()).
  bool OwnedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RedisOptions options_;
  const std::string address_;
  // eventfd: written to wake the thread from poll(). Replaced only by AdoptLocked(), before it
  // starts the thread that reads it.
  int wake_fd_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Token next_token_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, Channel> channels_ ABSL_GUARDED_BY(mu_);
  std::map<Token, std::string> token_channels_ ABSL_GUARDED_BY(mu_);
  // Subscriptions made to a channel already confirmed, to be called once by the thread.
  std::vector<Token> pending_first_calls_ ABSL_GUARDED_BY(mu_);
  // Odd while callbacks run; Unsubscribe waits for the run in progress to end.
  uint64_t dispatch_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t connects_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  // The process that runs thread_, and the fd of the thread's connection while it serves (-1
  // otherwise): what a fork()ed child closes.
  pid_t pid_ ABSL_GUARDED_BY(mu_);
  int serving_fd_ ABSL_GUARDED_BY(mu_) = -1;

  std::thread thread_;
};

}  // namespace redis_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_REDIS_CLIENT_H_

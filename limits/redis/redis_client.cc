#include "limits/redis/redis_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hiredis/hiredis.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace redis_internal {

// The subscriber's wake-up: an eventfd, and the check whether the wake-up means "stop".
struct Waker {
  int fd;
  std::function<bool()> stopping;
  // Set by WaitFor() when it absorbed a wake-up that was not a stop (a Subscribe() or
  // Unsubscribe() while a send waited): the thread syncs its channels again before it sleeps.
  mutable bool woken = false;
};

namespace {

// Thrown out of a subscriber's wait when the subscriber is being destroyed; never escapes it.
struct Stopped {};

std::string ErrnoText(int error) {
  char buffer[256];
  // GNU strerror_r: returns a pointer to the message (maybe a static one, maybe `buffer`).
  return strerror_r(error, buffer, sizeof(buffer));
}

void DrainEventfd(int fd) {
  uint64_t count;
  while (read(fd, &count, sizeof(count)) < 0 && errno == EINTR) {
  }
}

// Waits until `fd` is ready for `events` (POLLIN/POLLOUT; also true on an error or hang-up, which
// the next recv/send reports) and returns true, or returns false once `deadline` has passed. With
// a waker, a wake-up that means "stop" throws Stopped; other wake-ups are absorbed.
bool WaitFor(int fd, short events, absl::Time deadline, const Waker* waker) {
  while (true) {
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      // Rounded up, so that a wait never ends just short of the deadline and spins.
      const int64_t ms = (absl::ToInt64Microseconds(left) + 999) / 1000;
      timeout_ms = ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
    }
    pollfd fds[2] = {{fd, events, 0}, {waker != nullptr ? waker->fd : -1, POLLIN, 0}};
    const int n = poll(fds, waker != nullptr ? 2 : 1, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw RedisError(absl::StrCat("poll() failed: ", ErrnoText(errno)));
    }
    if (waker != nullptr && fds[1].revents != 0) {
      DrainEventfd(waker->fd);
      if (waker->stopping()) throw Stopped{};
      waker->woken = true;
    }
    if (fds[0].revents != 0) return true;
  }
}

// Whether an error reply means "not now" (the server is loading, busy with a script, or its
// cluster or replication is not ready) rather than a refusal that lasts.
bool IsTransientRefusal(absl::string_view error) {
  for (const absl::string_view prefix :
       {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}) {
    if (absl::StartsWith(error, prefix)) return true;
  }
  return false;
}

RedisReply Convert(const redisReply* reply) {
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      return RedisReply::String(std::string(reply->str, reply->len));
    case REDIS_REPLY_STATUS:
      return RedisReply::Status(std::string(reply->str, reply->len));
    case REDIS_REPLY_ERROR:
      return RedisReply::Error(std::string(reply->str, reply->len));
    case REDIS_REPLY_INTEGER:
      return RedisReply::Integer(reply->integer);
    case REDIS_REPLY_ARRAY: {
      std::vector<RedisReply> elements;
      elements.reserve(reply->elements);
      for (size_t i = 0; i < reply->elements; ++i) elements.push_back(Convert(reply->element[i]));
      return RedisReply::Array(std::move(elements));
    }
    case REDIS_REPLY_NIL:
    default:
      return RedisReply();
  }
}

absl::string_view TypeName(RedisReply::Type type) {
  switch (type) {
    case RedisReply::Type::kNil:
      return "nil";
    case RedisReply::Type::kInteger:
      return "integer";
    case RedisReply::Type::kString:
      return "string";
    case RedisReply::Type::kStatus:
      return "status";
    case RedisReply::Type::kError:
      return "error";
    case RedisReply::Type::kArray:
      return "array";
  }
  return "unknown";
}

}  // namespace

// ---- RedisReply --------------------------------------------------------------------------------

RedisReply RedisReply::Integer(int64_t value) {
  RedisReply reply;
  reply.type_ = Type::kInteger;
  reply.integer_ = value;
  return reply;
}

RedisReply RedisReply::String(std::string value) {
  RedisReply reply;
  reply.type_ = Type::kString;
  reply.str_ = std::move(value);
  return reply;
}

RedisReply RedisReply::Status(std::string value) {
  RedisReply reply = String(std::move(value));
  reply.type_ = Type::kStatus;
  return reply;
}

RedisReply RedisReply::Error(std::string message) {
  RedisReply reply = String(std::move(message));
  reply.type_ = Type::kError;
  return reply;
}

RedisReply RedisReply::Array(std::vector<RedisReply> elements) {
  RedisReply reply;
  reply.type_ = Type::kArray;
  reply.elements_ = std::move(elements);
  return reply;
}

void RedisReply::ThrowUnexpected(absl::string_view expected) const {
  const std::string message =
      absl::StrCat("expected ", expected, " reply from Redis, got ", DebugString());
  // An error reply that lasts (NOPERM, NOAUTH, a script's error) is no outage.
  if (type_ == Type::kError && !IsTransientRefusal(str_)) throw RedisConfigError(message);
  throw RedisError(message);
}

int64_t RedisReply::integer() const {
  if (type_ != Type::kInteger) ThrowUnexpected("an integer");
  return integer_;
}

const std::string& RedisReply::str() const {
  if (type_ != Type::kString && type_ != Type::kStatus && type_ != Type::kError) {
    ThrowUnexpected("a string");
  }
  return str_;
}

const std::vector<RedisReply>& RedisReply::elements() const {
  if (type_ != Type::kArray) ThrowUnexpected("an array");
  return elements_;
}

std::string RedisReply::DebugString() const {
  switch (type_) {
    case Type::kNil:
      return "nil";
    case Type::kInteger:
      return absl::StrCat(integer_);
    case Type::kString:
      return absl::StrCat("\"", absl::CEscape(str_), "\"");
    case Type::kStatus:
      return absl::StrCat("+", str_);
    case Type::kError:
      return absl::StrCat("-", str_);
    case Type::kArray: {
      std::vector<std::string> parts;
      parts.reserve(elements_.size());
      for (const RedisReply& element : elements_) parts.push_back(element.DebugString());
      return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
    }
  }
  return absl::StrCat("<", TypeName(type_), ">");
}

// ---- RedisScript -------------------------------------------------------------------------------

RedisScript::RedisScript(std::string name, std::string source)
    : name_(std::move(name)),
      source_(std::move(source)),
      eval_label_(absl::StrCat("EVALSHA ", name_)),
      load_label_(absl::StrCat("SCRIPT LOAD ", name_)) {}

std::string RedisScript::sha() const {
  absl::MutexLock lock(&mu_);
  return sha_;
}

void RedisScript::set_sha(std::string sha) const {
  absl::MutexLock lock(&mu_);
  sha_ = std::move(sha);
}

// ---- RedisConnection ---------------------------------------------------------------------------

// One connection: hiredis connects it, formats commands and parses replies; the socket I/O is done
// here with MSG_NOSIGNAL (no SIGPIPE from a dead server) and poll() against a deadline. Not
// thread-safe.
class RedisConnection {
 public:
  // Connects (bounded by connect_timeout), then runs AUTH and, with `select_db`, SELECT (each
  // bounded by command_timeout); all of it by `deadline` too. Throws RedisError, or Stopped
  // through `waker`.
  static std::unique_ptr<RedisConnection> Open(const RedisOptions& options,
                                               const std::string& address, bool select_db,
                                               const Waker* waker,
                                               absl::Time deadline = absl::InfiniteFuture()) {
    absl::Duration connect_timeout = options.connect_timeout;
    if (deadline != absl::InfiniteFuture()) {
      connect_timeout =
          std::max(absl::Milliseconds(1), std::min(connect_timeout, deadline - absl::Now()));
    }
    const timeval timeout = absl::ToTimeval(connect_timeout);
    redisContext* context =
        options.unix_socket.empty()
            ? redisConnectWithTimeout(options.host.c_str(), options.port, timeout)
            : redisConnectUnixWithTimeout(options.unix_socket.c_str(), timeout);
    if (context == nullptr) {
      throw RedisError(absl::StrCat("Redis ", address, ": cannot connect: out of memory"));
    }
    if (context->err != 0) {
      std::string reason = context->errstr;
      redisFree(context);
      throw RedisError(absl::StrCat("Redis ", address, ": cannot connect (connect_timeout ",
                                    absl::FormatDuration(options.connect_timeout), "): ", reason));
    }
    std::unique_ptr<RedisConnection> connection(
        new RedisConnection(context, address, options.command_timeout));
    // Children started with fork()+exec() (a redis-server in a test) must not keep it open. Not
    // atomic: hiredis 0.14.1 opens the socket without SOCK_CLOEXEC, so a fork()+exec() by another
    // thread in between still inherits it (harmless but for the fd it holds open). Also, its
    // connect gives up on EINTR ("Interrupted system call"): a signal during a connect costs one
    // failed attempt and a reconnect_backoff.
    fcntl(context->fd, F_SETFD, FD_CLOEXEC);
    if (options.unix_socket.empty()) redisEnableKeepAlive(context);
    if (!options.password.empty()) {
      std::vector<std::string> auth = {"AUTH"};
      if (!options.user.empty()) auth.push_back(options.user);
      auth.push_back(options.password);
      connection->Expect(auth, "AUTH", waker, deadline);
    }
    if (select_db && options.db != 0) {
      connection->Expect({"SELECT", absl::StrCat(options.db)}, absl::StrCat("SELECT ", options.db),
                         waker, deadline);
    }
    return connection;
  }

  ~RedisConnection() { redisFree(context_); }

  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  int fd() const { return context_->fd; }

  // Whether an idle connection is unusable: the server closed it (it restarted, or timed the
  // client out) or sent something unasked.
  bool Stale() const {
    pollfd pfd = {context_->fd, POLLIN | POLLRDHUP, 0};
    return poll(&pfd, 1, 0) != 0;
  }

  // Sends one command; throws RedisError ("<what> timed out after ...", "<what> failed: ...").
  void Send(const std::vector<std::string>& args, absl::Time deadline, absl::string_view what,
            const Waker* waker) {
    absl::InlinedVector<const char*, 16> argv;
    absl::InlinedVector<size_t, 16> lengths;
    argv.reserve(args.size());
    lengths.reserve(args.size());
    for (const std::string& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    char* command = nullptr;
    const int length = redisFormatCommandArgv(&command, static_cast<int>(args.size()), argv.data(),
                                              lengths.data());
    if (length < 0) Fail(what, "cannot format the command (out of memory)");
    std::unique_ptr<char, void (*)(char*)> owned(command, &redisFreeCommand);
    size_t sent = 0;
    while (sent < static_cast<size_t>(length)) {
      const ssize_t n =
          send(context_->fd, command + sent, length - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) {
        sent += n;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!WaitFor(context_->fd, POLLOUT, deadline, waker)) TimedOut(what);
      } else if (errno != EINTR) {
        Fail(what, ErrnoText(errno));
      }
    }
  }

  // Waits for the next reply (until `deadline`); throws RedisError like Send().
  RedisReply Receive(absl::Time deadline, absl::string_view what, const Waker* waker) {
    RedisReply reply;
    while (!NextReply(&reply, what)) {
      if (!WaitFor(context_->fd, POLLIN, deadline, waker)) TimedOut(what);
      ReadAvailable(what);
    }
    return reply;
  }

  // Reads what has arrived (without waiting) into the parser; throws RedisError when the server
  // closed the connection or the read failed.
  void ReadAvailable(absl::string_view what) {
    char buffer[16 * 1024];
    while (true) {
      const ssize_t n = recv(context_->fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) {
        if (redisReaderFeed(context_->reader, buffer, n) != REDIS_OK) {
          Fail(what, "out of memory while reading the reply");
        }
        return;
      }
      if (n == 0) Fail(what, "the server closed the connection");
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno != EINTR) Fail(what, ErrnoText(errno));
    }
  }

  // Takes the next complete reply from the parser into `*reply`; false when none is complete yet.
  bool NextReply(RedisReply* reply, absl::string_view what) {
    void* raw = nullptr;
    if (redisReaderGetReply(context_->reader, &raw) != REDIS_OK) {
      Fail(what, absl::StrCat("protocol error: ", context_->reader->errstr));
    }
    if (raw == nullptr) return false;
    *reply = Convert(static_cast<const redisReply*>(raw));
    freeReplyObject(raw);
    return true;
  }

  // Sends `args` and throws RedisError ("<what> failed: <error reply>") unless the reply is OK.
  void Expect(const std::vector<std::string>& args, absl::string_view what, const Waker* waker,
              absl::Time until) {
    const absl::Time deadline = std::min(until, absl::Now() + command_timeout_);
    Send(args, deadline, what, waker);
    const RedisReply reply = Receive(deadline, what, waker);
    if (reply.is_error()) Refused(what, reply.str());
  }

  // Throws for an error reply to the connection's setup: RedisConfigError when it lasts (a wrong
  // password, SELECT out of range), RedisError when it is transient.
  [[noreturn]] void Refused(absl::string_view what, absl::string_view error) const {
    if (IsTransientRefusal(error)) Fail(what, error);
    throw RedisConfigError(absl::StrCat("Redis ", address_, ": ", what, " failed: ", error));
  }

  [[noreturn]] void Fail(absl::string_view what, absl::string_view reason) const {
    throw RedisError(absl::StrCat("Redis ", address_, ": ", what, " failed: ", reason));
  }

  [[noreturn]] void TimedOut(absl::string_view what) const {
    throw RedisError(absl::StrCat("Redis ", address_, ": ", what, " timed out after ",
                                  absl::FormatDuration(command_timeout_)));
  }

 private:
  RedisConnection(redisContext* context, const std::string& address, absl::Duration command_timeout)
      : context_(context), address_(address), command_timeout_(command_timeout) {}

  redisContext* const context_;
  const std::string address_;
  const absl::Duration command_timeout_;
};

// ---- RedisClient -------------------------------------------------------------------------------

RedisClient::RedisClient(RedisOptions options)
    : options_((options.Validate(), std::move(options))),
      address_(options_.Address()),
      free_slots_(options_.pool_size),
      pid_(getpid()) {}

RedisClient::~RedisClient() {
  if (getpid() != pid_) {
    if (one_way_reader_.joinable()) one_way_reader_.detach();  // The parent's (fork()).
    return;
  }
  // Every pending call ends by its own deadline (command_timeout after its send).
  FlushOneWay(absl::InfiniteFuture());
  {
    absl::MutexLock lock(&one_way_mu_);
    one_way_stop_ = true;
  }
  if (one_way_reader_.joinable()) one_way_reader_.join();
}

int64_t RedisClient::connects() const {
  absl::MutexLock lock(&mu_);
  return connects_;
}

std::unique_ptr<RedisConnection> RedisClient::Checkout(absl::string_view what,
                                                       absl::Time slot_deadline,
                                                       absl::Time caller_deadline) {
  std::unique_ptr<RedisConnection> connection;
  {
    absl::MutexLock lock(&mu_);
    const bool got = mu_.AwaitWithDeadline(absl::Condition(
                                               +[](int* free) { return *free > 0; }, &free_slots_),
                                           slot_deadline);
    if (!got) {
      throw RedisPoolBusyError(absl::StrCat("Redis ", address_, ": ", what, ": all ",
                                            options_.pool_size, " connections busy for ",
                                            absl::FormatDuration(options_.command_timeout)));
    }
    DropInheritedLocked();
    --free_slots_;
    if (!idle_.empty()) {
      connection = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  try {
    if (connection != nullptr && connection->Stale()) connection.reset();
    if (connection == nullptr) connection = Connect(caller_deadline);
  } catch (...) {
    Checkin(nullptr);
    throw;
  }
  return connection;
}

void RedisClient::DropInheritedLocked() {
  const pid_t pid = getpid();
  if (pool_pid_ == pid) return;
  // First call in this process. When it is a fork()ed child, the idle connections are sockets
  // shared with the parent: a command sent on one could read the parent's reply. They are only
  // closed here (hiredis sends nothing when it frees a connection), and the slots that the
  // parent's other threads held at the fork are free here, since those threads do not exist.
  idle_.clear();
  free_slots_ = options_.pool_size;
  next_connect_ = absl::InfinitePast();
  pool_pid_ = pid;
}

void RedisClient::ThrowLoadFailed(const RedisScript& script, const RedisReply& reply) const {
  const std::string message =
      absl::StrCat("Redis ", address_, ": ", script.load_label_, " failed: ", reply.DebugString());
  // A compile error, NOPERM or NOAUTH comes back on every try: the script or the options are
  // wrong, Redis is not down.
  if (reply.is_error() && !IsTransientRefusal(reply.str())) throw RedisConfigError(message);
  throw RedisError(message);
}

void RedisClient::Checkin(std::unique_ptr<RedisConnection> connection) {
  absl::MutexLock lock(&mu_);
  if (connection != nullptr) idle_.push_back(std::move(connection));
  ++free_slots_;
}

std::unique_ptr<RedisConnection> RedisClient::Connect(absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now < next_connect_) {
      const std::string message = absl::StrCat(
          connect_error_, " (next attempt in ",
          absl::FormatDuration(absl::Ceil(next_connect_ - now, absl::Milliseconds(1))), ")");
      if (connect_error_config_) throw RedisConfigError(message);
      throw RedisError(message);
    }
    connect_error_config_ = false;
  }
  try {
    std::unique_ptr<RedisConnection> connection =
        RedisConnection::Open(options_, address_, /*select_db=*/true, /*waker=*/nullptr, deadline);
    absl::MutexLock lock(&mu_);
    ++connects_;
    next_connect_ = absl::InfinitePast();
    return connection;
  } catch (const RedisConfigError& e) {
    // Refused by the server (AUTH, SELECT): calls within the backoff fail with the same class.
    absl::MutexLock lock(&mu_);
    next_connect_ = absl::Now() + options_.reconnect_backoff;
    connect_error_ = e.what();
    connect_error_config_ = true;
    throw;
  } catch (const RedisError& e) {
    absl::MutexLock lock(&mu_);
    // Cut short by a caller's deadline: says nothing about the server.
    if (deadline != absl::InfiniteFuture() && absl::Now() >= deadline) throw;
    next_connect_ = absl::Now() + options_.reconnect_backoff;
    connect_error_ = e.what();
    throw;
  }
}

RedisReply RedisClient::Run(const std::vector<std::string>& args, absl::string_view what,
                            absl::Time caller_deadline) {
  const absl::Time checkout_deadline =
      std::min(absl::Now() + options_.command_timeout, caller_deadline);
  // Until the slot is taken: a failure at or after the caller's deadline was cut by it (the pool
  // wait ends there only when it is the earlier one, the connect only there).
  bool cut = true;
  try {
    std::unique_ptr<RedisConnection> connection =
        Checkout(what, checkout_deadline, caller_deadline);
    // The command gets its own command_timeout from here: time spent waiting for a busy pool
    // must not turn into a timeout of a healthy server (an outage, for RedisFailure::kFailOpen).
    const absl::Time deadline = std::min(absl::Now() + options_.command_timeout, caller_deadline);
    cut = deadline == caller_deadline;
    try {
      connection->Send(args, deadline, what, /*waker=*/nullptr);
      RedisReply reply = connection->Receive(deadline, what, /*waker=*/nullptr);
      Checkin(std::move(connection));
      return reply;
    } catch (...) {
      // The connection may hold a reply that never came or half a command: never reuse it.
      Checkin(nullptr);
      throw;
    }
  } catch (const RedisDeadlineError&) {
    throw;
  } catch (const RedisError& error) {
    if (cut && absl::Now() >= caller_deadline) {
      throw RedisDeadlineError(absl::StrCat("Redis ", address_, ": ", what,
                                            " cut short at the caller's deadline (", error.what(),
                                            ")"));
    }
    throw;
  }
}

RedisReply RedisClient::Command(const std::vector<std::string>& args, absl::Time deadline) {
  if (args.empty()) throw InvalidOptionError("RedisClient::Command: args must not be empty");
  return Run(args, args[0], deadline);
}

std::string RedisClient::LoadScript(const RedisScript& script, absl::Time deadline) {
  const RedisReply reply = Run({"SCRIPT", "LOAD", script.source()}, script.load_label_, deadline);
  if (!reply.is_string()) {
    ThrowLoadFailed(script, reply);
  }
  script.set_sha(reply.str());
  return reply.str();
}

namespace {

std::vector<std::string> EvalShaCommand(std::string sha, const std::vector<std::string>& keys,
                                        const std::vector<std::string>& args) {
  std::vector<std::string> command;
  command.reserve(3 + keys.size() + args.size());
  command.push_back("EVALSHA");
  command.push_back(std::move(sha));
  command.push_back(absl::StrCat(keys.size()));
  command.insert(command.end(), keys.begin(), keys.end());
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

}  // namespace

RedisReply RedisClient::EvalSha(const RedisScript& script, const std::vector<std::string>& keys,
                                const std::vector<std::string>& args, absl::Time deadline) {
  std::string sha = script.sha();
  if (sha.empty()) sha = LoadScript(script, deadline);
  std::vector<std::string> command = EvalShaCommand(std::move(sha), keys, args);
  RedisReply reply = Run(command, script.eval_label_, deadline);
  if (reply.is_error() && absl::StartsWith(reply.str(), "NOSCRIPT")) {
    // The server lost its script cache (restart, SCRIPT FLUSH); EVALSHA ran nothing, so a retry
    // after loading the script again is safe.
    command[1] = LoadScript(script, deadline);
    reply = Run(command, script.eval_label_, deadline);
  }
  return reply;
}

// ---- One-way calls ----

void RedisClient::EvalShaOneWay(const RedisScript& script, const std::vector<std::string>& keys,
                                const std::vector<std::string>& args, OneWayDone done) {
  if (getpid() != pid_) {
    // A fork()ed child has no reader thread (and must not share the parent's connection).
    const RedisReply reply = EvalSha(script, keys, args);
    done(&reply, nullptr);
    return;
  }
  std::vector<OneWayCall> calls;
  std::string sha = script.sha();
  if (sha.empty()) {
    // Not known yet: the script runs by EVAL (no wait for a SCRIPT LOAD), and a one-way SCRIPT
    // LOAD sent before it teaches the SHA to later calls.
    calls.push_back({&script,
                     {"SCRIPT", "LOAD", script.source()},
                     absl::InfiniteFuture(),
                     nullptr,
                     [&script](const RedisReply* reply, const RedisError*) {
                       if (reply != nullptr && reply->is_string()) script.set_sha(reply->str());
                     }});
    calls.push_back({&script, EvalShaCommand(script.source(), keys, args), absl::InfiniteFuture(),
                     nullptr, std::move(done)});
    calls.back().command[0] = "EVAL";
  } else {
    calls.push_back({&script, EvalShaCommand(std::move(sha), keys, args), absl::InfiniteFuture(),
                     nullptr, std::move(done)});
  }
  // Written under the lock: the calls reach the server in the order of one_way_pending_.
  absl::MutexLock lock(&one_way_mu_);
  if (!one_way_reader_.joinable()) one_way_reader_ = std::thread([this] { RunOneWayReader(); });
  // An idle one (every reply read) that the server closed meanwhile (a restart) is replaced.
  if (one_way_connection_ != nullptr && one_way_pending_.empty() && one_way_connection_->Stale()) {
    one_way_connection_.reset();
  }
  if (one_way_connection_ == nullptr) one_way_connection_ = Connect(absl::InfiniteFuture());
  for (OneWayCall& call : calls) {
    const absl::Time now = absl::Now();
    try {
      one_way_connection_->Send(call.command, now + options_.command_timeout, script.eval_label_,
                                /*waker=*/nullptr);
    } catch (const RedisError&) {
      // Half a command may have gone out: the connection is done for. Its reader sees it closed
      // and fails the calls sent on it before.
      shutdown(one_way_connection_->fd(), SHUT_RDWR);
      one_way_connection_.reset();
      throw;
    }
    call.deadline = now + options_.command_timeout;
    call.connection = one_way_connection_;
    one_way_pending_.push_back(std::move(call));
    ++one_way_sent_;
  }
}

bool RedisClient::FlushOneWay(absl::Time deadline) {
  // A fork()ed child's one-way calls ran synchronously; the counts it inherited are the parent's.
  if (getpid() != pid_) return true;
  absl::MutexLock lock(&one_way_mu_);
  struct Target {
    const uint64_t* done;
    uint64_t wanted;
  };
  Target target{&one_way_done_, one_way_sent_};
  return one_way_mu_.AwaitWithDeadline(
      absl::Condition(
          +[](Target* t) { return *t->done >= t->wanted; }, &target),
      deadline);
}

std::vector<RedisClient::OneWayCall> RedisClient::FailOneWayLocked(
    const RedisConnection* connection) {
  std::vector<OneWayCall> failed;
  while (!one_way_pending_.empty() && one_way_pending_.front().connection.get() == connection) {
    failed.push_back(std::move(one_way_pending_.front()));
    one_way_pending_.pop_front();
  }
  if (one_way_connection_.get() == connection) one_way_connection_.reset();
  return failed;
}

void RedisClient::FinishOneWay(std::vector<OneWayCall>& calls, const RedisError& error) {
  for (OneWayCall& call : calls) {
    try {
      call.done(nullptr, &error);
    } catch (...) {
      // A callback's failure is its own; the others still run.
    }
  }
  absl::MutexLock lock(&one_way_mu_);
  one_way_done_ += calls.size();
}

void RedisClient::RunOneWayReader() {
  for (;;) {
    std::shared_ptr<RedisConnection> connection;
    absl::Time deadline;
    absl::string_view what;
    {
      absl::MutexLock lock(&one_way_mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(one_way_mu_) {
        return one_way_stop_ || !one_way_pending_.empty();
      };
      one_way_mu_.Await(absl::Condition(&ready));
      if (one_way_pending_.empty()) return;  // Stopping, nothing left.
      connection = one_way_pending_.front().connection;
      deadline = one_way_pending_.front().deadline;
      what = one_way_pending_.front().script->eval_label_;
    }
    // Only this thread reads the one-way connections (writers only send on them).
    RedisReply reply;
    std::vector<OneWayCall> failed;
    try {
      if (!connection->NextReply(&reply, what)) {
        if (!WaitFor(connection->fd(), POLLIN, deadline, /*waker=*/nullptr)) {
          connection->TimedOut(what);
        }
        connection->ReadAvailable(what);
        continue;
      }
    } catch (const RedisError& error) {
      {
        absl::MutexLock lock(&one_way_mu_);
        failed = FailOneWayLocked(connection.get());
      }
      FinishOneWay(failed, error);
      continue;
    }
    OneWayCall call;
    {
      absl::MutexLock lock(&one_way_mu_);
      call = std::move(one_way_pending_.front());
      one_way_pending_.pop_front();
    }
    std::optional<RedisError> retry_error;
    if (reply.is_error() && absl::StartsWith(reply.str(), "NOSCRIPT")) {
      // Redis lost its scripts (a restart): load and run it again, here. EVALSHA ran nothing.
      try {
        call.command[1] = LoadScript(*call.script, absl::InfiniteFuture());
        reply = Run(call.command, call.script->eval_label_, absl::InfiniteFuture());
      } catch (const RedisError& error) {
        retry_error.emplace(error);
      }
    }
    try {
      if (retry_error.has_value()) {
        call.done(nullptr, &*retry_error);
      } else {
        call.done(&reply, nullptr);
      }
    } catch (...) {
      // A callback's failure is its own.
    }
    absl::MutexLock lock(&one_way_mu_);
    ++one_way_done_;
  }
}

// ---- RedisSubscriber ---------------------------------------------------------------------------

RedisSubscriber::RedisSubscriber(RedisOptions options)
    : options_((options.Validate(), std::move(options))),
      address_(options_.Address()),
      wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      pid_(getpid()) {
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (...) {
    close(wake_fd_);
    throw;
  }
}

RedisSubscriber::~RedisSubscriber() {
  bool owned;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    owned = OwnedLocked();
    if (!owned && serving_fd_ >= 0) {
      close(serving_fd_);  // This process's copy of the parent's connection.
      serving_fd_ = -1;
    }
  }
  if (owned) {
    Wake();
    thread_.join();
  } else {
    // A fork()ed child that never subscribed: thread_ is the parent's thread, which does not
    // exist here; it is neither joined nor detached, only forgotten (a small leak).
    new std::thread(std::move(thread_));
  }
  close(wake_fd_);
}

bool RedisSubscriber::OwnedLocked() const { return pid_ == getpid(); }

void RedisSubscriber::AdoptLocked() {
  if (OwnedLocked()) return;
  const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  // This process's copies of the parent's fds: closing them leaves the parent's alone. A wake-up
  // written to the inherited eventfd would wake the parent's thread instead.
  if (serving_fd_ >= 0) close(serving_fd_);
  serving_fd_ = -1;
  close(wake_fd_);
  wake_fd_ = wake_fd;
  // A run of callbacks that the parent's thread was in at the fork never ends here.
  if (dispatch_seq_ % 2 == 1) ++dispatch_seq_;
  for (auto& [name, channel] : channels_) {
    channel.requested = false;
    channel.confirmed = false;
  }
  new std::thread(std::move(thread_));  // The parent's: forgotten (see the destructor).
  pid_ = getpid();
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (...) {
    pid_ = 0;  // No thread here yet: the next Subscribe() tries again.
    throw;
  }
}

std::string RedisSubscriber::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

int64_t RedisSubscriber::connects() const {
  absl::MutexLock lock(&mu_);
  return connects_;
}

void RedisSubscriber::Wake() {
  const uint64_t one = 1;
  // Cannot fail short of a counter overflow (2^64 - 2 wake-ups before the thread reads it).
  while (write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

RedisSubscriber::Token RedisSubscriber::Subscribe(std::string channel,
                                                  std::function<void()> on_message) {
  absl::MutexLock lock(&mu_);
  AdoptLocked();
  const Token token = next_token_++;
  Channel& state = channels_[channel];
  state.callbacks.emplace(token,
                          std::make_shared<const std::function<void()>>(std::move(on_message)));
  // Already active on the server: the thread calls it once as if confirmed now.
  if (state.confirmed) pending_first_calls_.push_back(token);
  token_channels_.emplace(token, std::move(channel));
  Wake();
  return token;
}

void RedisSubscriber::Unsubscribe(Token token) {
  absl::MutexLock lock(&mu_);
  const auto found = token_channels_.find(token);
  if (found == token_channels_.end()) return;
  const auto channel = channels_.find(found->second);
  token_channels_.erase(found);
  if (channel != channels_.end()) {
    channel->second.callbacks.erase(token);
    // A fork()ed child with no thread of its own yet: nothing to wake, no run to wait for.
    if (!OwnedLocked()) return;
    if (channel->second.callbacks.empty()) Wake();  // The thread sends UNSUBSCRIBE.
  }
  if (!OwnedLocked()) return;
  if (std::this_thread::get_id() == thread_.get_id()) return;
  // Callbacks in flight may include this one: wait until that run is over.
  struct RunOver {
    const uint64_t* seq;
    uint64_t seen;
  };
  RunOver arg{&dispatch_seq_, dispatch_seq_};
  if (arg.seen % 2 == 1) {
    mu_.Await(absl::Condition(
        +[](RunOver* a) { return *a->seq != a->seen; }, &arg));
  }
}

void RedisSubscriber::Pause(absl::Duration duration) {
  const absl::Time until = absl::Now() + duration;
  while (true) {
    const absl::Duration left = until - absl::Now();
    if (left <= absl::ZeroDuration()) return;
    pollfd pfd = {wake_fd_, POLLIN, 0};
    const int n = poll(&pfd, 1, static_cast<int>((absl::ToInt64Microseconds(left) + 999) / 1000));
    if (n > 0) {
      DrainEventfd(wake_fd_);
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
  }
}

void RedisSubscriber::Run() {
  const Waker waker{wake_fd_, [this] {
                      absl::MutexLock lock(&mu_);
                      return stopping_;
                    }};
  // Grows after each refused setup (RedisConfigError), back to 1 once a connection is set up.
  int backoff_factor = 1;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    try {
      std::unique_ptr<RedisConnection> connection =
          RedisConnection::Open(options_, address_, /*select_db=*/false, &waker);
      // Destroyed before `connection`: a fork() never sees the fd recorded after it is closed.
      struct Forget {
        RedisSubscriber* self;
        ~Forget() {
          absl::MutexLock lock(&self->mu_);
          self->serving_fd_ = -1;
        }
      };
      {
        absl::MutexLock lock(&mu_);
        ++connects_;
        serving_fd_ = connection->fd();
        last_error_.clear();
        // A new connection starts with no subscriptions.
        for (auto& [name, channel] : channels_) {
          channel.requested = false;
          channel.confirmed = false;
        }
      }
      const Forget forget{this};
      backoff_factor = 1;
      Serve(*connection, waker);
    } catch (const Stopped&) {
      return;
    } catch (const RedisConfigError& e) {
      // A wrong password or an unknown ACL user: retrying soon will not help, and nobody calling
      // Subscribe() sees this error, so say it once per new message.
      absl::MutexLock lock(&mu_);
      if (last_error_ != e.what()) {
        std::fprintf(stderr, "concurry: RedisSubscriber cannot subscribe: %s\n", e.what());
        last_error_ = e.what();
      }
      if (backoff_factor < 64) backoff_factor *= 2;
    } catch (const RedisError& e) {
      // Redis is down or restarting; the next connection resubscribes (see the class comment).
      absl::MutexLock lock(&mu_);
      last_error_ = e.what();
    }
    // Never reconnect in a tight loop, even when the server accepts and then drops connections.
    Pause(options_.reconnect_backoff * backoff_factor);
  }
}

void RedisSubscriber::Serve(RedisConnection& connection, const Waker& waker) {
  constexpr absl::string_view kWhat = "SUBSCRIBE";
  while (true) {
    waker.woken = false;
    SyncChannels(connection, waker);
    RunFirstCalls();
    if (waker.woken) continue;  // A wake-up came while SyncChannels() sent: sync again first.
    pollfd fds[2] = {{connection.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      throw RedisError(absl::StrCat("poll() failed: ", ErrnoText(errno)));
    }
    if (fds[1].revents != 0) {
      DrainEventfd(wake_fd_);
      if (waker.stopping()) throw Stopped{};
    }
    if (fds[0].revents == 0) continue;
    connection.ReadAvailable(kWhat);
    RedisReply reply;
    while (connection.NextReply(&reply, kWhat)) {
      if (reply.is_error()) connection.Fail(kWhat, reply.str());
      // Pushes are [kind, channel, payload-or-count]; only "subscribe" and "message" wake anyone.
      if (!reply.is_array() || reply.elements().size() != 3) continue;
      const std::vector<RedisReply>& parts = reply.elements();
      if (!parts[0].is_string() || !parts[1].is_string()) continue;
      const std::string& kind = parts[0].str();
      if (kind == "subscribe") {
        {
          absl::MutexLock lock(&mu_);
          const auto channel = channels_.find(parts[1].str());
          if (channel != channels_.end() && channel->second.requested) {
            channel->second.confirmed = true;
          }
        }
        Dispatch(parts[1].str());
      } else if (kind == "message") {
        Dispatch(parts[1].str());
      }
    }
  }
}

void RedisSubscriber::SyncChannels(RedisConnection& connection, const Waker& waker) {
  std::vector<std::string> subscribe = {"SUBSCRIBE"};
  std::vector<std::string> unsubscribe = {"UNSUBSCRIBE"};
  {
    absl::MutexLock lock(&mu_);
    for (auto it = channels_.begin(); it != channels_.end();) {
      Channel& channel = it->second;
      if (channel.callbacks.empty()) {
        if (channel.requested) unsubscribe.push_back(it->first);
        it = channels_.erase(it);
        continue;
      }
      if (!channel.requested) {
        subscribe.push_back(it->first);
        channel.requested = true;
      }
      ++it;
    }
  }
  // Replies come as pushes, read by Serve(); a send cannot block long (the commands are small).
  const absl::Time deadline = absl::Now() + options_.command_timeout;
  if (subscribe.size() > 1) connection.Send(subscribe, deadline, "SUBSCRIBE", &waker);
  if (unsubscribe.size() > 1) connection.Send(unsubscribe, deadline, "UNSUBSCRIBE", &waker);
}

void RedisSubscriber::RunFirstCalls() {
  Callbacks callbacks;
  {
    absl::MutexLock lock(&mu_);
    if (pending_first_calls_.empty()) return;
    for (const Token token : pending_first_calls_) {
      const auto found = token_channels_.find(token);
      if (found == token_channels_.end()) continue;
      const auto channel = channels_.find(found->second);
      if (channel == channels_.end()) continue;
      const auto callback = channel->second.callbacks.find(token);
      if (callback != channel->second.callbacks.end()) callbacks.push_back(callback->second);
    }
    pending_first_calls_.clear();
    ++dispatch_seq_;
  }
  Call(callbacks);
}

void RedisSubscriber::Dispatch(const std::string& channel_name) {
  Callbacks callbacks;
  {
    absl::MutexLock lock(&mu_);
    const auto channel = channels_.find(channel_name);
    if (channel == channels_.end()) return;
    callbacks.reserve(channel->second.callbacks.size());
    for (const auto& [token, callback] : channel->second.callbacks) callbacks.push_back(callback);
    ++dispatch_seq_;
  }
  Call(callbacks);
}

void RedisSubscriber::Call(const Callbacks& callbacks) {
  for (const auto& callback : callbacks) {
    try {
      (*callback)();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "concurry: a RedisSubscriber callback threw (ignored): %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "concurry: a RedisSubscriber callback threw (ignored)\n");
    }
  }
  absl::MutexLock lock(&mu_);
  ++dispatch_seq_;
}

}  // namespace redis_internal
}  // namespace concurry

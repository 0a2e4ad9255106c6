// RedisConnection, one hiredis connection with deadline-bounded socket I/O, and the helpers it
// shares with RedisSubscriber (Waker, WaitFor, ...). Internal to //limits/redis:client.
#ifndef CONCURRY_LIMITS_REDIS_INTERNAL_REDIS_CONNECTION_H_
#define CONCURRY_LIMITS_REDIS_INTERNAL_REDIS_CONNECTION_H_

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hiredis/hiredis.h"
#include "limits/redis/redis_client.h"
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

// Thrown out of a subscriber's wait when the subscriber is being destroyed; never escapes it.
struct Stopped {};

// strerror_r() of `error`, as a string.
std::string ErrnoText(int error);

// Reads the eventfd `fd` to zero (retrying on EINTR).
void DrainEventfd(int fd);

// Waits until `fd` is ready for `events` (POLLIN/POLLOUT; also true on an error or hang-up, which
// the next recv/send reports) and returns true, or returns false once `deadline` has passed. With
// a waker, a wake-up that means "stop" throws Stopped; other wake-ups are absorbed.
bool WaitFor(int fd, short events, absl::Time deadline, const Waker* waker);

// Whether an error reply means "not now" (the server is loading, busy with a script, or its
// cluster or replication is not ready) rather than a refusal that lasts.
bool IsTransientRefusal(absl::string_view error);

// The RedisReply of a hiredis reply (deep copy).
RedisReply Convert(const redisReply* reply);

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

}  // namespace redis_internal
}  // namespace concurry

#endif  // CONCURRY_LIMITS_REDIS_INTERNAL_REDIS_CONNECTION_H_

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
#include "limits/redis/internal/redis_connection.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace redis_internal {

namespace {

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

}  // namespace redis_internal
}  // namespace concurry

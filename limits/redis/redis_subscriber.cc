// RedisSubscriber: the Pub/Sub connection's thread, its channels and their callbacks (declared in
// redis_client.h).
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
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace redis_internal {

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
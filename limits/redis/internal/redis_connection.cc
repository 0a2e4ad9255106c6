// The helpers RedisConnection and RedisSubscriber share: waiting on a socket against a deadline
// and a waker, errno text, eventfd draining, and hiredis replies turned into RedisReply.
#include "limits/redis/internal/redis_connection.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "hiredis/hiredis.h"
#include "limits/redis/redis_client.h"

namespace concurry {
namespace redis_internal {

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
// the next recv/send reports) and returns true, or returns false once `deadline` has passed. Past
// the deadline it still looks once without waiting: a thread that wakes up late must not throw
// away a reply that is already there (a take Redis ran would count as cut). With a waker, a
// wake-up that means "stop" throws Stopped; other wake-ups are absorbed.
bool WaitFor(int fd, short events, absl::Time deadline, const Waker* waker) {
  bool looked_past_deadline = false;
  while (true) {
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        if (looked_past_deadline) return false;
        looked_past_deadline = true;
        timeout_ms = 0;
      } else {
        // Rounded up, so that a wait never ends just short of the deadline and spins.
        const int64_t ms = (absl::ToInt64Microseconds(left) + 999) / 1000;
        timeout_ms = ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
      }
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

}  // namespace redis_internal
}  // namespace concurry

// StoreCore (the options, client, subscriber and lease renewal a RedisLimitStore's sets share)
// and WakeSignal (a set's wake-up counter): the store-wide part of the Redis engine.
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
#include "limits/redis/internal/redis_set_backend.h"
#include "limits/redis/internal/scripts.h"
#include "limits/redis/redis_client.h"
#include "limits/redis/redis_options.h"

namespace concurry {
namespace limits_internal {
namespace redis {

// ---- WakeSignal ----

void WakeSignal::Raise() {
  absl::MutexLock lock(&mu_);
  ++generation_;
}

uint64_t WakeSignal::generation() {
  absl::MutexLock lock(&mu_);
  return generation_;
}

void WakeSignal::Wait(uint64_t seen, absl::Time deadline, const std::atomic<bool>* interrupt) {
  absl::MutexLock lock(&mu_);
  const auto changed = [this, seen, interrupt]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return generation_ != seen ||
           (interrupt != nullptr && interrupt->load(std::memory_order_acquire));
  };
  Clock::Real().AwaitWithDeadline(&mu_, absl::Condition(&changed), deadline);
}

void WakeSignal::Interrupt(std::atomic<bool>* flag) {
  // Set under the lock, so that a waiter checks it either before (and sees it) or after the
  // unlock below, which makes absl::Mutex evaluate its condition again.
  absl::MutexLock lock(&mu_);
  flag->store(true, std::memory_order_release);
}

// ---- StoreCore ----

namespace {

RedisOptions OneConnection(RedisOptions options) {
  options.pool_size = 1;
  return options;
}

}  // namespace

StoreCore::StoreCore(RedisOptions options)
    : options_(std::move(options)),
      address_(options_.Address()),
      client_(options_),
      renewal_client_(OneConnection(options_)) {}

StoreCore::~StoreCore() {
  std::thread renewal;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (renewal_pid_ == getpid()) renewal = std::move(renewal_);
  }
  if (renewal.joinable()) renewal.join();
  absl::MutexLock lock(&mu_);
  if (renewal_.joinable()) renewal_.detach();  // Inherited through fork(): not ours to join.
  subscriber_.reset();
}

RedisSubscriber::Token StoreCore::Subscribe(const std::string& channel,
                                            std::function<void()> on_message) {
  absl::MutexLock lock(&mu_);
  if (subscriber_ == nullptr) subscriber_ = std::make_unique<RedisSubscriber>(options_);
  return subscriber_->Subscribe(channel, std::move(on_message));
}

void StoreCore::Unsubscribe(RedisSubscriber::Token token) {
  absl::MutexLock lock(&mu_);
  if (subscriber_ != nullptr) subscriber_->Unsubscribe(token);
}

void StoreCore::StartRenewalLocked() {
  const pid_t pid = getpid();
  if (renewal_pid_ == pid) return;
  if (renewal_.joinable()) renewal_.detach();  // The parent's, inherited through fork().
  renewal_pid_ = pid;
  renewal_ = std::thread([this] { RunRenewal(); });
}

void StoreCore::AddLease(const std::string& base, int64_t lease) {
  absl::MutexLock lock(&mu_);
  const pid_t pid = getpid();
  if (leases_pid_ != pid) {
    leases_.clear();  // A fork()ed child: the parent renews its own leases.
    leases_pid_ = pid;
  }
  leases_[base].emplace(lease, true);
  StartRenewalLocked();
}

bool StoreCore::RemoveLease(const std::string& base, int64_t lease) {
  absl::MutexLock lock(&mu_);
  if (leases_pid_ != getpid()) return false;
  auto it = leases_.find(base);
  if (it == leases_.end() || it->second.erase(lease) == 0) return false;
  if (it->second.empty()) leases_.erase(it);
  return true;
}

void StoreCore::RunRenewal() {
  const absl::Duration period = options_.lease_ttl / 3;
  const std::string ttl_us = absl::StrCat(absl::ToInt64Microseconds(options_.lease_ttl));
  absl::Time next = absl::Now() + period;
  for (;;) {
    std::vector<std::pair<std::string, std::vector<std::string>>> batches;
    {
      absl::MutexLock lock(&mu_);
      const auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
      Clock::Real().AwaitWithDeadline(&mu_, absl::Condition(&stopping), next);
      if (stop_) return;
      for (const auto& [base, ids] : leases_) {
        std::vector<std::string> args = {ttl_us};
        args.reserve(ids.size() + 1);
        for (const auto& [id, renewed] : ids) {
          if (renewed) args.push_back(absl::StrCat("L", id));
        }
        if (args.size() > 1) batches.emplace_back(base, std::move(args));
      }
    }
    next = absl::Now() + period;
    for (auto& [base, args] : batches) {
      try {
        // Leases that expired meanwhile (Redis was unreachable for longer than the TTL) are
        // gone: their units went back. They are not renewed again; their release finds nothing
        // to give back and warns.
        const RedisReply lost = Run(renewal_client_, Renew(), base, args);
        if (lost.is_array() && !lost.elements().empty()) {
          absl::MutexLock lock(&mu_);
          auto set = leases_.find(base);
          for (const RedisReply& id : lost.elements()) {
            int64_t lease = 0;
            if (set == leases_.end() || !id.is_string() || id.str().size() < 2 ||
                !absl::SimpleAtoi(absl::string_view(id.str()).substr(1), &lease)) {
              continue;
            }
            if (auto it = set->second.find(lease); it != set->second.end()) it->second = false;
          }
        }
      } catch (const std::exception&) {
        // Unreachable: retried at the next period; the acquisitions' own calls report it.
      }
    }
  }
}

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry

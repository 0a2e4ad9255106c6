#include "limits/redis/redis_limit_store.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "futures/errors.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/limit_set_backend.h"
#include "limits/redis/internal/redis_set_backend.h"
#include "limits/redis/redis_options.h"

namespace concurry {

using limits_internal::redis::RedisSetBackend;
using limits_internal::redis::StoreCore;

std::shared_ptr<RedisLimitStore> RedisLimitStore::Connect(RedisOptions options) {
  options.Validate();
  return std::shared_ptr<RedisLimitStore>(
      new RedisLimitStore(std::make_shared<StoreCore>(std::move(options))));
}

RedisLimitStore::RedisLimitStore(std::shared_ptr<StoreCore> core) : core_(std::move(core)) {}

RedisLimitStore::~RedisLimitStore() = default;

const RedisOptions& RedisLimitStore::options() const { return core_->options(); }

std::shared_ptr<LimitSetBackend> RedisLimitStore::OpenSet(std::vector<Limit> limits,
                                                          LimitSetOptions options) {
  const std::string& name = options.name;
  bool bad = name.empty();
  for (char c : name)
    bad = bad || absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '{' || c == '}';
  if (bad) {
    throw InvalidOptionError(absl::StrCat(
        "LimitSetOptions::name must be non-empty without whitespace or braces for a set in Redis "
        "(sets with the same name share their state), got '",
        name, "'"));
  }
  return RedisSetBackend::Open(core_, std::move(limits), std::move(options));
}

}  // namespace concurry

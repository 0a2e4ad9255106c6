#include "limits/internal/process_transfer.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "futures/errors.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/internal/set_access.h"
#include "limits/limit.h"
#include "limits/limit_pool.h"
#include "limits/limit_set.h"

namespace concurry {
namespace limits_internal {
namespace {

// The blueprint starts with these 8 bytes ("CQLIMIT" and a format version), so that bytes of
// some other kind are rejected at once. Version 2: the shared header's layout changed (the
// process-shared mutex moved) at the same size, so a process of an older build must not attach.
// Version 3: the header gained a field (Header::references), which moved the ones after it.
// Version 4: the header's fields were reordered (the ones an acquisition writes first).
constexpr char kMagic[8] = {'C', 'Q', 'L', 'I', 'M', 'I', 'T', 4};

// Appends fixed-size values in this machine's byte order (the reader is the same program on the
// same machine) and length-prefixed strings.
class Writer {
 public:
  void Raw(const void* data, size_t size) { out_.append(static_cast<const char*>(data), size); }
  void U8(uint8_t value) { Raw(&value, sizeof(value)); }
  void U32(uint32_t value) { Raw(&value, sizeof(value)); }
  void I32(int32_t value) { Raw(&value, sizeof(value)); }
  void I64(int64_t value) { Raw(&value, sizeof(value)); }
  void U64(uint64_t value) { Raw(&value, sizeof(value)); }
  void F64(double value) { Raw(&value, sizeof(value)); }
  void String(absl::string_view value) {
    U32(static_cast<uint32_t>(value.size()));
    Raw(value.data(), value.size());
  }
  // Exactly, infinite ones included: a tag (0 finite, 1 +infinity, 2 -infinity), whole seconds
  // and the rest in nanoseconds (absl::Duration keeps quarters of a nanosecond, which a double
  // below 1e9 holds exactly).
  void Duration(absl::Duration value) {
    if (value == absl::InfiniteDuration() || value == -absl::InfiniteDuration()) {
      U8(value > absl::ZeroDuration() ? 1 : 2);
      return;
    }
    U8(0);
    absl::Duration rest;
    I64(absl::IDivDuration(value, absl::Seconds(1), &rest));
    F64(absl::ToDoubleNanoseconds(rest));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

[[noreturn]] void ThrowDataLoss(absl::string_view what) {
  throw StatusError(absl::DataLossError(
      absl::StrCat("ImportLimitPool: the limits blueprint cannot be decoded: ", what)));
}

// Reads what Writer wrote; every read checks the bytes left and throws StatusError (kDataLoss)
// when they run out.
class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}

  void Raw(void* data, size_t size, absl::string_view what) {
    if (in_.size() < size) {
      ThrowDataLoss(
          absl::StrCat("truncated in ", what, " (", in_.size(), " bytes left, ", size, " needed)"));
    }
    std::memcpy(data, in_.data(), size);
    in_.remove_prefix(size);
  }
  template <typename T>
  T Get(absl::string_view what) {
    T value;
    Raw(&value, sizeof(value), what);
    return value;
  }
  uint8_t U8(absl::string_view what) { return Get<uint8_t>(what); }
  uint32_t U32(absl::string_view what) { return Get<uint32_t>(what); }
  int32_t I32(absl::string_view what) { return Get<int32_t>(what); }
  int64_t I64(absl::string_view what) { return Get<int64_t>(what); }
  uint64_t U64(absl::string_view what) { return Get<uint64_t>(what); }
  double F64(absl::string_view what) { return Get<double>(what); }
  std::string String(absl::string_view what) {
    const uint32_t size = U32(what);
    if (in_.size() < size) {
      ThrowDataLoss(absl::StrCat("truncated in ", what, " (a string of ", size, " bytes, ",
                                 in_.size(), " left)"));
    }
    std::string value(in_.substr(0, size));
    in_.remove_prefix(size);
    return value;
  }
  absl::Duration Duration(absl::string_view what) {
    const uint8_t tag = U8(what);
    if (tag == 1) return absl::InfiniteDuration();
    if (tag == 2) return -absl::InfiniteDuration();
    if (tag != 0) ThrowDataLoss(absl::StrCat("bad duration in ", what));
    const int64_t seconds = I64(what);
    const double rest = F64(what);
    if (!(rest > -1e9 && rest < 1e9)) ThrowDataLoss(absl::StrCat("bad duration in ", what));
    return absl::Seconds(seconds) + absl::Nanoseconds(rest);
  }
  // A count of items that take at least `min_bytes` each: at most what the bytes left can hold,
  // so that garbage cannot make the reader reserve huge vectors.
  uint32_t Count(size_t min_bytes, absl::string_view what) {
    const uint32_t count = U32(what);
    if (static_cast<uint64_t>(count) * min_bytes > in_.size()) {
      ThrowDataLoss(absl::StrCat("a count of ", count, " ", what, " exceeds the bytes left (",
                                 in_.size(), ")"));
    }
    return count;
  }
  bool done() const { return in_.empty(); }
  size_t left() const { return in_.size(); }

 private:
  absl::string_view in_;
};

// One set as decoded, before it is attached.
struct SetBlueprint {
  bool has_fd = false;
  uint64_t shared_bytes = 0;
  std::vector<Limit> limits;
  LimitSetOptions options;
};

void WriteLimit(Writer& out, const Limit& limit) {
  out.U8(static_cast<uint8_t>(limit.kind()));
  out.String(limit.key());
  out.F64(limit.capacity());
  out.Duration(limit.window());
  out.U8(static_cast<uint8_t>(limit.algorithm()));
  out.U8(limit.explicit_burst() ? 1 : 0);
  out.F64(limit.burst());
}

// Rebuilds a limit through its public constructors, which validate it again; a value none could
// have is garbage.
Limit ReadLimit(Reader& in, size_t index) {
  const std::string what = absl::StrCat("limit ", index);
  const uint8_t kind = in.U8(what);
  std::string key = in.String(what);
  const double capacity = in.F64(what);
  const absl::Duration window = in.Duration(what);
  const auto algorithm = static_cast<RateLimitAlgorithm>(in.U8(what));
  const uint8_t explicit_burst = in.U8(what);
  const double burst = in.F64(what);
  if (explicit_burst > 1) ThrowDataLoss(absl::StrCat("bad burst flag in ", what));
  RateLimitOptions options;
  if (explicit_burst == 1) options.burst = burst;
  try {
    switch (static_cast<LimitKind>(kind)) {
      case LimitKind::kRate:
        return RateLimit(std::move(key), capacity, window, algorithm, options);
      case LimitKind::kCall:
        if (key != kCallLimitKey) ThrowDataLoss(absl::StrCat("a call limit keyed '", key, "'"));
        return CallLimit(capacity, window, algorithm, options);
      case LimitKind::kResource:
        if (!(capacity >= 1 && capacity <= kMaxWhole) || capacity != std::floor(capacity)) {
          ThrowDataLoss(absl::StrCat("resource capacity ", FormatNumber(capacity), " in ", what));
        }
        return ResourceLimit(std::move(key), static_cast<uint64_t>(capacity));
    }
  } catch (const InvalidOptionError& error) {
    ThrowDataLoss(absl::StrCat(what, " is not a valid limit: ", error.what()));
  }
  ThrowDataLoss(absl::StrCat("unknown limit kind ", static_cast<int>(kind), " in ", what));
}

void WriteSet(Writer& out, const LimitSet& set, bool has_fd) {
  const LimitSetOptions& options = SetAccess::Options(set);
  out.U8(has_fd ? 1 : 0);
  out.U64(SetAccess::SharedBytes(set));
  out.U8(static_cast<uint8_t>(options.sharing));
  out.U8(static_cast<uint8_t>(options.fairness));
  out.I32(options.max_holders);
  out.Duration(options.lease_check_interval);
  out.U32(static_cast<uint32_t>(options.config.size()));
  for (const auto& [key, value] : options.config) {
    out.String(key);
    out.String(value);
  }
  out.U32(static_cast<uint32_t>(set.limits().size()));
  for (const Limit& limit : set.limits()) WriteLimit(out, limit);
}

SetBlueprint ReadSet(Reader& in, size_t index) {
  const std::string what = absl::StrCat("set ", index);
  SetBlueprint set;
  const uint8_t has_fd = in.U8(what);
  if (has_fd > 1) ThrowDataLoss(absl::StrCat("bad fd flag in ", what));
  set.has_fd = has_fd == 1;
  set.shared_bytes = in.U64(what);
  const uint8_t sharing = in.U8(what);
  const uint8_t fairness = in.U8(what);
  if (sharing != static_cast<uint8_t>(LimitSharing::kThreads) &&
      sharing != static_cast<uint8_t>(LimitSharing::kProcesses)) {
    ThrowDataLoss(absl::StrCat("unknown sharing ", static_cast<int>(sharing), " in ", what));
  }
  if (fairness != static_cast<uint8_t>(LimitFairness::kFifo) &&
      fairness != static_cast<uint8_t>(LimitFairness::kBarging)) {
    ThrowDataLoss(absl::StrCat("unknown fairness ", static_cast<int>(fairness), " in ", what));
  }
  set.options.sharing = static_cast<LimitSharing>(sharing);
  set.options.fairness = static_cast<LimitFairness>(fairness);
  set.options.max_holders = in.I32(what);
  if (set.options.max_holders < 1) {
    ThrowDataLoss(absl::StrCat("max_holders ", set.options.max_holders, " in ", what));
  }
  set.options.lease_check_interval = in.Duration(what);
  if (set.options.lease_check_interval <= absl::ZeroDuration()) {
    ThrowDataLoss(absl::StrCat("a lease_check_interval that is not positive in ", what));
  }
  const uint32_t config_size = in.Count(8, absl::StrCat("config entries of ", what));
  for (uint32_t i = 0; i < config_size; ++i) {
    std::string key = in.String(what);
    std::string value = in.String(what);
    if (!set.options.config.emplace(std::move(key), std::move(value)).second) {
      ThrowDataLoss(absl::StrCat("a repeated config key in ", what));
    }
  }
  const uint32_t limit_count = in.Count(30, absl::StrCat("limits of ", what));
  for (uint32_t i = 0; i < limit_count; ++i) set.limits.push_back(ReadLimit(in, i));
  for (size_t i = 0; i < set.limits.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (set.limits[i].key() == set.limits[j].key()) {
        ThrowDataLoss(absl::StrCat("repeated limit key '", set.limits[i].key(), "' in ", what));
      }
    }
  }
  if (set.has_fd && (set.limits.empty() || set.options.sharing != LimitSharing::kProcesses)) {
    ThrowDataLoss(absl::StrCat(what, " has an fd but is not a process-shared set with limits"));
  }
  if (!set.has_fd && !set.limits.empty()) {
    ThrowDataLoss(absl::StrCat(what, " has limits but no fd"));
  }
  return set;
}

// "set 1 (limits [a, b], config {account: x})", for messages.
std::string DescribeSet(const LimitSet& set, size_t index) {
  std::vector<absl::string_view> keys;
  for (const Limit& limit : set.limits()) keys.push_back(limit.key());
  std::string description =
      absl::StrCat("set ", index, " (limits [", absl::StrJoin(keys, ", "), "]");
  if (!set.config().empty()) {
    absl::StrAppend(&description, ", config {",
                    absl::StrJoin(set.config(), ", ", absl::PairFormatter(": ")), "}");
  }
  absl::StrAppend(&description, ")");
  return description;
}

// Whether `options` are those of LimitSet::NoOp(), so that an imported no-op set can be it.
bool DefaultOptions(const LimitSetOptions& options) {
  const LimitSetOptions defaults;
  return options.config.empty() && options.sharing == defaults.sharing &&
         options.fairness == defaults.fairness && options.max_holders == defaults.max_holders &&
         options.lease_check_interval == defaults.lease_check_interval;
}

}  // namespace

ExportedLimits ExportLimitPool(const LimitPool& pool) {
  ExportedLimits exported;
  Writer out;
  out.Raw(kMagic, sizeof(kMagic));
  out.U8(static_cast<uint8_t>(pool.options().balancing));
  out.I64(pool.options().worker_index);
  out.U32(static_cast<uint32_t>(pool.size()));
  for (size_t i = 0; i < pool.size(); ++i) {
    const LimitSet& set = pool[i];
    if (set.no_op()) {
      WriteSet(out, set, /*has_fd=*/false);
      continue;
    }
    if (set.sharing() == LimitSharing::kHosts) {
      throw InvalidOptionError(absl::StrCat(
          "ExportLimitPool: ", DescribeSet(set, i),
          " keeps its state in a LimitStore (LimitSharing::kHosts), and handing such a set to "
          "another process is not supported yet; open the same set (the same store options and "
          "LimitSetOptions::name) in that process instead"));
    }
    if (set.sharing() != LimitSharing::kProcesses) {
      throw InvalidOptionError(absl::StrCat(
          "ExportLimitPool: ", DescribeSet(set, i),
          " is shared by threads only (LimitSharing::kThreads): its state is in this process's "
          "private memory and cannot be shared with another process; create it with "
          "LimitSharing::kProcesses"));
    }
    WriteSet(out, set, /*has_fd=*/true);
    exported.fds.push_back(SetAccess::SharedFd(set));
  }
  exported.blueprint = out.Take();
  return exported;
}

LimitPool ImportLimitPool(absl::string_view blueprint, absl::Span<const int> fds) {
  // Decoded completely before anything is attached.
  Reader in(blueprint);
  char magic[sizeof(kMagic)];
  in.Raw(magic, sizeof(magic), "the header");
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    ThrowDataLoss(
        "it does not start with the limits blueprint header (another format or "
        "version)");
  }
  LimitPoolOptions pool_options;
  const uint8_t balancing = in.U8("the pool options");
  if (balancing != static_cast<uint8_t>(LimitPoolBalancing::kRoundRobin) &&
      balancing != static_cast<uint8_t>(LimitPoolBalancing::kRandom)) {
    ThrowDataLoss(absl::StrCat("unknown pool balancing ", static_cast<int>(balancing)));
  }
  pool_options.balancing = static_cast<LimitPoolBalancing>(balancing);
  pool_options.worker_index = in.I64("the pool options");
  if (pool_options.worker_index < 0) {
    ThrowDataLoss(absl::StrCat("negative worker_index ", pool_options.worker_index));
  }
  const uint32_t set_count = in.Count(32, "sets");
  if (set_count == 0) ThrowDataLoss("a pool of no sets");
  std::vector<SetBlueprint> blueprints;
  blueprints.reserve(set_count);
  size_t fd_count = 0;
  for (uint32_t i = 0; i < set_count; ++i) {
    blueprints.push_back(ReadSet(in, i));
    if (blueprints.back().has_fd) ++fd_count;
  }
  if (!in.done()) ThrowDataLoss(absl::StrCat(in.left(), " bytes after the last set"));

  if (fds.size() != fd_count) {
    throw InvalidOptionError(absl::StrCat("ImportLimitPool: the blueprint has ", fd_count,
                                          " process-shared sets, each needing its fd, but ",
                                          fds.size(), " fds were given"));
  }
  std::vector<LimitSet> sets;
  sets.reserve(blueprints.size());
  size_t next_fd = 0;
  for (size_t i = 0; i < blueprints.size(); ++i) {
    SetBlueprint& set = blueprints[i];
    if (!set.has_fd) {
      sets.push_back(DefaultOptions(set.options) ? LimitSet::NoOp()
                                                 : LimitSet::Create({}, std::move(set.options)));
      continue;
    }
    const size_t expected = SetAccess::SharedBytesFor(set.limits, set.options.max_holders);
    if (set.shared_bytes != expected) {
      throw InvalidOptionError(
          absl::StrCat("ImportLimitPool: set ", i, " was exported with a shared state of ",
                       set.shared_bytes, " bytes, but this program lays it out in ", expected,
                       "; limits can only be handed to a process of the same program"));
    }
    try {
      sets.push_back(
          SetAccess::Attach(std::move(set.limits), std::move(set.options), fds[next_fd++]));
    } catch (const InvalidOptionError& error) {
      throw InvalidOptionError(absl::StrCat("ImportLimitPool: set ", i, ": ", error.what()));
    }
  }
  return LimitPool::Create(std::move(sets), pool_options);
}

}  // namespace limits_internal
}  // namespace concurry

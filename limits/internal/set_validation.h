// The inline parts of LimitSetBackend's validation (limits/limit_set_backend.h): key lookup,
// GCRA costs, the shortcut of request validation and the usual usage report. Included by the
// files that validate on the hot path (limit_set_backend.cc, the in-process engine's
// set_acquire.cc). Internal to //limits:limit_set.
//
//   Items items;
//   const bool nested = PrepareInto({{"tokens", 10}}, &items);  // Inside an engine.

#ifndef CONCURRY_LIMITS_INTERNAL_SET_VALIDATION_H_
#define CONCURRY_LIMITS_INTERNAL_SET_VALIDATION_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "limits/internal/rate_algorithms.h"
#include "limits/limit.h"
#include "limits/limit_set.h"
#include "limits/limit_set_backend.h"

namespace concurry {
namespace limits_internal {

// Whether the `size` bytes at `a` and `b` are equal, inline: limit keys are short, and a call to
// memcmp per key of every request and usage report showed in the profile.
inline bool SameBytes(const char* a, const char* b, size_t size) {
  if (size >= 8) {
    uint64_t x;
    uint64_t y;
    for (size_t i = 0; i + 8 < size; i += 8) {
      std::memcpy(&x, a + i, 8);
      std::memcpy(&y, b + i, 8);
      if (x != y) return false;
    }
    // The last word overlaps the previous one rather than reading past the end.
    std::memcpy(&x, a + size - 8, 8);
    std::memcpy(&y, b + size - 8, 8);
    return x == y;
  }
  if (size >= 4) {
    uint32_t x[2];
    uint32_t y[2];
    std::memcpy(&x[0], a, 4);
    std::memcpy(&x[1], a + size - 4, 4);
    std::memcpy(&y[0], b, 4);
    std::memcpy(&y[1], b + size - 4, 4);
    return x[0] == y[0] && x[1] == y[1];
  }
  for (size_t i = 0; i < size; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace limits_internal

inline size_t LimitSetBackend::IndexOf(absl::string_view key) const {
  const size_t count = info_.size();
  for (size_t i = 0; i < count; ++i) {
    const absl::string_view known = info_[i].key;
    if (known.size() == key.size() &&
        limits_internal::SameBytes(known.data(), key.data(), key.size())) {
      return i;
    }
  }
  return count;
}

inline int64_t LimitSetBackend::CostOf(size_t index, double amount) const {
  if (amount <= kCachedCosts && amount == std::floor(amount)) {
    return cached_costs_[index * (kCachedCosts + 1) + static_cast<size_t>(amount)];
  }
  return info_[index].rate->Cost(amount);
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool LimitSetBackend::PrepareCommonInto(
    absl::Span<const LimitAmount> request, Items* items) const {
  const size_t count = template_items_.size();
  // A copy-construction copies the inline buffer in one go (the items are trivially copyable);
  // assign() went item by item.
  *items = Items(template_items_);
  Item* const taken = items->data();
  uint64_t named = 0;
  for (const LimitAmount& entry : request) {
    const size_t index = IndexOf(entry.key);
    if (index == count) break;
    const uint64_t bit = uint64_t{1} << index;
    const LimitInfo& info = info_[index];
    const double amount = entry.amount;
    // Amount 0 (a nested request) and every error go the full way.
    if ((named & bit) != 0 || !(amount > 0 && amount <= info.burst) || !std::isfinite(amount) ||
        (info.whole && (amount != std::floor(amount) || amount > limits_internal::kMaxWhole))) {
      break;
    }
    named |= bit;
    Item& item = taken[index];
    item.requested = amount;
    item.implicit = false;
    item.needs_update =
        info.kind == LimitKind::kRate || (info.kind == LimitKind::kCall && amount > 1);
    if (info.gcra != nullptr) item.cost = CostOf(index, amount);
  }
  // Every entry matched (each sets a distinct bit) and every rate limit is named.
  if (static_cast<size_t>(__builtin_popcountll(named)) == request.size() &&
      (named & rate_mask_) == rate_mask_) {
    return true;
  }
  items->clear();
  return false;
}

ABSL_ATTRIBUTE_ALWAYS_INLINE inline bool LimitSetBackend::PrepareInto(
    absl::Span<const LimitAmount> request, Items* items) const {
  if (ABSL_PREDICT_TRUE(!template_items_.empty() && !request.empty()) &&
      PrepareCommonInto(request, items)) {
    return false;
  }
  return PrepareFullInto(request, items);
}

inline bool LimitSetBackend::RecordWithinRequest(Item& item, double used) const {
  const LimitInfo& info = info_[item.index];
  // `requested` passed the request's checks (finite, at most kMaxWhole for whole limits), so
  // 0 <= used <= requested bounds `used` the same way.
  if (!(used >= 0 && used <= item.requested) || (info.whole && used != std::floor(used)) ||
      (info.kind == LimitKind::kCall && item.requested == 1 && used != 1)) {
    return false;
  }
  item.updated = true;
  item.used = used;
  item.refund_cost =
      info.gcra != nullptr && used < item.requested ? CostOf(item.index, item.requested - used) : 0;
  return true;
}

}  // namespace concurry

#endif  // CONCURRY_LIMITS_INTERNAL_SET_VALIDATION_H_

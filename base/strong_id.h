#pragma once
// Distinct integer types for distinct meanings (STYLE.md): an Lsn never converts silently into
// a file position or an offset. Arithmetic is spelled out: `lsn.Next()`, `Lsn(lsn.value() + n)`.
#include <compare>
#include <cstdint>
#include <functional>

namespace lockstep::base {

template <typename Tag, typename Rep = std::uint64_t>
class StrongId {
 public:
  using rep_type = Rep;

  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep value) : value_(value) {}

  constexpr Rep value() const { return value_; }
  constexpr StrongId Next() const { return StrongId(value_ + 1); }
  constexpr StrongId Prev() const { return StrongId(value_ - 1); }

  friend constexpr auto operator<=>(StrongId, StrongId) = default;

 private:
  Rep value_{};
};

// Log sequence number: one per appended record (the engine: per transaction), dense from 1.
// Lsn(0) means "none".
using Lsn = StrongId<struct LsnTag>;
// A byte position inside a file.
using FilePos = StrongId<struct FilePosTag>;
// An event's offset inside a partition, dense from 0.
using Offset = StrongId<struct OffsetTag>;
// A partition number inside a topic.
using PartitionId = StrongId<struct PartitionIdTag, std::uint32_t>;

}  // namespace lockstep::base

template <typename Tag, typename Rep>
struct std::hash<lockstep::base::StrongId<Tag, Rep>> {
  std::size_t operator()(lockstep::base::StrongId<Tag, Rep> id) const noexcept {
    return std::hash<Rep>()(id.value());
  }
};

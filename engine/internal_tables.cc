#include "engine/internal_tables.h"

#include "base/endian.h"

namespace lockstep::engine {
namespace {

constexpr std::size_t kRememberedFixed = 12;  // commit_ms, event_count
constexpr std::size_t kRememberedEvent = 16;  // topic, partition, offset
constexpr std::size_t kGroupOffsetValueBytes = 24;
constexpr std::size_t kGroupOffsetKeyTail = 9;  // 0x00, topic, partition

std::byte* Room(std::vector<std::byte>* out, std::size_t n) {
  out->resize(n);
  return out->data();
}

}  // namespace

void EncodeRememberedResult(std::int64_t commit_ms, std::span<const RememberedEvent> events,
                            std::vector<std::byte>* out) {
  std::byte* p = Room(out, kRememberedFixed + events.size() * kRememberedEvent);
  base::StoreLe64(p, static_cast<std::uint64_t>(commit_ms));
  base::StoreLe32(p + 8, static_cast<std::uint32_t>(events.size()));
  p += kRememberedFixed;
  for (const RememberedEvent& e : events) {
    base::StoreLe32(p, e.topic.value());
    base::StoreLe32(p + 4, e.partition.value());
    base::StoreLe64(p + 8, e.offset.value());
    p += kRememberedEvent;
  }
}

base::Result<RememberedResult> DecodeRememberedResult(base::Bytes value) {
  if (value.size() < kRememberedFixed) {
    return base::DataLoss("__idempotency value shorter than its fixed fields");
  }
  RememberedResult out;
  out.commit_ms = static_cast<std::int64_t>(base::LoadLe64(value.data()));
  const std::uint32_t count = base::LoadLe32(value.data() + 8);
  if ((value.size() - kRememberedFixed) != std::uint64_t{count} * kRememberedEvent) {
    return base::DataLoss("__idempotency value length does not match its event count");
  }
  const std::byte* p = value.data() + kRememberedFixed;
  for (std::uint32_t i = 0; i < count; ++i, p += kRememberedEvent) {
    out.events.push_back({TopicId(base::LoadLe32(p)), PartitionId(base::LoadLe32(p + 4)),
                          Offset(base::LoadLe64(p + 8))});
  }
  return out;
}

void EncodeGeneration(std::uint64_t generation, std::vector<std::byte>* out) {
  base::StoreLe64(Room(out, 8), generation);
}

base::Result<std::uint64_t> DecodeGeneration(base::Bytes value) {
  if (value.size() != 8) return base::DataLoss("__groups value is not 8 bytes");
  return base::LoadLe64(value.data());
}

std::string GroupOffsetPrefix(std::string_view group) {
  std::string key(group);
  key.push_back('\0');  // group names never hold a NUL (the engine validates them)
  return key;
}

std::string GroupOffsetKey(std::string_view group, TopicId topic, PartitionId partition) {
  std::string key = GroupOffsetPrefix(group);
  std::byte tail[8];
  base::StoreLe32(tail, topic.value());
  base::StoreLe32(tail + 4, partition.value());
  key.append(reinterpret_cast<const char*>(tail), sizeof tail);
  return key;
}

base::Result<GroupOffsetKeyParts> DecodeGroupOffsetKey(std::string_view key) {
  if (key.size() < kGroupOffsetKeyTail + 1 || key[key.size() - kGroupOffsetKeyTail] != '\0') {
    return base::DataLoss("malformed __group_offsets key");
  }
  const auto* tail = reinterpret_cast<const std::byte*>(key.data() + key.size() - 8);
  return GroupOffsetKeyParts{key.substr(0, key.size() - kGroupOffsetKeyTail),
                             TopicId(base::LoadLe32(tail)), PartitionId(base::LoadLe32(tail + 4))};
}

void EncodeGroupOffsetValue(const GroupOffsetValue& value, std::vector<std::byte>* out) {
  std::byte* p = Room(out, kGroupOffsetValueBytes);
  base::StoreLe64(p, value.offset.value());
  base::StoreLe64(p + 8, value.generation);
  base::StoreLe64(p + 16, static_cast<std::uint64_t>(value.commit_ms));
}

base::Result<GroupOffsetValue> DecodeGroupOffsetValue(base::Bytes value) {
  if (value.size() != kGroupOffsetValueBytes) {
    return base::DataLoss("__group_offsets value is not 24 bytes");
  }
  return GroupOffsetValue{Offset(base::LoadLe64(value.data())), base::LoadLe64(value.data() + 8),
                          static_cast<std::int64_t>(base::LoadLe64(value.data() + 16))};
}

}  // namespace lockstep::engine

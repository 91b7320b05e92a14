#pragma once
// The engine's internal tables (docs/engine.md): ordinary MVCC tables with fixed ids above every
// user table id, written by the same transactions that use them and replayed like everything
// else, so they commit atomically with the business writes. This file defines their keys and
// values byte by byte (little-endian integers, STYLE.md).
//
//   __idempotency    key: the tagged idempotency key (Transaction::idempotency_key())
//                    value: commit_ms:i64, event_count:u32, {topic:u32, partition:u32, offset:u64}
//                    — the original result; the row's version is the original LSN.
//   __groups         key: group name      value: generation:u64
//   __group_offsets  key: group name, 0x00, topic:u32, partition:u32
//                    value: offset:u64, generation:u64, commit_ms:i64
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/event_record.h"
#include "base/status.h"
#include "engine/ids.h"

namespace lockstep::engine {

// User table ids are below this; the catalog refuses to hand out more.
inline constexpr std::uint32_t kFirstInternalTableId = 0xFFFF0000;
inline constexpr TableId kIdempotencyTable{0xFFFF0001};
inline constexpr TableId kGroupsTable{0xFFFF0002};
inline constexpr TableId kGroupOffsetsTable{0xFFFF0003};

// ---- __idempotency ----

struct RememberedEvent {
  TopicId topic;
  PartitionId partition;
  Offset offset;
};
struct RememberedResult {
  std::int64_t commit_ms = 0;
  std::vector<RememberedEvent> events;
};
// Appends the encoding to `out` (cleared first; its capacity is reused).
void EncodeRememberedResult(std::int64_t commit_ms, std::span<const RememberedEvent> events,
                            std::vector<std::byte>* out);
// kDataLoss for bytes that are not such a value.
base::Result<RememberedResult> DecodeRememberedResult(base::Bytes value);

// ---- __groups ----

void EncodeGeneration(std::uint64_t generation, std::vector<std::byte>* out);
base::Result<std::uint64_t> DecodeGeneration(base::Bytes value);

// ---- __group_offsets ----

// The key; the group's keys all start with GroupOffsetPrefix(group).
std::string GroupOffsetKey(std::string_view group, TopicId topic, PartitionId partition);
std::string GroupOffsetPrefix(std::string_view group);
struct GroupOffsetKeyParts {
  std::string_view group;
  TopicId topic;
  PartitionId partition;
};
base::Result<GroupOffsetKeyParts> DecodeGroupOffsetKey(std::string_view key);

struct GroupOffsetValue {
  Offset offset;
  std::uint64_t generation = 0;
  std::int64_t commit_ms = 0;
};
void EncodeGroupOffsetValue(const GroupOffsetValue& value, std::vector<std::byte>* out);
base::Result<GroupOffsetValue> DecodeGroupOffsetValue(base::Bytes value);

}  // namespace lockstep::engine

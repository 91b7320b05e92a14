#pragma once
// The event record format: the bytes of one event as the log stores them and as a fetch sends
// them, unchanged, to consumers. An event is encoded once, at commit (when its offset and the
// transaction's LSN are known), and never re-encoded. Grammar and version: docs/events.md.
//
// Layout (little-endian; format version 1):
//
//   offset size  field
//        0    4  length           bytes of this whole record
//        4    4  checksum         low 32 bits of XXH3-64 of bytes [8, length)
//        8    1  version          kEventFormatVersion
//        9    1  flags            bit 0: a key is present (a key may be present and empty)
//       10    2  schema_version
//       12    2  header_count
//       14    2  type_bytes
//       16    8  offset           in its partition
//       24    8  lsn              of the transaction that committed it
//       32    8  timestamp_ms
//       40    4  key_bytes        0 when absent
//       44    4  payload_bytes
//       48       type, key, headers (header_count x {name_bytes:u16, name, value_bytes:u32,
//                value}), payload
//
// Decoding treats its input as hostile (it comes from disk and from the network): every length is
// checked against the record and the limits before anything is read, and the checksum is verified.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "base/status.h"
#include "base/strong_id.h"

namespace lockstep::base {

using Bytes = std::span<const std::byte>;

inline constexpr std::uint8_t kEventFormatVersion = 1;
inline constexpr std::size_t kEventFixedBytes = 48;

// Limits every event obeys, checked when encoding and when decoding.
struct EventLimits {
  std::uint32_t key_bytes_max = 64 << 10;
  std::uint32_t type_bytes_max = 256;
  std::uint32_t header_count_max = 64;
  std::uint32_t header_name_bytes_max = 256;
  std::uint32_t header_value_bytes_max = 64 << 10;
  std::uint32_t event_bytes_max = 8 << 20;  // the whole record, payload included
  // DecodeEvent only: false skips the record's own checksum, where an enclosing checksum was
  // just verified (the engine reading its log batches). Consumers always verify.
  bool verify_checksum = true;
};

struct EventHeader {
  std::string_view name;
  Bytes value;
};

// What a producer supplies; the engine adds offset, LSN and (if absent) the timestamp.
struct EventFields {
  std::optional<Bytes> key;  // nullopt: no key (partition chosen otherwise)
  Bytes payload;
  std::string_view type;
  std::uint16_t schema_version = 0;
  std::span<const EventHeader> headers;
  std::int64_t timestamp_ms = 0;
};

// Checks `fields` against `limits`; kInvalidArgument naming the field and the limit.
Status ValidateEvent(const EventFields& fields, const EventLimits& limits);

// Bytes the encoded record will take. REQUIRES: ValidateEvent(fields) is ok.
std::size_t EncodedEventBytes(const EventFields& fields);

// Encodes into `out`, which must be exactly EncodedEventBytes(fields) long.
// REQUIRES: ValidateEvent(fields) is ok. Allocates nothing.
void EncodeEvent(const EventFields& fields, Offset offset, Lsn lsn, std::span<std::byte> out);

// A decoded event: views into the bytes it was decoded from (valid while they are).
class EventView {
 public:
  Offset offset() const { return offset_; }
  Lsn lsn() const { return lsn_; }
  std::int64_t timestamp_ms() const { return timestamp_ms_; }
  std::uint16_t schema_version() const { return schema_version_; }
  std::string_view type() const { return type_; }
  std::optional<Bytes> key() const { return key_; }
  Bytes payload() const { return payload_; }
  std::size_t header_count() const { return header_count_; }
  // The whole record as stored, e.g. to forward it without re-encoding.
  Bytes record() const { return record_; }

  // Calls fn(const EventHeader&) for each header, in order.
  template <typename Fn>
  void ForEachHeader(Fn&& fn) const;

 private:
  friend Result<EventView> DecodeEvent(Bytes bytes, const EventLimits& limits);
  Offset offset_;
  Lsn lsn_;
  std::int64_t timestamp_ms_ = 0;
  std::uint16_t schema_version_ = 0;
  std::string_view type_;
  std::optional<Bytes> key_;
  Bytes payload_;
  Bytes headers_;  // the encoded header region, validated
  std::size_t header_count_ = 0;
  Bytes record_;
};

// Decodes the record that starts at bytes[0] (bytes may hold more after it: record().size()
// says how much this one took). kDataLoss for a damaged or malformed record, saying why.
Result<EventView> DecodeEvent(Bytes bytes, const EventLimits& limits = {});

// The offset field of a record whose batch checksum was verified (the log's own reads), without
// decoding the rest. REQUIRES: record.size() >= kEventFixedBytes.
Offset PeekEventOffset(Bytes record);

// Reads one header from `region` (encoded as in the layout) and advances it. Only for regions
// DecodeEvent validated.
EventHeader NextEventHeader(Bytes& region);

template <typename Fn>
void EventView::ForEachHeader(Fn&& fn) const {
  Bytes region = headers_;
  for (std::size_t i = 0; i < header_count_; ++i) fn(NextEventHeader(region));
}

}  // namespace lockstep::base

#pragma once
// The batch: the unit the log writes and syncs. One group commit writes exactly one batch.
//
// Layout (little-endian; the grammar and version live in docs/storage.md):
//
//   offset size  field
//        0    4  magic          "LSBH" (0x4842534c)
//        4    2  version        kBatchFormatVersion
//        6    2  flags          0
//        8    8  checksum       XXH3-64, seeded with the segment's salt, of bytes [16, total)
//       16    4  total_bytes    header + records
//       20    4  record_count   >= 1
//       24    8  first_lsn      >= 1
//       32    8  last_lsn       first_lsn + record_count - 1
//       40    8  timestamp_ms   wall clock when the batch was written
//       48       records        record_count x (u32 length, length bytes)
//
// All-zero header bytes mean "no batch here": segments are zero-filled ahead of the write
// position, so that is where the written part of a segment ends.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/strong_id.h"
#include "storage/io.h"

namespace lockstep::storage {

using base::Lsn;

inline constexpr std::uint32_t kBatchMagic = 0x4842534c;  // "LSBH" as bytes on disk
inline constexpr std::uint16_t kBatchFormatVersion = 1;
inline constexpr std::size_t kBatchHeaderBytes = 48;
inline constexpr std::size_t kRecordFrameBytes = 4;  // the u32 length before each record
inline constexpr std::size_t kBatchChecksumFrom = 16;

struct BatchHeader {
  std::uint32_t total_bytes = 0;
  std::uint32_t record_count = 0;
  Lsn first_lsn;
  Lsn last_lsn;
  std::int64_t timestamp_ms = 0;
  std::uint64_t checksum = 0;
};

using BatchHeaderBytes = std::array<std::byte, kBatchHeaderBytes>;

// Encodes `header` (all fields but the checksum), computes the checksum over the encoded
// header tail and `frames` with `salt`, stores it, and returns it.
// REQUIRES: frames holds exactly header.record_count framed records.
std::uint64_t EncodeBatchHeader(const BatchHeader& header, ConstBytes frames, std::uint64_t salt,
                                BatchHeaderBytes& out);

enum class BatchState : unsigned char {
  kValid,    // a whole, checksummed batch
  kAbsent,   // all-zero header, or no room for a header: the written part ends here
  kDamaged,  // anything else: torn, garbage, or corrupt
};

struct BatchView {
  BatchState state = BatchState::kAbsent;
  BatchHeader header;
  ConstBytes frames;   // the records region (kValid only)
  std::string reason;  // why it is kDamaged
};

struct ParseBatchOptions {
  std::uint64_t salt = 0;
  bool verify_checksum = true;
  bool verify_frames = true;  // walk the record frames and check they fill the batch exactly
};

// Parses the batch that starts at `pos` of `segment` (the whole mapped segment). Never reads
// outside `segment`, whatever the bytes say.
BatchView ParseBatch(ConstBytes segment, std::uint64_t pos, const ParseBatchOptions& options);

// The first position after `pos` where a whole, valid batch starts, if any: damage followed by
// a valid batch is damage to durable data, not a torn tail (recovery and `lockstep verify`).
std::optional<std::uint64_t> FindValidBatchAfter(ConstBytes segment, std::uint64_t pos,
                                                 std::uint64_t salt);

// Walks the framed records of a valid batch. Each call returns the next record, or false.
class FrameCursor {
 public:
  FrameCursor() = default;
  explicit FrameCursor(ConstBytes frames) : frames_(frames) {}
  bool Next(ConstBytes* record);
  std::size_t position() const { return pos_; }

 private:
  ConstBytes frames_;
  std::size_t pos_ = 0;
};

// Appends one framed record (u32 length, bytes) to `frames`.
void AppendFrame(std::vector<std::byte>& frames, ConstBytes record);

}  // namespace lockstep::storage

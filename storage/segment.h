#pragma once
// Segments: the files of the log. Each is named by the first LSN it holds
// ("00000000000000000001.seg"), has a fixed capacity, and is fully allocated before it gets its
// name, so a *.seg file always has a valid header unless the medium damaged it.
//
// Segment header layout (little-endian; grammar in docs/storage.md):
//
//   offset size  field
//        0    4  magic            "LSSG" (0x4753534c)
//        4    2  version          kSegmentFormatVersion
//        6    2  flags            0
//        8    8  checksum         XXH3-64 (seed 0) of bytes [16, 64)
//       16    8  first_lsn        equals the file name
//       24    8  capacity_bytes   the file's length
//       32    8  salt             random; seeds every batch checksum in this segment
//       40    8  created_ms
//       48    4  batch_bytes_max  no batch in this segment is longer
//       52   12  reserved         zero
//       64       batches, then zeros
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/strong_id.h"
#include "storage/batch.h"
#include "storage/io.h"

namespace lockstep::storage {

inline constexpr std::uint32_t kSegmentMagic = 0x4753534c;  // "LSSG"
inline constexpr std::uint16_t kSegmentFormatVersion = 1;
inline constexpr std::size_t kSegmentHeaderBytes = 64;

struct SegmentHeader {
  Lsn first_lsn;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t salt = 0;
  std::int64_t created_ms = 0;
  std::uint32_t batch_bytes_max = 0;
};

using SegmentHeaderBytes = std::array<std::byte, kSegmentHeaderBytes>;

void EncodeSegmentHeader(const SegmentHeader& header, SegmentHeaderBytes& out);
// The header, or kDataLoss saying what is wrong with it.
Result<SegmentHeader> DecodeSegmentHeader(ConstBytes bytes);

// "00000000000000000042.seg" for Lsn(42).
std::string SegmentFileName(Lsn first_lsn);
// The first LSN a segment file name stands for; nullopt for any other name.
std::optional<Lsn> ParseSegmentFileName(std::string_view name);
inline constexpr std::string_view kTempSuffix = ".tmp";

// A sparse index from LSN to batch position in one segment: at most one entry per
// `interval_bytes` of segment, so its memory is bounded by capacity / interval. One writer
// adds entries; any number of readers look up concurrently without locks.
class SparseIndex {
 public:
  struct Entry {
    Lsn first_lsn;          // first LSN of the indexed batch
    std::uint64_t pos = 0;  // where that batch starts
  };

  SparseIndex(std::uint64_t capacity_bytes, std::uint32_t interval_bytes);

  // Writer only. Called for every batch in order; keeps the first batch and then one batch per
  // interval.
  void OnBatch(Lsn first_lsn, std::uint64_t pos);
  // The entry with the largest first_lsn <= lsn, or nullopt when every entry is above it.
  std::optional<Entry> Find(Lsn lsn) const;
  std::size_t size() const { return size_.load(std::memory_order_acquire); }
  std::size_t capacity() const { return capacity_; }

 private:
  std::uint32_t interval_bytes_;
  std::size_t capacity_;
  std::unique_ptr<Entry[]> entries_;
  std::atomic<std::size_t> size_{0};
  std::uint64_t next_indexed_pos_ = 0;  // writer only
};

// One segment: its mapping (for readers), its index, and what the writer has put in it.
// Shared by the writer, readers and retention through shared_ptr: a reader keeps a removed
// segment's mapping alive until it lets go.
struct Segment {
  Segment(std::string path, const SegmentHeader& header, std::shared_ptr<const Mapping> mapping,
          std::uint32_t index_interval_bytes);

  const std::string path;
  const SegmentHeader header;
  const std::shared_ptr<const Mapping> mapping;
  SparseIndex index;

  // Published by the writer (release) before the durable LSN that covers them.
  std::atomic<std::uint64_t> end_pos{kSegmentHeaderBytes};  // end of the last batch
  std::atomic<std::uint64_t> last_lsn;                      // first_lsn - 1 while empty
  std::atomic<std::int64_t> last_timestamp_ms{0};

  Lsn first_lsn() const { return header.first_lsn; }
  ConstBytes bytes() const { return mapping->bytes(); }
};

}  // namespace lockstep::storage

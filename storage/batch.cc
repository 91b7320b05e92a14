#include "storage/batch.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "base/checksum.h"
#include "base/endian.h"

namespace lockstep::storage {
namespace {

using base::LoadLe16;
using base::LoadLe32;
using base::LoadLe64;

std::uint64_t ChecksumOf(const std::byte* header, ConstBytes frames, std::uint64_t salt) {
  return base::Xxh3Concat(
      ConstBytes(header + kBatchChecksumFrom, kBatchHeaderBytes - kBatchChecksumFrom), frames,
      salt);
}

BatchView Damaged(std::string reason) {
  BatchView view;
  view.state = BatchState::kDamaged;
  view.reason = std::move(reason);
  return view;
}

// Checks that the frames fill the region exactly with `count` records.
bool FramesFill(ConstBytes frames, std::uint32_t count) {
  FrameCursor cursor(frames);
  ConstBytes record;
  std::uint32_t seen = 0;
  while (cursor.Next(&record)) ++seen;
  return seen == count && cursor.position() == frames.size();
}

}  // namespace

std::uint64_t EncodeBatchHeader(const BatchHeader& header, ConstBytes frames, std::uint64_t salt,
                                BatchHeaderBytes& out) {
  LOCKSTEP_ASSERT(header.record_count >= 1);
  LOCKSTEP_ASSERT(header.first_lsn.value() >= 1);
  LOCKSTEP_ASSERT(header.last_lsn.value() == header.first_lsn.value() + header.record_count - 1);
  LOCKSTEP_ASSERT(header.total_bytes == kBatchHeaderBytes + frames.size());
  LOCKSTEP_DEBUG_ASSERT(FramesFill(frames, header.record_count));
  std::byte* p = out.data();
  base::StoreLe32(p + 0, kBatchMagic);
  base::StoreLe16(p + 4, kBatchFormatVersion);
  base::StoreLe16(p + 6, 0);
  base::StoreLe32(p + 16, header.total_bytes);
  base::StoreLe32(p + 20, header.record_count);
  base::StoreLe64(p + 24, header.first_lsn.value());
  base::StoreLe64(p + 32, header.last_lsn.value());
  base::StoreLe64(p + 40, static_cast<std::uint64_t>(header.timestamp_ms));
  const std::uint64_t checksum = ChecksumOf(p, frames, salt);
  base::StoreLe64(p + 8, checksum);
  return checksum;
}

BatchView ParseBatch(ConstBytes segment, std::uint64_t pos, const ParseBatchOptions& options) {
  if (pos > segment.size() || segment.size() - pos < kBatchHeaderBytes) return BatchView{};
  const std::byte* p = segment.data() + pos;
  if (std::all_of(p, p + kBatchHeaderBytes, [](std::byte b) { return b == std::byte{0}; })) {
    return BatchView{};
  }
  if (LoadLe32(p) != kBatchMagic) return Damaged("bad magic");
  if (LoadLe16(p + 4) != kBatchFormatVersion) {
    return Damaged(fmt::format("unknown batch format version {}", LoadLe16(p + 4)));
  }
  if (LoadLe16(p + 6) != 0) return Damaged("unknown flags");
  BatchHeader h;
  h.checksum = LoadLe64(p + 8);
  h.total_bytes = LoadLe32(p + 16);
  h.record_count = LoadLe32(p + 20);
  h.first_lsn = Lsn(LoadLe64(p + 24));
  h.last_lsn = Lsn(LoadLe64(p + 32));
  h.timestamp_ms = static_cast<std::int64_t>(LoadLe64(p + 40));
  if (h.total_bytes < kBatchHeaderBytes + kRecordFrameBytes * std::uint64_t{h.record_count} ||
      h.total_bytes > segment.size() - pos) {
    return Damaged(fmt::format("length {} out of bounds", h.total_bytes));
  }
  if (h.record_count == 0 || h.first_lsn.value() == 0 ||
      h.last_lsn.value() != h.first_lsn.value() + h.record_count - 1) {
    return Damaged("inconsistent record count and LSN range");
  }
  ConstBytes frames(p + kBatchHeaderBytes, h.total_bytes - kBatchHeaderBytes);
  if (options.verify_checksum && ChecksumOf(p, frames, options.salt) != h.checksum) {
    return Damaged("checksum mismatch");
  }
  if (options.verify_frames && !FramesFill(frames, h.record_count)) {
    return Damaged("record frames do not fill the batch");
  }
  BatchView view;
  view.state = BatchState::kValid;
  view.header = h;
  view.frames = frames;
  return view;
}

bool FrameCursor::Next(ConstBytes* record) {
  if (frames_.size() - pos_ < kRecordFrameBytes) return false;
  const std::uint32_t length = LoadLe32(frames_.data() + pos_);
  if (frames_.size() - pos_ - kRecordFrameBytes < length) return false;
  *record = frames_.subspan(pos_ + kRecordFrameBytes, length);
  pos_ += kRecordFrameBytes + length;
  return true;
}

void AppendFrame(std::vector<std::byte>& frames, ConstBytes record) {
  std::array<std::byte, kRecordFrameBytes> length{};
  base::StoreLe32(length.data(), static_cast<std::uint32_t>(record.size()));
  frames.insert(frames.end(), length.begin(), length.end());
  frames.insert(frames.end(), record.begin(), record.end());
}

std::optional<std::uint64_t> FindValidBatchAfter(ConstBytes segment, std::uint64_t pos,
                                                 std::uint64_t salt) {
  std::array<std::byte, 4> magic{};
  base::StoreLe32(magic.data(), kBatchMagic);
  const ParseBatchOptions options{salt, true, true};
  for (std::uint64_t q = pos + 1; q + kBatchHeaderBytes <= segment.size(); ++q) {
    const void* hit = std::memchr(segment.data() + q, static_cast<int>(magic[0]),
                                  segment.size() - q - kBatchHeaderBytes + 1);
    if (hit == nullptr) return std::nullopt;
    q = static_cast<std::uint64_t>(static_cast<const std::byte*>(hit) - segment.data());
    if (std::memcmp(segment.data() + q, magic.data(), magic.size()) == 0 &&
        ParseBatch(segment, q, options).state == BatchState::kValid) {
      return q;
    }
  }
  return std::nullopt;
}

}  // namespace lockstep::storage

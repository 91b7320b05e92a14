#include "storage/segment.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "base/checksum.h"
#include "base/endian.h"

namespace lockstep::storage {

void EncodeSegmentHeader(const SegmentHeader& h, SegmentHeaderBytes& out) {
  out.fill(std::byte{0});
  std::byte* p = out.data();
  base::StoreLe32(p + 0, kSegmentMagic);
  base::StoreLe16(p + 4, kSegmentFormatVersion);
  base::StoreLe64(p + 16, h.first_lsn.value());
  base::StoreLe64(p + 24, h.capacity_bytes);
  base::StoreLe64(p + 32, h.salt);
  base::StoreLe64(p + 40, static_cast<std::uint64_t>(h.created_ms));
  base::StoreLe32(p + 48, h.batch_bytes_max);
  base::StoreLe64(p + 8, base::Xxh3(ConstBytes(p + 16, kSegmentHeaderBytes - 16)));
}

Result<SegmentHeader> DecodeSegmentHeader(ConstBytes bytes) {
  if (bytes.size() < kSegmentHeaderBytes) {
    return base::DataLoss(
        fmt::format("file is {} bytes, shorter than a segment header", bytes.size()));
  }
  const std::byte* p = bytes.data();
  if (base::LoadLe32(p) != kSegmentMagic) return base::DataLoss("bad segment magic");
  if (base::LoadLe16(p + 4) != kSegmentFormatVersion) {
    return base::DataLoss(fmt::format("unknown segment format version {}", base::LoadLe16(p + 4)));
  }
  if (base::LoadLe16(p + 6) != 0) return base::DataLoss("unknown segment flags");
  if (base::LoadLe64(p + 8) != base::Xxh3(ConstBytes(p + 16, kSegmentHeaderBytes - 16))) {
    return base::DataLoss("segment header checksum mismatch");
  }
  SegmentHeader h;
  h.first_lsn = Lsn(base::LoadLe64(p + 16));
  h.capacity_bytes = base::LoadLe64(p + 24);
  h.salt = base::LoadLe64(p + 32);
  h.created_ms = static_cast<std::int64_t>(base::LoadLe64(p + 40));
  h.batch_bytes_max = base::LoadLe32(p + 48);
  if (h.first_lsn.value() == 0) return base::DataLoss("segment header names LSN 0");
  if (h.capacity_bytes < kSegmentHeaderBytes + kBatchHeaderBytes ||
      h.batch_bytes_max < kBatchHeaderBytes + kRecordFrameBytes) {
    return base::DataLoss("segment header has impossible sizes");
  }
  return h;
}

std::string SegmentFileName(Lsn first_lsn) { return fmt::format("{:020}.seg", first_lsn.value()); }

std::optional<Lsn> ParseSegmentFileName(std::string_view name) {
  constexpr std::size_t kDigits = 20;
  if (name.size() != kDigits + 4 || name.substr(kDigits) != ".seg") return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + kDigits, value);
  if (ec != std::errc() || end != name.data() + kDigits || value == 0) return std::nullopt;
  return Lsn(value);
}

SparseIndex::SparseIndex(std::uint64_t capacity_bytes, std::uint32_t interval_bytes)
    : interval_bytes_(std::max<std::uint32_t>(interval_bytes, 1)),
      capacity_(static_cast<std::size_t>(capacity_bytes / interval_bytes_ + 2)),
      entries_(std::make_unique<Entry[]>(capacity_)) {}

void SparseIndex::OnBatch(Lsn first_lsn, std::uint64_t pos) {
  if (pos < next_indexed_pos_) return;
  const std::size_t n = size_.load(std::memory_order_relaxed);
  // At most one entry per interval, plus the first: the bound holds by construction.
  LOCKSTEP_ASSERT(n < capacity_);
  LOCKSTEP_ASSERT(n == 0 || entries_[n - 1].first_lsn < first_lsn);
  entries_[n] = Entry{first_lsn, pos};
  size_.store(n + 1, std::memory_order_release);
  next_indexed_pos_ = pos + interval_bytes_;
}

std::optional<SparseIndex::Entry> SparseIndex::Find(Lsn lsn) const {
  const std::size_t n = size();
  const Entry* begin = entries_.get();
  const Entry* it = std::upper_bound(begin, begin + n, lsn,
                                     [](Lsn l, const Entry& e) { return l < e.first_lsn; });
  if (it == begin) return std::nullopt;
  return *(it - 1);
}

Segment::Segment(std::string path_in, const SegmentHeader& header_in,
                 std::shared_ptr<const Mapping> mapping_in, std::uint32_t index_interval_bytes)
    : path(std::move(path_in)),
      header(header_in),
      mapping(std::move(mapping_in)),
      index(header_in.capacity_bytes, index_interval_bytes),
      last_lsn(header_in.first_lsn.value() - 1) {}

}  // namespace lockstep::storage

// Proves segment naming, the segment header's validation, and the sparse index at every
// boundary: before the first entry, on entries, between them, after the last, and its bound.
#include "storage/segment.h"

#include <gtest/gtest.h>

namespace lockstep::storage {
namespace {

TEST(SegmentName, RoundTripsAndRejectsOthers) {
  EXPECT_EQ(SegmentFileName(Lsn(42)), "00000000000000000042.seg");
  EXPECT_EQ(ParseSegmentFileName("00000000000000000042.seg"), Lsn(42));
  EXPECT_EQ(ParseSegmentFileName(SegmentFileName(Lsn(UINT64_MAX))), Lsn(UINT64_MAX));
  for (const char* bad :
       {"42.seg", "0000000000000000004x.seg", "00000000000000000042.sex",
        "00000000000000000000.seg", "LOCK", "prepare-1.tmp", "", "000000000000000000042.seg"}) {
    EXPECT_FALSE(ParseSegmentFileName(bad).has_value()) << bad;
  }
}

TEST(SegmentHeader, RoundTripsAndDetectsDamage) {
  SegmentHeader h{Lsn(7), 1 << 20, 0xabcdef, 1700000000000, 65536};
  SegmentHeaderBytes bytes;
  EncodeSegmentHeader(h, bytes);
  auto decoded = DecodeSegmentHeader(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->first_lsn, Lsn(7));
  EXPECT_EQ(decoded->capacity_bytes, 1u << 20);
  EXPECT_EQ(decoded->salt, 0xabcdefu);
  EXPECT_EQ(decoded->batch_bytes_max, 65536u);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto copy = bytes;
    copy[i] ^= std::byte{0x10};
    EXPECT_EQ(DecodeSegmentHeader(copy).status().code(), base::StatusCode::kDataLoss) << i;
  }
  EXPECT_EQ(DecodeSegmentHeader(ConstBytes(bytes).first(63)).status().code(),
            base::StatusCode::kDataLoss);
}

TEST(SparseIndex, FindsTheLastEntryAtOrBelow) {
  SparseIndex index(1 << 20, 1000);
  // Batches of LSNs [1..10], [11..20], ... at positions 64, 564, 1064, ...: one entry per
  // 1000 bytes, so every other batch is indexed.
  for (int b = 0; b < 100; ++b) index.OnBatch(Lsn(1 + 10 * b), 64 + 500 * b);
  EXPECT_EQ(index.size(), 50u);
  EXPECT_FALSE(index.Find(Lsn(0)).has_value());
  auto e = index.Find(Lsn(1));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->first_lsn, Lsn(1));
  EXPECT_EQ(index.Find(Lsn(20))->first_lsn, Lsn(1));   // second batch is not indexed
  EXPECT_EQ(index.Find(Lsn(21))->first_lsn, Lsn(21));  // third is, on its first LSN
  EXPECT_EQ(index.Find(Lsn(21))->pos, 64u + 1000u);
  EXPECT_EQ(index.Find(Lsn(40))->first_lsn, Lsn(21));
  EXPECT_EQ(index.Find(Lsn(991))->first_lsn, Lsn(981));
  EXPECT_EQ(index.Find(Lsn(5000))->first_lsn, Lsn(981));
}

TEST(SparseIndex, MemoryIsBoundedByCapacityOverInterval) {
  SparseIndex index(64 << 10, 4096);
  EXPECT_EQ(index.capacity(), (64u << 10) / 4096 + 2);
  // One batch per byte: the index still takes at most one entry per interval.
  for (std::uint64_t pos = 64; pos < (64 << 10); ++pos) index.OnBatch(Lsn(pos), pos);
  EXPECT_LE(index.size(), index.capacity());
  EXPECT_GE(index.size(), (64u << 10) / 4096);
}

}  // namespace
}  // namespace lockstep::storage

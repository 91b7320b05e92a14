// Proves the batch format: what is encoded parses back, and every kind of damage — truncation,
// bit flips, hostile lengths, wrong salt — is reported as damage without reading out of bounds.
#include "storage/batch.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "base/checksum.h"
#include "base/endian.h"
#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"

namespace lockstep::storage {
namespace {

using testing::AsBytes;
using testing::AsString;

constexpr std::uint64_t kSalt = 0x5eed;

// A segment-like buffer holding one batch of `records` at position `pos`, zeros after it.
std::vector<std::byte> MakeSegment(const std::vector<std::string>& records, std::uint64_t pos,
                                   std::size_t size = 4096) {
  std::vector<std::byte> frames;
  for (const auto& r : records) AppendFrame(frames, AsBytes(r));
  BatchHeader h;
  h.total_bytes = static_cast<std::uint32_t>(kBatchHeaderBytes + frames.size());
  h.record_count = static_cast<std::uint32_t>(records.size());
  h.first_lsn = Lsn(10);
  h.last_lsn = Lsn(10 + records.size() - 1);
  h.timestamp_ms = 1234;
  BatchHeaderBytes hb;
  EncodeBatchHeader(h, frames, kSalt, hb);
  std::vector<std::byte> seg(size);
  std::copy(hb.begin(), hb.end(), seg.begin() + static_cast<long>(pos));
  std::copy(frames.begin(), frames.end(), seg.begin() + static_cast<long>(pos + hb.size()));
  return seg;
}

TEST(Batch, RoundTrip) {
  auto seg = MakeSegment({"alpha", "", "gamma"}, 64);
  BatchView v = ParseBatch(seg, 64, {kSalt});
  ASSERT_EQ(v.state, BatchState::kValid) << v.reason;
  EXPECT_EQ(v.header.first_lsn, Lsn(10));
  EXPECT_EQ(v.header.last_lsn, Lsn(12));
  EXPECT_EQ(v.header.record_count, 3u);
  EXPECT_EQ(v.header.timestamp_ms, 1234);
  FrameCursor cursor(v.frames);
  ConstBytes r;
  std::vector<std::string> got;
  while (cursor.Next(&r)) got.push_back(AsString(r));
  EXPECT_EQ(got, (std::vector<std::string>{"alpha", "", "gamma"}));
}

TEST(Batch, ZerosAreAbsentNotDamaged) {
  std::vector<std::byte> seg(4096);
  EXPECT_EQ(ParseBatch(seg, 64, {kSalt}).state, BatchState::kAbsent);
  // No room for a header at the end of the segment: also the end.
  EXPECT_EQ(ParseBatch(seg, 4096 - 10, {kSalt}).state, BatchState::kAbsent);
  EXPECT_EQ(ParseBatch(seg, 5000, {kSalt}).state, BatchState::kAbsent);
}

TEST(Batch, WrongSaltIsDamage) {
  auto seg = MakeSegment({"x"}, 0);
  EXPECT_EQ(ParseBatch(seg, 0, {kSalt + 1}).state, BatchState::kDamaged);
}

TEST(Batch, EveryBitFlipIsDamage) {
  auto seg = MakeSegment({"hello", "world"}, 0);
  const std::size_t total = kBatchHeaderBytes + 2 * (kRecordFrameBytes + 5);
  for (std::size_t bit = 0; bit < total * 8; ++bit) {
    seg[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_EQ(ParseBatch(seg, 0, {kSalt}).state, BatchState::kDamaged) << "bit " << bit;
    seg[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
  }
}

TEST(Batch, TruncatedBatchIsDamage) {
  auto full = MakeSegment({"0123456789", "abcdefghij"}, 0, 4096);
  const std::size_t total = kBatchHeaderBytes + 2 * (kRecordFrameBytes + 10);
  for (std::size_t keep = 1; keep < total; ++keep) {
    auto seg = full;
    std::fill(seg.begin() + static_cast<long>(keep), seg.end(), std::byte{0});
    EXPECT_EQ(ParseBatch(seg, 0, {kSalt}).state, BatchState::kDamaged) << "kept " << keep;
    // The same truncation at the physical end of a buffer must not read past it.
    std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<long>(keep));
    EXPECT_NE(ParseBatch(cut, 0, {kSalt}).state, BatchState::kValid) << "cut " << keep;
  }
}

TEST(Batch, HostileLengthsStayInBounds) {
  auto seg = MakeSegment({"abc"}, 0, 256);
  base::StoreLe32(seg.data() + 16, 0xffffffffu);  // total_bytes far past the buffer
  BatchView v = ParseBatch(seg, 0, {kSalt});
  EXPECT_EQ(v.state, BatchState::kDamaged);
  EXPECT_NE(v.reason.find("out of bounds"), std::string::npos);
  seg = MakeSegment({"abc"}, 0, 256);
  base::StoreLe32(seg.data() + 20, 0xffffffffu);  // record count absurd
  EXPECT_EQ(ParseBatch(seg, 0, {kSalt}).state, BatchState::kDamaged);
}

TEST(Batch, FrameLengthLieIsCaughtEvenWithAValidChecksum) {
  // A batch whose checksum matches but whose frames do not fill it (a bug, not a torn write)
  // must still be rejected by the frame walk.
  std::vector<std::byte> frames;
  AppendFrame(frames, AsBytes("abcd"));
  base::StoreLe32(frames.data(), 2);  // claims 2 bytes, 4 follow
  BatchHeader h;
  h.total_bytes = static_cast<std::uint32_t>(kBatchHeaderBytes + frames.size());
  h.record_count = 1;
  h.first_lsn = Lsn(1);
  h.last_lsn = Lsn(1);
  BatchHeaderBytes hb;
  // Encode without the debug assertion on frames: build the header by hand through a valid
  // batch and then patch the frames and checksum consistently.
  std::vector<std::byte> good;
  AppendFrame(good, AsBytes("abcd"));
  EncodeBatchHeader(h, good, kSalt, hb);
  std::vector<std::byte> seg(hb.begin(), hb.end());
  seg.insert(seg.end(), frames.begin(), frames.end());
  // Recompute the checksum over the lying frames.
  base::StoreLe64(seg.data() + 8,
                  base::Xxh3Concat(ConstBytes(seg.data() + kBatchChecksumFrom,
                                              kBatchHeaderBytes - kBatchChecksumFrom),
                                   frames, kSalt));
  BatchView v = ParseBatch(seg, 0, {kSalt});
  EXPECT_EQ(v.state, BatchState::kDamaged);
  EXPECT_NE(v.reason.find("frames"), std::string::npos);
}

TEST(Batch, RandomGarbageNeverParsesAsValid) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::vector<std::byte> seg(512);
  for (int i = 0; i < 20000; ++i) {
    for (auto& b : seg) b = static_cast<std::byte>(rng());
    if (i % 2 == 0) base::StoreLe32(seg.data(), kBatchMagic);
    if (i % 4 == 0) base::StoreLe16(seg.data() + 4, kBatchFormatVersion);
    if (i % 4 == 0) base::StoreLe16(seg.data() + 6, 0);
    ASSERT_NE(ParseBatch(seg, 0, {kSalt}).state, BatchState::kValid);
  }
}

}  // namespace
}  // namespace lockstep::storage

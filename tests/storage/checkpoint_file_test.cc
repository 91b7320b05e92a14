// Proves checkpoint files: a stream written in paced, synced chunks reads back whole; a
// `.ckpt` name appears only after Finish (an abandoned writer leaves nothing); and every
// truncation, every single bit flip, a renamed file (wrong LSN) and trailing bytes are refused
// with kDataLoss, never half read.
#include "storage/checkpoint_file.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "storage/fault_io.h"
#include "tests/testing/seed.h"

namespace lockstep::storage {
namespace {

using base::StatusCode;

std::vector<std::byte> RandomStream(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

class CheckpointFileTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(io_.CreateDir("ck").ok()); }
  // Writes `stream` in pieces of up to `piece` bytes with small chunks.
  void Write(Lsn lsn, const std::vector<std::byte>& stream, std::size_t piece) {
    CheckpointWriteOptions o;
    o.chunk_bytes = 4096;
    o.bytes_per_second = 0;
    auto w = CheckpointWriter::Create(io_, "ck", lsn, o);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (std::size_t at = 0; at < stream.size(); at += piece) {
      const std::size_t n = std::min(piece, stream.size() - at);
      ASSERT_TRUE((*w)->Append(ConstBytes(stream.data() + at, n)).ok());
    }
    ASSERT_TRUE((*w)->Finish().ok());
  }
  FaultInjectingIo io_;
};

TEST_F(CheckpointFileTest, RoundTripsAndListsNewestFirst) {
  std::mt19937_64 rng(1);
  const auto big = RandomStream(rng, 50'000);
  Write(Lsn(7), big, 777);
  Write(Lsn(12), {}, 1);
  auto listed = ListCheckpoints(io_, "ck");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, (std::vector<Lsn>{Lsn(12), Lsn(7)}));
  auto read = ReadCheckpoint(io_, "ck", Lsn(7));
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, big);
  EXPECT_TRUE(ReadCheckpoint(io_, "ck", Lsn(12))->empty());
  EXPECT_EQ(ReadCheckpoint(io_, "ck", Lsn(8)).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(ListCheckpoints(io_, "missing")->empty());
  EXPECT_EQ(ParseCheckpointFileName("00000000000000000007.ckpt.tmp"), std::nullopt);
  EXPECT_EQ(ParseCheckpointFileName("0000000000000000007.ckpt"), std::nullopt);
  EXPECT_EQ(ParseCheckpointFileName("99999999999999999999.ckpt"), std::nullopt);  // > 2^64
  ASSERT_TRUE(RemoveCheckpoint(io_, "ck", Lsn(7)).ok());
  EXPECT_EQ(*ListCheckpoints(io_, "ck"), std::vector<Lsn>{Lsn(12)});
}

// Pacing: a checkpoint never runs ahead of bytes_per_second (counted from its start), so it
// cannot flood the disk queue the log's group commits wait in. 64 KiB in 4 KiB chunks at
// 256 KiB/s take at least a quarter of a second; only a lower bound is checked (a loaded machine
// can only make it slower), and the stream still reads back whole.
TEST_F(CheckpointFileTest, WritingIsPacedToBytesPerSecond) {
  std::mt19937_64 rng(3);
  const auto stream = RandomStream(rng, 64 << 10);
  CheckpointWriteOptions o;
  o.chunk_bytes = 4096;
  o.bytes_per_second = 256 << 10;
  const auto start = std::chrono::steady_clock::now();
  auto w = CheckpointWriter::Create(io_, "ck", Lsn(5), o);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Append(stream).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  // The file holds the stream plus chunk headers: at least the stream's 64 KiB went out paced.
  EXPECT_GE(elapsed, std::chrono::milliseconds(240));
  EXPECT_EQ(*ReadCheckpoint(io_, "ck", Lsn(5)), stream);
}

TEST_F(CheckpointFileTest, AnUnfinishedCheckpointLeavesNothing) {
  {
    auto w = CheckpointWriter::Create(io_, "ck", Lsn(3));
    ASSERT_TRUE(w.ok());
    const std::byte b[100] = {};
    ASSERT_TRUE((*w)->Append(b).ok());
  }
  EXPECT_TRUE(ListCheckpoints(io_, "ck")->empty());
  EXPECT_TRUE(io_.ListDir("ck")->empty());
}

TEST_F(CheckpointFileTest, EveryTruncationAndBitFlipIsRefused) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const auto stream = RandomStream(rng, 9000);  // three data chunks and the end chunk
  Write(Lsn(5), stream, 1000);
  const std::string path = "ck/" + CheckpointFileName(Lsn(5));
  const std::vector<std::byte> file = *io_.ReadAll(path);
  auto rewrite = [&](const std::vector<std::byte>& bytes) {
    ASSERT_TRUE(io_.Remove(path).ok());
    auto f = io_.CreateFile(path);
    ASSERT_TRUE(f.ok());
    const ConstBytes parts[] = {bytes};
    if (!bytes.empty()) {
      ASSERT_TRUE(io_.Write(**f, 0, parts).ok());
    }
  };
  for (std::size_t len = 0; len < file.size(); len += 1 + rng() % 13) {
    rewrite(std::vector<std::byte>(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(len)));
    ASSERT_EQ(ReadCheckpoint(io_, "ck", Lsn(5)).status().code(), StatusCode::kDataLoss)
        << "truncated to " << len;
  }
  for (int i = 0; i < 400; ++i) {
    auto flipped = file;
    flipped[rng() % flipped.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
    rewrite(flipped);
    ASSERT_EQ(ReadCheckpoint(io_, "ck", Lsn(5)).status().code(), StatusCode::kDataLoss);
  }
  auto longer = file;
  longer.push_back(std::byte{0});
  rewrite(longer);
  EXPECT_EQ(ReadCheckpoint(io_, "ck", Lsn(5)).status().code(), StatusCode::kDataLoss);
  // The same bytes under another LSN's name.
  rewrite(file);
  ASSERT_TRUE(io_.Rename(path, "ck/" + CheckpointFileName(Lsn(6))).ok());
  auto renamed = ReadCheckpoint(io_, "ck", Lsn(6));
  EXPECT_EQ(renamed.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(renamed.status().message().find("ck/00000000000000000006.ckpt"), std::string::npos)
      << renamed.status().ToString();
}

}  // namespace
}  // namespace lockstep::storage

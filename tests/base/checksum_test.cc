// Proves the XXH3 wrappers: the two-piece form equals one-shot XXH3 over the concatenation,
// seeds change the result, and any single flipped bit changes the checksum.
#include "base/checksum.h"

#include <gtest/gtest.h>

#include <vector>

// The plain, baseline-SSE2 entry points (no dispatch header here): what every file on disk was
// checksummed with before base/ switched to the dispatching ones.
#include <xxhash.h>

#include "base/endian.h"

namespace lockstep::base {
namespace {

std::vector<std::byte> Pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 131 + 7);
  return v;
}

TEST(Checksum, ConcatEqualsOneShotOverTheConcatenation) {
  auto data = Pattern(10000);
  for (std::size_t split : {0u, 1u, 48u, 4999u, 10000u}) {
    EXPECT_EQ(Xxh3Concat(std::span(data).first(split), std::span(data).subspan(split), 42),
              Xxh3(data, 42))
        << "split " << split;
  }
}

// The checksums are part of the file formats: whichever vector unit base/ hashes with, the values
// must be the ones the plain library computes, for short inputs and for long ones (over 240
// bytes XXH3 takes its vectorised path), one-shot and in two pieces.
TEST(Checksum, EqualsThePlainLibraryAtEveryLength) {
  auto data = Pattern(1 << 20);
  for (std::size_t n :
       {0u, 1u, 16u, 17u, 128u, 129u, 240u, 241u, 1024u, 1025u, 4096u, 65537u, 1u << 20}) {
    const auto piece = std::span(data).first(n);
    EXPECT_EQ(Xxh3(piece, 42), XXH3_64bits_withSeed(piece.data(), n, 42)) << n << " bytes";
    EXPECT_EQ(Xxh3Concat(piece.first(n / 3), piece.subspan(n / 3), 42),
              XXH3_64bits_withSeed(piece.data(), n, 42))
        << n << " bytes in two pieces";
  }
  // And a pinned value, should the library itself ever change: XXH3-64 of no bytes, seed 0.
  EXPECT_EQ(Xxh3({}, 0), 0x2D06800538D394C2ull);
}

TEST(Checksum, SeedMatters) {
  auto data = Pattern(100);
  EXPECT_NE(Xxh3(data, 1), Xxh3(data, 2));
}

TEST(Checksum, EveryBitFlipIsDetected) {
  auto data = Pattern(64);
  const auto base = Xxh3(data, 7);
  for (std::size_t bit = 0; bit < data.size() * 8; ++bit) {
    data[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_NE(Xxh3(data, 7), base) << "bit " << bit;
    data[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
  }
}

TEST(Endian, RoundTripsLittleEndian) {
  std::byte buf[8];
  StoreLe32(buf, 0x01020304u);
  EXPECT_EQ(buf[0], std::byte{0x04});
  EXPECT_EQ(LoadLe32(buf), 0x01020304u);
  StoreLe64(buf, 0x0102030405060708ull);
  EXPECT_EQ(buf[7], std::byte{0x01});
  EXPECT_EQ(LoadLe64(buf), 0x0102030405060708ull);
}

}  // namespace
}  // namespace lockstep::base

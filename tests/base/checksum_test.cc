// Proves the XXH3 wrappers: seeds change the result, any single flipped bit changes the
// checksum, and the chained form covers both pieces and where they split.
#include "base/checksum.h"

#include <gtest/gtest.h>

#include <vector>

#include "base/endian.h"

namespace lockstep::base {
namespace {

std::vector<std::byte> Pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 131 + 7);
  return v;
}

TEST(Checksum, ChainedCoversBothPiecesAndTheirBoundary) {
  auto data = Pattern(100);
  const auto whole = Xxh3Chained(std::span(data).first(40), std::span(data).subspan(40), 5);
  EXPECT_EQ(whole, Xxh3(std::span(data).subspan(40), Xxh3(std::span(data).first(40), 5)));
  EXPECT_NE(whole, Xxh3Chained(std::span(data).first(41), std::span(data).subspan(41), 5));
  EXPECT_NE(whole, Xxh3Chained(std::span(data).first(40), std::span(data).subspan(40), 6));
  for (std::size_t i : {0u, 39u, 40u, 99u}) {
    data[i] ^= std::byte{1};
    EXPECT_NE(whole, Xxh3Chained(std::span(data).first(40), std::span(data).subspan(40), 5)) << i;
    data[i] ^= std::byte{1};
  }
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

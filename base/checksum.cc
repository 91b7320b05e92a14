#include "base/checksum.h"

#include <xxhash.h>

namespace lockstep::base {

std::uint64_t Xxh3(std::span<const std::byte> bytes, std::uint64_t seed) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

}  // namespace lockstep::base

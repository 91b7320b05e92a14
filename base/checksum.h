#pragma once
// XXH3-64 checksums (xxHash). Every batch and segment header on disk is protected by one.
// A seed lets a segment salt its checksums, so that bytes a user stored inside a record can
// never pass for a valid batch header when recovery scans for batches.
#include <cstddef>
#include <cstdint>
#include <span>

namespace lockstep::base {

std::uint64_t Xxh3(std::span<const std::byte> bytes, std::uint64_t seed = 0);

// A checksum over two pieces without copying them together and without allocating (xxHash's
// streaming state is heap-allocated): XXH3 of `second`, seeded with XXH3 of `first` seeded with
// `seed`. Any change to either piece, or to the seed, changes it.
inline std::uint64_t Xxh3Chained(std::span<const std::byte> first,
                                 std::span<const std::byte> second, std::uint64_t seed) {
  return Xxh3(second, Xxh3(first, seed));
}

}  // namespace lockstep::base

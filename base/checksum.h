#pragma once
// XXH3-64 checksums (xxHash). Every batch and segment header on disk is protected by one.
// A seed lets a segment salt its checksums, so that bytes a user stored inside a record can
// never pass for a valid batch header when recovery scans for batches.
#include <cstddef>
#include <cstdint>
#include <span>

namespace lockstep::base {

std::uint64_t Xxh3(std::span<const std::byte> bytes, std::uint64_t seed = 0);

// XXH3-64 of the concatenation of two pieces, without copying them together and without
// allocating (the streaming state lives on the stack).
std::uint64_t Xxh3Concat(std::span<const std::byte> first, std::span<const std::byte> second,
                         std::uint64_t seed);

}  // namespace lockstep::base

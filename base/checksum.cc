#include "base/checksum.h"

// For XXH3_state_t's definition, so that the state can live on the stack.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#if defined(__x86_64__)
// libxxhash's `_dispatch` entry points pick the widest vector unit of the running CPU (AVX2,
// AVX-512) once, where the plain ones are compiled for the baseline SSE2. Same hash, same bytes:
// 2-3x faster on long inputs, which is what every consumer's per-event check and every batch
// check pays. The header maps the plain names onto them.
#include <xxh_x86dispatch.h>
#endif

namespace lockstep::base {

std::uint64_t Xxh3(std::span<const std::byte> bytes, std::uint64_t seed) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

std::uint64_t Xxh3Concat(std::span<const std::byte> first, std::span<const std::byte> second,
                         std::uint64_t seed) {
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  // These return errors only for null arguments, which cannot happen here.
  (void)XXH3_64bits_reset_withSeed(&state, seed);
  (void)XXH3_64bits_update(&state, first.data(), first.size());
  (void)XXH3_64bits_update(&state, second.data(), second.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace lockstep::base

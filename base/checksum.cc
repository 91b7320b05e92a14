#include "base/checksum.h"

#include <xxhash.h>

#include "base/assert.h"

namespace lockstep::base {

std::uint64_t Xxh3(std::span<const std::byte> bytes, std::uint64_t seed) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

Xxh3Stream::Xxh3Stream(std::uint64_t seed) : state_(XXH3_createState()) {
  LOCKSTEP_ASSERT(state_ != nullptr);
  LOCKSTEP_ASSERT(XXH3_64bits_reset_withSeed(static_cast<XXH3_state_t*>(state_), seed) == XXH_OK);
}

Xxh3Stream::~Xxh3Stream() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Xxh3Stream::Update(std::span<const std::byte> bytes) {
  LOCKSTEP_ASSERT(
      XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), bytes.data(), bytes.size()) ==
      XXH_OK);
}

std::uint64_t Xxh3Stream::Digest() const {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

}  // namespace lockstep::base

#pragma once
// XXH3-64 checksums (xxHash). Every batch and segment header on disk is protected by one.
// A seed lets a segment salt its checksums, so that bytes a user stored inside a record can
// never pass for a valid batch header when recovery scans for batches.
#include <cstddef>
#include <cstdint>
#include <span>

namespace lockstep::base {

std::uint64_t Xxh3(std::span<const std::byte> bytes, std::uint64_t seed = 0);

// Streaming XXH3-64 over several pieces; equal to Xxh3 over their concatenation.
class Xxh3Stream {
 public:
  explicit Xxh3Stream(std::uint64_t seed = 0);
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;

  void Update(std::span<const std::byte> bytes);
  std::uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t, kept out of this header
};

}  // namespace lockstep::base

// Fuzz target: the wire protocol's frame reader, the FlatBuffers verifiers and the conversion of
// a verified commit request into a transaction (what the server does with every frame).
// Arbitrary bytes: an error is fine; a crash, a hang or an out-of-bounds read is not.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "protocol/server/convert.h"
#include "protocol/wire/frame.h"

namespace {

void TryRequest(std::span<const std::byte> message) {
  auto request = lockstep::wire::VerifyRequest(message);
  if (!request.ok()) return;
  if (const auto* commit = (*request)->request_as_CommitRequest()) {
    (void)lockstep::server::ToTransaction(*commit);
  }
  if (const auto* offsets = (*request)->request_as_CommitOffsetsRequest()) {
    (void)lockstep::server::ToOffsetCommits(*offsets);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the read size, so frames split across reads are covered too, and
  // (its top bit) whether frames of 16 bytes and more are read in place, as the client reads
  // large responses.
  const std::size_t chunk = 1 + data[0] % 64;
  const bool in_place = (data[0] & 0x80) != 0;
  const auto* bytes = reinterpret_cast<const std::byte*>(data + 1);
  std::size_t left = size - 1;
  lockstep::wire::FrameReader reader(64 << 10, in_place ? 16 : UINT32_MAX);
  while (left > 0) {
    std::span<std::byte> room = reader.Room();
    const std::size_t n = std::min({room.size(), left, chunk});
    std::memcpy(room.data(), bytes, n);
    reader.Filled(n);
    bytes += n;
    left -= n;
    for (;;) {
      auto frame = reader.Next();
      if (!frame.ok()) return 0;  // the stream is not to be trusted after a bad header
      if (!*frame) break;
      TryRequest((*frame)->message);
      (void)lockstep::wire::VerifyResponse((*frame)->message);
    }
  }
  return 0;
}

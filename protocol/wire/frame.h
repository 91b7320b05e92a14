#pragma once
// Framing and validation of the wire protocol (docs/protocol.md), shared by the server and the
// clients. A frame is
//
//   frame_bytes:u32 LE | message_bytes:u32 LE | message (FlatBuffers) | attachment
//
// where frame_bytes counts everything after itself (so at least 4) and the attachment — raw
// event records after a FetchResponse, nothing otherwise — is frame_bytes - 4 - message_bytes
// bytes. Every message is verified before use; nothing here trusts the peer.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "base/block_pool.h"
#include "base/status.h"
#include "protocol/wire/lockstep_generated.h"

namespace lockstep::wire {

using base::Result;
using base::Status;

inline constexpr std::uint16_t kMajorVersion = 1;
inline constexpr std::uint16_t kMinorVersion = 3;
inline constexpr std::size_t kFrameHeaderBytes = 8;
// The default bound on frame_bytes, at both ends (configurable on each).
inline constexpr std::uint32_t kDefaultMaxFrameBytes = 16u << 20;

struct FrameHeader {
  std::uint32_t frame_bytes = 0;    // what follows the first 4 bytes of the header
  std::uint32_t message_bytes = 0;  // the FlatBuffers message
  // Bytes to read after the 8-byte header: the message, then the attachment.
  std::uint32_t body_bytes() const { return frame_bytes - 4; }
  std::uint32_t attachment_bytes() const { return frame_bytes - 4 - message_bytes; }
};

// kInvalidArgument for a header that cannot start a valid frame: frame_bytes below 4 or above
// `max_frame_bytes`, a message longer than the frame, or an empty message.
Result<FrameHeader> ParseFrameHeader(std::span<const std::byte, kFrameHeaderBytes> bytes,
                                     std::uint32_t max_frame_bytes);
std::array<std::byte, kFrameHeaderBytes> EncodeFrameHeader(std::uint32_t message_bytes,
                                                           std::uint32_t attachment_bytes);

// Reassembles frames from a byte stream read in chunks of any size, so that one read system call
// serves many pipelined frames (and a frame larger than a chunk still arrives whole).
class FrameReader {
 public:
  struct Frame {
    FrameHeader header;
    std::span<const std::byte> message;  // 8-byte aligned, as the verifier wants
    std::span<const std::byte> attachment;
    // Set for a frame read in place (below): the spans point into it, and whoever moves it out
    // keeps them valid for as long as it likes.
    base::Block body;
  };
  // Frames whose body is at least `in_place_from` bytes and not yet in the buffer when their
  // header arrives are read straight into a block of their own, of at least their size (one
  // copy, the kernel's, instead of the buffer's moves and a receiver's copy out of it): the
  // client's fetch responses. Off by default. The blocks come from `pool` when given (reused
  // once their holders let go), else each is new, of exactly the size.
  explicit FrameReader(std::uint32_t max_frame_bytes, std::uint32_t in_place_from = UINT32_MAX,
                       std::shared_ptr<base::BlockPool> pool = nullptr);
  // Where to read next: never empty while Next() has no complete frame to give (call Next until
  // it returns nullopt first). Invalidates the spans of the last frame, unless its body was
  // moved out.
  std::span<std::byte> Room();
  void Filled(std::size_t bytes);
  // The next complete frame, nullopt until one is; kInvalidArgument for a header that cannot
  // start a valid frame (the stream cannot be trusted after it). Its spans stay valid until the
  // next call to Next or Room, or while its `body` lives when it has one.
  Result<std::optional<Frame>> Next();

 private:
  std::uint32_t max_frame_bytes_;
  std::vector<std::byte> buffer_;
  std::size_t begin_ = 0;  // unconsumed bytes are [begin_, end_)
  std::size_t end_ = 0;
  std::size_t want_ = 0;            // bytes the incomplete frame at begin_ needs in all
  std::vector<std::byte> aligned_;  // a frame whose message is not 8-byte aligned, copied
  std::uint32_t in_place_from_;
  // The frame being read in place: its header, its body and how much of it has arrived.
  FrameHeader in_place_header_;
  std::shared_ptr<base::BlockPool> pool_;
  base::Block in_place_;
  std::size_t in_place_filled_ = 0;
};

// Runs the FlatBuffers verifier (bounded depth and table count) over a received message.
// `message` must be 8-byte aligned (as heap buffers are). kInvalidArgument when it fails.
Result<const fb::RequestMessage*> VerifyRequest(std::span<const std::byte> message);
Result<const fb::ResponseMessage*> VerifyResponse(std::span<const std::byte> message);

// Status codes on the wire and back. An unknown wire code (a newer peer) reads as kInternal.
fb::Code ToWire(base::StatusCode code);
base::StatusCode FromWire(fb::Code code);

}  // namespace lockstep::wire

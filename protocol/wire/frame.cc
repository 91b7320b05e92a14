#include "protocol/wire/frame.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "base/endian.h"

namespace lockstep::wire {

namespace {
// Bounds for the verifier: deep enough for every message of the schema, small enough that a
// hostile message cannot make it walk for long.
constexpr std::uint32_t kMaxDepth = 16;
constexpr std::uint32_t kMaxTables = 1u << 20;

template <typename T>
Result<const T*> Verify(std::span<const std::byte> message, const char* what) {
  if (message.empty()) return base::InvalidArgument(fmt::format("empty {}", what));
  if (reinterpret_cast<std::uintptr_t>(message.data()) % 8 != 0) {
    return base::Internal("a received message is not 8-byte aligned");
  }
  const auto* data = reinterpret_cast<const std::uint8_t*>(message.data());
  flatbuffers::Verifier verifier(data, message.size(), kMaxDepth, kMaxTables);
  if (!verifier.VerifyBuffer<T>(nullptr)) {
    return base::InvalidArgument(fmt::format(
        "malformed {}: {} bytes that are not a valid FlatBuffers message", what, message.size()));
  }
  return flatbuffers::GetRoot<T>(data);
}
}  // namespace

Result<FrameHeader> ParseFrameHeader(std::span<const std::byte, kFrameHeaderBytes> bytes,
                                     std::uint32_t max_frame_bytes) {
  FrameHeader h;
  h.frame_bytes = base::LoadLe32(bytes.data());
  h.message_bytes = base::LoadLe32(bytes.data() + 4);
  if (h.frame_bytes < 4) {
    return base::InvalidArgument(fmt::format("frame length {} is below 4", h.frame_bytes));
  }
  if (h.frame_bytes > max_frame_bytes) {
    return base::InvalidArgument(fmt::format("frame of {} bytes is above the limit of {} bytes",
                                             h.frame_bytes, max_frame_bytes));
  }
  if (h.message_bytes == 0 || h.message_bytes > h.frame_bytes - 4) {
    return base::InvalidArgument(fmt::format("frame of {} bytes declares a message of {} bytes",
                                             h.frame_bytes, h.message_bytes));
  }
  return h;
}

std::array<std::byte, kFrameHeaderBytes> EncodeFrameHeader(std::uint32_t message_bytes,
                                                           std::uint32_t attachment_bytes) {
  std::array<std::byte, kFrameHeaderBytes> out;
  base::StoreLe32(out.data(), 4 + message_bytes + attachment_bytes);
  base::StoreLe32(out.data() + 4, message_bytes);
  return out;
}

FrameReader::FrameReader(std::uint32_t max_frame_bytes, std::uint32_t in_place_from,
                         std::shared_ptr<base::BlockPool> pool)
    : max_frame_bytes_(max_frame_bytes),
      buffer_(64 << 10),
      in_place_from_(in_place_from),
      pool_(std::move(pool)) {}

std::span<std::byte> FrameReader::Room() {
  if (in_place_) {
    // Exactly the rest of the frame: the next frame's bytes go to the buffer, by the next read.
    LOCKSTEP_ASSERT(in_place_filled_ < in_place_header_.body_bytes());  // Next() takes it first
    return {in_place_.get() + in_place_filled_, in_place_header_.body_bytes() - in_place_filled_};
  }
  if (begin_ == end_) begin_ = end_ = 0;
  constexpr std::size_t kMinRoom = 4096;
  const std::size_t need = std::max(want_, end_ - begin_ + kMinRoom);
  if (buffer_.size() - end_ < kMinRoom || buffer_.size() - begin_ < need) {
    // Move what is left to the front, then grow if a large frame needs it.
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buffer_.size() < need) buffer_.resize(std::max(need, buffer_.size() * 2));
  }
  return {buffer_.data() + end_, buffer_.size() - end_};
}

void FrameReader::Filled(std::size_t bytes) {
  if (in_place_) {
    LOCKSTEP_ASSERT(in_place_filled_ + bytes <= in_place_header_.body_bytes());
    in_place_filled_ += bytes;
  } else {
    end_ += bytes;
  }
}

Result<std::optional<FrameReader::Frame>> FrameReader::Next() {
  if (in_place_) {
    if (in_place_filled_ < in_place_header_.body_bytes()) return std::optional<Frame>();
    Frame f;
    f.header = in_place_header_;
    f.message = {in_place_.get(), f.header.message_bytes};
    f.attachment = {in_place_.get() + f.header.message_bytes, f.header.attachment_bytes()};
    f.body = std::move(in_place_);
    in_place_filled_ = 0;
    return std::optional<Frame>(std::move(f));
  }
  const std::size_t available = end_ - begin_;
  if (available < kFrameHeaderBytes) return std::optional<Frame>();
  LOCKSTEP_ASSIGN_OR_RETURN(FrameHeader header,
                            ParseFrameHeader(std::span<const std::byte, kFrameHeaderBytes>(
                                                 buffer_.data() + begin_, kFrameHeaderBytes),
                                             max_frame_bytes_));
  const std::size_t total = kFrameHeaderBytes + header.body_bytes();
  if (available < total) {
    if (header.body_bytes() >= in_place_from_) {
      // A large frame: its body goes to a block of its own, with what has arrived of it.
      const std::size_t arrived = available - kFrameHeaderBytes;
      in_place_header_ = header;
      in_place_ = pool_ ? pool_->Take(header.body_bytes()) : base::NewBlock(header.body_bytes());
      std::memcpy(in_place_.get(), buffer_.data() + begin_ + kFrameHeaderBytes, arrived);
      in_place_filled_ = arrived;
      begin_ = end_ = 0;
      want_ = 0;
      return std::optional<Frame>();
    }
    want_ = total;
    return std::optional<Frame>();
  }
  want_ = 0;
  const std::byte* body = buffer_.data() + begin_ + kFrameHeaderBytes;
  begin_ += total;
  if (reinterpret_cast<std::uintptr_t>(body) % 8 != 0) {
    aligned_.assign(body, body + header.body_bytes());  // keeps its capacity: no allocation
    body = aligned_.data();
  }
  Frame f;
  f.header = header;
  f.message = {body, header.message_bytes};
  f.attachment = {body + header.message_bytes, header.attachment_bytes()};
  return std::optional<Frame>(std::move(f));
}

Result<const fb::RequestMessage*> VerifyRequest(std::span<const std::byte> message) {
  return Verify<fb::RequestMessage>(message, "request");
}

Result<const fb::ResponseMessage*> VerifyResponse(std::span<const std::byte> message) {
  return Verify<fb::ResponseMessage>(message, "response");
}

fb::Code ToWire(base::StatusCode code) {
  using C = base::StatusCode;
  switch (code) {
    case C::kOk:
      return fb::Code::Ok;
    case C::kInvalidArgument:
      return fb::Code::InvalidArgument;
    case C::kNotFound:
      return fb::Code::NotFound;
    case C::kAlreadyExists:
      return fb::Code::AlreadyExists;
    case C::kFailedPrecondition:
      return fb::Code::FailedPrecondition;
    case C::kOutOfRange:
      return fb::Code::OutOfRange;
    case C::kConflict:
      return fb::Code::Conflict;
    case C::kResourceExhausted:
      return fb::Code::ResourceExhausted;
    case C::kUnavailable:
      return fb::Code::Unavailable;
    case C::kDeadlineExceeded:
      return fb::Code::DeadlineExceeded;
    case C::kIoError:
      return fb::Code::IoError;
    case C::kDataLoss:
      return fb::Code::DataLoss;
    case C::kInternal:
      return fb::Code::Internal;
  }
  return fb::Code::Internal;
}

base::StatusCode FromWire(fb::Code code) {
  using C = base::StatusCode;
  switch (code) {
    case fb::Code::Ok:
      return C::kOk;
    case fb::Code::InvalidArgument:
      return C::kInvalidArgument;
    case fb::Code::NotFound:
      return C::kNotFound;
    case fb::Code::AlreadyExists:
      return C::kAlreadyExists;
    case fb::Code::FailedPrecondition:
      return C::kFailedPrecondition;
    case fb::Code::OutOfRange:
      return C::kOutOfRange;
    case fb::Code::Conflict:
      return C::kConflict;
    case fb::Code::ResourceExhausted:
      return C::kResourceExhausted;
    case fb::Code::Unavailable:
      return C::kUnavailable;
    case fb::Code::DeadlineExceeded:
      return C::kDeadlineExceeded;
    case fb::Code::IoError:
      return C::kIoError;
    case fb::Code::DataLoss:
      return C::kDataLoss;
    case fb::Code::Internal:
      return C::kInternal;
  }
  return C::kInternal;
}

}  // namespace lockstep::wire

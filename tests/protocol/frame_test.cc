// Proves the framing shared by the server and the client: headers are validated (lengths below
// 4, above the limit, messages longer than their frame, empty messages), and the FrameReader
// gives back exactly the frames written, whole and 8-byte aligned, however the byte stream is
// cut into reads — including frames far larger than its buffer.
#include "protocol/wire/frame.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "tests/testing/seed.h"

namespace lockstep::wire {
namespace {

using base::StatusCode;

std::array<std::byte, 8> Header(std::uint32_t frame_bytes, std::uint32_t message_bytes) {
  std::array<std::byte, 8> h;
  for (int i = 0; i < 4; ++i) {
    h[i] = static_cast<std::byte>(frame_bytes >> (8 * i));
    h[4 + i] = static_cast<std::byte>(message_bytes >> (8 * i));
  }
  return h;
}

TEST(Frame, HeadersThatCannotStartAFrameAreRefused) {
  EXPECT_EQ(ParseFrameHeader(Header(3, 1), 1 << 20).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFrameHeader(Header(0xffffffff, 4), 1 << 20).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFrameHeader(Header(10, 7), 1 << 20).status().code(),
            StatusCode::kInvalidArgument);  // 4 + 7 > 10
  EXPECT_EQ(ParseFrameHeader(Header(10, 0), 1 << 20).status().code(),
            StatusCode::kInvalidArgument);  // empty message
  auto ok = ParseFrameHeader(Header(10, 6), 1 << 20);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->body_bytes(), 6u);
  EXPECT_EQ(ok->attachment_bytes(), 0u);
  auto h = EncodeFrameHeader(5, 7);
  auto back = ParseFrameHeader(h, 1 << 20);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->message_bytes, 5u);
  EXPECT_EQ(back->attachment_bytes(), 7u);
}

TEST(Frame, TheReaderReassemblesFramesFromAnyChunking) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::size_t in_place_frames = 0;
  std::size_t released_blocks = 0;
  for (int round = 0; round < 50; ++round) {
    // A stream of frames: mostly small, some larger than the reader's 64 KiB buffer.
    std::vector<std::byte> stream;
    std::vector<std::pair<std::vector<std::byte>, std::vector<std::byte>>> sent;
    for (int f = 0; f < 40; ++f) {
      const std::size_t message = 1 + rng() % (rng() % 8 == 0 ? 200'000 : 300);
      const std::size_t attachment = rng() % 3 == 0 ? rng() % 5000 : 0;
      std::vector<std::byte> m(message), a(attachment);
      for (auto& b : m) b = static_cast<std::byte>(rng());
      for (auto& b : a) b = static_cast<std::byte>(rng());
      auto h = EncodeFrameHeader(static_cast<std::uint32_t>(message),
                                 static_cast<std::uint32_t>(attachment));
      stream.insert(stream.end(), h.begin(), h.end());
      stream.insert(stream.end(), m.begin(), m.end());
      stream.insert(stream.end(), a.begin(), a.end());
      sent.emplace_back(std::move(m), std::move(a));
    }
    // Every other round reads frames of 100,000 bytes and more in place: those whose body is
    // moved out must stay readable after every later read. Every fourth takes the blocks from a
    // pool and lets every other body go at once, so that later frames reuse their blocks: a
    // block still held is never handed out again.
    const bool in_place = round % 2 == 1;
    const bool pooled = round % 4 == 3;
    auto pool = pooled ? base::BlockPool::Create(1 << 20) : nullptr;
    FrameReader reader(1 << 20, in_place ? 100'000 : UINT32_MAX, pool);
    std::size_t released = 0;
    struct Kept {
      base::Block body;
      std::span<const std::byte> message, attachment;
      std::size_t index;
    };
    std::vector<Kept> kept;
    std::size_t pos = 0, got = 0;
    while (got < sent.size()) {
      ASSERT_LE(pos, stream.size());
      auto room = reader.Room();
      ASSERT_FALSE(room.empty());
      const std::size_t n = std::min(
          {room.size(), stream.size() - pos, static_cast<std::size_t>(1 + rng() % 70'000)});
      std::memcpy(room.data(), stream.data() + pos, n);
      reader.Filled(n);
      pos += n;
      for (;;) {
        auto frame = reader.Next();
        ASSERT_TRUE(frame.ok()) << frame.status().ToString();
        if (!*frame) break;
        ASSERT_LT(got, sent.size());
        const auto& [m, a] = sent[got++];
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>((*frame)->message.data()) % 8, 0u);
        ASSERT_EQ((*frame)->message.size(), m.size());
        ASSERT_EQ((*frame)->attachment.size(), a.size());
        EXPECT_EQ(std::memcmp((*frame)->message.data(), m.data(), m.size()), 0);
        EXPECT_TRUE(a.empty() || std::memcmp((*frame)->attachment.data(), a.data(), a.size()) == 0);
        if ((*frame)->body) {
          EXPECT_TRUE(in_place);
          EXPECT_GE(m.size() + a.size(), 100'000u);
          if (pooled && got % 2 == 0) {
            ++released;  // checked above; its block goes back to the pool now
            (*frame)->body.reset();
            continue;
          }
          kept.push_back(
              {std::move((*frame)->body), (*frame)->message, (*frame)->attachment, got - 1});
        }
      }
    }
    EXPECT_EQ(pos, stream.size());
    for (const Kept& k : kept) {
      const auto& [m, a] = sent[k.index];
      EXPECT_EQ(std::memcmp(k.message.data(), m.data(), m.size()), 0);
      EXPECT_TRUE(a.empty() || std::memcmp(k.attachment.data(), a.data(), a.size()) == 0);
    }
    if (in_place) in_place_frames += kept.size();
    if (pooled) released_blocks += released;
  }
  EXPECT_GT(in_place_frames, 10u);  // the set-up reaches the in-place path
  EXPECT_GT(released_blocks, 5u);   // and blocks go back to the pool mid-stream
}

TEST(Frame, TheReaderRefusesABadHeaderMidStream) {
  FrameReader reader(1 << 20);
  auto good = EncodeFrameHeader(2, 0);
  std::vector<std::byte> stream(good.begin(), good.end());
  stream.push_back(std::byte{1});
  stream.push_back(std::byte{2});
  auto bad = Header(0xffffffff, 10);
  stream.insert(stream.end(), bad.begin(), bad.end());
  auto room = reader.Room();
  std::memcpy(room.data(), stream.data(), stream.size());
  reader.Filled(stream.size());
  auto first = reader.Next();
  ASSERT_TRUE(first.ok() && *first);
  EXPECT_EQ(reader.Next().status().code(), StatusCode::kInvalidArgument);
}

TEST(Frame, VerificationRefusesGarbage) {
  alignas(8) std::byte junk[64];
  for (auto& b : junk) b = std::byte{0x5a};
  EXPECT_EQ(VerifyRequest(junk).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyResponse(junk).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyRequest({}).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lockstep::wire

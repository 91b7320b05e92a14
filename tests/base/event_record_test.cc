// Proves the event record format: every field round-trips (absent and empty keys differ, headers
// keep their order), limits are enforced with messages naming the field, and decoding survives
// hostile input — every truncation, every bit flip, lying lengths, and random garbage — with a
// clear error and without reading outside the buffer.
#include "base/event_record.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "base/checksum.h"
#include "base/endian.h"
#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"

namespace lockstep::base {
namespace {

using testing::AsBytes;
using testing::AsString;

std::vector<std::byte> Encode(const EventFields& f, std::uint64_t offset = 7,
                              std::uint64_t lsn = 99) {
  EXPECT_TRUE(ValidateEvent(f, {}).ok());
  std::vector<std::byte> out(EncodedEventBytes(f));
  EncodeEvent(f, Offset(offset), Lsn(lsn), out);
  return out;
}

struct Sample {
  std::string key = "account-42";
  std::string payload = R"({"from":"a","to":"b","amount":10})";
  std::vector<std::string> header_values = {"abc123", ""};
  std::vector<EventHeader> headers;
  EventFields fields;
  Sample() {
    headers = {{"trace-id", AsBytes(header_values[0])}, {"empty", AsBytes(header_values[1])}};
    fields.key = AsBytes(key);
    fields.payload = AsBytes(payload);
    fields.type = "TransferCompleted";
    fields.schema_version = 3;
    fields.headers = headers;
    fields.timestamp_ms = 1'700'000'000'123;
  }
};

TEST(EventRecord, RoundTripsEveryField) {
  Sample s;
  auto bytes = Encode(s.fields);
  EXPECT_EQ(bytes.size(), EncodedEventBytes(s.fields));
  auto v = DecodeEvent(bytes);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->offset(), Offset(7));
  EXPECT_EQ(v->lsn(), Lsn(99));
  EXPECT_EQ(v->timestamp_ms(), 1'700'000'000'123);
  EXPECT_EQ(v->schema_version(), 3);
  EXPECT_EQ(v->type(), "TransferCompleted");
  ASSERT_TRUE(v->key().has_value());
  EXPECT_EQ(AsString(*v->key()), s.key);
  EXPECT_EQ(AsString(v->payload()), s.payload);
  EXPECT_EQ(v->record().size(), bytes.size());
  std::vector<std::pair<std::string, std::string>> headers;
  v->ForEachHeader(
      [&](const EventHeader& h) { headers.emplace_back(std::string(h.name), AsString(h.value)); });
  EXPECT_EQ(headers, (std::vector<std::pair<std::string, std::string>>{{"trace-id", "abc123"},
                                                                       {"empty", ""}}));
}

TEST(EventRecord, AbsentAndEmptyKeysDiffer) {
  EventFields f;
  f.payload = AsBytes("p");
  auto none = DecodeEvent(Encode(f));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->key().has_value());
  const std::string empty;
  f.key = AsBytes(empty);
  auto present = DecodeEvent(Encode(f));
  ASSERT_TRUE(present.ok());
  ASSERT_TRUE(present->key().has_value());
  EXPECT_TRUE(present->key()->empty());
}

TEST(EventRecord, MinimalEventIsJustTheFixedFields) {
  EventFields f;
  auto bytes = Encode(f, 0, 1);
  EXPECT_EQ(bytes.size(), kEventFixedBytes);
  auto v = DecodeEvent(bytes);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->payload().empty());
  EXPECT_EQ(v->header_count(), 0u);
}

TEST(EventRecord, ConsecutiveRecordsDecodeOneByOne) {
  Sample s;
  auto a = Encode(s.fields, 1, 10);
  EventFields small;
  small.payload = AsBytes("second");
  auto b = Encode(small, 2, 11);
  std::vector<std::byte> both = a;
  both.insert(both.end(), b.begin(), b.end());
  auto first = DecodeEvent(both);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->record().size(), a.size());
  auto second = DecodeEvent(Bytes(both).subspan(first->record().size()));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->offset(), Offset(2));
  EXPECT_EQ(AsString(second->payload()), "second");
}

TEST(EventRecord, LimitsAreEnforcedWithClearMessages) {
  EventLimits limits;
  limits.key_bytes_max = 4;
  limits.type_bytes_max = 3;
  limits.header_count_max = 1;
  limits.event_bytes_max = 100;
  const std::string five = "12345";
  EventFields f;
  f.key = AsBytes(five);
  Status s = ValidateEvent(f, limits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("key is 5 bytes, above the limit of 4"), std::string::npos)
      << s.ToString();
  f.key.reset();
  f.type = "long";
  EXPECT_NE(ValidateEvent(f, limits).message().find("type"), std::string::npos);
  f.type = "";
  const std::vector<EventHeader> two = {{"a", {}}, {"b", {}}};
  f.headers = two;
  EXPECT_NE(ValidateEvent(f, limits).message().find("2 headers"), std::string::npos);
  f.headers = {};
  const std::string big(60, 'x');
  f.payload = AsBytes(big);
  EXPECT_NE(ValidateEvent(f, limits).message().find("record is 108 bytes"), std::string::npos);
  // Limits above what the 16-bit fields can count are capped by the format.
  EventLimits huge;
  huge.type_bytes_max = 1 << 20;
  huge.event_bytes_max = 1 << 22;
  const std::string long_type(70000, 't');
  f.payload = {};
  f.type = long_type;
  EXPECT_EQ(ValidateEvent(f, huge).code(), StatusCode::kInvalidArgument);
}

TEST(EventRecord, EveryTruncationIsRejected) {
  Sample s;
  auto bytes = Encode(s.fields);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    auto v = DecodeEvent(cut);
    ASSERT_FALSE(v.ok()) << "accepted " << n << " of " << bytes.size() << " bytes";
    EXPECT_EQ(v.status().code(), StatusCode::kDataLoss);
  }
}

TEST(EventRecord, EveryBitFlipIsRejected) {
  Sample s;
  auto bytes = Encode(s.fields);
  for (std::size_t bit = 0; bit < bytes.size() * 8; ++bit) {
    bytes[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    ASSERT_FALSE(DecodeEvent(bytes).ok()) << "bit " << bit;
    bytes[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
  }
}

// Rewrites a field and fixes the checksum, so only the structural checks stand in the way.
std::vector<std::byte> WithField(std::vector<std::byte> bytes, std::size_t at, std::uint32_t value,
                                 int width) {
  if (width == 2) StoreLe16(bytes.data() + at, static_cast<std::uint16_t>(value));
  if (width == 4) StoreLe32(bytes.data() + at, value);
  StoreLe32(bytes.data() + 4,
            static_cast<std::uint32_t>(Xxh3(Bytes(bytes).subspan(8, LoadLe32(bytes.data()) - 8))));
  return bytes;
}

TEST(EventRecord, LyingLengthsAreCaughtEvenWithAValidChecksum) {
  Sample s;
  const auto bytes = Encode(s.fields);
  const std::vector<std::pair<std::size_t, int>> fields = {{12, 2}, {14, 2}, {40, 4}, {44, 4}};
  for (auto [at, width] : fields) {
    for (std::uint32_t value : {0u, 1u, 255u, 65535u, 0x7fffffffu, 0xffffffffu}) {
      if (width == 2 && value > 0xffff) continue;
      auto lying = WithField(bytes, at, value, width);
      auto v = DecodeEvent(lying);
      const bool same =
          (width == 2 ? LoadLe16(bytes.data() + at) : LoadLe32(bytes.data() + at)) == value;
      if (!same) {
        EXPECT_FALSE(v.ok()) << "field at " << at << " = " << value;
      }
    }
  }
  // A header name length pointing past the record.
  const std::size_t headers_at = kEventFixedBytes + s.fields.type.size() + s.key.size();
  auto lying = WithField(bytes, headers_at, 60000, 2);
  EXPECT_FALSE(DecodeEvent(lying).ok());
}

TEST(EventRecord, RandomGarbageNeverCrashesTheDecoder) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  Sample s;
  const auto valid = Encode(s.fields);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> bytes(std::uniform_int_distribution<std::size_t>(0, 300)(rng));
    for (auto& b : bytes) b = static_cast<std::byte>(rng());
    if (i % 2 == 0 && bytes.size() >= 8) {
      // Plausible length and version, valid checksum: only the structure can reject it.
      StoreLe32(bytes.data(), static_cast<std::uint32_t>(bytes.size()));
      if (bytes.size() > 8) bytes[8] = std::byte{kEventFormatVersion};
      if (bytes.size() > 9) bytes[9] = std::byte{static_cast<std::uint8_t>(rng() & 1)};
      StoreLe32(bytes.data() + 4, static_cast<std::uint32_t>(Xxh3(Bytes(bytes).subspan(8))));
    }
    auto v = DecodeEvent(bytes);
    if (v.ok()) {
      ++accepted;
      // Whatever is accepted is self-consistent: every view lies inside the input.
      EXPECT_LE(v->record().size(), bytes.size());
      std::size_t seen = 0;
      v->ForEachHeader([&](const EventHeader&) { ++seen; });
      EXPECT_EQ(seen, v->header_count());
    }
  }
  EXPECT_TRUE(DecodeEvent(valid).ok());
  std::printf("random records accepted as well-formed: %d of 20000\n", accepted);
}

}  // namespace
}  // namespace lockstep::base

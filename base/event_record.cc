#include "base/event_record.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "base/assert.h"
#include "base/checksum.h"
#include "base/endian.h"

namespace lockstep::base {
namespace {

constexpr std::uint8_t kFlagHasKey = 1;
constexpr std::size_t kChecksumFrom = 8;

std::size_t HeadersBytes(std::span<const EventHeader> headers) {
  std::size_t n = 0;
  for (const auto& h : headers) n += 2 + h.name.size() + 4 + h.value.size();
  return n;
}

std::uint32_t ChecksumOf(Bytes record) {
  return static_cast<std::uint32_t>(Xxh3(record.subspan(kChecksumFrom)));
}

// Copies `bytes` to `out` at `*at` and advances it.
void Put(std::span<std::byte> out, std::size_t* at, Bytes bytes) {
  if (!bytes.empty()) std::memcpy(out.data() + *at, bytes.data(), bytes.size());
  *at += bytes.size();
}

Bytes AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string_view AsString(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

Status TooLong(std::string_view what, std::size_t bytes, std::size_t max) {
  return InvalidArgument(
      fmt::format("event {} is {} bytes, above the limit of {}", what, bytes, max));
}

// A cursor over a region whose every read is bounds-checked.
class Cursor {
 public:
  explicit Cursor(Bytes region) : region_(region) {}
  bool Take(std::size_t n, Bytes* out) {
    if (region_.size() - pos_ < n) return false;
    *out = region_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  std::size_t left() const { return region_.size() - pos_; }

 private:
  Bytes region_;
  std::size_t pos_ = 0;
};

Status Malformed(std::string_view why) {
  return DataLoss(fmt::format("malformed event record: {}", why));
}

// Walks the header region: `count` headers that fill it exactly, within the limits.
Status CheckHeaders(Bytes region, std::size_t count, const EventLimits& limits) {
  Cursor c(region);
  for (std::size_t i = 0; i < count; ++i) {
    Bytes field;
    if (!c.Take(2, &field)) return Malformed("header name length runs past the record");
    const std::uint16_t name_bytes = LoadLe16(field.data());
    if (name_bytes > limits.header_name_bytes_max) return Malformed("header name too long");
    if (!c.Take(name_bytes, &field)) return Malformed("header name runs past the record");
    if (!c.Take(4, &field)) return Malformed("header value length runs past the record");
    const std::uint32_t value_bytes = LoadLe32(field.data());
    if (value_bytes > limits.header_value_bytes_max) return Malformed("header value too long");
    if (!c.Take(value_bytes, &field)) return Malformed("header value runs past the record");
  }
  if (c.left() != 0) return Malformed("header region has trailing bytes");
  return Status::Ok();
}

}  // namespace

Status ValidateEvent(const EventFields& f, const EventLimits& configured) {
  // The format itself caps what 16-bit fields can count, whatever the limits say.
  EventLimits limits = configured;
  limits.type_bytes_max = std::min<std::uint32_t>(limits.type_bytes_max, UINT16_MAX);
  limits.header_count_max = std::min<std::uint32_t>(limits.header_count_max, UINT16_MAX);
  limits.header_name_bytes_max = std::min<std::uint32_t>(limits.header_name_bytes_max, UINT16_MAX);
  if (f.key && f.key->size() > limits.key_bytes_max) {
    return TooLong("key", f.key->size(), limits.key_bytes_max);
  }
  if (f.type.size() > limits.type_bytes_max)
    return TooLong("type", f.type.size(), limits.type_bytes_max);
  if (f.headers.size() > limits.header_count_max) {
    return InvalidArgument(fmt::format("event has {} headers, above the limit of {}",
                                       f.headers.size(), limits.header_count_max));
  }
  for (const auto& h : f.headers) {
    if (h.name.size() > limits.header_name_bytes_max) {
      return TooLong("header name", h.name.size(), limits.header_name_bytes_max);
    }
    if (h.value.size() > limits.header_value_bytes_max) {
      return TooLong(fmt::format("header {:?} value", h.name), h.value.size(),
                     limits.header_value_bytes_max);
    }
  }
  const std::uint64_t total = kEventFixedBytes + f.type.size() + (f.key ? f.key->size() : 0) +
                              HeadersBytes(f.headers) + std::uint64_t{f.payload.size()};
  if (total > limits.event_bytes_max) return TooLong("record", total, limits.event_bytes_max);
  return Status::Ok();
}

std::size_t EncodedEventBytes(const EventFields& f) {
  return kEventFixedBytes + f.type.size() + (f.key ? f.key->size() : 0) + HeadersBytes(f.headers) +
         f.payload.size();
}

void EncodeEvent(const EventFields& f, Offset offset, Lsn lsn, std::span<std::byte> out) {
  LOCKSTEP_ASSERT(out.size() == EncodedEventBytes(f));
  std::byte* p = out.data();
  StoreLe32(p + 0, static_cast<std::uint32_t>(out.size()));
  p[8] = std::byte{kEventFormatVersion};
  p[9] = std::byte{f.key ? kFlagHasKey : std::uint8_t{0}};
  StoreLe16(p + 10, f.schema_version);
  StoreLe16(p + 12, static_cast<std::uint16_t>(f.headers.size()));
  StoreLe16(p + 14, static_cast<std::uint16_t>(f.type.size()));
  StoreLe64(p + 16, offset.value());
  StoreLe64(p + 24, lsn.value());
  StoreLe64(p + 32, static_cast<std::uint64_t>(f.timestamp_ms));
  StoreLe32(p + 40, static_cast<std::uint32_t>(f.key ? f.key->size() : 0));
  StoreLe32(p + 44, static_cast<std::uint32_t>(f.payload.size()));
  std::size_t at = kEventFixedBytes;
  Put(out, &at, AsBytes(f.type));
  if (f.key) Put(out, &at, *f.key);
  for (const auto& h : f.headers) {
    StoreLe16(p + at, static_cast<std::uint16_t>(h.name.size()));
    at += 2;
    Put(out, &at, AsBytes(h.name));
    StoreLe32(p + at, static_cast<std::uint32_t>(h.value.size()));
    at += 4;
    Put(out, &at, h.value);
  }
  Put(out, &at, f.payload);
  LOCKSTEP_ASSERT(at == out.size());
  StoreLe32(p + 4, ChecksumOf(out));
}

Result<EventView> DecodeEvent(Bytes bytes, const EventLimits& limits) {
  if (bytes.size() < kEventFixedBytes) return Malformed("shorter than the fixed fields");
  const std::byte* p = bytes.data();
  const std::uint32_t length = LoadLe32(p);
  if (length < kEventFixedBytes || length > bytes.size()) {
    return Malformed(
        fmt::format("length {} outside [{}, {}]", length, kEventFixedBytes, bytes.size()));
  }
  if (length > limits.event_bytes_max) return Malformed("longer than event_bytes_max");
  const Bytes record = bytes.first(length);
  if (std::to_integer<std::uint8_t>(p[8]) != kEventFormatVersion) {
    return Malformed(fmt::format("unknown format version {}", std::to_integer<int>(p[8])));
  }
  if (limits.verify_checksum && LoadLe32(p + 4) != ChecksumOf(record)) {
    return Malformed("checksum mismatch");
  }
  const std::uint8_t flags = std::to_integer<std::uint8_t>(p[9]);
  if ((flags & ~kFlagHasKey) != 0) return Malformed("unknown flags");
  EventView v;
  v.schema_version_ = LoadLe16(p + 10);
  v.header_count_ = LoadLe16(p + 12);
  const std::uint16_t type_bytes = LoadLe16(p + 14);
  v.offset_ = Offset(LoadLe64(p + 16));
  v.lsn_ = Lsn(LoadLe64(p + 24));
  v.timestamp_ms_ = static_cast<std::int64_t>(LoadLe64(p + 32));
  const std::uint32_t key_bytes = LoadLe32(p + 40);
  const std::uint32_t payload_bytes = LoadLe32(p + 44);
  if (type_bytes > limits.type_bytes_max) return Malformed("type too long");
  if (key_bytes > limits.key_bytes_max) return Malformed("key too long");
  if ((flags & kFlagHasKey) == 0 && key_bytes != 0) return Malformed("key bytes without a key");
  if (v.header_count_ > limits.header_count_max) return Malformed("too many headers");
  const std::uint64_t fixed_parts =
      kEventFixedBytes + std::uint64_t{type_bytes} + key_bytes + payload_bytes;
  if (fixed_parts > length) return Malformed("fields run past the record");
  Cursor c(record.subspan(kEventFixedBytes));
  Bytes type;
  Bytes key;
  c.Take(type_bytes, &type);
  c.Take(key_bytes, &key);
  c.Take(c.left() - payload_bytes, &v.headers_);
  c.Take(payload_bytes, &v.payload_);
  LOCKSTEP_RETURN_IF_ERROR(CheckHeaders(v.headers_, v.header_count_, limits));
  v.type_ = AsString(type);
  if ((flags & kFlagHasKey) != 0) v.key_ = key;
  v.record_ = record;
  return v;
}

Offset PeekEventOffset(Bytes record) {
  LOCKSTEP_ASSERT(record.size() >= kEventFixedBytes);
  return Offset(LoadLe64(record.data() + 16));
}

EventHeader NextEventHeader(Bytes& region) {
  const std::uint16_t name_bytes = LoadLe16(region.data());
  const std::string_view name = AsString(region.subspan(2, name_bytes));
  const std::uint32_t value_bytes = LoadLe32(region.data() + 2 + name_bytes);
  const Bytes value = region.subspan(2 + name_bytes + 4, value_bytes);
  region = region.subspan(2 + name_bytes + 4 + value_bytes);
  return EventHeader{name, value};
}

}  // namespace lockstep::base

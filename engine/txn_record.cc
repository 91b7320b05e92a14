#include "engine/txn_record.h"

#include <cstring>

#include <fmt/format.h>

#include "base/endian.h"

namespace lockstep::engine {
namespace {

using base::LoadLe16;
using base::LoadLe32;
using base::LoadLe64;
using base::StoreLe16;
using base::StoreLe32;
using base::StoreLe64;

constexpr std::uint8_t kFlagIdempotencyKey = 1;
// An event operation: kind:u8, topic:u32, partition:u32, then the record (length:u32 first).
constexpr std::size_t kEventOpHeader = 9;

Status Malformed(std::string_view why) {
  return base::DataLoss(fmt::format("malformed transaction record: {}", why));
}

std::string_view AsString(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Bounds-checked reads from the front of a byte range.
class Reader {
 public:
  explicit Reader(Bytes* rest) : rest_(rest) {}
  bool Take(std::size_t n, Bytes* out) {
    if (rest_->size() < n) return false;
    *out = rest_->first(n);
    *rest_ = rest_->subspan(n);
    return true;
  }
  bool U8(std::uint8_t* v) {
    Bytes b;
    if (!Take(1, &b)) return false;
    *v = std::to_integer<std::uint8_t>(b[0]);
    return true;
  }
  bool U16(std::uint16_t* v) { return Fixed(v, LoadLe16); }
  bool U32(std::uint32_t* v) { return Fixed(v, LoadLe32); }
  bool U64(std::uint64_t* v) { return Fixed(v, LoadLe64); }

 private:
  template <typename T, typename Load>
  bool Fixed(T* v, Load load) {
    Bytes b;
    if (!Take(sizeof(T), &b)) return false;
    *v = load(b.data());
    return true;
  }
  Bytes* rest_;
};

Result<TxnOp> ReadPut(Reader& r) {
  std::uint32_t table = 0, key_bytes = 0, value_bytes = 0;
  PutOp op;
  if (!r.U32(&table) || !r.U32(&key_bytes) || !r.U32(&value_bytes) || !r.Take(key_bytes, &op.key) ||
      !r.Take(value_bytes, &op.value)) {
    return Malformed("put runs past the record");
  }
  op.table = TableId(table);
  return TxnOp(op);
}

Result<TxnOp> ReadDelete(Reader& r) {
  std::uint32_t table = 0, key_bytes = 0;
  DeleteOp op;
  if (!r.U32(&table) || !r.U32(&key_bytes) || !r.Take(key_bytes, &op.key)) {
    return Malformed("delete runs past the record");
  }
  op.table = TableId(table);
  return TxnOp(op);
}

// Takes one event record from the front of `rest`: checked whole, or only for its extent when
// the limits say not to verify (a verified batch: walks pass over the events of other
// partitions, and whoever uses the record decodes it).
Result<Bytes> TakeEventRecord(Bytes& rest, const base::EventLimits& limits) {
  if (!limits.verify_checksum) return NextRecordIn(rest);
  auto event = base::DecodeEvent(rest, limits);
  if (!event.ok()) return Malformed(event.status().message());
  const Bytes record = event->record();
  rest = rest.subspan(record.size());
  return record;
}

Result<TxnOp> ReadEvent(Reader& r, Bytes& rest, const base::EventLimits& limits) {
  std::uint32_t topic = 0, partition = 0;
  if (!r.U32(&topic) || !r.U32(&partition)) return Malformed("event runs past the record");
  LOCKSTEP_ASSIGN_OR_RETURN(Bytes record, TakeEventRecord(rest, limits));
  return TxnOp(EventOp{TopicId(topic), PartitionId(partition), record});
}

Result<TxnOp> ReadOffset(Reader& r) {
  std::uint32_t topic = 0, partition = 0;
  std::uint64_t generation = 0, offset = 0;
  std::uint16_t group_bytes = 0;
  Bytes group;
  if (!r.U32(&topic) || !r.U32(&partition) || !r.U64(&generation) || !r.U64(&offset) ||
      !r.U16(&group_bytes) || !r.Take(group_bytes, &group)) {
    return Malformed("offset commit runs past the record");
  }
  return TxnOp(OffsetOp{TopicId(topic), PartitionId(partition), generation, Offset(offset),
                        AsString(group)});
}

Result<TxnOp> ReadCatalog(Reader& r) {
  std::uint8_t change = 0;
  std::uint32_t id = 0, partitions = 0;
  std::uint16_t name_bytes = 0;
  std::uint64_t retention_ms = 0, retention_bytes = 0;
  Bytes name;
  if (!r.U8(&change) || !r.U32(&id) || !r.U16(&name_bytes) || !r.Take(name_bytes, &name) ||
      !r.U32(&partitions) || !r.U64(&retention_ms) || !r.U64(&retention_bytes)) {
    return Malformed("catalog change runs past the record");
  }
  if (change < 1 || change > 4) return Malformed(fmt::format("unknown catalog change {}", change));
  return TxnOp(CatalogOp{static_cast<CatalogChange>(change), id, AsString(name), partitions,
                         static_cast<std::int64_t>(retention_ms), retention_bytes});
}

Result<TxnOp> ReadOp(OpKind kind, Reader& r, Bytes& rest, const base::EventLimits& limits) {
  switch (kind) {
    case OpKind::kPut:
      return ReadPut(r);
    case OpKind::kDelete:
      return ReadDelete(r);
    case OpKind::kEvent:
      return ReadEvent(r, rest, limits);
    case OpKind::kOffset:
      return ReadOffset(r);
    case OpKind::kCatalog:
      return ReadCatalog(r);
    case OpKind::kEventRun:
      break;  // the reader enters runs itself
  }
  return Malformed(fmt::format("unknown operation kind {}", static_cast<int>(kind)));
}

}  // namespace

Result<Bytes> NextRecordIn(Bytes& records) {
  const std::uint32_t length = records.size() >= 4 ? base::LoadLe32(records.data()) : 0;
  if (length < base::kEventFixedBytes || length > records.size()) {
    return Malformed(fmt::format("event length {} outside [{}, {}]", length, base::kEventFixedBytes,
                                 records.size()));
  }
  const Bytes record = records.first(length);
  records = records.subspan(length);
  return record;
}

std::byte* TxnRecordWriter::Grow(std::size_t n) {
  const std::size_t at = buffer_.size();
  buffer_.resize(at + n);
  return buffer_.data() + at;
}

void TxnRecordWriter::Reset(std::int64_t commit_ms,
                            std::optional<std::string_view> idempotency_key) {
  buffer_.clear();
  op_count_ = 0;
  last_event_at_ = kNoEvent;
  std::byte* p = Grow(kTxnFixedBytes);
  p[0] = std::byte{kTxnRecordVersion};
  p[1] = std::byte{idempotency_key ? kFlagIdempotencyKey : std::uint8_t{0}};
  StoreLe16(p + 2, 0);
  StoreLe32(p + 4, 0);  // op_count, patched by Finish
  StoreLe64(p + 8, static_cast<std::uint64_t>(commit_ms));
  if (idempotency_key) {
    LOCKSTEP_ASSERT(idempotency_key->size() <= UINT16_MAX);
    std::byte* k = Grow(2 + idempotency_key->size());
    StoreLe16(k, static_cast<std::uint16_t>(idempotency_key->size()));
    std::memcpy(k + 2, idempotency_key->data(), idempotency_key->size());
  }
}

void TxnRecordWriter::Put(TableId table, Bytes key, Bytes value) {
  std::byte* p = Grow(1 + 12 + key.size() + value.size());
  p[0] = std::byte{static_cast<std::uint8_t>(OpKind::kPut)};
  StoreLe32(p + 1, table.value());
  StoreLe32(p + 5, static_cast<std::uint32_t>(key.size()));
  StoreLe32(p + 9, static_cast<std::uint32_t>(value.size()));
  if (!key.empty()) std::memcpy(p + 13, key.data(), key.size());
  if (!value.empty()) std::memcpy(p + 13 + key.size(), value.data(), value.size());
  ++op_count_;
  last_event_at_ = kNoEvent;
}

void TxnRecordWriter::Delete(TableId table, Bytes key) {
  std::byte* p = Grow(1 + 8 + key.size());
  p[0] = std::byte{static_cast<std::uint8_t>(OpKind::kDelete)};
  StoreLe32(p + 1, table.value());
  StoreLe32(p + 5, static_cast<std::uint32_t>(key.size()));
  if (!key.empty()) std::memcpy(p + 9, key.data(), key.size());
  ++op_count_;
  last_event_at_ = kNoEvent;
}

std::span<std::byte> TxnRecordWriter::AddEvent(TopicId topic, PartitionId partition,
                                               std::size_t event_bytes) {
  LOCKSTEP_ASSERT(event_bytes <= UINT32_MAX);
  if (last_event_at_ == kNoEvent || last_topic_ != topic || last_partition_ != partition) {
    last_event_at_ = buffer_.size();
    last_topic_ = topic;
    last_partition_ = partition;
    std::byte* p = Grow(kEventOpHeader + event_bytes);
    p[0] = std::byte{static_cast<std::uint8_t>(OpKind::kEvent)};
    StoreLe32(p + 1, topic.value());
    StoreLe32(p + 5, partition.value());
    ++op_count_;
    return {p + kEventOpHeader, event_bytes};
  }
  if (buffer_[last_event_at_] == std::byte{static_cast<std::uint8_t>(OpKind::kEvent)}) {
    // The partition's second event in a row: its lone event becomes a run of one, moved up by
    // the run header's extra fields (one event's bytes, once per run).
    const std::size_t first_bytes = buffer_.size() - last_event_at_ - kEventOpHeader;
    Grow(kEventRunHeaderBytes - kEventOpHeader);
    std::byte* op = buffer_.data() + last_event_at_;
    std::memmove(op + kEventRunHeaderBytes, op + kEventOpHeader, first_bytes);
    op[0] = std::byte{static_cast<std::uint8_t>(OpKind::kEventRun)};
    StoreLe32(op + 9, 1);
    StoreLe32(op + 13, static_cast<std::uint32_t>(first_bytes));
  }
  std::byte* p = Grow(event_bytes);
  std::byte* run = buffer_.data() + last_event_at_;
  const std::uint64_t run_bytes = std::uint64_t{LoadLe32(run + 13)} + event_bytes;
  LOCKSTEP_ASSERT(run_bytes <= UINT32_MAX);
  StoreLe32(run + 9, LoadLe32(run + 9) + 1);
  StoreLe32(run + 13, static_cast<std::uint32_t>(run_bytes));
  return {p, event_bytes};
}

void TxnRecordWriter::CommitOffset(const OffsetOp& op) {
  LOCKSTEP_ASSERT(op.group.size() <= UINT16_MAX);
  // kind 1 + topic 4 + partition 4 + generation 8 + offset 8 + group length 2 = 27 fixed bytes.
  std::byte* p = Grow(27 + op.group.size());
  p[0] = std::byte{static_cast<std::uint8_t>(OpKind::kOffset)};
  StoreLe32(p + 1, op.topic.value());
  StoreLe32(p + 5, op.partition.value());
  StoreLe64(p + 9, op.generation);
  StoreLe64(p + 17, op.offset.value());
  StoreLe16(p + 25, static_cast<std::uint16_t>(op.group.size()));
  if (!op.group.empty()) std::memcpy(p + 27, op.group.data(), op.group.size());
  ++op_count_;
  last_event_at_ = kNoEvent;
}

void TxnRecordWriter::ChangeCatalog(const CatalogOp& op) {
  LOCKSTEP_ASSERT(op.name.size() <= UINT16_MAX);
  // kind 1 + change 1 + id 4 + name length 2 + partitions 4 + retention 8 + 8 = 28 fixed bytes.
  std::byte* p = Grow(28 + op.name.size());
  p[0] = std::byte{static_cast<std::uint8_t>(OpKind::kCatalog)};
  p[1] = std::byte{static_cast<std::uint8_t>(op.change)};
  StoreLe32(p + 2, op.id);
  StoreLe16(p + 6, static_cast<std::uint16_t>(op.name.size()));
  if (!op.name.empty()) std::memcpy(p + 8, op.name.data(), op.name.size());
  std::byte* q = p + 8 + op.name.size();
  StoreLe32(q, op.partitions);
  StoreLe64(q + 4, static_cast<std::uint64_t>(op.retention_ms));
  StoreLe64(q + 12, op.retention_bytes);
  ++op_count_;
  last_event_at_ = kNoEvent;
}

Bytes TxnRecordWriter::Finish() {
  StoreLe32(buffer_.data() + 4, op_count_);
  return buffer_;
}

Result<TxnRecordReader> TxnRecordReader::Open(Bytes record, TxnReadOptions options) {
  TxnRecordReader out;
  out.event_limits_.verify_checksum = options.verify_event_checksums;
  Bytes rest = record;
  Reader r(&rest);
  std::uint8_t version = 0, flags = 0;
  std::uint16_t reserved = 0;
  std::uint64_t commit_ms = 0;
  if (!r.U8(&version) || !r.U8(&flags) || !r.U16(&reserved) || !r.U32(&out.op_count_) ||
      !r.U64(&commit_ms)) {
    return Malformed("shorter than its fixed fields");
  }
  if (version < kTxnRecordOldestVersion || version > kTxnRecordVersion) {
    return Malformed(fmt::format("unknown version {}", version));
  }
  out.version_ = version;
  if ((flags & ~kFlagIdempotencyKey) != 0 || reserved != 0) return Malformed("unknown flags");
  out.commit_ms_ = static_cast<std::int64_t>(commit_ms);
  if ((flags & kFlagIdempotencyKey) != 0) {
    std::uint16_t key_bytes = 0;
    Bytes key;
    if (!r.U16(&key_bytes) || !r.Take(key_bytes, &key)) {
      return Malformed("idempotency key runs past the record");
    }
    out.idempotency_key_ = AsString(key);
  }
  out.rest_ = rest;
  return out;
}

Status TxnRecordReader::EnterRun(Bytes& rest) {
  if (version_ < 2) return Malformed(fmt::format("an event run in a version {} record", version_));
  Reader r(&rest);
  std::uint32_t topic = 0, partition = 0, count = 0, run_bytes = 0;
  if (!r.U32(&topic) || !r.U32(&partition) || !r.U32(&count) || !r.U32(&run_bytes)) {
    return Malformed("event run header runs past the record");
  }
  if (count == 0) return Malformed("an empty event run");
  if (!r.Take(run_bytes, &run_rest_)) {
    return Malformed(fmt::format("event run of {} bytes runs past the record ({} left)", run_bytes,
                                 rest.size()));
  }
  run_left_ = count;
  run_topic_ = TopicId(topic);
  run_partition_ = PartitionId(partition);
  return Status::Ok();
}

Status TxnRecordReader::EnterRunAtFront() {
  Bytes after_kind = rest_.subspan(1);
  LOCKSTEP_RETURN_IF_ERROR(EnterRun(after_kind));
  rest_ = after_kind;
  ++ops_read_;
  return Status::Ok();
}

Result<Bytes> TxnRecordReader::NextInRun() {
  LOCKSTEP_ASSERT(run_left_ > 0);
  LOCKSTEP_ASSIGN_OR_RETURN(Bytes record, TakeEventRecord(run_rest_, event_limits_));
  if (--run_left_ == 0 && !run_rest_.empty()) {
    return Malformed(
        fmt::format("{} bytes left in an event run after its last event", run_rest_.size()));
  }
  return record;
}

Result<std::optional<TxnOp>> TxnRecordReader::Next() {
  if (run_left_ > 0) {
    LOCKSTEP_ASSIGN_OR_RETURN(Bytes record, NextInRun());
    return std::optional<TxnOp>(EventOp{run_topic_, run_partition_, record});
  }
  if (ops_read_ == op_count_) {
    if (!rest_.empty()) return Malformed("bytes left after the last operation");
    return std::optional<TxnOp>();
  }
  Reader r(&rest_);
  std::uint8_t kind = 0;
  if (!r.U8(&kind)) return Malformed("fewer operations than its count");
  if (static_cast<OpKind>(kind) == OpKind::kEventRun) {
    LOCKSTEP_RETURN_IF_ERROR(EnterRun(rest_));
    ++ops_read_;
    return Next();
  }
  auto op = ReadOp(static_cast<OpKind>(kind), r, rest_, event_limits_);
  if (!op.ok()) return op.status();
  ++ops_read_;
  return std::optional<TxnOp>(std::move(op).value());
}

Result<std::optional<EventPiece>> TxnRecordReader::NextPieceIn(TopicId topic,
                                                               PartitionId partition) {
  for (;;) {
    if (run_left_ > 0) {
      const bool ours = run_topic_ == topic && run_partition_ == partition;
      const EventPiece piece{run_rest_, run_left_};
      run_rest_ = {};
      run_left_ = 0;
      if (ours) return std::optional<EventPiece>(piece);
      continue;  // another partition's run, passed over in one step
    }
    if (RunAtFront()) {
      LOCKSTEP_RETURN_IF_ERROR(EnterRunAtFront());
      continue;
    }
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, Next());
    if (!op) return std::optional<EventPiece>();
    const auto* ev = std::get_if<EventOp>(&*op);
    if (ev != nullptr && ev->topic == topic && ev->partition == partition) {
      return std::optional<EventPiece>(EventPiece{ev->record, 1});
    }
  }
}

Result<std::optional<Bytes>> TxnRecordReader::NextEventIn(TopicId topic, PartitionId partition) {
  for (;;) {
    if (run_left_ > 0) {
      if (run_topic_ == topic && run_partition_ == partition) {
        LOCKSTEP_ASSIGN_OR_RETURN(Bytes record, NextInRun());
        return std::optional<Bytes>(record);
      }
      // Another partition's run (entered by Next()): the rest of it goes in one step.
      run_rest_ = {};
      run_left_ = 0;
      continue;
    }
    if (RunAtFront()) {
      LOCKSTEP_RETURN_IF_ERROR(EnterRunAtFront());
      continue;  // ours is read above; another's is passed over whole
    }
    if (ops_read_ == op_count_ || rest_.empty() ||
        std::to_integer<std::uint8_t>(rest_[0]) != static_cast<std::uint8_t>(OpKind::kEvent) ||
        rest_.size() < kEventOpHeader + 4) {
      // Anything but a well-sized event op goes the general way, with its checks.
      LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, Next());
      if (!op) return std::optional<Bytes>();
      const auto* ev = std::get_if<EventOp>(&*op);
      if (ev != nullptr && ev->topic == topic && ev->partition == partition) {
        return std::optional<Bytes>(ev->record);
      }
      continue;
    }
    const std::uint32_t op_topic = LoadLe32(rest_.data() + 1);
    const std::uint32_t op_partition = LoadLe32(rest_.data() + 5);
    const std::uint32_t length = LoadLe32(rest_.data() + kEventOpHeader);
    if (length < base::kEventFixedBytes || length > rest_.size() - kEventOpHeader) {
      return Malformed(fmt::format("event length {} outside [{}, {}]", length,
                                   base::kEventFixedBytes, rest_.size() - kEventOpHeader));
    }
    const Bytes record = rest_.subspan(kEventOpHeader, length);
    rest_ = rest_.subspan(kEventOpHeader + length);
    ++ops_read_;
    if (op_topic != topic.value() || op_partition != partition.value()) continue;
    if (event_limits_.verify_checksum) {
      auto event = base::DecodeEvent(record, event_limits_);
      if (!event.ok()) return Malformed(event.status().message());
    }
    return std::optional<Bytes>(record);
  }
}

}  // namespace lockstep::engine

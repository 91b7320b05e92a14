#pragma once
// The transaction record: what the engine appends to the log for one committed transaction, and
// what recovery replays. One record per LSN. Grammar and version: docs/engine-records.md.
//
//   txn      = version:u8 = 2 (1 is still read), flags:u8 (bit 0: has idempotency key),
//              reserved:u16 = 0, op_count:u32, commit_ms:i64,
//              [idempotency_key_bytes:u16, idempotency_key], op{op_count}
//   op       = kind:u8, then
//     put    : table:u32, key_bytes:u32, value_bytes:u32, key, value
//     delete : table:u32, key_bytes:u32, key
//     event  : topic:u32, partition:u32, event record (base/event_record.h: self-delimiting)
//     run    : topic:u32, partition:u32, count:u32, run_bytes:u32, count event records filling
//              run_bytes exactly (version 2: consecutive events of one partition, so that a
//              fetch passes over another partition's events in one step)
//     offset : topic:u32, partition:u32, generation:u64, offset:u64, group_bytes:u16, group
//     catalog: change:u8, id:u32, name_bytes:u16, name, partitions:u32, retention_ms:i64,
//              retention_bytes:u64   (the last three matter for topics only)
//
// Integrity comes from the log batch's checksum; parsing still treats the bytes as hostile, so a
// bug or a damaged record is reported (kDataLoss) instead of read out of bounds.
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "base/event_record.h"
#include "base/status.h"
#include "engine/ids.h"

namespace lockstep::engine {

using base::Bytes;
using base::Result;
using base::Status;

inline constexpr std::uint8_t kTxnRecordVersion = 2;

inline constexpr std::uint8_t kTxnRecordOldestVersion = 1;
// kind:u8, topic:u32, partition:u32, count:u32, run_bytes:u32.
inline constexpr std::size_t kEventRunHeaderBytes = 17;
inline constexpr std::size_t kTxnFixedBytes = 16;

enum class OpKind : std::uint8_t {
  kPut = 1,
  kDelete = 2,
  kEvent = 3,
  kOffset = 4,
  kCatalog = 5,
  kEventRun = 6,
};

struct PutOp {
  TableId table;
  Bytes key;
  Bytes value;
};
struct DeleteOp {
  TableId table;
  Bytes key;
};
struct EventOp {
  TopicId topic;
  PartitionId partition;
  Bytes record;  // the whole encoded event record
};
struct OffsetOp {
  TopicId topic;
  PartitionId partition;
  std::uint64_t generation = 0;
  Offset offset;
  std::string_view group;
};
enum class CatalogChange : std::uint8_t {
  kCreateTable = 1,
  kDropTable = 2,
  kCreateTopic = 3,
  kDropTopic = 4,
};
struct CatalogOp {
  CatalogChange change = CatalogChange::kCreateTable;
  std::uint32_t id = 0;  // the TableId or TopicId
  std::string_view name;
  std::uint32_t partitions = 0;       // topics
  std::int64_t retention_ms = 0;      // topics; 0: keep forever
  std::uint64_t retention_bytes = 0;  // topics; 0: no size limit
};
using TxnOp = std::variant<PutOp, DeleteOp, EventOp, OffsetOp, CatalogOp>;

// Builds one transaction record in a buffer it reuses: after warm-up, building allocates
// nothing. Not thread-safe (the sequencer owns one).
class TxnRecordWriter {
 public:
  // Starts a new record. `idempotency_key` at most 65,535 bytes.
  void Reset(std::int64_t commit_ms, std::optional<std::string_view> idempotency_key);
  void Put(TableId table, Bytes key, Bytes value);
  void Delete(TableId table, Bytes key);
  // Reserves room for an event record of `event_bytes` and returns it, for the caller to encode
  // the event in place (base::EncodeEvent): events are encoded once, straight into the record.
  // Consecutive events of one partition share a run operation (a lone event stays an event
  // operation): readers still see one EventOp each, in order. The span is valid until the next
  // call that adds to the record (it may move the buffer).
  std::span<std::byte> AddEvent(TopicId topic, PartitionId partition, std::size_t event_bytes);
  void CommitOffset(const OffsetOp& op);
  // REQUIRES: op.name at most 65,535 bytes.
  void ChangeCatalog(const CatalogOp& op);
  // The finished record; valid until the next Reset.
  Bytes Finish();
  std::size_t op_count() const { return op_count_; }
  std::size_t size() const { return buffer_.size(); }

 private:
  std::byte* Grow(std::size_t n);
  std::vector<std::byte> buffer_;
  std::uint32_t op_count_ = 0;
  // Where the last operation starts when it is an event or a run (else kNoEvent), and its
  // partition: the next event of the same partition joins it.
  static constexpr std::size_t kNoEvent = ~std::size_t{0};
  std::size_t last_event_at_ = kNoEvent;
  TopicId last_topic_;
  PartitionId last_partition_;
};

// A parsed record: its fixed fields and an iterator over its operations.
struct TxnReadOptions {
  // False checks only each event record's extent, not its fields or its own checksum: only for
  // records whose log batch was verified (the fetch path; the caller decodes the events it
  // uses, and consumers verify each event's checksum end to end).
  bool verify_event_checksums = true;
};

// Events of one partition that lie back to back in a record: a whole run, or a lone event.
struct EventPiece {
  Bytes records;
  std::uint32_t count = 0;
};

class TxnRecordReader {
 public:
  // Checks the fixed fields; operations are checked as Next() reaches them.
  // op_count() counts a run of events as one operation; Next() returns its events one by one.
  static Result<TxnRecordReader> Open(Bytes record, TxnReadOptions options = {});

  std::int64_t commit_ms() const { return commit_ms_; }
  std::optional<std::string_view> idempotency_key() const { return idempotency_key_; }
  std::uint32_t op_count() const { return op_count_; }

  // The next operation (views into the record), nullopt after the last; kDataLoss for a
  // malformed operation or bytes left over after the last one.
  Result<std::optional<TxnOp>> Next();
  // The next event of one partition, passing over every other operation (the fetch path's
  // walk): nullopt after the last operation. Other partitions' events are checked for their
  // extent only (a run of them: the run's extent, passed in one step); the returned one as
  // Next() checks it (per TxnReadOptions).
  Result<std::optional<Bytes>> NextEventIn(TopicId topic, PartitionId partition);
  // The same walk by pieces: the partition's next run (what is left of it, when Next or
  // NextEventIn stopped inside it) or lone event, nullopt after the last operation. Only a
  // run's extent is checked here, not the records inside it nor its count: the caller walks
  // them (NextRecordIn) — Engine::CheckRun for a run sent whole, event by event otherwise.
  Result<std::optional<EventPiece>> NextPieceIn(TopicId topic, PartitionId partition);

 private:
  TxnRecordReader() = default;
  // Whether a run operation starts at the front of rest_ (with room for its header).
  bool RunAtFront() const {
    return run_left_ == 0 && ops_read_ < op_count_ && rest_.size() >= kEventRunHeaderBytes &&
           std::to_integer<std::uint8_t>(rest_[0]) == static_cast<std::uint8_t>(OpKind::kEventRun);
  }
  // Reads the run at the front of rest_ (kind byte included) and enters it.
  Status EnterRunAtFront();
  // Reads a run's header (the kind byte already taken) and enters it.
  Status EnterRun(Bytes& rest);
  // The next event record of the run being read.
  Result<Bytes> NextInRun();

  Bytes rest_;
  std::uint8_t version_ = kTxnRecordVersion;
  // The run being read: its unread event records and how many they are.
  Bytes run_rest_;
  std::uint32_t run_left_ = 0;
  TopicId run_topic_;
  PartitionId run_partition_;
  base::EventLimits event_limits_;
  std::int64_t commit_ms_ = 0;
  std::optional<std::string_view> idempotency_key_;
  std::uint32_t op_count_ = 0;
  std::uint32_t ops_read_ = 0;
};

// Takes the next event record off the front of `records` (a piece's), checking its extent only:
// kDataLoss when its length is out of bounds.
Result<Bytes> NextRecordIn(Bytes& records);

}  // namespace lockstep::engine

#pragma once
// The Lockstep C++ client (docs/protocol.md, "The client"): one connection to lockstepd, pipelined,
// thread-safe, with synchronous calls, callbacks and futures. Its headers show no Asio and no
// FlatBuffers.
//
// Retries: a call that meets a lost connection is sent again after a reconnect (with backoff)
// when that is safe — reads always, and commits, which carry an idempotency key (the client
// makes one up when the transaction has none) so that a retry commits once. A catalog change
// whose connection broke after it was sent is not resent: it fails with kUnavailable saying the
// outcome is unknown. Every call is bounded by ClientOptions::retry_deadline; past it, it fails
// with kDeadlineExceeded, saying whether the request may have taken effect.
//
// Callbacks (and the Producer's delivery callbacks) run on the client's one network thread: they
// must be short and must not make synchronous calls on the same client, which would wait for
// that very thread.
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/block_pool.h"
#include "base/status.h"
#include "base/strong_id.h"

namespace lockstep::client {

using base::Lsn;
using base::Offset;
using base::PartitionId;
using base::Result;
using base::Status;

struct ClientOptions {
  std::string broker = "127.0.0.1:7070";  // HOST:PORT
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds retry_deadline{30'000};  // a call fails after this, retries included
  std::chrono::milliseconds backoff_initial{20};
  std::chrono::milliseconds backoff_max{1'000};
  std::uint32_t max_frame_bytes = 16u << 20;
  std::string client_name = "lockstep-client";
};

// ---- Transactions: the same builder shape as the engine's ------------------------------------

struct Precondition {
  enum class Kind : std::uint8_t { kAbsent, kExists, kVersion };
  Kind kind = Kind::kAbsent;
  std::string table;
  std::string key;
  Lsn version;
};
struct TableWrite {
  bool is_delete = false;
  std::string table;
  std::string key;
  std::string value;
};
struct EventAppend {
  std::string topic;
  // nullopt: by hash of the key; without a key, one partition for all of a transaction's
  // keyless events of the topic, round-robin across transactions (sticky, as Kafka's batches).
  std::optional<PartitionId> partition;
  std::optional<std::string> key;
  std::string payload;
  std::string type;
  std::uint16_t schema_version = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<std::int64_t> timestamp_ms;  // nullopt: the commit time
};
struct OffsetCommit {
  std::string group;
  std::uint64_t generation = 0;
  std::string topic;
  PartitionId partition;
  Offset offset;  // the next offset to consume
};

class Transaction {
 public:
  Transaction& RequireAbsent(std::string table, std::string key) &;
  Transaction& RequireExists(std::string table, std::string key) &;
  Transaction& RequireVersion(std::string table, std::string key, Lsn version) &;
  Transaction& Put(std::string table, std::string key, std::string value) &;
  Transaction& Delete(std::string table, std::string key) &;
  Transaction& Append(EventAppend event) &;
  Transaction& CommitOffset(OffsetCommit commit) &;
  // A retry with the same key returns the original result instead of committing again. Without
  // one, Client::Commit chooses a unique key (a random per-process prefix and a counter), so its
  // own retries are safe.
  Transaction& IdempotencyKey(std::string key) &;
  Transaction& ProducerSequence(std::uint64_t producer_id, std::uint64_t sequence) &;

  // The same on a temporary (`Transaction().Put(...).Append(...)`): the chain stays an rvalue,
  // so Commit takes it by move, not by copy.
  Transaction&& RequireAbsent(std::string table, std::string key) && {
    return std::move(RequireAbsent(std::move(table), std::move(key)));
  }
  Transaction&& RequireExists(std::string table, std::string key) && {
    return std::move(RequireExists(std::move(table), std::move(key)));
  }
  Transaction&& RequireVersion(std::string table, std::string key, Lsn version) && {
    return std::move(RequireVersion(std::move(table), std::move(key), version));
  }
  Transaction&& Put(std::string table, std::string key, std::string value) && {
    return std::move(Put(std::move(table), std::move(key), std::move(value)));
  }
  Transaction&& Delete(std::string table, std::string key) && {
    return std::move(Delete(std::move(table), std::move(key)));
  }
  Transaction&& Append(EventAppend event) && { return std::move(Append(std::move(event))); }
  Transaction&& CommitOffset(OffsetCommit commit) && {
    return std::move(CommitOffset(std::move(commit)));
  }
  Transaction&& IdempotencyKey(std::string key) && {
    return std::move(IdempotencyKey(std::move(key)));
  }
  Transaction&& ProducerSequence(std::uint64_t producer_id, std::uint64_t sequence) && {
    return std::move(ProducerSequence(producer_id, sequence));
  }

  const std::vector<Precondition>& preconditions() const { return preconditions_; }
  const std::vector<TableWrite>& writes() const { return writes_; }
  const std::vector<EventAppend>& events() const { return events_; }
  const std::vector<OffsetCommit>& offsets() const { return offsets_; }
  const std::optional<std::string>& idempotency_key() const { return idempotency_key_; }
  std::optional<std::pair<std::uint64_t, std::uint64_t>> producer_sequence() const {
    return producer_sequence_;
  }

 private:
  std::vector<Precondition> preconditions_;
  std::vector<TableWrite> writes_;
  std::vector<EventAppend> events_;
  std::vector<OffsetCommit> offsets_;
  std::optional<std::string> idempotency_key_;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> producer_sequence_;
};

struct EventPosition {
  std::string topic;
  PartitionId partition;
  Offset offset;
};
struct CommitResult {
  Lsn lsn;
  std::vector<EventPosition> events;  // in the order the transaction appended them
};

// ---- Reads ----------------------------------------------------------------------------------

struct Row {
  std::string key;
  std::string value;
  Lsn version;
};
struct MultiGetResult {
  std::vector<std::optional<Row>> rows;
  Lsn as_of;  // the snapshot every row was read at
};
struct ScanOptions {
  std::string from = {};
  std::string to = {};
  std::string prefix = {};
  std::uint32_t limit = 1000;
  bool reverse = false;
};
// One table's figures as of the server's visible LSN (Client::DescribeTable).
struct TableInfo {
  std::string name;
  Lsn created;
  Lsn as_of;
  std::uint64_t rows = 0;
  std::uint64_t key_bytes = 0;
  std::uint64_t value_bytes = 0;
  Lsn newest_version;  // 0: no row
  std::uint64_t memory_bytes = 0;
};
struct TopicInfo {
  std::string name;
  std::uint32_t partitions = 0;
  std::int64_t retention_ms = 0;
  std::uint64_t retention_bytes = 0;
  std::vector<Offset> start_offsets;
  std::vector<Offset> end_offsets;
};
struct FetchOptions {
  std::uint32_t max_bytes = 1 << 20;
  std::uint32_t max_events = 1000;
  std::chrono::milliseconds max_wait{0};  // long-poll: wait up to this long for min_bytes
  std::uint32_t min_bytes = 1;
};
// Event records exactly as stored (docs/events.md): decode them with base::DecodeEvent.
struct FetchResult {
  std::vector<std::byte> records;
  std::uint32_t events = 0;
  Offset next_offset;
  Offset high_watermark;
};
// The same, without a copy: `records` points into the client's receive buffer and is valid only
// during the callback that gets it — unless `storage` is set (a large response, read straight
// into a block of its own): then `records` points into it, and a callback that moves it out
// keeps them valid.
struct FetchView {
  std::span<const std::byte> records;
  std::uint32_t events = 0;
  Offset next_offset;
  Offset high_watermark;
  base::Block storage;
};
enum class OffsetSpec : std::uint8_t { kEarliest, kLatest, kTimestamp };
struct GroupOffset {
  std::string topic;
  PartitionId partition;
  Offset offset;
  std::uint64_t generation = 0;
  std::int64_t commit_ms = 0;
};
struct TopicPartitions {
  std::string topic;
  std::vector<PartitionId> partitions;
};
struct GroupMember {
  std::string member_id;
  std::string client;
  std::vector<std::string> topics;
  std::vector<TopicPartitions> assignment;
};
struct GroupInfo {
  std::string name;
  std::uint64_t generation = 0;
  std::vector<GroupOffset> offsets;
  std::vector<GroupMember> members;  // live members of a server-assigned group
};
// A member's place in a server-assigned group, as told on joining and on every heartbeat.
struct Membership {
  std::string member_id;
  std::uint64_t generation = 0;
  std::vector<TopicPartitions> assignment;
  std::chrono::milliseconds heartbeat_interval{0};
};
struct JoinOptions {
  std::string member_id = {};  // empty on the first join
  std::chrono::milliseconds session_timeout{10'000};
};
struct PartitionLag {
  std::string topic;
  PartitionId partition;
  Offset committed;
  Offset end;
  std::uint64_t events = 0;
  std::int64_t ms = 0;
};
struct Change {
  std::string table;
  std::string key;
  std::optional<std::string> before;
  std::optional<std::string> after;
};
struct ChangedEvent {
  std::string topic;
  PartitionId partition;
  Offset offset;
  std::vector<std::byte> record;
};
struct ChangedTransaction {
  Lsn lsn;
  std::int64_t commit_ms = 0;
  std::vector<Change> changes;
  std::vector<ChangedEvent> events;
};
struct ChangeFeed {
  std::vector<ChangedTransaction> transactions;
  Lsn next_lsn;
};
struct ServerStats {
  Lsn visible_lsn;
  Lsn checkpoint_lsn;
  Lsn oldest_readable_lsn;
  std::uint64_t table_bytes = 0;
  std::uint32_t connections = 0;
  std::uint32_t parked_fetches = 0;
  std::uint64_t requests = 0;
  std::int64_t uptime_ms = 0;
};

template <typename T>
using Callback = std::function<void(Result<T>)>;

class Client {
 public:
  // Connects (retrying with backoff until retry_deadline) and shakes hands.
  static Result<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Transactions. Callbacks run on the client's network thread: keep them short.
  void Commit(Transaction txn, Callback<CommitResult> done);
  std::future<Result<CommitResult>> CommitAsync(Transaction txn);
  Result<CommitResult> Commit(Transaction txn);
  Status CommitOffsets(std::vector<OffsetCommit> offsets);

  // Catalog.
  Status CreateTopic(const std::string& name, std::uint32_t partitions,
                     std::int64_t retention_ms = 0, std::uint64_t retention_bytes = 0);
  Status DropTopic(const std::string& name);
  Status CreateTable(const std::string& name);
  Status DropTable(const std::string& name);
  Result<std::vector<TopicInfo>> ListTopics();
  Result<std::vector<std::string>> ListTables();
  // Counts the table's rows on the server (one pass over it: an operator's call). Needs a
  // server speaking protocol 1.2; an older one answers InvalidArgument.
  Result<TableInfo> DescribeTable(const std::string& name);

  // Tables, now (as_of 0) or as of an LSN.
  Result<std::optional<Row>> Get(const std::string& table, const std::string& key,
                                 Lsn as_of = Lsn());
  void Get(const std::string& table, const std::string& key, Lsn as_of,
           Callback<std::optional<Row>> done);
  // Several keys of one table read at one snapshot, in one round trip (server 1.3 or later):
  // rows[i] answers keys[i], and as_of names the snapshot (read more as of it). At most 10,000
  // keys, and what is found must fit in one frame (kInvalidArgument: ask for fewer).
  Result<MultiGetResult> MultiGet(const std::string& table, const std::vector<std::string>& keys,
                                  Lsn as_of = Lsn());
  void MultiGet(const std::string& table, const std::vector<std::string>& keys, Lsn as_of,
                Callback<MultiGetResult> done);
  Result<std::vector<Row>> Scan(const std::string& table, const ScanOptions& options = {},
                                Lsn as_of = Lsn());

  // Topics.
  void Fetch(const std::string& topic, PartitionId partition, Offset offset,
             const FetchOptions& options, Callback<FetchResult> done);
  Result<FetchResult> Fetch(const std::string& topic, PartitionId partition, Offset offset,
                            const FetchOptions& options = {});
  // A fetch whose callback reads the records in place: they are valid during the callback, and
  // after it only if it moves FetchView::storage out (set for large responses).
  void FetchInPlace(const std::string& topic, PartitionId partition, Offset offset,
                    const FetchOptions& options, std::function<void(Result<FetchView>)> done);
  Result<Offset> ListOffset(const std::string& topic, PartitionId partition, OffsetSpec spec,
                            std::int64_t timestamp_ms = 0);

  // Consumer groups, the change feed, server figures.
  Result<GroupInfo> DescribeGroup(const std::string& group);
  Result<std::vector<std::string>> ListGroups();
  Result<std::vector<PartitionLag>> GroupLag(const std::string& group);
  // Membership of a server-assigned group (the Consumer does this for you with Subscribe):
  // join with the topics to read; heartbeat within the session timeout to stay a member and to
  // learn the current generation and assignment; leave. A heartbeat of a member the server no
  // longer knows fails with kNotFound: join again.
  Result<Membership> JoinGroup(const std::string& group, const std::vector<std::string>& topics,
                               const JoinOptions& options = {});
  Result<Membership> Heartbeat(const std::string& group, const std::string& member_id);
  Status LeaveGroup(const std::string& group, const std::string& member_id);
  void LeaveGroup(const std::string& group, const std::string& member_id,
                  std::function<void(Status)> done);
  Result<ChangeFeed> Changes(Lsn from, std::uint32_t max_transactions = 1000,
                             std::uint32_t max_bytes = 1 << 20);
  Result<ServerStats> Stats();

  // Reconnects so far (for tests and metrics).
  std::uint64_t reconnects() const;
  // Whether a connection is up and past its handshake now (any thread; a snapshot).
  bool connected() const;

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep::client

#pragma once
// Transaction: what a client hands to Engine::Commit — preconditions, table writes and event
// appends, all or nothing. A plain builder that owns copies of everything it is given, so it can
// be built on any thread and moved into the engine.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/ids.h"

namespace lockstep::engine {

struct Precondition {
  enum class Kind : std::uint8_t { kAbsent, kExists, kVersion };
  Kind kind = Kind::kAbsent;
  std::string table;
  std::string key;
  Lsn version;  // kVersion only: the row's version must be exactly this
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

// A consumer group's position in one partition, committed with the transaction: `offset` is the
// next offset the group will read. `generation` must equal the group's current generation
// (Engine::NewGroupGeneration; 0 for a group nobody ever joined), else the whole transaction is
// rejected (kFailedPrecondition): a member that lost its partitions cannot commit for them.
struct OffsetCommit {
  std::string group;
  std::uint64_t generation = 0;
  std::string topic;
  PartitionId partition;
  Offset offset;
};

class Transaction {
 public:
  Transaction& RequireAbsent(std::string table, std::string key) & {
    preconditions_.push_back({Precondition::Kind::kAbsent, std::move(table), std::move(key), {}});
    return *this;
  }
  Transaction& RequireExists(std::string table, std::string key) & {
    preconditions_.push_back({Precondition::Kind::kExists, std::move(table), std::move(key), {}});
    return *this;
  }
  Transaction& RequireVersion(std::string table, std::string key, Lsn version) & {
    preconditions_.push_back(
        {Precondition::Kind::kVersion, std::move(table), std::move(key), version});
    return *this;
  }
  Transaction& Put(std::string table, std::string key, std::string value) & {
    writes_.push_back({false, std::move(table), std::move(key), std::move(value)});
    return *this;
  }
  Transaction& Delete(std::string table, std::string key) & {
    writes_.push_back({true, std::move(table), std::move(key), {}});
    return *this;
  }
  Transaction& Append(EventAppend event) & {
    events_.push_back(std::move(event));
    return *this;
  }
  Transaction& CommitOffset(OffsetCommit commit) & {
    offsets_.push_back(std::move(commit));
    return *this;
  }
  // Idempotency (guarantee 4): a transaction committed again with the same key commits once, and
  // the retry gets the original result. Either a client-chosen key, or a producer id and sequence
  // number; the two never collide. The key says nothing about the content: a different
  // transaction under a remembered key gets the remembered result, as in Kafka.
  Transaction& IdempotencyKey(std::string_view key) & {
    idempotency_key_ = std::string(1, '\x00');
    idempotency_key_->append(key);
    return *this;
  }
  Transaction& ProducerSequence(std::uint64_t producer_id, std::uint64_t sequence) & {
    idempotency_key_ = std::string(1, '\x01');
    for (std::uint64_t v : {producer_id, sequence}) {
      for (int shift = 56; shift >= 0; shift -= 8) {
        idempotency_key_->push_back(static_cast<char>((v >> shift) & 0xff));
      }
    }
    return *this;
  }

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
  Transaction&& IdempotencyKey(std::string_view key) && { return std::move(IdempotencyKey(key)); }
  Transaction&& ProducerSequence(std::uint64_t producer_id, std::uint64_t sequence) && {
    return std::move(ProducerSequence(producer_id, sequence));
  }

  const std::vector<Precondition>& preconditions() const { return preconditions_; }
  const std::vector<TableWrite>& writes() const { return writes_; }
  const std::vector<EventAppend>& events() const { return events_; }
  const std::vector<OffsetCommit>& offsets() const { return offsets_; }
  // As stored: a tag byte (0: client key, 1: producer id + sequence) and the key.
  const std::optional<std::string>& idempotency_key() const { return idempotency_key_; }

 private:
  std::vector<Precondition> preconditions_;
  std::vector<TableWrite> writes_;
  std::vector<EventAppend> events_;
  std::vector<OffsetCommit> offsets_;
  std::optional<std::string> idempotency_key_;
};

}  // namespace lockstep::engine

#pragma once
// Transaction: what a client hands to Engine::Commit — preconditions, table writes and event
// appends, all or nothing. A plain builder that owns copies of everything it is given, so it can
// be built on any thread and moved into the engine.
#include <cstdint>
#include <optional>
#include <string>
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
  std::optional<PartitionId> partition;  // nullopt: by hash of the key, else round-robin
  std::optional<std::string> key;
  std::string payload;
  std::string type;
  std::uint16_t schema_version = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<std::int64_t> timestamp_ms;  // nullopt: the commit time
};

class Transaction {
 public:
  Transaction& RequireAbsent(std::string table, std::string key) {
    preconditions_.push_back({Precondition::Kind::kAbsent, std::move(table), std::move(key), {}});
    return *this;
  }
  Transaction& RequireExists(std::string table, std::string key) {
    preconditions_.push_back({Precondition::Kind::kExists, std::move(table), std::move(key), {}});
    return *this;
  }
  Transaction& RequireVersion(std::string table, std::string key, Lsn version) {
    preconditions_.push_back(
        {Precondition::Kind::kVersion, std::move(table), std::move(key), version});
    return *this;
  }
  Transaction& Put(std::string table, std::string key, std::string value) {
    writes_.push_back({false, std::move(table), std::move(key), std::move(value)});
    return *this;
  }
  Transaction& Delete(std::string table, std::string key) {
    writes_.push_back({true, std::move(table), std::move(key), {}});
    return *this;
  }
  Transaction& Append(EventAppend event) {
    events_.push_back(std::move(event));
    return *this;
  }

  const std::vector<Precondition>& preconditions() const { return preconditions_; }
  const std::vector<TableWrite>& writes() const { return writes_; }
  const std::vector<EventAppend>& events() const { return events_; }

 private:
  std::vector<Precondition> preconditions_;
  std::vector<TableWrite> writes_;
  std::vector<EventAppend> events_;
};

}  // namespace lockstep::engine

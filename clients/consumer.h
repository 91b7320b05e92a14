#pragma once
// Consumer: reads assigned partitions by offset (docs/protocol.md, "The client"). Each assigned
// partition keeps one long-poll fetch in flight (prefetch), so Poll() rarely waits on the
// network. Positions start at the group's committed offset, else by the reset policy; a
// position that falls outside the partition ("offset out of range": retention passed it) is
// reset by the same policy, or reported with kFailedPrecondition. Offsets are committed
// explicitly (Commit), automatically after each Poll (auto_commit), or inside a transaction with
// the outputs they produced (Positions(), for exactly-once processing).
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "clients/client.h"

namespace lockstep::client {

enum class ResetPolicy : std::uint8_t { kEarliest, kLatest, kFail };

struct ConsumerOptions {
  std::string group;  // empty: no committed offsets (Commit and auto_commit need one)
  std::uint64_t generation = 0;
  ResetPolicy reset = ResetPolicy::kEarliest;
  bool auto_commit = false;
  std::chrono::milliseconds max_wait{500};  // of each prefetching long-poll
  std::uint32_t fetch_max_bytes = 1 << 20;
  std::uint32_t fetch_max_events = 1000;
};

struct ConsumedEvent {
  std::string topic;
  PartitionId partition;
  Offset offset;
  Lsn lsn;
  std::int64_t timestamp_ms = 0;
  std::optional<std::string> key;
  std::string payload;
  std::string type;
  std::uint16_t schema_version = 0;
  std::vector<std::pair<std::string, std::string>> headers;
};

class Consumer {
 public:
  // `client` must outlive the consumer.
  static Result<std::unique_ptr<Consumer>> Create(Client& client, ConsumerOptions options = {});
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Adds partitions of `topic` (all of them when `partitions` is empty) to the assignment.
  Status Assign(const std::string& topic, std::vector<PartitionId> partitions = {});
  Status Seek(const std::string& topic, PartitionId partition, Offset offset);
  Status SeekToBeginning(const std::string& topic, PartitionId partition);
  Status SeekToEnd(const std::string& topic, PartitionId partition);
  Status SeekToTimestamp(const std::string& topic, PartitionId partition,
                         std::int64_t timestamp_ms);

  // The next events of the assigned partitions (each partition in offset order), waiting up to
  // `timeout` for some. An empty batch after the timeout is not an error.
  Result<std::vector<ConsumedEvent>> Poll(std::chrono::milliseconds timeout);

  // The next offset to read per assigned partition, as offset commits of the group: commit them
  // alone (Commit), or add them to a transaction with outputs (exactly-once).
  std::vector<OffsetCommit> Positions() const;
  Status Commit();

 private:
  struct Partition;
  Consumer(Client& client, ConsumerOptions options);
  Result<Offset> Reset(const std::string& topic, PartitionId partition);
  void StartFetch(const std::string& topic, PartitionId partition);

  Client& client_;
  ConsumerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // a prefetch completed
  std::map<std::pair<std::string, std::uint32_t>, std::shared_ptr<Partition>> partitions_;
  bool closed_ = false;
  std::uint32_t fetches_in_flight_ = 0;
};

}  // namespace lockstep::client

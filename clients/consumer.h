#pragma once
// Consumer: reads partitions by offset (docs/protocol.md, "The client"). The partitions are
// either assigned by hand (Assign), or by the server to the live members of a consumer group
// (Subscribe). Each assigned partition keeps one long-poll fetch in flight (prefetch), so Poll()
// rarely waits on the network. Positions start at the group's committed offset, else by the
// reset policy; a position that falls outside the partition ("offset out of range": retention
// passed it) is reset by the same policy, or reported with kFailedPrecondition. Offsets are
// committed explicitly (Commit), automatically before each Poll (auto_commit), or inside a
// transaction with the outputs they produced (Positions(), for exactly-once processing).
//
// Subscribed, a background thread heartbeats to the server. When the group's membership changes
// the server advances the generation and the heartbeat brings the new assignment, which the
// next Poll (or Resync) applies: every partition restarts from the group's committed offset.
// Until then, offset commits carry the old generation and are refused (kFailedPrecondition) —
// and with them any transaction holding them, so outputs are never committed twice. A Poll
// that applies a rebalance after events were delivered under the old generation returns
// kConflict once, without events: drop any transaction built from events polled before (they
// come again) and poll on. With auto_commit, positions of partitions the member keeps are
// committed under the new generation first, so a rebalance does not deliver them again.
// Close and the destructor wait for a heartbeat in progress, which a server that does not
// answer holds for up to the client's retry deadline.
//
// Poll, PollBatch, Seek*, Commit, Resync and Close are called from one thread at a time (the
// consumer's user); Positions, generation and assignment may be called from any thread.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "base/assert.h"
#include "base/event_record.h"
#include "clients/client.h"

namespace lockstep::client {

enum class ResetPolicy : std::uint8_t { kEarliest, kLatest, kFail };

struct ConsumerOptions {
  std::string group;  // empty: no committed offsets (Commit and auto_commit need one)
  std::uint64_t generation = 0;
  ResetPolicy reset = ResetPolicy::kEarliest;
  // Subscribe only: the server removes a member that did not heartbeat for this long.
  std::chrono::milliseconds session_timeout{10'000};
  bool auto_commit = false;
  std::chrono::milliseconds max_wait{500};  // of each prefetching long-poll
  std::uint32_t fetch_max_bytes = 1 << 20;
  std::uint32_t fetch_max_events = 1000;
  // A fetch that got no answer within the client's retry deadline plus max_wait is retried
  // quietly by default, as Kafka consumers do, for ever. With this set, such a fetch that expires
  // while the client has no connection (the server unreachable since the fetch was last sent)
  // fails Poll with kDeadlineExceeded instead: for tools that should give up (`lockstep
  // consume`). One that expires on a live connection (a slow answer) is still retried.
  bool fail_when_unreachable = false;
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

// One event of a ConsumedBatch, read in place: its views point into the batch and are valid as
// long as the batch is. `event` has offset(), lsn(), timestamp_ms(), key(), payload(), type(),
// schema_version() and ForEachHeader() (docs/events.md).
struct ConsumedEventRef {
  std::string_view topic;
  PartitionId partition;
  base::EventView event;

  // The payload and key as characters.
  std::string_view payload() const { return Chars(event.payload()); }
  std::optional<std::string_view> key() const {
    if (auto k = event.key()) return Chars(*k);
    return std::nullopt;
  }
  ConsumedEvent Copy() const;

 private:
  static std::string_view Chars(base::Bytes b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
};

// What PollBatch returns: the record bytes of the fetches it drew from (the blocks large
// responses were received into, or one copy of a small one), and the events decoded in place —
// no allocation per event. Movable;
// iterating it yields ConsumedEventRef, per partition in offset order. A batch holds whole
// fetches (up to fetch_max_bytes each) until it is destroyed: Copy() what you keep longer.
class ConsumedBatch {
 public:
  ConsumedBatch() = default;
  // A moved-from batch is empty. The moved events stay valid: their bytes do not move.
  ConsumedBatch(ConsumedBatch&& o) noexcept
      : parts_(std::move(o.parts_)), size_(std::exchange(o.size_, 0)) {
    o.parts_.clear();
  }
  ConsumedBatch& operator=(ConsumedBatch&& o) noexcept {
    if (this == &o) return *this;
    parts_ = std::move(o.parts_);
    o.parts_.clear();
    size_ = std::exchange(o.size_, 0);
    return *this;
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Owned copies of every event, in iteration order.
  std::vector<ConsumedEvent> Copy() const;

  // One partition's events from one fetch; never empty inside a batch.
  struct Part {
    std::string topic;
    PartitionId partition;
    base::Block bytes;  // the events point in here (moving keeps them valid)
    std::vector<base::EventView> events;
  };
  class Iterator {
   public:
    // A forward iterator in C++20's terms; its reference is a value (a ref built on the spot),
    // which the older iterator categories allow only for input iterators.
    using iterator_concept = std::forward_iterator_tag;
    using iterator_category = std::input_iterator_tag;
    using value_type = ConsumedEventRef;
    using difference_type = std::ptrdiff_t;
    using reference = ConsumedEventRef;
    using pointer = void;
    Iterator() = default;
    ConsumedEventRef operator*() const {
      const Part& p = (*parts_)[part_];
      return {p.topic, p.partition, p.events[index_]};
    }
    Iterator& operator++() {
      if (++index_ == (*parts_)[part_].events.size()) {
        ++part_;
        index_ = 0;
      }
      return *this;
    }
    Iterator operator++(int) {
      Iterator before = *this;
      ++*this;
      return before;
    }
    bool operator==(const Iterator& o) const { return part_ == o.part_ && index_ == o.index_; }

   private:
    friend class ConsumedBatch;
    Iterator(const std::vector<Part>* parts, std::size_t part) : parts_(parts), part_(part) {}
    const std::vector<Part>* parts_ = nullptr;
    std::size_t part_ = 0;
    std::size_t index_ = 0;
  };
  Iterator begin() const { return {&parts_, 0}; }
  Iterator end() const { return {&parts_, parts_.size()}; }

 private:
  friend class Consumer;
  void Add(Part part) {
    LOCKSTEP_ASSERT(!part.events.empty());  // the iterator steps over no empty part
    size_ += part.events.size();
    parts_.push_back(std::move(part));
  }
  std::vector<Part> parts_;
  std::size_t size_ = 0;
};

static_assert(std::forward_iterator<ConsumedBatch::Iterator>);

class Consumer {
 public:
  // `client` must outlive the consumer.
  static Result<std::unique_ptr<Consumer>> Create(Client& client, ConsumerOptions options = {});
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Adds partitions of `topic` (all of them when `partitions` is empty) to the assignment.
  // Not with Subscribe.
  Status Assign(const std::string& topic, std::vector<PartitionId> partitions = {});

  // Joins options.group as a member reading `topics`; the server assigns the partitions
  // (assignment()) and reassigns them as members come and go. kFailedPrecondition without a
  // group, or after Assign or another Subscribe; kNotFound for a topic that does not exist.
  Status Subscribe(std::vector<std::string> topics);
  // Heartbeats now and applies a new assignment if there is one: call it after a transaction
  // with Positions() was refused for a stale generation, instead of waiting for the next
  // heartbeat.
  Status Resync();
  // Leaves the group (its partitions go to the other members at once), and stops fetching.
  // The destructor does this too, without waiting for the server's answer.
  Status Close();

  std::uint64_t generation() const;
  std::vector<TopicPartitions> assignment() const;
  Status Seek(const std::string& topic, PartitionId partition, Offset offset);
  Status SeekToBeginning(const std::string& topic, PartitionId partition);
  Status SeekToEnd(const std::string& topic, PartitionId partition);
  Status SeekToTimestamp(const std::string& topic, PartitionId partition,
                         std::int64_t timestamp_ms);

  // The next events of the assigned partitions (each partition in offset order), waiting up to
  // `timeout` for some. An empty batch after the timeout is not an error. PollBatch hands them
  // out in place (the fast path: no allocation or copy per event); Poll copies each into owned
  // strings. A partition's fetch error (DataLoss for damaged records, NotFound for a dropped
  // topic...) is returned by a Poll that has no events, or else by the next Poll, before it
  // looks for more: so a failing partition next to busy ones is still heard of. The failing
  // partition keeps fetching, so an error that passes clears by itself.
  Result<ConsumedBatch> PollBatch(std::chrono::milliseconds timeout);
  Result<std::vector<ConsumedEvent>> Poll(std::chrono::milliseconds timeout);

  // The next offset to read per assigned partition, as offset commits of the group: commit them
  // alone (Commit), or add them to a transaction with outputs (exactly-once).
  std::vector<OffsetCommit> Positions() const;
  Status Commit();

 private:
  struct Partition;
  Consumer(Client& client, ConsumerOptions options);
  Result<Offset> Reset(const std::string& topic, PartitionId partition);
  Result<std::map<std::pair<std::string, std::uint32_t>, Offset>> Committed();
  Status AddPartitions(const std::string& topic, const std::vector<PartitionId>& partitions);
  void StartFetch(const std::string& topic, PartitionId partition);
  void IssueFetch(std::shared_ptr<Partition> part, Offset from, std::uint64_t epoch);
  void HeartbeatLoop();
  Status ApplyMembership(const Membership& membership);
  Result<bool> ApplyPending();
  Result<Membership> RenewMembership();
  void StopHeartbeats();
  std::vector<OffsetCommit> Uncommitted() const;

  Client& client_;
  ConsumerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // a prefetch completed, or a new membership arrived
  std::map<std::pair<std::string, std::uint32_t>, std::shared_ptr<Partition>> partitions_;
  bool closed_ = false;
  std::uint32_t fetches_in_flight_ = 0;

  // Subscribe.
  std::vector<std::string> topics_;
  std::string member_id_;
  std::uint64_t generation_ = 0;  // of the applied assignment (options_.generation by hand)
  std::vector<TopicPartitions> assignment_;
  std::optional<Membership> pending_;  // heard from a heartbeat, applied by Poll or Resync
  bool manual_ = false;                // Assign was called
  bool left_ = false;
  std::condition_variable heartbeat_cv_;
  bool heartbeat_now_ = false;
  bool delivered_ = false;  // Poll returned events under the current generation
  // A fetch error found by a Poll that returned events: the next Poll returns it first,
  // unless a Seek, a new assignment or Close came between. Only the polling thread touches
  // it (Poll, Seek, Resync and Close are called from one thread at a time).
  std::optional<Status> unreported_;
  std::mutex membership_mu_;  // one heartbeat or join at a time (RenewMembership)
  std::chrono::milliseconds heartbeat_interval_{1'000};
  std::thread heartbeat_thread_;
};

}  // namespace lockstep::client

#pragma once
// The engine's private state, shared by its source files (engine.cc: open, replay and the
// sequencer; engine_reads.cc: reads, fetch and the change feed; engine_groups.cc: consumer
// groups). Not part of the public API.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/histogram.h"
#include "engine/engine.h"

namespace lockstep::engine {

inline Bytes AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string_view AsView(Bytes b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
// Names of tables, topics and groups: 1 to `max` bytes of letters, digits, '.', '_' and '-',
// not starting with "__" (reserved for internal tables).
Status ValidateName(std::string_view what, std::string_view name, std::uint32_t max);

// Catalog entries carry the LSNs that created and dropped them: readers see an entry only once
// its creation is visible and until its drop is (durable before visible, for the catalog too).
struct Engine::TableEntry {
  TableId id;
  std::string name;
  Lsn created;
  Lsn dropped;  // 0: not dropped
  std::shared_ptr<Table> table = std::make_shared<Table>();
  bool LiveAt(Lsn at) const { return created <= at && (dropped == Lsn() || dropped > at); }
};

struct Engine::TopicEntry {
  TopicId id;
  std::string name;
  Lsn created;
  Lsn dropped;
  std::uint32_t partitions = 0;
  std::int64_t retention_ms = 0;
  std::uint64_t retention_bytes = 0;
  std::vector<std::uint64_t> next_offset;  // sequencer only: newest, durable or not
  std::unique_ptr<std::atomic<std::uint64_t>[]> visible_end;  // as of the visible LSN
  // The earliest offset still served: retention moves it up (never down) once a checkpoint
  // recording it is durable; a fetch below it is kOutOfRange.
  std::unique_ptr<std::atomic<std::uint64_t>[]> start_offset;
  std::uint32_t round_robin = 0;  // sequencer only

  // Per partition, a sparse index offset -> LSN of the transaction that holds it: the first event
  // of the partition and then one per kIndexEveryEvents, from the entry at or below the start
  // offset on (retention prunes what lies below it, so the index stays in proportion to the
  // events retained: 32 bytes per 64 events). Each entry also keeps the greatest event
  // timestamp of the partition *before* its offset, which only grows along the index: the offset
  // for a timestamp T lies at or after the last entry whose `max_ts_before` is below T, within one
  // index interval (event timestamps are client-given, so they need not grow themselves).
  // Appended by the sequencer (and replay) and pruned by checkpoints, both under index_mu
  // exclusively; searched by fetchers under it shared.
  struct IndexEntry {
    std::uint64_t offset;
    Lsn lsn;
    std::int64_t max_ts_before;
    std::uint64_t bytes_before;  // event-record bytes of the partition before `offset`
  };
  static constexpr std::uint64_t kIndexEveryEvents = 64;
  mutable std::shared_mutex index_mu;
  std::vector<std::vector<IndexEntry>> index;
  std::vector<std::int64_t> max_ts;  // sequencer only: greatest timestamp so far per partition
  std::vector<std::uint64_t> bytes;  // sequencer only: event-record bytes so far per partition
  // Sequencer only: the newest indexed offset per partition (kNotIndexed: none), so that it
  // never reads `index` without the lock while a checkpoint prunes it.
  static constexpr std::uint64_t kNotIndexed = UINT64_MAX;
  std::vector<std::uint64_t> last_indexed;

  // Sequencer (and replay) only.
  void Index(std::uint32_t partition, std::uint64_t offset, Lsn lsn, std::int64_t timestamp_ms,
             std::uint64_t record_bytes) {
    std::uint64_t& last = last_indexed[partition];
    // The first event at a partition's start offset is always indexed: after retention emptied
    // the partition, the entry left from before points into segments retention may delete, and
    // StartFor(start) would hold every later checkpoint's `keep` below the log's start (nothing
    // deleted any more) until 64 more events.
    if (last == kNotIndexed || offset >= last + kIndexEveryEvents ||
        offset == start_offset[partition].load(std::memory_order_acquire)) {
      std::unique_lock lock(index_mu);
      index[partition].push_back({offset, lsn, max_ts[partition], bytes[partition]});
      last = offset;
    }
    max_ts[partition] = std::max(max_ts[partition], timestamp_ms);
    bytes[partition] += record_bytes;
  }
  // Sequencer only (Undo): removes the entry for `offset` at `lsn` if it is the newest.
  void Unindex(std::uint32_t partition, std::uint64_t offset, Lsn lsn) {
    std::unique_lock lock(index_mu);
    auto& entries = index[partition];
    if (entries.empty() || entries.back().lsn != lsn || entries.back().offset != offset) return;
    entries.pop_back();
    last_indexed[partition] = entries.empty() ? kNotIndexed : entries.back().offset;
  }
  // Checkpoints: drops the entries below the one at or below `start`, which locates `start`.
  void PruneIndex(std::uint32_t partition, std::uint64_t start) {
    std::unique_lock lock(index_mu);
    auto& entries = index[partition];
    auto it = std::upper_bound(entries.begin(), entries.end(), start,
                               [](std::uint64_t o, const IndexEntry& e) { return o < e.offset; });
    if (it - entries.begin() > 1) entries.erase(entries.begin(), it - 1);
  }
  // The LSN to start reading at for `offset`: the indexed transaction at or below it; 0 (read
  // from the log's start) for an offset retention pruned meanwhile.
  Lsn StartFor(std::uint32_t partition, std::uint64_t offset) const {
    std::shared_lock lock(index_mu);
    const auto& entries = index[partition];
    auto it = std::upper_bound(entries.begin(), entries.end(), offset,
                               [](std::uint64_t o, const IndexEntry& e) { return o < e.offset; });
    return it == entries.begin() ? Lsn() : (it - 1)->lsn;
  }
  // Where to start looking for the first event with a timestamp >= `timestamp_ms`: the offset and
  // LSN of the last entry whose events before it are all older. nullopt: no events.
  std::optional<IndexEntry> StartForTimestamp(std::uint32_t partition,
                                              std::int64_t timestamp_ms) const {
    std::shared_lock lock(index_mu);
    const auto& entries = index[partition];
    if (entries.empty()) return std::nullopt;
    auto it = std::partition_point(entries.begin(), entries.end(), [&](const IndexEntry& e) {
      return e.max_ts_before < timestamp_ms;
    });
    // The first entry has nothing before it (INT64_MIN), so only INT64_MIN itself stops there.
    return it == entries.begin() ? *it : *(it - 1);
  }

  bool LiveAt(Lsn at) const { return created <= at && (dropped == Lsn() || dropped > at); }
  void Init(std::uint32_t count) {
    partitions = count;
    next_offset.assign(count, 0);
    visible_end = std::make_unique<std::atomic<std::uint64_t>[]>(count);
    start_offset = std::make_unique<std::atomic<std::uint64_t>[]>(count);
    index.assign(count, std::vector<IndexEntry>());
    max_ts.assign(count, INT64_MIN);
    bytes.assign(count, 0);
    last_indexed.assign(count, kNotIndexed);
  }
};

// A commit's callback, called exactly once; what it captured is released as soon as it has run,
// not when its Pending goes (a Pending stays in inflight_ a while after its answer, and a
// callback may hold a server's connection).
// The counters behind Engine::counters(): relaxed atomics, bumped on the commit path.
struct EngineMetrics {
  std::atomic<std::uint64_t> commits{0};
  std::atomic<std::uint64_t> answered_ok{0};
  std::atomic<std::uint64_t> conflicts{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> events{0};
  std::atomic<std::uint64_t> event_bytes{0};
  base::AtomicHistogram commit_ns = base::LatencyHistogramNs();

  void CountAnswer(const Status& status) {
    auto& counter = status.ok()                                    ? answered_ok
                    : status.code() == base::StatusCode::kConflict ? conflicts
                                                                   : errors;
    counter.fetch_add(1, std::memory_order_relaxed);
  }
};

// While the log's writer runs a group of commit callbacks on this thread: when the group began
// (0 otherwise). Every commit of the group became durable by then, so its latency is timed to
// it, with one clock read per group instead of one per commit.
inline thread_local std::int64_t t_group_durable_ns = 0;

class OnceCallback {
 public:
  OnceCallback& operator=(Engine::CommitCallback fn) {
    fn_ = std::move(fn);
    return *this;
  }
  // A transaction's callback: its answer is counted and, with a result, timed from now.
  void Bind(Engine::CommitCallback fn, EngineMetrics* metrics) {
    fn_ = std::move(fn);
    metrics_ = metrics;
    started_ns_ = base::MonotonicNs();
  }
  void operator()(Result<CommitResult> result) {
    if (metrics_ != nullptr) {
      metrics_->CountAnswer(result.status());
      if (result.ok()) {
        // A commit made after its group began (a retry parked and answered within the group)
        // reads the clock.
        const std::int64_t now =
            t_group_durable_ns >= started_ns_ ? t_group_durable_ns : base::MonotonicNs();
        metrics_->commit_ns.Record(static_cast<std::uint64_t>(now - started_ns_));
      }
    }
    Engine::CommitCallback fn = std::move(fn_);
    fn_ = nullptr;
    fn(std::move(result));
  }

 private:
  Engine::CommitCallback fn_;
  EngineMetrics* metrics_ = nullptr;
  std::int64_t started_ns_ = 0;
};

struct Engine::Pending {
  // User-provided, so make_shared does not zero the whole object (half a KiB, per commit) before
  // constructing it: every member initializes itself.
  Pending() {}  // NOLINT(modernize-use-equals-default)

  Transaction txn;
  std::optional<CatalogOp> catalog;
  std::string catalog_name;       // owns catalog->name
  OnceCallback done;              // called exactly once
  std::shared_ptr<Pending> self;  // set while the log holds the only reference (see Append)
  CommitResult result;
  // Per event (parallel to result.events): its topic, and for Undo the partition's greatest
  // timestamp before it. Catalog entries outlive every transaction that names them (table_ids_
  // and topic_ids_ keep them), so plain pointers do: one allocation, no reference counting.
  struct EventSlot {
    TopicEntry* topic;
    std::int64_t prev_max_ts;
    std::uint64_t record_bytes;
  };
  std::vector<EventSlot> event_slots;
  // What Undo needs should the log reject this transaction (a full disk): resolved tables and
  // topics, catalog entries it replaced.
  std::vector<TableEntry*> write_tables;   // parallel to txn.writes()
  std::vector<TopicEntry*> offset_topics;  // parallel to txn.offsets()
  std::shared_ptr<TableEntry> replaced_table;
  std::shared_ptr<TopicEntry> replaced_topic;
  // A conflict, or a retry's remembered result, waiting for the durability of what it saw.
  std::optional<Result<CommitResult>> parked_answer;
  // Checkpoint: the sequencer fills this at an LSN boundary, appending nothing.
  CheckpointCapture* capture = nullptr;
  // NewGroupGeneration: the group to advance, and where to put its new generation.
  std::string group_bump;
  std::uint64_t* generation_out = nullptr;
};

// What a checkpoint at LSN `lsn` holds besides the tables' rows (which the MVCC snapshot at
// `lsn` gives without the sequencer): copied by the sequencer between two transactions.
struct Engine::CheckpointCapture {
  Lsn lsn;
  std::uint32_t next_table_id = 0;
  std::uint32_t next_topic_id = 0;
  struct TableState {
    std::shared_ptr<TableEntry> entry;
    Lsn created, dropped;  // dropped: 0 if not (yet) dropped at `lsn`
  };
  struct TopicState {
    std::shared_ptr<TopicEntry> entry;
    Lsn created, dropped;
    std::vector<std::uint64_t> next_offset;
    std::vector<std::int64_t> max_ts;
    std::vector<std::uint64_t> bytes;
  };
  std::vector<TableState> tables;  // user and internal
  std::vector<TopicState> topics;  // every topic ever created
};

}  // namespace lockstep::engine

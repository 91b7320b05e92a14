#pragma once
// Engine: tables and topics in one commit. Usable embedded (in-process, like SQLite) or behind
// lockstepd. Design: docs/engine.md.
//
// A transaction's preconditions, table writes and event appends commit atomically and durably:
// Commit() hands it to the single sequencer thread, which checks the preconditions against the
// newest state, assigns event offsets, encodes the transaction record (events encoded once, in
// place), appends it to the log and applies it to the in-memory tables tagged with its LSN. The
// returned future completes only when that LSN is durable — with the LSN and every event's
// position, or with kConflict naming the first failed precondition (answered only once what it
// saw is durable). Reads see the visible LSN: never anything that is not durable.
//
// Built (docs/engine.md): catalog; transactions with preconditions, puts, deletes, event appends,
// offset commits and idempotency keys; consumer groups; reads now and as of an LSN; fetch and
// long-poll; the change feed; checkpoints with retention; recovery; reclaiming old versions
// while running. A storage error stops the engine (every later commit fails
// with kIoError); reads go on. A full disk is not an error of that kind (guarantee 7): the log
// rejects the transactions it could not write, the engine undoes them in memory and answers
// kResourceExhausted, and commits work again once a new segment can be prepared.
//
// Threads: every public method may be called from any thread. Commit never blocks on I/O.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/event_record.h"
#include "engine/ids.h"
#include "engine/internal_tables.h"
#include "engine/table.h"
#include "engine/transaction.h"
#include "engine/txn_record.h"
#include "storage/checkpoint_file.h"
#include "storage/log.h"

namespace lockstep::engine {

struct CheckpointOptions {
  // The checkpointer thread takes a checkpoint (and then applies retention) once this much log
  // was written since the last one (0: never by size)...
  std::uint64_t every_log_bytes = 256ull << 20;
  // ...or this long after the last one if anything was committed since (0: never by time).
  std::int64_t every_ms = 600'000;
  storage::CheckpointWriteOptions write;  // chunking and pacing
};

struct EngineOptions {
  std::string dir;            // data directory (created if missing); the log is dir/log
  storage::Io* io = nullptr;  // not owned; must outlive the engine
  storage::LogOptions log;    // dir, io and the callback hooks are set by the engine
  base::EventLimits event_limits;
  std::uint32_t key_bytes_max = 4 << 10;
  std::uint32_t value_bytes_max = 1 << 20;
  std::uint32_t name_bytes_max = 255;
  std::uint32_t partitions_max = 4096;
  // Operations (preconditions, writes, events and offset commits together) per transaction:
  // one transaction is one log record and one sequencer step, so it must stay small enough
  // not to stall every other commit behind it.
  std::uint32_t transaction_ops_max = 10'000;
  // Memory budget for all tables (keys, values, versions and their overhead, internal tables
  // included); 0: none. A commit that would pass it is refused with kResourceExhausted.
  std::uint64_t table_bytes_max = 0;
  // How long old versions are kept: a version shadowed by a write that became visible more
  // than this many milliseconds ago is reclaimed, so reads as of an LSN and the change feed's
  // before images reach back at least this far (docs/engine.md). 0: keep only what current
  // readers need.
  std::int64_t version_window_ms = 10'000;
  // How long an idempotency key is remembered: 0 (the default) as long as the log holds the
  // transaction that used it; else this many milliseconds after its commit.
  std::int64_t idempotency_horizon_ms = 0;
  std::function<std::int64_t()> now_ms;  // default: wall clock
  CheckpointOptions checkpoint;
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

struct Row {
  std::string key;
  std::string value;
  Lsn version;
};

// Events of one partition, as stored: concatenated event records (docs/events.md), never
// re-encoded. Copied out of the mapped log for embedded use; the server will send the same bytes
// with scatter-gather straight from the mapping.
struct FetchResult {
  std::vector<std::byte> records;
  std::uint32_t events = 0;
  Offset next_offset;     // where the next fetch continues
  Offset high_watermark;  // the partition's end offset as of the visible LSN
};

// A fetch answered without copying: the event records are views into the mapped log segments,
// in offset order, which `pins` keep mapped (also past retention) for as long as they live. A
// view holds one record or several back to back (a run of a producer's batch).
// The server writes them to the socket with one gather write.
struct FetchedViews {
  std::vector<Bytes> records;
  std::vector<std::shared_ptr<const void>> pins;
  std::size_t bytes = 0;  // of all records
  std::uint32_t events = 0;
  Offset next_offset;
  Offset high_watermark;
};

// One row's change in the change feed: `before` and `after` absent for a row that did not exist.
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
  std::vector<std::byte> record;  // the event record, as stored (docs/events.md)
};
// One transaction of the change feed: its table changes, in the order it wrote them, with the
// events it committed alongside — change data capture with the business intent attached.
struct ChangedTransaction {
  Lsn lsn;
  std::int64_t commit_ms = 0;
  std::vector<Change> changes;
  std::vector<ChangedEvent> events;
};
struct ChangeFeed {
  std::vector<ChangedTransaction> transactions;
  Lsn next_lsn;  // where the next read continues
};
struct ChangeFeedOptions {
  std::uint32_t max_transactions = 1000;
  std::uint32_t max_bytes = 1 << 20;  // at least one transaction is returned even if larger
};

struct FetchOptions {
  std::uint32_t max_events = 1000;
  std::uint32_t max_bytes = 1 << 20;  // at least one event is returned even if it is larger
};

struct TopicInfo {
  std::string name;
  TopicId id;
  std::uint32_t partitions = 0;
  std::int64_t retention_ms = 0;
  std::uint64_t retention_bytes = 0;
  std::vector<Offset> start_offsets;  // earliest offset still held, per partition (retention)
  std::vector<Offset> end_offsets;    // next offset per partition, as of the visible LSN
};

// One table's figures as of the visible LSN (DescribeTable).
struct TableInfo {
  std::string name;
  TableId id;
  Lsn created;
  Lsn as_of;
  std::uint64_t rows = 0;
  std::uint64_t key_bytes = 0;
  std::uint64_t value_bytes = 0;
  Lsn newest_version;              // the greatest version among the rows (0: no row)
  std::uint64_t memory_bytes = 0;  // Table::bytes(): old versions and overhead included
};

// A consumer group's committed position in one partition (the next offset it will read).
struct GroupOffset {
  std::string topic;
  PartitionId partition;
  Offset offset;
  std::uint64_t generation = 0;  // of the member that committed it
  std::int64_t commit_ms = 0;
  Lsn lsn;  // of the transaction that committed it
};

struct GroupInfo {
  std::string name;
  std::uint64_t generation = 0;  // 0: nobody ever joined
  std::vector<GroupOffset> offsets;
};

// How far a group is behind in one partition it committed for.
struct PartitionLag {
  std::string topic;
  PartitionId partition;
  Offset committed;
  Offset end;                // the partition's end offset as of the visible LSN
  std::uint64_t events = 0;  // end - committed (0 if the group is ahead, e.g. after a reset)
  std::int64_t ms = 0;  // age of the oldest event not yet consumed (now - its timestamp); 0 if none
};

// What the engine counted since it opened, for metrics (docs/operations.md, "Metrics").
struct EngineCounters {
  std::uint64_t commits = 0;      // transactions newly committed (durable)
  std::uint64_t answered_ok = 0;  // transactions answered with a result (retries included)
  std::uint64_t conflicts = 0;    // ... with a conflict
  std::uint64_t errors = 0;       // ... with any other error (invalid, disk full, stopped)
  std::uint64_t events = 0;       // events appended by durable commits
  std::uint64_t event_bytes = 0;  // their record bytes
};

struct EngineMetrics;  // engine_internal.h

class Engine {
 public:
  // Opens (creating if missing) and recovers by replaying the log.
  static Result<std::unique_ptr<Engine>> Open(EngineOptions options);
  // Finishes in-flight commits, stops the sequencer, closes the log.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Commits `txn` (see the file comment). Bad input (unknown table or topic, oversized key,
  // value or event) completes the future at once with kInvalidArgument or kNotFound.
  std::future<Result<CommitResult>> Commit(Transaction txn);
  // The same, calling `done` exactly once instead: at once on this thread for bad input, else on
  // the sequencer thread (conflicts, errors) or the log's writer thread (durable). `done` must be
  // short and must not block; it may call Commit and the read methods.
  using CommitCallback = std::function<void(Result<CommitResult>)>;
  void Commit(Transaction txn, CommitCallback done);

  // Catalog, committed through the log. kAlreadyExists / kNotFound / kInvalidArgument.
  Status CreateTable(std::string_view name);
  Status DropTable(std::string_view name);
  Status CreateTopic(std::string_view name, std::uint32_t partitions, std::int64_t retention_ms = 0,
                     std::uint64_t retention_bytes = 0);
  Status DropTopic(std::string_view name);
  std::vector<std::string> ListTables() const;
  // Counts the rows at the visible LSN (one pass over the table, inside an RCU read section:
  // for an operator's look, not for a hot path). kNotFound for no such table.
  Result<TableInfo> DescribeTable(std::string_view name) const;
  std::vector<TopicInfo> ListTopics() const;
  // Partitions, retention, and the start and end offset of each partition at the visible LSN.
  // kNotFound for no such topic; kInvalidArgument for a name no topic could have.
  Result<TopicInfo> DescribeTopic(std::string_view name) const;

  // Reads at the visible LSN. kNotFound for an unknown table.
  Result<std::optional<Row>> Get(std::string_view table, std::string_view key) const;
  Result<std::vector<Row>> Scan(std::string_view table, const ScanOptions& options) const;

  // Reads as of an LSN: the state right after transaction `at` committed, for any `at` from
  // oldest_readable_lsn() to the visible LSN; kOutOfRange outside that window, naming it. The
  // table must have existed at `at`.
  Result<std::optional<Row>> GetAsOf(std::string_view table, std::string_view key, Lsn at) const;
  // Several keys of one table read at one snapshot: as of `at`, or at the visible LSN when `at`
  // is 0 (the result names it). rows[i] answers keys[i]. At most kMultiGetKeysMax keys, and at
  // most `max_bytes` of answer — keys and values found plus a fixed cost per row —
  // (kInvalidArgument past either, saying to ask for fewer), so one call stays a bounded read.
  static constexpr std::size_t kMultiGetKeysMax = 10'000;
  // Ok for a multi-get of `keys` keys, else the refusal MultiGet gives (callers that gather the
  // keys first check here before gathering).
  static Status CheckMultiGetKeys(std::size_t keys);
  struct MultiGetResult {
    std::vector<std::optional<Row>> rows;
    Lsn as_of;
  };
  Result<MultiGetResult> MultiGet(std::string_view table, std::span<const std::string_view> keys,
                                  Lsn at = Lsn(), std::size_t max_bytes = SIZE_MAX) const;
  Result<std::vector<Row>> ScanAsOf(std::string_view table, const ScanOptions& options,
                                    Lsn at) const;
  // Every version from this LSN on is kept. It starts at 0 after a full replay of the log, or at
  // the checkpoint's LSN after a restart from one (a checkpoint holds only the newest version of
  // each row), and then follows the visible LSN at a distance of version_window_ms (never past
  // a checkpoint being written).
  Lsn oldest_readable_lsn() const { return Lsn(version_floor_.load(std::memory_order_acquire)); }

  // The change feed: user-table changes of the transactions from LSN `from` on, up to the
  // visible LSN, each with its before and after images and the events of the same transaction.
  // Transactions that changed no user table are skipped (next_lsn moves past them).
  // kOutOfRange for `from` past the visible LSN + 1 or below what the log still holds.
  Result<ChangeFeed> Changes(Lsn from, const ChangeFeedOptions& options = {}) const;

  // Events of `topic`/`partition` from `offset`, up to the visible LSN. kOutOfRange above the end
  // offset (an offset equal to it returns no events); kNotFound for an unknown topic;
  // kInvalidArgument for a partition the topic does not have.
  // The records' log batches were verified as they entered the process (recovery, or this
  // process wrote them) and are not hashed again; each event's own checksum is
  // not checked here: DecodeEvent (as the client's consumer does) checks it, end to end.
  Result<FetchResult> Fetch(std::string_view topic, PartitionId partition, Offset offset,
                            const FetchOptions& options = {}) const;
  // The same fetch, as views into the mapped segments (no copy of the records).
  Result<FetchedViews> FetchViews(std::string_view topic, PartitionId partition, Offset offset,
                                  const FetchOptions& options = {}) const;
  // The first offset whose event timestamp is at or after `timestamp_ms`; the end offset when
  // there is none (Kafka's ListOffsets by timestamp). Event timestamps are the producer's, so
  // they need not grow with offsets: this is the first such offset, not the closest timestamp.
  Result<Offset> OffsetForTimestamp(std::string_view topic, PartitionId partition,
                                    std::int64_t timestamp_ms) const;
  // Blocks until the partition's end offset passes `offset` (new durable events), the timeout
  // passes, or the engine stops. Returns the end offset then. For long-polling consumers.
  Result<Offset> WaitForEvents(std::string_view topic, PartitionId partition, Offset offset,
                               std::chrono::milliseconds timeout) const;

  // Calls `fn` after events became visible (durable), from the log's writer thread, with no
  // engine lock held: it must be short and must not block (a server posts a wake-up to its own
  // threads). Returns an id for RemoveEventsListener, after which `fn` is never called again.
  std::uint64_t AddEventsListener(std::function<void()> fn);
  void RemoveEventsListener(std::uint64_t id);

  // Consumer groups (guarantee 5). A group's offsets are committed by transactions
  // (Transaction::CommitOffset), alone or with the outputs they produced. NewGroupGeneration
  // durably advances the group's generation — a rebalance — and returns it; from then on, offset
  // commits carrying an older generation are rejected with kFailedPrecondition. The server's
  // group coordinator (issue 4) calls it; an embedded user may too.
  Result<std::uint64_t> NewGroupGeneration(std::string_view group);
  // kNotFound for a group that never joined nor committed.
  Result<GroupInfo> DescribeGroup(std::string_view group) const;
  std::vector<std::string> ListGroups() const;
  Result<std::vector<PartitionLag>> GroupLag(std::string_view group) const;

  // Writes a checkpoint at the visible LSN without stopping commits (docs/engine.md), then applies
  // retention: topics' time retention moves their start offsets, and log segments below what
  // the previous checkpoint, the topics and the idempotency horizon still need are deleted.
  // Returns the checkpoint's LSN. One at a time: a second caller waits for the first. The
  // checkpointer thread calls this by itself (CheckpointOptions).
  Result<Lsn> Checkpoint();
  // Idempotency keys of transactions below this LSN are forgotten (with the default horizon:
  // retention deleted those transactions from the log, or is about to).
  Lsn idempotency_floor() const {
    return std::max(log_->first_lsn(), Lsn(idempotency_floor_.load(std::memory_order_acquire)));
  }
  // The newest durable checkpoint's LSN (0: none).
  Lsn checkpoint_lsn() const { return Lsn(checkpoint_lsn_.load(std::memory_order_acquire)); }

  // Bytes the tables hold (what table_bytes_max limits).
  std::uint64_t table_bytes() const;
  // Entries of every partition's sparse offset index (32 bytes each; about one per 64 events
  // retained).
  std::uint64_t offset_index_entries() const;
  // One line for diagnostics: LSNs, parked answers, rejections.
  std::string DebugState() const;

  Lsn visible_lsn() const { return Lsn(visible_lsn_.load(std::memory_order_acquire)); }
  EngineCounters counters() const;
  // Nanoseconds from Commit() to a transaction's answer with a result: to when it was known
  // durable (the start of the log's group of callbacks that answers it).
  const base::AtomicHistogram& commit_latency_ns() const;
  // The log, for its figures (stats(), write_sync_ns(), batch_records()).
  const storage::Log& log() const { return *log_; }
  // Ok, or why the engine stopped.
  Status status() const;

  // Test hooks for a deterministic simulation (lockstep-torture, docs/testing.md): hold the
  // log's writer (storage::Log::HoldWrites), and tell whether the sequencer has taken and
  // processed everything submitted so far (nothing queued, and it sleeps), so that a driver can
  // let a whole batch reach the log before any of it is written. Submissions refused at once
  // (invalid, engine stopped or closing) never queue.
  void HoldLogWrites(bool hold);
  bool SequencerDrained();

 private:
  struct Pending;
  struct TableEntry;
  struct TopicEntry;
  struct CheckpointCapture;

  explicit Engine(EngineOptions options);
  Status Replay();
  struct HeldStart {
    TopicEntry* topic;
    PartitionId partition;
    std::uint64_t start;  // the start offset recovery found
    std::uint64_t end;    // the partition's end offset
    std::uint64_t held = 0;
    bool found = false;
  };
  Status FindHeldStarts(Lsn first, std::vector<HeldStart>& suspects) const;
  Status ApplyRecord(Lsn lsn, Bytes record);
  Status ApplyCatalogLocked(const CatalogOp& op, Lsn lsn);
  // Recovery from the newest valid checkpoint (older ones if it is damaged); sets *replay_from.
  Status LoadCheckpoint(Lsn* replay_from);
  Status InstallCheckpoint(Bytes stream, Lsn lsn);
  void ProcessCapture(const std::shared_ptr<Pending>& pending);
  Status WriteCheckpoint(const CheckpointCapture& capture, Lsn delete_below,
                         const std::vector<std::vector<std::uint64_t>>& start_offsets);
  void CheckpointerLoop();
  static std::uint64_t FirstOffsetWithin(const TopicEntry& topic, std::uint32_t partition,
                                         std::uint64_t total, Lsn lsn, std::uint64_t budget);
  Result<std::uint64_t> FirstOffsetAtOrAfter(const TopicEntry& topic, PartitionId partition,
                                             std::int64_t timestamp_ms, std::uint64_t start,
                                             std::uint64_t end) const;
  void SequencerLoop();
  void BeforeLogCallbacks(std::size_t count);  // the log's hooks (writer thread)
  void AfterLogCallbacks();
  // Sequencer only: moves the version floor along the window and reclaims below what every
  // reader has let go of (docs/engine.md, "Tables"). `now`: the grace period of a floor ended;
  // `processed`: transactions since the last call.
  void Reclaim(bool now, std::size_t processed);
  // Sequencer only: unlinks idempotency keys AnswerRetry no longer matches; returns how many
  // writes it looked at.
  std::size_t ExpireIdempotencyKeys(std::int64_t now_ms);
  void Process(const std::shared_ptr<Pending>& pending);
  bool AnswerRetry(const std::shared_ptr<Pending>& pending);
  void ProcessCatalog(const std::shared_ptr<Pending>& pending);
  void ProcessGroupBump(const std::shared_ptr<Pending>& pending);
  void Append(const std::shared_ptr<Pending>& pending, Bytes record, Lsn expected);
  // Disk full: the log rejected every LSN from `next` on and hands them out again. Undoes the
  // in-memory effects of those transactions (newest first) and answers what waited on them.
  void RollBack(Lsn next);
  void Undo(Pending& pending);
  void Park(const std::shared_ptr<Pending>& pending, Result<CommitResult> answer, Lsn observed);
  void Fail(const Status& status);
  void WakeLongPolls();
  void Submit(std::shared_ptr<Pending> pending);
  Status Validate(const Transaction& txn) const;
  Status CommitCatalog(CatalogOp op);
  void OnDurable(Lsn lsn, const Status& status, const std::shared_ptr<Pending>& pending);
  void AnswerParked(Lsn durable, const Status& failure);
  // Answers everything parked on an LSN >= `from` with `refusal` (those LSNs were rejected).
  void AnswerParkedFrom(Lsn from, const Status& refusal);
  std::shared_ptr<Table> FindTable(std::string_view name) const;
  std::shared_ptr<TableEntry> FindTableAt(std::string_view name, Lsn at) const;
  Result<std::shared_ptr<TopicEntry>> FindPartition(std::string_view topic,
                                                    PartitionId partition) const;
  std::shared_ptr<TopicEntry> FindTopic(std::string_view name) const;
  // Under catalog_mu_: the name of the topic with `id`, dropped or not ("" if none).
  std::string TopicNameLocked(TopicId id) const;
  // Events of one partition in [from, end) in offset order, as stored; fn(Bytes record,
  // const LogReader&) returns false (or a Result<bool> holding false) to stop, or an error.
  template <typename Fn>
  Status ForEachEvent(const TopicEntry& topic, PartitionId partition, std::uint64_t from,
                      std::uint64_t end, Lsn start, Fn&& fn) const;
  static Result<TxnRecordReader> NextTxnRecord(storage::LogReader& reader, const TopicEntry& topic,
                                               PartitionId partition, std::uint64_t want,
                                               std::uint64_t end);
  // FetchViews' walk: the partition's records in [from, end) into `out`, within the limits.
  Status CollectViews(const TopicEntry& topic, PartitionId partition, std::uint64_t from,
                      std::uint64_t end, const FetchOptions& options, FetchedViews& out) const;
  Status CheckRun(const TopicEntry& topic, PartitionId partition, const EventPiece& piece,
                  std::uint64_t first) const;
  Status OffsetGap(const TopicEntry& topic, PartitionId partition, std::uint64_t want,
                   std::uint64_t found) const;

  EngineOptions options_;
  std::unique_ptr<storage::Log> log_;

  // The catalog: changed only by the sequencer (and replay); read by any thread.
  mutable std::shared_mutex catalog_mu_;
  std::map<std::string, std::shared_ptr<TableEntry>, std::less<>> tables_;
  std::map<std::string, std::shared_ptr<TopicEntry>, std::less<>> topics_;
  // By id: every table and topic ever created, dropped ones and the internal tables included.
  std::unordered_map<std::uint32_t, std::shared_ptr<TableEntry>> table_ids_;
  std::unordered_map<std::uint32_t, std::shared_ptr<TopicEntry>> topic_ids_;
  // The internal tables (engine/internal_tables.h), never in tables_.
  std::shared_ptr<TableEntry> idempotency_;
  std::shared_ptr<TableEntry> groups_;
  std::shared_ptr<TableEntry> group_offsets_;
  std::uint32_t next_table_id_ = 1;  // sequencer only
  std::uint32_t next_topic_id_ = 1;  // sequencer only

  // Submission queue.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::shared_ptr<Pending>> queue_;
  bool stopping_ = false;
  bool sequencer_idle_ = false;       // guarded by queue_mu_: only then does Submit notify
  std::uint32_t deferred_wakes_ = 0;  // the log's writer thread only (BeforeLogCallbacks)
  std::uint32_t wake_every_ = 1;      // the log's writer thread only
  bool rollback_requested_ = false;   // guarded by queue_mu_: a full disk rejected appends
  bool reclaim_requested_ = false;    // guarded by queue_mu_: a floor's grace period ended

  // Conflicts waiting for the durability of the version they saw: (lsn, pending).
  mutable std::mutex parked_mu_;
  std::multimap<std::uint64_t, std::shared_ptr<Pending>> parked_;
  // At least parked_.size() (Park counts an entry before it decides), changed under parked_mu_;
  // OnDurable skips the lock while it is 0 (Park).
  std::atomic<std::size_t> parked_count_{0};

  std::atomic<std::uint64_t> visible_lsn_{0};
  std::unique_ptr<EngineMetrics> metrics_;
  // Long-polling fetchers sleep here; OnDurable notifies when events became visible.
  mutable std::mutex events_mu_;
  mutable std::condition_variable events_cv_;
  mutable std::atomic<int> event_waiters_{0};
  std::mutex listeners_mu_;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> listeners_;  // under listeners_mu_
  std::uint64_t next_listener_ = 1;                                         // under listeners_mu_
  std::atomic<int> listener_count_{0};
  mutable std::mutex failure_mu_;
  Status failure_;
  // failure_ is set (it never clears): status() reads failure_ only then, so the commit path,
  // which asks on every transaction, takes no lock while the engine is healthy.
  std::atomic<bool> failed_{false};
  // Checkpoints: one at a time under checkpoint_mu_.
  std::mutex checkpoint_mu_;
  std::atomic<std::uint64_t> checkpoint_lsn_{0};
  Lsn previous_checkpoint_;                    // guarded by checkpoint_mu_: kept as the fallback
  std::uint64_t log_bytes_at_checkpoint_ = 0;  // guarded by checkpoint_mu_
  std::int64_t checkpoint_ms_ = 0;             // guarded by checkpoint_mu_
  // Version reclamation. Readers check snapshots against version_floor_; the sequencer reclaims
  // only below reclaim_safe_, a floor published one grace period earlier (every reader that
  // could hold a snapshot below it has finished). checkpoint_pin_ (0: none) holds the floor at
  // or below the LSN of a checkpoint being written.
  std::atomic<std::uint64_t> version_floor_{0};
  std::atomic<std::uint64_t> reclaim_safe_{0};
  std::atomic<bool> grace_pending_{false};
  std::atomic<std::uint64_t> checkpoint_pin_{0};
  struct VisibleSample {
    std::int64_t ms;
    std::uint64_t lsn;
  };
  std::deque<VisibleSample> visible_samples_;     // sequencer only: the visible LSN over time
  std::int64_t last_reclaim_ms_ = INT64_MIN;      // sequencer only
  std::uint64_t transactions_since_reclaim_ = 0;  // sequencer only
  // Sequencer only: more below the safe floor, or index moves left. True at start, so that a
  // first pass finishes the moves that recovery's writes began.
  bool reclaim_backlog_ = true;
  std::vector<void*> garbage_;  // sequencer only: unlinked, not yet handed on
  // Idempotency keys of transactions below this LSN are forgotten (retention deleted them, or
  // is about to).
  std::atomic<std::uint64_t> idempotency_floor_{0};
  std::mutex checkpointer_mu_;
  std::condition_variable checkpointer_cv_;
  bool checkpointer_stop_ = false;
  std::thread checkpointer_;
  // Sequencer only: transactions applied but maybe not durable, in LSN order, and the LSN the
  // log should hand out next; a mismatch means a full disk rejected appends (RollBack).
  std::deque<std::shared_ptr<Pending>> inflight_;
  Lsn expected_next_;
  std::atomic<std::uint64_t> rejections_{0};  // disk-full rejections seen by OnDurable
  TxnRecordWriter writer_;                    // sequencer only
  std::vector<std::byte> scratch_;            // sequencer only: internal-table values
  std::vector<RememberedEvent> remembered_;   // sequencer only
  // Sequencer scratch for Process: reused, so a commit allocates little.
  std::vector<TableEntry*> scratch_tables_;
  std::vector<TopicEntry*> scratch_topics_;
  std::vector<std::uint64_t> scratch_offsets_;
  // Per partition a transaction appends to: the next offset it hands out.
  struct NextOffset {
    const TopicEntry* topic;
    std::uint32_t partition;
    std::uint64_t next;
  };
  std::vector<NextOffset> scratch_next_offsets_;
  // Per topic: the partition its keyless events stick to in this transaction.
  std::vector<std::pair<const TopicEntry*, std::uint32_t>> scratch_sticky_;
  std::vector<std::int64_t> scratch_timestamps_;
  std::vector<std::uint64_t> scratch_sizes_;
  std::vector<base::EventHeader> scratch_headers_;
  std::thread sequencer_;
};

}  // namespace lockstep::engine

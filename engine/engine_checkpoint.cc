// Checkpoints (docs/engine.md, "Checkpoints"): what the engine writes, how it takes one without
// stopping commits, how recovery loads one, and the retention that follows.
//
// The stream inside the checkpoint file (storage/checkpoint_file.h makes it durable and
// verifiable), little-endian, version 1:
//   stream = version:u8 = 1, lsn:u64, next_table_id:u32, next_topic_id:u32,
//            idempotency_floor:u64, table_count:u32, table*, topic_count:u32, topic*,
//            end:u32 = "END!"
//   table  = id:u32, created:u64, dropped:u64 (0: live), name_bytes:u16, name, row*, 0:u8
//   row    = 1:u8, key_bytes:u32, key, value_bytes:u32, value, version:u64
//   topic  = id:u32, created:u64, dropped:u64, partitions:u32, retention_ms:i64,
//            retention_bytes:u64, name_bytes:u16, name, partition{partitions}
//   partition = next_offset:u64, start_offset:u64, max_ts:i64, bytes:u64, entry_count:u64,
//               {offset:u64, lsn:u64, max_ts_before:i64, bytes_before:u64}{entry_count}
// Tables are every table ever created, the internal ones included (ids >=
// kFirstInternalTableId), dropped ones without rows; rows are each key's newest version at the
// LSN. Topics are every topic ever created (dropped
// ones keep their names for remembered results), with each partition's state at the LSN.
#include <spdlog/spdlog.h>

#include <thread>

#include <fmt/format.h>

#include "base/crash_site.h"
#include "base/endian.h"
#include "base/planted_bug.h"
#include "engine/engine.h"
#include "engine/engine_internal.h"

namespace lockstep::engine {
namespace {

constexpr std::uint8_t kStreamVersion = 1;
constexpr std::uint32_t kStreamEnd = 0x21444E45;  // "END!"
constexpr std::size_t kFlushBytes = 256 << 10;

std::string CheckpointDir(const std::string& dir) { return storage::JoinPath(dir, "checkpoints"); }

// Encodes into a buffer that goes to the file whenever it passes kFlushBytes.
class StreamOut {
 public:
  explicit StreamOut(storage::CheckpointWriter& writer) : writer_(writer) {}
  void U8(std::uint8_t v) { buf_.push_back(std::byte{v}); }
  void U16(std::uint16_t v) { base::StoreLe16(Grow(2), v); }
  void U32(std::uint32_t v) { base::StoreLe32(Grow(4), v); }
  void U64(std::uint64_t v) { base::StoreLe64(Grow(8), v); }
  void I64(std::int64_t v) { U64(static_cast<std::uint64_t>(v)); }
  void Blob32(Bytes b) {
    U32(static_cast<std::uint32_t>(b.size()));
    buf_.insert(buf_.end(), b.begin(), b.end());
  }
  void Name(std::string_view s) {
    U16(static_cast<std::uint16_t>(s.size()));
    const Bytes b = AsBytes(s);
    buf_.insert(buf_.end(), b.begin(), b.end());
  }
  // Writes full buffers out; Ok or the first write error.
  Status Flush(bool force = false) {
    if (status_.ok() && (force || buf_.size() >= kFlushBytes)) {
      status_ = writer_.Append(buf_);
      buf_.clear();
    }
    return status_;
  }

 private:
  std::byte* Grow(std::size_t n) {
    buf_.resize(buf_.size() + n);
    return buf_.data() + buf_.size() - n;
  }
  storage::CheckpointWriter& writer_;
  std::vector<std::byte> buf_;
  Status status_ = Status::Ok();
};

// Decodes with bounds checks: past the end, every read yields zero and the stream is bad.
class StreamIn {
 public:
  explicit StreamIn(Bytes bytes) : rest_(bytes) {}
  bool bad() const { return bad_; }
  bool done() const { return rest_.empty(); }
  std::uint8_t U8() { return Take(1) ? static_cast<std::uint8_t>(last_[0]) : 0; }
  std::uint16_t U16() { return Take(2) ? base::LoadLe16(last_) : 0; }
  std::uint32_t U32() { return Take(4) ? base::LoadLe32(last_) : 0; }
  std::uint64_t U64() { return Take(8) ? base::LoadLe64(last_) : 0; }
  std::int64_t I64() { return static_cast<std::int64_t>(U64()); }
  Bytes Blob32() { return Span(U32()); }
  std::string Name() { return std::string(AsView(Span(U16()))); }
  // A count of items of at least `min_bytes` each, refused when the stream cannot hold them.
  std::uint64_t Count(std::uint64_t count, std::size_t min_bytes) {
    if (count > rest_.size() / min_bytes) bad_ = true;
    return bad_ ? 0 : count;
  }

 private:
  bool Take(std::size_t n) {
    if (bad_ || rest_.size() < n) {
      bad_ = true;
      return false;
    }
    last_ = rest_.data();
    rest_ = rest_.subspan(n);
    return true;
  }
  Bytes Span(std::size_t n) {
    if (!Take(n)) return {};
    return {last_, n};
  }
  Bytes rest_;
  const std::byte* last_ = nullptr;
  bool bad_ = false;
};

}  // namespace

// ---- Taking a checkpoint --------------------------------------------------------------------

// Retention by bytes, at index granularity: the first indexed offset (at or below `lsn`) from
// which the partition's events up to `total` bytes fit in `budget`. The newest index block is
// always kept, even if it alone is larger (as Kafka keeps the active segment).
std::uint64_t Engine::FirstOffsetWithin(const TopicEntry& t, std::uint32_t partition,
                                        std::uint64_t total, Lsn lsn, std::uint64_t budget) {
  // bytes_before and lsn both grow along the index: two binary searches, under a brief lock.
  std::shared_lock lock(t.index_mu);
  const auto& entries = t.index[partition];
  auto upto = std::partition_point(entries.begin(), entries.end(),
                                   [&](const TopicEntry::IndexEntry& e) { return e.lsn <= lsn; });
  if (upto == entries.begin()) return 0;
  auto fits = std::partition_point(entries.begin(), upto, [&](const TopicEntry::IndexEntry& e) {
    return total - e.bytes_before > budget;
  });
  return fits == upto ? (upto - 1)->offset : fits->offset;
}

void Engine::ProcessCapture(const std::shared_ptr<Pending>& p) {
  CheckpointCapture& c = *p->capture;
  c.lsn = Lsn(expected_next_.value() - 1);
  // The checkpoint reads the tables at c.lsn until Checkpoint() is done: the version floor (at
  // most the visible LSN, so at most c.lsn now) must not pass it meanwhile.
  checkpoint_pin_.store(std::max<std::uint64_t>(c.lsn.value(), 1), std::memory_order_release);
  c.next_table_id = next_table_id_;
  c.next_topic_id = next_topic_id_;
  // The sequencer is the catalog's only writer: it reads it without the lock.
  for (const auto& [id, entry] : table_ids_) {
    // Dropped tables too (names only): the change feed names them for records the log still holds.
    c.tables.push_back({entry, entry->created, entry->dropped});
  }
  for (const auto& [id, entry] : topic_ids_) {
    c.topics.push_back(
        {entry, entry->created, entry->dropped, entry->next_offset, entry->max_ts, entry->bytes});
  }
  p->result.lsn = c.lsn;
  p->done(p->result);
}

Result<Lsn> Engine::Checkpoint() {
  std::lock_guard lock(checkpoint_mu_);
  LOCKSTEP_RETURN_IF_ERROR(status());
  struct Unpin {
    std::atomic<std::uint64_t>& pin;
    ~Unpin() { pin.store(0, std::memory_order_release); }
  } unpin{checkpoint_pin_};
  // 1. The state at an LSN boundary, from the sequencer (it appends nothing for this).
  CheckpointCapture capture;
  const std::uint64_t rejections = rejections_.load(std::memory_order_acquire);
  {
    std::promise<Status> promise;
    auto future = promise.get_future();
    auto pending = std::make_shared<Pending>();
    pending->capture = &capture;
    pending->done = [&promise](Result<CommitResult> r) { promise.set_value(r.status()); };
    Submit(std::move(pending));
    LOCKSTEP_RETURN_IF_ERROR(future.get());
  }
  const Lsn lsn = capture.lsn;
  // 2. Only durable state goes into a checkpoint.
  while (visible_lsn() < lsn) {
    LOCKSTEP_RETURN_IF_ERROR(status());
    if (rejections_.load(std::memory_order_acquire) != rejections) {
      // What was captured may include transactions a full disk rejected: not a state to keep.
      return base::ResourceExhausted("the disk is full: checkpoint abandoned");
    }
    (void)log_->WaitForDurable(lsn, std::chrono::milliseconds(50));
    if (log_->durable_lsn() >= lsn && visible_lsn() < lsn) std::this_thread::yield();
  }
  if (lsn == checkpoint_lsn()) return lsn;  // nothing committed since the last one
  // 3. Retention: each partition's new start offset (time retention), and the LSN below which
  // nothing is needed: not by a partition's retained events, not by the current checkpoint,
  // which becomes the fallback should this one be damaged.
  const std::int64_t now = options_.now_ms();
  std::vector<std::vector<std::uint64_t>> starts(capture.topics.size());
  Lsn keep = Lsn(checkpoint_lsn().value() + 1);
  Lsn unguarded_keep = lsn.Next();  // without the fallback checkpoint: for a planted bug only
  for (std::size_t i = 0; i < capture.topics.size(); ++i) {
    const CheckpointCapture::TopicState& t = capture.topics[i];
    const bool live = t.dropped == Lsn() || t.dropped > lsn;
    for (std::uint32_t p = 0; p < t.entry->partitions; ++p) {
      const std::uint64_t end = t.next_offset[p];
      std::uint64_t start = std::min(end, t.entry->start_offset[p].load());
      if (live && t.entry->retention_ms > 0 && start < end) {
        LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t first_kept,
                                  FirstOffsetAtOrAfter(*t.entry, PartitionId(p),
                                                       now - t.entry->retention_ms, start, end));
        start = std::max(start, first_kept);
      }
      if (live && t.entry->retention_bytes > 0 && start < end) {
        start = std::max(start,
                         FirstOffsetWithin(*t.entry, p, t.bytes[p], lsn, t.entry->retention_bytes));
      }
      starts[i].push_back(start);
      if (live && start < end) {
        keep = std::min(keep, t.entry->StartFor(p, start));
        unguarded_keep = std::min(unguarded_keep, t.entry->StartFor(p, start));
      }
    }
  }
  if (base::Planted(base::PlantedBug::kDeleteSegmentBeforeCheckpoint) &&
      unguarded_keep > log_->first_lsn()) {
    // Deletes what only this checkpoint, not yet written, makes unnecessary.
    storage::RetentionPolicy early;
    early.delete_below_lsn = unguarded_keep;
    early.keep_from_lsn = unguarded_keep;
    LOCKSTEP_RETURN_IF_ERROR(log_->ApplyRetention(early).status());
  }
  // 4. Write it, durably.
  LOCKSTEP_RETURN_IF_ERROR(WriteCheckpoint(capture, keep, starts));
  base::CrashSite("checkpoint.written");
  // 5. Publish: start offsets, then delete what nothing needs any more.
  for (std::size_t i = 0; i < capture.topics.size(); ++i) {
    for (std::uint32_t p = 0; p < capture.topics[i].entry->partitions; ++p) {
      auto& start = capture.topics[i].entry->start_offset[p];
      start.store(std::max(start.load(), starts[i][p]), std::memory_order_release);
      capture.topics[i].entry->PruneIndex(p, start.load());
    }
  }
  const Lsn older = previous_checkpoint_;
  previous_checkpoint_ = checkpoint_lsn();
  checkpoint_lsn_.store(lsn.value(), std::memory_order_release);
  log_bytes_at_checkpoint_ = log_->stats().bytes;
  checkpoint_ms_ = now;
  idempotency_floor_.store(std::max(idempotency_floor_.load(), keep.value()));
  if (older != Lsn()) {
    LOCKSTEP_RETURN_IF_ERROR(
        storage::RemoveCheckpoint(*options_.io, CheckpointDir(options_.dir), older));
  }
  if (keep > log_->first_lsn()) {
    storage::RetentionPolicy policy;
    policy.delete_below_lsn = keep;
    policy.keep_from_lsn = keep;
    LOCKSTEP_RETURN_IF_ERROR(log_->ApplyRetention(policy).status());
  }
  return lsn;
}

Status Engine::WriteCheckpoint(const CheckpointCapture& capture, Lsn keep,
                               const std::vector<std::vector<std::uint64_t>>& starts) {
  const Lsn lsn = capture.lsn;
  LOCKSTEP_ASSIGN_OR_RETURN(
      auto writer, storage::CheckpointWriter::Create(*options_.io, CheckpointDir(options_.dir), lsn,
                                                     options_.checkpoint.write));
  StreamOut out(*writer);
  out.U8(kStreamVersion);
  out.U64(lsn.value());
  out.U32(capture.next_table_id);
  out.U32(capture.next_topic_id);
  out.U64(keep.value());
  out.U32(static_cast<std::uint32_t>(capture.tables.size()));
  const std::int64_t now = options_.now_ms();
  for (const CheckpointCapture::TableState& t : capture.tables) {
    out.U32(t.entry->id.value());
    out.U64(t.created.value());
    out.U64(t.dropped.value());
    out.Name(t.entry->name);
    const bool idempotency = t.entry->id == kIdempotencyTable;
    Status bad = Status::Ok();
    ScanOptions rows;
    if (t.dropped != Lsn()) rows.limit = 0;  // dropped at the capture: no rows
    // One read-side section per table: reclamation waits for it (the pin keeps the floor at or
    // below `lsn` anyway; the section keeps unlinked nodes alive under the walk).
    rcu::ReadGuard guard;
    t.entry->table->Scan(rows, lsn, [&](std::string_view key, Bytes value, Lsn version) {
      if (idempotency) {
        // Forgotten keys stay forgotten: past the horizon, or their transaction leaves the log.
        auto remembered = DecodeRememberedResult(value);
        if (!remembered.ok()) {
          bad = remembered.status();
          return false;
        }
        const bool keep_it = options_.idempotency_horizon_ms == 0
                                 ? version >= keep
                                 : now - remembered->commit_ms < options_.idempotency_horizon_ms;
        if (!keep_it) return true;
      }
      out.U8(1);
      out.Blob32(AsBytes(key));
      out.Blob32(value);
      out.U64(version.value());
      bad = out.Flush();
      return bad.ok();
    });
    LOCKSTEP_RETURN_IF_ERROR(bad);
    out.U8(0);
  }
  base::CrashSite("checkpoint.mid-write");
  out.U32(static_cast<std::uint32_t>(capture.topics.size()));
  for (std::size_t i = 0; i < capture.topics.size(); ++i) {
    const CheckpointCapture::TopicState& t = capture.topics[i];
    out.U32(t.entry->id.value());
    out.U64(t.created.value());
    out.U64(t.dropped <= lsn ? t.dropped.value() : 0);
    out.U32(t.entry->partitions);
    out.I64(t.entry->retention_ms);
    out.U64(t.entry->retention_bytes);
    out.Name(t.entry->name);
    for (std::uint32_t p = 0; p < t.entry->partitions; ++p) {
      out.U64(t.next_offset[p]);
      out.U64(starts[i][p]);
      out.I64(t.max_ts[p]);
      out.U64(t.bytes[p]);
      std::vector<TopicEntry::IndexEntry> entries;
      {
        std::shared_lock lock(t.entry->index_mu);
        for (const auto& e : t.entry->index[p]) {
          if (e.lsn > lsn) break;
          entries.push_back(e);
        }
      }
      out.U64(entries.size());
      for (const auto& e : entries) {
        out.U64(e.offset);
        out.U64(e.lsn.value());
        out.I64(e.max_ts_before);
        out.U64(e.bytes_before);
      }
      LOCKSTEP_RETURN_IF_ERROR(out.Flush());
    }
  }
  out.U32(kStreamEnd);
  LOCKSTEP_RETURN_IF_ERROR(out.Flush(/*force=*/true));
  return writer->Finish();
}

// ---- Loading one ----------------------------------------------------------------------------

Status Engine::LoadCheckpoint(Lsn* replay_from) {
  const std::string dir = CheckpointDir(options_.dir);
  LOCKSTEP_ASSIGN_OR_RETURN(std::vector<Lsn> checkpoints,
                            storage::ListCheckpoints(*options_.io, dir));
  std::string why;
  for (std::size_t i = 0; i < checkpoints.size(); ++i) {
    const Lsn lsn = checkpoints[i];
    if (log_->first_lsn().value() > lsn.value() + 1) {
      why += fmt::format("; checkpoint {} is older than the log's start", lsn.value());
      break;  // older ones are further still
    }
    if (log_->durable_lsn() < lsn) {
      return base::DataLoss(fmt::format(
          "engine {}: checkpoint {} is ahead of the log, which ends at LSN {}: log segments "
          "are missing",
          options_.dir, lsn.value(), log_->durable_lsn().value()));
    }
    auto stream = storage::ReadCheckpoint(*options_.io, dir, lsn);
    Status installed = stream.ok() ? InstallCheckpoint(*stream, lsn) : stream.status();
    if (!installed.ok()) {
      // Only damage falls back to an older checkpoint; an I/O error fails the open.
      if (installed.code() != base::StatusCode::kDataLoss) return installed;
      spdlog::warn("engine {}: skipping damaged checkpoint {}: {}", options_.dir, lsn.value(),
                   installed.ToString());
      why += fmt::format("; checkpoint {}: {}", lsn.value(), installed.ToString());
      continue;
    }
    // Its contents were synced before its rename, but the rename itself may not be durable yet
    // (a crash between rename and directory sync, then a process restart that kept it): make it
    // durable before anything it says is published, as the log does with its newest segment.
    LOCKSTEP_RETURN_IF_ERROR(options_.io->SyncDir(dir));
    *replay_from = Lsn(lsn.value() + 1);
    checkpoint_lsn_.store(lsn.value());
    previous_checkpoint_ = i + 1 < checkpoints.size() ? checkpoints[i + 1] : Lsn();
    version_floor_.store(lsn.value(), std::memory_order_release);
    // Checkpoints older than the fallback are of no use (their removal may not have survived a
    // crash): best effort, as at the end of Checkpoint().
    for (std::size_t j = i + 2; j < checkpoints.size(); ++j) {
      (void)storage::RemoveCheckpoint(*options_.io, dir, checkpoints[j]);
    }
    return Status::Ok();
  }
  if (log_->first_lsn() == Lsn(1)) {
    *replay_from = Lsn(1);
    return Status::Ok();
  }
  return base::DataLoss(
      fmt::format("engine {}: the log starts at LSN {} and no valid checkpoint reaches it{}",
                  options_.dir, log_->first_lsn().value(), why));
}

Status Engine::InstallCheckpoint(Bytes bytes, Lsn lsn) {
  StreamIn in(bytes);
  auto malformed = [&](std::string_view what) {
    return base::DataLoss(fmt::format("checkpoint {}: {}", lsn.value(), what));
  };
  if (in.U8() != kStreamVersion) return malformed("unknown stream version");
  if (in.U64() != lsn.value()) return malformed("stream LSN differs from the file's");
  const std::uint32_t next_table_id = in.U32();
  const std::uint32_t next_topic_id = in.U32();
  const std::uint64_t idempotency_floor = in.U64();
  // Decode everything first; install only a wholly valid checkpoint.
  std::map<std::string, std::shared_ptr<TableEntry>, std::less<>> tables;
  std::unordered_map<std::uint32_t, std::shared_ptr<TableEntry>> table_ids;
  const std::uint64_t table_count = in.Count(in.U32(), 23);
  for (std::uint64_t i = 0; i < table_count && !in.bad(); ++i) {
    auto entry = std::make_shared<TableEntry>();
    entry->id = TableId(in.U32());
    entry->created = Lsn(in.U64());
    entry->dropped = Lsn(in.U64());
    entry->name = in.Name();
    if (entry->id == kIdempotencyTable) entry->table->TrackWritesForExpiry();
    if (entry->dropped > lsn) return malformed("a table dropped after the checkpoint");
    std::optional<std::string> previous_key;
    while (!in.bad() && in.U8() == 1) {
      const Bytes key = in.Blob32();
      const Bytes value = in.Blob32();
      const Lsn version(in.U64());
      if (version > lsn || version == Lsn()) return malformed("row version outside the checkpoint");
      if (previous_key && AsView(key) <= *previous_key) return malformed("rows out of order");
      previous_key = std::string(AsView(key));
      entry->table->Put(key, value, version);
    }
    if (table_ids.count(entry->id.value()) != 0) return malformed("a table id twice");
    table_ids[entry->id.value()] = entry;
    if (entry->id.value() < kFirstInternalTableId) {
      if (entry->id.value() >= next_table_id) return malformed("table id past the next id");
      if (entry->dropped == Lsn()) tables[entry->name] = entry;
    }
  }
  std::map<std::string, std::shared_ptr<TopicEntry>, std::less<>> topics;
  std::unordered_map<std::uint32_t, std::shared_ptr<TopicEntry>> topic_ids;
  const std::uint64_t topic_count = in.Count(in.U32(), 42);
  for (std::uint64_t i = 0; i < topic_count && !in.bad(); ++i) {
    auto entry = std::make_shared<TopicEntry>();
    entry->id = TopicId(in.U32());
    entry->created = Lsn(in.U64());
    entry->dropped = Lsn(in.U64());
    const std::uint32_t partitions = in.U32();
    entry->retention_ms = in.I64();
    entry->retention_bytes = in.U64();
    entry->name = in.Name();
    if (partitions == 0 || in.Count(partitions, 40) != partitions) {
      return malformed("bad partition count");
    }
    entry->Init(partitions);
    for (std::uint32_t p = 0; p < partitions && !in.bad(); ++p) {
      entry->next_offset[p] = in.U64();
      entry->start_offset[p].store(in.U64());
      entry->max_ts[p] = in.I64();
      entry->bytes[p] = in.U64();
      const std::uint64_t count = in.Count(in.U64(), 32);
      for (std::uint64_t e = 0; e < count; ++e) {
        TopicEntry::IndexEntry ie{in.U64(), Lsn(in.U64()), in.I64(), in.U64()};
        const auto& index = entry->index[p];
        if (ie.lsn > lsn || ie.offset >= entry->next_offset[p] ||
            ie.bytes_before > entry->bytes[p] ||
            (!index.empty() && ie.offset <= index.back().offset)) {
          return malformed("bad offset index");
        }
        entry->index[p].push_back(ie);
        entry->last_indexed[p] = ie.offset;
      }
      if (entry->start_offset[p] > entry->next_offset[p] ||
          (entry->next_offset[p] > 0 && entry->index[p].empty()) ||
          (!entry->index[p].empty() && entry->index[p].front().offset > entry->start_offset[p])) {
        return malformed("bad partition state");
      }
    }
    if (topic_ids.count(entry->id.value()) != 0 || entry->id.value() >= next_topic_id) {
      return malformed("bad topic id");
    }
    topic_ids[entry->id.value()] = entry;
    if (entry->dropped == Lsn()) topics[entry->name] = entry;
  }
  if (in.bad()) return malformed("truncated stream");
  if (in.U32() != kStreamEnd || !in.done()) return malformed("no end marker where it belongs");
  auto internal = [&](TableId id) -> Result<std::shared_ptr<TableEntry>> {
    auto it = table_ids.find(id.value());
    if (it == table_ids.end()) return malformed("an internal table is missing");
    return it->second;
  };
  LOCKSTEP_ASSIGN_OR_RETURN(auto idempotency, internal(kIdempotencyTable));
  LOCKSTEP_ASSIGN_OR_RETURN(auto groups, internal(kGroupsTable));
  LOCKSTEP_ASSIGN_OR_RETURN(auto group_offsets, internal(kGroupOffsetsTable));
  std::unique_lock lock(catalog_mu_);
  tables_ = std::move(tables);
  table_ids_ = std::move(table_ids);
  topics_ = std::move(topics);
  topic_ids_ = std::move(topic_ids);
  idempotency_ = std::move(idempotency);
  groups_ = std::move(groups);
  group_offsets_ = std::move(group_offsets);
  next_table_id_ = next_table_id;
  next_topic_id_ = next_topic_id;
  idempotency_floor_.store(idempotency_floor);
  return Status::Ok();
}

// ---- The checkpointer thread ----------------------------------------------------------------

void Engine::CheckpointerLoop() {
  const CheckpointOptions& o = options_.checkpoint;
  for (;;) {
    {
      std::unique_lock lock(checkpointer_mu_);
      checkpointer_cv_.wait_for(lock, std::chrono::seconds(1),
                                [this] { return checkpointer_stop_; });
      if (checkpointer_stop_) return;
    }
    if (!status().ok()) return;
    bool due = false;
    {
      std::lock_guard lock(checkpoint_mu_);
      const std::uint64_t written = log_->stats().bytes - log_bytes_at_checkpoint_;
      due = (o.every_log_bytes > 0 && written >= o.every_log_bytes) ||
            (o.every_ms > 0 && options_.now_ms() - checkpoint_ms_ >= o.every_ms &&
             visible_lsn() > checkpoint_lsn());
    }
    if (!due) continue;
    auto taken = Checkpoint();
    if (!taken.ok()) {
      spdlog::warn("engine {}: checkpoint failed: {}", options_.dir, taken.status().ToString());
    }
  }
}

}  // namespace lockstep::engine

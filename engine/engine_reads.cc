// Engine reads: the catalog, tables (now and as of an LSN), fetch, offsets by timestamp, the
// change feed. Every read runs at a snapshot at or below the visible LSN (durable before
// visible), takes no lock the sequencer waits on, and never blocks it. A read of table versions
// enters its rcu::ReadGuard *before* it takes its snapshot or checks it against the version
// floor: that is what lets the sequencer reclaim below a floor once a grace period has passed.
#include <fmt/format.h>

#include <algorithm>
#include <type_traits>

#include "engine/engine.h"
#include "engine/engine_internal.h"

namespace lockstep::engine {

// ---- Catalog --------------------------------------------------------------------------------

std::vector<std::string> Engine::ListTables() const {
  std::shared_lock lock(catalog_mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : tables_) {
    if (entry->LiveAt(visible_lsn())) names.push_back(name);
  }
  return names;
}

Result<TableInfo> Engine::DescribeTable(std::string_view name) const {
  rcu::ReadGuard guard;
  const Lsn at = visible_lsn();
  auto t = FindTableAt(name, at);
  if (!t) return base::NotFound(fmt::format("no table {:?}", name));
  TableInfo info;
  info.name = std::string(name);
  info.id = t->id;
  info.created = t->created;
  info.as_of = at;
  info.memory_bytes = t->table->bytes();
  t->table->Scan({}, at, [&](std::string_view key, Bytes value, Lsn version) {
    ++info.rows;
    info.key_bytes += key.size();
    info.value_bytes += value.size();
    info.newest_version = std::max(info.newest_version, version);
    return true;
  });
  return info;
}

namespace {

template <typename Entry>
TopicInfo InfoOf(std::string_view name, const Entry& t) {
  TopicInfo info{std::string(name), t.id, t.partitions, t.retention_ms, t.retention_bytes, {}, {}};
  for (std::uint32_t p = 0; p < t.partitions; ++p) {
    info.start_offsets.emplace_back(t.start_offset[p].load(std::memory_order_acquire));
    info.end_offsets.emplace_back(t.visible_end[p].load(std::memory_order_acquire));
  }
  return info;
}

}  // namespace

std::vector<TopicInfo> Engine::ListTopics() const {
  std::shared_lock lock(catalog_mu_);
  std::vector<TopicInfo> out;
  for (const auto& [name, t] : topics_) {
    if (t->LiveAt(visible_lsn())) out.push_back(InfoOf(name, *t));
  }
  return out;
}

Result<TopicInfo> Engine::DescribeTopic(std::string_view name) const {
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("topic", name, options_.name_bytes_max));
  auto t = FindTopic(name);
  if (!t) return base::NotFound(fmt::format("no topic {:?}", name));
  return InfoOf(name, *t);
}

std::shared_ptr<Engine::TopicEntry> Engine::FindTopic(std::string_view name) const {
  std::shared_lock lock(catalog_mu_);
  auto it = topics_.find(name);
  if (it == topics_.end() || !it->second->LiveAt(visible_lsn())) return nullptr;
  return it->second;
}

Result<std::shared_ptr<Engine::TopicEntry>> Engine::FindPartition(std::string_view topic,
                                                                  PartitionId partition) const {
  auto t = FindTopic(topic);
  if (!t) return base::NotFound(fmt::format("no topic {:?}", topic));
  if (partition.value() >= t->partitions) {
    return base::InvalidArgument(fmt::format("topic {:?} has {} partitions; there is no {}", topic,
                                             t->partitions, partition.value()));
  }
  return t;
}

std::shared_ptr<Table> Engine::FindTable(std::string_view name) const {
  auto entry = FindTableAt(name, visible_lsn());
  return entry ? entry->table : nullptr;
}

std::shared_ptr<Engine::TableEntry> Engine::FindTableAt(std::string_view name, Lsn at) const {
  std::shared_lock lock(catalog_mu_);
  auto it = tables_.find(name);
  if (it == tables_.end() || !it->second->LiveAt(at)) return nullptr;
  return it->second;
}

// ---- Tables ---------------------------------------------------------------------------------

namespace {

Result<std::optional<Row>> GetFrom(const Table& table, std::string_view key, Lsn at) {
  auto read = table.Get(AsBytes(key), at);
  if (!read) return std::optional<Row>();
  return std::optional<Row>(Row{std::string(key), std::move(read->value), read->version});
}

// What one row costs an answer beyond its key and value (its place in the result and in the
// response's FlatBuffer), so that many tiny rows are bounded too.
constexpr std::size_t kRowOverheadBytes = 48;

Status TooManyBytes(const char* what, std::size_t max_bytes) {
  return base::InvalidArgument(fmt::format(
      "the rows of this {} pass {} bytes of keys and values: ask for fewer", what, max_bytes));
}

Result<std::vector<Row>> ScanFrom(const Table& table, const ScanOptions& options, Lsn at) {
  std::vector<Row> rows;
  std::size_t bytes = 0;
  bool too_many = false;
  table.Scan(options, at, [&](std::string_view key, Bytes value, Lsn version) {
    bytes += key.size() + value.size() + kRowOverheadBytes;
    if (bytes > options.max_bytes) {
      too_many = true;
      return false;
    }
    rows.push_back(Row{std::string(key), std::string(AsView(value)), version});
    return true;
  });
  if (too_many) return TooManyBytes("scan", options.max_bytes);
  return rows;
}

}  // namespace

Result<std::optional<Row>> Engine::Get(std::string_view table, std::string_view key) const {
  rcu::ReadGuard guard;
  const Lsn at = visible_lsn();
  auto t = FindTableAt(table, at);
  if (!t) return base::NotFound(fmt::format("no table {:?}", table));
  return GetFrom(*t->table, key, at);
}

Result<std::vector<Row>> Engine::Scan(std::string_view table, const ScanOptions& options) const {
  rcu::ReadGuard guard;
  const Lsn at = visible_lsn();
  auto t = FindTableAt(table, at);
  if (!t) return base::NotFound(fmt::format("no table {:?}", table));
  return ScanFrom(*t->table, options, at);
}

namespace {

Status CheckAsOf(Lsn at, Lsn oldest, Lsn visible) {
  if (at < oldest || at > visible) {
    return base::OutOfRange(
        fmt::format("LSN {} is outside the readable window: versions are kept from LSN {} to the "
                    "visible LSN {}",
                    at.value(), oldest.value(), visible.value()));
  }
  return Status::Ok();
}

}  // namespace

Result<std::optional<Row>> Engine::GetAsOf(std::string_view table, std::string_view key,
                                           Lsn at) const {
  rcu::ReadGuard guard;
  LOCKSTEP_RETURN_IF_ERROR(CheckAsOf(at, oldest_readable_lsn(), visible_lsn()));
  auto t = FindTableAt(table, at);
  if (!t) return base::NotFound(fmt::format("no table {:?} at LSN {}", table, at.value()));
  return GetFrom(*t->table, key, at);
}

Status Engine::CheckMultiGetKeys(std::size_t keys) {
  if (keys <= kMultiGetKeysMax) return Status::Ok();
  return base::InvalidArgument(
      fmt::format("a multi-get of {} keys: at most {} in one call", keys, kMultiGetKeysMax));
}

Result<Engine::MultiGetResult> Engine::MultiGet(std::string_view table,
                                                std::span<const std::string_view> keys, Lsn at,
                                                std::size_t max_bytes) const {
  LOCKSTEP_RETURN_IF_ERROR(CheckMultiGetKeys(keys.size()));
  rcu::ReadGuard guard;
  if (at == Lsn()) {
    at = visible_lsn();
  } else {
    LOCKSTEP_RETURN_IF_ERROR(CheckAsOf(at, oldest_readable_lsn(), visible_lsn()));
  }
  auto t = FindTableAt(table, at);
  if (!t) return base::NotFound(fmt::format("no table {:?} at LSN {}", table, at.value()));
  MultiGetResult out;
  out.as_of = at;
  out.rows.reserve(keys.size());
  std::size_t bytes = 0;
  for (std::string_view key : keys) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<Row> row, GetFrom(*t->table, key, at));
    bytes += kRowOverheadBytes + (row ? row->key.size() + row->value.size() : 0);
    if (bytes > max_bytes) return TooManyBytes("multi-get", max_bytes);
    out.rows.push_back(std::move(row));
  }
  return out;
}

Result<std::vector<Row>> Engine::ScanAsOf(std::string_view table, const ScanOptions& options,
                                          Lsn at) const {
  rcu::ReadGuard guard;
  LOCKSTEP_RETURN_IF_ERROR(CheckAsOf(at, oldest_readable_lsn(), visible_lsn()));
  auto t = FindTableAt(table, at);
  if (!t) return base::NotFound(fmt::format("no table {:?} at LSN {}", table, at.value()));
  return ScanFrom(*t->table, options, at);
}

// ---- Topics ---------------------------------------------------------------------------------

// The next transaction record of a partition walk still short of `end` (at `want`): the log
// must hold it. Events are not checked here: the batch's checksum covers them (verified as it
// entered the process), consumers verify each event's own checksum again, end to end, and
// hashing here would hash every event of every partition the walk passes.
Result<TxnRecordReader> Engine::NextTxnRecord(storage::LogReader& reader, const TopicEntry& t,
                                              PartitionId partition, std::uint64_t want,
                                              std::uint64_t end) {
  LOCKSTEP_ASSIGN_OR_RETURN(std::optional<storage::LogRecord> record, reader.Next());
  if (!record) {
    return base::Internal(fmt::format("{}/{}: the log ended before offset {} (end {})", t.name,
                                      partition.value(), want, end));
  }
  return TxnRecordReader::Open(record->bytes, {.verify_event_checksums = false});
}

// Walks the log from `start` (an LSN at or below the transaction holding offset `from`), picking
// out the partition's event records in [from, end).
template <typename Fn>
Status Engine::ForEachEvent(const TopicEntry& t, PartitionId partition, std::uint64_t from,
                            std::uint64_t end, Lsn start, Fn&& fn) const {
  if (from >= end) return Status::Ok();
  // Retention may have deleted the indexed LSN's segment; `from` itself is held (it is at or
  // above the partition's start offset), so reading from the log's start loses nothing.
  LOCKSTEP_ASSIGN_OR_RETURN(storage::LogReader reader,
                            log_->Read(std::max(start, log_->first_lsn())));
  std::uint64_t want = from;
  while (want < end) {
    LOCKSTEP_ASSIGN_OR_RETURN(TxnRecordReader txn, NextTxnRecord(reader, t, partition, want, end));
    for (;;) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::optional<Bytes> found, txn.NextEventIn(t.id, partition));
      if (!found) break;
      // Only the offset is read here (NextEventIn checked the record's fixed part is there);
      // whoever needs more decodes it.
      const std::uint64_t offset = base::PeekEventOffset(*found).value();
      if (offset < want) continue;
      if (offset != want) return OffsetGap(t, partition, want, offset);  // offsets are dense
      auto go_on = fn(*found, reader);
      if constexpr (std::is_same_v<decltype(go_on), bool>) {
        if (!go_on) return Status::Ok();
      } else {
        if (!go_on.ok()) return go_on.status();
        if (!*go_on) return Status::Ok();
      }
      if (++want == end) return Status::Ok();
    }
  }
  return Status::Ok();
}

Result<FetchedViews> Engine::FetchViews(std::string_view topic, PartitionId partition,
                                        Offset offset, const FetchOptions& options) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto t, FindPartition(topic, partition));
  // The end as of the visible LSN: read it before anything else, then never return past it.
  const std::uint64_t end = t->visible_end[partition.value()].load(std::memory_order_acquire);
  FetchedViews out;
  out.high_watermark = Offset(end);
  out.next_offset = offset;
  if (offset.value() > end) {
    return base::OutOfRange(fmt::format("offset {} is past the end of {}/{} ({})", offset.value(),
                                        topic, partition.value(), end));
  }
  const std::uint64_t start = t->start_offset[partition.value()].load(std::memory_order_acquire);
  if (offset.value() < start) {
    return base::OutOfRange(
        fmt::format("offset {} of {}/{} is below its start offset {} "
                    "(retention deleted it)",
                    offset.value(), topic, partition.value(), start));
  }
  if (offset.value() == end || options.max_events == 0) return out;
  LOCKSTEP_RETURN_IF_ERROR(CollectViews(*t, partition, offset.value(), end, options, out));
  out.next_offset = Offset(offset.value() + out.events);
  return out;
}

// Walks the log by pieces (NextPieceIn): a run of the partition's events that fits whole goes
// out as one view, unread — the events of a producer's batch cost the server one offset peek —
// and only a piece that straddles the start, the end or a limit is taken event by event.
Status Engine::CollectViews(const TopicEntry& t, PartitionId partition, std::uint64_t from,
                            std::uint64_t end, const FetchOptions& options,
                            FetchedViews& out) const {
  // Retention may have deleted the indexed LSN's segment; `from` itself is held (it is at or
  // above the partition's start offset), so reading from the log's start loses nothing.
  LOCKSTEP_ASSIGN_OR_RETURN(
      storage::LogReader reader,
      log_->Read(std::max(t.StartFor(partition.value(), from), log_->first_lsn()),
                 /*trust_verified=*/true));
  const void* pinned = nullptr;
  std::uint64_t want = from;
  auto take = [&](Bytes records, std::uint32_t count) {
    std::shared_ptr<const void> pin = reader.Pin();
    if (pin.get() != pinned) {  // one pin per segment, not per record
      pinned = pin.get();
      out.pins.push_back(std::move(pin));
    }
    out.records.push_back(records);
    out.bytes += records.size();
    out.events += count;
    want += count;
  };
  auto full = [&] { return want == end || out.events == options.max_events; };
  while (!full()) {
    LOCKSTEP_ASSIGN_OR_RETURN(TxnRecordReader txn, NextTxnRecord(reader, t, partition, want, end));
    while (!full()) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::optional<EventPiece> piece, txn.NextPieceIn(t.id, partition));
      if (!piece) break;
      if (piece->records.size() < base::kEventFixedBytes) {
        return base::DataLoss(fmt::format("{}/{}: a run of {} bytes holds no event", t.name,
                                          partition.value(), piece->records.size()));
      }
      // Offsets are dense and consecutive inside a piece (the sequencer numbers them so).
      const std::uint64_t first = base::PeekEventOffset(piece->records).value();
      if (out.events > 0 && first != want) {
        // Once the walk is under way every piece continues it: anything else is a damaged
        // run count (which no checksum covers on this path), never skipped in silence.
        return base::DataLoss(fmt::format("{}/{}: offset {} follows offset {}", t.name,
                                          partition.value(), first, want - 1));
      }
      if (first > want) return OffsetGap(t, partition, want, first);
      if (piece->count <= want - first) continue;  // all below `from` (no overflow)
      if (first == want && want + piece->count <= end &&
          std::uint64_t{out.events} + piece->count <= options.max_events &&
          out.bytes + piece->records.size() <= options.max_bytes) {
        LOCKSTEP_RETURN_IF_ERROR(CheckRun(t, partition, *piece, first));
        take(piece->records, piece->count);
        continue;
      }
      Bytes rest = piece->records;
      for (std::uint64_t offset = first; !full() && !rest.empty(); ++offset) {
        LOCKSTEP_ASSIGN_OR_RETURN(Bytes event, NextRecordIn(rest));
        if (offset < want) continue;
        if (base::PeekEventOffset(event).value() != offset) {
          return base::DataLoss(fmt::format("{}/{}: offset {} inside a run where {} belongs",
                                            t.name, partition.value(),
                                            base::PeekEventOffset(event).value(), offset));
        }
        if (out.events > 0 && out.bytes + event.size() > options.max_bytes) return Status::Ok();
        take(event, 1);
      }
    }
  }
  return Status::Ok();
}

// A run sent whole is not decoded, but its count and extent are checked — no checksum covers
// them on this path, and the offsets a fetch reports come from them: it holds exactly `count`
// records, filling it, the last one's offset first + count - 1. One length read per event.
Status Engine::CheckRun(const TopicEntry& t, PartitionId partition, const EventPiece& piece,
                        std::uint64_t first) const {
  Bytes rest = piece.records;
  Bytes last;
  std::uint64_t records = 0;
  while (!rest.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(last, NextRecordIn(rest));
    ++records;
  }
  if (records != piece.count || base::PeekEventOffset(last).value() != first + records - 1) {
    return base::DataLoss(fmt::format(
        "{}/{}: a run from offset {} claims {} events and holds {}, the last at offset {}", t.name,
        partition.value(), first, piece.count, records, base::PeekEventOffset(last).value()));
  }
  return Status::Ok();
}

// The error for a walk that found offset `found` where `want` was due: retention moved the
// partition's start meanwhile, or the log disagrees with the index (a bug).
Status Engine::OffsetGap(const TopicEntry& t, PartitionId partition, std::uint64_t want,
                         std::uint64_t found) const {
  const std::uint64_t retained = t.start_offset[partition.value()].load();
  if (want < retained) {
    return base::OutOfRange(fmt::format(
        "offset {} of {}/{} is below its start offset {} (retention deleted it meanwhile)", want,
        t.name, partition.value(), retained));
  }
  return base::Internal(fmt::format("{}/{}: offset {} where {} was expected", t.name,
                                    partition.value(), found, want));
}

Result<FetchResult> Engine::Fetch(std::string_view topic, PartitionId partition, Offset offset,
                                  const FetchOptions& options) const {
  LOCKSTEP_ASSIGN_OR_RETURN(FetchedViews views, FetchViews(topic, partition, offset, options));
  FetchResult out;
  out.records.reserve(views.bytes);
  for (Bytes record : views.records)
    out.records.insert(out.records.end(), record.begin(), record.end());
  out.events = views.events;
  out.next_offset = views.next_offset;
  out.high_watermark = views.high_watermark;
  return out;
}

// The first offset in [start, end) whose event's timestamp is >= `timestamp_ms`; `end` if none.
// The index bounds the walk to about one index interval.
Result<std::uint64_t> Engine::FirstOffsetAtOrAfter(const TopicEntry& t, PartitionId partition,
                                                   std::int64_t timestamp_ms, std::uint64_t start,
                                                   std::uint64_t end) const {
  auto from = t.StartForTimestamp(partition.value(), timestamp_ms);
  if (!from || start >= end) return end;
  const std::uint64_t begin = std::max(from->offset, start);
  if (begin >= end) return end;
  const Lsn begin_lsn = begin == from->offset ? from->lsn : t.StartFor(partition.value(), begin);
  std::uint64_t found = end;
  LOCKSTEP_RETURN_IF_ERROR(ForEachEvent(
      t, partition, begin, end, begin_lsn,
      [&](Bytes record, const storage::LogReader&) -> Result<bool> {
        // The log verified the batch: the event's own checksum is the consumer's.
        LOCKSTEP_ASSIGN_OR_RETURN(base::EventView event,
                                  base::DecodeEvent(record, {.verify_checksum = false}));
        if (event.timestamp_ms() < timestamp_ms) return true;
        found = event.offset().value();
        return false;
      }));
  return found;
}

Result<Offset> Engine::OffsetForTimestamp(std::string_view topic, PartitionId partition,
                                          std::int64_t timestamp_ms) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto t, FindPartition(topic, partition));
  const std::uint64_t end = t->visible_end[partition.value()].load(std::memory_order_acquire);
  const std::uint64_t start = t->start_offset[partition.value()].load(std::memory_order_acquire);
  LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t found,
                            FirstOffsetAtOrAfter(*t, partition, timestamp_ms, start, end));
  return Offset(found);
}

Result<Offset> Engine::WaitForEvents(std::string_view topic, PartitionId partition, Offset offset,
                                     std::chrono::milliseconds timeout) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto t, FindPartition(topic, partition));
  auto end = [&] { return t->visible_end[partition.value()].load(std::memory_order_seq_cst); };
  if (end() > offset.value()) return Offset(end());
  event_waiters_.fetch_add(1, std::memory_order_seq_cst);
  {
    std::unique_lock lock(events_mu_);
    events_cv_.wait_for(lock, timeout, [&] { return end() > offset.value() || !status().ok(); });
  }
  event_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  return Offset(end());
}

std::uint64_t Engine::table_bytes() const {
  std::shared_lock lock(catalog_mu_);
  std::uint64_t total = 0;
  for (const auto& [id, entry] : table_ids_) total += entry->table->bytes();
  return total;
}

std::uint64_t Engine::offset_index_entries() const {
  std::shared_lock lock(catalog_mu_);
  std::uint64_t total = 0;
  for (const auto& [id, t] : topic_ids_) {
    std::shared_lock index_lock(t->index_mu);
    for (const auto& entries : t->index) total += entries.size();
  }
  return total;
}

std::string Engine::DebugState() const {
  std::lock_guard lock(parked_mu_);
  return fmt::format(
      "visible {} durable {} log next {} checkpoint {} parked {} (lowest {}) disk-full "
      "rejections {} version floor {} (safe {}{}) table bytes {}",
      visible_lsn().value(), log_->durable_lsn().value(), log_->next_lsn().value(),
      checkpoint_lsn().value(), parked_.size(), parked_.empty() ? 0 : parked_.begin()->first,
      rejections_.load(), version_floor_.load(), reclaim_safe_.load(),
      grace_pending_.load() ? ", grace period pending" : "", table_bytes());
}

// ---- The change feed ------------------------------------------------------------------------

Result<ChangeFeed> Engine::Changes(Lsn from, const ChangeFeedOptions& options) const {
  rcu::ReadGuard guard;  // before images come from versions at or above the floor read here
  const Lsn visible = visible_lsn();
  // Before images come from the version just below each change: the feed starts where both
  // the log and the versions reach (after a restart from a checkpoint, just past it).
  const Lsn earliest = std::max(log_->first_lsn(), Lsn(oldest_readable_lsn().value() + 1));
  if (from < earliest || from.value() > visible.value() + 1) {
    return base::OutOfRange(
        fmt::format("change feed from LSN {}: it reaches from LSN {} to the visible LSN {}",
                    from.value(), earliest.value(), visible.value()));
  }
  ChangeFeed out;
  out.next_lsn = from;
  if (from > visible || options.max_transactions == 0) return out;
  LOCKSTEP_ASSIGN_OR_RETURN(storage::LogReader reader, log_->Read(from));
  std::size_t bytes = 0;
  while (out.next_lsn <= visible && out.transactions.size() < options.max_transactions) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<storage::LogRecord> record, reader.Next());
    if (!record) break;
    LOCKSTEP_ASSIGN_OR_RETURN(TxnRecordReader txn, TxnRecordReader::Open(record->bytes));
    ChangedTransaction changed{record->lsn, txn.commit_ms(), {}, {}};
    std::size_t txn_bytes = 0;
    for (;;) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, txn.Next());
      if (!op) break;
      const auto* put = std::get_if<PutOp>(&*op);
      const auto* del = std::get_if<DeleteOp>(&*op);
      if (put != nullptr || del != nullptr) {
        const TableId id = put != nullptr ? put->table : del->table;
        if (id.value() >= kFirstInternalTableId) continue;
        std::shared_ptr<TableEntry> table;
        {
          std::shared_lock lock(catalog_mu_);
          auto it = table_ids_.find(id.value());
          if (it != table_ids_.end()) table = it->second;
        }
        if (!table) return base::DataLoss(fmt::format("change to unknown table {}", id.value()));
        const Bytes key = put != nullptr ? put->key : del->key;
        Change change{table->name, std::string(AsView(key)), std::nullopt, std::nullopt};
        // The before image: the version just below this transaction (kept: see
        // oldest_readable_lsn()).
        if (auto before = table->table->Get(key, Lsn(record->lsn.value() - 1))) {
          change.before = std::move(before->value);
        }
        if (put != nullptr) change.after = std::string(AsView(put->value));
        txn_bytes += key.size() + (change.before ? change.before->size() : 0) +
                     (change.after ? change.after->size() : 0);
        changed.changes.push_back(std::move(change));
      } else if (const auto* ev = std::get_if<EventOp>(&*op)) {
        LOCKSTEP_ASSIGN_OR_RETURN(base::EventView event, base::DecodeEvent(ev->record));
        std::string topic;
        {
          std::shared_lock lock(catalog_mu_);
          topic = TopicNameLocked(ev->topic);
        }
        changed.events.push_back({std::move(topic), ev->partition, event.offset(),
                                  std::vector<std::byte>(ev->record.begin(), ev->record.end())});
        txn_bytes += ev->record.size();
      }
    }
    if (!changed.changes.empty()) {
      if (!out.transactions.empty() && bytes + txn_bytes > options.max_bytes) break;
      bytes += txn_bytes;
      out.transactions.push_back(std::move(changed));
    }
    out.next_lsn = Lsn(record->lsn.value() + 1);
  }
  return out;
}

}  // namespace lockstep::engine

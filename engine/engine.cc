#include "engine/engine.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/checksum.h"
#include "base/clock.h"

namespace lockstep::engine {
namespace {

Bytes AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string_view AsView(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

Status ValidateName(std::string_view what, std::string_view name, std::uint32_t max) {
  if (name.empty()) return base::InvalidArgument(fmt::format("{} name is empty", what));
  if (name.size() > max) {
    return base::InvalidArgument(
        fmt::format("{} name is {} bytes, above the limit of {}", what, name.size(), max));
  }
  if (name.substr(0, 2) == "__") {
    return base::InvalidArgument(
        fmt::format("{} name {:?}: names starting with __ are reserved", what, name));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return base::InvalidArgument(fmt::format(
          "{} name {:?}: only letters, digits, '.', '_' and '-' are allowed", what, name));
    }
  }
  return Status::Ok();
}

}  // namespace

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
  std::uint32_t round_robin = 0;                              // sequencer only

  // Per partition, a sparse index offset -> LSN of the transaction that holds it: the first event
  // of the partition and then one per kIndexEveryEvents. Appended by the sequencer (and replay),
  // searched by fetchers under index_mu.
  struct IndexEntry {
    std::uint64_t offset;
    Lsn lsn;
  };
  static constexpr std::uint64_t kIndexEveryEvents = 64;
  mutable std::shared_mutex index_mu;
  std::vector<std::vector<IndexEntry>> index;

  // Sequencer (and replay) only: as the only writer it may read `index` without the lock; it
  // takes it only to change the vector under concurrent fetchers.
  void Index(std::uint32_t partition, std::uint64_t offset, Lsn lsn) {
    auto& entries = index[partition];
    if (entries.empty() || offset >= entries.back().offset + kIndexEveryEvents) {
      std::unique_lock lock(index_mu);
      entries.push_back({offset, lsn});
    }
  }
  // The LSN to start reading at for `offset`: the indexed transaction at or below it.
  Lsn StartFor(std::uint32_t partition, std::uint64_t offset) const {
    std::shared_lock lock(index_mu);
    const auto& entries = index[partition];
    auto it = std::upper_bound(entries.begin(), entries.end(), offset,
                               [](std::uint64_t o, const IndexEntry& e) { return o < e.offset; });
    LOCKSTEP_ASSERT(it != entries.begin());  // offset 0 is always indexed
    return (it - 1)->lsn;
  }

  bool LiveAt(Lsn at) const { return created <= at && (dropped == Lsn() || dropped > at); }
  void Init(std::uint32_t count) {
    partitions = count;
    next_offset.assign(count, 0);
    visible_end = std::make_unique<std::atomic<std::uint64_t>[]>(count);
    index.assign(count, std::vector<IndexEntry>());
  }
};

struct Engine::Pending {
  Transaction txn;
  std::optional<CatalogOp> catalog;
  std::string catalog_name;       // owns catalog->name
  CommitCallback done;            // called exactly once
  std::shared_ptr<Pending> self;  // set while the log holds the only reference (see Append)
  CommitResult result;
  std::vector<std::shared_ptr<TopicEntry>> event_topics;  // parallel to result.events
  Status conflict;
};

Engine::Engine(EngineOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<Engine>> Engine::Open(EngineOptions options) {
  if (options.io == nullptr) return base::InvalidArgument("engine options: io is null");
  if (options.dir.empty()) return base::InvalidArgument("engine options: dir is empty");
  if (!options.now_ms) options.now_ms = base::WallClockMs;
  std::unique_ptr<Engine> engine(new Engine(std::move(options)));
  LOCKSTEP_RETURN_IF_ERROR(engine->options_.io->CreateDir(engine->options_.dir));
  storage::LogOptions log = engine->options_.log;
  log.dir = storage::JoinPath(engine->options_.dir, "log");
  log.io = engine->options_.io;
  log.writer_thread = true;
  LOCKSTEP_ASSIGN_OR_RETURN(engine->log_, storage::Log::Open(log));
  LOCKSTEP_RETURN_IF_ERROR(engine->Replay());
  engine->sequencer_ = std::thread([raw = engine.get()] { raw->SequencerLoop(); });
  return engine;
}

Engine::~Engine() {
  if (sequencer_.joinable()) {
    {
      std::lock_guard lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    sequencer_.join();
  }
  log_.reset();  // writes and syncs what was appended; its callbacks answer the commits
  AnswerParked(Lsn(UINT64_MAX), base::Unavailable("engine closed"));
}

Status Engine::status() const {
  std::lock_guard lock(failure_mu_);
  return failure_;
}

// ---- Recovery ------------------------------------------------------------------------------

Status Engine::Replay() {
  if (log_->first_lsn() != Lsn(1)) {
    return base::DataLoss(
        fmt::format("engine {}: the log starts at LSN {} and there is no checkpoint to start from",
                    options_.dir, log_->first_lsn().value()));
  }
  LOCKSTEP_ASSIGN_OR_RETURN(storage::LogReader reader, log_->Read(Lsn(1)));
  for (;;) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<storage::LogRecord> record, reader.Next());
    if (!record) break;
    Status applied = ApplyRecord(record->lsn, record->bytes);
    if (!applied.ok()) {
      return applied.WithContext(
          fmt::format("engine {}: replaying LSN {}", options_.dir, record->lsn.value()));
    }
  }
  std::unique_lock lock(catalog_mu_);
  for (auto& [name, topic] : topics_) {
    for (std::uint32_t p = 0; p < topic->partitions; ++p) {
      topic->visible_end[p].store(topic->next_offset[p]);
    }
  }
  visible_lsn_.store(log_->durable_lsn().value());
  return Status::Ok();
}

// Applies one transaction record to the in-memory state (replay only: the sequencer applies
// what it builds directly).
Status Engine::ApplyRecord(Lsn lsn, Bytes record) {
  LOCKSTEP_ASSIGN_OR_RETURN(TxnRecordReader reader, TxnRecordReader::Open(record));
  std::unique_lock lock(catalog_mu_);
  auto table_by_id = [&](TableId id) -> std::shared_ptr<TableEntry> {
    for (auto& [name, t] : tables_) {
      if (t->id == id && t->dropped == Lsn()) return t;
    }
    return nullptr;
  };
  auto topic_by_id = [&](TopicId id) -> std::shared_ptr<TopicEntry> {
    for (auto& [name, t] : topics_) {
      if (t->id == id && t->dropped == Lsn()) return t;
    }
    return nullptr;
  };
  for (;;) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, reader.Next());
    if (!op) return Status::Ok();
    if (auto* put = std::get_if<PutOp>(&*op)) {
      auto t = table_by_id(put->table);
      if (!t) return base::DataLoss(fmt::format("put to unknown table {}", put->table.value()));
      t->table->Put(put->key, put->value, lsn);
    } else if (auto* del = std::get_if<DeleteOp>(&*op)) {
      auto t = table_by_id(del->table);
      if (!t) return base::DataLoss(fmt::format("delete in unknown table {}", del->table.value()));
      t->table->Delete(del->key, lsn);
    } else if (auto* ev = std::get_if<EventOp>(&*op)) {
      auto t = topic_by_id(ev->topic);
      if (!t || ev->partition.value() >= t->partitions) {
        return base::DataLoss(fmt::format("event for unknown topic {} partition {}",
                                          ev->topic.value(), ev->partition.value()));
      }
      LOCKSTEP_ASSIGN_OR_RETURN(base::EventView event, base::DecodeEvent(ev->record));
      std::uint64_t& next = t->next_offset[ev->partition.value()];
      if (event.offset().value() != next) {
        return base::DataLoss(fmt::format("topic {} partition {}: offset {} where {} was next",
                                          t->name, ev->partition.value(), event.offset().value(),
                                          next));
      }
      t->Index(ev->partition.value(), next, lsn);
      ++next;
    } else if (auto* cat = std::get_if<CatalogOp>(&*op)) {
      const std::string name(cat->name);
      switch (cat->change) {
        case CatalogChange::kCreateTable: {
          auto entry = std::make_shared<TableEntry>();
          entry->id = TableId(cat->id);
          entry->name = name;
          entry->created = lsn;
          tables_[name] = entry;
          next_table_id_ = std::max(next_table_id_, cat->id + 1);
          break;
        }
        case CatalogChange::kDropTable:
          if (auto it = tables_.find(name); it != tables_.end()) it->second->dropped = lsn;
          break;
        case CatalogChange::kCreateTopic: {
          auto entry = std::make_shared<TopicEntry>();
          entry->id = TopicId(cat->id);
          entry->name = name;
          entry->created = lsn;
          entry->retention_ms = cat->retention_ms;
          entry->retention_bytes = cat->retention_bytes;
          entry->Init(cat->partitions);
          topics_[name] = entry;
          next_topic_id_ = std::max(next_topic_id_, cat->id + 1);
          break;
        }
        case CatalogChange::kDropTopic:
          if (auto it = topics_.find(name); it != topics_.end()) it->second->dropped = lsn;
          break;
      }
    }
    // Offset commits: consumer groups are not built yet; their records replay as no-ops.
  }
}

// ---- Committing ----------------------------------------------------------------------------

Status Engine::Validate(const Transaction& txn) const {
  auto key_ok = [&](std::string_view what, const std::string& key) {
    if (key.size() > options_.key_bytes_max) {
      return base::InvalidArgument(fmt::format("{} key is {} bytes, above the limit of {}", what,
                                               key.size(), options_.key_bytes_max));
    }
    return Status::Ok();
  };
  for (const auto& p : txn.preconditions()) LOCKSTEP_RETURN_IF_ERROR(key_ok("precondition", p.key));
  for (const auto& w : txn.writes()) {
    LOCKSTEP_RETURN_IF_ERROR(key_ok(w.is_delete ? "delete" : "put", w.key));
    if (w.value.size() > options_.value_bytes_max) {
      return base::InvalidArgument(
          fmt::format("value for key {:?} is {} bytes, above the limit of {}", w.key,
                      w.value.size(), options_.value_bytes_max));
    }
  }
  for (const auto& e : txn.events()) {
    base::EventFields f;
    if (e.key) f.key = AsBytes(*e.key);
    f.payload = AsBytes(e.payload);
    f.type = e.type;
    std::vector<base::EventHeader> headers;
    for (const auto& [name, value] : e.headers) headers.push_back({name, AsBytes(value)});
    f.headers = headers;
    // The context is formatted only on failure: this runs for every commit.
    Status valid = base::ValidateEvent(f, options_.event_limits);
    if (!valid.ok()) return valid.WithContext(fmt::format("event for topic {:?}", e.topic));
  }
  if (txn.writes().empty() && txn.events().empty() && txn.preconditions().empty()) {
    return base::InvalidArgument("empty transaction");
  }
  return Status::Ok();
}

std::future<Result<CommitResult>> Engine::Commit(Transaction txn) {
  auto promise = std::make_shared<std::promise<Result<CommitResult>>>();
  auto future = promise->get_future();
  Commit(std::move(txn),
         [promise](Result<CommitResult> result) { promise->set_value(std::move(result)); });
  return future;
}

void Engine::Commit(Transaction txn, CommitCallback done) {
  Status valid = Validate(txn);
  if (!valid.ok()) return done(Result<CommitResult>(valid));
  Submit(std::move(txn), std::nullopt, std::move(done));
}

void Engine::Submit(Transaction txn, std::optional<CatalogOp> catalog, CommitCallback done) {
  Status failed = status();
  if (!failed.ok()) return done(Result<CommitResult>(failed));
  auto pending = std::make_shared<Pending>();
  pending->txn = std::move(txn);
  pending->done = std::move(done);
  if (catalog) {
    pending->catalog_name = std::string(catalog->name);
    catalog->name = pending->catalog_name;
    pending->catalog = catalog;
  }
  bool wake = false;
  {
    std::unique_lock lock(queue_mu_);
    if (stopping_) {
      lock.unlock();
      return pending->done(Result<CommitResult>(base::Unavailable("engine is closing")));
    }
    queue_.push_back(std::move(pending));
    wake = sequencer_idle_;  // a busy sequencer takes the queue on its next round anyway
  }
  if (wake) queue_cv_.notify_one();
}

void Engine::SequencerLoop() {
  std::deque<std::shared_ptr<Pending>> batch;
  for (;;) {
    {
      std::unique_lock lock(queue_mu_);
      sequencer_idle_ = true;
      queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      sequencer_idle_ = false;
      if (queue_.empty() && stopping_) return;
      std::swap(batch, queue_);
    }
    for (auto& pending : batch) Process(pending);
    batch.clear();
  }
}

std::shared_ptr<Table> Engine::FindTable(std::string_view name) const {
  std::shared_lock lock(catalog_mu_);
  auto it = tables_.find(name);
  if (it == tables_.end() || !it->second->LiveAt(visible_lsn())) return nullptr;
  return it->second->table;
}

// ---- The sequencer ---------------------------------------------------------------------------

namespace {

// Evaluates one precondition against the newest version. Returns the conflict and the LSN of
// the version it saw (0: none), or ok.
Status Check(const Precondition& p, const std::optional<Table::Newest>& newest, Lsn* observed) {
  *observed = newest ? newest->lsn : Lsn();
  const bool exists = newest && newest->exists;
  auto conflict = [&](std::string_view expected) {
    const std::string found = !newest  ? "never written"
                              : exists ? fmt::format("present at version {}", newest->lsn.value())
                                       : fmt::format("deleted at version {}", newest->lsn.value());
    return base::Conflict(
        fmt::format("precondition failed: table {:?} key {:?}: expected {}, "
                    "found it {}",
                    p.table, p.key, expected, found));
  };
  switch (p.kind) {
    case Precondition::Kind::kAbsent:
      return exists ? conflict("absent") : Status::Ok();
    case Precondition::Kind::kExists:
      return exists ? Status::Ok() : conflict("to exist");
    case Precondition::Kind::kVersion:
      return exists && newest->lsn == p.version
                 ? Status::Ok()
                 : conflict(fmt::format("version {}", p.version.value()));
  }
  return Status::Ok();
}

}  // namespace

void Engine::Process(const std::shared_ptr<Pending>& p) {
  auto answer = [&](Status s) { p->done(Result<CommitResult>(std::move(s))); };
  if (Status failed = status(); !failed.ok()) return answer(failed);
  if (p->catalog) return ProcessCatalog(p);

  // Resolve every name first: nothing changes until the whole transaction is known to be valid.
  std::vector<std::shared_ptr<TableEntry>> pre_tables, write_tables;
  std::vector<std::shared_ptr<TopicEntry>> topics;
  {
    std::shared_lock lock(catalog_mu_);
    auto table = [&](const std::string& name) -> std::shared_ptr<TableEntry> {
      auto it = tables_.find(name);
      return it == tables_.end() || it->second->dropped != Lsn() ? nullptr : it->second;
    };
    for (const auto& c : p->txn.preconditions()) {
      pre_tables.push_back(table(c.table));
      if (!pre_tables.back()) return answer(base::NotFound(fmt::format("no table {:?}", c.table)));
    }
    for (const auto& w : p->txn.writes()) {
      write_tables.push_back(table(w.table));
      if (!write_tables.back())
        return answer(base::NotFound(fmt::format("no table {:?}", w.table)));
    }
    for (const auto& e : p->txn.events()) {
      auto it = topics_.find(e.topic);
      if (it == topics_.end() || it->second->dropped != Lsn()) {
        return answer(base::NotFound(fmt::format("no topic {:?}", e.topic)));
      }
      if (e.partition && e.partition->value() >= it->second->partitions) {
        return answer(base::InvalidArgument(
            fmt::format("topic {:?} has {} partitions; there is no partition {}", e.topic,
                        it->second->partitions, e.partition->value())));
      }
      topics.push_back(it->second);
    }
  }
  // Preconditions, against the newest state, durable or not.
  for (std::size_t i = 0; i < p->txn.preconditions().size(); ++i) {
    const Precondition& c = p->txn.preconditions()[i];
    Lsn observed;
    Status conflict = Check(c, pre_tables[i]->table->NewestVersion(AsBytes(c.key)), &observed);
    if (!conflict.ok()) return Park(p, std::move(conflict), observed);
  }
  // Partitions and offsets (tentative until the record is known to fit).
  const Lsn lsn = log_->next_lsn();
  const std::int64_t now = options_.now_ms();
  std::vector<std::uint64_t> offsets(topics.size());
  p->result.events.clear();
  for (std::size_t i = 0; i < topics.size(); ++i) {
    const EventAppend& e = p->txn.events()[i];
    TopicEntry& t = *topics[i];
    std::uint32_t partition = 0;
    if (e.partition) {
      partition = e.partition->value();
    } else if (e.key) {
      partition = static_cast<std::uint32_t>(base::Xxh3(AsBytes(*e.key)) % t.partitions);
    } else {
      partition = t.round_robin++ % t.partitions;
    }
    // Earlier events of this transaction in the same partition come first (usually none).
    std::uint64_t earlier = 0;
    for (std::size_t j = 0; j < i; ++j) {
      earlier += topics[j].get() == &t && p->result.events[j].partition.value() == partition;
    }
    offsets[i] = t.next_offset[partition] + earlier;
    p->result.events.push_back({t.name, PartitionId(partition), Offset(offsets[i])});
  }
  // The record: writes, then events encoded once, in place, with their final offset and LSN.
  writer_.Reset(now, std::nullopt);
  for (std::size_t i = 0; i < p->txn.writes().size(); ++i) {
    const TableWrite& w = p->txn.writes()[i];
    if (w.is_delete) {
      writer_.Delete(write_tables[i]->id, AsBytes(w.key));
    } else {
      writer_.Put(write_tables[i]->id, AsBytes(w.key), AsBytes(w.value));
    }
  }
  std::vector<base::EventHeader> headers;
  for (std::size_t i = 0; i < topics.size(); ++i) {
    const EventAppend& e = p->txn.events()[i];
    base::EventFields f;
    if (e.key) f.key = AsBytes(*e.key);
    f.payload = AsBytes(e.payload);
    f.type = e.type;
    f.schema_version = e.schema_version;
    headers.clear();
    for (const auto& [name, value] : e.headers) headers.push_back({name, AsBytes(value)});
    f.headers = headers;
    f.timestamp_ms = e.timestamp_ms.value_or(now);
    auto room =
        writer_.AddEvent(topics[i]->id, p->result.events[i].partition, base::EncodedEventBytes(f));
    base::EncodeEvent(f, Offset(offsets[i]), lsn, room);
  }
  const Bytes record = writer_.Finish();
  if (record.size() > log_->record_bytes_max()) {
    return answer(
        base::InvalidArgument(fmt::format("transaction is {} bytes, above the limit of {}",
                                          record.size(), log_->record_bytes_max())));
  }
  // From here on the transaction happens. Apply first, tagged with the LSN the append will get
  // (the sequencer is the log's only appender): the durability callback may run before Append
  // returns, and it makes this LSN visible.
  for (std::size_t i = 0; i < p->txn.writes().size(); ++i) {
    const TableWrite& w = p->txn.writes()[i];
    if (w.is_delete) {
      write_tables[i]->table->Delete(AsBytes(w.key), lsn);
    } else {
      write_tables[i]->table->Put(AsBytes(w.key), AsBytes(w.value), lsn);
    }
  }
  for (std::size_t i = 0; i < topics.size(); ++i) {
    const std::uint32_t partition = p->result.events[i].partition.value();
    auto& next = topics[i]->next_offset[partition];
    next = std::max(next, offsets[i] + 1);
    topics[i]->Index(partition, offsets[i], lsn);
  }
  p->event_topics = std::move(topics);
  p->result.lsn = lsn;
  Append(p, record, lsn);
}

void Engine::Append(const std::shared_ptr<Pending>& p, Bytes record, Lsn expected) {
  for (;;) {
    // The callback captures two pointers only, so std::function keeps it inline (no allocation
    // per commit); the Pending keeps itself alive through `self` until OnDurable takes it.
    p->self = p;
    auto appended = log_->Append(record, [this, raw = p.get()](Lsn lsn, const Status& s) {
      std::shared_ptr<Pending> keep = std::move(raw->self);
      OnDurable(lsn, s, keep);
    });
    if (!appended.ok()) p->self.reset();
    if (appended.ok()) {
      LOCKSTEP_ASSERT(*appended == expected);
      return;
    }
    if (appended.status().code() == base::StatusCode::kResourceExhausted) {
      // The log's staging is full: wait for the writer to make room, then append again. The
      // sequencer is the only appender, so the LSN it computed stays right.
      (void)log_->WaitForDurable(Lsn(log_->durable_lsn().value() + 1),
                                 std::chrono::milliseconds(10));
      continue;
    }
    Fail(appended.status());
    p->done(Result<CommitResult>(status()));
    return;
  }
}

void Engine::Park(const std::shared_ptr<Pending>& p, Status conflict, Lsn observed) {
  // Guarantee 2: a conflict against a version that is not durable yet is answered only once it
  // is. OnDurable publishes the visible LSN before it drains parked_, and this check runs under
  // parked_mu_, so no conflict is left waiting for a callback that already ran.
  {
    std::lock_guard lock(parked_mu_);
    if (observed > visible_lsn()) {
      p->conflict = std::move(conflict);
      parked_.emplace(observed.value(), p);
      return;
    }
  }
  p->done(Result<CommitResult>(std::move(conflict)));
}

void Engine::ProcessCatalog(const std::shared_ptr<Pending>& p) {
  auto answer = [&](Status s) { p->done(Result<CommitResult>(std::move(s))); };
  CatalogOp op = *p->catalog;
  const std::string name(op.name);
  const Lsn lsn = log_->next_lsn();
  {
    std::unique_lock lock(catalog_mu_);
    const bool is_table =
        op.change == CatalogChange::kCreateTable || op.change == CatalogChange::kDropTable;
    const bool exists =
        is_table ? (tables_.count(name) != 0 && tables_.find(name)->second->dropped == Lsn())
                 : (topics_.count(name) != 0 && topics_.find(name)->second->dropped == Lsn());
    const char* what = is_table ? "table" : "topic";
    switch (op.change) {
      case CatalogChange::kCreateTable:
      case CatalogChange::kCreateTopic:
        if (exists) return answer(base::AlreadyExists(fmt::format("{} {:?} exists", what, name)));
        break;
      case CatalogChange::kDropTable:
      case CatalogChange::kDropTopic:
        if (!exists) return answer(base::NotFound(fmt::format("no {} {:?}", what, name)));
        break;
    }
    switch (op.change) {
      case CatalogChange::kCreateTable: {
        auto entry = std::make_shared<TableEntry>();
        entry->id = TableId(next_table_id_++);
        entry->name = name;
        entry->created = lsn;
        op.id = entry->id.value();
        tables_[name] = entry;
        break;
      }
      case CatalogChange::kCreateTopic: {
        auto entry = std::make_shared<TopicEntry>();
        entry->id = TopicId(next_topic_id_++);
        entry->name = name;
        entry->created = lsn;
        entry->retention_ms = op.retention_ms;
        entry->retention_bytes = op.retention_bytes;
        entry->Init(op.partitions);
        op.id = entry->id.value();
        topics_[name] = entry;
        break;
      }
      case CatalogChange::kDropTable:
        tables_[name]->dropped = lsn;
        op.id = tables_[name]->id.value();
        break;
      case CatalogChange::kDropTopic:
        topics_[name]->dropped = lsn;
        op.id = topics_[name]->id.value();
        break;
    }
  }
  writer_.Reset(options_.now_ms(), std::nullopt);
  writer_.ChangeCatalog(op);
  p->result.lsn = lsn;
  Append(p, writer_.Finish(), lsn);
}

void Engine::OnDurable(Lsn lsn, const Status& status, const std::shared_ptr<Pending>& p) {
  if (!status.ok()) {
    // Until rolling back rejected transactions exists, a full disk stops the engine too.
    Fail(status.code() == base::StatusCode::kIoError
             ? status
             : base::IoError(
                   fmt::format("the log rejected LSN {}: {}", lsn.value(), status.ToString())));
    p->done(Result<CommitResult>(this->status()));
    AnswerParked(lsn, this->status());
    return;
  }
  for (std::size_t i = 0; i < p->event_topics.size(); ++i) {
    const EventPosition& e = p->result.events[i];
    auto& end = p->event_topics[i]->visible_end[e.partition.value()];
    end.store(std::max(end.load(std::memory_order_relaxed), e.offset.value() + 1),
              std::memory_order_release);
  }
  visible_lsn_.store(lsn.value(), std::memory_order_seq_cst);
  if (!p->event_topics.empty() && event_waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(events_mu_);
    events_cv_.notify_all();
  }
  p->done(p->result);
  AnswerParked(lsn, Status::Ok());
}

void Engine::AnswerParked(Lsn durable, const Status& failure) {
  std::vector<std::shared_ptr<Pending>> ready;
  {
    std::lock_guard lock(parked_mu_);
    auto end = failure.ok() ? parked_.upper_bound(durable.value()) : parked_.end();
    for (auto it = parked_.begin(); it != end; ++it) ready.push_back(it->second);
    parked_.erase(parked_.begin(), end);
  }
  for (auto& p : ready) {
    p->done(Result<CommitResult>(failure.ok() ? p->conflict : failure));
  }
}

void Engine::Fail(const Status& status) {
  std::lock_guard lock(failure_mu_);
  if (failure_.ok()) failure_ = status;
}

// ---- Catalog and reads -----------------------------------------------------------------------

Status Engine::CreateTable(std::string_view name) {
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("table", name, options_.name_bytes_max));
  return CommitCatalog(CatalogOp{CatalogChange::kCreateTable, 0, name, 0, 0, 0});
}

Status Engine::DropTable(std::string_view name) {
  return CommitCatalog(CatalogOp{CatalogChange::kDropTable, 0, name, 0, 0, 0});
}

Status Engine::CreateTopic(std::string_view name, std::uint32_t partitions,
                           std::int64_t retention_ms, std::uint64_t retention_bytes) {
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("topic", name, options_.name_bytes_max));
  if (partitions == 0 || partitions > options_.partitions_max) {
    return base::InvalidArgument(fmt::format("topic {:?}: {} partitions; allowed 1 to {}", name,
                                             partitions, options_.partitions_max));
  }
  if (retention_ms < 0) {
    return base::InvalidArgument(fmt::format("topic {:?}: negative retention", name));
  }
  return CommitCatalog(
      CatalogOp{CatalogChange::kCreateTopic, 0, name, partitions, retention_ms, retention_bytes});
}

Status Engine::DropTopic(std::string_view name) {
  return CommitCatalog(CatalogOp{CatalogChange::kDropTopic, 0, name, 0, 0, 0});
}

Status Engine::CommitCatalog(CatalogOp op) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  Submit(Transaction(), op,
         [&promise](Result<CommitResult> result) { promise.set_value(result.status()); });
  return future.get();
}

std::vector<std::string> Engine::ListTables() const {
  std::shared_lock lock(catalog_mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : tables_) {
    if (entry->LiveAt(visible_lsn())) names.push_back(name);
  }
  return names;
}

std::vector<TopicInfo> Engine::ListTopics() const {
  std::shared_lock lock(catalog_mu_);
  std::vector<TopicInfo> out;
  for (const auto& [name, t] : topics_) {
    if (!t->LiveAt(visible_lsn())) continue;
    TopicInfo info{name, t->id, t->partitions, t->retention_ms, t->retention_bytes, {}};
    for (std::uint32_t p = 0; p < t->partitions; ++p) {
      info.end_offsets.emplace_back(t->visible_end[p].load(std::memory_order_acquire));
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::shared_ptr<Engine::TopicEntry> Engine::FindTopic(std::string_view name) const {
  std::shared_lock lock(catalog_mu_);
  auto it = topics_.find(name);
  if (it == topics_.end() || !it->second->LiveAt(visible_lsn())) return nullptr;
  return it->second;
}

Result<FetchResult> Engine::Fetch(std::string_view topic, PartitionId partition, Offset offset,
                                  const FetchOptions& options) const {
  auto t = FindTopic(topic);
  if (!t) return base::NotFound(fmt::format("no topic {:?}", topic));
  if (partition.value() >= t->partitions) {
    return base::InvalidArgument(fmt::format("topic {:?} has {} partitions; there is no {}", topic,
                                             t->partitions, partition.value()));
  }
  // The end as of the visible LSN: read it before anything else, then never return past it.
  const std::uint64_t end = t->visible_end[partition.value()].load(std::memory_order_acquire);
  FetchResult out;
  out.high_watermark = Offset(end);
  out.next_offset = offset;
  if (offset.value() > end) {
    return base::OutOfRange(fmt::format("offset {} is past the end of {}/{} ({})", offset.value(),
                                        topic, partition.value(), end));
  }
  if (offset.value() == end || options.max_events == 0) return out;
  LOCKSTEP_ASSIGN_OR_RETURN(storage::LogReader reader,
                            log_->Read(t->StartFor(partition.value(), offset.value())));
  std::uint64_t want = offset.value();
  while (want < end && out.events < options.max_events) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<storage::LogRecord> record, reader.Next());
    if (!record) break;
    LOCKSTEP_ASSIGN_OR_RETURN(TxnRecordReader txn, TxnRecordReader::Open(record->bytes));
    for (;;) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, txn.Next());
      if (!op) break;
      const auto* ev = std::get_if<EventOp>(&*op);
      if (ev == nullptr || ev->topic != t->id || ev->partition != partition) continue;
      LOCKSTEP_ASSIGN_OR_RETURN(base::EventView event, base::DecodeEvent(ev->record));
      if (event.offset().value() < want) continue;
      LOCKSTEP_ASSERT(event.offset().value() == want);  // dense, in LSN order
      if (want >= end || out.events == options.max_events ||
          (out.events > 0 && out.records.size() + ev->record.size() > options.max_bytes)) {
        want = end + 1;  // done: limits reached
        break;
      }
      out.records.insert(out.records.end(), ev->record.begin(), ev->record.end());
      ++out.events;
      ++want;
    }
    if (want > end) break;
  }
  out.next_offset = Offset(offset.value() + out.events);
  return out;
}

Result<Offset> Engine::WaitForEvents(std::string_view topic, PartitionId partition, Offset offset,
                                     std::chrono::milliseconds timeout) const {
  auto t = FindTopic(topic);
  if (!t) return base::NotFound(fmt::format("no topic {:?}", topic));
  if (partition.value() >= t->partitions) {
    return base::InvalidArgument(
        fmt::format("topic {:?} has no partition {}", topic, partition.value()));
  }
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

Result<std::optional<Row>> Engine::Get(std::string_view table, std::string_view key) const {
  auto t = FindTable(table);
  if (!t) return base::NotFound(fmt::format("no table {:?}", table));
  auto read = t->Get(AsBytes(key), visible_lsn());
  if (!read) return std::optional<Row>();
  return std::optional<Row>(Row{std::string(key), std::move(read->value), read->version});
}

Result<std::vector<Row>> Engine::Scan(std::string_view table, const ScanOptions& options) const {
  auto t = FindTable(table);
  if (!t) return base::NotFound(fmt::format("no table {:?}", table));
  std::vector<Row> rows;
  t->Scan(options, visible_lsn(), [&](std::string_view key, Bytes value, Lsn version) {
    rows.push_back(Row{std::string(key), std::string(AsView(value)), version});
    return true;
  });
  return rows;
}

}  // namespace lockstep::engine

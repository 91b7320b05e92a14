#include "engine/engine.h"

#include "engine/engine_internal.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "base/checksum.h"
#include "base/clock.h"
#include "base/crash_site.h"
#include "base/planted_bug.h"

namespace lockstep::engine {

namespace {

// The engine whose log writer is running commit callbacks on this thread, if any (between the
// log's before_callbacks and after_callbacks hooks).
thread_local const Engine* t_completing = nullptr;

// Submissions from commit callbacks per wake of the sequencer, and the group size from which
// the wake waits for the group's last callback (see Engine::BeforeLogCallbacks).
constexpr std::uint32_t kDeferWakes = 4;
constexpr std::size_t kDeferAllFrom = 64;

}  // namespace

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

Engine::Engine(EngineOptions options)
    : options_(std::move(options)), metrics_(std::make_unique<EngineMetrics>()) {
  auto internal = [this](TableId id, const char* name) {
    auto entry = std::make_shared<TableEntry>();
    entry->id = id;
    entry->name = name;
    table_ids_[id.value()] = entry;
    return entry;
  };
  idempotency_ = internal(kIdempotencyTable, "__idempotency");
  // Forgotten keys leave memory too (Engine::Reclaim expires them).
  idempotency_->table->TrackWritesForExpiry();
  groups_ = internal(kGroupsTable, "__groups");
  group_offsets_ = internal(kGroupOffsetsTable, "__group_offsets");
}

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
  log.before_callbacks = [raw = engine.get()](std::size_t count) {
    raw->BeforeLogCallbacks(count);
  };
  log.after_callbacks = [raw = engine.get()] { raw->AfterLogCallbacks(); };
  LOCKSTEP_ASSIGN_OR_RETURN(engine->log_, storage::Log::Open(log));
  LOCKSTEP_RETURN_IF_ERROR(
      engine->options_.io->CreateDir(storage::JoinPath(engine->options_.dir, "checkpoints")));
  LOCKSTEP_RETURN_IF_ERROR(engine->Replay());
  engine->log_bytes_at_checkpoint_ = engine->log_->stats().bytes;
  engine->expected_next_ = engine->log_->next_lsn();
  engine->checkpoint_ms_ = engine->options_.now_ms();
  engine->sequencer_ = std::thread([raw = engine.get()] { raw->SequencerLoop(); });
  const CheckpointOptions& c = engine->options_.checkpoint;
  if (c.every_log_bytes > 0 || c.every_ms > 0) {
    engine->checkpointer_ = std::thread([raw = engine.get()] { raw->CheckpointerLoop(); });
  }
  return engine;
}

Engine::~Engine() {
  if (checkpointer_.joinable()) {
    {
      std::lock_guard lock(checkpointer_mu_);
      checkpointer_stop_ = true;
    }
    checkpointer_cv_.notify_all();
    checkpointer_.join();
  }
  if (sequencer_.joinable()) {
    {
      std::lock_guard lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    sequencer_.join();
  }
  log_.reset();  // writes and syncs what was appended; its callbacks answer the commits
  WakeLongPolls();
  AnswerParked(Lsn(UINT64_MAX), base::Unavailable("engine closed"));
  // Reclamation callbacks name this engine and free what the tables unlinked: all run first.
  rcu::FreeAfterReaders(std::exchange(garbage_, {}));
  rcu::Barrier();
}

Status Engine::status() const {
  if (!failed_.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard lock(failure_mu_);
  return failure_;
}

// ---- Recovery ------------------------------------------------------------------------------

Status Engine::Replay() {
  Lsn from;
  LOCKSTEP_RETURN_IF_ERROR(LoadCheckpoint(&from));
  LOCKSTEP_ASSIGN_OR_RETURN(storage::LogReader reader, log_->Read(from));
  for (;;) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<storage::LogRecord> record, reader.Next());
    if (!record) break;
    base::CrashSite("recovery.replaying");
    Status applied = ApplyRecord(record->lsn, record->bytes);
    if (!applied.ok()) {
      return applied.WithContext(
          fmt::format("engine {}: replaying LSN {}", options_.dir, record->lsn.value()));
    }
  }
  // The checkpoint's keys came in key order: put them in LSN order now, not on the sequencer's
  // first pass (a pause for commits).
  idempotency_->table->SortWritesForExpiry();
  std::unique_lock lock(catalog_mu_);
  const Lsn first = log_->first_lsn();
  // A start offset whose events the log no longer holds (possible only after falling back to an
  // older checkpoint than retention assumed) moves up to the first offset the log holds. The
  // sparse index only says where to look: its entry at or below the start may point below the
  // log's start while the event at the start itself is held (a partition that retention
  // emptied keeps the entry that located its start, and events appended since get no entry of
  // their own until 64 more), so the log decides.
  std::vector<HeldStart> suspects;
  for (auto& [name, topic] : topics_) {
    for (std::uint32_t p = 0; p < topic->partitions; ++p) {
      topic->visible_end[p].store(topic->next_offset[p]);
      const std::uint64_t start = topic->start_offset[p].load();
      if (start < topic->next_offset[p] && topic->StartFor(p, start) < first) {
        suspects.push_back({topic.get(), PartitionId(p), start, topic->next_offset[p]});
      }
    }
  }
  LOCKSTEP_RETURN_IF_ERROR(FindHeldStarts(first, suspects));
  for (const HeldStart& s : suspects) {
    if (s.held == s.start) continue;
    spdlog::warn("engine {}: topic {} partition {}: events below offset {} are gone", options_.dir,
                 s.topic->name, s.partition.value(), s.held);
    s.topic->start_offset[s.partition.value()].store(s.held);
  }
  visible_lsn_.store(log_->durable_lsn().value());
  return Status::Ok();
}

// Reads the log from `first` and sets each suspect's `held` to the first offset at or above its
// start that the log still holds (its end offset when none). One pass for all of them.
Status Engine::FindHeldStarts(Lsn first, std::vector<HeldStart>& suspects) const {
  std::size_t open = 0;
  for (HeldStart& s : suspects) {
    s.held = s.end;
    s.found = false;
    ++open;
  }
  if (open == 0) return Status::Ok();
  LOCKSTEP_ASSIGN_OR_RETURN(storage::LogReader reader, log_->Read(first));
  while (open > 0) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<storage::LogRecord> record, reader.Next());
    if (!record) break;
    // Recovery verified these batches; only the events' offsets matter here.
    LOCKSTEP_ASSIGN_OR_RETURN(
        TxnRecordReader txn,
        TxnRecordReader::Open(record->bytes, {.verify_event_checksums = false}));
    for (;;) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, txn.Next());
      if (!op) break;
      const auto* ev = std::get_if<EventOp>(&*op);
      if (ev == nullptr) continue;
      for (HeldStart& s : suspects) {
        if (s.found || s.topic->id != ev->topic || s.partition != ev->partition) continue;
        LOCKSTEP_ASSIGN_OR_RETURN(base::EventView event,
                                  base::DecodeEvent(ev->record, {.verify_checksum = false}));
        if (event.offset().value() < s.start) continue;
        s.held = event.offset().value();
        s.found = true;
        --open;
      }
    }
  }
  return Status::Ok();
}

// Applies one transaction record to the in-memory state (replay only: the sequencer applies
// what it builds directly, and both must agree).
Status Engine::ApplyRecord(Lsn lsn, Bytes record) {
  LOCKSTEP_ASSIGN_OR_RETURN(TxnRecordReader reader, TxnRecordReader::Open(record));
  std::unique_lock lock(catalog_mu_);
  // No put or delete names __idempotency: it is written from the record's header alone.
  auto table_by_id = [&](TableId id) -> TableEntry* {
    if (id == kIdempotencyTable) return nullptr;
    auto it = table_ids_.find(id.value());
    return it == table_ids_.end() || it->second->dropped != Lsn() ? nullptr : it->second.get();
  };
  auto topic_by_id = [&](TopicId id) -> TopicEntry* {
    auto it = topic_ids_.find(id.value());
    return it == topic_ids_.end() || it->second->dropped != Lsn() ? nullptr : it->second.get();
  };
  remembered_.clear();
  for (;;) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::optional<TxnOp> op, reader.Next());
    if (!op) break;
    if (auto* put = std::get_if<PutOp>(&*op)) {
      TableEntry* t = table_by_id(put->table);
      if (!t) return base::DataLoss(fmt::format("put to unknown table {}", put->table.value()));
      t->table->Put(put->key, put->value, lsn);
    } else if (auto* del = std::get_if<DeleteOp>(&*op)) {
      TableEntry* t = table_by_id(del->table);
      if (!t) return base::DataLoss(fmt::format("delete in unknown table {}", del->table.value()));
      t->table->Delete(del->key, lsn);
    } else if (auto* ev = std::get_if<EventOp>(&*op);
               ev && !base::Planted(base::PlantedBug::kStateWithoutEvents)) {
      TopicEntry* t = topic_by_id(ev->topic);
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
      t->Index(ev->partition.value(), next, lsn, event.timestamp_ms(), ev->record.size());
      remembered_.push_back({t->id, ev->partition, event.offset()});
      ++next;
    } else if (auto* off = std::get_if<OffsetOp>(&*op)) {
      if (!topic_by_id(off->topic)) {
        return base::DataLoss(
            fmt::format("offset commit for unknown topic {}", off->topic.value()));
      }
      EncodeGroupOffsetValue({off->offset, off->generation, reader.commit_ms()}, &scratch_);
      group_offsets_->table->Put(AsBytes(GroupOffsetKey(off->group, off->topic, off->partition)),
                                 scratch_, lsn);
    } else if (auto* cat = std::get_if<CatalogOp>(&*op)) {
      LOCKSTEP_RETURN_IF_ERROR(ApplyCatalogLocked(*cat, lsn));
    }
  }
  if (auto key = reader.idempotency_key()) {
    EncodeRememberedResult(reader.commit_ms(), remembered_, &scratch_);
    idempotency_->table->Put(AsBytes(*key), scratch_, lsn);
  }
  return Status::Ok();
}

// Under catalog_mu_ (exclusive): the sequencer and replay share this, so both build the same
// catalog. `op.id` is the id the sequencer chose.
Status Engine::ApplyCatalogLocked(const CatalogOp& op, Lsn lsn) {
  const std::string name(op.name);
  switch (op.change) {
    case CatalogChange::kCreateTable: {
      if (op.id >= kFirstInternalTableId) {
        return base::DataLoss(fmt::format("table {:?} has a reserved id {}", name, op.id));
      }
      auto entry = std::make_shared<TableEntry>();
      entry->id = TableId(op.id);
      entry->name = name;
      entry->created = lsn;
      tables_[name] = entry;
      table_ids_[op.id] = entry;
      next_table_id_ = std::max(next_table_id_, op.id + 1);
      break;
    }
    case CatalogChange::kDropTable: {
      auto it = tables_.find(name);
      if (it == tables_.end())
        return base::DataLoss(fmt::format("drop of unknown table {:?}", name));
      it->second->dropped = lsn;
      break;
    }
    case CatalogChange::kCreateTopic: {
      auto entry = std::make_shared<TopicEntry>();
      entry->id = TopicId(op.id);
      entry->name = name;
      entry->created = lsn;
      entry->retention_ms = op.retention_ms;
      entry->retention_bytes = op.retention_bytes;
      entry->Init(op.partitions);
      topics_[name] = entry;
      topic_ids_[op.id] = entry;
      next_topic_id_ = std::max(next_topic_id_, op.id + 1);
      break;
    }
    case CatalogChange::kDropTopic: {
      auto it = topics_.find(name);
      if (it == topics_.end())
        return base::DataLoss(fmt::format("drop of unknown topic {:?}", name));
      it->second->dropped = lsn;
      break;
    }
  }
  return Status::Ok();
}

// ---- Committing ----------------------------------------------------------------------------

namespace {

auto IdentityOf(const TableWrite& w) { return std::tie(w.table, w.key); }
auto IdentityOf(const OffsetCommit& o) { return std::tie(o.group, o.topic, o.partition); }

// The index of the first item equal (by `same`) to an earlier one. Quadratic, allocation-free:
// transactions write a handful of keys; past 64 items it sorts indexes instead.
template <typename T>
std::optional<std::size_t> FirstRepeat(const std::vector<T>& items) {
  auto same = [](const T& a, const T& b) { return IdentityOf(a) == IdentityOf(b); };
  if (items.size() <= 64) {
    for (std::size_t i = 1; i < items.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (same(items[j], items[i])) return i;
      }
    }
    return std::nullopt;
  }
  std::vector<std::size_t> order(items.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return IdentityOf(items[a]) < IdentityOf(items[b]);
  });
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (same(items[order[i - 1]], items[order[i]])) return std::max(order[i - 1], order[i]);
  }
  return std::nullopt;
}

}  // namespace

Status Engine::Validate(const Transaction& txn) const {
  const std::size_t ops =
      txn.preconditions().size() + txn.writes().size() + txn.events().size() + txn.offsets().size();
  if (ops > options_.transaction_ops_max) {
    return base::InvalidArgument(fmt::format(
        "transaction has {} operations (preconditions, writes, events and offset commits), "
        "above the limit of {}: split it",
        ops, options_.transaction_ops_max));
  }
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
  std::vector<base::EventHeader> headers;
  for (const auto& e : txn.events()) {
    base::EventFields f;
    if (e.key) f.key = AsBytes(*e.key);
    f.payload = AsBytes(e.payload);
    f.type = e.type;
    headers.clear();
    for (const auto& [name, value] : e.headers) headers.push_back({name, AsBytes(value)});
    f.headers = headers;
    // The context is formatted only on failure: this runs for every commit.
    Status valid = base::ValidateEvent(f, options_.event_limits);
    if (!valid.ok()) return valid.WithContext(fmt::format("event for topic {:?}", e.topic));
  }
  for (const auto& o : txn.offsets()) {
    LOCKSTEP_RETURN_IF_ERROR(ValidateName("group", o.group, options_.name_bytes_max));
  }
  // One version per key per LSN: a transaction writes a key, or commits a group's partition,
  // at most once.
  if (auto i = FirstRepeat(txn.writes())) {
    const TableWrite& w = txn.writes()[*i];
    return base::InvalidArgument(
        fmt::format("transaction writes table {:?} key {:?} twice", w.table, w.key));
  }
  if (auto i = FirstRepeat(txn.offsets())) {
    const OffsetCommit& o = txn.offsets()[*i];
    return base::InvalidArgument(
        fmt::format("transaction commits group {:?} offset for {}/{} twice", o.group, o.topic,
                    o.partition.value()));
  }
  if (const auto& key = txn.idempotency_key()) {
    // The tag byte is ours; the limit applies to what the client chose.
    LOCKSTEP_RETURN_IF_ERROR(key_ok("idempotency", key->substr(1)));
    if (key->size() == 1) return base::InvalidArgument("idempotency key is empty");
  }
  if (txn.writes().empty() && txn.events().empty() && txn.preconditions().empty() &&
      txn.offsets().empty()) {
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
  if (!valid.ok()) {
    metrics_->CountAnswer(valid);
    return done(Result<CommitResult>(valid));
  }
  auto pending = std::make_shared<Pending>();
  pending->txn = std::move(txn);
  pending->done.Bind(std::move(done), metrics_.get());
  Submit(std::move(pending));
}

void Engine::Submit(std::shared_ptr<Pending> pending) {
  Status failed = status();
  if (!failed.ok()) {
    return pending->done(Result<CommitResult>(failed));
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
  if (!wake) return;
  if (t_completing == this) {
    // Submitted from a commit callback (a pipelined client refilling): see BeforeLogCallbacks.
    // Only the writer thread gets here, so deferred_wakes_ is its alone.
    if (++deferred_wakes_ < wake_every_) return;
    deferred_wakes_ = 0;
  }
  queue_cv_.notify_one();
}

// What commit callbacks submit goes into the queue at once (so a Commit that returned is
// sequenced before any Commit called after it, whatever the threads), but wakes the sequencer
// once per kDeferWakes submissions, and, when the group is large (a loaded engine), only after
// its last callback (AfterLogCallbacks). Waking it per submission had it take one transaction
// per round and cost the writer thread a futex wake each time (a tenth of its time at 256
// outstanding one-event commits); waking it only after the last callback of a small group kept
// it idle while the callbacks ran (durable transfers at 16 outstanding lost a fifth).
// docs/engine.md, "Waking the sequencer".
void Engine::BeforeLogCallbacks(std::size_t count) {
  t_completing = this;
  t_group_durable_ns = base::MonotonicNs();
  wake_every_ = count >= kDeferAllFrom ? std::numeric_limits<std::uint32_t>::max() : kDeferWakes;
}

void Engine::AfterLogCallbacks() {
  t_completing = nullptr;
  t_group_durable_ns = 0;
  if (std::exchange(deferred_wakes_, 0) > 0) queue_cv_.notify_one();
}

void Engine::HoldLogWrites(bool hold) { log_->HoldWrites(hold); }

bool Engine::SequencerDrained() {
  std::lock_guard lock(queue_mu_);
  return queue_.empty() && sequencer_idle_;  // idle only between rounds, in its wait
}

EngineCounters Engine::counters() const {
  const EngineMetrics& m = *metrics_;
  EngineCounters c;
  c.commits = m.commits.load(std::memory_order_relaxed);
  c.answered_ok = m.answered_ok.load(std::memory_order_relaxed);
  c.conflicts = m.conflicts.load(std::memory_order_relaxed);
  c.errors = m.errors.load(std::memory_order_relaxed);
  c.events = m.events.load(std::memory_order_relaxed);
  c.event_bytes = m.event_bytes.load(std::memory_order_relaxed);
  return c;
}

const base::AtomicHistogram& Engine::commit_latency_ns() const { return metrics_->commit_ns; }

void Engine::SequencerLoop() {
  std::deque<std::shared_ptr<Pending>> batch;
  for (;;) {
    bool roll_back = false;
    bool reclaim = false;
    {
      std::unique_lock lock(queue_mu_);
      sequencer_idle_ = true;
      queue_cv_.wait(lock, [this] {
        return stopping_ || !queue_.empty() || rollback_requested_ || reclaim_requested_ ||
               reclaim_backlog_;
      });
      sequencer_idle_ = false;
      roll_back = std::exchange(rollback_requested_, false);
      reclaim = std::exchange(reclaim_requested_, false) || reclaim_backlog_;
      if (queue_.empty() && stopping_) return;
      std::swap(batch, queue_);
    }
    // A full disk rejected appends: undo them now, not at the next commit, which may never come
    // while conflicts parked on them wait.
    if (roll_back && status().ok()) {
      if (const Lsn next = log_->next_lsn(); next != expected_next_) RollBack(next);
    }
    for (auto& pending : batch) Process(pending);
    Reclaim(reclaim, batch.size());
    batch.clear();
  }
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

// The group's newest generation (0 if it never had one) and the LSN that wrote it.
std::uint64_t NewestGeneration(Table& groups, std::string_view group, Lsn* observed) {
  auto newest = groups.NewestVersion(AsBytes(group));
  *observed = newest ? newest->lsn : Lsn();
  if (!newest || !newest->exists) return 0;
  auto generation = DecodeGeneration(newest->value);
  LOCKSTEP_ASSERT(generation.ok());  // the sequencer wrote it
  return *generation;
}

// Counts, per table, the keys a transaction adds (keys the table does not hold yet), to tell
// what the tables' hash indexes would allocate for them, for the memory budget: a resize takes
// a new array for the whole table in one step, which the per-write estimate would not see
// coming. Sequencer only (NewestVersion); its list is reused, so it allocates only while warming.
class NewKeys {
 public:
  NewKeys() { counts().clear(); }
  void Add(Table& table, Bytes key) {
    if (table.NewestVersion(key)) return;
    for (auto& [t, n] : counts()) {
      if (t == &table) {
        ++n;
        return;
      }
    }
    counts().emplace_back(&table, 1);
  }
  // About: several resizes within one transaction (a small table, many new keys) take a little
  // more, the array still moving at its end.
  std::uint64_t IndexBytes() const {
    std::uint64_t bytes = 0;
    for (const auto& [table, keys] : counts()) bytes += table->IndexBytesToInsert(keys);
    return bytes;
  }

 private:
  static std::vector<std::pair<Table*, std::size_t>>& counts() {
    static thread_local std::vector<std::pair<Table*, std::size_t>> list;
    return list;
  }
};

}  // namespace

void Engine::Process(const std::shared_ptr<Pending>& p) {
  auto answer = [&](Status s) { p->done(Result<CommitResult>(std::move(s))); };
  if (Status failed = status(); !failed.ok()) return answer(failed);
  // A full disk gave LSNs out again since the last append: undo what was rejected first.
  if (const Lsn next = log_->next_lsn(); next != expected_next_) RollBack(next);
  if (p->catalog) return ProcessCatalog(p);
  if (!p->group_bump.empty()) return ProcessGroupBump(p);
  if (p->capture != nullptr) return ProcessCapture(p);
  if (p->txn.idempotency_key() && AnswerRetry(p)) return;
  const Transaction& txn = p->txn;

  // Resolve every name first: nothing changes until the whole transaction is known to be valid.
  // Sequencer scratch (no allocation once warm) and the Pending's own vectors.
  std::vector<TableEntry*>& pre_tables = scratch_tables_;
  std::vector<TopicEntry*>& topics = scratch_topics_;
  std::vector<TableEntry*>& write_tables = p->write_tables;
  std::vector<TopicEntry*>& offset_topics = p->offset_topics;
  pre_tables.clear();
  topics.clear();
  {
    // A refusal over a name depends on the catalog change it saw (a drop, or the creation that
    // fixed a topic's partitions): like a conflict, it is answered once that is durable.
    Lsn saw;
    std::shared_lock lock(catalog_mu_);
    auto table = [&](const std::string& name) -> TableEntry* {
      auto it = tables_.find(name);
      if (it == tables_.end()) return nullptr;
      saw = it->second->dropped;
      return it->second->dropped != Lsn() ? nullptr : it->second.get();
    };
    auto topic = [&](const std::string& name,
                     std::optional<PartitionId> partition) -> Result<TopicEntry*> {
      auto it = topics_.find(name);
      if (it == topics_.end() || it->second->dropped != Lsn()) {
        if (it != topics_.end()) saw = it->second->dropped;
        return base::NotFound(fmt::format("no topic {:?}", name));
      }
      if (partition && partition->value() >= it->second->partitions) {
        saw = it->second->created;
        return base::InvalidArgument(
            fmt::format("topic {:?} has {} partitions; there is no partition {}", name,
                        it->second->partitions, partition->value()));
      }
      return it->second.get();
    };
    auto refuse = [&](Status why) {
      lock.unlock();
      Park(p, std::move(why), saw);
    };
    for (const auto& c : txn.preconditions()) {
      pre_tables.push_back(table(c.table));
      if (!pre_tables.back()) return refuse(base::NotFound(fmt::format("no table {:?}", c.table)));
    }
    for (const auto& w : txn.writes()) {
      write_tables.push_back(table(w.table));
      if (!write_tables.back()) {
        return refuse(base::NotFound(fmt::format("no table {:?}", w.table)));
      }
    }
    for (const auto& e : txn.events()) {
      auto t = topic(e.topic, e.partition);
      if (!t.ok()) return refuse(t.status());
      topics.push_back(*t);
    }
    for (const auto& o : txn.offsets()) {
      auto t = topic(o.topic, o.partition);
      if (!t.ok()) return refuse(t.status());
      offset_topics.push_back(*t);
    }
  }
  // Preconditions, against the newest state, durable or not. A refusal depends on every version
  // checked before it too (one that passed only thanks to a transaction a full disk then
  // rejects would have failed): it waits for the newest of them to be durable.
  Lsn depends;
  for (std::size_t i = 0; i < txn.preconditions().size(); ++i) {
    const Precondition& c = txn.preconditions()[i];
    Lsn observed;
    Status conflict = Check(c, pre_tables[i]->table->NewestVersion(AsBytes(c.key)), &observed);
    depends = std::max(depends, observed);
    if (!conflict.ok()) return Park(p, std::move(conflict), depends);
  }
  // Offset commits: a current generation, and an offset the partition has reached.
  for (std::size_t i = 0; i < txn.offsets().size(); ++i) {
    const OffsetCommit& o = txn.offsets()[i];
    Lsn observed;
    const std::uint64_t current = NewestGeneration(*groups_->table, o.group, &observed);
    depends = std::max(depends, observed);
    if (o.generation != current) {
      return Park(p,
                  base::FailedPrecondition(fmt::format(
                      "group {:?} is at generation {}; an offset commit from generation {} is "
                      "stale (the member lost its partitions: rejoin the group)",
                      o.group, current, o.generation)),
                  depends);
    }
    const std::uint64_t end = offset_topics[i]->next_offset[o.partition.value()];
    if (o.offset.value() > end) {
      return Park(p,
                  base::InvalidArgument(fmt::format(
                      "offset commit for {}/{}: offset {} is past the partition's end {}", o.topic,
                      o.partition.value(), o.offset.value(), end)),
                  depends);
    }
  }
  // Partitions and offsets (tentative until the record is known to fit). A topic's keyless
  // events stick to one partition for the whole transaction, the next transaction taking the
  // next partition (as Kafka's sticky partitioner does per batch): a producer's batch is one
  // run of one partition in the record, which fetches of the other partitions pass over in one
  // step (docs/engine-records.md).
  const Lsn lsn = expected_next_;  // AppendAt checks it (a rejection may come meanwhile)
  const std::int64_t now = options_.now_ms();
  std::vector<std::uint64_t>& offsets = scratch_offsets_;
  offsets.resize(topics.size());
  p->result.events.clear();
  scratch_next_offsets_.clear();
  scratch_sticky_.clear();
  for (std::size_t i = 0; i < topics.size(); ++i) {
    const EventAppend& e = txn.events()[i];
    TopicEntry& t = *topics[i];
    std::uint32_t partition = 0;
    if (e.partition) {
      partition = e.partition->value();
    } else if (e.key) {
      partition = static_cast<std::uint32_t>(base::Xxh3(AsBytes(*e.key)) % t.partitions);
    } else {
      auto sticky = std::find_if(scratch_sticky_.begin(), scratch_sticky_.end(),
                                 [&](const auto& s) { return s.first == &t; });
      if (sticky == scratch_sticky_.end()) {
        scratch_sticky_.push_back({&t, t.round_robin++ % t.partitions});
        sticky = scratch_sticky_.end() - 1;
      }
      partition = sticky->second;
    }
    // Dense offsets, in the transaction's order within a partition.
    auto next = std::find_if(
        scratch_next_offsets_.begin(), scratch_next_offsets_.end(),
        [&](const NextOffset& n) { return n.topic == &t && n.partition == partition; });
    if (next == scratch_next_offsets_.end()) {
      scratch_next_offsets_.push_back({&t, partition, t.next_offset[partition]});
      next = scratch_next_offsets_.end() - 1;
    }
    offsets[i] = next->next++;
    p->result.events.push_back({t.name, PartitionId(partition), Offset(offsets[i])});
  }
  // The record: writes, events encoded once, in place, with their final offset and LSN, then
  // offset commits; the idempotency key in its header.
  if (txn.idempotency_key()) {
    writer_.Reset(now, *txn.idempotency_key());
  } else {
    writer_.Reset(now, std::nullopt);
  }
  for (std::size_t i = 0; i < txn.writes().size(); ++i) {
    const TableWrite& w = txn.writes()[i];
    if (w.is_delete) {
      writer_.Delete(write_tables[i]->id, AsBytes(w.key));
    } else {
      writer_.Put(write_tables[i]->id, AsBytes(w.key), AsBytes(w.value));
    }
  }
  std::vector<base::EventHeader>& headers = scratch_headers_;
  std::vector<std::int64_t>& timestamps = scratch_timestamps_;
  timestamps.resize(topics.size());
  std::vector<std::uint64_t>& sizes = scratch_sizes_;
  sizes.resize(topics.size());
  for (std::size_t i = 0; i < topics.size(); ++i) {
    const EventAppend& e = txn.events()[i];
    base::EventFields f;
    if (e.key) f.key = AsBytes(*e.key);
    f.payload = AsBytes(e.payload);
    f.type = e.type;
    f.schema_version = e.schema_version;
    headers.clear();
    for (const auto& [name, value] : e.headers) headers.push_back({name, AsBytes(value)});
    f.headers = headers;
    f.timestamp_ms = timestamps[i] = e.timestamp_ms.value_or(now);
    sizes[i] = base::EncodedEventBytes(f);
    auto room = writer_.AddEvent(topics[i]->id, p->result.events[i].partition, sizes[i]);
    base::EncodeEvent(f, Offset(offsets[i]), lsn, room);
  }
  for (std::size_t i = 0; i < txn.offsets().size(); ++i) {
    const OffsetCommit& o = txn.offsets()[i];
    writer_.CommitOffset(
        OffsetOp{offset_topics[i]->id, o.partition, o.generation, o.offset, o.group});
  }
  const Bytes record = writer_.Finish();
  if (record.size() > log_->record_bytes_max()) {
    return answer(
        base::InvalidArgument(fmt::format("transaction is {} bytes, above the limit of {}",
                                          record.size(), log_->record_bytes_max())));
  }
  if (options_.table_bytes_max > 0) {
    // About what the writes will add: keys, values and a version's overhead each.
    std::uint64_t adds = 64 * (txn.offsets().size() + (txn.idempotency_key() ? 1 : 0));
    for (const TableWrite& w : txn.writes()) adds += w.key.size() + w.value.size() + 64;
    NewKeys new_keys;
    for (std::size_t i = 0; i < txn.writes().size(); ++i) {
      new_keys.Add(*write_tables[i]->table, AsBytes(txn.writes()[i].key));
    }
    for (std::size_t i = 0; i < txn.offsets().size(); ++i) {
      const OffsetCommit& o = txn.offsets()[i];
      new_keys.Add(*group_offsets_->table,
                   AsBytes(GroupOffsetKey(o.group, offset_topics[i]->id, o.partition)));
    }
    if (txn.idempotency_key()) new_keys.Add(*idempotency_->table, AsBytes(*txn.idempotency_key()));
    adds += new_keys.IndexBytes();
    const std::uint64_t held = table_bytes();
    if (held + adds > options_.table_bytes_max) {
      return answer(base::ResourceExhausted(fmt::format(
          "tables hold {} bytes and this transaction adds about {}: above the memory budget of "
          "{} bytes (table_bytes_max)",
          held, adds, options_.table_bytes_max)));
    }
  }
  // From here on the transaction happens. Apply first, tagged with the LSN the append will get
  // (the sequencer is the log's only appender): the durability callback may run before Append
  // returns, and it makes this LSN visible. ApplyRecord (replay) must do exactly the same.
  for (std::size_t i = 0; i < txn.writes().size(); ++i) {
    const TableWrite& w = txn.writes()[i];
    if (w.is_delete) {
      write_tables[i]->table->Delete(AsBytes(w.key), lsn);
    } else {
      write_tables[i]->table->Put(AsBytes(w.key), AsBytes(w.value), lsn);
    }
    // A write that began an index resize: reclamation passes finish the move even if no write
    // comes after (docs/engine.md, "Tables").
    if (write_tables[i]->table->IndexMoving()) reclaim_backlog_ = true;
  }
  p->event_slots.clear();
  for (std::size_t i = 0; i < topics.size(); ++i) {
    const std::uint32_t partition = p->result.events[i].partition.value();
    auto& next = topics[i]->next_offset[partition];
    next = std::max(next, offsets[i] + 1);
    p->event_slots.push_back({topics[i], topics[i]->max_ts[partition], sizes[i]});
    topics[i]->Index(partition, offsets[i], lsn, timestamps[i], sizes[i]);
  }
  for (std::size_t i = 0; i < txn.offsets().size(); ++i) {
    const OffsetCommit& o = txn.offsets()[i];
    EncodeGroupOffsetValue({o.offset, o.generation, now}, &scratch_);
    group_offsets_->table->Put(AsBytes(GroupOffsetKey(o.group, offset_topics[i]->id, o.partition)),
                               scratch_, lsn);
  }
  if (txn.idempotency_key()) {
    remembered_.clear();
    for (std::size_t i = 0; i < topics.size(); ++i) {
      remembered_.push_back({topics[i]->id, p->result.events[i].partition, Offset(offsets[i])});
    }
    EncodeRememberedResult(now, remembered_, &scratch_);
    idempotency_->table->Put(AsBytes(*txn.idempotency_key()), scratch_, lsn);
  }
  p->result.lsn = lsn;
  Append(p, record, lsn);
}

// Guarantee 4: a transaction whose idempotency key is remembered is not committed again; it gets
// the original result, once that is durable. Returns false when the key is not remembered (never
// used, or past the horizon): then the transaction commits as new.
bool Engine::AnswerRetry(const std::shared_ptr<Pending>& p) {
  auto newest = idempotency_->table->NewestVersion(AsBytes(*p->txn.idempotency_key()));
  if (!newest || !newest->exists) return false;
  auto remembered = DecodeRememberedResult(newest->value);
  LOCKSTEP_ASSERT(remembered.ok());  // the sequencer wrote it
  const bool within_horizon =
      options_.idempotency_horizon_ms == 0
          ? newest->lsn >= idempotency_floor()
          : options_.now_ms() - remembered->commit_ms < options_.idempotency_horizon_ms;
  if (!within_horizon) return false;
  CommitResult original;
  original.lsn = newest->lsn;
  {
    std::shared_lock lock(catalog_mu_);
    for (const RememberedEvent& e : remembered->events) {
      original.events.push_back({TopicNameLocked(e.topic), e.partition, e.offset});
    }
  }
  Park(p, std::move(original), newest->lsn);
  return true;
}

std::string Engine::TopicNameLocked(TopicId id) const {
  auto it = topic_ids_.find(id.value());
  return it == topic_ids_.end() ? std::string() : it->second->name;
}

// Appends what Process applied at `expected`. The Pending joins inflight_ first: whatever happens
// next, a rollback can find it.
void Engine::Append(const std::shared_ptr<Pending>& p, Bytes record, Lsn expected) {
  while (!inflight_.empty() && inflight_.front()->result.lsn <= log_->durable_lsn()) {
    inflight_.pop_front();
  }
  inflight_.push_back(p);
  for (;;) {
    // The callback captures two pointers only, so std::function keeps it inline (no allocation
    // per commit); the Pending keeps itself alive through `self` until OnDurable takes it.
    p->self = p;
    auto appended =
        log_->AppendAt(record, expected, [this, raw = p.get()](Lsn lsn, const Status& s) {
          std::shared_ptr<Pending> keep = std::move(raw->self);
          OnDurable(lsn, s, keep);
        });
    if (appended.ok()) {
      expected_next_ = Lsn(expected.value() + 1);
      if (base::Planted(base::PlantedBug::kReadPastDurable)) {
        visible_lsn_.store(std::max(visible_lsn_.load(), expected.value()));
      }
      return;
    }
    p->self.reset();
    const base::StatusCode code = appended.status().code();
    if (code == base::StatusCode::kResourceExhausted) {
      // The log's staging is full: wait for the writer to make room, then append again. The
      // sequencer is the only appender, so the LSN it computed stays right.
      (void)log_->WaitForDurable(Lsn(log_->durable_lsn().value() + 1),
                                 std::chrono::milliseconds(10));
      continue;
    }
    if (code == base::StatusCode::kFailedPrecondition) {
      // A full disk rejected earlier appends after this one was applied: undo it with them.
      RollBack(log_->next_lsn());
      p->done(Result<CommitResult>(base::ResourceExhausted(
          fmt::format("the disk is full: {}", appended.status().message()))));
      return;
    }
    Undo(*p);  // never appended: no version of it may stay behind
    inflight_.pop_back();
    Fail(appended.status());
    p->done(Result<CommitResult>(status()));
    return;
  }
}

void Engine::RollBack(Lsn next) {
  std::uint64_t undone = 0;
  while (!inflight_.empty() && inflight_.back()->result.lsn >= next) {
    Undo(*inflight_.back());
    inflight_.pop_back();
    ++undone;
  }
  expected_next_ = next;
  spdlog::warn("engine {}: the disk is full: undid {} rejected transactions from LSN {} on",
               options_.dir, undone, next.value());
  // Conflicts and retries parked on what was undone will never see it become durable.
  AnswerParkedFrom(next, base::ResourceExhausted(
                             "the disk is full: the write this answer depended on was rejected"));
}

// The exact inverse of what Process (or ProcessCatalog, ProcessGroupBump) applied, newest
// effects first. Readers never saw any of it: it was above the visible LSN.
void Engine::Undo(Pending& p) {
  const Lsn lsn = p.result.lsn;
  if (p.catalog) {
    std::unique_lock lock(catalog_mu_);
    const CatalogOp& op = *p.catalog;
    const std::string name(op.name);
    switch (op.change) {
      case CatalogChange::kCreateTable:
        table_ids_.erase(op.id);
        if (p.replaced_table) {
          tables_[name] = p.replaced_table;
        } else {
          tables_.erase(name);
        }
        next_table_id_ = op.id;
        break;
      case CatalogChange::kCreateTopic:
        topic_ids_.erase(op.id);
        if (p.replaced_topic) {
          topics_[name] = p.replaced_topic;
        } else {
          topics_.erase(name);
        }
        next_topic_id_ = op.id;
        break;
      case CatalogChange::kDropTable:
        tables_[name]->dropped = Lsn();
        break;
      case CatalogChange::kDropTopic:
        topics_[name]->dropped = Lsn();
        break;
    }
    return;
  }
  if (!p.group_bump.empty()) {
    groups_->table->Rollback(AsBytes(p.group_bump), lsn, &garbage_);
    return;
  }
  const Transaction& txn = p.txn;
  if (const auto& key = txn.idempotency_key()) {
    idempotency_->table->Rollback(AsBytes(*key), lsn, &garbage_);
  }
  for (std::size_t i = txn.offsets().size(); i-- > 0;) {
    const OffsetCommit& o = txn.offsets()[i];
    group_offsets_->table->Rollback(
        AsBytes(GroupOffsetKey(o.group, p.offset_topics[i]->id, o.partition)), lsn, &garbage_);
  }
  for (std::size_t i = p.event_slots.size(); i-- > 0;) {
    TopicEntry& t = *p.event_slots[i].topic;
    const std::uint32_t partition = p.result.events[i].partition.value();
    const std::uint64_t offset = p.result.events[i].offset.value();
    t.next_offset[partition] = std::min(t.next_offset[partition], offset);
    t.max_ts[partition] = p.event_slots[i].prev_max_ts;
    t.bytes[partition] -= p.event_slots[i].record_bytes;
    t.Unindex(partition, offset, lsn);
  }
  for (std::size_t i = txn.writes().size(); i-- > 0;) {
    p.write_tables[i]->table->Rollback(AsBytes(txn.writes()[i].key), lsn, &garbage_);
  }
}

void Engine::Park(const std::shared_ptr<Pending>& p, Result<CommitResult> answer, Lsn observed) {
  // Guarantee 2: an answer that depends on a version that is not durable yet (a conflict, a stale
  // generation, a retry's original result) is given only once it is. OnDurable publishes the
  // visible LSN before it drains parked_, and this check runs under parked_mu_, so nothing is
  // left waiting for a callback that already ran.
  // A failed engine answers nothing more from parked_ (Fail runs before its AnswerParked), so
  // a refusal found while the log was failing gets the failure instead of waiting forever.
  // OnDurable stores the visible LSN, then reads parked_count_; this counts the entry, then reads
  // the visible LSN (both sequentially consistent). So either OnDurable sees the count and takes
  // the lock (waiting for the entry), or this sees its LSN and answers now.
  {
    std::lock_guard lock(parked_mu_);
    parked_count_.fetch_add(1, std::memory_order_seq_cst);
    if (observed.value() > visible_lsn_.load(std::memory_order_seq_cst)) {
      if (Status failed = status(); !failed.ok()) {
        answer = Result<CommitResult>(std::move(failed));
      } else {
        p->parked_answer = std::move(answer);
        parked_.emplace(observed.value(), p);
        return;
      }
    }
    parked_count_.fetch_sub(1, std::memory_order_relaxed);
  }
  p->done(std::move(answer));
}

void Engine::ProcessCatalog(const std::shared_ptr<Pending>& p) {
  CatalogOp op = *p->catalog;
  const std::string name(op.name);
  const Lsn lsn = expected_next_;  // AppendAt checks it (a rejection may come meanwhile)
  {
    std::unique_lock lock(catalog_mu_);
    const bool is_table =
        op.change == CatalogChange::kCreateTable || op.change == CatalogChange::kDropTable;
    // "Exists" depends on the creation it saw, "no such" on the drop: answered once durable.
    auto answer = [&](Status s) {
      Lsn saw;
      if (auto t = tables_.find(name); is_table && t != tables_.end()) {
        saw = std::max(t->second->created, t->second->dropped);
      } else if (auto c = topics_.find(name); !is_table && c != topics_.end()) {
        saw = std::max(c->second->created, c->second->dropped);
      }
      lock.unlock();
      Park(p, std::move(s), saw);
    };
    const bool exists =
        is_table ? (tables_.count(name) != 0 && tables_.find(name)->second->dropped == Lsn())
                 : (topics_.count(name) != 0 && topics_.find(name)->second->dropped == Lsn());
    const char* what = is_table ? "table" : "topic";
    switch (op.change) {
      case CatalogChange::kCreateTable:
        if (exists) return answer(base::AlreadyExists(fmt::format("table {:?} exists", name)));
        if (next_table_id_ >= kFirstInternalTableId) {
          return answer(base::ResourceExhausted("every table id has been used"));
        }
        op.id = next_table_id_;
        break;
      case CatalogChange::kCreateTopic:
        if (exists) return answer(base::AlreadyExists(fmt::format("topic {:?} exists", name)));
        op.id = next_topic_id_;
        break;
      case CatalogChange::kDropTable:
      case CatalogChange::kDropTopic:
        if (!exists) return answer(base::NotFound(fmt::format("no {} {:?}", what, name)));
        op.id = is_table ? tables_[name]->id.value() : topics_[name]->id.value();
        break;
    }
    if (op.change == CatalogChange::kCreateTable && tables_.count(name) != 0) {
      p->replaced_table = tables_[name];
    }
    if (op.change == CatalogChange::kCreateTopic && topics_.count(name) != 0) {
      p->replaced_topic = topics_[name];
    }
    Status applied = ApplyCatalogLocked(op, lsn);
    LOCKSTEP_ASSERT(applied.ok());
    p->catalog->id = op.id;
  }
  writer_.Reset(options_.now_ms(), std::nullopt);
  writer_.ChangeCatalog(op);
  p->result.lsn = lsn;
  Append(p, writer_.Finish(), lsn);
}

void Engine::ProcessGroupBump(const std::shared_ptr<Pending>& p) {
  Lsn observed;
  const std::uint64_t next = NewestGeneration(*groups_->table, p->group_bump, &observed) + 1;
  const Lsn lsn = expected_next_;  // AppendAt checks it (a rejection may come meanwhile)
  EncodeGeneration(next, &scratch_);
  writer_.Reset(options_.now_ms(), std::nullopt);
  writer_.Put(kGroupsTable, AsBytes(p->group_bump), scratch_);
  const Bytes record = writer_.Finish();
  groups_->table->Put(AsBytes(p->group_bump), scratch_, lsn);
  *p->generation_out = next;  // read by the caller only after the commit completes
  p->result.lsn = lsn;
  Append(p, record, lsn);
}

void Engine::OnDurable(Lsn lsn, const Status& status, const std::shared_ptr<Pending>& p) {
  if (status.code() == base::StatusCode::kResourceExhausted) {
    // A full disk (guarantee 7): this LSN and every later one were rejected; the sequencer undoes
    // them in memory (RollBack) before it applies anything else. Nothing waits on them now.
    rejections_.fetch_add(1, std::memory_order_acq_rel);
    // Asked for before anyone hears of the rejection: a client that resubmits on this answer
    // must find its transaction sequenced after the rollback, not refused by the stale LSN.
    {
      std::lock_guard lock(queue_mu_);
      rollback_requested_ = true;
    }
    queue_cv_.notify_one();
    const Status full = base::ResourceExhausted(
        fmt::format("the disk is full; nothing of this transaction was written, retry once space "
                    "is freed ({})",
                    status.message()));
    p->done(Result<CommitResult>(full));
    // Only what waited on a rejected LSN: the sequencer may already have rolled back and parked
    // new answers on versions that will become durable.
    AnswerParkedFrom(lsn, full);
    return;
  }
  if (!status.ok()) {
    Fail(status.code() == base::StatusCode::kIoError
             ? status
             : base::IoError(
                   fmt::format("the log rejected LSN {}: {}", lsn.value(), status.ToString())));
    p->done(Result<CommitResult>(this->status()));
    AnswerParked(lsn, this->status());
    return;
  }
  std::uint64_t event_bytes = 0;
  for (std::size_t i = 0; i < p->event_slots.size(); ++i) {
    const EventPosition& e = p->result.events[i];
    auto& end = p->event_slots[i].topic->visible_end[e.partition.value()];
    end.store(std::max(end.load(std::memory_order_relaxed), e.offset.value() + 1),
              std::memory_order_release);
    event_bytes += p->event_slots[i].record_bytes;
  }
  if (!p->catalog && p->group_bump.empty()) {
    metrics_->commits.fetch_add(1, std::memory_order_relaxed);
    metrics_->events.fetch_add(p->event_slots.size(), std::memory_order_relaxed);
    metrics_->event_bytes.fetch_add(event_bytes, std::memory_order_relaxed);
  }
  visible_lsn_.store(lsn.value(), std::memory_order_seq_cst);
  if (!p->event_slots.empty() && event_waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(events_mu_);
    events_cv_.notify_all();
  }
  if (!p->event_slots.empty() && listener_count_.load(std::memory_order_acquire) > 0) {
    std::lock_guard lock(listeners_mu_);
    for (const auto& [id, fn] : listeners_) fn();
  }
  // Durable: never undone, so the result can move out (no copy of its event list).
  p->done(std::move(p->result));
  AnswerParked(lsn, Status::Ok());
}

void Engine::AnswerParkedFrom(Lsn from, const Status& refusal) {
  std::vector<std::shared_ptr<Pending>> ready;
  {
    std::lock_guard lock(parked_mu_);
    auto begin = parked_.lower_bound(from.value());
    for (auto it = begin; it != parked_.end(); ++it) ready.push_back(it->second);
    parked_.erase(begin, parked_.end());
    parked_count_.fetch_sub(ready.size(), std::memory_order_relaxed);
  }
  for (auto& p : ready) p->done(Result<CommitResult>(refusal));
}

void Engine::AnswerParked(Lsn durable, const Status& failure) {
  // Nothing parked (the common case): no lock. See Park for why a new entry is not missed.
  if (failure.ok() && parked_count_.load(std::memory_order_seq_cst) == 0) return;
  std::vector<std::shared_ptr<Pending>> ready;
  {
    std::lock_guard lock(parked_mu_);
    auto end = failure.ok() ? parked_.upper_bound(durable.value()) : parked_.end();
    for (auto it = parked_.begin(); it != end; ++it) ready.push_back(it->second);
    parked_.erase(parked_.begin(), end);
    parked_count_.fetch_sub(ready.size(), std::memory_order_relaxed);
  }
  for (auto& p : ready) {
    p->done(failure.ok() ? std::move(*p->parked_answer) : Result<CommitResult>(failure));
  }
}

void Engine::Fail(const Status& status) {
  {
    std::lock_guard lock(failure_mu_);
    if (failure_.ok()) failure_ = status;
    failed_.store(true, std::memory_order_release);
  }
  WakeLongPolls();  // WaitForEvents returns when the engine stops
}

std::uint64_t Engine::AddEventsListener(std::function<void()> fn) {
  std::lock_guard lock(listeners_mu_);
  listeners_.emplace_back(next_listener_, std::move(fn));
  listener_count_.fetch_add(1, std::memory_order_release);
  return next_listener_++;
}

void Engine::RemoveEventsListener(std::uint64_t id) {
  std::lock_guard lock(listeners_mu_);
  for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
    if (it->first == id) {
      listeners_.erase(it);
      listener_count_.fetch_sub(1, std::memory_order_release);
      return;
    }
  }
}

void Engine::WakeLongPolls() {
  std::lock_guard lock(events_mu_);
  events_cv_.notify_all();
}

// ---- Catalog ---------------------------------------------------------------------------------

Status Engine::CreateTable(std::string_view name) {
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("table", name, options_.name_bytes_max));
  return CommitCatalog(CatalogOp{CatalogChange::kCreateTable, 0, name, 0, 0, 0});
}

Status Engine::DropTable(std::string_view name) {
  // A name no table could have (empty, reserved, too long) is refused as such, not "not found".
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("table", name, options_.name_bytes_max));
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
  // A name no topic could have (empty, reserved, too long) is refused as such, not "not found".
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("topic", name, options_.name_bytes_max));
  return CommitCatalog(CatalogOp{CatalogChange::kDropTopic, 0, name, 0, 0, 0});
}

Status Engine::CommitCatalog(CatalogOp op) {
  std::promise<Status> promise;
  auto future = promise.get_future();
  auto pending = std::make_shared<Pending>();
  pending->catalog_name = std::string(op.name);
  op.name = pending->catalog_name;
  pending->catalog = op;
  pending->done = [&promise](Result<CommitResult> result) { promise.set_value(result.status()); };
  Submit(std::move(pending));
  return future.get();
}

Result<std::uint64_t> Engine::NewGroupGeneration(std::string_view group) {
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("group", group, options_.name_bytes_max));
  std::uint64_t generation = 0;
  std::promise<Status> promise;
  auto future = promise.get_future();
  auto pending = std::make_shared<Pending>();
  pending->group_bump = std::string(group);
  pending->generation_out = &generation;
  pending->done = [&promise](Result<CommitResult> result) { promise.set_value(result.status()); };
  Submit(std::move(pending));
  LOCKSTEP_RETURN_IF_ERROR(future.get());
  return generation;
}

}  // namespace lockstep::engine

// The engine against a trivial in-memory model, with crashes (issue 3's randomized model test).
//
// Thousands of random transactions — preconditions, puts, deletes, event appends, consumer-offset
// commits with current and stale generations, new and retried idempotency keys — group
// generation bumps and checkpoints (with the topic retention and log deletion that follow them)
// go to the engine in pipelined batches, and to a model that evaluates them in
// the same order (the sequencer's order is submission order from one thread). The model predicts
// every answer: the LSN and event offsets of a commit, a retry's original result, a conflict, a
// stale generation, an invalid offset. Meanwhile the fault-injecting I/O crashes the engine at a
// random operation (power loss that loses or tears unsynced writes and directory changes, or a
// process crash that keeps the page cache), sometimes injects an I/O error or a full disk, and
// sometimes crashes recovery itself. After each recovery at LSN R:
//   - every acknowledged transaction is present (R >= the highest acknowledged LSN) and nothing
//     verified earlier was lost;
//   - the engine equals the model replayed to R exactly: tables (values and versions), every
//     partition's events from its start offset on (payloads and timestamps in offset order, so
//     offsets are dense and nothing is half present), the group's generation and offsets;
//   - retention moved no start offset past an unexpired event, nor backwards;
//   - retrying remembered idempotency keys returns the original result and writes nothing.
// The seed is printed; LOCKSTEP_TEST_SEED reproduces the random choices (thread timing may
// still differ), LOCKSTEP_TEST_SCALE multiplies the budget.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <variant>

#include "base/checksum.h"
#include "engine/engine.h"
#include "storage/fault_io.h"
#include "tests/engine/engine_fixture.h"
#include "tests/testing/seed.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;

constexpr const char* kTables[] = {"a", "b"};
constexpr int kKeys = 24;
struct TopicSpec {
  const char* name;
  std::uint32_t partitions;
  std::int64_t retention_ms;
};
// Both topics expire events (the test clock moves 0-300 ms per step), so checkpoints let
// retention delete log segments.
constexpr TopicSpec kTopics[] = {{"t1", 3, 6000}, {"t2", 1, 3000}};
constexpr const char* kGroup = "g";

using TopicPartition = std::pair<std::string, std::uint32_t>;

struct Position {
  TopicPartition where;
  std::uint64_t offset = 0;
};

struct StoredEvent {
  std::string payload;
  std::int64_t timestamp_ms = 0;
  bool operator==(const StoredEvent&) const = default;
};

struct Remembered {
  std::uint64_t lsn = 0;
  std::vector<Position> events;
};

// The whole observable state of the engine.
struct State {
  std::uint64_t lsn = 0;  // the last LSN applied
  std::map<std::string, std::map<std::string, std::pair<std::string, std::uint64_t>>> tables;
  std::map<TopicPartition, std::vector<StoredEvent>> events;  // by offset
  std::uint64_t generation = 0;
  std::map<TopicPartition, std::uint64_t> offsets;  // group kGroup's committed offsets
  std::map<std::string, Remembered> remembered;     // by tagged idempotency key
};

struct GenerationBump {};
using Op = std::variant<Transaction, GenerationBump>;

// One operation the model expects to hold an LSN; durable or not is known only at recovery.
struct Entry {
  std::uint64_t lsn;
  Op op;
  std::vector<Position> events;
  std::int64_t commit_ms = 0;
};

struct Expected {
  enum Kind { kCommit, kRetry, kConflict, kStale, kInvalid } kind = kCommit;
  Remembered result;  // kCommit: the predicted result; kRetry: the original one
};

std::uint32_t PartitionOf(const EventAppend& e, std::uint32_t partitions) {
  if (e.partition) return e.partition->value();
  const std::string& key = *e.key;  // the generator always gives a key or a partition
  return static_cast<std::uint32_t>(
      base::Xxh3({reinterpret_cast<const std::byte*>(key.data()), key.size()}) % partitions);
}

std::uint32_t PartitionsOf(const std::string& topic) {
  for (const auto& t : kTopics) {
    if (topic == t.name) return t.partitions;
  }
  ADD_FAILURE() << "unknown topic " << topic;
  return 1;
}

// Evaluates `txn` against `s` exactly as the sequencer does, in the same order of checks.
Expected Evaluate(const State& s, const Transaction& txn) {
  Expected out;
  if (const auto& key = txn.idempotency_key()) {
    if (auto it = s.remembered.find(*key); it != s.remembered.end()) {
      out.kind = Expected::kRetry;
      out.result = it->second;
      return out;
    }
  }
  for (const Precondition& c : txn.preconditions()) {
    const auto& table = s.tables.at(c.table);
    auto it = table.find(c.key);
    const bool exists = it != table.end();
    bool ok = false;
    switch (c.kind) {
      case Precondition::Kind::kAbsent:
        ok = !exists;
        break;
      case Precondition::Kind::kExists:
        ok = exists;
        break;
      case Precondition::Kind::kVersion:
        ok = exists && it->second.second == c.version.value();
        break;
    }
    if (!ok) {
      out.kind = Expected::kConflict;
      return out;
    }
  }
  for (const OffsetCommit& o : txn.offsets()) {
    if (o.generation != s.generation) {
      out.kind = Expected::kStale;
      return out;
    }
    auto it = s.events.find({o.topic, o.partition.value()});
    const std::uint64_t end = it == s.events.end() ? 0 : it->second.size();
    if (o.offset.value() > end) {
      out.kind = Expected::kInvalid;
      return out;
    }
  }
  out.result.lsn = s.lsn + 1;
  std::map<TopicPartition, std::uint64_t> next;
  for (const EventAppend& e : txn.events()) {
    TopicPartition where{e.topic, PartitionOf(e, PartitionsOf(e.topic))};
    if (!next.count(where)) {
      auto it = s.events.find(where);
      next[where] = it == s.events.end() ? 0 : it->second.size();
    }
    out.result.events.push_back({where, next[where]++});
  }
  return out;
}

void Apply(State& s, const Entry& entry) {
  EXPECT_EQ(entry.lsn, s.lsn + 1) << "model LSNs are not dense";
  s.lsn = entry.lsn;
  if (std::holds_alternative<GenerationBump>(entry.op)) {
    ++s.generation;
    return;
  }
  const Transaction& txn = std::get<Transaction>(entry.op);
  for (const TableWrite& w : txn.writes()) {
    if (w.is_delete) {
      s.tables[w.table].erase(w.key);
    } else {
      s.tables[w.table][w.key] = {w.value, entry.lsn};
    }
  }
  for (std::size_t i = 0; i < txn.events().size(); ++i) {
    auto& payloads = s.events[entry.events[i].where];
    EXPECT_EQ(payloads.size(), entry.events[i].offset);
    payloads.push_back({txn.events()[i].payload, entry.commit_ms});
  }
  for (const OffsetCommit& o : txn.offsets()) {
    s.offsets[{o.topic, o.partition.value()}] = o.offset.value();
  }
  if (const auto& key = txn.idempotency_key()) s.remembered[*key] = {entry.lsn, entry.events};
}

struct Totals {
  std::uint64_t cycles = 0, crashes = 0, recovery_crashes = 0, process_crashes = 0;
  std::uint64_t injected = 0, submitted = 0, acked = 0, conflicts = 0, stale = 0, retries = 0;
  std::uint64_t retry_checks = 0, checkpoints = 0, failed_checkpoints = 0, trimmed_events = 0;
  std::uint64_t crashes_in_checkpoints = 0, crashes_in_retention = 0;
  std::uint64_t log_start = 0;
  std::uint64_t disk_full = 0;  // transactions rejected for a full disk (and undone)  // the
                                // highest LSN below which retention forgot everything
};

class Machine {
 public:
  explicit Machine(std::uint64_t seed) : rng_(seed), io_(seed ^ 0x9e3779b97f4a7c15ull) {}

  EngineOptions Options() {
    EngineOptions o = SmallEngineOptions(&io_, &now_);  // checkpoints only when the test says
    o.log.prepare_in_background = Uniform(0, 1) == 0;
    o.checkpoint.write.chunk_bytes = 4096;
    // Versions reclaimed as soon as nothing reads them, or after a few steps of the clock.
    o.version_window_ms = Uniform(0, 1) == 0 ? 0 : 500;
    return o;
  }

  std::uint64_t Uniform(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }

  // Creates the tables and topics (no crash armed) and takes the first verified state.
  void Setup() {
    auto e = Engine::Open(Options());
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    for (const char* t : kTables) ASSERT_TRUE((*e)->CreateTable(t).ok());
    for (const auto& t : kTopics) {
      ASSERT_TRUE((*e)->CreateTopic(t.name, t.partitions, t.retention_ms).ok());
    }
    base_.lsn = (*e)->visible_lsn().value();
    for (const char* t : kTables) base_.tables[t];
    newest_ = base_;
  }

  void Cycle(Totals& totals) {
    ++totals.cycles;
    std::unique_ptr<Engine> engine = OpenEngine(totals);
    if (!engine) return;
    Verify(*engine, totals);
    if (::testing::Test::HasFatalFailure()) return;
    // Arm the next crash (or an injected error), then work until it strikes or the budget ends.
    const std::uint64_t dice = Uniform(0, 9);
    fault_armed_ = false;
    if (dice < 2) {
      // Aimed at retention removing a log segment (a rare moment for a random crash), with a
      // random crash later in case no segment goes this cycle.
      io_.CrashAtNext(storage::OpKind::kRemove, "log/");
      io_.CrashAtOperation(io_.operations() + Uniform(1, 200));
    } else if (dice < 6) {
      io_.CrashAtOperation(io_.operations() + Uniform(1, 60));
    } else if (dice < 8) {
      fault_armed_ = true;
      storage::FaultRule rule;
      rule.at_operation = io_.operations() + Uniform(1, 60);
      rule.fault = Uniform(0, 1) == 0 ? storage::FaultKind::kEio : storage::FaultKind::kEnospc;
      io_.AddFault(rule);
      ++totals.injected;
    } else {
      // A full disk for a while: no new segment can be prepared until space is "freed" below.
      fault_armed_ = true;
      storage::FaultRule rule;
      rule.kind = storage::OpKind::kAllocate;
      rule.fault = storage::FaultKind::kEnospc;
      rule.sticky = true;
      io_.AddFault(rule);
      disk_full_until_ = static_cast<int>(Uniform(4, 8));
    }
    for (int batch = 0; batch < 8 && engine->status().ok() && !io_.crashed(); ++batch) {
      now_ += static_cast<std::int64_t>(Uniform(0, 300));  // never while commits are in flight
      if (disk_full_until_ > 0 && --disk_full_until_ == 0) io_.ClearFaults();  // space freed
      const std::uint64_t what = Uniform(0, 11);
      if (what == 0) {
        BumpGeneration(*engine, totals);
      } else if (what <= 2) {
        TakeCheckpoint(*engine, totals);
      } else {
        RunBatch(*engine, totals);
      }
      if (::testing::Test::HasFatalFailure()) return;
    }
    engine.reset();  // a failed engine must close without hanging or acknowledging more
    Restart(totals);
  }

 private:
  std::unique_ptr<Engine> OpenEngine(Totals& totals) {
    for (int attempt = 0; attempt < 20; ++attempt) {
      const bool crash_recovery = Uniform(0, 5) == 0;
      if (crash_recovery) io_.CrashAtOperation(io_.operations() + Uniform(1, 30));
      auto e = Engine::Open(Options());
      if (e.ok() && !io_.crashed()) {
        io_.CrashAtOperation(0);
        return std::move(e).value();
      }
      if (!io_.crashed()) {
        ADD_FAILURE() << "recovery failed without a crash: " << e.status().ToString();
        return nullptr;
      }
      ++totals.recovery_crashes;
      e = Result<std::unique_ptr<Engine>>(base::Internal("dropped"));  // close before restart
      Restart(totals);
    }
    ADD_FAILURE() << "recovery kept crashing";
    return nullptr;
  }

  void Restart(Totals& totals) {
    if (io_.crashed()) {
      ++totals.crashes;
      // Where it struck: inside a checkpoint (its file or directory), or inside retention (a
      // log segment removed once a checkpoint covers it).
      const auto where = io_.crash_point();
      if (where.path.find("checkpoints") != std::string::npos) ++totals.crashes_in_checkpoints;
      if (where.kind == storage::OpKind::kRemove && where.path.find("log/") != std::string::npos) {
        ++totals.crashes_in_retention;
      }
    }
    disk_full_until_ = 0;
    io_.ClearFaults();
    if (Uniform(0, 2) == 0) {
      io_.RestartProcess();
      ++totals.process_crashes;
    } else {
      storage::CrashModel model;
      model.lose_write = std::uniform_real_distribution<double>(0, 0.6)(rng_);
      model.tear_write = std::uniform_real_distribution<double>(0, 0.4)(rng_);
      io_.Restart(rng_, model);
    }
  }

  std::string Key() { return "k" + std::to_string(Uniform(0, kKeys - 1)); }

  Transaction RandomTransaction() {
    Transaction t;
    std::set<std::pair<std::string, std::string>> written;
    for (std::uint64_t i = Uniform(0, 2); i > 0; --i) {
      const std::string table = kTables[Uniform(0, 1)];
      const std::string key = Key();
      const auto& rows = newest_.tables[table];
      auto it = rows.find(key);
      switch (Uniform(0, 3)) {
        case 0:
          t.RequireAbsent(table, key);
          break;
        case 1:
          t.RequireExists(table, key);
          break;
        default: {
          // Usually the newest version (so it mostly passes), sometimes a stale one.
          std::uint64_t v = it == rows.end() ? Uniform(1, newest_.lsn + 1) : it->second.second;
          if (Uniform(0, 4) == 0) v = v > 1 ? v - 1 : v + 1;
          t.RequireVersion(table, key, Lsn(v));
        }
      }
    }
    for (std::uint64_t i = Uniform(0, 3); i > 0; --i) {
      const std::string table = kTables[Uniform(0, 1)];
      const std::string key = Key();
      if (!written.emplace(table, key).second) continue;
      if (Uniform(0, 3) == 0) {
        t.Delete(table, key);
      } else {
        // Bigger values while the disk is full, so segments fill and rolls need new ones.
        const std::uint64_t pad = disk_full_until_ > 0 ? Uniform(500, 3000) : Uniform(0, 200);
        t.Put(table, key, "v" + std::to_string(++counter_) + std::string(pad, 'x'));
      }
    }
    for (std::uint64_t i = Uniform(0, 3); i > 0; --i) {
      const TopicSpec& topic = kTopics[Uniform(0, 1)];
      EventAppend e;
      e.topic = topic.name;
      if (Uniform(0, 1) == 0) {
        e.partition = PartitionId(static_cast<std::uint32_t>(Uniform(0, topic.partitions - 1)));
      } else {
        e.key = "customer-" + std::to_string(Uniform(0, 9));
      }
      e.payload = "e" + std::to_string(++counter_) + std::string(Uniform(0, 150), 'p');
      t.Append(std::move(e));
    }
    if (Uniform(0, 3) == 0) {
      const TopicSpec& topic = kTopics[Uniform(0, 1)];
      const auto partition = static_cast<std::uint32_t>(Uniform(0, topic.partitions - 1));
      auto it = newest_.events.find({topic.name, partition});
      const std::uint64_t end = it == newest_.events.end() ? 0 : it->second.size();
      std::uint64_t generation = newest_.generation;
      if (generation > 0 && Uniform(0, 5) == 0) --generation;  // a member that lost its turn
      t.CommitOffset({kGroup, generation, topic.name, PartitionId(partition),
                      Offset(Uniform(0, 9) == 0 ? end + 1 : Uniform(0, end))});
    }
    const std::uint64_t dice = Uniform(0, 9);
    if (dice < 3) {
      used_keys_.push_back("key-" + std::to_string(++counter_));
      t.IdempotencyKey(used_keys_.back());
    } else if (dice < 4 && !used_keys_.empty()) {
      t.IdempotencyKey(used_keys_[Uniform(0, used_keys_.size() - 1)]);
    }
    if (t.preconditions().empty() && t.writes().empty() && t.events().empty() &&
        t.offsets().empty()) {
      t.Put("a", Key(), "filler");
    }
    return t;
  }

  // A checkpoint, then retention. It may fail only through the armed crash or fault; the model
  // then forgets the idempotency keys the engine now forgets.
  void TakeCheckpoint(Engine& engine, Totals& totals) {
    auto taken = engine.Checkpoint();
    // Even a failed checkpoint may have moved the floor (it failed after becoming durable,
    // deleting segments or old checkpoint files).
    Forget(engine.idempotency_floor().value());
    if (!taken.ok()) {
      ASSERT_TRUE(io_.crashed() || fault_armed_) << taken.status().ToString();
      ++totals.failed_checkpoints;
      return;
    }
    ++totals.checkpoints;
    ASSERT_LE(taken->value(), newest_.lsn);
    totals.log_start = std::max(totals.log_start, engine.idempotency_floor().value());
  }

  void Forget(std::uint64_t floor) {
    for (State* s : {&base_, &newest_}) {
      std::erase_if(s->remembered, [&](const auto& kv) { return kv.second.lsn < floor; });
    }
  }

  // Submits a batch (pipelined), then checks each answer in order against the model. A
  // transaction answered kResourceExhausted (a full disk) never happened: the engine undid it,
  // and the model skips it, so later answers — reusing its LSN — must match the model without it.
  void RunBatch(Engine& engine, Totals& totals) {
    const std::uint64_t n = Uniform(1, 24);
    std::vector<Transaction> txns;
    std::vector<std::future<Result<CommitResult>>> futures;
    for (std::uint64_t i = 0; i < n; ++i) {
      txns.push_back(RandomTransaction());
      futures.push_back(engine.Commit(txns.back()));
      ++totals.submitted;
    }
    for (std::size_t i = 0; i < futures.size(); ++i) {
      ASSERT_EQ(futures[i].wait_for(std::chrono::seconds(60)), std::future_status::ready)
          << "a commit never completed: " << engine.DebugState() << " (commit " << i << " of "
          << futures.size() << ")";
      const Result<CommitResult> got = futures[i].get();
      if (got.status().code() == StatusCode::kResourceExhausted) {
        ASSERT_TRUE(fault_armed_) << "a full disk nobody injected: " << got.status().ToString();
        ++totals.disk_full;
        continue;
      }
      Expected x = Evaluate(newest_, txns[i]);
      if (x.kind == Expected::kCommit) {
        Entry entry{x.result.lsn, txns[i], x.result.events, now_.load()};
        Apply(newest_, entry);
        history_.push_back(std::move(entry));
      }
      Check(engine, x, got, totals);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  void Check(Engine& engine, const Expected& x, const Result<CommitResult>& got, Totals& totals) {
    const StatusCode code = got.status().code();
    if (code == StatusCode::kIoError || code == StatusCode::kUnavailable) {
      // Only a stopped engine says so; the outcome is unknown until recovery.
      ASSERT_FALSE(engine.status().ok()) << got.status().ToString();
      return;
    }
    switch (x.kind) {
      case Expected::kCommit:
      case Expected::kRetry: {
        ASSERT_TRUE(got.ok()) << "model expected a commit: " << got.status().ToString();
        ASSERT_EQ(got->lsn.value(), x.result.lsn) << "LSN order differs from submission order";
        ASSERT_EQ(got->events.size(), x.result.events.size());
        for (std::size_t i = 0; i < got->events.size(); ++i) {
          ASSERT_EQ(got->events[i].topic, x.result.events[i].where.first);
          ASSERT_EQ(got->events[i].partition.value(), x.result.events[i].where.second);
          ASSERT_EQ(got->events[i].offset.value(), x.result.events[i].offset);
        }
        acked_ = std::max(acked_, got->lsn.value());
        ++totals.acked;
        totals.retries += x.kind == Expected::kRetry;
        return;
      }
      case Expected::kConflict:
        ++totals.conflicts;
        ASSERT_EQ(code, StatusCode::kConflict) << got.status().ToString();
        return;
      case Expected::kStale:
        ++totals.stale;
        ASSERT_EQ(code, StatusCode::kFailedPrecondition) << got.status().ToString();
        return;
      case Expected::kInvalid:
        ASSERT_EQ(code, StatusCode::kInvalidArgument) << got.status().ToString();
        return;
    }
  }

  void BumpGeneration(Engine& engine, Totals& totals) {
    auto got = engine.NewGroupGeneration(kGroup);
    if (got.status().code() == StatusCode::kResourceExhausted) {
      ASSERT_TRUE(fault_armed_) << got.status().ToString();
      ++totals.disk_full;
      return;
    }
    if (!got.ok()) {
      ASSERT_FALSE(engine.status().ok()) << got.status().ToString();
    }
    // Committed, or unknown until recovery (the engine stopped): the model holds it as pending.
    Entry entry{newest_.lsn + 1, GenerationBump{}, {}, now_.load()};
    Apply(newest_, entry);
    history_.push_back(std::move(entry));
    if (!got.ok()) return;
    ASSERT_EQ(*got, newest_.generation);
    acked_ = std::max(acked_, newest_.lsn);
  }

  // The recovered engine against the model replayed to its LSN.
  void Verify(Engine& engine, Totals& totals) {
    const std::uint64_t r = engine.visible_lsn().value();
    ASSERT_GE(r, acked_) << "an acknowledged transaction was lost";
    ASSERT_GE(r, base_.lsn) << "a transaction verified durable before was lost";
    ASSERT_LE(r, newest_.lsn) << "the engine holds an LSN nobody committed";
    for (const Entry& entry : history_) {
      if (entry.lsn > r) break;
      Apply(base_, entry);
    }
    ASSERT_EQ(base_.lsn, r);
    history_.clear();
    newest_ = base_;
    acked_ = r;  // now durable: from here on it must never go missing
    for (const auto& [name, rows] : base_.tables) {
      auto scanned = engine.Scan(name, {});
      ASSERT_TRUE(scanned.ok()) << scanned.status().ToString();
      std::map<std::string, std::pair<std::string, std::uint64_t>> seen;
      for (const Row& row : *scanned) seen[row.key] = {row.value, row.version.value()};
      ASSERT_EQ(seen, rows) << "table " << name << " differs from the model at LSN " << r;
    }
    // Retention may have moved a partition's start, never past an event still within its
    // retention, never backwards; from the start on, every event is there, in order.
    const auto topics = engine.ListTopics();
    ASSERT_EQ(topics.size(), std::size(kTopics));
    for (const auto& info : topics) {
      const std::int64_t retention_ms = info.name == "t1" ? 6000 : 3000;
      for (std::uint32_t p = 0; p < info.partitions; ++p) {
        auto it = base_.events.find({info.name, p});
        const std::vector<StoredEvent> all =
            it == base_.events.end() ? std::vector<StoredEvent>() : it->second;
        const std::uint64_t start = info.start_offsets[p].value();
        std::uint64_t unexpired = all.size();
        for (std::size_t o = 0; o < all.size(); ++o) {
          if (all[o].timestamp_ms >= now_.load() - retention_ms) {
            unexpired = o;
            break;
          }
        }
        ASSERT_LE(start, unexpired) << info.name << "/" << p << ": an unexpired event is gone";
        std::uint64_t& seen = starts_[{info.name, p}];
        ASSERT_GE(start, seen) << info.name << "/" << p << ": the start offset went back";
        totals.trimmed_events += start - seen;
        seen = start;
        ASSERT_EQ(info.end_offsets[p].value(), all.size());
        const std::vector<StoredEvent> want(all.begin() + static_cast<std::ptrdiff_t>(start),
                                            all.end());
        ASSERT_EQ(Events(engine, info.name, p, start), want)
            << "partition " << info.name << "/" << p << " differs at LSN " << r;
      }
    }
    auto group = engine.DescribeGroup(kGroup);
    if (base_.generation == 0 && base_.offsets.empty()) {
      ASSERT_EQ(group.status().code(), StatusCode::kNotFound);
    } else {
      ASSERT_TRUE(group.ok()) << group.status().ToString();
      ASSERT_EQ(group->generation, base_.generation);
      std::map<TopicPartition, std::uint64_t> offsets;
      for (const GroupOffset& o : group->offsets) {
        offsets[{o.topic, o.partition.value()}] = o.offset.value();
      }
      ASSERT_EQ(offsets, base_.offsets);
    }
    // Remembered keys answer with the original result and write nothing.
    Forget(engine.idempotency_floor().value());
    std::vector<const std::pair<const std::string, Remembered>*> keys;
    for (const auto& kv : base_.remembered) keys.push_back(&kv);
    for (int i = 0; i < 3 && !keys.empty(); ++i) {
      const auto& [tagged, original] = *keys[Uniform(0, keys.size() - 1)];
      Transaction retry;
      retry.IdempotencyKey(std::string_view(tagged).substr(1)).Put("a", "k0", "must not land");
      auto got = engine.Commit(std::move(retry)).get();
      if (!got.ok() && !engine.status().ok()) return;  // a crash armed for recovery struck late
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(got->lsn.value(), original.lsn) << "a retry did not get the original result";
      ASSERT_EQ(got->events.size(), original.events.size());
      ++totals.retry_checks;
    }
    ASSERT_EQ(engine.visible_lsn().value(), r) << "a retry committed again";
  }

  static std::vector<StoredEvent> Events(Engine& engine, const std::string& topic,
                                         std::uint32_t partition, std::uint64_t start) {
    std::vector<StoredEvent> out;
    Offset next(start);
    for (int page = 0; page < 100000; ++page) {
      auto fetched = engine.Fetch(topic, PartitionId(partition), next);
      EXPECT_TRUE(fetched.ok()) << fetched.status().ToString();
      if (!fetched.ok() || fetched->events == 0) break;
      base::Bytes rest = fetched->records;
      while (!rest.empty()) {
        auto event = base::DecodeEvent(rest);
        EXPECT_TRUE(event.ok()) << event.status().ToString();
        if (!event.ok()) return out;
        EXPECT_EQ(event->offset().value(), start + out.size()) << "offsets are not dense";
        const base::Bytes payload = event->payload();
        out.push_back({std::string(reinterpret_cast<const char*>(payload.data()), payload.size()),
                       event->timestamp_ms()});
        rest = rest.subspan(event->record().size());
      }
      next = fetched->next_offset;
    }
    return out;
  }

  std::mt19937_64 rng_;
  storage::FaultInjectingIo io_;
  State base_;    // verified durable at the last recovery
  State newest_;  // base_ plus every operation since, durable or not
  std::vector<Entry> history_;
  std::uint64_t acked_ = 0;
  std::uint64_t counter_ = 0;
  std::vector<std::string> used_keys_;
  std::atomic<std::int64_t> now_{1'000'000};
  bool fault_armed_ = false;
  int disk_full_until_ = 0;  // batches left before the full disk gets space again
  std::map<TopicPartition, std::uint64_t> starts_;  // start offsets seen so far
};

TEST(EngineModel, RandomTransactionsWithCrashesMatchTheModel) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  const auto cycles = static_cast<std::uint64_t>(150 * testing::TestScale());
  std::mt19937_64 seeds(seed);
  Totals totals;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(4);
  for (int m = 0; m < 3 && !HasFatalFailure(); ++m) {
    Machine machine(seeds());
    machine.Setup();
    for (std::uint64_t c = 0; c < cycles / 3 && !HasFatalFailure(); ++c) {
      if (std::chrono::steady_clock::now() > deadline) break;
      machine.Cycle(totals);
    }
  }
  std::printf(
      "engine model: cycles %llu, crashes %llu (process %llu, during recovery %llu, in a "
      "checkpoint %llu, in retention %llu), injected "
      "errors %llu, transactions %llu (acknowledged %llu, conflicts %llu, stale generations "
      "%llu, retries answered %llu), retry checks after recovery %llu, checkpoints %llu "
      "(failed %llu), events trimmed by retention %llu, rejected for a full disk %llu\n",
      static_cast<unsigned long long>(totals.cycles),
      static_cast<unsigned long long>(totals.crashes),
      static_cast<unsigned long long>(totals.process_crashes),
      static_cast<unsigned long long>(totals.recovery_crashes),
      static_cast<unsigned long long>(totals.crashes_in_checkpoints),
      static_cast<unsigned long long>(totals.crashes_in_retention),
      static_cast<unsigned long long>(totals.injected),
      static_cast<unsigned long long>(totals.submitted),
      static_cast<unsigned long long>(totals.acked),
      static_cast<unsigned long long>(totals.conflicts),
      static_cast<unsigned long long>(totals.stale),
      static_cast<unsigned long long>(totals.retries),
      static_cast<unsigned long long>(totals.retry_checks),
      static_cast<unsigned long long>(totals.checkpoints),
      static_cast<unsigned long long>(totals.failed_checkpoints),
      static_cast<unsigned long long>(totals.trimmed_events),
      static_cast<unsigned long long>(totals.disk_full));
  if (HasFatalFailure()) return;
  EXPECT_GT(totals.crashes, cycles / 4);
  EXPECT_GT(totals.recovery_crashes, 0u);
  EXPECT_GT(totals.acked, 1000u * testing::TestScale());
  EXPECT_GT(totals.conflicts, 0u);
  EXPECT_GT(totals.stale, 0u);
  EXPECT_GT(totals.retries, 0u);
  EXPECT_GT(totals.retry_checks, 0u);
  EXPECT_GT(totals.checkpoints, 0u);
  EXPECT_GT(totals.failed_checkpoints, 0u);
  EXPECT_GT(totals.crashes_in_checkpoints, 0u) << "no crash struck inside a checkpoint";
  EXPECT_GT(totals.crashes_in_retention, 0u) << "no crash struck while retention removed segments";
  EXPECT_GT(totals.trimmed_events, 0u);
  EXPECT_GT(totals.log_start, 1u) << "retention never deleted a segment";
  EXPECT_GT(totals.disk_full, 0u) << "no full disk was simulated";
}

}  // namespace
}  // namespace lockstep::engine

// lockstep-torture --mode simulation: see simulation.h and docs/testing.md.
//
// One "machine" is a data directory on a FaultInjectingIo. Each iteration recovers the engine
// (sometimes crashing recovery itself), checks every invariant, retries what a client would
// retry, arms one fault, and runs the workload of bank.h until the fault strikes or the
// iteration's batches are done; then the machine loses power or its process is killed. After a
// number of iterations a fresh machine starts, so the checks (which read everything) stay cheap.
#include "tools/torture/simulation.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "base/event_record.h"
#include "engine/engine.h"
#include "engine/verify.h"
#include "storage/batch.h"
#include "storage/fault_io.h"
#include "storage/segment.h"
#include "tools/torture/bank.h"
#include "tools/torture/observe.h"

namespace lockstep::torture {
namespace {

using base::StatusCode;
using engine::Engine;
using engine::Lsn;
using engine::Offset;
using engine::PartitionId;
using engine::Transaction;

constexpr int kSimulatedIterationsPerMachine = 120;
constexpr int kBatchesPerIteration = 8;
constexpr const char* kDir = "db";

// One transaction the driver submitted, with what it expects of the answer.
struct Submitted {
  enum Kind { kTransfer, kStaleTransfer, kOrder, kAudit, kTransform, kStaleTransform } kind;
  Transaction txn;
  std::future<base::Result<engine::CommitResult>> answer;
  // kTransfer: the accounts' new state, applied to the driver's view when acknowledged.
  Transfer transfer;
};

class Machine {
 public:
  Machine(std::uint64_t seed, Summary& summary, const RunOptions& options)
      : rng_(seed),
        io_(seed ^ 0x6a09e667f3bcc909ull),
        summary_(summary),
        verbose_(options.verbose),
        failure_dir_(options.failure_dir) {}

  // Creates the tables and topics and deposits the opening balances (no fault armed).
  bool Setup() {
    auto e = Engine::Open(Options());
    if (!e.ok()) return Fail("setup: " + e.status().ToString());
    Engine& engine = **e;
    Status s = engine.CreateTable(kAccountsTable);
    if (s.ok()) s = engine.CreateTopic(kTransfersTopic, 1, kRetentionMs);
    if (s.ok()) s = engine.CreateTopic(kOrdersTopic, kOrdersPartitions, kRetentionMs);
    if (s.ok()) s = engine.CreateTopic(kDoubledTopic, kOrdersPartitions, kRetentionMs);
    if (s.ok()) s = engine.CreateTopic(kAuditTopic, 1, kAuditRetentionMs);
    if (!s.ok()) return Fail("setup: " + s.ToString());
    Transaction deposit;
    for (int a = 0; a < kAccounts; ++a) {
      deposit.Put(kAccountsTable, AccountKey(a), EncodeAccount({kOpeningBalance, 0}));
    }
    auto got = engine.Commit(std::move(deposit)).get();
    if (!got.ok()) return Fail("setup: " + got.status().ToString());
    for (int a = 0; a < kAccounts; ++a) ledger_.account_versions[a] = got->lsn.value();
    ledger_.max_lsn = got->lsn.value();
    ++ledger_.transactions;
    return true;
  }

  // One crash-recovery cycle. False once an invariant broke (summary_.failure says which).
  bool Iterate() {
    ++summary_.iterations;
    if (Uniform(0, 7) == 0 && !ProbeMediaCorruption()) return false;
    // Invariant 6 on the files exactly as the crash left them (LSNs dense, checksums), before
    // recovery touches them; a torn newest batch is what recovery cuts, and allowed.
    if (!Verify("as the crash left them")) return false;
    std::unique_ptr<Engine> engine = Recover();
    if (!engine) return false;
    Observed observed;
    if (!CheckRecovered(*engine, observed)) return false;
    if (Uniform(0, 1) == 0) {
      // Invariant 5: recovering the same files again (after a crash right away, or one during
      // recovery) gives the same state.
      io_.CrashAtOperation(io_.operations() + 1);
      engine.reset();
      Restart("right after recovery");
      engine = Recover();
      if (!engine) return false;
      Observed again;
      if (Status s = Read(*engine, again); !s.ok()) return Fail("reading: " + s.ToString());
      if (!(again == observed)) {
        return Fail(
            "invariant 5 (recovery is idempotent): recovering the same files again "
            "changed " +
            FirstDifference(observed, again));
      }
    }
    ++summary_.passed;
    Load(observed);
    if (!RetryAcknowledged(*engine) || !ResendPending(*engine)) return false;

    const std::string fault = ArmFault();
    ++summary_.hits["fault armed: " + fault];
    for (int b = 0; b < kBatchesPerIteration && engine->status().ok() && !io_.crashed(); ++b) {
      now_ += static_cast<std::int64_t>(Uniform(0, 300));
      if (disk_full_batches_ > 0 && --disk_full_batches_ == 0) io_.ClearFaults();
      const std::uint64_t what = Uniform(0, 15);
      bool ok = true;
      if (what == 0) {
        ok = BumpGeneration(*engine);
      } else if (what == 1) {
        ok = IdleThenCheckpoint(*engine);
      } else if (what == 2) {
        ok = TakeCheckpoint(*engine);
      } else {
        ok = RunBatch(*engine);
      }
      if (!ok) return false;
    }
    if (!CheckFailStop(*engine)) return false;
    if (verbose_) {
      // With the I/O operations since the last restart, so that when two runs of one seed
      // differ, the first line that differs says whether the operations already had. Not
      // after a crash or a fail-stop: the count includes attempts, and threads racing to a
      // stop may make more or fewer of them.
      const bool settled = !io_.crashed() && engine->status().ok();
      std::fprintf(stderr, "iteration %llu: %s, LSN %llu, %llu acknowledged%s\n",
                   static_cast<unsigned long long>(summary_.iterations), fault.c_str(),
                   static_cast<unsigned long long>(engine->visible_lsn().value()),
                   static_cast<unsigned long long>(ledger_.transactions),
                   settled ? fmt::format(", {} I/O operations", io_.operations()).c_str() : "");
    }
    const bool struck = io_.crashed();
    if (!struck) io_.CrashAtOperation(io_.operations() + 1);  // die here, whatever ran
    engine.reset();
    Restart(struck ? "at the armed I/O operation" : "at the end of an iteration's work");
    return true;
  }

 private:
  std::uint64_t Uniform(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }

  bool Fail(const std::string& what) {
    ++summary_.failed;
    if (summary_.failure.empty()) {
      summary_.failure = what;
      DumpFiles();
    }
    return false;
  }

  // Writes the machine's files, as reads see them now, under failure_dir_ (db/...).
  void DumpFiles() {
    if (failure_dir_.empty()) return;
    for (const std::string& dir : {std::string(kDir), storage::JoinPath(kDir, "log"),
                                   storage::JoinPath(kDir, "checkpoints")}) {
      auto names = io_.ListDir(dir);
      if (!names.ok()) continue;
      for (const std::string& name : *names) {
        const std::string path = storage::JoinPath(dir, name);
        auto bytes = io_.ReadAll(path);
        if (!bytes.ok()) continue;  // a directory
        const auto out = std::filesystem::path(failure_dir_) / path;
        std::error_code ec;
        std::filesystem::create_directories(out.parent_path(), ec);
        std::FILE* f = std::fopen(out.c_str(), "wb");
        if (f == nullptr) continue;
        if (!bytes->empty()) std::fwrite(bytes->data(), 1, bytes->size(), f);
        std::fclose(f);
      }
    }
    summary_.failure += " (the files are in " + failure_dir_ + ")";
  }

  engine::EngineOptions Options() {
    engine::EngineOptions o;
    o.dir = kDir;
    o.io = &io_;
    o.log.segment_bytes = 64 << 10;
    o.log.batch_bytes_max = 16 << 10;
    // No spare preparer thread: its I/O would interleave with the writer's by timing, and the
    // run would not be replayable (the engine model test covers background preparation).
    o.log.prepare_in_background = false;
    // Not adaptive: the adaptive choice follows how fast (in wall time) segments fill, which
    // would change the I/O operations — and so where faults land — with the machine's load.
    o.log.preallocation =
        Uniform(0, 1) == 0 ? storage::Preallocation::kZeroFill : storage::Preallocation::kFallocate;
    o.now_ms = [this] { return now_.load(); };
    o.checkpoint.every_log_bytes = 0;  // checkpoints when the driver says
    o.checkpoint.every_ms = 0;
    o.checkpoint.write.bytes_per_second = 0;
    o.checkpoint.write.chunk_bytes = 4096;
    o.version_window_ms = Uniform(0, 1) == 0 ? 0 : 500;
    return o;
  }

  // ---- Crashes and recovery -----------------------------------------------------------------

  // Power loss (unsynced writes lost or torn, unsynced directory changes lost) or a killed
  // process (the page cache survives), at random.
  void Restart(const std::string& where) {
    ++summary_.crash_points;
    ++summary_.hits["crash " + where];
    disk_full_batches_ = 0;
    io_.ClearFaults();
    io_.SetObserver(nullptr);
    if (Uniform(0, 2) == 0) {
      ++summary_.hits["  as a killed process"];
      io_.RestartProcess();
    } else {
      ++summary_.hits["  as a power loss"];
      storage::CrashModel model;
      model.lose_write = std::uniform_real_distribution<double>(0, 0.6)(rng_);
      model.tear_write = std::uniform_real_distribution<double>(0, 0.4)(rng_);
      io_.Restart(rng_, model);
    }
  }

  // Damage in the middle of the log (one flipped byte in a batch that a valid batch follows) is
  // damage to durable data: recovery must refuse to open, not cut the log there and carry on
  // without what followed. The byte is put back afterwards.
  bool ProbeMediaCorruption() {
    const std::string log_dir = storage::JoinPath(kDir, "log");
    auto names = io_.ListDir(log_dir);
    if (!names.ok()) return true;
    std::string newest;
    for (const std::string& n : *names) {
      if (storage::ParseSegmentFileName(n) && n > newest) newest = n;
    }
    if (newest.empty()) return true;
    const std::string path = storage::JoinPath(log_dir, newest);
    auto bytes = io_.ReadAll(path);
    if (!bytes.ok() || bytes->size() < storage::kSegmentHeaderBytes) return true;
    const storage::ConstBytes segment(*bytes);
    auto header = storage::DecodeSegmentHeader(segment.first(storage::kSegmentHeaderBytes));
    if (!header.ok()) return true;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> batches;  // position, size
    for (std::uint64_t pos = storage::kSegmentHeaderBytes;;) {
      const storage::BatchView batch =
          storage::ParseBatch(segment, pos, {header->salt, true, true});
      if (batch.state != storage::BatchState::kValid) break;
      batches.emplace_back(pos, batch.header.total_bytes);
      pos += batch.header.total_bytes;
    }
    if (batches.size() < 2) return true;
    const auto [at, size] = batches[Uniform(0, batches.size() - 2)];
    const std::uint64_t offset = at + Uniform(0, size - 1);
    const std::byte original = (*bytes)[offset];
    const std::byte damaged = original ^ std::byte{0x5a};
    if (!io_.Corrupt(path, offset, storage::ConstBytes(&damaged, 1)).ok()) return true;
    ++summary_.hits["media corruption probes"];
    auto e = Engine::Open(Options());
    if (e.ok()) {
      return Fail(
          fmt::format("recovery opened a log with a damaged byte at {} position {} "
                      "(a valid batch follows it): it must refuse",
                      newest, offset));
    }
    e = base::Result<std::unique_ptr<Engine>>(base::Internal("dropped"));
    if (!io_.Corrupt(path, offset, storage::ConstBytes(&original, 1)).ok()) {
      return Fail("the media corruption probe could not put its byte back");
    }
    io_.RestartProcess();  // the failed open's lock and handles go
    return true;
  }

  std::unique_ptr<Engine> Recover() {
    for (int attempt = 0; attempt < 20; ++attempt) {
      if (Uniform(0, 5) == 0) io_.CrashAtOperation(io_.operations() + Uniform(1, 40));
      auto e = Engine::Open(Options());
      if (e.ok() && !io_.crashed()) {
        io_.CrashAtOperation(0);
        return std::move(e).value();
      }
      if (!io_.crashed()) {
        Fail(
            "invariant 1 (every acknowledged transaction is present, whole): recovery refused "
            "the files a crash left: " +
            e.status().ToString());
        return nullptr;
      }
      e = base::Result<std::unique_ptr<Engine>>(base::Internal("dropped"));  // close first
      Restart("during recovery");
    }
    Fail("recovery crashed 20 times in a row");
    return nullptr;
  }

  // Invariants 1-4 and 6 on a freshly recovered engine.
  bool CheckRecovered(Engine& engine, Observed& observed) {
    if (Status s = Read(engine, observed); !s.ok()) return Fail("reading: " + s.ToString());
    if (Status s = checker_.Check(observed, ledger_, now_.load()); !s.ok()) {
      return Fail(s.ToString());
    }
    if (!Verify("after recovery")) return false;
    summary_.acknowledged_checked += ledger_.transactions;
    return true;
  }

  bool Verify(const std::string& when) {
    engine::VerifyReport report;
    if (Status s = engine::VerifyDataDir(io_, kDir, report); !s.ok()) {
      return Fail(
          "invariant 6 (every segment and checkpoint passes the offline verifier), on "
          "the files " +
          when + ": " + s.ToString());
    }
    return true;
  }

  static Status Read(Engine& engine, Observed& o) {
    LOCKSTEP_RETURN_IF_ERROR(
        (ReadObserved<Engine, engine::ScanOptions, engine::FetchOptions>(engine, o)));
    o.lsn = engine.visible_lsn().value();
    return Status::Ok();
  }

  // The driver's view of the state it builds its next transactions on.
  void Load(const Observed& o) {
    for (int a = 0; a < kAccounts; ++a) {
      const ObservedRow& row = o.accounts.at(AccountKey(a));
      accounts_[static_cast<std::size_t>(a)] = {*DecodeAccount(row.value), row.version};
    }
    generation_ = o.generation;
    for (std::uint32_t p = 0; p < kOrdersPartitions; ++p) {
      auto it = o.group_offsets.find({kOrdersTopic, p});
      transform_offsets_[p] = it == o.group_offsets.end() ? 0 : it->second;
    }
  }

  // ---- Retries --------------------------------------------------------------------------------

  // Invariant 4: a retried idempotency key the engine still remembers gets the original result
  // and writes nothing.
  bool RetryAcknowledged(Engine& engine) {
    const std::uint64_t floor = engine.idempotency_floor().value();
    std::erase_if(remembered_, [&](const auto& r) { return r.second < floor; });
    const Lsn before = engine.visible_lsn();
    for (int i = 0; i < 3 && !remembered_.empty(); ++i) {
      const auto& [txn, lsn] = remembered_[Uniform(0, remembered_.size() - 1)];
      auto got = engine.Commit(txn).get();
      if (!got.ok() || got->lsn.value() != lsn) {
        return Fail(fmt::format(
            "invariant 4 (an idempotent retry never commits twice): a retry "
            "of the transaction acknowledged at LSN {} answered {}",
            lsn, got.ok() ? fmt::format("LSN {}", got->lsn.value()) : got.status().ToString()));
      }
    }
    if (engine.visible_lsn() != before) {
      return Fail(
          "invariant 4 (an idempotent retry never commits twice): retries of "
          "acknowledged transactions committed something");
    }
    return true;
  }

  // What a client does after a lost answer: sends the same transaction again, same key.
  bool ResendPending(Engine& engine) {
    std::vector<Submitted> batch = std::move(pending_);
    pending_.clear();
    return Submit(engine, batch, /*resent=*/true);
  }

  // ---- Faults ---------------------------------------------------------------------------------

  std::string ArmFault() {
    fault_armed_ = true;
    struck_.reset();
    const std::uint64_t at = io_.operations() + Uniform(1, 80);
    const std::uint64_t dice = Uniform(0, 19);
    if (dice < 7) {
      io_.CrashAtOperation(at);
      return "a crash at an I/O operation";
    }
    storage::FaultRule rule;
    std::string what;
    if (dice < 9) {
      rule.at_operation = at;
      rule.fault = storage::FaultKind::kEio;
      what = "EIO at an I/O operation";
    } else if (dice < 11) {
      rule.at_operation = at;
      rule.fault = storage::FaultKind::kEnospc;
      what = "ENOSPC at an I/O operation";
    } else if (dice < 13) {
      rule.after_operation = at - 1;
      rule.kind = storage::OpKind::kWrite;
      rule.fault = storage::FaultKind::kShortWrite;
      what = "a short write";
    } else if (dice < 15) {
      // fdatasync fails on a log segment: the engine must stop (guarantee 7), and the power
      // loss that follows loses what that sync was for.
      rule.after_operation = at - 1;
      rule.kind = storage::OpKind::kSync;
      rule.path_contains = ".seg";
      rule.fault = storage::FaultKind::kEio;
      what = "fdatasync EIO on a log segment";
    } else if (dice < 17) {
      rule.kind = storage::OpKind::kAllocate;
      rule.fault = storage::FaultKind::kEnospc;
      rule.sticky = true;
      disk_full_batches_ = static_cast<int>(Uniform(3, 6));
      what = "disk full for a while";
    } else {
      fault_armed_ = false;
      return "no fault";
    }
    // Which operation the fault struck decides what the engine must do next (CheckFailStop).
    io_.SetObserver([this, rule](std::uint64_t n, storage::OpKind kind, const std::string& path) {
      std::lock_guard lock(struck_mu_);
      const bool matches = (rule.at_operation == 0 || rule.at_operation == n) &&
                           n > rule.after_operation &&
                           (rule.kind == storage::OpKind::kAny || rule.kind == kind) &&
                           path.find(rule.path_contains) != std::string::npos;
      if (matches && !struck_) struck_ = Struck{kind, path, rule.fault};
    });
    io_.AddFault(rule);
    return what;
  }

  // Guarantee 7: after an I/O error (EIO) on a write or fdatasync of a log segment, the engine
  // has stopped and refuses commits: the disk can no longer be trusted with what it acknowledges.
  bool CheckFailStop(Engine& engine) {
    std::optional<Struck> struck;
    {
      std::lock_guard lock(struck_mu_);
      struck = struck_;
    }
    if (!struck || io_.crashed() || struck->fault != storage::FaultKind::kEio ||
        !struck->path.ends_with(".seg") ||
        (struck->kind != storage::OpKind::kWrite && struck->kind != storage::OpKind::kSync)) {
      return true;
    }
    ++summary_.hits[fmt::format("fail-stop checked after EIO on a log {}",
                                storage::OpKindName(struck->kind))];
    if (engine.status().ok()) {
      return Fail(
          fmt::format("fail-stop (guarantee 7): the engine went on after a {} of its log "
                      "failed with EIO",
                      storage::OpKindName(struck->kind)));
    }
    Transaction probe;
    probe.Put(kAccountsTable, AccountKey(0), "must not land");
    auto got = engine.Commit(std::move(probe)).get();
    if (got.ok()) {
      return Fail("fail-stop (guarantee 7): a commit succeeded after a failed log " +
                  std::string(storage::OpKindName(struck->kind)));
    }
    return true;
  }

  // ---- The workload ---------------------------------------------------------------------------

  bool RunBatch(Engine& engine) {
    std::vector<Submitted> batch;
    // Transfers between disjoint pairs of accounts, so every precondition is known to hold.
    std::vector<int> order(kAccounts);
    for (int a = 0; a < kAccounts; ++a) order[static_cast<std::size_t>(a)] = a;
    std::shuffle(order.begin(), order.end(), rng_);
    const std::uint64_t transfers = Uniform(0, kAccounts / 2);
    for (std::uint64_t i = 0; i < transfers; ++i) {
      batch.push_back(MakeTransfer(order[2 * i], order[2 * i + 1]));
    }
    for (std::uint64_t i = Uniform(0, 3); i > 0; --i) batch.push_back(MakeOrder());
    if (Uniform(0, 1) == 0) batch.push_back(MakeAudit());
    std::shuffle(batch.begin(), batch.end(), rng_);
    if (Uniform(0, 1) == 0) {
      if (auto t = MakeTransform(engine)) batch.push_back(std::move(*t));
    }
    return Submit(engine, batch, /*resent=*/false, /*read_in_flight=*/true);
  }

  // Submits a batch as one group: the log's writer is held until the sequencer has taken every
  // transaction, so what is written together depends on sizes alone, not on thread timing, and
  // a seed replays the same run. Then waits for every answer.
  bool Submit(Engine& engine, std::vector<Submitted>& batch, bool resent,
              bool read_in_flight = false) {
    engine.HoldLogWrites(true);
    for (Submitted& s : batch) s.answer = engine.Commit(s.txn);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    // A stopped engine answers without sequencing.
    while (!engine.SequencerDrained() && engine.status().ok()) {
      if (std::chrono::steady_clock::now() > deadline) {
        engine.HoldLogWrites(false);
        return Fail("the sequencer never took a whole batch: " + engine.DebugState());
      }
      std::this_thread::yield();
    }
    if (read_in_flight) {
      // A read while commits are in flight: whatever it returns must survive any crash.
      if (auto rows = engine.Scan(kAccountsTable, {}); rows.ok()) {
        for (const engine::Row& row : *rows) {
          ledger_.read_lsn = std::max(ledger_.read_lsn, row.version.value());
        }
      }
    }
    engine.HoldLogWrites(false);
    return Collect(engine, batch, resent);
  }

  Submitted MakeTransfer(int from, int to) {
    if (accounts_[static_cast<std::size_t>(from)].first.balance == 0) std::swap(from, to);
    const auto& [a, a_version] = accounts_[static_cast<std::size_t>(from)];
    const auto& [b, b_version] = accounts_[static_cast<std::size_t>(to)];
    Submitted s{Submitted::kTransfer, {}, {}, {}};
    Transfer& t = s.transfer;
    t.id = ++next_id_;
    t.from = from;
    t.to = to;
    // Nothing to move when both are empty: a transfer of 0 still writes both rows.
    t.amount = static_cast<std::int64_t>(Uniform(
        a.balance > 0 ? 1 : 0, static_cast<std::uint64_t>(std::min<std::int64_t>(a.balance, 100))));
    t.from_balance = a.balance - t.amount;
    t.to_balance = b.balance + t.amount;
    std::uint64_t from_version = a_version;
    if (Uniform(0, 11) == 0) {
      s.kind = Submitted::kStaleTransfer;  // a client that read an old version
      from_version = a_version - 1;
    }
    s.txn.RequireVersion(kAccountsTable, AccountKey(from), Lsn(from_version))
        .RequireVersion(kAccountsTable, AccountKey(to), Lsn(b_version))
        .Put(kAccountsTable, AccountKey(from), EncodeAccount({t.from_balance, t.id}))
        .Put(kAccountsTable, AccountKey(to), EncodeAccount({t.to_balance, t.id}));
    engine::EventAppend e;
    e.topic = kTransfersTopic;
    e.key = AccountKey(from);
    e.type = "TransferCompleted";
    e.payload = EncodeTransfer(t);
    s.txn.Append(std::move(e));
    s.txn.IdempotencyKey(fmt::format("transfer-{}", t.id));
    return s;
  }

  Submitted MakeOrder() {
    Submitted s{Submitted::kOrder, {}, {}, {}};
    const std::uint64_t first = next_id_ + 1;
    for (std::uint64_t i = Uniform(1, 3); i > 0; --i) {
      engine::EventAppend e;
      e.topic = kOrdersTopic;
      e.key = fmt::format("customer-{}", Uniform(0, 9));
      e.type = "OrderPlaced";
      e.payload = fmt::format("order-{} {}", ++next_id_, std::string(Uniform(0, 120), 'o'));
      s.txn.Append(std::move(e));
    }
    s.txn.IdempotencyKey(fmt::format("order-{}", first));
    return s;
  }

  Submitted MakeAudit() {
    Submitted s{Submitted::kAudit, {}, {}, {}};
    engine::EventAppend e;
    e.topic = kAuditTopic;
    e.partition = PartitionId(0);
    e.type = "Audit";
    // Bigger while the disk is full, so segments fill and need new ones.
    e.payload = std::string(disk_full_batches_ > 0 ? Uniform(1000, 3000) : Uniform(200, 1500), 'a');
    s.txn.Append(std::move(e));
    return s;
  }

  // The consume-transform-produce consumer: every durable input past its committed offset, one
  // output each, with the new offset, in one transaction.
  std::optional<Submitted> MakeTransform(Engine& engine) {
    Submitted s{Submitted::kTransform, {}, {}, {}};
    std::uint64_t generation = generation_;
    if (generation > 0 && Uniform(0, 9) == 0) {
      s.kind = Submitted::kStaleTransform;  // a member that lost its turn
      --generation;
    }
    for (std::uint32_t p = 0; p < kOrdersPartitions; ++p) {
      engine::FetchOptions options;
      options.max_events = 16;
      auto fetched =
          engine.Fetch(kOrdersTopic, PartitionId(p), Offset(transform_offsets_[p]), options);
      if (!fetched.ok() || fetched->events == 0) continue;
      base::Bytes rest = fetched->records;
      while (!rest.empty()) {
        auto e = base::DecodeEvent(rest);
        if (!e.ok()) break;
        const base::Bytes payload = e->payload();
        engine::EventAppend out;
        out.topic = kDoubledTopic;
        out.partition = PartitionId(p);
        out.type = "OrderDoubled";
        out.payload = DoubledPayload(
            p, e->offset().value(),
            std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
        s.txn.Append(std::move(out));
        rest = rest.subspan(e->record().size());
      }
      s.txn.CommitOffset(
          {kTransformGroup, generation, kOrdersTopic, PartitionId(p), fetched->next_offset});
    }
    if (s.txn.offsets().empty()) return std::nullopt;
    return s;
  }

  bool BumpGeneration(Engine& engine) {
    auto got = engine.NewGroupGeneration(kTransformGroup);
    if (got.ok()) {
      generation_ = *got;
      return true;
    }
    return Unanswered(engine, got.status(), "a group generation bump");
  }

  // The service sits idle longer than every retention, then checkpoints: every event has
  // expired, so the checkpoint lets retention delete every segment below it (the case where
  // deleting before the checkpoint is durable loses the log recovery needs). Only once the
  // transform has consumed every order, so that it never finds its position expired.
  bool IdleThenCheckpoint(Engine& engine) {
    for (int attempt = 0;; ++attempt) {
      bool caught_up = true;
      for (const engine::TopicInfo& topic : engine.ListTopics()) {
        if (topic.name != kOrdersTopic) continue;
        for (std::uint32_t p = 0; p < topic.partitions; ++p) {
          caught_up = caught_up && transform_offsets_[p] == topic.end_offsets[p].value();
        }
      }
      if (caught_up) break;
      if (attempt == 2 || !engine.status().ok() || io_.crashed()) {
        ++summary_.hits["workload: idle skipped (the transform is behind)"];
        return true;
      }
      std::vector<Submitted> batch;
      if (auto t = MakeTransform(engine)) batch.push_back(std::move(*t));
      if (!Submit(engine, batch, /*resent=*/false)) return false;
    }
    // A checkpoint, then enough audit events to roll to a new segment, so that the next
    // checkpoint has a whole segment behind it to delete.
    if (!TakeCheckpoint(engine, /*crash_one_in=*/0)) return false;
    std::vector<Submitted> burst;
    for (int i = 0; i < 10; ++i) {
      Submitted s{Submitted::kAudit, {}, {}, {}};
      for (int j = 0; j < 5; ++j) {
        engine::EventAppend e;
        e.topic = kAuditTopic;
        e.partition = PartitionId(0);
        e.type = "Audit";
        e.payload = std::string(1500, 'b');
        s.txn.Append(std::move(e));
      }
      burst.push_back(std::move(s));
    }
    if (!Submit(engine, burst, /*resent=*/false)) return false;
    now_ += kRetentionMs + 1000;
    ++summary_.hits["workload: idle past every retention"];
    // The crash lands early: the checkpoint of so little state takes a dozen operations.
    return TakeCheckpoint(engine, /*crash_one_in=*/2, /*within=*/12);
  }

  // Takes a checkpoint; one in `crash_one_in` (0: never) with a crash armed inside it, within
  // its first `within` I/O operations.
  bool TakeCheckpoint(Engine& engine, std::uint64_t crash_one_in = 4, std::uint64_t within = 40) {
    if (crash_one_in > 0 && Uniform(1, crash_one_in) == 1 && !io_.crashed()) {
      // A crash site of its own: somewhere inside the checkpoint (and the retention after it).
      io_.CrashAtOperation(io_.operations() + Uniform(1, within));
      ++summary_.hits["crash armed inside a checkpoint"];
    }
    auto taken = engine.Checkpoint();
    if (taken.ok()) {
      ++summary_.hits["workload: checkpoints taken"];
      return true;
    }
    if (io_.crashed() || fault_armed_) return true;
    return Fail("a checkpoint failed with no fault injected: " + taken.status().ToString());
  }

  // A failed call is fine only as the effect of the armed fault.
  bool Unanswered(Engine& engine, const Status& status, const std::string& what) {
    if (status.code() == StatusCode::kResourceExhausted && fault_armed_) return true;
    if (!engine.status().ok() || io_.crashed()) return true;
    return Fail(fmt::format("{} failed with no fault to explain it: {}", what, status.ToString()));
  }

  // Waits for every answer, in submission order, and records what was acknowledged.
  bool Collect(Engine& engine, std::vector<Submitted>& batch, bool resent) {
    for (Submitted& s : batch) {
      if (s.answer.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
        return Fail("a commit never completed: " + engine.DebugState());
      }
      auto got = s.answer.get();
      if (got.ok()) {
        if (s.kind == Submitted::kStaleTransfer || s.kind == Submitted::kStaleTransform) {
          return Fail(fmt::format(
              "a transaction with a stale {} committed at LSN {}",
              s.kind == Submitted::kStaleTransfer ? "version precondition" : "group generation",
              got->lsn.value()));
        }
        Acknowledge(s, *got);
        continue;
      }
      const StatusCode code = got.status().code();
      if (code == StatusCode::kConflict &&
          (s.kind == Submitted::kStaleTransfer || (resent && s.kind == Submitted::kTransfer))) {
        continue;  // refused as it should be (a resent transfer may meet a newer version)
      }
      if (code == StatusCode::kFailedPrecondition && s.kind == Submitted::kStaleTransform) continue;
      if (code == StatusCode::kResourceExhausted && fault_armed_) continue;  // undone: never was
      if (!engine.status().ok() || io_.crashed()) {
        // Unknown outcome: a client sends it again after reconnecting (the transform does not:
        // it reads its committed offsets again instead).
        if (s.kind == Submitted::kTransfer || s.kind == Submitted::kOrder) {
          pending_.push_back(std::move(s));
        }
        continue;
      }
      return Fail(fmt::format("an unexpected answer to a {}: {}", KindName(s.kind),
                              got.status().ToString()));
    }
    return true;
  }

  static const char* KindName(Submitted::Kind kind) {
    switch (kind) {
      case Submitted::kTransfer:
        return "transfer";
      case Submitted::kStaleTransfer:
        return "transfer with a stale version";
      case Submitted::kOrder:
        return "order";
      case Submitted::kAudit:
        return "audit event";
      case Submitted::kTransform:
        return "transform";
      case Submitted::kStaleTransform:
        return "transform with a stale generation";
    }
    return "?";
  }

  void Acknowledge(const Submitted& s, const engine::CommitResult& got) {
    const std::uint64_t lsn = got.lsn.value();
    RecordAcknowledged(ledger_, s.txn, got, now_.load());
    for (const auto& o : s.txn.offsets())
      transform_offsets_[o.partition.value()] = o.offset.value();
    if (s.kind == Submitted::kTransfer) {
      const Transfer& t = s.transfer;
      // A resent transfer may have committed before the crash: the retry's answer is the
      // original LSN, and the accounts may have moved on since. Only a newer write updates.
      for (auto [account, balance] : {std::pair{t.from, t.from_balance}, {t.to, t.to_balance}}) {
        auto& [state, version] = accounts_[static_cast<std::size_t>(account)];
        if (lsn >= version) {
          state = {balance, t.id};
          version = lsn;
        }
      }
    }
    if (s.txn.idempotency_key()) {
      if (remembered_.size() >= 256) remembered_.erase(remembered_.begin());
      remembered_.emplace_back(s.txn, lsn);
    }
  }

  std::mt19937_64 rng_;
  storage::FaultInjectingIo io_;
  Summary& summary_;
  bool verbose_;
  std::string failure_dir_;
  std::atomic<std::int64_t> now_{1'000'000};
  Ledger ledger_;
  // The simulated clock is the engine's: no slack.
  Checker checker_{{{kTransfersTopic, kRetentionMs},
                    {kOrdersTopic, kRetentionMs},
                    {kDoubledTopic, kRetentionMs},
                    {kAuditTopic, kAuditRetentionMs}},
                   0};

  // The driver's view, reloaded at each recovery and advanced by acknowledgements.
  std::array<std::pair<Account, std::uint64_t>, kAccounts> accounts_{};  // state, version
  std::uint64_t generation_ = 0;
  std::map<std::uint32_t, std::uint64_t> transform_offsets_;
  std::uint64_t next_id_ = 0;

  std::vector<Submitted> pending_;  // outcome unknown (the engine stopped before answering)
  std::vector<std::pair<Transaction, std::uint64_t>> remembered_;  // acknowledged, with LSN
  bool fault_armed_ = false;
  int disk_full_batches_ = 0;
  struct Struck {
    storage::OpKind kind;
    std::string path;
    storage::FaultKind fault;
  };
  std::mutex struck_mu_;
  std::optional<Struck> struck_;  // the operation the armed fault hit (set by the I/O observer)
};

}  // namespace

Summary RunSimulation(const RunOptions& options) {
  Summary summary;
  std::mt19937_64 seeds(options.seed);
  auto more = [&] {
    if (!summary.failure.empty()) return false;
    if (options.iterations) return summary.iterations < *options.iterations;
    return std::chrono::steady_clock::now() < options.deadline;
  };
  while (more()) {
    Machine machine(seeds(), summary, options);
    if (!machine.Setup()) break;
    for (int i = 0; i < kSimulatedIterationsPerMachine && more(); ++i) {
      if (!machine.Iterate()) break;
    }
  }
  return summary;
}

}  // namespace lockstep::torture

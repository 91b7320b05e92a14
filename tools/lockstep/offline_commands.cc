// The offline commands, on a data directory (docs/cli.md): verify and dump. The checks are
// engine/verify.h's; dump prints what the verifier walks. Both only read, refuse a directory a
// running server holds unless --force, and exit 0 when all holds, 1 naming the first problem.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "base/event_record.h"
#include "engine/internal_tables.h"
#include "engine/verify.h"
#include "storage/io.h"
#include "tools/lockstep/cli.h"

namespace lockstep::cli {
namespace {

enum class ProcLock { kHeld, kFree, kUnsure };

// Whether a process holds a flock on the file `st` describes, read from /proc/locks: lines like
// "1: FLOCK  ADVISORY  WRITE 1234 fe:00:10953939 0 EOF" (device major:minor in hex, inode in
// decimal; "1: -> FLOCK ..." is a waiter, which holds nothing). The same inode on another device
// is unsure: on overlay filesystems the device shown can differ from what stat() says.
ProcLock FlockPerProc(const struct stat& st) {
  std::ifstream locks("/proc/locks");
  if (!locks) return ProcLock::kUnsure;
  ProcLock found = ProcLock::kFree;
  for (std::string line; std::getline(locks, line);) {
    std::istringstream in(line);
    std::string id, kind, mode, access, pid, where;
    in >> id >> kind >> mode >> access >> pid >> where;
    unsigned dev_major = 0, dev_minor = 0;
    unsigned long long inode = 0;
    if (kind != "FLOCK" ||
        std::sscanf(where.c_str(), "%x:%x:%llu", &dev_major, &dev_minor, &inode) != 3 ||
        inode != st.st_ino) {
      continue;
    }
    if (dev_major == major(st.st_dev) && dev_minor == minor(st.st_dev)) return ProcLock::kHeld;
    found = ProcLock::kUnsure;
  }
  return found;
}

// True when another process holds the lock lockstepd takes on `path`. Asked of /proc/locks
// first, without taking a lock: even a shared lock held for an instant could make a lockstepd
// starting in that instant fail to take its exclusive one. When /proc cannot say, a shared lock
// is tried. (/proc/locks shows no holder in another PID namespace: a server in another
// container goes unseen.)
bool HeldByAServer(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;  // no lock file: no server opened the log
  const ProcLock seen = FlockPerProc(st);
  if (seen != ProcLock::kUnsure) return seen == ProcLock::kHeld;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the shared lock at once, if it was taken
  return held;
}

// Refuses a directory a server holds unless `force`.
Status CheckNotHeld(const std::string& data_dir, bool force) {
  // The lock says whether a server holds the directory (a running server's newest segment is
  // still being written). Looked at without writing and without keeping it: the offline commands
  // change nothing, and never stop a server from starting.
  const std::string lock = storage::JoinPath(storage::JoinPath(data_dir, "log"), "LOCK");
  if (!force && HeldByAServer(lock)) {
    return base::FailedPrecondition(
        fmt::format("{} is held by a running server (--force reads it anyway)", data_dir));
  }
  return Status::Ok();
}

std::string Megabytes(std::uint64_t bytes) {
  return fmt::format("{:.1f} MB", static_cast<double>(bytes) / 1e6);
}

// Shows how far the walk got on a terminal (verify and dump of large logs).
class ProgressVisitor : public engine::VerifyVisitor {
 public:
  // `quiet_stdout`: the command prints nothing to stdout until the walk is done (verify).
  ProgressVisitor(const char* what, bool quiet_stdout) : line_(what, quiet_stdout) {}
  void Start(std::uint64_t, std::uint64_t total_bytes) override { total_ = total_bytes; }
  void Progress(std::uint64_t done_bytes) override {
    line_.Update([&] {
      const double percent =
          total_ == 0 ? 100.0
                      : 100.0 * static_cast<double>(done_bytes) / static_cast<double>(total_);
      return fmt::format("{:.0f}% ({} of {})", percent, Megabytes(done_bytes), Megabytes(total_));
    });
  }
  void Done() { line_.Done(); }

 private:
  ProgressLine line_;
  std::uint64_t total_ = 0;
};

Status VerifyDirectory(const std::string& data_dir, engine::VerifyReport& r,
                       ProgressVisitor& visitor) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto io, storage::MakeIo());
  Status s = engine::VerifyDataDir(*io, data_dir, r, &visitor);
  visitor.Done();
  return s;
}

nlohmann::ordered_json ReportJson(const engine::VerifyReport& r, const Status& s) {
  nlohmann::ordered_json j{{"ok", s.ok()},
                           {"segments", r.segments},
                           {"batches", r.batches},
                           {"transactions", r.transactions},
                           {"events", r.events},
                           {"partitions", r.next_offset.size()},
                           {"checkpoints", r.checkpoints},
                           {"first_lsn", r.first_lsn.value()},
                           {"last_lsn", r.last_lsn.value()}};
  if (r.torn_tail) j["torn_tail"] = *r.torn_tail;
  if (!s.ok()) j["problem"] = s.ToString();
  return j;
}

void PrintReport(const engine::VerifyReport& r) {
  std::printf(
      "%llu segments, %llu batches, %llu transactions (LSN %llu to %llu), %llu events "
      "in %zu partitions, %llu checkpoints\n",
      static_cast<unsigned long long>(r.segments), static_cast<unsigned long long>(r.batches),
      static_cast<unsigned long long>(r.transactions),
      static_cast<unsigned long long>(r.first_lsn.value()),
      static_cast<unsigned long long>(r.last_lsn.value()),
      static_cast<unsigned long long>(r.events), r.next_offset.size(),
      static_cast<unsigned long long>(r.checkpoints));
  if (r.torn_tail) std::printf("torn tail (recovery cuts it): %s\n", r.torn_tail->c_str());
  std::fflush(stdout);
}

int Verify(const Context& ctx, const std::string& dir, bool force) {
  if (Status held = CheckNotHeld(dir, force); !held.ok()) return Fail(held.WithContext("verify"));
  engine::VerifyReport r;
  ProgressVisitor progress("verify", /*quiet_stdout=*/true);
  Status s = VerifyDirectory(dir, r, progress);
  if (ctx.format == Format::kJson) {
    PrintJson(ReportJson(r, s));
  } else {
    PrintReport(r);
  }
  return s.ok() ? kExitOk : Fail(s.WithContext("verify"));
}

// ---- dump -----------------------------------------------------------------------------------

struct DumpArgs {
  std::string dir;
  bool force = false;
  std::uint64_t from_lsn = 0;
  std::uint64_t to_lsn = UINT64_MAX;
  bool records = true;                // false: segments and batches only
  std::size_t max_bytes_shown = 200;  // of a key, value or payload in the human format; 0: all
};

// "1 record", "2 records".
std::string Count(std::uint64_t n, const char* noun) {
  return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
}

std::string Str(base::Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

std::string IsoTime(std::int64_t ms) {
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", text, ms % 1000);
}

// Prints what the verifier walks: segments, batches, and (within --from-lsn/--to-lsn) each
// transaction with its operations. Table and topic names come from the catalog operations the
// walk has passed; an id created before the oldest segment (checkpointed) shows as #ID.
class DumpVisitor : public ProgressVisitor {
 public:
  DumpVisitor(const Context& ctx, const DumpArgs& args)
      : ProgressVisitor("dump", /*quiet_stdout=*/false),
        json_(ctx.format == Format::kJson),
        args_(args) {
    tables_[engine::kIdempotencyTable.value()] = "__idempotency";
    tables_[engine::kGroupsTable.value()] = "__groups";
    tables_[engine::kGroupOffsetsTable.value()] = "__group_offsets";
  }

  void Segment(const std::string& name, const storage::SegmentHeader& h,
               std::uint64_t file_bytes) override {
    segment_ = name;
    if (json_) {
      PrintJson({{"kind", "segment"},
                 {"file", name},
                 {"first_lsn", h.first_lsn.value()},
                 {"capacity_bytes", h.capacity_bytes},
                 {"file_bytes", file_bytes},
                 {"created_ms", h.created_ms},
                 {"batch_bytes_max", h.batch_bytes_max}});
    } else {
      std::printf("segment %s: first LSN %llu, capacity %llu bytes, created %s\n", name.c_str(),
                  static_cast<unsigned long long>(h.first_lsn.value()),
                  static_cast<unsigned long long>(h.capacity_bytes), IsoTime(h.created_ms).c_str());
    }
  }

  void Batch(std::uint64_t position, const storage::BatchHeader& h) override {
    if (h.last_lsn.value() < args_.from_lsn || h.first_lsn.value() > args_.to_lsn) return;
    if (json_) {
      PrintJson({{"kind", "batch"},
                 {"file", segment_},
                 {"position", position},
                 {"first_lsn", h.first_lsn.value()},
                 {"last_lsn", h.last_lsn.value()},
                 {"records", h.record_count},
                 {"bytes", h.total_bytes},
                 {"timestamp_ms", h.timestamp_ms}});
    } else {
      std::printf("  batch at %llu: LSN %llu to %llu, %s, %u bytes, %s\n",
                  static_cast<unsigned long long>(position),
                  static_cast<unsigned long long>(h.first_lsn.value()),
                  static_cast<unsigned long long>(h.last_lsn.value()),
                  Count(h.record_count, "record").c_str(), h.total_bytes,
                  IsoTime(h.timestamp_ms).c_str());
    }
  }

  void Transaction(Lsn lsn, engine::TxnRecordReader txn) override {
    // Catalog names are learnt from every record, shown or not.
    const bool shown =
        args_.records && lsn.value() >= args_.from_lsn && lsn.value() <= args_.to_lsn;
    nlohmann::ordered_json ops = nlohmann::ordered_json::array();
    if (shown && !json_) {
      // What is listed below: a run of events counts once in op_count() but lists each event.
      engine::TxnRecordReader counter = txn;
      std::uint64_t listed = 0;
      for (auto op = counter.Next(); op.ok() && *op; op = counter.Next()) ++listed;
      std::printf("    LSN %llu, committed %s, %s%s\n",
                  static_cast<unsigned long long>(lsn.value()), IsoTime(txn.commit_ms()).c_str(),
                  Count(listed, "operation").c_str(),
                  txn.idempotency_key()
                      ? (", idempotency key " + Shown(std::string(*txn.idempotency_key()))).c_str()
                      : "");
    }
    for (;;) {
      auto op = txn.Next();
      if (!op.ok() || !*op) break;  // the verifier checked the record: no error here
      std::visit([&](const auto& o) { Op(o, shown, ops); }, **op);
    }
    if (shown && json_) {
      nlohmann::ordered_json j{
          {"kind", "transaction"}, {"lsn", lsn.value()}, {"commit_ms", txn.commit_ms()}};
      if (txn.idempotency_key())
        PutBytes(j, "idempotency_key", std::string(*txn.idempotency_key()));
      j["ops"] = std::move(ops);
      PrintJson(j);
    }
  }

  void Checkpoint(Lsn lsn, std::uint64_t bytes) override {
    if (json_) {
      PrintJson({{"kind", "checkpoint"}, {"lsn", lsn.value()}, {"bytes", bytes}});
    } else {
      std::printf("checkpoint at LSN %llu: %llu bytes\n",
                  static_cast<unsigned long long>(lsn.value()),
                  static_cast<unsigned long long>(bytes));
    }
  }

 private:
  std::string Name(const std::map<std::uint32_t, std::string>& names, std::uint32_t id) const {
    auto it = names.find(id);
    return it != names.end() ? it->second : fmt::format("#{}", id);
  }
  // Bytes in the human format: printable, cut after max_bytes_shown.
  std::string Shown(const std::string& bytes) const {
    if (args_.max_bytes_shown == 0 || bytes.size() <= args_.max_bytes_shown) {
      return "\"" + Printable(bytes) + "\"";
    }
    return fmt::format("\"{}\"... ({} bytes)", Printable(bytes.substr(0, args_.max_bytes_shown)),
                       bytes.size());
  }

  void Op(const engine::PutOp& o, bool shown, nlohmann::ordered_json& ops) {
    if (!shown) return;
    const std::string table = Name(tables_, o.table.value());
    if (json_) {
      nlohmann::ordered_json j{{"op", "put"}, {"table", table}, {"table_id", o.table.value()}};
      PutBytes(j, "key", Str(o.key));
      PutBytes(j, "value", Str(o.value));
      ops.push_back(std::move(j));
    } else {
      std::printf("      put %s %s = %s\n", table.c_str(), Shown(Str(o.key)).c_str(),
                  Shown(Str(o.value)).c_str());
    }
  }
  void Op(const engine::DeleteOp& o, bool shown, nlohmann::ordered_json& ops) {
    if (!shown) return;
    const std::string table = Name(tables_, o.table.value());
    if (json_) {
      nlohmann::ordered_json j{{"op", "delete"}, {"table", table}, {"table_id", o.table.value()}};
      PutBytes(j, "key", Str(o.key));
      ops.push_back(std::move(j));
    } else {
      std::printf("      delete %s %s\n", table.c_str(), Shown(Str(o.key)).c_str());
    }
  }
  void Op(const engine::EventOp& o, bool shown, nlohmann::ordered_json& ops) {
    if (!shown) return;
    auto e = base::DecodeEvent(o.record);
    if (!e.ok()) return;  // the verifier checked it
    const std::string topic = Name(topics_, o.topic.value());
    if (json_) {
      nlohmann::ordered_json j{{"op", "event"},
                               {"topic", topic},
                               {"topic_id", o.topic.value()},
                               {"partition", o.partition.value()},
                               {"offset", e->offset().value()},
                               {"timestamp_ms", e->timestamp_ms()},
                               {"type", std::string(e->type())},
                               {"schema_version", e->schema_version()}};
      if (e->key()) {
        PutBytes(j, "key", Str(*e->key()));
      } else {
        j["key"] = nullptr;
      }
      j["headers"] = nlohmann::ordered_json::object();
      e->ForEachHeader([&](const base::EventHeader& h) {
        PutBytes(j["headers"], std::string(h.name), Str(h.value));
      });
      PutBytes(j, "payload", Str(e->payload()));
      ops.push_back(std::move(j));
    } else {
      std::string headers;
      e->ForEachHeader([&](const base::EventHeader& h) {
        headers += fmt::format(" {}={}", Printable(std::string(h.name)), Shown(Str(h.value)));
      });
      std::printf("      event %s/%u offset %llu, %s, type %s v%u, key %s,%s payload %s\n",
                  topic.c_str(), o.partition.value(),
                  static_cast<unsigned long long>(e->offset().value()),
                  IsoTime(e->timestamp_ms()).c_str(),
                  e->type().empty() ? "-" : Printable(std::string(e->type())).c_str(),
                  e->schema_version(), e->key() ? Shown(Str(*e->key())).c_str() : "-",
                  headers.empty() ? "" : (" headers" + headers + ",").c_str(),
                  Shown(Str(e->payload())).c_str());
    }
  }
  void Op(const engine::OffsetOp& o, bool shown, nlohmann::ordered_json& ops) {
    if (!shown) return;
    const std::string topic = Name(topics_, o.topic.value());
    if (json_) {
      ops.push_back({{"op", "offset"},
                     {"group", std::string(o.group)},
                     {"topic", topic},
                     {"topic_id", o.topic.value()},
                     {"partition", o.partition.value()},
                     {"offset", o.offset.value()},
                     {"generation", o.generation}});
    } else {
      std::printf("      offset group %s %s/%u -> %llu (generation %llu)\n",
                  Printable(std::string(o.group)).c_str(), topic.c_str(), o.partition.value(),
                  static_cast<unsigned long long>(o.offset.value()),
                  static_cast<unsigned long long>(o.generation));
    }
  }
  void Op(const engine::CatalogOp& o, bool shown, nlohmann::ordered_json& ops) {
    const bool table = o.change == engine::CatalogChange::kCreateTable ||
                       o.change == engine::CatalogChange::kDropTable;
    const bool create = o.change == engine::CatalogChange::kCreateTable ||
                        o.change == engine::CatalogChange::kCreateTopic;
    if (create) (table ? tables_ : topics_)[o.id] = std::string(o.name);
    if (!shown) return;
    const char* change = create ? "create" : "drop";
    const char* what = table ? "table" : "topic";
    if (json_) {
      nlohmann::ordered_json j{
          {"op", fmt::format("{}_{}", change, what)}, {"name", std::string(o.name)}, {"id", o.id}};
      if (!table && create) {
        j["partitions"] = o.partitions;
        j["retention_ms"] = o.retention_ms;
        j["retention_bytes"] = o.retention_bytes;
      }
      ops.push_back(std::move(j));
    } else if (!table && create) {
      std::printf("      create topic %s (id %u, %u partitions, retention %lld ms, %llu bytes)\n",
                  std::string(o.name).c_str(), o.id, o.partitions,
                  static_cast<long long>(o.retention_ms),
                  static_cast<unsigned long long>(o.retention_bytes));
    } else {
      std::printf("      %s %s %s (id %u)\n", change, what, std::string(o.name).c_str(), o.id);
    }
  }

  bool json_;
  const DumpArgs& args_;
  std::string segment_;
  std::map<std::uint32_t, std::string> tables_;
  std::map<std::uint32_t, std::string> topics_;
};

int Dump(const Context& ctx, const DumpArgs& args) {
  if (args.from_lsn > args.to_lsn) {
    return UsageError(
        fmt::format("--from-lsn {} is above --to-lsn {}", args.from_lsn, args.to_lsn));
  }
  if (Status held = CheckNotHeld(args.dir, args.force); !held.ok()) {
    return Fail(held.WithContext("dump"));
  }
  engine::VerifyReport r;
  DumpVisitor dump(ctx, args);
  Status s = VerifyDirectory(args.dir, r, dump);
  if (ctx.format == Format::kJson) {
    nlohmann::ordered_json j{{"kind", "summary"}};
    j.update(ReportJson(r, s));
    PrintJson(j);
  } else {
    PrintReport(r);
  }
  return s.ok() ? kExitOk : Fail(s.WithContext("dump"));
}

}  // namespace

void AddOfflineCommands(CLI::App& app, Context& ctx, Run* run) {
  static std::string dir;
  static bool force = false;
  auto* v = app.add_subcommand(
      "verify",
      "offline: check every checksum, LSN and offset continuity and every checkpoint "
      "of a data directory; exit 1 naming the first problem");
  v->add_option("dir", dir, "the data directory (lockstepd --data-dir)")->required();
  v->add_flag("--force", force, "read a directory a running server holds (read-only)");
  v->callback([&ctx, run] { *run = [&ctx] { return Verify(ctx, dir, force); }; });

  static DumpArgs dump;
  static bool batches_only = false;
  auto* d = app.add_subcommand(
      "dump",
      "offline: print the segments, batches and transactions (with their operations and "
      "events) of a data directory, verifying as it goes; exit 1 at the first problem");
  d->add_option("dir", dump.dir, "the data directory (lockstepd --data-dir)")->required();
  d->add_flag("--force", dump.force, "read a directory a running server holds (read-only)");
  d->add_option("--from-lsn", dump.from_lsn, "print transactions from this LSN on");
  d->add_option("--to-lsn", dump.to_lsn, "print transactions up to this LSN");
  d->add_flag("--batches-only", batches_only, "segments and batches, no transactions");
  d->add_option("--max-bytes-shown", dump.max_bytes_shown,
                "human format: cut keys, values and payloads after this many bytes (0: never)")
      ->capture_default_str();
  d->callback([&ctx, run] {
    dump.records = !batches_only;
    *run = [&ctx] { return Dump(ctx, dump); };
  });
}

}  // namespace lockstep::cli

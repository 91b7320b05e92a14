// verify: offline, on a data directory (docs/cli.md). Checks every segment header and batch
// checksum, LSN continuity within and across segments, every transaction record and every event
// (its own checksum, its LSN), offsets dense and in LSN order per partition, and every finished
// checkpoint's checksums. Reads only: a torn tail in the newest segment (what recovery cuts) is
// reported, not repaired. Exit 0 when all holds, 1 naming the first problem.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <map>

#include "base/event_record.h"
#include "engine/txn_record.h"
#include "storage/batch.h"
#include "storage/checkpoint_file.h"
#include "storage/io.h"
#include "storage/segment.h"
#include "tools/lockstep/cli.h"

namespace lockstep::cli {
namespace {

using base::Lsn;
using storage::ConstBytes;

struct Report {
  std::uint64_t segments = 0;
  std::uint64_t batches = 0;
  std::uint64_t transactions = 0;
  std::uint64_t events = 0;
  std::uint64_t checkpoints = 0;
  Lsn first_lsn;
  Lsn last_lsn;
  std::optional<std::string> torn_tail;  // where the newest segment ends in a torn batch
  // Next expected offset per (topic id, partition).
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t> next_offset;
};

Status Problem(const std::string& where, const std::string& what) {
  return base::DataLoss(fmt::format("{}: {}", where, what));
}

// One transaction record: it parses, its events decode with their checksums, carry its LSN, and
// continue their partition's offsets.
Status VerifyRecord(ConstBytes record, Lsn lsn, const std::string& where, Report& r) {
  auto txn = engine::TxnRecordReader::Open(record);
  if (!txn.ok()) return Problem(where, txn.status().ToString());
  for (;;) {
    auto op = txn->Next();
    if (!op.ok()) return Problem(where, op.status().ToString());
    if (!*op) break;
    const auto* ev = std::get_if<engine::EventOp>(&**op);
    if (ev == nullptr) continue;
    auto event = base::DecodeEvent(ev->record);
    if (!event.ok()) return Problem(where, event.status().ToString());
    if (event->lsn() != lsn) {
      return Problem(where, fmt::format("an event says LSN {}", event->lsn().value()));
    }
    const auto key = std::make_pair(ev->topic.value(), ev->partition.value());
    const std::uint64_t offset = event->offset().value();
    auto [it, first] = r.next_offset.try_emplace(key, offset);
    if (!first && it->second != offset) {
      return Problem(where, fmt::format("topic id {} partition {}: offset {} where {} was expected",
                                        key.first, key.second, offset, it->second));
    }
    it->second = offset + 1;
    ++r.events;
  }
  ++r.transactions;
  return Status::Ok();
}

Status VerifySegment(storage::Io& io, const std::string& dir, const std::string& name, bool last,
                     Report& r) {
  const std::string path = storage::JoinPath(dir, name);
  LOCKSTEP_ASSIGN_OR_RETURN(auto file, io.OpenFile(path));
  LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t size, io.FileSize(*file));
  if (size < storage::kSegmentHeaderBytes) return Problem(name, "shorter than its header");
  LOCKSTEP_ASSIGN_OR_RETURN(auto mapping, io.Map(*file, size));
  const ConstBytes bytes = mapping->bytes();
  auto header = storage::DecodeSegmentHeader(bytes.first(storage::kSegmentHeaderBytes));
  if (!header.ok()) return Problem(name, header.status().ToString());
  if (header->first_lsn != *storage::ParseSegmentFileName(name)) {
    return Problem(name, fmt::format("its header says first LSN {}", header->first_lsn.value()));
  }
  if (r.segments > 0 && header->first_lsn != r.last_lsn.Next()) {
    return Problem(name, fmt::format("starts at LSN {}, but the previous segment ends at {}",
                                     header->first_lsn.value(), r.last_lsn.value()));
  }
  if (r.segments == 0) r.first_lsn = header->first_lsn;
  ++r.segments;
  Lsn next = header->first_lsn;
  std::uint64_t pos = storage::kSegmentHeaderBytes;
  for (;;) {
    storage::BatchView batch = storage::ParseBatch(bytes, pos, {header->salt, true, true});
    if (batch.state == storage::BatchState::kAbsent) break;
    const std::string where = fmt::format("{} position {}", name, pos);
    if (batch.state == storage::BatchState::kDamaged) {
      // Only the newest batch of the newest segment may be torn (recovery cuts it).
      if (!last) return Problem(where, "damaged batch: " + batch.reason);
      if (auto after = storage::FindValidBatchAfter(bytes, pos, header->salt)) {
        return Problem(where, fmt::format("damaged batch ({}) followed by a valid batch at "
                                          "position {}",
                                          batch.reason, *after));
      }
      r.torn_tail = fmt::format("{} ({})", where, batch.reason);
      break;
    }
    if (batch.header.first_lsn != next) {
      return Problem(where, fmt::format("batch starts at LSN {}, expected {}",
                                        batch.header.first_lsn.value(), next.value()));
    }
    storage::FrameCursor cursor(batch.frames);
    ConstBytes record;
    for (Lsn lsn = next; lsn <= batch.header.last_lsn; lsn = lsn.Next()) {
      if (!cursor.Next(&record)) return Problem(where, "fewer records than the batch says");
      LOCKSTEP_RETURN_IF_ERROR(
          VerifyRecord(record, lsn, fmt::format("{}, LSN {}", where, lsn.value()), r));
    }
    ++r.batches;
    next = batch.header.last_lsn.Next();
    pos += batch.header.total_bytes;
  }
  r.last_lsn = Lsn(next.value() - 1);
  return Status::Ok();
}

// True when another process holds the exclusive lock lockstepd takes on `path`.
bool HeldByAServer(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // no lock file: nobody ever opened the log here
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the shared lock at once, if it was taken
  return held;
}

Status VerifyDirectory(const std::string& data_dir, bool force, Report& r) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto io, storage::MakeIo());
  const std::string log_dir = storage::JoinPath(data_dir, "log");
  auto names = io->ListDir(log_dir);
  if (!names.ok()) {
    return base::NotFound(fmt::format("{:?} is not a Lockstep data directory: {}", data_dir,
                                      names.status().ToString()));
  }
  // The lock says whether a server holds the directory (a running server's newest segment is
  // still being written). Looked at without writing and without keeping it: verify changes
  // nothing, and never stops a server from starting.
  if (!force && HeldByAServer(storage::JoinPath(log_dir, "LOCK"))) {
    return base::FailedPrecondition(
        fmt::format("{} is held by a running server (--force reads it anyway)", data_dir));
  }
  std::vector<std::string> segments;
  for (const auto& n : *names) {
    if (storage::ParseSegmentFileName(n)) segments.push_back(n);
  }
  std::sort(segments.begin(), segments.end());  // zero-padded LSNs sort by name
  for (std::size_t i = 0; i < segments.size(); ++i) {
    LOCKSTEP_RETURN_IF_ERROR(VerifySegment(*io, log_dir, segments[i], i + 1 == segments.size(), r));
  }
  const std::string checkpoint_dir = storage::JoinPath(data_dir, "checkpoints");
  LOCKSTEP_ASSIGN_OR_RETURN(auto checkpoints, storage::ListCheckpoints(*io, checkpoint_dir));
  for (Lsn lsn : checkpoints) {
    auto stream = storage::ReadCheckpoint(*io, checkpoint_dir, lsn);
    if (!stream.ok()) {
      return Problem(storage::CheckpointFileName(lsn), stream.status().ToString());
    }
    ++r.checkpoints;
  }
  return Status::Ok();
}

int Verify(const Context& ctx, const std::string& dir, bool force) {
  Report r;
  Status s = VerifyDirectory(dir, force, r);
  if (ctx.format == Format::kJson) {
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
    PrintJson(j);
  } else {
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
  return s.ok() ? kExitOk : Fail(s.WithContext("verify"));
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
}

}  // namespace lockstep::cli

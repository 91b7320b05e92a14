// The offline verifier: see verify.h.
#include "engine/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "base/event_record.h"
#include "engine/txn_record.h"
#include "storage/batch.h"
#include "storage/checkpoint_file.h"
#include "storage/segment.h"

namespace lockstep::engine {
namespace {

using storage::ConstBytes;

Status Problem(const std::string& where, const std::string& what) {
  return base::DataLoss(fmt::format("{}: {}", where, what));
}

// One transaction record: it parses, its events decode with their checksums, carry its LSN, and
// continue their partition's offsets.
Status VerifyRecord(ConstBytes record, Lsn lsn, const std::string& where, VerifyReport& r,
                    VerifyVisitor& visitor) {
  auto txn = TxnRecordReader::Open(record);
  if (!txn.ok()) return Problem(where, txn.status().ToString());
  const TxnRecordReader fresh = *txn;
  for (;;) {
    auto op = txn->Next();
    if (!op.ok()) return Problem(where, op.status().ToString());
    if (!*op) break;
    const auto* ev = std::get_if<EventOp>(&**op);
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
  visitor.Transaction(lsn, fresh);
  return Status::Ok();
}

Status VerifySegment(storage::Io& io, const std::string& dir, const std::string& name, bool last,
                     VerifyReport& r, VerifyVisitor& visitor) {
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
  // Segments are preallocated to their capacity: a shorter file lost its end (recovery refuses
  // it), and a short copy must not pass for a torn tail.
  if (header->capacity_bytes != size) {
    return Problem(name, fmt::format("the file is {} bytes, its header says {}", size,
                                     header->capacity_bytes));
  }
  if (r.segments > 0 && header->first_lsn != r.last_lsn.Next()) {
    return Problem(name, fmt::format("starts at LSN {}, but the previous segment ends at {}",
                                     header->first_lsn.value(), r.last_lsn.value()));
  }
  if (r.segments == 0) r.first_lsn = header->first_lsn;
  ++r.segments;
  visitor.Segment(name, *header, size);
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
    visitor.Batch(pos, batch.header);
    storage::FrameCursor cursor(batch.frames);
    ConstBytes record;
    for (Lsn lsn = next; lsn <= batch.header.last_lsn; lsn = lsn.Next()) {
      if (!cursor.Next(&record)) return Problem(where, "fewer records than the batch says");
      LOCKSTEP_RETURN_IF_ERROR(
          VerifyRecord(record, lsn, fmt::format("{}, LSN {}", where, lsn.value()), r, visitor));
    }
    ++r.batches;
    next = batch.header.last_lsn.Next();
    pos += batch.header.total_bytes;
  }
  r.last_lsn = Lsn(next.value() - 1);
  return Status::Ok();
}

// Recovery loads the newest checkpoint and replays the log after it: the log must hold every
// LSN from just after that checkpoint to its end (without a checkpoint, from LSN 1). Retention
// deletes only what a durable checkpoint covers, so a hole here means files went missing.
Status CheckCoverage(const std::vector<Lsn>& checkpoints, const VerifyReport& r) {
  if (r.segments == 0) {
    // Recovery starts a fresh log in an empty directory (a first start killed before its
    // first segment was in place leaves one); with a checkpoint, the log it needs is gone.
    if (checkpoints.empty()) return Status::Ok();
    return Problem("log", "no segment, but there are checkpoints");
  }
  const Lsn newest =
      checkpoints.empty() ? Lsn(0) : *std::max_element(checkpoints.begin(), checkpoints.end());
  if (r.first_lsn.value() > newest.value() + 1) {
    const std::string after =
        checkpoints.empty() ? std::string("there is no checkpoint")
                            : fmt::format("the newest checkpoint is at LSN {}", newest.value());
    return Problem("log", fmt::format("starts at LSN {}, but {}: LSNs {} to {} are missing",
                                      r.first_lsn.value(), after, newest.value() + 1,
                                      r.first_lsn.value() - 1));
  }
  if (r.last_lsn < newest) {
    return Problem("log", fmt::format("ends at LSN {}, before the newest checkpoint (LSN {})",
                                      r.last_lsn.value(), newest.value()));
  }
  return Status::Ok();
}

}  // namespace

base::Status VerifyDataDir(storage::Io& io, const std::string& data_dir, VerifyReport& r,
                           VerifyVisitor* visitor) {
  VerifyVisitor quiet;
  VerifyVisitor& v = visitor != nullptr ? *visitor : quiet;
  const std::string log_dir = storage::JoinPath(data_dir, "log");
  auto names = io.ListDir(log_dir);
  if (!names.ok()) {
    return base::NotFound(fmt::format("{:?} is not a Lockstep data directory: {}", data_dir,
                                      names.status().ToString()));
  }
  std::vector<std::string> segments;
  for (const auto& n : *names) {
    if (storage::ParseSegmentFileName(n)) segments.push_back(n);
  }
  std::sort(segments.begin(), segments.end());  // zero-padded LSNs sort by name
  std::vector<std::uint64_t> sizes;
  std::uint64_t total = 0;
  for (const std::string& name : segments) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto file, io.OpenFile(storage::JoinPath(log_dir, name)));
    LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t size, io.FileSize(*file));
    sizes.push_back(size);
    total += size;
  }
  v.Start(segments.size(), total);
  std::uint64_t done = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    LOCKSTEP_RETURN_IF_ERROR(
        VerifySegment(io, log_dir, segments[i], i + 1 == segments.size(), r, v));
    done += sizes[i];
    v.Progress(done);
  }
  const std::string checkpoint_dir = storage::JoinPath(data_dir, "checkpoints");
  LOCKSTEP_ASSIGN_OR_RETURN(auto checkpoints, storage::ListCheckpoints(io, checkpoint_dir));
  for (Lsn lsn : checkpoints) {
    auto stream = storage::ReadCheckpoint(io, checkpoint_dir, lsn);
    if (!stream.ok()) {
      return Problem(storage::CheckpointFileName(lsn), stream.status().ToString());
    }
    ++r.checkpoints;
    v.Checkpoint(lsn, stream->size());
  }
  return CheckCoverage(checkpoints, r);
}

}  // namespace lockstep::engine

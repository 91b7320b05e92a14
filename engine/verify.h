#pragma once
// The offline verifier (`lockstep verify`, and invariant 6 of the torture suite): reads a data
// directory through an Io and checks every segment header and batch checksum, LSN continuity
// within and across segments, every transaction record and every event (its own checksum, its
// LSN), offsets dense and in LSN order per partition, and every finished checkpoint's checksums.
// It only reads: a torn tail in the newest segment (what recovery cuts) is reported, not
// repaired, and is not a problem; damage anywhere else is.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "base/status.h"
#include "engine/ids.h"
#include "engine/txn_record.h"
#include "storage/batch.h"
#include "storage/io.h"
#include "storage/segment.h"

namespace lockstep::engine {

struct VerifyReport {
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

// What the verifier walks, in log order, for a caller that shows it (`lockstep dump`) or
// reports progress. Each item is given once verified (a record: once its batch's checksum held
// and the record parsed); views are valid during the call only.
class VerifyVisitor {
 public:
  virtual ~VerifyVisitor() = default;
  // `total_bytes`: of all segment files, for progress.
  virtual void Start(std::uint64_t /*segment_count*/, std::uint64_t /*total_bytes*/) {}
  virtual void Segment(const std::string& /*name*/, const storage::SegmentHeader& /*header*/,
                       std::uint64_t /*file_bytes*/) {}
  virtual void Batch(std::uint64_t /*position*/, const storage::BatchHeader& /*header*/) {}
  // `txn` is positioned before its first operation; the visitor may read them (Next()).
  virtual void Transaction(Lsn /*lsn*/, TxnRecordReader /*txn*/) {}
  // After each segment: the bytes of segment files walked so far.
  virtual void Progress(std::uint64_t /*done_bytes*/) {}
  virtual void Checkpoint(Lsn /*lsn*/, std::uint64_t /*bytes*/) {}
};

// Verifies the data directory `data_dir` (the engine's EngineOptions::dir). Returns kDataLoss
// naming the first problem (file and position), kNotFound when it is no data directory.
// `report` holds what was read up to the problem; `visitor` (if any) saw it too.
base::Status VerifyDataDir(storage::Io& io, const std::string& data_dir, VerifyReport& report,
                           VerifyVisitor* visitor = nullptr);

}  // namespace lockstep::engine

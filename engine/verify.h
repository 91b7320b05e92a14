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
#include "storage/io.h"

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

// Verifies the data directory `data_dir` (the engine's EngineOptions::dir). Returns kDataLoss
// naming the first problem (file and position), kNotFound when it is no data directory.
// `report` holds what was read up to the problem.
base::Status VerifyDataDir(storage::Io& io, const std::string& data_dir, VerifyReport& report);

}  // namespace lockstep::engine

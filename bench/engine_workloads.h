#pragma once
// The engine's workloads for lockstep-bench (issue 3): `transfer` — read two of N account
// balances, commit both new balances under version preconditions plus one ~200-byte
// TransferCompleted event, retrying conflicts — on Lockstep (embedded engine, N outstanding) or
// on RocksDB (N threads, per-account locks in a fixed order, one synced WriteBatch over a state
// and an events column family); and `events` — one-event transactions.
#include <cstdint>
#include <string>

#include "base/status.h"
#include "bench/latency.h"
#include "storage/io.h"
#include "storage/log.h"

namespace lockstep::bench {

struct EngineWorkload {
  std::string dir;  // a fresh folder the workload may use
  std::uint32_t outstanding = 1;
  std::uint32_t event_bytes = 200;
  std::uint32_t accounts = 100'000;
  double seconds = 5;
  double warmup_seconds = 0.5;
  bool sync = true;
  storage::Io* io = nullptr;
  storage::LogOptions log;  // segment size and preallocation for the engine's log
};

// The key of account i, the same for every system the transfer workload runs on.
std::string AccountKey(std::uint32_t i);

struct EngineRow {
  std::uint64_t ops = 0;        // committed transactions in the window
  std::uint64_t conflicts = 0;  // conflicts retried in the window
  double seconds = 0;
  LatencyRecorder latency;  // first read (or submit) to durable acknowledgement
};

base::Result<EngineRow> RunTransferLockstep(const EngineWorkload& w);
base::Result<EngineRow> RunTransferRocksdb(const EngineWorkload& w);
base::Result<EngineRow> RunEventsLockstep(const EngineWorkload& w);

}  // namespace lockstep::bench

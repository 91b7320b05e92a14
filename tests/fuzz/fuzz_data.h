#pragma once
// The data directory the checkpoint fuzz target and the seed maker share: the seeds' checkpoint
// is taken on it, and the target loads fuzzed checkpoints at the same LSN into a fresh copy.
#include <cstdint>
#include <string>

#include "engine/engine.h"
#include "storage/fault_io.h"

namespace lockstep::fuzz {

inline engine::EngineOptions FuzzEngineOptions(storage::FaultInjectingIo& io) {
  engine::EngineOptions o;
  o.dir = "db";
  o.io = &io;
  o.log.segment_bytes = 16 << 10;
  o.log.batch_bytes_max = 4 << 10;
  o.log.staging_bytes_max = 64 << 10;
  o.log.prepare_in_background = false;
  o.checkpoint.every_log_bytes = 0;
  o.checkpoint.every_ms = 0;
  o.checkpoint.write.chunk_bytes = 512;
  return o;
}

// Creates "db" with a table, a topic, events with headers, offset commits and idempotency keys;
// returns the last LSN (0: failed). The engine is closed again.
inline std::uint64_t MakeDataDir(storage::FaultInjectingIo& io) {
  auto e = engine::Engine::Open(FuzzEngineOptions(io));
  if (!e.ok()) return 0;
  engine::Engine& engine = **e;
  if (!engine.CreateTable("accounts").ok() || !engine.CreateTopic("orders", 2, 60000).ok()) {
    return 0;
  }
  for (int i = 0; i < 6; ++i) {
    engine::Transaction t;
    t.Put("accounts", "acct-" + std::to_string(i), "balance=" + std::to_string(100 * i));
    engine::EventAppend ev;
    ev.topic = "orders";
    ev.key = "customer-" + std::to_string(i);
    ev.type = "OrderPlaced";
    ev.headers = {{"trace", "abc"}};
    ev.payload = "order-" + std::to_string(i);
    t.Append(std::move(ev));
    if (i % 2 == 1) {
      t.CommitOffset({"group", 0, "orders", engine::PartitionId(0), engine::Offset(0)});
    }
    t.IdempotencyKey("key-" + std::to_string(i));
    if (!engine.Commit(std::move(t)).get().ok()) return 0;
  }
  return engine.visible_lsn().value();
}

}  // namespace lockstep::fuzz

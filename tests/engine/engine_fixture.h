#pragma once
// What every engine test starts from: an engine in folder "db" over the in-memory
// fault-injecting I/O, with small segments and batches (so tests roll segments and retention has
// something to delete), spares prepared inline, a test clock, and no automatic or paced
// checkpoints (tests take them when they mean to).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "storage/fault_io.h"

namespace lockstep::engine {

inline EngineOptions SmallEngineOptions(storage::Io* io, std::atomic<std::int64_t>* now_ms) {
  EngineOptions o;
  o.dir = "db";
  o.io = io;
  o.log.segment_bytes = 64 << 10;
  o.log.batch_bytes_max = 16 << 10;
  o.log.prepare_in_background = false;
  o.now_ms = [now_ms] { return now_ms->load(); };
  o.checkpoint.every_log_bytes = 0;
  o.checkpoint.every_ms = 0;
  o.checkpoint.write.bytes_per_second = 0;
  return o;
}

class EngineFixture : public ::testing::Test {
 protected:
  EngineOptions Options() { return SmallEngineOptions(&io_, &now_); }
  std::unique_ptr<Engine> Open(EngineOptions o) {
    auto e = Engine::Open(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(e).value() : nullptr;
  }
  std::unique_ptr<Engine> Open() { return Open(Options()); }
  static Result<CommitResult> Commit(Engine& e, Transaction t) {
    return e.Commit(std::move(t)).get();
  }
  static EventAppend Event(std::string topic, std::string payload, std::uint32_t partition = 0) {
    EventAppend ev;
    ev.topic = std::move(topic);
    ev.partition = PartitionId(partition);
    ev.payload = std::move(payload);
    return ev;
  }

  storage::FaultInjectingIo io_;
  std::atomic<std::int64_t> now_{1'000'000};
};

}  // namespace lockstep::engine

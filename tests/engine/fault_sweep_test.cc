// One injected failure at every I/O operation of a reference workload (issue 6): for each
// operation number of the workload, and each fault (EIO, ENOSPC, a short write, an fdatasync
// EIO), a fresh data directory runs the workload with that single fault, then loses power and
// recovers. Whatever the fault hit:
//   - recovery succeeds, and every acknowledged transaction is there, whole (its row at its
//     LSN, its event at its offset), with nothing else in their place;
//   - a failed write or fdatasync of a log segment stops the engine (guarantee 7): it refuses
//     every later commit instead of going on over a disk it can no longer trust;
//   - the recovered engine commits again.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>

#include "tests/engine/engine_fixture.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;

constexpr int kTransactions = 24;

struct Fault {
  const char* name;
  storage::FaultKind kind;
  storage::OpKind only;  // kAny, or the one kind of operation it can hit
};
constexpr Fault kFaults[] = {
    {"EIO", storage::FaultKind::kEio, storage::OpKind::kAny},
    {"ENOSPC", storage::FaultKind::kEnospc, storage::OpKind::kAny},
    {"short write", storage::FaultKind::kShortWrite, storage::OpKind::kWrite},
    {"fdatasync EIO", storage::FaultKind::kEio, storage::OpKind::kSync},
};

struct Acked {
  std::uint64_t lsn = 0;
  std::uint64_t offset = 0;
};

EngineOptions SweepOptions(storage::FaultInjectingIo* io, std::atomic<std::int64_t>* now) {
  EngineOptions o = SmallEngineOptions(io, now);
  o.log.segment_bytes = 8 << 10;  // several segment rolls within the workload
  o.log.batch_bytes_max = 2 << 10;
  o.checkpoint.write.chunk_bytes = 512;
  return o;
}

std::string Value(int i) { return "v" + std::to_string(i) + std::string(200, 'x'); }
std::string Payload(int i) { return "e" + std::to_string(i) + std::string(100, 'p'); }

// The reference workload: a table and a topic, one transaction at a time (so that operation
// numbers mean the same thing in every run), a checkpoint halfway. Stops at the first refusal.
// Returns what was acknowledged, by transaction number.
std::map<int, Acked> RunWorkload(Engine& engine) {
  std::map<int, Acked> acked;
  if (!engine.CreateTable("t").ok() || !engine.CreateTopic("e", 1).ok()) return acked;
  for (int i = 0; i < kTransactions; ++i) {
    if (i == kTransactions / 2) (void)engine.Checkpoint();
    Transaction txn;
    txn.Put("t", "k" + std::to_string(i), Value(i));
    EventAppend e;
    e.topic = "e";
    e.partition = PartitionId(0);
    e.payload = Payload(i);
    txn.Append(std::move(e));
    auto got = engine.Commit(std::move(txn)).get();
    if (!got.ok()) {
      if (got.status().code() == StatusCode::kResourceExhausted) continue;  // refused, undone
      break;
    }
    acked[i] = {got->lsn.value(), got->events.at(0).offset.value()};
  }
  return acked;
}

std::uint64_t CountOperations() {
  storage::FaultInjectingIo io(7);
  std::atomic<std::int64_t> now{1'000'000};
  auto e = Engine::Open(SweepOptions(&io, &now));
  EXPECT_TRUE(e.ok());
  if (!e.ok()) return 0;
  const std::uint64_t before = io.operations();
  EXPECT_EQ(RunWorkload(**e).size(), static_cast<std::size_t>(kTransactions));
  return io.operations() - before;
}

TEST(FaultSweep, OneFailureAtEveryOperationLosesNothingAcknowledged) {
  const std::uint64_t operations = CountOperations();
  ASSERT_GT(operations, 50u);
  std::map<std::string, int> struck;  // per fault: runs where it hit an operation
  int fail_stops = 0;
  for (const Fault& fault : kFaults) {
    for (std::uint64_t n = 1; n <= operations + 5; ++n) {
      SCOPED_TRACE(std::string(fault.name) + " at operation " + std::to_string(n));
      storage::FaultInjectingIo io(7);
      std::atomic<std::int64_t> now{1'000'000};
      auto opened = Engine::Open(SweepOptions(&io, &now));
      ASSERT_TRUE(opened.ok()) << opened.status().ToString();
      std::unique_ptr<Engine> engine = std::move(opened).value();
      // Which operation the fault lands on decides what it may do.
      storage::OpKind hit_kind = storage::OpKind::kAny;
      std::string hit_path;
      const std::uint64_t at = io.operations() + n;
      io.SetObserver([&](std::uint64_t op, storage::OpKind kind, const std::string& path) {
        if (op == at) {
          hit_kind = kind;
          hit_path = path;
        }
      });
      storage::FaultRule rule;
      rule.at_operation = at;
      rule.fault = fault.kind;
      rule.kind = fault.only;
      io.AddFault(rule);
      const std::map<int, Acked> acked = RunWorkload(*engine);
      io.SetObserver(nullptr);
      const bool hit = hit_kind != storage::OpKind::kAny &&
                       (fault.only == storage::OpKind::kAny || fault.only == hit_kind);
      const bool log_write_or_sync =
          hit && hit_path.ends_with(".seg") &&
          (hit_kind == storage::OpKind::kWrite || hit_kind == storage::OpKind::kSync);
      if (hit) ++struck[fault.name];
      if (log_write_or_sync && fault.kind == storage::FaultKind::kEio) {
        // Guarantee 7: the engine stopped, and stays stopped.
        ++fail_stops;
        EXPECT_FALSE(engine->status().ok()) << "the engine went on after a failed log "
                                            << storage::OpKindName(hit_kind) << " of " << hit_path;
        Transaction probe;
        probe.Put("t", "probe", "must not land");
        EXPECT_FALSE(engine->Commit(std::move(probe)).get().ok())
            << "a commit succeeded after a failed log " << storage::OpKindName(hit_kind);
      }
      engine.reset();
      std::mt19937_64 rng(n);
      io.Restart(rng);  // power loss: unsynced writes and directory changes may be lost

      auto recovered = Engine::Open(SweepOptions(&io, &now));
      ASSERT_TRUE(recovered.ok()) << "recovery failed: " << recovered.status().ToString();
      Engine& r = **recovered;
      for (const auto& [i, a] : acked) {
        auto row = r.Get("t", "k" + std::to_string(i));
        ASSERT_TRUE(row.ok()) << row.status().ToString();
        ASSERT_TRUE(row->has_value()) << "acknowledged transaction " << i << " lost its row";
        EXPECT_EQ((*row)->value, Value(i));
        EXPECT_EQ((*row)->version.value(), a.lsn);
        auto fetched = r.Fetch("e", PartitionId(0), Offset(a.offset), {1, 1 << 20});
        ASSERT_TRUE(fetched.ok()) << "acknowledged transaction " << i
                                  << " lost its event: " << fetched.status().ToString();
        ASSERT_EQ(fetched->events, 1u) << "acknowledged transaction " << i << " lost its event";
        auto event = base::DecodeEvent(fetched->records);
        ASSERT_TRUE(event.ok()) << event.status().ToString();
        const base::Bytes payload = event->payload();
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(payload.data()), payload.size()),
                  Payload(i));
        EXPECT_EQ(event->lsn().value(), a.lsn);
      }
      const auto tables = r.ListTables();
      if (std::find(tables.begin(), tables.end(), "t") == tables.end()) {
        ASSERT_TRUE(acked.empty()) << "acknowledged transactions without their table";
        ASSERT_TRUE(r.CreateTable("t").ok());  // the fault refused the workload's first step
      }
      Transaction after;
      after.Put("t", "after", "recovered");
      auto committed = r.Commit(std::move(after)).get();
      EXPECT_TRUE(committed.ok()) << "the recovered engine does not commit: "
                                  << committed.status().ToString();
      if (HasFailure()) return;
    }
  }
  std::printf("fault sweep: %llu operations; runs where the fault struck:",
              static_cast<unsigned long long>(operations));
  for (const auto& [name, n] : struck) std::printf(" %s %d,", name.c_str(), n);
  std::printf(" fail-stops checked %d\n", fail_stops);
  for (const Fault& fault : kFaults) EXPECT_GT(struck[fault.name], 0) << fault.name;
  EXPECT_GT(fail_stops, 0);
}

}  // namespace
}  // namespace lockstep::engine

// The engine's costs through its public API, on the real file system (LOCKSTEP_BENCH_DIR, else
// the working directory):
//   BM_CommitPathCpu   one-event, one-put transactions, 256 in flight, with the log's fdatasync
//                      off (LogOptions::sync = false, benchmarks only): what the sequencer and
//                      the writer spend per transaction, not the disk.
//   BM_EngineGet       a point read of one of 100,000 rows at the visible LSN.
//   BM_EngineScan100   a 100-row range scan.
//   BM_Fetch           1,000 events (100-byte payloads) per call from random offsets of a
//                      100,000-event partition, straight from the mapped segments.
#include <benchmark/benchmark.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>

#include <unistd.h>

#include <fmt/format.h>

#include "engine/engine.h"
#include "storage/io.h"

namespace lockstep::engine {
namespace {

constexpr int kRows = 100'000;
constexpr int kEvents = 100'000;

std::string Key(int i) { return fmt::format("acct/{:06}", i); }

// One engine per benchmark process, in a fresh folder removed at exit.
class Fixture {
 public:
  Fixture() {
    const char* parent = std::getenv("LOCKSTEP_BENCH_DIR");
    dir_ = std::filesystem::path(parent != nullptr ? parent : ".") /
           fmt::format("engine-bench-{}", ::getpid());
    std::filesystem::remove_all(dir_);
    io_ = std::move(storage::MakeIo()).value();
    EngineOptions o;
    o.dir = dir_.string();
    o.io = io_.get();
    o.log.sync = false;  // benchmarks only: CPU, not the disk
    o.checkpoint.every_log_bytes = 0;
    o.checkpoint.every_ms = 0;
    engine_ = std::move(Engine::Open(o)).value();
    (void)engine_->CreateTable("accounts");
    (void)engine_->CreateTopic("events", 1);
    (void)engine_->CreateTopic("bench", 1);
    for (int i = 0; i < kRows; i += 100) {
      Transaction t;
      for (int j = i; j < i + 100; ++j) t.Put("accounts", Key(j), "00001000");
      (void)engine_->Commit(std::move(t)).get();
    }
    for (int i = 0; i < kEvents; i += 100) {
      Transaction t;
      for (int j = i; j < i + 100; ++j) {
        EventAppend e;
        e.topic = "events";
        e.payload = std::string(100, 'p');
        e.type = "Bench";
        t.Append(std::move(e));
      }
      (void)engine_->Commit(std::move(t)).get();
    }
  }
  ~Fixture() {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  Engine& engine() { return *engine_; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<storage::Io> io_;
  std::unique_ptr<Engine> engine_;
};

Fixture& Shared() {
  static Fixture fixture;
  return fixture;
}

void BM_CommitPathCpu(benchmark::State& state) {
  Engine& e = Shared().engine();
  constexpr int kInFlight = 256;
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  std::uint64_t i = 0;
  for (auto _ : state) {
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight < kInFlight; });
      ++in_flight;
    }
    EventAppend ev;
    ev.topic = "bench";
    ev.payload = std::string(100, 'x');
    ev.type = "Bench";
    e.Commit(Transaction()
                 .Put("accounts", Key(static_cast<int>(i++ % kRows)), "00000999")
                 .Append(std::move(ev)),
             [&](Result<CommitResult> r) {
               if (!r.ok()) std::abort();
               std::lock_guard lock(mu);
               --in_flight;
               cv.notify_one();
             });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return in_flight == 0; });
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CommitPathCpu)->UseRealTime();

void BM_EngineGet(benchmark::State& state) {
  Engine& e = Shared().engine();
  std::mt19937 rng(1);
  for (auto _ : state) {
    auto row = e.Get("accounts", Key(static_cast<int>(rng() % kRows)));
    benchmark::DoNotOptimize(row);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EngineGet);

void BM_EngineScan100(benchmark::State& state) {
  Engine& e = Shared().engine();
  std::mt19937 rng(1);
  for (auto _ : state) {
    const std::string from = Key(static_cast<int>(rng() % (kRows - 100)));
    ScanOptions o;
    o.from = from;
    o.limit = 100;
    auto rows = e.Scan("accounts", o);
    benchmark::DoNotOptimize(rows);
  }
  state.SetItemsProcessed(state.iterations() * 100);
}
BENCHMARK(BM_EngineScan100);

void BM_Fetch(benchmark::State& state) {
  Engine& e = Shared().engine();
  std::mt19937 rng(1);
  FetchOptions o;
  o.max_events = 1000;
  std::uint64_t bytes = 0, events = 0;
  for (auto _ : state) {
    const Offset from(rng() % (kEvents - 1000));
    auto r = e.Fetch("events", PartitionId(0), from, o);
    if (!r.ok()) std::abort();
    bytes += r->records.size();
    events += r->events;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
}
BENCHMARK(BM_Fetch);

}  // namespace
}  // namespace lockstep::engine

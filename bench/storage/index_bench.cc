// Sparse index lookups: the cost of finding where an LSN's batch starts in a full 64 MiB
// segment indexed every 4 KiB (the per-fetch positioning cost), and of adding entries.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "storage/segment.h"

namespace lockstep::storage {
namespace {

void BM_IndexFind(benchmark::State& state) {
  const auto interval = static_cast<std::uint32_t>(state.range(0));
  constexpr std::uint64_t kSegmentBytes = 64 << 20;
  SparseIndex index(kSegmentBytes, interval);
  std::uint64_t lsn = 1;
  for (std::uint64_t pos = 64; pos < kSegmentBytes; pos += 1024, lsn += 4) {
    index.OnBatch(Lsn(lsn), pos);
  }
  // Lookups from a precomputed random sequence: the generator stays out of the timed loop.
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<std::uint64_t> pick(1, lsn);
  std::vector<Lsn> targets(4096);
  for (auto& t : targets) t = Lsn(pick(rng));
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(index.Find(targets[i++ & 4095]));
  state.counters["entries"] = static_cast<double>(index.size());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_IndexFind)->ArgName("interval_bytes")->Arg(4096)->Arg(64 << 10);

void BM_IndexOnBatch(benchmark::State& state) {
  constexpr std::uint64_t kSegmentBytes = 64 << 20;
  for (auto _ : state) {
    SparseIndex index(kSegmentBytes, 4096);
    std::uint64_t lsn = 1;
    for (std::uint64_t pos = 64; pos < kSegmentBytes; pos += 1024) index.OnBatch(Lsn(lsn++), pos);
    benchmark::DoNotOptimize(index.size());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * (kSegmentBytes / 1024)));
}
BENCHMARK(BM_IndexOnBatch);

}  // namespace
}  // namespace lockstep::storage

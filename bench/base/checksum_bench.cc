// Checksumming cost per batch size: XXH3-64 one-shot and over a header and a body without copying,
// as the log does for every batch it writes and recovery does for every batch it reads.
#include <benchmark/benchmark.h>

#include <vector>

#include "base/checksum.h"

namespace lockstep::base {
namespace {

void BM_Xxh3OneShot(benchmark::State& state) {
  std::vector<std::byte> data(static_cast<std::size_t>(state.range(0)), std::byte{0x5a});
  for (auto _ : state) benchmark::DoNotOptimize(Xxh3(data, 42));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Xxh3OneShot)
    ->ArgName("bytes")
    ->Arg(64)
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(64 << 10)
    ->Arg(1 << 20);

void BM_Xxh3Concat(benchmark::State& state) {
  std::vector<std::byte> header(32, std::byte{1});
  std::vector<std::byte> body(static_cast<std::size_t>(state.range(0)), std::byte{2});
  for (auto _ : state) benchmark::DoNotOptimize(Xxh3Concat(header, body, 42));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * (state.range(0) + 32));
}
BENCHMARK(BM_Xxh3Concat)->ArgName("bytes")->Arg(256)->Arg(4096)->Arg(1 << 20);

}  // namespace
}  // namespace lockstep::base

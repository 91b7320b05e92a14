// Batch encoding and parsing: framing records into a staging buffer (what Append does), encoding
// a batch header with its checksum (what the writer does per group), and parsing a batch back
// with and without checksum verification (what recovery and readers do).
#include <benchmark/benchmark.h>

#include <vector>

#include "storage/batch.h"

namespace lockstep::storage {
namespace {

std::vector<std::byte> Frames(std::size_t records, std::size_t record_bytes) {
  std::vector<std::byte> frames;
  std::vector<std::byte> record(record_bytes, std::byte{7});
  for (std::size_t i = 0; i < records; ++i) AppendFrame(frames, record);
  return frames;
}

BatchHeader HeaderFor(std::size_t records, const std::vector<std::byte>& frames) {
  BatchHeader h;
  h.total_bytes = static_cast<std::uint32_t>(kBatchHeaderBytes + frames.size());
  h.record_count = static_cast<std::uint32_t>(records);
  h.first_lsn = Lsn(1);
  h.last_lsn = Lsn(records);
  return h;
}

void BM_BatchAppendFrames(benchmark::State& state) {
  const auto records = static_cast<std::size_t>(state.range(0));
  const auto record_bytes = static_cast<std::size_t>(state.range(1));
  std::vector<std::byte> record(record_bytes, std::byte{7});
  std::vector<std::byte> frames;
  frames.reserve(records * (record_bytes + kRecordFrameBytes));
  for (auto _ : state) {
    frames.clear();
    for (std::size_t i = 0; i < records; ++i) AppendFrame(frames, record);
    benchmark::DoNotOptimize(frames.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * records));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * records * record_bytes));
}
BENCHMARK(BM_BatchAppendFrames)
    ->ArgNames({"records", "record_bytes"})
    ->Args({1, 200})
    ->Args({16, 200})
    ->Args({256, 200})
    ->Args({256, 4096});

void BM_BatchEncodeHeader(benchmark::State& state) {
  const auto records = static_cast<std::size_t>(state.range(0));
  const auto frames = Frames(records, static_cast<std::size_t>(state.range(1)));
  const BatchHeader h = HeaderFor(records, frames);
  BatchHeaderBytes out;
  for (auto _ : state) benchmark::DoNotOptimize(EncodeBatchHeader(h, frames, 99, out));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * records));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frames.size()));
}
BENCHMARK(BM_BatchEncodeHeader)
    ->ArgNames({"records", "record_bytes"})
    ->Args({1, 200})
    ->Args({16, 200})
    ->Args({256, 200})
    ->Args({256, 4096});

void BM_BatchParse(benchmark::State& state) {
  const auto records = static_cast<std::size_t>(state.range(0));
  const bool verify = state.range(1) != 0;
  const auto frames = Frames(records, 200);
  BatchHeaderBytes header;
  EncodeBatchHeader(HeaderFor(records, frames), frames, 99, header);
  std::vector<std::byte> segment(header.begin(), header.end());
  segment.insert(segment.end(), frames.begin(), frames.end());
  const ParseBatchOptions options{99, verify, verify};
  for (auto _ : state) benchmark::DoNotOptimize(ParseBatch(segment, 0, options).state);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * records));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * segment.size()));
}
BENCHMARK(BM_BatchParse)
    ->ArgNames({"records", "verify"})
    ->Args({16, 0})
    ->Args({16, 1})
    ->Args({256, 0})
    ->Args({256, 1});

}  // namespace
}  // namespace lockstep::storage

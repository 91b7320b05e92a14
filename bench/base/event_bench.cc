// Event record encoding and decoding: the per-event CPU cost at commit (encode once) and in a
// consumer or verifier (decode with checksum), for a typical ~200-byte TransferCompleted event.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "base/event_record.h"

namespace lockstep::base {
namespace {

struct Typical {
  std::string key = "account-000042";
  std::string payload = std::string(200, 'p');
  std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  std::vector<EventHeader> headers;
  EventFields fields;
  Typical() {
    headers = {{"trace-id", {reinterpret_cast<const std::byte*>(trace.data()), trace.size()}}};
    fields.key = Bytes(reinterpret_cast<const std::byte*>(key.data()), key.size());
    fields.payload = Bytes(reinterpret_cast<const std::byte*>(payload.data()), payload.size());
    fields.type = "TransferCompleted";
    fields.schema_version = 1;
    fields.headers = headers;
    fields.timestamp_ms = 1'700'000'000'000;
  }
};

void BM_EventEncode(benchmark::State& state) {
  Typical t;
  std::vector<std::byte> out(EncodedEventBytes(t.fields));
  std::uint64_t offset = 0;
  for (auto _ : state) {
    ++offset;
    EncodeEvent(t.fields, Offset(offset), Lsn(offset), out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_EventEncode);

void BM_EventDecode(benchmark::State& state) {
  Typical t;
  std::vector<std::byte> bytes(EncodedEventBytes(t.fields));
  EncodeEvent(t.fields, Offset(1), Lsn(1), bytes);
  for (auto _ : state) benchmark::DoNotOptimize(DecodeEvent(bytes).ok());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK(BM_EventDecode);

}  // namespace
}  // namespace lockstep::base

// Fuzz target: the event record decoder and the transaction record reader (what recovery replays
// and what a consumer decodes), over arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "base/event_record.h"
#include "engine/txn_record.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const lockstep::base::Bytes bytes(reinterpret_cast<const std::byte*>(data), size);
  // Events back to back, as a fetch returns them.
  lockstep::base::Bytes rest = bytes;
  while (!rest.empty()) {
    auto event = lockstep::base::DecodeEvent(rest);
    if (!event.ok()) break;
    std::size_t headers = 0;
    event->ForEachHeader([&](const auto&) { ++headers; });
    if (headers != event->header_count()) __builtin_trap();
    rest = rest.subspan(event->record().size());
  }
  auto txn = lockstep::engine::TxnRecordReader::Open(bytes);
  if (!txn.ok()) return 0;
  for (int i = 0; i < 100000; ++i) {
    auto op = txn->Next();
    if (!op.ok() || !*op) break;
    if (const auto* ev = std::get_if<lockstep::engine::EventOp>(&**op)) {
      (void)lockstep::base::DecodeEvent(ev->record);
    }
  }
  return 0;
}

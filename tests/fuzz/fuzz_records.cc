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
  // The fetch path's walk by pieces (runs whole, their records walked by length), for
  // topic 1, partition 0: the ids the seeds use first.
  auto pieces = lockstep::engine::TxnRecordReader::Open(bytes, {.verify_event_checksums = false});
  if (pieces.ok()) {
    for (int i = 0; i < 100000; ++i) {
      auto piece =
          pieces->NextPieceIn(lockstep::engine::TopicId(1), lockstep::engine::PartitionId(0));
      if (!piece.ok() || !*piece) break;
      lockstep::base::Bytes records = (*piece)->records;
      while (!records.empty()) {
        auto record = lockstep::engine::NextRecordIn(records);
        if (!record.ok()) break;
        if (record->data() < bytes.data() ||
            record->data() + record->size() > bytes.data() + bytes.size()) {
          __builtin_trap();
        }
      }
    }
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

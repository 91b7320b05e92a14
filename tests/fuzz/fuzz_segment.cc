// Fuzz target: the batch parser and recovery's scan over arbitrary segment bytes, and the
// offline verifier over the same directory. The first input byte chooses whether the rest is a
// whole segment file, or a salt (8 bytes, little endian) and the batches to put behind a valid
// header with that salt (so that fuzzing explores the batch region, not the header checksum).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/verify.h"
#include "storage/batch.h"
#include "storage/fault_io.h"
#include "storage/log.h"
#include "storage/segment.h"

namespace {

using namespace lockstep;

// Walks the batches as a reader that trusts nothing (and as one that skips checksums).
void WalkBatches(storage::ConstBytes segment, std::uint64_t salt, bool verify) {
  std::uint64_t pos = storage::kSegmentHeaderBytes;
  for (int i = 0; i < 100000 && pos < segment.size(); ++i) {
    const storage::BatchView batch = storage::ParseBatch(segment, pos, {salt, verify, true});
    if (batch.state != storage::BatchState::kValid) {
      (void)storage::FindValidBatchAfter(segment, pos, salt);
      return;
    }
    storage::FrameCursor cursor(batch.frames);
    storage::ConstBytes record;
    while (cursor.Next(&record)) {
    }
    pos += batch.header.total_bytes;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool with_header = (data[0] & 1) != 0;
  const auto* body = reinterpret_cast<const std::byte*>(data + 1);
  std::size_t body_size = size - 1;
  std::vector<std::byte> file;
  std::uint64_t salt = 0;
  if (with_header) {
    if (body_size < 8) return 0;
    for (int i = 0; i < 8; ++i) salt |= std::uint64_t{data[1 + i]} << (8 * i);
    body += 8;
    body_size -= 8;
    storage::SegmentHeader h;
    h.first_lsn = base::Lsn(1);
    h.capacity_bytes = storage::kSegmentHeaderBytes + body_size;
    h.salt = salt;
    h.batch_bytes_max = 64 << 10;
    storage::SegmentHeaderBytes bytes;
    storage::EncodeSegmentHeader(h, bytes);
    file.assign(bytes.begin(), bytes.end());
  }
  file.insert(file.end(), body, body + body_size);
  if (file.size() >= storage::kSegmentHeaderBytes) {
    auto header =
        storage::DecodeSegmentHeader(storage::ConstBytes(file).first(storage::kSegmentHeaderBytes));
    if (header.ok()) salt = header->salt;
    WalkBatches(file, salt, true);
    WalkBatches(file, salt, false);
  }

  // Recovery and the verifier over a data directory holding this one segment.
  storage::FaultInjectingIo io;
  if (!io.CreateDir("db").ok() || !io.CreateDir("db/log").ok()) __builtin_trap();
  auto f = io.CreateFile("db/log/" + storage::SegmentFileName(base::Lsn(1)));
  if (!f.ok()) __builtin_trap();
  const storage::ConstBytes part(file);
  if (!io.Write(**f, 0, std::span<const storage::ConstBytes>(&part, 1)).ok() ||
      !io.Sync(**f).ok() || !io.SyncDir("db/log").ok()) {
    __builtin_trap();
  }
  f->reset();
  engine::VerifyReport report;
  (void)engine::VerifyDataDir(io, "db", report);
  storage::LogOptions options;
  options.dir = "db/log";
  options.io = &io;
  options.segment_bytes = 1 << 20;
  options.batch_bytes_max = 64 << 10;
  options.staging_bytes_max = 64 << 10;
  options.prepare_in_background = false;
  (void)storage::Log::Open(options);
  return 0;
}

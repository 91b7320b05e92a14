#pragma once
// Checkpoint files: a durable, verifiable byte stream tagged with an LSN. The engine decides what
// the stream holds (engine/engine_checkpoint.cc); this file makes it durable the DESIGN.md way and
// reads it back only if every byte verifies.
//
// Writing: the stream goes to `NNNNNNNNNNNNNNNNNNNN.ckpt.tmp` (the LSN, 20 digits) in chunks of
// up to chunk_bytes, each written and fdatasync'd on its own and paced to bytes_per_second, so a
// checkpoint never floods the disk queue the log's group commits wait in. Finish() then syncs,
// renames to `NNNNNNNNNNNNNNNNNNNN.ckpt` and syncs the directory: a `.ckpt` file is complete.
//
// File format (little-endian), version 1:
//   file  = chunk*, end
//   chunk = magic:u32 = "LSCK", version:u16 = 1, kind:u16 (1 data, 2 end), index:u32,
//           payload_bytes:u32, lsn:u64, checksum:u64, payload
//   end   = a chunk of kind 2 whose payload is chunk_count:u32, stream_bytes:u64
//   checksum = XXH3-64 (seed: the LSN) of the header's first 24 bytes and the payload.
// The reader requires every chunk to verify, the indexes to be dense from 0, the LSN to match the
// name, and the end chunk to agree on count and length with nothing after it: a torn, truncated or
// damaged file is reported (kDataLoss), never half read.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/strong_id.h"
#include "storage/io.h"

namespace lockstep::storage {

using base::Lsn;

struct CheckpointWriteOptions {
  std::size_t chunk_bytes = 1 << 20;
  std::uint64_t bytes_per_second = 256ull << 20;  // 0: unpaced
};

std::string CheckpointFileName(Lsn lsn);
// The LSN of a finished checkpoint's file name; nullopt for anything else (including .tmp).
std::optional<Lsn> ParseCheckpointFileName(std::string_view name);

class CheckpointWriter {
 public:
  // Creates (replacing a leftover) the temporary file in `dir`, which must exist.
  static Result<std::unique_ptr<CheckpointWriter>> Create(Io& io, std::string dir, Lsn lsn,
                                                          CheckpointWriteOptions options = {});
  ~CheckpointWriter();  // an unfinished checkpoint's temporary file is removed (best effort)
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Appends to the stream; full chunks are written, synced and paced as they fill.
  Status Append(ConstBytes bytes);
  // Writes the rest and the end chunk, syncs, renames into place and syncs the directory.
  Status Finish();
  std::uint64_t stream_bytes() const { return stream_bytes_; }

 private:
  CheckpointWriter(Io& io, std::string dir, Lsn lsn, CheckpointWriteOptions options,
                   std::unique_ptr<File> file);
  Status WriteChunk(std::uint16_t kind, ConstBytes payload);

  Io& io_;
  std::string dir_;
  Lsn lsn_;
  CheckpointWriteOptions options_;
  std::unique_ptr<File> file_;
  std::vector<std::byte> pending_;
  std::vector<std::byte> chunk_;
  std::uint64_t file_bytes_ = 0;
  std::uint64_t stream_bytes_ = 0;
  std::uint32_t chunks_ = 0;
  bool finished_ = false;
  std::chrono::steady_clock::time_point started_;
};

// Finished checkpoints in `dir`, newest first. A missing directory has none.
Result<std::vector<Lsn>> ListCheckpoints(Io& io, const std::string& dir);
// The whole verified stream of the checkpoint for `lsn` in `dir`, or kDataLoss saying what is
// wrong with it (kNotFound if there is no such file).
Result<std::vector<std::byte>> ReadCheckpoint(Io& io, const std::string& dir, Lsn lsn);
// Removes the checkpoint file for `lsn` and leftover temporary files (not synced: a checkpoint
// that comes back after a crash is merely older, never wrong).
Status RemoveCheckpoint(Io& io, const std::string& dir, Lsn lsn);

}  // namespace lockstep::storage

// Fuzz target: the checkpoint loader. The first input byte chooses between arbitrary bytes as
// the checkpoint *file* (its framing and checksums must refuse them), and arbitrary bytes as
// the checkpoint *stream* inside a well-formed file (the engine's parser of tables, topics,
// groups and idempotency keys must refuse them); then the engine opens the data directory,
// loading it.
#include <cstddef>
#include <cstdint>

#include "storage/checkpoint_file.h"
#include "tests/fuzz/fuzz_data.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lockstep;
  if (size == 0) return 0;
  storage::FaultInjectingIo io;
  const base::Lsn lsn(fuzz::MakeDataDir(io));
  if (lsn == base::Lsn()) __builtin_trap();
  const std::string dir = "db/checkpoints";
  (void)io.CreateDir(dir);
  const storage::ConstBytes bytes(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  if ((data[0] & 1) != 0) {
    auto writer = storage::CheckpointWriter::Create(io, dir, lsn, {});
    if (!writer.ok() || !(*writer)->Append(bytes).ok() || !(*writer)->Finish().ok()) {
      __builtin_trap();
    }
  } else {
    auto f = io.CreateFile(dir + "/" + storage::CheckpointFileName(lsn));
    if (!f.ok() || !io.Write(**f, 0, std::span<const storage::ConstBytes>(&bytes, 1)).ok() ||
        !io.Sync(**f).ok() || !io.SyncDir(dir).ok()) {
      __builtin_trap();
    }
    (void)storage::ReadCheckpoint(io, dir, lsn);
  }
  (void)engine::Engine::Open(fuzz::FuzzEngineOptions(io));
  return 0;
}

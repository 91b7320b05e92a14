// Writes the fuzz targets' seed inputs (corpus/<target>/seed-*): well-formed frames, records,
// segments and checkpoints made by the real encoders, so that fuzzing starts from deep inside
// each format. Run after a format changes:  build/release/tests/fuzz/fuzz_make_seeds
// tests/fuzz/corpus
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/txn_record.h"
#include "protocol/wire/frame.h"
#include "storage/batch.h"
#include "storage/checkpoint_file.h"
#include "storage/fault_io.h"
#include "storage/segment.h"
#include "tests/fuzz/fuzz_data.h"

namespace {

using namespace lockstep;
namespace fb = wire::fb;

std::filesystem::path out_dir;

void Write(const std::string& target, const std::string& name, std::uint8_t first,
           storage::ConstBytes bytes) {
  std::filesystem::create_directories(out_dir / target);
  const auto path = out_dir / target / ("seed-" + name);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fwrite(&first, 1, 1, f);
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

std::vector<std::byte> Frame(flatbuffers::FlatBufferBuilder& fbb) {
  const auto header = wire::EncodeFrameHeader(fbb.GetSize(), 0);
  std::vector<std::byte> out(header.size() + fbb.GetSize());
  std::memcpy(out.data(), header.data(), header.size());
  std::memcpy(out.data() + header.size(), fbb.GetBufferPointer(), fbb.GetSize());
  return out;
}

std::vector<std::byte> CommitFrame() {
  flatbuffers::FlatBufferBuilder fbb;
  auto key = fbb.CreateVector(std::vector<std::uint8_t>{'k', '1'});
  auto pre =
      fb::CreatePrecondition(fbb, fb::PreconditionKind::Version, fbb.CreateString("t"), key, 7);
  auto write =
      fb::CreateWrite(fbb, fbb.CreateString("t"), fbb.CreateVector(std::vector<std::uint8_t>{'k'}),
                      fbb.CreateVector(std::vector<std::uint8_t>{'v'}), false);
  auto header = fb::CreateEventHeader(fbb, fbb.CreateString("h"),
                                      fbb.CreateVector(std::vector<std::uint8_t>{'x'}));
  auto event = fb::CreateEvent(
      fbb, fbb.CreateString("topic"), -1, fbb.CreateVector(std::vector<std::uint8_t>{'c'}),
      fbb.CreateVector(std::vector<std::uint8_t>{'p', 'p'}), fbb.CreateString("Type"), 2,
      fbb.CreateVector(std::vector<flatbuffers::Offset<fb::EventHeader>>{header}), -1);
  auto offset =
      fb::CreateOffsetCommit(fbb, fbb.CreateString("g"), 1, fbb.CreateString("topic"), 0, 3);
  auto commit = fb::CreateCommitRequest(
      fbb, fbb.CreateVector(std::vector<flatbuffers::Offset<fb::Precondition>>{pre}),
      fbb.CreateVector(std::vector<flatbuffers::Offset<fb::Write>>{write}),
      fbb.CreateVector(std::vector<flatbuffers::Offset<fb::Event>>{event}),
      fbb.CreateVector(std::vector<flatbuffers::Offset<fb::OffsetCommit>>{offset}),
      fbb.CreateVector(std::vector<std::uint8_t>{'i', 'd'}));
  fbb.Finish(fb::CreateRequestMessage(fbb, 1, fb::Request::CommitRequest, commit.Union()));
  return Frame(fbb);
}

std::vector<std::byte> HandshakeFrame() {
  flatbuffers::FlatBufferBuilder fbb;
  auto hs = fb::CreateHandshakeRequest(fbb, wire::kMajorVersion, wire::kMinorVersion,
                                       fbb.CreateString("seed"));
  fbb.Finish(fb::CreateRequestMessage(fbb, 0, fb::Request::HandshakeRequest, hs.Union()));
  return Frame(fbb);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  // Frames: one commit read in 8-byte pieces; a handshake and a commit pipelined, whole.
  const auto commit = CommitFrame();
  Write("frame", "commit", 7, commit);
  const auto handshake = HandshakeFrame();
  std::vector<std::byte> both(handshake.size() + commit.size());
  std::memcpy(both.data(), handshake.data(), handshake.size());
  std::memcpy(both.data() + handshake.size(), commit.data(), commit.size());
  Write("frame", "pipelined", 63, both);

  // The checkpoint target's data directory, then a checkpoint of it.
  storage::FaultInjectingIo io;
  if (fuzz::MakeDataDir(io) == 0) return 1;
  {
    auto e = engine::Engine::Open(fuzz::FuzzEngineOptions(io));
    if (!e.ok() || !(*e)->Checkpoint().ok()) return 1;
  }
  const std::string segment = "db/log/" + storage::SegmentFileName(base::Lsn(1));
  auto bytes = io.ReadAll(segment);
  if (!bytes.ok()) return 1;
  const storage::ConstBytes file(*bytes);
  auto header = storage::DecodeSegmentHeader(file.first(storage::kSegmentHeaderBytes));
  if (!header.ok()) return 1;
  std::uint64_t pos = storage::kSegmentHeaderBytes;
  int records = 0;
  for (;;) {
    const auto batch = storage::ParseBatch(file, pos, {header->salt, true, true});
    if (batch.state != storage::BatchState::kValid) break;
    storage::FrameCursor cursor(batch.frames);
    storage::ConstBytes record;
    while (cursor.Next(&record)) {
      Write("records", "txn-" + std::to_string(records), static_cast<std::uint8_t>(record[0]),
            record.subspan(1));  // the target reads the whole input: first byte included
      auto txn = engine::TxnRecordReader::Open(record);
      for (int op = 0; txn.ok(); ++op) {
        auto next = txn->Next();
        if (!next.ok() || !*next) break;
        if (const auto* ev = std::get_if<engine::EventOp>(&**next)) {
          Write("records", "event-" + std::to_string(records),
                static_cast<std::uint8_t>(ev->record[0]), ev->record.subspan(1));
        }
      }
      ++records;
    }
    pos += batch.header.total_bytes;
  }
  Write("segment", "whole", 0, file);
  // Behind a header the target makes: the salt (8 bytes, little endian), then the batches.
  std::vector<std::byte> body(8);
  for (int i = 0; i < 8; ++i)
    body[static_cast<std::size_t>(i)] = static_cast<std::byte>(header->salt >> (8 * i));
  body.insert(body.end(), file.begin() + storage::kSegmentHeaderBytes,
              file.begin() + static_cast<std::ptrdiff_t>(pos));
  Write("segment", "body", 1, body);
  auto checkpoints = storage::ListCheckpoints(io, "db/checkpoints");
  if (!checkpoints.ok() || checkpoints->empty()) return 1;
  const auto lsn = checkpoints->front();
  auto cp_file = io.ReadAll("db/checkpoints/" + storage::CheckpointFileName(lsn));
  auto stream = storage::ReadCheckpoint(io, "db/checkpoints", lsn);
  if (!cp_file.ok() || !stream.ok()) return 1;
  Write("checkpoint", "file", 0, *cp_file);
  Write("checkpoint", "stream", 1, *stream);
  std::printf("seeds written to %s (%d records)\n", out_dir.c_str(), records);
  return 0;
}

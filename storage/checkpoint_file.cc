#include "storage/checkpoint_file.h"

#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "base/checksum.h"
#include "base/endian.h"

namespace lockstep::storage {
namespace {

constexpr std::uint32_t kMagic = 0x4B43534C;  // "LSCK" in file order
constexpr std::uint16_t kVersion = 1;
constexpr std::uint16_t kData = 1;
constexpr std::uint16_t kEnd = 2;
constexpr std::size_t kHeaderBytes = 32;
constexpr std::size_t kCheckedHeaderBytes = 24;  // everything before the checksum
constexpr std::size_t kEndPayloadBytes = 12;
constexpr std::string_view kSuffix = ".ckpt";
constexpr std::string_view kTmpSuffix = ".ckpt.tmp";

std::uint64_t ChunkChecksum(const std::byte* header, ConstBytes payload, Lsn lsn) {
  return base::Xxh3Concat(ConstBytes(header, kCheckedHeaderBytes), payload, lsn.value());
}

}  // namespace

std::string CheckpointFileName(Lsn lsn) { return fmt::format("{:020}{}", lsn.value(), kSuffix); }

std::optional<Lsn> ParseCheckpointFileName(std::string_view name) {
  if (name.size() != 20 + kSuffix.size() || name.substr(20) != kSuffix) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : name.substr(0, 20)) {
    if (c < '0' || c > '9') return std::nullopt;
    const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return Lsn(v);
}

CheckpointWriter::CheckpointWriter(Io& io, std::string dir, Lsn lsn, CheckpointWriteOptions options,
                                   std::unique_ptr<File> file)
    : io_(io),
      dir_(std::move(dir)),
      lsn_(lsn),
      options_(options),
      file_(std::move(file)),
      started_(std::chrono::steady_clock::now()) {
  options_.chunk_bytes = std::clamp<std::size_t>(options_.chunk_bytes, 4096, 64 << 20);
  pending_.reserve(options_.chunk_bytes);
}

Result<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Create(Io& io, std::string dir, Lsn lsn,
                                                                   CheckpointWriteOptions options) {
  const std::string tmp = JoinPath(dir, fmt::format("{:020}{}", lsn.value(), kTmpSuffix));
  Status removed = io.Remove(tmp);  // a leftover of a crash while writing this very LSN
  if (!removed.ok() && removed.code() != base::StatusCode::kNotFound) return removed;
  LOCKSTEP_ASSIGN_OR_RETURN(std::unique_ptr<File> file, io.CreateFile(tmp));
  return std::unique_ptr<CheckpointWriter>(
      new CheckpointWriter(io, std::move(dir), lsn, options, std::move(file)));
}

CheckpointWriter::~CheckpointWriter() {
  if (!finished_ && file_) {
    const std::string tmp = file_->path();
    file_.reset();
    (void)io_.Remove(tmp);
  }
}

Status CheckpointWriter::Append(ConstBytes bytes) {
  stream_bytes_ += bytes.size();
  while (!bytes.empty()) {
    const std::size_t take = std::min(bytes.size(), options_.chunk_bytes - pending_.size());
    pending_.insert(pending_.end(), bytes.begin(),
                    bytes.begin() + static_cast<std::ptrdiff_t>(take));
    bytes = bytes.subspan(take);
    if (pending_.size() == options_.chunk_bytes) {
      LOCKSTEP_RETURN_IF_ERROR(WriteChunk(kData, pending_));
      pending_.clear();
    }
  }
  return Status::Ok();
}

Status CheckpointWriter::WriteChunk(std::uint16_t kind, ConstBytes payload) {
  chunk_.resize(kHeaderBytes + payload.size());
  std::byte* h = chunk_.data();
  base::StoreLe32(h, kMagic);
  base::StoreLe16(h + 4, kVersion);
  base::StoreLe16(h + 6, kind);
  base::StoreLe32(h + 8, chunks_);
  base::StoreLe32(h + 12, static_cast<std::uint32_t>(payload.size()));
  base::StoreLe64(h + 16, lsn_.value());
  base::StoreLe64(h + 24, ChunkChecksum(h, payload, lsn_));
  std::copy(payload.begin(), payload.end(), h + kHeaderBytes);
  const ConstBytes parts[] = {chunk_};
  LOCKSTEP_RETURN_IF_ERROR(io_.Write(*file_, file_bytes_, parts));
  LOCKSTEP_RETURN_IF_ERROR(io_.Sync(*file_));
  file_bytes_ += chunk_.size();
  ++chunks_;
  if (options_.bytes_per_second > 0) {
    // Pacing: never ahead of bytes_per_second since the start.
    const auto due =
        started_ + std::chrono::microseconds(file_bytes_ * 1'000'000 / options_.bytes_per_second);
    std::this_thread::sleep_until(due);
  }
  return Status::Ok();
}

Status CheckpointWriter::Finish() {
  LOCKSTEP_ASSERT(!finished_);
  if (!pending_.empty()) {
    LOCKSTEP_RETURN_IF_ERROR(WriteChunk(kData, pending_));
    pending_.clear();
  }
  std::byte end[kEndPayloadBytes];
  base::StoreLe32(end, chunks_);
  base::StoreLe64(end + 4, stream_bytes_);
  LOCKSTEP_RETURN_IF_ERROR(WriteChunk(kEnd, end));
  const std::string tmp = file_->path();
  file_.reset();
  LOCKSTEP_RETURN_IF_ERROR(io_.Rename(tmp, JoinPath(dir_, CheckpointFileName(lsn_))));
  LOCKSTEP_RETURN_IF_ERROR(io_.SyncDir(dir_));
  finished_ = true;
  return Status::Ok();
}

Result<std::vector<Lsn>> ListCheckpoints(Io& io, const std::string& dir) {
  auto names = io.ListDir(dir);
  if (!names.ok()) {
    if (names.status().code() == base::StatusCode::kNotFound) return std::vector<Lsn>();
    return names.status();
  }
  std::vector<Lsn> out;
  for (const std::string& name : *names) {
    if (auto lsn = ParseCheckpointFileName(name)) out.push_back(*lsn);
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

Result<std::vector<std::byte>> ReadCheckpoint(Io& io, const std::string& dir, Lsn lsn) {
  const std::string path = JoinPath(dir, CheckpointFileName(lsn));
  LOCKSTEP_ASSIGN_OR_RETURN(std::unique_ptr<File> file, io.OpenFile(path));
  LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t size, io.FileSize(*file));
  auto damaged = [&](std::uint64_t at, std::string_view what) {
    return base::DataLoss(fmt::format("checkpoint {} at byte {}: {}", path, at, what));
  };
  if (size == 0) return damaged(0, "empty file");
  LOCKSTEP_ASSIGN_OR_RETURN(std::shared_ptr<const Mapping> map, io.Map(*file, size));
  const ConstBytes bytes = map->bytes();
  std::vector<std::byte> stream;
  std::uint64_t at = 0;
  for (std::uint32_t index = 0;; ++index) {
    if (bytes.size() - at < kHeaderBytes) return damaged(at, "truncated chunk header");
    const std::byte* h = bytes.data() + at;
    if (base::LoadLe32(h) != kMagic) return damaged(at, "bad chunk magic");
    if (base::LoadLe16(h + 4) != kVersion) {
      return damaged(at, fmt::format("unknown version {}", base::LoadLe16(h + 4)));
    }
    const std::uint16_t kind = base::LoadLe16(h + 6);
    const std::uint32_t payload_bytes = base::LoadLe32(h + 12);
    if (base::LoadLe32(h + 8) != index) return damaged(at, "chunk out of order");
    if (base::LoadLe64(h + 16) != lsn.value()) return damaged(at, "LSN differs from the name");
    if (bytes.size() - at - kHeaderBytes < payload_bytes) return damaged(at, "truncated chunk");
    const ConstBytes payload(h + kHeaderBytes, payload_bytes);
    if (base::LoadLe64(h + 24) != ChunkChecksum(h, payload, lsn)) {
      return damaged(at, "checksum mismatch");
    }
    at += kHeaderBytes + payload_bytes;
    if (kind == kData) {
      stream.insert(stream.end(), payload.begin(), payload.end());
      continue;
    }
    if (kind != kEnd || payload_bytes != kEndPayloadBytes) return damaged(at, "bad chunk kind");
    if (base::LoadLe32(payload.data()) != index ||
        base::LoadLe64(payload.data() + 4) != stream.size()) {
      return damaged(at, "end chunk disagrees with the chunks before it");
    }
    if (at != bytes.size()) return damaged(at, "bytes after the end chunk");
    return stream;
  }
}

Status RemoveCheckpoint(Io& io, const std::string& dir, Lsn lsn) {
  Status removed = io.Remove(JoinPath(dir, CheckpointFileName(lsn)));
  if (!removed.ok() && removed.code() != base::StatusCode::kNotFound) return removed;
  return Status::Ok();
}

}  // namespace lockstep::storage

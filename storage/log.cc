#include "storage/log.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "base/clock.h"
#include "base/crash_site.h"
#include "base/endian.h"
#include "base/planted_bug.h"

namespace lockstep::storage {
namespace {

constexpr std::string_view kLockFileName = "LOCK";
constexpr std::uint64_t kMinSegmentBytes = 4096;

Status ValidateOptions(const LogOptions& o) {
  if (o.io == nullptr) return base::InvalidArgument("log options: io is null");
  if (o.dir.empty()) return base::InvalidArgument("log options: dir is empty");
  if (o.segment_bytes < kMinSegmentBytes) {
    return base::InvalidArgument(fmt::format("log options: segment_bytes {} is below {}",
                                             o.segment_bytes, kMinSegmentBytes));
  }
  if (o.batch_bytes_max < kBatchHeaderBytes + kRecordFrameBytes + 1 ||
      o.batch_bytes_max > o.segment_bytes - kSegmentHeaderBytes) {
    return base::InvalidArgument(fmt::format(
        "log options: batch_bytes_max {} must lie in [{}, segment_bytes - {}]", o.batch_bytes_max,
        kBatchHeaderBytes + kRecordFrameBytes + 1, kSegmentHeaderBytes));
  }
  if (o.staging_bytes_max < o.batch_bytes_max) {
    return base::InvalidArgument("log options: staging_bytes_max is below batch_bytes_max");
  }
  if (o.index_interval_bytes == 0) {
    return base::InvalidArgument("log options: index_interval_bytes is 0");
  }
  return Status::Ok();
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

Preallocation ChoosePreallocation(Preallocation configured, double bytes_per_s,
                                  std::uint64_t zero_fill_below_bytes_per_s) {
  if (configured != Preallocation::kAdaptive) return configured;
  return bytes_per_s < static_cast<double>(zero_fill_below_bytes_per_s) ? Preallocation::kZeroFill
                                                                        : Preallocation::kFallocate;
}

void Log::Staging::Clear() {
  frames.clear();
  callbacks.clear();
  first_lsn = Lsn();
  done_records = 0;
  done_bytes = 0;
}

Log::Log(LogOptions options)
    : options_(std::move(options)),
      io_(*options_.io),
      salt_rng_(options_.salt_seed != 0 ? options_.salt_seed : std::random_device{}()) {}

Result<std::unique_ptr<Log>> Log::Open(LogOptions options, RecoveryReport* report) {
  LOCKSTEP_RETURN_IF_ERROR(ValidateOptions(options));
  if (!options.now_ms) options.now_ms = base::WallClockMs;
  std::unique_ptr<Log> log(new Log(std::move(options)));
  RecoveryReport local;
  if (report == nullptr) report = &local;
  *report = RecoveryReport{};
  LOCKSTEP_RETURN_IF_ERROR(log->Recover(report));
  if (log->options_.writer_thread) {
    // spdlog builds its registry on first use; do that here, before the log's threads may log
    // concurrently (the registry's one-time initialization is invisible to ThreadSanitizer).
    (void)spdlog::default_logger_raw();
    log->writer_ = std::thread([raw = log.get()] { raw->WriterLoop(); });
    if (log->options_.prepare_in_background) {
      log->spare_wanted_ = true;
      log->preparer_ = std::thread([raw = log.get()] { raw->PreparerLoop(); });
    }
  }
  return log;
}

Log::~Log() {
  if (writer_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    writer_cv_.notify_all();
    writer_.join();
  } else if (active_ != nullptr) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;  // callbacks that append again get kUnavailable: the drain ends
    }
    while (CommitOneGroup()) {
    }
  }
  if (preparer_.joinable()) {
    {
      std::lock_guard lock(spare_mu_);
      spare_stop_ = true;
    }
    spare_cv_.notify_all();
    preparer_.join();
  }
  if (spare_) {
    spare_->file.reset();
    (void)io_.Remove(spare_->path);  // best effort: recovery removes leftovers too
  }
}

// ---- Recovery ----------------------------------------------------------------------------

Status Log::Recover(RecoveryReport* report) {
  const std::string& dir = options_.dir;
  LOCKSTEP_RETURN_IF_ERROR(io_.CreateDir(dir));
  LOCKSTEP_ASSIGN_OR_RETURN(lock_, io_.LockFile(JoinPath(dir, kLockFileName)));
  LOCKSTEP_ASSIGN_OR_RETURN(std::vector<std::string> names, io_.ListDir(dir));
  LOCKSTEP_RETURN_IF_ERROR(RemoveTempFiles(names, report));

  std::vector<Lsn> firsts;
  for (const auto& name : names) {
    if (auto lsn = ParseSegmentFileName(name)) firsts.push_back(*lsn);
  }
  std::sort(firsts.begin(), firsts.end());
  if (firsts.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(SpareFile spare, PrepareSpare());
    LOCKSTEP_RETURN_IF_ERROR(InstallSegment(std::move(spare), Lsn(1)));
  }
  for (std::size_t i = 0; i < firsts.size(); ++i) {
    const Lsn expected = i == 0 ? firsts[0] : Lsn(segments_.back()->last_lsn.load() + 1);
    LOCKSTEP_RETURN_IF_ERROR(
        LoadSegment(SegmentFileName(firsts[i]), expected, i + 1 == firsts.size(), report));
  }
  if (segments_.back()->end_pos.load() > kSegmentHeaderBytes || report->torn_tail) {
    LOCKSTEP_RETURN_IF_ERROR(ReplaceWithDurableCopy());
  }
  active_ = segments_.back();
  // The directory too: a segment renamed into place but not yet synced in becomes durable here.
  LOCKSTEP_RETURN_IF_ERROR(io_.SyncDir(dir));
  active_since_ns_ = base::MonotonicNs();
  active_start_pos_ = active_->end_pos.load();
  const std::uint64_t last = active_->last_lsn.load();
  next_lsn_.store(last + 1, std::memory_order_release);
  durable_lsn_.store(last);
  completed_lsn_.store(last);
  report->segments = static_cast<std::uint32_t>(segments_.size());
  report->first_lsn = segments_.front()->first_lsn();
  report->last_lsn = Lsn(last);
  if (report->torn_tail) {
    spdlog::warn("log {}: cut a torn tail at {} position {} ({}); the log ends at LSN {}", dir,
                 report->torn_segment, report->torn_position, report->torn_reason, last);
  }
  return Status::Ok();
}

Status Log::RemoveTempFiles(const std::vector<std::string>& names, RecoveryReport* report) {
  for (const auto& name : names) {
    if (!EndsWith(name, kTempSuffix)) continue;
    LOCKSTEP_RETURN_IF_ERROR(io_.Remove(JoinPath(options_.dir, name)));
    report->removed_temp_files.push_back(name);
  }
  if (!report->removed_temp_files.empty()) LOCKSTEP_RETURN_IF_ERROR(io_.SyncDir(options_.dir));
  return Status::Ok();
}

Status Log::LoadSegment(const std::string& name, Lsn expected_first, bool is_last,
                        RecoveryReport* report) {
  const std::string path = JoinPath(options_.dir, name);
  auto corrupt = [&](std::uint64_t pos, const std::string& what) {
    return base::DataLoss(fmt::format("log {}: segment {} at position {}: {}; refusing to open",
                                      options_.dir, name, pos, what));
  };
  LOCKSTEP_ASSIGN_OR_RETURN(std::unique_ptr<File> file, io_.OpenFile(path));
  LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t size, io_.FileSize(*file));
  if (size < kSegmentHeaderBytes) return corrupt(0, fmt::format("file is only {} bytes", size));
  LOCKSTEP_ASSIGN_OR_RETURN(std::shared_ptr<const Mapping> mapping, io_.Map(*file, size));
  auto header = DecodeSegmentHeader(mapping->bytes());
  if (!header.ok()) return corrupt(0, std::string(header.status().message()));
  if (header->first_lsn != *ParseSegmentFileName(name)) {
    return corrupt(0, fmt::format("header names first LSN {}", header->first_lsn.value()));
  }
  if (header->capacity_bytes != size) {
    return corrupt(0,
                   fmt::format("file is {} bytes, header says {}", size, header->capacity_bytes));
  }
  if (header->first_lsn != expected_first) {
    return corrupt(0, fmt::format("starts at LSN {}, but the previous segment ends at LSN {}: "
                                  "records are missing",
                                  header->first_lsn.value(), expected_first.value() - 1));
  }
  auto segment =
      std::make_shared<Segment>(path, *header, std::move(mapping), options_.index_interval_bytes);
  const ConstBytes bytes = segment->bytes();
  const bool trust = is_last && base::Planted(base::PlantedBug::kTrustTornTail);
  const ParseBatchOptions parse{header->salt, !trust, !trust};
  std::uint64_t pos = kSegmentHeaderBytes;
  Lsn next = header->first_lsn;
  for (;;) {
    BatchView batch = ParseBatch(bytes, pos, parse);
    if (batch.state == BatchState::kAbsent) break;
    if (batch.state == BatchState::kValid && batch.header.first_lsn == next &&
        batch.header.total_bytes <= header->batch_bytes_max) {
      segment->index.OnBatch(next, pos);
      segment->last_timestamp_ms.store(batch.header.timestamp_ms);
      pos += batch.header.total_bytes;
      next = batch.header.last_lsn.Next();
      ++report->batches;
      continue;
    }
    std::string why = batch.state == BatchState::kDamaged
                          ? batch.reason
                          : fmt::format("batch holds LSN {}, expected {}",
                                        batch.header.first_lsn.value(), next.value());
    // Only the newest batch can be torn: a batch is written after the previous one was synced,
    // and the log rolls only after a sync. Damage anywhere else is damage to durable data.
    const bool truncate = base::Planted(base::PlantedBug::kTruncateAtMidLogCorruption);
    if (!is_last && !truncate) {
      return corrupt(pos, "damaged batch (" + why + ") before the newest segment");
    }
    if (auto after = FindValidBatchAfter(bytes, pos, header->salt); after && !truncate) {
      return corrupt(pos, fmt::format("damaged batch ({}) followed by a valid batch at position {}",
                                      why, *after));
    }
    // Cut: the batches before `pos` are kept; ReplaceWithDurableCopy leaves the rest behind.
    report->torn_tail = true;
    report->torn_segment = name;
    report->torn_position = pos;
    report->torn_reason = why;
    break;
  }
  segment->end_pos.store(pos);
  segment->last_lsn.store(next.value() - 1);
  {
    std::lock_guard lock(segments_mu_);
    segments_.push_back(segment);
  }
  if (is_last) active_file_ = std::move(file);
  return Status::Ok();
}

// Makes everything recovery found in the newest segment durable, without touching a byte of the
// file it found it in.
//
// Why a copy: after a process crash (not a power loss) the page cache still holds batches that
// were written but never synced, and recovery just read them back as valid. A plain fdatasync
// is not enough to make them durable: after an fdatasync *error* Linux marks the failed pages
// clean, so they stay readable although they never reached the disk, and the next fdatasync has
// nothing to write ("fsyncgate"). Writing them again in place would fix that, but an in-place
// write torn by a power loss can destroy bytes that were already durable and acknowledged. So
// the used part of the segment (header and valid batches, nothing of a torn tail) is written to a
// fresh file, synced, and renamed over the segment; then the directory is synced. A crash before
// the rename leaves the old file as it was (and a .tmp file recovery deletes); after it, the new
// file is complete and synced. Cost: one copy of at most one segment per open.
Status Log::ReplaceWithDurableCopy() {
  const std::shared_ptr<Segment> old = segments_.back();
  const std::uint64_t end = old->end_pos.load();
  const std::string tmp =
      JoinPath(options_.dir, fmt::format("recover-{}{}", old->first_lsn().value(), kTempSuffix));
  LOCKSTEP_ASSIGN_OR_RETURN(std::unique_ptr<File> file, io_.CreateFile(tmp));
  Status status = io_.Allocate(
      *file, old->header.capacity_bytes,
      ChoosePreallocation(options_.preallocation, 0, options_.zero_fill_below_bytes_per_s));
  std::vector<std::byte> chunk(std::min<std::uint64_t>(end, 1 << 20));
  for (std::uint64_t at = 0; status.ok() && at < end;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), end - at));
    std::copy_n(old->bytes().data() + at, n, chunk.data());
    const ConstBytes part(chunk.data(), n);
    status = io_.Write(*file, at, std::span<const ConstBytes>(&part, 1));
    at += n;
  }
  if (status.ok()) status = io_.Sync(*file);
  file.reset();
  if (!status.ok()) {
    (void)io_.Remove(tmp);  // best effort; the next recovery removes it otherwise
    return status;
  }
  base::CrashSite("recovery.copy-synced");
  LOCKSTEP_RETURN_IF_ERROR(io_.Rename(tmp, old->path));
  LOCKSTEP_RETURN_IF_ERROR(io_.SyncDir(options_.dir));
  // Load the copy as the newest segment (it holds exactly what the old one held up to `end`).
  active_file_.reset();
  {
    std::lock_guard lock(segments_mu_);
    segments_.pop_back();
  }
  RecoveryReport scratch;
  return LoadSegment(SegmentFileName(old->first_lsn()), old->first_lsn(), /*is_last=*/true,
                     &scratch);
}

// ---- Appending ----------------------------------------------------------------------------

std::size_t Log::record_bytes_max() const {
  return options_.batch_bytes_max - kBatchHeaderBytes - kRecordFrameBytes;
}

Result<Lsn> Log::Append(ConstBytes record, AppendCallback done) {
  return AppendAt(record, Lsn(), std::move(done));
}

Result<Lsn> Log::AppendAt(ConstBytes record, Lsn expected, AppendCallback done) {
  if (record.size() > record_bytes_max()) {
    return base::InvalidArgument(fmt::format("record of {} bytes exceeds record_bytes_max {}",
                                             record.size(), record_bytes_max()));
  }
  std::unique_lock lock(mu_);
  if (expected != Lsn() && expected.value() != next_lsn_.load(std::memory_order_relaxed)) {
    return base::FailedPrecondition(
        fmt::format("the next LSN is {}, not {}: a full disk rejected appends", next_lsn_.load(),
                    expected.value()));
  }
  Result<Lsn> lsn = AppendLocked(record, std::move(done));
  const bool wake = lsn.ok() && writer_idle_;
  lock.unlock();
  if (wake) writer_cv_.notify_one();
  return lsn;
}

Result<Lsn> Log::AppendLocked(ConstBytes record, AppendCallback&& done) {
  if (!failure_.ok()) return failure_;
  if (stopping_) return base::Unavailable("log is closing");
  const std::size_t frame = kRecordFrameBytes + record.size();
  if (!staging_.callbacks.empty() && staging_.frames.size() + frame > options_.staging_bytes_max) {
    return base::ResourceExhausted(fmt::format(
        "log staging is full ({} bytes appended but not yet written); retry once the durable "
        "LSN moves",
        staging_.frames.size()));
  }
  const std::uint64_t lsn = next_lsn_.load(std::memory_order_relaxed);
  if (staging_.callbacks.empty()) staging_.first_lsn = Lsn(lsn);
  AppendFrame(staging_.frames, record);
  staging_.callbacks.push_back(std::move(done));
  next_lsn_.store(lsn + 1, std::memory_order_release);
  return Lsn(lsn);
}

Result<Log::PendingAppend> Log::AppendWithFuture(ConstBytes record) {
  auto promise = std::make_shared<std::promise<Status>>();
  std::future<Status> future = promise->get_future();
  LOCKSTEP_ASSIGN_OR_RETURN(Lsn lsn, Append(record, [promise](Lsn, const Status& status) {
                              promise->set_value(status);
                            }));
  return PendingAppend{lsn, std::move(future)};
}

void Log::HoldWrites(bool hold) {
  {
    std::lock_guard lock(mu_);
    hold_ = hold;
  }
  writer_cv_.notify_all();
}

void Log::WriterLoop() {
  for (;;) {
    if (CommitOneGroup()) continue;
    std::unique_lock lock(mu_);
    if (!staging_.callbacks.empty() && (!hold_ || stopping_)) continue;
    if (stopping_) return;
    writer_idle_ = true;
    writer_cv_.wait(lock, [this] { return stopping_ || (!staging_.callbacks.empty() && !hold_); });
    writer_idle_ = false;
  }
}

bool Log::CommitOneGroup() {
  if (writing_.exhausted()) {
    writing_.Clear();
    std::lock_guard lock(mu_);
    if (staging_.callbacks.empty() || (hold_ && !stopping_)) return false;
    std::swap(staging_, writing_);
  }
  std::size_t frame_bytes = 0;
  const std::size_t count = NextBatchRecords(&frame_bytes);
  if (count == 0) return true;  // the log failed or the disk is full; callbacks completed

  Segment& segment = *active_;
  const std::uint64_t pos = segment.end_pos.load(std::memory_order_relaxed);
  BatchHeader header;
  header.total_bytes = static_cast<std::uint32_t>(kBatchHeaderBytes + frame_bytes);
  header.record_count = static_cast<std::uint32_t>(count);
  header.first_lsn = Lsn(writing_.first_lsn.value() + writing_.done_records);
  header.last_lsn = Lsn(header.first_lsn.value() + count - 1);
  header.timestamp_ms = options_.now_ms();
  const ConstBytes frames(writing_.frames.data() + writing_.done_bytes, frame_bytes);
  BatchHeaderBytes header_bytes;
  EncodeBatchHeader(header, frames, segment.header.salt, header_bytes);
  LOCKSTEP_ASSERT(pos + header.total_bytes <= segment.header.capacity_bytes);

  segment.index.OnBatch(header.first_lsn, pos);
  const std::array<ConstBytes, 2> parts{ConstBytes(header_bytes), frames};
  const bool sync = options_.sync && !base::Planted(base::PlantedBug::kAckBeforeSync);
  Status status;
  const std::int64_t started_ns = base::MonotonicNs();
  if (sync && base::Planted(base::PlantedBug::kRetryFsyncAfterEio)) {
    // The planted bug: a write that went fine, an fdatasync that failed, and a retry believed.
    status = io_.Write(*active_file_, pos, parts);
    if (status.ok() && !io_.Sync(*active_file_).ok()) status = io_.Sync(*active_file_);
  } else {
    status =
        sync ? io_.WriteAndSync(*active_file_, pos, parts) : io_.Write(*active_file_, pos, parts);
  }
  if (!status.ok()) {
    FailStop(status);
    return true;
  }
  base::CrashSite("log.batch-written");
  write_sync_ns_.Record(static_cast<std::uint64_t>(base::MonotonicNs() - started_ns));
  batch_records_.Record(count);
  segment.end_pos.store(pos + header.total_bytes, std::memory_order_release);
  segment.last_lsn.store(header.last_lsn.value(), std::memory_order_release);
  segment.last_timestamp_ms.store(header.timestamp_ms, std::memory_order_relaxed);
  stat_batches_.fetch_add(1, std::memory_order_relaxed);
  stat_records_.fetch_add(count, std::memory_order_relaxed);
  stat_bytes_.fetch_add(header.total_bytes, std::memory_order_relaxed);
  PublishDurable(header.last_lsn);

  const std::size_t from = writing_.done_records;
  writing_.done_records += count;
  writing_.done_bytes += frame_bytes;
  CompleteRange(writing_, from, from + count, Status::Ok());
  PublishCompleted(header.last_lsn);
  return true;
}

// How many of the unwritten records of writing_ fit in a batch of at most `limit` bytes.
std::size_t Log::RecordsFitting(std::uint64_t limit, std::size_t* frame_bytes) const {
  const std::byte* frames = writing_.frames.data() + writing_.done_bytes;
  const std::size_t available = writing_.callbacks.size() - writing_.done_records;
  std::size_t count = 0;
  std::size_t bytes = 0;
  while (count < available) {
    const std::size_t frame = kRecordFrameBytes + base::LoadLe32(frames + bytes);
    if (kBatchHeaderBytes + bytes + frame > limit) break;
    bytes += frame;
    ++count;
  }
  *frame_bytes = bytes;
  return count;
}

std::size_t Log::NextBatchRecords(std::size_t* frame_bytes) {
  // The batch is as much of the group as batch_bytes_max allows. When it does not fit in the
  // active segment, the log rolls and writes it whole into the next one: one batch, one sync.
  const std::size_t count = RecordsFitting(options_.batch_bytes_max, frame_bytes);
  LOCKSTEP_ASSERT(count > 0);  // record_bytes_max() guarantees room for one record
  const Segment& segment = *active_;
  const std::uint64_t room = std::min<std::uint64_t>(
      segment.header.capacity_bytes - segment.end_pos.load(std::memory_order_relaxed),
      segment.header.batch_bytes_max);
  if (kBatchHeaderBytes + *frame_bytes <= room) return count;
  if (segment.last_lsn.load() + 1 == segment.first_lsn().value()) {
    // An empty active segment made with smaller limits (reopened with other options): use what
    // fits; a record that fits nowhere in it replaces it with a new segment of the same name.
    const std::size_t fitting = RecordsFitting(room, frame_bytes);
    if (fitting > 0) return fitting;
    RecordsFitting(options_.batch_bytes_max, frame_bytes);
  }
  Status status = Roll(Lsn(writing_.first_lsn.value() + writing_.done_records));
  if (status.code() == base::StatusCode::kResourceExhausted) {
    RejectForDiskFull(status);
    return 0;
  }
  if (!status.ok()) {
    FailStop(status);
    return 0;
  }
  return count;
}

Status Log::Roll(Lsn first_lsn) {
  LOCKSTEP_ASSERT(first_lsn.value() == active_->last_lsn.load() + 1);
  // How fast the segment now left behind was filled decides how the next spare is prepared.
  // Only bytes written by this process since the segment became active count (a reopened
  // segment's older bytes do not), and an empty segment being replaced says nothing.
  const std::int64_t filled_ns = base::MonotonicNs() - active_since_ns_;
  const std::uint64_t written = active_->end_pos.load() - active_start_pos_;
  if (filled_ns > 0 && written > 0) {
    fill_bytes_per_s_.store(static_cast<double>(written) * 1e9 / static_cast<double>(filled_ns));
  }
  auto spare = TakeSpare();
  if (!spare.ok()) return spare.status();
  Status status = InstallSegment(std::move(spare).value(), first_lsn);
  // Only preparing a spare may report a full disk; anything later stops the log.
  if (status.code() == base::StatusCode::kResourceExhausted) {
    return base::IoError(std::string(status.message()));
  }
  if (status.ok()) stat_rolls_.fetch_add(1, std::memory_order_relaxed);
  return status;
}

Status Log::InstallSegment(SpareFile spare, Lsn first_lsn) {
  SegmentHeader header;
  header.first_lsn = first_lsn;
  header.capacity_bytes = options_.segment_bytes;
  header.salt = NextSalt();
  header.created_ms = options_.now_ms();
  header.batch_bytes_max = options_.batch_bytes_max;
  SegmentHeaderBytes header_bytes;
  EncodeSegmentHeader(header, header_bytes);
  const ConstBytes part(header_bytes);
  LOCKSTEP_RETURN_IF_ERROR(io_.WriteAndSync(*spare.file, 0, std::span<const ConstBytes>(&part, 1)));
  // The segment gets its name only now, complete: a *.seg file always has a valid header.
  const std::string path = JoinPath(options_.dir, SegmentFileName(first_lsn));
  LOCKSTEP_RETURN_IF_ERROR(io_.Rename(spare.path, path));
  base::CrashSite("log.segment-renamed");
  if (!base::Planted(base::PlantedBug::kSkipSegmentDirSync)) {
    LOCKSTEP_RETURN_IF_ERROR(io_.SyncDir(options_.dir));
  }
  spare.file.reset();
  LOCKSTEP_ASSIGN_OR_RETURN(std::unique_ptr<File> file, io_.OpenFile(path));
  LOCKSTEP_ASSIGN_OR_RETURN(std::shared_ptr<const Mapping> mapping,
                            io_.Map(*file, header.capacity_bytes));
  auto segment =
      std::make_shared<Segment>(path, header, std::move(mapping), options_.index_interval_bytes);
  {
    std::lock_guard lock(segments_mu_);
    // The rename replaced an empty active segment of the same name (see NextBatchRecords).
    if (!segments_.empty() && segments_.back()->first_lsn() == first_lsn) segments_.pop_back();
    segments_.push_back(segment);
  }
  active_ = std::move(segment);
  active_file_ = std::move(file);
  active_since_ns_ = base::MonotonicNs();
  active_start_pos_ = kSegmentHeaderBytes;
  return Status::Ok();
}

std::uint64_t Log::NextSalt() { return salt_rng_(); }

Result<Log::SpareFile> Log::PrepareSpare() {
  const std::string path =
      JoinPath(options_.dir, fmt::format("prepare-{}{}", spare_seq_.fetch_add(1), kTempSuffix));
  LOCKSTEP_ASSIGN_OR_RETURN(std::unique_ptr<File> file, io_.CreateFile(path));
  const Preallocation mode = ChoosePreallocation(options_.preallocation, fill_bytes_per_s_.load(),
                                                 options_.zero_fill_below_bytes_per_s);
  Status status = io_.Allocate(*file, options_.segment_bytes, mode);
  if (status.ok()) status = io_.Sync(*file);
  if (!status.ok()) {
    file.reset();
    (void)io_.Remove(path);  // best effort; recovery removes leftovers
    return status;
  }
  return SpareFile{path, std::move(file)};
}

Result<Log::SpareFile> Log::TakeSpare() {
  if (preparer_.joinable()) {
    std::unique_lock lock(spare_mu_);
    spare_cv_.wait(lock, [this] { return spare_.has_value() || !spare_busy_; });
    spare_wanted_ = true;
    spare_cv_.notify_all();
    if (spare_) {
      SpareFile spare = std::move(*spare_);
      spare_.reset();
      return spare;
    }
  }
  return PrepareSpare();
}

void Log::PreparerLoop() {
  std::unique_lock lock(spare_mu_);
  for (;;) {
    spare_cv_.wait(lock, [this] { return spare_stop_ || (spare_wanted_ && !spare_); });
    if (spare_stop_) return;
    spare_wanted_ = false;
    spare_busy_ = true;
    lock.unlock();
    auto spare = PrepareSpare();
    lock.lock();
    spare_busy_ = false;
    if (spare.ok()) {
      spare_ = std::move(spare).value();
    } else {
      // The writer prepares inline at its next roll and reports the error to appenders.
      spdlog::warn("log {}: preparing a spare segment failed: {}", options_.dir,
                   spare.status().ToString());
    }
    spare_cv_.notify_all();
  }
}

void Log::PublishDurable(Lsn lsn) {
  durable_lsn_.store(lsn.value(), std::memory_order_seq_cst);
  if (durable_waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(durable_mu_);
    durable_cv_.notify_all();
  }
}

void Log::PublishCompleted(Lsn lsn) {
  completed_lsn_.store(lsn.value(), std::memory_order_seq_cst);
  if (durable_waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(durable_mu_);
    durable_cv_.notify_all();
  }
}

void Log::CompleteRange(Staging& staging, std::size_t from, std::size_t to, const Status& status) {
  // No lock is held here: a callback may take its own locks and call Append without any
  // lock-order risk, and other appenders never wait for callbacks.
  if (options_.before_callbacks) options_.before_callbacks(to - from);
  for (std::size_t i = from; i < to; ++i) {
    auto& done = staging.callbacks[i];
    if (done) done(Lsn(staging.first_lsn.value() + i), status);
  }
  if (options_.after_callbacks) options_.after_callbacks();
}

void Log::FailStop(const Status& cause) {
  // Whatever the errno (an ENOSPC writing into a thin-provisioned segment reads as "back off"),
  // a stopped log tells every caller "stop": kIoError, until a restart recovers.
  const Status status = cause.code() == base::StatusCode::kIoError
                            ? cause
                            : base::IoError(std::string(cause.message()));
  spdlog::error("log {}: stopped after a storage error: {}", options_.dir, status.ToString());
  Staging rejected;
  {
    std::lock_guard lock(mu_);
    if (failure_.ok()) failure_ = status;
    failed_.store(true);
    std::swap(rejected, staging_);
  }
  CompleteRange(writing_, writing_.done_records, writing_.callbacks.size(), status);
  writing_.done_records = writing_.callbacks.size();
  CompleteRange(rejected, 0, rejected.callbacks.size(), status);
  std::lock_guard lock(durable_mu_);
  durable_cv_.notify_all();
}

void Log::RejectForDiskFull(const Status& status) {
  spdlog::warn("log {}: rejecting appends: {}", options_.dir, status.ToString());
  Staging rejected;
  {
    std::lock_guard lock(mu_);
    // Nothing after the durable LSN was written: those LSNs are handed out again.
    LOCKSTEP_ASSERT(writing_.first_lsn.value() + writing_.done_records == durable_lsn_.load() + 1);
    next_lsn_.store(durable_lsn_.load() + 1, std::memory_order_release);
    std::swap(rejected, staging_);
    // Under mu_, so that Flush() sees either the old next LSN or this rejection.
    disk_full_rejections_.fetch_add(1);
  }
  CompleteRange(writing_, writing_.done_records, writing_.callbacks.size(), status);
  writing_.done_records = writing_.callbacks.size();
  CompleteRange(rejected, 0, rejected.callbacks.size(), status);
  std::lock_guard lock(durable_mu_);
  durable_cv_.notify_all();
}

Status Log::WaitForDurable(Lsn lsn, std::chrono::milliseconds timeout) const {
  return WaitFor(durable_lsn_, lsn, timeout, disk_full_rejections_.load());
}

// Waits until `watermark` (the durable or the completed LSN) reaches `lsn`. The waiter count
// and the watermark are both seq_cst, so either the publisher sees the waiter and notifies, or
// the waiter sees the new watermark before sleeping: no lost wake-up.
Status Log::WaitFor(const std::atomic<std::uint64_t>& watermark, Lsn lsn,
                    std::chrono::milliseconds timeout, std::uint64_t rejections) const {
  auto reached = [&] { return watermark.load(std::memory_order_seq_cst) >= lsn.value(); };
  if (reached()) return Status::Ok();
  durable_waiters_.fetch_add(1, std::memory_order_seq_cst);
  std::unique_lock lock(durable_mu_);
  const bool done = durable_cv_.wait_for(lock, timeout, [&] {
    return reached() || failed_.load() || disk_full_rejections_.load() != rejections;
  });
  lock.unlock();
  durable_waiters_.fetch_sub(1, std::memory_order_seq_cst);
  if (reached()) return Status::Ok();
  if (failed_.load()) return status();
  if (!done) {
    return base::DeadlineExceeded(
        fmt::format("LSN {} not durable within {} ms", lsn.value(), timeout.count()));
  }
  return base::ResourceExhausted(
      fmt::format("LSN {} was rejected: no space for a new segment", lsn.value()));
}

Status Log::Flush() {
  Lsn target;
  std::uint64_t rejections = 0;
  {
    std::lock_guard lock(mu_);
    if (!failure_.ok()) return failure_;
    target = Lsn(next_lsn_.load(std::memory_order_relaxed) - 1);
    rejections = disk_full_rejections_.load();
  }
  if (options_.writer_thread) {
    return WaitFor(completed_lsn_, target, std::chrono::hours(24), rejections);
  }
  // Manual mode: write until what was appended before this call is done, not until staging is
  // empty — callbacks that append again would otherwise keep this loop going for ever.
  while (completed_lsn_.load() < target.value() && disk_full_rejections_.load() == rejections &&
         CommitOneGroup()) {
  }
  if (completed_lsn_.load() >= target.value()) return Status::Ok();
  if (!status().ok()) return status();
  return base::ResourceExhausted(
      fmt::format("LSN {} was rejected: no space for a new segment", target.value()));
}

Status Log::status() const {
  std::lock_guard lock(mu_);
  return failure_;
}

Lsn Log::next_lsn() const { return Lsn(next_lsn_.load(std::memory_order_acquire)); }

Lsn Log::first_lsn() const {
  std::lock_guard lock(segments_mu_);
  return segments_.front()->first_lsn();
}

LogStats Log::stats() const {
  LogStats s;
  s.batches = stat_batches_.load(std::memory_order_relaxed);
  s.records = stat_records_.load(std::memory_order_relaxed);
  s.bytes = stat_bytes_.load(std::memory_order_relaxed);
  s.rolls = stat_rolls_.load(std::memory_order_relaxed);
  std::lock_guard lock(segments_mu_);
  s.segments = static_cast<std::uint32_t>(segments_.size());
  for (const auto& segment : segments_) s.segment_bytes += segment->header.capacity_bytes;
  return s;
}

// ---- Retention ------------------------------------------------------------------------------

Result<RetentionReport> Log::ApplyRetention(const RetentionPolicy& policy) {
  // One retention at a time: two interleaved runs could delete a later segment while the other
  // gives back an earlier one it failed to delete, leaving a gap.
  std::lock_guard serialize(retention_mu_);
  std::vector<std::shared_ptr<Segment>> doomed;
  RetentionReport report;
  {
    std::lock_guard lock(segments_mu_);
    std::uint64_t total = 0;
    for (const auto& segment : segments_) total += segment->header.capacity_bytes;
    const std::int64_t now = options_.now_ms();
    std::size_t count = 0;
    // Never the active segment (the last one).
    while (count + 1 < segments_.size()) {
      const Segment& segment = *segments_[count];
      const Lsn last(segment.last_lsn.load(std::memory_order_acquire));
      if (!(last < policy.keep_from_lsn)) break;
      const bool below = last < policy.delete_below_lsn;
      const bool too_big = policy.retained_bytes_max != 0 && total > policy.retained_bytes_max;
      const bool too_old = policy.retained_age_ms != 0 &&
                           segment.last_timestamp_ms.load() < now - policy.retained_age_ms;
      if (!below && !too_big && !too_old) break;
      total -= segment.header.capacity_bytes;
      ++count;
    }
    doomed.assign(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(count));
    segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(count));
    report.first_lsn = segments_.front()->first_lsn();
  }
  // Oldest first, so that a crash part-way leaves a contiguous log.
  for (std::size_t i = 0; i < doomed.size(); ++i) {
    Status removed = io_.Remove(doomed[i]->path);
    if (!removed.ok()) {
      // Those not deleted are still the log's oldest segments: give them back (rolls only
      // append at the other end, so the front is where they belong).
      std::lock_guard lock(segments_mu_);
      segments_.insert(segments_.begin(), doomed.begin() + static_cast<std::ptrdiff_t>(i),
                       doomed.end());
      return removed;
    }
    base::CrashSite("retention.segment-deleted");
    ++report.segments_deleted;
    report.bytes_deleted += doomed[i]->header.capacity_bytes;
  }
  if (!doomed.empty()) LOCKSTEP_RETURN_IF_ERROR(io_.SyncDir(options_.dir));
  return report;
}

// ---- Reading --------------------------------------------------------------------------------

std::shared_ptr<Segment> Log::SegmentFor(Lsn lsn) const {
  std::lock_guard lock(segments_mu_);
  auto it =
      std::upper_bound(segments_.begin(), segments_.end(), lsn,
                       [](Lsn l, const std::shared_ptr<Segment>& s) { return l < s->first_lsn(); });
  if (it == segments_.begin()) return nullptr;
  return *(it - 1);
}

Result<LogReader> Log::Read(Lsn from, bool trust_verified) const {
  const Lsn first = first_lsn();
  const Lsn durable = durable_lsn();
  if (from < first || from.value() > durable.value() + 1) {
    return base::OutOfRange(fmt::format("LSN {} is outside the log, which holds [{}, {}]",
                                        from.value(), first.value(), durable.value()));
  }
  return LogReader(this, from, trust_verified);
}

Result<std::optional<LogRecord>> LogReader::Next() {
  if (next_lsn_ > log_->durable_lsn()) return std::optional<LogRecord>();
  if (segment_ == nullptr || batch_last_lsn_ < next_lsn_) LOCKSTEP_RETURN_IF_ERROR(Seek());
  ConstBytes record;
  if (!cursor_.Next(&record)) {
    return base::DataLoss(
        fmt::format("segment {} position {}: record frames end early", segment_->path, batch_pos_));
  }
  LogRecord out{next_lsn_, record, batch_timestamp_ms_};
  next_lsn_ = next_lsn_.Next();
  return std::optional<LogRecord>(out);
}

Status LogReader::Seek() {
  // Sequential case: the next batch follows in the same segment.
  if (segment_ != nullptr && next_lsn_.value() <= segment_->last_lsn.load() &&
      batch_last_lsn_.Next() == next_lsn_) {
    return EnterBatch(batch_end_);
  }
  segment_ = log_->SegmentFor(next_lsn_);
  if (segment_ == nullptr) {
    return base::OutOfRange(fmt::format("LSN {} was deleted by retention", next_lsn_.value()));
  }
  auto entry = segment_->index.Find(next_lsn_);
  LOCKSTEP_ASSERT(entry.has_value());  // the first batch of a segment is always indexed
  LOCKSTEP_RETURN_IF_ERROR(EnterBatch(entry->pos));
  while (batch_last_lsn_ < next_lsn_) LOCKSTEP_RETURN_IF_ERROR(EnterBatch(batch_end_));
  // Skip to next_lsn_ inside the batch.
  ConstBytes skipped;
  const std::uint64_t batch_first =
      batch_last_lsn_.value() + 1 - static_cast<std::uint64_t>(batch_count_);
  for (std::uint64_t l = batch_first; l < next_lsn_.value(); ++l) {
    if (!cursor_.Next(&skipped)) {
      return base::DataLoss(fmt::format("segment {} position {}: record frames end early",
                                        segment_->path, batch_pos_));
    }
  }
  return Status::Ok();
}

Status LogReader::EnterBatch(std::uint64_t pos) {
  const bool verify = log_->options_.verify_checksums_on_read && !trust_verified_;
  const ParseBatchOptions options{segment_->header.salt, verify, verify};
  BatchView batch = ParseBatch(segment_->bytes(), pos, options);
  if (batch.state != BatchState::kValid) {
    return base::DataLoss(
        fmt::format("segment {} position {}: {}", segment_->path, pos,
                    batch.state == BatchState::kAbsent ? "no batch" : batch.reason));
  }
  batch_pos_ = pos;
  batch_end_ = pos + batch.header.total_bytes;
  batch_last_lsn_ = batch.header.last_lsn;
  batch_count_ = batch.header.record_count;
  batch_timestamp_ms_ = batch.header.timestamp_ms;
  cursor_ = FrameCursor(batch.frames);
  return Status::Ok();
}

}  // namespace lockstep::storage

#pragma once
// Log: the segmented, append-only write-ahead log with group commit.
//
// Records are opaque bytes. Append() assigns each record the next LSN at once (dense from 1) and
// completes — by callback, or by future — only when that LSN is durable (fdatasync completed).
// One writer thread takes everything appended so far (up to batch_bytes_max), writes it as one
// batch and issues one fdatasync; meanwhile the next group forms in memory and is written only
// after that sync completed, so the disk never holds a batch after one that is not yet durable.
// There is no linger delay: at low load each append is synced at once; under load the groups
// grow by themselves.
//
// Threads: Append, the readers, retention and the accessors may be called from any thread.
// Completion callbacks run on the writer thread, in append order (which is LSN order, except
// that LSNs rejected for a full disk are handed out again), with no lock of the log held: they
// must be short and must not block, and may call Append (a pipelined producer refills from its
// completions) but not Flush. In manual mode, callbacks run inside Flush(). With
// LogOptions::writer_thread = false nothing runs in the background: the caller drives the writer
// with Flush() (deterministic tests and simulation).
//
// Fail-stop: after a write or fdatasync error the log is failed for good: every waiting appender
// completes with the error, Append returns it, durable_lsn() stops moving, reads of durable data
// go on. A full disk when a new segment is prepared is not fatal: the appends waiting for that
// segment complete with kResourceExhausted, their LSNs are handed out again, and later appends
// are tried again.
//
// Visibility: readers never see past durable_lsn().
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/histogram.h"
#include "base/strong_id.h"
#include "storage/batch.h"
#include "storage/io.h"
#include "storage/segment.h"

namespace lockstep::storage {

struct LogOptions {
  std::string dir;   // created if missing (its parent must exist)
  Io* io = nullptr;  // not owned; must outlive the Log
  std::uint64_t segment_bytes = 64ull << 20;
  std::uint32_t batch_bytes_max = 4u << 20;  // one group commit writes at most this much
  // Bytes appended while the previous group is written (then Append returns
  // kResourceExhausted); the writer holds at most one more group of up to this size.
  std::uint64_t staging_bytes_max = 64ull << 20;
  std::uint32_t index_interval_bytes = 64u << 10;  // sparse index: one entry per this many bytes
  // kAdaptive: a spare is zero-filled (fastest small syncs, docs/storage.md) while the log fills
  // segments slower than zero_fill_below_bytes_per_s — then the extra write of zeros costs the
  // disk little — and fallocate'd when it writes faster, where that extra write would halve the
  // bandwidth.
  Preallocation preallocation = Preallocation::kAdaptive;
  std::uint64_t zero_fill_below_bytes_per_s = 32ull << 20;
  bool prepare_in_background = true;  // keep one spare segment ready (a thread)
  bool writer_thread = true;          // false: no threads at all; the caller calls Flush()
  bool verify_checksums_on_read = true;
  // false: groups are written but never fdatasync'ed, and acknowledged anyway — NOT durable.
  // Only for measuring the commit path's CPU cost (lockstep-bench --no-sync).
  bool sync = true;
  std::uint64_t salt_seed = 0;           // 0: random segment salts; else deterministic
  std::function<std::int64_t()> now_ms;  // wall clock for batch timestamps; default real
  // Run on the thread that runs completion callbacks, around each run of them (one per
  // written batch, and one or two per rejection or failure), with the number of callbacks:
  // the engine batches the wake-ups of its sequencer for what the callbacks submit.
  std::function<void(std::size_t count)> before_callbacks;
  std::function<void()> after_callbacks;
};

// The preparation kAdaptive picks for a segment written at `bytes_per_s` (0: no history yet).
// Shared with lockstep-bench, whose raw-disk baseline prepares its files the same way.
Preallocation ChoosePreallocation(Preallocation configured, double bytes_per_s,
                                  std::uint64_t zero_fill_below_bytes_per_s);

// What recovery found and did when the log was opened.
struct RecoveryReport {
  std::uint32_t segments = 0;
  std::uint64_t batches = 0;
  Lsn first_lsn;           // oldest LSN held
  Lsn last_lsn;            // newest durable LSN (first_lsn - 1 when empty)
  bool torn_tail = false;  // a damaged batch at the end was cut off
  std::string torn_segment;
  std::uint64_t torn_position = 0;
  std::string torn_reason;
  std::vector<std::string> removed_temp_files;
};

struct LogRecord {
  Lsn lsn;
  ConstBytes bytes;               // valid while the LogReader that returned it lives
  std::int64_t timestamp_ms = 0;  // of the batch it was written in
};

// What retention may delete. Only whole segments are deleted, oldest first, never the active
// one, and never a segment holding an LSN >= keep_from_lsn.
// A segment goes when it lies wholly below keep_from_lsn and at least one of the other rules
// asks for it; deletion stops at the first segment that stays.
struct RetentionPolicy {
  Lsn keep_from_lsn{UINT64_MAX};  // never delete an LSN >= this (e.g. the newest checkpoint's)
  Lsn delete_below_lsn;           // delete segments wholly below this LSN (0: no such rule)
  std::uint64_t retained_bytes_max = 0;  // delete the oldest while the log is larger (0: no limit)
  std::int64_t retained_age_ms = 0;  // delete segments whose newest batch is older (0: no limit)
};

struct RetentionReport {
  std::uint32_t segments_deleted = 0;
  std::uint64_t bytes_deleted = 0;
  Lsn first_lsn;  // oldest LSN still held afterwards
};

struct LogStats {
  std::uint64_t batches = 0;  // = group commits = fdatasyncs of batches
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;  // batch bytes written
  std::uint64_t rolls = 0;
  std::uint32_t segments = 0;
  std::uint64_t segment_bytes = 0;  // capacity of all segments held
};

class Log;

// Iterates records in LSN order from a start LSN up to the durable LSN. Not thread-safe; any
// number of readers may run at once. REQUIRES: does not outlive its Log.
class LogReader {
 public:
  // The next record, or nullopt once the durable LSN is reached (call again later for more).
  // kDataLoss for a damaged batch; kOutOfRange if retention deleted the next record's segment.
  Result<std::optional<LogRecord>> Next();
  Lsn next_lsn() const { return next_lsn_; }
  // Keeps the segment of the record Next() returned last mapped: its bytes stay valid while the
  // pin lives, also after this reader is gone and after retention deleted the file.
  std::shared_ptr<const void> Pin() const { return segment_; }

 private:
  friend class Log;
  LogReader(const Log* log, Lsn from, bool trust_verified)
      : log_(log), next_lsn_(from), trust_verified_(trust_verified) {}
  Status Seek();
  Status EnterBatch(std::uint64_t pos);

  const Log* log_;
  Lsn next_lsn_;
  bool trust_verified_ = false;
  std::shared_ptr<Segment> segment_;
  std::uint64_t batch_pos_ = 0;  // of the batch being read
  std::uint64_t batch_end_ = 0;
  Lsn batch_last_lsn_;
  std::uint32_t batch_count_ = 0;
  std::int64_t batch_timestamp_ms_ = 0;
  FrameCursor cursor_;
};

class Log {
 public:
  using AppendCallback = std::function<void(Lsn, const Status&)>;

  // Opens (creating if missing) and recovers the log in options.dir. Fails with
  // kFailedPrecondition when another opener holds the directory's lock, kDataLoss when durable
  // data is damaged (naming the segment and position), kInvalidArgument for bad options.
  static Result<std::unique_ptr<Log>> Open(LogOptions options, RecoveryReport* report = nullptr);

  // Writes and syncs everything appended, completes every callback, stops the threads and
  // releases the lock.
  ~Log();
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  // Appends one record and returns its LSN; `done` runs once that LSN is durable, or with the
  // error that stopped it. On an error return `done` is not called. Never blocks on I/O.
  // kInvalidArgument: record longer than record_bytes_max(). kResourceExhausted: staging full
  // (back off until durable_lsn() moves). The failure status once the log has failed.
  Result<Lsn> Append(ConstBytes record, AppendCallback done);
  // The same, but only if the record gets exactly `expected` (the next LSN a sole appender
  // computed before encoding it): kFailedPrecondition, appending nothing, when a disk-full
  // rejection gave earlier LSNs out again in between.
  Result<Lsn> AppendAt(ConstBytes record, Lsn expected, AppendCallback done);

  struct PendingAppend {
    Lsn lsn;
    std::future<Status> durable;
  };
  Result<PendingAppend> AppendWithFuture(ConstBytes record);

  // The newest durable LSN (0 before any). Lock-free.
  Lsn durable_lsn() const { return Lsn(durable_lsn_.load(std::memory_order_acquire)); }
  // Blocks until durable_lsn() >= lsn, the log fails, appends are rejected for a full disk
  // (kResourceExhausted), or the timeout passes (kDeadlineExceeded). This follows the log's
  // progress, not one append's fate: after a disk-full rejection an LSN is handed out again, so
  // an appender learns its own outcome from its callback or future, never from this.
  // REQUIRES: the writer thread runs (options.writer_thread).
  Status WaitForDurable(Lsn lsn, std::chrono::milliseconds timeout) const;
  // Makes everything appended so far durable and waits until its callbacks have run (in
  // manual mode: by doing the writes itself). Must not be called from a callback.
  Status Flush();
  // Test hook for deterministic simulation (lockstep-torture, docs/testing.md): while held, the
  // writer starts no new group commit, so that what is appended meanwhile goes out together,
  // in batches that depend on sizes alone, not on thread timing. Closing writes regardless.
  void HoldWrites(bool hold);

  // The oldest LSN still held (retention moves it up).
  Lsn first_lsn() const;
  // The LSN the next Append will get.
  Lsn next_lsn() const;
  std::size_t record_bytes_max() const;
  // Ok, or the error that failed the log.
  Status status() const;

  // A reader from `from`. kOutOfRange when `from` is below first_lsn() or above
  // durable_lsn() + 1. With verify_checksums_on_read, a reader checks every batch it enters.
  // Every batch was verified as it entered this process — by recovery at open, or because this
  // process wrote it from the bytes it checksummed — so `trust_verified` skips the check: only
  // for readers whose own consumers verify what they read again (the fetch path: consumers
  // check every event's checksum).
  Result<LogReader> Read(Lsn from, bool trust_verified = false) const;

  Result<RetentionReport> ApplyRetention(const RetentionPolicy& policy);
  // Deletes every segment all of whose records are below `lsn` (never the active one).
  Result<RetentionReport> DeleteSegmentsBelow(Lsn lsn) {
    RetentionPolicy policy;
    policy.delete_below_lsn = lsn;
    return ApplyRetention(policy);
  }

  LogStats stats() const;
  // Per batch: nanoseconds to write it and fdatasync it (one io operation; without sync, the
  // write alone), and how many records it carried (the group commit's size).
  const base::AtomicHistogram& write_sync_ns() const { return write_sync_ns_; }
  const base::AtomicHistogram& batch_records() const { return batch_records_; }
  const LogOptions& options() const { return options_; }

 private:
  friend class LogReader;
  struct Staging {
    std::vector<std::byte> frames;
    std::vector<AppendCallback> callbacks;
    Lsn first_lsn;
    // Writer only: how much of this staging has been written.
    std::size_t done_records = 0;
    std::size_t done_bytes = 0;
    bool exhausted() const { return done_records == callbacks.size(); }
    void Clear();
  };
  struct SpareFile {
    std::string path;
    std::unique_ptr<File> file;
  };

  explicit Log(LogOptions options);
  Status Recover(RecoveryReport* report);
  Status RemoveTempFiles(const std::vector<std::string>& names, RecoveryReport* report);
  Status LoadSegment(const std::string& name, Lsn expected_first, bool is_last,
                     RecoveryReport* report);
  Status ReplaceWithDurableCopy();

  Result<Lsn> AppendLocked(ConstBytes record, AppendCallback&& done);  // REQUIRES: mu_ held
  void WriterLoop();
  // One group commit: takes staged records, writes one batch, syncs, completes callbacks.
  // Returns false when there was nothing to do.
  bool CommitOneGroup();
  // Picks the records of the next batch out of writing_ (rolling when the active segment is
  // full). Returns how many; 0 when the log failed or the disk is full.
  std::size_t NextBatchRecords(std::size_t* frame_bytes);
  std::size_t RecordsFitting(std::uint64_t limit, std::size_t* frame_bytes) const;
  Status Roll(Lsn first_lsn);
  Result<SpareFile> PrepareSpare();
  Result<SpareFile> TakeSpare();
  void PreparerLoop();
  Status InstallSegment(SpareFile spare, Lsn first_lsn);
  void PublishDurable(Lsn lsn);
  void PublishCompleted(Lsn lsn);
  Status WaitFor(const std::atomic<std::uint64_t>& watermark, Lsn lsn,
                 std::chrono::milliseconds timeout, std::uint64_t rejections) const;
  void FailStop(const Status& status);
  void RejectForDiskFull(const Status& status);
  void CompleteRange(Staging& staging, std::size_t from, std::size_t to, const Status& status);
  std::shared_ptr<Segment> SegmentFor(Lsn lsn) const;
  std::uint64_t NextSalt();

  const LogOptions options_;
  Io& io_;
  std::unique_ptr<FileLock> lock_;

  std::mutex retention_mu_;  // one ApplyRetention at a time
  mutable std::mutex segments_mu_;
  std::vector<std::shared_ptr<Segment>> segments_;  // ascending; back() is the active one

  // Appenders' side.
  mutable std::mutex mu_;
  std::condition_variable writer_cv_;
  Staging staging_;  // guarded by mu_
  // Written under mu_; next_lsn() reads it without the lock (the sequencer asks per commit,
  // and AppendAt checks its `expected` under mu_ anyway).
  std::atomic<std::uint64_t> next_lsn_{1};
  bool writer_idle_ = false;  // guarded by mu_
  bool stopping_ = false;     // guarded by mu_
  bool hold_ = false;         // guarded by mu_: HoldWrites
  Status failure_;            // guarded by mu_; sticky
  std::atomic<bool> failed_{false};

  // Writer's side.
  Staging writing_;
  std::shared_ptr<Segment> active_;
  std::unique_ptr<File> active_file_;
  std::vector<AppendCallback> completing_;  // reused: callbacks being run
  std::mt19937_64 salt_rng_;

  std::atomic<std::uint64_t> durable_lsn_{0};
  std::atomic<std::uint64_t> completed_lsn_{0};  // callbacks up to here have run
  mutable std::mutex durable_mu_;
  mutable std::condition_variable durable_cv_;
  mutable std::atomic<int> durable_waiters_{0};

  // Spare segment preparation.
  std::mutex spare_mu_;
  std::condition_variable spare_cv_;
  std::optional<SpareFile> spare_;  // guarded by spare_mu_
  bool spare_wanted_ = false;       // guarded by spare_mu_
  bool spare_stop_ = false;         // guarded by spare_mu_
  bool spare_busy_ = false;         // guarded by spare_mu_: the preparer is at work
  std::atomic<std::uint64_t> spare_seq_{0};
  // Bytes per second at which the last full segment was filled (0: none yet); set by the writer
  // at each roll, read by the preparer.
  std::atomic<double> fill_bytes_per_s_{0};
  std::int64_t active_since_ns_ = 0;    // writer only: when the active segment became active
  std::uint64_t active_start_pos_ = 0;  // writer only: its end_pos at that moment
  std::atomic<std::uint64_t> disk_full_rejections_{0};

  std::atomic<std::uint64_t> stat_batches_{0};
  std::atomic<std::uint64_t> stat_records_{0};
  std::atomic<std::uint64_t> stat_bytes_{0};
  std::atomic<std::uint64_t> stat_rolls_{0};
  base::AtomicHistogram write_sync_ns_ = base::LatencyHistogramNs();
  base::AtomicHistogram batch_records_ = base::CountHistogram();

  std::thread writer_;
  std::thread preparer_;
};

}  // namespace lockstep::storage

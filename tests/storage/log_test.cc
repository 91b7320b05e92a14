// Proves the log's contract: dense LSNs, durable-before-complete, reads that never pass the
// durable LSN, rolls, reopen, the sparse index at every boundary, retention, concurrent
// appenders, the lock file, fail-stop on write and sync errors, disk-full rejection, mid-log
// corruption reported (never dropped) and a torn tail cut and reported.
#include "storage/log.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <thread>

#include "base/endian.h"
#include "storage/fault_io.h"
#include "storage/posix_io.h"
#include "tests/testing/backends.h"
#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"
#include "tests/testing/temp_dir.h"

namespace lockstep::storage {
namespace {

using base::StatusCode;
using testing::AsBytes;
using testing::AsString;

std::string RecordFor(std::uint64_t i) {
  // Built with append: GCC 12 at -O3 warns falsely (-Wrestrict) on chained string operator+.
  std::string r = "record-";
  r.append(std::to_string(i));
  r.append(40 + i % 97, static_cast<char>('a' + i % 26));
  return r;
}

// Everything readable from `from` up to the durable LSN.
std::vector<std::pair<Lsn, std::string>> ReadAll(const Log& log, Lsn from) {
  std::vector<std::pair<Lsn, std::string>> out;
  auto reader = log.Read(from);
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  if (!reader.ok()) return out;
  for (;;) {
    auto next = reader->Next();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok() || !next->has_value()) break;
    out.emplace_back((*next)->lsn, AsString((*next)->bytes));
  }
  return out;
}

class LogTest : public ::testing::Test {
 protected:
  // Small segments, small batches and a dense index: rolls and index boundaries come quickly.
  LogOptions Options() {
    LogOptions o;
    o.dir = "db";
    o.io = &io_;
    o.segment_bytes = 4096;
    o.batch_bytes_max = 1024;
    o.staging_bytes_max = 1 << 20;
    o.index_interval_bytes = 256;
    o.writer_thread = false;
    o.salt_seed = 99;
    o.now_ms = [this] { return now_ms_; };
    return o;
  }
  std::unique_ptr<Log> Open(LogOptions o, RecoveryReport* report = nullptr) {
    auto log = Log::Open(std::move(o), report);
    EXPECT_TRUE(log.ok()) << log.status().ToString();
    return log.ok() ? std::move(log).value() : nullptr;
  }
  std::unique_ptr<Log> Open() { return Open(Options()); }
  // Appends records [first, first + n) and makes them durable (manual mode).
  void AppendSome(Log& log, std::uint64_t first, std::uint64_t n) {
    for (std::uint64_t i = first; i < first + n; ++i) {
      auto lsn = log.Append(AsBytes(RecordFor(i)), nullptr);
      ASSERT_TRUE(lsn.ok()) << lsn.status().ToString();
      ASSERT_EQ(*lsn, Lsn(i));
    }
    ASSERT_TRUE(log.Flush().ok());
  }
  // Records [first, last] are readable and are RecordFor(lsn); with `exact`, nothing follows.
  void ExpectRecords(const Log& log, std::uint64_t first, std::uint64_t last, bool exact = true) {
    auto records = ReadAll(log, Lsn(first));
    if (exact) {
      ASSERT_EQ(records.size(), last - first + 1);
    } else {
      ASSERT_GE(records.size(), last - first + 1);
    }
    for (std::uint64_t i = first; i <= last; ++i) {
      ASSERT_EQ(records[i - first].first, Lsn(i));
      ASSERT_EQ(records[i - first].second, RecordFor(i)) << "LSN " << i;
    }
  }
  // The harshest power loss the fault model allows: every unsynced write is gone.
  void PowerLossDroppingEverythingUnsynced() {
    std::mt19937_64 rng(1);
    CrashModel model;
    model.lose_write = 1.0;
    model.tear_write = 0.0;
    io_.Restart(rng, model);
  }
  std::vector<std::string> SegmentFiles() {
    std::vector<std::string> names;
    for (const auto& n : *io_.ListDir("db")) {
      if (ParseSegmentFileName(n)) names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  FaultInjectingIo io_;
  std::int64_t now_ms_ = 1'000'000;
};

TEST_F(LogTest, EmptyLogStartsAtLsnOne) {
  RecoveryReport report;
  auto log = Open(Options(), &report);
  ASSERT_TRUE(log);
  EXPECT_EQ(log->durable_lsn(), Lsn(0));
  EXPECT_EQ(log->next_lsn(), Lsn(1));
  EXPECT_EQ(log->first_lsn(), Lsn(1));
  EXPECT_EQ(report.segments, 1u);
  EXPECT_FALSE(report.torn_tail);
  EXPECT_TRUE(ReadAll(*log, Lsn(1)).empty());
  EXPECT_EQ(SegmentFiles(), std::vector<std::string>{"00000000000000000001.seg"});
}

TEST_F(LogTest, RoundTripAcrossRollsAndReopen) {
  {
    auto log = Open();
    AppendSome(*log, 1, 300);
    EXPECT_EQ(log->durable_lsn(), Lsn(300));
    ExpectRecords(*log, 1, 300);
    EXPECT_GT(log->stats().rolls, 5u);
  }
  EXPECT_GT(SegmentFiles().size(), 5u);
  RecoveryReport report;
  auto log = Open(Options(), &report);
  ASSERT_TRUE(log);
  EXPECT_EQ(report.last_lsn, Lsn(300));
  EXPECT_FALSE(report.torn_tail);
  EXPECT_EQ(log->next_lsn(), Lsn(301));
  ExpectRecords(*log, 1, 300);
  AppendSome(*log, 301, 50);
  ExpectRecords(*log, 1, 350);
  // Every segment is named by its first LSN and holds a contiguous range.
  for (const auto& name : SegmentFiles()) {
    const Lsn first = *ParseSegmentFileName(name);
    auto records = ReadAll(*log, first);
    ASSERT_FALSE(records.empty());
    EXPECT_EQ(records.front().first, first);
  }
}

TEST_F(LogTest, ReadsStartAtEveryLsn) {
  auto log = Open();
  AppendSome(*log, 1, 200);
  for (std::uint64_t from = 1; from <= 201; ++from) {
    auto reader = log->Read(Lsn(from));
    ASSERT_TRUE(reader.ok());
    auto first = reader->Next();
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    if (from == 201) {
      EXPECT_FALSE(first->has_value());
      continue;
    }
    ASSERT_TRUE(first->has_value()) << from;
    EXPECT_EQ((*first)->lsn, Lsn(from));
    EXPECT_EQ(AsString((*first)->bytes), RecordFor(from));
  }
  EXPECT_EQ(log->Read(Lsn(0)).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(log->Read(Lsn(202)).status().code(), StatusCode::kOutOfRange);
}

TEST_F(LogTest, ReadersNeverSeePastTheDurableLsn) {
  auto log = Open();
  AppendSome(*log, 1, 3);
  auto reader = log->Read(Lsn(1));
  ASSERT_TRUE(reader.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Next()->has_value());
  ASSERT_EQ(*log->Append(AsBytes("pending"), nullptr), Lsn(4));
  EXPECT_FALSE(reader->Next()->has_value());  // appended, not durable
  EXPECT_EQ(log->Read(Lsn(5)).status().code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(log->Flush().ok());
  auto next = reader->Next();
  ASSERT_TRUE(next->has_value());  // the same reader continues once it is durable
  EXPECT_EQ(AsString((*next)->bytes), "pending");
}

TEST_F(LogTest, CallbacksRunInLsnOrderOnlyWhenDurable) {
  auto log = Open();
  std::vector<std::uint64_t> completed;
  for (int i = 0; i < 50; ++i) {
    auto lsn =
        log->Append(AsBytes(RecordFor(static_cast<std::uint64_t>(i))), [&](Lsn l, const Status& s) {
          ASSERT_TRUE(s.ok());
          ASSERT_LE(l, log->durable_lsn());
          completed.push_back(l.value());
        });
    ASSERT_TRUE(lsn.ok());
  }
  EXPECT_TRUE(completed.empty());
  ASSERT_TRUE(log->Flush().ok());
  ASSERT_EQ(completed.size(), 50u);
  for (std::size_t i = 0; i < completed.size(); ++i) EXPECT_EQ(completed[i], i + 1);
}

TEST_F(LogTest, OneGroupIsOneBatchUpToTheBatchLimit) {
  auto log = Open();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(log->Append(AsBytes("tiny"), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_EQ(log->stats().batches, 1u);  // ten appends, one write, one sync
  // 40 records of 100 bytes do not fit one 1024-byte batch: several batches, none too big.
  for (int i = 0; i < 40; ++i)
    ASSERT_TRUE(log->Append(AsBytes(std::string(100, 'x')), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
  const auto stats = log->stats();
  EXPECT_GE(stats.batches, 1u + 40 * 104 / 1024);
  EXPECT_EQ(stats.records, 50u);
}

TEST_F(LogTest, RejectsBadOptionsAndOversizedRecords) {
  auto o = Options();
  o.segment_bytes = 100;
  EXPECT_EQ(Log::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.batch_bytes_max = 8192;  // larger than a segment
  EXPECT_EQ(Log::Open(o).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.io = nullptr;
  EXPECT_EQ(Log::Open(o).status().code(), StatusCode::kInvalidArgument);
  auto log = Open();
  const std::string big(log->record_bytes_max() + 1, 'x');
  auto r = log->Append(AsBytes(big), nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("record_bytes_max"), std::string::npos);
  // The largest record fits, in a segment of its own.
  const std::string largest(log->record_bytes_max(), 'y');
  ASSERT_TRUE(log->Append(AsBytes(largest), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_EQ(ReadAll(*log, Lsn(1)).at(0).second, largest);
}

TEST_F(LogTest, StagingLimitIsBackPressure) {
  auto o = Options();
  o.staging_bytes_max = 1024;
  auto log = Open(o);
  Status status;
  int accepted = 0;
  for (int i = 0; i < 100 && status.ok(); ++i) {
    auto r = log->Append(AsBytes(std::string(100, 'z')), nullptr);
    status = r.status();
    if (r.ok()) ++accepted;
  }
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(accepted, 1024 / 104);
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_TRUE(log->Append(AsBytes("again"), nullptr).ok());  // room once written
}

TEST_F(LogTest, SecondOpenerIsRefusedWithAClearError) {
  auto log = Open();
  ASSERT_TRUE(log);
  auto second = Log::Open(Options());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("db/LOCK"), std::string::npos);
  log.reset();
  EXPECT_TRUE(Log::Open(Options()).ok());
}

TEST_F(LogTest, RetentionDeletesWholeSegmentsBelowAnLsnNeverTheActiveOne) {
  auto log = Open();
  AppendSome(*log, 1, 300);
  const auto before = SegmentFiles();
  ASSERT_GT(before.size(), 4u);
  const Lsn third = *ParseSegmentFileName(before[2]);
  // Up to but excluding the third segment's first LSN: exactly two segments go.
  auto report = log->DeleteSegmentsBelow(third);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->segments_deleted, 2u);
  EXPECT_EQ(report->first_lsn, third);
  EXPECT_EQ(log->first_lsn(), third);
  EXPECT_EQ(SegmentFiles(), std::vector<std::string>(before.begin() + 2, before.end()));
  EXPECT_EQ(log->Read(Lsn(1)).status().code(), StatusCode::kOutOfRange);
  ExpectRecords(*log, third.value(), 300);
  // One LSN short of a segment's end keeps it.
  const Lsn fifth = *ParseSegmentFileName(before[4]);
  EXPECT_EQ(log->DeleteSegmentsBelow(Lsn(fifth.value() - 1))->segments_deleted, 1u);
  // Everything: all but the active segment.
  report = log->DeleteSegmentsBelow(Lsn(1'000'000));
  EXPECT_EQ(SegmentFiles().size(), 1u);
  ExpectRecords(*log, log->first_lsn().value(), 300);
  // Reopen: the log starts where retention left it.
  log.reset();
  log = Open();
  EXPECT_EQ(log->first_lsn(), *ParseSegmentFileName(SegmentFiles().front()));
  AppendSome(*log, 301, 10);
}

TEST_F(LogTest, RetentionBySizeAndAgeStopsAtTheKeepBound) {
  auto log = Open();
  AppendSome(*log, 1, 100);
  now_ms_ += 60'000;
  AppendSome(*log, 101, 200);
  const auto segments = SegmentFiles();
  ASSERT_GT(segments.size(), 6u);
  // Age: segments whose newest batch is older than 30 s (the first 100 records' segments, but
  // not the one that also holds newer records).
  RetentionPolicy age;
  age.retained_age_ms = 30'000;
  auto report = log->ApplyRetention(age);
  ASSERT_TRUE(report.ok());
  EXPECT_GE(report->segments_deleted, 1u);
  EXPECT_LE(log->first_lsn(), Lsn(101));
  // Size, bounded by keep_from_lsn: never past it.
  RetentionPolicy size;
  size.retained_bytes_max = 4096;
  size.keep_from_lsn = Lsn(200);
  ASSERT_TRUE(log->ApplyRetention(size).ok());
  EXPECT_LE(log->first_lsn(), Lsn(200));
  ExpectRecords(*log, log->first_lsn().value(), 300);
  size.keep_from_lsn = Lsn(UINT64_MAX);
  ASSERT_TRUE(log->ApplyRetention(size).ok());
  EXPECT_EQ(SegmentFiles().size(), 1u);  // the active one always stays
}

TEST_F(LogTest, WriteErrorStopsTheLogAndFailsEveryWaiter) {
  auto log = Open();
  AppendSome(*log, 1, 5);
  std::vector<Status> results;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        log->Append(AsBytes("doomed"), [&](Lsn, const Status& s) { results.push_back(s); }).ok());
  }
  io_.AddFault(FaultRule{0, OpKind::kWrite, ".seg", FaultKind::kEio, false});
  EXPECT_EQ(log->Flush().code(), StatusCode::kIoError);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& s : results) EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(log->durable_lsn(), Lsn(5));
  EXPECT_EQ(log->Append(AsBytes("after"), nullptr).status().code(), StatusCode::kIoError);
  EXPECT_EQ(log->status().code(), StatusCode::kIoError);
  ExpectRecords(*log, 1, 5);  // durable data stays readable
}

TEST_F(LogTest, SyncErrorIsNeverRetriedAndNothingAfterItIsAcknowledged) {
  auto log = Open();
  AppendSome(*log, 1, 5);
  int acked = 0;
  int failed = 0;
  auto count = [&](Lsn, const Status& s) { s.ok() ? ++acked : ++failed; };
  ASSERT_TRUE(log->Append(AsBytes("a"), count).ok());
  io_.AddFault(FaultRule{0, OpKind::kSync, ".seg", FaultKind::kEio, false});
  EXPECT_EQ(log->Flush().code(), StatusCode::kIoError);
  EXPECT_EQ(log->Append(AsBytes("b"), count).status().code(), StatusCode::kIoError);
  EXPECT_EQ(log->Flush().code(), StatusCode::kIoError);
  EXPECT_EQ(acked, 0);
  EXPECT_EQ(failed, 1);
  // After a restart the failed record is gone (the fault model dropped it), the rest is there.
  log.reset();
  std::mt19937_64 rng(1);
  io_.Restart(rng);
  log = Open();
  EXPECT_EQ(log->durable_lsn(), Lsn(5));
  ExpectRecords(*log, 1, 5);
}

TEST_F(LogTest, DiskFullWhenPreparingASegmentRejectsThenRecovers) {
  auto log = Open();
  AppendSome(*log, 1, 10);
  const Lsn durable = log->durable_lsn();
  io_.AddFault(FaultRule{0, OpKind::kAllocate, "", FaultKind::kEnospc, true});
  std::vector<Status> results;
  for (int i = 0; i < 100; ++i) {
    auto r = log->Append(AsBytes(std::string(100, 'f')),
                         [&](Lsn, const Status& s) { results.push_back(s); });
    if (!r.ok()) break;
  }
  (void)log->Flush();
  ASSERT_FALSE(results.empty());
  EXPECT_EQ(results.back().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(results.back().message().find("ENOSPC"), std::string::npos);
  EXPECT_TRUE(log->status().ok());  // not fail-stop: reads and later appends go on
  const Lsn durable_when_full = log->durable_lsn();
  EXPECT_GE(durable_when_full, durable);
  ExpectRecords(*log, 1, 10, /*exact=*/false);
  // The rejected LSNs are handed out again once space is back.
  io_.ClearFaults();
  EXPECT_EQ(log->next_lsn(), durable_when_full.Next());
  auto again = log->Append(AsBytes("space is back"), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, durable_when_full.Next());
  ASSERT_TRUE(log->Flush().ok());
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(log->Append(AsBytes(std::string(100, 'g')), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
}

TEST_F(LogTest, MidLogCorruptionIsReportedNeverDropped) {
  {
    auto log = Open();
    AppendSome(*log, 1, 300);
  }
  const auto segments = SegmentFiles();
  ASSERT_GT(segments.size(), 3u);
  // Damage a batch in the middle of an older segment: durable data.
  const std::string victim = "db/" + segments[1];
  const std::array<std::byte, 1> garbage{std::byte{0x5a}};
  ASSERT_TRUE(io_.Corrupt(victim, kSegmentHeaderBytes + 60, garbage).ok());
  auto reopened = Log::Open(Options());
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(reopened.status().message().find(segments[1]), std::string::npos)
      << reopened.status().ToString();
  EXPECT_NE(reopened.status().message().find("position 64"), std::string::npos)
      << reopened.status().ToString();
  // The files are untouched: refusing to open never "repairs" by dropping data.
  EXPECT_EQ(SegmentFiles(), segments);
}

// A careful reader (the default) verifies every batch it enters, also one this process wrote.
TEST_F(LogTest, ACarefulReaderVerifiesEveryBatchItReads) {
  auto log = Open();
  AppendSome(*log, 1, 10);
  ExpectRecords(*log, 1, 10);  // reading it once changes nothing
  const std::string segment = "db/" + SegmentFiles().front();
  const std::array<std::byte, 1> garbage{std::byte{0x5a}};
  ASSERT_TRUE(io_.Corrupt(segment, kSegmentHeaderBytes + 60, garbage).ok());
  auto reader = log->Read(Lsn(1));
  ASSERT_TRUE(reader.ok());
  auto first = reader->Next();
  EXPECT_EQ(first.status().code(), StatusCode::kDataLoss) << first.status().ToString();
}

// A trusting reader (the fetch path) does not hash batches: each was verified as it entered the
// process (recovery checks every batch at open; the writer checksummed the very bytes it wrote),
// and the consumer verifies each event's own checksum end to end. Damage that appears later is
// the consumer's to find; a reopen finds it too.
TEST_F(LogTest, ATrustingReaderDoesNotRehashBatches) {
  {
    auto log = Open();
    AppendSome(*log, 1, 10);
    AppendSome(*log, 11, 10);  // the damaged batch is not the last: recovery must refuse it
    const std::string segment = "db/" + SegmentFiles().front();
    const std::array<std::byte, 1> garbage{std::byte{0x5a}};
    ASSERT_TRUE(io_.Corrupt(segment, kSegmentHeaderBytes + 60, garbage).ok());
    auto trusting = log->Read(Lsn(1), /*trust_verified=*/true);
    ASSERT_TRUE(trusting.ok());
    auto first = trusting->Next();
    ASSERT_TRUE(first.ok() && first->has_value()) << first.status().ToString();
    EXPECT_NE(AsString((*first)->bytes), RecordFor(1));  // the damage is there: not rehashed
  }
  auto reopened = Log::Open(Options());
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kDataLoss) << reopened.status().ToString();
}

TEST_F(LogTest, DamageFollowedByAValidBatchInTheLastSegmentIsCorruption) {
  {
    auto log = Open();
    AppendSome(*log, 1, 3);
    AppendSome(*log, 4, 3);
  }
  const std::string last = "db/" + SegmentFiles().back();
  const std::array<std::byte, 1> garbage{std::byte{0xee}};
  ASSERT_TRUE(io_.Corrupt(last, kSegmentHeaderBytes + kBatchHeaderBytes + 2, garbage).ok());
  auto reopened = Log::Open(Options());
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(reopened.status().message().find("followed by a valid batch"), std::string::npos)
      << reopened.status().ToString();
}

TEST_F(LogTest, TornTailIsCutReportedAndOverwritable) {
  std::uint64_t end = 0;
  {
    auto log = Open();
    AppendSome(*log, 1, 3);
    end = log->stats().bytes + kSegmentHeaderBytes;
  }
  // What a torn write leaves: the start of a batch header, then garbage, after the last batch.
  const std::string last = "db/" + SegmentFiles().back();
  std::vector<std::byte> torn(200, std::byte{0x77});
  base::StoreLe32(torn.data(), kBatchMagic);
  ASSERT_TRUE(io_.Corrupt(last, end, torn).ok());
  RecoveryReport report;
  auto log = Open(Options(), &report);
  ASSERT_TRUE(log);
  EXPECT_TRUE(report.torn_tail);
  EXPECT_EQ(report.torn_position, end);
  EXPECT_EQ(report.last_lsn, Lsn(3));
  ExpectRecords(*log, 1, 3);
  // New batches go where the torn one was, and the garbage after them is gone too.
  AppendSome(*log, 4, 2);
  log.reset();
  RecoveryReport again;
  log = Open(Options(), &again);
  EXPECT_FALSE(again.torn_tail);
  ExpectRecords(*log, 1, 5);
}

TEST_F(LogTest, RecoveryRemovesUnfinishedSegmentPreparations) {
  {
    auto log = Open();
    AppendSome(*log, 1, 3);
  }
  { ASSERT_TRUE(io_.CreateFile("db/prepare-7.tmp").ok()); }
  RecoveryReport report;
  auto log = Open(Options(), &report);
  EXPECT_EQ(report.removed_temp_files, std::vector<std::string>{"prepare-7.tmp"});
  EXPECT_FALSE(io_.Exists("db/prepare-7.tmp"));
}

TEST_F(LogTest, MissingSegmentInTheMiddleIsCorruption) {
  {
    auto log = Open();
    AppendSome(*log, 1, 300);
  }
  const auto segments = SegmentFiles();
  ASSERT_TRUE(io_.Remove("db/" + segments[2]).ok());
  auto reopened = Log::Open(Options());
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(reopened.status().message().find("missing"), std::string::npos);
}

TEST_F(LogTest, AGroupThatDoesNotFitRollsAndIsWrittenWhole) {
  auto log = Open();
  // 3,600 of 4,032 usable bytes used; then a group of five 100-byte records (568 bytes).
  for (int i = 0; i < 36; ++i)
    ASSERT_TRUE(log->Append(AsBytes(std::string(96, 'a')), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
  const auto before = log->stats();
  ASSERT_EQ(before.rolls, 0u);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(log->Append(AsBytes(std::string(100, 'b')), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
  const auto after = log->stats();
  EXPECT_EQ(after.rolls, 1u);
  EXPECT_EQ(after.batches, before.batches + 1);  // one batch, one sync: not split across the roll
  EXPECT_EQ(SegmentFiles().back(), SegmentFileName(Lsn(37)));
}

TEST(Preallocation, AdaptiveZeroFillsSlowLogsAndFallocatesFastOnes) {
  constexpr std::uint64_t kThreshold = 32 << 20;
  EXPECT_EQ(ChoosePreallocation(Preallocation::kAdaptive, 0, kThreshold), Preallocation::kZeroFill);
  EXPECT_EQ(ChoosePreallocation(Preallocation::kAdaptive, 1e6, kThreshold),
            Preallocation::kZeroFill);
  EXPECT_EQ(ChoosePreallocation(Preallocation::kAdaptive, 1e9, kThreshold),
            Preallocation::kFallocate);
  EXPECT_EQ(ChoosePreallocation(Preallocation::kZeroFill, 1e9, kThreshold),
            Preallocation::kZeroFill);
  EXPECT_EQ(ChoosePreallocation(Preallocation::kFallocate, 0, kThreshold),
            Preallocation::kFallocate);
}

TEST_F(LogTest, RecoverySyncsWhatAProcessCrashLeftInThePageCache) {
  {
    auto log = Open();
    AppendSome(*log, 1, 3);
    ASSERT_TRUE(log->Append(AsBytes(RecordFor(4)), nullptr).ok());
    // Crash at the sync of that group: written to the page cache, never synced, never acked.
    io_.CrashAtOperation(io_.operations() + 2);  // op +1 is the write, op +2 the sync
    EXPECT_FALSE(log->Flush().ok());
  }
  io_.RestartProcess();  // kill -9: the page cache survives
  {
    auto log = Open();
    ASSERT_EQ(log->durable_lsn(), Lsn(4));  // recovery found the unsynced batch
  }
  // A power loss now must not take LSN 4 away: recovery published it, so it had to sync it.
  PowerLossDroppingEverythingUnsynced();
  auto log = Open();
  EXPECT_EQ(log->durable_lsn(), Lsn(4));
  ExpectRecords(*log, 1, 4);
}

TEST_F(LogTest, AfterAFailedSyncARestartedProcessStillCannotPublishUnsyncedData) {
  {
    auto log = Open();
    AppendSome(*log, 1, 3);
    ASSERT_TRUE(log->Append(AsBytes(RecordFor(4)), nullptr).ok());
    // "fsyncgate": the sync fails, Linux marks the pages clean, they stay readable.
    io_.AddFault(FaultRule{0, OpKind::kSync, ".seg", FaultKind::kEio, false});
    EXPECT_EQ(log->Flush().code(), StatusCode::kIoError);
  }
  io_.RestartProcess();  // only the process restarts: the page cache still shows LSN 4
  Lsn recovered;
  {
    auto log = Open();
    recovered = log->durable_lsn();
    ASSERT_GE(recovered, Lsn(3));
  }
  // Whatever recovery published must survive a power loss that drops every unsynced write.
  PowerLossDroppingEverythingUnsynced();
  auto log = Open();
  EXPECT_EQ(log->durable_lsn(), recovered);
  ExpectRecords(*log, 1, recovered.value());
}

TEST_F(LogTest, ManualFlushEndsEvenWhenCallbacksKeepAppending) {
  auto log = Open();
  Log* raw = log.get();  // unique_ptr::reset() clears the pointer before the destructor runs
  int appended = 0;
  std::function<void(Lsn, const Status&)> refill = [&](Lsn, const Status& s) {
    if (s.ok() && raw->Append(AsBytes("again"), refill).ok()) ++appended;
  };
  ASSERT_TRUE(log->Append(AsBytes("first"), refill).ok());
  ASSERT_TRUE(log->Flush().ok());  // returns once "first" is done, not when refills stop
  EXPECT_GE(appended, 1);
  log.reset();  // and the destructor's drain ends too: appends during it are refused
}

TEST_F(LogTest, RetentionThatFailsToDeleteKeepsItsSegments) {
  auto log = Open();
  AppendSome(*log, 1, 300);
  const auto before = SegmentFiles();
  io_.AddFault(FaultRule{0, OpKind::kRemove, before[1], FaultKind::kEio, false});
  auto report = log->DeleteSegmentsBelow(Lsn(250));
  EXPECT_EQ(report.status().code(), StatusCode::kIoError);
  // The first segment is gone; the one that failed and everything after are still the log's.
  EXPECT_EQ(log->first_lsn(), *ParseSegmentFileName(before[1]));
  ExpectRecords(*log, log->first_lsn().value(), 300);
  auto again = log->DeleteSegmentsBelow(Lsn(250));
  ASSERT_TRUE(again.ok());
  EXPECT_GT(again->segments_deleted, 0u);
}

TEST_F(LogTest, WriteEnospcStillStopsTheLogAsAnIoError) {
  auto log = Open();
  AppendSome(*log, 1, 2);
  io_.AddFault(FaultRule{0, OpKind::kWrite, ".seg", FaultKind::kShortWrite, false});
  ASSERT_TRUE(log->Append(AsBytes("x"), nullptr).ok());
  // The write reported ENOSPC, but a stopped log must say "stop", not "back off".
  EXPECT_EQ(log->Flush().code(), StatusCode::kIoError);
  EXPECT_EQ(log->Append(AsBytes("y"), nullptr).status().code(), StatusCode::kIoError);
}

TEST_F(LogTest, FlushReturnsWhenADiskFullRejectsWhatItWaitsFor) {
  // Before the log: a rejection's callback may still run while the log closes.
  std::atomic<bool> rejected{false};  // an append's own callback said so
  auto options = Options();
  options.writer_thread = true;
  options.prepare_in_background = false;
  auto log = Open(options);
  ASSERT_TRUE(log->Append(AsBytes(RecordFor(1)), nullptr).ok());
  ASSERT_TRUE(log->Flush().ok());
  io_.AddFault(FaultRule{0, OpKind::kAllocate, "", FaultKind::kEnospc, true});
  Status status;
  for (int i = 0; i < 60 && status.ok() && !rejected; ++i) {
    auto r = log->Append(AsBytes(std::string(200, 'q')), [&](Lsn, const Status& s) {
      if (s.code() == StatusCode::kResourceExhausted) rejected = true;
    });
    if (!r.ok()) {  // the writer saw the full disk first: appends are rejected already
      status = r.status();
      break;
    }
    status = log->Flush();  // must come back: durable, or rejected — never hang
  }
  // The full disk is reported: by Flush, or by the append's callback when the writer thread
  // rejected the append before Flush looked (the rejected LSNs are handed out again, so that
  // Flush then finds nothing left to wait for).
  EXPECT_TRUE(status.code() == StatusCode::kResourceExhausted || (status.ok() && rejected))
      << status.ToString();
}

// --- Real disk, real threads -----------------------------------------------------------------

class LogOnDiskTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    LOCKSTEP_IO_OR_SKIP(io, GetParam());
    io_ = std::move(io);
  }
  LogOptions Options() {
    LogOptions o;
    o.dir = dir_.Sub("log");
    o.io = io_.get();
    o.segment_bytes = 64 << 10;
    o.batch_bytes_max = 16 << 10;
    o.preallocation = Preallocation::kFallocate;
    return o;
  }
  testing::TempDir dir_;
  std::unique_ptr<Io> io_;
};

TEST_P(LogOnDiskTest, ConcurrentAppendersGetDenseLsnsAndTheirOwnRecords) {
  auto log = std::move(Log::Open(Options())).value();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1500;
  std::vector<std::vector<std::pair<std::uint64_t, std::string>>> mine(kThreads);
  std::atomic<int> completed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string rec = std::to_string(t);
        rec.append("-").append(std::to_string(i));
        auto lsn = log->Append(AsBytes(rec), [&](Lsn l, const Status& s) {
          EXPECT_TRUE(s.ok());
          EXPECT_LE(l, log->durable_lsn());
          completed.fetch_add(1);
        });
        ASSERT_TRUE(lsn.ok());
        mine[static_cast<std::size_t>(t)].emplace_back(lsn->value(), rec);
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(log->Flush().ok());
  EXPECT_EQ(completed.load(), kThreads * kPerThread);
  std::map<std::uint64_t, std::string> expected;
  for (const auto& v : mine) {
    for (std::size_t i = 1; i < v.size(); ++i) EXPECT_LT(v[i - 1].first, v[i].first);
    for (const auto& [lsn, rec] : v) EXPECT_TRUE(expected.emplace(lsn, rec).second);
  }
  ASSERT_EQ(expected.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(expected.begin()->first, 1u);
  EXPECT_EQ(expected.rbegin()->first, static_cast<std::uint64_t>(kThreads * kPerThread));
  auto records = ReadAll(*log, Lsn(1));
  ASSERT_EQ(records.size(), expected.size());
  for (const auto& [lsn, rec] : records) ASSERT_EQ(expected[lsn.value()], rec);
  // Group commit grouped: fewer syncs than records.
  EXPECT_LT(log->stats().batches, log->stats().records);
}

TEST_P(LogOnDiskTest, FuturesReopenAndLockAcrossOpeners) {
  auto options = Options();
  {
    auto log = std::move(Log::Open(options)).value();
    std::vector<std::future<Status>> futures;
    for (int i = 0; i < 2000; ++i) {
      auto pending = log->AppendWithFuture(AsBytes(RecordFor(static_cast<std::uint64_t>(i))));
      ASSERT_TRUE(pending.ok());
      EXPECT_EQ(pending->lsn, Lsn(static_cast<std::uint64_t>(i) + 1));
      futures.push_back(std::move(pending->durable));
    }
    for (auto& f : futures) ASSERT_TRUE(f.get().ok());
    EXPECT_GT(log->stats().rolls, 0u);
    auto second = Log::Open(options);
    EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_TRUE(log->WaitForDurable(Lsn(2000), std::chrono::milliseconds(1)).ok());
    EXPECT_EQ(log->WaitForDurable(Lsn(2001), std::chrono::milliseconds(20)).code(),
              StatusCode::kDeadlineExceeded);
  }
  auto log = std::move(Log::Open(options)).value();
  auto records = ReadAll(*log, Lsn(1));
  ASSERT_EQ(records.size(), 2000u);
  for (std::size_t i = 0; i < records.size(); ++i) ASSERT_EQ(records[i].second, RecordFor(i));
}

TEST_P(LogOnDiskTest, ReadersTailWhileAppendsRollsAndRetentionRun) {
  auto options = Options();
  options.segment_bytes = 16 << 10;
  options.batch_bytes_max = 4 << 10;
  options.index_interval_bytes = 1024;
  auto log = std::move(Log::Open(options)).value();
  constexpr std::uint64_t kRecords = 4000;
  std::atomic<bool> failed{false};
  std::atomic<bool> stop{false};
  std::string failure;  // written only by the first failing reader
  auto fail = [&](const std::string& why) {
    if (!failed.exchange(true)) failure = why;
  };
  auto tail = [&] {
    std::uint64_t expect = 1;
    while (expect <= kRecords && !failed && !stop) {
      auto reader = log->Read(Lsn(std::max(expect, log->first_lsn().value())));
      if (!reader.ok()) {
        // Only retention moving the start between first_lsn() and Read() is expected.
        if (reader.status().code() != StatusCode::kOutOfRange) fail(reader.status().ToString());
        continue;
      }
      expect = reader->next_lsn().value();
      while (expect <= kRecords && !stop) {
        auto next = reader->Next();
        if (!next.ok()) {
          // Retention deleted the segment under the reader: start again. Anything else fails.
          if (next.status().code() != StatusCode::kOutOfRange) fail(next.status().ToString());
          break;
        }
        if (!next->has_value()) {
          (void)log->WaitForDurable(Lsn(expect), std::chrono::milliseconds(100));
          continue;
        }
        if ((*next)->lsn != Lsn(expect) || AsString((*next)->bytes) != RecordFor(expect)) {
          fail("wrong record at LSN " + std::to_string(expect));
          return;
        }
        ++expect;
      }
    }
  };
  std::thread reader_a(tail);
  std::thread reader_b(tail);
  Status writer_status;
  for (std::uint64_t i = 1; i <= kRecords && writer_status.ok(); ++i) {
    writer_status = log->Append(AsBytes(RecordFor(i)), nullptr).status();
    if (writer_status.ok() && i % 500 == 0) {
      writer_status = log->Flush();
      if (writer_status.ok()) writer_status = log->DeleteSegmentsBelow(Lsn(i - 400)).status();
    }
  }
  if (writer_status.ok()) writer_status = log->Flush();
  if (!writer_status.ok()) stop = true;  // never leave the readers waiting for records
  reader_a.join();
  reader_b.join();
  ASSERT_TRUE(writer_status.ok()) << writer_status.ToString();
  EXPECT_FALSE(failed.load()) << failure;
  EXPECT_GT(log->stats().rolls, 10u);
}

TEST_P(LogOnDiskTest, LockRefusesASecondProcess) {
  auto options = Options();
  ASSERT_TRUE(Log::Open(options).ok());  // creates the log; closed again at once
  int to_parent[2];
  int to_child[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  ASSERT_EQ(::pipe(to_child), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child takes the log's lock (as a lockstepd holding the directory would), says so, and
    // holds it until the parent closes its end of the pipe. Only the lock: a forked child of a
    // threaded test process should not start threads of its own.
    ::close(to_parent[0]);
    ::close(to_child[1]);
    PosixIo io;
    auto lock = io.LockFile(options.dir + "/LOCK");
    const char ready = lock.ok() ? 'y' : 'n';
    (void)!::write(to_parent[1], &ready, 1);
    char ignored;
    (void)!::read(to_child[0], &ignored, 1);
    ::_exit(0);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);
  char ready = 0;
  ASSERT_EQ(::read(to_parent[0], &ready, 1), 1);
  ASSERT_EQ(ready, 'y');
  auto second = Log::Open(options);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("pid " + std::to_string(child)), std::string::npos)
      << second.status().ToString();
  ::close(to_child[1]);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  EXPECT_TRUE(Log::Open(options).ok());  // released when the holder exits
}

INSTANTIATE_TEST_SUITE_P(Backends, LogOnDiskTest, testing::kRealBackends, testing::BackendName);

}  // namespace
}  // namespace lockstep::storage

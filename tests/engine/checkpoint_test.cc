// Proves engine checkpoints: a reopen from a checkpoint restores tables, topics, offsets,
// groups and remembered idempotency keys exactly, replaying only the log after it; commits go
// on while a checkpoint is taken; topic time retention moves start offsets and lets the log
// delete segments (fetch, the change feed and as-of reads then answer out of range below what
// is held); a damaged newest checkpoint falls back to the older one; with every checkpoint
// damaged and the log's start deleted, open refuses naming why.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "engine/engine.h"
#include "engine/verify.h"
#include "storage/checkpoint_file.h"
#include "storage/fault_io.h"
#include "tests/engine/engine_fixture.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;

class CheckpointTest : public EngineFixture {
 protected:
  static std::vector<std::string> Payloads(Engine& e, const std::string& topic,
                                           std::uint32_t partition, std::uint64_t from) {
    std::vector<std::string> out;
    Offset next(from);
    for (;;) {
      auto r = e.Fetch(topic, PartitionId(partition), next);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (!r.ok() || r->events == 0) return out;
      base::Bytes rest = r->records;
      while (!rest.empty()) {
        auto v = base::DecodeEvent(rest);
        EXPECT_TRUE(v.ok());
        if (!v.ok()) return out;
        out.emplace_back(reinterpret_cast<const char*>(v->payload().data()), v->payload().size());
        rest = rest.subspan(v->record().size());
      }
      next = r->next_offset;
    }
  }
  // A little of everything: rows (some deleted), events in two topics, a group, a key.
  void Fill(Engine& e, int from, int to) {
    for (int i = from; i < to; ++i) {
      Transaction t;
      t.Put("accounts", "acct" + std::to_string(i % 13), std::string(100, 'v') + std::to_string(i))
          .Append(Event("audit", "a" + std::to_string(i), static_cast<std::uint32_t>(i % 2)));
      if (i % 7 == 0) t.Delete("accounts", "acct" + std::to_string((i + 5) % 13));
      if (i % 5 == 0) t.Append(Event("clicks", "c" + std::to_string(i), 0));
      if (i % 11 == 0) t.IdempotencyKey("op-" + std::to_string(i));
      ASSERT_TRUE(Commit(e, std::move(t)).ok());
    }
  }
};

struct Snapshot {
  std::vector<Row> rows;
  std::vector<TopicInfo> topics;
  std::vector<std::string> audit0, audit1, clicks;
  GroupInfo group;
};

TEST_F(CheckpointTest, AReopenFromACheckpointRestoresEverything) {
  Snapshot before;
  Lsn checkpoint, keyed;
  {
    auto e = Open();
    ASSERT_TRUE(e->CreateTable("accounts").ok());
    ASSERT_TRUE(e->CreateTopic("audit", 2).ok());
    ASSERT_TRUE(e->CreateTopic("clicks", 1, /*retention_ms=*/0).ok());
    ASSERT_TRUE(e->CreateTable("scratch").ok());
    ASSERT_TRUE(e->DropTable("scratch").ok());
    Fill(*e, 0, 300);
    ASSERT_TRUE(e->NewGroupGeneration("g").ok());
    ASSERT_TRUE(
        Commit(*e, Transaction().CommitOffset({"g", 1, "audit", PartitionId(1), Offset(40)})).ok());
    auto c = e->Checkpoint();
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    checkpoint = *c;
    EXPECT_EQ(checkpoint, e->visible_lsn());
    EXPECT_EQ(e->checkpoint_lsn(), checkpoint);
    Fill(*e, 300, 350);  // after the checkpoint: replayed from the log
    keyed = Commit(*e, Transaction().IdempotencyKey("late").Put("accounts", "x", "y"))->lsn;
    before.rows = *e->Scan("accounts", {});
    before.topics = e->ListTopics();
    before.audit0 = Payloads(*e, "audit", 0, 0);
    before.audit1 = Payloads(*e, "audit", 1, 0);
    before.clicks = Payloads(*e, "clicks", 0, 0);
    before.group = *e->DescribeGroup("g");
  }
  auto e = Open();
  EXPECT_EQ(e->checkpoint_lsn(), checkpoint);
  EXPECT_EQ(e->oldest_readable_lsn(), checkpoint);
  auto rows = *e->Scan("accounts", {});
  ASSERT_EQ(rows.size(), before.rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].key, before.rows[i].key);
    EXPECT_EQ(rows[i].value, before.rows[i].value);
    EXPECT_EQ(rows[i].version, before.rows[i].version);
  }
  EXPECT_EQ(e->ListTables(), std::vector<std::string>{"accounts"});
  auto topics = e->ListTopics();
  ASSERT_EQ(topics.size(), 2u);
  EXPECT_EQ(topics[0].end_offsets, before.topics[0].end_offsets);
  EXPECT_EQ(topics[1].end_offsets, before.topics[1].end_offsets);
  EXPECT_EQ(Payloads(*e, "audit", 0, 0), before.audit0);
  EXPECT_EQ(Payloads(*e, "audit", 1, 0), before.audit1);
  EXPECT_EQ(Payloads(*e, "clicks", 0, 0), before.clicks);
  auto group = *e->DescribeGroup("g");
  EXPECT_EQ(group.generation, 1u);
  ASSERT_EQ(group.offsets.size(), 1u);
  EXPECT_EQ(group.offsets[0].offset.value(), 40u);
  // Idempotency keys: from the checkpoint (op-11) and from the log after it.
  auto retry = Commit(*e, Transaction().IdempotencyKey("late").Put("accounts", "x", "z"));
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->lsn, keyed);
  auto old_key = Commit(*e, Transaction().IdempotencyKey("op-11").Put("accounts", "x", "z"));
  ASSERT_TRUE(old_key.ok());
  EXPECT_LT(old_key->lsn, checkpoint);
  EXPECT_EQ((*e->Get("accounts", "x"))->value, "y");
  // As-of reads reach back to the checkpoint, no further.
  EXPECT_TRUE(e->GetAsOf("accounts", "acct1", checkpoint).ok());
  EXPECT_EQ(e->GetAsOf("accounts", "acct1", Lsn(checkpoint.value() - 1)).status().code(),
            StatusCode::kOutOfRange);
  // The change feed reaches back to just past the checkpoint (before images come from the
  // versions, which start there), with the right before images.
  EXPECT_EQ(e->Changes(checkpoint).status().code(), StatusCode::kOutOfRange);
  auto feed = e->Changes(Lsn(checkpoint.value() + 1));
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  ASSERT_FALSE(feed->transactions.empty());
  ASSERT_FALSE(feed->transactions[0].changes.empty());
  EXPECT_TRUE(feed->transactions[0].changes[0].before.has_value());  // acct keys existed
  // Offsets and catalog ids continue.
  ASSERT_TRUE(e->CreateTable("later").ok());
  auto more = Commit(*e, Transaction().Append(Event("clicks", "new", 0)));
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(more->events[0].offset.value(), before.clicks.size());
}

TEST_F(CheckpointTest, CommitsGoOnWhileACheckpointIsTaken) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("accounts").ok());
  ASSERT_TRUE(e->CreateTopic("audit", 2).ok());
  ASSERT_TRUE(e->CreateTopic("clicks", 1).ok());
  Fill(*e, 0, 200);
  // A writer commits until three distinct checkpoints were taken while it ran, back to back;
  // every checkpoint sees a consistent state and no commit waits for one.
  std::atomic<int> checkpoints{0};
  std::atomic<bool> writer_done{false};
  int committed = 0;
  std::thread writer([&] {
    for (int i = 0; i < 20'000 && checkpoints.load() < 3; ++i) {
      auto r = Commit(
          *e, Transaction().Put("accounts", "w" + std::to_string(i % 50), std::to_string(i)));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ++committed;
    }
    writer_done = true;
  });
  std::vector<Lsn> taken;
  while (!writer_done.load()) {
    auto c = e->Checkpoint();
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    if (taken.empty() || *c != taken.back()) {
      taken.push_back(*c);
      ++checkpoints;
    }
  }
  writer.join();
  EXPECT_GT(committed, 0);
  EXPECT_GE(taken.size(), 3u) << "checkpoints did not run while commits did";
  for (std::size_t i = 1; i < taken.size(); ++i) EXPECT_GT(taken[i], taken[i - 1]);
  const auto rows = *e->Scan("accounts", {});
  e.reset();
  e = Open();
  EXPECT_EQ(e->Scan("accounts", {})->size(), rows.size());
  // Two checkpoints are kept: the newest and its fallback.
  EXPECT_LE(storage::ListCheckpoints(io_, "db/checkpoints")->size(), 2u);
}

TEST_F(CheckpointTest, TimeRetentionMovesStartOffsetsAndDeletesSegments) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("accounts").ok());
  ASSERT_TRUE(e->CreateTopic("audit", 2, /*retention_ms=*/60'000).ok());
  ASSERT_TRUE(e->CreateTopic("clicks", 1, /*retention_ms=*/60'000).ok());
  Fill(*e, 0, 400);  // at t = 1,000,000: about 100 KiB of log, two segments at least
  // A slow consumer: its committed offset will fall below what retention keeps.
  ASSERT_TRUE(
      Commit(*e, Transaction().CommitOffset({"slow", 0, "audit", PartitionId(0), Offset(10)}))
          .ok());
  now_ += 120'000;
  const Lsn old_end = e->visible_lsn();
  Fill(*e, 400, 500);  // at t + 120 s: these are kept
  ASSERT_TRUE(e->Checkpoint().ok());
  // The first checkpoint keeps everything: it has no fallback yet.
  EXPECT_EQ(e->ListTopics()[0].start_offsets[0].value(), 200u);
  Fill(*e, 500, 510);
  ASSERT_TRUE(e->Checkpoint().ok());
  auto topics = e->ListTopics();
  EXPECT_EQ(topics[0].start_offsets[0].value(), 200u);  // audit/0: events 0..199 expired
  EXPECT_EQ(topics[0].start_offsets[1].value(), 200u);
  EXPECT_EQ(topics[1].start_offsets[0].value(), 80u);  // clicks: every 5th of 0..399
  // Segments below the first checkpoint went (it is the fallback now, and older events expired).
  EXPECT_EQ(e->Changes(Lsn(1)).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(e->Fetch("audit", PartitionId(0), Offset(199)).status().code(),
            StatusCode::kOutOfRange);
  auto kept = Payloads(*e, "audit", 0, 200);
  ASSERT_EQ(kept.size(), 55u);
  EXPECT_EQ(kept[0], "a400");
  EXPECT_EQ(e->OffsetForTimestamp("audit", PartitionId(0), 0)->value(), 200u);
  auto lag = e->GroupLag("slow");
  ASSERT_TRUE(lag.ok()) << lag.status().ToString();
  ASSERT_EQ(lag->size(), 1u);
  EXPECT_EQ((*lag)[0].events, 255u - 10u);
  EXPECT_EQ((*lag)[0].ms, 0);  // the oldest event still held was written at the current time
  // A reopen agrees, from the checkpoint and the shorter log.
  e.reset();
  e = Open();
  topics = e->ListTopics();
  EXPECT_EQ(topics[0].start_offsets[0].value(), 200u);
  EXPECT_EQ(topics[1].start_offsets[0].value(), 80u);
  EXPECT_EQ(Payloads(*e, "audit", 0, 200), kept);
  EXPECT_GT(e->visible_lsn(), old_end);
}

// Found by lockstep-torture (simulation, seed 5): a partition emptied by retention keeps the
// sparse index entry that located its start, although a later checkpoint lets retention delete
// the segment that entry points into. Events appended afterwards (no new index entry yet: one
// per 64 events) were then judged gone by recovery, which moved the start offset past them:
// acknowledged, unexpired events vanished on reopen.
TEST_F(CheckpointTest, EventsAppendedToAPartitionEmptiedByRetentionSurviveAReopen) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("orders", 1, /*retention_ms=*/1'000).ok());
  ASSERT_TRUE(e->CreateTopic("padding", 1, /*retention_ms=*/1'000).ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("orders", "old"))).ok());
  // Enough log to roll segments past the one holding the orders' index entry.
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", std::string(1000, 'p')))).ok());
  }
  now_ += 5'000;  // everything expired
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", "tick"))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());  // retention deletes the old segments now
  ASSERT_EQ(e->ListTopics()[0].start_offsets[0].value(), 3u);
  ASSERT_EQ(e->Changes(Lsn(1)).status().code(), StatusCode::kOutOfRange) << "nothing deleted";
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("orders", "new" + std::to_string(i)))).ok());
  }
  EXPECT_EQ(Payloads(*e, "orders", 0, 3), (std::vector<std::string>{"new0", "new1"}));
  e.reset();
  e = Open();
  EXPECT_EQ(e->ListTopics()[0].start_offsets[0].value(), 3u);
  EXPECT_EQ(Payloads(*e, "orders", 0, 3), (std::vector<std::string>{"new0", "new1"}));
}

// The same stale entry, at run time: once the emptied partition had events again, every
// checkpoint's `keep` (the LSN below which segments go) came from that entry, below the log's
// start, so retention deleted nothing more for any topic until 64 more events.
TEST_F(CheckpointTest, RetentionGoesOnAfterAnEmptiedPartitionFillsAgain) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("orders", 1, /*retention_ms=*/1'000).ok());
  ASSERT_TRUE(e->CreateTopic("padding", 1, /*retention_ms=*/1'000).ok());
  auto pad = [&] {
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", std::string(1000, 'p')))).ok());
    }
  };
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("orders", "old"))).ok());
  pad();
  now_ += 5'000;
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", "tick"))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_EQ(e->ListTopics()[0].start_offsets[0].value(), 3u);  // orders emptied
  // More padding (segments to delete later), then one order that stays.
  const Lsn padding_from = e->visible_lsn();
  pad();
  now_ += 5'000;
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("orders", "new"))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", "tick"))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());
  // The expired padding's segments went: the log (and with it what idempotency remembers)
  // starts past them.
  EXPECT_GT(e->idempotency_floor(), padding_from);
  EXPECT_EQ(Payloads(*e, "orders", 0, 3), (std::vector<std::string>{"new"}));
}

TEST_F(CheckpointTest, ByteRetentionKeepsAboutTheBudget) {
  constexpr std::uint64_t kBudget = 10'000;
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("sized", 1, /*retention_ms=*/0, kBudget).ok());
  ASSERT_TRUE(e->CreateTopic("other", 1).ok());  // empty: pins nothing
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("sized", "e" + std::to_string(i), 0))).ok());
  }
  auto kept_bytes = [&](Engine& engine) {
    std::uint64_t bytes = 0;
    const std::uint64_t start = engine.ListTopics()[1].start_offsets[0].value();
    Offset next(start);
    for (;;) {
      auto r = engine.Fetch("sized", PartitionId(0), next);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (!r.ok() || r->events == 0) return bytes;
      bytes += r->records.size();
      next = r->next_offset;
    }
  };
  const std::uint64_t all = kept_bytes(*e);
  ASSERT_GT(all, 5 * kBudget);
  EXPECT_EQ(e->offset_index_entries(), 1000u / 64 + 1);
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("sized", "last", 0))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());
  // "other" sorts first in ListTopics.
  const std::uint64_t start = e->ListTopics()[1].start_offsets[0].value();
  EXPECT_GT(start, 700u);
  const std::uint64_t kept = kept_bytes(*e);
  const std::uint64_t block = 64 * (all / 1000 + 1);  // retention works in index blocks
  EXPECT_LE(kept, kBudget + block);
  EXPECT_GE(kept + block, kBudget);
  EXPECT_EQ(e->Fetch("sized", PartitionId(0), Offset(start - 1)).status().code(),
            StatusCode::kOutOfRange);
  // The index went with the events: it starts at the entry that locates the start offset.
  const std::uint64_t index_entries = 1001 / 64 + 1 - start / 64;
  EXPECT_EQ(e->offset_index_entries(), index_entries);
  e.reset();
  e = Open();
  EXPECT_EQ(e->ListTopics()[1].start_offsets[0].value(), start);
  EXPECT_EQ(kept_bytes(*e), kept);
  EXPECT_EQ(e->offset_index_entries(), index_entries);
}

TEST_F(CheckpointTest, ADamagedCheckpointFallsBackOrRefusesToOpen) {
  std::vector<Row> rows;
  std::vector<Lsn> taken;
  {
    auto e = Open();
    ASSERT_TRUE(e->CreateTable("accounts").ok());
    ASSERT_TRUE(e->CreateTopic("audit", 2, 60'000).ok());
    ASSERT_TRUE(e->CreateTopic("clicks", 1, 60'000).ok());
    Fill(*e, 0, 400);
    now_ += 120'000;
    taken.push_back(*e->Checkpoint());
    Fill(*e, 400, 450);
    taken.push_back(*e->Checkpoint());
    Fill(*e, 450, 460);
    rows = *e->Scan("accounts", {});
  }
  const std::string newest = "db/checkpoints/" + storage::CheckpointFileName(taken[1]);
  const std::byte junk[4] = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  ASSERT_TRUE(io_.Corrupt(newest, 100, junk).ok());
  {
    auto e = Open();
    EXPECT_EQ(e->checkpoint_lsn(), taken[0]);  // the fallback
    auto got = *e->Scan("accounts", {});
    ASSERT_EQ(got.size(), rows.size());
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].value, rows[i].value);
  }
  // Both damaged, and the log no longer starts at LSN 1: open refuses, naming why.
  const std::string older = "db/checkpoints/" + storage::CheckpointFileName(taken[0]);
  ASSERT_TRUE(io_.Corrupt(older, 100, junk).ok());
  auto log_start = [&] {
    auto names = *io_.ListDir("db/log");
    std::sort(names.begin(), names.end());
    return names.front();
  }();
  if (log_start != "00000000000000000001.seg") {
    auto e = Engine::Open(Options());
    ASSERT_EQ(e.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(e.status().message().find("no valid checkpoint"), std::string::npos)
        << e.status().ToString();
  } else {
    GTEST_FAIL() << "retention deleted nothing: the test set-up no longer exercises this";
  }
}

// The only checkpoint damaged, and the log still holding every transaction from LSN 1 (no
// retention deleted anything): the engine replays the whole log instead, and loses nothing.
TEST_F(CheckpointTest, ADamagedOnlyCheckpointFallsBackToAFullReplay) {
  std::vector<Row> rows;
  std::vector<std::string> audit0;
  Lsn taken, idempotent;
  {
    auto e = Open();
    ASSERT_TRUE(e->CreateTable("accounts").ok());
    ASSERT_TRUE(e->CreateTopic("audit", 2).ok());  // no retention: the log keeps everything
    ASSERT_TRUE(e->CreateTopic("clicks", 1).ok());
    Fill(*e, 0, 200);
    taken = *e->Checkpoint();
    Fill(*e, 200, 230);
    idempotent = Commit(*e, Transaction().IdempotencyKey("late").Put("accounts", "x", "y"))->lsn;
    rows = *e->Scan("accounts", {});
    audit0 = Payloads(*e, "audit", 0, 0);
  }
  auto names = *io_.ListDir("db/log");
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.front(), "00000000000000000001.seg");  // the case this test is about
  const std::byte junk[4] = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  ASSERT_TRUE(io_.Corrupt("db/checkpoints/" + storage::CheckpointFileName(taken), 100, junk).ok());
  auto e = Open();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->checkpoint_lsn(), Lsn());  // none loaded: replayed from LSN 1
  auto got = *e->Scan("accounts", {});
  ASSERT_EQ(got.size(), rows.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].key, rows[i].key);
    EXPECT_EQ(got[i].value, rows[i].value);
  }
  EXPECT_EQ(Payloads(*e, "audit", 0, 0), audit0);
  // Idempotency keys come back from the log too: a retry gets its original answer.
  auto retry = Commit(*e, Transaction().IdempotencyKey("late").Put("accounts", "x", "y"));
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->lsn, idempotent);
}

}  // namespace
}  // namespace lockstep::engine

namespace lockstep::engine {
namespace {

// Counts what the verifier walks, to check a visitor sees exactly what the report says.
class CountingVisitor : public VerifyVisitor {
 public:
  void Start(std::uint64_t segment_count, std::uint64_t bytes) override {
    started_segments = segment_count;
    total_bytes = bytes;
  }
  void Segment(const std::string&, const storage::SegmentHeader&, std::uint64_t) override {
    ++segments;
  }
  void Batch(std::uint64_t, const storage::BatchHeader& h) override {
    ++batches;
    records += h.record_count;
  }
  void Transaction(Lsn lsn, TxnRecordReader txn) override {
    EXPECT_GT(lsn, last_lsn);
    last_lsn = lsn;
    ++transactions;
    while (true) {
      auto op = txn.Next();
      ASSERT_TRUE(op.ok());
      if (!*op) break;
      if (std::holds_alternative<EventOp>(**op)) ++events;
    }
  }
  void Progress(std::uint64_t done) override { progressed = done; }
  void Checkpoint(Lsn, std::uint64_t) override { ++checkpoints; }

  std::uint64_t started_segments = 0, total_bytes = 0, segments = 0, batches = 0, records = 0,
                transactions = 0, events = 0, progressed = 0, checkpoints = 0;
  Lsn last_lsn;
};

// The offline verifier over a log that retention trimmed: it walks everything the report
// counts, and finds the log and the checkpoints not covering each other — a log starting after
// the newest checkpoint (the checkpoints are gone) or ending before it (its newest segment is).
TEST_F(CheckpointTest, VerifyWalksEverythingAndFindsLogAndCheckpointsNotCoveringEachOther) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("padding", 1, /*retention_ms=*/1'000).ok());
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", std::string(1000, 'p')))).ok());
  }
  now_ += 5'000;  // everything expired
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", "tick"))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());  // retention deletes the old segments now
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", "after"))).ok());
  e.reset();

  VerifyReport report;
  CountingVisitor seen;
  ASSERT_TRUE(VerifyDataDir(io_, "db", report, &seen).ok());
  ASSERT_GT(report.first_lsn.value(), 1u) << "retention deleted nothing: the set-up is stale";
  EXPECT_EQ(seen.segments, report.segments);
  EXPECT_EQ(seen.started_segments, report.segments);
  EXPECT_EQ(seen.batches, report.batches);
  EXPECT_EQ(seen.records, report.transactions);
  EXPECT_EQ(seen.transactions, report.transactions);
  EXPECT_EQ(seen.events, report.events);
  EXPECT_EQ(seen.checkpoints, report.checkpoints);
  EXPECT_EQ(seen.last_lsn, report.last_lsn);
  EXPECT_EQ(seen.progressed, seen.total_bytes);

  // Without its checkpoints the trimmed log cannot be recovered: LSNs from 1 are missing.
  auto checkpoints = storage::ListCheckpoints(io_, "db/checkpoints");
  ASSERT_TRUE(checkpoints.ok());
  for (Lsn lsn : *checkpoints) {
    ASSERT_TRUE(io_.Remove("db/checkpoints/" + storage::CheckpointFileName(lsn)).ok());
  }
  VerifyReport without;
  Status s = VerifyDataDir(io_, "db", without);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("there is no checkpoint: LSNs 1 to"), std::string::npos)
      << s.ToString();
}

TEST_F(CheckpointTest, VerifyFindsALogEndingBeforeTheNewestCheckpoint) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("padding", 1).ok());
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Append(Event("padding", std::string(1000, 'p')))).ok());
  }
  ASSERT_TRUE(e->Checkpoint().ok());
  e.reset();
  VerifyReport report;
  ASSERT_TRUE(VerifyDataDir(io_, "db", report).ok());
  ASSERT_GT(report.segments, 1u);
  // The newest segment, holding the checkpoint's LSN, goes missing.
  auto names = io_.ListDir("db/log");
  ASSERT_TRUE(names.ok());
  std::vector<std::string> segments;
  for (const auto& n : *names) {
    if (storage::ParseSegmentFileName(n)) segments.push_back(n);
  }
  std::sort(segments.begin(), segments.end());
  ASSERT_TRUE(io_.Remove("db/log/" + segments.back()).ok());
  VerifyReport cut;
  Status s = VerifyDataDir(io_, "db", cut);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("before the newest checkpoint"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace lockstep::engine

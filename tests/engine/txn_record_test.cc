// Proves the transaction record: every operation kind round-trips in order, events are encoded in
// place and read back whole, consecutive events of a partition share a run that a walk passes
// over in one step, version 1 records still read, the writer reuses its buffer (no allocation after
// warm-up is checked by size/capacity), and the reader rejects truncations, lying lengths, unknown
// kinds and leftovers with kDataLoss instead of reading out of bounds.
#include "engine/txn_record.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "base/endian.h"
#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"

namespace lockstep::engine {
namespace {

using testing::AsBytes;
using testing::AsString;

std::vector<std::byte> Sample(TxnRecordWriter& w) {
  w.Reset(1'700'000'000'000, "order-7781");
  w.Put(TableId(1), AsBytes("acct/a"), AsBytes("90"));
  w.Put(TableId(1), AsBytes("acct/b"), AsBytes("110"));
  w.Delete(TableId(2), AsBytes("hold/a"));
  base::EventFields event;
  event.key = AsBytes("acct/a");
  event.payload = AsBytes(R"({"amount":10})");
  event.type = "TransferCompleted";
  auto room = w.AddEvent(TopicId(5), PartitionId(3), base::EncodedEventBytes(event));
  base::EncodeEvent(event, Offset(41), Lsn(1000), room);
  w.CommitOffset(OffsetOp{TopicId(9), PartitionId(0), 4, Offset(77), "billing"});
  w.ChangeCatalog(CatalogOp{CatalogChange::kCreateTopic, 12, "transfers", 8, 86'400'000, 1 << 30});
  auto bytes = w.Finish();
  return {bytes.begin(), bytes.end()};
}

std::vector<TxnOp> ReadAll(TxnRecordReader& r) {
  std::vector<TxnOp> ops;
  for (;;) {
    auto op = r.Next();
    EXPECT_TRUE(op.ok()) << op.status().ToString();
    if (!op.ok() || !op->has_value()) break;
    ops.push_back(**op);
  }
  return ops;
}

// Appends one event whose payload names its offset ("p<offset>").
void AddEvent(TxnRecordWriter& w, TopicId topic, PartitionId partition, std::uint64_t offset) {
  const std::string payload = "p" + std::to_string(offset);
  base::EventFields event;
  event.payload = AsBytes(payload);
  auto room = w.AddEvent(topic, partition, base::EncodedEventBytes(event));
  base::EncodeEvent(event, Offset(offset), Lsn(7), room);
}

// Events, runs of events and other operations, interleaved: (1,0) x3, (1,1), (1,0) x2, a put,
// (1,0), then (2,0) x2.
std::vector<std::byte> WithRuns(TxnRecordWriter& w) {
  w.Reset(3, {});
  for (std::uint64_t o : {10, 11, 12}) AddEvent(w, TopicId(1), PartitionId(0), o);
  AddEvent(w, TopicId(1), PartitionId(1), 20);
  for (std::uint64_t o : {13, 14}) AddEvent(w, TopicId(1), PartitionId(0), o);
  w.Put(TableId(1), AsBytes("k"), AsBytes("v"));
  AddEvent(w, TopicId(1), PartitionId(0), 15);
  for (std::uint64_t o : {30, 31}) AddEvent(w, TopicId(2), PartitionId(0), o);
  auto bytes = w.Finish();
  return {bytes.begin(), bytes.end()};
}

std::vector<std::uint64_t> OffsetsIn(TxnRecordReader& r, TopicId topic, PartitionId partition) {
  std::vector<std::uint64_t> offsets;
  for (;;) {
    auto next = r.NextEventIn(topic, partition);
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok() || !*next) break;
    offsets.push_back(base::DecodeEvent(**next)->offset().value());
  }
  return offsets;
}

// The pieces NextPieceIn gives for one partition, each as the offsets of its records (walked
// with NextRecordIn) followed by its count; "error" when the walk is refused.
std::vector<std::vector<std::uint64_t>> PiecesIn(TxnRecordReader& r, TopicId topic,
                                                 PartitionId partition) {
  std::vector<std::vector<std::uint64_t>> pieces;
  for (;;) {
    auto piece = r.NextPieceIn(topic, partition);
    EXPECT_TRUE(piece.ok()) << piece.status().ToString();
    if (!piece.ok() || !*piece) break;
    std::vector<std::uint64_t> offsets;
    Bytes rest = (*piece)->records;
    while (!rest.empty()) {
      auto record = NextRecordIn(rest);
      EXPECT_TRUE(record.ok()) << record.status().ToString();
      if (!record.ok()) break;
      offsets.push_back(base::PeekEventOffset(*record).value());
    }
    offsets.push_back((*piece)->count);
    pieces.push_back(offsets);
  }
  return pieces;
}

// Plants 0x7fffffff (a huge length or count) at every position in turn: the walk refuses it or
// stays inside the record, never reading out of it.
void ExpectPlantedLiesRefused(Bytes bytes) {
  for (std::size_t at = 0; at + 4 <= bytes.size(); ++at) {
    std::vector<std::byte> b(bytes.begin(), bytes.end());
    base::StoreLe32(b.data() + at, 0x7fffffff);
    auto r = TxnRecordReader::Open(b, {.verify_event_checksums = false});
    if (!r.ok()) continue;
    for (int i = 0; i < 10; ++i) {
      auto next = r->NextEventIn(TopicId(1), PartitionId(0));
      if (!next.ok()) {
        EXPECT_EQ(next.status().code(), base::StatusCode::kDataLoss);
        break;
      }
      if (!*next) break;
      ASSERT_GE(next->value().data(), b.data());
      ASSERT_LE(next->value().data() + next->value().size(), b.data() + b.size());
    }
    auto pieces = TxnRecordReader::Open(b, {.verify_event_checksums = false});
    if (!pieces.ok()) continue;
    for (int i = 0; i < 10; ++i) {
      auto piece = pieces->NextPieceIn(TopicId(1), PartitionId(0));
      if (!piece.ok()) {
        EXPECT_EQ(piece.status().code(), base::StatusCode::kDataLoss);
        break;
      }
      if (!*piece) break;
      const Bytes records = piece->value().records;
      ASSERT_GE(records.data(), b.data());
      ASSERT_LE(records.data() + records.size(), b.data() + b.size());
    }
  }
}

TEST(TxnRecord, EveryOperationRoundTripsInOrder) {
  TxnRecordWriter w;
  auto bytes = Sample(w);
  EXPECT_EQ(w.op_count(), 6u);
  auto r = TxnRecordReader::Open(bytes);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->commit_ms(), 1'700'000'000'000);
  EXPECT_EQ(r->idempotency_key(), "order-7781");
  auto ops = ReadAll(*r);
  ASSERT_EQ(ops.size(), 6u);
  const auto& put = std::get<PutOp>(ops[0]);
  EXPECT_EQ(put.table, TableId(1));
  EXPECT_EQ(AsString(put.key), "acct/a");
  EXPECT_EQ(AsString(put.value), "90");
  EXPECT_EQ(AsString(std::get<PutOp>(ops[1]).value), "110");
  const auto& del = std::get<DeleteOp>(ops[2]);
  EXPECT_EQ(del.table, TableId(2));
  EXPECT_EQ(AsString(del.key), "hold/a");
  const auto& ev = std::get<EventOp>(ops[3]);
  EXPECT_EQ(ev.topic, TopicId(5));
  EXPECT_EQ(ev.partition, PartitionId(3));
  auto event = base::DecodeEvent(ev.record);
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->offset(), Offset(41));
  EXPECT_EQ(event->lsn(), Lsn(1000));
  EXPECT_EQ(event->type(), "TransferCompleted");
  EXPECT_EQ(event->record().size(), ev.record.size());
  const auto& off = std::get<OffsetOp>(ops[4]);
  EXPECT_EQ(off.topic, TopicId(9));
  EXPECT_EQ(off.generation, 4u);
  EXPECT_EQ(off.offset, Offset(77));
  EXPECT_EQ(off.group, "billing");
  const auto& cat = std::get<CatalogOp>(ops[5]);
  EXPECT_EQ(cat.change, CatalogChange::kCreateTopic);
  EXPECT_EQ(cat.id, 12u);
  EXPECT_EQ(cat.name, "transfers");
  EXPECT_EQ(cat.partitions, 8u);
  EXPECT_EQ(cat.retention_ms, 86'400'000);
  EXPECT_EQ(cat.retention_bytes, 1u << 30);
}

// The fetch path's walk: only the asked partition's events come back, whatever lies between.
TEST(TxnRecord, NextEventInPassesOverEverythingElse) {
  TxnRecordWriter w;
  w.Reset(1, {});
  auto add = [&](TopicId topic, PartitionId partition, std::uint64_t offset) {
    const std::string payload = "p" + std::to_string(offset);
    base::EventFields event;
    event.payload = AsBytes(payload);
    auto room = w.AddEvent(topic, partition, base::EncodedEventBytes(event));
    base::EncodeEvent(event, Offset(offset), Lsn(7), room);
  };
  add(TopicId(1), PartitionId(0), 10);
  w.Put(TableId(1), AsBytes("k"), AsBytes("v"));
  add(TopicId(1), PartitionId(1), 20);
  add(TopicId(2), PartitionId(0), 30);
  add(TopicId(1), PartitionId(0), 11);
  w.CommitOffset(OffsetOp{TopicId(1), PartitionId(0), 0, Offset(3), "g"});
  auto bytes = w.Finish();
  for (bool verify : {true, false}) {
    auto r = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
    ASSERT_TRUE(r.ok());
    std::vector<std::uint64_t> offsets;
    for (;;) {
      auto next = r->NextEventIn(TopicId(1), PartitionId(0));
      ASSERT_TRUE(next.ok()) << next.status().ToString();
      if (!*next) break;
      offsets.push_back(base::DecodeEvent(**next)->offset().value());
    }
    EXPECT_EQ(offsets, (std::vector<std::uint64_t>{10, 11}));
  }
  // A lie planted anywhere (a huge length or count) is refused, never followed out of the
  // record; also in a record with runs.
  ExpectPlantedLiesRefused(bytes);
  TxnRecordWriter with_runs;
  ExpectPlantedLiesRefused(WithRuns(with_runs));
}

// Consecutive events of one partition share a run; a lone event stays an event operation.
// Readers see every event on its own, in the order written, whichever way they read.
TEST(TxnRecord, ConsecutiveEventsOfAPartitionShareARun) {
  TxnRecordWriter w;
  const auto bytes = WithRuns(w);
  // run(3), event, run(2), put, event, run(2).
  EXPECT_EQ(w.op_count(), 6u);
  EXPECT_EQ(bytes[kTxnFixedBytes], std::byte{static_cast<std::uint8_t>(OpKind::kEventRun)});
  EXPECT_EQ(base::LoadLe32(bytes.data() + kTxnFixedBytes + 9), 3u);  // the first run's count
  for (bool verify : {true, false}) {
    auto r = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::vector<std::string> seen;
    for (const TxnOp& op : ReadAll(*r)) {
      if (const auto* ev = std::get_if<EventOp>(&op)) {
        seen.push_back(fmt::format("{}/{}@{}", ev->topic.value(), ev->partition.value(),
                                   base::DecodeEvent(ev->record)->offset().value()));
      } else {
        seen.push_back("put");
      }
    }
    EXPECT_EQ(seen, (std::vector<std::string>{"1/0@10", "1/0@11", "1/0@12", "1/1@20", "1/0@13",
                                              "1/0@14", "put", "1/0@15", "2/0@30", "2/0@31"}));
    for (auto [topic, partition, want] :
         {std::tuple{1u, 0u, std::vector<std::uint64_t>{10, 11, 12, 13, 14, 15}},
          std::tuple{1u, 1u, std::vector<std::uint64_t>{20}},
          std::tuple{2u, 0u, std::vector<std::uint64_t>{30, 31}},
          std::tuple{2u, 1u, std::vector<std::uint64_t>{}}}) {
      auto walk = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
      ASSERT_TRUE(walk.ok());
      EXPECT_EQ(OffsetsIn(*walk, TopicId(topic), PartitionId(partition)), want)
          << topic << "/" << partition;
    }
    // By pieces: each run whole (offsets, then the count), each lone event alone.
    using Pieces = std::vector<std::vector<std::uint64_t>>;
    auto by_pieces = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
    ASSERT_TRUE(by_pieces.ok());
    EXPECT_EQ(PiecesIn(*by_pieces, TopicId(1), PartitionId(0)),
              (Pieces{{10, 11, 12, 3}, {13, 14, 2}, {15, 1}}));
    auto other = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(PiecesIn(*other, TopicId(2), PartitionId(0)), (Pieces{{30, 31, 2}}));
    // Next() may stop inside a run: NextPieceIn gives what is left of it.
    auto inside = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
    ASSERT_TRUE(inside.ok());
    ASSERT_TRUE(inside->Next().ok());  // 1/0@10
    EXPECT_EQ(PiecesIn(*inside, TopicId(1), PartitionId(0)),
              (Pieces{{11, 12, 2}, {13, 14, 2}, {15, 1}}));
    // Next() may stop inside another partition's run; NextEventIn goes on past the rest of it.
    auto mixed = TxnRecordReader::Open(bytes, {.verify_event_checksums = verify});
    ASSERT_TRUE(mixed.ok());
    ASSERT_TRUE(mixed->Next().ok());  // 1/0@10, inside the first run
    EXPECT_EQ(OffsetsIn(*mixed, TopicId(1), PartitionId(1)), std::vector<std::uint64_t>{20});
  }
}

// Records written before runs existed (version 1) are still read.
TEST(TxnRecord, VersionOneRecordsAreStillRead) {
  TxnRecordWriter w;
  auto bytes = Sample(w);  // no two events in a row: no run
  bytes[0] = std::byte{1};
  auto r = TxnRecordReader::Open(bytes);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ReadAll(*r).size(), 6u);
}

// A run that lies about itself is refused by both ways of reading, never followed out of it.
TEST(TxnRecord, RunsThatLieAreRejected) {
  TxnRecordWriter w;
  const auto bytes = WithRuns(w);
  const std::size_t run = kTxnFixedBytes;  // the first run: 3 events of 1/0
  auto expect_rejected = [](const std::vector<std::byte>& b, const char* what) {
    for (int way = 0; way < 3; ++way) {
      auto r = TxnRecordReader::Open(b, {.verify_event_checksums = way == 0});  // fetches: false
      ASSERT_TRUE(r.ok()) << what;
      bool refused = false;
      for (int i = 0; i < 20 && !refused; ++i) {
        if (way == 0) {
          auto op = r->Next();
          refused = !op.ok();
          if (refused) {
            EXPECT_EQ(op.status().code(), base::StatusCode::kDataLoss) << what;
          }
          if (op.ok() && !op->has_value()) break;
        } else if (way == 1) {
          auto next = r->NextEventIn(TopicId(1), PartitionId(0));
          refused = !next.ok();
          if (refused) {
            EXPECT_EQ(next.status().code(), base::StatusCode::kDataLoss) << what;
          }
          if (next.ok() && !*next) break;
        } else {
          // By pieces, as a fetch reads: NextPieceIn checks a run's extent, and the caller
          // walks its records and counts them (Engine::CheckRun).
          auto piece = r->NextPieceIn(TopicId(1), PartitionId(0));
          if (!piece.ok()) {
            EXPECT_EQ(piece.status().code(), base::StatusCode::kDataLoss) << what;
            refused = true;
            break;
          }
          if (!*piece) break;
          Bytes rest = (*piece)->records;
          std::uint32_t records = 0;
          while (!rest.empty() && NextRecordIn(rest).ok()) ++records;
          refused = !rest.empty() || records != (*piece)->count;
        }
      }
      EXPECT_TRUE(refused) << what << " was accepted (way " << way << ")";
    }
  };
  auto b = bytes;
  base::StoreLe32(b.data() + run + 9, 0);
  expect_rejected(b, "an empty run");
  b = bytes;
  base::StoreLe32(b.data() + run + 9, 4);
  expect_rejected(b, "a count above the run's events");
  b = bytes;
  base::StoreLe32(b.data() + run + 9, 2);
  expect_rejected(b, "a count below the run's events (bytes left in the run)");
  b = bytes;
  base::StoreLe32(b.data() + run + 13, static_cast<std::uint32_t>(bytes.size()));
  expect_rejected(b, "run bytes past the record");
  b = bytes;
  base::StoreLe32(b.data() + run + 13, base::LoadLe32(b.data() + run + 13) - 1);
  expect_rejected(b, "run bytes cutting its last event");
  b = bytes;
  b[0] = std::byte{1};
  expect_rejected(b, "a run in a version 1 record");
}

TEST(TxnRecord, NoIdempotencyKeyAndNoOperations) {
  TxnRecordWriter w;
  w.Reset(5, std::nullopt);
  auto bytes = w.Finish();
  EXPECT_EQ(bytes.size(), kTxnFixedBytes);
  auto r = TxnRecordReader::Open(bytes);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->idempotency_key().has_value());
  EXPECT_EQ(r->op_count(), 0u);
  EXPECT_FALSE(r->Next()->has_value());
}

TEST(TxnRecord, TheWriterReusesItsBuffer) {
  TxnRecordWriter w;
  Sample(w);
  const auto first = w.Finish();
  const std::byte* data = first.data();
  for (int i = 0; i < 100; ++i) Sample(w);
  EXPECT_EQ(w.Finish().data(), data);  // same storage: no reallocation once warmed up
}

TEST(TxnRecord, EveryTruncationIsRejected) {
  TxnRecordWriter w;
  auto bytes = Sample(w);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    auto r = TxnRecordReader::Open(cut);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), base::StatusCode::kDataLoss);
      continue;
    }
    bool failed = false;
    for (int i = 0; i < 10 && !failed; ++i) {
      auto op = r->Next();
      if (!op.ok())
        failed = true;
      else if (!op->has_value())
        break;
    }
    EXPECT_TRUE(failed) << "a record cut to " << n << " of " << bytes.size() << " bytes parsed";
  }
}

TEST(TxnRecord, LiesAndLeftoversAreRejected) {
  TxnRecordWriter w;
  auto bytes = Sample(w);
  auto expect_rejected = [](std::vector<std::byte> b, const char* what) {
    auto r = TxnRecordReader::Open(b);
    if (!r.ok()) return;
    for (int i = 0; i < 10; ++i) {
      auto op = r->Next();
      if (!op.ok()) {
        EXPECT_EQ(op.status().code(), base::StatusCode::kDataLoss) << what;
        return;
      }
      if (!op->has_value()) break;
    }
    ADD_FAILURE() << what << " was accepted";
  };
  auto b = bytes;
  b[0] = std::byte{9};
  expect_rejected(b, "unknown version");
  b = bytes;
  b[1] = std::byte{0x80};
  expect_rejected(b, "unknown flag");
  b = bytes;
  base::StoreLe32(b.data() + 4, 7);
  expect_rejected(b, "op count above the operations");
  b = bytes;
  base::StoreLe32(b.data() + 4, 5);
  expect_rejected(b, "op count below the operations (leftover bytes)");
  b = bytes;
  const std::size_t first_op = kTxnFixedBytes + 2 + std::string("order-7781").size();
  b[first_op] = std::byte{77};
  expect_rejected(b, "unknown operation kind");
  b = bytes;
  base::StoreLe32(b.data() + first_op + 5, 0xfffffff0u);
  expect_rejected(b, "key length past the record");
  b = bytes;
  b.push_back(std::byte{0});
  expect_rejected(b, "a trailing byte");
  b = bytes;
  const std::size_t catalog_at = bytes.size() - (28 + std::string("transfers").size());
  ASSERT_EQ(b[catalog_at], std::byte{5});
  b[catalog_at + 1] = std::byte{9};
  expect_rejected(b, "unknown catalog change");
}

TEST(TxnRecord, RandomBytesNeverCrashTheReader) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  TxnRecordWriter w;
  const auto valid = Sample(w);
  TxnRecordWriter w2;
  const auto with_runs = WithRuns(w2);
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> b = i % 2 == 0 ? valid : with_runs;
    const int flips = std::uniform_int_distribution<int>(1, 8)(rng);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<std::byte>(rng());
    if (i % 3 == 0) b.resize(rng() % (b.size() + 1));
    auto r = TxnRecordReader::Open(b);
    if (!r.ok()) continue;
    for (int k = 0; k < 32; ++k) {
      auto op = r->Next();
      if (!op.ok() || !op->has_value()) break;
    }
    auto pieces = TxnRecordReader::Open(b, {.verify_event_checksums = false});
    if (!pieces.ok()) continue;
    for (int k = 0; k < 32; ++k) {
      auto piece = pieces->NextPieceIn(TopicId(1), PartitionId(0));
      if (!piece.ok() || !piece->has_value()) break;
      Bytes rest = (*piece)->records;
      while (!rest.empty() && NextRecordIn(rest).ok()) {
      }
    }
  }
}

}  // namespace
}  // namespace lockstep::engine

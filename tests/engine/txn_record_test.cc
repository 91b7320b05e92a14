// Proves the transaction record: every operation kind round-trips in order, events are encoded in
// place and read back whole, the writer reuses its buffer (no allocation after warm-up is
// checked by size/capacity), and the reader rejects truncations, lying lengths, unknown kinds and
// leftovers with kDataLoss instead of reading out of bounds.
#include "engine/txn_record.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

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
  // record.
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
  }
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
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::byte> b = valid;
    const int flips = std::uniform_int_distribution<int>(1, 8)(rng);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<std::byte>(rng());
    if (i % 3 == 0) b.resize(rng() % (b.size() + 1));
    auto r = TxnRecordReader::Open(b);
    if (!r.ok()) continue;
    for (int k = 0; k < 16; ++k) {
      auto op = r->Next();
      if (!op.ok() || !op->has_value()) break;
    }
  }
}

}  // namespace
}  // namespace lockstep::engine

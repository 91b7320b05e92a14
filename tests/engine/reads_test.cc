// Proves the engine's historical reads: get and scan as of any LSN in the readable window equal
// a model replayed to that LSN, with clear errors outside it; the offset for a timestamp is the
// first offset at or after it even when producers' timestamps go backwards (against brute
// force, across index intervals and a reopen); the change feed gives each transaction's table
// changes with before and after images and its events, skips the rest, and pages by limits.
// Also: a transaction writing one key twice is rejected.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "engine/engine.h"
#include "storage/fault_io.h"
#include "tests/engine/engine_fixture.h"
#include "tests/testing/seed.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;

class ReadsTest : public EngineFixture {
 protected:
};

TEST_F(ReadsTest, AsOfEveryLsnMatchesTheModelAtThatLsn) {
  auto e = Open();
  const Lsn before_table = e->visible_lsn();
  ASSERT_TRUE(e->CreateTable("t").ok());
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::map<std::string, std::string> model;
  std::vector<std::pair<Lsn, std::map<std::string, std::string>>> history;
  for (int i = 0; i < 300; ++i) {
    const std::string key = "k" + std::to_string(rng() % 20);
    Transaction t;
    if (rng() % 4 == 0) {
      t.Delete("t", key);
      model.erase(key);
    } else {
      const std::string value = "v" + std::to_string(i);
      t.Put("t", key, value);
      model[key] = value;
    }
    auto r = Commit(*e, std::move(t));
    ASSERT_TRUE(r.ok());
    history.emplace_back(r->lsn, model);
  }
  for (const auto& [lsn, state] : history) {
    auto rows = e->ScanAsOf("t", {}, lsn);
    ASSERT_TRUE(rows.ok());
    std::map<std::string, std::string> seen;
    for (const Row& row : *rows) seen[row.key] = row.value;
    ASSERT_EQ(seen, state) << "as of LSN " << lsn.value();
    for (const auto& [key, value] : state) {
      auto got = e->GetAsOf("t", key, lsn);
      ASSERT_TRUE(got.ok() && got->has_value());
      EXPECT_EQ((*got)->value, value);
      EXPECT_LE((*got)->version, lsn);
    }
  }
  auto past = e->GetAsOf("t", "k1", Lsn(e->visible_lsn().value() + 1));
  EXPECT_EQ(past.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(past.status().message().find("readable window"), std::string::npos);
  EXPECT_EQ(e->ScanAsOf("t", {}, Lsn(e->visible_lsn().value() + 5)).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(e->GetAsOf("t", "k1", before_table).status().code(), StatusCode::kNotFound);
}

TEST_F(ReadsTest, OffsetForTimestampIsTheFirstAtOrAfter) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("clicks", 2).ok());
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> stamps;  // partition 0, by offset
  std::int64_t clock = 10'000;
  for (int i = 0; i < 400; ++i) {
    // Mostly growing, sometimes late (out of order), sometimes the same millisecond.
    clock += static_cast<std::int64_t>(rng() % 5);
    const std::int64_t ts =
        rng() % 10 == 0 ? clock - static_cast<std::int64_t>(rng() % 300) : clock;
    EventAppend ev;
    ev.topic = "clicks";
    ev.partition = PartitionId(static_cast<std::uint32_t>(i % 3 == 0));
    ev.timestamp_ms = ts;
    if (ev.partition->value() == 0) stamps.push_back(ts);
    ASSERT_TRUE(Commit(*e, Transaction().Append(ev)).ok());
  }
  auto expect_all = [&](Engine& engine) {
    for (std::int64_t target = 9'000; target <= clock + 2; target += 7) {
      std::uint64_t want = stamps.size();
      for (std::size_t o = 0; o < stamps.size(); ++o) {
        if (stamps[o] >= target) {
          want = o;
          break;
        }
      }
      auto got = engine.OffsetForTimestamp("clicks", PartitionId(0), target);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(got->value(), want) << "timestamp " << target;
    }
  };
  expect_all(*e);
  e.reset();
  e = Open();
  expect_all(*e);
  EXPECT_EQ(e->OffsetForTimestamp("clicks", PartitionId(0), INT64_MIN)->value(), 0u);
  EXPECT_EQ(e->OffsetForTimestamp("clicks", PartitionId(2), 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->OffsetForTimestamp("nope", PartitionId(0), 0).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(e->CreateTopic("empty", 1).ok());
  EXPECT_EQ(e->OffsetForTimestamp("empty", PartitionId(0), 0)->value(), 0u);
}

TEST_F(ReadsTest, TheChangeFeedCarriesBeforeAfterAndTheTransactionsEvents) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("accounts").ok());
  ASSERT_TRUE(e->CreateTopic("transfers", 1).ok());
  const Lsn start = Lsn(e->visible_lsn().value() + 1);
  ASSERT_TRUE(
      Commit(*e, Transaction().Put("accounts", "alice", "100").Put("accounts", "bob", "0")).ok());
  EventAppend ev;
  ev.topic = "transfers";
  ev.type = "TransferCompleted";
  ev.payload = "alice->bob 30";
  auto transfer = Commit(
      *e, Transaction().Put("accounts", "alice", "70").Put("accounts", "bob", "30").Append(ev));
  ASSERT_TRUE(transfer.ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(ev)).ok());  // events only: not a change
  ASSERT_TRUE(Commit(*e, Transaction().Delete("accounts", "bob")).ok());

  auto feed = e->Changes(start);
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();
  ASSERT_EQ(feed->transactions.size(), 3u);
  EXPECT_EQ(feed->next_lsn.value(), e->visible_lsn().value() + 1);
  const ChangedTransaction& opened = feed->transactions[0];
  ASSERT_EQ(opened.changes.size(), 2u);
  EXPECT_EQ(opened.changes[0].key, "alice");
  EXPECT_FALSE(opened.changes[0].before.has_value());
  EXPECT_EQ(opened.changes[0].after, "100");
  const ChangedTransaction& moved = feed->transactions[1];
  EXPECT_EQ(moved.lsn, transfer->lsn);
  ASSERT_EQ(moved.changes.size(), 2u);
  EXPECT_EQ(moved.changes[0].table, "accounts");
  EXPECT_EQ(moved.changes[0].before, "100");
  EXPECT_EQ(moved.changes[0].after, "70");
  EXPECT_EQ(moved.changes[1].before, "0");
  ASSERT_EQ(moved.events.size(), 1u);
  EXPECT_EQ(moved.events[0].topic, "transfers");
  EXPECT_EQ(moved.events[0].offset.value(), 0u);
  auto decoded = base::DecodeEvent(moved.events[0].record);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->type(), "TransferCompleted");
  const ChangedTransaction& deleted = feed->transactions[2];
  EXPECT_EQ(deleted.changes[0].before, "30");
  EXPECT_FALSE(deleted.changes[0].after.has_value());

  // Paging: one transaction at a time walks the same feed.
  ChangeFeedOptions one;
  one.max_transactions = 1;
  Lsn at = start;
  std::vector<Lsn> lsns;
  for (int i = 0; i < 10; ++i) {
    auto page = e->Changes(at, one);
    ASSERT_TRUE(page.ok());
    if (page->transactions.empty()) break;
    lsns.push_back(page->transactions[0].lsn);
    at = page->next_lsn;
  }
  ASSERT_EQ(lsns.size(), 3u);
  EXPECT_EQ(lsns[1], transfer->lsn);
  EXPECT_EQ(e->Changes(Lsn(e->visible_lsn().value() + 2)).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(e->Changes(Lsn(0)).status().code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(e->Changes(Lsn(e->visible_lsn().value() + 1))->transactions.empty());
}

// DescribeTable counts the rows visible at the visible LSN: deleted rows do not count, a
// row's newest version is the LSN that wrote it, and a dropped or unknown table is NotFound.
TEST_F(ReadsTest, DescribeTableCountsTheVisibleRows) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("accounts").ok());
  auto empty = e->DescribeTable("accounts");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(empty->rows, 0u);
  EXPECT_EQ(empty->newest_version, Lsn());
  Lsn last;
  for (int i = 0; i < 10; ++i) {
    auto r = Commit(*e, Transaction().Put("accounts", "k" + std::to_string(i), "value"));
    ASSERT_TRUE(r.ok());
    last = r->lsn;
  }
  auto deleted = Commit(*e, Transaction().Delete("accounts", "k3"));
  ASSERT_TRUE(deleted.ok());
  auto t = e->DescribeTable("accounts");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->name, "accounts");
  EXPECT_EQ(t->rows, 9u);
  EXPECT_EQ(t->key_bytes, 9u * 2);
  EXPECT_EQ(t->value_bytes, 9u * 5);
  EXPECT_EQ(t->newest_version, last);  // the delete wrote no row
  EXPECT_EQ(t->as_of, e->visible_lsn());
  EXPECT_GT(t->memory_bytes, t->key_bytes + t->value_bytes);
  EXPECT_EQ(e->DescribeTable("nope").status().code(), base::StatusCode::kNotFound);
  ASSERT_TRUE(e->DropTable("accounts").ok());
  EXPECT_EQ(e->DescribeTable("accounts").status().code(), base::StatusCode::kNotFound);
}

TEST_F(ReadsTest, WritingOneKeyTwiceInATransactionIsRejected) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTable("u").ok());
  auto twice = Commit(*e, Transaction().Put("t", "k", "1").Delete("t", "k"));
  EXPECT_EQ(twice.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(twice.status().message().find("twice"), std::string::npos);
  // The same key in two tables is two keys; a large transaction takes the sorting path.
  ASSERT_TRUE(Commit(*e, Transaction().Put("t", "k", "1").Put("u", "k", "2")).ok());
  Transaction big;
  for (int i = 0; i < 100; ++i) big.Put("t", "b" + std::to_string(i), "x");
  big.Put("t", "b42", "again");
  EXPECT_EQ(Commit(*e, std::move(big)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(e->Get("t", "b0")->has_value());
}

}  // namespace
}  // namespace lockstep::engine

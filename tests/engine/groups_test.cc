// Proves idempotent retries (guarantee 4) and consumer groups (guarantee 5): a retried
// idempotency key commits once and gets the original result — also while the original is in
// flight and after a reopen — a conflict is not remembered, and the horizon is kept; offset
// commits carry the group's generation and a stale one rejects the whole transaction, offsets
// commit atomically with outputs, and survive a reopen; lag is reported in events and in time.
#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "engine/engine.h"
#include "storage/fault_io.h"
#include "tests/engine/engine_fixture.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;

class GroupsTest : public EngineFixture {
 protected:
  static OffsetCommit Offsets(std::string group, std::uint64_t generation, std::string topic,
                              std::uint64_t offset, std::uint32_t partition = 0) {
    return {std::move(group), generation, std::move(topic), PartitionId(partition), Offset(offset)};
  }
};

void ExpectSameResult(const CommitResult& a, const CommitResult& b) {
  EXPECT_EQ(a.lsn, b.lsn);
  ASSERT_EQ(a.events.size(), b.events.size());
  for (std::size_t i = 0; i < a.events.size(); ++i) {
    EXPECT_EQ(a.events[i].topic, b.events[i].topic);
    EXPECT_EQ(a.events[i].partition, b.events[i].partition);
    EXPECT_EQ(a.events[i].offset, b.events[i].offset);
  }
}

TEST_F(GroupsTest, ARetriedKeyCommitsOnceAndGetsTheOriginalResult) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTopic("out", 2).ok());
  auto first = Commit(*e, Transaction()
                              .IdempotencyKey("order-17")
                              .Put("t", "k", "v1")
                              .Append(Event("out", "a", 1))
                              .Append(Event("out", "b", 1)));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  // The retry, even with other content, changes nothing and gets the same answer.
  auto retry = Commit(
      *e, Transaction().IdempotencyKey("order-17").Put("t", "k", "v2").Append(Event("out", "c")));
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  ExpectSameResult(*first, *retry);
  EXPECT_EQ((*e->Get("t", "k"))->value, "v1");
  EXPECT_EQ(e->ListTopics()[0].end_offsets[0].value(), 0u);
  EXPECT_EQ(e->ListTopics()[0].end_offsets[1].value(), 2u);
  // A producer id + sequence is another key space: the same bytes do not collide.
  auto p1 = Commit(*e, Transaction().ProducerSequence(7, 1).Put("t", "p", "1"));
  auto p2 = Commit(*e, Transaction().ProducerSequence(7, 2).Put("t", "p", "2"));
  auto p1again = Commit(*e, Transaction().ProducerSequence(7, 1).Put("t", "p", "3"));
  ASSERT_TRUE(p1.ok() && p2.ok() && p1again.ok());
  EXPECT_NE(p1->lsn, p2->lsn);
  EXPECT_EQ(p1again->lsn, p1->lsn);
  EXPECT_EQ((*e->Get("t", "p"))->value, "2");
  // Remembered across a reopen (replayed from the log).
  e.reset();
  e = Open();
  auto after = Commit(*e, Transaction().IdempotencyKey("order-17").Put("t", "k", "v3"));
  ASSERT_TRUE(after.ok());
  ExpectSameResult(*first, *after);
  EXPECT_EQ((*e->Get("t", "k"))->value, "v1");
}

TEST_F(GroupsTest, AConflictIsNotRemembered) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(Commit(*e, Transaction().Put("t", "k", "x")).ok());
  auto conflicted = Commit(
      *e, Transaction().IdempotencyKey("once").RequireAbsent("t", "k").Put("t", "other", "1"));
  EXPECT_EQ(conflicted.status().code(), StatusCode::kConflict);
  ASSERT_TRUE(Commit(*e, Transaction().Delete("t", "k")).ok());
  auto retried = Commit(
      *e, Transaction().IdempotencyKey("once").RequireAbsent("t", "k").Put("t", "other", "1"));
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  EXPECT_EQ((*e->Get("t", "other"))->value, "1");
}

TEST_F(GroupsTest, DuplicatesInFlightTogetherCommitOnce) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  constexpr int kCopies = 50;
  std::vector<std::future<Result<CommitResult>>> futures;
  for (int i = 0; i < kCopies; ++i) {
    futures.push_back(e->Commit(
        Transaction().IdempotencyKey("dup").Put("t", "n" + std::to_string(i), "written")));
  }
  std::vector<Result<CommitResult>> results;
  for (auto& f : futures) results.push_back(f.get());
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->lsn, results[0]->lsn);
  }
  EXPECT_EQ(e->Scan("t", {})->size(), 1u);
}

TEST_F(GroupsTest, KeysAreForgottenAfterTheHorizon) {
  EngineOptions o = Options();
  o.idempotency_horizon_ms = 60'000;
  auto e = Open(o);
  ASSERT_TRUE(e->CreateTable("t").ok());
  auto first = Commit(*e, Transaction().IdempotencyKey("k").Put("t", "a", "1"));
  now_ += 59'999;
  auto within = Commit(*e, Transaction().IdempotencyKey("k").Put("t", "a", "2"));
  ASSERT_TRUE(first.ok() && within.ok());
  EXPECT_EQ(within->lsn, first->lsn);
  now_ += 1;
  auto past = Commit(*e, Transaction().IdempotencyKey("k").Put("t", "a", "3"));
  ASSERT_TRUE(past.ok());
  EXPECT_GT(past->lsn, first->lsn);
  EXPECT_EQ((*e->Get("t", "a"))->value, "3");
}

TEST_F(GroupsTest, BadIdempotencyKeysAreRejected) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  EXPECT_EQ(Commit(*e, Transaction().IdempotencyKey("").Put("t", "a", "1")).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(*e, Transaction().IdempotencyKey(std::string(5000, 'k')).Put("t", "a", "1"))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(e->Scan("t", {})->empty());
}

TEST_F(GroupsTest, OffsetsCommitWithOutputsAndStaleGenerationsAreRejected) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("in", 1).ok());
  ASSERT_TRUE(e->CreateTopic("out", 1).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Commit(*e, Transaction().Append(Event("in", "x"))).ok());
  EXPECT_EQ(e->DescribeGroup("g").status().code(), StatusCode::kNotFound);
  // Nobody joined: generation 0 commits, alone.
  auto alone = Commit(*e, Transaction().CommitOffset(Offsets("g", 0, "in", 2)));
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  // A rebalance: the old member's commit, with its output, is rejected whole.
  auto gen = e->NewGroupGeneration("g");
  ASSERT_TRUE(gen.ok());
  EXPECT_EQ(*gen, 1u);
  auto stale =
      Commit(*e, Transaction().Append(Event("out", "y")).CommitOffset(Offsets("g", 0, "in", 3)));
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.status().message().find("generation 1"), std::string::npos)
      << stale.status().ToString();
  EXPECT_EQ(e->ListTopics()[1].end_offsets[0].value(), 0u);  // "out" got nothing
  // The current member's consume-transform-produce step commits both.
  auto step =
      Commit(*e, Transaction().Append(Event("out", "y")).CommitOffset(Offsets("g", 1, "in", 3)));
  ASSERT_TRUE(step.ok()) << step.status().ToString();
  auto info = e->DescribeGroup("g");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->generation, 1u);
  ASSERT_EQ(info->offsets.size(), 1u);
  EXPECT_EQ(info->offsets[0].topic, "in");
  EXPECT_EQ(info->offsets[0].offset.value(), 3u);
  EXPECT_EQ(info->offsets[0].generation, 1u);
  EXPECT_EQ(info->offsets[0].lsn, step->lsn);
  EXPECT_EQ(e->ListGroups(), std::vector<std::string>{"g"});
  // Everything survives a reopen; generations keep counting.
  e.reset();
  e = Open();
  info = e->DescribeGroup("g");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->generation, 1u);
  EXPECT_EQ(info->offsets[0].offset.value(), 3u);
  EXPECT_EQ(e->ListTopics()[1].end_offsets[0].value(), 1u);
  EXPECT_EQ(*e->NewGroupGeneration("g"), 2u);
  EXPECT_EQ(Commit(*e, Transaction().CommitOffset(Offsets("g", 1, "in", 4))).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(GroupsTest, BadOffsetCommitsAreRejected) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("in", 2).ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("in", "x"))).ok());
  auto code = [&](OffsetCommit o) {
    return Commit(*e, Transaction().CommitOffset(std::move(o))).status().code();
  };
  EXPECT_EQ(code(Offsets("g", 0, "in", 2)), StatusCode::kInvalidArgument);  // past the end
  EXPECT_EQ(code(Offsets("g", 0, "nope", 0)), StatusCode::kNotFound);
  EXPECT_EQ(code(Offsets("g", 0, "in", 0, 2)), StatusCode::kInvalidArgument);  // no partition 2
  EXPECT_EQ(code(Offsets("", 0, "in", 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Offsets("__x", 0, "in", 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Offsets("a/b", 0, "in", 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(*e, Transaction()
                           .CommitOffset(Offsets("g", 0, "in", 1))
                           .CommitOffset(Offsets("g", 0, "in", 0)))
                .status()
                .code(),
            StatusCode::kInvalidArgument);  // the same partition twice
  EXPECT_EQ(e->NewGroupGeneration("bad name").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(e->ListGroups().empty());
}

TEST_F(GroupsTest, LagInEventsAndTime) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("in", 2).ok());
  for (int i = 0; i < 10; ++i) {
    EventAppend ev = Event("in", "x", 0);
    ev.timestamp_ms = 1'000'000 + i * 1000;
    ASSERT_TRUE(Commit(*e, Transaction().Append(ev)).ok());
  }
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("in", "y", 1))).ok());
  ASSERT_TRUE(Commit(*e, Transaction()
                             .CommitOffset(Offsets("g", 0, "in", 4, 0))
                             .CommitOffset(Offsets("g", 0, "in", 1, 1)))
                  .ok());
  now_ = 1'000'000 + 20'000;
  auto lag = e->GroupLag("g");
  ASSERT_TRUE(lag.ok()) << lag.status().ToString();
  ASSERT_EQ(lag->size(), 2u);
  const PartitionLag& p0 = (*lag)[0].partition.value() == 0 ? (*lag)[0] : (*lag)[1];
  const PartitionLag& p1 = (*lag)[0].partition.value() == 0 ? (*lag)[1] : (*lag)[0];
  EXPECT_EQ(p0.committed.value(), 4u);
  EXPECT_EQ(p0.end.value(), 10u);
  EXPECT_EQ(p0.events, 6u);
  EXPECT_EQ(p0.ms, 16'000);  // the event at offset 4 is 16 s old
  EXPECT_EQ(p1.events, 0u);
  EXPECT_EQ(p1.ms, 0);
  EXPECT_EQ(e->GroupLag("nobody").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace lockstep::engine

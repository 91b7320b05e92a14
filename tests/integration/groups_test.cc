// Proves server-assigned consumer groups end to end over loopback: subscribers split a topic's
// partitions and the survivors take over when one leaves or stops heartbeating, a member fenced
// by a newer generation can commit nothing, and consume-transform-produce workers that commit
// their outputs with their offsets count every input exactly once across rebalances.
#include <atomic>
#include <set>
#include <thread>

#include "clients/admin.h"
#include "tests/integration/server_fixture.h"

namespace lockstep::integration {
namespace {

constexpr std::uint32_t kPartitions = 4;

class Groups : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    ASSERT_TRUE(client_->CreateTopic("in", kPartitions).ok());
  }

  static client::ConsumerOptions Options(std::string group = "g") {
    client::ConsumerOptions o;
    o.group = std::move(group);
    o.session_timeout = 600ms;  // heartbeats every 200 ms: rebalances are learnt quickly
    o.max_wait = 50ms;
    return o;
  }

  static std::set<std::uint32_t> Partitions(const std::vector<client::TopicPartitions>& a) {
    std::set<std::uint32_t> out;
    for (const auto& t : a) {
      for (PartitionId p : t.partitions) out.insert(p.value());
    }
    return out;
  }

  // Polls `consumer` (bounded: 10 s) until `done` holds.
  template <typename Done>
  static bool PollUntil(client::Consumer& consumer, Done done) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      auto batch = consumer.Poll(50ms);
      if (!batch.ok()) ADD_FAILURE() << batch.status().ToString();
    }
    return done();
  }

  // Polls until `want` events came (bounded: 10 s); returns how many did.
  static std::size_t PollEvents(client::Consumer& consumer, std::size_t want) {
    std::size_t read = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (read < want && std::chrono::steady_clock::now() < deadline) {
      auto batch = consumer.Poll(100ms);
      if (!batch.ok()) {
        ADD_FAILURE() << batch.status().ToString();
        break;
      }
      read += batch->size();
    }
    return read;
  }

  void Produce(int count) {
    for (int i = 0; i < count; ++i) {
      client::Transaction txn;
      txn.Append(Event("in", std::to_string(i), static_cast<std::uint32_t>(i % kPartitions)));
      ASSERT_TRUE(client_->Commit(std::move(txn)).ok());
    }
  }
};

TEST_F(Groups, SubscribersSplitThePartitionsAndTheSurvivorTakesOverWhenOneLeaves) {
  auto ca = Connect();
  auto cb = Connect();
  auto a = client::Consumer::Create(*ca, Options());
  auto b = client::Consumer::Create(*cb, Options());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Subscribe({"in"}).ok());
  EXPECT_EQ(Partitions((*a)->assignment()), (std::set<std::uint32_t>{0, 1, 2, 3}));
  ASSERT_TRUE((*b)->Subscribe({"in"}).ok());
  const std::uint64_t split = (*b)->generation();
  EXPECT_GT(split, (*a)->generation());
  // a learns the new generation from a heartbeat, and applies it in Poll.
  ASSERT_TRUE(PollUntil(**a, [&] { return (*a)->generation() == split; }));
  auto pa = Partitions((*a)->assignment());
  auto pb = Partitions((*b)->assignment());
  EXPECT_EQ(pa.size(), 2u);
  EXPECT_EQ(pb.size(), 2u);
  std::set<std::uint32_t> both = pa;
  both.insert(pb.begin(), pb.end());
  EXPECT_EQ(both.size(), kPartitions);

  auto group = client_->DescribeGroup("g");
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  EXPECT_EQ(group->generation, split);
  EXPECT_EQ(group->members.size(), 2u);

  ASSERT_TRUE((*a)->Close().ok());
  ASSERT_TRUE(PollUntil(**b, [&] { return Partitions((*b)->assignment()).size() == kPartitions; }));
  EXPECT_GT((*b)->generation(), split);
  // The survivor reads every partition, from where the group committed (nothing: earliest).
  Produce(8);
  std::set<std::string> seen;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (seen.size() < 8 && std::chrono::steady_clock::now() < deadline) {
    auto batch = (*b)->Poll(100ms);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    for (const auto& e : *batch) seen.insert(e.payload);
  }
  EXPECT_EQ(seen.size(), 8u);
}

TEST_F(Groups, AMemberThatStopsHeartbeatingIsRemovedAndCanCommitNothing) {
  // A member that joins and then goes silent (a hung process): it holds every partition.
  client::JoinOptions join;
  join.session_timeout = 300ms;
  auto zombie = client_->JoinGroup("g", {"in"}, join);
  ASSERT_TRUE(zombie.ok()) << zombie.status().ToString();
  EXPECT_EQ(Partitions(zombie->assignment).size(), kPartitions);

  auto cb = Connect();
  auto live = client::Consumer::Create(*cb, Options());
  ASSERT_TRUE(live.ok());
  ASSERT_TRUE((*live)->Subscribe({"in"}).ok());
  EXPECT_EQ(Partitions((*live)->assignment()).size(), kPartitions / 2);
  // The zombie's session ends: the live member gets everything.
  ASSERT_TRUE(
      PollUntil(**live, [&] { return Partitions((*live)->assignment()).size() == kPartitions; }));
  EXPECT_EQ(client_->Heartbeat("g", zombie->member_id).status().code(), StatusCode::kNotFound);
  // Its offset commits, alone or with outputs, carry a stale generation: refused, nothing
  // written.
  client::OffsetCommit stale{"g", zombie->generation, "in", PartitionId(0), Offset(5)};
  EXPECT_EQ(client_->CommitOffsets({stale}).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(client_->CreateTopic("out", 1).ok());
  auto txn = client_->Commit(
      client::Transaction().Append(Event("out", "from the zombie")).CommitOffset(stale));
  EXPECT_EQ(txn.status().code(), StatusCode::kFailedPrecondition) << txn.status().ToString();
  auto out = client_->Fetch("out", PartitionId(0), Offset(0));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->events, 0u);
}

// Events polled under one generation, then a rebalance: the Poll that applies it says so
// (kConflict) instead of handing the same events out again into the same open transaction.
TEST_F(Groups, APollThatAppliesARebalanceAfterDeliveringEventsReportsAConflict) {
  Produce(8);
  auto c = client::Consumer::Create(*client_, Options());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Subscribe({"in"}).ok());
  ASSERT_EQ(PollEvents(**c, 8), 8u);  // nothing committed: an open transaction would hold these
  const std::uint64_t before = (*c)->generation();
  client::JoinOptions join;
  join.session_timeout = 5000ms;
  ASSERT_TRUE(client_->JoinGroup("g", {"in"}, join).ok());  // a second member: a rebalance
  Status seen = Status::Ok();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (seen.ok() && std::chrono::steady_clock::now() < deadline) {
    auto batch = (*c)->Poll(100ms);
    if (!batch.ok()) {
      seen = batch.status();
      break;
    }
    ASSERT_TRUE(batch->empty()) << "events delivered again without a word";
  }
  EXPECT_EQ(seen.code(), StatusCode::kConflict) << seen.ToString();
  EXPECT_GT((*c)->generation(), before);
}

TEST_F(Groups, SubscribingNeedsAGroupAndExistingTopics) {
  auto none = client::Consumer::Create(*client_, client::ConsumerOptions{});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ((*none)->Subscribe({"in"}).code(), StatusCode::kFailedPrecondition);
  auto c = client::Consumer::Create(*client_, Options());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Subscribe({"in", "missing"}).code(), StatusCode::kNotFound);
  ASSERT_TRUE((*c)->Subscribe({"in"}).ok());
  EXPECT_EQ((*c)->Assign("in").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*c)->Subscribe({"in"}).code(), StatusCode::kFailedPrecondition);
  auto bad = client_->JoinGroup("g", {"in"}, {.member_id = {}, .session_timeout = 1ms});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(Groups, AdminDescribesTopicsAndAGroupsMembersAndLag) {
  client::Admin admin(*client_);
  EXPECT_EQ(admin.CreateTopic({.name = "in", .partitions = 2}).code(), StatusCode::kAlreadyExists);
  auto topic = admin.DescribeTopic("in");
  ASSERT_TRUE(topic.ok()) << topic.status().ToString();
  EXPECT_EQ(topic->partitions, kPartitions);
  EXPECT_EQ(admin.DescribeTopic("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(admin.DescribeGroup("g").status().code(), StatusCode::kNotFound);

  Produce(8);  // two events per partition
  auto c = client::Consumer::Create(*client_, Options());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Subscribe({"in"}).ok());
  ASSERT_EQ(PollEvents(**c, 8), 8u);
  ASSERT_TRUE((*c)->Commit().ok());
  Produce(4);  // one more per partition, not read yet

  auto d = admin.DescribeGroup("g");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->group.members.size(), 1u);
  EXPECT_EQ(Partitions(d->group.members[0].assignment).size(), kPartitions);
  EXPECT_EQ(d->group.members[0].topics, std::vector<std::string>{"in"});
  EXPECT_EQ(d->lag.size(), kPartitions);
  EXPECT_EQ(d->total_lag_events, 4u);
  auto groups = admin.ListGroups();
  ASSERT_TRUE(groups.ok());
  EXPECT_EQ(*groups, std::vector<std::string>{"g"});
}

// Workers transform inputs into outputs, committing each batch's outputs with its offsets. One
// joins late, one leaves midway: each rebalance fences the members' older transactions, which
// commit nothing, and they resume from the committed offsets. Every input is in the outputs
// exactly once.
TEST_F(Groups, TransformWorkersCountEveryInputExactlyOnceAcrossRebalances) {
  ASSERT_TRUE(client_->CreateTopic("out", 1).ok());
  constexpr int kInputs = 400;
  Produce(kInputs);
  std::atomic<int> committed_inputs{0};
  std::atomic<int> refused{0};
  auto worker = [&](int max_batches, std::chrono::milliseconds start_after) {
    std::this_thread::sleep_for(start_after);
    auto c = Connect();
    auto options = Options("doubler");
    options.fetch_max_events = 10;
    auto consumer = client::Consumer::Create(*c, options);
    ASSERT_TRUE(consumer.ok());
    ASSERT_TRUE((*consumer)->Subscribe({"in"}).ok());
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    for (int b = 0; b < max_batches && committed_inputs.load() < kInputs &&
                    std::chrono::steady_clock::now() < deadline;) {
      // Every other transaction holds two polls' events: a rebalance between them must not
      // let the first poll's outputs commit twice.
      client::Transaction txn;
      int inputs = 0;
      bool dropped = false;
      for (int polls = 0; polls < 1 + b % 2 && !dropped; ++polls) {
        auto batch = (*consumer)->Poll(100ms);
        if (!batch.ok()) {
          ASSERT_EQ(batch.status().code(), StatusCode::kConflict) << batch.status().ToString();
          dropped = true;  // rebalanced: what was polled comes again
          break;
        }
        for (const auto& e : *batch) {
          txn.Append(Event("out", std::to_string(2 * std::stoi(e.payload))));
        }
        inputs += static_cast<int>(batch->size());
      }
      if (dropped || inputs == 0) continue;
      for (auto& p : (*consumer)->Positions()) txn.CommitOffset(std::move(p));
      auto r = c->Commit(std::move(txn));
      if (r.ok()) {
        committed_inputs += inputs;
        ++b;
      } else {
        ASSERT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
        ++refused;
        ASSERT_TRUE((*consumer)->Resync().ok());
      }
      std::this_thread::sleep_for(5ms);  // leaves the others time to join and take over
    }
    EXPECT_TRUE((*consumer)->Close().ok());
  };
  std::thread leaver(worker, 8, 0ms);
  std::thread stayer(worker, 1'000'000, 0ms);
  std::thread late(worker, 1'000'000, 150ms);
  leaver.join();
  stayer.join();
  late.join();

  EXPECT_EQ(committed_inputs.load(), kInputs);
  ExpectEveryInputDoubledOnce(kInputs);
  std::printf("transform: %d transactions refused for a stale generation\n", refused.load());
}

}  // namespace
}  // namespace lockstep::integration

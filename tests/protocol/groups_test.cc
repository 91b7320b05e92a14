// Proves the group coordinator's rules with a fake engine (a generation counter and fixed topic
// sizes) and a fake clock: every membership change advances the generation exactly once, the
// partitions of each topic are split among its readers without gaps or overlaps, members whose
// session ran out are removed, and a rebalance whose durable commit fails leaves nobody told
// about a generation that does not exist (and is retried).
#include "protocol/server/groups.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace lockstep::server {
namespace {

using base::StatusCode;
using Clock = GroupCoordinator::Clock;
using namespace std::chrono_literals;

class GroupsTest : public ::testing::Test {
 protected:
  GroupsTest()
      : groups_(
            GroupOptions{},
            [this](std::string_view group) -> base::Result<std::uint64_t> {
              if (group.find(' ') != std::string_view::npos) {
                return base::InvalidArgument("group names have no spaces");
              }
              if (fail_bumps_) return base::IoError("the log is failed");
              return ++generations_[std::string(group)];
            },
            [this](std::string_view topic) -> base::Result<std::uint32_t> {
              auto it = topics_.find(std::string(topic));
              if (it == topics_.end()) return base::NotFound("no such topic");
              return it->second;
            }) {}

  MemberState Join(const std::string& group, std::vector<std::string> topics,
                   std::string member = {}, std::chrono::milliseconds session = 1000ms) {
    JoinRequest r;
    r.group = group;
    r.member_id = std::move(member);
    r.client = "test client";
    r.topics = std::move(topics);
    r.session_timeout = session;
    auto m = groups_.Join(r, now_);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? *m : MemberState{};
  }

  MemberState Beat(const std::string& group, const std::string& member) {
    auto m = groups_.Heartbeat(group, member, now_);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? *m : MemberState{};
  }

  // Every partition of `topic` is held by exactly one of `members`.
  void ExpectPartitioned(const std::string& topic, const std::vector<MemberState>& members) {
    std::multiset<std::uint32_t> held;
    for (const MemberState& m : members) {
      for (const TopicAssignment& a : m.assignment) {
        if (a.topic != topic) continue;
        for (base::PartitionId p : a.partitions) held.insert(p.value());
      }
    }
    std::multiset<std::uint32_t> all;
    for (std::uint32_t p = 0; p < topics_.at(topic); ++p) all.insert(p);
    EXPECT_EQ(held, all) << topic;
  }

  static std::size_t Count(const MemberState& m) {
    std::size_t n = 0;
    for (const TopicAssignment& a : m.assignment) n += a.partitions.size();
    return n;
  }

  std::map<std::string, std::uint64_t> generations_;
  std::map<std::string, std::uint32_t> topics_ = {{"orders", 6}, {"audit", 1}};
  bool fail_bumps_ = false;
  Clock::time_point now_ = Clock::time_point() + 1h;
  GroupCoordinator groups_;
};

TEST_F(GroupsTest, AMemberAloneReadsEveryPartition) {
  MemberState a = Join("g", {"orders"});
  EXPECT_FALSE(a.member_id.empty());
  EXPECT_EQ(a.generation, 1u);
  EXPECT_EQ(a.heartbeat_interval, 333ms);
  ExpectPartitioned("orders", {a});
}

TEST_F(GroupsTest, JoinsAndLeavesSplitThePartitionsAndAdvanceTheGeneration) {
  MemberState a = Join("g", {"orders"});
  MemberState b = Join("g", {"orders"});
  EXPECT_NE(a.member_id, b.member_id);
  EXPECT_EQ(b.generation, 2u);
  a = Beat("g", a.member_id);
  EXPECT_EQ(a.generation, 2u);  // the heartbeat brings the new generation
  ExpectPartitioned("orders", {a, b});
  EXPECT_EQ(Count(a), 3u);
  EXPECT_EQ(Count(b), 3u);

  MemberState c = Join("g", {"orders"});
  a = Beat("g", a.member_id);
  b = Beat("g", b.member_id);
  EXPECT_EQ(c.generation, 3u);
  ExpectPartitioned("orders", {a, b, c});
  for (const MemberState* m : {&a, &b, &c}) EXPECT_EQ(Count(*m), 2u);

  ASSERT_TRUE(groups_.Leave("g", b.member_id).ok());
  ASSERT_TRUE(groups_.Leave("g", b.member_id).ok());  // twice is not an error
  a = Beat("g", a.member_id);
  c = Beat("g", c.member_id);
  EXPECT_EQ(a.generation, 4u);
  ExpectPartitioned("orders", {a, c});
  EXPECT_EQ(generations_["g"], 4u);
  EXPECT_EQ(groups_.Heartbeat("g", b.member_id, now_).status().code(), StatusCode::kNotFound);
}

TEST_F(GroupsTest, RejoiningUnchangedKeepsTheGenerationAndChangedTopicsRebalance) {
  MemberState a = Join("g", {"orders"});
  MemberState again = Join("g", {"orders", "orders"}, a.member_id);
  EXPECT_EQ(again.member_id, a.member_id);
  EXPECT_EQ(again.generation, 1u);
  MemberState wider = Join("g", {"audit", "orders"}, a.member_id);
  EXPECT_EQ(wider.generation, 2u);
  ExpectPartitioned("audit", {wider});
  ExpectPartitioned("orders", {wider});
  // A member id this coordinator never issued (e.g. from before a restart) is a new member.
  MemberState stranger = Join("g", {"audit"}, "made-up-id");
  EXPECT_NE(stranger.member_id, "made-up-id");
}

TEST_F(GroupsTest, EachTopicIsSplitAmongItsOwnReaders) {
  MemberState a = Join("g", {"orders"});
  MemberState b = Join("g", {"audit", "orders"});
  a = Beat("g", a.member_id);
  ExpectPartitioned("orders", {a, b});
  ExpectPartitioned("audit", {a, b});
  for (const TopicAssignment& t : a.assignment) EXPECT_NE(t.topic, "audit");
}

TEST_F(GroupsTest, MembersWhoseSessionEndedAreRemoved) {
  MemberState a = Join("g", {"orders"}, {}, 1000ms);
  MemberState b = Join("g", {"orders"}, {}, 3000ms);
  EXPECT_EQ(groups_.NextExpiry(), now_ + 1000ms);
  now_ += 900ms;
  a = Beat("g", a.member_id);  // a stays; its session restarts
  now_ += 900ms;
  groups_.Expire(now_);
  EXPECT_EQ(generations_["g"], 2u);  // nobody expired yet
  now_ += 1300ms;                    // 3.1 s since b's last word, 2.2 s since a's
  groups_.Expire(now_);
  EXPECT_EQ(groups_.Heartbeat("g", a.member_id, now_).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(groups_.Heartbeat("g", b.member_id, now_).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(generations_["g"], 3u);  // one rebalance for both
  EXPECT_TRUE(groups_.Members("g").empty());
  EXPECT_EQ(groups_.NextExpiry(), Clock::time_point::max());
}

TEST_F(GroupsTest, BadJoinsAreRefusedWithAReason) {
  JoinRequest r;
  r.group = "g";
  r.topics = {"orders"};
  r.session_timeout = 10ms;
  EXPECT_EQ(groups_.Join(r, now_).status().code(), StatusCode::kInvalidArgument);
  r.session_timeout = 1000ms;
  r.topics = {};
  EXPECT_EQ(groups_.Join(r, now_).status().code(), StatusCode::kInvalidArgument);
  r.topics = {"orders", "nope"};
  auto missing = groups_.Join(r, now_);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos)
      << missing.status().ToString();
  r.topics = {"orders"};
  r.group = "";
  EXPECT_EQ(groups_.Join(r, now_).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(generations_.empty());  // nothing was rebalanced
}

// A name the engine refuses leaves nothing behind to retry (no stale group, no log flood).
TEST_F(GroupsTest, AGroupNameTheEngineRefusesLeavesNothingBehind) {
  JoinRequest r;
  r.group = "my group";
  r.topics = {"orders"};
  EXPECT_EQ(groups_.Join(r, now_).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(groups_.Members("my group").empty());
  EXPECT_EQ(groups_.NextExpiry(), Clock::time_point::max());  // nothing to retry
  r.topics = std::vector<std::string>(1001, "orders");
  r.group = "g";
  EXPECT_EQ(groups_.Join(r, now_).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(GroupsTest, TheMemberLimitIsKept) {
  GroupOptions options;
  options.members_max = 2;
  std::uint64_t generation = 0;
  GroupCoordinator small(
      options, [&](std::string_view) -> base::Result<std::uint64_t> { return ++generation; },
      [](std::string_view) -> base::Result<std::uint32_t> { return 4u; });
  JoinRequest r;
  r.group = "g";
  r.topics = {"t"};
  ASSERT_TRUE(small.Join(r, now_).ok());
  ASSERT_TRUE(small.Join(r, now_).ok());
  EXPECT_EQ(small.Join(r, now_).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(small.Members("g").size(), 2u);
}

// Dropping a topic takes its partitions out of its readers' assignments at once (a new
// generation); re-creating it with another partition count splits the new partitions. Groups
// that do not read it keep their generation.
TEST_F(GroupsTest, DroppingOrRecreatingATopicRebalancesItsReaders) {
  MemberState a = Join("g", {"audit", "orders"});
  MemberState b = Join("g", {"orders"});
  MemberState other = Join("h", {"audit"});
  a = Beat("g", a.member_id);
  const std::uint64_t before = a.generation;
  topics_.erase("orders");
  groups_.TopicChanged("orders");
  a = Beat("g", a.member_id);
  b = Beat("g", b.member_id);
  EXPECT_EQ(a.generation, before + 1);
  EXPECT_EQ(Count(a), 1u);  // audit's one partition only
  EXPECT_EQ(Count(b), 0u);
  EXPECT_EQ(Beat("h", other.member_id).generation, other.generation) << "h does not read orders";
  topics_["orders"] = 4;
  groups_.TopicChanged("orders");
  a = Beat("g", a.member_id);
  b = Beat("g", b.member_id);
  EXPECT_EQ(a.generation, before + 2);
  ExpectPartitioned("orders", {a, b});
  EXPECT_EQ(Count(a) + Count(b), 5u);
}

TEST_F(GroupsTest, AFailedRebalanceTellsNobodyAndIsRetried) {
  MemberState a = Join("g", {"orders"});
  fail_bumps_ = true;
  JoinRequest r;
  r.group = "g";
  r.topics = {"orders"};
  EXPECT_EQ(groups_.Join(r, now_).status().code(), StatusCode::kIoError);
  EXPECT_EQ(groups_.Members("g").size(), 1u);  // the refused joiner is not a member
  a = Beat("g", a.member_id);
  EXPECT_EQ(a.generation, 1u);

  MemberState b{};
  fail_bumps_ = false;
  b = Join("g", {"orders"});
  fail_bumps_ = true;
  EXPECT_FALSE(groups_.Leave("g", b.member_id).ok());
  a = Beat("g", a.member_id);
  EXPECT_EQ(a.generation, 2u);  // still the generation before the failed rebalance
  EXPECT_EQ(groups_.NextExpiry(), Clock::time_point::min());  // asks to be retried now
  fail_bumps_ = false;
  groups_.Expire(now_);
  a = Beat("g", a.member_id);
  EXPECT_EQ(a.generation, 3u);
  ExpectPartitioned("orders", {a});
}

}  // namespace
}  // namespace lockstep::server

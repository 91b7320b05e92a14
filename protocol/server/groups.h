#pragma once
// Server-assigned consumer groups (docs/protocol.md, "Consumer groups"). Members join a group
// with the topics they read; the coordinator splits each topic's partitions among the live
// members subscribed to it, and whenever the membership changes — a join, a leave, a member whose
// session ran out — it durably advances the group's generation (Engine::NewGroupGeneration)
// before anyone learns the new assignment. A member learns it from its next heartbeat. Offset
// commits carry the member's generation, and the engine refuses an older one: a member that lost
// a partition cannot commit for it, and a transaction that does (outputs and offsets together)
// commits nothing.
//
// Membership lives in memory: after a restart, members heartbeat into "unknown member" and join
// again, which advances the generation once more — generations stay monotonic, because they are
// kept by the engine.
//
// Thread-safe. Every call may wait for a durable commit (its own rebalance, or another one of
// the coordinator in progress): call them off the network threads.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/strong_id.h"

namespace lockstep::server {

using base::Status;

struct GroupOptions {
  std::chrono::milliseconds session_timeout_min{100};
  std::chrono::milliseconds session_timeout_max{600'000};
  std::uint32_t members_max = 1'000;  // per group
  std::uint32_t groups_max = 10'000;  // with live members
  std::uint32_t topics_max = 1'000;   // per member
};

// The partitions of one topic a member reads.
struct TopicAssignment {
  std::string topic;
  std::vector<base::PartitionId> partitions;
};

// What a member is told on joining and on every heartbeat.
struct MemberState {
  std::string member_id;
  std::uint64_t generation = 0;
  std::vector<TopicAssignment> assignment;
  std::chrono::milliseconds heartbeat_interval{0};
};

struct MemberInfo {
  std::string member_id;
  std::string client;
  std::vector<std::string> topics;
  std::vector<TopicAssignment> assignment;
};

struct JoinRequest {
  std::string group;
  std::string member_id;  // empty (or unknown to this server): a new member
  std::string client;     // a name for operators
  std::vector<std::string> topics;
  std::chrono::milliseconds session_timeout{10'000};
};

class GroupCoordinator {
 public:
  using Clock = std::chrono::steady_clock;
  // Durably advances a group's generation and returns it.
  using NewGeneration = std::function<base::Result<std::uint64_t>(std::string_view group)>;
  // A topic's partition count; kNotFound for a topic that does not exist.
  using PartitionCount = std::function<base::Result<std::uint32_t>(std::string_view topic)>;

  GroupCoordinator(GroupOptions options, NewGeneration new_generation,
                   PartitionCount partition_count);

  // Adds the member (or updates its topics and session), rebalancing if anything changed.
  // kNotFound for a topic that does not exist; kInvalidArgument for a bad request;
  // kResourceExhausted past members_max.
  base::Result<MemberState> Join(const JoinRequest& request, Clock::time_point now);
  // Extends the member's session and tells it the current generation and assignment.
  // kNotFound for a member the group does not know (its session ended, or the server restarted):
  // it must join again.
  base::Result<MemberState> Heartbeat(std::string_view group, std::string_view member_id,
                                      Clock::time_point now);
  // Removes the member and rebalances. Leaving twice is not an error.
  base::Status Leave(std::string_view group, std::string_view member_id);
  // Removes every member whose session ended by `now`, rebalancing their groups.
  void Expire(Clock::time_point now);
  // A topic was created, dropped or re-created: every group with a member subscribed to it
  // rebalances (a dropped topic's partitions leave the assignments; a re-created one's, with
  // their new count, come back). A rebalance that fails is retried by Expire.
  void TopicChanged(std::string_view topic);
  // The earliest session end among all members; Clock::time_point::max() when there are none.
  Clock::time_point NextExpiry() const;

  std::vector<MemberInfo> Members(std::string_view group) const;

 private:
  struct Member {
    std::string client;
    std::vector<std::string> topics;  // sorted, unique
    std::chrono::milliseconds session_timeout{0};
    Clock::time_point expires;
    std::vector<TopicAssignment> assignment;
  };
  struct Group {
    std::uint64_t generation = 0;
    std::map<std::string, Member, std::less<>> members;  // ordered: assignments are stable
    bool stale = false;  // membership changed but the rebalance failed: Expire retries it
  };

  base::Status Rebalance(const std::string& name, Group& group);
  MemberState StateOf(const Group& group, const std::string& member_id) const;
  std::string NewMemberId(std::string_view client);

  GroupOptions options_;
  NewGeneration new_generation_;
  PartitionCount partition_count_;
  mutable std::mutex mu_;
  std::map<std::string, Group, std::less<>> groups_;
  std::uint64_t next_member_ = 0;
  std::uint64_t member_salt_ = 0;  // random per server: ids from before a restart never recur
};

}  // namespace lockstep::server

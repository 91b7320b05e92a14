#include "protocol/server/groups.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <random>
#include <set>

namespace lockstep::server {

namespace {

// A third of the session: two heartbeats may be lost before the session ends.
std::chrono::milliseconds HeartbeatInterval(std::chrono::milliseconds session) {
  return std::max(session / 3, std::chrono::milliseconds(1));
}

std::vector<std::string> SortedUnique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

GroupCoordinator::GroupCoordinator(GroupOptions options, NewGeneration new_generation,
                                   PartitionCount partition_count)
    : options_(options),
      new_generation_(std::move(new_generation)),
      partition_count_(std::move(partition_count)),
      member_salt_((std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()) {}

std::string GroupCoordinator::NewMemberId(std::string_view client) {
  // Printable and short: operators see it in `group describe`.
  std::string prefix;
  for (char c : client.substr(0, 32)) {
    prefix.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '-');
  }
  if (prefix.empty()) prefix = "member";
  return fmt::format("{}-{:016x}-{}", prefix, member_salt_, ++next_member_);
}

base::Result<MemberState> GroupCoordinator::Join(const JoinRequest& request,
                                                 Clock::time_point now) {
  if (request.group.empty()) return base::InvalidArgument("a group needs a name");
  if (request.topics.empty()) {
    return base::InvalidArgument(
        fmt::format("joining group {:?}: name at least one topic to read", request.group));
  }
  if (request.session_timeout < options_.session_timeout_min ||
      request.session_timeout > options_.session_timeout_max) {
    return base::InvalidArgument(
        fmt::format("session timeout {} ms is outside [{}, {}] ms", request.session_timeout.count(),
                    options_.session_timeout_min.count(), options_.session_timeout_max.count()));
  }
  if (request.topics.size() > options_.topics_max) {
    return base::InvalidArgument(fmt::format("a member may read at most {} topics, not {}",
                                             options_.topics_max, request.topics.size()));
  }
  std::vector<std::string> topics = SortedUnique(request.topics);
  for (const std::string& topic : topics) {
    LOCKSTEP_RETURN_IF_ERROR(partition_count_(topic).status().WithContext(
        fmt::format("group {:?}, topic {:?}", request.group, topic)));
  }

  std::lock_guard lock(mu_);
  if (!groups_.contains(request.group) && groups_.size() >= options_.groups_max) {
    return base::ResourceExhausted(
        fmt::format("the server holds its limit of {} groups with members", options_.groups_max));
  }
  Group& group = groups_[request.group];
  auto it = group.members.find(request.member_id);
  const bool known = !request.member_id.empty() && it != group.members.end();
  if (!known && group.members.size() >= options_.members_max) {
    return base::ResourceExhausted(fmt::format("group {:?} holds its limit of {} members",
                                               request.group, options_.members_max));
  }
  const std::string id = known ? request.member_id : NewMemberId(request.client);
  Member& member = group.members[id];
  const bool changed = !known || member.topics != topics;
  member.client = request.client.substr(0, 128);
  member.topics = std::move(topics);
  member.session_timeout = request.session_timeout;
  member.expires = now + request.session_timeout;
  if (changed || group.stale) {
    if (Status s = Rebalance(request.group, group); !s.ok()) {
      if (!known) group.members.erase(id);  // never told it joined
      // A group nobody is in keeps nothing to retry (e.g. a name the engine refuses).
      if (group.members.empty()) groups_.erase(request.group);
      return s;
    }
  }
  return StateOf(group, id);
}

base::Result<MemberState> GroupCoordinator::Heartbeat(std::string_view group_name,
                                                      std::string_view member_id,
                                                      Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto g = groups_.find(group_name);
  if (g != groups_.end()) {
    if (auto m = g->second.members.find(member_id); m != g->second.members.end()) {
      m->second.expires = now + m->second.session_timeout;
      return StateOf(g->second, m->first);
    }
  }
  return base::NotFound(
      fmt::format("member {:?} is not in group {:?} (its session ended, or the server "
                  "restarted): join again",
                  member_id, group_name));
}

base::Status GroupCoordinator::Leave(std::string_view group_name, std::string_view member_id) {
  std::lock_guard lock(mu_);
  auto g = groups_.find(group_name);
  if (g == groups_.end()) return Status::Ok();
  auto m = g->second.members.find(member_id);
  if (m == g->second.members.end()) return Status::Ok();
  g->second.members.erase(m);
  Status s = Rebalance(g->first, g->second);
  if (g->second.members.empty() && s.ok()) groups_.erase(g);
  return s;
}

void GroupCoordinator::Expire(Clock::time_point now) {
  std::lock_guard lock(mu_);
  for (auto g = groups_.begin(); g != groups_.end();) {
    Group& group = g->second;
    bool changed = group.stale;
    for (auto m = group.members.begin(); m != group.members.end();) {
      if (m->second.expires <= now) {
        spdlog::info("group {:?}: member {} missed its heartbeats for {} ms; removed", g->first,
                     m->first, m->second.session_timeout.count());
        m = group.members.erase(m);
        changed = true;
      } else {
        ++m;
      }
    }
    if (changed && !Rebalance(g->first, group).ok()) {
      ++g;
      continue;
    }
    g = group.members.empty() ? groups_.erase(g) : std::next(g);
  }
}

void GroupCoordinator::TopicChanged(std::string_view topic) {
  auto reads_it = [topic](const Group& group) {
    return std::any_of(group.members.begin(), group.members.end(), [&](const auto& m) {
      return std::binary_search(m.second.topics.begin(), m.second.topics.end(), topic);
    });
  };
  std::vector<std::string> readers;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, group] : groups_) {
      if (reads_it(group)) readers.push_back(name);
    }
  }
  // One group at a time, each under its own hold of the lock (a rebalance waits for a durable
  // commit): heartbeats and joins of other groups go on in between.
  for (const std::string& name : readers) {
    std::lock_guard lock(mu_);
    auto g = groups_.find(name);
    if (g == groups_.end() || !reads_it(g->second)) continue;
    (void)Rebalance(name, g->second);  // a failure marks it stale: Expire retries it
  }
}

GroupCoordinator::Clock::time_point GroupCoordinator::NextExpiry() const {
  std::lock_guard lock(mu_);
  auto next = Clock::time_point::max();
  for (const auto& [name, group] : groups_) {
    if (group.stale) return Clock::time_point::min();
    for (const auto& [id, member] : group.members) next = std::min(next, member.expires);
  }
  return next;
}

std::vector<MemberInfo> GroupCoordinator::Members(std::string_view group_name) const {
  std::lock_guard lock(mu_);
  std::vector<MemberInfo> out;
  auto g = groups_.find(group_name);
  if (g == groups_.end()) return out;
  for (const auto& [id, member] : g->second.members) {
    out.push_back({id, member.client, member.topics, member.assignment});
  }
  return out;
}

// Called with mu_ held. The new generation is durable before any member is told about it, so
// that an offset commit of the old generation that the engine sequences after it is refused.
base::Status GroupCoordinator::Rebalance(const std::string& name, Group& group) {
  auto generation = new_generation_(name);
  if (!generation.ok()) {
    group.stale = true;
    spdlog::warn("group {:?}: cannot rebalance: {}", name, generation.status().ToString());
    return generation.status().WithContext(fmt::format("rebalancing group {:?}", name));
  }
  group.generation = *generation;
  group.stale = false;
  // Each topic's partitions go round-robin over the members reading it (ordered by id), the
  // start rotating from topic to topic so that small topics do not all land on one member.
  std::set<std::string> topics;
  for (auto& [id, member] : group.members) {
    member.assignment.clear();
    topics.insert(member.topics.begin(), member.topics.end());
  }
  std::size_t rotation = 0;
  for (const std::string& topic : topics) {
    auto count = partition_count_(topic);
    if (!count.ok()) continue;  // dropped since: nobody reads it
    std::vector<Member*> readers;
    for (auto& [id, member] : group.members) {
      if (std::binary_search(member.topics.begin(), member.topics.end(), topic)) {
        member.assignment.push_back({topic, {}});
        readers.push_back(&member);
      }
    }
    for (std::uint32_t p = 0; p < *count; ++p) {
      readers[(p + rotation) % readers.size()]->assignment.back().partitions.emplace_back(p);
    }
    rotation += *count;
  }
  spdlog::info("group {:?}: generation {}, {} members", name, group.generation,
               group.members.size());
  return Status::Ok();
}

MemberState GroupCoordinator::StateOf(const Group& group, const std::string& member_id) const {
  const Member& member = group.members.at(member_id);
  return {member_id, group.generation, member.assignment,
          HeartbeatInterval(member.session_timeout)};
}

}  // namespace lockstep::server

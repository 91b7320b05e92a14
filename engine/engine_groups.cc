// Consumer groups, read side: generations, committed offsets and lag, from the internal tables
// __groups and __group_offsets (engine/internal_tables.h) at the visible LSN. The write side is
// the sequencer's (offset commits in transactions, NewGroupGeneration).
#include <fmt/format.h>

#include <set>

#include "engine/engine.h"
#include "engine/engine_internal.h"

namespace lockstep::engine {

Result<GroupInfo> Engine::DescribeGroup(std::string_view group) const {
  LOCKSTEP_RETURN_IF_ERROR(ValidateName("group", group, options_.name_bytes_max));
  rcu::ReadGuard guard;
  const Lsn at = visible_lsn();
  GroupInfo info;
  info.name = std::string(group);
  bool known = false;
  if (auto generation = groups_->table->Get(AsBytes(group), at)) {
    LOCKSTEP_ASSIGN_OR_RETURN(info.generation, DecodeGeneration(AsBytes(generation->value)));
    known = true;
  }
  const std::string prefix = GroupOffsetPrefix(group);
  Status bad = Status::Ok();
  ScanOptions scan;
  scan.prefix = prefix;
  group_offsets_->table->Scan(scan, at, [&](std::string_view key, Bytes value, Lsn version) {
    known = true;
    auto parts = DecodeGroupOffsetKey(key);
    auto committed = DecodeGroupOffsetValue(value);
    if (!parts.ok() || !committed.ok()) {
      bad = parts.ok() ? committed.status() : parts.status();
      return false;
    }
    std::string topic;
    {
      std::shared_lock lock(catalog_mu_);
      auto it = topic_ids_.find(parts->topic.value());
      // Offsets of a dropped topic are history; a topic created again under the same name is
      // another topic, with a new id, and starts without them.
      if (it == topic_ids_.end() || !it->second->LiveAt(at)) return true;
      topic = it->second->name;
    }
    info.offsets.push_back({std::move(topic), parts->partition, committed->offset,
                            committed->generation, committed->commit_ms, version});
    return true;
  });
  LOCKSTEP_RETURN_IF_ERROR(bad);
  if (!known) return base::NotFound(fmt::format("no group {:?}", group));
  return info;
}

std::vector<std::string> Engine::ListGroups() const {
  rcu::ReadGuard guard;
  const Lsn at = visible_lsn();
  std::set<std::string> names;
  groups_->table->Scan({}, at, [&](std::string_view key, Bytes, Lsn) {
    names.emplace(key);
    return true;
  });
  group_offsets_->table->Scan({}, at, [&](std::string_view key, Bytes, Lsn) {
    if (auto parts = DecodeGroupOffsetKey(key); parts.ok()) names.emplace(parts->group);
    return true;
  });
  return {names.begin(), names.end()};
}

Result<std::vector<PartitionLag>> Engine::GroupLag(std::string_view group) const {
  LOCKSTEP_ASSIGN_OR_RETURN(GroupInfo info, DescribeGroup(group));
  const std::int64_t now = options_.now_ms();
  std::vector<PartitionLag> out;
  for (const GroupOffset& o : info.offsets) {
    auto t = FindTopic(o.topic);
    if (!t) continue;  // dropped since
    PartitionLag lag{o.topic, o.partition, o.offset, Offset(), 0, 0};
    lag.end = Offset(t->visible_end[o.partition.value()].load(std::memory_order_acquire));
    if (lag.end > o.offset) {
      lag.events = lag.end.value() - o.offset.value();
      // The oldest event not yet consumed is the one at the committed offset — or, when
      // retention already deleted it (a slow consumer), the oldest one still held.
      const Offset oldest(std::max(
          o.offset.value(), t->start_offset[o.partition.value()].load(std::memory_order_acquire)));
      FetchOptions one;
      one.max_events = 1;
      LOCKSTEP_ASSIGN_OR_RETURN(FetchResult fetched, Fetch(o.topic, o.partition, oldest, one));
      if (fetched.events == 1) {
        LOCKSTEP_ASSIGN_OR_RETURN(base::EventView event, base::DecodeEvent(fetched.records));
        lag.ms = std::max<std::int64_t>(0, now - event.timestamp_ms());
      }
    }
    out.push_back(std::move(lag));
  }
  return out;
}

}  // namespace lockstep::engine

#include "clients/admin.h"

#include <fmt/format.h>

#include <algorithm>

namespace lockstep::client {

Status Admin::CreateTopic(const TopicSpec& spec) {
  return client_.CreateTopic(spec.name, spec.partitions, spec.retention_ms, spec.retention_bytes);
}
Status Admin::DropTopic(const std::string& name) { return client_.DropTopic(name); }
Result<std::vector<TopicInfo>> Admin::ListTopics() { return client_.ListTopics(); }

Result<TopicInfo> Admin::DescribeTopic(const std::string& name) {
  LOCKSTEP_ASSIGN_OR_RETURN(std::vector<TopicInfo> topics, client_.ListTopics());
  for (TopicInfo& t : topics) {
    if (t.name == name) return std::move(t);
  }
  return base::NotFound(fmt::format("no topic {:?}", name));
}

Status Admin::CreateTable(const std::string& name) { return client_.CreateTable(name); }
Status Admin::DropTable(const std::string& name) { return client_.DropTable(name); }
Result<std::vector<std::string>> Admin::ListTables() { return client_.ListTables(); }
Result<TableInfo> Admin::DescribeTable(const std::string& name) {
  return client_.DescribeTable(name);
}
Result<std::vector<std::string>> Admin::ListGroups() { return client_.ListGroups(); }

Result<GroupDescription> Admin::DescribeGroup(const std::string& name) {
  GroupDescription d;
  LOCKSTEP_ASSIGN_OR_RETURN(d.group, client_.DescribeGroup(name));
  LOCKSTEP_ASSIGN_OR_RETURN(d.lag, client_.GroupLag(name));
  for (const PartitionLag& l : d.lag) {
    d.total_lag_events += l.events;
    d.max_lag_ms = std::max(d.max_lag_ms, l.ms);
  }
  return d;
}

}  // namespace lockstep::client

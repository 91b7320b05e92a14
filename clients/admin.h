#pragma once
// Admin: the operator's view of a Lockstep server — topics, tables, consumer groups and their
// lag — on top of a Client (like Kafka's AdminClient next to its producer and consumer). Every
// call is synchronous and bounded by the client's retry deadline. Catalog changes are answered
// once durable; creating what exists fails with kAlreadyExists, and nothing is created by
// accident (producing to a missing topic is kNotFound, never an auto-creation).
#include <cstdint>
#include <string>
#include <vector>

#include "clients/client.h"

namespace lockstep::client {

struct TopicSpec {
  std::string name;
  std::uint32_t partitions = 1;
  std::int64_t retention_ms = 0;      // 0: keep by time forever
  std::uint64_t retention_bytes = 0;  // 0: keep by size forever
};

// A group as an operator sees it: who is in it, and how far behind it is per partition.
struct GroupDescription {
  GroupInfo group;                // generation, committed offsets, live members
  std::vector<PartitionLag> lag;  // per partition it committed for
  std::uint64_t total_lag_events = 0;
  std::int64_t max_lag_ms = 0;
};

class Admin {
 public:
  // `client` must outlive the Admin.
  explicit Admin(Client& client) : client_(client) {}

  Status CreateTopic(const TopicSpec& spec);
  Status DropTopic(const std::string& name);
  Result<std::vector<TopicInfo>> ListTopics();
  // kNotFound for a topic that does not exist.
  Result<TopicInfo> DescribeTopic(const std::string& name);

  Status CreateTable(const std::string& name);
  Status DropTable(const std::string& name);
  Result<std::vector<std::string>> ListTables();
  Result<TableInfo> DescribeTable(const std::string& name);

  Result<std::vector<std::string>> ListGroups();
  // kNotFound for a group that never committed and has no members.
  Result<GroupDescription> DescribeGroup(const std::string& name);

 private:
  Client& client_;
};

}  // namespace lockstep::client

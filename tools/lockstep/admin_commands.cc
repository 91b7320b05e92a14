// topic, table, group and stats: the operator's commands, on top of client::Admin.
#include <fmt/format.h>

#include "tools/lockstep/cli.h"

namespace lockstep::cli {
namespace {

// Connects, runs fn(admin), and turns a failure into exit code 1.
template <typename Fn>
int WithAdmin(const Context& ctx, Fn&& fn) {
  auto client = ctx.Connect();
  if (!client.ok()) return Fail(client.status());
  client::Admin admin(**client);
  Status s = fn(admin);
  return s.ok() ? kExitOk : Fail(s);
}

std::string Offsets(const std::vector<base::Offset>& offsets) {
  std::string out;
  for (base::Offset o : offsets) {
    if (!out.empty()) out += ',';
    out += std::to_string(o.value());
  }
  return out;
}

nlohmann::ordered_json TopicJson(const client::TopicInfo& t) {
  nlohmann::ordered_json j;
  j["name"] = t.name;
  j["partitions"] = t.partitions;
  j["retention_ms"] = t.retention_ms;
  j["retention_bytes"] = t.retention_bytes;
  j["start_offsets"] = nlohmann::ordered_json::array();
  j["end_offsets"] = nlohmann::ordered_json::array();
  for (auto o : t.start_offsets) j["start_offsets"].push_back(o.value());
  for (auto o : t.end_offsets) j["end_offsets"].push_back(o.value());
  return j;
}

void PrintTopics(const Context& ctx, const std::vector<client::TopicInfo>& topics) {
  if (ctx.format == Format::kJson) {
    for (const auto& t : topics) PrintJson(TopicJson(t));
    return;
  }
  TextTable table({"TOPIC", "PARTITIONS", "RETENTION_MS", "RETENTION_BYTES", "START", "END"});
  for (const auto& t : topics) {
    table.Add({t.name, std::to_string(t.partitions), std::to_string(t.retention_ms),
               std::to_string(t.retention_bytes), Offsets(t.start_offsets),
               Offsets(t.end_offsets)});
  }
  table.Print();
}

// "ok" lines for catalog changes: a person reads a sentence, a machine one JSON object.
void PrintDone(const Context& ctx, const char* what, const std::string& name) {
  if (ctx.format == Format::kJson) {
    PrintJson({{"ok", true}, {"action", what}, {"name", name}});
  } else {
    std::printf("%s %s\n", what, name.c_str());
    std::fflush(stdout);
  }
}

void AddTopicCommands(CLI::App& app, Context& ctx, Run* run) {
  auto* topic = app.add_subcommand("topic", "create, list, describe and drop topics");
  topic->require_subcommand(1);

  auto* create = topic->add_subcommand("create", "create a topic (an existing one is an error)");
  static client::TopicSpec spec;
  create->add_option("name", spec.name, "topic name")->required();
  create->add_option("--partitions", spec.partitions, "partition count")
      ->check(CLI::Range(1u, 1u << 16));
  create->add_option("--retention-ms", spec.retention_ms, "keep events this long (0: forever)")
      ->check(CLI::NonNegativeNumber);
  create->add_option("--retention-bytes", spec.retention_bytes,
                     "keep about this many bytes per partition (0: no limit)");
  create->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_RETURN_IF_ERROR(admin.CreateTopic(spec));
        PrintDone(ctx, "created topic", spec.name);
        return Status::Ok();
      });
    };
  });

  topic->add_subcommand("list", "list topics with their offsets")->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_ASSIGN_OR_RETURN(auto topics, admin.ListTopics());
        PrintTopics(ctx, topics);
        return Status::Ok();
      });
    };
  });

  static std::string name;
  auto* describe = topic->add_subcommand("describe", "one topic, per partition");
  describe->add_option("name", name, "topic name")->required();
  describe->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_ASSIGN_OR_RETURN(auto t, admin.DescribeTopic(name));
        if (ctx.format == Format::kJson) {
          PrintJson(TopicJson(t));
          return Status::Ok();
        }
        std::printf("topic %s: %u partitions, retention %lld ms, %llu bytes\n", t.name.c_str(),
                    t.partitions, static_cast<long long>(t.retention_ms),
                    static_cast<unsigned long long>(t.retention_bytes));
        TextTable table({"PARTITION", "START", "END", "EVENTS"});
        for (std::uint32_t p = 0; p < t.partitions; ++p) {
          const auto start = t.start_offsets.at(p).value(), end = t.end_offsets.at(p).value();
          table.Add({std::to_string(p), std::to_string(start), std::to_string(end),
                     std::to_string(end - start)});
        }
        table.Print();
        return Status::Ok();
      });
    };
  });

  auto* drop = topic->add_subcommand("drop", "drop a topic and its events");
  drop->add_option("name", name, "topic name")->required();
  drop->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_RETURN_IF_ERROR(admin.DropTopic(name));
        PrintDone(ctx, "dropped topic", name);
        return Status::Ok();
      });
    };
  });
}

void AddTableCommands(CLI::App& app, Context& ctx, Run* run) {
  auto* table = app.add_subcommand("table", "create, list, describe and drop tables");
  table->require_subcommand(1);
  static std::string name;
  auto* create = table->add_subcommand("create", "create a table (an existing one is an error)");
  create->add_option("name", name, "table name")->required();
  create->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_RETURN_IF_ERROR(admin.CreateTable(name));
        PrintDone(ctx, "created table", name);
        return Status::Ok();
      });
    };
  });
  table->add_subcommand("list", "list tables")->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_ASSIGN_OR_RETURN(auto names, admin.ListTables());
        if (ctx.format == Format::kJson) {
          for (const auto& n : names) PrintJson({{"name", n}});
        } else {
          TextTable t({"TABLE"});
          for (const auto& n : names) t.Add({n});
          t.Print();
        }
        return Status::Ok();
      });
    };
  });
  auto* describe = table->add_subcommand(
      "describe", "one table: rows and their bytes, as of the server's visible LSN");
  describe->add_option("name", name, "table name")->required();
  describe->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_ASSIGN_OR_RETURN(auto t, admin.DescribeTable(name));
        if (ctx.format == Format::kJson) {
          PrintJson({{"name", t.name},
                     {"created_lsn", t.created.value()},
                     {"as_of_lsn", t.as_of.value()},
                     {"rows", t.rows},
                     {"key_bytes", t.key_bytes},
                     {"value_bytes", t.value_bytes},
                     {"newest_version", t.newest_version.value()},
                     {"memory_bytes", t.memory_bytes}});
          return Status::Ok();
        }
        std::printf("table %s: created at LSN %llu; as of LSN %llu\n", t.name.c_str(),
                    static_cast<unsigned long long>(t.created.value()),
                    static_cast<unsigned long long>(t.as_of.value()));
        TextTable out({"ROWS", "KEY BYTES", "VALUE BYTES", "NEWEST VERSION", "MEMORY BYTES"});
        out.Add({std::to_string(t.rows), std::to_string(t.key_bytes), std::to_string(t.value_bytes),
                 std::to_string(t.newest_version.value()), std::to_string(t.memory_bytes)});
        out.Print();
        return Status::Ok();
      });
    };
  });
  auto* drop = table->add_subcommand("drop", "drop a table and its rows");
  drop->add_option("name", name, "table name")->required();
  drop->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_RETURN_IF_ERROR(admin.DropTable(name));
        PrintDone(ctx, "dropped table", name);
        return Status::Ok();
      });
    };
  });
}

}  // namespace

void AddCatalogCommands(CLI::App& app, Context& ctx, Run* run) {
  AddTopicCommands(app, ctx, run);
  AddTableCommands(app, ctx, run);
  app.add_subcommand("stats", "server figures")->callback([&ctx, run] {
    *run = [&ctx] {
      auto client = ctx.Connect();
      if (!client.ok()) return Fail(client.status());
      auto s = (*client)->Stats();
      if (!s.ok()) return Fail(s.status());
      nlohmann::ordered_json j;
      j["visible_lsn"] = s->visible_lsn.value();
      j["checkpoint_lsn"] = s->checkpoint_lsn.value();
      j["oldest_readable_lsn"] = s->oldest_readable_lsn.value();
      j["table_bytes"] = s->table_bytes;
      j["connections"] = s->connections;
      j["parked_fetches"] = s->parked_fetches;
      j["requests"] = s->requests;
      j["uptime_ms"] = s->uptime_ms;
      if (ctx.format == Format::kJson) {
        PrintJson(j);
      } else {
        TextTable t({"FIGURE", "VALUE"});
        for (const auto& [k, v] : j.items()) t.Add({k, v.dump()});
        t.Print();
      }
      return kExitOk;
    };
  });
}

void AddGroupCommands(CLI::App& app, Context& ctx, Run* run) {
  auto* group = app.add_subcommand("group", "consumer groups: members, offsets and lag");
  group->require_subcommand(1);
  group->add_subcommand("list", "list groups")->callback([&ctx, run] {
    *run = [&ctx] {
      return WithAdmin(ctx, [&](client::Admin& admin) {
        LOCKSTEP_ASSIGN_OR_RETURN(auto names, admin.ListGroups());
        if (ctx.format == Format::kJson) {
          for (const auto& n : names) PrintJson({{"name", n}});
        } else {
          TextTable t({"GROUP"});
          for (const auto& n : names) t.Add({n});
          t.Print();
        }
        return Status::Ok();
      });
    };
  });
  static std::string name;
  // describe and lag show the same: per partition the committed offset, the end, and the lag in
  // events and time; describe adds the live members.
  for (const char* verb : {"describe", "lag"}) {
    const bool members = std::string(verb) == "describe";
    auto* cmd = group->add_subcommand(
        verb, members ? "members, and per partition: committed offset, end, lag"
                      : "per partition: committed offset, end offset, lag in events and time");
    cmd->add_option("name", name, "group name")->required();
    cmd->callback([&ctx, run, members] {
      *run = [&ctx, members] {
        return WithAdmin(ctx, [&](client::Admin& admin) {
          LOCKSTEP_ASSIGN_OR_RETURN(auto d, admin.DescribeGroup(name));
          if (ctx.format == Format::kJson) {
            if (members) {
              for (const auto& m : d.group.members) {
                nlohmann::ordered_json j{{"group", name},
                                         {"member", m.member_id},
                                         {"client", m.client},
                                         {"generation", d.group.generation}};
                j["assignment"] = nlohmann::ordered_json::array();
                for (const auto& a : m.assignment) {
                  for (auto p : a.partitions) {
                    j["assignment"].push_back({{"topic", a.topic}, {"partition", p.value()}});
                  }
                }
                PrintJson(j);
              }
            }
            for (const auto& l : d.lag) {
              PrintJson({{"group", name},
                         {"topic", l.topic},
                         {"partition", l.partition.value()},
                         {"committed", l.committed.value()},
                         {"end", l.end.value()},
                         {"lag_events", l.events},
                         {"lag_ms", l.ms}});
            }
            return Status::Ok();
          }
          if (members) {
            std::printf("group %s: generation %llu, %zu live members\n", name.c_str(),
                        static_cast<unsigned long long>(d.group.generation),
                        d.group.members.size());
            TextTable m({"MEMBER", "CLIENT", "ASSIGNMENT"});
            for (const auto& member : d.group.members) {
              std::string assigned;
              for (const auto& a : member.assignment) {
                for (auto p : a.partitions) {
                  assigned +=
                      fmt::format("{}{}/{}", assigned.empty() ? "" : " ", a.topic, p.value());
                }
              }
              m.Add({member.member_id, member.client, assigned});
            }
            if (!d.group.members.empty()) m.Print();
          }
          TextTable t({"TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG_MS"});
          for (const auto& l : d.lag) {
            t.Add({l.topic, std::to_string(l.partition.value()),
                   std::to_string(l.committed.value()), std::to_string(l.end.value()),
                   std::to_string(l.events), std::to_string(l.ms)});
          }
          t.Print();
          return Status::Ok();
        });
      };
    });
  }
}

}  // namespace lockstep::cli

// Proves the `lockstep` CLI against a real lockstepd: every command in the human and the JSON
// format, exit codes (0 success, 1 failure, 2 usage) with clear messages for bad arguments,
// produce printing exactly one "PARTITION OFFSET" per acknowledged line in input order, consume
// from earliest / an offset / a timestamp / a group's committed offsets, and produce to a topic
// that does not exist refused (no auto-creation).
#include <fcntl.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clients/client.h"
#include "tests/integration/daemon.h"
#include "tests/testing/temp_dir.h"

namespace lockstep::integration {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(std::filesystem::file_size(path), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream s(text);
  for (std::string line; std::getline(s, line);) out.push_back(line);
  return out;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<Daemon>(dir_.Sub("data"));
    port_ = daemon_->WaitListening();
    ASSERT_NE(port_, 0);
    broker_ = "127.0.0.1:" + std::to_string(port_);
  }

  // A lockstep process started by Spawn; Finish waits for it.
  struct Running {
    pid_t pid = -1;
    std::string out, err;
  };

  // Starts `lockstep --broker ... ARGS` with `input` on stdin, its output to files of its own.
  Running Spawn(std::vector<std::string> args, const std::string& input = "",
                bool with_broker = true) {
    const std::string n = std::to_string(++spawned_);
    const std::string in = dir_.Sub("stdin" + n);
    Running r{-1, dir_.Sub("stdout" + n), dir_.Sub("stderr" + n)};
    std::ofstream(in, std::ios::binary) << input;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, r.out.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, r.err.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> all = {LOCKSTEP_CLI_PATH};
    if (with_broker) {
      all.push_back("--broker");
      all.push_back(broker_);
    }
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&r.pid, LOCKSTEP_CLI_PATH, &actions, nullptr, argv.data(), environ) != 0) {
      ADD_FAILURE() << "cannot start " << LOCKSTEP_CLI_PATH;
      r.pid = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    return r;
  }

  // Waits for `r` (killing it after 30 s, a failure) and collects its exit code and output.
  CliResult Finish(const Running& r) {
    CliResult result;
    if (r.pid < 0) return result;
    int status = 0;
    bool ended = false;
    for (int i = 0; i < 3000 && !ended; ++i) {
      ended = waitpid(r.pid, &status, WNOHANG) == r.pid;
      if (!ended) std::this_thread::sleep_for(10ms);
    }
    if (!ended) {
      kill(r.pid, SIGKILL);
      waitpid(r.pid, &status, 0);
      ADD_FAILURE() << "lockstep did not finish within 30 s";
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = ReadFile(r.out);
    result.err = ReadFile(r.err);
    return result;
  }

  // Runs `lockstep --broker ... ARGS` with `input` on stdin; bounded at 30 s.
  CliResult Run(std::vector<std::string> args, const std::string& input = "",
                bool with_broker = true) {
    return Finish(Spawn(std::move(args), input, with_broker));
  }

  static nlohmann::json Json(const std::string& line) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << line;
    return j;
  }

  testing::TempDir dir_;
  std::unique_ptr<Daemon> daemon_;
  std::uint16_t port_ = 0;
  std::string broker_;
  int spawned_ = 0;
};

TEST_F(Cli, TopicsAndTablesInBothFormats) {
  auto created = Run({"topic", "create", "orders", "--partitions", "3"});
  EXPECT_EQ(created.exit_code, 0) << created.err;
  EXPECT_EQ(created.out, "created topic orders\n");
  auto again = Run({"topic", "create", "orders"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("orders"), std::string::npos) << again.err;
  EXPECT_TRUE(again.out.empty());

  // A global option after the command.
  auto list = Run({"topic", "list", "--format", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto lines = Lines(list.out);
  ASSERT_EQ(lines.size(), 1u);
  auto j = Json(lines[0]);
  EXPECT_EQ(j["name"], "orders");
  EXPECT_EQ(j["partitions"], 3);
  EXPECT_EQ(j["end_offsets"].size(), 3u);

  auto human = Run({"topic", "describe", "orders"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("3 partitions"), std::string::npos) << human.out;
  EXPECT_EQ(Lines(human.out).size(), 5u);  // title, header, three partitions

  EXPECT_EQ(Run({"table", "create", "accounts"}).exit_code, 0);
  ASSERT_EQ(Run({"txn"}, R"({"puts":[{"table":"accounts","key":"alice","value":"100"},)"
                         R"({"table":"accounts","key":"bob","value":"7"}]})")
                .exit_code,
            0);
  auto described = Run({"table", "describe", "accounts", "--format", "json"});
  ASSERT_EQ(described.exit_code, 0) << described.err;
  auto d = Json(described.out);
  EXPECT_EQ(d["name"], "accounts");
  EXPECT_EQ(d["rows"], 2);
  EXPECT_EQ(d["key_bytes"], 8);
  EXPECT_EQ(d["value_bytes"], 4);
  EXPECT_GT(d["newest_version"].get<std::uint64_t>(), d["created_lsn"].get<std::uint64_t>());
  auto described_human = Run({"table", "describe", "accounts"});
  ASSERT_EQ(described_human.exit_code, 0) << described_human.err;
  EXPECT_NE(described_human.out.find("table accounts: created at LSN"), std::string::npos)
      << described_human.out;
  EXPECT_EQ(Lines(described_human.out).size(), 3u) << described_human.out;
  auto no_table = Run({"table", "describe", "nope"});
  EXPECT_EQ(no_table.exit_code, 1);
  EXPECT_NE(no_table.err.find("nope"), std::string::npos) << no_table.err;
  auto tables = Run({"--format", "json", "table", "list"});
  EXPECT_EQ(tables.out, "{\"name\":\"accounts\"}\n");
  EXPECT_EQ(Run({"table", "drop", "accounts"}).exit_code, 0);
  EXPECT_EQ(Run({"table", "list"}).out, "TABLE\n");
  EXPECT_EQ(Run({"topic", "drop", "orders"}).exit_code, 0);
  auto missing = Run({"topic", "describe", "orders"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("not_found"), std::string::npos) << missing.err;
}

// Waits (up to 20 s) until the file holds at least `lines` lines; false if it never does.
bool WaitForLines(const std::string& path, std::size_t lines) {
  for (int i = 0; i < 2000; ++i) {
    if (std::filesystem::exists(path)) {
      const std::string text = ReadFile(path);
      if (static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) >= lines) {
        return true;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST_F(Cli, ProduceAcrossAServerKillPrintsExactlyTheAcknowledgedLines) {
  ASSERT_EQ(Run({"topic", "create", "k", "--partitions", "2"}).exit_code, 0);
  const std::string data = dir_.Sub("data");
  auto input = [](const std::string& prefix, int n) {
    std::string text;
    for (int i = 0; i < n; ++i) text += prefix + std::to_string(i) + "\n";
    return text;
  };
  // Every event of the topic: (partition, offset) -> payload; duplicates fail the test.
  auto log = [&] {
    std::map<std::pair<int, std::uint64_t>, std::string> events;
    auto consumed = Run({"consume", "k", "--format", "json"});
    EXPECT_EQ(consumed.exit_code, 0) << consumed.err;
    for (const auto& line : Lines(consumed.out)) {
      auto j = Json(line);
      const auto at = std::make_pair(j["partition"].get<int>(), j["offset"].get<std::uint64_t>());
      EXPECT_TRUE(events.emplace(at, j["payload"].get<std::string>()).second);
    }
    return events;
  };
  // Each printed line i: "PARTITION OFFSET" where the log holds PREFIXi.
  auto expect_printed_in_log = [&](const std::string& out, const std::string& prefix,
                                   const std::map<std::pair<int, std::uint64_t>, std::string>& in) {
    const auto lines = Lines(out);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      int partition = -1;
      unsigned long long offset = 0;
      ASSERT_EQ(std::sscanf(lines[i].c_str(), "%d %llu", &partition, &offset), 2) << lines[i];
      auto it = in.find({partition, offset});
      ASSERT_NE(it, in.end()) << "printed " << lines[i] << " is not in the log";
      EXPECT_EQ(it->second, prefix + std::to_string(i)) << "line " << i << " printed " << lines[i];
    }
  };

  // 1. The server is killed mid-stream and comes back on the same port: produce retries under
  // the same idempotency keys and every line is printed, and in the log, exactly once.
  constexpr int kLines = 20'000;
  auto running = Spawn({"produce", "k", "--timeout", "20"}, input("line-", kLines));
  ASSERT_TRUE(WaitForLines(running.out, 200)) << ReadFile(running.err);
  EXPECT_EQ(daemon_->Stop(SIGKILL), -1);
  EXPECT_LT(Lines(ReadFile(running.out)).size(), static_cast<std::size_t>(kLines))
      << "the kill came after the last line";
  daemon_ = std::make_unique<Daemon>(data, port_);
  ASSERT_EQ(daemon_->WaitListening(), port_);
  auto produced = Finish(running);
  EXPECT_EQ(produced.exit_code, 0) << produced.err;
  EXPECT_EQ(Lines(produced.out).size(), static_cast<std::size_t>(kLines));
  auto events = log();
  EXPECT_EQ(events.size(), static_cast<std::size_t>(kLines)) << "lost or duplicated events";
  expect_printed_in_log(produced.out, "line-", events);

  // 2. The server is killed and stays away: produce gives up after --timeout with exit 1,
  // having printed a prefix of the input, each line acknowledged at the position it printed.
  running = Spawn({"produce", "k", "--timeout", "2"}, input("more-", kLines));
  ASSERT_TRUE(WaitForLines(running.out, 200)) << ReadFile(running.err);
  EXPECT_EQ(daemon_->Stop(SIGKILL), -1);
  auto cut = Finish(running);
  EXPECT_EQ(cut.exit_code, 1) << cut.err;
  EXPECT_FALSE(cut.err.empty());
  const std::size_t printed = Lines(cut.out).size();
  EXPECT_GE(printed, 200u);
  EXPECT_LT(printed, static_cast<std::size_t>(kLines)) << "the kill came after the last line";
  daemon_ = std::make_unique<Daemon>(data, port_);
  ASSERT_EQ(daemon_->WaitListening(), port_);
  events = log();
  expect_printed_in_log(cut.out, "more-", events);
}

// `consume --follow` rides out a server that comes back within --timeout, and gives up with
// exit 1 once the server has stayed away for it (the client library alone retries for ever).
TEST_F(Cli, ConsumeRidesOutARestartAndGivesUpOnAServerGoneForItsTimeout) {
  const std::string data = dir_.Sub("data");
  ASSERT_EQ(Run({"topic", "create", "t"}).exit_code, 0);
  ASSERT_EQ(Run({"produce", "t"}, "one\ntwo\n").exit_code, 0);
  auto running = Spawn({"consume", "t", "--follow", "--timeout", "8"});
  ASSERT_TRUE(WaitForLines(running.out, 2)) << ReadFile(running.err);
  // Killed and back on the same port at once: consume goes on with what comes next.
  EXPECT_EQ(daemon_->Stop(SIGKILL), -1);
  daemon_ = std::make_unique<Daemon>(data, port_);
  ASSERT_EQ(daemon_->WaitListening(), port_);
  ASSERT_EQ(Run({"produce", "t"}, "three\n").exit_code, 0);
  EXPECT_TRUE(WaitForLines(running.out, 3)) << ReadFile(running.err);
  int status = 0;
  EXPECT_EQ(waitpid(running.pid, &status, WNOHANG), 0) << "consume ended across a restart";
  // Killed for good: it gives up, naming the fetch that got no answer.
  const auto killed = std::chrono::steady_clock::now();
  EXPECT_EQ(daemon_->Stop(SIGKILL), -1);
  auto gone = Finish(running);  // bounded at 30 s, a failure past it
  const auto waited = std::chrono::steady_clock::now() - killed;
  EXPECT_EQ(gone.exit_code, 1) << gone.err;
  EXPECT_EQ(gone.out, "one\ntwo\nthree\n");
  EXPECT_NE(gone.err.find("fetching t/0"), std::string::npos) << gone.err;
  EXPECT_NE(gone.err.find("no answer from " + broker_), std::string::npos) << gone.err;
  EXPECT_LT(waited, 20s);
}

TEST_F(Cli, ProducePrintsOnePositionPerLineAndConsumeReadsThemBack) {
  ASSERT_EQ(Run({"topic", "create", "log"}).exit_code, 0);
  auto produced = Run({"produce", "log"}, "first\nsecond\nthird\n");
  ASSERT_EQ(produced.exit_code, 0) << produced.err;
  EXPECT_EQ(produced.out, "0 0\n0 1\n0 2\n");
  auto json = Run({"produce", "log", "--format", "json", "--key", "k", "--type", "Note"}, "4th\n");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out, "{\"partition\":0,\"offset\":3}\n");

  auto raw = Run({"consume", "log"});
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  EXPECT_EQ(raw.out, "first\nsecond\nthird\n4th\n");  // and it ended: no --follow

  auto events = Run({"consume", "log", "--format", "json", "--from", "3"});
  ASSERT_EQ(events.exit_code, 0) << events.err;
  auto lines = Lines(events.out);
  ASSERT_EQ(lines.size(), 1u);
  auto e = Json(lines[0]);
  EXPECT_EQ(e["offset"], 3);
  EXPECT_EQ(e["key"], "k");
  EXPECT_EQ(e["type"], "Note");
  EXPECT_EQ(e["payload"], "4th");
  EXPECT_GT(e["timestamp_ms"].get<std::int64_t>(), 0);

  auto limited = Run({"consume", "log", "--from", "1", "--max", "2"});
  EXPECT_EQ(limited.out, "second\nthird\n");
  auto latest = Run({"consume", "log", "--from", "latest"});
  EXPECT_EQ(latest.exit_code, 0);
  EXPECT_EQ(latest.out, "");
  auto future = Run({"consume", "log", "--from", "@2999-01-01T00:00:00Z"});
  EXPECT_EQ(future.exit_code, 0) << future.err;
  EXPECT_EQ(future.out, "");
  auto past = Run({"consume", "log", "--from", "@0"});
  EXPECT_EQ(past.out, "first\nsecond\nthird\n4th\n");
}

TEST_F(Cli, JsonInputCarriesKeysTypesAndHeadersAndABadLineStopsAfterTheGoodOnes) {
  ASSERT_EQ(Run({"topic", "create", "t", "--partitions", "2"}).exit_code, 0);
  auto ok = Run({"produce", "t", "--input", "json"},
                R"({"payload":"a","key":"x","type":"T","headers":{"h":"v"},"partition":1})"
                "\n");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "1 0\n");
  auto consumed = Run({"consume", "t", "--partition", "1", "--format", "json"});
  auto e = Json(Lines(consumed.out).at(0));
  EXPECT_EQ(e["headers"]["h"], "v");
  EXPECT_EQ(e["key"], "x");

  auto bad = Run({"produce", "t", "--input", "json", "--partition", "0"},
                 "{\"payload\":\"good\"}\nnot json\n{\"payload\":\"never\"}\n");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.out, "0 0\n");  // exactly the acknowledged line
  EXPECT_NE(bad.err.find("input line 2"), std::string::npos) << bad.err;
}

TEST_F(Cli, BinaryPayloadsAreBase64InJsonAndEscapedForPeople) {
  ASSERT_EQ(Run({"topic", "create", "bin"}).exit_code, 0);
  ASSERT_EQ(Run({"produce", "bin"}, std::string("\xff\xfe ok\n", 6)).exit_code, 0);
  auto json = Run({"consume", "bin", "--format", "json"});
  auto e = Json(Lines(json.out).at(0));
  EXPECT_EQ(e["payload"], "//4gb2s=");
  EXPECT_EQ(e["payload_encoding"], "base64");
  auto human = Run({"consume", "bin", "--format", "human"});
  EXPECT_EQ(human.out, "0\t0\t-\t\\xff\\xfe ok\n");
}

TEST_F(Cli, ProducingToATopicThatDoesNotExistFails) {
  auto r = Run({"produce", "nowhere"}, "lost?\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("nowhere"), std::string::npos) << r.err;
  EXPECT_EQ(Run({"topic", "list", "--format", "json"}).out, "");  // nothing was created
}

TEST_F(Cli, GetScanAndGroups) {
  auto c = client::Client::Connect({.broker = broker_});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->CreateTable("accounts").ok());
  ASSERT_TRUE(
      (*c)->Commit(client::Transaction().Put("accounts", "a", "10").Put("accounts", "b", "20"))
          .ok());
  auto got = Run({"get", "accounts", "b", "--format", "json"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto row = Json(Lines(got.out).at(0));
  EXPECT_EQ(row["key"], "b");
  EXPECT_EQ(row["value"], "20");
  EXPECT_GT(row["version"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(Run({"get", "accounts", "zz"}).exit_code, 1);
  auto scanned = Run({"scan", "accounts"});
  ASSERT_EQ(scanned.exit_code, 0) << scanned.err;
  EXPECT_EQ(Lines(scanned.out).size(), 3u);  // header and two rows
  EXPECT_EQ(Lines(Run({"scan", "accounts", "--prefix", "a", "--format", "json"}).out).size(), 1u);

  ASSERT_EQ(Run({"topic", "create", "in", "--partitions", "2"}).exit_code, 0);
  ASSERT_EQ(Run({"produce", "in"}, "1\n2\n3\n4\n").exit_code, 0);
  auto grouped = Run({"consume", "in", "--group", "readers"});
  ASSERT_EQ(grouped.exit_code, 0) << grouped.err;
  EXPECT_EQ(Lines(grouped.out).size(), 4u);
  // The group committed: consuming again with it prints nothing; the lag is zero.
  EXPECT_EQ(Run({"consume", "in", "--group", "readers"}).out, "");
  auto lag = Run({"group", "lag", "readers", "--format", "json"});
  ASSERT_EQ(lag.exit_code, 0) << lag.err;
  auto lag_lines = Lines(lag.out);
  ASSERT_EQ(lag_lines.size(), 2u);
  for (const auto& l : lag_lines) EXPECT_EQ(Json(l)["lag_events"], 0);
  EXPECT_EQ(Run({"group", "list"}).out, "GROUP\nreaders\n");
  auto described = Run({"group", "describe", "readers"});
  EXPECT_NE(described.out.find("generation"), std::string::npos) << described.out;
  auto stats = Run({"stats", "--format", "json"});
  ASSERT_EQ(stats.exit_code, 0);
  EXPECT_GT(Json(Lines(stats.out).at(0))["visible_lsn"].get<std::uint64_t>(), 0u);
}

TEST_F(Cli, TxnCommitsRowsAndEventsTogetherAndChangesShowsThem) {
  ASSERT_EQ(Run({"table", "create", "accounts"}).exit_code, 0);
  ASSERT_EQ(Run({"topic", "create", "transfers"}).exit_code, 0);
  const std::string open = R"({
    "preconditions": [{"table": "accounts", "key": "a", "absent": true}],
    "puts": [{"table": "accounts", "key": "a", "value": "100"}],
    "events": [{"topic": "transfers", "payload": "opened a", "type": "AccountOpened"}],
    "idempotency_key": "open-a"
  })";
  auto first = Run({"txn", "--format", "json"}, open);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto result = Json(Lines(first.out).at(0));
  EXPECT_GT(result["lsn"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(result["events"][0]["offset"], 0);
  // The same idempotency key: the original result, not a second commit.
  auto retried = Run({"txn", "--format", "json"}, open);
  ASSERT_EQ(retried.exit_code, 0) << retried.err;
  EXPECT_EQ(Json(Lines(retried.out).at(0))["lsn"], result["lsn"]);
  // Without the key the precondition fails: a conflict, exit 1, nothing written.
  const std::string again =
      R"({"preconditions": [{"table": "accounts", "key": "a", "absent": true}],
          "puts": [{"table": "accounts", "key": "a", "value": "0"}]})";
  auto conflict = Run({"txn"}, again);
  EXPECT_EQ(conflict.exit_code, 1);
  EXPECT_NE(conflict.err.find("conflict"), std::string::npos) << conflict.err;
  EXPECT_EQ(Json(Lines(Run({"get", "accounts", "a", "--format", "json"}).out).at(0))["value"],
            "100");
  auto unknown = Run({"txn"}, R"({"putz": []})");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("putz"), std::string::npos) << unknown.err;
  EXPECT_EQ(Run({"txn"}, "not json").exit_code, 1);
  const std::string path = dir_.Sub("txn.json");
  std::ofstream(path) << R"({"deletes": [{"table": "accounts", "key": "a"}]})";
  auto from_file = Run({"txn", "--file", path});
  EXPECT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_EQ(from_file.out.rfind("committed at LSN", 0), 0u) << from_file.out;

  auto changes = Run({"changes", "--format", "json"});
  ASSERT_EQ(changes.exit_code, 0) << changes.err;
  bool saw_open = false, saw_delete = false;
  for (const auto& line : Lines(changes.out)) {
    auto t = Json(line);
    for (const auto& c : t["changes"]) {
      if (c["table"] != "accounts") continue;
      if (c["before"].is_null() && c["after"] == "100") {
        saw_open = true;
        EXPECT_EQ(t["events"][0]["payload"], "opened a");
        EXPECT_EQ(t["events"][0]["type"], "AccountOpened");
      }
      if (c["before"] == "100" && c["after"].is_null()) saw_delete = true;
    }
  }
  EXPECT_TRUE(saw_open) << changes.out;
  EXPECT_TRUE(saw_delete) << changes.out;
}

TEST_F(Cli, VerifyPassesOnAGoodDirectoryAndNamesTheFirstProblemOnADamagedCopy) {
  ASSERT_EQ(Run({"topic", "create", "v", "--partitions", "2"}).exit_code, 0);
  std::string lines;
  for (int i = 0; i < 50; ++i) lines += "needle-" + std::to_string(i) + "\n";
  ASSERT_EQ(Run({"produce", "v"}, lines).exit_code, 0);
  // More after it: damage in the newest batch would look like a torn write, which recovery cuts.
  ASSERT_EQ(Run({"produce", "v"}, "later\n").exit_code, 0);
  const std::string data = dir_.Sub("data");
  // A running server holds the directory: refused, unless --force.
  auto held = Run({"verify", data});
  EXPECT_EQ(held.exit_code, 1);
  EXPECT_NE(held.err.find("--force"), std::string::npos) << held.err;
  EXPECT_EQ(Run({"verify", data, "--force"}).exit_code, 0);
  ASSERT_EQ(daemon_->Stop(SIGTERM), 0);

  auto good = Run({"verify", data, "--format", "json"});
  ASSERT_EQ(good.exit_code, 0) << good.err;
  auto report = Json(Lines(good.out).at(0));
  EXPECT_EQ(report["ok"], true);
  EXPECT_EQ(report["events"], 51);
  EXPECT_EQ(report["partitions"], 2);

  // A copy with one byte of one event damaged: the first problem is named, exit 1.
  const std::string copy = dir_.Sub("copy");
  std::filesystem::copy(data, copy, std::filesystem::copy_options::recursive);
  std::filesystem::remove(copy + "/log/LOCK");
  bool damaged = false;
  for (const auto& entry : std::filesystem::directory_iterator(copy + "/log")) {
    if (entry.path().extension() != ".seg") continue;
    const std::string bytes = ReadFile(entry.path());
    const auto at = bytes.find("needle-17");
    if (at == std::string::npos) continue;
    std::fstream f(entry.path(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(at));
    f.put('N');
    damaged = true;
  }
  ASSERT_TRUE(damaged);
  auto bad = Run({"verify", copy});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find(".seg position"), std::string::npos) << bad.err;
  EXPECT_EQ(Run({"verify", dir_.Sub("nothing-here")}).exit_code, 1);
}

TEST_F(Cli, DumpShowsEveryTransactionInHumanAndJsonAndStopsAtDamage) {
  ASSERT_EQ(Run({"topic", "create", "d", "--partitions", "2"}).exit_code, 0);
  ASSERT_EQ(Run({"table", "create", "accounts"}).exit_code, 0);
  const std::string txn = R"({"puts":[{"table":"accounts","key":"alice","value":"100"}],)"
                          R"("events":[{"topic":"d","partition":1,"key":"alice","type":"Opened",)"
                          R"("headers":{"source":"test"},"payload":"opened alice"}]})";
  ASSERT_EQ(Run({"txn"}, txn).exit_code, 0);
  ASSERT_EQ(Run({"produce", "d", "--partition", "0"}, "first\nsecond\n").exit_code, 0);
  ASSERT_EQ(Run({"produce", "d", "--partition", "0"}, "third\n").exit_code, 0);
  const std::string data = dir_.Sub("data");
  auto held = Run({"dump", data});
  EXPECT_EQ(held.exit_code, 1);
  EXPECT_EQ(held.out, "") << "a refused dump printed something";
  EXPECT_NE(held.err.find("--force"), std::string::npos) << held.err;
  EXPECT_EQ(Run({"dump", data, "--force"}).exit_code, 0);
  ASSERT_EQ(daemon_->Stop(SIGTERM), 0);

  auto human = Run({"dump", data});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_EQ(human.err, "") << "a progress line without a terminal";
  // On a terminal (script(1) gives it one) with stdout redirected, a progress line is drawn
  // and erased.
  const std::string command = std::string("script -qec '") + LOCKSTEP_CLI_PATH + " dump " + data +
                              " > /dev/null' /dev/null";
  FILE* tty = popen(command.c_str(), "r");
  ASSERT_NE(tty, nullptr);
  std::string drawn;
  char chunk[256];
  while (std::fgets(chunk, sizeof chunk, tty) != nullptr) drawn += chunk;
  EXPECT_EQ(pclose(tty), 0) << drawn;
  EXPECT_NE(drawn.find("dump: 100%"), std::string::npos) << drawn;
  EXPECT_NE(drawn.find("\r\033[K"), std::string::npos) << drawn;
  // verify prints nothing until it is done: its progress line shows with stdout on the same
  // terminal too, erased before the report.
  const std::string verify =
      std::string("script -qec '") + LOCKSTEP_CLI_PATH + " verify " + data + "' /dev/null";
  tty = popen(verify.c_str(), "r");
  ASSERT_NE(tty, nullptr);
  drawn.clear();
  while (std::fgets(chunk, sizeof chunk, tty) != nullptr) drawn += chunk;
  EXPECT_EQ(pclose(tty), 0) << drawn;
  const auto progress = drawn.find("verify: 100%");
  const auto report = drawn.find("5 transactions (LSN 1 to 5)");
  EXPECT_NE(progress, std::string::npos) << drawn;
  EXPECT_NE(report, std::string::npos) << drawn;
  EXPECT_LT(progress, report) << drawn;
  for (const char* expected :
       {"create topic d (id", "create table accounts (id", "put accounts \"alice\" = \"100\"",
        "event d/1 offset 0", "type Opened", "headers source=\"test\"", "payload \"opened alice\"",
        "event d/0 offset 1", "payload \"second\"",
        "5 transactions (LSN 1 to 5), 4 events in 2 partitions"}) {
    EXPECT_NE(human.out.find(expected), std::string::npos) << expected << " in\n" << human.out;
  }

  // JSON: one object per line; the transactions of an LSN range with their operations.
  auto json = Run({"dump", data, "--format", "json", "--from-lsn", "3", "--to-lsn", "4"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  std::vector<nlohmann::json> txns;
  nlohmann::json summary;
  for (const auto& line : Lines(json.out)) {
    auto j = Json(line);
    if (j["kind"] == "transaction") txns.push_back(j);
    if (j["kind"] == "summary") summary = j;
  }
  ASSERT_EQ(txns.size(), 2u) << json.out;
  EXPECT_EQ(txns[0]["lsn"], 3);
  ASSERT_EQ(txns[0]["ops"].size(), 2u);
  EXPECT_EQ(txns[0]["ops"][0]["op"], "put");
  EXPECT_EQ(txns[0]["ops"][0]["table"], "accounts");
  EXPECT_EQ(txns[0]["ops"][0]["value"], "100");
  EXPECT_EQ(txns[0]["ops"][1]["op"], "event");
  EXPECT_EQ(txns[0]["ops"][1]["topic"], "d");
  EXPECT_EQ(txns[0]["ops"][1]["partition"], 1);
  EXPECT_EQ(txns[0]["ops"][1]["headers"]["source"], "test");
  EXPECT_EQ(txns[0]["ops"][1]["payload"], "opened alice");
  EXPECT_EQ(txns[1]["lsn"], 4);
  ASSERT_EQ(txns[1]["ops"].size(), 2u);
  EXPECT_EQ(txns[1]["ops"][1]["payload"], "second");
  EXPECT_EQ(txns[1]["ops"][1]["offset"], 1);
  EXPECT_EQ(summary["ok"], true);
  EXPECT_EQ(summary["transactions"], 5);

  // A damaged copy: what lies before the damage is printed, then exit 1 naming it.
  const std::string copy = dir_.Sub("copy");
  std::filesystem::copy(data, copy, std::filesystem::copy_options::recursive);
  std::filesystem::remove(copy + "/log/LOCK");
  bool damaged = false;
  for (const auto& entry : std::filesystem::directory_iterator(copy + "/log")) {
    if (entry.path().extension() != ".seg") continue;
    const std::string bytes = ReadFile(entry.path());
    const auto at = bytes.find("second");
    if (at == std::string::npos) continue;
    std::fstream f(entry.path(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(at));
    f.put('S');
    damaged = true;
  }
  ASSERT_TRUE(damaged);
  auto bad = Run({"dump", copy});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("opened alice"), std::string::npos) << bad.out;
  EXPECT_EQ(bad.out.find("second"), std::string::npos) << bad.out;
  EXPECT_NE(bad.err.find(".seg position"), std::string::npos) << bad.err;
  EXPECT_EQ(Run({"dump", data, "--from-lsn", "5", "--to-lsn", "4"}).exit_code, 2);
  EXPECT_EQ(Run({"dump"}).exit_code, 2);
}

TEST_F(Cli, EveryCommandHasHelp) {
  for (const std::vector<std::string>& command :
       std::vector<std::vector<std::string>>{{},
                                             {"topic"},
                                             {"topic", "create"},
                                             {"topic", "list"},
                                             {"topic", "describe"},
                                             {"topic", "drop"},
                                             {"table"},
                                             {"table", "create"},
                                             {"table", "list"},
                                             {"table", "describe"},
                                             {"table", "drop"},
                                             {"produce"},
                                             {"consume"},
                                             {"get"},
                                             {"scan"},
                                             {"group"},
                                             {"group", "list"},
                                             {"group", "describe"},
                                             {"group", "lag"},
                                             {"txn"},
                                             {"changes"},
                                             {"stats"},
                                             {"verify"},
                                             {"dump"}}) {
    std::vector<std::string> args = command;
    args.push_back("--help");
    auto help = Run(args);
    std::string name = "lockstep";
    for (const auto& word : command) name += " " + word;
    EXPECT_EQ(help.exit_code, 0) << name << help.err;
    // Its own help, not its parent's: the usage line names the whole command.
    EXPECT_NE(help.out.find("Usage: " + name + " "), std::string::npos) << name << help.out;
  }
}

// The formats the other tests do not look at: stats, group list and describe, and the change
// feed for people; and the two tails, consume --follow and changes --follow, which print a new
// event or transaction while they run.
TEST_F(Cli, TheRemainingFormatsAndTheTails) {
  ASSERT_EQ(Run({"topic", "create", "tail", "--partitions", "1"}).exit_code, 0);
  ASSERT_EQ(Run({"table", "create", "notes"}).exit_code, 0);
  ASSERT_EQ(Run({"produce", "tail"}, "one\n").exit_code, 0);
  ASSERT_EQ(Run({"consume", "tail", "--group", "tailers"}).exit_code, 0);

  auto stats = Run({"stats"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_NE(stats.out.find("visible_lsn"), std::string::npos) << stats.out;
  auto groups = Run({"group", "list", "--format", "json"});
  ASSERT_EQ(groups.exit_code, 0) << groups.err;
  EXPECT_EQ(Json(groups.out)["name"], "tailers");
  auto described = Run({"group", "describe", "tailers", "--format", "json"});
  ASSERT_EQ(described.exit_code, 0) << described.err;
  auto lines = Lines(described.out);
  ASSERT_FALSE(lines.empty()) << described.out;
  auto d = Json(lines.back());
  EXPECT_EQ(d["group"], "tailers");
  EXPECT_EQ(d["committed"], 1);
  ASSERT_EQ(Run({"txn"}, R"({"puts":[{"table":"notes","key":"n1","value":"hello"}]})").exit_code,
            0);
  auto changes = Run({"changes"});
  ASSERT_EQ(changes.exit_code, 0) << changes.err;
  EXPECT_NE(changes.out.find("n1"), std::string::npos) << changes.out;
  EXPECT_NE(changes.out.find("hello"), std::string::npos) << changes.out;

  // Tails: started, then fed, then stopped by a signal once they printed what came in. Both
  // start from a fixed place ("one" is at offset 0), so it does not matter whether they are
  // already waiting when the new event and transaction come.
  auto consume = Spawn({"consume", "tail", "--follow", "--from", "1", "--format", "raw"});
  auto feed = Spawn({"changes", "--follow", "--format", "json"});
  std::this_thread::sleep_for(300ms);  // most likely waiting at the end by now
  EXPECT_EQ(Run({"produce", "tail"}, "two\n").exit_code, 0);
  EXPECT_EQ(Run({"txn"}, R"({"puts":[{"table":"notes","key":"n2","value":"later"}]})").exit_code,
            0);
  EXPECT_TRUE(WaitForLines(consume.out, 1)) << ReadFile(consume.err);
  bool fed = false;
  for (int i = 0; i < 2000 && !fed; ++i) {
    fed = ReadFile(feed.out).find("later") != std::string::npos;
    if (!fed) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(fed) << ReadFile(feed.out) << ReadFile(feed.err);
  kill(consume.pid, SIGINT);
  kill(feed.pid, SIGINT);
  auto consumed = Finish(consume);
  Finish(feed);
  EXPECT_EQ(consumed.out, "two\n");
}

TEST_F(Cli, BadArgumentsExitTwoWithAMessage) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"topic"},
           {"topic", "create"},
           {"topic", "create", "t", "--partitions", "0"},
           {"topic", "list", "--format", "xml"},
           {"consume", "t", "--from", "yesterday"},
           {"consume", "t", "--from", "@not-a-time"},
           {"produce", "t", "--input", "yaml"},
           {"get", "accounts"},
       }) {
    auto r = Run(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << joined;
    EXPECT_TRUE(r.out.empty()) << joined << ": " << r.out;
  }
  auto help = Run({"consume", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--follow"), std::string::npos);
}

TEST_F(Cli, AnUnreachableBrokerFailsWithinTheTimeout) {
  auto r = Run({"--broker", "127.0.0.1:1", "--timeout", "0.5", "topic", "list"}, "", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("127.0.0.1:1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lockstep::integration

// produce, consume, get and scan: events and rows.
#include <fmt/format.h>

#include <atomic>
#include <ctime>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>

#include "clients/consumer.h"
#include "clients/producer.h"
#include "tools/lockstep/cli.h"

namespace lockstep::cli {
namespace {

using base::Offset;
using base::PartitionId;

// ---- produce --------------------------------------------------------------------------------

struct ProduceArgs {
  std::string topic;
  std::optional<std::string> key;
  std::optional<std::uint32_t> partition;
  std::string type;
  std::string input = "lines";
};

// One stdin line as an event: the line itself, or (--input json) an object with payload, key,
// type, headers (an object of strings) and partition.
Result<client::EventAppend> ParseLine(const ProduceArgs& a, std::string line) {
  client::EventAppend e;
  e.topic = a.topic;
  e.key = a.key;
  e.type = a.type;
  if (a.partition) e.partition = PartitionId(*a.partition);
  if (a.input == "lines") {
    e.payload = std::move(line);
    return e;
  }
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("payload") || !j["payload"].is_string()) {
    return base::InvalidArgument(
        "an --input json line must be an object with a string \"payload\" (and optional \"key\", "
        "\"type\", \"headers\", \"partition\")");
  }
  e.payload = j["payload"].get<std::string>();
  if (j.contains("key")) {
    if (!j["key"].is_string()) return base::InvalidArgument("\"key\" must be a string");
    e.key = j["key"].get<std::string>();
  }
  if (j.contains("type")) {
    if (!j["type"].is_string()) return base::InvalidArgument("\"type\" must be a string");
    e.type = j["type"].get<std::string>();
  }
  if (j.contains("partition")) {
    if (!j["partition"].is_number_unsigned()) {
      return base::InvalidArgument("\"partition\" must be a number >= 0");
    }
    e.partition = PartitionId(j["partition"].get<std::uint32_t>());
  }
  if (j.contains("headers")) {
    if (!j["headers"].is_object()) return base::InvalidArgument("\"headers\" must be an object");
    for (const auto& [name, value] : j["headers"].items()) {
      if (!value.is_string()) return base::InvalidArgument("header values must be strings");
      e.headers.emplace_back(name, value.get<std::string>());
    }
  }
  return e;
}

// Prints one line per event in input order as soon as it is durable (the producer's delivery
// callbacks come in Send order). Stops at the first failure: what was printed is exactly what
// was acknowledged.
int Produce(const Context& ctx, const ProduceArgs& a) {
  auto client = ctx.Connect();
  if (!client.ok()) return Fail(client.status());
  client::ProducerOptions po;
  po.send_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(ctx.timeout_s * 1000));
  auto producer = client::Producer::Create(**client, po);
  if (!producer.ok()) return Fail(producer.status());
  std::mutex mu;
  std::optional<Status> failed;       // a delivery failed: nothing after it is printed
  std::optional<Status> input_error;  // a bad line: reading stops, the earlier lines still print
  std::atomic<bool> stop{false};
  const bool json = ctx.format == Format::kJson;
  std::string line;
  std::uint64_t number = 0;
  std::atomic<std::uint64_t> acknowledged{0};
  ProgressLine progress("produce", /*quiet_stdout=*/false);
  while (!stop.load() && std::getline(std::cin, line)) {
    ++number;
    progress.Update([&] {
      return fmt::format("{} lines read, {} acknowledged", number - 1, acknowledged.load());
    });
    auto event = ParseLine(a, std::move(line));
    if (!event.ok()) {
      input_error = event.status().WithContext(fmt::format("input line {}", number));
      break;
    }
    Status sent = (*producer)->Send(std::move(*event), [&](Result<client::EventPosition> r) {
      std::lock_guard lock(mu);
      if (failed) return;  // nothing after a failure is printed: the output stays a prefix
      if (!r.ok()) {
        failed = r.status();
        stop = true;
        return;
      }
      acknowledged.fetch_add(1, std::memory_order_relaxed);
      if (json) {
        PrintJson({{"partition", r->partition.value()}, {"offset", r->offset.value()}});
      } else {
        std::printf("%u %llu\n", r->partition.value(),
                    static_cast<unsigned long long>(r->offset.value()));
        std::fflush(stdout);
      }
    });
    if (!sent.ok()) {
      std::lock_guard lock(mu);
      if (!failed) failed = sent;
      break;
    }
  }
  Status flushed = (*producer)->Flush(
      std::chrono::milliseconds(static_cast<std::int64_t>(ctx.timeout_s * 1000) + 1000));
  producer->reset();
  progress.Done();
  std::lock_guard lock(mu);
  if (failed) return Fail(*failed);
  if (!flushed.ok()) return Fail(flushed);
  return input_error ? Fail(*input_error) : kExitOk;
}

// ---- consume --------------------------------------------------------------------------------

struct ConsumeArgs {
  std::string topic;
  std::string from;  // earliest | latest | OFFSET | @TIMESTAMP (empty: earliest, or the group's)
  std::optional<std::uint32_t> partition;
  std::string group;
  bool follow = false;
  std::uint64_t max = 0;  // 0: no limit
};

// "@1700000000000" (ms since the epoch) or "@2026-11-27T10:00:00[.123][Z]" (UTC).
Result<std::int64_t> ParseTimestamp(const std::string& text) {
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
    if (text.size() > 18) return base::InvalidArgument(fmt::format("{:?} is too large", text));
    return std::stoll(text);
  }
  std::tm tm{};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) {
    return base::InvalidArgument(fmt::format(
        "{:?} is neither milliseconds since the epoch nor ISO 8601 (2026-11-27T10:00:00Z)", text));
  }
  std::int64_t ms = static_cast<std::int64_t>(timegm(&tm)) * 1000;
  if (*rest == '.') {
    int digits = 0;
    std::int64_t fraction = 0;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest) {
      if (digits++ < 3) fraction = fraction * 10 + (*rest - '0');
    }
    while (digits++ < 3) fraction *= 10;
    ms += fraction;
  }
  if (*rest == 'Z') ++rest;
  if (*rest != '\0') return base::InvalidArgument(fmt::format("{:?}: only UTC (Z) times", text));
  return ms;
}

void PrintEvent(const std::string& format, const client::ConsumedEvent& e) {
  if (format == "raw") {
    std::fwrite(e.payload.data(), 1, e.payload.size(), stdout);
    std::fputc('\n', stdout);
    return;
  }
  if (format == "human") {
    std::printf("%u\t%llu\t%s\t%s\n", e.partition.value(),
                static_cast<unsigned long long>(e.offset.value()),
                e.key ? Printable(*e.key).c_str() : "-", Printable(e.payload).c_str());
    return;
  }
  nlohmann::ordered_json j;
  j["topic"] = e.topic;
  j["partition"] = e.partition.value();
  j["offset"] = e.offset.value();
  j["lsn"] = e.lsn.value();
  j["timestamp_ms"] = e.timestamp_ms;
  if (e.key) {
    PutBytes(j, "key", *e.key);
  } else {
    j["key"] = nullptr;
  }
  j["type"] = e.type;
  j["schema_version"] = e.schema_version;
  j["headers"] = nlohmann::ordered_json::object();
  for (const auto& [name, value] : e.headers) PutBytes(j["headers"], name, value);
  PutBytes(j, "payload", e.payload);
  const std::string line = j.dump();
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
}

// Moves every assigned partition to --from (nothing to do without it, or with a group and no
// --from: the committed offsets hold).
Status SeekAll(client::Consumer& consumer, const ConsumeArgs& a,
               const std::vector<std::pair<std::string, PartitionId>>& partitions) {
  if (a.from.empty()) return Status::Ok();
  for (const auto& [topic, p] : partitions) {
    if (a.from == "earliest") {
      LOCKSTEP_RETURN_IF_ERROR(consumer.SeekToBeginning(topic, p));
    } else if (a.from == "latest") {
      LOCKSTEP_RETURN_IF_ERROR(consumer.SeekToEnd(topic, p));
    } else if (a.from[0] == '@') {
      LOCKSTEP_ASSIGN_OR_RETURN(std::int64_t ms, ParseTimestamp(a.from.substr(1)));
      LOCKSTEP_RETURN_IF_ERROR(consumer.SeekToTimestamp(topic, p, ms));
    } else {
      LOCKSTEP_RETURN_IF_ERROR(
          consumer.Seek(topic, p, Offset(std::strtoull(a.from.c_str(), nullptr, 10))));
    }
  }
  return Status::Ok();
}

// Commits, for --group, the position after the last printed event of each partition.
Status CommitPrinted(client::Client& client, const ConsumeArgs& a, std::uint64_t generation,
                     const std::map<std::uint32_t, std::uint64_t>& reached) {
  std::vector<client::OffsetCommit> commits;
  for (const auto& [p, next] : reached) {
    commits.push_back({a.group, generation, a.topic, PartitionId(p), Offset(next)});
  }
  return commits.empty() ? Status::Ok() : client.CommitOffsets(std::move(commits));
}

int Consume(const Context& ctx, const ConsumeArgs& a) {
  if (!a.from.empty() && a.from != "earliest" && a.from != "latest" && a.from[0] != '@' &&
      (a.from.find_first_not_of("0123456789") != std::string::npos || a.from.size() > 19)) {
    return UsageError(
        fmt::format("--from {:?}: earliest, latest, an offset, or @TIMESTAMP", a.from));
  }
  if (!a.from.empty() && a.from[0] == '@' && !ParseTimestamp(a.from.substr(1)).ok()) {
    return UsageError(std::string(ParseTimestamp(a.from.substr(1)).status().message()));
  }
  if (!a.group.empty() && a.partition) {
    return UsageError("--group lets the server assign partitions: leave out --partition");
  }
  // Payloads alone by default (like kcat); --format json: one object per event; --format
  // human: partition, offset, key and payload, tab-separated.
  const std::string format = ctx.format == Format::kJson  ? "json"
                             : ctx.format_name == "human" ? "human"
                                                          : "raw";
  auto client = ctx.Connect();
  if (!client.ok()) return Fail(client.status());
  client::Admin admin(**client);
  auto topic = admin.DescribeTopic(a.topic);
  if (!topic.ok()) return Fail(topic.status());
  if (a.partition && *a.partition >= topic->partitions) {
    return UsageError(fmt::format("topic {:?} has {} partitions; there is no {}", a.topic,
                                  topic->partitions, *a.partition));
  }
  client::ConsumerOptions co;
  co.group = a.group;
  co.max_wait = std::chrono::milliseconds(500);
  co.fail_when_unreachable = true;  // a server gone for --timeout ends the command (exit 1)
  auto consumer = client::Consumer::Create(**client, co);
  if (!consumer.ok()) return Fail(consumer.status());
  Status assigned = a.group.empty()
                        ? (a.partition ? (*consumer)->Assign(a.topic, {PartitionId(*a.partition)})
                                       : (*consumer)->Assign(a.topic))
                        : (*consumer)->Subscribe({a.topic});
  if (!assigned.ok()) return Fail(assigned);
  std::vector<std::pair<std::string, PartitionId>> mine;
  for (const auto& t : (*consumer)->assignment()) {
    for (PartitionId p : t.partitions) mine.emplace_back(t.topic, p);
  }
  if (a.group.empty()) {
    for (std::uint32_t p = 0; p < topic->partitions; ++p) {
      if (!a.partition || *a.partition == p) mine.emplace_back(a.topic, PartitionId(p));
    }
  }
  if (Status s = SeekAll(**consumer, a, mine); !s.ok()) return Fail(s);
  // Without --follow: stop at the end of each partition as of the start.
  std::map<std::uint32_t, std::uint64_t> ends, reached;
  for (const auto& [t, p] : mine) ends[p.value()] = topic->end_offsets.at(p.value()).value();
  for (const client::OffsetCommit& c : (*consumer)->Positions()) {
    reached[c.partition.value()] = c.offset.value();
  }
  auto done = [&] {
    if (a.follow) return false;
    for (const auto& [p, end] : ends) {
      if (reached[p] < end) return false;
    }
    return true;
  };
  std::uint64_t printed = 0;
  while (!done() && (a.max == 0 || printed < a.max)) {
    auto batch = (*consumer)->Poll(std::chrono::milliseconds(500));
    if (!batch.ok()) return Fail(batch.status());
    for (const auto& e : *batch) {
      if (a.max != 0 && printed == a.max) break;
      // Past the end as of the start: not printed without --follow.
      if (!a.follow && e.offset.value() >= ends[e.partition.value()]) continue;
      PrintEvent(format, e);
      ++printed;
      reached[e.partition.value()] = e.offset.value() + 1;
    }
    std::fflush(stdout);
    if (!a.group.empty()) {
      // Exactly what was printed: not the consumer's position, which is past the whole batch
      // (events beyond --max, or past the end as of the start, were not printed).
      if (Status s = CommitPrinted(**client, a, (*consumer)->generation(), reached); !s.ok()) {
        return Fail(
            s.WithContext("committing the group's offsets (a rebalance fences this "
                          "reader: run it again)"));
      }
    }
  }
  if (!a.group.empty()) {
    if (Status s = (*consumer)->Close(); !s.ok()) return Fail(s);
  }
  return kExitOk;
}

// ---- get and scan ---------------------------------------------------------------------------

void PrintRow(const Context& ctx, const std::string& table, const client::Row& row,
              TextTable* text) {
  if (ctx.format == Format::kJson) {
    nlohmann::ordered_json j{{"table", table}};
    PutBytes(j, "key", row.key);
    PutBytes(j, "value", row.value);
    j["version"] = row.version.value();
    PrintJson(j);
  } else {
    text->Add({Printable(row.key), Printable(row.value), std::to_string(row.version.value())});
  }
}

}  // namespace

void AddDataCommands(CLI::App& app, Context& ctx, Run* run) {
  static ProduceArgs produce;
  auto* p = app.add_subcommand(
      "produce", "append one event per stdin line; prints PARTITION OFFSET once each is durable");
  p->add_option("topic", produce.topic, "topic to append to (it must exist)")->required();
  p->add_option("--key", produce.key, "event key (also chooses the partition by hash)");
  p->add_option("--partition", produce.partition, "explicit partition");
  p->add_option("--type", produce.type, "event type");
  p->add_option("--input", produce.input, "lines (each line is a payload) or json")
      ->check(CLI::IsMember({"lines", "json"}));
  p->callback([&ctx, run] { *run = [&ctx] { return Produce(ctx, produce); }; });

  static ConsumeArgs consume;
  auto* c = app.add_subcommand("consume", "print a topic's events, each partition in order");
  c->add_option("topic", consume.topic, "topic to read")->required();
  c->add_option("--from", consume.from,
                "earliest | latest | OFFSET | @TIMESTAMP (ms or ISO 8601 UTC); default "
                "earliest, or the group's committed offsets");
  c->add_option("--partition", consume.partition, "only this partition");
  c->add_option("--group", consume.group,
                "join this consumer group (the server assigns partitions) and commit offsets");
  c->add_flag("--follow", consume.follow, "keep waiting for new events");
  c->add_option("--max", consume.max, "stop after this many events");
  c->callback([&ctx, run] { *run = [&ctx] { return Consume(ctx, consume); }; });

  static std::string table, key;
  static std::uint64_t as_of = 0;
  auto* g = app.add_subcommand("get", "read one row");
  g->add_option("table", table, "table")->required();
  g->add_option("key", key, "key")->required();
  g->add_option("--as-of", as_of, "read as of this LSN (within the retained version window)");
  g->callback([&ctx, run] {
    *run = [&ctx] {
      auto client = ctx.Connect();
      if (!client.ok()) return Fail(client.status());
      auto row = (*client)->Get(table, key, base::Lsn(as_of));
      if (!row.ok()) return Fail(row.status());
      if (!*row) return Fail(base::NotFound(fmt::format("no key {:?} in table {:?}", key, table)));
      TextTable text({"KEY", "VALUE", "VERSION"});
      PrintRow(ctx, table, **row, &text);
      if (ctx.format == Format::kHuman) text.Print();
      return kExitOk;
    };
  });

  static client::ScanOptions scan;
  auto* s = app.add_subcommand("scan", "read rows in key order");
  s->add_option("table", table, "table")->required();
  s->add_option("--prefix", scan.prefix, "only keys starting with this");
  s->add_option("--from", scan.from, "first key (inclusive)");
  s->add_option("--to", scan.to, "last key (exclusive)");
  s->add_option("--limit", scan.limit, "at most this many rows")->check(CLI::Range(1u, 100'000u));
  s->add_flag("--reverse", scan.reverse, "descending key order");
  s->add_option("--as-of", as_of, "read as of this LSN");
  s->callback([&ctx, run] {
    *run = [&ctx] {
      auto client = ctx.Connect();
      if (!client.ok()) return Fail(client.status());
      auto rows = (*client)->Scan(table, scan, base::Lsn(as_of));
      if (!rows.ok()) return Fail(rows.status());
      TextTable text({"KEY", "VALUE", "VERSION"});
      for (const auto& row : *rows) PrintRow(ctx, table, row, &text);
      if (ctx.format == Format::kHuman) text.Print();
      return kExitOk;
    };
  });
}

}  // namespace lockstep::cli

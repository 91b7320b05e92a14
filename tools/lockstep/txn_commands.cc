// txn and changes: whole transactions in (from JSON), the change feed out.
#include <fmt/format.h>

#include <cstdio>
#include <set>
#include <thread>

#include "base/event_record.h"
#include "tools/lockstep/cli.h"

namespace lockstep::cli {
namespace {

using base::Lsn;
using base::Offset;
using base::PartitionId;
using nlohmann::json;

// ---- txn ------------------------------------------------------------------------------------

Result<std::string> String(const json& j, const char* field, const char* where) {
  if (!j.contains(field) || !j[field].is_string()) {
    return base::InvalidArgument(fmt::format("{}: needs a string {:?}", where, field));
  }
  return j[field].get<std::string>();
}

Result<std::uint64_t> Number(const json& j, const char* field, const char* where) {
  if (!j.contains(field) || !j[field].is_number_unsigned()) {
    return base::InvalidArgument(fmt::format("{}: needs a number >= 0 {:?}", where, field));
  }
  return j[field].get<std::uint64_t>();
}

// The items of an optional array field (none when absent).
Result<std::vector<json>> Items(const json& doc, const char* field) {
  if (!doc.contains(field)) return std::vector<json>{};
  if (!doc[field].is_array()) {
    return base::InvalidArgument(fmt::format("{:?} must be an array", field));
  }
  return doc[field].get<std::vector<json>>();
}

Status AddPreconditions(const json& doc, client::Transaction& txn) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto items, Items(doc, "preconditions"));
  for (const json& p : items) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::string table, String(p, "table", "a precondition"));
    LOCKSTEP_ASSIGN_OR_RETURN(std::string key, String(p, "key", "a precondition"));
    if (p.value("absent", false)) {
      txn.RequireAbsent(table, key);
    } else if (p.value("exists", false)) {
      txn.RequireExists(table, key);
    } else if (p.contains("version")) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t v, Number(p, "version", "a precondition"));
      txn.RequireVersion(table, key, Lsn(v));
    } else {
      return base::InvalidArgument(
          "a precondition needs one of \"absent\": true, \"exists\": true, \"version\": N");
    }
  }
  return Status::Ok();
}

Status AddWrites(const json& doc, client::Transaction& txn) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto puts, Items(doc, "puts"));
  for (const json& p : puts) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::string table, String(p, "table", "a put"));
    LOCKSTEP_ASSIGN_OR_RETURN(std::string key, String(p, "key", "a put"));
    LOCKSTEP_ASSIGN_OR_RETURN(std::string value, String(p, "value", "a put"));
    txn.Put(table, key, value);
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto deletes, Items(doc, "deletes"));
  for (const json& d : deletes) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::string table, String(d, "table", "a delete"));
    LOCKSTEP_ASSIGN_OR_RETURN(std::string key, String(d, "key", "a delete"));
    txn.Delete(table, key);
  }
  return Status::Ok();
}

Status AddEvents(const json& doc, client::Transaction& txn) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto events, Items(doc, "events"));
  for (const json& e : events) {
    client::EventAppend event;
    LOCKSTEP_ASSIGN_OR_RETURN(event.topic, String(e, "topic", "an event"));
    LOCKSTEP_ASSIGN_OR_RETURN(event.payload, String(e, "payload", "an event"));
    if (e.contains("key")) {
      LOCKSTEP_ASSIGN_OR_RETURN(event.key, String(e, "key", "an event"));
    }
    if (e.contains("type")) {
      LOCKSTEP_ASSIGN_OR_RETURN(event.type, String(e, "type", "an event"));
    }
    if (e.contains("partition")) {
      LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t p, Number(e, "partition", "an event"));
      event.partition = PartitionId(static_cast<std::uint32_t>(p));
    }
    if (e.contains("headers")) {
      if (!e["headers"].is_object()) return base::InvalidArgument("\"headers\" must be an object");
      for (const auto& [name, value] : e["headers"].items()) {
        if (!value.is_string()) return base::InvalidArgument("header values must be strings");
        event.headers.emplace_back(name, value.get<std::string>());
      }
    }
    txn.Append(std::move(event));
  }
  return Status::Ok();
}

Status AddOffsets(const json& doc, client::Transaction& txn) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto offsets, Items(doc, "offsets"));
  for (const json& o : offsets) {
    client::OffsetCommit c;
    LOCKSTEP_ASSIGN_OR_RETURN(c.group, String(o, "group", "an offset commit"));
    LOCKSTEP_ASSIGN_OR_RETURN(c.topic, String(o, "topic", "an offset commit"));
    LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t partition, Number(o, "partition", "an offset commit"));
    LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t offset, Number(o, "offset", "an offset commit"));
    c.partition = PartitionId(static_cast<std::uint32_t>(partition));
    c.offset = Offset(offset);
    if (o.contains("generation")) {
      LOCKSTEP_ASSIGN_OR_RETURN(c.generation, Number(o, "generation", "an offset commit"));
    }
    txn.CommitOffset(std::move(c));
  }
  return Status::Ok();
}

// The transaction document (docs/cli.md): every field optional, unknown fields refused.
Result<client::Transaction> ParseTransaction(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return base::InvalidArgument("the transaction is not a JSON object");
  }
  for (const auto& [field, value] : doc.items()) {
    static const std::set<std::string> kKnown = {"preconditions", "puts",    "deletes",
                                                 "events",        "offsets", "idempotency_key"};
    if (!kKnown.contains(field)) {
      return base::InvalidArgument(fmt::format("unknown field {:?} in the transaction", field));
    }
  }
  client::Transaction txn;
  LOCKSTEP_RETURN_IF_ERROR(AddPreconditions(doc, txn));
  LOCKSTEP_RETURN_IF_ERROR(AddWrites(doc, txn));
  LOCKSTEP_RETURN_IF_ERROR(AddEvents(doc, txn));
  LOCKSTEP_RETURN_IF_ERROR(AddOffsets(doc, txn));
  if (doc.contains("idempotency_key")) {
    LOCKSTEP_ASSIGN_OR_RETURN(std::string key, String(doc, "idempotency_key", "the transaction"));
    txn.IdempotencyKey(key);
  }
  return txn;
}

int Txn(const Context& ctx, const std::string& file) {
  const bool from_stdin = file.empty() || file == "-";
  std::FILE* in = from_stdin ? stdin : std::fopen(file.c_str(), "rb");
  if (in == nullptr) return UsageError(fmt::format("cannot read {:?}", file));
  std::string text;
  char buffer[64 * 1024];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, in)) > 0;) text.append(buffer, n);
  if (!from_stdin) std::fclose(in);
  auto txn = ParseTransaction(text);
  if (!txn.ok()) return Fail(txn.status());
  auto client = ctx.Connect();
  if (!client.ok()) return Fail(client.status());
  auto result = (*client)->Commit(std::move(*txn));
  if (!result.ok()) return Fail(result.status());
  if (ctx.format == Format::kJson) {
    json j{{"lsn", result->lsn.value()}, {"events", json::array()}};
    for (const auto& e : result->events) {
      j["events"].push_back(
          {{"topic", e.topic}, {"partition", e.partition.value()}, {"offset", e.offset.value()}});
    }
    PrintJson(j);
    return kExitOk;
  }
  std::printf("committed at LSN %llu\n", static_cast<unsigned long long>(result->lsn.value()));
  if (!result->events.empty()) {
    TextTable t({"TOPIC", "PARTITION", "OFFSET"});
    for (const auto& e : result->events) {
      t.Add({e.topic, std::to_string(e.partition.value()), std::to_string(e.offset.value())});
    }
    t.Print();
  }
  std::fflush(stdout);
  return kExitOk;
}

// ---- changes --------------------------------------------------------------------------------

void PrintTransaction(const Context& ctx, const client::ChangedTransaction& t) {
  if (ctx.format == Format::kJson) {
    nlohmann::ordered_json j{{"lsn", t.lsn.value()}, {"commit_ms", t.commit_ms}};
    j["changes"] = nlohmann::ordered_json::array();
    for (const auto& c : t.changes) {
      nlohmann::ordered_json change{{"table", c.table}};
      PutBytes(change, "key", c.key);
      if (c.before) {
        PutBytes(change, "before", *c.before);
      } else {
        change["before"] = nullptr;
      }
      if (c.after) {
        PutBytes(change, "after", *c.after);
      } else {
        change["after"] = nullptr;
      }
      j["changes"].push_back(change);
    }
    j["events"] = nlohmann::ordered_json::array();
    for (const auto& e : t.events) {
      nlohmann::ordered_json event{
          {"topic", e.topic}, {"partition", e.partition.value()}, {"offset", e.offset.value()}};
      auto decoded = base::DecodeEvent(e.record);
      if (decoded.ok()) {
        const auto payload = decoded->payload();
        PutBytes(event, "payload",
                 std::string(reinterpret_cast<const char*>(payload.data()), payload.size()));
        event["type"] = std::string(decoded->type());
      } else {
        event["error"] = decoded.status().ToString();
      }
      j["events"].push_back(event);
    }
    PrintJson(j);
    return;
  }
  std::printf("LSN %llu\n", static_cast<unsigned long long>(t.lsn.value()));
  for (const auto& c : t.changes) {
    std::printf("  %s %s: %s -> %s\n", c.table.c_str(), Printable(c.key).c_str(),
                c.before ? Printable(*c.before).c_str() : "(none)",
                c.after ? Printable(*c.after).c_str() : "(deleted)");
  }
  for (const auto& e : t.events) {
    std::printf("  event %s/%u@%llu\n", e.topic.c_str(), e.partition.value(),
                static_cast<unsigned long long>(e.offset.value()));
  }
  std::fflush(stdout);
}

int Changes(const Context& ctx, std::uint64_t from, bool follow) {
  auto client = ctx.Connect();
  if (!client.ok()) return Fail(client.status());
  // Without --follow: up to the visible LSN as of the start.
  auto stats = (*client)->Stats();
  if (!stats.ok()) return Fail(stats.status());
  const Lsn end = stats->visible_lsn;
  // By default from the oldest transaction whose before-images the server still keeps.
  Lsn next(from != 0 ? from : std::max<std::uint64_t>(1, stats->oldest_readable_lsn.value() + 1));
  for (;;) {
    if (!follow && next > end) return kExitOk;
    auto feed = (*client)->Changes(next);
    if (!feed.ok()) return Fail(feed.status());
    for (const auto& t : feed->transactions) {
      if (!follow && t.lsn > end) return kExitOk;
      PrintTransaction(ctx, t);
    }
    const bool moved = feed->next_lsn > next;
    next = feed->next_lsn;
    // The change feed has no long-poll: a follower asks again after a short pause.
    if (!moved && follow) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (!moved && !follow) return kExitOk;
  }
}

}  // namespace

void AddTxnCommands(CLI::App& app, Context& ctx, Run* run) {
  static std::string file;
  auto* t = app.add_subcommand(
      "txn",
      "commit a transaction read as JSON from stdin (or --file): preconditions, puts, "
      "deletes, events, offset commits; prints the LSN and event offsets, or the conflict");
  t->add_option("--file", file, "read the transaction from this file instead of stdin");
  t->callback([&ctx, run] { *run = [&ctx] { return Txn(ctx, file); }; });

  static std::uint64_t from = 0;
  static bool follow = false;
  auto* c = app.add_subcommand(
      "changes", "the change feed: per transaction its row changes (before, after) and events");
  c->add_option("--from", from, "first LSN (default: the oldest the server can show)");
  c->add_flag("--follow", follow, "keep waiting for new transactions");
  c->callback([&ctx, run] { *run = [&ctx] { return Changes(ctx, from, follow); }; });
}

}  // namespace lockstep::cli

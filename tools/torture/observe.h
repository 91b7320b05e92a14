#pragma once
// Reads what a recovered Lockstep holds into an Observed (bank.h): the accounts table, every
// partition of every topic from its start offset, the transform group. The same code reads the
// engine in-process (simulation mode) and a lockstepd through the client (process mode): both
// APIs have the same shape.
#include <algorithm>
#include <string>
#include <vector>

#include "base/event_record.h"
#include "tools/torture/bank.h"

namespace lockstep::torture {

namespace observe_internal {
template <typename T>
Result<T> AsResult(Result<T> r) {
  return r;
}
template <typename T>
Result<T> AsResult(T v) {
  return v;
}
}  // namespace observe_internal

// Everything but o.lsn, which the caller sets (the engine's or the server's visible LSN).
template <typename Api, typename ScanOptions, typename FetchOptions>
Status ReadObserved(Api& api, Observed& o) {
  o = Observed();
  LOCKSTEP_ASSIGN_OR_RETURN(auto rows, api.Scan(kAccountsTable, ScanOptions{}));
  for (const auto& row : rows) {
    o.accounts[row.key] = {row.value, row.version.value()};
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto topics, observe_internal::AsResult(api.ListTopics()));
  for (const auto& topic : topics) {
    for (std::uint32_t p = 0; p < topic.partitions; ++p) {
      ObservedPartition& part = o.partitions[{topic.name, p}];
      part.start = topic.start_offsets[p].value();
      base::Offset next = topic.start_offsets[p];
      while (next < topic.end_offsets[p]) {
        LOCKSTEP_ASSIGN_OR_RETURN(
            auto fetched, api.Fetch(topic.name, base::PartitionId(p), next, FetchOptions{}));
        if (fetched.events == 0) return base::Internal("a fetch below the end returned nothing");
        base::Bytes rest(fetched.records.data(), fetched.records.size());
        while (!rest.empty()) {
          LOCKSTEP_ASSIGN_OR_RETURN(base::EventView e, base::DecodeEvent(rest));
          const base::Bytes payload = e.payload();
          part.events.push_back(
              {e.offset().value(), e.lsn().value(), std::string(e.type()),
               std::string(reinterpret_cast<const char*>(payload.data()), payload.size())});
          rest = rest.subspan(e.record().size());
        }
        next = fetched.next_offset;
      }
    }
  }
  auto group = api.DescribeGroup(kTransformGroup);
  if (group.ok()) {
    o.generation = group->generation;
    for (const auto& g : group->offsets) {
      o.group_offsets[{g.topic, g.partition.value()}] = g.offset.value();
    }
  } else if (group.status().code() != base::StatusCode::kNotFound) {
    return group.status();
  }
  return Status::Ok();
}

// Records an acknowledged commit of `txn` in the ledger, acknowledged at `now_ms` on the
// driver's clock: its LSN, its events (but audit padding), its offset commits and the accounts
// it wrote.
template <typename Txn, typename CommitResult>
void RecordAcknowledged(Ledger& ledger, const Txn& txn, const CommitResult& got,
                        std::int64_t now_ms) {
  const std::uint64_t lsn = got.lsn.value();
  ledger.max_lsn = std::max(ledger.max_lsn, lsn);
  ++ledger.transactions;
  for (std::size_t i = 0; i < got.events.size(); ++i) {
    const auto& e = got.events[i];
    if (e.topic == kAuditTopic) continue;  // padding, not worth the memory
    ledger.events.push_back(
        {{e.topic, e.partition.value()}, e.offset.value(), lsn, txn.events()[i].payload, now_ms});
  }
  for (const auto& o : txn.offsets()) {
    std::uint64_t& acked = ledger.group_offsets[{o.topic, o.partition.value()}];
    acked = std::max(acked, o.offset.value());
  }
  for (const auto& w : txn.writes()) {
    if (w.table != kAccountsTable) continue;
    if (auto account = AccountIndex(w.key)) {
      std::uint64_t& version = ledger.account_versions[*account];
      version = std::max(version, lsn);
    }
  }
}

}  // namespace lockstep::torture

// The torture workload's records and the invariants: see bank.h.
#include "tools/torture/bank.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>

namespace lockstep::torture {
namespace {

Status Broken(int invariant, std::string_view what, const std::string& detail) {
  return base::DataLoss(fmt::format("invariant {} ({}): {}", invariant, what, detail));
}

constexpr std::string_view kAcknowledged = "every acknowledged transaction is present, whole";
constexpr std::string_view kWhole = "no transaction is partly present";
constexpr std::string_view kOrder = "offsets dense and in LSN order, nothing reused";
constexpr std::string_view kOnce = "group offsets never move back, each input output once";

// Reads "name=<integer>" at the front of `text`, then skips one separator.
template <typename T>
bool ReadField(std::string_view& text, std::string_view name, T* value) {
  if (text.substr(0, name.size()) != name || text.size() <= name.size() ||
      text[name.size()] != '=') {
    return false;
  }
  text.remove_prefix(name.size() + 1);
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  if (ec != std::errc()) return false;
  text.remove_prefix(static_cast<std::size_t>(end - text.data()));
  if (!text.empty()) text.remove_prefix(1);
  return true;
}

std::string Where(const TopicPartition& tp) { return fmt::format("{}/{}", tp.first, tp.second); }

}  // namespace

std::string AccountKey(int account) { return fmt::format("acct-{:02}", account); }

std::optional<int> AccountIndex(std::string_view key) {
  int account = 0;
  if (key.substr(0, 5) != "acct-") return std::nullopt;
  auto [end, ec] = std::from_chars(key.data() + 5, key.data() + key.size(), account);
  if (ec != std::errc() || end != key.data() + key.size() || account < 0 || account >= kAccounts) {
    return std::nullopt;
  }
  return account;
}

std::string EncodeAccount(const Account& a) {
  return fmt::format("balance={};last={}", a.balance, a.last_transfer);
}

Result<Account> DecodeAccount(std::string_view value) {
  Account a;
  std::string_view rest = value;
  if (!ReadField(rest, "balance", &a.balance) || !ReadField(rest, "last", &a.last_transfer) ||
      !rest.empty()) {
    return base::DataLoss(fmt::format("an account row reads {:?}", value));
  }
  return a;
}

std::string EncodeTransfer(const Transfer& t) {
  return fmt::format("id={} from={} to={} amount={} from_balance={} to_balance={}", t.id, t.from,
                     t.to, t.amount, t.from_balance, t.to_balance);
}

Result<Transfer> DecodeTransfer(std::string_view payload) {
  Transfer t;
  std::string_view rest = payload;
  if (!ReadField(rest, "id", &t.id) || !ReadField(rest, "from", &t.from) ||
      !ReadField(rest, "to", &t.to) || !ReadField(rest, "amount", &t.amount) ||
      !ReadField(rest, "from_balance", &t.from_balance) ||
      !ReadField(rest, "to_balance", &t.to_balance) || !rest.empty() || t.from < 0 ||
      t.from >= kAccounts || t.to < 0 || t.to >= kAccounts) {
    return base::DataLoss(fmt::format("a TransferCompleted event reads {:?}", payload));
  }
  return t;
}

std::string DoubledPayload(std::uint32_t partition, std::uint64_t offset,
                           std::string_view payload) {
  return fmt::format("{}/{}/{}:{}{}", kOrdersTopic, partition, offset, payload, payload);
}

std::string FirstDifference(const Observed& a, const Observed& b) {
  if (a.lsn != b.lsn) return fmt::format("LSN {} then {}", a.lsn, b.lsn);
  if (a.accounts != b.accounts) return "the accounts table";
  for (const auto& [tp, p] : a.partitions) {
    auto it = b.partitions.find(tp);
    if (it == b.partitions.end()) return "partition " + Where(tp) + " is gone";
    if (!(it->second == p)) {
      return fmt::format("partition {}: start {} with {} events, then start {} with {}", Where(tp),
                         p.start, p.events.size(), it->second.start, it->second.events.size());
    }
  }
  if (a.partitions.size() != b.partitions.size()) return "the set of partitions";
  if (a.generation != b.generation) {
    return fmt::format("group generation {} then {}", a.generation, b.generation);
  }
  if (a.group_offsets != b.group_offsets) return "the group's committed offsets";
  return "nothing";
}

Status Checker::Check(const Observed& now, const Ledger& ledger, std::int64_t now_ms) {
  LOCKSTEP_RETURN_IF_ERROR(CheckAcknowledged(now, ledger, now_ms));
  LOCKSTEP_RETURN_IF_ERROR(CheckWhole(now));
  LOCKSTEP_RETURN_IF_ERROR(CheckOrder(now));
  LOCKSTEP_RETURN_IF_ERROR(CheckOnce(now, ledger));
  previous_ = now;
  return Status::Ok();
}

// Invariant 1: what was acknowledged (or read) is there, and so is what an earlier recovery
// showed; retention removed no acknowledged event younger than its topic's retention.
Status Checker::CheckAcknowledged(const Observed& now, const Ledger& ledger,
                                  std::int64_t now_ms) const {
  if (now.lsn < ledger.max_lsn) {
    return Broken(
        1, kAcknowledged,
        fmt::format("recovered to LSN {}, but LSN {} was acknowledged", now.lsn, ledger.max_lsn));
  }
  if (now.lsn < ledger.read_lsn) {
    return Broken(1, kAcknowledged,
                  fmt::format("recovered to LSN {}, but a read returned a row of LSN {}", now.lsn,
                              ledger.read_lsn));
  }
  if (previous_ && now.lsn < previous_->lsn) {
    return Broken(1, kAcknowledged,
                  fmt::format("recovered to LSN {}, but an earlier recovery reached LSN {}",
                              now.lsn, previous_->lsn));
  }
  for (const AckedEvent& e : ledger.events) {
    auto it = now.partitions.find(e.where);
    if (it == now.partitions.end()) {
      return Broken(1, kAcknowledged, "partition " + Where(e.where) + " is missing");
    }
    const ObservedPartition& p = it->second;
    if (e.offset < p.start) {
      auto retention = retention_ms_.find(e.where.first);
      if (retention == retention_ms_.end() || retention->second == 0 ||
          e.acked_ms - slack_ms_ >= now_ms - retention->second) {
        return Broken(1, kAcknowledged,
                      fmt::format("{} offset {} (LSN {}, acknowledged at {} ms) is below the "
                                  "start offset {} at {} ms, within its retention",
                                  Where(e.where), e.offset, e.lsn, e.acked_ms, p.start, now_ms));
      }
      continue;  // retention removed it, as it may
    }
    const std::uint64_t index = e.offset - p.start;
    if (index >= p.events.size()) {
      return Broken(1, kAcknowledged,
                    fmt::format("{} offset {} (LSN {}) was acknowledged; the partition ends at {}",
                                Where(e.where), e.offset, e.lsn, p.start + p.events.size()));
    }
    const ObservedEvent& got = p.events[index];
    if (got.lsn != e.lsn || got.payload != e.payload) {
      return Broken(1, kAcknowledged,
                    fmt::format("{} offset {}: acknowledged LSN {} {:?}, found LSN {} {:?}",
                                Where(e.where), e.offset, e.lsn, e.payload, got.lsn, got.payload));
    }
  }
  for (const auto& [account, version] : ledger.account_versions) {
    auto it = now.accounts.find(AccountKey(account));
    if (it == now.accounts.end() || it->second.version < version) {
      return Broken(1, kAcknowledged,
                    fmt::format("{} was written at LSN {} (acknowledged); it now has version {}",
                                AccountKey(account), version,
                                it == now.accounts.end() ? 0 : it->second.version));
    }
  }
  return Status::Ok();
}

// Invariant 2: a transfer's balance updates and its event are both there or both absent, the
// money is constant, and every TransferCompleted matches the balances its transaction wrote:
// each event's balances follow from the one before it that touched the same account (retention
// may have removed the oldest; while nothing is removed, from the opening balances), and each
// account's row equals the newest event that touched it, at that event's LSN.
Status Checker::CheckWhole(const Observed& now) const {
  if (now.accounts.size() != static_cast<std::size_t>(kAccounts)) {
    return Broken(2, kWhole,
                  fmt::format("{} accounts, expected {}", now.accounts.size(), kAccounts));
  }
  const ObservedPartition& transfers = now.partitions.at({kTransfersTopic, 0});
  std::vector<std::optional<Account>> known(kAccounts);
  if (transfers.start == 0) known.assign(kAccounts, Account{kOpeningBalance, 0});
  std::vector<std::uint64_t> written_at(kAccounts, 0);  // LSN of the newest transfer per account
  for (const ObservedEvent& e : transfers.events) {
    LOCKSTEP_ASSIGN_OR_RETURN(Transfer t, DecodeTransfer(e.payload));
    const auto from = static_cast<std::size_t>(t.from);
    const auto to = static_cast<std::size_t>(t.to);
    if ((known[from] && known[from]->balance - t.amount != t.from_balance) ||
        (known[to] && known[to]->balance + t.amount != t.to_balance)) {
      return Broken(2, kWhole,
                    fmt::format("transfer {} (LSN {}) of {} says balances {} and {}; the events "
                                "before it left {} and {}",
                                t.id, e.lsn, t.amount, t.from_balance, t.to_balance,
                                known[from] ? known[from]->balance : -1,
                                known[to] ? known[to]->balance : -1));
    }
    known[from] = Account{t.from_balance, t.id};
    known[to] = Account{t.to_balance, t.id};
    written_at[from] = written_at[to] = e.lsn;
  }
  std::int64_t total = 0;
  for (int a = 0; a < kAccounts; ++a) {
    const ObservedRow& row = now.accounts.at(AccountKey(a));
    LOCKSTEP_ASSIGN_OR_RETURN(Account account, DecodeAccount(row.value));
    total += account.balance;
    const auto& want = known[static_cast<std::size_t>(a)];
    if (want && account != *want) {
      return Broken(
          2, kWhole,
          fmt::format("{} holds {:?} (version {}); its TransferCompleted events say "
                      "balance={};last={}",
                      AccountKey(a), row.value, row.version, want->balance, want->last_transfer));
    }
    const std::uint64_t at = written_at[static_cast<std::size_t>(a)];
    if (at != 0 && row.version != at) {
      return Broken(2, kWhole,
                    fmt::format("{} has version {}, but the transfer that wrote it last "
                                "committed at LSN {}",
                                AccountKey(a), row.version, at));
    }
  }
  if (total != kAccounts * kOpeningBalance) {
    return Broken(
        2, kWhole,
        fmt::format("the accounts hold {} in all, not {}", total, kAccounts * kOpeningBalance));
  }
  return Status::Ok();
}

// Invariant 3: per partition, offsets are dense and in LSN order, no LSN is past the recovered
// one, and an offset once seen holds the same event for good.
Status Checker::CheckOrder(const Observed& now) const {
  for (const auto& [tp, p] : now.partitions) {
    std::uint64_t last_lsn = 0;
    for (std::size_t i = 0; i < p.events.size(); ++i) {
      const ObservedEvent& e = p.events[i];
      if (e.offset != p.start + i) {
        return Broken(
            3, kOrder,
            fmt::format("{}: offset {} where {} was expected", Where(tp), e.offset, p.start + i));
      }
      if (e.lsn < last_lsn || e.lsn > now.lsn || e.lsn == 0) {
        return Broken(3, kOrder,
                      fmt::format("{} offset {} has LSN {} (the one before: {}, recovered: {})",
                                  Where(tp), e.offset, e.lsn, last_lsn, now.lsn));
      }
      last_lsn = e.lsn;
    }
    if (!previous_) continue;
    auto before = previous_->partitions.find(tp);
    if (before == previous_->partitions.end()) continue;
    const ObservedPartition& b = before->second;
    if (p.start < b.start) {
      return Broken(
          3, kOrder,
          fmt::format("{}: the start offset went back from {} to {}", Where(tp), b.start, p.start));
    }
    for (const ObservedEvent& e : b.events) {
      if (e.offset < p.start) continue;
      const std::uint64_t index = e.offset - p.start;
      if (index >= p.events.size()) {
        return Broken(1, kAcknowledged,
                      fmt::format("{} offset {} was there at the last recovery, now it is not",
                                  Where(tp), e.offset));
      }
      if (!(p.events[index] == e)) {
        return Broken(
            3, kOrder,
            fmt::format("{} offset {} held LSN {} {:?}, now LSN {} {:?}", Where(tp), e.offset,
                        e.lsn, e.payload, p.events[index].lsn, p.events[index].payload));
      }
    }
  }
  return Status::Ok();
}

// Invariant 4: committed offsets never go back (nor below an acknowledged commit), the
// transform's outputs are exactly one per input below its committed offset, and no retried
// transfer or order committed twice.
Status Checker::CheckOnce(const Observed& now, const Ledger& ledger) const {
  for (const auto& [tp, offset] : ledger.group_offsets) {
    auto it = now.group_offsets.find(tp);
    const std::uint64_t got = it == now.group_offsets.end() ? 0 : it->second;
    if (got < offset) {
      return Broken(
          4, kOnce,
          fmt::format("{}: committed offset {}, but {} was acknowledged", Where(tp), got, offset));
    }
  }
  if (previous_) {
    for (const auto& [tp, offset] : previous_->group_offsets) {
      auto it = now.group_offsets.find(tp);
      const std::uint64_t got = it == now.group_offsets.end() ? 0 : it->second;
      if (got < offset) {
        return Broken(
            4, kOnce,
            fmt::format("{}: committed offset went back from {} to {}", Where(tp), offset, got));
      }
    }
    if (now.generation < previous_->generation) {
      return Broken(4, kOnce,
                    fmt::format("the group generation went back from {} to {}",
                                previous_->generation, now.generation));
    }
  }
  // The transform writes doubled/P offset K for orders/P offset K (one output per input, in
  // order), so outputs end exactly at the committed offset.
  for (std::uint32_t p = 0; p < kOrdersPartitions; ++p) {
    const TopicPartition input{kOrdersTopic, p};
    const TopicPartition output{kDoubledTopic, p};
    auto committed_it = now.group_offsets.find(input);
    const std::uint64_t committed =
        committed_it == now.group_offsets.end() ? 0 : committed_it->second;
    const ObservedPartition& in = now.partitions.at(input);
    const ObservedPartition& out = now.partitions.at(output);
    if (committed > in.start + in.events.size()) {
      return Broken(4, kOnce,
                    fmt::format("{}: committed offset {} is past the end {}", Where(input),
                                committed, in.start + in.events.size()));
    }
    if (out.start + out.events.size() != committed) {
      return Broken(4, kOnce,
                    fmt::format("{} ends at {}, but {} inputs are committed", Where(output),
                                out.start + out.events.size(), committed));
    }
    for (const ObservedEvent& o : out.events) {
      const std::string prefix = fmt::format("{}/{}/{}:", kOrdersTopic, p, o.offset);
      std::string want;
      if (o.offset >= in.start) {
        want = DoubledPayload(p, o.offset, in.events[o.offset - in.start].payload);
      }
      if (o.payload.rfind(prefix, 0) != 0 || (!want.empty() && o.payload != want)) {
        return Broken(4, kOnce,
                      fmt::format("{} offset {} reads {:?}, expected the output of "
                                  "{} offset {}",
                                  Where(output), o.offset, o.payload, Where(input), o.offset));
      }
    }
  }
  std::set<std::string> seen;
  for (const auto& [tp, p] : now.partitions) {
    if (tp.first != kTransfersTopic && tp.first != kOrdersTopic) continue;
    for (const ObservedEvent& e : p.events) {
      const std::string id = e.payload.substr(0, e.payload.find(' '));  // "id=N" or "order-N"
      if (!seen.insert(tp.first + ":" + id).second) {
        return Broken(
            4, kOnce,
            fmt::format("{} {} was committed twice (offset {})", Where(tp), id, e.offset));
      }
    }
  }
  return Status::Ok();
}

}  // namespace lockstep::torture

#pragma once
// The torture workload (docs/testing.md) and the invariants checked after every recovery.
//
// The workload is a small bank and an order pipeline:
//   * table `accounts`: kAccounts rows "acct-NN" = "balance=B;last=T" (T: the id of the transfer
//     that wrote it last, 0 for the opening deposit);
//   * a transfer moves money between two accounts with version preconditions on both and appends
//     one `TransferCompleted` event to `transfers` (one partition, so in LSN order) saying the
//     balances it wrote, under the idempotency key "transfer-ID";
//   * plain appends put `OrderPlaced` events on `orders` (idempotency key "order-ID");
//   * a consume-transform-produce consumer (group `transform`) reads `orders` and writes one
//     `OrderDoubled` event per input to `doubled`, committing its offsets in the same transaction;
//   * `audit` events, padded, on a topic with a short retention, so checkpoints let retention
//     delete log segments.
//
// The driver records every acknowledged result in a Ledger (its own memory); after each
// recovery it reads what the engine holds into an Observed and the Checker states the first
// broken invariant, numbered as in issue 6 / docs/testing.md.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace lockstep::torture {

using base::Result;
using base::Status;

inline constexpr int kAccounts = 8;
inline constexpr std::int64_t kOpeningBalance = 1000;
inline constexpr const char* kAccountsTable = "accounts";
inline constexpr const char* kTransfersTopic = "transfers";
inline constexpr const char* kOrdersTopic = "orders";
inline constexpr const char* kDoubledTopic = "doubled";
inline constexpr const char* kAuditTopic = "audit";
inline constexpr const char* kTransformGroup = "transform";
inline constexpr std::uint32_t kOrdersPartitions = 2;  // `doubled` has as many
// Retention in the driver's simulated milliseconds: `audit` expires fast; the others slowly
// enough that the transform never falls behind the start of `orders`.
inline constexpr std::int64_t kAuditRetentionMs = 2'000;
inline constexpr std::int64_t kRetentionMs = 30'000;

std::string AccountKey(int account);
std::optional<int> AccountIndex(std::string_view key);  // of AccountKey's result

struct Account {
  std::int64_t balance = 0;
  std::uint64_t last_transfer = 0;
  bool operator==(const Account&) const = default;
};
std::string EncodeAccount(const Account& account);
Result<Account> DecodeAccount(std::string_view value);

struct Transfer {
  std::uint64_t id = 0;
  int from = 0;
  int to = 0;
  std::int64_t amount = 0;
  std::int64_t from_balance = 0;  // after the transfer
  std::int64_t to_balance = 0;
};
std::string EncodeTransfer(const Transfer& transfer);
Result<Transfer> DecodeTransfer(std::string_view payload);

// The transform's output for input `payload` at orders/`partition`/`offset`.
std::string DoubledPayload(std::uint32_t partition, std::uint64_t offset, std::string_view payload);

using TopicPartition = std::pair<std::string, std::uint32_t>;

struct AckedEvent {
  TopicPartition where;
  std::uint64_t offset = 0;
  std::uint64_t lsn = 0;
  std::string payload;
  std::int64_t acked_ms = 0;  // the driver's clock when the commit was acknowledged
};

// Everything the clients saw acknowledged (or read), since the data directory was created.
struct Ledger {
  std::uint64_t max_lsn = 0;       // the highest acknowledged LSN
  std::uint64_t read_lsn = 0;      // the highest row version any read returned
  std::uint64_t transactions = 0;  // acknowledged commits
  std::vector<AckedEvent> events;
  std::map<int, std::uint64_t> account_versions;          // highest acknowledged write per account
  std::map<TopicPartition, std::uint64_t> group_offsets;  // highest acknowledged commit
};

struct ObservedEvent {
  std::uint64_t offset = 0;
  std::uint64_t lsn = 0;
  std::string type;
  std::string payload;
  bool operator==(const ObservedEvent&) const = default;
};

struct ObservedPartition {
  std::uint64_t start = 0;            // the earliest offset retention kept
  std::vector<ObservedEvent> events;  // from start, as read
  bool operator==(const ObservedPartition&) const = default;
};

struct ObservedRow {
  std::string value;
  std::uint64_t version = 0;
  bool operator==(const ObservedRow&) const = default;
};

// What a recovered engine holds, as its reads show it.
struct Observed {
  std::uint64_t lsn = 0;
  std::map<std::string, ObservedRow> accounts;
  std::map<TopicPartition, ObservedPartition> partitions;
  std::uint64_t generation = 0;
  std::map<TopicPartition, std::uint64_t> group_offsets;
  bool operator==(const Observed&) const = default;
};

// Names the first field where two observations differ (for invariant 5's message).
std::string FirstDifference(const Observed& a, const Observed& b);

class Checker {
 public:
  // `retention_ms` per topic (absent or 0: forever). An acknowledged event younger than its
  // topic's retention by more than `slack_ms` (the driver's clock against the server's) must
  // still be there.
  Checker(std::map<std::string, std::int64_t> retention_ms, std::int64_t slack_ms)
      : retention_ms_(std::move(retention_ms)), slack_ms_(slack_ms) {}

  // Invariants 1 to 4 on `now` against the ledger and the previous observation, at the driver's
  // time `now_ms`. Returns kDataLoss "invariant N (...): ..." for the first one broken. On
  // success `now` becomes the previous observation.
  Status Check(const Observed& now, const Ledger& ledger, std::int64_t now_ms);

 private:
  Status CheckAcknowledged(const Observed& now, const Ledger& ledger, std::int64_t now_ms) const;
  Status CheckWhole(const Observed& now) const;
  Status CheckOrder(const Observed& now) const;
  Status CheckOnce(const Observed& now, const Ledger& ledger) const;

  std::map<std::string, std::int64_t> retention_ms_;
  std::int64_t slack_ms_;
  std::optional<Observed> previous_;
};

}  // namespace lockstep::torture

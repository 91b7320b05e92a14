// Proves the engine's commit path end to end over the log: a commit is readable once its future
// completes (and not before it is durable), preconditions reject conflicting transactions whole,
// events get dense offsets per partition (same key, same partition), the catalog refuses bad and
// duplicate names, everything survives a reopen by replay, concurrent transfers with version
// preconditions conserve money, and a storage error stops commits while reads go on.
#include "engine/engine.h"
#include "tests/engine/engine_fixture.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>

#include "engine/table.h"
#include "storage/fault_io.h"
#include "tests/testing/bytes.h"
#include "tests/testing/temp_dir.h"

namespace lockstep::engine {
namespace {

using base::StatusCode;
using testing::AsBytes;

class EngineTest : public EngineFixture {
 protected:
};

TEST_F(EngineTest, ACommitIsReadableOnceDurable) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("accounts").ok());
  auto r = Commit(*e, Transaction().Put("accounts", "alice", "100").Put("accounts", "bob", "50"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(e->visible_lsn(), r->lsn);
  auto alice = e->Get("accounts", "alice");
  ASSERT_TRUE(alice.ok());
  ASSERT_TRUE(alice->has_value());
  EXPECT_EQ((*alice)->value, "100");
  EXPECT_EQ((*alice)->version, r->lsn);
  auto rows = e->Scan("accounts", {});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1].key, "bob");
  ASSERT_TRUE(Commit(*e, Transaction().Delete("accounts", "bob")).ok());
  EXPECT_FALSE(e->Get("accounts", "bob")->has_value());
}

TEST_F(EngineTest, PreconditionsRejectTheWholeTransaction) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  auto first = Commit(*e, Transaction().RequireAbsent("t", "k").Put("t", "k", "v1"));
  ASSERT_TRUE(first.ok());
  // Absent fails now, and the other write of that transaction does not happen.
  auto again = Commit(*e, Transaction().RequireAbsent("t", "k").Put("t", "other", "x"));
  ASSERT_EQ(again.status().code(), StatusCode::kConflict);
  EXPECT_NE(again.status().message().find("\"k\""), std::string::npos) << again.status().ToString();
  EXPECT_NE(again.status().message().find("expected absent"), std::string::npos);
  EXPECT_FALSE(e->Get("t", "other")->has_value());
  // Version: only the current one passes.
  auto stale = Commit(
      *e, Transaction().RequireVersion("t", "k", Lsn(first->lsn.value() - 1)).Put("t", "k", "v2"));
  EXPECT_EQ(stale.status().code(), StatusCode::kConflict);
  auto current = Commit(*e, Transaction().RequireVersion("t", "k", first->lsn).Put("t", "k", "v2"));
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  EXPECT_EQ((*e->Get("t", "k"))->value, "v2");
  // Exists.
  EXPECT_EQ(Commit(*e, Transaction().RequireExists("t", "nope").Put("t", "x", "1")).status().code(),
            StatusCode::kConflict);
  EXPECT_TRUE(Commit(*e, Transaction().RequireExists("t", "k").Put("t", "x", "1")).ok());
}

TEST_F(EngineTest, EventsGetDenseOffsetsPerPartition) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("transfers", 3).ok());
  std::map<std::uint32_t, std::uint64_t> next;
  std::optional<std::uint32_t> alice_partition;
  for (int i = 0; i < 30; ++i) {
    EventAppend ev;
    ev.topic = "transfers";
    ev.type = "TransferCompleted";
    ev.payload = "event " + std::to_string(i);
    if (i % 3 == 0) ev.key = "alice";
    if (i % 3 == 1) ev.partition = PartitionId(2);
    auto r = Commit(*e, Transaction().Append(ev));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->events.size(), 1u);
    const auto& pos = r->events[0];
    EXPECT_EQ(pos.offset.value(), next[pos.partition.value()]++) << "offsets must be dense";
    if (i % 3 == 1) {
      EXPECT_EQ(pos.partition, PartitionId(2));
    }
    if (i % 3 == 0) {
      if (!alice_partition) alice_partition = pos.partition.value();
      EXPECT_EQ(pos.partition.value(), *alice_partition) << "same key, same partition";
    }
  }
  auto topics = e->ListTopics();
  ASSERT_EQ(topics.size(), 1u);
  std::uint64_t total = 0;
  for (std::uint32_t p = 0; p < 3; ++p) {
    EXPECT_EQ(topics[0].end_offsets[p].value(), next[p]);
    total += next[p];
  }
  EXPECT_EQ(total, 30u);
  // Several events of one transaction in one partition take consecutive offsets.
  EventAppend a;
  a.topic = "transfers";
  a.partition = PartitionId(0);
  auto two = Commit(*e, Transaction().Append(a).Append(a));
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->events[1].offset.value(), two->events[0].offset.value() + 1);
}

// A transaction's keyless events of a topic go to one partition together, the next transaction's
// to the next partition; keyed and explicit ones keep their own. The record holds them as runs:
// fetches, a reopen's replay and a retried idempotency key all see them as committed, in order.
TEST_F(EngineTest, KeylessEventsOfATransactionStickToOnePartition) {
  auto event = [](std::string payload, std::optional<std::string> key = std::nullopt,
                  std::optional<std::uint32_t> partition = std::nullopt) {
    EventAppend ev;
    ev.topic = "orders";
    ev.payload = std::move(payload);
    ev.key = std::move(key);
    if (partition) ev.partition = PartitionId(*partition);
    return ev;
  };
  auto batch = [&](int n, const std::string& tag) {
    Transaction t;
    t.IdempotencyKey("batch-" + tag);
    for (int i = 0; i < n; ++i) {
      t.Append(event(tag + std::to_string(i)));
      if (i == 2) t.Append(event(tag + "-keyed", "alice"));
      if (i == 4) t.Append(event(tag + "-explicit", std::nullopt, 3));
    }
    return t;
  };
  std::vector<CommitResult> results;
  {
    auto e = Open();
    ASSERT_TRUE(e->CreateTopic("orders", 4).ok());
    for (const char* tag : {"a", "b", "c", "d", "e"}) {
      auto r = Commit(*e, batch(8, tag));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      results.push_back(*r);
    }
  }
  std::map<std::uint32_t, std::vector<std::string>> expected;  // per partition, offset order
  std::optional<std::uint32_t> alice;
  for (std::size_t b = 0; b < results.size(); ++b) {
    const auto& events = results[b].events;
    ASSERT_EQ(events.size(), 10u);
    const std::uint32_t keyless = events[0].partition.value();
    EXPECT_EQ(keyless, (results[0].events[0].partition.value() + b) % 4)
        << "each transaction takes the next partition";
    const std::string tag(1, static_cast<char>('a' + b));
    for (std::size_t i = 0; i < events.size(); ++i) {
      const std::uint32_t p = events[i].partition.value();
      std::string payload;
      if (i == 3) {
        payload = tag + "-keyed";
        if (!alice) alice = p;
        EXPECT_EQ(p, *alice);
      } else if (i == 6) {
        payload = tag + "-explicit";
        EXPECT_EQ(p, 3u);
      } else {
        payload = tag + std::to_string(i - (i > 3) - (i > 6));
        EXPECT_EQ(p, keyless) << "event " << i << " of transaction " << tag;
      }
      EXPECT_EQ(events[i].offset.value(), expected[p].size()) << "dense offsets";
      expected[p].push_back(payload);
    }
  }
  auto e = Open();  // replay reads the runs back
  for (const auto& [p, payloads] : expected) {
    auto fetched = e->Fetch("orders", PartitionId(p), Offset(0));
    ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
    ASSERT_EQ(fetched->events, payloads.size());
    std::size_t at = 0;
    for (std::size_t i = 0; i < payloads.size(); ++i) {
      auto ev = base::DecodeEvent(Bytes(fetched->records).subspan(at));
      ASSERT_TRUE(ev.ok()) << ev.status().ToString();
      EXPECT_EQ(ev->offset().value(), i);
      EXPECT_EQ(
          std::string(reinterpret_cast<const char*>(ev->payload().data()), ev->payload().size()),
          payloads[i]);
      at += ev->record().size();
    }
  }
  // A retried key answers the original result, event for event in the transaction's order.
  auto retried = Commit(*e, batch(8, "c"));
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  ASSERT_EQ(retried->events.size(), results[2].events.size());
  for (std::size_t i = 0; i < retried->events.size(); ++i) {
    EXPECT_EQ(retried->events[i].partition, results[2].events[i].partition) << i;
    EXPECT_EQ(retried->events[i].offset, results[2].events[i].offset) << i;
  }
}

TEST_F(EngineTest, CatalogRefusesBadAndDuplicateNames) {
  auto e = Open();
  EXPECT_TRUE(e->CreateTable("orders").ok());
  EXPECT_EQ(e->CreateTable("orders").code(), StatusCode::kAlreadyExists);
  const std::vector<std::string_view> bad_names = {"", "__catalog", "has space", "a/b",
                                                   std::string_view("x\0y", 3)};
  for (std::string_view bad : bad_names) {
    EXPECT_EQ(e->CreateTable(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(e->CreateTable(std::string(300, 'n')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->CreateTopic("t", 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->CreateTopic("t", 1'000'000).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->CreateTopic("t", 1, -5).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->DropTable("missing").code(), StatusCode::kNotFound);
  EXPECT_EQ(e->ListTables(), std::vector<std::string>{"orders"});
  EXPECT_TRUE(e->DropTable("orders").ok());
  EXPECT_TRUE(e->ListTables().empty());
  EXPECT_EQ(e->Get("orders", "k").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(e->CreateTable("orders").ok());  // the name is free again
}

TEST_F(EngineTest, BadTransactionsAreRejectedWithClearErrors) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTopic("events", 2).ok());
  EXPECT_EQ(Commit(*e, Transaction()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(*e, Transaction().Put("nope", "k", "v")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Commit(*e, Transaction().Put("t", std::string(5000, 'k'), "v")).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(*e, Transaction().Put("t", "k", std::string(2 << 20, 'v'))).status().code(),
            StatusCode::kInvalidArgument);
  EventAppend ev;
  ev.topic = "events";
  ev.partition = PartitionId(7);
  auto r = Commit(*e, Transaction().Append(ev));
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("no partition 7"), std::string::npos);
  ev.partition.reset();
  ev.type = std::string(1000, 't');
  EXPECT_EQ(Commit(*e, Transaction().Append(ev)).status().code(), StatusCode::kInvalidArgument);
  ev.type = "ok";
  ev.topic = "missing";
  EXPECT_EQ(Commit(*e, Transaction().Append(ev)).status().code(), StatusCode::kNotFound);
  // A transaction too big for one log record.
  Transaction big;
  for (int i = 0; i < 40; ++i) big.Put("t", "k" + std::to_string(i), std::string(1000, 'x'));
  EXPECT_EQ(Commit(*e, std::move(big)).status().code(), StatusCode::kInvalidArgument);
  // Too many operations, however small, and exactly the limit.
  Transaction many;
  for (int i = 0; i < 10'001; ++i) many.RequireAbsent("t", "k" + std::to_string(i));
  auto refused = Commit(*e, std::move(many));
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("10001 operations"), std::string::npos)
      << refused.status().ToString();
  Transaction limit;
  for (int i = 0; i < 10'000; ++i) limit.RequireAbsent("t", "k" + std::to_string(i));
  EXPECT_TRUE(Commit(*e, std::move(limit)).ok());
  // None of the rejected transactions wrote anything.
  EXPECT_TRUE(e->Scan("t", {})->empty());
}

// Holds the log's syncs while closed: what is appended meanwhile is not durable.
class LogSyncGate {
 public:
  explicit LogSyncGate(storage::FaultInjectingIo& io) : io_(io) {
    io_.SetObserver([this](std::uint64_t, storage::OpKind kind, const std::string& path) {
      if (kind != storage::OpKind::kSync || path.find("log") == std::string::npos) return;
      std::unique_lock lock(mu_);
      if (open_) return;
      held_.fetch_add(1);
      cv_.wait(lock, [&] { return open_; });
    });
  }
  ~LogSyncGate() {
    Release();
    io_.SetObserver({});
  }
  void Hold() {
    std::lock_guard lock(mu_);
    open_ = false;
    held_ = 0;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // True once a sync is being held (waits up to 5 s).
  bool WaitHeld() const {
    for (int i = 0; i < 5000 && held_.load() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return held_.load() > 0;
  }

 private:
  storage::FaultInjectingIo& io_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  std::atomic<int> held_{0};
};

void WaitFor(const std::atomic<int>& n, int want) {
  for (int i = 0; i < 2000 && n.load() < want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Guarantee 2 for the catalog: "no such table" after a drop, "exists" or "no such partition"
// after a creation, is not said before the drop or creation it saw is durable (a crash could
// still undo it).
TEST_F(EngineTest, RefusalsOverUndurableCatalogChangesWaitForThem) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  LogSyncGate gate(io_);
  // A drop, not yet durable: a write to the table waits for it, then hears "no table".
  gate.Hold();
  Status dropped = Status::Ok();
  std::thread drop([&] { dropped = e->DropTable("t"); });
  ASSERT_TRUE(gate.WaitHeld());
  std::atomic<int> answered{0};
  Status put = Status::Ok();
  e->Commit(Transaction().Put("t", "k", "v"), [&](Result<CommitResult> r) {
    put = r.status();
    answered.fetch_add(1);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(answered.load(), 0) << "a refusal over an undurable drop was answered early";
  gate.Release();
  drop.join();
  WaitFor(answered, 1);
  ASSERT_EQ(answered.load(), 1);
  EXPECT_TRUE(dropped.ok()) << dropped.ToString();
  EXPECT_EQ(put.code(), StatusCode::kNotFound) << put.ToString();

  // A creation, not yet durable: creating it again, or appending to a partition it does not
  // have, waits for it.
  gate.Hold();
  Status created = Status::Ok();
  std::thread create([&] { created = e->CreateTopic("x", 1); });
  ASSERT_TRUE(gate.WaitHeld());
  Status again = Status::Ok();
  Status append = Status::Ok();
  std::atomic<int> refused{0};
  std::thread create_again([&] {
    again = e->CreateTopic("x", 1);
    refused.fetch_add(1);
  });
  EventAppend ev;
  ev.topic = "x";
  ev.partition = PartitionId(5);
  ev.payload = "p";
  e->Commit(Transaction().Append(ev), [&](Result<CommitResult> r) {
    append = r.status();
    refused.fetch_add(1);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(refused.load(), 0) << "a refusal over an undurable creation was answered early";
  gate.Release();
  create.join();
  create_again.join();
  WaitFor(refused, 2);
  ASSERT_EQ(refused.load(), 2);
  EXPECT_TRUE(created.ok()) << created.ToString();
  EXPECT_EQ(again.code(), StatusCode::kAlreadyExists) << again.ToString();
  EXPECT_EQ(append.code(), StatusCode::kInvalidArgument) << append.ToString();
}

// Guarantee 2 for transactions: a conflict over a version not yet durable, and a retried
// idempotency key whose original is not yet durable, are answered only once it is (a crash
// could still undo what they saw). The conflict names the first precondition that failed.
TEST_F(EngineTest, ConflictsAndRetriesOverUndurableWritesWaitForThem) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  auto v0 = Commit(*e, Transaction().Put("t", "k", "v0"));
  ASSERT_TRUE(v0.ok()) << v0.status().ToString();
  LogSyncGate gate(io_);
  gate.Hold();
  // Appended, not durable: k at a new version, and an idempotent commit.
  std::atomic<int> written{0};
  Result<CommitResult> original = base::Internal("unanswered");
  e->Commit(Transaction().Put("t", "k", "v1"),
            [&](const Result<CommitResult>&) { written.fetch_add(1); });
  e->Commit(Transaction().IdempotencyKey("once").Put("t", "o", "1"), [&](Result<CommitResult> r) {
    original = std::move(r);
    written.fetch_add(1);
  });
  ASSERT_TRUE(gate.WaitHeld());
  // Three preconditions: the first holds, the second and third fail; the second is named.
  std::atomic<int> answered{0};
  Result<CommitResult> conflict = base::Internal("unanswered");
  Result<CommitResult> retry = base::Internal("unanswered");
  e->Commit(Transaction()
                .RequireAbsent("t", "fresh")
                .RequireVersion("t", "k", v0->lsn)
                .RequireExists("t", "missing")
                .Put("t", "k", "v2"),
            [&](Result<CommitResult> r) {
              conflict = std::move(r);
              answered.fetch_add(1);
            });
  e->Commit(Transaction().IdempotencyKey("once").Put("t", "o", "1"), [&](Result<CommitResult> r) {
    retry = std::move(r);
    answered.fetch_add(1);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(answered.load(), 0) << "answered over writes that were not yet durable";
  EXPECT_EQ(written.load(), 0);
  gate.Release();
  WaitFor(written, 2);
  WaitFor(answered, 2);
  ASSERT_EQ(answered.load(), 2);
  ASSERT_EQ(conflict.status().code(), StatusCode::kConflict) << conflict.status().ToString();
  EXPECT_NE(conflict.status().message().find("\"k\""), std::string::npos)
      << conflict.status().ToString();
  EXPECT_EQ(conflict.status().message().find("missing"), std::string::npos)
      << conflict.status().ToString();
  ASSERT_TRUE(original.ok()) << original.status().ToString();
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_EQ(retry->lsn, original->lsn);  // the original result, not a second commit
  EXPECT_EQ((*e->Get("t", "k"))->value, "v1");
}

TEST_F(EngineTest, ReopenReplaysTablesTopicsAndOffsets) {
  Lsn last;
  {
    auto e = Open();
    ASSERT_TRUE(e->CreateTable("accounts").ok());
    ASSERT_TRUE(e->CreateTopic("audit", 2).ok());
    for (int i = 0; i < 50; ++i) {
      EventAppend ev;
      ev.topic = "audit";
      ev.partition = PartitionId(static_cast<std::uint32_t>(i % 2));
      auto r = Commit(*e, Transaction()
                              .Put("accounts", "acct" + std::to_string(i % 7), std::to_string(i))
                              .Append(ev));
      ASSERT_TRUE(r.ok());
      last = r->lsn;
    }
    ASSERT_TRUE(Commit(*e, Transaction().Delete("accounts", "acct0")).ok());
  }
  auto e = Open();
  EXPECT_GT(e->visible_lsn(), last);
  EXPECT_EQ(e->ListTables(), std::vector<std::string>{"accounts"});
  EXPECT_FALSE(e->Get("accounts", "acct0")->has_value());
  EXPECT_EQ((*e->Get("accounts", "acct6"))->value, "48");
  auto topics = e->ListTopics();
  ASSERT_EQ(topics.size(), 1u);
  EXPECT_EQ(topics[0].end_offsets[0].value(), 25u);
  EXPECT_EQ(topics[0].end_offsets[1].value(), 25u);
  EventAppend ev;
  ev.topic = "audit";
  ev.partition = PartitionId(1);
  auto r = Commit(*e, Transaction().Append(ev));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->events[0].offset.value(), 25u);  // offsets continue where they were
}

TEST_F(EngineTest, ConcurrentTransfersConserveMoney) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("balances").ok());
  ASSERT_TRUE(e->CreateTopic("transfers", 1).ok());
  constexpr int kAccounts = 10;
  for (int i = 0; i < kAccounts; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Put("balances", "a" + std::to_string(i), "1000")).ok());
  }
  std::atomic<int> committed{0};
  std::atomic<int> conflicts{0};
  auto worker = [&](int seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    for (int n = 0; n < 100; ++n) {
      const std::string from = "a" + std::to_string(rng() % kAccounts);
      std::string to = "a" + std::to_string(rng() % kAccounts);
      if (to == from) continue;
      for (;;) {  // read, decide, commit with version preconditions; retry on conflict
        auto f = *e->Get("balances", from);
        auto t = *e->Get("balances", to);
        const int amount = static_cast<int>(rng() % 20);
        EventAppend ev;
        ev.topic = "transfers";
        ev.type = "TransferCompleted";
        ev.payload = from + "->" + to + ":" + std::to_string(amount);
        auto r = Commit(*e, Transaction()
                                .RequireVersion("balances", from, f->version)
                                .RequireVersion("balances", to, t->version)
                                .Put("balances", from, std::to_string(std::stoi(f->value) - amount))
                                .Put("balances", to, std::to_string(std::stoi(t->value) + amount))
                                .Append(ev));
        if (r.ok()) {
          ++committed;
          break;
        }
        ASSERT_EQ(r.status().code(), StatusCode::kConflict) << r.status().ToString();
        ++conflicts;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();
  int total = 0;
  for (const auto& row : *e->Scan("balances", {})) total += std::stoi(row.value);
  EXPECT_EQ(total, kAccounts * 1000);
  EXPECT_EQ(e->ListTopics()[0].end_offsets[0].value(), static_cast<std::uint64_t>(committed));
  std::printf("transfers committed %d, conflicts retried %d\n", committed.load(), conflicts.load());
}

// A pipelined client refills from its commit callbacks, on the log's writer thread, where the
// engine batches its sequencer's wake-ups (every few submissions in a small group, once after
// the last callback of a large one). Every chain must run to its end: a wake-up lost there
// leaves the sequencer asleep with work queued.
TEST_F(EngineTest, CommitsSubmittedFromCallbacksAllComplete) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("chain", 4).ok());
  for (const int chains : {1, 3, 300}) {  // groups of one, a few, and more than 64
    SCOPED_TRACE(std::to_string(chains) + " chains");
    constexpr int kLength = 40;
    std::mutex mu;
    std::condition_variable cv;
    int finished = 0;
    std::atomic<int> failures{0};
    std::function<void(int)> next = [&](int left) {
      EventAppend ev;
      ev.topic = "chain";
      ev.payload = "link";
      e->Commit(Transaction().Append(std::move(ev)), [&, left](Result<CommitResult> r) {
        if (!r.ok()) failures.fetch_add(1);
        if (left > 1 && r.ok()) return next(left - 1);
        std::lock_guard lock(mu);
        ++finished;
        cv.notify_all();
      });
    };
    for (int c = 0; c < chains; ++c) next(kLength);
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return finished == chains; })) {
      ADD_FAILURE() << finished << " of " << chains << " chains finished: " << e->DebugState();
      lock.unlock();
      e.reset();  // answers what is left while the chains' state still exists
      return;
    }
    EXPECT_EQ(failures.load(), 0);
  }
  std::uint64_t events = 0;
  const auto topics = e->ListTopics();
  for (const auto& end : topics[0].end_offsets) events += end.value();
  EXPECT_EQ(events, (1 + 3 + 300) * 40u);
}

// Commit callbacks that keep submitting while the engine closes: every submission is answered
// (committed, or refused "engine is closing"), none is queued where nobody takes it.
TEST_F(EngineTest, CommitsSubmittedFromCallbacksWhileClosingAreAllAnswered) {
  // Declared before the engine: its destructor runs callbacks that use them, on every path out.
  std::atomic<std::uint64_t> submitted{0};
  std::atomic<std::uint64_t> answered{0};
  std::atomic<std::uint64_t> committed{0};
  std::atomic<std::uint64_t> unexpected{0};
  std::function<void()> next;
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("loop", 4).ok());
  Engine* engine = e.get();  // the callbacks run inside e.reset(), when e is already null
  next = [&] {
    EventAppend ev;
    ev.topic = "loop";
    ev.payload = "again";
    submitted.fetch_add(1);
    engine->Commit(Transaction().Append(std::move(ev)), [&](Result<CommitResult> r) {
      answered.fetch_add(1);
      if (r.ok()) {
        committed.fetch_add(1);
        return next();  // until the engine refuses
      }
      if (r.status().code() != StatusCode::kUnavailable) unexpected.fetch_add(1);
    });
  };
  for (int c = 0; c < 300; ++c) next();  // groups of more than 64 callbacks
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (committed.load() < 20000 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  e.reset();  // closes while the callbacks are still submitting
  EXPECT_GE(committed.load(), 300u);
  EXPECT_EQ(answered.load(), submitted.load());
  EXPECT_EQ(unexpected.load(), 0u);
  e = Open();
  const auto topics = e->ListTopics();
  ASSERT_EQ(topics.size(), 1u);
  std::uint64_t events = 0;
  for (const auto& end : topics[0].end_offsets) events += end.value();
  EXPECT_EQ(events, committed.load());
}

// A builder chain on a temporary stays an rvalue, so Commit(Transaction) takes it by move: the
// event's payload reaches the engine in the buffer it was built in, never copied.
TEST(TransactionBuilder, AChainOnATemporaryMovesInsteadOfCopying) {
  static_assert(std::is_same_v<decltype(Transaction().Put("t", "k", "v")), Transaction&&>);
  Transaction named;
  static_assert(std::is_same_v<decltype(named.Put("t", "k", "v")), Transaction&>);
  std::string payload(1000, 'p');
  const char* buffer = payload.data();
  EventAppend ev;
  ev.topic = "audit";
  ev.payload = std::move(payload);
  Transaction built =
      Transaction().Put("t", "k", "v").Append(std::move(ev)).RequireAbsent("t", "x");
  ASSERT_EQ(built.events().size(), 1u);
  EXPECT_EQ(built.events()[0].payload.data(), buffer);
  EXPECT_EQ(built.writes().size(), 1u);
  EXPECT_EQ(built.preconditions().size(), 1u);
}

TEST_F(EngineTest, AStorageErrorStopsCommitsButNotReads) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(Commit(*e, Transaction().Put("t", "k", "v")).ok());
  io_.AddFault(
      storage::FaultRule{0, storage::OpKind::kSync, ".seg", storage::FaultKind::kEio, true});
  auto failed = Commit(*e, Transaction().Put("t", "k", "w"));
  EXPECT_EQ(failed.status().code(), StatusCode::kIoError);
  EXPECT_EQ(Commit(*e, Transaction().Put("t", "x", "y")).status().code(), StatusCode::kIoError);
  EXPECT_EQ(e->status().code(), StatusCode::kIoError);
  EXPECT_EQ((*e->Get("t", "k"))->value, "v");  // the failed write never became visible
}

TEST_F(EngineTest, AFullDiskRejectsCommitsUndoesThemAndRecovers) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTopic("audit", 1).ok());
  ASSERT_TRUE(Commit(*e, Transaction().Put("t", "keep", "1")).ok());
  // No new segment can be prepared from now on.
  io_.AddFault(
      storage::FaultRule{0, storage::OpKind::kAllocate, "", storage::FaultKind::kEnospc, true});
  EventAppend ev;
  ev.topic = "audit";
  ev.payload = std::string(3000, 'e');
  Result<CommitResult> full = base::Internal("not yet");
  Lsn last_ok;
  std::uint64_t events_ok = 0;
  for (int i = 0; i < 200; ++i) {  // 64 KiB segments: a roll comes within a few dozen
    full = Commit(*e, Transaction()
                          .Put("t", "k" + std::to_string(i), std::string(3000, 'v'))
                          .Put("t", "keep", std::to_string(i))
                          .Append(ev));
    if (!full.ok()) break;
    last_ok = full->lsn;
    ++events_ok;
  }
  ASSERT_EQ(full.status().code(), StatusCode::kResourceExhausted) << full.status().ToString();
  EXPECT_NE(full.status().message().find("disk is full"), std::string::npos);
  EXPECT_TRUE(e->status().ok()) << "a full disk must not stop the engine";
  // Nothing of the rejected transaction is visible; reads go on; offsets did not move.
  EXPECT_EQ(e->visible_lsn(), last_ok);
  EXPECT_EQ((*e->Get("t", "keep"))->version, last_ok);
  EXPECT_EQ(e->ListTopics()[0].end_offsets[0].value(), events_ok);
  // Still full: as big a transaction is refused again, never half done.
  auto again = Commit(
      *e, Transaction().Put("t", "other", std::string(3000, 'v')).Put("t", "keep", "x").Append(ev));
  EXPECT_EQ(again.status().code(), StatusCode::kResourceExhausted);
  // A check sees only what is there (and, being small, fits the active segment).
  auto absent = Commit(*e, Transaction().RequireAbsent("t", "k" + std::to_string(events_ok)));
  ASSERT_TRUE(absent.ok()) << absent.status().ToString();
  EXPECT_EQ(absent->lsn.value(), last_ok.value() + 1);  // the rejected LSN, given out again
  // Space comes back: commits work again, the rejected LSNs are given out again.
  io_.ClearFaults();
  auto back = Commit(*e, Transaction().Put("t", "keep", "after").Append(ev));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->lsn.value(), last_ok.value() + 2);
  EXPECT_EQ(back->events[0].offset.value(), events_ok);
  e.reset();
  e = Open();
  EXPECT_EQ((*e->Get("t", "keep"))->value, "after");
  EXPECT_EQ(e->ListTopics()[0].end_offsets[0].value(), events_ok + 1);
  EXPECT_FALSE(e->Get("t", "k" + std::to_string(events_ok))->has_value());
}

TEST_F(EngineTest, TheTableMemoryBudgetRefusesCommitsThatWouldPassIt) {
  EngineOptions o = Options();
  o.table_bytes_max = 64 << 10;
  auto opened = Engine::Open(o);
  ASSERT_TRUE(opened.ok());
  auto e = std::move(opened).value();
  ASSERT_TRUE(e->CreateTable("t").ok());
  Result<CommitResult> r = base::Internal("not yet");
  int committed = 0;
  for (int i = 0; i < 100; ++i) {
    r = Commit(*e, Transaction().Put("t", "k" + std::to_string(i), std::string(1000, 'v')));
    if (!r.ok()) break;
    ++committed;
  }
  ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().message().find("table_bytes_max"), std::string::npos);
  EXPECT_GT(committed, 40);  // 64 KiB holds most of 64 rows of 1 KB
  EXPECT_LE(e->table_bytes(), o.table_bytes_max);
  EXPECT_FALSE(e->Get("t", "k" + std::to_string(committed))->has_value());
  EXPECT_TRUE(e->status().ok());
  // Small transactions that fit still commit.
  EXPECT_TRUE(Commit(*e, Transaction().Put("t", "small", "1")).ok());
}

// Many tiny rows: the tables' hash index is much of their memory, and it grows a whole new
// array at a time (twice the slots, while the old one is still held). The budget must see that
// step coming: the commit whose new key would resize the index past the budget is refused.
TEST_F(EngineTest, TheTableMemoryBudgetCountsTheIndexGrowingInOneStep) {
  EngineOptions o = Options();
  // Between what 2,048 tiny rows hold before their index doubles and what they hold after.
  o.table_bytes_max = 192 << 10;
  auto e = Open(o);
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(e->CreateTable("t").ok());
  Result<CommitResult> r = base::Internal("not yet");
  int rows = 0;
  for (int txn = 0; txn < 1000; ++txn) {
    Transaction t;
    for (int k = 0; k < 16; ++k) t.Put("t", "k" + std::to_string(rows + k), "v");
    r = Commit(*e, std::move(t));
    if (!r.ok()) break;
    rows += 16;
    ASSERT_LE(e->table_bytes(), o.table_bytes_max) << rows << " rows";
  }
  ASSERT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_GT(rows, 1000);
  EXPECT_LE(e->table_bytes(), o.table_bytes_max);
  EXPECT_TRUE(e->status().ok());
}

// The 513th new key of a table grows its index (1,024 slots to 2,048), and the old array's
// entries move a few per later write. With no write after it, the engine's reclamation passes
// finish the move: the table then holds exactly what the same writes leave in a table whose
// move was finished by hand (same node heights: both use the default seed).
TEST_F(EngineTest, AnIdleEngineFinishesTheIndexMovesItsWritesBegan) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  Table alone;
  Transaction txn;
  for (int i = 0; i < 513; ++i) {
    const std::string key = "k" + std::to_string(i);
    txn.Put("t", key, "v");
    alone.Put(AsBytes(key), AsBytes("v"), Lsn(1 + static_cast<std::uint64_t>(i)));
  }
  ASSERT_TRUE(alone.IndexMoving());  // the case this test is about
  const std::uint64_t moving_bytes = alone.bytes();
  EXPECT_FALSE(alone.TidyIndex(SIZE_MAX));
  ASSERT_LT(alone.bytes(), moving_bytes);
  ASSERT_TRUE(Commit(*e, std::move(txn)).ok());
  std::uint64_t held = 0;
  for (int i = 0; i < 500; ++i) {
    held = e->DescribeTable("t")->memory_bytes;
    if (held == alone.bytes()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(held, alone.bytes()) << "with the move left: " << moving_bytes;
}

TEST_F(EngineTest, EveryPublicCallRefusesBadInputClearly) {
  {
    EngineOptions o = Options();
    o.io = nullptr;
    EXPECT_EQ(Engine::Open(o).status().code(), StatusCode::kInvalidArgument);
    o = Options();
    o.dir = "";
    EXPECT_EQ(Engine::Open(o).status().code(), StatusCode::kInvalidArgument);
  }
  auto e = Open();
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTopic("events", 2).ok());
  // Catalog.
  EXPECT_EQ(e->CreateTopic("bad name", 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->CreateTopic("__x", 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->CreateTopic("events", 1).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(e->DropTopic("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(e->DropTable("nope").code(), StatusCode::kNotFound);
  // Reads.
  EXPECT_EQ(e->Scan("nope", {}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->Get("nope", "k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->GetAsOf("t", "k", Lsn(e->visible_lsn().value() + 1)).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(e->WaitForEvents("nope", PartitionId(0), Offset(0), std::chrono::milliseconds(1))
                .status()
                .code(),
            StatusCode::kNotFound);
  EXPECT_EQ(e->WaitForEvents("events", PartitionId(2), Offset(0), std::chrono::milliseconds(1))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Fetch("events", PartitionId(9), Offset(0)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->DescribeGroup("bad name").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->GroupLag("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Changes(Lsn(e->visible_lsn().value() + 2)).status().code(), StatusCode::kOutOfRange);
  // Transactions.
  EXPECT_EQ(Commit(*e, Transaction().RequireAbsent("nope", "k")).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(Commit(*e, Transaction().RequireAbsent("t", std::string(5000, 'k'))).status().code(),
            StatusCode::kInvalidArgument);
  EventAppend ev;
  ev.topic = "events";
  ev.headers.push_back({std::string(300, 'h'), "v"});
  EXPECT_EQ(Commit(*e, Transaction().Append(ev)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(*e, Transaction()).status().code(), StatusCode::kInvalidArgument);
  // Dropping a topic really removes it: appends and fetches are refused after.
  ASSERT_TRUE(e->DropTopic("events").ok());
  EventAppend later;
  later.topic = "events";
  EXPECT_EQ(Commit(*e, Transaction().Append(later)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->Fetch("events", PartitionId(0), Offset(0)).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(e->ListTopics().empty());
  EXPECT_TRUE(e->status().ok());
}

// The calls the test above leaves out: each refuses bad input with a clear code and leaves the
// engine healthy.
TEST_F(EngineTest, TheRestOfThePublicCallsRefuseBadInputToo) {
  EngineOptions o = Options();
  o.event_limits.event_bytes_max = 4096;
  auto e = Open(o);
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTopic("events", 2).ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("events", "p"))).ok());
  // Catalog.
  EXPECT_EQ(e->DropTable("").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->CreateTable(std::string(300, 'n')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->DescribeTable("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->DescribeTopic("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->DescribeTopic("bad name").status().code(), StatusCode::kInvalidArgument);
  auto described = e->DescribeTopic("events");
  ASSERT_TRUE(described.ok()) << described.status().ToString();
  EXPECT_EQ(described->partitions, 2u);
  EXPECT_EQ(described->end_offsets[0].value() + described->end_offsets[1].value(), 1u);
  // Reads.
  EXPECT_EQ(e->FetchViews("nope", PartitionId(0), Offset(0)).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(e->FetchViews("events", PartitionId(2), Offset(0)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->FetchViews("events", PartitionId(0), Offset(5)).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(Engine::CheckMultiGetKeys(Engine::kMultiGetKeysMax + 1).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(Engine::CheckMultiGetKeys(Engine::kMultiGetKeysMax).ok());
  std::vector<std::string_view> keys(Engine::kMultiGetKeysMax + 1, "k");
  EXPECT_EQ(e->MultiGet("t", keys).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->MultiGet("nope", std::vector<std::string_view>{"k"}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(e->ScanAsOf("t", {}, Lsn(e->visible_lsn().value() + 1)).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(e->ScanAsOf("nope", {}, e->visible_lsn()).status().code(), StatusCode::kNotFound);
  // An event past event_bytes_max, whole record counted.
  EXPECT_EQ(
      Commit(*e, Transaction().Append(Event("events", std::string(5000, 'p')))).status().code(),
      StatusCode::kInvalidArgument);
  // Removing a listener that was never added (or twice) does nothing.
  e->RemoveEventsListener(12345);
  const std::uint64_t id = e->AddEventsListener([] {});
  e->RemoveEventsListener(id);
  e->RemoveEventsListener(id);
  EXPECT_TRUE(e->status().ok());
  EXPECT_TRUE(Commit(*e, Transaction().Append(Event("events", "after"))).ok());
}

TEST(EngineOnDisk, CommitsSurviveAReopen) {
  testing::TempDir dir;
  auto io = std::move(storage::MakeIo()).value();
  EngineOptions o;
  o.dir = dir.Sub("engine");
  o.io = io.get();
  {
    auto e = std::move(Engine::Open(o)).value();
    ASSERT_TRUE(e->CreateTable("kv").ok());
    std::vector<std::future<Result<CommitResult>>> futures;
    for (int i = 0; i < 500; ++i) {
      futures.push_back(e->Commit(Transaction().Put("kv", "k" + std::to_string(i), "v")));
    }
    for (auto& f : futures) ASSERT_TRUE(f.get().ok());
  }
  auto e = std::move(Engine::Open(o)).value();
  EXPECT_EQ(e->Scan("kv", {})->size(), 500u);
}

}  // namespace
}  // namespace lockstep::engine

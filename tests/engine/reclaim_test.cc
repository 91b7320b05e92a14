// Proves version reclamation while the engine runs (docs/engine.md, "Tables"): versions older
// than the version window go and the memory they held comes back; reads at and above the
// floor — now, as of an LSN, the change feed's before images, checkpoints — stay exact while it
// happens under concurrent readers (run under ThreadSanitizer in CI); below the floor a read is
// refused, never wrong.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "tests/engine/engine_fixture.h"

namespace lockstep::engine {
namespace {

using namespace std::chrono_literals;

class Reclaim : public EngineFixture {
 protected:
  // Polls `done` for up to 10 s (reclamation finishes in the background, a grace period after
  // the sequencer's tick). Each round ticks the sequencer with a commit — an event, so that the
  // tables hold only what the test wrote — and moves the test clock on by `step_ms`, as a real
  // clock moves (the sequencer samples the visible LSN against the clock whenever it gets to it,
  // which may be after the test's next step).
  template <typename Fn>
  bool Eventually(Engine& e, Fn&& done, std::int64_t step_ms = 0) {
    for (int i = 0; i < 1000; ++i) {
      if (done()) return true;
      now_ += step_ms;
      EXPECT_TRUE(Commit(e, Transaction().Append(Event("ticks", std::to_string(i)))).ok());
      std::this_thread::sleep_for(10ms);
    }
    return done();
  }
};

TEST_F(Reclaim, VersionsOlderThanTheWindowGoAndReadsBelowTheFloorAreRefused) {
  auto o = Options();
  o.version_window_ms = 1000;
  auto e = Open(o);
  ASSERT_TRUE(e->CreateTable("t").ok());
  ASSERT_TRUE(e->CreateTopic("ticks", 1).ok());
  const std::string pad(100, 'p');
  const Lsn first = Commit(*e, Transaction().Put("t", "k", "v1" + pad))->lsn;
  for (int i = 2; i <= 300; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Put("t", "k", "v" + std::to_string(i) + pad)).ok());
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Put("t", "gone" + std::to_string(i), pad)).ok());
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Commit(*e, Transaction().Delete("t", "gone" + std::to_string(i))).ok());
  }
  const std::uint64_t full = e->table_bytes();
  EXPECT_EQ(e->GetAsOf("t", "k", first).value()->value, "v1" + pad);  // inside the window
  EXPECT_EQ(e->oldest_readable_lsn(), Lsn());

  // The clock moves on: the floor follows what was visible one window ago, past everything the
  // test wrote.
  const Lsn last = e->visible_lsn();
  ASSERT_TRUE(Eventually(
      *e, [&] { return e->oldest_readable_lsn() >= last && e->table_bytes() < full / 10; },
      /*step_ms=*/100))
      << "last " << last.value() << " of " << full << " bytes; " << e->DebugState();

  EXPECT_EQ(e->Get("t", "k").value()->value, "v300" + pad);
  EXPECT_FALSE(e->Get("t", "gone7").value().has_value());
  EXPECT_EQ(e->Scan("t", {}).value().size(), 1u);
  auto below = e->GetAsOf("t", "k", first);
  ASSERT_FALSE(below.ok());
  EXPECT_EQ(below.status().code(), base::StatusCode::kOutOfRange) << below.status().ToString();
  EXPECT_EQ(e->GetAsOf("t", "k", e->oldest_readable_lsn()).value()->value, "v300" + pad);
  auto changes = e->Changes(first);
  EXPECT_EQ(changes.status().code(), base::StatusCode::kOutOfRange);
}

TEST_F(Reclaim, AZeroWindowKeepsOnlyWhatReadersNeedAndAReopenAgrees) {
  auto o = Options();
  o.version_window_ms = 0;
  {
    auto e = Open(o);
    ASSERT_TRUE(e->CreateTable("t").ok());
    ASSERT_TRUE(e->CreateTopic("ticks", 1).ok());
    const std::uint64_t empty = e->table_bytes();
    for (int i = 0; i < 2000; ++i) {
      ASSERT_TRUE(
          Commit(*e, Transaction().Put("t", "k" + std::to_string(i % 10), std::to_string(i))).ok());
    }
    // What is left: the ten newest rows (a node and one version each, under 200 bytes).
    ASSERT_TRUE(Eventually(*e, [&] { return e->table_bytes() < empty + 10 * 200; }))
        << e->DebugState();
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(e->Get("t", "k" + std::to_string(i)).value()->value, std::to_string(1990 + i));
    }
    ASSERT_TRUE(e->Checkpoint().ok());
  }
  auto e = Open(o);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(e->Get("t", "k" + std::to_string(i)).value()->value, std::to_string(1990 + i));
  }
}

// Forgotten idempotency keys leave memory, not only the retry check: with a time horizon, once
// the clock passes it; with the default horizon, once retention moves the log's start past
// their transactions. Keys still inside the horizon stay answered. Half the keys are written
// 30 s after the others and all come back from a checkpoint (in key order, not in the order
// they were written): only the older half may go at the first horizon.
TEST_F(Reclaim, IdempotencyKeysPastTheHorizonLeaveMemory) {
  auto o = Options();
  o.idempotency_horizon_ms = 60'000;
  auto e = Open(o);
  ASSERT_TRUE(e->CreateTopic("ticks", 1).ok());
  ASSERT_TRUE(e->CreateTopic("orders", 1).ok());
  const std::uint64_t empty = e->table_bytes();
  constexpr int kKeys = 2000;
  std::vector<Lsn> first(kKeys);
  auto retry = [&](int i) {
    auto r = Commit(*e, Transaction()
                            .IdempotencyKey("order-" + std::to_string(i))
                            .Append(Event("orders", std::to_string(i))));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->lsn : Lsn();
  };
  for (int i = 0; i < kKeys; ++i) {
    if (i == kKeys / 2) now_ += 30'000;
    first[i] = retry(i);
  }
  const std::uint64_t full = e->table_bytes();
  ASSERT_GT(full, empty + kKeys * 40);
  ASSERT_TRUE(e->Checkpoint().ok());
  e.reset();
  e = Open(o);
  EXPECT_EQ(retry(0), first[0]);  // 30 s old: remembered
  // 60 s after the first half: it goes, the second half stays.
  now_ += 30'000;
  const std::uint64_t half = empty + (full - empty) / 2;
  // The table's hash index keeps its slots until fewer than a sixteenth are in use (for 2,000
  // keys 4,096 slots, 32 KiB, about a sixth of `full`): half of it stays above `half`.
  const std::uint64_t index_slack = (full - empty) / 8;
  ASSERT_TRUE(Eventually(
      *e, [&] { return e->table_bytes() < half + index_slack; }, /*step_ms=*/1))
      << e->table_bytes() << " bytes of " << full << "; empty " << empty << "; " << e->DebugState();
  EXPECT_GT(e->table_bytes(), half - 1000);
  EXPECT_EQ(retry(kKeys - 1), first[kKeys - 1]);
  EXPECT_EQ(retry(kKeys / 2), first[kKeys / 2]);
  const Lsn renewed = retry(7);
  EXPECT_GT(renewed, first[7]);  // forgotten: committed as new
  // And 30 s later the second half goes too; the key written anew stays.
  now_ += 30'000;
  ASSERT_TRUE(Eventually(
      *e, [&] { return e->table_bytes() < empty + 1000; }, /*step_ms=*/1))
      << e->table_bytes() << " bytes of " << full << "; empty " << empty << "; " << e->DebugState();
  EXPECT_EQ(retry(7), renewed);
  EXPECT_GT(retry(kKeys - 1), first[kKeys - 1]);
}

TEST_F(Reclaim, IdempotencyKeysWhoseTransactionsLeaveTheLogLeaveMemory) {
  auto e = Open();
  ASSERT_TRUE(e->CreateTopic("ticks", 1, /*retention_ms=*/1'000).ok());
  ASSERT_TRUE(e->CreateTopic("orders", 1, /*retention_ms=*/1'000).ok());
  const std::uint64_t empty = e->table_bytes();
  constexpr int kKeys = 1000;
  Lsn last;
  for (int i = 0; i < kKeys; ++i) {
    auto r = Commit(*e, Transaction()
                            .IdempotencyKey("order-" + std::to_string(i))
                            .Append(Event("orders", std::string(200, 'o'))));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    last = r->lsn;
  }
  const std::uint64_t full = e->table_bytes();
  ASSERT_GT(full, empty + kKeys * 40);
  // The events expire; two checkpoints later retention has deleted their segments.
  now_ += 5'000;
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_TRUE(Commit(*e, Transaction().Append(Event("ticks", "tick"))).ok());
  ASSERT_TRUE(e->Checkpoint().ok());
  ASSERT_GT(e->idempotency_floor(), last) << "retention deleted nothing: the set-up is stale";
  ASSERT_TRUE(Eventually(
      *e, [&] { return e->table_bytes() < empty + 2000; }, /*step_ms=*/10))
      << e->table_bytes() << " bytes of " << full << "; empty " << empty << "; " << e->DebugState();
  auto retried = Commit(*e, Transaction().IdempotencyKey("order-0").Append(Event("orders", "o")));
  ASSERT_TRUE(retried.ok());
  EXPECT_GT(retried->lsn, last);
}

// A writer updates and deletes pairs of rows (x_i, y_i: n and -n) and records what each LSN
// wrote; readers check every snapshot they read against that history exactly — now, as of
// random LSNs at or above the floor, and the change feed's before and after images — while
// checkpoints run. The window is zero and the clock real, so reclamation runs all the time
// underneath.
TEST_F(Reclaim, ReadsChangesAndCheckpointsStayExactWhileVersionsAreReclaimed) {
  auto o = Options();
  o.version_window_ms = 0;
  o.now_ms = base::WallClockMs;
  auto e = Open(o);
  ASSERT_TRUE(e->CreateTable("pairs").ok());
  constexpr int kPairs = 20;
  constexpr int kCommits = 3000;
  struct Written {
    Lsn lsn;
    int pair;
    long n;  // 0: deleted
  };
  std::mutex history_mu;
  std::condition_variable history_cv;
  std::vector<Written> history;  // in LSN order
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<int> checks{0};
  auto fail = [&](const std::string& why) {
    if (failures.fetch_add(1) < 5) ADD_FAILURE() << why;
  };
  // The rows every snapshot at `at` must show, from the history (waiting for the writer to
  // record LSN `at` if it has not yet: it is durable, its commit is returning).
  auto expected_at = [&](Lsn at) {
    std::unique_lock lock(history_mu);
    history_cv.wait_for(lock, 5s,
                        [&] { return done || (!history.empty() && history.back().lsn >= at); });
    std::map<int, long> pairs;
    for (const Written& w : history) {
      if (w.lsn > at) break;
      if (w.n == 0)
        pairs.erase(w.pair);
      else
        pairs[w.pair] = w.n;
    }
    std::map<std::string, std::string> rows;
    for (const auto& [i, n] : pairs) {
      rows["x" + std::to_string(i)] = std::to_string(n);
      rows["y" + std::to_string(i)] = std::to_string(-n);
    }
    return rows;
  };
  auto check = [&](const std::map<std::string, std::string>& got, Lsn at, const char* where) {
    if (got != expected_at(at))
      fail(std::string(where) + " at LSN " + std::to_string(at.value()) +
           " differs from the history");
    checks.fetch_add(1);
  };
  auto as_map = [](const std::vector<Row>& rows) {
    std::map<std::string, std::string> m;
    for (const Row& r : rows) m[r.key] = r.value;
    return m;
  };
  auto reader = [&](int seed) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
    while (!done.load()) {
      const Lsn low = e->oldest_readable_lsn();
      const Lsn high = e->visible_lsn();
      const Lsn at(low.value() + rng() % (high.value() - low.value() + 1));
      auto then = e->ScanAsOf("pairs", {}, at);
      if (then.ok()) {
        check(as_map(*then), at, "scan as of");
      } else if (then.status().code() != base::StatusCode::kOutOfRange &&
                 then.status().code() != base::StatusCode::kNotFound) {
        fail("scan as of: " + then.status().ToString());
      }
      auto feed = e->Changes(Lsn(at.value() + 1), {.max_transactions = 50});
      if (!feed.ok()) {
        if (feed.status().code() != base::StatusCode::kOutOfRange) {
          fail("changes: " + feed.status().ToString());
        }
        continue;
      }
      for (const ChangedTransaction& t : feed->transactions) {
        auto before = expected_at(Lsn(t.lsn.value() - 1));
        auto after = expected_at(t.lsn);
        for (const Change& c : t.changes) {
          auto b = before.find(c.key);
          auto a = after.find(c.key);
          const std::optional<std::string> want_before =
              b == before.end() ? std::nullopt : std::optional<std::string>(b->second);
          const std::optional<std::string> want_after =
              a == after.end() ? std::nullopt : std::optional<std::string>(a->second);
          if (c.before != want_before || c.after != want_after) {
            fail("change feed at LSN " + std::to_string(t.lsn.value()) + " key " + c.key);
          }
        }
        checks.fetch_add(1);
      }
    }
  };
  std::thread r1(reader, 1);
  std::thread r2(reader, 2);
  std::thread checkpointer([&] {
    while (!done.load()) {
      auto c = e->Checkpoint();
      if (!c.ok()) fail("checkpoint: " + c.status().ToString());
      std::this_thread::sleep_for(5ms);
    }
  });
  std::mt19937_64 rng(7);
  std::map<int, long> model;
  for (int n = 1; n <= kCommits; ++n) {
    const int i = static_cast<int>(rng() % kPairs);
    Transaction t;
    const bool del = rng() % 5 == 0;
    if (del) {
      t.Delete("pairs", "x" + std::to_string(i)).Delete("pairs", "y" + std::to_string(i));
      model.erase(i);
    } else {
      t.Put("pairs", "x" + std::to_string(i), std::to_string(n))
          .Put("pairs", "y" + std::to_string(i), std::to_string(-n));
      model[i] = n;
    }
    auto r = Commit(*e, std::move(t));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    {
      std::lock_guard lock(history_mu);
      history.push_back({r->lsn, i, del ? 0 : n});
    }
    history_cv.notify_all();
  }
  done = true;
  history_cv.notify_all();
  r1.join();
  r2.join();
  checkpointer.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(checks.load(), 10);
  EXPECT_GT(e->oldest_readable_lsn(), Lsn(kCommits / 2)) << "reclamation did not keep up";
  auto rows = e->Scan("pairs", {}).value();
  ASSERT_EQ(rows.size(), model.size() * 2);
  for (const Row& r : rows) {
    EXPECT_EQ(std::abs(std::stol(r.value)), model.at(std::stoi(r.key.substr(1))));
  }
  e.reset();
  e = Open(o);
  EXPECT_EQ(e->Scan("pairs", {}).value().size(), model.size() * 2);
}

}  // namespace
}  // namespace lockstep::engine

// Proves the MVCC table: a read at snapshot S sees, per key, the newest version with LSN <= S
// (tombstones hide keys); scans honour from/to/prefix/limit/reverse exactly — checked against a
// brute-force model on random histories — and readers racing the single writer always see a
// consistent snapshot (run under ThreadSanitizer in CI).
#include "engine/table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"

namespace lockstep::engine {
namespace {

using testing::AsBytes;
using testing::AsString;

// A read in its own read-side section: the writer's calls (Put, Delete...) must not run inside
// one (docs/engine.md, "Tables").
std::optional<Table::Read> GetAt(const Table& t, std::string_view key, Lsn at) {
  rcu::ReadGuard guard;
  return t.Get(AsBytes(key), at);
}

std::vector<std::string> Keys(const Table& t, const ScanOptions& o, Lsn at) {
  rcu::ReadGuard guard;
  std::vector<std::string> keys;
  t.Scan(o, at, [&](std::string_view key, Bytes, Lsn) {
    keys.emplace_back(key);
    return true;
  });
  return keys;
}

TEST(Table, ReadsSeeTheNewestVersionAtOrBelowTheSnapshot) {
  Table t;
  t.Put(AsBytes("a"), AsBytes("a1"), Lsn(1));
  t.Put(AsBytes("a"), AsBytes("a5"), Lsn(5));
  t.Delete(AsBytes("a"), Lsn(7));
  t.Put(AsBytes("a"), AsBytes("a9"), Lsn(9));
  EXPECT_FALSE(GetAt(t, "a", Lsn(0)).has_value());
  EXPECT_EQ(GetAt(t, "a", Lsn(1))->value, "a1");
  EXPECT_EQ(GetAt(t, "a", Lsn(4))->value, "a1");
  EXPECT_EQ(GetAt(t, "a", Lsn(5))->value, "a5");
  EXPECT_EQ(GetAt(t, "a", Lsn(5))->version, Lsn(5));
  EXPECT_FALSE(GetAt(t, "a", Lsn(7)).has_value());  // tombstone
  EXPECT_FALSE(GetAt(t, "a", Lsn(8)).has_value());
  EXPECT_EQ(GetAt(t, "a", Lsn(100))->value, "a9");
  EXPECT_FALSE(GetAt(t, "b", Lsn(100)).has_value());
  auto newest = t.NewestVersion(AsBytes("a"));
  ASSERT_TRUE(newest);
  EXPECT_EQ(newest->lsn, Lsn(9));
  EXPECT_TRUE(newest->exists);
  t.Delete(AsBytes("a"), Lsn(10));
  EXPECT_FALSE(t.NewestVersion(AsBytes("a"))->exists);
  EXPECT_FALSE(t.NewestVersion(AsBytes("zz")).has_value());
}

TEST(Table, EmptyKeysAndValuesAndBinaryBytes) {
  Table t;
  const std::string binary("\0\xff\x01", 3);
  t.Put(AsBytes(""), AsBytes(""), Lsn(1));
  t.Put(AsBytes(binary), AsBytes(binary), Lsn(2));
  EXPECT_EQ(GetAt(t, "", Lsn(1))->value, "");
  EXPECT_EQ(GetAt(t, binary, Lsn(2))->value, binary);
  EXPECT_EQ(Keys(t, {}, Lsn(2)), (std::vector<std::string>{"", binary}));
}

TEST(Table, ScanOptions) {
  Table t;
  std::uint64_t lsn = 0;
  for (const char* k : {"acct/a", "acct/b", "acct/c", "hold/a", "zz"}) {
    t.Put(AsBytes(k), AsBytes(k), Lsn(++lsn));
  }
  t.Delete(AsBytes("acct/b"), Lsn(++lsn));
  const Lsn now(lsn);
  using V = std::vector<std::string>;
  EXPECT_EQ(Keys(t, {}, now), (V{"acct/a", "acct/c", "hold/a", "zz"}));
  EXPECT_EQ(Keys(t, {}, Lsn(3)), (V{"acct/a", "acct/b", "acct/c"}));
  EXPECT_EQ(Keys(t, {.prefix = "acct/"}, now), (V{"acct/a", "acct/c"}));
  EXPECT_EQ(Keys(t, {.from = "acct/b", .to = "zz"}, now), (V{"acct/c", "hold/a"}));
  EXPECT_EQ(Keys(t, {.limit = 2}, now), (V{"acct/a", "acct/c"}));
  EXPECT_EQ(Keys(t, {.reverse = true}, now), (V{"zz", "hold/a", "acct/c", "acct/a"}));
  EXPECT_EQ(Keys(t, {.prefix = "acct/", .reverse = true}, now), (V{"acct/c", "acct/a"}));
  EXPECT_EQ(Keys(t, {.to = "hold/a", .limit = 1, .reverse = true}, now), (V{"acct/c"}));
  EXPECT_EQ(Keys(t, {.limit = 0}, now), V{});
  // Stopping early from the callback.
  int seen = 0;
  rcu::ReadGuard guard;
  t.Scan({}, now, [&](std::string_view, Bytes, Lsn) { return ++seen < 2; });
  EXPECT_EQ(seen, 2);
}

// The model: per key, its history of (lsn, value or tombstone).
struct Model {
  std::map<std::string, std::vector<std::pair<std::uint64_t, std::optional<std::string>>>> keys;
  std::optional<std::string> At(const std::string& key, std::uint64_t at) const {
    auto it = keys.find(key);
    if (it == keys.end()) return std::nullopt;
    std::optional<std::string> value;
    for (const auto& [lsn, v] : it->second) {
      if (lsn <= at) value = v;
    }
    return value;
  }
  std::vector<std::string> Scan(const ScanOptions& o, std::uint64_t at) const {
    std::vector<std::string> out;
    for (const auto& [key, history] : keys) {
      if (!o.from.empty() && key < o.from) continue;
      if (!o.to.empty() && key >= o.to) continue;
      if (key.substr(0, o.prefix.size()) != o.prefix) continue;
      if (At(key, at)) out.push_back(key);
    }
    if (o.reverse) std::reverse(out.begin(), out.end());
    if (out.size() > o.limit) out.resize(o.limit);
    return out;
  }
};

// A write after a lookup of the same key (a precondition, then its put) lands in its place in
// the list even when other nodes were linked or unlinked in between, and a key unlinked and
// written again gets a new node that reads and scans find.
TEST(Table, AWriteAfterALookupNeverUsesAStalePosition) {
  using V = std::vector<std::string>;
  Table t;
  std::vector<void*> garbage;
  t.Put(AsBytes("a"), AsBytes("1"), Lsn(1));
  t.Put(AsBytes("c"), AsBytes("1"), Lsn(2));
  // "b" is absent: its predecessor is "a". Then "ab" is linked right after "a".
  EXPECT_FALSE(t.NewestVersion(AsBytes("b")).has_value());
  t.Put(AsBytes("ab"), AsBytes("2"), Lsn(3));
  t.Put(AsBytes("b"), AsBytes("3"), Lsn(4));  // after "ab", not before it
  EXPECT_EQ(Keys(t, {}, Lsn(4)), (V{"a", "ab", "b", "c"}));
  // "k" is found, then unlinked (its only version rolled back), then written again: the new
  // version goes to a new node in the list, not to the unlinked one.
  t.Put(AsBytes("k"), AsBytes("4"), Lsn(5));
  ASSERT_TRUE(t.NewestVersion(AsBytes("k")).has_value());
  t.Rollback(AsBytes("k"), Lsn(5), &garbage);
  EXPECT_FALSE(t.NewestVersion(AsBytes("k")).has_value());
  t.Put(AsBytes("k"), AsBytes("5"), Lsn(5));
  {
    rcu::ReadGuard guard;
    auto k = t.Get(AsBytes("k"), Lsn(5));
    ASSERT_TRUE(k.has_value());
    EXPECT_EQ(k->value, "5");
  }
  EXPECT_EQ(Keys(t, {}, Lsn(5)), (V{"a", "ab", "b", "c", "k"}));
  // "m" is absent: its predecessor is "k". Then "k" is unlinked, and "m" written with no lookup
  // in between: it must not be linked after the unlinked node.
  EXPECT_FALSE(t.NewestVersion(AsBytes("m")).has_value());
  t.Rollback(AsBytes("k"), Lsn(5), &garbage);
  t.Put(AsBytes("m"), AsBytes("6"), Lsn(5));
  EXPECT_EQ(Keys(t, {}, Lsn(5)), (V{"a", "ab", "b", "c", "m"}));
  rcu::FreeAfterReaders(std::move(garbage));
  rcu::Barrier();
}

// Point lookups go through a hash index that grows as keys come, marks the slots of unlinked
// keys erased (a probe goes past them), reuses them for new keys, and shrinks when most keys
// are gone. Thousands of keys are written, mostly deleted and unlinked, written again, and
// finally all unlinked: every lookup (Get and NewestVersion, present and absent keys) agrees
// with the model at each stage, and the memory comes back to an empty table's.
TEST(Table, TheHashIndexGrowsShrinksAndReusesErasedSlots) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const std::uint64_t empty_bytes = Table().bytes();
  Table t(seed, seed);  // the index too: a failure replays from the seed
  constexpr int kKeys = 3000;
  std::map<std::string, std::string> model;  // the keys present now, and their values
  std::uint64_t lsn = 0;
  std::vector<void*> garbage;
  auto key = [](int i) { return "acct" + std::to_string(i); };
  auto check = [&](const char* stage) {
    SCOPED_TRACE(stage);
    for (int i = 0; i < kKeys + 100; ++i) {  // the last 100 were never written
      const std::string k = key(i);
      auto it = model.find(k);
      auto newest = t.NewestVersion(AsBytes(k));
      rcu::ReadGuard guard;
      auto got = t.Get(AsBytes(k), Lsn(lsn));
      ASSERT_EQ(got.has_value(), it != model.end()) << k;
      ASSERT_EQ(newest.has_value() && newest->exists, it != model.end()) << k;
      if (got) {
        ASSERT_EQ(got->value, it->second) << k;
        ASSERT_EQ(AsString(newest->value), it->second) << k;
      }
    }
    ASSERT_EQ(Keys(t, {}, Lsn(lsn)).size(), model.size());
  };
  auto put = [&](int i) {
    const std::string value = "v" + std::to_string(++lsn);
    t.Put(AsBytes(key(i)), AsBytes(value), Lsn(lsn));
    model[key(i)] = value;
  };
  auto remove_and_unlink = [&](const std::vector<int>& which) {
    for (int i : which) {
      t.Delete(AsBytes(key(i)), Lsn(++lsn));
      model.erase(key(i));
    }
    t.Reclaim(Lsn(lsn), SIZE_MAX, &garbage);  // every deleted key is unlinked
  };
  std::vector<int> order(kKeys);
  for (int i = 0; i < kKeys; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (int i : order) put(i);
  check("all written");
  const std::uint64_t full_bytes = t.bytes();
  // All but one in twenty go: the index shrinks, and what stays is found past erased slots.
  std::vector<int> most;
  for (int i : order) {
    if (i % 20 != 0) most.push_back(i);
  }
  remove_and_unlink(most);
  check("most unlinked");
  EXPECT_LT(t.bytes(), full_bytes / 8);
  // Written again, in another order: new nodes, in erased or fresh slots.
  std::shuffle(most.begin(), most.end(), rng);
  for (int i : most) put(i);
  check("written again");
  // Interleaved: unlink some, write others anew, overwrite some present ones.
  for (int round = 0; round < 5; ++round) {
    std::vector<int> gone;
    for (int n = 0; n < 300; ++n) {
      const int i = static_cast<int>(rng() % kKeys);
      if (model.count(key(i)) && std::find(gone.begin(), gone.end(), i) == gone.end()) {
        gone.push_back(i);
      }
    }
    remove_and_unlink(gone);
    for (int n = 0; n < 200; ++n) put(static_cast<int>(rng() % kKeys));
    check("interleaved");
  }
  std::vector<int> all;
  for (int i = 0; i < kKeys; ++i) {
    if (model.count(key(i))) all.push_back(i);
  }
  remove_and_unlink(all);
  check("all unlinked");
  EXPECT_EQ(t.bytes(), empty_bytes);
  rcu::FreeAfterReaders(std::move(garbage));
  rcu::Barrier();
}

// While the index grows, entries move from the old array to the new one a few per write, and
// lookups probe both. A row unlinked then (here by expiry, which leaves its value readable in
// the node) must be gone from both arrays: a later lookup must not find it in the old one.
// Rows are written and expired oldest first in turns, so unlinks land all through the moves.
TEST(Table, RowsUnlinkedWhileTheIndexGrowsAreNeverFoundAgain) {
  Table t;
  t.TrackWritesForExpiry();
  std::vector<void*> garbage;
  constexpr std::uint64_t kRows = 6000;
  auto key = [](std::uint64_t i) { return "row" + std::to_string(i); };
  std::uint64_t expired_below = 1;  // rows written at LSNs below this are gone
  for (std::uint64_t lsn = 1; lsn <= kRows; ++lsn) {
    t.Put(AsBytes(key(lsn)), AsBytes("v"), Lsn(lsn));
    if (lsn % 10 != 0) continue;
    // The newest 1,500 rows stay: the index grows to them, then resizes as erased slots pile up.
    const std::uint64_t before = expired_below;
    expired_below = lsn > 1500 ? lsn - 1500 : 1;
    t.Expire(SIZE_MAX, &garbage,
             [&](Lsn version, Bytes) { return version.value() < expired_below; });
    for (std::uint64_t i = std::max<std::uint64_t>(1, before - 5); i < expired_below + 5; ++i) {
      const bool present = i >= expired_below;
      ASSERT_EQ(t.NewestVersion(AsBytes(key(i))).has_value(), present) << key(i) << " at " << lsn;
      rcu::ReadGuard guard;
      ASSERT_EQ(t.Get(AsBytes(key(i)), Lsn(lsn)).has_value(), present) << key(i) << " at " << lsn;
    }
  }
  rcu::FreeAfterReaders(std::move(garbage));
  rcu::Barrier();
}

TEST(Table, RandomHistoriesMatchABruteForceModel) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  auto pick_key = [&] {
    static const char* kPrefixes[] = {"a/", "ab/", "b/", ""};
    return std::string(kPrefixes[rng() % 4]) + std::to_string(rng() % 40);
  };
  Table t(seed, seed);  // the index too: a failure replays from the seed
  Model m;
  std::uint64_t lsn = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string key = pick_key();
    ++lsn;
    if (rng() % 4 == 0) {
      t.Delete(AsBytes(key), Lsn(lsn));
      m.keys[key].emplace_back(lsn, std::nullopt);
    } else {
      const std::string value = "v" + std::to_string(lsn);
      t.Put(AsBytes(key), AsBytes(value), Lsn(lsn));
      m.keys[key].emplace_back(lsn, value);
    }
  }
  for (int q = 0; q < 2000; ++q) {
    const std::uint64_t at = rng() % (lsn + 2);
    const std::string key = pick_key();
    auto got = [&] {
      rcu::ReadGuard guard;
      return t.Get(AsBytes(key), Lsn(at));
    }();
    auto want = m.At(key, at);
    ASSERT_EQ(got.has_value(), want.has_value()) << key << " at " << at;
    if (got) {
      ASSERT_EQ(got->value, *want);
    }
    ScanOptions o;
    std::string from = rng() % 2 ? pick_key() : "";
    std::string to = rng() % 2 ? pick_key() : "";
    std::string prefix = rng() % 3 == 0 ? std::string(rng() % 2 ? "a" : "ab/") : "";
    o.from = from;
    o.to = to;
    o.prefix = prefix;
    o.limit = rng() % 3 == 0 ? rng() % 10 : SIZE_MAX;
    o.reverse = rng() % 2 == 0;
    ASSERT_EQ(Keys(t, o, Lsn(at)), m.Scan(o, at))
        << "from=" << from << " to=" << to << " prefix=" << prefix << " limit=" << o.limit
        << " reverse=" << o.reverse << " at=" << at;
  }
}

TEST(Table, ReadersRacingTheWriterSeeConsistentSnapshots) {
  Table t;
  std::atomic<std::uint64_t> published{0};  // stands in for the durable LSN
  constexpr std::uint64_t kWrites = 20000;
  std::atomic<bool> failed{false};
  auto reader = [&] {
    std::mt19937_64 rng(std::hash<std::thread::id>()(std::this_thread::get_id()));
    while (published.load(std::memory_order_acquire) < kWrites && !failed) {
      rcu::ReadGuard guard;
      const std::uint64_t at = published.load(std::memory_order_acquire);
      // Key k is written at LSNs k+1, k+1+500, ...: its value names the LSN that wrote it.
      std::size_t rows = 0;
      t.Scan({}, Lsn(at), [&](std::string_view key, Bytes value, Lsn version) {
        ++rows;
        if (version.value() > at || AsString(value) != std::to_string(version.value())) {
          failed = true;
        }
        (void)key;
        return true;
      });
      if (rows != std::min<std::uint64_t>(at, 500)) failed = true;
      const std::uint64_t k = rng() % 500;
      auto got = t.Get(AsBytes("key" + std::to_string(1000 + k)), Lsn(at));
      if ((k + 1 <= at) != got.has_value()) failed = true;
    }
  };
  std::thread r1(reader);
  std::thread r2(reader);
  for (std::uint64_t lsn = 1; lsn <= kWrites; ++lsn) {
    const std::uint64_t k = (lsn - 1) % 500;
    t.Put(AsBytes("key" + std::to_string(1000 + k)), AsBytes(std::to_string(lsn)), Lsn(lsn));
    published.store(lsn, std::memory_order_release);
  }
  r1.join();
  r2.join();
  EXPECT_FALSE(failed.load());
  EXPECT_GT(t.bytes(), 20000u * 8);
}

// A key inserted just before the key a reader is looking up must not hide it: the reader's
// search ends on the new key's predecessor, and the successor it returns must be the one it
// read there, not whatever that link holds a moment later (the new key). Readers look up the
// key right after the one the writer is inserting, over and over; every lookup must find it.
TEST(Table, AKeyInsertedJustBeforeAnotherNeverHidesIt) {
  Table t;
  constexpr int kKeys = 20000;
  auto key = [](int i) {
    char buffer[16];
    std::snprintf(buffer, sizeof buffer, "k%07d", i);
    return std::string(buffer);
  };
  for (int i = 0; i < kKeys; ++i) t.Put(AsBytes(key(2 * i + 1)), AsBytes("old"), Lsn(1));
  std::atomic<int> inserting{-1};  // the index whose even key the writer inserts now
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> lookups{0};
  std::atomic<std::uint64_t> misses{0};
  auto reader = [&] {
    std::uint64_t mine = 0;
    while (!done.load(std::memory_order_acquire) && mine < 50'000'000) {
      const int i = inserting.load(std::memory_order_acquire);
      if (i < 0) continue;
      const std::string wanted = key(2 * i + 1);
      for (int n = 0; n < 8; ++n, ++mine) {
        rcu::ReadGuard guard;
        if (!t.Get(AsBytes(wanted), Lsn(1)).has_value()) misses.fetch_add(1);
      }
    }
    lookups.fetch_add(mine);
  };
  std::thread r1(reader);
  std::thread r2(reader);
  for (int i = 0; i < kKeys; ++i) {
    inserting.store(i, std::memory_order_release);
    // Let the readers start on this key before the insert lands.
    for (int spin = 0; spin < 200; ++spin) (void)inserting.load(std::memory_order_relaxed);
    t.Put(AsBytes(key(2 * i)), AsBytes("new"), Lsn(2 + static_cast<std::uint64_t>(i)));
  }
  done.store(true, std::memory_order_release);
  r1.join();
  r2.join();
  EXPECT_EQ(misses.load(), 0u) << "of " << lookups.load() << " lookups";
  EXPECT_GT(lookups.load(), 0u);
}

// Reclamation: below the horizon versions go, at and above it every read is exactly as before.
// Rollbacks (a full disk) mix in; in the end, deleting everything and reclaiming past it gives
// back every byte — keys are unlinked, not just their versions.
TEST(Table, ReclaimedTablesMatchTheModelAtAndAboveTheHorizon) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  std::mt19937_64 rng(seed);
  const std::uint64_t empty_bytes = Table().bytes();
  Table t(seed, seed);  // the index too: a failure replays from the seed
  Model m;
  std::uint64_t lsn = 0;
  std::uint64_t horizon = 0;
  std::vector<void*> garbage;
  auto check = [&](int queries) {
    for (int q = 0; q < queries; ++q) {
      const std::uint64_t at = horizon + rng() % (lsn - horizon + 1);
      const std::string key = "k" + std::to_string(rng() % 40);
      rcu::ReadGuard guard;
      auto got = t.Get(AsBytes(key), Lsn(at));
      auto want = m.At(key, at);
      ASSERT_EQ(got.has_value(), want.has_value()) << key << " at " << at << " h " << horizon;
      if (got) {
        ASSERT_EQ(got->value, *want);
      }
      ASSERT_EQ(Keys(t, {}, Lsn(at)), m.Scan({}, at)) << "at " << at << " h " << horizon;
    }
  };
  for (int i = 0; i < 4000; ++i) {
    const std::string key = "k" + std::to_string(rng() % 40);
    ++lsn;
    const bool del = rng() % 3 == 0;
    if (del) {
      t.Delete(AsBytes(key), Lsn(lsn));
    } else {
      t.Put(AsBytes(key), AsBytes("v" + std::to_string(lsn)), Lsn(lsn));
    }
    if (rng() % 10 == 0) {  // the log rejected it: undone, and the LSN handed out again
      t.Rollback(AsBytes(key), Lsn(lsn), &garbage);
      --lsn;
    } else {
      m.keys[key].emplace_back(
          lsn, del ? std::nullopt : std::optional<std::string>("v" + std::to_string(lsn)));
    }
    if (i % 50 == 49) {
      horizon = std::max(horizon, lsn - std::min<std::uint64_t>(lsn, rng() % 150));
      t.Reclaim(Lsn(horizon), rng() % 2 ? SIZE_MAX : 7, &garbage);
      check(20);
    }
  }
  // Two versions of one key: the older is below the final horizon whatever the loop reclaimed
  // (its last horizon may already be the newest LSN), so the reclaim below must free bytes.
  for (int v = 0; v < 2; ++v) {
    ++lsn;
    t.Put(AsBytes("k0"), AsBytes("v" + std::to_string(lsn)), Lsn(lsn));
    m.keys["k0"].emplace_back(lsn, "v" + std::to_string(lsn));
  }
  const std::uint64_t before = t.bytes();
  t.Reclaim(Lsn(lsn), SIZE_MAX, &garbage);
  horizon = lsn;
  check(50);
  EXPECT_LT(t.bytes(), before);
  for (const auto& [key, history] : m.keys) {
    t.Delete(AsBytes(key), Lsn(++lsn));
  }
  t.Reclaim(Lsn(lsn), SIZE_MAX, &garbage);
  // Deleted keys are unlinked, node and all: every byte comes back.
  EXPECT_EQ(t.bytes(), empty_bytes);
  EXPECT_EQ(Keys(t, {}, Lsn(lsn)), std::vector<std::string>{});
  rcu::FreeAfterReaders(std::move(garbage));
  rcu::Barrier();
}

// Expiry (the engine's __idempotency): rows go oldest write first while the predicate holds
// for their newest version; a row written again waits for its newer write; a row waits while
// Reclaim may still cut it; a rolled-back write leaves nothing behind for Expire.
TEST(Table, ExpiryUnlinksRowsOldestWriteFirst) {
  Table t;
  t.TrackWritesForExpiry();
  const std::uint64_t empty = t.bytes();
  std::vector<void*> garbage;
  t.Put(AsBytes("a"), AsBytes("1"), Lsn(1));
  t.Put(AsBytes("b"), AsBytes("2"), Lsn(2));
  t.Put(AsBytes("c"), AsBytes("3"), Lsn(3));
  t.Put(AsBytes("a"), AsBytes("4"), Lsn(4));  // shadows a@1
  std::vector<std::uint64_t> asked;
  auto below = [&](std::uint64_t lsn) {
    return [&asked, lsn](Lsn version, Bytes) {
      asked.push_back(version.value());
      return version.value() < lsn;
    };
  };
  // a@1 was written again (skipped, not asked); b@2 and c@3 go; a@4 waits, because Reclaim has
  // not passed it yet (it may still cut a's versions).
  EXPECT_EQ(t.Expire(100, &garbage, below(10)), 3u);
  EXPECT_EQ(asked, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(Keys(t, {}, Lsn(4)), std::vector<std::string>{"a"});
  t.Reclaim(Lsn(4), SIZE_MAX, &garbage);
  // A write the log rejected: its row goes with the rollback, and Expire never meets it.
  t.Put(AsBytes("d"), AsBytes("5"), Lsn(5));
  t.Rollback(AsBytes("d"), Lsn(5), &garbage);
  asked.clear();
  EXPECT_EQ(t.Expire(100, &garbage, below(10)), 1u);
  EXPECT_EQ(asked, std::vector<std::uint64_t>{4});
  EXPECT_EQ(Keys(t, {}, Lsn(5)), std::vector<std::string>{});
  EXPECT_EQ(t.bytes(), empty);
  // The budget bounds a pass; the predicate stops it at the first row still needed.
  t.Put(AsBytes("e"), AsBytes("6"), Lsn(6));
  t.Put(AsBytes("f"), AsBytes("7"), Lsn(7));
  t.Put(AsBytes("g"), AsBytes("8"), Lsn(8));
  EXPECT_EQ(t.Expire(1, &garbage, below(8)), 1u);
  EXPECT_EQ(Keys(t, {}, Lsn(8)), (std::vector<std::string>{"f", "g"}));
  EXPECT_EQ(t.Expire(100, &garbage, below(8)), 1u);
  EXPECT_EQ(Keys(t, {}, Lsn(8)), std::vector<std::string>{"g"});
  // Rows loaded out of LSN order (a checkpoint comes in key order) still go oldest first.
  t.Put(AsBytes("x"), AsBytes("11"), Lsn(11));
  t.Put(AsBytes("y"), AsBytes("9"), Lsn(9));
  t.Put(AsBytes("z"), AsBytes("10"), Lsn(10));
  asked.clear();
  EXPECT_EQ(t.Expire(100, &garbage, below(11)), 3u);  // g@8, y@9, z@10
  EXPECT_EQ(asked, (std::vector<std::uint64_t>{8, 9, 10, 11}));
  EXPECT_EQ(Keys(t, {}, Lsn(11)), std::vector<std::string>{"x"});
  rcu::FreeAfterReaders(std::move(garbage));
  rcu::Barrier();
}

// The engine's protocol under ThreadSanitizer: readers take their snapshot at or above the
// published floor inside a read-side section; the writer reclaims below a floor only after a
// grace period. Keys are deleted and re-created, so nodes are unlinked (and inserted again)
// under the readers too.
TEST(Table, ReadersRacingReclamationSeeExactSnapshots) {
  Table t;
  constexpr std::uint64_t kKeys = 300;
  constexpr std::uint64_t kWrites = 12000;
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> floor{0};
  std::atomic<bool> failed{false};
  std::mutex why_mu;
  std::string why;  // the first mismatch, for the failure message
  auto fail = [&](const std::string& what) {
    std::lock_guard lock(why_mu);
    if (why.empty()) why = what;
    failed = true;
  };
  // Key k is written at LSNs k+1, k+1+kKeys, ...; every 7th LSN deletes instead of putting.
  auto present_at = [&](std::uint64_t k, std::uint64_t at) {
    if (at < k + 1) return false;
    const std::uint64_t last = at - (at - (k + 1)) % kKeys;
    return last % 7 != 0;
  };
  auto reader = [&] {
    std::mt19937_64 rng(std::hash<std::thread::id>()(std::this_thread::get_id()));
    while (published.load(std::memory_order_acquire) < kWrites && !failed) {
      rcu::ReadGuard guard;
      const std::uint64_t low = floor.load(std::memory_order_seq_cst);
      const std::uint64_t high = published.load(std::memory_order_acquire);
      const std::uint64_t at = low + rng() % (high - low + 1);
      const std::string where = " at " + std::to_string(at) + " (floor " + std::to_string(low) +
                                ", published " + std::to_string(high) + ")";
      std::uint64_t rows = 0;
      t.Scan({}, Lsn(at), [&](std::string_view key, Bytes value, Lsn version) {
        ++rows;
        if (version.value() > at || AsString(value) != std::to_string(version.value())) {
          fail(std::string(key) + " read version " + std::to_string(version.value()) + " value " +
               AsString(value) + where);
        }
        return true;
      });
      std::uint64_t want = 0;
      for (std::uint64_t k = 0; k < kKeys; ++k) want += present_at(k, at) ? 1 : 0;
      if (rows != want) {
        fail("scan saw " + std::to_string(rows) + " rows, not " + std::to_string(want) + where);
      }
      const std::uint64_t k = rng() % kKeys;
      if (t.Get(AsBytes("key" + std::to_string(1000 + k)), Lsn(at)).has_value() !=
          present_at(k, at)) {
        fail("get of key" + std::to_string(1000 + k) + " disagrees" + where);
      }
    }
  };
  std::thread r1(reader);
  std::thread r2(reader);
  for (std::uint64_t lsn = 1; lsn <= kWrites; ++lsn) {
    const std::string key = "key" + std::to_string(1000 + (lsn - 1) % kKeys);
    if (lsn % 7 == 0) {
      t.Delete(AsBytes(key), Lsn(lsn));
    } else {
      t.Put(AsBytes(key), AsBytes(std::to_string(lsn)), Lsn(lsn));
    }
    published.store(lsn, std::memory_order_release);
    if (lsn % 256 == 0) {
      const std::uint64_t f = lsn - 100;
      floor.store(f, std::memory_order_seq_cst);
      rcu::WaitForReaders();
      std::vector<void*> garbage;
      t.Reclaim(Lsn(f), SIZE_MAX, &garbage);
      rcu::FreeAfterReaders(std::move(garbage));
    }
  }
  r1.join();
  r2.join();
  EXPECT_FALSE(failed.load()) << why;
  // What is left: one or two versions per key, not the 40 of a table that never reclaims.
  EXPECT_LT(t.bytes(), kKeys * 3 * 100);
  rcu::Barrier();
}

}  // namespace
}  // namespace lockstep::engine

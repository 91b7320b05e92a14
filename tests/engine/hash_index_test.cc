// Proves the tables' hash index on its own: keys whose hashes share both the 16 tagged bits and
// the home slot are told apart by their bytes, a probe goes past erased slots and an insert
// reuses them, and readers racing the writer through grows and shrinks (entries moving from
// one array to the next under them) find exactly the entries present at their snapshot (run
// under ThreadSanitizer and AddressSanitizer in CI: freed arrays would be touched).
#include "engine/hash_index.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/rcu.h"
#include "tests/testing/seed.h"

namespace lockstep::engine {
namespace {

struct Entry {
  std::string key;
};

std::string_view KeyOf(const void* entry) { return static_cast<const Entry*>(entry)->key; }

const Entry* Find(const HashIndex& index, const std::string& key) {
  rcu::ReadGuard guard;
  return static_cast<const Entry*>(index.Find(key, index.Hash(key)));
}

TEST(HashIndex, KeysWhoseTagAndHomeSlotCollideAreToldApart) {
  HashIndex index(&KeyOf, /*seed=*/7);
  // Two keys with the same top 16 bits (the tag) and the same low 4 bits (the home slot in the
  // first array, 16 slots): expect a pair within a few thousand keys.
  constexpr std::uint64_t kTagAndHome = 0xffff00000000000full;
  std::vector<std::string> seen;
  std::string first, second;
  for (int n = 0; n < 200000 && second.empty(); ++n) {
    const std::string key = "c" + std::to_string(n);
    for (const std::string& other : seen) {
      if ((index.Hash(other) & kTagAndHome) == (index.Hash(key) & kTagAndHome)) {
        first = other;
        second = key;
        break;
      }
    }
    seen.push_back(key);
  }
  ASSERT_FALSE(second.empty()) << "no colliding pair among " << seen.size() << " keys";
  Entry a{first}, b{second};
  index.Insert(&a, index.Hash(a.key));
  index.Insert(&b, index.Hash(b.key));
  EXPECT_EQ(Find(index, first), &a);
  EXPECT_EQ(Find(index, second), &b);
  // Erased, `first` no longer answers, and `second`, further along the same probe path, is
  // still found past the erased slot.
  index.Erase(&a);
  EXPECT_EQ(Find(index, first), nullptr);
  EXPECT_EQ(Find(index, second), &b);
  // Inserted again: both answer.
  Entry a2{first};
  index.Insert(&a2, index.Hash(a2.key));
  EXPECT_EQ(Find(index, first), &a2);
  EXPECT_EQ(Find(index, second), &b);
  EXPECT_EQ(Find(index, "absent"), nullptr);
  rcu::Barrier();
}

// Step s (1..kKeys) inserts key s-1; step kKeys+s erases it again, unless it is one of the
// keys kept (every 32nd). The index grows under the readers, then shrinks as the erases leave
// fewer than a sixteenth of its slots in use. A reader that read the published step S before
// its lookup must find every kept key inserted at or before S, and no key erased at or before
// S. (A key erased after S may go either way, so only kept keys are checked for presence.)
TEST(HashIndex, ReadersRacingGrowsAndShrinksFindExactlyWhatIsPresent) {
  const std::uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(testing::SeedTrace(seed));
  HashIndex index(&KeyOf, seed);
  constexpr std::uint64_t kKeys = 30000;
  auto kept = [](std::uint64_t i) { return i % 32 == 0; };
  std::vector<std::unique_ptr<Entry>> entries;
  for (std::uint64_t i = 0; i < kKeys; ++i) {
    entries.push_back(std::make_unique<Entry>(Entry{"key" + std::to_string(i)}));
  }
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> missing{0};
  std::atomic<std::uint64_t> stale{0};
  std::atomic<std::uint64_t> lookups{0};
  std::atomic<int> readers_started{0};
  auto reader = [&](std::uint64_t reader_seed) {
    std::mt19937_64 rng(reader_seed);
    readers_started.fetch_add(1);
    for (std::uint64_t s = 0, mine = 0; s < 2 * kKeys && mine < 20'000'000; ++mine) {
      rcu::ReadGuard guard;
      s = published.load(std::memory_order_acquire);
      // Half the time a key near the writer's position, where entries change.
      const std::uint64_t around = s <= kKeys ? s : s - kKeys;
      const std::uint64_t i =
          rng() % 2 ? rng() % kKeys : (around + kKeys - 64 + rng() % 128) % kKeys;
      const bool found = index.Find(entries[i]->key, index.Hash(entries[i]->key)) != nullptr;
      if (kept(i) && i + 1 <= s && !found) missing.fetch_add(1);
      if (!kept(i) && kKeys + i + 1 <= s && found) stale.fetch_add(1);
      lookups.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread r1(reader, seed + 1);
  std::thread r2(reader, seed + 2);
  // The writer starts once both readers run, and every 8 steps lets them look (briefly), so
  // that lookups overlap the grows, shrinks and moves.
  while (readers_started.load() < 2) std::this_thread::yield();
  for (std::uint64_t step = 1; step <= 2 * kKeys; ++step) {
    if (step % 8 == 0) {
      const std::uint64_t before = lookups.load(std::memory_order_relaxed);
      // Spins, bounded (a descheduled reader costs the writer a few microseconds, not a slice).
      for (int spin = 0; spin < 2000 && lookups.load(std::memory_order_relaxed) == before;) {
        ++spin;
      }
    }
    if (step <= kKeys) {
      const Entry* e = entries[step - 1].get();
      index.Insert(e, index.Hash(e->key));
    } else if (!kept(step - kKeys - 1)) {
      index.Erase(entries[step - kKeys - 1].get());
    }
    published.store(step, std::memory_order_release);
  }
  r1.join();
  r2.join();
  EXPECT_EQ(missing.load(), 0u) << "of " << lookups.load() << " lookups";
  EXPECT_EQ(stale.load(), 0u) << "of " << lookups.load() << " lookups";
  // Shrunk for the 938 keys left, once the last move is through (Tidy, as the engine's
  // reclamation pass does for a table no one writes any more).
  index.Tidy(SIZE_MAX);
  EXPECT_LT(index.bytes(), 64u << 10);
  EXPECT_GT(lookups.load(), 2 * kKeys);  // they looked all along
  rcu::Barrier();                        // the replaced arrays are freed before the index goes
}

}  // namespace
}  // namespace lockstep::engine

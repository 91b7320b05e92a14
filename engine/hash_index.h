#pragma once
// HashIndex: a table's point-lookup index (docs/engine.md, "Tables"). It maps a key to the one
// entry (a skip-list node) holding it, so that a get, a precondition or a write to an existing
// key costs a hash and one or two cache misses instead of a search of the list.
//
// Open addressing with linear probing over a power-of-two array of slots. A slot is empty (a
// probe stops), erased (an entry was there: a probe goes on), or an entry's address with the
// top 16 bits of its key's hash above it (user-space addresses fit in 48 bits), so a probe
// reads a key only when those bits match.
//
// One writer (the table's), never inside an rcu::ReadGuard (a finished move hands the old
// array to rcu::AfterReaders), and any number of readers that take no lock. Entries must stay
// readable until a grace period after their Erase (the table frees nodes with
// rcu::FreeAfterReaders). Keys are hashed with a seed drawn at random per process, so that
// clients cannot choose keys that all probe one cluster.
//
// Resizing never stops the writer for long: a new array is published at once and the old
// one's entries move into it a budget per write (Move), and per pass of the engine's
// reclamation (Tidy) so that a table no one writes finishes too, while lookups probe both.
// Readers load the array being replaced *before* they probe the new one, so an entry that
// moves while they look is found in one or the other. An Erase marks the entry erased in both,
// so no lookup that starts after it finds the entry. The old array is freed a grace period
// after the last entry moved.
//
// A reader finds every entry inserted before the snapshot it read was published: every such
// entry's slot store happened before the publication, so before its probe (Table::Get's
// requirement on its snapshot).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lockstep::engine {

class HashIndex {
 public:
  using KeyOf = std::string_view (*)(const void* entry);
  // `seed` salts the hash: tests fix it, tables use ProcessSeed().
  HashIndex(KeyOf key_of, std::uint64_t seed);
  static std::uint64_t ProcessSeed();
  ~HashIndex();
  HashIndex(const HashIndex&) = delete;
  HashIndex& operator=(const HashIndex&) = delete;

  std::uint64_t Hash(std::string_view key) const;

  // Any thread, inside an rcu::ReadGuard (or the writer): the entry whose key is `key`
  // (`hash` is Hash(key)), or nullptr.
  const void* Find(std::string_view key, std::uint64_t hash) const;

  // Writer only. REQUIRES: no entry with this key is present.
  void Insert(const void* entry, std::uint64_t hash);
  // Writer only. REQUIRES: `entry` is present.
  void Erase(const void* entry);

  // Writer only: moves entries of a replaced array with `budget` work (see kMoveBudget);
  // returns true while some are left to move.
  bool Tidy(std::size_t budget);
  // Writer only: true while a replaced array's entries are moving.
  bool moving() const;

  // Any thread: bytes held by the arrays.
  std::size_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  // Writer only: the bytes a new array would take if `keys` more entries were inserted now
  // (0 when they fit), for the engine's memory budget.
  std::size_t BytesToInsert(std::size_t keys) const;

  // Work per Insert or Erase on moving the entries of a replaced array: an entry moved costs
  // kEntryCost, a slot passed over (empty or erased) 1. So an array emptied by deletes goes
  // fast, and a full one still moves before the next resize. A new array has at least three
  // slots per entry and the next resize comes when half its slots are used, so at least a
  // sixth of its slots later; the array it replaces, at most half full (or, shrinking, holding
  // under a sixteenth of its slots), is through in far fewer writes. Resize finishes a move
  // still running anyway.
  static constexpr std::size_t kMoveBudget = 256;
  static constexpr std::size_t kEntryCost = 16;

 private:
  struct Array;
  static Array* NewArray(std::size_t capacity, Array* previous);
  static const void* Probe(const Array* array, std::string_view key, std::uint64_t hash,
                           KeyOf key_of);
  static bool MarkErased(Array* array, std::uintptr_t slot_value, std::uint64_t hash);
  // Puts the slot value in the first free slot of its probe path; true if that slot was empty.
  static bool Place(Array* array, std::uintptr_t slot_value, std::uint64_t hash);
  void Resize(std::size_t live);
  void Move(std::size_t budget);  // moves entries of the array being replaced (see kMoveBudget)
  void FinishMove();

  static std::size_t CapacityFor(std::size_t entries);

  const KeyOf key_of_;
  const std::uint64_t seed_;
  std::atomic<Array*> array_;
  std::size_t moved_ = 0;  // writer only: slots of the replaced array moved so far
  std::size_t live_ = 0;   // writer only: entries present
  std::size_t used_ = 0;   // writer only: non-empty slots of array_, counting every entry
                           // still to move from the replaced array
  std::atomic<std::size_t> bytes_{0};
};

}  // namespace lockstep::engine

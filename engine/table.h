#pragma once
// Table: one MVCC ordered map (bytes -> bytes, ordered bytewise) — see docs/engine.md.
//
// A skip list with ONE writer (the engine's sequencer) and any number of concurrent readers that
// take no lock and never block the writer (LevelDB's memtable discipline: links are published
// with release stores and read with acquire loads). Every key holds a chain of versions, newest
// first, each tagged with the LSN that wrote it; a delete is a tombstone version. A read at
// snapshot S sees, per key, the newest version with lsn <= S.
//
// Memory: the writer reclaims below a horizon H it is given (Reclaim): per key, every version
// older than the newest one with lsn <= H, and keys whose only version left is such a tombstone.
// It unlinks them and hands them back as garbage for rcu::FreeAfterReaders, so readers inside a
// read-side section (rcu::ReadGuard) never touch freed memory. A read at a snapshot below H may
// miss versions: the engine keeps readers' snapshots at or above the horizon it publishes one
// grace period before it reclaims (docs/engine.md).
//
// Threads: Put, Delete, Rollback, Reclaim, Expire, TidyIndex, IndexBytesToInsert and
// NewestVersion only from the single writer, never inside an rcu::ReadGuard; Get and Scan from
// any thread inside an rcu::ReadGuard; bytes() from any thread.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/assert.h"
#include "base/event_record.h"  // base::Bytes
#include "engine/hash_index.h"
#include "engine/ids.h"
#include "engine/rcu.h"

namespace lockstep::engine {

using base::Bytes;

struct ScanOptions {
  std::string_view from = {};    // first key (inclusive); empty: the start
  std::string_view to = {};      // end key (exclusive); empty: no end
  std::string_view prefix = {};  // only keys starting with this
  std::size_t limit = SIZE_MAX;  // at most this many rows
  // Engine scans: at most this many bytes of answer (keys, values and a fixed cost per row),
  // past which the scan fails with kInvalidArgument (ask for fewer rows) instead of building an
  // unbounded answer.
  std::size_t max_bytes = SIZE_MAX;
  bool reverse = false;  // from `to` (exclusive) down to `from` (inclusive)
};

class Table {
 public:
  // `seed` draws the skip list's node heights; `index_seed` salts the index's hash (random per
  // process unless a test fixes it, to replay a run exactly).
  explicit Table(std::uint64_t seed = 0x243f6a8885a308d3ull,
                 std::uint64_t index_seed = HashIndex::ProcessSeed());
  ~Table();
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  // Writer only. REQUIRES: lsn greater than every LSN written to this key before.
  void Put(Bytes key, Bytes value, Lsn lsn);
  void Delete(Bytes key, Lsn lsn);

  // Writer only: removes the version `lsn` wrote to `key` if it is the newest, for a transaction
  // the log rejected (a full disk). Readers never saw it (it was above the visible LSN) but may
  // be stepping over it: what it unlinks goes to `garbage` (see Reclaim).
  void Rollback(Bytes key, Lsn lsn, std::vector<void*>* garbage);

  // Writer only: unlinks what no read at a snapshot >= `horizon` needs — versions shadowed by a
  // newer version at or below the horizon, and keys whose newest version is a tombstone at or
  // below it — and appends the unlinked memory to `garbage`, for rcu::FreeAfterReaders.
  // REQUIRES: horizon never decreases and stays below every LSN still to be rolled back (the
  // engine's stays at or below the visible LSN; only writes above it are ever rolled back).
  // Work is proportional to the writes since the last call that the horizon passed.
  // At most `budget` writes are looked at per call (a bounded pause for the writer); returns how
  // many were.
  std::size_t Reclaim(Lsn horizon, std::size_t budget, std::vector<void*>* garbage);

  // Writer only: the newest version of `key` whatever its durability (for preconditions);
  // nullopt when the key was never written. `exists` is false for a tombstone. `value` points
  // into the table and stays valid until the writer's next change to it.
  struct Newest {
    Lsn lsn;
    bool exists = false;
    Bytes value;
  };
  // Not const, so that a reader holding a const Table cannot call it.
  std::optional<Newest> NewestVersion(Bytes key);

  // Any thread, inside an rcu::ReadGuard: the value of `key` at snapshot `at`, and the LSN that
  // wrote it; nullopt when the key is absent (never written, deleted, or written only after `at`).
  // REQUIRES: `at` was read (acquire) before the call from an LSN the writer publishes after
  // the versions it covers, or is older than such a snapshot (see HashIndex).
  struct Read {
    std::string value;
    Lsn version;
  };
  std::optional<Read> Get(Bytes key, Lsn at) const;

  // Any thread, inside an rcu::ReadGuard: calls fn(std::string_view key, Bytes value, Lsn version)
  // for each key present at snapshot `at`, in key order (or reverse), honouring
  // from/to/prefix/limit; stops early when fn returns false. Returns the number of rows passed to
  // fn.
  template <typename Fn>
  std::size_t Scan(const ScanOptions& options, Lsn at, Fn&& fn) const;

  // Expiry, for a table whose rows matter only for a while (the engine's __idempotency): the
  // writer remembers its writes in LSN order and, on Expire, unlinks whole rows, oldest write
  // first. Such a table is never written with Delete. Call before the first write.
  void TrackWritesForExpiry();
  // Writer only: puts the writes queued for expiry in LSN order, if a load put them out of it
  // (a checkpoint's rows come in key order). Expire does it too, on a pass that finds them so.
  void SortWritesForExpiry();

  // Writer only, on a table tracking its writes: unlinks rows oldest write first while
  // `expired(lsn, value)` holds for the row's newest version, and stops at the first that does
  // not; at most `budget` writes are looked at per call (returns how many were). Unlinked memory
  // goes to `garbage` (see Reclaim). Readers may still be standing on an expired row: they see
  // it whole until their read-side section ends; later reads find it absent at every snapshot.
  // A row waits while Reclaim still holds a write at or below its newest one (a key written
  // again, whose older versions Reclaim may yet cut): so a single rewritten key holds back the
  // rows after it until the version floor passes it.
  std::size_t Expire(std::size_t budget, std::vector<void*>* garbage,
                     const std::function<bool(Lsn, Bytes)>& expired);

  // Writer only: moves entries of the index's replaced array, if a resize left one, with
  // `budget` work (HashIndex::kMoveBudget per write otherwise; the engine calls this per
  // reclamation pass so that a table no one writes finishes its move too).
  // Returns true while entries are left to move.
  bool TidyIndex(std::size_t budget) { return index_.Tidy(budget); }
  // Writer only: true while a resize's entries are moving.
  bool IndexMoving() const { return index_.moving(); }
  // Writer only: the bytes the index would allocate if `keys` new keys were written now.
  std::uint64_t IndexBytesToInsert(std::size_t keys) const { return index_.BytesToInsert(keys); }

  // Approximate bytes held: keys, values, per-version and per-node overhead, and the index.
  std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed) + index_.bytes(); }

 public:
  struct Node;  // public only for the layout assertion in table.cc

 private:
  struct Version;
  static constexpr int kMaxHeight = 20;

  Node* NewNode(Bytes key, int height);
  void AddVersion(Bytes key, Bytes value, bool tombstone, Lsn lsn);
  int RandomHeight();
  // The first node with key >= `key`; fills prev[] when given (writer only).
  Node* FindGreaterOrEqual(std::string_view key, Node** prev) const;
  // The last node with key < `key` (or the head); fills prev[] when given (writer only), and
  // next_out with its successor as read during the same search.
  Node* FindLessThan(std::string_view key, Node** prev = nullptr, Node** next_out = nullptr) const;
  Node* FindLast() const;
  static const Version* VisibleAt(const Node* node, Lsn at);
  static std::string_view KeyOf(const Node* node);
  static Bytes ValueOf(const Version* version);
  static Lsn LsnOf(const Version* version);
  static Node* Next(const Node* node);

  // A write to `node` at `lsn`. Writes arrive in LSN order, so queues of them are kept in LSN
  // order (Rollback removes from the back).
  struct Write {
    Node* node;
    Lsn lsn;
  };
  // A queue of writes, consumed from the front.
  struct WriteQueue {
    std::vector<Write> writes;  // [head, end) not yet consumed
    std::size_t head = 0;
    bool empty() const { return head == writes.size(); }
    const Write& front() const { return writes[head]; }
    void Pop();
    // Removes the entry for (node, lsn) if it is among the entries at or above `lsn` at the back.
    void Remove(const Node* node, Lsn lsn);
  };
  void CutBelow(Node* node, Lsn horizon, std::vector<void*>* garbage);
  void Unlink(Node* node, std::vector<void*>* garbage);
  static std::size_t NodeBytes(const Node* node);
  static std::size_t VersionBytes(const Version* version);

  Node* head_;
  // Writer only. Writes that shadowed an older version, and tombstones: they leave garbage
  // once the horizon passes them, so Reclaim stops at the first one above the horizon.
  WriteQueue shadowing_;
  // Writer only, expiring tables: every put, for Expire (16 bytes each, not counted in
  // bytes()). Out of LSN order only after a checkpoint load (rows come in key order): sorted
  // before use. WriteQueue::Remove's early stop stays right on such a queue because what is
  // rolled back lies above every LSN a checkpoint loads.
  bool expiring_ = false;
  WriteQueue puts_;
  bool puts_sorted_ = true;
  std::atomic<int> height_{1};
  std::mt19937_64 rng_;  // writer only

  // Point lookups (Get, NewestVersion, Rollback, a write to an existing key) go through this
  // index of the nodes; ordered work (scans, where a new key is linked) through the list.
  static std::string_view KeyOfEntry(const void* node);
  Node* Find(std::string_view key, std::uint64_t hash) const;
  HashIndex index_;
  std::atomic<std::uint64_t> bytes_{0};
};

template <typename Fn>
std::size_t Table::Scan(const ScanOptions& o, Lsn at, Fn&& fn) const {
  LOCKSTEP_ASSERT(rcu::InReadSection());
  std::size_t rows = 0;
  auto in_range = [&](std::string_view key) {
    if (!o.prefix.empty() && key.substr(0, o.prefix.size()) != o.prefix) return false;
    return true;
  };
  auto emit = [&](const Node* node) {
    const Version* v = VisibleAt(node, at);
    if (v == nullptr || !in_range(KeyOf(node))) return true;
    ++rows;
    return static_cast<bool>(fn(KeyOf(node), ValueOf(v), LsnOf(v))) && rows < o.limit;
  };
  if (o.limit == 0) return 0;
  // The effective range: [lower, upper) from from/to and the prefix.
  const std::string_view lower = o.from > o.prefix ? o.from : o.prefix;
  if (!o.reverse) {
    for (const Node* n = FindGreaterOrEqual(lower, nullptr); n != nullptr; n = Next(n)) {
      const std::string_view key = KeyOf(n);
      if (!o.to.empty() && key >= o.to) break;
      if (!o.prefix.empty() && key.substr(0, o.prefix.size()) > o.prefix) break;
      if (!emit(n)) break;
    }
    return rows;
  }
  const Node* n = o.to.empty() ? FindLast() : FindLessThan(o.to);
  while (n != nullptr && n != head_) {
    const std::string_view key = KeyOf(n);
    if (key < lower) break;
    if (!emit(n)) break;
    n = FindLessThan(key);
  }
  return rows;
}

}  // namespace lockstep::engine

#include "engine/table.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>

namespace lockstep::engine {

// One version of one key: immutable once published, except `older`, which the reclaimer cuts
// (readers may be loading it meanwhile, hence atomic).
struct Table::Version {
  Lsn lsn;
  bool tombstone;
  std::uint32_t value_bytes;
  std::atomic<const Version*> older;
  std::byte* value() { return reinterpret_cast<std::byte*>(this + 1); }
  const std::byte* value() const { return reinterpret_cast<const std::byte*>(this + 1); }
};

// A skip-list node, in one allocation: this header, then the tower of `height` links, then the
// key bytes. (Links live past the struct, not in a one-element array indexed beyond its end.)
struct Table::Node {
  std::atomic<const Version*> newest;
  std::uint32_t key_bytes;
  int height;
  std::atomic<Node*>* links() { return reinterpret_cast<std::atomic<Node*>*>(this + 1); }
  const std::atomic<Node*>* links() const {
    return reinterpret_cast<const std::atomic<Node*>*>(this + 1);
  }
  const char* key() const { return reinterpret_cast<const char*>(links() + height); }
  char* key() { return reinterpret_cast<char*>(links() + height); }
};
static_assert(sizeof(Table::Node) % alignof(std::atomic<void*>) == 0);
// Garbage is freed with ::operator delete and no destructor call (rcu::FreeAfterReaders).
static_assert(std::is_trivially_destructible_v<Table::Node>);

Table::Table(std::uint64_t seed, std::uint64_t index_seed)
    : rng_(seed), index_(&KeyOfEntry, index_seed) {
  head_ = NewNode({}, kMaxHeight);
}

Table::~Table() {
  // Whoever destroys the table is its last user: no reader or writer is left.
  Node* n = head_;
  while (n != nullptr) {
    Node* next = n->links()[0].load(std::memory_order_relaxed);
    for (const Version* v = n->newest.load(std::memory_order_relaxed); v != nullptr;) {
      const Version* older = v->older.load(std::memory_order_relaxed);
      ::operator delete(const_cast<Version*>(v));
      v = older;
    }
    ::operator delete(n);
    n = next;
  }
}

std::string_view Table::KeyOfEntry(const void* node) {
  return KeyOf(static_cast<const Node*>(node));
}

Table::Node* Table::Find(std::string_view key, std::uint64_t hash) const {
  // Nodes are only ever changed through the writer's non-const paths.
  return const_cast<Node*>(static_cast<const Node*>(index_.Find(key, hash)));
}

std::size_t Table::VersionBytes(const Version* version) {
  return sizeof(Version) + version->value_bytes;
}

void Table::Rollback(Bytes key, Lsn lsn, std::vector<void*>* garbage) {
  const std::string_view k(reinterpret_cast<const char*>(key.data()), key.size());
  Node* node = Find(k, index_.Hash(k));
  if (node == nullptr) return;
  const Version* v = node->newest.load(std::memory_order_relaxed);
  if (v == nullptr || v->lsn != lsn) return;
  // Readers at the visible LSN skip this version whether they see it or its successor as the
  // newest.
  node->newest.store(v->older.load(std::memory_order_relaxed), std::memory_order_release);
  bytes_.fetch_sub(VersionBytes(v), std::memory_order_relaxed);
  garbage->push_back(const_cast<Version*>(v));
  // Rollbacks come newest first, so this write's entries are among the last.
  shadowing_.Remove(node, lsn);
  if (expiring_) puts_.Remove(node, lsn);
  // A key left without versions had only rejected writes: no entry names it any more. (A row of
  // an expiring table that was rewritten, whose older write Expire passed over while the newer
  // one stood, and whose newer write is rolled back here, is not expired until a restart: it
  // reads as before, and the engine's horizon check still forgets it.)
  if (node->newest.load(std::memory_order_relaxed) == nullptr) Unlink(node, garbage);
}

void Table::WriteQueue::Pop() {
  ++head;
  if (head == writes.size()) {
    writes.clear();
    head = 0;
  } else if (head >= 4096 && head * 2 >= writes.size()) {
    writes.erase(writes.begin(), writes.begin() + static_cast<std::ptrdiff_t>(head));
    head = 0;
  }
}

void Table::WriteQueue::Remove(const Node* node, Lsn lsn) {
  for (std::size_t i = writes.size(); i-- > head && writes[i].lsn >= lsn;) {
    if (writes[i].node == node && writes[i].lsn == lsn) {
      writes.erase(writes.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
  }
}

std::size_t Table::NodeBytes(const Node* node) {
  return sizeof(Node) + sizeof(std::atomic<Node*>) * static_cast<std::size_t>(node->height) +
         node->key_bytes;
}

void Table::Unlink(Node* node, std::vector<void*>* garbage) {
  index_.Erase(node);
  Node* prev[kMaxHeight];
  Node* found = FindGreaterOrEqual(KeyOf(node), prev);
  LOCKSTEP_ASSERT(found == node);
  for (int i = node->height; i-- > 0;) {
    LOCKSTEP_ASSERT(prev[i]->links()[i].load(std::memory_order_relaxed) == node);
    prev[i]->links()[i].store(node->links()[i].load(std::memory_order_relaxed),
                              std::memory_order_release);
  }
  for (const Version* v = node->newest.load(std::memory_order_relaxed); v != nullptr;
       v = v->older.load(std::memory_order_relaxed)) {
    bytes_.fetch_sub(VersionBytes(v), std::memory_order_relaxed);
    garbage->push_back(const_cast<Version*>(v));
  }
  bytes_.fetch_sub(NodeBytes(node), std::memory_order_relaxed);
  garbage->push_back(node);
}

void Table::CutBelow(Node* node, Lsn horizon, std::vector<void*>* garbage) {
  const Version* keep = node->newest.load(std::memory_order_relaxed);
  while (keep != nullptr && keep->lsn > horizon) keep = keep->older.load(std::memory_order_relaxed);
  if (keep == nullptr) return;
  const Version* tail = keep->older.load(std::memory_order_relaxed);
  if (tail == nullptr) return;
  // `keep` answers every read at or above the horizon; nothing older is reachable after this.
  const_cast<Version*>(keep)->older.store(nullptr, std::memory_order_release);
  while (tail != nullptr) {
    const Version* older = tail->older.load(std::memory_order_relaxed);
    bytes_.fetch_sub(VersionBytes(tail), std::memory_order_relaxed);
    garbage->push_back(const_cast<Version*>(tail));
    tail = older;
  }
}

std::size_t Table::Reclaim(Lsn horizon, std::size_t budget, std::vector<void*>* garbage) {
  std::size_t seen = 0;
  while (seen < budget && !shadowing_.empty() && shadowing_.front().lsn <= horizon) {
    const Write w = shadowing_.front();
    shadowing_.Pop();
    ++seen;
    CutBelow(w.node, horizon, garbage);
    // Only the tombstone's own entry unlinks its key: the key was not written since, so no
    // later entry names the node.
    const Version* newest = w.node->newest.load(std::memory_order_relaxed);
    if (newest->tombstone && newest->lsn == w.lsn) Unlink(w.node, garbage);
  }
  return seen;
}

void Table::TrackWritesForExpiry() {
  LOCKSTEP_ASSERT(Next(head_) == nullptr);
  expiring_ = true;
}

void Table::SortWritesForExpiry() {
  if (puts_sorted_) return;
  std::sort(puts_.writes.begin() + static_cast<std::ptrdiff_t>(puts_.head), puts_.writes.end(),
            [](const Write& a, const Write& b) { return a.lsn < b.lsn; });
  puts_sorted_ = true;
}

std::size_t Table::Expire(std::size_t budget, std::vector<void*>* garbage,
                          const std::function<bool(Lsn, Bytes)>& expired) {
  LOCKSTEP_ASSERT(expiring_);
  SortWritesForExpiry();
  std::size_t seen = 0;
  while (seen < budget && !puts_.empty()) {
    const Write w = puts_.front();
    // Reclaim may still hold an entry naming this node at or below this write (it would cut
    // the row's versions later): the row waits, so that no queue names a node once unlinked.
    if (!shadowing_.empty() && shadowing_.front().lsn <= w.lsn) break;
    const Version* newest = w.node->newest.load(std::memory_order_relaxed);
    if (newest->lsn == w.lsn && !expired(newest->lsn, ValueOf(newest))) break;
    puts_.Pop();
    ++seen;
    // A row written again since: its newer write's entry decides.
    if (newest->lsn == w.lsn) Unlink(w.node, garbage);
  }
  return seen;
}

Table::Node* Table::NewNode(Bytes key, int height) {
  const std::size_t size =
      sizeof(Node) + sizeof(std::atomic<Node*>) * static_cast<std::size_t>(height) + key.size();
  void* memory = ::operator new(size);
  Node* node = new (memory) Node;
  node->newest.store(nullptr, std::memory_order_relaxed);
  node->key_bytes = static_cast<std::uint32_t>(key.size());
  node->height = height;
  for (int i = 0; i < height; ++i) new (&node->links()[i]) std::atomic<Node*>(nullptr);
  if (!key.empty()) std::memcpy(node->key(), key.data(), key.size());
  bytes_.fetch_add(size, std::memory_order_relaxed);
  return node;
}

int Table::RandomHeight() {
  int height = 1;
  while (height < kMaxHeight && (rng_() & 3) == 0) ++height;  // p = 1/4, as LevelDB
  return height;
}

std::string_view Table::KeyOf(const Node* node) { return {node->key(), node->key_bytes}; }
Bytes Table::ValueOf(const Version* v) { return {v->value(), v->value_bytes}; }
Lsn Table::LsnOf(const Version* v) { return v->lsn; }
Table::Node* Table::Next(const Node* node) {
  return node->links()[0].load(std::memory_order_acquire);
}

Table::Node* Table::FindGreaterOrEqual(std::string_view key, Node** prev) const {
  Node* next = nullptr;
  FindLessThan(key, prev, &next);
  return next;
}

Table::Node* Table::FindLessThan(std::string_view key, Node** prev, Node** next_out) const {
  Node* x = head_;
  int level = height_.load(std::memory_order_relaxed) - 1;
  for (;;) {
    Node* next = x->links()[level].load(std::memory_order_acquire);
    if (next != nullptr && KeyOf(next) < key) {
      x = next;
      continue;
    }
    if (prev != nullptr) prev[level] = x;
    if (level == 0) {
      // The successor is the one this load saw: loading x's link again could find a node the
      // writer inserted since, with a smaller key than `key` (a reader would then miss `key`).
      if (next_out != nullptr) *next_out = next;
      return x;
    }
    --level;
  }
}

Table::Node* Table::FindLast() const {
  Node* x = head_;
  int level = height_.load(std::memory_order_relaxed) - 1;
  for (;;) {
    Node* next = x->links()[level].load(std::memory_order_acquire);
    if (next != nullptr) {
      x = next;
      continue;
    }
    if (level == 0) return x == head_ ? nullptr : x;
    --level;
  }
}

const Table::Version* Table::VisibleAt(const Node* node, Lsn at) {
  const Version* v = node->newest.load(std::memory_order_acquire);
  while (v != nullptr && v->lsn > at) v = v->older.load(std::memory_order_acquire);
  return v == nullptr || v->tombstone ? nullptr : v;
}

void Table::AddVersion(Bytes key, Bytes value, bool tombstone, Lsn lsn) {
  const std::string_view k(reinterpret_cast<const char*>(key.data()), key.size());
  const std::uint64_t hash = index_.Hash(k);
  Node* node = Find(k, hash);
  if (node == nullptr) {
    Node* prev[kMaxHeight];
    FindLessThan(k, prev);
    const int height = RandomHeight();
    const int current = height_.load(std::memory_order_relaxed);
    for (int i = current; i < height; ++i) prev[i] = head_;
    node = NewNode(key, height);
    // Indexed first, so that the index's allocation (a resize) comes before any change a reader
    // could see. (An allocation failure on the sequencer ends the process anyway: fail-stop.)
    // Found through the index before it is linked, the node reads as absent: no version yet.
    index_.Insert(node, hash);
    // Link bottom-up: a reader that finds the node at any level finds it at level 0 too.
    for (int i = 0; i < height; ++i) {
      node->links()[i].store(prev[i]->links()[i].load(std::memory_order_relaxed),
                             std::memory_order_relaxed);
      prev[i]->links()[i].store(node, std::memory_order_release);
    }
    if (height > current) height_.store(height, std::memory_order_relaxed);
  }
  const Version* newest = node->newest.load(std::memory_order_relaxed);
  LOCKSTEP_ASSERT(newest == nullptr || newest->lsn < lsn);
  const std::size_t size = sizeof(Version) + value.size();
  void* memory = ::operator new(size);
  Version* v =
      new (memory) Version{lsn, tombstone, static_cast<std::uint32_t>(value.size()), newest};
  if (!value.empty()) std::memcpy(v->value(), value.data(), value.size());
  node->newest.store(v, std::memory_order_release);  // publish: readers see a whole version
  bytes_.fetch_add(size, std::memory_order_relaxed);
  if (newest != nullptr || tombstone) shadowing_.writes.push_back({node, lsn});
  if (expiring_) {
    LOCKSTEP_ASSERT(!tombstone);  // expiring tables are never deleted from
    if (!puts_.empty() && puts_.writes.back().lsn > lsn) puts_sorted_ = false;
    puts_.writes.push_back({node, lsn});
  }
}

void Table::Put(Bytes key, Bytes value, Lsn lsn) { AddVersion(key, value, false, lsn); }

void Table::Delete(Bytes key, Lsn lsn) { AddVersion(key, {}, true, lsn); }

std::optional<Table::Newest> Table::NewestVersion(Bytes key) {
  const std::string_view k(reinterpret_cast<const char*>(key.data()), key.size());
  const Node* node = Find(k, index_.Hash(k));
  if (node == nullptr) return std::nullopt;
  const Version* v = node->newest.load(std::memory_order_relaxed);
  if (v == nullptr) return std::nullopt;  // every version was rolled back
  return Newest{v->lsn, !v->tombstone, ValueOf(v)};
}

std::optional<Table::Read> Table::Get(Bytes key, Lsn at) const {
  LOCKSTEP_ASSERT(rcu::InReadSection());
  const std::string_view k(reinterpret_cast<const char*>(key.data()), key.size());
  const Node* node = Find(k, index_.Hash(k));
  if (node == nullptr) return std::nullopt;
  const Version* v = VisibleAt(node, at);
  if (v == nullptr) return std::nullopt;
  return Read{std::string(reinterpret_cast<const char*>(v->value()), v->value_bytes), v->lsn};
}

}  // namespace lockstep::engine

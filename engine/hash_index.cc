#include "engine/hash_index.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <new>
#include <random>

#include "base/assert.h"
#include "base/checksum.h"
#include "engine/rcu.h"

namespace lockstep::engine {

// One array of slots, in one calloc'd block: this header, then capacity() slots. Slots are
// plain words accessed through std::atomic_ref, so that a large array's zeroed pages come from
// the kernel on first touch instead of being written at once by the writer (a resize of a
// table of millions of keys would otherwise stop the sequencer while it zeroes them).
struct HashIndex::Array {
  std::size_t mask;
  // The array whose entries are moving into this one, or nullptr once they all have.
  std::atomic<Array*> previous;

  std::size_t capacity() const { return mask + 1; }
  std::size_t bytes() const { return sizeof(Array) + capacity() * sizeof(std::uintptr_t); }
  std::atomic_ref<std::uintptr_t> slot(std::size_t i) const {
    return std::atomic_ref<std::uintptr_t>(
        const_cast<std::uintptr_t*>(reinterpret_cast<const std::uintptr_t*>(this + 1))[i]);
  }
};

namespace {

constexpr std::uintptr_t kEmpty = 0;
constexpr std::uintptr_t kErased = 1;
constexpr int kTagShift = 48;
constexpr std::uintptr_t kAddressMask = (std::uintptr_t{1} << kTagShift) - 1;
constexpr std::size_t kMinSlots = 16;
// Up to this share of the slots in use (erased ones included): every probe meets an empty one.
constexpr std::size_t kMaxLoadDivisor = 2;
// A shrink when fewer than 1/16 of the slots hold an entry; a new array has at least 3 slots
// per entry (up to 6, the next power of two): a grow doubles the array.
constexpr std::size_t kShrinkDivisor = 16;
constexpr std::size_t kSlotsPerEntry = 3;

std::uintptr_t TagOf(std::uint64_t hash) { return (hash >> kTagShift) << kTagShift; }

std::uintptr_t SlotValue(const void* entry, std::uint64_t hash) {
  const auto address = reinterpret_cast<std::uintptr_t>(entry);
  LOCKSTEP_ASSERT((address & ~kAddressMask) == 0 && address > kErased);
  return TagOf(hash) | address;
}

const void* EntryOf(std::uintptr_t slot) {
  return reinterpret_cast<const void*>(slot & kAddressMask);
}

bool HoldsEntry(std::uintptr_t slot) { return slot != kEmpty && slot != kErased; }

static_assert(std::atomic_ref<std::uintptr_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uintptr_t>::required_alignment <= alignof(std::max_align_t));

}  // namespace

HashIndex::HashIndex(KeyOf key_of, std::uint64_t seed) : key_of_(key_of), seed_(seed) {
  Array* array = NewArray(kMinSlots, nullptr);
  bytes_.store(array->bytes(), std::memory_order_relaxed);
  array_.store(array, std::memory_order_relaxed);
}

HashIndex::~HashIndex() {
  // Whoever destroys the index is its last user.
  Array* array = array_.load(std::memory_order_relaxed);
  std::free(array->previous.load(std::memory_order_relaxed));
  std::free(array);
}

HashIndex::Array* HashIndex::NewArray(std::size_t capacity, Array* previous) {
  LOCKSTEP_ASSERT(std::has_single_bit(capacity));
  static_assert(sizeof(Array) % sizeof(std::uintptr_t) == 0);
  void* memory = std::calloc(1, sizeof(Array) + capacity * sizeof(std::uintptr_t));
  if (memory == nullptr) throw std::bad_alloc();
  return new (memory) Array{capacity - 1, previous};
}

std::uint64_t HashIndex::ProcessSeed() {
  static const std::uint64_t seed = [] {
    std::random_device device;
    return (std::uint64_t{device()} << 32) | device();
  }();
  return seed;
}

std::uint64_t HashIndex::Hash(std::string_view key) const {
  return base::Xxh3({reinterpret_cast<const std::byte*>(key.data()), key.size()}, seed_);
}

std::size_t HashIndex::CapacityFor(std::size_t entries) {
  return std::bit_ceil(std::max(kMinSlots, kSlotsPerEntry * entries));
}

std::size_t HashIndex::BytesToInsert(std::size_t keys) const {
  const Array* array = array_.load(std::memory_order_relaxed);
  if ((used_ + keys) * kMaxLoadDivisor <= array->capacity()) return 0;
  return sizeof(Array) + CapacityFor(live_ + keys) * sizeof(std::uintptr_t);
}

const void* HashIndex::Probe(const Array* array, std::string_view key, std::uint64_t hash,
                             KeyOf key_of) {
  const std::uintptr_t tag = TagOf(hash);
  for (std::size_t i = hash & array->mask;; i = (i + 1) & array->mask) {
    const std::uintptr_t slot = array->slot(i).load(std::memory_order_acquire);
    if (slot == kEmpty) return nullptr;
    if (slot == kErased || (slot & ~kAddressMask) != tag) continue;
    const void* entry = EntryOf(slot);
    if (key_of(entry) == key) return entry;
  }
}

const void* HashIndex::Find(std::string_view key, std::uint64_t hash) const {
  const Array* array = array_.load(std::memory_order_acquire);
  // Before probing `array`: an entry that moves out of `previous` meanwhile is then found in
  // one of them. Loaded after, `previous` could read nullptr because the move just ended,
  // while the probe of `array` ran before the entry arrived there.
  const Array* previous = array->previous.load(std::memory_order_acquire);
  if (const void* entry = Probe(array, key, hash, key_of_)) return entry;
  return previous == nullptr ? nullptr : Probe(previous, key, hash, key_of_);
}

bool HashIndex::Place(Array* array, std::uintptr_t slot_value, std::uint64_t hash) {
  std::size_t i = hash & array->mask;
  std::uintptr_t slot;
  // The key is absent from `array`, so the first erased slot on its probe path can take it.
  while (HoldsEntry(slot = array->slot(i).load(std::memory_order_relaxed))) {
    i = (i + 1) & array->mask;
  }
  array->slot(i).store(slot_value, std::memory_order_release);  // publish: the entry is whole
  return slot == kEmpty;
}

void HashIndex::Insert(const void* entry, std::uint64_t hash) {
  if ((used_ + 1) * kMaxLoadDivisor > array_.load(std::memory_order_relaxed)->capacity()) {
    Resize(live_ + 1);
  }
  if (Place(array_.load(std::memory_order_relaxed), SlotValue(entry, hash), hash)) ++used_;
  ++live_;
  Move(kMoveBudget);
}

bool HashIndex::MarkErased(Array* array, std::uintptr_t slot_value, std::uint64_t hash) {
  for (std::size_t i = hash & array->mask;; i = (i + 1) & array->mask) {
    const std::uintptr_t slot = array->slot(i).load(std::memory_order_relaxed);
    if (slot == kEmpty) return false;
    if (slot == slot_value) {
      array->slot(i).store(kErased, std::memory_order_release);
      return true;
    }
  }
}

void HashIndex::Erase(const void* entry) {
  const std::uint64_t hash = Hash(key_of_(entry));
  const std::uintptr_t value = SlotValue(entry, hash);
  Array* array = array_.load(std::memory_order_relaxed);
  // An entry still to move is only in `previous`; one moved is in both (a reader on the
  // replaced array must not find it either once it is unlinked).
  bool found = MarkErased(array, value, hash);
  if (Array* previous = array->previous.load(std::memory_order_relaxed)) {
    found = MarkErased(previous, value, hash) || found;
  }
  LOCKSTEP_ASSERT(found);
  --live_;
  if (array->capacity() > kMinSlots && live_ * kShrinkDivisor < array->capacity()) {
    Resize(live_);
  }
  Move(kMoveBudget);
}

void HashIndex::Resize(std::size_t live) {
  FinishMove();  // one replaced array at a time
  Array* old = array_.load(std::memory_order_relaxed);
  Array* fresh = NewArray(CapacityFor(live), old);
  bytes_.fetch_add(fresh->bytes(), std::memory_order_relaxed);
  used_ = live_;  // every entry of `old` lands in `fresh`
  moved_ = 0;
  array_.store(fresh, std::memory_order_release);  // publish: readers probe both from now on
}

void HashIndex::Move(std::size_t budget) {
  Array* array = array_.load(std::memory_order_relaxed);
  Array* old = array->previous.load(std::memory_order_relaxed);
  if (old == nullptr) return;
  for (std::size_t work = 0; moved_ < old->capacity() && work < budget; ++moved_) {
    const std::uintptr_t slot = old->slot(moved_).load(std::memory_order_relaxed);
    if (HoldsEntry(slot)) {
      Place(array, slot, Hash(key_of_(EntryOf(slot))));
      work += kEntryCost;
    } else {
      ++work;
    }
  }
  if (moved_ < old->capacity()) return;
  array->previous.store(nullptr, std::memory_order_release);
  bytes_.fetch_sub(old->bytes(), std::memory_order_relaxed);
  rcu::AfterReaders([old] { std::free(old); });
}

void HashIndex::FinishMove() { Move(SIZE_MAX); }

bool HashIndex::moving() const {
  return array_.load(std::memory_order_relaxed)->previous.load(std::memory_order_relaxed) !=
         nullptr;
}

bool HashIndex::Tidy(std::size_t budget) {
  Move(budget);
  return moving();
}

}  // namespace lockstep::engine

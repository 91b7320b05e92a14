#include "base/block_pool.h"

#include <algorithm>

namespace lockstep::base {

void BlockDeleter::operator()(std::byte* block) const noexcept {
  if (pool) {
    pool->Give(block, capacity);
  } else {
    delete[] block;
  }
}

Block NewBlock(std::size_t bytes) {
  return Block(new std::byte[bytes], BlockDeleter{nullptr, bytes});
}

std::shared_ptr<BlockPool> BlockPool::Create(std::size_t max_cached_bytes) {
  return std::shared_ptr<BlockPool>(new BlockPool(max_cached_bytes));
}

BlockPool::BlockPool(std::size_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {
  // Every block is at least kGrain: Give never has to grow the vector (it cannot fail).
  cached_.reserve(max_cached_bytes / kGrain + 1);
}

BlockPool::~BlockPool() {
  for (const Cached& c : cached_) delete[] c.block;
}

Block BlockPool::Take(std::size_t bytes) {
  {
    std::lock_guard lock(mu_);
    auto best = cached_.end();
    // At most twice the size asked for (and a grain): a small response never pins a large
    // block for as long as its batch lives.
    const std::size_t largest = 2 * std::max(bytes, kGrain);
    for (auto it = cached_.begin(); it != cached_.end(); ++it) {
      if (it->capacity >= bytes && it->capacity <= largest &&
          (best == cached_.end() || it->capacity < best->capacity)) {
        best = it;
      }
    }
    if (best != cached_.end()) {
      const Cached c = *best;
      *best = cached_.back();
      cached_.pop_back();
      cached_bytes_ -= c.capacity;
      return Block(c.block, BlockDeleter{shared_from_this(), c.capacity});
    }
  }
  const std::size_t capacity =
      std::max<std::size_t>(kGrain, (bytes + kGrain - 1) / kGrain * kGrain);
  return Block(new std::byte[capacity], BlockDeleter{shared_from_this(), capacity});
}

std::size_t BlockPool::cached_bytes() const {
  std::lock_guard lock(mu_);
  return cached_bytes_;
}

void BlockPool::Give(std::byte* block, std::size_t capacity) noexcept {
  {
    std::lock_guard lock(mu_);
    // Over budget, larger cached blocks make room for this one: the newest returned are the
    // sizes in use now, and blocks of an earlier, larger size (a catch-up's responses) would
    // otherwise hold the cache for good while no request fits them.
    while (cached_bytes_ + capacity > max_cached_bytes_) {
      auto largest = std::max_element(
          cached_.begin(), cached_.end(),
          [](const Cached& a, const Cached& b) { return a.capacity < b.capacity; });
      if (largest == cached_.end() || largest->capacity <= capacity) break;
      delete[] largest->block;
      cached_bytes_ -= largest->capacity;
      *largest = cached_.back();
      cached_.pop_back();
    }
    if (cached_bytes_ + capacity <= max_cached_bytes_) {
      cached_.push_back({block, capacity});  // room reserved by the constructor
      cached_bytes_ += capacity;
      return;
    }
  }
  delete[] block;
}

}  // namespace lockstep::base

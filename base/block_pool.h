#pragma once
// Byte blocks that go back to a pool when released, for large buffers allocated and freed at a
// steady rate (the client's fetch responses, several MiB each). A fresh block of that size costs
// a page fault and a zeroed page per 4 KiB every time the allocator hands the memory back to the
// kernel and takes it again — a fifth of a consumer's time before blocks were recycled.
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace lockstep::base {

class BlockPool;

// Returns a block to its pool, or frees it when it has none.
struct BlockDeleter {
  std::shared_ptr<BlockPool> pool;
  std::size_t capacity = 0;
  void operator()(std::byte* block) const noexcept;
};
// A block of at least the bytes asked for; its contents start undefined.
using Block = std::unique_ptr<std::byte[], BlockDeleter>;

// A block of exactly `bytes`, from no pool (freed on release).
Block NewBlock(std::size_t bytes);

// Keeps released blocks, up to `max_cached_bytes` of them, for Take to hand out again.
// Thread-safe: blocks are taken on one thread and released on any. Each block keeps its pool
// alive, so blocks may outlive whoever made the pool.
class BlockPool : public std::enable_shared_from_this<BlockPool> {
 public:
  static std::shared_ptr<BlockPool> Create(std::size_t max_cached_bytes);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A block of at least `bytes`: the smallest cached one that is large enough and at most twice
  // that, else a new one (its size rounded up to 64 KiB, so that blocks of similar sizes serve
  // each other).
  Block Take(std::size_t bytes);
  std::size_t cached_bytes() const;

 private:
  friend struct BlockDeleter;
  static constexpr std::size_t kGrain = 64 << 10;
  explicit BlockPool(std::size_t max_cached_bytes);
  void Give(std::byte* block, std::size_t capacity) noexcept;

  struct Cached {
    std::byte* block;
    std::size_t capacity;
  };
  const std::size_t max_cached_bytes_;
  mutable std::mutex mu_;
  std::vector<Cached> cached_;    // guarded by mu_
  std::size_t cached_bytes_ = 0;  // guarded by mu_
};

}  // namespace lockstep::base

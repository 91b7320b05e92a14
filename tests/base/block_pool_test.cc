// Proves the block pool: a released block is handed out again (the smallest that fits), a block
// still held never is, the cache stays within its bound, and blocks outlive whoever made the
// pool.
#include "base/block_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

namespace lockstep::base {
namespace {

TEST(BlockPool, AReleasedBlockIsHandedOutAgain) {
  auto pool = BlockPool::Create(8 << 20);
  Block a = pool->Take(3 << 20);
  std::byte* const first = a.get();
  std::memset(first, 0x5a, 3 << 20);  // the whole size asked for is there
  Block held = pool->Take(3 << 20);
  EXPECT_NE(held.get(), first);
  a.reset();
  EXPECT_EQ(pool->cached_bytes(), std::size_t{3} << 20);
  Block b = pool->Take((3 << 20) - 100);  // a little smaller: the same block serves
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(pool->cached_bytes(), 0u);
  Block c = pool->Take(3 << 20);  // nothing cached: a new block, never a held one
  EXPECT_NE(c.get(), first);
  EXPECT_NE(c.get(), held.get());
}

TEST(BlockPool, TheSmallestBlockThatFitsIsTaken) {
  auto pool = BlockPool::Create(16 << 20);
  Block big = pool->Take(4 << 20);
  Block small = pool->Take(1 << 20);
  std::byte* const big_at = big.get();
  std::byte* const small_at = small.get();
  big.reset();
  small.reset();
  EXPECT_EQ(pool->Take(512 << 10).get(), small_at);
  EXPECT_EQ(pool->Take(2 << 20).get(), big_at);  // the small one is too small
}

TEST(BlockPool, ASmallRequestNeverTakesAFarLargerBlock) {
  auto pool = BlockPool::Create(16 << 20);
  Block big = pool->Take(4 << 20);
  std::byte* const big_at = big.get();
  big.reset();
  Block small = pool->Take(256 << 10);  // more than twice smaller: a new block
  EXPECT_NE(small.get(), big_at);
  EXPECT_EQ(pool->cached_bytes(), std::size_t{4} << 20);
}

// After a phase of large blocks has filled the cache, smaller ones returned push them out: the
// pool keeps recycling at the new size instead of holding blocks no request fits.
TEST(BlockPool, SmallerBlocksReturnedPushOutLargerOnesNoRequestFits) {
  auto pool = BlockPool::Create(16 << 20);
  {
    std::vector<Block> catch_up;
    for (int i = 0; i < 4; ++i) catch_up.push_back(pool->Take(4 << 20));
  }
  ASSERT_EQ(pool->cached_bytes(), std::size_t{16} << 20);
  Block tail = pool->Take(300 << 10);  // nothing cached fits (over twice its size): new
  std::byte* const tail_at = tail.get();
  tail.reset();  // over budget: a 4 MiB block goes to make room
  EXPECT_EQ(pool->cached_bytes(), (std::size_t{12} << 20) + (320 << 10));
  EXPECT_EQ(pool->Take(300 << 10).get(), tail_at);  // recycled
}

TEST(BlockPool, TheCacheStaysWithinItsBound) {
  auto pool = BlockPool::Create(2 << 20);
  std::vector<Block> blocks;
  for (int i = 0; i < 5; ++i) blocks.push_back(pool->Take(1 << 20));
  blocks.clear();  // five released: two kept, three freed
  EXPECT_EQ(pool->cached_bytes(), std::size_t{2} << 20);
}

TEST(BlockPool, BlocksOutliveThePoolsOwnerAndComeBackFromAnyThread) {
  Block kept;
  std::weak_ptr<BlockPool> weak;
  {
    auto pool = BlockPool::Create(4 << 20);
    weak = pool;
    kept = pool->Take(100);
  }
  ASSERT_FALSE(weak.expired());  // the block keeps its pool
  std::memset(kept.get(), 1, 100);
  std::thread([b = std::move(kept)]() mutable { b.reset(); }).join();
  EXPECT_TRUE(weak.expired());  // the last block gone, the pool (and its cache) with it
}

TEST(BlockPool, AFreestandingBlockIsFreedOnRelease) {
  Block b = NewBlock(1000);
  std::memset(b.get(), 2, 1000);
  EXPECT_EQ(b.get_deleter().pool, nullptr);
}

}  // namespace
}  // namespace lockstep::base

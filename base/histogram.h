#pragma once
// A fixed-bucket histogram that hot paths can record into from any thread: one relaxed atomic
// add per bucket hit and one for the sum, no lock, no allocation. Readers (a metrics scrape)
// take a Snapshot at any time; the snapshot's count is the sum of its buckets, so it is
// consistent with itself even while writers race it (a value may show in the next scrape).
//
// Bounds are inclusive upper edges, strictly increasing, fixed at construction; a value above
// the last bound falls into the overflow bucket ("+Inf" in Prometheus terms).
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "base/assert.h"

namespace lockstep::base {

class AtomicHistogram {
 public:
  static constexpr std::size_t kMaxBounds = 31;

  struct Snapshot {
    std::vector<std::uint64_t> bounds;  // upper edges, as constructed
    std::vector<std::uint64_t> counts;  // per bucket, bounds.size() + 1 (the last: overflow)
    std::uint64_t sum = 0;              // of every recorded value
    std::uint64_t count = 0;            // sum of counts
  };

  AtomicHistogram(std::initializer_list<std::uint64_t> bounds) : size_(bounds.size()) {
    LOCKSTEP_ASSERT(size_ > 0 && size_ <= kMaxBounds);
    std::size_t i = 0;
    for (std::uint64_t b : bounds) {
      LOCKSTEP_ASSERT(i == 0 || b > bounds_[i - 1]);
      bounds_[i++] = b;
    }
  }
  AtomicHistogram(const AtomicHistogram&) = delete;
  AtomicHistogram& operator=(const AtomicHistogram&) = delete;

  void Record(std::uint64_t value) {
    // A linear scan of at most 31 bounds in one or two cache lines beats a binary search's
    // unpredictable branches at this size.
    std::size_t i = 0;
    while (i < size_ && value > bounds_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value, std::memory_order_relaxed);
  }

  Snapshot Take() const {
    Snapshot s;
    s.bounds.assign(bounds_.begin(), bounds_.begin() + static_cast<std::ptrdiff_t>(size_));
    s.counts.resize(size_ + 1);
    for (std::size_t i = 0; i <= size_; ++i) {
      s.counts[i] = counts_[i].load(std::memory_order_relaxed);
      s.count += s.counts[i];
    }
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::size_t size_;
  std::array<std::uint64_t, kMaxBounds> bounds_{};
  std::array<std::atomic<std::uint64_t>, kMaxBounds + 1> counts_{};
  std::atomic<std::uint64_t> sum_{0};
};

// Latencies recorded in nanoseconds: 10 µs to 10 s, about three buckets per decade.
inline AtomicHistogram LatencyHistogramNs() {
  return AtomicHistogram({10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000,
                          5'000'000, 10'000'000, 25'000'000, 50'000'000, 100'000'000, 250'000'000,
                          500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000,
                          10'000'000'000});
}

// Counts (records in a group commit, say): powers of two from 1 to 65,536.
inline AtomicHistogram CountHistogram() {
  return AtomicHistogram(
      {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536});
}

}  // namespace lockstep::base

// Proves that the append / group-commit path allocates nothing per record in steady state: after
// a warm-up, thousands of pipelined appends (each refilled from its completion callback, as a
// producer does) through both real I/O backends cause zero heap allocations in any thread.
// Global operator new is replaced in this binary only (tests/testing/allocation_counter.cc).
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "storage/log.h"
#include "tests/testing/allocation_counter.h"
#include "tests/testing/backends.h"
#include "tests/testing/temp_dir.h"

namespace lockstep::storage {
namespace {

// Keeps `outstanding` appends in flight until `total` have completed; all on the writer thread.
class Pipeline {
 public:
  Pipeline(Log& log, std::uint64_t total) : log_(log), total_(total), record_(200, std::byte{1}) {}

  void Start(int outstanding) {
    for (int i = 0; i < outstanding; ++i) Issue();
  }
  void Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return finished_; });
  }
  bool ok() const { return ok_; }

 private:
  void Issue() {
    if (issued_.fetch_add(1) >= total_) return;
    if (!log_.Append(record_, [this](Lsn, const Status& s) { Done(s); }).ok()) ok_ = false;
  }
  void Done(const Status& s) {
    if (!s.ok()) ok_ = false;
    if (++completed_ == total_) {
      std::lock_guard lock(mu_);
      finished_ = true;
      cv_.notify_all();
      return;
    }
    Issue();
  }

  Log& log_;
  const std::uint64_t total_;
  const std::vector<std::byte> record_;
  std::atomic<std::uint64_t> issued_{0};
  std::uint64_t completed_ = 0;
  std::atomic<bool> ok_{true};
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;
};

class LogAllocationTest : public ::testing::TestWithParam<IoBackend> {};

TEST_P(LogAllocationTest, SteadyStateAppendsAllocateNothing) {
  testing::TempDir dir;
  LOCKSTEP_IO_OR_SKIP(io, GetParam());
  LogOptions options;
  options.dir = dir.Sub("log");
  options.io = io.get();
  options.segment_bytes = 16 << 20;  // no roll during the test: rolls allocate, once per segment
  options.preallocation = Preallocation::kFallocate;
  auto log = std::move(Log::Open(options)).value();
  constexpr int kOutstanding = 16;
  {
    Pipeline warmup(*log, 3000);
    warmup.Start(kOutstanding);
    warmup.Wait();
    ASSERT_TRUE(warmup.ok());
  }
  auto measured = std::make_unique<Pipeline>(*log, 5000);
  const std::uint64_t before = testing::AllocationCount();
  measured->Start(kOutstanding);
  measured->Wait();
  const std::uint64_t allocations = testing::AllocationCount() - before;
  ASSERT_TRUE(measured->ok());
  EXPECT_EQ(allocations, 0u) << "allocations during 5,000 steady-state appends";
  EXPECT_EQ(log->stats().rolls, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, LogAllocationTest, testing::kRealBackends, testing::BackendName);

}  // namespace
}  // namespace lockstep::storage

// Proves the real I/O backends (io_uring and posix) against the Io contract on the real disk:
// writes land where asked and show through mappings, errors carry the right codes, directory
// operations work, and the lock file refuses a second opener.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "storage/io.h"
#include "storage/posix_io.h"
#include "storage/uring_io.h"
#include "tests/testing/backends.h"
#include "tests/testing/bytes.h"
#include "tests/testing/temp_dir.h"

namespace lockstep::storage {
namespace {

using base::StatusCode;
using testing::AsBytes;
using testing::AsString;

class IoTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    LOCKSTEP_IO_OR_SKIP(io, GetParam());
    io_ = std::move(io);
    ASSERT_EQ(io_->Name(), GetParam() == IoBackend::kUring ? "io_uring" : "posix");
  }
  Status WriteString(File& f, std::uint64_t offset, std::string_view s, bool sync) {
    ConstBytes part = AsBytes(s);
    std::span<const ConstBytes> parts(&part, 1);
    return sync ? io_->WriteAndSync(f, offset, parts) : io_->Write(f, offset, parts);
  }

  testing::TempDir dir_;
  std::unique_ptr<Io> io_;
};

TEST_P(IoTest, WritesShowThroughTheMapping) {
  auto f = io_->CreateFile(dir_.Sub("a"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_TRUE(io_->Allocate(**f, 8192, Preallocation::kZeroFill).ok());
  auto map = io_->Map(**f, 8192);
  ASSERT_TRUE(map.ok());
  EXPECT_EQ((*map)->bytes().size(), 8192u);
  EXPECT_EQ((*map)->bytes()[100], std::byte{0});
  ASSERT_TRUE(WriteString(**f, 100, "hello", true).ok());
  EXPECT_EQ(AsString((*map)->bytes().subspan(100, 5)), "hello");
  // Scatter-gather: three parts land contiguously.
  std::array<ConstBytes, 3> parts{AsBytes("ab"), AsBytes(""), AsBytes("cdef")};
  ASSERT_TRUE(io_->WriteAndSync(**f, 4094, parts).ok());  // across a page boundary
  EXPECT_EQ(AsString((*map)->bytes().subspan(4094, 6)), "abcdef");
  ASSERT_TRUE(io_->Sync(**f).ok());
  EXPECT_EQ(*io_->FileSize(**f), 8192u);
}

TEST_P(IoTest, FallocateAndZeroFillBothGiveZeros) {
  for (auto mode : {Preallocation::kFallocate, Preallocation::kZeroFill}) {
    const std::string path = dir_.Sub(mode == Preallocation::kFallocate ? "fa" : "zf");
    auto f = io_->CreateFile(path);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(io_->Allocate(**f, (3 << 20) + 5, mode).ok());
    EXPECT_EQ(*io_->FileSize(**f), (3u << 20) + 5);
    auto map = io_->Map(**f, (3 << 20) + 5);
    ASSERT_TRUE(map.ok());
    const auto bytes = (*map)->bytes();
    EXPECT_TRUE(
        std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; }));
    // Allocating less than the size is a no-op.
    ASSERT_TRUE(io_->Allocate(**f, 10, mode).ok());
    EXPECT_EQ(*io_->FileSize(**f), (3u << 20) + 5);
  }
}

TEST_P(IoTest, ErrorsCarryCodes) {
  EXPECT_EQ(io_->OpenFile(dir_.Sub("missing")).status().code(), StatusCode::kNotFound);
  auto f = io_->CreateFile(dir_.Sub("x"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(io_->CreateFile(dir_.Sub("x")).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(io_->Remove(dir_.Sub("missing")).code(), StatusCode::kNotFound);
  EXPECT_EQ(io_->ListDir(dir_.Sub("nodir")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(io_->CreateDir(dir_.Sub("no/such/parent")).code(), StatusCode::kNotFound);
  EXPECT_NE(io_->CreateFile(dir_.Sub("missing-dir/f")).status().message().find("missing-dir"),
            std::string::npos);
}

TEST_P(IoTest, DirectoryOperations) {
  const std::string d = dir_.Sub("d");
  ASSERT_TRUE(io_->CreateDir(d).ok());
  ASSERT_TRUE(io_->CreateDir(d).ok());  // exists already: fine
  { ASSERT_TRUE(io_->CreateFile(d + "/one").ok()); }
  ASSERT_TRUE(io_->Rename(d + "/one", d + "/two").ok());
  ASSERT_TRUE(io_->SyncDir(d).ok());
  auto names = io_->ListDir(d);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"two"});
  ASSERT_TRUE(io_->Remove(d + "/two").ok());
  EXPECT_TRUE(io_->ListDir(d)->empty());
  // A file where a directory is wanted.
  { ASSERT_TRUE(io_->CreateFile(dir_.Sub("plain")).ok()); }
  EXPECT_EQ(io_->CreateDir(dir_.Sub("plain")).code(), StatusCode::kFailedPrecondition);
}

TEST_P(IoTest, LockRefusesASecondOpenerAndIsReleased) {
  const std::string path = dir_.Sub("LOCK");
  {
    auto first = io_->LockFile(path);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    auto second = io_->LockFile(path);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find(std::to_string(::getpid())), std::string::npos)
        << second.status().ToString();
  }
  EXPECT_TRUE(io_->LockFile(path).ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, IoTest, testing::kRealBackends, testing::BackendName);

TEST(MakeIo, AutoPicksAWorkingBackend) {
  auto io = MakeIo(IoBackend::kAuto);
  ASSERT_TRUE(io.ok());
  EXPECT_TRUE((*io)->Name() == "io_uring" || (*io)->Name() == "posix");
  EXPECT_EQ((*MakeIo(IoBackend::kPosix))->Name(), "posix");
  EXPECT_EQ((*MakeIo())->Name(), "posix");  // kDefaultIoBackend
}

}  // namespace
}  // namespace lockstep::storage

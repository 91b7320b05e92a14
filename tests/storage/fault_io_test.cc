// Proves that FaultInjectingIo implements DESIGN.md's fault model: synced data always survives
// a crash; unsynced writes may be lost or torn (and, over many seeds, are); unsynced directory
// changes may be lost; a failed fdatasync loses its data for good; injected faults and crash
// points behave as documented.
#include "storage/fault_io.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/testing/bytes.h"
#include "tests/testing/seed.h"

namespace lockstep::storage {
namespace {

using base::StatusCode;
using testing::AsBytes;
using testing::AsString;

Status Put(Io& io, File& f, std::uint64_t off, std::string_view s) {
  ConstBytes part = AsBytes(s);
  return io.Write(f, off, std::span<const ConstBytes>(&part, 1));
}

std::string Content(const FaultInjectingIo& io, const std::string& path) {
  auto bytes = io.ReadAll(path);
  return bytes.ok() ? AsString(*bytes) : "<missing>";
}

// A durable file "f" holding `durable`, then an unsynced overwrite with `update`.
void Prepare(FaultInjectingIo& io, std::string_view durable, std::string_view update) {
  ASSERT_TRUE(io.CreateDir("d").ok());
  auto f = io.CreateFile("d/f");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(Put(io, **f, 0, durable).ok());
  ASSERT_TRUE(io.Sync(**f).ok());
  ASSERT_TRUE(io.SyncDir("d").ok());
  ASSERT_TRUE(Put(io, **f, 0, update).ok());
  EXPECT_EQ(Content(io, "d/f"), update);  // reads see unsynced data
}

TEST(FaultIo, SyncedDataSurvivesEveryCrash) {
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    FaultInjectingIo io;
    Prepare(io, "durable!", "DURABLE!");
    auto f = io.OpenFile("d/f");
    ASSERT_TRUE(io.Sync(**f).ok());
    std::mt19937_64 rng(seed);
    io.Restart(rng);
    ASSERT_EQ(Content(io, "d/f"), "DURABLE!") << seed;
  }
}

TEST(FaultIo, UnsyncedWritesAreKeptLostOrTorn) {
  std::set<std::string> outcomes;
  bool zero_torn = false;
  for (std::uint64_t seed = 0; seed < 400; ++seed) {
    FaultInjectingIo io;
    Prepare(io, "aaaaaaaa", "bbbbbbbb");
    std::mt19937_64 rng(seed);
    io.Restart(rng);
    const std::string c = Content(io, "d/f");
    ASSERT_EQ(c.size(), 8u);
    // Whatever survives is a prefix of the new bytes followed by old bytes, zeros or garbage.
    std::size_t prefix = 0;
    while (prefix < 8 && c[prefix] == 'b') ++prefix;
    const std::string rest = c.substr(prefix);
    if (rest.find('\0') != std::string::npos) zero_torn = true;
    outcomes.insert(prefix == 8 ? "kept" : prefix == 0 && rest == "aaaaaaaa" ? "lost" : "torn");
  }
  EXPECT_EQ(outcomes, (std::set<std::string>{"kept", "lost", "torn"}));
  EXPECT_TRUE(zero_torn);
}

TEST(FaultIo, UnsyncedCreateMayVanishSyncedCreateStays) {
  bool vanished = false;
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    FaultInjectingIo io;
    ASSERT_TRUE(io.CreateDir("d").ok());
    { ASSERT_TRUE(io.CreateFile("d/early").ok()); }
    { ASSERT_TRUE(io.CreateFile("d/synced").ok()); }
    ASSERT_TRUE(io.SyncDir("d").ok());
    { ASSERT_TRUE(io.CreateFile("d/late").ok()); }
    std::mt19937_64 rng(seed);
    io.Restart(rng);
    EXPECT_TRUE(io.Exists("d/synced"));
    EXPECT_TRUE(io.Exists("d/early"));
    if (!io.Exists("d/late")) vanished = true;
  }
  EXPECT_TRUE(vanished);
}

TEST(FaultIo, UnsyncedRenameAndRemoveMayBeUndone) {
  bool rename_lost = false;
  bool remove_lost = false;
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    FaultInjectingIo io;
    ASSERT_TRUE(io.CreateDir("d").ok());
    { ASSERT_TRUE(io.CreateFile("d/a").ok()); }
    { ASSERT_TRUE(io.CreateFile("d/b").ok()); }
    ASSERT_TRUE(io.SyncDir("d").ok());
    ASSERT_TRUE(io.Rename("d/a", "d/c").ok());
    ASSERT_TRUE(io.Remove("d/b").ok());
    EXPECT_FALSE(io.Exists("d/a"));
    std::mt19937_64 rng(seed);
    io.Restart(rng);
    // A prefix survives: never the remove without the rename before it.
    EXPECT_NE(io.Exists("d/a"), io.Exists("d/c"));
    if (io.Exists("d/a")) rename_lost = true;
    if (io.Exists("d/b")) remove_lost = true;
    if (io.Exists("d/a")) {
      EXPECT_TRUE(io.Exists("d/b"));
    }
  }
  EXPECT_TRUE(rename_lost);
  EXPECT_TRUE(remove_lost);
}

TEST(FaultIo, FailedSyncLosesDataForGoodEvenIfTheNextSyncSucceeds) {
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    FaultInjectingIo io;
    Prepare(io, "old-data", "new-data");
    auto f = io.OpenFile("d/f");
    io.AddFault(FaultRule{0, OpKind::kSync, "", FaultKind::kEio, false});
    EXPECT_EQ(io.Sync(**f).code(), StatusCode::kIoError);
    EXPECT_EQ(Content(io, "d/f"), "new-data");  // still readable, as on Linux
    EXPECT_TRUE(io.Sync(**f).ok());             // and the next sync "succeeds"
    std::mt19937_64 rng(seed);
    io.Restart(rng);
    ASSERT_EQ(Content(io, "d/f"), "old-data") << seed;
  }
}

TEST(FaultIo, CrashPointStopsThatOperationAndEveryLaterOne) {
  FaultInjectingIo io;
  ASSERT_TRUE(io.CreateDir("d").ok());  // op 1
  auto f = io.CreateFile("d/f");        // op 2
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(io.operations(), 2u);
  io.CrashAtOperation(4);
  EXPECT_TRUE(Put(io, **f, 0, "x").ok());                // op 3
  EXPECT_EQ(io.Sync(**f).code(), StatusCode::kIoError);  // op 4: crash
  EXPECT_TRUE(io.crashed());
  EXPECT_EQ(Put(io, **f, 0, "y").code(), StatusCode::kIoError);  // dead
  EXPECT_EQ(Content(io, "d/f"), "x");
  std::mt19937_64 rng(1);
  io.Restart(rng);
  EXPECT_FALSE(io.crashed());
  EXPECT_EQ(io.operations(), 0u);
  // The old handle belongs to the dead process.
  EXPECT_EQ(io.Sync(**f).code(), StatusCode::kIoError);
}

TEST(FaultIo, InjectedFaults) {
  FaultInjectingIo io(7);
  ASSERT_TRUE(io.CreateDir("d").ok());
  auto f = io.CreateFile("d/f");
  ASSERT_TRUE(f.ok());
  io.AddFault(FaultRule{0, OpKind::kWrite, "d/f", FaultKind::kEnospc, false});
  EXPECT_EQ(Put(io, **f, 0, "abc").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(Content(io, "d/f"), "");
  EXPECT_TRUE(Put(io, **f, 0, "abc").ok());  // not sticky
  io.AddFault(FaultRule{0, OpKind::kWrite, "", FaultKind::kShortWrite, false});
  EXPECT_EQ(Put(io, **f, 0, "0123456789").code(), StatusCode::kResourceExhausted);
  const std::string c = Content(io, "d/f");
  EXPECT_TRUE(c.rfind("012", 0) == 0 || c == "abc" || c.substr(0, 1) == "0") << c;
  io.AddFault(FaultRule{0, OpKind::kRename, "", FaultKind::kEio, true});
  EXPECT_EQ(io.Rename("d/f", "d/g").code(), StatusCode::kIoError);
  EXPECT_EQ(io.Rename("d/f", "d/g").code(), StatusCode::kIoError);  // sticky
  io.ClearFaults();
  EXPECT_TRUE(io.Rename("d/f", "d/g").ok());
  // A fault at one operation number only.
  io.AddFault(FaultRule{io.operations() + 2, OpKind::kAny, "", FaultKind::kEio, false});
  EXPECT_TRUE(io.ListDir("d").ok());
  EXPECT_FALSE(io.ListDir("d").ok());
  EXPECT_TRUE(io.ListDir("d").ok());
  // The first matching operation after a given one: earlier matches are left alone.
  io.AddFault(FaultRule{0, OpKind::kListDir, "", FaultKind::kEio, false, io.operations() + 2});
  EXPECT_TRUE(io.ListDir("d").ok());
  EXPECT_TRUE(io.ListDir("d").ok());
  EXPECT_FALSE(io.ListDir("d").ok());
  EXPECT_TRUE(io.ListDir("d").ok());
}

TEST(FaultIo, LocksAreExclusiveAndDieWithTheProcess) {
  FaultInjectingIo io;
  ASSERT_TRUE(io.CreateDir("d").ok());
  auto lock = io.LockFile("d/LOCK");
  ASSERT_TRUE(lock.ok());
  EXPECT_EQ(io.LockFile("d/LOCK").status().code(), StatusCode::kFailedPrecondition);
  std::mt19937_64 rng(1);
  io.Restart(rng);
  auto relock = io.LockFile("d/LOCK");
  EXPECT_TRUE(relock.ok());
  lock->reset();  // the dead process's lock going away must not release the new one
  EXPECT_EQ(io.LockFile("d/LOCK").status().code(), StatusCode::kFailedPrecondition);
}

TEST(FaultIo, MappingsSeeWritesAndOutliveRestart) {
  FaultInjectingIo io;
  ASSERT_TRUE(io.CreateDir("d").ok());
  auto f = io.CreateFile("d/f");
  ASSERT_TRUE(io.Allocate(**f, 16, Preallocation::kZeroFill).ok());
  auto map = io.Map(**f, 16);
  ASSERT_TRUE(map.ok());
  ASSERT_TRUE(Put(io, **f, 2, "hi").ok());
  EXPECT_EQ(AsString((*map)->bytes().subspan(2, 2)), "hi");
  std::mt19937_64 rng(3);
  io.Restart(rng);
  EXPECT_EQ(AsString((*map)->bytes().subspan(2, 2)), "hi");
}

}  // namespace
}  // namespace lockstep::storage

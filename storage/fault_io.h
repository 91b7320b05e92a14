#pragma once
// FaultInjectingIo: an in-memory file system that implements DESIGN.md's fault model exactly.
//
// It sits under the real storage code (never a mock of it). It tracks, per file, what reads see
// (the "page cache") apart from what is durable, and per directory which changes are durable:
//
//   * at a crash (Restart), any subset of the unsynced writes of a file is lost, and any write
//     may be torn at any byte, the torn part zero-filled, garbage, or left as it was before;
//     unsynced size changes may be lost;
//   * unsynced directory changes (create, rename, remove) are lost: a random prefix of each
//     directory's unsynced changes survives, possibly none (journaling file systems apply
//     metadata in order);
//   * any operation may fail: EIO, ENOSPC, or a short write (a prefix written, then ENOSPC);
//   * after a failed fdatasync the unsynced data is gone for good, reads still return it, and
//     a later fdatasync reports success (as Linux does).
//
// Two kinds of restart: Restart(rng) is a power loss (the rules above); RestartProcess() is a
// process crash (kill -9): the kernel keeps everything, synced or not, so a recovering process
// reads unsynced data — which it must sync before it treats it as durable.
//
// Every call is one numbered operation (WriteAndSync is two: the write, then the sync), so a
// test can crash "at any operation": CrashAtOperation(n) makes operation n and every later one
// fail without effect, as if the process had died just before it. Restart(rng) then applies the
// fault model, releases locks, invalidates old File handles and lets the test reopen. Mappings
// made before a restart stay readable (they show the dead process's view).
//
// Deterministic: all randomness comes from the rng given to Restart and from the seed given at
// construction. Thread-safe: one mutex serializes every operation.
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "storage/io.h"

namespace lockstep::storage {

enum class OpKind : unsigned char {
  kAny,
  kCreate,
  kOpen,
  kSize,
  kAllocate,
  kWrite,
  kSync,
  kMap,
  kRename,
  kRemove,
  kSyncDir,
  kCreateDir,
  kListDir,
  kLock,
};
std::string_view OpKindName(OpKind kind);

enum class FaultKind : unsigned char {
  kEio,         // the operation fails with EIO and has no effect
  kEnospc,      // the operation fails with ENOSPC and has no effect
  kShortWrite,  // a write stores a random prefix, then fails with ENOSPC (other ops: kEnospc)
};

// Which operations a fault applies to. Zero/empty fields match anything.
struct FaultRule {
  std::uint64_t at_operation = 0;  // this operation number only
  OpKind kind = OpKind::kAny;
  std::string path_contains;
  FaultKind fault = FaultKind::kEio;
  bool sticky = false;                // keep failing every matching operation, not only the first
  std::uint64_t after_operation = 0;  // only operations numbered above this one
};

// How a crash treats each unsynced write. Probabilities of the three outcomes; the rest of the
// probability mass keeps the write whole.
struct CrashModel {
  double lose_write = 0.35;
  double tear_write = 0.35;
  double lose_resize = 0.5;
};

class FaultInjectingIo final : public Io {
 public:
  explicit FaultInjectingIo(std::uint64_t seed = 1);
  ~FaultInjectingIo() override;

  std::string_view Name() const override { return "fault"; }

  Result<std::unique_ptr<File>> CreateFile(const std::string& path) override;
  Result<std::unique_ptr<File>> OpenFile(const std::string& path) override;
  Result<std::uint64_t> FileSize(File& file) override;
  Status Allocate(File& file, std::uint64_t bytes, Preallocation mode) override;
  Status Write(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) override;
  Status Sync(File& file) override;
  Result<std::shared_ptr<const Mapping>> Map(File& file, std::uint64_t bytes) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  Status CreateDir(const std::string& dir) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;

  // --- Fault control -------------------------------------------------------------------

  // Operations performed (or attempted) since construction or the last Restart.
  std::uint64_t operations() const;
  // Operation number `n` (counting from 1 after construction or Restart) and all later ones
  // fail with kIoError "simulated crash" and change nothing. 0 cancels.
  void CrashAtOperation(std::uint64_t n);
  // The next operation of `kind` whose path contains `path_contains`, and all later ones, fail
  // as a crash (to aim one at a rare moment, such as retention removing a segment). Cancelled
  // by CrashAtOperation(0) and by a restart.
  void CrashAtNext(OpKind kind, std::string path_contains);
  bool crashed() const;
  // The operation the crash struck (its kind and path), while crashed(): for tests that check
  // where their crashes land.
  struct CrashPoint {
    OpKind kind = OpKind::kAny;
    std::string path;
  };
  CrashPoint crash_point() const;
  void AddFault(FaultRule rule);
  void ClearFaults();
  // Called for every operation with its number, kind and path, before it takes effect.
  void SetObserver(std::function<void(std::uint64_t, OpKind, const std::string&)> observer);

  // Power loss and restart: applies CrashModel to everything unsynced, using `rng`; releases
  // locks; makes old File handles fail; resets the operation count, the crash point and faults.
  void Restart(std::mt19937_64& rng, const CrashModel& model = {});
  // Process crash: the same bookkeeping as Restart (locks, handles, counters, faults), but file
  // contents, unsynced writes and unsynced directory changes all stay as they are.
  void RestartProcess();

  // --- Inspection and media damage (tests only; not counted as operations) ---------------

  bool Exists(const std::string& path) const;
  // What a read of the file returns now (including unsynced data).
  Result<std::vector<std::byte>> ReadAll(const std::string& path) const;
  // Overwrites bytes both in the page cache and on "disk": silent media corruption.
  Status Corrupt(const std::string& path, std::uint64_t offset, ConstBytes bytes);
  // Bytes held by unsynced writes across all files (for tests of the fault model itself).
  std::uint64_t UnsyncedBytes() const;

  struct Inode;

 private:
  struct DirOp;
  class FaultFile;

  // Counts the operation, then applies the crash point and fault rules. Returns the error the
  // operation must fail with, or ok. `fault` receives a matched FaultKind for the caller to act on.
  Status Begin(OpKind kind, const std::string& path, FaultKind* fault);
  Inode& Live(File& file, Status* status);
  // Begin() for an operation on an open file, which must be a handle of the living process.
  Result<Inode*> BeginOnFile(OpKind kind, File& file);
  void ApplyDirOp(std::map<std::string, std::shared_ptr<Inode>>& files, const DirOp& op) const;
  bool DirExistsLocked(const std::string& dir) const;
  Status WriteLocked(Inode& inode, std::uint64_t offset, std::span<const ConstBytes> parts,
                     std::uint64_t limit);

  mutable std::mutex mu_;
  std::mt19937_64 fault_rng_;
  std::uint64_t generation_ = 1;
  std::uint64_t operations_ = 0;
  std::uint64_t crash_at_ = 0;
  std::optional<std::pair<OpKind, std::string>> crash_at_next_;
  CrashPoint crash_point_;
  bool crashed_ = false;
  std::vector<FaultRule> rules_;
  std::function<void(std::uint64_t, OpKind, const std::string&)> observer_;

  std::map<std::string, std::shared_ptr<Inode>> files_;          // what the process sees
  std::map<std::string, std::shared_ptr<Inode>> durable_files_;  // what survives a crash
  std::set<std::string> dirs_;
  std::vector<DirOp> pending_dir_ops_;
  std::set<std::string> locks_;
};

}  // namespace lockstep::storage

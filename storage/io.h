#pragma once
// The I/O interface: every file operation of the storage layer goes through an Io.
//
// Three implementations exist behind this one contract:
//   * UringIo (uring_io.h): the group-commit path (WriteAndSync) through a dedicated io_uring,
//     the write and its fdatasync submitted as one linked pair; everything else as PosixIo.
//   * PosixIo (posix_io.h): pwritev/fdatasync; reads through mmap. The default for the log
//     (kDefaultIoBackend, measured: docs/storage.md), and what MakeIo(kAuto) falls back to,
//     with a log line, where io_uring is blocked (Docker's default seccomp profile).
//   * FaultInjectingIo (fault_io.h): an in-memory file system that implements DESIGN.md's
//     fault model exactly and can crash at any operation; tests and the torture driver use it.
//
// Thread safety: every method of every implementation may be called from any thread.
// Files: a File is owned by whoever opened it and is closed by its destructor. A Mapping stays
// valid while any shared_ptr to it lives, even after its file was closed or removed.
// Errors: EIO and friends come back as kIoError, a full disk as kResourceExhausted, a missing
// file as kNotFound, an existing one as kAlreadyExists. Nothing here retries a failed sync.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lockstep::storage {

using base::Result;
using base::Status;

using ConstBytes = std::span<const std::byte>;

// An open file, readable and writable.
class File {
 public:
  virtual ~File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }

 protected:
  explicit File(std::string path) : path_(std::move(path)) {}

 private:
  std::string path_;
};

// A read-only view of a file's first bytes().size() bytes. Writes to the file through the Io
// become visible in the view (as with a shared mmap); the view never changes length.
class Mapping {
 public:
  virtual ~Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  ConstBytes bytes() const { return bytes_; }

 protected:
  Mapping() = default;
  ConstBytes bytes_;
};

// An exclusive advisory lock held until destruction.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

// How Allocate() reserves space. Measured here (docs/storage.md): a small write + fdatasync
// into blocks that were written before costs about half of one into fallocate'd (unwritten)
// extents, and a third of one that extends the file; writing zeros costs a full extra write.
enum class Preallocation : unsigned char {
  kFallocate,  // posix_fallocate: instant, leaves unwritten extents
  kZeroFill,   // write zeros over the whole range: slow once, fastest syncs afterwards
  kAdaptive,   // (Log only) zero-fill while the log writes slowly, else fallocate
};

class Io {
 public:
  virtual ~Io() = default;

  // "io_uring", "posix" or "fault": for logs and reports.
  virtual std::string_view Name() const = 0;

  // Creates a new, empty file; kAlreadyExists if the path exists. Not durable until SyncDir.
  virtual Result<std::unique_ptr<File>> CreateFile(const std::string& path) = 0;
  // Opens an existing file for reading and writing; kNotFound if it does not exist.
  virtual Result<std::unique_ptr<File>> OpenFile(const std::string& path) = 0;
  virtual Result<std::uint64_t> FileSize(File& file) = 0;

  // Makes the file at least `bytes` long, every new byte zero, by `mode`. Not durable until Sync.
  virtual Status Allocate(File& file, std::uint64_t bytes, Preallocation mode) = 0;
  // Writes the concatenation of `parts` at `offset`, completely or not at all successfully
  // (short writes are resubmitted internally). Not durable until Sync.
  virtual Status Write(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) = 0;
  // fdatasync. After a failure the unsynced data may be gone even if a later Sync succeeds:
  // callers must treat a failed Sync as final (fail-stop), never retry it.
  virtual Status Sync(File& file) = 0;
  // Write then Sync; io_uring submits both as one linked pair.
  virtual Status WriteAndSync(File& file, std::uint64_t offset, std::span<const ConstBytes> parts);

  // Maps the first `bytes` bytes read-only. REQUIRES: bytes <= FileSize(file).
  virtual Result<std::shared_ptr<const Mapping>> Map(File& file, std::uint64_t bytes) = 0;

  // Directory operations are not durable until SyncDir of the directory that holds them.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& dir) = 0;
  // Creates `dir` if it is missing (its parent must exist) and makes that durable.
  virtual Status CreateDir(const std::string& dir) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..", in no particular order.
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;

  // Takes an exclusive lock on `path` (created if missing), or kFailedPrecondition naming the
  // holder when another opener — in this process or another — holds it.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
};

enum class IoBackend : unsigned char { kAuto, kUring, kPosix };

// Measured on the project's machines (docs/storage.md, "I/O backend"): the log's writer is a
// dedicated thread that waits for each fdatasync anyway, and io_uring always punts fsync to an
// io-wq worker, adding a thread hop per group commit: posix was faster at one outstanding
// append and even under load. So posix is the default; io_uring stays one flag away.
inline constexpr IoBackend kDefaultIoBackend = IoBackend::kPosix;

// kAuto: io_uring when the kernel and the sandbox allow it, else posix, with one log line
// saying why. kUring fails with kUnavailable when io_uring cannot be used.
Result<std::unique_ptr<Io>> MakeIo(IoBackend backend = kDefaultIoBackend);

// Joins a directory and a name with exactly one '/'.
std::string JoinPath(std::string_view dir, std::string_view name);

}  // namespace lockstep::storage

#pragma once
// PosixIo: the Io over plain system calls — pwritev, fdatasync, posix_fallocate, mmap, flock.
// Used where io_uring is blocked, and as the base of UringIo, which replaces only the write and
// sync paths. Thread-safe: it keeps no mutable state.
#include "storage/io.h"

namespace lockstep::storage {

class PosixIo : public Io {
 public:
  std::string_view Name() const override { return "posix"; }

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

 protected:
  // The descriptor behind a File this Io (or a subclass) opened.
  static int Fd(File& file);
};

// Maps an errno of a data-path call (write, sync) to a Status, asserting on the values that can
// only mean a bug of ours (EBADF, EFAULT, EINVAL): STYLE.md's classification.
Status DataPathErrno(int err, std::string_view operation, const std::string& path);
// Maps an errno of any other call to a Status.
Status ErrnoStatus(int err, std::string_view operation, const std::string& path);

}  // namespace lockstep::storage

#include "storage/posix_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace lockstep::storage {
namespace {

class PosixFile final : public File {
 public:
  PosixFile(std::string path, int fd) : File(std::move(path)), fd_(fd) {}
  ~PosixFile() override { ::close(fd_); }
  int fd() const { return fd_; }

 private:
  int fd_;
};

class PosixMapping final : public Mapping {
 public:
  PosixMapping(void* addr, std::size_t length) : addr_(addr), length_(length) {
    bytes_ = ConstBytes(static_cast<const std::byte*>(addr), length);
  }
  ~PosixMapping() override {
    if (addr_ != nullptr) ::munmap(addr_, length_);
  }

 private:
  void* addr_;
  std::size_t length_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the descriptor releases the flock

 private:
  int fd_;
};

// Zeros for zero-filling, shared by every Allocate call.
constexpr std::size_t kZeroChunkBytes = 1 << 20;
const std::array<std::byte, kZeroChunkBytes> kZeros{};

std::string ParentDir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Status ErrnoStatus(int err, std::string_view operation, const std::string& path) {
  std::string message = fmt::format("{} {}: {}", operation, path, std::strerror(err));
  switch (err) {
    case ENOENT:
      return base::NotFound(std::move(message));
    case EEXIST:
      return base::AlreadyExists(std::move(message));
    case ENOSPC:
    case EDQUOT:
      return base::ResourceExhausted(std::move(message));
    case EACCES:
    case EPERM:
    case EROFS:
    case ENOTDIR:
    case EISDIR:
      return base::FailedPrecondition(std::move(message));
    default:
      return base::IoError(std::move(message));
  }
}

Status DataPathErrno(int err, std::string_view operation, const std::string& path) {
  // These mean a wrong descriptor, buffer or offset: a bug in Lockstep, not a disk problem.
  LOCKSTEP_ASSERT_MSG(err != EBADF && err != EFAULT && err != EINVAL,
                      "invalid argument on the data path");
  std::string message = fmt::format("{} {}: {}", operation, path, std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return base::ResourceExhausted(std::move(message));
  return base::IoError(std::move(message));
}

int PosixIo::Fd(File& file) { return static_cast<PosixFile&>(file).fd(); }

Result<std::unique_ptr<File>> PosixIo::CreateFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create", path);
  return std::unique_ptr<File>(std::make_unique<PosixFile>(path, fd));
}

Result<std::unique_ptr<File>> PosixIo::OpenFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  return std::unique_ptr<File>(std::make_unique<PosixFile>(path, fd));
}

Result<std::uint64_t> PosixIo::FileSize(File& file) {
  struct stat st {};
  if (::fstat(Fd(file), &st) != 0) return ErrnoStatus(errno, "stat", file.path());
  return static_cast<std::uint64_t>(st.st_size);
}

Status PosixIo::Allocate(File& file, std::uint64_t bytes, Preallocation mode) {
  LOCKSTEP_ASSIGN_OR_RETURN(std::uint64_t size, FileSize(file));
  if (size >= bytes) return Status::Ok();
  LOCKSTEP_ASSERT(mode != Preallocation::kAdaptive);  // the log resolves it first
  if (mode == Preallocation::kFallocate) {
    int err = ::posix_fallocate(Fd(file), 0, static_cast<off_t>(bytes));
    if (err != 0) return ErrnoStatus(err, "fallocate", file.path());
    return Status::Ok();
  }
  for (std::uint64_t pos = size; pos < bytes;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kZeroChunkBytes, bytes - pos));
    ConstBytes part(kZeros.data(), n);
    LOCKSTEP_RETURN_IF_ERROR(PosixIo::Write(file, pos, std::span<const ConstBytes>(&part, 1)));
    pos += n;
  }
  return Status::Ok();
}

Status PosixIo::Write(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) {
  constexpr std::size_t kIovMax = 64;
  LOCKSTEP_ASSERT(parts.size() <= kIovMax);
  std::array<iovec, kIovMax> iov{};
  std::size_t count = 0;
  for (ConstBytes p : parts) {
    if (p.empty()) continue;
    iov[count++] = iovec{const_cast<std::byte*>(p.data()), p.size()};
  }
  std::size_t first = 0;
  while (first < count) {
    ssize_t n = ::pwritev(Fd(file), &iov[first], static_cast<int>(count - first),
                          static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return DataPathErrno(errno, "write", file.path());
    }
    // No progress at all would loop forever; the kernel only does this when it cannot write.
    if (n == 0) return DataPathErrno(EIO, "write (no progress)", file.path());
    // A short write: skip what was written and resubmit the rest.
    auto done = static_cast<std::size_t>(n);
    offset += done;
    while (first < count && done >= iov[first].iov_len) done -= iov[first++].iov_len;
    if (first < count) {
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
    }
  }
  return Status::Ok();
}

Status PosixIo::Sync(File& file) {
  if (::fdatasync(Fd(file)) != 0) return DataPathErrno(errno, "fdatasync", file.path());
  return Status::Ok();
}

Result<std::shared_ptr<const Mapping>> PosixIo::Map(File& file, std::uint64_t bytes) {
  if (bytes == 0) return std::shared_ptr<const Mapping>(std::make_shared<PosixMapping>(nullptr, 0));
  void* addr = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, Fd(file), 0);
  if (addr == MAP_FAILED) return ErrnoStatus(errno, "mmap", file.path());
  return std::shared_ptr<const Mapping>(
      std::make_shared<PosixMapping>(addr, static_cast<std::size_t>(bytes)));
}

Status PosixIo::Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus(errno, "rename", from);
  return Status::Ok();
}

Status PosixIo::Remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return ErrnoStatus(errno, "remove", path);
  return Status::Ok();
}

Status PosixIo::SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open directory", dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, "fsync directory", dir);
  return Status::Ok();
}

Status PosixIo::CreateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno != EEXIST) return ErrnoStatus(errno, "create directory", dir);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", dir);
    if (!S_ISDIR(st.st_mode)) return ErrnoStatus(ENOTDIR, "create directory", dir);
    return Status::Ok();
  }
  return SyncDir(ParentDir(dir));
}

Result<std::vector<std::string>> PosixIo::ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "list directory", dir);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view name(e->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(d);
  return names;
}

Result<std::unique_ptr<FileLock>> PosixIo::LockFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open lock file", path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    std::array<char, 32> holder{};
    ssize_t n = ::pread(fd, holder.data(), holder.size() - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) return ErrnoStatus(err, "lock", path);
    std::string pid = n > 0 ? std::string(holder.data(), static_cast<std::size_t>(n)) : "?";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return base::FailedPrecondition(
        fmt::format("{} is locked by another opener (pid {}): is another lockstepd using this data "
                    "directory?",
                    path, pid));
  }
  // Record the holder for the next opener's error message; the lock itself is the flock.
  std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "write lock file", path);
  }
  return std::unique_ptr<FileLock>(std::make_unique<PosixFileLock>(fd));
}

Status Io::WriteAndSync(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) {
  LOCKSTEP_RETURN_IF_ERROR(Write(file, offset, parts));
  return Sync(file);
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string path(dir);
  if (!path.empty() && path.back() != '/') path += '/';
  path += name;
  return path;
}

}  // namespace lockstep::storage

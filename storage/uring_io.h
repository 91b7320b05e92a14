#pragma once
// UringIo: PosixIo with the write and sync paths on a dedicated io_uring.
//
// WriteAndSync submits the write and its fdatasync as one linked pair (IOSQE_IO_LINK): one
// system call per group commit instead of two. Short writes and EINTR/EAGAIN are resubmitted;
// EIO and ENOSPC come back as a Status; EBADF/EFAULT/EINVAL assert (our bug). A failed
// fdatasync is never retried. The ring is shared by every caller under a mutex: in the log only
// the writer thread writes, so the mutex is uncontended on the hot path.
#include <memory>
#include <mutex>
#include <vector>

#include "storage/posix_io.h"

struct io_uring;
struct iovec;

namespace lockstep::storage {

class UringIo final : public PosixIo {
 public:
  // kUnavailable (with the reason) when the kernel or a seccomp filter refuses io_uring.
  static Result<std::unique_ptr<UringIo>> Create();
  ~UringIo() override;

  std::string_view Name() const override { return "io_uring"; }
  Status Write(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) override;
  Status Sync(File& file) override;
  Status WriteAndSync(File& file, std::uint64_t offset,
                      std::span<const ConstBytes> parts) override;

 private:
  UringIo();
  Status Submit(File& file, std::uint64_t offset, std::span<const ConstBytes> parts, bool sync);

  std::mutex mu_;
  std::unique_ptr<io_uring> ring_;
  std::vector<iovec> iov_;  // reused under mu_: no allocation per call
};

}  // namespace lockstep::storage

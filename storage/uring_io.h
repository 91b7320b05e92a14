#pragma once
// UringIo: PosixIo with the group-commit path on a dedicated io_uring.
//
// WriteAndSync — what the log's writer does once per group — submits the write and its
// fdatasync as one linked pair (IOSQE_IO_LINK): one system call instead of two. Short writes and
// EINTR/EAGAIN are resubmitted; EIO and ENOSPC come back as a Status; EBADF/EFAULT/EINVAL
// assert (our bug). A failed fdatasync is never retried. Plain Write and Sync (segment
// preparation, recovery) stay on the posix calls, so that preparing a spare segment never holds
// the ring while the writer needs it: the ring's mutex is only ever taken by the writer.
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
  Status WriteAndSync(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) override;

 private:
  UringIo();
  // Queues the write of iov_[first..] at `offset`, linked to an fdatasync unless `synced`.
  unsigned Prepare(int fd, std::size_t first, std::uint64_t offset, bool synced);

  std::mutex mu_;
  std::unique_ptr<io_uring> ring_;
  std::vector<iovec> iov_;  // reused under mu_: no allocation per call
};

}  // namespace lockstep::storage

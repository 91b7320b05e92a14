#include "storage/uring_io.h"

#include <liburing.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace lockstep::storage {
namespace {

constexpr unsigned kRingEntries = 8;
constexpr std::uint64_t kWriteTag = 1;
constexpr std::uint64_t kSyncTag = 2;

}  // namespace

UringIo::UringIo() : ring_(std::make_unique<io_uring>()) {}

UringIo::~UringIo() { io_uring_queue_exit(ring_.get()); }

Result<std::unique_ptr<UringIo>> UringIo::Create() {
  std::unique_ptr<UringIo> io(new UringIo());
  int rc = io_uring_queue_init(kRingEntries, io->ring_.get(), 0);
  if (rc < 0) {
    io->ring_.reset();
    return base::Unavailable(fmt::format("io_uring_queue_init: {}", std::strerror(-rc)));
  }
  io_uring_probe* probe = io_uring_get_probe_ring(io->ring_.get());
  bool supported = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
                   io_uring_opcode_supported(probe, IORING_OP_FSYNC);
  if (probe != nullptr) io_uring_free_probe(probe);
  if (!supported) {
    return base::Unavailable("io_uring lacks IORING_OP_WRITEV or IORING_OP_FSYNC");
  }
  return io;
}

unsigned UringIo::Prepare(int fd, std::size_t first, std::uint64_t offset, bool synced) {
  io_uring* ring = ring_.get();
  unsigned submitted = 0;
  if (first < iov_.size()) {
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    LOCKSTEP_ASSERT(sqe != nullptr);
    io_uring_prep_writev(sqe, fd, &iov_[first], static_cast<unsigned>(iov_.size() - first), offset);
    io_uring_sqe_set_data64(sqe, kWriteTag);
    // Linked: the kernel starts the sync only after the whole write succeeded; a short or
    // failed write cancels it (-ECANCELED) and we resubmit.
    if (!synced) sqe->flags |= IOSQE_IO_LINK;
    ++submitted;
  }
  if (!synced) {
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    LOCKSTEP_ASSERT(sqe != nullptr);
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, kSyncTag);
    ++submitted;
  }
  return submitted;
}

Status UringIo::WriteAndSync(File& file, std::uint64_t offset, std::span<const ConstBytes> parts) {
  std::lock_guard lock(mu_);
  io_uring* ring = ring_.get();
  iov_.clear();
  for (ConstBytes p : parts) {
    if (!p.empty()) iov_.push_back(iovec{const_cast<std::byte*>(p.data()), p.size()});
  }
  std::size_t first = 0;  // first iovec not yet completely written
  bool synced = false;
  while (first < iov_.size() || !synced) {
    const unsigned submitted = Prepare(Fd(file), first, offset, synced);
    int rc = io_uring_submit(ring);
    LOCKSTEP_ASSERT_MSG(rc == static_cast<int>(submitted), "io_uring_submit");
    Status error;
    for (unsigned reaped = 0; reaped < submitted; ++reaped) {
      io_uring_cqe* cqe = nullptr;
      do {
        rc = io_uring_wait_cqe(ring, &cqe);
      } while (rc == -EINTR);
      LOCKSTEP_ASSERT_MSG(rc == 0, "io_uring_wait_cqe");
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      io_uring_cqe_seen(ring, cqe);
      if (tag == kSyncTag) {
        if (res == 0) {
          synced = true;
        } else if (res != -ECANCELED && error.ok()) {
          // Never retried: after a failed fdatasync the unsynced pages may be gone for good.
          error = DataPathErrno(-res, "fdatasync", file.path());
        }
        continue;
      }
      LOCKSTEP_ASSERT(tag == kWriteTag);
      if (res == -EINTR || res == -EAGAIN) continue;  // resubmitted by the outer loop
      if (res <= 0) {
        // res == 0: no progress at all, which would loop forever.
        if (error.ok()) error = DataPathErrno(res == 0 ? EIO : -res, "write", file.path());
        continue;
      }
      auto done = static_cast<std::size_t>(res);
      offset += done;
      while (first < iov_.size() && done >= iov_[first].iov_len) done -= iov_[first++].iov_len;
      if (first < iov_.size()) {
        iov_[first].iov_base = static_cast<std::byte*>(iov_[first].iov_base) + done;
        iov_[first].iov_len -= done;
      }
    }
    if (!error.ok()) return error;
  }
  return Status::Ok();
}

Result<std::unique_ptr<Io>> MakeIo(IoBackend backend) {
  if (backend == IoBackend::kPosix) return std::unique_ptr<Io>(std::make_unique<PosixIo>());
  auto uring = UringIo::Create();
  if (uring.ok()) return std::unique_ptr<Io>(std::move(uring).value());
  if (backend == IoBackend::kUring) return uring.status();
  spdlog::warn("storage: io_uring is unavailable ({}); using pwrite/fdatasync instead",
               uring.status().message());
  return std::unique_ptr<Io>(std::make_unique<PosixIo>());
}

}  // namespace lockstep::storage

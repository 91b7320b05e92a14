// verify: offline, on a data directory (docs/cli.md); the checks are engine/verify.h's. Reads
// only. Exit 0 when all holds, 1 naming the first problem.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "engine/verify.h"
#include "storage/io.h"
#include "tools/lockstep/cli.h"

namespace lockstep::cli {
namespace {

// True when another process holds the exclusive lock lockstepd takes on `path`.
bool HeldByAServer(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // no lock file: nobody ever opened the log here
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the shared lock at once, if it was taken
  return held;
}

Status VerifyDirectory(const std::string& data_dir, bool force, engine::VerifyReport& r) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto io, storage::MakeIo());
  // The lock says whether a server holds the directory (a running server's newest segment is
  // still being written). Looked at without writing and without keeping it: verify changes
  // nothing, and never stops a server from starting.
  const std::string lock = storage::JoinPath(storage::JoinPath(data_dir, "log"), "LOCK");
  if (!force && HeldByAServer(lock)) {
    return base::FailedPrecondition(
        fmt::format("{} is held by a running server (--force reads it anyway)", data_dir));
  }
  return engine::VerifyDataDir(*io, data_dir, r);
}

int Verify(const Context& ctx, const std::string& dir, bool force) {
  engine::VerifyReport r;
  Status s = VerifyDirectory(dir, force, r);
  if (ctx.format == Format::kJson) {
    nlohmann::ordered_json j{{"ok", s.ok()},
                             {"segments", r.segments},
                             {"batches", r.batches},
                             {"transactions", r.transactions},
                             {"events", r.events},
                             {"partitions", r.next_offset.size()},
                             {"checkpoints", r.checkpoints},
                             {"first_lsn", r.first_lsn.value()},
                             {"last_lsn", r.last_lsn.value()}};
    if (r.torn_tail) j["torn_tail"] = *r.torn_tail;
    if (!s.ok()) j["problem"] = s.ToString();
    PrintJson(j);
  } else {
    std::printf(
        "%llu segments, %llu batches, %llu transactions (LSN %llu to %llu), %llu events "
        "in %zu partitions, %llu checkpoints\n",
        static_cast<unsigned long long>(r.segments), static_cast<unsigned long long>(r.batches),
        static_cast<unsigned long long>(r.transactions),
        static_cast<unsigned long long>(r.first_lsn.value()),
        static_cast<unsigned long long>(r.last_lsn.value()),
        static_cast<unsigned long long>(r.events), r.next_offset.size(),
        static_cast<unsigned long long>(r.checkpoints));
    if (r.torn_tail) std::printf("torn tail (recovery cuts it): %s\n", r.torn_tail->c_str());
    std::fflush(stdout);
  }
  return s.ok() ? kExitOk : Fail(s.WithContext("verify"));
}

}  // namespace

void AddOfflineCommands(CLI::App& app, Context& ctx, Run* run) {
  static std::string dir;
  static bool force = false;
  auto* v = app.add_subcommand(
      "verify",
      "offline: check every checksum, LSN and offset continuity and every checkpoint "
      "of a data directory; exit 1 naming the first problem");
  v->add_option("dir", dir, "the data directory (lockstepd --data-dir)")->required();
  v->add_flag("--force", force, "read a directory a running server holds (read-only)");
  v->callback([&ctx, run] { *run = [&ctx] { return Verify(ctx, dir, force); }; });
}

}  // namespace lockstep::cli

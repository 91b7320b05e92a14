// lockstep-bench: the measuring tool. Durable workloads on the real disk, each measured against
// the raw disk in the same run so that results read as ratios (docs/benchmarks.md).
//
//   lockstep-bench --workload disk   --outstanding N --record-bytes B   (system "raw")
//   lockstep-bench --workload append --outstanding N --record-bytes B   (system "lockstep")
//
// "N outstanding" means N operations in flight at all times, each refilled from its own
// completion — not N threads each blocking on one. With --json every result is one JSON object
// on its own line of stdout.
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "bench/latency.h"
#include "storage/io.h"
#include "storage/log.h"

namespace lockstep::bench {
namespace {

using base::MonotonicNs;
using base::Status;
using storage::ConstBytes;

constexpr long kTmpfsMagic = 0x01021994;

struct Flags {
  std::string workload = "append";
  std::uint32_t outstanding = 1;
  std::uint32_t record_bytes = 200;
  double seconds = 5;
  std::string dir = ".";
  bool json = false;
  std::string io = "posix";  // storage::kDefaultIoBackend
  std::string preallocation = "zero-fill";
  std::uint64_t segment_bytes = 64ull << 20;
};

struct Row {
  std::string workload;
  std::string system;
  std::uint64_t ops = 0;
  double seconds = 0;
  LatencyRecorder latency;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

// The bench's own folder inside --dir: created fresh, removed (only it) at the end.
class WorkDir {
 public:
  static base::Result<std::unique_ptr<WorkDir>> Create(const std::string& parent) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) return base::InvalidArgument("--dir " + parent + ": " + ec.message());
    struct statfs fs {};
    if (::statfs(parent.c_str(), &fs) != 0) return base::InvalidArgument("--dir " + parent);
    if (static_cast<long>(fs.f_type) == kTmpfsMagic) {
      return base::InvalidArgument("--dir " + parent +
                                   " is on tmpfs: durable benchmarks need a real disk");
    }
    auto path = std::filesystem::path(parent) /
                ("lockstep-bench-" + std::to_string(::getpid()) + "-" +
                 std::to_string(MonotonicNs()));
    std::filesystem::create_directory(path, ec);
    if (ec) return base::InvalidArgument("--dir " + parent + ": " + ec.message());
    return std::unique_ptr<WorkDir>(new WorkDir(path.string()));
  }
  ~WorkDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  explicit WorkDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Warm-up is not counted: min(0.5 s, 20% of the run), before the measured window.
std::int64_t WarmupNs(double seconds) {
  return static_cast<std::int64_t>(std::min(0.5, seconds * 0.2) * 1e9);
}

// --workload disk: one op = one write of N x B bytes appended to a file + fdatasync.
// prepared: files prepared the way the log prepares segments, outside the timed window.
// extended: a plain file that each write extends.
base::Result<Row> RunDisk(storage::Io& io, const Flags& f, const std::string& dir, bool prepared,
                          storage::Preallocation mode) {
  const std::size_t op_bytes = std::size_t{f.outstanding} * f.record_bytes;
  const std::uint64_t file_bytes = std::max<std::uint64_t>(f.segment_bytes, op_bytes * 16);
  std::vector<std::byte> buffer(op_bytes, std::byte{0x5a});
  const ConstBytes part(buffer);
  const std::span<const ConstBytes> parts(&part, 1);
  std::unique_ptr<storage::File> file;
  std::string path;
  std::uint64_t offset = 0;
  int files = 0;
  auto next_file = [&]() -> Status {
    file.reset();
    if (!path.empty()) LOCKSTEP_RETURN_IF_ERROR(io.Remove(path));
    path = storage::JoinPath(dir, "disk-" + std::to_string(files++));
    LOCKSTEP_ASSIGN_OR_RETURN(file, io.CreateFile(path));
    offset = 0;
    if (prepared) {
      LOCKSTEP_RETURN_IF_ERROR(io.Allocate(*file, file_bytes, mode));
      LOCKSTEP_RETURN_IF_ERROR(io.Sync(*file));
    }
    return io.SyncDir(dir);
  };
  LOCKSTEP_RETURN_IF_ERROR(next_file());

  Row row;
  row.workload = "disk";
  row.system = "raw";
  row.extra["prepared"] = prepared;
  const std::int64_t start = MonotonicNs();
  std::int64_t window_start = start + WarmupNs(f.seconds);
  std::int64_t end = window_start + static_cast<std::int64_t>(f.seconds * 1e9);
  for (std::int64_t now = start; now < end; now = MonotonicNs()) {
    if (offset + op_bytes > file_bytes) {
      // File switches (and preparation) are not part of a disk op: the clock pauses.
      LOCKSTEP_RETURN_IF_ERROR(next_file());
      const std::int64_t paused = MonotonicNs() - now;
      if (now < window_start) window_start += paused;
      end += paused;
      continue;
    }
    LOCKSTEP_RETURN_IF_ERROR(io.WriteAndSync(*file, offset, parts));
    offset += op_bytes;
    const std::int64_t done = MonotonicNs();
    if (now >= window_start) {
      ++row.ops;
      row.latency.RecordNs(done - now);
    }
  }
  row.seconds = static_cast<double>(MonotonicNs() - window_start) / 1e9;
  file.reset();
  LOCKSTEP_RETURN_IF_ERROR(io.Remove(path));
  return row;
}

// --workload append: N appends in flight through the log, each refilled by its completion
// callback on the log's writer thread (where all counting happens: no locks needed).
class AppendDriver {
 public:
  AppendDriver(storage::Log& log, const Flags& f)
      : log_(log), record_(f.record_bytes, std::byte{0x6c}), start_ns_(f.outstanding) {}

  base::Result<Row> Run(const Flags& f) {
    const std::int64_t start = MonotonicNs();
    window_start_ = start + WarmupNs(f.seconds);
    window_end_ = window_start_ + static_cast<std::int64_t>(f.seconds * 1e9);
    const auto before = log_.stats();
    in_flight_.store(f.outstanding);
    for (std::uint32_t slot = 0; slot < f.outstanding; ++slot) Issue(slot);
    std::this_thread::sleep_until(std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(window_end_)));
    while (in_flight_.load(std::memory_order_acquire) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!error_.ok()) return error_;
    const auto after = log_.stats();
    row_.workload = "append";
    row_.system = "lockstep";
    row_.seconds = static_cast<double>(window_end_ - window_start_) / 1e9;
    const auto batches = after.batches - before.batches;
    row_.extra["batches"] = batches;
    row_.extra["records_per_batch"] =
        batches == 0 ? 0.0 : static_cast<double>(after.records - before.records) /
                                 static_cast<double>(batches);
    row_.extra["rolls"] = after.rolls - before.rolls;
    return std::move(row_);
  }

 private:
  void Issue(std::uint32_t slot, std::int64_t now = MonotonicNs()) {
    start_ns_[slot] = now;
    auto lsn = log_.Append(record_, [this, slot](base::Lsn, const Status& s) { Done(slot, s); });
    if (!lsn.ok()) Fail(lsn.status());
  }

  void Done(std::uint32_t slot, const Status& status) {
    if (!status.ok()) return Fail(status);
    const std::int64_t now = MonotonicNs();
    if (now >= window_start_ && now <= window_end_) {
      ++row_.ops;
      row_.latency.RecordNs(now - start_ns_[slot]);
    }
    if (now < window_end_) {
      Issue(slot, now);
    } else {
      in_flight_.fetch_sub(1, std::memory_order_release);
    }
  }

  void Fail(const Status& status) {
    if (error_.ok()) error_ = status;
    in_flight_.fetch_sub(1, std::memory_order_release);
  }

  storage::Log& log_;
  const std::vector<std::byte> record_;
  std::vector<std::int64_t> start_ns_;
  std::int64_t window_start_ = 0;
  std::int64_t window_end_ = 0;
  std::atomic<std::uint32_t> in_flight_{0};
  Row row_;
  Status error_;
};

base::Result<Row> RunAppend(storage::Io& io, const Flags& f, const std::string& dir,
                            storage::Preallocation mode) {
  storage::LogOptions options;
  options.dir = storage::JoinPath(dir, "log");
  options.io = &io;
  options.segment_bytes = f.segment_bytes;
  options.preallocation = mode;
  LOCKSTEP_ASSIGN_OR_RETURN(auto log, storage::Log::Open(options));
  AppendDriver driver(*log, f);
  return driver.Run(f);
}

void Print(const Flags& f, Row& row, std::string_view io_name) {
  const double ops_per_s = row.seconds > 0 ? static_cast<double>(row.ops) / row.seconds : 0;
  double payload_per_op = f.record_bytes;
  if (row.workload == "disk") payload_per_op *= f.outstanding;
  nlohmann::ordered_json j;
  j["workload"] = row.workload;
  j["system"] = row.system;
  j["outstanding"] = f.outstanding;
  j["record_bytes"] = f.record_bytes;
  j["ops"] = row.ops;
  j["seconds"] = row.seconds;
  j["ops_per_s"] = ops_per_s;
  j["mb_per_s"] = ops_per_s * payload_per_op / 1e6;
  j["p50_us"] = row.latency.Percentile(0.50);
  j["p99_us"] = row.latency.Percentile(0.99);
  j["p999_us"] = row.latency.Percentile(0.999);
  j["io"] = io_name;
  j["preallocation"] = f.preallocation;
  j["sync"] = "fdatasync";
  for (auto& [k, v] : row.extra.items()) j[k] = v;
  if (f.json) {
    std::cout << j.dump() << std::endl;
    return;
  }
  std::string what = row.workload;
  if (row.extra.contains("prepared")) what += row.extra["prepared"].get<bool>() ? "/prepared" : "/extended";
  std::printf("%-16s %-8s N=%-4u B=%-6u %10.0f ops/s %9.1f MB/s  p50 %7.1f us  p99 %7.1f us  "
              "p99.9 %7.1f us\n",
              what.c_str(), row.system.c_str(), f.outstanding, f.record_bytes, ops_per_s,
              j["mb_per_s"].get<double>(), j["p50_us"].get<double>(), j["p99_us"].get<double>(),
              j["p999_us"].get<double>());
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app{"lockstep-bench: durable workloads measured against the raw disk of the same run"};
  app.add_option("--workload", f.workload, "disk | append")
      ->check(CLI::IsMember({"disk", "append"}));
  app.add_option("--outstanding", f.outstanding, "operations in flight (disk: group size)")
      ->check(CLI::Range(1u, 65536u));
  app.add_option("--record-bytes", f.record_bytes, "payload bytes per record")
      ->check(CLI::Range(1u, 16u << 20));
  app.add_option("--seconds", f.seconds, "measured seconds (a short warm-up comes first)")
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--dir", f.dir, "parent folder on a real disk; the bench works in a new "
                                 "subfolder and removes only that");
  app.add_flag("--json", f.json, "one JSON object per result line");
  app.add_option("--io", f.io, "posix | uring | auto (io_uring if the host allows it)")->check(CLI::IsMember({"auto", "uring", "posix"}));
  app.add_option("--preallocation", f.preallocation, "how segments are prepared")
      ->check(CLI::IsMember({"zero-fill", "fallocate"}));
  app.add_option("--segment-bytes", f.segment_bytes, "segment capacity")
      ->check(CLI::Range(std::uint64_t{1} << 16, std::uint64_t{1} << 34));
  CLI11_PARSE(app, argc, argv);

  const auto backend = f.io == "uring"   ? storage::IoBackend::kUring
                       : f.io == "posix" ? storage::IoBackend::kPosix
                                         : storage::IoBackend::kAuto;
  const auto mode = f.preallocation == "fallocate" ? storage::Preallocation::kFallocate
                                                   : storage::Preallocation::kZeroFill;
  auto io = storage::MakeIo(backend);
  if (!io.ok()) {
    std::cerr << "lockstep-bench: " << io.status().ToString() << "\n";
    return 2;
  }
  auto work = WorkDir::Create(f.dir);
  if (!work.ok()) {
    std::cerr << "lockstep-bench: " << work.status().message() << "\n";
    return 2;
  }
  std::vector<base::Result<Row>> rows;
  if (f.workload == "disk") {
    rows.push_back(RunDisk(**io, f, (*work)->path(), /*prepared=*/true, mode));
    if (rows.back().ok()) rows.push_back(RunDisk(**io, f, (*work)->path(), false, mode));
  } else {
    rows.push_back(RunAppend(**io, f, (*work)->path(), mode));
  }
  for (auto& row : rows) {
    if (!row.ok()) {
      std::cerr << "lockstep-bench: " << f.workload << " failed: " << row.status().ToString()
                << "\n";
      return 1;
    }
    Print(f, *row, (*io)->Name());
  }
  return 0;
}

}  // namespace
}  // namespace lockstep::bench

int main(int argc, char** argv) { return lockstep::bench::Main(argc, argv); }

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
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "bench/engine_workloads.h"
#include "bench/latency.h"
#include "bench/network_workloads.h"
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
  std::string preallocation = "adaptive";
  std::uint64_t segment_bytes = 64ull << 20;
  std::string system = "lockstep";
  bool no_sync = false;
  std::uint32_t accounts = 100'000;
  std::string broker;   // network workloads: a running lockstepd; empty: start one in-process
  bool remote = false;  // transfer through the client and the server
  std::uint32_t rate = 10'000;
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
    // Check the file system where the folder is (or would be) before creating anything.
    std::filesystem::path probe = std::filesystem::absolute(parent);
    while (!std::filesystem::exists(probe) && probe.has_parent_path() &&
           probe != probe.root_path()) {
      probe = probe.parent_path();
    }
    struct statfs fs {};
    if (::statfs(probe.c_str(), &fs) != 0) return base::InvalidArgument("--dir " + parent);
    if (static_cast<long>(fs.f_type) == kTmpfsMagic) {
      return base::InvalidArgument("--dir " + parent +
                                   " is on tmpfs: durable benchmarks need a real disk");
    }
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) return base::InvalidArgument("--dir " + parent + ": " + ec.message());
    auto path = std::filesystem::path(parent) / ("lockstep-bench-" + std::to_string(::getpid()) +
                                                 "-" + std::to_string(MonotonicNs()));
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
// prepared: files of one segment's size, prepared by `mode` (a way the log prepares segments).
// extended (mode == nullopt): plain files that each write extends.
base::Result<Row> RunDisk(storage::Io& io, const Flags& f, const std::string& dir,
                          std::optional<storage::Preallocation> mode) {
  const bool prepared = mode.has_value();
  const std::size_t op_bytes = std::size_t{f.outstanding} * f.record_bytes;
  const std::uint64_t file_bytes = std::max<std::uint64_t>(f.segment_bytes, op_bytes * 16);
  std::vector<std::byte> buffer(op_bytes, std::byte{0x5a});
  const ConstBytes part(buffer);
  const std::span<const ConstBytes> parts(&part, 1);
  // Files are kept until the run ends, as the log keeps its segments: deleting each one as the
  // loop moves on would drop its pages from the page cache and flatter the raw disk (measured:
  // about twice the MB/s at 256 x 4 KiB). Files hold one segment's worth, like the log's.
  std::unique_ptr<storage::File> file;
  std::vector<std::string> paths;
  std::uint64_t offset = 0;
  auto next_file = [&]() -> Status {
    file.reset();
    paths.push_back(storage::JoinPath(dir, "disk-" + std::to_string(paths.size())));
    LOCKSTEP_ASSIGN_OR_RETURN(file, io.CreateFile(paths.back()));
    offset = 0;
    if (prepared) {
      LOCKSTEP_RETURN_IF_ERROR(io.Allocate(*file, file_bytes, *mode));
      LOCKSTEP_RETURN_IF_ERROR(io.Sync(*file));
    }
    return io.SyncDir(dir);
  };
  auto remove_all = [&]() -> Status {
    file.reset();
    for (const auto& p : paths) LOCKSTEP_RETURN_IF_ERROR(io.Remove(p));
    return Status::Ok();
  };
  LOCKSTEP_RETURN_IF_ERROR(next_file());

  Row row;
  row.workload = "disk";
  row.system = "raw";
  row.extra["prepared"] = prepared;
  row.extra["preallocation"] = !prepared                                    ? "none"
                               : *mode == storage::Preallocation::kZeroFill ? "zero-fill"
                                                                            : "fallocate";
  // The measured window includes preparing the next file, as the log's own run includes
  // preparing its segments: a loop that prepared its files off the clock would set a pace no
  // log that prepares its files can reach. Latencies are per write + sync only.
  const std::int64_t warmup_ns = WarmupNs(f.seconds);
  const auto window_ns = static_cast<std::int64_t>(f.seconds * 1e9);
  const std::int64_t start = MonotonicNs();
  std::int64_t window_start = 0;  // set by the first op after the warm-up
  for (std::int64_t now = start;; now = MonotonicNs()) {
    if (window_start != 0 && now - window_start >= window_ns) break;
    if (offset + op_bytes > file_bytes) {
      LOCKSTEP_RETURN_IF_ERROR(next_file());
      continue;
    }
    if (window_start == 0 && now - start >= warmup_ns) window_start = now;
    LOCKSTEP_RETURN_IF_ERROR(io.WriteAndSync(*file, offset, parts));
    offset += op_bytes;
    if (window_start != 0) {
      ++row.ops;
      row.latency.RecordNs(MonotonicNs() - now);
    }
  }
  const std::int64_t measured_ns = MonotonicNs() - window_start;
  row.seconds = static_cast<double>(measured_ns) / 1e9;
  LOCKSTEP_RETURN_IF_ERROR(remove_all());
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
    std::this_thread::sleep_until(
        std::chrono::steady_clock::time_point(std::chrono::nanoseconds(window_end_)));
    while (in_flight_.load(std::memory_order_acquire) != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    {
      std::lock_guard lock(error_mu_);
      if (!error_.ok()) return error_;
    }
    const auto after = log_.stats();
    row_.workload = "append";
    row_.system = "lockstep";
    row_.seconds = static_cast<double>(window_end_ - window_start_) / 1e9;
    const auto batches = after.batches - before.batches;
    row_.extra["batches"] = batches;
    row_.extra["records_per_batch"] =
        batches == 0
            ? 0.0
            : static_cast<double>(after.records - before.records) / static_cast<double>(batches);
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

  // Called from the main thread (the first appends) and from the writer thread.
  void Fail(const Status& status) {
    {
      std::lock_guard lock(error_mu_);
      if (error_.ok()) error_ = status;
    }
    in_flight_.fetch_sub(1, std::memory_order_release);
  }

  storage::Log& log_;
  const std::vector<std::byte> record_;
  std::vector<std::int64_t> start_ns_;
  std::int64_t window_start_ = 0;
  std::int64_t window_end_ = 0;
  std::atomic<std::uint32_t> in_flight_{0};
  Row row_;
  std::mutex error_mu_;
  Status error_;  // guarded by error_mu_
};

base::Result<Row> RunAppend(storage::Io& io, const Flags& f, const std::string& dir,
                            storage::Preallocation mode) {
  storage::LogOptions options;
  options.dir = storage::JoinPath(dir, "log");
  options.io = &io;
  options.segment_bytes = f.segment_bytes;
  options.batch_bytes_max = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(options.batch_bytes_max, f.segment_bytes / 2));
  options.preallocation = mode;
  LOCKSTEP_ASSIGN_OR_RETURN(auto log, storage::Log::Open(options));
  AppendDriver driver(*log, f);
  return driver.Run(f);
}

// --workload transfer | events: the engine (or RocksDB) in-process, durable unless --no-sync.
base::Result<Row> RunEngineWorkload(storage::Io& io, const Flags& f, const std::string& dir,
                                    storage::Preallocation mode) {
  EngineWorkload w;
  // The engine's log gets the same --segment-bytes and --preallocation as the append workload
  // (RocksDB ignores both; its rows say so).
  w.log.segment_bytes = f.segment_bytes;
  w.log.batch_bytes_max = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(w.log.batch_bytes_max, f.segment_bytes / 2));
  w.log.preallocation = mode;
  w.dir = storage::JoinPath(dir, f.system);
  w.io = &io;
  w.outstanding = f.outstanding;
  w.event_bytes = f.record_bytes;
  w.accounts = f.accounts;
  w.seconds = f.seconds;
  w.warmup_seconds = static_cast<double>(WarmupNs(f.seconds)) / 1e9;
  w.sync = !f.no_sync;
  base::Result<EngineRow> result = base::Internal("unreachable");
  if (f.workload == "events") {
    result = RunEventsLockstep(w);
  } else if (f.system == "rocksdb") {
    result = RunTransferRocksdb(w);
  } else {
    result = RunTransferLockstep(w);
  }
  if (!result.ok()) return result.status();
  Row row;
  row.workload = f.workload;
  row.system = f.system;
  row.ops = result->ops;
  row.seconds = result->seconds;
  row.latency = result->latency;
  row.extra["durable"] = w.sync;
  row.extra["conflicts"] = result->conflicts;
  return row;
}

// --workload tcp | produce | consume | e2e, and transfer --remote: over loopback TCP.
base::Result<Row> RunNetworkWorkload(storage::Io& io, const Flags& f, const std::string& dir,
                                     storage::Preallocation mode) {
  NetworkWorkload w;
  w.broker = f.broker;
  w.dir = storage::JoinPath(dir, "server");
  w.io = &io;
  w.log.segment_bytes = f.segment_bytes;
  w.log.batch_bytes_max = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(w.log.batch_bytes_max, f.segment_bytes / 2));
  w.log.preallocation = mode;
  w.outstanding = f.outstanding;
  w.record_bytes = f.record_bytes;
  w.accounts = f.accounts;
  w.rate = f.rate;
  w.seconds = f.seconds;
  w.warmup_seconds = static_cast<double>(WarmupNs(f.seconds)) / 1e9;
  base::Result<NetworkRow> result = base::Internal("unreachable");
  if (f.workload == "tcp") {
    result = RunTcp(w);
  } else if (f.workload == "produce") {
    result = RunProduce(w);
  } else if (f.workload == "consume") {
    result = RunConsume(w);
  } else if (f.workload == "e2e") {
    result = RunEndToEnd(w);
  } else {
    result = RunTransferRemote(w);
  }
  if (!result.ok()) return result.status();
  Row row;
  row.workload = f.workload;
  row.system = f.workload == "tcp" ? "raw" : "lockstep";
  row.ops = result->ops;
  row.seconds = result->seconds;
  row.latency = result->latency;
  row.extra["remote"] = true;
  row.extra["payload_bytes_per_op"] = result->payload_bytes_per_op;
  if (f.workload == "transfer") {
    row.extra["durable"] = true;
    row.extra["conflicts"] = result->conflicts;
  }
  if (f.workload == "e2e") {
    row.extra["rate"] = f.rate;
    row.extra["commit_p50_us"] = result->commit_latency.Percentile(0.50);
    row.extra["commit_p99_us"] = result->commit_latency.Percentile(0.99);
  }
  if (f.workload != "tcp") row.extra["broker"] = f.broker.empty() ? "in-process" : f.broker;
  return row;
}

void Print(const Flags& f, Row& row, std::string_view io_name) {
  const double ops_per_s = row.seconds > 0 ? static_cast<double>(row.ops) / row.seconds : 0;
  double payload_per_op = f.record_bytes;
  if (row.workload == "disk") payload_per_op *= f.outstanding;
  if (row.extra.contains("payload_bytes_per_op")) {
    payload_per_op = row.extra["payload_bytes_per_op"].get<double>();
    row.extra.erase("payload_bytes_per_op");
  }
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
  j["preallocation"] = row.system == "rocksdb" ? "n/a" : f.preallocation;
  j["sync"] = f.no_sync ? "none" : "fdatasync";
  for (auto& [k, v] : row.extra.items()) j[k] = v;
  if (f.json) {
    std::cout << j.dump() << std::endl;
    return;
  }
  std::string what = row.workload;
  if (row.extra.contains("preallocation")) {
    what += "/" + row.extra["preallocation"].get<std::string>();  // zero-fill, fallocate, none
  }
  std::printf(
      "%-16s %-8s N=%-4u B=%-6u %10.0f ops/s %9.1f MB/s  p50 %7.1f us  p99 %7.1f us  "
      "p99.9 %7.1f us\n",
      what.c_str(), row.system.c_str(), f.outstanding, f.record_bytes, ops_per_s,
      j["mb_per_s"].get<double>(), j["p50_us"].get<double>(), j["p99_us"].get<double>(),
      j["p999_us"].get<double>());
  std::fflush(stdout);
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app{"lockstep-bench: durable workloads measured against the raw disk of the same run"};
  app.add_option("--workload", f.workload,
                 "disk | append | transfer | events | tcp | produce | consume | e2e")
      ->check(CLI::IsMember(
          {"disk", "append", "transfer", "events", "tcp", "produce", "consume", "e2e"}));
  app.add_option("--broker", f.broker,
                 "network workloads: HOST:PORT of a running lockstepd (default: start a server "
                 "in-process on a free loopback port)");
  app.add_flag("--remote", f.remote, "transfer: through the client and the server");
  app.add_option("--rate", f.rate, "e2e: commits per second")->check(CLI::Range(1u, 10'000'000u));
  app.add_option("--system", f.system, "transfer: lockstep | rocksdb")
      ->check(CLI::IsMember({"lockstep", "rocksdb"}));
  app.add_flag("--no-sync", f.no_sync,
               "transfer/events on lockstep: skip fdatasync (NOT durable; measures the commit "
               "path's CPU cost alone)");
  app.add_option("--accounts", f.accounts, "transfer: number of accounts")
      ->check(CLI::Range(2u, 10'000'000u));
  app.add_option("--outstanding", f.outstanding, "operations in flight (disk: group size)")
      ->check(CLI::Range(1u, 65536u));
  app.add_option("--record-bytes", f.record_bytes, "payload bytes per record")
      ->check(CLI::Range(1u, 16u << 20));
  app.add_option("--seconds", f.seconds, "measured seconds (a short warm-up comes first)")
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--dir", f.dir,
                 "parent folder on a real disk; the bench works in a new "
                 "subfolder and removes only that");
  app.add_flag("--json", f.json, "one JSON object per result line");
  app.add_option("--io", f.io, "posix | uring | auto (io_uring if the host allows it)")
      ->check(CLI::IsMember({"auto", "uring", "posix"}));
  app.add_option("--preallocation", f.preallocation,
                 "how segments are prepared: adaptive (the log's default) | zero-fill | fallocate")
      ->check(CLI::IsMember({"adaptive", "zero-fill", "fallocate"}));
  app.add_option("--segment-bytes", f.segment_bytes, "segment capacity")
      ->check(CLI::Range(std::uint64_t{1} << 16, std::uint64_t{1} << 34));
  CLI11_PARSE(app, argc, argv);
  // stdout carries results only (JSON lines with --json): every log line goes to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("lockstep-bench"));

  const auto backend = f.io == "uring"   ? storage::IoBackend::kUring
                       : f.io == "posix" ? storage::IoBackend::kPosix
                                         : storage::IoBackend::kAuto;
  const auto mode = f.preallocation == "fallocate"   ? storage::Preallocation::kFallocate
                    : f.preallocation == "zero-fill" ? storage::Preallocation::kZeroFill
                                                     : storage::Preallocation::kAdaptive;
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
  if (f.system == "rocksdb" && f.workload != "transfer") {
    std::cerr << "lockstep-bench: --system rocksdb runs only --workload transfer\n";
    return 2;
  }
  if (f.no_sync && (f.workload == "disk" || f.workload == "append" || f.system == "rocksdb")) {
    std::cerr << "lockstep-bench: --no-sync applies to transfer and events on lockstep only\n";
    return 2;
  }
  const bool network = f.workload == "tcp" || f.workload == "produce" || f.workload == "consume" ||
                       f.workload == "e2e" || (f.workload == "transfer" && f.remote);
  if (f.remote && f.workload != "transfer") {
    std::cerr << "lockstep-bench: --remote applies to --workload transfer\n";
    return 2;
  }
  if (f.remote && (f.system != "lockstep" || f.no_sync)) {
    std::cerr << "lockstep-bench: --remote runs lockstep, durable\n";
    return 2;
  }
  std::vector<base::Result<Row>> rows;
  if (network) {
    rows.push_back(RunNetworkWorkload(**io, f, (*work)->path(), mode));
  } else if (f.workload == "transfer" || f.workload == "events") {
    rows.push_back(RunEngineWorkload(**io, f, (*work)->path(), mode));
  } else if (f.workload == "disk") {
    // One prepared row per way the log may prepare segments (adaptive: both), then extended.
    // Every ratio against the disk uses the fastest row, so no preparation can flatter it.
    std::vector<std::optional<storage::Preallocation>> modes;
    if (mode == storage::Preallocation::kAdaptive) {
      modes = {storage::Preallocation::kZeroFill, storage::Preallocation::kFallocate};
    } else {
      modes = {mode};
    }
    modes.push_back(std::nullopt);
    for (const auto& m : modes) {
      rows.push_back(RunDisk(**io, f, (*work)->path(), m));
      if (!rows.back().ok()) break;
    }
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

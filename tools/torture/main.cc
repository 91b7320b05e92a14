// lockstep-torture: crash-recovery torture (docs/testing.md). Exit codes: 0 every invariant held,
// 1 an invariant broke, 2 usage or infrastructure error. The last line on stdout is the summary.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "base/planted_bug.h"
#include "tools/torture/process.h"
#include "tools/torture/simulation.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitBroken = 1;
constexpr int kExitUsage = 2;

int Usage(const std::string& message) {
  std::fprintf(stderr, "lockstep-torture: %s\n", message.c_str());
  return kExitUsage;
}

// Whether `lockstepd --help` documents LOCKSTEP_CRASH_AT (every build since crash sites exist).
bool HasCrashSites(const std::string& lockstepd) {
  std::string quoted = "'";
  for (char c : lockstepd) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  const std::string command = quoted + "' --help 2>&1";
  std::FILE* help = ::popen(command.c_str(), "r");
  if (help == nullptr) return false;
  std::string text;
  char chunk[1024];
  std::size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, help)) > 0) text.append(chunk, n);
  ::pclose(help);
  return text.find("LOCKSTEP_CRASH_AT") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lockstep::torture;
  spdlog::set_level(spdlog::level::off);  // the engine's logs would drown the report

  CLI::App app(
      "lockstep-torture: crashes Lockstep at random moments and checks, after every recovery, "
      "that nothing acknowledged was lost and nothing half-committed is seen",
      "lockstep-torture");
  std::string mode = "simulation";
  std::uint64_t seed = 0;
  std::uint64_t iterations = 0;
  double minutes = 1;
  std::string dir;
  std::string lockstepd;
  bool verbose = false;
  std::string plant;
  app.add_option("--mode", mode,
                 "simulation: the engine in-process over the fault-injecting I/O (default); "
                 "process: lockstepd as a child, killed with SIGKILL")
      ->check(CLI::IsMember({"simulation", "process"}));
  auto* seed_opt = app.add_option("--seed", seed, "the seed (default: a random one, printed)");
  auto* iterations_opt = app.add_option("--iterations", iterations, "crash-recovery cycles to run")
                             ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
  auto* minutes_opt = app.add_option("--minutes", minutes, "time budget (default 1; fractions too)")
                          ->check(CLI::Range(0.001, 100000.0));
  iterations_opt->excludes(minutes_opt);
  app.add_option("--dir", dir,
                 "where process mode keeps its data and lockstepd.log, and where simulation mode "
                 "(whose files live in memory) writes a failing machine's files (default: "
                 "./lockstep-torture-SEED)");
  app.add_option("--lockstepd", lockstepd,
                 "process mode: the lockstepd to run (default: the one beside this binary)");
  app.add_flag("--verbose", verbose, "a line per iteration on stderr");
  std::string bug_names;
  for (auto bug : lockstep::base::kPlantedBugs) {
    bug_names += std::string(bug_names.empty() ? "" : ", ") +
                 std::string(lockstep::base::PlantedBugName(bug));
  }
  app.add_option("--plant", plant,
                 "run with one planted bug, which must be caught (builds configured with "
                 "-DLOCKSTEP_PLANTED_BUGS=ON only): " +
                     bug_names);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (seed_opt->count() == 0)
    seed = std::random_device()() ^ (std::uint64_t{std::random_device()()} << 32);
  if (!plant.empty()) {
    if (!lockstep::base::kPlantedBugsBuilt) {
      return Usage("this build has no planted bugs (configure with -DLOCKSTEP_PLANTED_BUGS=ON)");
    }
    auto bug = lockstep::base::ParsePlantedBug(plant);
    if (!bug) return Usage("--plant: unknown bug " + plant + " (one of: " + bug_names + ")");
    lockstep::base::PlantBug(*bug);
  }
  ProcessOptions process;
  if (mode == "process") {
    std::error_code ec;
    process.lockstepd =
        lockstepd.empty()
            ? (std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "lockstepd")
                  .string()
            : lockstepd;
    if (::access(process.lockstepd.c_str(), X_OK) != 0) {
      return Usage("no lockstepd at " + process.lockstepd + " (give --lockstepd PATH)");
    }
    if (!HasCrashSites(process.lockstepd)) {
      return Usage(process.lockstepd +
                   " has no crash sites (LOCKSTEP_CRASH_AT): build a newer one");
    }
    process.dir = dir.empty() ? fmt::format("lockstep-torture-{}", seed) : dir;
    process.planted_bug = plant;  // the server must carry it, not this driver
  }

  RunOptions options;
  options.seed = seed;
  options.verbose = verbose;
  if (iterations_opt->count() > 0) options.iterations = iterations;
  options.failure_dir = dir.empty() ? fmt::format("lockstep-torture-{}", seed) : dir;
  options.deadline = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double, std::ratio<60>>(minutes));
  std::printf("lockstep-torture: mode %s, seed %llu%s%s\n", mode.c_str(),
              static_cast<unsigned long long>(seed), plant.empty() ? "" : ", planted bug ",
              plant.c_str());
  std::fflush(stdout);
  const Summary s = mode == "process" ? RunProcess(options, process) : RunSimulation(options);
  if (!s.infrastructure.empty()) {
    std::printf("lockstep-torture: cannot go on: %s\n", s.infrastructure.c_str());
  }
  for (const auto& [what, n] : s.hits) {
    std::printf("  %-48s %llu\n", what.c_str(), static_cast<unsigned long long>(n));
  }
  if (!s.failure.empty()) {
    std::printf("FAILED (seed %llu, iteration %llu): %s\n", static_cast<unsigned long long>(seed),
                static_cast<unsigned long long>(s.iterations), s.failure.c_str());
  }
  std::printf(
      "mode %s: %llu iterations, %llu crash points, %llu acknowledged transactions checked, "
      "seed %llu: %llu passed, %llu failed\n",
      mode.c_str(), static_cast<unsigned long long>(s.iterations),
      static_cast<unsigned long long>(s.crash_points),
      static_cast<unsigned long long>(s.acknowledged_checked),
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(s.passed),
      static_cast<unsigned long long>(s.failed));
  std::fflush(stdout);
  if (mode == "process") {
    if (s.failed == 0 && s.infrastructure.empty() && dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(process.dir, ec);
    } else if (s.failed > 0) {
      std::fprintf(stderr, "lockstep-torture: the data and lockstepd.log are in %s\n",
                   process.dir.c_str());
    }
  }
  if (s.failed > 0) return kExitBroken;
  return s.infrastructure.empty() ? kExitOk : kExitUsage;
}

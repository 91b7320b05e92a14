#pragma once
// lockstep-torture --mode simulation: the engine in-process over the fault-injecting I/O
// (storage/fault_io.h), driven by one seed. See docs/testing.md.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace lockstep::torture {

struct RunOptions {
  std::uint64_t seed = 1;
  std::optional<std::uint64_t> iterations;  // else run until the deadline
  std::chrono::steady_clock::time_point deadline;
  bool verbose = false;  // a line per iteration on stderr
  // Simulation mode: where the failing machine's files are written when an invariant breaks
  // (its data directory as `db/`, for `lockstep verify` and `lockstep dump`-style inspection).
  std::string failure_dir;
};

struct Summary {
  std::uint64_t iterations = 0;
  std::uint64_t crash_points = 0;          // crashes that struck (power loss, kill, in recovery)
  std::uint64_t acknowledged_checked = 0;  // acknowledged transactions checked, summed over checks
  std::uint64_t passed = 0;                // recovery checks that held every invariant
  std::uint64_t failed = 0;
  std::string failure;         // the first broken invariant
  std::string infrastructure;  // why the run could not go on (exit 2), if it could not
  std::map<std::string, std::uint64_t> hits;  // per kind of crash or fault
};

Summary RunSimulation(const RunOptions& options);

}  // namespace lockstep::torture

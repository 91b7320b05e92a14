#pragma once
// lockstep-torture --mode process: lockstepd as a child process on a loopback port, clients over
// TCP, SIGKILL at random moments and at named crash sites (base/crash_site.h). See
// docs/testing.md.
#include <string>

#include "tools/torture/simulation.h"

namespace lockstep::torture {

struct ProcessOptions {
  std::string lockstepd;    // the binary
  std::string dir;          // the run's folder: data directories and lockstepd.log
  std::string planted_bug;  // passed to lockstepd as LOCKSTEP_PLANTED_BUG (planted builds)
};

Summary RunProcess(const RunOptions& options, const ProcessOptions& process);

}  // namespace lockstep::torture
